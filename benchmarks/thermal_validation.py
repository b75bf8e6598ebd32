"""A validation set sampled differently from any training set, and models scored on it per kind.

Step 1 (cached in ``--dataset``): configurations a campaign never enumerates, labelled by the
surrogate (SevenNet ``7net-mf-0`` by default):

* ``md-NxNxN-TK`` -- snapshots of MD driven by the surrogate itself (NPT, fully flexible cell,
  Langevin, 4 fs) at each temperature, from the orthorhombic a+b-b- cell below 400 K and from the
  cubic cell above, in 2x2x2 and (optionally, it is expensive) 4x4x4 cells; the forces and stress
  of each snapshot are those the surrogate computed for the step;
* ``tilt-large`` -- the 14 tilted Glazer systems at 13-20 degrees (beyond the 15 degrees of the
  enumerations);
* ``strain-large`` -- homogeneous strains of 3-5 % around the cubic cell and random tilt systems.

Step 2: every model given with ``--model`` (a saved model folder, repeatable, ``label=PATH`` to name
it) predicts each snapshot through ``PESCalculator``; the energy RMSE (meV/atom, energies per atom
relative to each model's and the surrogate's own cubic cell at the snapshot's size) and force RMSE
(eV/A) per kind and overall, against the issue's targets (1 meV/atom, 0.05 eV/A), and the force RMSE
per species with the RMS of the labels it is measured against. Prints tables, writes ``--json`` and a
bar chart (``--plot``). With ``--window W`` the frames more than W meV/f.u. above the surrogate's cubic
cell are scored apart as well (a model trained with ``max_energy_mev_per_fu`` never saw such energies):
10 of the 30 shipped large tilts lie 600-2,340 meV/f.u. above it, every MD frame below 330 (600 K).

The set shipped in ``benchmarks/data/thermal_validation.extxyz.gz`` (4 December 2026, SevenNet
``7net-mf-0``) holds 80 snapshots of 2x2x2 MD (20 per temperature, 100/300/450/600 K, seed 0), 40 of
4x4x4 MD (10 per temperature, seed 1, 100 equilibration steps), 30 large tilts and 30 large strains;
it took 4 min (2x2x2 part) and 21 min (4x4x4 part) on one core of a loaded 2-core machine.

The 2x2x2 MD kinds of that set are one trajectory each, 20 consecutive snapshots whose errors wander
together: few independent samples. ``benchmarks/data/thermal_validation_hot2x2x2.extxyz.gz`` (7 December
2026, same surrogate and settings) holds four more independent runs at each of 450 and 600 K (seeds
10/20/30/40 and 11/21/31/41, 20 snapshots each, tagged with their seed), 160 frames, generated in 2 min
per seed on one core of a loaded machine by

    python benchmarks/thermal_validation.py --generate-only --dataset S.extxyz.gz --sizes 2 \
        --temperatures 450,600 --n-large 0 --seed 10          # and 20, 30, 40; then merged

and scored like the main set with ``--dataset benchmarks/data/thermal_validation_hot2x2x2.extxyz.gz``.

    python benchmarks/thermal_validation.py --model qs=PATH --model al=PATH2    # score on the shipped set
    python benchmarks/thermal_validation.py --generate-only --dataset new.extxyz # a new set (hours on 1 core)
    python benchmarks/thermal_validation.py --model qs=PATH --per-frame errs     # errs.csv, errs.png: per frame
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy_cspbbr3 import Labeller, nsphere, random_tilt, read_dataset, write_dataset  # noqa: E402

SHIPPED = Path(__file__).resolve().parent / "data" / "thermal_validation.extxyz.gz"
TARGET_E = 1.0  # meV/atom
TARGET_F = 0.05  # eV/A


def surrogate_md(
    calc,
    ref,
    start,
    temperature: float,
    frames: int,
    every: int,
    equilibration: int,
    seed: int,
    threads: int,
    max_displacement: float,
) -> list:
    """NPT MD (flexible cell, 4 fs) of the supercell ``ref`` driven by the ASE calculator ``calc``
    itself, from ``start`` (a Glazer symbol or a Configuration): ``frames`` snapshots, one every
    ``every`` steps after ``equilibration``, as (configuration, (energy, forces, stress)) with the
    calculator's own results for the step. A run that passes ``max_displacement`` stops; the
    calculator is the reference, so the frames it sampled so far are still labels."""
    from ase import Atoms
    from pymatgen.io.ase import AseAtomsAdaptor

    from perovskite_pes.simulation import BlowUpError, MDSimulation, Stage
    from perovskite_pes.structure import configuration_from_structure

    sampled = []

    def keep(positions, lattice, energy, target, step):
        # right after the step the calculator holds this frame's results: ASE returns them, nothing is recomputed
        atoms = Atoms(numbers=ref.atomic_numbers, positions=positions, cell=lattice, pbc=True)
        atoms.calc = calc
        sampled.append((atoms, (atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress())))

    sim = MDSimulation(
        calc,
        perovskite=ref.perovskite,
        supercell=ref.matrix,
        start=start,
        ensemble="npt",
        timestep_fs=4.0,
        sample_every=every,
        seed=seed,
        threads=threads,
        max_displacement=max_displacement,
    )
    try:
        sim.run([Stage(temperature, every * frames, equilibration)], progress=True, on_sample=keep)
    except BlowUpError as exc:
        print(f"MD of {ref} at {temperature:.0f} K stopped, {len(sampled)} frames kept: {exc}")
    return [
        (configuration_from_structure(ref, AseAtomsAdaptor.get_structure(atoms), remove_translation=True), labels)
        for atoms, labels in sampled[:frames]
    ]


def md_frames(calc, perovskite, n: int, temperature: float, args, seed: int):
    """Snapshots of surrogate-driven MD: a list of (configuration, (energy, forces, stress))."""
    start = "a+b-b-" if temperature < 400 else "a0a0a0"
    out = surrogate_md(
        calc,
        perovskite.supercell(n),
        start,
        temperature,
        args.frames,
        args.every,
        args.equilibration,
        seed,
        args.threads,
        args.max_displacement,
    )
    for config, _ in out:
        config.tags.update({"kind": f"md-{n}x{n}x{n}-{temperature:.0f}K", "start": start, "seed": seed})
    return out


def static_frames(labeller, ref, args, rng):
    from perovskite_pes.structure import Configuration

    out = []
    for _ in range(args.n_large):
        c = random_tilt(ref, rng, max_angle=20.0)
        while max(np.abs(np.atleast_1d(c.tags["angles"]))) < 13.0:
            c = random_tilt(ref, rng, max_angle=20.0)
        out.append(
            Configuration(ref, c.displacements, None, {"kind": "tilt-large", "tilt_system": c.tags["tilt_system"]})
        )
    for k in range(args.n_large):
        amp = rng.uniform(0.03, 0.05)
        u, system = (np.zeros((ref.n_atoms, 3)), "a0a0a0") if k % 2 == 0 else (None, None)
        if u is None:
            t = random_tilt(ref, rng)
            u, system = t.displacements, t.tags["tilt_system"]
        out.append(
            Configuration(
                ref, u, nsphere(rng, 6, amp), {"kind": "strain-large", "parent": system, "amplitude": float(amp)}
            )
        )
    return [(c, labeller(c)) for c in out]


def build(args) -> Path:
    from perovskite_pes.calculators import get_calculator
    from perovskite_pes.structure import Perovskite

    path = Path(args.dataset)
    if path.is_file():
        print(f"validation set: {path} (cached)")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    pv = Perovskite(lattice_parameter=args.lattice_parameter)
    calc = get_calculator(args.calculator, threads=args.threads).ase_calculator()
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    labelled = static_frames(Labeller(args.calculator, args.threads), pv.supercell(2), args, rng)
    for n in [int(x) for x in args.sizes.split(",")]:
        for k, t in enumerate(float(x) for x in args.temperatures.split(",")):
            print(f"surrogate MD {n}x{n}x{n} at {t:.0f} K", flush=True)
            labelled += md_frames(calc, pv, n, t, args, args.seed + k)
    write_dataset(path, [c for c, _ in labelled], [lab for _, lab in labelled])
    print(
        f"validation set: {path} ({len(labelled)} configurations in {time.perf_counter() - t0:.0f} s, "
        f"load average {open('/proc/loadavg').read().split()[:3]})"
    )
    return path


def cubic_energies(configs, calculator: str, threads: int) -> dict:
    """The surrogate's energy per atom of the cubic cell of every supercell in the set (by atom count)."""
    from perovskite_pes.structure import Configuration

    labeller = Labeller(calculator, threads)
    refs = {c.reference.n_atoms: c.reference for c in configs}
    return {n: labeller(Configuration(ref))[0] / n for n, ref in refs.items()}


def window_rows(configs, energies, cubic: dict, window: float | None) -> list[tuple[str, ...]]:
    """Extra rows each frame is also scored under when the labels are split by ``window`` (meV per
    formula unit above the surrogate's cubic cell of the frame's size): a frame within it counts in
    ``"<kind> <=W"`` and ``"all <=W"`` too, a frame beyond it in ``"beyond W"``. Models trained with an
    energy window (``max_energy_mev_per_fu``) never saw the energies beyond theirs."""
    if window is None:
        return [() for _ in configs]
    tag = f"{window:g}"
    rows = []
    for c, e in zip(configs, energies):
        n = c.reference.n_atoms
        above = (e / n - cubic[n]) * 5000.0  # meV per formula unit (5 atoms)
        rows.append((f"{c.tags['kind']} <={tag}", f"all <={tag}") if above <= window else (f"beyond {tag}",))
    return rows


def score(model_path: str, configs, energies, forces, cubic: dict, threads: int, extra_rows=None, frames=None) -> dict:
    """Per-kind energy and force RMSE and mean signed energy error of one model against the labels;
    energies per atom are taken from each side's own cubic cell (``cubic``: the surrogate's, from
    :func:`cubic_energies`). ``extra_rows`` (one tuple of row names per frame, :func:`window_rows`)
    pools frames into further rows; a ``"<kind> <=W"`` row that holds every frame of its kind is dropped.
    ``frames``, a list, receives one dict per frame (:func:`frame_row`)."""
    import torch

    from perovskite_pes.models import PESCalculator, load_model
    from perovskite_pes.structure import Configuration

    torch.set_num_threads(threads)
    model = load_model(model_path)
    calc = PESCalculator(model)
    model_cubic = {}  # the model's energy per atom of the cubic cell, per size
    rows = {}
    extra_rows = extra_rows or [() for _ in configs]
    for c, e, f, extra in zip(configs, energies, forces, extra_rows):
        atoms = c.to_ase()
        atoms.calc = calc
        n = c.reference.n_atoms
        if n not in model_cubic:
            model_cubic[n] = _predict(calc, Configuration(c.reference)) / n
        err_e = (atoms.get_potential_energy() / n - model_cubic[n]) - (e / n - cubic[n])
        err_f = atoms.get_forces() - f
        if frames is not None:
            frames.append(frame_row(c, atoms, e / n - cubic[n], err_e, err_f))
        symbols = np.array(atoms.get_chemical_symbols())
        by_species = {
            str(sp): (err_f[symbols == sp].ravel(), np.asarray(f)[symbols == sp].ravel()) for sp in set(symbols)
        }
        pooled = ("md", "all") if c.tags["kind"].startswith("md-") else ("all",)  # "md": every MD kind together
        for kind in (c.tags["kind"], *pooled, *extra):
            r = rows.setdefault(kind, {"e": [], "f": [], "species": {}})
            r["e"].append(err_e)
            r["f"].append(err_f.ravel())
            for sp, (error, label) in by_species.items():
                errors, labels = r["species"].setdefault(sp, ([], []))
                errors.append(error)
                labels.append(label)
    out = {}
    for kind, r in rows.items():
        whole = kind.rpartition(" <=")[0]
        if whole in rows and len(rows[whole]["e"]) == len(r["e"]):
            continue  # every frame of the kind lies within the window: the kind's own row says it all
        out[kind] = {
            "n": len(r["e"]),
            "energy_rmse_meV_atom": float(np.sqrt(np.mean(np.square(r["e"]))) * 1000),
            "energy_max_meV_atom": float(np.max(np.abs(r["e"])) * 1000),
            # mean signed error (model - label): an offset shared by a kind's frames, which the RMSE hides
            "energy_bias_meV_atom": float(np.mean(r["e"]) * 1000),
            "force_rmse_eV_A": _rms(r["f"]),
            # per species: the force RMSE and the RMS of the labels it is measured against
            "force_by_species": {sp: _rms_pair(errors, labels) for sp, (errors, labels) in r["species"].items()},
        }
    return out


def frame_row(config, atoms, above_per_atom: float, err_e: float, err_f) -> dict:
    """One frame's errors and what might explain them: its energy above the surrogate's cubic cell, its
    volume per formula unit and its cell's largest angle from 90 degrees (MD cells are sheared)."""
    n_fu = len(atoms) / 5
    return {
        "kind": config.tags["kind"],
        "run": config.tags.get("seed", ""),  # the MD run's seed (a set written before 7 December 2026 has none)
        "energy_error_meV_atom": float(err_e) * 1000,
        "force_rmse_eV_A": _rms([np.ravel(err_f)]),
        "above_cubic_meV_fu": float(above_per_atom) * 5000,
        "volume_per_fu_A3": float(atoms.get_volume() / n_fu),
        "max_angle_from_90_deg": float(np.max(np.abs(atoms.cell.angles() - 90.0))),
    }


def write_frames(frames: dict, prefix: str) -> None:
    """``prefix``.csv: one row per model and frame, in the set's order (an MD kind's frames are consecutive
    snapshots of one trajectory); ``prefix``.png: each MD kind's signed energy error along its trajectory,
    one line per model. A kind's RMSE can be a slow wander along one run rather than scatter, and then it
    holds only a few independent samples."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(frames.values()))  # the first model's rows: every model has the same frames
    fields = ["model", "kind", "frame", *(k for k in first[0] if k != "kind")]
    with open(f"{prefix}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for label, rows in frames.items():
            count = {}
            for r in rows:
                i = count[r["kind"]] = count.get(r["kind"], -1) + 1
                w.writerow({"model": label, "frame": i, **r})
    md = sorted({r["kind"] for rows in frames.values() for r in rows if r["kind"].startswith("md-")})
    if not md:
        return
    ncol = min(4, len(md))
    nrow = -(-len(md) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.6 * nrow), sharey=True, squeeze=False)
    for ax, kind in zip(axes.ravel(), md):
        for label, rows in frames.items():
            ax.plot([r["energy_error_meV_atom"] for r in rows if r["kind"] == kind], marker=".", label=label)
        runs = [r["run"] for r in first if r["kind"] == kind]
        for i in range(1, len(runs)):
            if runs[i] != runs[i - 1]:  # a kind of several independent runs: where the next one starts
                ax.axvline(i - 0.5, color="grey", lw=0.8, ls=":")
        ax.axhline(0, color="k", lw=0.5)
        for t in (-TARGET_E, TARGET_E):
            ax.axhline(t, color="grey", lw=0.5, ls="--")
        ax.set_title(kind, fontsize=9)
        ax.set_xlabel("frame along the trajectory")
    for ax in axes[:, 0]:
        ax.set_ylabel("model - surrogate (meV/atom)")
    for ax in axes.ravel()[len(md) :]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(f"{prefix}.png", dpi=120)
    plt.close(fig)


def _rms(parts) -> float:
    return float(np.sqrt(np.mean(np.square(np.concatenate(parts)))))


def _rms_pair(errors, labels) -> dict:
    rmse, rms = _rms(errors), _rms(labels)
    return {"force_rmse_eV_A": rmse, "label_rms_eV_A": rms, "relative": rmse / rms if rms else float("nan")}


def _predict(calc, config) -> float:
    atoms = config.to_ase()
    atoms.calc = calc
    return float(atoms.get_potential_energy())


def _kinds(results: dict) -> list[str]:
    """The kinds scored, sorted, then the pooled rows ("md", "all", "all <=W", "beyond W") last."""
    names = {k for r in results.values() for k in r}
    pooled = [k for k in names if k in ("md", "all") or k.startswith(("all <=", "beyond "))]
    return sorted(names - set(pooled)) + sorted(pooled, key=lambda k: (k != "md", k != "all", k))


def print_species(results: dict) -> None:
    """Force RMSE per species over every MD kind (every kind in a set without MD), and as a fraction of
    the RMS of the labelled forces."""
    pool = "md" if all("md" in r for r in results.values()) else "all"
    species = sorted({sp for r in results.values() for sp in r[pool]["force_by_species"]})
    kinds = "MD kinds" if pool == "md" else "all kinds"
    print(f"\nforces per species, {kinds}: RMSE eV/A (fraction of the labels' RMS)")
    print(f"{'':20}" + "".join(f"{sp:>16}" for sp in species))
    for label, r in results.items():
        cells = r[pool]["force_by_species"]
        print(
            f"{label[:20]:20}"
            + "".join(f"{cells[sp]['force_rmse_eV_A']:9.3f} ({cells[sp]['relative']:.2f})" for sp in species)
        )


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = _kinds(results)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4))
    width = 0.8 / max(1, len(results))
    for i, (label, r) in enumerate(results.items()):
        x = np.arange(len(kinds)) + i * width
        axes[0].bar(x, [r.get(k, {}).get("energy_rmse_meV_atom", np.nan) for k in kinds], width, label=label)
        axes[1].bar(x, [r.get(k, {}).get("force_rmse_eV_A", np.nan) for k in kinds], width, label=label)
    for ax, target, ylabel in ((axes[0], TARGET_E, "energy RMSE (meV/atom)"), (axes[1], TARGET_F, "force RMSE (eV/A)")):
        ax.axhline(target, color="k", ls="--", lw=1, label="target")
        ax.set_xticks(np.arange(len(kinds)) + 0.4 - width / 2, kinds, rotation=45, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel(ylabel)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="center right")  # beside the bars, not over them
    fig.tight_layout(rect=(0, 0, 0.83, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--dataset",
        default=str(SHIPPED),
        help="the cached validation set (default: the one shipped in benchmarks/data; a new path generates one)",
    )
    p.add_argument("--calculator", default="sevennet")
    p.add_argument("--lattice-parameter", type=float, default=5.9435, help="cubic a (A); the surrogate's relaxed value")
    p.add_argument("--sizes", default="2,4", help="N of the N x N x N MD cells")
    p.add_argument("--temperatures", default="100,300,450,600")
    p.add_argument("--frames", type=int, default=20, help="snapshots per MD run")
    p.add_argument("--every", type=int, default=10, help="MD steps between snapshots")
    p.add_argument("--equilibration", type=int, default=100)
    p.add_argument(
        "--max-displacement",
        type=float,
        default=3.0,
        help="stop the surrogate's MD when an atom is this far from its site (A); it reaches 2 A at 600 K",
    )
    p.add_argument("--n-large", type=int, default=30, help="large tilts, and as many large strains")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--generate-only", action="store_true")
    p.add_argument("--model", action="append", default=[], help="[LABEL=]PATH of a saved model (repeatable)")
    p.add_argument(
        "--window",
        type=float,
        default=None,
        metavar="MEV_PER_FU",
        help="also score the frames within this many meV/f.u. of the surrogate's cubic cell apart from those "
        "beyond (rows '<kind> <=W', 'all <=W', 'beyond W'), e.g. a model's training window",
    )
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default="thermal_validation.png")
    p.add_argument(
        "--per-frame",
        default=None,
        metavar="PREFIX",
        help="also write every frame's errors to PREFIX.csv and each MD kind's energy error along its "
        "trajectory to PREFIX.png",
    )
    args = p.parse_args(argv)

    path = build(args)
    if args.generate_only or not args.model:
        return 0
    configs, energies, forces = read_dataset(path)
    cubic = cubic_energies(configs, args.calculator, args.threads)
    extra = window_rows(configs, energies, cubic, args.window)
    results, frames = {}, {}
    for spec in args.model:
        label, _, model_path = spec.rpartition("=")
        label = label or Path(model_path).name
        frames[label] = []
        results[label] = score(model_path, configs, energies, forces, cubic, args.threads, extra, frames[label])
    kinds = _kinds(results)
    print(f"\n{'kind':20}{'n':>5}" + "".join(f"{lab[:28]:>30}" for lab in results))
    print(f"{'':25}" + "".join(f"{'E meV/at   bias   F eV/A':>30}" for _ in results))
    for k in kinds:
        n = next(r[k]["n"] for r in results.values() if k in r)
        cells = "".join(
            f"{r[k]['energy_rmse_meV_atom']:11.2f}{r[k]['energy_bias_meV_atom']:+8.2f}{r[k]['force_rmse_eV_A']:11.3f}"
            if k in r
            else f"{'-':>30}"
            for r in results.values()
        )
        print(f"{k:20}{n:5d}{cells}")
    print(f"targets: energy <= {TARGET_E} meV/atom, forces <= {TARGET_F} eV/A per kind")
    print_species(results)
    if args.plot:
        plot(results, args.plot)
        print(f"plot: {args.plot}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if args.per_frame:
        write_frames(frames, args.per_frame)
        print(f"per frame: {args.per_frame}.csv, {args.per_frame}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
