"""An ASE calculator on a saved energy model, for molecular dynamics and Monte Carlo.

    from perovskite_pes.models import PESCalculator
    atoms.calc = PESCalculator("~/.perovskite_pes/models/my-model/model")
    atoms.get_potential_energy(); atoms.get_forces(); atoms.get_stress()

The atoms must be a supercell of the model's reference perovskite (any size, e.g. 6x6x6). The
supercell is inferred from the cell or given as ``supercell=``; atoms may be in any order
(matched once to the reference sites and then kept), rotated, translated and wrapped.

With a :class:`~perovskite_pes.models.Committee`, ``results`` (and ``get_property``) also hold
``energy_std`` (eV), ``forces_std`` (eV/A per atom, in the atoms' order) and
``max_force_deviation`` (eV/A), the spread of the committee's members.
"""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from ..structure import ReferenceSupercell
from .base import EnergyModel, ModelError, load_model, unwrap_positions

#: extra results of a committee model (see :class:`~perovskite_pes.models.Committee`)
SPREAD_PROPERTIES = ("energy_std", "forces_std", "max_force_deviation")


def infer_supercell(reference: ReferenceSupercell, cell, n_atoms: int, supercell=None) -> ReferenceSupercell:
    """The supercell of ``reference.perovskite`` that a cell of ``n_atoms`` atoms represents."""
    pv = reference.perovskite
    if supercell is not None:
        ref = supercell if isinstance(supercell, ReferenceSupercell) else pv.supercell(supercell)
        if ref.n_atoms != n_atoms:
            raise ModelError(f"supercell {ref.matrix.tolist()} has {ref.n_atoms} atoms; the structure has {n_atoms}")
        return ref
    if n_atoms % 5:
        raise ModelError(f"{n_atoms} atoms is not a whole number of {pv.formula} formula units")
    cell = np.asarray(cell, dtype=float)
    a = pv.lattice_parameter
    candidates = [np.round(cell / a).astype(int)]
    # a rotated cell: use the metric (lengths and angles), which rotations leave alone
    lengths = np.linalg.norm(cell, axis=1)
    candidates.append(np.diag(np.round(lengths / a).astype(int)))
    for m in candidates:
        if abs(round(np.linalg.det(m))) * 5 != n_atoms or round(np.linalg.det(m)) <= 0:
            continue
        ref = pv.supercell(m)
        f = np.linalg.solve(ref.lattice, cell)  # cell = L0 F
        if np.abs(np.linalg.svd(f, compute_uv=False) - 1).max() < 0.2:
            return ref
    raise ModelError(
        f"cannot tell which supercell of {pv.formula} (a = {a} A) this {n_atoms}-atom cell is; pass supercell= "
        "(an integer n for n x n x n, three integers or a 3x3 matrix)"
    )


class PESCalculator(Calculator):
    """ASE calculator: energy (eV), forces (eV/A) and stress (eV/A^3) of a saved energy model.

    Parameters
    ----------
    model:
        A fitted :class:`~perovskite_pes.models.EnergyModel` or the path of a saved model directory.
    supercell:
        The supercell of the model's reference perovskite the atoms form (default: inferred).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]
    nolabel = True

    def __init__(self, model, supercell=None, **kwargs):
        super().__init__(**kwargs)
        self.model: EnergyModel = model if isinstance(model, EnergyModel) else load_model(model)
        if not self.model.is_fitted:
            raise ModelError("PESCalculator needs a fitted model")
        self.base_reference = getattr(self.model, "reference_", None)
        if self.base_reference is None:
            raise ModelError("the model does not record the reference supercell it was trained on; refit or resave it")
        self.supercell = supercell
        # a committee also reports its spread: energy_std (eV), forces_std (eV/A per atom) and
        # max_force_deviation (eV/A), in results and through get_property
        self.uncertainty = callable(getattr(self.model, "compute_spread", None))
        if self.uncertainty:
            self.implemented_properties = list(type(self).implemented_properties) + list(SPREAD_PROPERTIES)
        self._key = None
        self._reference = None
        self._order = None

    def _mapping(self, atoms):
        """Reference supercell and atom order (``order[site]`` = atom index), cached per structure kind."""
        key = (len(atoms), tuple(atoms.get_chemical_symbols()))
        if key == self._key:
            return self._reference, self._order
        ref = infer_supercell(self.base_reference, atoms.cell.array, len(atoms), self.supercell)
        if list(atoms.get_chemical_symbols()) == list(ref.species):
            order = np.arange(len(atoms))
        else:
            from ..structure import match_structure

            try:
                _config, order = match_structure(ref, _structure(atoms))
            except ValueError as exc:
                raise ModelError(
                    f"cannot match the atoms to the {ref.n_atoms}-site reference supercell: {exc}"
                ) from None
        self._key, self._reference, self._order = key, ref, np.asarray(order)
        return ref, self._order

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        ref, order = self._mapping(self.atoms)
        lattice = np.asarray(self.atoms.cell.array, dtype=float)
        positions = unwrap_positions(ref, self.atoms.positions[order], lattice)
        # forces and stress cost one backward pass together; MD and relaxations ask for them next anyway
        if self.uncertainty:
            r = self.model.compute_spread(positions, lattice, ref)
        else:
            r = self.model.compute(positions, lattice, ref, forces=True, stress=True)
        forces = np.empty_like(r["forces"])
        forces[order] = r["forces"]
        self.results = {
            "energy": float(r["energy"]),
            "free_energy": float(r["energy"]),
            "forces": forces,
            "stress": np.asarray(r["stress"], dtype=float),
        }
        if self.uncertainty:
            forces_std = np.empty_like(r["forces_std"])
            forces_std[order] = r["forces_std"]
            self.results.update(
                energy_std=float(r["energy_std"]),
                forces_std=forces_std,
                max_force_deviation=float(r["max_force_deviation"]),
            )


def _structure(atoms):
    from pymatgen.core import Lattice, Structure

    return Structure(
        Lattice(atoms.cell.array), atoms.get_chemical_symbols(), atoms.positions, coords_are_cartesian=True
    )
