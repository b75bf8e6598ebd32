"""Symmetry-adapted displacement modes of a supercell and the symmetry-adapted strain basis of m-3m.

Displacement modes
------------------
The reference space group acting on the supercell (site permutation x rotation, see
:mod:`.symmetry`) is a real orthogonal representation D of dimension 3N. A random symmetric
matrix averaged over the group, M = (1/|G|) sum_g D(g) A D(g)^T, commutes with every D(g), so
its eigenspaces are invariant subspaces; for a generic A each eigenspace is one copy of one
(physically) irreducible representation. The three rigid translations (an invariant subspace)
are projected out first, which leaves 3N - 3 orthonormal modes. A second independent invariant
matrix checks irreducibility (it must act as a scalar on every subspace).

Labels: each subspace is labelled by its k-point star (GM, X, M, R for the points of a 2x2x2
supercell, the reduced wave vector otherwise) and, at those high-symmetry points, by the
irreducible representation of the little co-group (O_h at GM and R, D_4h at X and M) found from
the characters of the point operations about the B site (the origin). Names follow the
Miller-Love (CDML) numbering used by ISOTROPY/Bilbao for Pm-3m with B at the origin: the
anti-phase tilt is R4+, the in-phase tilt M3+, the acoustic/polar modes GM4-.

Strains
-------
The strain tensor of m-3m splits into A1g (volume), Eg (tetragonal/orthorhombic, 2) and T2g
(shear, 3); :func:`strain_basis` returns an orthonormal (Frobenius) basis of the 6 directions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache

import numpy as np

from .configuration import matrix_to_strain, strain_to_matrix
from .reference import ReferenceSupercell
from .symmetry import SupercellSymmetry, supercell_symmetry

# ----------------------------------------------------------------------------- character tables
# O_h classes of the proper part p = det(R) R: E, C3, C2 (face diagonal), C4, C2 (cube axis)
_OH_TABLE = {
    "A1": (1, 1, 1, 1, 1),
    "A2": (1, 1, -1, -1, 1),
    "E": (2, -1, 0, 0, 2),
    "T1": (3, 0, -1, 1, -1),
    "T2": (3, 0, 1, -1, -1),
}
_OH_CDML = {"A1": 1, "A2": 2, "E": 3, "T1": 4, "T2": 5}
# D_4h classes of p with principal axis n: E, C4(n), C2(n), C2' (cube axis _|_ n), C2'' (diagonal _|_ n)
_D4H_TABLE = {
    "A1": (1, 1, 1, 1, 1),
    "B1": (1, -1, 1, 1, -1),
    "A2": (1, 1, 1, -1, -1),
    "B2": (1, -1, 1, -1, 1),
    "E": (2, 0, -2, 0, 0),
}
_D4H_CDML = {"A1": 1, "B1": 2, "A2": 3, "B2": 4, "E": 5}
_K_NAMES = {0: "GM", 1: "X", 2: "M", 3: "R"}


def _oh_class(p: np.ndarray) -> int:
    tr = int(round(np.trace(p)))
    if tr == 3:
        return 0
    if tr == 0:
        return 1
    if tr == 1:
        return 3
    return 4 if np.allclose(p, np.diag(np.diag(p))) else 2


def _d4h_class(p: np.ndarray, n: np.ndarray) -> int:
    tr = int(round(np.trace(p)))
    if tr == 3:
        return 0
    if tr == 1:
        return 1
    if np.allclose(p @ n, n):
        return 2
    return 3 if np.allclose(p, np.diag(np.diag(p))) else 4


# ----------------------------------------------------------------------------- containers
@dataclass
class ModeSubspace:
    """One irreducible invariant subspace of the displacement representation."""

    name: str  #: unique, e.g. ``"R4+"`` or ``"GM4-_2"`` for the second copy of GM4-
    label: str  #: irrep label, e.g. ``"R4+"`` (may repeat across copies)
    kpoint: str  #: ``"GM"``, ``"X"``, ``"M"``, ``"R"`` or a reduced wave vector
    irrep: str  #: Mulliken symbol of the little co-group irrep (``"T1g"``), "" when not classified
    kvectors: list  #: the star: reduced wave vectors (primitive reciprocal basis) as strings
    indices: list  #: indices of its modes in :attr:`ModeBasis.vectors`

    @property
    def dimension(self) -> int:
        return len(self.indices)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "label": self.label,
            "kpoint": self.kpoint,
            "irrep": self.irrep,
            "kvectors": list(self.kvectors),
            "indices": list(self.indices),
        }


@dataclass
class ModeBasis:
    """Orthonormal symmetry-adapted displacement modes (n_modes = 3N - 3) of a supercell."""

    reference: ReferenceSupercell
    vectors: np.ndarray  #: (n_modes, N, 3), orthonormal as flattened 3N vectors (Angstrom per unit amplitude)
    subspaces: list = field(default_factory=list)

    @property
    def n_modes(self) -> int:
        return len(self.vectors)

    @property
    def matrix(self) -> np.ndarray:
        """(n_modes, 3N) rows are the flattened mode vectors."""
        return self.vectors.reshape(self.n_modes, -1)

    @property
    def labels(self) -> list[str]:
        """Per-mode label ``<subspace name>[<component>]``."""
        out = [""] * self.n_modes
        for s in self.subspaces:
            for c, i in enumerate(s.indices):
                out[i] = f"{s.name}[{c}]"
        return out

    def subspace(self, name_or_label: str) -> list[ModeSubspace]:
        """Subspaces whose unique name or irrep label equals ``name_or_label``."""
        found = [s for s in self.subspaces if name_or_label in (s.name, s.label)]
        if not found:
            raise KeyError(
                f"no displacement subspace named {name_or_label!r}; available: "
                + ", ".join(s.name for s in self.subspaces)
            )
        return found

    def subspace_vectors(self, name_or_label: str) -> np.ndarray:
        """Mode vectors (k, N, 3) of all subspaces with that name or label."""
        idx = [i for s in self.subspace(name_or_label) for i in s.indices]
        return self.vectors[idx]

    def amplitudes(self, displacements) -> np.ndarray:
        """Mode amplitudes (Angstrom) of a displacement field (N,3); a rigid translation projects to zero."""
        return self.matrix @ np.asarray(displacements, float).reshape(-1)

    def displacements(self, amplitudes) -> np.ndarray:
        """Displacement field (N,3) of mode amplitudes (n_modes,)."""
        return (np.asarray(amplitudes, float) @ self.matrix).reshape(-1, 3)

    def to_dict(self) -> dict:
        return {
            "reference": self.reference.to_dict(),
            "vectors": self.vectors.tolist(),
            "subspaces": [s.to_dict() for s in self.subspaces],
        }

    @classmethod
    def from_dict(cls, d: dict) -> ModeBasis:
        return cls(
            ReferenceSupercell.from_dict(d["reference"]),
            np.array(d["vectors"], dtype=float),
            [ModeSubspace(**s) for s in d["subspaces"]],
        )


# ----------------------------------------------------------------------------- construction
def _group_average(sym: SupercellSymmetry, a: np.ndarray) -> np.ndarray:
    n = sym.reference.n_atoms
    a4 = a.reshape(n, 3, n, 3)
    out = np.zeros_like(a4)
    for r, perm in zip(sym.rotations, sym.permutations):
        b = np.einsum("ac,icjd,bd->iajb", r, a4, r, optimize=True)
        inv = np.argsort(perm)
        out += b[inv][:, :, inv]
    return (out / sym.n_ops).reshape(3 * n, 3 * n)


def _random_invariant(sym: SupercellSymmetry, rng) -> np.ndarray:
    n3 = 3 * sym.reference.n_atoms
    a = rng.normal(size=(n3, n3))
    return _group_average(sym, a + a.T)


def _kpoints(reference: ReferenceSupercell) -> np.ndarray:
    """Reduced wave vectors q (primitive reciprocal basis, in [0,1)) commensurate with the supercell."""
    m = reference.matrix
    # q in [0,1)^3 with m q integer: enumerate n = m q over the bounding box of m [0,1)^3
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)]) @ m.T
    lo, hi = corners.min(0), corners.max(0)
    grid = np.stack(np.meshgrid(*[np.arange(lo[d], hi[d] + 1) for d in range(3)], indexing="ij"), -1).reshape(-1, 3)
    q = grid @ np.linalg.inv(m).T
    q -= np.floor(q + 1e-9)
    uniq = np.unique(np.round(q, 9), axis=0)
    if len(uniq) != reference.n_cells:  # pragma: no cover - guards the enumeration
        raise RuntimeError(f"found {len(uniq)} commensurate k-points, expected {reference.n_cells}")
    return uniq


def _kstr(q) -> str:
    return "(" + ",".join(str(Fraction(float(x)).limit_denominator(64)) for x in q) + ")"


def _translation_ops(sym: SupercellSymmetry) -> tuple[np.ndarray, np.ndarray]:
    idx = sym.pure_translation_indices
    t = sym.translations[idx] @ np.linalg.inv(sym.reference.perovskite.lattice)
    return idx, np.rint(t).astype(int)


def _classify(sym: SupercellSymmetry, basis: np.ndarray, kpts: np.ndarray, tr_idx, tr_vec, point_idx):
    """k-star, representative k, little-group irrep (Mulliken) and CDML-style label of a subspace."""
    n3 = basis.shape[0]
    # weight of the subspace on each +-q pair: projector P_q = (1/n) sum_t cos(2 pi q.t) D(t)
    weights = []
    for q in kpts:
        phase = np.cos(2 * np.pi * tr_vec @ q)
        imgs = sym.apply_displacements(basis.T.reshape(-1, sym.reference.n_atoms, 3), tr_idx)
        proj = np.einsum("t,tkia->kia", phase, imgs).reshape(basis.shape[1], n3) / len(tr_idx)
        weights.append(np.trace(proj @ basis))
    weights = np.array(weights)
    star = [q for q, w in zip(kpts, weights) if w > 1e-6]
    is_real = all(np.allclose((2 * q) % 1, 0) for q in star)
    if not is_real:
        return [_kstr(q) for q in star], "k" + _kstr(star[0]), "", "k" + _kstr(star[0])
    halves = [int(round(2 * q.sum())) for q in star]
    nhalf = halves[0]
    name = _K_NAMES[nhalf]
    # representative: for X the half on z, for M the zero on z (principal axis z)
    if nhalf == 1:
        rep = next((q for q in star if np.isclose(q[2], 0.5)), star[0])
        axis = np.argmax(np.isclose(rep, 0.5))
    elif nhalf == 2:
        rep = next((q for q in star if np.isclose(q[2], 0.0)), star[0])
        axis = np.argmax(np.isclose(rep, 0.0))
    else:
        rep, axis = star[0], 2
    phase = np.cos(2 * np.pi * tr_vec @ rep)
    imgs = sym.apply_displacements(basis.T.reshape(-1, sym.reference.n_atoms, 3), tr_idx)
    proj = np.einsum("t,tkia->kia", phase, imgs).reshape(basis.shape[1], n3) / len(tr_idx)
    # orthonormal basis of the component at the representative k
    u, s, _ = np.linalg.svd(proj.T, full_matrices=False)
    vk = u[:, s > 1e-6]
    chars, classes, parities = [], [], []
    n_axis = np.eye(3)[axis]
    for g in point_idx:
        r = sym.rotations[g]
        qg = r @ rep  # cartesian = reduced for a cubic lattice (rotations are signed permutations)
        if not np.allclose((qg - rep) - np.round(qg - rep), 0):
            continue  # not in the little co-group of rep
        dg = sym.apply_displacements(vk.T.reshape(-1, sym.reference.n_atoms, 3), [g])[0].reshape(vk.shape[1], n3)
        chars.append(np.trace(dg @ vk))
        det = int(round(np.linalg.det(r)))
        p = det * r
        classes.append(_oh_class(p) if nhalf in (0, 3) else _d4h_class(p, n_axis))
        parities.append(det)
    chars, classes, parities = np.array(chars), np.array(classes), np.array(parities)
    table, cdml = (_OH_TABLE, _OH_CDML) if nhalf in (0, 3) else (_D4H_TABLE, _D4H_CDML)
    if len(chars) != (48 if nhalf in (0, 3) else 16):
        # the supercell keeps only part of the little co-group: no cubic irrep name
        return [_kstr(q) for q in star], name, "", name
    irrep = ""
    for lab, row in table.items():
        for par, suffix in ((1, "g"), (-1, "u")):
            ref_chars = np.array([row[c] * (1 if d > 0 else par) for c, d in zip(classes, parities)])
            mult = (chars @ ref_chars) / len(chars)
            if abs(mult - 1) < 1e-6 and np.isclose(chars @ chars / len(chars), 1):
                irrep = lab + suffix
                label = f"{name}{cdml[lab]}{'+' if par > 0 else '-'}"
    if not irrep:
        label = name
    return [_kstr(q) for q in star], name, irrep, label


def _decompose(sym: SupercellSymmetry, seed: int):
    n = sym.reference.n_atoms
    n3 = 3 * n
    rng = np.random.default_rng(seed)
    # orthonormal complement of the three rigid translations
    trans = np.zeros((3, n, 3))
    for a in range(3):
        trans[a, :, a] = 1 / np.sqrt(n)
    trans = trans.reshape(3, n3)
    q, _ = np.linalg.qr(np.concatenate([trans.T, np.eye(n3)], axis=1))
    comp = q[:, 3:n3]  # (3N, 3N-3)
    m1 = comp.T @ _random_invariant(sym, rng) @ comp
    m2 = comp.T @ _random_invariant(sym, rng) @ comp
    w, v = np.linalg.eigh(m1)
    scale = max(np.abs(w).max(), 1e-12)
    groups, start = [], 0
    for i in range(1, len(w) + 1):
        if i == len(w) or (w[i] - w[i - 1]) > 1e-7 * scale:
            groups.append(list(range(start, i)))
            start = i
    subspaces = []
    for gidx in groups:
        b = v[:, gidx]
        r2 = b.T @ m2 @ b
        if not np.allclose(r2, np.eye(len(gidx)) * np.trace(r2) / len(gidx), atol=1e-7 * scale):
            return None  # accidental degeneracy merged two subspaces: try another seed
        subspaces.append(comp @ b)
    return subspaces


def _tidy_basis(b: np.ndarray, n: int) -> np.ndarray:
    """Deterministic, axis-aligned orthonormal basis of a subspace (columns of b, 3N x d)."""
    d = b.shape[1]
    if d > 1:
        weights = (3.0 - np.arange(3)[None, :] + 1e-3 * np.arange(n)[:, None]).reshape(-1)
        _, rot = np.linalg.eigh(b.T @ (weights[:, None] * b))
        b = b @ rot
    for c in range(d):
        col = b[:, c]
        big = np.flatnonzero(np.abs(col) > np.abs(col).max() - 1e-8)[0]
        if col[big] < 0:
            b[:, c] = -col
    b[np.abs(b) < 1e-13] = 0.0
    return b


@lru_cache(maxsize=8)
def _displacement_modes_cached(reference: ReferenceSupercell, seed: int) -> ModeBasis:
    sym = supercell_symmetry(reference)
    n = reference.n_atoms
    subspaces = None
    for attempt in range(8):
        subspaces = _decompose(sym, seed + attempt)
        if subspaces is not None:
            break
    if subspaces is None:  # pragma: no cover - probability ~0
        raise RuntimeError("could not split the displacement representation into irreducible subspaces")
    kpts = _kpoints(reference)
    tr_idx, tr_vec = _translation_ops(sym)
    point_idx = sym.point_op_indices
    classified = []
    for b in subspaces:
        b = _tidy_basis(b, n)
        kv, kname, irrep, label = _classify(sym, b, kpts, tr_idx, tr_vec, point_idx)
        classified.append((b, kv, kname, irrep, label))
    korder = {"GM": 0, "X": 1, "M": 2, "R": 3}

    def sort_key(item):
        b, kv, kname, irrep, label = item
        # within equal labels, order copies by a deterministic feature of the subspace
        feature = tuple(np.round(np.sort(np.abs(b).sum(axis=1))[::-1][:6], 6))
        return (korder.get(kname, 9), kname, label, feature)

    classified.sort(key=sort_key)
    vectors, subs, counts, seen = [], [], {}, {}
    for *_ignored, label in classified:
        counts[label] = counts.get(label, 0) + 1
    for b, kv, kname, irrep, label in classified:
        seen[label] = seen.get(label, 0) + 1
        name = label if counts[label] == 1 else f"{label}_{seen[label]}"
        idx = list(range(len(vectors), len(vectors) + b.shape[1]))
        vectors.extend(b.T)
        subs.append(ModeSubspace(name, label, kname, irrep, kv, idx))
    return ModeBasis(reference, np.array(vectors).reshape(-1, n, 3), subs)


def displacement_modes(reference: ReferenceSupercell, seed: int = 0) -> ModeBasis:
    """Symmetry-adapted displacement modes of ``reference`` (3N - 3 orthonormal modes, labelled subspaces).

    The decomposition is deterministic for a given ``seed`` (which only picks the random invariant
    matrix; any seed gives the same subspaces up to the choice of basis within repeated irreps).
    The result is cached per supercell: treat it as read-only.
    """
    return _displacement_modes_cached(reference, int(seed))


# ----------------------------------------------------------------------------- strains
@dataclass(frozen=True)
class StrainBasis:
    """Orthonormal (Frobenius) symmetry-adapted strain directions of m-3m as Voigt 6-vectors."""

    vectors: np.ndarray  #: (6, 6) rows are strain 6-vectors (xx, yy, zz, yz, xz, xy), tensor components
    labels: tuple  #: per direction, e.g. ``"Eg(2)"``
    subspaces: dict  #: irrep -> list of row indices: A1g [0], Eg [1, 2], T2g [3, 4, 5]

    @property
    def matrices(self) -> np.ndarray:
        """(6, 3, 3) symmetric tensors of the directions."""
        return np.stack([strain_to_matrix(v) for v in self.vectors])

    def amplitudes(self, strain) -> np.ndarray:
        """Amplitudes (6,) of a strain (6-vector or 3x3): Frobenius projections on the directions."""
        e = strain_to_matrix(strain)
        return np.einsum("kab,ab->k", self.matrices, e)

    def strain(self, amplitudes) -> np.ndarray:
        """Strain 6-vector from amplitudes (6,)."""
        return matrix_to_strain(np.einsum("k,kab->ab", np.asarray(amplitudes, float), self.matrices))

    def subspace_vectors(self, irrep: str) -> np.ndarray:
        if irrep not in self.subspaces:
            raise KeyError(f"unknown strain subspace {irrep!r}; expected one of {list(self.subspaces)}")
        return self.vectors[self.subspaces[irrep]]


def strain_basis() -> StrainBasis:
    """A1g (volume), Eg (two: 2zz-xx-yy and xx-yy), T2g (three shears yz, xz, xy) of m-3m."""
    s2, s3, s6 = np.sqrt(2), np.sqrt(3), np.sqrt(6)
    vectors = np.array(
        [
            [1 / s3, 1 / s3, 1 / s3, 0, 0, 0],
            [-1 / s6, -1 / s6, 2 / s6, 0, 0, 0],
            [1 / s2, -1 / s2, 0, 0, 0, 0],
            [0, 0, 0, 1 / s2, 0, 0],
            [0, 0, 0, 0, 1 / s2, 0],
            [0, 0, 0, 0, 0, 1 / s2],
        ]
    )
    labels = ("A1g", "Eg(1)", "Eg(2)", "T2g(yz)", "T2g(xz)", "T2g(xy)")
    return StrainBasis(vectors, labels, {"A1g": [0], "Eg": [1, 2], "T2g": [3, 4, 5]})
