"""``pes simulate md|mc|heat|relax``: finite-temperature runs and 0 K relaxations with a trained model."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

HELP = "run a model at temperature: MD, Monte Carlo, heating/cooling scans locating the tilt transitions"


def register(subparsers) -> None:
    p = subparsers.add_parser("simulate", help=HELP, description=HELP)
    sub = p.add_subparsers(dest="verb", metavar="VERB")

    md = sub.add_parser("md", help="molecular dynamics (NVT Langevin, NPT flexible cell, NVE)")
    _common(md, single=True)
    md.add_argument(
        "--ensemble", default="npt", choices=["nvt", "npt", "nve"], help="default npt (fully flexible cell)"
    )
    md.add_argument("--timestep", type=float, default=4.0, help="time step in fs (default 4)")
    md.add_argument("--steps", type=int, default=2000, help="production steps per temperature (default 2000)")
    md.add_argument("--equilibration", type=int, default=500, help="equilibration steps first (default 500)")
    md.add_argument("--sample-every", type=int, default=10, help="measure every k steps (default 10)")
    md.add_argument("--thermostat", type=float, default=100.0, help="thermostat time constant in fs (default 100)")
    md.add_argument("--barostat", type=float, default=1000.0, help="barostat time constant in fs (default 1000)")
    md.add_argument("--pressure", type=float, default=0.0, help="pressure in GPa (NPT, default 0)")
    md.add_argument(
        "--calculator",
        default=None,
        choices=["sevennet", "chgnet"],
        help="drive the MD with this surrogate instead of a model (validation, labelled frames: with "
        "--trajectory FILE.extxyz the frames carry its energy, forces and stress for `pes db import`)",
    )
    md.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for the forces (model or surrogate; default 1: fastest on a busy machine)",
    )
    md.add_argument(
        "--lattice-parameter",
        type=float,
        default=None,
        help="with --calculator: the reference lattice parameter (default: the model's)",
    )
    md.set_defaults(func=cmd_run, method="md")

    mc = sub.add_parser("mc", help="Metropolis Monte Carlo (local displacement moves + strain moves)")
    _common(mc, single=True)
    mc.add_argument("--ensemble", default="npt", choices=["nvt", "npt"], help="default npt (strain moves)")
    mc.add_argument("--steps", type=int, default=200, help="production sweeps per temperature (default 200)")
    mc.add_argument("--equilibration", type=int, default=100, help="equilibration sweeps first (default 100)")
    mc.add_argument("--sample-every", type=int, default=1, help="measure every k sweeps (default 1)")
    mc.add_argument("--displacement", type=float, default=0.1, help="initial displacement step in A (adapted)")
    mc.add_argument("--strain-step", type=float, default=0.002, help="strain step per component (default 0.002)")
    mc.add_argument("--pressure", type=float, default=0.0, help="pressure in GPa (NPT, default 0)")
    mc.add_argument(
        "--engine",
        default="auto",
        choices=["auto", "local", "global"],
        help="local: O(1) energy changes for cluster and site models (auto picks it when possible)",
    )
    mc.set_defaults(func=cmd_run, method="mc")

    heat = sub.add_parser("heat", help="heat and cool through a temperature range; locate the transitions")
    _common(heat, single=False)
    heat.add_argument("--method", default="md", choices=["md", "mc"], help="default md")
    heat.add_argument("--t-min", type=float, default=100.0)
    heat.add_argument("--t-max", type=float, default=500.0)
    heat.add_argument("--t-step", type=float, default=25.0)
    heat.add_argument("--steps", type=int, default=None, help="production steps (MD) or sweeps (MC) per temperature")
    heat.add_argument("--equilibration", type=int, default=None, help="equilibration per temperature")
    heat.add_argument("--seeds", default="0,1", help="comma-separated seeds: one heating and one cooling run each")
    heat.add_argument("--directions", default="heat,cool", help="heat, cool or both (default)")
    heat.add_argument("--heat-start", default="a+b-b-", help="structure the heating runs start from (default a+b-b-)")
    heat.add_argument("--cool-start", default="a0a0a0", help="structure the cooling runs start from (default cubic)")
    heat.add_argument("--ensemble", default="npt", choices=["nvt", "npt"])
    heat.add_argument("--timestep", type=float, default=4.0, help="MD time step in fs")
    heat.add_argument("--sample-every", type=int, default=None)
    heat.add_argument("--threads", type=int, default=1, help="torch threads of the MD forces (default 1)")
    heat.set_defaults(func=cmd_heat)

    relax = sub.add_parser(
        "relax", help="relax tilt systems at 0 K (positions and cell): the model's phases, energies and tilts"
    )
    relax.add_argument("--model", default=None, help="model id, name or saved-model folder (default: the active model)")
    relax.add_argument("--supercell", default="2", help="N for N x N x N (default 2), three integers or 9")
    relax.add_argument(
        "--start",
        default="all",
        help="comma-separated Glazer symbols or structure files (default all: the 15 tilt systems)",
    )
    relax.add_argument("--fmax", type=float, default=0.005, help="force threshold in eV/A (default 0.005)")
    relax.add_argument("--max-steps", type=int, default=500, help="largest number of optimiser steps (default 500)")
    relax.add_argument("--fixed-cell", action="store_true", help="relax the positions only")
    relax.add_argument("--no-symmetry", action="store_true", help="let the structure leave the symmetry of its start")
    relax.add_argument(
        "--calculator", default=None, choices=["sevennet", "chgnet"], help="relax with this surrogate instead"
    )
    relax.add_argument("--lattice-parameter", type=float, default=None, help="with --calculator (default: the model's)")
    relax.add_argument("--threads", type=int, default=None, help="torch threads")
    relax.add_argument("--workdir", default=None, help="output folder (default $PES_HOME/simulations/relax-<time>)")
    relax.add_argument("--no-progress", action="store_true", help="no progress bar")
    relax.add_argument("--json", action="store_true", help="print JSON for scripts")
    relax.set_defaults(func=cmd_relax)


def _common(p, single: bool) -> None:
    p.add_argument("--model", default=None, help="model id, name or saved-model folder (default: the active model)")
    p.add_argument("--supercell", default="4", help="N for N x N x N (default 4), three integers or 9")
    if single:
        p.add_argument("--temperature", type=float, default=300.0, help="temperature in K (default 300)")
        p.add_argument("--temperature-end", type=float, default=None, help="ramp linearly to this temperature")
        p.add_argument("--start", default="a0a0a0", help="Glazer symbol (a0a0a0 = cubic) or structure file")
        p.add_argument("--trajectory", default=None, help="write frames to FILE (.traj or .extxyz)")
        p.add_argument("--trajectory-every", type=int, default=0, help="frame every k steps (default: every sample)")
        p.add_argument(
            "--checkpoint", default=None, help="restart file: written as the run goes, resumed from if present"
        )
        p.add_argument("--seed", type=int, default=0, help="random seed (velocities, thermostat, moves)")
    p.add_argument(
        "--max-displacement",
        type=float,
        default=2.0,
        help="stop when an atom is further than this from its site, in A (default 2: out of its cage)",
    )
    p.add_argument("--workdir", default=None, help="output folder (default $PES_HOME/simulations/<verb>-<time>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")


def _workdir(args, verb: str) -> Path:
    from ..settings import Settings

    if args.workdir:
        return Path(args.workdir)
    return Settings.load().home / "simulations" / f"{verb}-{time.strftime('%Y%m%d-%H%M%S')}"


def _model_path(spec) -> Path:
    from ..simulation import SimulationError
    from .model import _resolve_model

    try:
        _rec, path = _resolve_model(spec)
    except Exception as exc:
        raise SimulationError(f"unknown model: {exc}") from None
    return path


def _supercell(text):
    from .model import _supercell_arg

    return _supercell_arg(text)


def cmd_run(args) -> int:
    from ..simulation import BlowUpError, MDSimulation, MonteCarlo, Stage
    from ..simulation.plots import plot_run

    stage = Stage(args.temperature, args.steps, args.equilibration, args.temperature_end)
    driver, perovskite = _driver(args)
    if args.method == "md":
        sim = MDSimulation(
            driver,
            perovskite=perovskite,
            supercell=_supercell(args.supercell),
            start=args.start,
            ensemble=args.ensemble,
            timestep_fs=args.timestep,
            thermostat_fs=args.thermostat,
            barostat_fs=args.barostat,
            pressure_GPa=args.pressure,
            sample_every=args.sample_every,
            trajectory_every=args.trajectory_every,
            max_displacement=args.max_displacement,
            threads=args.threads,
            seed=args.seed,
        )
    else:
        sim = MonteCarlo(
            driver,
            supercell=_supercell(args.supercell),
            start=args.start,
            ensemble=args.ensemble,
            pressure_GPa=args.pressure,
            displacement=args.displacement,
            strain_step=args.strain_step,
            sample_every=args.sample_every,
            trajectory_every=args.trajectory_every,
            engine=args.engine,
            max_displacement=args.max_displacement,
            seed=args.seed,
        )
    workdir = _workdir(args, args.method)
    workdir.mkdir(parents=True, exist_ok=True)
    trajectory = args.trajectory
    try:
        result = sim.run(
            [stage], trajectory=trajectory, checkpoint=args.checkpoint, progress=not args.no_progress and not args.json
        )
    except BlowUpError as exc:
        if exc.result is not None:
            (workdir / "result.json").write_text(json.dumps(exc.result.to_dict(series=True), indent=1))
        raise
    data = result.to_dict(series=True)
    data["plot"] = str(plot_run(data, workdir / f"{args.method}.png"))
    (workdir / "result.json").write_text(json.dumps(data, indent=1))
    data.pop("series", None)
    data["workdir"] = str(workdir)
    if args.json:
        print(json.dumps(data, indent=1))
        return 0
    _print_run(data)
    return 0


def _driver(args):
    """(model folder or surrogate ASE calculator, reference Perovskite for a surrogate)."""
    if not getattr(args, "calculator", None):
        return _model_path(args.model), None
    from ..calculators import get_calculator
    from ..models import load_model
    from ..structure import Perovskite

    if args.lattice_parameter is not None:
        perovskite = Perovskite(lattice_parameter=args.lattice_parameter)
    else:
        perovskite = load_model(_model_path(args.model)).reference_.perovskite
    calc = get_calculator(args.calculator, threads=args.threads)
    calc.check_available()
    return calc.ase_calculator(), perovskite


def _print_run(d: dict) -> None:
    op = d["order_parameters"]
    lat = d["lattice_parameters"]
    print(
        f"{d['method'].upper()} {d['atoms']} atoms, {d['steps']} {'steps' if d['method'] == 'md' else 'sweeps'} "
        f"at {d['temperature_K']:.0f} K ({d['steps_per_second']:.1f}/s)"
    )
    print(f"  tilts  R (anti-phase) {_deg(op['R'])}   M (in-phase) {_deg(op['M'])}  degrees")
    print(f"  cell   a b c = {lat[0]:.4f} {lat[1]:.4f} {lat[2]:.4f} A, angles {lat[3]:.2f} {lat[4]:.2f} {lat[5]:.2f}")
    print(f"  phase  {d['phase']} (space group of the averaged structure: {d['space_group']})")
    if d.get("max_displacement_A") is not None:
        print(f"  atoms  at most {d['max_displacement_A']:.2f} A from their sites (frames checked)")
    print(f"  results: {d['workdir']}/result.json, plot {d['plot']}")


def _deg(v) -> str:
    return " ".join(f"{x:5.2f}" for x in v)


def cmd_heat(args) -> int:
    from ..simulation import SimulationError
    from ..simulation.plots import plot_scan
    from ..simulation.transitions import TransitionScan, fluctuation_warning

    path = _model_path(args.model)
    try:
        seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    except ValueError:
        raise SimulationError(f"--seeds must be comma-separated integers; got {args.seeds!r}") from None
    directions = [d.strip() for d in str(args.directions).split(",") if d.strip()]
    md = args.method == "md"
    steps = args.steps if args.steps is not None else (1000 if md else 200)
    equil = args.equilibration if args.equilibration is not None else (500 if md else 100)
    options = {
        "ensemble": args.ensemble,
        "sample_every": args.sample_every or (10 if md else 1),
        "max_displacement": args.max_displacement,
    }
    if md:
        options.update(timestep_fs=args.timestep, threads=args.threads)
    scan = TransitionScan(
        path,
        supercell=_supercell(args.supercell),
        method=args.method,
        t_min=args.t_min,
        t_max=args.t_max,
        t_step=args.t_step,
        steps=steps,
        equilibration=equil,
        seeds=seeds,
        directions=directions,
        heat_start=args.heat_start,
        cool_start=args.cool_start,
        **options,
    )
    workdir = _workdir(args, "heat")
    workdir.mkdir(parents=True, exist_ok=True)
    result = scan.run(workdir=workdir, progress=not args.no_progress and not args.json)
    data = result.to_dict()
    data["plots"] = {"order_parameters": str(plot_scan(data, workdir / "transitions.png"))}
    data["workdir"] = str(workdir)
    (workdir / "result.json").write_text(json.dumps(data, indent=1))
    if args.json:
        print(json.dumps(data, indent=1))
        return 0
    print(
        f"{args.method.upper()} scan {args.t_min:.0f}-{args.t_max:.0f} K every {args.t_step:.0f} K, "
        f"{result.atoms} atoms, "
        f"{len(result.runs)} runs, {result.wall_time_s / 60:.1f} min"
    )
    for run in data["runs"]:
        seq = " -> ".join(f"{p}@{t:.0f}" for p, t in zip(run["phase"], run["temperature_K"]))
        print(
            f"  {run['direction']:4s} seed {run['seed']}: {seq}"
            f"{'  (stopped: ' + run['stopped'] + ')' if run['stopped'] else ''}"
        )
        if warning := fluctuation_warning(run):
            print(f"    {warning}")
    if not data["transitions"]:
        print("  no transition in this range")
    for tr in data["transitions"]:
        hyst = f", hysteresis {tr['hysteresis_K']:.0f} K" if tr["hysteresis_K"] is not None else ""
        print(
            f"  transition {tr['from']} -> {tr['to']}: {tr['temperature_K']:.0f} +- {tr['uncertainty_K']:.0f} K "
            f"({tr['estimates']} estimates{hyst})"
        )
    print(f"  results: {workdir}/result.json, plot {data['plots']['order_parameters']}")
    return 0


def cmd_relax(args) -> int:
    from ase.io import write
    from tqdm import tqdm

    from ..simulation import relax_phase
    from ..simulation.common import torch_threads
    from ..simulation.plots import plot_phases
    from ..structure import GLAZER_SYSTEMS

    driver, perovskite = _driver(args)
    starts = [s.strip() for s in str(args.start).split(",") if s.strip()]
    if starts == ["all"]:
        starts = [g.symbol for g in GLAZER_SYSTEMS]
    starts = ["a0a0a0"] + [s for s in starts if s != "a0a0a0"]  # energies are given from the relaxed cubic cell
    workdir = _workdir(args, "relax")
    workdir.mkdir(parents=True, exist_ok=True)
    phases = []
    bar = tqdm(starts, desc="relax", unit="phase", disable=args.no_progress or args.json)
    with torch_threads(args.threads):
        for start in bar:
            bar.set_postfix_str(start)
            phases.append(
                relax_phase(
                    driver,
                    start,
                    supercell=_supercell(args.supercell),
                    perovskite=perovskite,
                    fmax=args.fmax,
                    steps=args.max_steps,
                    cell=not args.fixed_cell,
                    symmetry=not args.no_symmetry,
                )
            )
    e0 = phases[0].energy_per_fu_eV
    rows = []
    for ph in phases:
        name = ph.start.replace("/", "_")
        structure = workdir / f"{name}.extxyz"
        write(structure, ph.configuration.to_ase())
        d = ph.to_dict()
        for key in ("displacements", "strain"):
            d.pop(key)
        d["energy_meV_per_fu"] = 1000 * (ph.energy_per_fu_eV - e0)
        d["structure"] = str(structure)
        rows.append(d)
    order = sorted(range(len(rows)), key=lambda k: rows[k]["energy_meV_per_fu"])
    data = {
        "model": str(driver) if isinstance(driver, (str, Path)) else args.calculator,
        "supercell": args.supercell,
        "fmax_eV_A": args.fmax,
        "cell_relaxed": not args.fixed_cell,
        "symmetry_kept": not args.no_symmetry,
        "phases": rows,
        "lowest": rows[order[0]]["glazer"],
        "workdir": str(workdir),
    }
    data["plot"] = str(plot_phases(rows, workdir / "phases.png"))
    (workdir / "result.json").write_text(json.dumps(data, indent=1))
    if args.json:
        print(json.dumps(data, indent=1))
        return 0
    print(
        f"relaxed {len(rows)} structures ({'positions' if args.fixed_cell else 'positions and cell'}, "
        f"fmax {args.fmax} eV/A{', symmetry of the start kept' if not args.no_symmetry else ''}); lowest first:"
    )
    print(
        f"  {'start':10} {'phase':8} {'space group':11} {'meV/f.u.':>9}   {'R (deg)':>17}   {'M (deg)':>17}"
        "   a, b, c (A)"
    )
    for k in order:
        r = rows[k]
        lat = r["lattice"]
        flag = "" if r["converged"] else "  (not converged)"
        print(
            f"  {r['start']:10} {r['glazer']:8} {r['space_group'] or '?':11} {r['energy_meV_per_fu']:9.1f}   "
            f"{_deg(np.abs(r['R']))}   {_deg(np.abs(r['M']))}   {lat[0]:.4f} {lat[1]:.4f} {lat[2]:.4f}{flag}"
        )
    print(f"  results: {workdir}/result.json (structures: <start>.extxyz), plot {data['plot']}")
    return 0
