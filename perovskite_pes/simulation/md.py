"""Molecular dynamics with a learned PES: NVE, NVT (Langevin) and NPT with a fully flexible cell.

The integrator is ASE's ``LangevinBAOAB`` (Leimkuhler-Matthews BAOAB for the atoms, Langevin-Hoover
for the cell): with ``ensemble="npt"`` all nine cell degrees of freedom move, so the cell is free to
turn tetragonal or orthorhombic (or to shear, as the pseudo-cubic cell of Pnma does) as the tilts
order. ``nve`` uses velocity Verlet. Forces and stress come from the model through
:class:`~perovskite_pes.models.PESCalculator`.

Example
-------
>>> from perovskite_pes.simulation import MDSimulation, Stage          # doctest: +SKIP
>>> md = MDSimulation("~/.perovskite_pes/models/my-model/model", supercell=4, ensemble="npt")  # doctest: +SKIP
>>> result = md.run([Stage(300.0, steps=2000, equilibration=500)], trajectory="md.traj")  # doctest: +SKIP
>>> result.to_dict()["order_parameters"]["M"]  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import numpy as np

from ..models.calculator import PESCalculator
from ..structure import Configuration
from .common import (
    DEFAULT_MAX_DISPLACEMENT,
    SimulationResult,
    check_frame,
    check_same_run,
    driver_calculator,
    read_checkpoint,
    start_configuration,
    torch_threads,
    write_checkpoint,
)
from .errors import BlowUpError, SimulationError
from .sampler import Stage, StageSampler

logger = logging.getLogger(__name__)

ENSEMBLES = ("nve", "nvt", "npt")
#: steps between two checks for a blow-up
CHECK_EVERY = 10


def _check_schedule(schedule) -> list[Stage]:
    if isinstance(schedule, Stage):
        schedule = [schedule]
    schedule = list(schedule or [])
    if not schedule or not all(isinstance(s, Stage) for s in schedule):
        raise SimulationError("the schedule must be a non-empty list of Stage(temperature_K, steps, equilibration)")
    return schedule


class MDSimulation:
    """Molecular dynamics of a supercell of the model's reference perovskite.

    Parameters
    ----------
    model : a fitted EnergyModel or the path of a saved model; or any ASE calculator (e.g. the surrogate
        the model was trained on, for validation), then with ``perovskite`` (the reference Perovskite)
    supercell : N (N x N x N), three integers or a 3x3 matrix of the model's reference perovskite
    start : Glazer symbol (``a0a0a0`` = cubic), Configuration, ASE Atoms or structure file
    ensemble : ``nvt`` (Langevin, fixed cell), ``npt`` (Langevin + fully flexible cell) or ``nve``
    timestep_fs : integration time step (0.1 to 10 fs; 4 fs suits Cs/Pb/Br)
    thermostat_fs, barostat_fs : relaxation times of the thermostat and of the cell
    pressure_GPa : external pressure (NPT)
    sample_every : measure order parameters every k production steps
    trajectory_every : write a frame every k steps (0: only when a trajectory path is given, every sample)
    checkpoint_every : write the restart file every k steps
    max_displacement : an atom further than this from its site (A) stops the run (the model has left its data)
    min_energy_per_fu : an energy below this (eV per formula unit, from the cubic reference) stops the run
    threads : torch threads for the model's forces (None: torch's default; 1 is fastest on a busy machine)
    seed : random seed of the velocities and of the thermostat
    """

    method = "md"

    def __init__(
        self,
        model,
        supercell=4,
        start="a0a0a0",
        ensemble: str = "npt",
        timestep_fs: float = 4.0,
        thermostat_fs: float = 100.0,
        barostat_fs: float = 1000.0,
        pressure_GPa: float = 0.0,
        sample_every: int = 10,
        trajectory_every: int = 0,
        checkpoint_every: int = 1000,
        max_displacement: float = DEFAULT_MAX_DISPLACEMENT,
        min_energy_per_fu: float = -0.5,
        tilt_angles=None,
        perovskite=None,
        threads: int | None = None,
        seed: int = 0,
    ):
        self.model = model
        self.supercell = supercell
        self.start = start
        self.ensemble = ensemble
        self.timestep_fs = timestep_fs
        self.thermostat_fs = thermostat_fs
        self.barostat_fs = barostat_fs
        self.pressure_GPa = pressure_GPa
        self.sample_every = sample_every
        self.trajectory_every = trajectory_every
        self.checkpoint_every = checkpoint_every
        self.max_displacement = max_displacement
        self.min_energy_per_fu = min_energy_per_fu
        self.tilt_angles = tilt_angles
        self.perovskite = perovskite
        self.threads = threads
        self.seed = seed

    # ------------------------------------------------------------------ validation
    def settings(self) -> dict:
        """The run's settings (what a checkpoint must match to resume)."""
        return {
            "ensemble": self.ensemble,
            "timestep_fs": float(self.timestep_fs),
            "thermostat_fs": float(self.thermostat_fs),
            "barostat_fs": float(self.barostat_fs),
            "pressure_GPa": float(self.pressure_GPa),
            "sample_every": int(self.sample_every),
            "seed": int(self.seed),
        }

    def _check(self):
        if self.ensemble not in ENSEMBLES:
            raise SimulationError(f"ensemble must be one of {', '.join(ENSEMBLES)}; got {self.ensemble!r}")
        dt = float(self.timestep_fs)
        if not np.isfinite(dt) or dt < 0.1 or dt > 10.0:
            raise SimulationError(
                f"time step {self.timestep_fs} fs is outside 0.1-10 fs: heavy-atom perovskites need 1-5 fs "
                "(larger steps blow up, smaller ones waste time)"
            )
        for name in ("thermostat_fs", "barostat_fs"):
            if not float(getattr(self, name)) > 2 * dt:
                raise SimulationError(f"{name} must be several time steps (> {2 * dt} fs); got {getattr(self, name)}")
        for name in ("sample_every", "checkpoint_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise SimulationError(f"{name} must be a positive integer; got {v!r}")
        if int(self.trajectory_every) < 0:
            raise SimulationError(f"trajectory_every must be >= 0; got {self.trajectory_every}")
        if not float(self.max_displacement) > 0:
            raise SimulationError(f"max_displacement must be positive (A); got {self.max_displacement}")

    # ------------------------------------------------------------------ integrator
    def _integrator(self, atoms, temperature_K: float, rng):
        from ase import units

        dt = float(self.timestep_fs) * units.fs
        if self.ensemble == "nve":
            from ase.md.verlet import VelocityVerlet

            return VelocityVerlet(atoms, timestep=dt)
        from ase.md.langevinbaoab import LangevinBAOAB

        kw = {}
        if self.ensemble == "npt":
            kw = {
                "externalstress": -float(self.pressure_GPa) * units.GPa,
                "hydrostatic": False,
                "P_tau": float(self.barostat_fs) * units.fs,
            }
        with warnings.catch_warnings():  # ASE notes that it picks the barostat mass from P_tau: that is the intent
            warnings.filterwarnings("ignore", message="Using heuristic P_mass")
            return LangevinBAOAB(
                atoms,
                timestep=dt,
                temperature_K=float(temperature_K),
                T_tau=float(self.thermostat_fs) * units.fs,
                rng=rng,
                **kw,
            )

    def _setup(self):
        """Start configuration, ASE calculator and the energy of the undistorted reference cell."""
        from ase.calculators.calculator import BaseCalculator

        pv = self.perovskite
        if isinstance(self.model, BaseCalculator) and pv is None:  # e.g. the surrogate that labelled the data
            if not isinstance(self.start, Configuration):
                raise SimulationError("MD with an ASE calculator needs perovskite= (or start= a Configuration)")
            pv = self.start.reference.perovskite
        pv, calculator_for = driver_calculator(self.model, pv)
        config = start_configuration(pv, self.supercell, self.start, self.tilt_angles)
        calc = calculator_for(config.reference)
        if isinstance(calc, PESCalculator):
            return config, calc, config.reference.n_cells * float(calc.model.e0_)
        atoms = Configuration(config.reference).to_ase()
        atoms.calc = calc
        return config, calc, float(atoms.get_potential_energy())

    # ------------------------------------------------------------------ run
    def run(
        self, schedule, trajectory=None, checkpoint=None, progress: bool = False, on_sample=None
    ) -> SimulationResult:
        """Run the stages in order; returns a :class:`SimulationResult` (one summary per stage).

        ``trajectory``: a ``.traj`` (ASE) or ``.xyz``/``.extxyz`` file that receives a frame every
        ``trajectory_every`` steps. ``checkpoint``: a JSON restart file, written every
        ``checkpoint_every`` steps and at the end of every stage; when it exists, the run resumes from
        it (same schedule and settings required). A blow-up raises :class:`BlowUpError` with the result
        so far; the trajectory and the checkpoint up to then stay on disk. ``on_sample(positions,
        lattice, energy, temperature_K, step)`` is called with every sampled frame (energy in eV from
        the cubic reference), e.g. to collect frames for labelling.
        """
        with torch_threads(self.threads):
            return self._run(schedule, trajectory, checkpoint, progress, on_sample)

    def _run(self, schedule, trajectory, checkpoint, progress, on_sample=None) -> SimulationResult:
        from ase.md.velocitydistribution import Stationary, thermalize_momenta

        self._check()
        schedule = _check_schedule(schedule)
        config, calc, e_ref = self._setup()
        ref = config.reference
        atoms = config.to_ase()
        atoms.calc = calc
        rng = np.random.default_rng(int(self.seed))
        settings = self.settings()
        result = SimulationResult(
            self.method, {**settings, "schedule": [s.to_dict() for s in schedule]}, ref, model=_describe(self.model)
        )
        sampler = StageSampler.for_reference(ref)
        stage_i, k0 = 0, 0
        ckpt = Path(checkpoint) if checkpoint else None
        resumed = ckpt is not None and ckpt.exists()
        if resumed:
            state = read_checkpoint(ckpt, self.method)
            check_same_run(
                state, settings=settings, schedule=[s.to_dict() for s in schedule], supercell=ref.matrix.tolist()
            )
            atoms.set_cell(np.array(state["cell"]), scale_atoms=False)
            atoms.set_positions(np.array(state["positions"]))
            atoms.set_momenta(np.array(state["momenta"]))
            rng.bit_generator.state = state["rng"]
            stage_i, k0 = int(state["stage"]), int(state["step_in_stage"])
            result.stages = list(state["completed"])
            result.series = list(state.get("series", []))
            result.steps = int(state["steps"])
            result.max_displacement_A = float(state.get("max_displacement_A", 0.0))
            _restore_sampler(sampler, state.get("sampler"))
            logger.info("resuming %s at stage %d, step %d", ckpt, stage_i, k0)
        else:
            thermalize_momenta(atoms, temperature_K=schedule[0].target(0), rng=rng)
            Stationary(atoms)
        dyn = self._integrator(atoms, schedule[min(stage_i, len(schedule) - 1)].target(k0), rng)
        if resumed:  # the cell's momentum and force (the latter saw the momenta of mid-step)
            for name in ("p_eps", "force_eps"):
                value = state.get(name)
                if value is not None and hasattr(dyn, name):
                    setattr(dyn, name, np.array(value) if isinstance(value, list) else float(value))

        writer = _TrajectoryWriter(trajectory, append=resumed) if trajectory else None
        result.trajectory = str(trajectory) if trajectory else None
        traj_every = int(self.trajectory_every) or int(self.sample_every)
        total = sum(s.total for s in schedule)
        done = sum(s.total for s in schedule[:stage_i]) + k0
        bar = _progress(total, done, progress, "MD")
        t0 = time.perf_counter()
        steps_at_start = result.steps
        kinetic = []

        def save(next_step: int):
            write_checkpoint(
                ckpt,
                {
                    "method": self.method,
                    "settings": settings,
                    "schedule": [s.to_dict() for s in schedule],
                    "supercell": ref.matrix.tolist(),
                    "stage": stage_i,
                    "step_in_stage": next_step,
                    "steps": result.steps,
                    "max_displacement_A": result.max_displacement_A,
                    "cell": atoms.cell.array,
                    "positions": atoms.positions,
                    "momenta": atoms.get_momenta(),
                    "rng": rng.bit_generator.state,
                    "p_eps": getattr(dyn, "p_eps", None),
                    "force_eps": getattr(dyn, "force_eps", None),
                    "completed": result.stages,
                    "series": result.series,
                    "sampler": _sampler_state(sampler),
                },
            )

        try:
            while stage_i < len(schedule):
                stage = schedule[stage_i]
                for k in range(k0, stage.total):
                    target = stage.target(k)
                    if stage.temperature_end_K is not None and hasattr(dyn, "set_temperature"):
                        dyn.set_temperature(temperature_K=target)
                    dyn.step()
                    result.steps += 1
                    bar.update(1)
                    step_no = k + 1
                    # sampled: every sample_every-th step counted from the end of the equilibration
                    sample = k >= stage.equilibration and (step_no - stage.equilibration) % int(self.sample_every) == 0
                    if sample or step_no % CHECK_EVERY == 0:
                        energy = atoms.get_potential_energy() - e_ref
                        dmax = check_frame(
                            ref,
                            atoms.positions,
                            atoms.cell.array,
                            energy,
                            result.steps,
                            target,
                            float(self.max_displacement),
                            self.min_energy_per_fu,
                        )
                        result.max_displacement_A = max(result.max_displacement_A, dmax)
                        if sample:
                            sampler.add(atoms.positions, atoms.cell.array, energy, target)
                            if on_sample is not None:
                                on_sample(atoms.get_positions(), atoms.cell.array.copy(), energy, target, result.steps)
                            kinetic.append(atoms.get_temperature())
                    if writer is not None and step_no % traj_every == 0:
                        writer.write(atoms)
                    if ckpt is not None and result.steps % int(self.checkpoint_every) == 0:
                        save(k + 1)
                    if bar is not None and step_no % 50 == 0:
                        bar.set_postfix(T=f"{target:.0f}K", Tkin=f"{atoms.get_temperature():.0f}K")
                summary = sampler.summary()
                summary["kinetic_temperature_K"] = float(np.mean(kinetic)) if kinetic else None
                summary["stage"] = stage.to_dict()
                result.stages.append(summary)
                result.series.append(sampler.series())
                logger.info(
                    "stage %d (%.0f K) done: phase %s", stage_i, stage.mean_temperature, summary["phase"]["glazer"]
                )
                sampler = StageSampler.for_reference(ref, sampler.octahedra)
                kinetic = []
                stage_i, k0 = stage_i + 1, 0
                if stage_i < len(schedule) and hasattr(dyn, "set_temperature"):
                    dyn.set_temperature(temperature_K=schedule[stage_i].target(0))
                if ckpt is not None:
                    save(0)
        except BlowUpError as exc:
            result.wall_time_s += time.perf_counter() - t0
            result.steps = max(result.steps, steps_at_start)
            exc.result = result
            raise
        finally:
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
        result.wall_time_s += time.perf_counter() - t0
        result.completed = True
        return result


def _describe(model) -> str:
    """What drove a run, for the record: a model path, a model's name or the calculator's class."""
    if isinstance(model, (str, Path)):
        return str(model)
    name = (getattr(model, "provenance_", None) or {}).get("name")
    return str(name) if name else type(model).__name__


def _sampler_state(sampler: StageSampler) -> dict:
    return {**sampler.series(), "sum_u": sampler.sum_u, "sum_strain": sampler.sum_strain}


def _restore_sampler(sampler: StageSampler, state: dict | None) -> None:
    if not state or not state.get("R"):
        return
    sampler.R = [np.array(x) for x in state["R"]]
    sampler.M = [np.array(x) for x in state["M"]]
    sampler.lattice = [np.array(x) for x in state["lattice"]]
    sampler.energy = list(state["energy"])
    sampler.temperature = list(state["temperature"])
    sampler.sum_u = np.array(state["sum_u"])
    sampler.sum_strain = np.array(state["sum_strain"])


def _progress(total: int, done: int, enabled: bool, desc: str):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc=desc, unit="step", dynamic_ncols=True)


class _NoBar:
    def update(self, n):
        pass

    def set_postfix(self, **kw):
        pass

    def close(self):
        pass


class _TrajectoryWriter:
    """Frames to an ASE ``.traj`` file or an extended XYZ file (with energy, forces and stress)."""

    def __init__(self, path, append: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.extxyz = self.path.suffix.lower() in (".xyz", ".extxyz")
        if not self.extxyz and self.path.suffix.lower() != ".traj":
            raise SimulationError(f"trajectory file must end in .traj, .xyz or .extxyz; got {self.path.name}")
        if self.extxyz:
            if not append and self.path.exists():
                self.path.unlink()
            self.traj = None
        else:
            from ase.io.trajectory import Trajectory

            self.traj = Trajectory(str(self.path), "a" if append else "w")

    def write(self, atoms):
        if self.traj is not None:
            self.traj.write(atoms)
        else:
            from ase.io import write

            write(str(self.path), atoms, format="extxyz", append=True)

    def close(self):
        if self.traj is not None:
            self.traj.close()


__all__ = ["ENSEMBLES", "MDSimulation"]
