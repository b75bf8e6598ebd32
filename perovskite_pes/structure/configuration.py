"""A configuration: the reference supercell plus a displacement field plus a homogeneous strain.

Conventions (used everywhere in the project):

* ``displacements`` u_i: cartesian, Angstrom, in the reference (unstrained) frame, one row per
  site in the reference supercell's site order.
* ``strain``: symmetric 3x3 tensor e stored as the 6-vector (e_xx, e_yy, e_zz, e_yz, e_xz, e_xy)
  (tensor components, *not* engineering shear). The deformation gradient is F = I + e.
* Deformed structure: lattice rows L = L0 F (F symmetric), positions x_i = F (r_i + u_i).
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass, field

import numpy as np

from .mapping import match_sites
from .reference import ReferenceSupercell
from .strain import VOIGT_PAIRS, ConfigurationError, matrix_to_strain, strain_to_matrix

__all__ = [
    "VOIGT_PAIRS",
    "Configuration",
    "ConfigurationError",
    "configuration_from_structure",
    "match_structure",
    "matrix_to_strain",
    "strain_to_matrix",
]


@dataclass(eq=False)
class Configuration:
    """Reference supercell + displacements + strain, with free-form sampling provenance in ``tags``."""

    reference: ReferenceSupercell
    displacements: np.ndarray | None = None
    strain: np.ndarray | None = None
    tags: dict = field(default_factory=dict)

    def __post_init__(self):
        n = self.reference.n_atoms
        if self.displacements is None:
            self.displacements = np.zeros((n, 3))
        self.displacements = np.array(self.displacements, dtype=float)
        if self.displacements.shape != (n, 3):
            raise ConfigurationError(
                f"displacements must have shape ({n}, 3) for this {n}-atom supercell; got {self.displacements.shape}"
            )
        if not np.all(np.isfinite(self.displacements)):
            raise ConfigurationError("displacements contain NaN or infinite values")
        self.strain = matrix_to_strain(strain_to_matrix(np.zeros(6) if self.strain is None else self.strain))
        if not np.all(np.isfinite(self.strain)):
            raise ConfigurationError("strain contains NaN or infinite values")

    def __repr__(self) -> str:
        """One line: the supercell, the largest displacement and strain, the tags (not the arrays)."""
        u = float(np.linalg.norm(self.displacements, axis=1).max()) if len(self.displacements) else 0.0
        short = reprlib.Repr()
        short.maxstring = short.maxother = 30
        items = [f"{short.repr(k)}: {short.repr(v)}" for k, v in list(self.tags.items())[:3]]
        tags = "{" + ", ".join(items + (["..."] if len(self.tags) > 3 else [])) + "}"
        return (
            f"Configuration({self.reference!r}, max |u| {u:.3f} A, max |strain| "
            f"{float(np.abs(self.strain).max()):.4f}, tags={tags})"
        )

    # ------------------------------------------------------------------ geometry
    @property
    def deformation_gradient(self) -> np.ndarray:
        return np.eye(3) + strain_to_matrix(self.strain)

    @property
    def lattice(self) -> np.ndarray:
        return self.reference.lattice @ self.deformation_gradient

    @property
    def positions(self) -> np.ndarray:
        return (self.reference.positions + self.displacements) @ self.deformation_gradient

    @property
    def species(self) -> list[str]:
        return self.reference.species

    def to_structure(self):
        from pymatgen.core import Lattice, Structure

        return Structure(Lattice(self.lattice), self.species, self.positions, coords_are_cartesian=True)

    def to_ase(self):
        from ase import Atoms

        return Atoms(symbols=self.species, positions=self.positions, cell=self.lattice, pbc=True)

    def repeated(self, k: int) -> Configuration:
        """The same distortion repeated ``k`` times along each supercell vector: a configuration of the
        ``k``-times larger supercell (same strain, tags copied) whose energy per atom is this one's.

        >>> from perovskite_pes.structure import Perovskite, tilt_configuration
        >>> c = tilt_configuration(Perovskite().supercell(2), "a+b-b-", [8, 6, 6])
        >>> c.repeated(2).reference.n_atoms
        320
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigurationError(f"a repetition count is an integer >= 1; got {k!r}")
        if k == 1:
            return Configuration(self.reference, self.displacements.copy(), self.strain.copy(), dict(self.tags))
        big = ReferenceSupercell(self.reference.perovskite, int(k) * self.reference.matrix)
        return Configuration.from_structure(big, self.to_ase().repeat((int(k),) * 3), tags=dict(self.tags))

    def min_distance(self) -> float:
        """Smallest interatomic distance (Angstrom), periodic images included."""
        s = self.to_structure()
        d = s.distance_matrix
        np.fill_diagonal(d, np.inf)
        return float(d.min())

    def pair_min_distances(self) -> dict[str, float]:
        """Smallest distance (Angstrom, nearest periodic image) per pair of species, keyed ``"A-B"`` with
        the two names in alphabetical order; ``inf`` for a species with a single atom paired with itself.

        >>> from perovskite_pes.structure import Configuration, Perovskite
        >>> d = Configuration(Perovskite().supercell(2)).pair_min_distances()
        >>> round(d["Br-Pb"], 3), round(d["Cs-Cs"], 2), sorted(d)[0]
        (2.935, 5.87, 'Br-Br')
        """
        d = self.to_structure().distance_matrix
        np.fill_diagonal(d, np.inf)
        species = np.asarray(self.species)
        names = sorted(set(self.species))
        pairs = [(a, b) for i, a in enumerate(names) for b in names[i:]]
        return {f"{a}-{b}": float(d[np.ix_(species == a, species == b)].min()) for a, b in pairs}

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict:
        return {
            "reference": self.reference.to_dict(),
            "displacements": self.displacements.tolist(),
            "strain": self.strain.tolist(),
            "tags": dict(self.tags),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Configuration:
        return cls(
            ReferenceSupercell.from_dict(d["reference"]),
            np.array(d["displacements"]),
            np.array(d["strain"]),
            dict(d.get("tags", {})),
        )

    @classmethod
    def from_structure(
        cls,
        reference: ReferenceSupercell,
        structure,
        remove_translation: bool = False,
        max_displacement=None,
        tags=None,
    ) -> Configuration:
        """Map a pymatgen Structure or ASE Atoms in any site order onto the reference supercell.

        Undoes a rigid rotation (polar decomposition), a rigid translation (with
        ``remove_translation=True``; otherwise it stays as a uniform displacement), re-wrapping
        (minimum image) and a permutation of the atoms (matching to reference sites of the same
        species). Raises ConfigurationError when no unique matching exists. See
        :mod:`perovskite_pes.structure.mapping`.
        """
        return match_structure(
            reference, structure, remove_translation=remove_translation, max_displacement=max_displacement, tags=tags
        )[0]

    @classmethod
    def from_arrays(
        cls, reference: ReferenceSupercell, lattice, positions, tags=None, remove_translation: bool = False
    ) -> Configuration:
        """Map a deformed cell (lattice rows, cartesian positions in reference site order) back.

        The polar decomposition F_total = R U removes a rigid rotation R; strain = U - I;
        displacements are found by minimum image in the reference supercell, so re-wrapped
        inputs give the same displacement field. A rigid translation of the input shows up as
        a uniform displacement; ``remove_translation=True`` subtracts the mean displacement.
        """
        from scipy.linalg import polar

        lattice = np.asarray(lattice, dtype=float)
        positions = np.asarray(positions, dtype=float)
        n = reference.n_atoms
        if lattice.shape != (3, 3):
            raise ConfigurationError(f"lattice must be 3x3; got shape {lattice.shape}")
        if positions.shape != (n, 3):
            raise ConfigurationError(f"structure has {positions.shape[0]} sites but the reference supercell has {n}")
        # L = L0 F_total^T  ->  F_total = L^T L0^-T ; polar: F_total = R U
        f_total = lattice.T @ np.linalg.inv(reference.lattice.T)
        rot, u = polar(f_total, side="right")
        if np.linalg.det(rot) < 0:
            raise ConfigurationError("structure lattice is inverted (improper) relative to the reference")
        unrotated = positions @ rot  # x' = R^T x for row vectors
        undeformed = unrotated @ np.linalg.inv(u)  # r + u = U^-1 x'
        frac = undeformed @ np.linalg.inv(reference.lattice)
        dfrac = frac - reference.frac_coords()
        dfrac -= np.round(dfrac)
        disp = dfrac @ reference.lattice
        if remove_translation:
            disp -= disp.mean(axis=0)
        return cls(reference, disp, matrix_to_strain(u - np.eye(3)), dict(tags or {}))


def match_structure(
    reference: ReferenceSupercell,
    structure,
    remove_translation: bool = False,
    max_displacement: float | None = None,
    tags: dict | None = None,
) -> tuple[Configuration, np.ndarray]:
    """Map a structure (any site order, rotated, translated, wrapped) onto the reference supercell.

    Returns the configuration and ``order`` with ``order[site] = index of the input atom`` matched
    to reference site ``site``. ``max_displacement`` (Angstrom) bounds each matched displacement
    (default: just under half the distance between neighbouring sites of the same species). The
    steps are those of :func:`perovskite_pes.structure.mapping.match_sites`.
    """
    disp, strain, order = match_sites(reference, structure, remove_translation, max_displacement)
    return Configuration(reference, disp, strain, dict(tags or {})), order


def configuration_from_structure(reference: ReferenceSupercell, structure, **kwargs) -> Configuration:
    """:func:`match_structure` without the permutation."""
    return match_structure(reference, structure, **kwargs)[0]
