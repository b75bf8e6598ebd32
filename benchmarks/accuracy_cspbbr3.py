"""Accuracy of the energy models on CsPbBr3 data labelled here with the surrogate calculator.

Step 1 (cached): build a labelled data set of 2x2x2 CsPbBr3 configurations and label it with
the project's default surrogate (SevenNet 7net-mf-0, R2SCAN modal):

* ``tilt``   -- the 14 tilted Glazer systems at random angles (1-15 degrees), half of them with
                small displacement/strain noise;
* ``random`` -- random displacements of every atom up to 0.15 A, around the cubic reference or a
                random tilt system;
* ``strain`` -- random homogeneous strains up to 3 % (with 0.02 A displacement noise), around the
                cubic reference or a tilt system;
* ``path``   -- the paths of the paper's Fig. 9: cubic -> tetragonal (relaxed a0a0c+) ->
                orthorhombic (relaxed a+b-b-, Pnma) interpolation, in-phase tilt (a0a0c+),
                volume, anti-phase tilt (a0a0c-).

The set is written to ``$PES_HOME/datasets/<name>.extxyz`` (energies, forces, stress, the exact
displacements/strain and the tags) and reused on later runs.

Step 2: 80/20 split, k-fold cross-validation over the grid, refit of the best model, pair-
potential and linear-CE baselines on the same split, test RMSE overall / within 125 meV per
formula unit of the lowest energy / per kind, the learning curve and the figures (PNG + JSON)
in ``--out``.

    python benchmarks/accuracy_cspbbr3.py                  # full run
    python benchmarks/accuracy_cspbbr3.py --generate-only  # only build/label the data set
    python benchmarks/accuracy_cspbbr3.py --quick          # a few minutes: small set, short training
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

TILTED = [
    "a+b+c+",
    "a+a+a+",
    "a+b-c-",
    "a+a+c-",
    "a+b-b-",
    "a-b-c-",
    "a-b-b-",
    "a-a-a-",
    "a0b+b+",
    "a0b+c-",
    "a0b-c-",
    "a0b-b-",
    "a0a0c+",
    "a0a0c-",
]


def pes_home() -> Path:
    return Path(os.environ.get("PES_HOME", Path.home() / ".perovskite_pes"))


# ------------------------------------------------------------------------------------------ labelling
class Labeller:
    """Energy, forces, stress of configurations with the surrogate (the calculators layer, else sevenn)."""

    def __init__(self, name: str = "sevennet", threads: int = 1):
        self.name = name
        try:
            from perovskite_pes.calculators import get_calculator

            self.calc = get_calculator(name, threads=threads)
            self.kind = "pes"
        except ImportError:
            import torch
            from sevenn.calculator import SevenNetCalculator

            torch.set_num_threads(threads)
            self.calc = SevenNetCalculator("7net-mf-0", modal="R2SCAN", device="cpu")
            self.kind = "ase"

    def __call__(self, config):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.kind == "pes":
                r = self.calc.calculate(config.to_structure())
                if r.status != "completed":
                    raise RuntimeError(f"labelling failed: {r.error}")
                return r.energy, np.asarray(r.forces), np.asarray(r.stress)
            atoms = config.to_ase()
            atoms.calc = self.calc
            return float(atoms.get_potential_energy()), atoms.get_forces(), atoms.get_stress()

    def relax(self, config, ref):
        """Cell relaxation; the result mapped back onto the reference (translation removed)."""
        from perovskite_pes.structure import configuration_from_structure

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.kind == "pes":
                from perovskite_pes.calculators import get_calculator

                calc = get_calculator(self.name, fmax=0.02, threads=self.calc.run_options["threads"])
                r = calc.calculate(config.to_structure(), relax="cell")
                if r.final_structure is None:
                    raise RuntimeError(f"relaxation failed: {r.error}")
                structure = r.final_structure
            else:
                from ase.filters import FrechetCellFilter
                from ase.optimize import BFGS
                from pymatgen.io.ase import AseAtomsAdaptor

                atoms = config.to_ase()
                atoms.calc = self.calc
                BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=0.02, steps=500)
                structure = AseAtomsAdaptor.get_structure(atoms)
        return configuration_from_structure(ref, structure, remove_translation=True)


# ------------------------------------------------------------------------------------------ sampling
def random_tilt(ref, rng, max_angle=15.0, glazer=None):
    from perovskite_pes.structure import glazer_system, tilt_configuration

    g = glazer_system(glazer or TILTED[rng.integers(len(TILTED))])
    letters = []
    for lab, sign in zip(g.letters, g.signs):
        if sign != "0" and lab not in letters:
            letters.append(lab)
    while True:
        angles = rng.uniform(1.0, max_angle, len(letters))
        if len(angles) < 2 or np.min(np.abs(np.subtract.outer(angles, angles))[np.triu_indices(len(angles), 1)]) > 0.3:
            break
    return tilt_configuration(ref, g, angles if len(angles) > 1 else float(angles[0]))


def ball(rng, n, radius):
    """n vectors uniform in a ball of the given radius."""
    v = rng.normal(size=(n, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v * radius * rng.uniform(0, 1, (n, 1)) ** (1 / 3)


def nsphere(rng, dim, radius):
    v = rng.normal(size=dim)
    return v / np.linalg.norm(v) * radius


def sample(ref, n_tilt, n_random, n_strain, seed):
    from perovskite_pes.structure import Configuration

    rng = np.random.default_rng(seed)
    out = []
    for k in range(n_tilt):
        c = random_tilt(ref, rng)
        tags = {"kind": "tilt", "tilt_system": c.tags["tilt_system"], "angles": c.tags["angles"]}
        u, e = c.displacements, np.zeros(6)
        if k % 2:
            u = u + ball(rng, ref.n_atoms, rng.uniform(0, 0.03))
            e = nsphere(rng, 6, rng.uniform(0, 0.005))
        out.append(Configuration(ref, u, e, tags))
    for k in range(n_random):
        amp = rng.uniform(0.02, 0.15)
        if k % 3 == 0:
            parent, system = np.zeros((ref.n_atoms, 3)), "a0a0a0"
        else:
            c = random_tilt(ref, rng)
            parent, system = c.displacements, c.tags["tilt_system"]
        u = parent + ball(rng, ref.n_atoms, amp)
        out.append(Configuration(ref, u, None, {"kind": "random", "parent": system, "amplitude": float(amp)}))
    for k in range(n_strain):
        amp = rng.uniform(0.003, 0.03)
        if k % 2 == 0:
            parent, system = np.zeros((ref.n_atoms, 3)), "a0a0a0"
        else:
            c = random_tilt(ref, rng)
            parent, system = c.displacements, c.tags["tilt_system"]
        u = parent + ball(rng, ref.n_atoms, 0.02)
        out.append(
            Configuration(ref, u, nsphere(rng, 6, amp), {"kind": "strain", "parent": system, "amplitude": float(amp)})
        )
    return out


def paths(ref, labeller, n_path):
    """The four Fig. 9 paths (path name and coordinate in the tags)."""
    from perovskite_pes.structure import Configuration, tilt_configuration
    from perovskite_pes.structure.sampling import interpolate

    out = []
    cubic = Configuration(ref)
    print("relaxing the tetragonal (a0a0c+) and orthorhombic (a+b-b-) phases with the surrogate ...", flush=True)
    beta = labeller.relax(tilt_configuration(ref, "a0a0c+", 10.0), ref)
    gamma = labeller.relax(tilt_configuration(ref, "a+b-b-", (8.0, 10.0)), ref)
    half = max(2, n_path // 2)
    seg1 = interpolate(cubic, beta, half + 1)
    seg2 = interpolate(beta, gamma, half + 1, align=True)
    for i, c in enumerate(seg1 + seg2[1:]):
        x = i / half  # 0 = cubic, 1 = tetragonal, 2 = orthorhombic
        out.append(
            Configuration(ref, c.displacements, c.strain, {"kind": "path", "path": "alpha-beta-gamma", "x": float(x)})
        )
    for angle in np.linspace(0, 15, n_path):
        d = tilt_configuration(ref, "a0a0c+", angle).displacements if angle > 0 else np.zeros((ref.n_atoms, 3))
        out.append(Configuration(ref, d, None, {"kind": "path", "path": "in-phase tilt", "x": float(angle)}))
    for s in np.linspace(-0.03, 0.04, n_path):
        out.append(Configuration(ref, None, [s, s, s, 0, 0, 0], {"kind": "path", "path": "volume", "x": float(s)}))
    for angle in np.linspace(0, 15, n_path):
        d = tilt_configuration(ref, "a0a0c-", angle).displacements if angle > 0 else np.zeros((ref.n_atoms, 3))
        out.append(Configuration(ref, d, None, {"kind": "path", "path": "anti-phase tilt", "x": float(angle)}))
    return out


# ------------------------------------------------------------------------------------------ cache
def write_dataset(path: Path, configs, labels):
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    frames = []
    for c, (e, f, s) in zip(configs, labels):
        atoms = c.to_ase()
        atoms.calc = SinglePointCalculator(atoms, energy=float(e), forces=np.asarray(f), stress=np.asarray(s))
        atoms.arrays["pes_displacement"] = np.asarray(c.displacements)
        atoms.info["pes_strain"] = np.asarray(c.strain)
        atoms.info["pes_tags"] = json.dumps(c.tags)
        atoms.info["pes_reference"] = json.dumps(c.reference.to_dict())
        frames.append(atoms)
    # the temporary name keeps the path's suffixes: ASE compresses by them (.gz, .bz2, .xz) and reads likewise
    tmp = path.with_name(f".tmp-{path.name}")
    write(str(tmp), frames, format="extxyz")
    os.replace(tmp, path)


def read_dataset(path: Path, stresses: bool = False):
    """(configurations, energies, forces) of a set written by :func:`write_dataset`, and with ``stresses``
    the stresses (Voigt, eV/A^3) as a fourth item."""
    from ase.io import read

    from perovskite_pes.structure import Configuration, ReferenceSupercell

    configs, e, f, s = [], [], [], []
    refs = {}
    for atoms in read(str(path), index=":", format="extxyz"):
        key = atoms.info["pes_reference"]
        ref = refs.setdefault(key, ReferenceSupercell.from_dict(json.loads(key)))
        configs.append(
            Configuration(
                ref,
                atoms.arrays["pes_displacement"],
                np.asarray(atoms.info["pes_strain"]),
                json.loads(atoms.info["pes_tags"]),
            )
        )
        e.append(atoms.get_potential_energy())
        f.append(atoms.get_forces())
        if stresses:
            s.append(atoms.get_stress())
    same_size = len({len(x) for x in f}) <= 1
    out = configs, np.array(e), np.array(f) if same_size else f  # cells of several sizes: a list of arrays
    return (*out, np.array(s)) if stresses else out


def build_dataset(args) -> Path:
    from tqdm.auto import tqdm

    from perovskite_pes.structure import Configuration, Perovskite

    name = (
        f"cspbbr3_2x2x2_{args.calculator}_t{args.n_tilt}_r{args.n_random}_s{args.n_strain}_p{args.n_path}"
        f"_seed{args.seed}"
    )
    path = pes_home() / "datasets" / f"{name}.extxyz"
    if path.is_file():
        print(f"data set: {path} (cached)")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    ref = Perovskite().supercell(2)
    labeller = Labeller(args.calculator, args.threads)
    t0 = time.perf_counter()
    configs = [Configuration(ref, None, None, {"kind": "reference"})]
    configs += paths(ref, labeller, args.n_path)
    configs += sample(ref, args.n_tilt, args.n_random, args.n_strain, args.seed)
    labels = []
    for c in tqdm(configs, desc=f"labelling with {args.calculator}", unit="config"):
        labels.append(labeller(c))
    write_dataset(path, configs, labels)
    print(f"data set: {path} ({len(configs)} configurations labelled in {time.perf_counter() - t0:.0f} s)")
    return path


# ------------------------------------------------------------------------------------------ fitting
def path_data(configs, energies):
    out = {}
    for name in ("alpha-beta-gamma", "in-phase tilt", "volume", "anti-phase tilt"):
        idx = [i for i, c in enumerate(configs) if c.tags.get("path") == name]
        if not idx:
            continue
        idx.sort(key=lambda i: configs[i].tags["x"])
        xlabel = {
            "alpha-beta-gamma": "cubic (0) -> tetragonal (1) -> orthorhombic (2)",
            "volume": "volumetric strain",
            "in-phase tilt": "a0a0c+ tilt angle (deg)",
            "anti-phase tilt": "a0a0c- tilt angle (deg)",
        }[name]
        out[name] = {
            "x": [configs[i].tags["x"] for i in idx],
            "configs": [configs[i] for i in idx],
            "energies": energies[idx],
            "xlabel": xlabel,
        }
    return out


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--calculator", default="sevennet")
    p.add_argument("--n-tilt", type=int, default=1500)
    p.add_argument("--n-random", type=int, default=1500)
    p.add_argument("--n-strain", type=int, default=1200)
    p.add_argument("--n-path", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads for labelling")
    p.add_argument("--generate-only", action="store_true")
    p.add_argument("--quick", action="store_true", help="small data set and short training (smoke run)")
    p.add_argument(
        "--models",
        default="site,linear",
        help="model types in the CV grid (cluster, site, linear, pair); "
        "cluster nets on 11p+t+o take ~10 min per fit on a busy 2-core machine",
    )
    p.add_argument(
        "--clusters",
        default="11p+t+o,30p+t+o",
        help="comma-separated cluster sets for the grid (11p: pairs up to "
        "7.2 A, 30p: up to 11.7 A, the 2x2x2 cell edge)",
    )
    p.add_argument("--orders", default="4", help="comma-separated basis orders for the grid")
    p.add_argument(
        "--metric",
        default="inv",
        choices=["lin", "quad", "log", "inv"],
        help="pair deformation metric (one for the whole grid)",
    )
    p.add_argument("--layers", default="1")
    p.add_argument("--nodes", default="8")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--n-jobs", type=int, default=2)
    p.add_argument(
        "--epochs",
        default="0",
        help="Adam epochs per batch-size stage (2,10,100,1000), one number or one per "
        "stage; 0: no Adam (with the linear term, L-BFGS from the ridge start did best here)",
    )
    p.add_argument(
        "--no-linear-term",
        action="store_true",
        help="nets without the linear term (a ridge linear CE the MLPs correct)",
    )
    p.add_argument(
        "--net-order",
        type=int,
        default=2,
        help="highest degree of the basis functions the MLPs see (the linear "
        "term sees all up to the basis order); 0: all",
    )
    p.add_argument(
        "--lbfgs-iterations", type=int, default=1000, help="full-batch L-BFGS refinement after Adam (0: Adam only)"
    )
    p.add_argument("--batch-sizes", default="2,10,100,1000")
    p.add_argument("--learning-rate", type=float, default=3e-3)
    p.add_argument("--patience", type=int, default=30)
    p.add_argument("--force-weight", type=float, default=0.0)
    p.add_argument(
        "--weight-decay", type=float, default=0.0, help="L2 penalty on the nets' weight matrices (mean square weight)"
    )
    p.add_argument("--learning-curve", default="0.1,0.25,0.5,1.0")
    p.add_argument("--max-train", type=int, default=5000, help="the issue's cap on training configurations")
    p.add_argument("--out", default=None, help="report folder (default $PES_HOME/reports/accuracy_cspbbr3)")
    args = p.parse_args(argv)
    if args.quick:
        args.n_tilt, args.n_random, args.n_strain, args.n_path = 120, 120, 80, 9
        args.folds, args.learning_curve, args.lbfgs_iterations, args.orders = 3, "0.5,1.0", 200, "2"
        args.clusters = "11p+t+o"

    path = build_dataset(args)
    if args.generate_only:
        return 0

    import torch

    from perovskite_pes.models import train_and_select

    torch.set_num_threads(max(1, args.n_jobs))
    configs, energies, forces = read_dataset(path)
    n_train = int(round(0.8 * len(configs)))
    if n_train > args.max_train:
        sys.exit(f"{n_train} training configurations exceed --max-train {args.max_train}")
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    epochs = ints(args.epochs)
    epochs = epochs[0] if len(epochs) == 1 else epochs
    settings = {
        "grid": {
            "model": args.models.split(","),
            "clusters": args.clusters.split(","),
            "max_order": ints(args.orders),
            "layers": ints(args.layers),
            "nodes": ints(args.nodes),
        },
        "metric": args.metric,
        "n_folds": args.folds,
        "n_jobs": args.n_jobs,
        "seed": args.seed,
        "training": {
            "batch_sizes": ints(args.batch_sizes),
            "epochs": epochs,
            "learning_rate": args.learning_rate,
            "patience": args.patience,
            "force_weight": args.force_weight,
            "weight_decay": args.weight_decay,
            "lbfgs_iterations": args.lbfgs_iterations,
            "linear_term": not args.no_linear_term,
            "net_order": args.net_order or None,
        },
        "learning_curve": [float(x) for x in args.learning_curve.split(",")] if args.learning_curve else None,
        "paths": path_data(configs, energies),
    }
    out = Path(args.out) if args.out else pes_home() / "reports" / "accuracy_cspbbr3"
    t0 = time.perf_counter()
    model, report = train_and_select(configs, energies, forces if args.force_weight > 0 else None, settings, out)
    wall = time.perf_counter() - t0
    print_report(report, wall, out)
    return 0


def print_report(report, wall, out):
    print(
        f"\n{report['n_configurations']} configurations: {report['n_train']} train / {report['n_test']} test; "
        f"selection + refits took {wall:.0f} s"
    )
    print("\ncross-validation (RMSE meV/atom, mean +- std over folds)")
    for r in report["cv_table"]:
        print(
            f"  {r['label']:<32} train {r['train_rmse_mean']:7.3f} +- {r['train_rmse_std']:.3f}   "
            f"validation {r['val_rmse_mean']:7.3f} +- {r['val_rmse_std']:.3f}"
        )
    print(f"\nselected: {report['best_label']}")
    kinds = sorted({k for m in report["models"].values() for k in m["test_per_kind"]})
    head = f"  {'model':<32}{'train':>8}{'test':>8}{'<125meV':>9}" + "".join(f"{k:>9}" for k in kinds)
    print("\ntest RMSE (meV/atom); <125meV: test configurations within 125 meV/f.u. of the lowest energy")
    print(head)
    for m in report["models"].values():
        low = m["test"]["rmse_low_mev_per_atom"] or float("nan")
        row = f"  {m['label']:<32}{m['train']['rmse_mev_per_atom']:8.3f}{m['test']['rmse_mev_per_atom']:8.3f}{low:9.3f}"
        row += "".join(f"{m['test_per_kind'].get(k, {}).get('rmse_mev_per_atom', float('nan')):9.3f}" for k in kinds)
        print(row)
    if report.get("learning_curve"):
        print("\nlearning curve (test RMSE meV/atom vs training configurations)")
        for label, c in report["learning_curve"].items():
            print(f"  {label:<32}" + "  ".join(f"{n}: {r:.3f}" for n, r in zip(c["n_train"], c["test_rmse"])))
    if report.get("paths"):
        print("\nFig. 9 paths (RMSE meV/atom against the reference calculator)")
        for name, pth in report["paths"].items():
            print(f"  {name:<20}" + "  ".join(f"{k}: {v:.3f}" for k, v in pth["rmse_mev_per_atom"].items()))
    best = report["models"]["best"]["test"]
    print(
        f"\ntarget: test RMSE <= 1 meV/atom (got {best['rmse_mev_per_atom']:.3f}), "
        f"<= 0.5 within 125 meV/f.u. (got {best['rmse_low_mev_per_atom']:.3f})"
    )
    print(f"report and figures: {out}")


if __name__ == "__main__":
    sys.exit(main())
