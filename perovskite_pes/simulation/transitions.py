"""Heating and cooling scans: locate the tilt phase transitions, with an uncertainty.

A scan runs MD or Monte Carlo along a temperature ladder, heating from the low-temperature phase and
cooling from the cubic cell, for several seeds. Each temperature gives the phase of the
time-averaged structure (Glazer system), the tilt amplitudes and their susceptibilities. In each run
a transition is where the phase changes and stays changed (single-temperature blips are smoothed
out); its temperature is the midpoint of the two temperatures around it. The estimates of all runs
(seeds x heating and cooling) are combined per pair of phases: the mean, and an uncertainty that is
the larger of their standard deviation, half their range and half the temperature step. The
difference between the heating and the cooling means is the hysteresis. Two signs that a run reads
fluctuations rather than a phase sequence are named in its record, by the command line and by the
campaign report: it leaves a phase and comes back to it (``reentered``), or a phase change goes against
the direction of the run, gaining tilted axes on heating or losing them on cooling (``against_direction``;
such changes are left out of the combined transitions).

Example
-------
>>> scan = TransitionScan("model-dir", supercell=4, t_min=100, t_max=500, t_step=50, steps=400,
...                       equilibration=200, seeds=(0, 1))                          # doctest: +SKIP
>>> result = scan.run(progress=True)  # doctest: +SKIP
>>> result.transitions  # doctest: +SKIP
[{'from': 'a+b-b-', 'to': 'a0a0c+', 'temperature_K': ..., 'uncertainty_K': ..., ...}, ...]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..structure import glazer_system
from ..utils import jsonable
from .errors import BlowUpError, SimulationError
from .mc import MonteCarlo
from .md import MDSimulation
from .sampler import temperature_ladder

logger = logging.getLogger(__name__)

DIRECTIONS = ("heat", "cool")


def smooth_phases(labels: list[str]) -> list[str]:
    """Replace a label that differs from both neighbours when those agree (a one-temperature blip)."""
    out = list(labels)
    for k in range(1, len(out) - 1):
        if out[k - 1] == out[k + 1] and out[k] != out[k - 1]:
            out[k] = out[k - 1]
    return out


def run_transitions(temperatures, labels) -> list[dict]:
    """Phase changes along one run: ``[{from, to, temperature_K, between}]`` in the run's order."""
    temps = [float(t) for t in temperatures]
    smooth = smooth_phases(list(labels))
    out = []
    for k in range(1, len(smooth)):
        if smooth[k] != smooth[k - 1]:
            out.append(
                {
                    "from": smooth[k - 1],
                    "to": smooth[k],
                    "temperature_K": 0.5 * (temps[k - 1] + temps[k]),
                    "between": [temps[k - 1], temps[k]],
                }
            )
    return out


def reentered_phases(labels: list[str]) -> list[str]:
    """Phases a run leaves and comes back to later (one-temperature blips smoothed first), in the order
    they come back. A ladder that re-enters a phase is reading fluctuations (a cell too small or too few
    steps per temperature), so its phase changes are not a sequence of transitions.
    """
    smooth = smooth_phases(list(labels))
    segments = [p for k, p in enumerate(smooth) if k == 0 or p != smooth[k - 1]]
    out = []
    for k, phase in enumerate(segments):
        if phase in segments[:k] and phase not in out:
            out.append(phase)
    return out


def goes_against(transition: dict, direction: str) -> bool:
    """Whether a run's phase change gains tilted axes on heating or loses them on cooling.

    Heating disorders the tilts (a+b-b- -> a0a0c+ -> a0a0a0 in CsPbBr3), so a heating run that gains a
    tilted axis, or a cooling run that loses one, is following a fluctuation of the averaged structure
    (domains in a small cell, too few steps per temperature), not the material's phase sequence. Changes
    between phases with the same number of tilted axes (a0a0c+ <-> a0a0c-) are not judged.

    >>> change = {"from": "a0a0a0", "to": "a0a0c+"}
    >>> goes_against(change, "heat"), goes_against(change, "cool")
    (True, False)
    """
    if direction not in DIRECTIONS:
        raise SimulationError(f"direction must be one of {DIRECTIONS}; got {direction!r}")
    gained = glazer_system(transition["to"]).n_tilts - glazer_system(transition["from"]).n_tilts
    return gained > 0 if direction == "heat" else gained < 0


def fluctuation_warning(run: dict) -> str | None:
    """One line for a run whose phase changes read fluctuations (re-entered phases, changes against the
    run's direction), saying what it means and what to change; None for a clean run."""
    signs = []
    if run.get("reentered"):
        signs.append(f"re-entered {', '.join(run['reentered'])}")
    if run.get("against_direction"):
        verb = "gained" if run["direction"] == "heat" else "lost"
        signs.append(f"{verb} tilted axes on {run['direction']}ing ({', '.join(run['against_direction'])})")
    if not signs:
        return None
    return (
        f"{'; '.join(signs)}: its phase changes are fluctuations, not a sequence of transitions "
        "(a larger supercell or more steps per temperature reads them)"
    )


def combine_transitions(runs: list[dict], t_step: float) -> list[dict]:
    """Per pair of phases (low-temperature phase -> high-temperature phase), the combined estimate.

    Phase changes against a run's direction (see :func:`goes_against`) are left out: they would name
    the more tilted phase as the high-temperature one.
    """
    groups: dict[tuple, dict] = {}
    for run in runs:
        for tr in run["transitions"]:
            if goes_against(tr, run["direction"]):
                continue
            low, high = (tr["from"], tr["to"]) if run["direction"] == "heat" else (tr["to"], tr["from"])
            g = groups.setdefault((low, high), {"heat": [], "cool": []})
            g[run["direction"]].append(tr["temperature_K"])
    out = []
    for (low, high), g in groups.items():
        values = np.array(g["heat"] + g["cool"], dtype=float)
        spread = max(float(values.std()), 0.5 * float(values.max() - values.min())) if len(values) > 1 else 0.0
        item = {
            "from": low,
            "to": high,
            "temperature_K": float(values.mean()),
            "uncertainty_K": max(spread, 0.5 * float(t_step)),
            "estimates": len(values),
            "heating_K": float(np.mean(g["heat"])) if g["heat"] else None,
            "cooling_K": float(np.mean(g["cool"])) if g["cool"] else None,
        }
        item["hysteresis_K"] = item["heating_K"] - item["cooling_K"] if g["heat"] and g["cool"] else None
        out.append(item)
    return sorted(out, key=lambda t: t["temperature_K"])


@dataclass
class ScanResult:
    """All runs of a scan (per temperature: phase, amplitudes, susceptibilities, lattice) and the transitions."""

    runs: list = field(default_factory=list)
    transitions: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    plots: dict = field(default_factory=dict)
    wall_time_s: float = 0.0
    steps: int = 0
    atoms: int = 0

    def to_dict(self) -> dict:
        return jsonable(
            {
                "transitions": self.transitions,
                "runs": self.runs,
                "settings": self.settings,
                "plots": self.plots,
                "wall_time_s": self.wall_time_s,
                "steps": self.steps,
                "atoms": self.atoms,
                "steps_per_second": self.steps / self.wall_time_s if self.wall_time_s else 0.0,
            }
        )


class TransitionScan:
    """Heat from ``heat_start`` and cool from ``cool_start`` along a temperature ladder, for every seed.

    Parameters
    ----------
    model : fitted EnergyModel or saved-model path
    method : ``md`` or ``mc``
    t_min, t_max, t_step : the ladder (K)
    steps, equilibration : per temperature (MD steps or MC sweeps); the state carries over from one
        temperature to the next, so the ladder is a stepwise heating (or cooling) at a known rate
    seeds : one heating and one cooling run per seed
    directions : ``("heat", "cool")`` or one of them
    heat_start, cool_start : Glazer symbols (or structures) the heating and cooling runs start from
    options : further keyword arguments of :class:`MDSimulation` or :class:`MonteCarlo`
    """

    def __init__(
        self,
        model,
        supercell=4,
        method: str = "md",
        t_min: float = 100.0,
        t_max: float = 500.0,
        t_step: float = 25.0,
        steps: int = 1000,
        equilibration: int = 500,
        seeds=(0, 1),
        directions=DIRECTIONS,
        heat_start="a+b-b-",
        cool_start="a0a0a0",
        **options,
    ):
        self.model = model
        self.supercell = supercell
        self.method = method
        self.t_min = t_min
        self.t_max = t_max
        self.t_step = t_step
        self.steps = steps
        self.equilibration = equilibration
        self.seeds = seeds
        self.directions = directions
        self.heat_start = heat_start
        self.cool_start = cool_start
        self.options = options

    def _check(self):
        if self.method not in ("md", "mc"):
            raise SimulationError(f"method must be md or mc; got {self.method!r}")
        if not 0 < float(self.t_min) < float(self.t_max):
            raise SimulationError(f"need 0 < t_min < t_max (K); got {self.t_min} and {self.t_max}")
        bad = [d for d in self.directions if d not in DIRECTIONS]
        if bad or not self.directions:
            raise SimulationError(f"directions must be heat and/or cool; got {list(self.directions)}")
        if not list(self.seeds):
            raise SimulationError("at least one seed is needed")

    def _simulation(self, start, seed):
        cls = MDSimulation if self.method == "md" else MonteCarlo
        return cls(self.model, supercell=self.supercell, start=start, seed=int(seed), **self.options)

    def run(self, workdir=None, progress: bool = False) -> ScanResult:
        """Run every (seed, direction); with ``workdir`` each run checkpoints there and a rerun resumes."""
        import time

        self._check()
        result = ScanResult(
            settings={
                "method": self.method,
                "supercell": self.supercell,
                "t_min": self.t_min,
                "t_max": self.t_max,
                "t_step": self.t_step,
                "steps": self.steps,
                "equilibration": self.equilibration,
                "seeds": [int(s) for s in self.seeds],
                "directions": list(self.directions),
                "heat_start": str(self.heat_start),
                "cool_start": str(self.cool_start),
                **jsonable(self.options),
            }
        )
        t0 = time.perf_counter()
        for seed in self.seeds:
            for direction in self.directions:
                lo, hi = float(self.t_min), float(self.t_max)
                ladder = (
                    temperature_ladder(lo, hi, self.t_step, self.steps, self.equilibration)
                    if direction == "heat"
                    else temperature_ladder(hi, lo, self.t_step, self.steps, self.equilibration)
                )
                sim = self._simulation(self.heat_start if direction == "heat" else self.cool_start, seed)
                ckpt = Path(workdir) / f"{direction}-seed{seed}.checkpoint.json" if workdir else None
                logger.info("%s run, seed %s: %d temperatures", direction, seed, len(ladder))
                blown = None
                try:
                    res = sim.run(ladder, checkpoint=ckpt, progress=progress)
                except BlowUpError as exc:
                    res, blown = exc.result, str(exc)
                    logger.warning("%s run, seed %s stopped early: %s", direction, seed, exc)
                    if res is None or not res.stages:
                        result.runs.append(
                            {
                                "seed": int(seed),
                                "direction": direction,
                                "temperature_K": [],
                                "phase": [],
                                "transitions": [],
                                "reentered": [],
                                "against_direction": [],
                                "stopped": blown,
                            }
                        )
                        continue
                temps = [s["temperature_K"] for s in res.stages]
                labels = [s["phase"]["glazer"] for s in res.stages]
                transitions = run_transitions(temps, labels)
                run = {
                    "seed": int(seed),
                    "direction": direction,
                    "temperature_K": temps,
                    "phase": labels,
                    "space_group": [s["phase"]["space_group"] for s in res.stages],
                    "R": [s["R"] for s in res.stages],
                    "M": [s["M"] for s in res.stages],
                    "R_total": [s["R_total"] for s in res.stages],
                    "M_total": [s["M_total"] for s in res.stages],
                    "chi_R": [s["chi_R"] for s in res.stages],
                    "chi_M": [s["chi_M"] for s in res.stages],
                    "lattice_parameters": [s["lattice_parameters"] for s in res.stages],
                    "lattice_sorted": [s["lattice_sorted"] for s in res.stages],
                    "energy_per_fu_eV": [s["energy_per_fu_eV"] for s in res.stages],
                    "transitions": transitions,
                    "reentered": reentered_phases(labels),
                    "against_direction": [
                        f"{tr['from']} -> {tr['to']}" for tr in transitions if goes_against(tr, direction)
                    ],
                    "susceptibility_peak_K": {
                        k: float(temps[int(np.argmax([s[f"chi_{k}"] for s in res.stages]))]) for k in ("R", "M")
                    },
                    "steps_per_second": res.steps_per_second,
                    "stopped": blown,
                }
                result.runs.append(run)
                result.steps += res.steps
                result.atoms = res.atoms
        result.wall_time_s = time.perf_counter() - t0
        if not any(run["temperature_K"] for run in result.runs):
            raise SimulationError(
                f"every run stopped before its first temperature was sampled: {result.runs[0]['stopped']}"
            )
        result.transitions = combine_transitions(result.runs, float(self.t_step))
        return result
