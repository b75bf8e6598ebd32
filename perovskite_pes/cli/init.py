"""``pes init``: write ``$PES_HOME/config.yaml`` and the filled-in FireWorks launcher files."""

from __future__ import annotations

import json

HELP = "choose where data lives: write $PES_HOME/config.yaml and FireWorks launcher files"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "init",
        help=HELP,
        description=HELP + ". Without --mongo-uri the embedded store under $PES_HOME is used (a SQLite file; "
        "Fireworks run from one process at a time); with it, a MongoDB server (parallel workers, clusters).",
    )
    p.add_argument(
        "--mongo-uri", help="MongoDB connection string, e.g. mongodb://USER:PASS@localhost:27017/perovskite_pes"
    )
    p.add_argument("--database", help="database name (default: the one in the URI, else perovskite_pes)")
    p.add_argument(
        "--queue", choices=("slurm", "pbs"), default="slurm", help="queue system for my_qadapter.yaml (default slurm)"
    )
    p.add_argument("--no-check", action="store_true", help="do not connect to the store to check and initialise it")
    p.add_argument("--force", action="store_true", help="overwrite an existing config.yaml")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(func=cmd_init)


def cmd_init(args) -> int:
    from ..errors import PesError
    from ..settings import Settings, SettingsError, default_home

    home = default_home()
    config_path = home / "config.yaml"
    if config_path.exists() and not args.force:
        raise PesError(f"{config_path} already exists; pass --force to overwrite it")
    previous_sections = {}
    if config_path.exists():
        try:
            previous_sections = Settings.load(home, environ={}).sections
        except SettingsError:
            previous_sections = {}
    settings = Settings(
        home=home, uri=args.mongo_uri or None, database_name=args.database or None, sections=previous_sections
    )
    status = "not checked"
    if not args.no_check:
        from ..db import close_store
        from ..db.store import Store

        close_store()
        store = Store.open(settings)  # unreachable server / locked store: clear error, nothing written
        status = "initialised a fresh database" if store.initialised else "existing database"
        summary = (store.count_configurations(), store.count_calculations(status=None))
        store.close()
        status += f" ({summary[0]} configurations, {summary[1]} calculations)"
    from ..db.launchers import write_launchers

    written = write_launchers(settings, queue=args.queue)
    written["config.yaml"] = settings.save(config_path)  # last: a failure above leaves no half-made setup
    if args.json:
        print(
            json.dumps(
                {"store": settings.describe(), "status": status, "files": {k: str(v) for k, v in written.items()}},
                indent=1,
            )
        )
        return 0
    print(f"store: {settings.describe()} — {status}")
    print(f"wrote {config_path}")
    print(f"wrote FireWorks files in {settings.launcher_dir}: " + ", ".join(k for k in written if k != "config.yaml"))
    print(f"use them with: export FW_CONFIG_FILE={settings.launcher_dir / 'FW_config.yaml'}")
    import os

    overridden = [v for v in ("PES_MONGO_URI", "PES_MONGO_HOST", "PES_DATABASE", "PES_STORE_FILE") if os.environ.get(v)]
    if overridden:
        print(
            f"note: {', '.join(overridden)} set in the environment "
            f"override{'s' if len(overridden) == 1 else ''} config.yaml"
        )
    if settings.embedded:
        print(
            "note: on the embedded store Fireworks run from one process at a time; for parallel or cluster "
            "workers run `pes init --mongo-uri URI` (docker compose up -d starts a local MongoDB)"
        )
    return 0
