"""Accumulating what a simulation measures at one temperature: order parameters, lattice, energy, phase.

MD and Monte Carlo both feed frames (positions in the reference site order, lattice, potential
energy) to a :class:`StageSampler`; it keeps the per-frame tilt projections, lattice parameters
and energies (small) and running sums of the reference-frame displacements and strains (for the
time-averaged structure), never the frames themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..structure import ReferenceSupercell
from .errors import SimulationError
from .order import (
    DEFAULT_TILT_THRESHOLD,
    OctahedronMap,
    OrderParameters,
    check_tilt_commensurate,
    lattice_parameters,
    phase_of,
    rotations_from_displacements,
    thermal_averages,
    tilt_projections,
    undeform,
)


@dataclass
class Stage:
    """One temperature stage of a schedule: equilibrate, then sample (steps for MD, sweeps for MC).

    ``temperature_end_K`` makes the stage a ramp: the target temperature moves linearly from
    ``temperature_K`` to it over the production steps (equilibration stays at ``temperature_K``).
    """

    temperature_K: float
    steps: int
    equilibration: int = 0
    temperature_end_K: float | None = None

    def __post_init__(self):
        for name in ("temperature_K", "temperature_end_K"):
            t = getattr(self, name)
            if t is None:
                continue
            if not np.isfinite(t) or t <= 0:
                raise SimulationError(f"{name} must be a positive temperature in K; got {t}")
            if t > 5000:
                raise SimulationError(f"{name} = {t} K is far beyond where a perovskite exists; expected <= 5000 K")
        for name in ("steps", "equilibration"):
            n = getattr(self, name)
            if isinstance(n, bool) or int(n) != n or n < 0:
                raise SimulationError(f"{name} must be a non-negative integer; got {n!r}")
        if self.steps < 1:
            raise SimulationError("a stage needs at least one production step to sample")

    @property
    def total(self) -> int:
        return int(self.equilibration) + int(self.steps)

    def target(self, k: int) -> float:
        """Target temperature at step ``k`` of the stage (0-based, equilibration first)."""
        if self.temperature_end_K is None or k < self.equilibration:
            return float(self.temperature_K)
        f = (k - self.equilibration) / max(1, self.steps - 1)
        return float(self.temperature_K + f * (self.temperature_end_K - self.temperature_K))

    @property
    def mean_temperature(self) -> float:
        return float(
            self.temperature_K
            if self.temperature_end_K is None
            else 0.5 * (self.temperature_K + self.temperature_end_K)
        )

    def to_dict(self) -> dict:
        return {
            "temperature_K": self.temperature_K,
            "steps": int(self.steps),
            "equilibration": int(self.equilibration),
            "temperature_end_K": self.temperature_end_K,
        }


def temperature_ladder(t_start: float, t_stop: float, t_step: float, steps: int, equilibration: int) -> list[Stage]:
    """Stepwise schedule from ``t_start`` to ``t_stop`` (either direction) every ``t_step`` K."""
    if t_step <= 0:
        raise SimulationError(f"the temperature step must be positive (K); got {t_step}")
    n = int(round(abs(t_stop - t_start) / t_step))
    if n > 1000:
        raise SimulationError(f"{n + 1} temperatures from {t_start} to {t_stop} K: use a larger step (at most 1001)")
    sign = 1.0 if t_stop >= t_start else -1.0
    temps = [t_start + sign * k * t_step for k in range(n + 1)]
    return [Stage(float(t), int(steps), int(equilibration)) for t in temps]


@dataclass
class StageSampler:
    """Collects frames of one stage; :meth:`summary` gives thermal averages, susceptibilities and the phase."""

    reference: ReferenceSupercell
    octahedra: OctahedronMap
    R: list = field(default_factory=list)
    M: list = field(default_factory=list)
    lattice: list = field(default_factory=list)
    energy: list = field(default_factory=list)
    temperature: list = field(default_factory=list)
    sum_u: np.ndarray | None = None
    sum_strain: np.ndarray | None = None

    @classmethod
    def for_reference(cls, reference: ReferenceSupercell, octahedra: OctahedronMap | None = None) -> StageSampler:
        """A sampler for frames of ``reference``; an odd supercell gets no tilt order parameters (NaN)."""
        try:
            check_tilt_commensurate(reference)
        except SimulationError:
            return cls(reference, None)
        return cls(reference, octahedra if octahedra is not None else OctahedronMap.build(reference))

    @property
    def n_frames(self) -> int:
        return len(self.R)

    def add(self, positions, lattice, energy: float, temperature_K: float) -> None:
        """One frame: positions ``(N, 3)`` in the reference site order (may be wrapped), lattice rows ``(3, 3)``."""
        u, strain = undeform(self.reference, positions, lattice)
        u = u - u.mean(axis=1, keepdims=True)
        if self.octahedra is None:
            r = m = np.full((1, 3), np.nan)
        else:
            rot = rotations_from_displacements(self.reference, u, self.octahedra)
            r, m = tilt_projections(self.reference, rot, self.octahedra)
        self.R.append(r[0])
        self.M.append(m[0])
        self.lattice.append(lattice_parameters(self.reference, lattice)[0])
        self.energy.append(float(energy))
        self.temperature.append(float(temperature_K))
        self.sum_u = u[0] if self.sum_u is None else self.sum_u + u[0]
        self.sum_strain = strain[0] if self.sum_strain is None else self.sum_strain + strain[0]

    def order(self) -> OrderParameters:
        if not self.R:
            raise SimulationError("no frames were sampled in this stage")
        n = self.n_frames
        mean_u = (self.sum_u / n)[None]
        mean_e = (self.sum_strain / n)[None]
        return OrderParameters(
            np.array(self.R), np.array(self.M), np.zeros((n, 0, 3)), np.array(self.lattice), mean_u, mean_e
        )

    def summary(self, threshold: float = DEFAULT_TILT_THRESHOLD) -> dict:
        """Thermal averages (``R``, ``M`` per axis in degrees, totals, susceptibilities, lattice) and phase."""
        op = self.order()
        t_mean = float(np.mean(self.temperature))
        out = thermal_averages(op, t_mean, self.reference.n_cells)
        e = np.array(self.energy)
        out.update(
            {
                "temperature_K": t_mean,
                "frames": self.n_frames,
                "energy_per_fu_eV": float(e.mean() / self.reference.n_cells),
                "energy_per_fu_std_eV": float(e.std() / self.reference.n_cells),
                "heat_capacity_kB_per_fu": _heat_capacity(e, t_mean, self.reference.n_cells),
            }
        )
        if self.octahedra is None:  # an odd supercell holds no M- or R-point tilt pattern
            out["phase"] = {"glazer": None, "glazer_space_group": None, "space_group": None, "space_group_number": None}
        else:
            out["phase"] = phase_of(self.reference, op, threshold)
        return out

    def series(self) -> dict:
        """Per-frame values (for plots and restarts): R, M (F, 3), lattice (F, 6), energy, temperature."""
        return {
            "R": np.array(self.R).tolist(),
            "M": np.array(self.M).tolist(),
            "lattice": np.array(self.lattice).tolist(),
            "energy": list(self.energy),
            "temperature": list(self.temperature),
        }


def _heat_capacity(energies: np.ndarray, temperature_K: float, n_cells: int) -> float:
    """Potential-energy part of the heat capacity, in k_B per formula unit: var(E) / (k_B T)^2 / n_cells."""
    from ase.units import kB

    if len(energies) < 2:
        return float("nan")
    return float(np.var(energies) / (kB * temperature_K) ** 2 / n_cells)
