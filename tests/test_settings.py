"""Settings: defaults, config file, environment precedence, and clear errors for bad input."""

import os
import re
import stat

import pytest

from perovskite_pes.errors import PesError
from perovskite_pes.settings import Settings, SettingsError, redact_text, redact_uri


def test_defaults_are_embedded_under_home(pes_home):
    s = Settings.load()
    assert s.home == pes_home
    assert s.embedded and s.mongo_uri is None
    assert s.database == "perovskite_pes"
    assert s.store_path == pes_home / "store.sqlite"
    assert s.launchpad_path == pes_home / "store.launchpad.json"
    assert s.lock_path == pes_home / "store.launchpad.json.lock"
    assert s.legacy_store_path == pes_home / "store.json"
    assert s.lock_timeout_s == 10  # from the fixture's PES_LOCK_TIMEOUT


def test_store_file_setting(pes_home, monkeypatch):
    monkeypatch.setenv("PES_STORE_FILE", "data/campaign.sqlite")
    s = Settings.load()
    assert s.store_path == pes_home / "data" / "campaign.sqlite"
    assert s.launchpad_path == pes_home / "data" / "campaign.launchpad.json"
    # a configuration of earlier versions naming the JSON store: its SQLite sibling, the JSON migrated
    monkeypatch.setenv("PES_STORE_FILE", str(pes_home / "old" / "store.json"))
    s = Settings.load()
    assert (s.store_path, s.legacy_store_path) == (pes_home / "old" / "store.sqlite", pes_home / "old" / "store.json")


def test_file_then_environment_precedence(pes_home, monkeypatch):
    (pes_home / "config.yaml").write_text(
        "host: db.example.org\nport: 27018\nusername: alice\npassword: s3cret\ndatabase: fromfile\n"
        "calculators:\n  vasp_cmd: mpirun vasp_std\n"
    )
    s = Settings.load()
    assert not s.embedded
    assert s.database == "fromfile"
    assert s.mongo_uri == "mongodb://alice:s3cret@db.example.org:27018/fromfile?authSource=fromfile"
    assert s.section("calculators") == {"vasp_cmd": "mpirun vasp_std"}
    assert "s3cret" not in repr(s) and "s3cret" not in s.describe()
    monkeypatch.setenv("PES_DATABASE", "fromenv")
    monkeypatch.setenv("PES_MONGO_PORT", "27019")
    s = Settings.load()
    assert s.database == "fromenv" and s.port == 27019
    # an URI in the environment replaces the host of the file
    monkeypatch.setenv("PES_MONGO_URI", "mongodb://bob:pw@other:27017/uridb")
    s = Settings.load()
    assert s.mongo_uri == "mongodb://bob:pw@other:27017/uridb"
    assert s.database == "fromenv"
    monkeypatch.delenv("PES_DATABASE")
    assert Settings.load().database == "fromfile"


def test_database_from_uri(pes_home, monkeypatch):
    monkeypatch.setenv("PES_MONGO_URI", "mongodb://u:p@h:1/campaign7?authSource=admin")
    s = Settings.load()
    assert s.database == "campaign7"
    assert s.identity() != Settings.load(environ={"PES_HOME": str(pes_home)}).identity()


def test_save_load_round_trip_private(pes_home):
    s = Settings(home=pes_home, uri="mongodb://u:pw@h:27017/x", lock_timeout_s=3, sections={"models": {"epochs": 5}})
    path = s.save()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    t = Settings.load()
    assert (t.mongo_uri, t.database, t.lock_timeout_s, t.section("models")) == (s.mongo_uri, "x", 10, {"epochs": 5})


@pytest.mark.parametrize(
    "text, words",
    [
        ("host: [unclosed\n", ["not valid YAML", "line"]),
        ("- a\n- b\n", ["mapping"]),
        ("hots: localhost\n", ["unknown setting", "hots"]),
        ("port: many\n", ["port", "number"]),
        ("tls: maybe\n", ["tls", "true or false"]),
        ("mongo_uri: http://x\n", ["mongodb://"]),
        ("database: a.b\n", ["database"]),
        ("calculators: 3\n", ["calculators", "mapping"]),
    ],
)
def test_malformed_config_is_one_clear_error(pes_home, text, words):
    (pes_home / "config.yaml").write_text(text)
    with pytest.raises(SettingsError) as err:
        Settings.load()
    msg = str(err.value)
    assert isinstance(err.value, PesError) and isinstance(err.value, ValueError)
    assert "\n" not in msg and str(pes_home / "config.yaml") in msg
    for w in words:
        assert w in msg


def test_bad_environment_variable(pes_home, monkeypatch):
    monkeypatch.setenv("PES_LOCK_TIMEOUT", "-1")
    with pytest.raises(SettingsError, match="lock_timeout_s"):
        Settings.load()


def test_redact_uri():
    assert redact_uri("mongodb://user:p%40ss@host:1/db?x=1") == "mongodb://user:***@host:1/db?x=1"
    assert redact_uri("mongodb://host:1/db") == "mongodb://host:1/db"
    assert redact_uri("mongodb://user@host/db") == "mongodb://user@host/db"
    assert redact_uri(None) is None


SECRETS = ["pa/ss", "p@ss@w0rdX", "pa:ss", "a/b@c:d", "s%2Fe%40c%3Ar"]


@pytest.mark.parametrize("password", SECRETS)
@pytest.mark.parametrize("encode", [False, True])
def test_passwords_with_reserved_characters_never_leak(password, encode, pes_home, monkeypatch):
    from urllib.parse import quote_plus, unquote

    written = quote_plus(unquote(password)) if encode else password
    uri = f"mongodb://alice:{written}@db.example.org:27017/campaign?authSource=admin"
    assert redact_uri(uri) == "mongodb://alice:***@db.example.org:27017/campaign?authSource=admin"
    assert redact_text(f"failed to reach {uri}: timeout", [written]) == (
        "failed to reach mongodb://alice:***@db.example.org:27017/campaign?authSource=admin: timeout"
    )
    monkeypatch.setenv("PES_MONGO_URI", uri)
    raw = unquote(password)
    pieces = [x for x in re.split(r"[/@:]", raw) + [raw, written] if len(x) >= 3]
    try:
        s = Settings.load()
    except SettingsError as exc:  # unescaped reserved characters: refused, and the message hides them
        msg = str(exc)
        assert not encode and "percent-encode" in msg and "\n" not in msg
    else:
        assert s.mongo_uri == uri
        msg = s.describe() + repr(s) + s.redact(f"server said: bad auth for {written} / {raw}")
    for piece in pieces:
        assert piece not in msg, (piece, msg)
    assert "alice" in msg


def test_password_given_separately_is_encoded_and_redacted(pes_home, monkeypatch):
    monkeypatch.setenv("PES_MONGO_HOST", "db.example.org")
    monkeypatch.setenv("PES_MONGO_USER", "alice")
    monkeypatch.setenv("PES_MONGO_PASSWORD", "p@ss/wo:rd")
    s = Settings.load()
    assert s.mongo_uri.startswith("mongodb://alice:p%40ss%2Fwo%3Ard@db.example.org:27017/")
    assert "p%40ss" not in s.describe() and "wo:rd" not in s.redact(f"auth failed for p@ss/wo:rd ({s.mongo_uri})")
