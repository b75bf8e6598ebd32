"""Seconds per calculation (energy + forces + stress) for each calculator usable on this machine.

    python benchmarks/bench_calculators.py [--calculators sevennet,chgnet,cp2k,vasp] [--repeat 3]
                                           [--no-large-dft] [--threads 2]

Cells: the 5-atom cubic CsPbBr3 cell and the 2x2x2 (40-atom) supercell, both with seeded random
displacements of 0.05 A so that no symmetry shortcut applies. ML models: the first call (which
loads the model) is reported apart from the steady state. DFT codes run with their production
defaults (CP2K: PBEsol, 400 Ry, 6x6x6 mesh on 5 atoms, 3x3x3 on 40 atoms) once per cell.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings

import numpy as np


def structures():
    from perovskite_pes.structure.configuration import Configuration
    from perovskite_pes.structure.reference import Perovskite

    rng = np.random.default_rng(7)
    out = {}
    for label, n in (("5 atoms", 1), ("40 atoms", 2)):
        ref = Perovskite().supercell(n)
        u = rng.normal(scale=0.05, size=(ref.n_atoms, 3))
        out[label] = Configuration(ref, u).to_structure()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calculators", default="sevennet,chgnet,cp2k,vasp")
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions for ML models (default 3)")
    parser.add_argument("--no-large-dft", action="store_true", help="skip DFT on the 40-atom cell")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for ML models (default 2)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("PES_HOME", tempfile.mkdtemp(prefix="pes-bench-"))

    from perovskite_pes.calculators import CalculatorError, get_calculator

    cells = structures()
    rows = []
    for name in [n.strip() for n in args.calculators.split(",") if n.strip()]:
        options = {"threads": args.threads} if name in ("sevennet", "chgnet") else {}
        calc = get_calculator(name, **options)
        try:
            calc.check_available()
        except CalculatorError as exc:
            rows.append((name, "-", "not usable here", "", str(exc).split(";")[0]))
            continue
        for label, s in cells.items():
            dft = name in ("cp2k", "vasp")
            if dft and label == "40 atoms" and args.no_large_dft:
                rows.append((name, label, "skipped", "", "--no-large-dft"))
                continue
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                first = calc.calculate(s, workdir=tmp if dft else None)
                t_first = time.perf_counter() - t0
            if first.status != "completed":
                rows.append((name, label, "failed", f"{t_first:.2f}", first.error[:60]))
                continue
            times = []
            if not dft:
                rng = np.random.default_rng(11)
                for _ in range(args.repeat):
                    # a slightly different structure each time: ASE calculators return cached
                    # results for identical atoms
                    moved = s.copy()
                    for i, d in enumerate(rng.normal(scale=1e-3, size=(len(s), 3))):
                        moved.translate_sites([i], d, frac_coords=False)
                    t0 = time.perf_counter()
                    calc.calculate(moved)
                    times.append(time.perf_counter() - t0)
            steady = f"{statistics.median(times):.3f}" if times else f"{t_first:.2f}"
            rows.append((name, label, steady, f"{t_first:.2f}", calc.version))
    header = ("calculator", "cell", "s/calc", "first call (s)", "version / note")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(5)]
    for r in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)))
    print(
        f"(cpu cores: {os.cpu_count()}, torch threads: {args.threads}; s/calc: median of {args.repeat} for ML models)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
