"""The 0 K side of a PES: relaxed phases, harmonic frequencies and the energies of tilt stackings.

Thermal averages (MD, Monte Carlo) integrate over the whole surface; when a model's averages differ from
its surrogate's, these say where: a different ground state (tilt angles, cell, energy of each tilt
system), different curvature around it (harmonic frequencies, hence vibrational entropy), or a different
coupling of tilts in successive layers (which a 2x2x2 training cell cannot resolve).

Every function takes a *driver*: a fitted model, the path of a saved one, or any ASE calculator (e.g.
the surrogate that labelled the training data) together with ``perovskite=`` (the reference).

>>> from perovskite_pes.simulation.static import relax_phase
>>> phase = relax_phase("path/to/model", "a+b-b-", supercell=2)         # doctest: +SKIP
>>> phase.glazer, phase.energy_per_fu_eV, phase.R, phase.M, phase.lattice  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from dataclasses import dataclass

import numpy as np

from ..structure import Configuration, Perovskite
from .common import driver_calculator, start_configuration
from .errors import SimulationError
from .order import order_parameters, phase_of

logger = logging.getLogger(__name__)

#: Planck's constant in eV/THz: a mode of energy h nu (eV) has frequency nu = E / this (THz)
_H_EV_PER_THZ = 4.135667696e-3


@dataclass
class RelaxedPhase:
    """A relaxed structure: its energy, tilt amplitudes, pseudo-cubic cell and phase.

    ``energy_per_fu_eV`` is the driver's total energy per formula unit (compare phases of one driver by
    differences); ``R``, ``M`` are the signed tilt projections (degrees), ``lattice`` the pseudo-cubic
    a, b, c (A) and alpha, beta, gamma (degrees); ``glazer`` and ``space_group`` describe the result.
    """

    start: str
    configuration: Configuration
    energy_per_fu_eV: float
    R: np.ndarray
    M: np.ndarray
    lattice: np.ndarray
    glazer: str
    space_group: str | None
    steps: int
    max_force: float
    converged: bool

    def to_dict(self) -> dict:
        """JSON-ready; with the relaxed configuration's displacements and strain (see :meth:`from_dict`)."""
        return {
            "start": self.start,
            "energy_per_fu_eV": float(self.energy_per_fu_eV),
            "R": np.asarray(self.R).tolist(),
            "M": np.asarray(self.M).tolist(),
            "lattice": np.asarray(self.lattice).tolist(),
            "glazer": self.glazer,
            "space_group": self.space_group,
            "steps": int(self.steps),
            "max_force": float(self.max_force),
            "converged": bool(self.converged),
            "displacements": np.asarray(self.configuration.displacements).tolist(),
            "strain": np.asarray(self.configuration.strain).tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict, reference) -> RelaxedPhase:
        """The phase :meth:`to_dict` wrote, on its reference supercell (e.g. a surrogate's, kept on disk)."""
        config = Configuration(
            reference, np.array(d["displacements"]), np.array(d["strain"]), {"relaxed_from": d["start"]}
        )
        keys = ("start", "energy_per_fu_eV", "glazer", "space_group", "steps", "max_force", "converged")
        return cls(
            configuration=config,
            R=np.array(d["R"]),
            M=np.array(d["M"]),
            lattice=np.array(d["lattice"]),
            **{k: d[k] for k in keys},
        )


def relax_phase(
    driver,
    start="a0a0a0",
    supercell=2,
    perovskite: Perovskite | None = None,
    angles=None,
    fmax: float = 0.005,
    steps: int = 500,
    cell: bool = True,
    symmetry: bool = True,
) -> RelaxedPhase:
    """Relax positions (and with ``cell`` the cell, fully) from ``start`` with BFGS.

    ``start`` is a Glazer symbol (default angles or ``angles``), a Configuration or ASE Atoms, as for MD.
    With ``symmetry`` the space group of the start is kept (ASE's FixSymmetry), so that every tilt system
    relaxes within its own symmetry instead of sliding into the lowest one.
    """
    from ase.constraints import FixSymmetry
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    if not float(fmax) > 0:
        raise SimulationError(f"fmax must be a positive force (eV/A); got {fmax!r}")
    if int(steps) < 1:
        raise SimulationError(f"steps must be a positive integer; got {steps!r}")
    pv, calculator_for = driver_calculator(driver, perovskite)
    config = start_configuration(pv, supercell, start, angles)
    ref = config.reference
    atoms = config.to_ase()
    atoms.calc = calculator_for(ref)
    if symmetry:
        atoms.set_constraint(FixSymmetry(atoms, symprec=1e-3))
    target = FrechetCellFilter(atoms) if cell else atoms
    opt = BFGS(target, logfile=None)
    with warnings.catch_warnings():  # the cell filter's matrix logarithm reports 1e-13 round-off
        warnings.filterwarnings("ignore", message="logm result may be inaccurate")
        converged = bool(opt.run(fmax=float(fmax), steps=int(steps)))
    forces = atoms.get_forces()
    energy = float(atoms.get_potential_energy()) / ref.n_cells
    atoms.set_constraint()
    pos, lat = atoms.get_positions(), atoms.cell.array
    order = order_parameters(ref, pos, lat)
    phase = phase_of(ref, order)
    relaxed = Configuration.from_arrays(ref, lat, pos, tags={"relaxed_from": _label(start)}, remove_translation=True)
    if not converged:
        logger.warning("relaxation from %s did not reach fmax %.4g eV/A in %d steps", _label(start), fmax, steps)
    return RelaxedPhase(
        start=_label(start),
        configuration=relaxed,
        energy_per_fu_eV=energy,
        R=order.R[0],
        M=order.M[0],
        lattice=order.lattice[0],
        glazer=phase["glazer"],
        space_group=phase["space_group"],
        steps=int(opt.nsteps),
        max_force=float(np.linalg.norm(forces, axis=1).max()),
        converged=converged,
    )


def harmonic_frequencies(
    driver, configuration: Configuration, perovskite: Perovskite | None = None, delta: float = 0.01
) -> np.ndarray:
    """Harmonic frequencies (THz, ascending; imaginary ones negative) at a structure, fixed cell.

    Central finite differences of the forces (ASE's Vibrations, ``delta`` in A; 6N force calls); the
    frequencies at a relaxed phase set its vibrational entropy, so a model stiffer than its surrogate
    there favours less distorted phases at temperature.
    """
    from ase.vibrations import Vibrations

    if not 0 < float(delta) < 0.1:
        raise SimulationError(f"delta must be a small displacement in A (0 to 0.1); got {delta!r}")
    _, calculator_for = driver_calculator(driver, perovskite)
    atoms = configuration.to_ase()
    atoms.calc = calculator_for(configuration.reference)
    with tempfile.TemporaryDirectory(prefix="pes-vib-") as tmp:
        vib = Vibrations(atoms, delta=float(delta), nfree=2, name=f"{tmp}/vib")
        vib.run()
        energies = vib.get_energies()  # eV, complex for imaginary modes
    # hbar omega (eV) -> frequency in THz: E / h
    thz = np.where(np.abs(energies.imag) > np.abs(energies.real), -np.abs(energies.imag), energies.real)
    return np.sort(thz / _H_EV_PER_THZ)


def _energies_from_cubic(driver, perovskite, cells, build) -> list[float]:
    """Energies per formula unit (eV, from the cubic cell) of the configurations ``build(ref)`` of the
    cubic supercell ``cells`` (rigid: no relaxation, cubic lattice)."""
    pv, calculator_for = driver_calculator(driver, perovskite)
    ref = pv.supercell(cells)
    calc = calculator_for(ref)

    def energy(config):
        atoms = config.to_ase()
        atoms.calc = calc
        return float(atoms.get_potential_energy()) / ref.n_cells

    e0 = energy(Configuration(ref))
    return [energy(c) - e0 for c in build(ref)]


def stacking_energies(
    driver, angle_deg: float, stackings: dict, axis: int = 2, perovskite: Perovskite | None = None, cells=(2, 2, 4)
) -> dict:
    """Energy per formula unit (eV, from the cubic cell) of one-axis tilts with given layer stackings.

    ``stackings`` maps names to layer factors (:func:`~perovskite_pes.structure.stacked_tilt_configuration`),
    e.g. ``{"in-phase": [1], "anti-phase": [1, -1], "period 4": [1, 1, -1, -1]}``; all in one supercell
    ``cells`` (cubic lattice, no relaxation), so the differences are the couplings between layers alone.
    """
    from ..structure import stacked_tilt_configuration

    names = list(stackings)
    energies = _energies_from_cubic(
        driver,
        perovskite,
        tuple(int(c) for c in cells),
        lambda ref: [stacked_tilt_configuration(ref, axis, angle_deg, stackings[n]) for n in names],
    )
    return dict(zip(names, energies))


def tilt_landscape(driver, ms, rs, perovskite: Perovskite | None = None) -> np.ndarray:
    """Energies (meV/f.u. from the cubic cell) of rigid a+b-b- tilts, in-phase ``ms`` about x by anti-phase
    ``rs`` about y and z (degrees; an M equal to an R is nudged by 0.01 degrees, which would be a-b-b-'s
    letters), in the cubic 2x2x2 cell; ``[len(ms), len(rs)]``."""
    from ..structure import tilt_configuration

    def build(ref):
        return [tilt_configuration(ref, "a+b-b-", (m + 0.01 if abs(m - r) < 1e-9 else m, r, r)) for m in ms for r in rs]

    energies = _energies_from_cubic(driver, perovskite, 2, build)
    return 1000 * np.array(energies).reshape(len(ms), len(rs))


def _label(start) -> str:
    return start if isinstance(start, str) else type(start).__name__


__all__ = ["RelaxedPhase", "driver_calculator", "harmonic_frequencies", "relax_phase", "stacking_energies"]
