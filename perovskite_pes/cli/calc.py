"""``pes calc``: run a calculator on structure files, and check which calculators work here."""

from __future__ import annotations

import json
import sys

NAMES = ("sevennet", "chgnet", "cp2k", "vasp")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "calc",
        help="energies, forces and stresses from VASP, CP2K or ML potentials",
        description=(
            "Run one of the project's calculators (sevennet, chgnet, cp2k, vasp) or check which ones work here."
        ),
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")

    run = verbs.add_parser(
        "run",
        help="calculate the structures of a file",
        description=(
            "Calculate every structure of FILE (CIF, POSCAR/CONTCAR, extended XYZ with one or more frames, "
            "or anything pymatgen/ASE read) with one calculator. Energies in eV, forces in eV/A, stress in "
            "eV/A^3 (Voigt xx yy zz yz xz xy, positive = tensile); the table shows the pressure in GPa."
        ),
    )
    run.add_argument("file", help="structure file")
    run.add_argument("--calculator", "-c", default="sevennet", choices=NAMES, help="calculator (default: sevennet)")
    run.add_argument("--relax", choices=("positions", "cell"), help="relax positions, or positions and cell, first")
    run.add_argument(
        "--set",
        dest="options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="calculator setting or run option, e.g. --set cutoff=300 --set kpoints=[3,3,3] (YAML values)",
    )
    run.add_argument("--workdir", help="folder for raw outputs (default: $PES_HOME/calculations/<calculator>/...)")
    run.add_argument("--output", "-o", help="also write the results as JSON to this file")
    run.add_argument("--json", action="store_true", help="print results as JSON")
    run.set_defaults(func=_run)

    check = verbs.add_parser(
        "check",
        help="which calculators are usable here, and what to install or set for the others",
        description="Say for each calculator whether it is usable on this machine and, if not, what to install or set.",
    )
    check.add_argument("--json", action="store_true", help="print as JSON")
    check.set_defaults(func=_check)

    parser.set_defaults(func=lambda args: (parser.print_help(), 0)[1])


def _parse_options(items) -> dict:
    import yaml

    from ..calculators import CalculatorInputError

    out = {}
    for item in items:
        if "=" not in item:
            raise CalculatorInputError(f"--set expects KEY=VALUE; got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise CalculatorInputError(f"--set {key}: cannot read value {value!r}: {exc}") from exc
    return out


def read_structures(path) -> list:
    """All structures in a file, as pymatgen Structures."""
    from pathlib import Path

    from ..calculators import CalculatorInputError

    p = Path(path)
    if not p.is_file():
        raise CalculatorInputError(f"structure file {path} does not exist")
    errors = []
    if p.suffix.lower() not in (".xyz", ".extxyz", ".traj"):
        try:
            from pymatgen.core import Structure

            return [Structure.from_file(str(p))]
        except Exception as exc:  # noqa: BLE001 - fall back to ASE's readers
            errors.append(f"pymatgen: {exc}")
    try:
        from ase.io import read
        from pymatgen.io.ase import AseAtomsAdaptor

        frames = read(str(p), index=":")
        structures = [AseAtomsAdaptor.get_structure(a) for a in frames]
        if structures:
            return structures
        errors.append("ase: no frames")
    except Exception as exc:  # noqa: BLE001
        errors.append(f"ase: {exc}")
    raise CalculatorInputError(f"cannot read structures from {path} ({'; '.join(errors)})")


def _run(args) -> int:
    import warnings

    from ..calculators import calculate_many, get_calculator

    warnings.filterwarnings("ignore")
    structures = read_structures(args.file)
    calc = get_calculator(args.calculator, **_parse_options(args.options))
    if args.workdir and len(structures) == 1:
        results = [calc.calculate(structures[0], relax=args.relax, workdir=args.workdir)]
    else:
        results = calculate_many(structures, calc, relax=args.relax, workdir=args.workdir, progress=not args.json)
    payload = [r.to_dict() for r in results]
    if args.output:
        with open(args.output, "w") as fh:
            json.dump(payload, fh, indent=1)
    if args.json:
        json.dump(payload, sys.stdout, indent=1)
        print()
    else:
        _print_table(structures, results, calc)
    return 0 if all(r.ok for r in results) else 1


def _print_table(structures, results, calc) -> None:
    import numpy as np
    from ase.units import GPa
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{calc.name} ({calc.version}), settings {calc.settings_hash[:12]}")
    for col in (
        "#",
        "formula",
        "status",
        "E (eV)",
        "E/atom (eV)",
        "max |F| (eV/A)",
        "P (GPa)",
        "time (s)",
        "output / reason",
    ):
        table.add_column(col)
    for i, (s, r) in enumerate(zip(structures, results)):
        if r.ok:
            fmax = float(np.sqrt((r.forces**2).sum(axis=1)).max())
            pressure = "" if r.stress is None else f"{-np.mean(r.stress[:3]) / GPa:.3f}"
            table.add_row(
                str(i),
                s.composition.reduced_formula,
                r.status,
                f"{r.energy:.6f}",
                f"{r.energy / len(s):.6f}",
                f"{fmax:.4f}",
                pressure,
                f"{r.wall_time:.2f}",
                r.output_dir or "",
            )
        else:
            table.add_row(
                str(i),
                s.composition.reduced_formula,
                f"[red]{r.status}[/red]",
                "",
                "",
                "",
                "",
                f"{r.wall_time:.2f}",
                r.error or "",
            )
    Console(width=200).print(table)


def _check(args) -> int:
    from ..calculators import check_calculators

    entries = check_calculators()
    if args.json:
        json.dump(entries, sys.stdout, indent=1)
        print()
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="calculators on this machine")
    for col in ("calculator", "usable", "version", "details / what to do"):
        table.add_column(col)
    for e in entries:
        table.add_row(
            e["name"], "[green]yes[/green]" if e["usable"] else "[red]no[/red]", e["version"] or "", e["detail"]
        )
    Console(width=200).print(table)
    return 0
