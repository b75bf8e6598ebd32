"""Symmetry of the reference supercell and canonical keys of configurations.

The reference space group (Pm-3m) restricted to a supercell is the set of operations
{W|w} that map the supercell lattice onto itself: the cubic point operations times every
primitive translation inside the supercell (384 operations for 2x2x2). spglib finds them on
the undistorted supercell; each one acts on a configuration as a site permutation times a
cartesian rotation:

    u'_{p(i)} = R u_i ,     e' = R e R^T

and the structure built from (u', e') is the original structure rotated by R and translated,
i.e. the same crystal. :func:`canonical_key` uses this to give symmetry-equivalent
configurations the same key.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

from .configuration import VOIGT_PAIRS, Configuration, ConfigurationError, matrix_to_strain, strain_to_matrix
from .reference import ReferenceSupercell

#: default spglib tolerance (Angstrom) for space-group detection of distorted structures
DEFAULT_SYMPREC = 1e-3


@dataclass(frozen=True, eq=False)
class SupercellSymmetry:
    """Operations of the reference space group that map a supercell onto itself.

    Attributes
    ----------
    rotations: (n_ops, 3, 3) cartesian rotation matrices (exact signed permutations).
    translations: (n_ops, 3) cartesian translation parts (Angstrom).
    permutations: (n_ops, N) site ``i`` is mapped onto site ``permutations[g, i]``.
    """

    reference: ReferenceSupercell
    rotations: np.ndarray
    translations: np.ndarray
    permutations: np.ndarray

    @property
    def n_ops(self) -> int:
        return len(self.rotations)

    @cached_property
    def inverse_permutations(self) -> np.ndarray:
        """(n_ops, N): site ``inverse_permutations[g, j]`` is mapped onto site ``j``."""
        return np.argsort(self.permutations, axis=1)

    @cached_property
    def _signed_columns(self) -> tuple[np.ndarray, np.ndarray]:
        """Each rotation is a signed permutation: ``R[g, a, b] = sign[g, a]`` for ``b = col[g, a]``, else 0."""
        col = np.abs(self.rotations).argmax(axis=2)
        sign = np.take_along_axis(self.rotations, col[:, :, None], axis=2)[:, :, 0]
        return col, sign

    @cached_property
    def _image_gather(self) -> tuple[np.ndarray, np.ndarray]:
        """(flat indices (n_ops, N, 3), signs (n_ops, 1, 3)): every image of a field u is u.ravel()[idx] * sign."""
        col, sign = self._signed_columns
        return self.inverse_permutations[:, :, None] * 3 + col[:, None, :], sign[:, None, :]

    @cached_property
    def _strain_gather(self) -> tuple[np.ndarray, np.ndarray]:
        """(Voigt indices (n_ops, 6), signs (n_ops, 6)): every image of a strain 6-vector is e[idx] * sign."""
        col, sign = self._signed_columns
        voigt = np.zeros((3, 3), dtype=int)
        for k, (i, j) in enumerate(VOIGT_PAIRS):
            voigt[i, j] = voigt[j, i] = k
        i, j = np.array(VOIGT_PAIRS).T
        return voigt[col[:, i], col[:, j]], sign[:, i] * sign[:, j]

    @property
    def point_op_indices(self) -> np.ndarray:
        """Operations with no translation part (the point group about the B site at the origin)."""
        frac = self.translations @ np.linalg.inv(self.reference.perovskite.lattice)
        return np.flatnonzero(
            np.all(np.abs(frac - np.round(frac)) < 1e-8, axis=1) & np.all(np.abs(frac) < 1e-8, axis=1)
        )

    @property
    def pure_translation_indices(self) -> np.ndarray:
        """Operations whose rotation is the identity (the supercell translations)."""
        return np.flatnonzero(np.all(np.abs(self.rotations - np.eye(3)) < 1e-12, axis=(1, 2)))

    def apply_displacements(self, displacements: np.ndarray, ops=None) -> np.ndarray:
        """Images of a displacement field (N,3) or a batch (..., N, 3) of them under the operations.

        Returns an array (n_ops, N, 3) (or (n_ops, ..., N, 3) for a batch).
        """
        u = np.asarray(displacements, dtype=float)
        if u.ndim == 2:  # rotations are signed permutations: one gather and a sign flip, exact and fast
            idx, sign = self._image_gather
            if ops is None:
                return u.ravel()[idx] * sign
            return u.ravel()[idx[ops]] * sign[ops]
        ops = np.arange(self.n_ops) if ops is None else np.asarray(ops)
        # out[g, ..., perm[g, i], :] = rot[g, ..., i, :]  <=>  out[g, ..., j, :] = rot[g, ..., inv[g, j], :]
        inv = self.inverse_permutations[ops]
        rot = np.einsum("gab,...ib->g...ia", self.rotations[ops], u)
        return np.stack([rot[k][..., inv[k], :] for k in range(len(ops))])

    def apply_strain(self, strain, ops=None) -> np.ndarray:
        """Images (n_ops, 6) of a strain 6-vector: e' = R e R^T."""
        ops = np.arange(self.n_ops) if ops is None else np.asarray(ops)
        e = matrix_to_strain(strain_to_matrix(strain))  # a 3x3 tensor or a 6-vector, symmetrised
        idx, sign = self._strain_gather
        return e[idx[ops]] * sign[ops]

    def apply(self, config: Configuration, op: int) -> Configuration:
        """The configuration mapped by operation ``op`` (a symmetry-equivalent configuration)."""
        u = self.apply_displacements(config.displacements, [op])[0]
        e = self.apply_strain(config.strain, [op])[0]
        return Configuration(config.reference, u, e, dict(config.tags))

    def stabilizer(self, config: Configuration, tol: float = 1e-6, strain_tol: float = 1e-9) -> np.ndarray:
        """Indices of the operations that map ``config`` onto itself: its space group within the supercell.

        A rigid translation of the whole configuration is ignored; displacements must match within ``tol``
        Angstrom and strains within ``strain_tol``.
        """
        u_img, e_img = _distortion_images(config, self)
        du = np.abs(u_img - u_img[0]).max(axis=(1, 2))  # operation 0 is the identity
        de = np.abs(e_img - config.strain).max(axis=1)
        return np.flatnonzero((du < tol) & (de < strain_tol))

    def displacement_matrix(self, op: int) -> np.ndarray:
        """The (3N, 3N) matrix of operation ``op`` on flattened displacement fields."""
        n = self.reference.n_atoms
        d = np.zeros((n, 3, n, 3))
        d[self.permutations[op], :, np.arange(n), :] = self.rotations[op]
        return d.reshape(3 * n, 3 * n)


def _spglib_cell(lattice, positions_frac, numbers):
    return (np.asarray(lattice, float), np.asarray(positions_frac, float), np.asarray(numbers, int))


def _spglib_call(name, *args, **kwargs):
    """Call an spglib function; returns None on failure (silences its error-handling deprecation note)."""
    import spglib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return getattr(spglib, name)(*args, **kwargs)
        except Exception as exc:  # spglib >= 2.5 may raise SpglibError instead of returning None
            if type(exc).__name__ == "SpglibError":
                return None
            raise


@lru_cache(maxsize=16)
def supercell_symmetry(reference: ReferenceSupercell) -> SupercellSymmetry:
    """The reference space group acting on ``reference`` (cached per supercell)."""
    lattice = reference.lattice
    frac = reference.frac_coords()
    # distinct numbers per sublattice even if two sublattices share an element
    numbers = np.array([{"A": 1, "B": 2, "X": 3}[s] for s in reference.sublattice])
    sym = _spglib_call("get_symmetry", _spglib_cell(lattice, frac, numbers), symprec=1e-5)
    if sym is None:  # pragma: no cover - the reference is always valid
        raise RuntimeError("spglib could not determine the symmetry of the reference supercell")
    w_all = np.asarray(sym["rotations"], dtype=float)
    t_all = np.asarray(sym["translations"], dtype=float)
    linv = np.linalg.inv(lattice)
    rotations, translations, perms = [], [], []
    wrapped = frac - np.floor(frac + 1e-9)
    for w, t in zip(w_all, t_all):
        # cartesian rotation of row vectors: x' = x @ R^T with R = L^T W L^-T
        r = lattice.T @ w @ linv.T
        r_exact = np.rint(r)
        if not np.allclose(r, r_exact, atol=1e-8):  # pragma: no cover - cubic reference only
            raise RuntimeError("unexpected non-cubic symmetry operation of the reference")
        new = frac @ w.T + t
        diff = new[:, None, :] - wrapped[None, :, :]
        diff -= np.round(diff)
        match = np.all(np.abs(diff) < 1e-6, axis=2)
        if not np.all(match.sum(1) == 1):  # pragma: no cover
            raise RuntimeError("a symmetry operation does not permute the reference sites")
        perm = match.argmax(1)
        rotations.append(r_exact)
        translations.append(t @ lattice)
        perms.append(perm)
    rotations = np.array(rotations)
    translations = np.array(translations)
    perms = np.array(perms)
    # fixed, reproducible order: identity first, then by rotation, then translation
    key = np.concatenate([rotations.reshape(len(rotations), -1) * -1, np.round(translations, 8)], axis=1)
    is_identity = np.all(np.abs(rotations - np.eye(3)) < 1e-12, axis=(1, 2)) & np.all(
        np.abs(translations - np.round(translations @ linv) @ lattice) < 1e-8, axis=1
    )
    order = np.lexsort(np.concatenate([key, (~is_identity)[:, None]], axis=1).T)
    return SupercellSymmetry(reference, rotations[order], translations[order], perms[order])


# --------------------------------------------------------------------------- canonical key
def _distortion_images(config: Configuration, symmetry: SupercellSymmetry):
    u = config.displacements - config.displacements.mean(axis=0)
    return symmetry.apply_displacements(u), symmetry.apply_strain(config.strain)


def _lexmin_row(rows: np.ndarray) -> np.ndarray:
    """The lexicographically smallest row (column by column, keeping the rows that tie)."""
    keep = np.arange(len(rows))
    for j in range(rows.shape[1]):
        col = rows[keep, j]
        keep = keep[col == col.min()]
        if len(keep) == 1:
            break
    return rows[keep[0]]


def _steps(x: np.ndarray) -> np.ndarray:
    """Nearest integers of ``x``; values within 5e-7 of a half step are snapped onto it first, so that
    ties go to the even neighbour (numpy's rounding) rather than to whichever side noise puts them."""
    return np.rint(np.round(x, 6)).astype(np.int64)


def canonical_key(config: Configuration, tol: float = 1e-3, strain_tol: float = 1e-5) -> str:
    """A key (sha1 hex) equal for configurations related by a reference space-group operation.

    The mean displacement (a rigid translation) is removed; displacements are rounded to
    ``tol`` Angstrom and strains to ``strain_tol``; the key is the hash of the
    lexicographically smallest rounded image over all operations of the reference space group
    acting on the supercell (point operations and supercell translations), together with the
    reference (species, lattice parameter, supercell matrix).

    Values that lie on a rounding boundary (a half step: grids of nice amplitudes times nice mode
    components put them there, e.g. 0.15 A x 0.25 = 37.5 steps of 1e-3 A) go to the even neighbour
    whatever the last bits of floating-point noise say, so that exact symmetry twins share a key.
    """
    if tol <= 0 or strain_tol <= 0:
        raise ConfigurationError(f"canonical_key tolerances must be positive; got tol={tol}, strain_tol={strain_tol}")
    sym = supercell_symmetry(config.reference)
    u_img, e_img = _distortion_images(config, sym)
    ints = np.concatenate(
        [
            _steps(e_img / strain_tol),
            _steps(u_img.reshape(sym.n_ops, -1) / tol),
        ],
        axis=1,
    )
    best = _lexmin_row(ints)
    ref = config.reference
    header = "|".join(
        [
            ",".join(ref.perovskite.species),
            f"{ref.perovskite.lattice_parameter:.6f}",
            ",".join(str(int(x)) for x in ref.matrix.ravel()),
            f"{tol:g}",
            f"{strain_tol:g}",
        ]
    )
    h = hashlib.sha1(header.encode())
    h.update(best.tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- symmetrization
def symmetrize(config: Configuration, like: Configuration, tol: float = 1e-6) -> Configuration:
    """``config`` projected onto the configurations that have every symmetry of ``like``.

    The projection averages the images of ``config`` under the stabilizer of ``like`` (the operations
    of the reference space group that map ``like`` onto itself within ``tol`` Angstrom): the result is
    exactly invariant under them, an already invariant configuration comes back unchanged, and the
    rigid translation is removed. Use it on a relaxed structure whose relaxation started from ``like``
    and drifted off its space group by numerical noise or a weak instability, so that what is built
    around it (symmetry twins of a mode grid in particular) does not depend on that noise. Tags are kept.

    >>> import numpy as np
    >>> from perovskite_pes.structure import Configuration, Perovskite, space_group, symmetrize, tilt_configuration
    >>> ref = Perovskite(("Cs", "Pb", "Br"), 5.87).supercell(2)
    >>> pnma = tilt_configuration(ref, "a+b-b-")
    >>> noisy = Configuration(ref, pnma.displacements + np.random.default_rng(0).normal(0, 0.005, (40, 3)))
    >>> space_group(noisy, symprec=1e-3), space_group(symmetrize(noisy, like=pnma), symprec=1e-5)
    (('P1', 1), ('Pnma', 62))
    """
    if config.reference != like.reference:
        raise ConfigurationError("symmetrize: config and like must be configurations of the same reference supercell")
    sym = supercell_symmetry(config.reference)
    ops = sym.stabilizer(like, tol=tol)
    u = config.displacements - config.displacements.mean(axis=0)
    displacements = sym.apply_displacements(u, ops).mean(axis=0)
    strain = sym.apply_strain(config.strain, ops).mean(axis=0)
    return Configuration(config.reference, displacements, strain, dict(config.tags))


# --------------------------------------------------------------------------- space groups
def space_group(obj, symprec: float = DEFAULT_SYMPREC) -> tuple[str, int]:
    """(international symbol, number) that spglib finds for a Configuration, pymatgen Structure or ASE Atoms."""
    if isinstance(obj, Configuration):
        lattice, positions, numbers = obj.lattice, obj.positions, obj.reference.atomic_numbers
    elif hasattr(obj, "get_cell"):  # ASE Atoms
        lattice, positions, numbers = np.array(obj.get_cell()), obj.get_positions(), obj.get_atomic_numbers()
    else:  # pymatgen Structure
        lattice = obj.lattice.matrix
        positions = obj.cart_coords
        numbers = [site.specie.Z for site in obj]
    frac = np.asarray(positions) @ np.linalg.inv(lattice)
    ds = _spglib_call("get_symmetry_dataset", _spglib_cell(lattice, frac, numbers), symprec=symprec)
    if ds is None:
        raise ConfigurationError("spglib could not determine a space group for this structure (overlapping atoms?)")
    return str(ds.international), int(ds.number)
