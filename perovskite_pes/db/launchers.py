"""Fill in the FireWorks launcher templates (``launchers/``) for the configured store."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from ..errors import PesError
from ..settings import Settings

QUEUES = ("slurm", "pbs")
#: FWorker categories: DFT Fireworks carry "dft"; surrogate/training Fireworks carry none
WORKERS = {"my_fworker.yaml": "", "my_fworker_dft.yaml": "dft", "my_fworker_ml.yaml": "__none__"}


def template_dir() -> Path:
    """The launcher templates: ``PES_LAUNCHER_TEMPLATES``, else the source tree's ``launchers/``
    (editable installs), else ``<prefix>/share/perovskite_pes/launchers`` (wheel installs)."""
    env = os.environ.get("PES_LAUNCHER_TEMPLATES")
    if env:
        candidates = [Path(env)]
    else:
        candidates = [
            Path(__file__).resolve().parents[2] / "launchers",
            Path(sys.prefix) / "share" / "perovskite_pes" / "launchers",
        ]
    for path in candidates:
        if (path / "my_launchpad.yaml").is_file():
            return path
    raise PesError(
        f"launcher templates not found in {' or '.join(str(p) for p in candidates)}; reinstall perovskite-pes "
        "or set PES_LAUNCHER_TEMPLATES to a copy of its launchers/ directory"
    )


_FIELD = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _yaml(value) -> str:
    """A value as a YAML flow scalar/mapping (JSON is valid YAML)."""
    if isinstance(value, Path):
        value = str(value)
    return json.dumps(value)


def _render(name: str, values: dict) -> str:
    text = (template_dir() / name).read_text(encoding="utf-8")

    def fill(match):
        key = match.group(1)
        if key not in values:  # pragma: no cover - template and code out of step
            raise PesError(f"launcher template {name} uses an unknown field ${{{key}}}")
        return _yaml(values[key])

    return _FIELD.sub(fill, text)


def launchpad_values(settings: Settings) -> dict:
    timeout = {"serverSelectionTimeoutMS": int(settings.server_timeout_s * 1000)}
    base = dict(
        host="localhost",
        port=27017,
        database=settings.database,
        username=None,
        password=None,
        authsource=None,
        uri_mode=False,
        mongoclient_kwargs={},
        logdir=None,
    )
    if settings.embedded:
        return base
    if settings.uri:
        kwargs = dict(timeout, **({"tls": True} if settings.tls else {}))
        return {**base, "host": settings.uri, "port": None, "uri_mode": True, "mongoclient_kwargs": kwargs}
    kwargs = dict(timeout)
    if settings.tls:
        kwargs["tls"] = True
        if settings.tls_ca_file:
            kwargs["tlsCAFile"] = settings.tls_ca_file
    return {
        **base,
        "host": settings.host,
        "port": settings.port,
        "username": settings.username,
        "password": settings.password,
        "authsource": settings.auth_source or (settings.database if settings.username else None),
        "mongoclient_kwargs": kwargs,
    }


def _write(path: Path, text: str, private: bool = False) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return path


def write_launchers(settings: Settings, queue: str = "slurm", directory: Path | None = None) -> dict[str, Path]:
    """Write my_launchpad.yaml, the fworkers, the queue adapters and FW_config.yaml; return their paths."""
    if queue not in QUEUES:
        raise PesError(f"queue must be one of {', '.join(QUEUES)}; got {queue!r}")
    out_dir = Path(directory) if directory else settings.launcher_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    home = settings.home.absolute()
    written: dict[str, Path] = {}

    written["my_launchpad.yaml"] = _write(
        out_dir / "my_launchpad.yaml", _render("my_launchpad.yaml", launchpad_values(settings)), private=True
    )
    for fname, category in WORKERS.items():
        label = {"": "all", "dft": "dft", "__none__": "ml"}[category]
        written[fname] = _write(
            out_dir / fname,
            _render("my_fworker.yaml", {"name": f"pes-{label}-worker", "category": category, "pes_home": str(home)}),
        )
    q_values = {
        "rocket_launch": f"rlaunch -c {out_dir.absolute()} singleshot",
        "logdir": str(home / "logs" / "queue"),
        "pre_rocket": f"export PES_HOME={home}; export FW_CONFIG_FILE={out_dir.absolute() / 'FW_config.yaml'}",
    }
    for q in QUEUES:
        text = _render(f"my_qadapter_{q}.yaml", q_values)
        written[f"my_qadapter_{q}.yaml"] = _write(out_dir / f"my_qadapter_{q}.yaml", text)
        if q == queue:
            written["my_qadapter.yaml"] = _write(out_dir / "my_qadapter.yaml", text)
    written["FW_config.yaml"] = _write(
        out_dir / "FW_config.yaml",
        _render(
            "FW_config.yaml",
            {
                "config_dir": str(out_dir.absolute()),
                "launchpad_file": str(written["my_launchpad.yaml"].absolute()),
                "fworker_file": str(written["my_fworker.yaml"].absolute()),
                "qadapter_file": str(written["my_qadapter.yaml"].absolute()),
                "mongomock_file": str(settings.launchpad_path.absolute()) if settings.embedded else None,
            },
        ),
    )
    return written
