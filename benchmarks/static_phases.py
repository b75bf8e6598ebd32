"""The model against its surrogate at 0 K: relaxed tilt phases, harmonic frequencies, layer stackings.

Where validate_simulation.py compares thermal averages, this says where a difference comes from:

* every Glazer system (default: all 15) relaxed in the 2x2x2 cell by the model and by the surrogate, each
  within the symmetry of its start (positions and the full cell): the energy below each one's own relaxed
  cubic cell, the largest R and M tilt, the pseudo-cubic cell, the Glazer system after relaxation; then
  the mean absolute difference of the phase energies, their rank correlation and each one's ground state;
* harmonic frequencies of both at the surrogate's ground state (same structure, fixed cell): their
  log-average sets the vibrational entropy, and ``kT * sum ln(nu_model / nu_surrogate)`` per formula unit
  is how much the model's harmonic free energy of that phase is off at T (a stiffer model favours less
  distorted phases at temperature);
* the energies of one-axis tilts stacked in phase, anti-phase and with period 4 along the axis (a
  2 x 2 x 4 cell, cubic lattice): the coupling of tilts in successive layers, which descriptors that end
  within one cell cannot see;
* the (M, R) landscape of Pnma: rigid a+b-b- tilts on a grid of in-phase (M, about x) and anti-phase (R,
  about y and z) angles in the cubic 2x2x2 cell, both drivers' energies from the cubic cell and their
  difference (a model stiffer along R than its surrogate under-tilts at temperature, even when every
  difference is within its training error).

    python benchmarks/static_phases.py --model PATH
    python benchmarks/static_phases.py --model PATH --systems a0a0c+,a0a0c-,a+b-b- --no-frequencies --json out.json

Prints tables, writes ``--json`` and a figure (``--plot``, default static_phases.png next to the JSON or
in the working directory). The surrogate's half (its relaxations, frequencies and stackings, about 8 min
of SevenNet on one core) does not depend on the model: SevenNet's ships in ``data/sevennet_static_2x2x2.json``
and ``--surrogate-json FILE`` keeps any other's, so a model is compared in the time of its own half.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

KB_EV = 8.617333262e-5
#: the surrogate's relaxations, frequencies and stackings (SevenNet's with the defaults), reused by every comparison
SHIPPED = Path(__file__).resolve().parent / "data" / "sevennet_static_2x2x2.json"
STACKINGS = {"in-phase": [1], "anti-phase": [1, -1], "period 4": [1, 1, -1, -1], "one fault": [1, -1, 1, 1]}


class _Kept:
    """The surrogate's results on file: the shipped ones and ``--surrogate-json`` (written back when new)."""

    def __init__(self, path, prefix: str):
        self.path = Path(path) if path else None
        self.prefix = prefix
        self.data = json.loads(SHIPPED.read_text()) if SHIPPED.exists() else {}
        if self.path and self.path.exists():
            self.data.update(json.loads(self.path.read_text()))

    def get(self, key, compute):
        key = f"{self.prefix} {key}"
        if key not in self.data:
            self.data[key] = compute()
            if self.path:
                self.path.write_text(json.dumps(self.data, indent=0))
        return self.data[key]


def _relax_all(driver, pv, systems, args, label, kept=None):
    from perovskite_pes.simulation import RelaxedPhase, relax_phase
    from perovskite_pes.simulation.common import simulation_cell

    def relax(s):
        return relax_phase(driver, s, supercell=2, perovskite=pv, fmax=args.fmax, steps=args.steps)

    ref = simulation_cell(pv, 2)
    out = {}
    t0 = time.perf_counter()
    for s in systems:
        if kept is None:
            p = relax(s)
        else:
            p = RelaxedPhase.from_dict(kept.get(f"relaxed {s}", lambda s=s: relax(s).to_dict()), ref)
        out[s] = p
        print(
            f"  {label:>10} {s:8} -> {p.glazer:8} {p.space_group or '?':8} steps {p.steps:4d}"
            f"{'' if p.converged else ' (not converged)'}",
            flush=True,
        )
    return out, time.perf_counter() - t0


def _row(p, e0):
    return {
        "glazer": p.glazer,
        "dE_meV_per_fu": 1000 * (p.energy_per_fu_eV - e0),
        "R_max": float(np.abs(p.R).max()),
        "M_max": float(np.abs(p.M).max()),
        "lattice": [float(x) for x in p.lattice],
        "converged": p.converged,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="saved model folder")
    p.add_argument("--surrogate", default="sevennet", help="the calculator that labelled the training data")
    p.add_argument("--systems", default="all", help="comma-separated Glazer systems (default: all 15)")
    p.add_argument("--fmax", type=float, default=0.003, help="relaxation force threshold (eV/A)")
    p.add_argument("--steps", type=int, default=500, help="largest number of relaxation steps")
    p.add_argument("--no-frequencies", action="store_true", help="skip the harmonic frequencies")
    p.add_argument("--stacking-angle", type=float, default=8.0, help="tilt of the stacking test (degrees)")
    p.add_argument("--temperatures", default="150,300", help="temperatures of the harmonic free-energy offset")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument(
        "--landscape",
        default="5,9,12,15:3,6,7.5,10",
        help="M angles:R angles (degrees) of the rigid a+b-b- grid; 'none' skips it",
    )
    p.add_argument("--surrogate-json", default=None, help="keep (and reuse) the surrogate's results here")
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None)
    args = p.parse_args(argv)

    import torch
    from scipy.stats import spearmanr

    from perovskite_pes.calculators import get_calculator
    from perovskite_pes.models import load_model
    from perovskite_pes.simulation import harmonic_frequencies, stacking_energies, tilt_landscape
    from perovskite_pes.structure import GLAZER_SYSTEMS

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model)
    pv = model.reference_.perovskite
    surrogate = get_calculator(args.surrogate).ase_calculator()
    systems = [g.symbol for g in GLAZER_SYSTEMS] if args.systems == "all" else args.systems.split(",")
    systems = ["a0a0a0"] + [s for s in systems if s != "a0a0a0"]  # energies are given from the cubic cell
    print(f"model {args.model}; surrogate {args.surrogate}; load average {open('/proc/loadavg').read().split()[:3]}")
    print("relaxing (2x2x2, positions and cell, symmetry of the start kept) ...")
    mod, t_mod = _relax_all(model, pv, systems, args, "model")
    kept = _Kept(args.surrogate_json, f"{args.surrogate} a={pv.lattice_parameter:g} fmax={args.fmax:g}")
    sur, t_sur = _relax_all(surrogate, pv, systems, args, args.surrogate, kept)
    e0m, e0s = mod["a0a0a0"].energy_per_fu_eV, sur["a0a0a0"].energy_per_fu_eV
    rows = {s: {"model": _row(mod[s], e0m), "surrogate": _row(sur[s], e0s)} for s in systems}

    print(
        f"\nrelaxed phases (model {t_mod:.0f} s, {args.surrogate} {t_sur:.0f} s); "
        "energies from each one's own cubic cell"
    )
    head = f"  {'start':8} {'phase m/s':17} {'dE model':>9} {'dE surr':>9} {'diff':>7}   {'R m/s':>11}   {'M m/s':>11}"
    print(head + "   a, b, c, alpha (model / surrogate)")
    for s in systems:
        m, r = rows[s]["model"], rows[s]["surrogate"]
        lm, ls = m["lattice"], r["lattice"]
        print(
            f"  {s:8} {m['glazer']:8} {r['glazer']:8} {m['dE_meV_per_fu']:9.1f} {r['dE_meV_per_fu']:9.1f} "
            f"{m['dE_meV_per_fu'] - r['dE_meV_per_fu']:7.1f}   {m['R_max']:5.2f}/{r['R_max']:5.2f}"
            f"   {m['M_max']:5.2f}/{r['M_max']:5.2f}   "
            f"{lm[0]:.3f} {lm[1]:.3f} {lm[2]:.3f} {lm[3]:.2f} / {ls[0]:.3f} {ls[1]:.3f} {ls[2]:.3f} {ls[3]:.2f}"
        )
    tilted = [s for s in systems if s != "a0a0a0"]
    em = np.array([rows[s]["model"]["dE_meV_per_fu"] for s in tilted])
    es = np.array([rows[s]["surrogate"]["dE_meV_per_fu"] for s in tilted])
    low_m, low_s = tilted[int(np.argmin(em))], tilted[int(np.argmin(es))]
    ground_m, ground_s = mod[low_m].glazer, sur[low_s].glazer  # the relaxed phases, whatever they started from
    summary = {
        "mae_meV_per_fu": float(np.mean(np.abs(em - es))),
        "max_abs_diff_meV_per_fu": float(np.max(np.abs(em - es))),
        "spearman": float(spearmanr(em, es).statistic) if len(tilted) > 2 else None,
        "ground_state_model": ground_m,
        "ground_state_surrogate": ground_s,
    }
    print(
        f"  phase energies: mean |diff| {summary['mae_meV_per_fu']:.1f} meV/f.u., largest "
        f"{summary['max_abs_diff_meV_per_fu']:.1f}; rank correlation {summary['spearman']}; lowest: model "
        f"{ground_m}, {args.surrogate} {ground_s}"
    )

    out = {"settings": vars(args), "phases": rows, "summary": summary, "seconds": {"model": t_mod, "surrogate": t_sur}}
    freqs = None
    if not args.no_frequencies:
        at = sur[low_s].configuration
        t0 = time.perf_counter()
        fm = harmonic_frequencies(model, at)
        fs = np.array(
            kept.get(f"frequencies {low_s}", lambda: harmonic_frequencies(surrogate, at, perovskite=pv).tolist())
        )
        n_fu = at.reference.n_cells
        ok = (np.abs(fm) > 0.05) & (np.abs(fs) > 0.05)  # leave out the three acoustic zero modes
        log_ratio = float(np.sum(np.log(np.abs(fm[ok]) / np.abs(fs[ok]))))
        temps = [float(t) for t in args.temperatures.split(",")]
        offsets = {f"{t:g}": 1000 * KB_EV * t * log_ratio / n_fu for t in temps}
        freqs = {"model_THz": fm.tolist(), "surrogate_THz": fs.tolist()}
        out["frequencies"] = {
            "at": f"{args.surrogate}'s relaxed {ground_s}",
            **freqs,
            "log_average_ratio": float(np.exp(log_ratio / ok.sum())),
            "harmonic_free_energy_offset_meV_per_fu": offsets,
            "unstable_model": int((fm < -0.05).sum()),
            "unstable_surrogate": int((fs < -0.05).sum()),
            "seconds": time.perf_counter() - t0,
        }
        f = out["frequencies"]
        print(
            f"\nharmonic frequencies at {f['at']} (fixed cell): lowest optical model "
            f"{np.round(fm[ok][:4], 2).tolist()} THz, {args.surrogate} {np.round(fs[ok][:4], 2).tolist()} THz; "
            f"log-average ratio model/{args.surrogate} {f['log_average_ratio']:.3f}; unstable modes "
            f"{f['unstable_model']} / {f['unstable_surrogate']}"
        )
        print(
            "  harmonic free energy of this phase, model minus surrogate: "
            + ", ".join(f"{v:+.1f} meV/f.u. at {t} K" for t, v in offsets.items())
        )

    st_m = stacking_energies(model, args.stacking_angle, STACKINGS)
    st_s = kept.get(
        f"stackings {args.stacking_angle:g}",
        lambda: stacking_energies(surrogate, args.stacking_angle, STACKINGS, perovskite=pv),
    )
    out["stackings"] = {
        name: {"model_meV_per_fu": 1000 * st_m[name], "surrogate_meV_per_fu": 1000 * st_s[name]} for name in STACKINGS
    }
    print(f"\none-axis tilts of {args.stacking_angle:g} deg about z, 2x2x4 cell, meV/f.u. from the cubic cell:")
    for name in STACKINGS:
        print(f"  {name:11} model {1000 * st_m[name]:8.2f}   {args.surrogate} {1000 * st_s[name]:8.2f}")
    split_m = 1000 * (st_m["in-phase"] - st_m["anti-phase"])
    split_s = 1000 * (st_s["in-phase"] - st_s["anti-phase"])
    out["stackings"]["in_minus_anti"] = {"model": split_m, "surrogate": split_s}
    print(f"  in-phase minus anti-phase: model {split_m:+.2f}, {args.surrogate} {split_s:+.2f} meV/f.u.")

    grid = None
    if args.landscape != "none":
        ms, rs = ([float(x) for x in part.split(",")] for part in args.landscape.split(":"))
        lm = tilt_landscape(model, ms, rs)
        ls = np.array(kept.get(f"landscape {args.landscape}", lambda: tilt_landscape(surrogate, ms, rs, pv).tolist()))
        grid = {"M_deg": ms, "R_deg": rs, "model_meV_per_fu": lm.tolist(), "surrogate_meV_per_fu": ls.tolist()}
        out["landscape"] = grid
        print("")
        print("rigid a+b-b- tilts, 2x2x2 cubic cell, meV/f.u. from the cubic cell: model / surrogate (difference)")
        print("  M, R (deg) " + "".join(f"{r:>23g}" for r in rs))
        for i, m in enumerate(ms):
            cells = [f"{lm[i, j]:8.1f}/{ls[i, j]:6.1f} ({lm[i, j] - ls[i, j]:+5.1f})" for j in range(len(rs))]
            print(f"  {m:10g} " + " ".join(cells))

    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    plot = args.plot or (str(Path(args.json).with_suffix(".png")) if args.json else "static_phases.png")
    _plot(plot, tilted, em, es, freqs, args.surrogate, grid)
    print(f"figure: {plot}")
    return 0


def _plot(path, systems, em, es, freqs, surrogate, grid=None):
    from perovskite_pes.utils import pyplot, save_figure

    plt = pyplot()

    n = 1 + bool(freqs) + bool(grid)
    fig, axes = plt.subplots(1, n, figsize=(6 * n, 4.5), squeeze=False)
    ax = axes[0, 0]
    x = np.arange(len(systems))
    ax.bar(x - 0.2, em, 0.4, label="model")
    ax.bar(x + 0.2, es, 0.4, label=surrogate)
    ax.set_xticks(x, systems, rotation=60, ha="right")
    ax.set_ylabel("relaxed energy - cubic (meV/f.u.)")
    ax.set_title("relaxed tilt systems, 2x2x2")
    ax.legend()
    if freqs:
        ax = axes[0, 1]
        fs, fm = np.array(freqs["surrogate_THz"]), np.array(freqs["model_THz"])
        ax.plot(fs, fm, ".", ms=4)
        lim = [min(fs.min(), fm.min()), max(fs.max(), fm.max())]
        ax.plot(lim, lim, "k-", lw=0.8)
        ax.set_xlabel(f"{surrogate} frequency (THz)")
        ax.set_ylabel("model frequency (THz)")
        ax.set_title("harmonic frequencies at the surrogate's ground state")
    if grid:
        ax = axes[0, n - 1]
        diff = np.array(grid["model_meV_per_fu"]) - np.array(grid["surrogate_meV_per_fu"])
        lim = max(float(np.abs(diff).max()), 1e-6)
        im = ax.imshow(diff, origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
        ax.set_xticks(range(len(grid["R_deg"])), [f"{r:g}" for r in grid["R_deg"]])
        ax.set_yticks(range(len(grid["M_deg"])), [f"{m:g}" for m in grid["M_deg"]])
        ax.set_xlabel("anti-phase R about y and z (deg)")
        ax.set_ylabel("in-phase M about x (deg)")
        ax.set_title(f"rigid a+b-b-: model - {surrogate} (meV/f.u.)")
        fig.colorbar(im, ax=ax)
    save_figure(fig, path)


if __name__ == "__main__":
    sys.exit(main())
