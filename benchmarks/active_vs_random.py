"""Active learning against random sampling at equal cost, scored on the thermal validation set.

Takes a finished campaign with an ``active:`` section (its store under ``PES_HOME`` and its spec file),
splits its labelled data into what the enumeration produced (the base) and the N frames that the loop's
iterations added (frames of the committee's own MD), and trains the campaign's recipe (its spec's
training settings and committee, same seed) on

* ``base``   -- the base alone;
* ``loop``   -- the base and the loop's N frames (what the campaign's final model saw);
* ``random`` -- the base and N random configurations of the same size: for every loop frame, its start
  (the tilt system or the cubic cell the exploration began from) plus a displacement on an n-sphere whose
  radius is the frame's distance from that start, and a strain on a 6-sphere likewise; random
  displacements of a thermal frame's size put energy into the stiff bonds that thermal motion leaves
  alone, so ``--random-scale 1,0.5`` adds an arm at half that distance (``random x0.5``);
* ``md`` (``--md``) -- the base and N snapshots of the calculator's own NPT MD of the training cell at
  the loop's temperatures and starts, one every ``--md-every`` steps: this arm costs N x md-every
  calculations, not N; the table says so. ``loop+md`` trains on both.

Every added configuration is labelled by the campaign's calculator (cached in ``--cache``), and each
model is scored per kind by ``thermal_validation.py``'s scorer on its validation set (``--validation``,
never trained on). Prints a table (energy RMSE meV/atom / force RMSE eV/A per kind), writes ``--json``
and a bar chart (``--plot``).

    PES_HOME=runs/al python benchmarks/active_vs_random.py --spec al.yaml --md --md-every 5,1 \\
        --random-scale 1,0.5 --json avr.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy_cspbbr3 import Labeller, nsphere, read_dataset, write_dataset  # noqa: E402
from thermal_validation import SHIPPED, cubic_energies, plot, score, surrogate_md  # noqa: E402


def campaign_data(spec):
    """(base, loop) lists of training-data dicts of the campaign's calculator, and the campaign's model path."""
    from perovskite_pes.db import get_store

    store = get_store()
    data = store.training_data(calculator=spec.calculator.name)
    if not data:
        raise SystemExit(
            f"no completed {spec.calculator.name} calculations under this PES_HOME: run the campaign first"
        )
    loop = [d for d in data if d["config"].tags.get("method") == "active"]
    base = [d for d in data if d["config"].tags.get("method") != "active"]
    if not loop:
        raise SystemExit("the campaign's data hold no frames of an active-learning iteration (tags.method == 'active')")
    model = store.active_model(calculator=spec.calculator.name)
    return base, loop, (model or {}).get("path")


def starts(spec, reference) -> dict:
    """The exploration's starts in the training cell, as the loop builds them (default tilt angles)."""
    from perovskite_pes.simulation.common import start_configuration

    pv, m = reference.perovskite, reference.matrix
    out = {s: start_configuration(pv, m, s) for s in spec.active.starts}
    out.setdefault("a0a0a0", start_configuration(pv, m, "a0a0a0"))
    return out


def random_like(loop, parents, rng, scale: float = 1.0):
    """One random configuration per loop frame, ``scale`` times as far from the frame's start as the frame is."""
    from perovskite_pes.structure import Configuration

    out = []
    for d in loop:
        c = d["config"]
        p = parents.get(c.tags.get("start"), parents["a0a0a0"])
        if not np.allclose(p.reference.positions, c.reference.positions, atol=1e-6):
            raise SystemExit("the loop's frames and the starts order the atoms of the training cell differently")
        du = np.asarray(c.displacements) - np.asarray(p.displacements)
        du -= du.mean(axis=0)
        de = np.asarray(c.strain) - np.asarray(p.strain)
        u = nsphere(rng, du.size, scale * float(np.linalg.norm(du))).reshape(du.shape)
        u -= u.mean(axis=0)
        e = nsphere(rng, 6, scale * float(np.linalg.norm(de)))
        tags = {"method": "random", "kind": "random", "start": c.tags.get("start")}
        out.append(Configuration(c.reference, np.asarray(p.displacements) + u, np.asarray(p.strain) + e, tags))
    return out


def md_like(spec, parents, n_frames: int, every: int, threads: int, seed: int):
    """Snapshots of the calculator's own NPT MD of the training cell at the loop's temperatures and starts."""
    from perovskite_pes.calculators import get_calculator

    a = spec.active
    runs = [(float(t), s) for t in a.temperatures for s in a.starts]
    per_run = int(np.ceil(n_frames / len(runs)))
    calc = get_calculator(spec.calculator.name, threads=threads).ase_calculator()
    out = []
    for k, (t, s) in enumerate(runs):
        print(f"{spec.calculator.name} MD at {t:.0f} K from {s}", flush=True)
        start = parents[s]
        # the calculator is the reference: only a real runaway (3 A) stops it
        frames = surrogate_md(
            calc, start.reference, start, t, per_run, every, a.equilibration, seed + 101 * k, threads, 3.0
        )
        for c, _ in frames:
            c.tags.update({"method": "md", "kind": "md", "temperature_K": t, "start": s})
        out += frames
    out = out[:n_frames]
    return [c for c, _ in out], [lab for _, lab in out]


def labelled(cache: Path, make, what: str):
    """Configurations and labels from ``cache``, else ``make()`` -> (configs, labels) written there."""
    if cache.is_file():
        configs, energies, forces, stresses = read_dataset(cache, stresses=True)
        print(f"{what}: {len(configs)} from {cache} (cached)")
        return configs, list(zip(energies, forces, stresses))
    t0 = time.perf_counter()
    configs, labels = make()
    write_dataset(cache, configs, labels)
    print(f"{what}: {len(configs)} labelled in {time.perf_counter() - t0:.0f} s -> {cache}")
    return configs, labels


def label_all(labeller, configs):
    """(configs, their labels)."""
    return configs, [labeller(c) for c in configs]


def _merge(settings: dict, override: dict) -> dict:
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(settings.get(key), dict):
            _merge(settings[key], value)
        else:
            settings[key] = value
    return settings


def train(spec, base, extra, workdir: Path, label: str, override: dict | None = None) -> str:
    """The campaign's recipe on ``base`` (training-data dicts) + ``extra`` ((configs, labels)); the model's path."""
    from perovskite_pes.models import train_and_select, training_stresses

    path = workdir / label / "model"
    if (path / "model.json").is_file():
        print(f"{label}: {path} (trained before)")
        return str(path)
    settings = _merge(spec.campaign_training_settings(), override or {})
    data = base + [{"config": c, "energy": e, "forces": f, "stress": s} for c, (e, f, s) in zip(*extra)]
    configs = [d["config"] for d in data]
    energies = [float(d["energy"]) for d in data]
    forces = [np.asarray(d["forces"]) for d in data]
    needed = float(settings["training"].get("stress_weight") or 0) > 0
    stresses = training_stresses(data, needed, "training.stress_weight > 0")
    t0 = time.perf_counter()
    model, report = train_and_select(configs, energies, forces, settings, str(workdir / label), stresses=stresses)
    if not (path / "model.json").is_file():
        model.save(str(path))
    print(f"{label}: trained on {len(configs)} configurations in {time.perf_counter() - t0:.0f} s -> {path}")
    return str(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spec", required=True, help="the campaign's spec file (YAML)")
    p.add_argument("--validation", default=str(SHIPPED), help="the validation set (default: the shipped one)")
    p.add_argument("--workdir", default="active_vs_random", help="models and labelled caches go here")
    comma = lambda cast: lambda v: [cast(x) for x in v.split(",")]  # noqa: E731
    p.add_argument("--random-scale", type=comma(float), default=[1.0], help="random arms' distance (x the frame's)")
    p.add_argument("--md", action="store_true", help="add the calculator's own MD as a fourth arm")
    p.add_argument("--md-every", type=comma(int), default=[5], help="MD steps per kept frame; one arm per value")
    p.add_argument("--arms", type=comma(str), default=None, help="train and score only these arms")
    p.add_argument(
        "--override",
        default=None,
        help='JSON merged into the training settings, e.g. \'{"grid": {"nodes": [32]}}\' (use with --tag)',
    )
    p.add_argument("--tag", default="", help="suffix of the model folders and labels (another recipe)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default="active_vs_random.png")
    args = p.parse_args(argv)

    from perovskite_pes.workflows.spec import load_spec

    spec = load_spec(args.spec)
    if not spec.active.enabled:
        raise SystemExit(f"{args.spec}: the spec has no active section, so there is no loop to compare")
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    base, loop, campaign_model = campaign_data(spec)
    parents = starts(spec, loop[0]["config"].reference)
    n = len(loop)
    rounds = len({d["config"].tags.get("iteration") for d in loop})
    print(f"base: {len(base)} configurations; loop: {n} frames in {rounds} iterations")
    labeller = Labeller(spec.calculator.name, args.threads)
    arms = {
        "base": ([], []),
        "loop": ([d["config"] for d in loop], [(d["energy"], d["forces"], d["stress"]) for d in loop]),
    }
    costs = {"base": 0, "loop": n}
    for scale in args.random_scale:
        label = "random" if scale == 1 else f"random x{scale:g}"
        rng = np.random.default_rng(args.seed if scale == 1 else [args.seed, round(1000 * scale)])
        arms[label] = labelled(
            work / ("random.extxyz" if scale == 1 else f"random_x{scale:g}.extxyz"),
            lambda rng=rng, scale=scale: label_all(labeller, random_like(loop, parents, rng, scale)),
            label,
        )
        costs[label] = n
    n_runs = len(spec.active.temperatures) * len(spec.active.starts)
    for k, every in enumerate(args.md_every if args.md else []):
        label = "md" if k == 0 else f"md every {every}"
        arms[label] = labelled(
            work / f"md_every{every}.extxyz",
            lambda every=every: md_like(spec, parents, n, every, args.threads, args.seed + 17),
            label,
        )
        costs[label] = n * every + n_runs * spec.active.equilibration
        if k == 0:
            arms["loop+md"] = (arms["loop"][0] + list(arms["md"][0]), arms["loop"][1] + list(arms["md"][1]))
            costs["loop+md"] = costs["loop"] + costs["md"]
    override = json.loads(args.override) if args.override else {}
    models = {f"campaign ({n})": campaign_model} if campaign_model and not args.arms else {}
    for label, extra in arms.items():
        if args.arms and label not in args.arms:
            continue
        models[f"{label}{args.tag} ({costs[label]})"] = train(spec, base, extra, work, label + args.tag, override)

    configs, energies, forces = read_dataset(Path(args.validation))
    cubic = cubic_energies(configs, spec.calculator.name, args.threads)
    results = {label: score(path, configs, energies, forces, cubic, args.threads) for label, path in models.items()}
    kinds = sorted({k for r in results.values() for k in r if k != "all"}) + ["all"]
    print(f"\nextra calculations beyond the base's {len(base)} in brackets; E meV/atom / F eV/A")
    print(f"{'kind':18}" + "".join(f"{lab[:20]:>21}" for lab in results))
    for k in kinds:
        print(
            f"{k:18}"
            + "".join(f"{r[k]['energy_rmse_meV_atom']:11.2f}{r[k]['force_rmse_eV_A']:10.3f}" for r in results.values())
        )
    if args.plot:
        plot(results, args.plot)
        print(f"plot: {args.plot}")
    if args.json:
        Path(args.json).write_text(json.dumps({"n_base": len(base), "costs": costs, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
