"""The high-symmetry reference: a cubic ABX3 perovskite (Pm-3m) and its supercells.

Site convention (primitive cell, fractional coordinates):
    B at (0, 0, 0), A at (1/2, 1/2, 1/2), X at (1/2, 0, 0), (0, 1/2, 0), (0, 0, 1/2).

Supercell site order is fixed and documented because every later layer (displacement
fields, clusters, descriptors, stored configurations) indexes sites by it: all A sites,
then all B sites, then all X sites; within a sublattice, sites follow the order of the
primitive-cell translations returned by :meth:`ReferenceSupercell.translations`, and X
sites are ordered X1, X2, X3 within each translation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ..errors import PesError

#: Fractional coordinates of the primitive-cell sites, keyed by sublattice label.
PRIMITIVE_SITES: dict[str, list[tuple[float, float, float]]] = {
    "A": [(0.5, 0.5, 0.5)],
    "B": [(0.0, 0.0, 0.0)],
    "X": [(0.5, 0.0, 0.0), (0.0, 0.5, 0.0), (0.0, 0.0, 0.5)],
}
SUBLATTICES = ("A", "B", "X")

#: PBEsol lattice parameter of cubic CsPbBr3 used as the default reference (Angstrom).
CSPBBR3_LATTICE_PARAMETER = 5.87


class ReferenceStructureError(PesError, ValueError):
    """Raised for an invalid reference crystal or supercell specification."""


@dataclass(frozen=True)
class Perovskite:
    """A cubic ABX3 perovskite reference crystal.

    Parameters
    ----------
    species:
        The three species (A, B, X), e.g. ``("Cs", "Pb", "Br")``.
    lattice_parameter:
        Cubic lattice parameter in Angstrom.
    """

    species: tuple[str, str, str] = ("Cs", "Pb", "Br")
    lattice_parameter: float = CSPBBR3_LATTICE_PARAMETER

    def __post_init__(self):
        species = tuple(self.species)
        if len(species) != 3:
            raise ReferenceStructureError(
                f"an ABX3 perovskite needs exactly 3 species (A, B, X); got {len(species)}: {list(species)}"
            )
        from pymatgen.core import Element

        for s in species:
            if not isinstance(s, str) or not Element.is_valid_symbol(s):
                raise ReferenceStructureError(f"unknown chemical element {s!r} in species {list(species)}")
        object.__setattr__(self, "species", species)
        a = float(self.lattice_parameter)
        if not np.isfinite(a) or a <= 0:
            raise ReferenceStructureError(
                f"lattice parameter must be a positive length in Angstrom; got {self.lattice_parameter!r}"
            )
        object.__setattr__(self, "lattice_parameter", a)

    @property
    def formula(self) -> str:
        a, b, x = self.species
        return f"{a}{b}{x}3"

    @property
    def lattice(self) -> np.ndarray:
        """Primitive lattice vectors as rows (Angstrom)."""
        return np.eye(3) * self.lattice_parameter

    def species_of(self, sublattice: str) -> str:
        return self.species[SUBLATTICES.index(sublattice)]

    def primitive_structure(self):
        """The 5-atom cubic cell as a pymatgen Structure (A, B, X, X, X order)."""
        from pymatgen.core import Lattice, Structure

        species, coords = [], []
        for lab in SUBLATTICES:
            for fc in PRIMITIVE_SITES[lab]:
                species.append(self.species_of(lab))
                coords.append(fc)
        return Structure(Lattice(self.lattice), species, coords)

    def supercell(self, matrix=2) -> ReferenceSupercell:
        """Supercell given by an integer matrix (rows: supercell vectors in primitive units).

        ``matrix`` may be an int n (n x n x n), three ints (diagonal) or a 3x3 integer matrix.
        """
        return ReferenceSupercell(self, supercell_matrix(matrix))

    def to_dict(self) -> dict:
        return {"species": list(self.species), "lattice_parameter": self.lattice_parameter}

    @classmethod
    def from_dict(cls, d: dict) -> Perovskite:
        return cls(tuple(d["species"]), float(d["lattice_parameter"]))


def supercell_matrix(matrix) -> np.ndarray:
    """Validate and normalise a supercell specification to a 3x3 integer matrix."""
    m = np.asarray(matrix, dtype=float)
    if m.ndim == 0:
        m = np.eye(3) * float(m)
    elif m.shape == (3,):
        m = np.diag(m)
    elif m.shape != (3, 3):
        raise ReferenceStructureError(
            f"supercell matrix must be an integer, 3 integers or a 3x3 integer matrix; got shape {m.shape}"
        )
    if not np.all(np.isfinite(m)) or not np.allclose(m, np.round(m)):
        raise ReferenceStructureError(f"supercell matrix must contain integers only; got {m.tolist()}")
    mi = np.round(m).astype(int)
    det = int(round(np.linalg.det(mi)))
    if det == 0:
        raise ReferenceStructureError(f"supercell matrix {mi.tolist()} is singular (determinant 0)")
    if det < 0:
        raise ReferenceStructureError(
            f"supercell matrix {mi.tolist()} is left-handed (determinant {det}); use a right-handed one"
        )
    return mi


@dataclass(frozen=True, eq=False)
class ReferenceSupercell:
    """A supercell of the reference perovskite with a fixed, documented site order."""

    perovskite: Perovskite
    matrix: np.ndarray = field(default_factory=lambda: 2 * np.eye(3, dtype=int))

    def __post_init__(self):
        object.__setattr__(self, "matrix", supercell_matrix(self.matrix))

    def __eq__(self, other):
        return (
            isinstance(other, ReferenceSupercell)
            and self.perovskite == other.perovskite
            and np.array_equal(self.matrix, other.matrix)
        )

    def __hash__(self):
        return hash((self.perovskite, self.matrix.tobytes()))

    def __repr__(self) -> str:
        m = self.matrix
        size = "x".join(str(int(v)) for v in np.diag(m)) if np.array_equal(m, np.diag(np.diag(m))) else str(m.tolist())
        return f"ReferenceSupercell({self.perovskite.formula}, {size}, {self.n_atoms} atoms)"

    @property
    def n_cells(self) -> int:
        return int(round(abs(np.linalg.det(self.matrix))))

    @property
    def n_atoms(self) -> int:
        return 5 * self.n_cells

    @cached_property
    def lattice(self) -> np.ndarray:
        """Supercell lattice vectors as rows (Angstrom)."""
        return self.matrix @ self.perovskite.lattice

    @cached_property
    def translations(self) -> np.ndarray:
        """Integer primitive-cell translations t (n_cells x 3) that tile the supercell, in a fixed order."""
        m = self.matrix
        # bounding box of the supercell corners in primitive coordinates
        corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)]) @ m
        lo, hi = corners.min(0), corners.max(0)
        grid = np.stack(np.meshgrid(*[np.arange(lo[d], hi[d] + 1) for d in range(3)], indexing="ij"), -1).reshape(-1, 3)
        frac = grid @ np.linalg.inv(m)  # fractional coordinates in the supercell
        inside = np.all((frac > -1e-8) & (frac < 1 - 1e-8), axis=1)
        t = grid[inside]
        if len(t) != self.n_cells:  # pragma: no cover - guards the geometry above
            raise ReferenceStructureError(f"found {len(t)} lattice points in supercell, expected {self.n_cells}")
        order = np.lexsort((t[:, 2], t[:, 1], t[:, 0]))
        return t[order]

    @cached_property
    def sublattice(self) -> np.ndarray:
        """Sublattice label ('A', 'B' or 'X') of every site."""
        return np.array([lab for lab in SUBLATTICES for _ in range(len(PRIMITIVE_SITES[lab]) * self.n_cells)])

    @cached_property
    def primitive_index(self) -> np.ndarray:
        """Index of every site's primitive-cell site (0=A, 1=B, 2..4=X1..X3)."""
        idx = []
        offset = 0
        for lab in SUBLATTICES:
            nb = len(PRIMITIVE_SITES[lab])
            for _t in range(self.n_cells):
                idx.extend(range(offset, offset + nb))
            offset += nb
        return np.array(idx)

    @cached_property
    def cell_translation(self) -> np.ndarray:
        """Primitive-cell translation (integer, primitive coordinates) of every site."""
        out = []
        for lab in SUBLATTICES:
            nb = len(PRIMITIVE_SITES[lab])
            for t in self.translations:
                out.extend([t] * nb)
        return np.array(out, dtype=int)

    @cached_property
    def frac_primitive(self) -> np.ndarray:
        """Site positions in primitive fractional coordinates (translation + basis)."""
        basis = np.array([fc for lab in SUBLATTICES for fc in PRIMITIVE_SITES[lab]])
        return self.cell_translation + basis[self.primitive_index]

    @cached_property
    def positions(self) -> np.ndarray:
        """Cartesian reference positions (n_atoms x 3, Angstrom)."""
        return self.frac_primitive @ self.perovskite.lattice

    @cached_property
    def species(self) -> list[str]:
        return [self.perovskite.species_of(lab) for lab in self.sublattice]

    @cached_property
    def atomic_numbers(self) -> np.ndarray:
        from pymatgen.core import Element

        return np.array([Element(s).Z for s in self.species])

    def frac_coords(self, positions: np.ndarray | None = None) -> np.ndarray:
        """Fractional coordinates in the supercell of cartesian ``positions`` (reference if None)."""
        pos = self.positions if positions is None else np.asarray(positions)
        return pos @ np.linalg.inv(self.lattice)

    def to_structure(self):
        """The undistorted supercell as a pymatgen Structure (sites in the documented order)."""
        from pymatgen.core import Lattice, Structure

        return Structure(Lattice(self.lattice), self.species, self.positions, coords_are_cartesian=True)

    def to_dict(self) -> dict:
        return {"perovskite": self.perovskite.to_dict(), "matrix": self.matrix.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> ReferenceSupercell:
        return cls(Perovskite.from_dict(d["perovskite"]), np.array(d["matrix"]))
