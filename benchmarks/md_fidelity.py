"""Is a model's MD the surrogate's MD? Frames of model-driven MD relabelled by the surrogate.

A run that stays in its cages for 20 ps is stable, not necessarily right: a model too soft outside
its data lets atoms come closer than the surrogate ever allows, and its own energy says nothing is
wrong. This script runs MD with the model (NPT, fully flexible cell, the simulation layer), takes
every ``--relabel-every``-th sampled frame and computes it again with the surrogate (SevenNet by
default). Per temperature it reports:

* how far the run got (steps, or the step and reason it stopped);
* the energy of the frames above the cubic cell (meV/atom; each side from its own cubic cell of the
  same size): the model's and the surrogate's mean, their RMS difference and mean bias;
* the force RMSE (eV/A) and the largest surrogate force on the frames;
* the shortest distance of every species pair in the frames and the cube root of the volume per
  formula unit (second half of the run), and (with ``--surrogate-steps``) the same in MD driven by the
  surrogate itself at that temperature, from the same start and seed.

At equilibrium the potential energy of a harmonic crystal is 3/2 kT per atom above its minimum
(78 meV/atom at 600 K); a model whose frames the surrogate puts far above that drives MD into
configurations the surrogate's own MD would not visit.

    python benchmarks/md_fidelity.py --model PATH                       # 4x4x4, 300 and 600 K, 20 ps each
    python benchmarks/md_fidelity.py --model PATH --supercell 2 --steps 2500 --surrogate-steps 500 \\
        --json fidelity.json --plot fidelity.png

Writes ``--json`` and ``--plot`` (energies along the run, model against surrogate, and the
shortest distance). The surrogate costs about 1 s per 4x4x4 frame on one core.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from itertools import combinations_with_replacement
from pathlib import Path

import numpy as np

MEV = 1000.0


def _atoms(species, positions, lattice):
    from ase import Atoms

    return Atoms(symbols=list(species), positions=np.asarray(positions), cell=np.asarray(lattice), pbc=True)


def shortest_distances(atoms) -> dict:
    """The shortest distance (A) of every species pair, e.g. ``{"Cs-Br": 3.61, ...}``."""
    d = atoms.get_all_distances(mic=True)
    np.fill_diagonal(d, np.inf)
    sym = np.array(atoms.get_chemical_symbols())
    out = {}
    for a, b in combinations_with_replacement(sorted(set(sym), key=list(sym).index), 2):
        block = d[np.ix_(sym == a, sym == b)]
        out[f"{a}-{b}"] = float(block.min()) if block.size else float("nan")
    return out


def _a_eff(frames, n_atoms: int) -> float | None:
    """The cube root of the mean volume per formula unit (A): the pseudo-cubic lattice parameter."""
    return float(np.cbrt(np.mean([a.get_volume() for a in frames]) / (n_atoms / 5))) if frames else None


def shortest_over(frames) -> tuple[dict, list]:
    """Per species pair the shortest distance over all ``frames`` ((step, atoms, energy) tuples), and
    the shortest distance of any pair in each frame."""
    per_pair, per_frame = {}, []
    for _step, atoms, _e in frames:
        d = shortest_distances(atoms)
        per_pair = {k: min(per_pair.get(k, np.inf), v) for k, v in d.items()}
        per_frame.append(min(d.values()))
    return per_pair, per_frame


def run_md(driver, perovskite, args, temperature: float, seed: int, every: int, species):
    """MD with ``driver`` (a model path, ``perovskite`` None, or an ASE calculator and the reference
    ``perovskite``); frames every ``every`` samples; ``species`` of the supercell's atoms.

    Returns (frames, reached steps, stop reason or None, seconds, largest displacement of an atom from its
    site in A, checked every 10 steps); a frame is (step, atoms, energy in
    eV from the cubic cell as the driver sees it)."""
    from perovskite_pes.simulation import BlowUpError, MDSimulation, Stage

    sim = MDSimulation(
        driver,
        perovskite=perovskite,
        supercell=args.supercell,
        start=args.start,
        ensemble="npt",
        timestep_fs=args.timestep,
        sample_every=args.sample_every,
        max_displacement=args.max_displacement,
        seed=seed,
        threads=args.threads,
    )
    frames, count = [], [0]

    def keep(positions, lattice, energy, target, step):
        if count[0] % every == 0:
            frames.append((int(step), _atoms(species, positions, lattice), float(energy)))
        count[0] += 1

    t0 = time.perf_counter()
    try:
        res = sim.run([Stage(temperature, args.steps, 0)], progress=True, on_sample=keep)
        return frames, res.steps, None, time.perf_counter() - t0, res.max_displacement_A
    except BlowUpError as exc:
        return frames, exc.step, str(exc).split(". ")[0], time.perf_counter() - t0, exc.max_displacement


def relabel(frames, calc, cubic_energy: float, n_atoms: int):
    """The surrogate's energy per atom above its cubic cell (meV), forces, and its largest force per frame."""
    out = []
    for _step, atoms, _e in frames:
        a = atoms.copy()
        a.calc = calc
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            e = a.get_potential_energy()
            f = a.get_forces()
        out.append(((e - cubic_energy) / n_atoms * MEV, f))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="saved model folder")
    p.add_argument("--surrogate", default="sevennet")
    p.add_argument("--temperatures", default="300,600")
    p.add_argument("--start", default="a0a0a0")
    p.add_argument("--supercell", type=int, default=4)
    p.add_argument("--steps", type=int, default=5000, help="MD steps per temperature (5000 x 4 fs = 20 ps)")
    p.add_argument("--sample-every", type=int, default=10)
    p.add_argument("--relabel-every", type=int, default=25, help="relabel every k-th sampled frame")
    p.add_argument("--surrogate-steps", type=int, default=0, help="also run the surrogate's own MD this long")
    p.add_argument("--timestep", type=float, default=4.0)
    p.add_argument("--max-displacement", type=float, default=3.5, help="A; a run past it stops (default 3.5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None)
    args = p.parse_args(argv)

    from perovskite_pes.calculators import get_calculator
    from perovskite_pes.models import PESCalculator, load_model
    from perovskite_pes.structure import Configuration

    model = load_model(args.model)
    pv = model.reference_.perovskite
    ref = pv.supercell(args.supercell)
    n = ref.n_atoms
    calc = get_calculator(args.surrogate, threads=args.threads).ase_calculator()
    cubic = Configuration(ref).to_ase()
    cubic.calc = calc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        e_cubic = cubic.get_potential_energy()
    print(
        f"{args.supercell}^3 cell ({n} atoms), NPT from {args.start}, {args.steps} steps of {args.timestep} fs; "
        f"load average {open('/proc/loadavg').read().split()[:3]}"
    )
    pc = PESCalculator(model)
    rows = []
    for t in [float(x) for x in args.temperatures.split(",")]:
        frames, reached, stop, secs, dmax = run_md(
            args.model, None, args, t, args.seed, args.relabel_every, ref.species
        )
        labels = relabel(frames, calc, e_cubic, n)
        e_model = np.array([e / n * MEV for _s, _a, e in frames])
        e_sur = np.array([e for e, _f in labels])
        f_err = []
        for (_s, atoms, _e), (_es, fs) in zip(frames, labels):
            a = atoms.copy()
            a.calc = pc
            f_err.append(a.get_forces() - fs)
        dmin, dmin_per_frame = shortest_over(frames)
        row = {
            "temperature_K": t,
            "steps": int(reached),
            "stopped": stop,
            "model_md_s": secs,
            "max_displacement_A": dmax,
            "frames": len(frames),
            "step": [s for s, _a, _e in frames],
            "model_meV_atom": e_model.tolist(),
            "surrogate_meV_atom": e_sur.tolist(),
            "energy_rmse_meV_atom": float(np.sqrt(np.mean((e_model - e_sur) ** 2))),
            "energy_bias_meV_atom": float(np.mean(e_model - e_sur)),
            "force_rmse_eV_A": float(np.sqrt(np.mean(np.square(np.concatenate([f.ravel() for f in f_err]))))),
            "surrogate_max_force_eV_A": float(max(np.abs(f).max() for _e, f in labels)),
            "shortest_model_md": dmin,
            "cubic_root_volume_A": _a_eff([a for _s, a, _e in frames[len(frames) // 2 :]], n),
            "shortest_per_frame": dmin_per_frame,
            "equipartition_meV_atom": 1.5 * 8.617333e-5 * t * MEV,
        }
        if args.surrogate_steps:
            sargs = argparse.Namespace(**{**vars(args), "steps": args.surrogate_steps})
            sframes, sreached, sstop, ssecs, sdmax = run_md(calc, pv, sargs, t, args.seed, 1, ref.species)
            smin, _ = shortest_over(sframes)
            row["surrogate_md"] = {
                "steps": int(sreached),
                "stopped": sstop,
                "seconds": ssecs,
                "max_displacement_A": sdmax,
                "mean_meV_atom": float(np.mean([e / n * MEV for _s, _a, e in sframes])) if sframes else None,
                "shortest": smin,
                "cubic_root_volume_A": _a_eff([a for _s, a, _e in sframes[len(sframes) // 2 :]], n),
            }
        rows.append(row)
        print(
            f"\n{t:.0f} K: model MD {reached} steps{' (stopped: ' + stop + ')' if stop else ''}, {secs / 60:.1f} min; "
            f"{len(frames)} frames relabelled; no atom further than {dmax:.2f} A from its site"
        )
        print(
            f"  energy above the cubic cell (meV/atom): model {e_model.mean():.1f}, "
            f"{args.surrogate} {e_sur.mean():.1f} "
            f"(3/2 kT = {row['equipartition_meV_atom']:.1f}); RMS difference {row['energy_rmse_meV_atom']:.1f}, "
            f"bias {row['energy_bias_meV_atom']:+.1f}"
        )
        print(
            f"  forces: RMSE {row['force_rmse_eV_A']:.3f} eV/A; largest {args.surrogate} force "
            f"{row['surrogate_max_force_eV_A']:.2f} eV/A"
        )
        sur_a = row.get("surrogate_md", {}).get("cubic_root_volume_A")
        print(
            f"  cube root of the volume per f.u., second half: model MD {row['cubic_root_volume_A']:.3f} A"
            + (f", {args.surrogate} MD {sur_a:.3f} A" if sur_a else "")
        )
        pairs = list(dmin)
        print(f"  {'shortest distance (A)':<25}" + "".join(f"{k:>8}" for k in pairs))
        print(f"    {'model MD':<21}" + "".join(f"{dmin[k]:8.2f}" for k in pairs))
        if "surrogate_md" in row:
            s = row["surrogate_md"]
            print(
                f"    {args.surrogate + ' MD, ' + str(s['steps']) + ' steps':<21}"
                + "".join(f"{s['shortest'].get(k, np.nan):8.2f}" for k in pairs)
            )
    out = {"settings": vars(args), "temperatures": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))
    if args.plot:
        plot(rows, args, args.plot)
    return 0


def plot(rows, args, path) -> None:
    from perovskite_pes.utils import pyplot, save_figure

    plt = pyplot()

    fig, axes = plt.subplots(2, len(rows), figsize=(5 * len(rows), 6), squeeze=False, sharex="col")
    for k, row in enumerate(rows):
        ps = np.array(row["step"]) * args.timestep / 1000.0
        ax = axes[0, k]
        ax.plot(ps, row["model_meV_atom"], "o-", ms=3, label="model")
        ax.plot(ps, row["surrogate_meV_atom"], "s-", ms=3, label=f"{args.surrogate} on the same frames")
        ax.axhline(row["equipartition_meV_atom"], color="k", ls=":", lw=1, label="3/2 kT")
        ax.set_title(f"{row['temperature_K']:.0f} K, {args.supercell}x{args.supercell}x{args.supercell}, model MD")
        ax.set_ylabel("energy above the cubic cell (meV/atom)")
        ax.legend(fontsize=8)
        ax = axes[1, k]
        ax.plot(ps, row["shortest_per_frame"], "o-", ms=3, color="tab:purple", label="model MD")
        if "surrogate_md" in row:
            ax.axhline(
                min(row["surrogate_md"]["shortest"].values()), color="tab:orange", ls="--", label=f"{args.surrogate} MD"
            )
        ax.set_xlabel("time (ps)")
        ax.set_ylabel("shortest interatomic distance (A)")
        ax.legend(fontsize=8)
    save_figure(fig, path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
