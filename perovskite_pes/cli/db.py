"""``pes db``: what the configuration database holds; queries, export and import."""

from __future__ import annotations

import functools
import json
import sys

from ._tables import print_table

HELP = "inspect, query, export, import, back up and migrate the configuration database"


def _one_line(func):
    """Run a ``pes db`` command; an OS error (a full disk, a missing directory) becomes one line, exit 2."""

    @functools.wraps(func)
    def run(args):
        from ..errors import PesError

        try:
            return func(args)
        except BrokenPipeError:  # the reader went away: `pes` ends quietly
            raise
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise PesError(f"{where}{exc.strerror or exc}; nothing stored changed") from None

    return run


def register(subparsers) -> None:
    p = subparsers.add_parser("db", help=HELP, description=HELP)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])
    verbs = p.add_subparsers(dest="verb", metavar="VERB")

    s = verbs.add_parser("stats", help="counts of references, configurations, calculations, models, fireworks")
    s.add_argument("--json", action="store_true", help="print JSON for scripts")
    s.set_defaults(func=_one_line(cmd_stats))

    q = verbs.add_parser(
        "query",
        help="list configurations and calculations that match filters",
        description="List configurations joined with their calculations. Energies are total energy per atom "
        "(eV/atom). Without calculation filters every matching configuration is listed.",
    )
    _add_filters(q)
    q.add_argument("--limit", type=int, default=None, help="at most this many rows")
    q.add_argument("--json", action="store_true", help="print JSON for scripts")
    q.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        help="also write the structures: FILE.xyz/.extxyz (extended XYZ with energies), FILE.jsonl, "
        "or a directory (one POSCAR per configuration)",
    )
    q.set_defaults(func=_one_line(cmd_query))

    e = verbs.add_parser(
        "export", help="write configurations with energy, forces and stress (extended XYZ or JSON lines)"
    )
    e.add_argument("file", help="output file: .xyz/.extxyz or .jsonl, gzipped when the name ends in .gz")
    e.add_argument("--format", choices=("extxyz", "jsonl"), help="override the format implied by the extension")
    _add_filters(e)
    e.add_argument("--limit", type=int, default=None)
    e.set_defaults(func=_one_line(cmd_export))

    i = verbs.add_parser(
        "import",
        help="read configurations and calculations from extended XYZ or JSON lines (either may be gzipped)",
        description="Import a file. The whole file is validated first; any bad record (missing energy, wrong "
        "number of atoms or force rows, ...) stops the import and nothing is stored.",
    )
    i.add_argument("file")
    i.add_argument("--format", choices=("extxyz", "jsonl"))
    i.add_argument("--calculator", help="calculator name for frames that do not carry one (extended XYZ)")
    i.add_argument("--settings-hash", help="calculator setup fingerprint for frames without one")
    i.add_argument(
        "--species",
        default="Cs,Pb,Br",
        help="A,B,X species of the reference when the file does not say (default Cs,Pb,Br)",
    )
    i.add_argument(
        "--lattice-parameter", type=float, default=None, help="reference lattice parameter in Angstrom (default 5.87)"
    )
    i.add_argument("--supercell", default="2", help="reference supercell: n, 'n1 n2 n3' or 9 integers (default 2)")
    i.add_argument("--energy-key", default="energy", help="header key of the energy (default energy)")
    i.add_argument("--forces-key", default="forces", help="per-atom column of the forces (default forces)")
    i.add_argument("--stress-key", default="stress", help="header key of the stress (default stress)")
    i.add_argument(
        "--structures-only", action="store_true", help="accept frames without energies (store structures only)"
    )
    i.add_argument(
        "--replace",
        action="store_true",
        help="store results that differ from a stored calculation with the same settings hash (the old one "
        "is kept as superseded); without it such a file is refused",
    )
    i.add_argument(
        "--allow-outliers",
        action="store_true",
        help="store energies more than 10 eV/atom from the reference and forces above 50 eV/A",
    )
    i.add_argument("--dry-run", action="store_true", help="validate only, store nothing")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=_one_line(cmd_import))

    for name, what, description, force, func in (
        (
            "backup",
            "copy the embedded store and its LaunchPad into one file (while others write)",
            "Write a consistent copy of the embedded store (SQLite online backup) and its FireWorks LaunchPad into "
            "FILE. Other processes may keep working meanwhile.",
            "overwrite FILE if it exists",
            cmd_backup,
        ),
        (
            "restore",
            "replace the embedded store and its LaunchPad by a backup",
            "Check FILE (a backup from `pes db backup`), then replace the store's content and its LaunchPad by it. A "
            "store that holds data is replaced only with --force.",
            "replace a store that holds configurations or calculations",
            cmd_restore,
        ),
    ):
        b = verbs.add_parser(name, help=what, description=description)
        b.add_argument("file")
        b.add_argument("--force", action="store_true", help=force)
        b.add_argument("--json", action="store_true")
        b.set_defaults(func=_one_line(func))

    m = verbs.add_parser(
        "migrate",
        help="convert an embedded store of earlier versions (store.json) to SQLite",
        description="Convert the mongomock JSON store of earlier versions into the SQLite store and "
        "the LaunchPad file (done automatically on first use). The old file is kept as "
        "FILE.migrated.",
    )
    m.add_argument("file", nargs="?", help="the old store (default: store.json next to the configured store)")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=_one_line(cmd_migrate))

    lp = verbs.add_parser(
        "lpad",
        help="run FireWorks' lpad on this store (safe on the embedded store)",
        description="Run FireWorks' lpad with the store's LaunchPad, e.g. `pes db lpad get_wflows -d less`. On the "
        "embedded store this holds the LaunchPad's lock and writes atomically, which a plain `lpad` cannot.",
    )
    lp.add_argument("lpad_args", nargs="...", help="arguments for lpad")
    lp.set_defaults(func=_one_line(cmd_lpad))


def _add_filters(p) -> None:
    g = p.add_argument_group("filters")
    g.add_argument("--reference", help="reference label (CsPbBr3_a5.8700_2x2x2), formula or id")
    g.add_argument("--tilt-system", help="Glazer symbol, e.g. a0a0c+")
    g.add_argument("--method", help="sampling method, e.g. tilt, grid, random, interpolate")
    g.add_argument("--calculator", help="calculator name (sevennet, chgnet, cp2k, vasp, ...)")
    g.add_argument("--settings-hash", help="calculator setup fingerprint")
    g.add_argument("--status", choices=("completed", "failed"))
    g.add_argument("--emin", type=float, help="lowest energy, eV/atom")
    g.add_argument("--emax", type=float, help="highest energy, eV/atom")
    g.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="any query field (repeatable); see `pes db query --fields`",
    )
    p.add_argument("--fields", action="store_true", help="list the query fields and exit")


def _filters(args) -> dict:
    from ..db.store import QUERY_FIELDS, QueryError

    f = {
        "reference": args.reference,
        "tilt_system": args.tilt_system,
        "method": args.method,
        "calculator": args.calculator,
        "settings_hash": args.settings_hash,
        "status": args.status,
        "emin": args.emin,
        "emax": args.emax,
    }
    for item in args.where:
        if "=" not in item:
            raise QueryError(f"--where expects FIELD=VALUE; got {item!r}")
        k, v = item.split("=", 1)
        k = k.strip().replace("-", "_")
        if k not in QUERY_FIELDS:
            raise QueryError(f"unknown query field {k!r}; known fields: {', '.join(QUERY_FIELDS)}")
        f[k] = v
    return {k: v for k, v in f.items() if v is not None}


def _print_fields() -> int:
    from ..db.store import QUERY_FIELDS

    for k, v in QUERY_FIELDS.items():
        print(f"{k:14s} {v}")
    return 0


def cmd_stats(args) -> int:
    from ..db import get_store

    st = get_store().stats()
    if args.json:
        print(json.dumps(st, indent=2, default=str))
        return 0
    print(st["store"])
    superseded = f" (+{st['superseded_calculations']} superseded)" if st.get("superseded_calculations") else ""
    print(
        f"configurations: {st['configurations']}   calculations: {st['calculations']}{superseded}   "
        f"models: {st['models']}   workflows: {st['workflows']}"
    )
    if st["references"]:
        print_table("references", ["reference", "configurations"], [[k, v] for k, v in st["references"].items()])
    if st["configurations"]:
        print_table(
            "configurations by sampling",
            ["method", "tilt system", "count"],
            [[k, "", v] for k, v in st["by_method"].items()] + [["", k, v] for k, v in st["by_tilt_system"].items()],
        )
    if st["by_calculator"]:
        print_table(
            "calculations",
            ["calculator", "settings hash", "status", "count"],
            [[r["calculator"], r["settings_hash"], r["status"], r["count"]] for r in st["by_calculator"]],
        )
    if st["fireworks"]:
        print("fireworks: " + ", ".join(f"{k} {v}" for k, v in sorted(st["fireworks"].items())))
    if st["active_models"]:
        print("active models: " + ", ".join(st["active_models"]))
    return 0


def cmd_query(args) -> int:
    if args.fields:
        return _print_fields()
    from ..db import get_store

    store = get_store()
    filters = _filters(args)
    rows = store.query(filters, limit=args.limit)
    if args.output:
        _write_structures(store, filters, args.limit, args.output)
    if args.json:
        print(json.dumps(rows, indent=1, default=str))
        return 0
    print_table(
        f"{len(rows)} row(s)",
        ["config", "reference", "tilt", "method", "calculator", "status", "E (eV/atom)"],
        [
            [
                r["config_id"],
                r["reference"],
                r["tilt_system"],
                r["method"],
                r["calculator"],
                r["status"],
                None if r["energy_per_atom"] is None else f"{r['energy_per_atom']:.6f}",
            ]
            for r in rows
        ],
    )
    if args.output:
        print(f"structures written to {args.output}", file=sys.stderr)
    return 0


def _write_structures(store, filters, limit, output) -> int:
    from pathlib import Path

    from ..db.interchange import export_records, names_a_file_format

    out = Path(output)
    if names_a_file_format(out):
        return export_records(store.records(filters, limit=limit), out)
    from ..errors import PesError

    n = 0
    seen = set()
    try:
        out.mkdir(parents=True, exist_ok=True)
        for config, _calc, cid in store.records(filters, limit=limit):
            if cid in seen:
                continue
            seen.add(cid)
            config.to_structure().to(filename=str(out / f"{cid}.vasp"), fmt="poscar")
            n += 1
    except OSError as exc:
        raise PesError(f"cannot write the structures into {out}: {exc.strerror or exc} ({n} written)") from None
    return n


def cmd_export(args) -> int:
    if args.fields:
        return _print_fields()
    from ..db import get_store
    from ..db.interchange import detect_format, export_records

    detect_format(args.file, args.format)
    store = get_store()
    n = export_records(store.records(_filters(args), limit=args.limit), args.file, args.format)
    print(f"exported {n} record(s) to {args.file}")
    return 0


def _parse_supercell(text: str):
    import numpy as np

    from ..errors import PesError

    try:
        vals = [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise PesError(f"--supercell must be integers (n, 'n1 n2 n3' or 9 values); got {text!r}") from None
    if len(vals) == 1:
        return vals[0]
    if len(vals) == 3:
        return vals
    if len(vals) == 9:
        return np.array(vals).reshape(3, 3)
    raise PesError(f"--supercell must have 1, 3 or 9 integers; got {len(vals)}")


def cmd_import(args) -> int:
    from pathlib import Path

    from ..db.interchange import import_records, read_records
    from ..structure import Perovskite

    species = tuple(s.strip() for s in args.species.split(","))
    kw = {"species": species}
    if args.lattice_parameter is not None:
        kw["lattice_parameter"] = args.lattice_parameter
    reference = Perovskite(**kw).supercell(_parse_supercell(args.supercell))
    records = read_records(
        args.file,
        args.format,
        reference=reference,
        calculator=args.calculator,
        settings_hash=args.settings_hash,
        energy_key=args.energy_key,
        forces_key=args.forces_key,
        stress_key=args.stress_key,
        require_energy=not args.structures_only,
    )
    if args.dry_run:
        summary = {"records": len(records), "calculations": sum(r.result is not None for r in records), "stored": False}
    else:
        from ..db import get_store

        summary = import_records(
            get_store(),
            records,
            source=f"import:{Path(args.file).name}",
            replace=args.replace,
            allow_outliers=args.allow_outliers,
        )
    if args.json:
        print(json.dumps(summary, indent=1))
    elif args.dry_run:
        print(
            f"{args.file}: {summary['records']} valid record(s), "
            f"{summary['calculations']} with calculations (nothing stored)"
        )
    else:
        print(
            f"imported {summary['records']} record(s) from {args.file}: {summary['configurations_new']} new "
            f"configuration(s), {summary['configurations_existing']} already stored; calculations: "
            f"{summary['calculations_new']} new, {summary['calculations_unchanged']} unchanged, "
            f"{summary['calculations_replaced']} replaced"
        )
    return 0


def _print_summary(summary: dict, as_json: bool, line: str) -> int:
    print(json.dumps(summary, indent=1, default=str) if as_json else line)
    return 0


def cmd_backup(args) -> int:
    from ..db import get_store

    s = get_store().backup(args.file, force=args.force)
    return _print_summary(
        s,
        args.json,
        f"backed up {s['configurations']} configurations, {s['calculations']} "
        f"calculations, {s['models']} models{' and the LaunchPad' if s['launchpad'] else ''} "
        f"to {s['file']} ({s['bytes'] / 1e6:.1f} MB)",
    )


def cmd_restore(args) -> int:
    from ..db import get_store

    s = get_store().restore(args.file, force=args.force)
    return _print_summary(
        s,
        args.json,
        f"restored {s['configurations']} configurations, {s['calculations']} "
        f"calculations, {s['models']} models{' and the LaunchPad' if s['launchpad'] else ''} "
        f"from {s['file']}",
    )


def cmd_migrate(args) -> int:
    from ..db import close_store
    from ..db.migrate import migrate_legacy
    from ..errors import PesError
    from ..settings import Settings

    settings = Settings.load()
    if not settings.embedded:
        raise PesError(
            "pes db migrate converts the embedded store of earlier versions; the configured store is MongoDB"
        )
    close_store()
    s = migrate_legacy(settings, args.file or settings.legacy_store_path)
    return _print_summary(
        s,
        args.json,
        f"migrated {s['configurations']} configurations, {s['calculations']} "
        f"calculations, {s['models']} models and {s['fireworks']} Fireworks from {s['source']} to "
        f"{s['store']} and {s['launchpad']}; the old file is kept as {s['kept']}",
    )


def cmd_lpad(args) -> int:
    import tempfile
    from pathlib import Path

    from fireworks.scripts.lpad_run import lpad

    from ..db import get_store

    store = get_store()
    lp = store.get_launchpad()
    rest = list(args.lpad_args)
    if rest and rest[0] == "--":
        rest = rest[1:]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "my_launchpad.yaml"
        lp.to_file(str(path))
        try:
            rc = lpad(["-l", str(path), *rest])
        except SystemExit as exc:  # argparse inside lpad
            rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        finally:
            store.flush()
    return int(rc or 0)
