"""``pes enumerate``: build configurations of the perovskite and write them to files or the database.

Verbs: ``tilts`` (the 15 Glazer systems and their space groups), ``tilt`` (one system at given
angles), ``grid`` (mode/strain amplitude grids around a parent), ``random`` (n-sphere samples),
``interpolate`` (paths between configurations). Every verb that makes configurations removes
symmetry-equivalent duplicates and prints how many it made and how many it rejected.
"""

from __future__ import annotations

import json
import sys

HELP = "build configurations: tilt systems, mode/strain grids, random samples, interpolations"

POINT_HELP = (
    "'cubic', a Glazer symbol with optional angles in degrees ('a0a0c-', 'a+b-b-@10,8'), or a file of "
    "configurations with an optional index ('relaxed.extxyz:2', default the first)"
)


def register(subparsers) -> None:
    p = subparsers.add_parser("enumerate", help=HELP, description=HELP)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])
    verbs = p.add_subparsers(dest="verb", metavar="VERB")

    t = verbs.add_parser(
        "tilts",
        help="list the 15 Glazer tilt systems with the space group spglib finds for each",
        description="Build each of the 15 Howard-Stokes tilt systems in the supercell at the default angles "
        "(distinct angles for distinct letters) and report the space group spglib finds next to the expected "
        "one. With -o/--db the 15 configurations are also written.",
    )
    _reference_args(t)
    t.add_argument("--symprec", type=float, default=1e-3, help="spglib tolerance in Angstrom (default 1e-3)")
    _output_args(t)
    t.set_defaults(func=cmd_tilts)

    one = verbs.add_parser("tilt", help="one tilt system at given angles", description="Build one Glazer tilt system.")
    one.add_argument("symbol", help="Glazer symbol, one of the 15 (e.g. a0a0c+, a-a-a-, a+b-b-)")
    one.add_argument(
        "--angles",
        nargs="+",
        type=float,
        metavar="DEG",
        help="tilt angles in degrees: one per distinct letter of the tilted axes, or 3 per-axis values "
        "(default: 8, 6, 10 degrees for letters a, b, c)",
    )
    _reference_args(one)
    _output_args(one)
    one.set_defaults(func=cmd_tilt)

    g = verbs.add_parser(
        "grid",
        help="grid of displacement-mode and strain amplitudes around a parent",
        description="Cartesian grid of amplitudes along symmetry-adapted displacement modes and strains around "
        "a parent configuration; symmetry-equivalent grid points are kept once (the irreducible wedge).",
    )
    g.add_argument("--parent", default="cubic", help="parent configuration: " + POINT_HELP)
    g.add_argument(
        "--modes",
        nargs="+",
        default=[],
        metavar="LABEL",
        help="displacement subspaces by irrep label or name (e.g. R4+ M3+ GM4-_1), or 'all'",
    )
    g.add_argument(
        "--amplitudes",
        nargs="+",
        type=float,
        default=None,
        metavar="A",
        help="mode amplitudes in Angstrom, used along every chosen mode",
    )
    g.add_argument(
        "--strains",
        nargs="+",
        default=[],
        metavar="IRREP",
        choices=("A1g", "Eg", "T2g"),
        help="strain subspaces of m-3m: A1g (volume), Eg, T2g",
    )
    g.add_argument(
        "--strain-amplitudes",
        nargs="+",
        type=float,
        default=None,
        metavar="E",
        help="strain amplitudes (dimensionless), used along every chosen strain direction",
    )
    g.add_argument("--keep-duplicates", action="store_true", help="keep symmetry-equivalent grid points")
    _reference_args(g)
    _output_args(g)
    g.set_defaults(func=cmd_grid)

    r = verbs.add_parser(
        "random",
        help="random samples with amplitudes uniform on an n-sphere",
        description="Random mode and strain amplitudes drawn uniformly on n-spheres (inside them with --fill), "
        "seeded. A candidate closer than --tol (symmetry-reduced displacement distance, Angstrom) to an accepted "
        "one is rejected as a duplicate.",
    )
    r.add_argument("--parent", default="cubic", help="parent configuration: " + POINT_HELP)
    r.add_argument("-n", "--n", type=int, required=True, help="number of configurations to make")
    r.add_argument("--radius", type=float, default=0.1, help="displacement amplitude radius in Angstrom (default 0.1)")
    r.add_argument("--strain-radius", type=float, default=0.0, help="strain amplitude radius (default 0: no strain)")
    r.add_argument(
        "--modes",
        nargs="+",
        default=["all"],
        metavar="LABEL",
        help="displacement subspaces to draw along (default all 3N-3 modes)",
    )
    r.add_argument(
        "--strains",
        nargs="+",
        default=["A1g", "Eg", "T2g"],
        choices=("A1g", "Eg", "T2g"),
        help="strain subspaces to draw along when --strain-radius > 0 (default all)",
    )
    r.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    r.add_argument(
        "--tol", type=float, default=0.05, help="uniqueness tolerance in Angstrom; 0 disables the filter (default 0.05)"
    )
    r.add_argument("--fill", action="store_true", help="draw inside the n-ball instead of on its surface")
    r.add_argument("--max-tries", type=int, default=None, help="give up after this many draws (default 20 n)")
    _reference_args(r)
    _output_args(r)
    r.set_defaults(func=cmd_random)

    i = verbs.add_parser(
        "interpolate",
        help="linear interpolation along a path of configurations",
        description="Configurations linearly interpolated (displacements and strain) along a path, e.g. "
        "`pes enumerate interpolate cubic a0a0c- a+b-b- --n 5` for cubic -> tetragonal -> orthorhombic.",
    )
    i.add_argument("points", nargs="+", metavar="POINT", help="two or more path points: " + POINT_HELP)
    i.add_argument("--n", type=int, default=5, help="points per segment including its ends (default 5)")
    i.add_argument(
        "--align",
        action="store_true",
        help="replace each point by its symmetry image closest to the previous one first",
    )
    _reference_args(i)
    _output_args(i)
    i.set_defaults(func=cmd_interpolate)


# ----------------------------------------------------------------------------- shared options
def _reference_args(p) -> None:
    g = p.add_argument_group("reference")
    g.add_argument(
        "--species",
        nargs="+",
        default=["Cs", "Pb", "Br"],
        metavar="EL",
        help="A, B and X species (default Cs Pb Br; 'Cs,Pb,Br' also accepted)",
    )
    g.add_argument(
        "--lattice-parameter",
        type=float,
        default=None,
        metavar="A",
        help="cubic lattice parameter in Angstrom (default 5.87)",
    )
    g.add_argument(
        "--supercell",
        nargs="+",
        default=["2"],
        metavar="N",
        help="supercell: n, n1 n2 n3 or 9 integers of the matrix (default 2: 2x2x2, 40 atoms)",
    )


def _output_args(p) -> None:
    g = p.add_argument_group("output")
    g.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        help="write the configurations: FILE.extxyz/.xyz, FILE.cif, or a directory of POSCAR files",
    )
    g.add_argument("--format", choices=("extxyz", "cif", "poscar"), help="override the format implied by PATH")
    g.add_argument("--db", action="store_true", help="store the configurations in the configuration database")
    g.add_argument("--source", default="enumerate", help="provenance label stored with them (default enumerate)")
    g.add_argument(
        "--min-distance",
        type=float,
        default=1.5,
        metavar="A",
        help="reject amplitudes that put two atoms closer than this (Angstrom, default 1.5; 0 disables)",
    )
    g.add_argument(
        "--skip-too-close",
        action="store_true",
        help="skip configurations below --min-distance instead of stopping with an error",
    )
    g.add_argument("--json", action="store_true", help="print a JSON summary for scripts")


def _reference(args):
    from ..errors import PesError
    from ..structure import Perovskite
    from ..structure.reference import CSPBBR3_LATTICE_PARAMETER

    species = [s for item in args.species for s in item.replace(",", " ").split()]
    try:
        values = [float(v) for item in args.supercell for v in item.replace(",", " ").split()]
    except ValueError:
        raise PesError(
            f"--supercell must be integers (n, n1 n2 n3 or 9 values); got {' '.join(args.supercell)!r}"
        ) from None
    if len(values) not in (1, 3, 9):
        raise PesError(f"--supercell takes 1, 3 or 9 integers; got {len(values)}")
    import numpy as np

    matrix = values[0] if len(values) == 1 else (values if len(values) == 3 else np.reshape(values, (3, 3)))
    a = CSPBBR3_LATTICE_PARAMETER if args.lattice_parameter is None else args.lattice_parameter
    return Perovskite(tuple(species), a).supercell(matrix)


def _min_distance(args):
    return args.min_distance if args.min_distance and args.min_distance > 0 else None


def _point(spec: str, reference):
    """A configuration from 'cubic', 'GLAZER[@a,b,c]' or 'FILE[:INDEX]'."""
    from pathlib import Path

    from ..errors import PesError
    from ..structure import Configuration, read_configurations, tilt_configuration
    from ..structure.tilts import _BY_SYMBOL, glazer_system

    text = spec.strip()
    if text.lower() in ("cubic", "a0a0a0", "reference"):
        return Configuration(reference, tags={"name": "cubic"})
    symbol, _, angles = text.partition("@")
    looks_glazer = len(symbol) == 6 and symbol[1::2].strip("0+-") == "" and not Path(text).exists()
    if looks_glazer or symbol.lower() in _BY_SYMBOL:
        g = glazer_system(symbol)
        vals = None
        if angles:
            try:
                vals = [float(v) for v in angles.split(",")]
            except ValueError:
                raise PesError(f"tilt angles in {spec!r} must be numbers in degrees separated by commas") from None
        return tilt_configuration(reference, g, vals)
    path, index = text, 0
    if not Path(text).exists() and ":" in text:
        path, _, idx = text.rpartition(":")
        try:
            index = int(idx)
        except ValueError:
            raise PesError(f"{spec!r}: expected FILE or FILE:INDEX with an integer index") from None
    if not Path(path).exists():
        raise PesError(f"{spec!r} is neither 'cubic', one of the 15 Glazer symbols nor an existing file")
    configs = read_configurations(path, reference=reference)
    if not -len(configs) <= index < len(configs):
        raise PesError(f"{path} holds {len(configs)} configuration(s); index {index} is out of range")
    return configs[index]


def _modes(reference, labels):
    from ..errors import PesError
    from ..structure import displacement_modes

    basis = displacement_modes(reference)
    if not labels:
        return None
    if any(lab == "all" for lab in labels):
        return basis.vectors
    import numpy as np

    out = []
    for lab in labels:
        try:
            out.append(basis.subspace_vectors(lab))
        except KeyError:
            names = sorted({s.label for s in basis.subspaces} | {s.name for s in basis.subspaces})
            raise PesError(
                f"no displacement subspace {lab!r} in this supercell; available: {', '.join(names)}"
            ) from None
    return np.concatenate(out)


def _strains(labels):
    import numpy as np

    from ..structure import strain_basis

    if not labels:
        return None
    sb = strain_basis()
    return np.concatenate([sb.subspace_vectors(lab) for lab in labels])


def _dedupe(configs):
    """Drop configurations whose canonical key was seen before; returns (kept, n_rejected)."""
    from ..structure import canonical_key

    seen, kept = set(), []
    for c in configs:
        k = canonical_key(c)
        if k not in seen:
            seen.add(k)
            kept.append(c)
    return kept, len(configs) - len(kept)


def _check_distances(configs, args):
    """Apply --min-distance: raise (default) or drop with --skip-too-close; returns (kept, n_dropped)."""
    from ..structure import SamplingError, check_min_distance

    md = _min_distance(args)
    if md is None:
        return configs, 0
    kept = []
    for c in configs:
        try:
            check_min_distance(c, md)
        except SamplingError:
            if not args.skip_too_close:
                raise
            continue
        kept.append(c)
    return kept, len(configs) - len(kept)


def _finish(args, verb: str, configs, candidates: int, duplicates: int, too_close: int = 0, extra=None, quiet=False):
    """Write to file and/or database and print the summary (returns 0, or the summary when ``quiet``)."""
    summary = {
        "command": verb,
        "made": len(configs),
        "candidates": candidates,
        "duplicates": duplicates,
        "too_close": too_close,
        "written": [],
        "db": None,
    }
    summary.update(extra or {})
    if args.output:
        from ..structure import write_configurations

        summary["written"] = write_configurations(args.output, configs, fmt=args.format)
        summary["output"] = args.output
    if args.db:
        from ..db import get_store

        report = get_store().save_configurations(configs, source=args.source)
        summary["db"] = {"new": report.new, "existing": report.existing, "ids": list(report.ids)}
    if quiet:
        return summary
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        print()
    else:
        _print_summary(args, verb, summary)
    return 0


def _print_summary(args, verb: str, summary: dict) -> None:
    line = (
        f"{verb}: made {summary['made']} configuration(s) from {summary['candidates']} candidate(s); "
        f"rejected {summary['duplicates']} as duplicates"
    )
    if summary["too_close"]:
        line += f", skipped {summary['too_close']} with atoms closer than {args.min_distance} A"
    print(line)
    if args.output:
        n_files = len(summary["written"])
        where = args.output if n_files <= 1 else f"{n_files} files in {args.output}"
        print(f"wrote {summary['made']} configuration(s) to {where}")
    if summary["db"] is not None:
        print(f"database: {summary['db']['new']} new, {summary['db']['existing']} already stored")
    if not args.output and not args.db:
        print("nothing written: give -o PATH and/or --db")


# ----------------------------------------------------------------------------- verbs
def cmd_tilts(args) -> int:
    from ..structure import GLAZER_SYSTEMS, space_group, tilt_configuration

    ref = _reference(args)
    rows, configs = [], []
    for g in GLAZER_SYSTEMS:
        c = tilt_configuration(ref, g)
        sym, num = space_group(c, symprec=args.symprec)
        configs.append(c)
        rows.append(
            {
                "glazer_number": g.glazer_number,
                "symbol": g.symbol,
                "angles_deg": c.tags["angles"],
                "space_group_symbol": sym,
                "space_group_number": num,
                "expected_symbol": g.space_group_symbol,
                "expected_number": g.space_group_number,
                "ok": num == g.space_group_number,
            }
        )
    summary = None
    if args.output or args.db:
        summary = _finish(args, "tilts", configs, len(configs), 0, quiet=True)
    if args.json:
        json.dump(rows if summary is None else {"systems": rows, "summary": summary}, sys.stdout, indent=2)
        print()
    else:
        _print_tilt_table(rows, ref)
        if summary is not None:
            _print_summary(args, "tilts", summary)
    return 0 if all(r["ok"] for r in rows) else 1


def _print_tilt_table(rows, ref) -> None:
    import numpy as np

    m = ref.matrix
    shape = "x".join(map(str, m.diagonal())) if not (m - np.diag(m.diagonal())).any() else str(m.tolist())
    title = f"Glazer tilt systems in the {shape} supercell of {ref.perovskite.formula}"
    cols = ["#", "Glazer", "angles (deg)", "space group (spglib)", "number", "Howard-Stokes", "ok"]
    body = [
        [
            str(r["glazer_number"]),
            r["symbol"],
            ",".join(f"{a:g}" for a in r["angles_deg"]),
            r["space_group_symbol"],
            str(r["space_group_number"]),
            f"{r['expected_symbol']} ({r['expected_number']})",
            "yes" if r["ok"] else "NO",
        ]
        for r in rows
    ]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover
        print(title)
        for line in [cols] + body:
            print("  ".join(f"{v:<14}" for v in line))
        return
    t = Table(title=title)
    for c in cols:
        t.add_column(c)
    for line in body:
        t.add_row(*line)
    Console(width=120).print(t)


def cmd_tilt(args) -> int:
    from ..structure import tilt_configuration

    ref = _reference(args)
    config = tilt_configuration(ref, args.symbol, args.angles)
    configs, too_close = _check_distances([config], args)
    return _finish(args, "tilt", configs, 1, 0, too_close)


def cmd_grid(args) -> int:
    import numpy as np

    from ..errors import PesError
    from ..structure import grid

    ref = _reference(args)
    parent = _point(args.parent, ref)
    modes = _modes(ref, args.modes)
    strains = _strains(args.strains)
    if modes is None and strains is None:
        raise PesError("grid needs --modes and/or --strains to vary")
    if modes is not None and not args.amplitudes:
        raise PesError("--modes needs --amplitudes (Angstrom)")
    if strains is not None and not args.strain_amplitudes:
        raise PesError("--strains needs --strain-amplitudes")
    n_dirs = (0 if modes is None else len(modes), 0 if strains is None else len(strains))
    candidates = int(
        np.prod([len(args.amplitudes or [1])] * n_dirs[0] + [len(args.strain_amplitudes or [1])] * n_dirs[1])
    )
    configs = grid(
        parent,
        displacement_directions=modes,
        displacement_amplitudes=args.amplitudes,
        strain_directions=strains,
        strain_amplitudes=args.strain_amplitudes,
        unique=False,
        min_distance=None,
        progress=True,
    )
    duplicates = 0
    if not args.keep_duplicates:
        configs, duplicates = _dedupe(configs)
    configs, too_close = _check_distances(configs, args)
    return _finish(args, "grid", configs, candidates, duplicates, too_close)


def cmd_random(args) -> int:
    from ..errors import PesError
    from ..structure import UniquenessFilter, random_nsphere

    ref = _reference(args)
    parent = _point(args.parent, ref)
    if args.n < 0:
        raise PesError(f"--n must be a non-negative integer; got {args.n}")
    if args.tol < 0:
        raise PesError(f"--tol must be >= 0 Angstrom; got {args.tol}")
    modes = _modes(ref, args.modes) if args.radius > 0 else None
    strains = _strains(args.strains) if args.strain_radius > 0 else None
    flt = UniquenessFilter(args.tol) if args.tol > 0 else None
    if flt is not None:
        flt.add(parent)  # a sample indistinguishable from its parent is a duplicate too
    configs = random_nsphere(
        parent,
        args.n,
        displacement_directions=modes,
        displacement_radius=args.radius if modes is not None else 0.0,
        strain_directions=strains,
        strain_radius=args.strain_radius if strains is not None else 0.0,
        seed=args.seed,
        fill=args.fill,
        uniqueness=flt,
        min_distance=_min_distance(args),
        too_close="skip" if args.skip_too_close else "raise",
        max_tries=args.max_tries,
        progress=True,
    )
    rejected = flt.n_rejected if flt is not None else 0
    configs, key_dupes = _dedupe(configs)
    rejected += key_dupes
    tries = configs[-1].tags["draw"] + 1 if configs else 0
    rc = _finish(
        args,
        "random",
        configs,
        max(tries, len(configs) + rejected),
        rejected,
        extra={"seed": args.seed, "requested": args.n},
    )
    if len(configs) < args.n and not args.json:
        print(f"note: only {len(configs)} of {args.n} accepted within the draw limit; lower --tol or raise --max-tries")
    return rc


def cmd_interpolate(args) -> int:
    from ..errors import PesError
    from ..structure import interpolate_path

    ref = _reference(args)
    if len(args.points) < 2:
        raise PesError("interpolate needs at least two path points")
    if args.n < 2:
        raise PesError(f"--n must be at least 2 (the segment ends); got {args.n}")
    points = [_point(p, ref) for p in args.points]
    configs = interpolate_path(points, args.n, align=args.align)
    candidates = len(configs)
    configs, duplicates = _dedupe(configs)
    configs, too_close = _check_distances(configs, args)
    return _finish(args, "interpolate", configs, candidates, duplicates, too_close)
