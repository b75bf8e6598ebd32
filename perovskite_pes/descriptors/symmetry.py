"""Space-group operations of the reference and point-group bookkeeping for clusters.

* :func:`primitive_operations` asks spglib for the space group of the primitive reference
  perovskite (Pm-3m, 48 operations) in primitive fractional coordinates.
* :class:`PointGroup` holds the cartesian matrices of a finite group of orthogonal 3x3
  matrices (a cluster point group), finds its conjugacy classes, identifies it
  (Schoenflies symbol, for the subgroups of O_h) and names real irreducible representations
  from their characters (Mulliken labels).

Naming works by reducing every subgroup of O_h to a proper rotation group: a centrosymmetric
group G = H x {E, i} takes H's labels plus g/u; a non-centrosymmetric group with improper
elements is isomorphic to the proper group {det(g) g} and takes the labels of the matching
Schoenflies group (T_d <-> O, C4v/D2d <-> D4, C3v <-> D3, C2v <-> D2, Cs <-> C2, S4 <-> C4).
Where classes of a table share determinant, trace and size (C2' vs C2'' of D4, the three C2
of D2), the class whose axis lies along a cubic axis of the crystal comes first; B labels of
D2h and C2v therefore follow that (documented) axis choice.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .errors import DescriptorError

# --------------------------------------------------------------------------- space group


@lru_cache(maxsize=16)
def _primitive_operations_cached(species: tuple, a: float):
    import spglib

    from ..structure import Perovskite

    s = Perovskite(species, a).primitive_structure()
    numbers = [site.specie.Z for site in s]
    cell = (s.lattice.matrix, s.frac_coords, numbers)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # spglib's old error handling notice
        sym = spglib.get_symmetry(cell, symprec=1e-5)
    if sym is None:  # pragma: no cover - spglib failure
        raise DescriptorError("spglib could not find the space group of the reference perovskite")
    rots = np.array(sym["rotations"], dtype=int)
    trans = np.array(sym["translations"], dtype=float)
    trans -= np.floor(trans + 1e-8)
    return rots, trans, np.array(sym["equivalent_atoms"], dtype=int)


def primitive_operations(perovskite):
    """Space-group operations of the primitive reference: (rotations (n,3,3) int, translations (n,3)).

    Both act on primitive fractional coordinates: p' = R p + t. For the cubic perovskite this
    is Pm-3m with 48 operations.
    """
    rots, trans, _ = _primitive_operations_cached(tuple(perovskite.species), float(perovskite.lattice_parameter))
    return rots.copy(), trans.copy()


def primitive_equivalent_sites(perovskite) -> np.ndarray:
    """spglib's equivalent-atom index for the 5 primitive sites (A, B, X1, X2, X3)."""
    return _primitive_operations_cached(tuple(perovskite.species), float(perovskite.lattice_parameter))[2].copy()


def cartesian_rotation(rot_frac: np.ndarray, lattice_rows: np.ndarray) -> np.ndarray:
    """Cartesian matrix S of a rotation given in fractional coordinates (lattice vectors as rows)."""
    a = np.asarray(lattice_rows, dtype=float)
    return a.T @ rot_frac @ np.linalg.inv(a.T)


# --------------------------------------------------------------------------- character tables
# Proper rotation groups (the subgroups of O). Classes: (name, trace, size); a trailing
# "*" marks classes that share trace and size with another one (resolved by axis).
# Real irreps: characters per class.

_PROPER_TABLES = {
    "C1": ([("E", 3, 1)], {"A": [1]}),
    "C2": ([("E", 3, 1), ("C2", -1, 1)], {"A": [1, 1], "B": [1, -1]}),
    "C3": ([("E", 3, 1), ("C3", 0, 1), ("C3^2", 0, 1)], {"A": [1, 1, 1], "E": [2, -1, -1]}),
    "C4": (
        [("E", 3, 1), ("C4", 1, 1), ("C2", -1, 1), ("C4^3", 1, 1)],
        {"A": [1, 1, 1, 1], "B": [1, -1, 1, -1], "E": [2, 0, -2, 0]},
    ),
    "D2": (
        [("E", 3, 1), ("C2(z)*", -1, 1), ("C2(y)*", -1, 1), ("C2(x)*", -1, 1)],
        {"A": [1, 1, 1, 1], "B1": [1, 1, -1, -1], "B2": [1, -1, 1, -1], "B3": [1, -1, -1, 1]},
    ),
    "D3": (
        [("E", 3, 1), ("2C3", 0, 2), ("3C2", -1, 3)],
        {"A1": [1, 1, 1], "A2": [1, 1, -1], "E": [2, -1, 0]},
    ),
    "D4": (
        [("E", 3, 1), ("2C4", 1, 2), ("C2", -1, 1), ("2C2'*", -1, 2), ("2C2''*", -1, 2)],
        {
            "A1": [1, 1, 1, 1, 1],
            "A2": [1, 1, 1, -1, -1],
            "B1": [1, -1, 1, 1, -1],
            "B2": [1, -1, 1, -1, 1],
            "E": [2, 0, -2, 0, 0],
        },
    ),
    "T": (
        [("E", 3, 1), ("4C3", 0, 4), ("4C3^2", 0, 4), ("3C2", -1, 3)],
        {"A": [1, 1, 1, 1], "E": [2, -1, -1, 2], "T": [3, 0, 0, -1]},
    ),
    "O": (
        [("E", 3, 1), ("8C3", 0, 8), ("3C2", -1, 3), ("6C4", 1, 6), ("6C2'", -1, 6)],
        {
            "A1": [1, 1, 1, 1, 1],
            "A2": [1, 1, 1, -1, -1],
            "E": [2, -1, 2, 0, 0],
            "T1": [3, 0, -1, 1, -1],
            "T2": [3, 0, -1, -1, 1],
        },
    ),
}

#: Schoenflies symbol of G = H x Ci for proper H
_CENTRO_NAME = {
    "C1": "Ci",
    "C2": "C2h",
    "C3": "C3i",
    "C4": "C4h",
    "D2": "D2h",
    "D3": "D3d",
    "D4": "D4h",
    "T": "Th",
    "O": "Oh",
}
#: labels of the centrosymmetric group: H label + g/u (Ci: Ag/Au)

#: non-centrosymmetric improper groups: (proper isomorph, has proper C4?) -> (name, label map)
_IMPROPER = {
    "C2": ("Cs", {"A": "A'", "B": "A''"}),
    "C4": ("S4", {"A": "A", "B": "B", "E": "E"}),
    "D2": ("C2v", {"A": "A1", "B1": "A2", "B2": "B1", "B3": "B2"}),
    "D3": ("C3v", {"A1": "A1", "A2": "A2", "E": "E"}),
    "D4": (None, {"A1": "A1", "A2": "A2", "B1": "B1", "B2": "B2", "E": "E"}),  # C4v or D2d
    "O": ("Td", {"A1": "A1", "A2": "A2", "E": "E", "T1": "T1", "T2": "T2"}),
}


def _key(m: np.ndarray) -> tuple:
    return tuple(np.round(np.asarray(m, dtype=float).ravel(), 6) + 0.0)


def _rotation_axis(r: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eig(r)
    k = int(np.argmin(np.abs(w - 1.0)))
    ax = np.real(v[:, k])
    return ax / np.linalg.norm(ax)


def _is_cubic_axis(ax: np.ndarray) -> bool:
    return bool(np.isclose(np.max(np.abs(ax)), 1.0, atol=1e-6))


class PointGroup:
    """A finite group of orthogonal 3x3 matrices (cartesian), e.g. a cluster point group.

    ``matrices`` (n, 3, 3); optionally a parallel list of site permutations. The identity
    must be present.
    """

    def __init__(self, matrices):
        mats = np.asarray(matrices, dtype=float).reshape(-1, 3, 3)
        self.matrices = mats
        self.order = len(mats)
        keys = [_key(m) for m in mats]
        self._index = {k: i for i, k in enumerate(keys)}
        if len(self._index) != self.order:
            raise DescriptorError("point group matrices contain duplicates")
        if _key(np.eye(3)) not in self._index:
            raise DescriptorError("point group matrices do not contain the identity")
        # multiplication closure check and conjugacy classes
        inv = [self._index.get(_key(m.T)) for m in mats]
        if any(i is None for i in inv):
            raise DescriptorError("point group matrices are not closed under inversion")
        cls = -np.ones(self.order, dtype=int)
        classes = []
        for g in range(self.order):
            if cls[g] >= 0:
                continue
            members = set()
            for h in range(self.order):
                c = self._index.get(_key(mats[h] @ mats[g] @ mats[h].T))
                if c is None:
                    raise DescriptorError("point group matrices are not closed under multiplication")
                members.add(c)
            for c in members:
                cls[c] = len(classes)
            classes.append(sorted(members))
        self.class_of = cls
        self.classes = classes
        self._identify()

    # ------------------------------------------------------------------ identification
    def _identify(self):
        dets = np.round(np.linalg.det(self.matrices)).astype(int)
        has_inversion = _key(-np.eye(3)) in self._index
        if has_inversion:
            proper = [i for i in range(self.order) if dets[i] > 0]
            mapped = {i: self.matrices[i] for i in proper}
            mode = "centro"
        else:
            mapped = {i: dets[i] * self.matrices[i] for i in range(self.order)}
            mode = "improper" if np.any(dets < 0) else "proper"
        h_mats = np.array(list(mapped.values()))
        n = len(h_mats)
        traces = np.round(np.einsum("nii->n", h_mats)).astype(int)
        if n == 1:
            hname = "C1"
        elif n == 2:
            hname = "C2"
        elif n == 3:
            hname = "C3"
        elif n == 4:
            hname = "C4" if np.any(traces == 1) else "D2"
        elif n == 6:
            hname = "D3" if np.sum(traces == -1) == 3 else "C6"
        elif n == 8:
            hname = "D4"
        elif n == 12:
            hname = "T"
        elif n == 24:
            hname = "O"
        else:
            hname = None
        self.proper_name = hname
        self._mode = mode
        self._mapped = mapped
        if hname not in _PROPER_TABLES:
            self.name = f"G{self.order}"
            self._table = None
            return
        if mode == "centro":
            self.name = _CENTRO_NAME[hname]
        elif mode == "proper":
            self.name = hname
        else:
            name, _ = _IMPROPER.get(hname, (None, None))
            if hname == "D4":
                # proper C4 present -> C4v, otherwise the 4-fold comes from S4 -> D2d
                proper_c4 = any(dets[i] > 0 and int(round(np.trace(self.matrices[i]))) == 1 for i in range(self.order))
                name = "C4v" if proper_c4 else "D2d"
            if name is None:  # pragma: no cover
                self.name = f"G{self.order}"
                self._table = None
                return
            self.name = name
        self._table = self._build_table(hname, mapped, dets)

    def _build_table(self, hname, mapped, dets):
        """Characters of every real irrep of this group, per group element."""
        class_defs, irreps = _PROPER_TABLES[hname]
        ids = list(mapped)
        mats = {i: mapped[i] for i in ids}
        # classes of the proper isomorph (same partition as conjugation in H)
        lookup = {_key(m): i for i, m in mats.items()}
        remaining = set(ids)
        h_classes = []
        for i in ids:
            if i not in remaining:
                continue
            members = {lookup[_key(mats[j] @ mats[i] @ mats[j].T)] for j in ids}
            remaining -= members
            h_classes.append(sorted(members))
        # match classes to table rows by (trace, size); ambiguous ones by axis
        assignment = {}
        used = set()
        for ci, (cname, tr, size) in enumerate(class_defs):
            cands = [
                k
                for k, mem in enumerate(h_classes)
                if k not in used and len(mem) == size and int(round(np.trace(mats[mem[0]]))) == tr
            ]
            if not cands:
                raise DescriptorError(f"could not match class {cname} of {hname}")
            if len(cands) > 1 and cname.endswith("*"):
                # prefer classes whose axis is a cubic axis; then z before y before x
                def rank(k):
                    ax = _rotation_axis(mats[h_classes[k][0]])
                    return (0 if _is_cubic_axis(ax) else 1, -abs(ax[2]), -abs(ax[1]), -abs(ax[0]))

                cands.sort(key=rank)
            k = cands[0]
            used.add(k)
            assignment[k] = ci
        char_of_element = {}
        for k, mem in enumerate(h_classes):
            for i in mem:
                char_of_element[i] = assignment[k]
        table = {}
        for label, chars in irreps.items():
            if self._mode == "centro":
                for parity, sign in (("g", 1), ("u", -1)):
                    lab = "A" + parity if hname == "C1" else label + parity
                    vals = np.zeros(self.order)
                    inv_idx = self._index[_key(-np.eye(3))]
                    for i in ids:
                        vals[i] = chars[char_of_element[i]]
                        j = self._index[_key(-self.matrices[i])]
                        vals[j] = sign * chars[char_of_element[i]]
                    assert inv_idx is not None
                    table[lab] = vals
            elif self._mode == "proper":
                table[label] = np.array([chars[char_of_element[i]] for i in range(self.order)], dtype=float)
            else:
                lab = _IMPROPER[hname][1][label]
                table[lab] = np.array([chars[char_of_element[i]] for i in range(self.order)], dtype=float)
        return table

    # ------------------------------------------------------------------ irreps
    @property
    def irrep_labels(self) -> list[str]:
        return list(self._table) if self._table is not None else []

    def character_table(self) -> dict[str, np.ndarray]:
        """Characters of the named real irreps, one value per group element (empty if unnamed)."""
        return {k: v.copy() for k, v in (self._table or {}).items()}

    def decompose(self, characters) -> dict[str, int]:
        """Multiplicities of named irreps in a representation with the given characters per element."""
        chi = np.asarray(characters, dtype=float)
        if self._table is None:
            return {}
        out = {}
        for lab, ref in self._table.items():
            norm = float(ref @ ref) / self.order
            m = float(chi @ ref) / self.order / norm
            mi = int(round(m))
            if abs(m - mi) > 1e-6:
                raise DescriptorError(f"non-integer multiplicity {m:.4f} of {lab} in {self.name}")
            if mi:
                out[lab] = mi
        return out

    def irrep_name(self, characters) -> str:
        """Mulliken label of an irreducible representation with these characters."""
        chi = np.asarray(characters, dtype=float)
        dec = self.decompose(chi) if self._table is not None else {}
        if len(dec) == 1 and list(dec.values())[0] == 1:
            return list(dec)[0]
        dim = int(round(chi[self._index[_key(np.eye(3))]]))
        return f"Gamma({dim}d)"

    def index_of(self, matrix) -> int | None:
        return self._index.get(_key(matrix))

    def __repr__(self):
        return f"PointGroup({self.name}, order {self.order})"
