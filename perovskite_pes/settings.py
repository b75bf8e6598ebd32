"""Where data lives: one settings object read from ``$PES_HOME/config.yaml`` and the environment.

The same object drives the configuration database (``perovskite_pes.db``) and the FireWorks
LaunchPad, so ``pes`` and ``lpad`` always look at the same data.

Precedence (highest first): environment variables, ``config.yaml``, built-in defaults.

======================  =========================  ===============================================
config.yaml key         environment variable       meaning
======================  =========================  ===============================================
(none)                  ``PES_HOME``               directory for everything a run writes
                                                   (default ``~/.perovskite_pes``)
``mongo_uri``           ``PES_MONGO_URI``          MongoDB connection string
``host``                ``PES_MONGO_HOST``         MongoDB host (instead of a URI)
``port``                ``PES_MONGO_PORT``         MongoDB port (default 27017)
``username``            ``PES_MONGO_USER``         MongoDB user
``password``            ``PES_MONGO_PASSWORD``     MongoDB password
``auth_source``         ``PES_MONGO_AUTH_SOURCE``  authentication database (default: the
                                                   database itself, as in FireWorks)
``tls``                 ``PES_MONGO_TLS``          use TLS (true/false)
``tls_ca_file``         ``PES_MONGO_TLS_CA_FILE``  CA bundle for TLS
``database``            ``PES_DATABASE``           database name (default ``perovskite_pes``, or the
                                                   one named in the URI)
``server_timeout_s``    ``PES_MONGO_TIMEOUT``      give up on an unreachable server after this
                                                   many seconds (default 5)
``store_file``          ``PES_STORE_FILE``         embedded store: the SQLite file of the
                                                   configuration database (default
                                                   ``$PES_HOME/store.sqlite``)
``lock_timeout_s``      ``PES_LOCK_TIMEOUT``       how long a process waits for another one's
                                                   write (SQLite) or for the embedded LaunchPad's
                                                   lock (default 60; 0 = refuse at once)
======================  =========================  ===============================================

Without ``mongo_uri`` and ``host`` the embedded store is used: the configuration database in a
SQLite file (``store_path``) and the FireWorks LaunchPad in FireWorks' mongomock file next to it
(``launchpad_path``). A ``store.json`` of older versions (``legacy_store_path``) is migrated on
first use. Other layers keep their
own options in named sections of ``config.yaml`` (``calculators:``, ``models:``, ``workflows:``,
``campaign:``); :meth:`Settings.section` returns them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, unquote

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .errors import PesError
from .utils import field_path, first_error

DEFAULT_DATABASE = "perovskite_pes"
DEFAULT_PORT = 27017
CONFIG_FILENAME = "config.yaml"
STORE_FILENAME = "store.sqlite"
#: the embedded store of earlier versions (one mongomock JSON file), migrated on first use
LEGACY_STORE_SUFFIX = ".json"

#: free-form sections other layers may keep in config.yaml
SECTIONS = ("calculators", "models", "workflows", "campaign", "descriptors", "structure")

_ENV = {
    "mongo_uri": "PES_MONGO_URI",
    "host": "PES_MONGO_HOST",
    "port": "PES_MONGO_PORT",
    "username": "PES_MONGO_USER",
    "password": "PES_MONGO_PASSWORD",
    "auth_source": "PES_MONGO_AUTH_SOURCE",
    "tls": "PES_MONGO_TLS",
    "tls_ca_file": "PES_MONGO_TLS_CA_FILE",
    "database": "PES_DATABASE",
    "server_timeout_s": "PES_MONGO_TIMEOUT",
    "store_file": "PES_STORE_FILE",
    "lock_timeout_s": "PES_LOCK_TIMEOUT",
}


class SettingsError(PesError, ValueError):
    """A malformed settings file or environment variable."""


def default_home() -> Path:
    """``$PES_HOME`` or ``~/.perovskite_pes``."""
    env = os.environ.get("PES_HOME")
    return Path(env).expanduser() if env else Path.home() / ".perovskite_pes"


def _as_bool(value, name: str) -> bool:
    if isinstance(value, bool):
        return value
    s = str(value).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"{name} must be true or false; got {value!r}")


def _as_number(value, name: str, kind=float, minimum: float = 0.0):
    if isinstance(value, bool):
        raise SettingsError(f"{name} must be a number; got {value!r}")
    try:
        out = kind(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{name} must be a number; got {value!r}") from None
    if out < minimum:
        raise SettingsError(f"{name} must be >= {minimum}; got {value!r}")
    return out


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)(.*)$", re.S)
_URI_IN_TEXT = re.compile(r"mongodb(?:\+srv)?://[^\s'\"<>]*")
#: characters a password must percent-encode inside a URI
_RESERVED = "/@:?#[]"


def _split_credentials(uri: str):
    """(scheme, userinfo, rest after the '@') of a URI, or None without credentials.

    The credentials end at the *last* '@', so a password holding an unescaped '@' or '/' is still
    counted as part of them (never shown); a URI with an '@' in its options is over-redacted, never
    under-redacted.
    """
    m = _SCHEME.match(uri)
    if not m:
        return None
    scheme, rest = m.groups()
    at = rest.rfind("@")
    if at < 0:
        return None
    return scheme, rest[:at], rest[at + 1 :]


def redact_uri(uri: str | None) -> str | None:
    """The URI with any password replaced by ``***`` (safe to print), whatever characters it holds."""
    if not uri:
        return uri
    parts = _split_credentials(uri)
    if parts is None:
        return uri
    scheme, userinfo, rest = parts
    if ":" not in userinfo:
        return uri  # a user name without a password
    return f"{scheme}{userinfo.split(':', 1)[0]}:***@{rest}"


def uri_password(uri: str | None) -> str | None:
    """The password written in a URI (as written, percent-encoding included), or None."""
    parts = _split_credentials(uri) if uri else None
    if parts is None or ":" not in parts[1]:
        return None
    return parts[1].split(":", 1)[1]


def redact_text(text: str, secrets=()) -> str:
    """``text`` with every MongoDB URI's password masked and each secret (and the pieces a parser
    might cut it into at '/', '@', ':') replaced by ``***``."""
    text = _URI_IN_TEXT.sub(lambda m: redact_uri(m.group(0)), str(text))
    pieces = set()
    for secret in secrets:
        if not secret:
            continue
        for form in {secret, unquote(secret), quote_plus(secret), quote(secret, safe="")}:
            pieces.add(form)
            pieces.update(re.split(r"[/@:?#]", form))
    for piece in sorted((p for p in pieces if len(p) >= 3), key=len, reverse=True):
        text = text.replace(piece, "***")
    return text


def _check_uri_credentials(uri: str) -> None:
    password = uri_password(uri)
    if password is None:
        return
    bad = sorted({c for c in password if c in _RESERVED})
    bad_escape = re.search(r"%(?![0-9A-Fa-f]{2})", password)
    if bad or bad_escape:
        what = ", ".join(repr(c) for c in bad) if bad else "a '%' that is not a %XX escape"
        raise SettingsError(
            f"the password in mongo_uri {redact_uri(uri)!r} contains {what}; percent-encode it "
            "(python -c 'import urllib.parse,sys; print(urllib.parse.quote_plus(sys.argv[1]))' PASSWORD) "
            "or give username and password separately"
        )


#: numeric settings: (type, smallest allowed value)
_NUMBERS = {"port": (int, 1), "server_timeout_s": (float, 0.1), "lock_timeout_s": (float, 0.0)}


def _invalid(message: str):
    """Fail a field's validation with ``message`` as the whole of the error (see :func:`_one_line`)."""
    raise PydanticCustomError("setting", "{message}", {"message": message})


def _checked(check, *args):
    try:
        return check(*args)
    except SettingsError as exc:
        _invalid(str(exc))


def _one_line(exc: ValidationError) -> str:
    """The first error of a validation as one line naming the setting."""
    loc, message, err = first_error(exc, "setting")
    if err["type"] == "setting":
        return message
    if err["type"] == "extra_forbidden":
        return f"unknown setting {field_path(*loc)!r}; expected some of {', '.join(Settings.model_fields)}"
    return f"{field_path(*loc)}: {message}"


class Settings(BaseModel):
    """Where the configuration database and the FireWorks LaunchPad live.

    A typed, immutable settings document: every default is written once, here; a bad value raises
    :class:`SettingsError` with one line naming the setting. :meth:`load` reads ``config.yaml`` and
    the environment.

    >>> Settings(home="/tmp/pes", port="27018").port
    27018
    >>> Settings(home="/tmp/pes").embedded
    True
    """

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    home: Path = Field(default_factory=default_home)
    """directory for everything a run writes"""
    uri: str | None = Field(default=None, repr=False)
    """MongoDB connection string (mongodb:// or mongodb+srv://)"""
    host: str | None = None
    """MongoDB host (instead of a URI)"""
    port: int = DEFAULT_PORT
    """MongoDB port"""
    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    auth_source: str | None = None
    """authentication database (default: the database itself, as in FireWorks)"""
    tls: bool = False
    tls_ca_file: str | None = None
    database_name: str | None = None
    """database name (default perovskite_pes, or the one named in the URI)"""
    server_timeout_s: float = 5.0
    """give up on an unreachable server after this many seconds"""
    store_file: Path | None = None
    """embedded store: the SQLite file of the configuration database (relative paths are under home)"""
    lock_timeout_s: float = 60.0
    """how long a process waits for another one's write (0 = refuse at once)"""
    sections: dict[str, Any] = Field(default_factory=dict)
    """free-form sections of config.yaml kept by other layers"""
    config_file: Path | None = None
    """the config.yaml these settings were read from, if any"""

    def __init__(self, **data):
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise SettingsError(_one_line(exc)) from None

    @field_validator("home", mode="before")
    @classmethod
    def _home(cls, value):
        return Path(value).expanduser()

    @field_validator("port", "server_timeout_s", "lock_timeout_s", mode="before")
    @classmethod
    def _number(cls, value, info):
        kind, minimum = _NUMBERS[info.field_name]
        return _checked(_as_number, value, info.field_name, kind, minimum)

    @field_validator("tls", mode="before")
    @classmethod
    def _tls(cls, value):
        return _checked(_as_bool, value, "tls")

    @field_validator("uri", mode="before")
    @classmethod
    def _uri(cls, value):
        if value is None:
            return None
        value = str(value)
        if not value.startswith(("mongodb://", "mongodb+srv://")):
            _invalid(f"mongo_uri must start with mongodb:// or mongodb+srv://; got {redact_uri(value)!r}")
        _checked(_check_uri_credentials, value)
        return value

    @field_validator("database_name", mode="before")
    @classmethod
    def _database_name(cls, value):
        if value is not None:
            _checked(_check_database_name, value)
        return value

    @model_validator(mode="after")
    def _consistent(self):
        if self.uri and self.host:
            _invalid("give either mongo_uri or host/port, not both")
        return self

    @field_validator("store_file", mode="after")
    @classmethod
    def _store_file(cls, value, info):
        if value is None:
            return None
        value = value.expanduser()
        return value if value.is_absolute() else info.data.get("home", default_home()) / value

    # ------------------------------------------------------------------ contract properties
    @property
    def embedded(self) -> bool:
        """True when no MongoDB server is configured: the file-backed store under ``home`` is used."""
        return not (self.uri or self.host)

    @property
    def mongo_uri(self) -> str | None:
        """Connection string of the configured MongoDB server (None for the embedded store)."""
        if self.uri:
            return self.uri
        if not self.host:
            return None
        cred = ""
        if self.username:
            cred = quote_plus(self.username)
            if self.password:
                cred += ":" + quote_plus(self.password)
            cred += "@"
        opts = []
        if self.username:
            opts.append(f"authSource={self.auth_source or self.database}")
        if self.tls:
            opts.append("tls=true")
            if self.tls_ca_file:
                opts.append(f"tlsCAFile={quote_plus(self.tls_ca_file)}")
        query = ("?" + "&".join(opts)) if opts else ""
        return f"mongodb://{cred}{self.host}:{self.port}/{self.database}{query}"

    @property
    def database(self) -> str:
        """Database name shared by the configuration collections and the FireWorks collections."""
        if self.database_name:
            return self.database_name
        if self.uri:
            from pymongo.uri_parser import parse_uri

            try:
                name = parse_uri(self.uri, validate=False).get("database")
            except Exception as exc:
                raise SettingsError(
                    f"mongo_uri {redact_uri(self.uri)!r} is not a valid MongoDB URI: "
                    f"{self.redact(str(exc).splitlines()[0])}"
                ) from None
            if name:
                return name
        return DEFAULT_DATABASE

    @property
    def store_path(self) -> Path:
        """The embedded store's SQLite file (a configured ``*.json`` name means its ``.sqlite`` sibling)."""
        path = self.store_file if self.store_file is not None else self.home / STORE_FILENAME
        return path.with_suffix(".sqlite") if path.suffix == LEGACY_STORE_SUFFIX else path

    @property
    def legacy_store_path(self) -> Path:
        """Where an embedded store of earlier versions (mongomock JSON) would be: migrated on first use."""
        return self.store_path.with_suffix(LEGACY_STORE_SUFFIX)

    @property
    def launchpad_path(self) -> Path:
        """The embedded store's FireWorks LaunchPad: FireWorks' mongomock file next to the SQLite file."""
        return self.store_path.with_name(self.store_path.stem + ".launchpad.json")

    @property
    def lock_path(self) -> Path:
        """The lock of the embedded LaunchPad file (one process runs Fireworks at a time)."""
        return self.launchpad_path.with_name(self.launchpad_path.name + ".lock")

    def secrets(self) -> list[str]:
        """Passwords this object knows (for :meth:`redact`)."""
        return [p for p in (self.password, uri_password(self.uri)) if p]

    def redact(self, text: str) -> str:
        """``text`` with this object's passwords and every URI password masked (for messages and logs)."""
        return redact_text(text, self.secrets())

    @property
    def config_path(self) -> Path:
        return self.home / CONFIG_FILENAME

    @property
    def launcher_dir(self) -> Path:
        """Where ``pes init`` writes the filled-in FireWorks files."""
        return self.home / "fireworks"

    def describe(self) -> str:
        """One line for people: where data lives, without secrets."""
        if self.embedded:
            return f"embedded store {self.store_path} (database {self.database})"
        return f"MongoDB {redact_uri(self.mongo_uri)} (database {self.database})"

    def section(self, name: str) -> dict:
        """A free-form section of config.yaml used by another layer (empty dict when absent)."""
        return dict(self.sections.get(name) or {})

    def identity(self) -> tuple:
        """What makes two settings objects point at the same data."""
        if self.embedded:
            return ("embedded", str(self.store_path.resolve()), self.database)
        return ("mongo", self.mongo_uri, self.database)

    # ------------------------------------------------------------------ file round trip
    def to_config(self) -> dict:
        """The dict written to config.yaml (only non-default values, sections included)."""
        out: dict = {}
        if self.uri:
            out["mongo_uri"] = self.uri
        if self.host:
            out.update(host=self.host, port=self.port)
            for k in ("username", "password", "auth_source", "tls_ca_file"):
                if getattr(self, k):
                    out[k] = getattr(self, k)
            if self.tls:
                out["tls"] = True
        elif self.uri and self.tls:
            out["tls"] = True
        out["database"] = self.database
        if self.server_timeout_s != 5.0:
            out["server_timeout_s"] = self.server_timeout_s
        if self.store_file is not None:
            out["store_file"] = str(self.store_file)
        if self.lock_timeout_s != 60.0:
            out["lock_timeout_s"] = self.lock_timeout_s
        for name, sec in self.sections.items():
            out[name] = sec
        return out

    def save(self, path: Path | None = None) -> Path:
        """Write config.yaml (mode 0600: it may hold a password)."""
        import yaml

        path = Path(path) if path is not None else self.config_path
        path.parent.mkdir(parents=True, exist_ok=True)
        text = (
            "# perovskite-pes settings (see docs/database.md). Environment variables override these.\n"
            + yaml.safe_dump(self.to_config(), sort_keys=False, default_flow_style=False)
        )
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, home: str | Path | None = None, environ: dict | None = None) -> Settings:
        """Read ``$PES_HOME/config.yaml`` (if present) and the environment."""
        env = os.environ if environ is None else environ
        if home is None:
            home = Path(env["PES_HOME"]).expanduser() if env.get("PES_HOME") else Path.home() / ".perovskite_pes"
        home = Path(home).expanduser()
        config_path = home / CONFIG_FILENAME
        values = _read_config(config_path)
        sections = {k: values.pop(k) for k in list(values) if k in SECTIONS}
        for name, sec in sections.items():
            if sec is not None and not isinstance(sec, dict):
                raise SettingsError(f"{config_path}: section {name!r} must be a mapping; got {type(sec).__name__}")
        for key, var in _ENV.items():
            if env.get(var) not in (None, ""):
                values[key] = env[var]
        # an explicit URI in the environment wins over a host in the file, and vice versa
        if env.get("PES_MONGO_URI"):
            values.pop("host", None)
        elif env.get("PES_MONGO_HOST"):
            values.pop("mongo_uri", None)
        kwargs = {"home": home, "sections": sections, "config_file": config_path if config_path.exists() else None}
        rename = {"mongo_uri": "uri", "database": "database_name"}
        for key, value in values.items():
            kwargs[rename.get(key, key)] = value
        try:
            return cls(**kwargs)
        except SettingsError as exc:
            where = f"{config_path} / environment" if config_path.exists() else "environment"
            raise SettingsError(f"{where}: {exc}") from None


_FILE_KEYS = tuple(_ENV)


def _check_database_name(name) -> None:
    if not isinstance(name, str) or not name or any(c in name for c in '/\\. "$') or len(name) > 63:
        raise SettingsError(
            f'database must be a non-empty name without / \\ . space " or $ (at most 63 characters); got {name!r}'
        )


def _read_config(path: Path) -> dict:
    if not path.exists():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SettingsError(f"{path} is not valid YAML{where}: {problem}") from None
    except OSError as exc:
        raise SettingsError(f"cannot read {path}: {exc.strerror}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"{path} must hold a mapping of settings (key: value); got {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k not in _FILE_KEYS and k not in SECTIONS)
    if unknown:
        raise SettingsError(
            f"{path}: unknown setting(s) {', '.join(unknown)}; expected some of {', '.join(_FILE_KEYS + SECTIONS)}"
        )
    return dict(data)


__all__ = ["Settings", "SettingsError", "default_home", "redact_text", "redact_uri", "DEFAULT_DATABASE"]
