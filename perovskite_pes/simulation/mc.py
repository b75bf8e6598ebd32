"""Metropolis Monte Carlo with a learned PES: local displacement moves and strain moves (NVT or NPT).

State: the configuration's representation, ``x_i = F (r_i + u_i)`` with ``F = I + e`` symmetric.
A sweep proposes one displacement move per site (``u_i += d``, ``d`` uniform in a cube of half-width
``step[sublattice]``), colour class by colour class (moves of one class do not interact, see
:mod:`perovskite_pes.simulation.local`), and in NPT one strain move (``e += d``, six components
uniform in ``+-strain_step``), accepted with ``min(1, exp(-(dE + P dV) / kT + N ln(V'/V)))`` (the
``N ln V`` term is the Jacobian of scaled coordinates). Displacement steps adapt towards
``acceptance`` during equilibration only, so production sampling obeys detailed balance.

Example
-------
>>> from perovskite_pes.simulation import MonteCarlo, Stage                 # doctest: +SKIP
>>> mc = MonteCarlo("~/.perovskite_pes/models/my-model/model", supercell=8, ensemble="npt")  # doctest: +SKIP
>>> result = mc.run([Stage(300.0, steps=200, equilibration=100)])           # steps are sweeps here  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ..structure import Configuration, strain_to_matrix
from .common import (
    DEFAULT_MAX_DISPLACEMENT,
    SimulationResult,
    check_frame,
    check_same_run,
    read_checkpoint,
    resolve_model,
    start_configuration,
    torch_threads,
    write_checkpoint,
)
from .errors import BlowUpError, SimulationError
from .local import energy_engine
from .md import _check_schedule, _describe, _progress, _restore_sampler, _sampler_state, _TrajectoryWriter
from .sampler import StageSampler

logger = logging.getLogger(__name__)

SUBLATTICES = ("A", "B", "X")


class MonteCarlo:
    """Metropolis Monte Carlo of a supercell of the model's reference perovskite.

    Parameters
    ----------
    model, supercell, start, tilt_angles, seed : as for :class:`~perovskite_pes.simulation.MDSimulation`
    ensemble : ``nvt`` (fixed cell) or ``npt`` (strain moves, fully flexible cell)
    pressure_GPa : external pressure (NPT)
    displacement : initial half-width (A) of the displacement moves (adapted per sublattice)
    strain_step : half-width of the strain moves (per component)
    strain_moves : strain moves per sweep (NPT)
    acceptance : target acceptance of the displacement moves during equilibration
    sample_every : measure every k production sweeps
    engine : ``auto`` (O(1) local energy changes for cluster and site models), ``local`` or ``global``
    """

    method = "mc"

    def __init__(
        self,
        model,
        supercell=4,
        start="a0a0a0",
        ensemble: str = "npt",
        pressure_GPa: float = 0.0,
        displacement: float = 0.1,
        strain_step: float = 0.002,
        strain_moves: int = 1,
        acceptance: float = 0.4,
        sample_every: int = 1,
        trajectory_every: int = 0,
        checkpoint_every: int = 50,
        max_displacement: float = DEFAULT_MAX_DISPLACEMENT,
        min_energy_per_fu: float = -0.5,
        engine: str = "auto",
        tilt_angles=None,
        seed: int = 0,
    ):
        self.model = model
        self.supercell = supercell
        self.start = start
        self.ensemble = ensemble
        self.pressure_GPa = pressure_GPa
        self.displacement = displacement
        self.strain_step = strain_step
        self.strain_moves = strain_moves
        self.acceptance = acceptance
        self.sample_every = sample_every
        self.trajectory_every = trajectory_every
        self.checkpoint_every = checkpoint_every
        self.max_displacement = max_displacement
        self.min_energy_per_fu = min_energy_per_fu
        self.engine = engine
        self.tilt_angles = tilt_angles
        self.seed = seed

    def settings(self) -> dict:
        return {
            "ensemble": self.ensemble,
            "pressure_GPa": float(self.pressure_GPa),
            "displacement": float(self.displacement),
            "strain_step": float(self.strain_step),
            "strain_moves": int(self.strain_moves),
            "acceptance": float(self.acceptance),
            "sample_every": int(self.sample_every),
            "engine": self.engine,
            "seed": int(self.seed),
        }

    def _check(self):
        if self.ensemble not in ("nvt", "npt"):
            raise SimulationError(f"Monte Carlo ensemble must be nvt or npt; got {self.ensemble!r}")
        if not 0 < float(self.displacement) <= 0.5:
            raise SimulationError(f"displacement must be in (0, 0.5] A; got {self.displacement}")
        if not 0 < float(self.strain_step) <= 0.05:
            raise SimulationError(f"strain_step must be in (0, 0.05]; got {self.strain_step}")
        if not 0 < float(self.acceptance) < 1:
            raise SimulationError(f"acceptance must be between 0 and 1; got {self.acceptance}")
        for name in ("sample_every", "checkpoint_every", "strain_moves"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < (0 if name == "strain_moves" else 1):
                raise SimulationError(
                    f"{name} must be a {'non-negative' if name == 'strain_moves' else 'positive'} integer; got {v!r}"
                )
        if self.engine not in ("auto", "local", "global"):
            raise SimulationError(f"engine must be auto, local or global; got {self.engine!r}")

    # ------------------------------------------------------------------ run
    def run(self, schedule, trajectory=None, checkpoint=None, progress: bool = False) -> SimulationResult:
        """Run the stages (``steps`` and ``equilibration`` count sweeps); see :meth:`MDSimulation.run`."""
        self._check()
        schedule = _check_schedule(schedule)
        model = resolve_model(self.model)
        config = start_configuration(model.reference_.perovskite, self.supercell, self.start, self.tilt_angles)
        with torch_threads(1):
            return _MCRun(self, model, config, schedule).run(trajectory, checkpoint, progress)


class _MCRun:
    """The state of one Monte Carlo run (kept apart from the estimator's settings)."""

    def __init__(self, mc: MonteCarlo, model, config: Configuration, schedule):
        self.mc = mc
        self.model = model
        self.schedule = schedule
        self.ref = config.reference
        self.r0 = self.ref.positions
        self.u = config.displacements.copy()
        self.strain = config.strain.copy()
        self.rng = np.random.default_rng(int(mc.seed))
        self.sub_index = {s: np.flatnonzero(self.ref.sublattice == s) for s in SUBLATTICES}
        self.sub_of = np.array([SUBLATTICES.index(s) for s in self.ref.sublattice])
        self.step = np.full(3, float(mc.displacement))
        self.stats = np.zeros((3, 2))  # accepted, tried per sublattice (since the last adaptation)
        self.strain_stats = np.zeros(2)
        self.e_ref = self.ref.n_cells * float(model.e0_)

    # geometry
    def _f(self, strain=None) -> np.ndarray:
        return np.eye(3) + strain_to_matrix(self.strain if strain is None else strain)

    def positions(self) -> np.ndarray:
        return (self.r0 + self.u) @ self._f()

    def lattice(self) -> np.ndarray:
        return self.ref.lattice @ self._f()

    # moves
    def sweep(self, kt: float):
        f = self._f()
        for c in self.rng.permutation(len(self.colors)):
            sites = self.colors[c]
            subs = self.sub_of[sites]
            d = self.rng.uniform(-1.0, 1.0, (len(sites), 3)) * self.step[subs][:, None]
            new_u = self.u[sites] + d
            de = self.engine.delta(sites, (self.r0[sites] + new_u) @ f)
            acc = np.log(self.rng.random(len(sites))) < -de / kt
            self.engine.commit(acc)
            self.u[sites[acc]] = new_u[acc]
            self.energy += float(de[acc].sum())
            np.add.at(self.stats[:, 0], subs[acc], 1)
            np.add.at(self.stats[:, 1], subs, 1)
        if self.mc.ensemble == "npt":
            for _ in range(int(self.mc.strain_moves)):
                self.strain_move(kt)

    def strain_move(self, kt: float):
        from ase import units

        new = self.strain + self.rng.uniform(-1.0, 1.0, 6) * float(self.mc.strain_step)
        f_new = self._f(new)
        v_old, v_new = np.linalg.det(self._f()), np.linalg.det(f_new)
        pos = (self.r0 + self.u) @ f_new
        lat = self.ref.lattice @ f_new
        e_new = float(self.model.compute(pos, lat, self.ref, forces=False, stress=False)["energy"])
        dv = (v_new - v_old) * abs(np.linalg.det(self.ref.lattice))
        arg = -(e_new - self.energy + float(self.mc.pressure_GPa) * units.GPa * dv) / kt + self.ref.n_atoms * np.log(
            v_new / v_old
        )
        self.strain_stats[1] += 1
        if np.log(self.rng.random()) < arg:
            self.strain = new
            self.energy = self.engine.reset(pos, lat)
            self.strain_stats[0] += 1

    def adapt(self):
        """Move the step sizes towards the target acceptance (equilibration only)."""
        target = float(self.mc.acceptance)
        self.last_acceptance = self._acceptance()  # what the progress bar shows after the reset below
        for s in range(3):
            acc, tried = self.stats[s]
            if tried >= 20:
                rate = acc / tried
                self.step[s] = float(np.clip(self.step[s] * np.exp(rate - target), 0.005, 0.5))
        self.stats[:] = 0

    # run
    def run(self, trajectory, checkpoint, progress):
        mc, ref, schedule = self.mc, self.ref, self.schedule
        settings = mc.settings()
        self.engine = energy_engine(self.model, ref, mc.engine)
        self.colors = self.engine.colors()
        result = SimulationResult(
            mc.method,
            {
                **settings,
                "schedule": [s.to_dict() for s in schedule],
                "engine": "local" if self.engine.local else "global",
                "colour_classes": len(self.colors),
            },
            ref,
            model=_describe(mc.model),
        )
        sampler = StageSampler.for_reference(ref)
        stage_i, k0 = 0, 0
        ckpt = Path(checkpoint) if checkpoint else None
        resumed = ckpt is not None and ckpt.exists()
        if resumed:
            state = read_checkpoint(ckpt, mc.method)
            check_same_run(
                state, settings=settings, schedule=[s.to_dict() for s in schedule], supercell=ref.matrix.tolist()
            )
            self.u = np.array(state["u"])
            self.strain = np.array(state["strain"])
            self.step = np.array(state["step_sizes"])
            self.rng.bit_generator.state = state["rng"]
            stage_i, k0 = int(state["stage"]), int(state["step_in_stage"])
            result.stages, result.series, result.steps = (
                list(state["completed"]),
                list(state.get("series", [])),
                int(state["steps"]),
            )
            result.max_displacement_A = float(state.get("max_displacement_A", 0.0))
            _restore_sampler(sampler, state.get("sampler"))
        self.energy = self.engine.reset(self.positions(), self.lattice())
        writer = _TrajectoryWriter(trajectory, append=resumed) if trajectory else None
        result.trajectory = str(trajectory) if trajectory else None
        traj_every = int(mc.trajectory_every) or int(mc.sample_every)
        total = sum(s.total for s in schedule)
        bar = _progress(total, sum(s.total for s in schedule[:stage_i]) + k0, progress, "MC")
        t0 = time.perf_counter()
        moves = 0

        def save(next_sweep):
            write_checkpoint(
                ckpt,
                {
                    "method": mc.method,
                    "settings": settings,
                    "schedule": [s.to_dict() for s in schedule],
                    "supercell": ref.matrix.tolist(),
                    "stage": stage_i,
                    "step_in_stage": next_sweep,
                    "steps": result.steps,
                    "max_displacement_A": result.max_displacement_A,
                    "u": self.u,
                    "strain": self.strain,
                    "step_sizes": self.step,
                    "rng": self.rng.bit_generator.state,
                    "completed": result.stages,
                    "series": result.series,
                    "sampler": _sampler_state(sampler),
                },
            )

        try:
            while stage_i < len(schedule):
                stage = schedule[stage_i]
                for k in range(k0, stage.total):
                    from ase import units

                    target = stage.target(k)
                    self.sweep(units.kB * target)
                    moves += ref.n_atoms
                    result.steps += 1
                    bar.update(1)
                    if k < stage.equilibration:
                        self.adapt()
                    sweep_no = k + 1
                    if k >= stage.equilibration and (sweep_no - stage.equilibration) % int(mc.sample_every) == 0:
                        pos, lat = self.positions(), self.lattice()
                        # re-synchronise the running energy with a full evaluation (no drift from summed changes)
                        self.energy = self.engine.reset(pos, lat)
                        e_rel = self.energy - self.e_ref
                        dmax = check_frame(
                            ref, pos, lat, e_rel, result.steps, target, float(mc.max_displacement), mc.min_energy_per_fu
                        )
                        result.max_displacement_A = max(result.max_displacement_A, dmax)
                        sampler.add(pos, lat, e_rel, target)
                    if writer is not None and sweep_no % traj_every == 0:
                        writer.write(self._atoms())
                    if ckpt is not None and result.steps % int(mc.checkpoint_every) == 0:
                        save(k + 1)
                    if sweep_no % 5 == 0:
                        bar.set_postfix(T=f"{target:.0f}K", acc=f"{self._acceptance():.2f}")
                summary = sampler.summary()
                summary["stage"] = stage.to_dict()
                summary["step_sizes_A"] = dict(zip(SUBLATTICES, self.step.tolist()))
                summary["strain_acceptance"] = float(self.strain_stats[0] / max(1, self.strain_stats[1]))
                result.stages.append(summary)
                result.series.append(sampler.series())
                sampler = StageSampler.for_reference(ref, sampler.octahedra)
                self.strain_stats[:] = 0
                stage_i, k0 = stage_i + 1, 0
                if ckpt is not None:
                    save(0)
        except BlowUpError as exc:
            result.wall_time_s = time.perf_counter() - t0
            exc.result = result
            raise
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        result.wall_time_s = time.perf_counter() - t0
        result.settings["moves_per_second"] = moves / result.wall_time_s if result.wall_time_s > 0 else 0.0
        result.completed = True
        return result

    def _acceptance(self) -> float:
        tried = self.stats[:, 1].sum()
        return float(self.stats[:, 0].sum() / tried) if tried else getattr(self, "last_acceptance", float("nan"))

    def _atoms(self):
        from ase.calculators.singlepoint import SinglePointCalculator

        atoms = Configuration(self.ref, self.u, self.strain).to_ase()
        atoms.calc = SinglePointCalculator(atoms, energy=self.energy)
        return atoms
