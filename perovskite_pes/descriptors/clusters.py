"""Clusters of reference sites, their point groups and their orbits in a supercell.

A cluster is an ordered list of reference sites of the *infinite* crystal, given by primitive
fractional coordinates (``points``). Its orbit in a supercell holds every cluster equivalent to
it under the reference space group, each as supercell site indices plus explicit integer image
offsets (supercell fractional units), so that the pair vector of sites k and l of a cluster is
    x[site_l] - x[site_k] + (offset_l - offset_k) @ lattice
even when the pair is longer than half the supercell.

Named clusters (see ``docs/descriptors.md``):
    p<k>         the k-th pair orbit, ordered by (reference distance, sublattice pair A<B<X,
                 orbit multiplicity per primitive cell); e.g. p1 = nearest-neighbour B-X.
    triplet      the linear B-X-B triplet (Pb-Br-Pb in CsPbBr3): its three distances follow
                 the B-X-B bond angle, i.e. the octahedral tilts.
    octahedron   the six X sites around a B (O_h, 15 pairs).
    tetrahedron  four B sites on alternate corners of the cube around an A (T_d, 6 pairs).
    stack        an A and the two X sites on parallel B-X-B links on either side of it, one layer of
                 octahedra apart (C_2v, 3 pairs): the two A-X distances move together when the
                 octahedra of the two layers tilt in phase and oppositely when they tilt in anti-phase.
Cluster sets: "4p+o", "5p+o", "8p+o", "4p+t+o", "7p+t+o" (the paper's five), any
"+"-joined combination of "<k>p", "t", "o", "tet", "s", or an explicit list of names / dicts
``{"name": ..., "points": [[x, y, z], ...]}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from itertools import combinations

import numpy as np

from .errors import DescriptorError
from .symmetry import PointGroup, cartesian_rotation, primitive_equivalent_sites, primitive_operations

#: primitive basis of the perovskite in the project's site order (A, B, X1, X2, X3)
BASIS = np.array([[0.5, 0.5, 0.5], [0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 0.5]])
BASIS_SUBLATTICE = ("A", "B", "X", "X", "X")
_SUBLATTICE_RANK = {"A": 0, "B": 1, "X": 2}

#: the paper's cluster sets (section III.C)
CLUSTER_SETS = {
    "4p+o": "4p+o",
    "5p+o": "5p+o",
    "8p+o": "8p+o",
    "4p+t+o": "4p+t+o",
    "7p+t+o": "7p+t+o",
}

_TOL = 1e-6


def basis_index(points) -> np.ndarray:
    """Index (0..4) of the primitive basis site of each point; raises if a point is not a site."""
    p = np.atleast_2d(np.asarray(points, dtype=float))
    frac = p - np.floor(p + _TOL)
    diff = frac[:, None, :] - BASIS[None, :, :]
    diff -= np.round(diff)
    hit = np.all(np.abs(diff) < 1e-5, axis=2)
    if not np.all(hit.any(axis=1)):
        bad = p[~hit.any(axis=1)][0]
        raise DescriptorError(
            f"cluster point {bad.tolist()} is not a site of the reference perovskite; expected primitive "
            "fractional coordinates of A (1/2,1/2,1/2), B (0,0,0) or X (1/2,0,0)/(0,1/2,0)/(0,0,1/2) plus integers"
        )
    return hit.argmax(axis=1)


def _point_keys(points) -> list[tuple]:
    q = np.asarray(points, dtype=float) * 2.0
    qi = np.round(q).astype(int)
    if not np.allclose(q, qi, atol=1e-5):
        raise DescriptorError("cluster points must be sites of the reference perovskite (half-integer coordinates)")
    return [tuple(int(v) for v in row) for row in qi]


def translation_key(points) -> tuple:
    """Key of a set of points that is equal for sets related by a primitive lattice translation."""
    p = np.asarray(points, dtype=float)
    best = None
    for a in range(len(p)):
        shifted = p - np.floor(p[a] + _TOL)
        k = tuple(sorted(_point_keys(shifted)))
        if best is None or k < best:
            best = k
    return best


@dataclass(frozen=True, eq=False)
class ClusterPrototype:
    """An ordered cluster of reference sites (primitive fractional coordinates, infinite crystal)."""

    name: str
    points: np.ndarray
    kind: str = "custom"

    def __post_init__(self):
        pts = np.array(self.points, dtype=float)
        if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) < 2:
            raise DescriptorError(
                f"cluster {self.name!r} needs at least 2 points given as [x, y, z]; got shape {pts.shape}"
            )
        basis_index(pts)
        if len(set(_point_keys(pts))) != len(pts):
            raise DescriptorError(f"cluster {self.name!r} lists the same site twice")
        if not self.name or any(c in self.name for c in ". "):
            raise DescriptorError(f"cluster name {self.name!r} must be non-empty without dots or spaces")
        object.__setattr__(self, "points", pts)

    @property
    def n_sites(self) -> int:
        return len(self.points)

    @cached_property
    def pairs(self) -> list[tuple[int, int]]:
        return list(combinations(range(self.n_sites), 2))

    @property
    def sublattices(self) -> list[str]:
        return [BASIS_SUBLATTICE[b] for b in basis_index(self.points)]

    def species(self, perovskite) -> list[str]:
        return [perovskite.species_of(s) for s in self.sublattices]

    def cartesian(self, perovskite) -> np.ndarray:
        return self.points @ perovskite.lattice

    def distances(self, perovskite) -> np.ndarray:
        x = self.cartesian(perovskite)
        return np.array([np.linalg.norm(x[j] - x[i]) for i, j in self.pairs])

    def key(self) -> tuple:
        return tuple(_point_keys(self.points))

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "points": self.points.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> ClusterPrototype:
        if not isinstance(d, dict) or "points" not in d:
            raise DescriptorError(f"a cluster dict needs 'points' (primitive fractional coordinates); got {d!r}")
        return cls(str(d.get("name") or "custom"), np.array(d["points"], dtype=float), str(d.get("kind", "custom")))

    # ------------------------------------------------------------------ symmetry
    def symmetry(self, perovskite) -> ClusterSymmetry:
        return ClusterSymmetry.of(self, perovskite)


@dataclass(frozen=True, eq=False)
class ClusterSymmetry:
    """Point group of a cluster embedded in the crystal: rotations, site and pair permutations.

    ``site_perms[g][k]`` is the cluster site that operation g sends site k to;
    ``pair_matrices[g]`` is M^(F)(g) of Eq. (10): F' = M F for a deformation related by g.
    """

    rotations: np.ndarray  # (n_ops, 3, 3) cartesian
    site_perms: np.ndarray  # (n_ops, n)
    pair_perms: np.ndarray  # (n_ops, N)
    group: PointGroup = field(repr=False)

    @classmethod
    def of(cls, proto: ClusterPrototype, perovskite) -> ClusterSymmetry:
        rots, trans = primitive_operations(perovskite)
        pts = proto.points
        keys = _point_keys(pts)
        index = {k: i for i, k in enumerate(keys)}
        target = translation_key(pts)
        centroid = pts.mean(axis=0)
        srots, perms = [], []
        for r, t in zip(rots, trans):
            img = pts @ r.T + t
            if translation_key(img) != target:
                continue
            shift = np.round(centroid - img.mean(axis=0))
            moved = _point_keys(img + shift)
            try:
                perm = [index[k] for k in moved]
            except KeyError:  # pragma: no cover - translation_key equality guarantees a match
                raise DescriptorError(f"inconsistent symmetry for cluster {proto.name}") from None
            srots.append(cartesian_rotation(r, perovskite.lattice))
            perms.append(perm)
        perms = np.array(perms, dtype=int)
        pair_index = {p: i for i, p in enumerate(proto.pairs)}
        pair_perms = np.array(
            [[pair_index[tuple(sorted((perm[i], perm[j])))] for i, j in proto.pairs] for perm in perms], dtype=int
        )
        return cls(np.array(srots), perms, pair_perms, PointGroup(np.array(srots)))

    @property
    def order(self) -> int:
        return len(self.rotations)

    def pair_matrices(self) -> np.ndarray:
        """M^(F)(g) for every operation: (n_ops, N, N) permutation matrices, F' = M F."""
        n_ops, n_pairs = self.pair_perms.shape
        m = np.zeros((n_ops, n_pairs, n_pairs))
        for g in range(n_ops):
            m[g, self.pair_perms[g], np.arange(n_pairs)] = 1.0
        return m


# --------------------------------------------------------------------------- named clusters


def triplet_prototype() -> ClusterPrototype:
    """Linear B-X-B triplet: B at 0, X at (1/2,0,0), B at (1,0,0)."""
    return ClusterPrototype("triplet", np.array([[0.0, 0, 0], [0.5, 0, 0], [1.0, 0, 0]]), "triplet")


def octahedron_prototype() -> ClusterPrototype:
    """The six X sites around the B at the origin (+x, -x, +y, -y, +z, -z)."""
    pts = np.array([[0.5, 0, 0], [-0.5, 0, 0], [0, 0.5, 0], [0, -0.5, 0], [0, 0, 0.5], [0, 0, -0.5]])
    return ClusterPrototype("octahedron", pts, "octahedron")


def tetrahedron_prototype() -> ClusterPrototype:
    """Four B sites on alternate corners of the cube around the A at (1/2,1/2,1/2) (T_d)."""
    pts = np.array([[0.0, 0, 0], [1.0, 1, 0], [1.0, 0, 1], [0.0, 1, 1]])
    return ClusterPrototype("tetrahedron", pts, "tetrahedron")


def stack_prototype() -> ClusterPrototype:
    """An A and the X sites of two B-X-B links along x stacked along z on either side of it (C_2v).

    Example: in CsPbBr3 it is a Cs-Br-Br triangle with two sides a/sqrt(2) and one side a (the p8 pair).

    >>> from perovskite_pes.structure import Perovskite
    >>> s = stack_prototype()
    >>> s.species(Perovskite()), s.symmetry(Perovskite()).group.name
    (['Cs', 'Br', 'Br'], 'C2v')
    """
    pts = np.array([[0.5, 0.5, 0.5], [0.5, 0, 0], [0.5, 0, 1]])
    return ClusterPrototype("stack", pts, "stack")


#: the named clusters: name -> (short token, prototype factory); a cluster set may use either
NAMED_CLUSTERS = {
    "triplet": ("t", triplet_prototype),
    "octahedron": ("o", octahedron_prototype),
    "tetrahedron": ("tet", tetrahedron_prototype),
    "stack": ("s", stack_prototype),
}
_NAMED_BY_TOKEN = {tok: f for name, (short, f) in NAMED_CLUSTERS.items() for tok in (name, short)}


def _ops_images(points, rots, trans):
    return [points @ r.T + t for r, t in zip(rots, trans)]


def pair_prototypes(perovskite, count: int) -> list[ClusterPrototype]:
    """The first ``count`` symmetrically distinct pairs, ordered as documented in the module."""
    if int(count) != count or count < 1:
        raise DescriptorError(f"number of pairs must be a positive integer; got {count!r}")
    count = int(count)
    rots, trans = primitive_operations(perovskite)
    a = perovskite.lattice_parameter
    cutoff = 1.01 * a
    while True:
        m = int(np.ceil(cutoff / a)) + 1
        cells = np.array([[i, j, k] for i in range(-m, m + 1) for j in range(-m, m + 1) for k in range(-m, m + 1)])
        seen = {}
        orbits = []
        for b in range(5):
            for b2 in range(5):
                p2 = cells + BASIS[b2]
                d = np.linalg.norm((p2 - BASIS[b]) * a, axis=1)
                for idx in np.nonzero((d > 1e-6) & (d <= cutoff + 1e-6))[0]:
                    pair = np.array([BASIS[b], p2[idx]])
                    key = translation_key(pair)
                    if key in seen:
                        continue
                    members = {translation_key(img) for img in _ops_images(pair, rots, trans)}
                    oid = len(orbits)
                    for k in members:
                        seen[k] = oid
                    subl = sorted((BASIS_SUBLATTICE[b], BASIS_SUBLATTICE[b2]), key=_SUBLATTICE_RANK.get)
                    # orient the prototype: lower sublattice first, first point in the home cell
                    if _SUBLATTICE_RANK[BASIS_SUBLATTICE[b]] > _SUBLATTICE_RANK[BASIS_SUBLATTICE[b2]]:
                        pair = pair[::-1] - np.floor(pair[1] + _TOL)
                    orbits.append(
                        {
                            "distance": float(d[idx]),
                            "sublattices": tuple(subl),
                            "multiplicity": len(members),
                            "key": min(members),
                            "points": pair,
                        }
                    )
        orbits.sort(
            key=lambda o: (
                round(o["distance"], 5),
                tuple(_SUBLATTICE_RANK[s] for s in o["sublattices"]),
                o["multiplicity"],
                o["key"],
            )
        )
        # every orbit up to the cutoff is known, so the first ``count`` are final
        if len(orbits) >= count:
            out = []
            for k, o in enumerate(orbits[:count], start=1):
                sp = "-".join(perovskite.species_of(s) for s in o["sublattices"])
                out.append(ClusterPrototype(f"p{k}_{sp}", o["points"], "pair"))
            return out
        cutoff += 0.5 * a


def parse_clusters(spec, perovskite) -> list[ClusterPrototype]:
    """Cluster prototypes from a set name ("7p+t+o"), a "+"-joined string or an explicit list."""
    items: list = []
    if isinstance(spec, str):
        tokens = [t.strip() for t in spec.split("+") if t.strip()]
        if not tokens:
            raise DescriptorError("empty cluster specification; expected e.g. '7p+t+o'")
        for t in tokens:
            if t.endswith("p") and t[:-1].isdigit():
                items.extend(f"p{k}" for k in range(1, int(t[:-1]) + 1))
            else:
                items.append(t)
    elif isinstance(spec, (list, tuple)):
        items = list(spec)
    else:
        raise DescriptorError(f"clusters must be a set name such as '7p+t+o' or a list; got {type(spec).__name__}")
    if not items:
        raise DescriptorError("no clusters given")
    pair_numbers = [int(i[1:]) for i in items if isinstance(i, str) and i[:1] == "p" and i[1:].isdigit()]
    pairs = pair_prototypes(perovskite, max(pair_numbers)) if pair_numbers else []
    out = []
    for it in items:
        if isinstance(it, ClusterPrototype):
            out.append(it)
        elif isinstance(it, dict):
            out.append(ClusterPrototype.from_dict(it))
        elif isinstance(it, str) and it[:1] == "p" and it[1:].isdigit():
            k = int(it[1:])
            if k < 1:
                raise DescriptorError(f"pair numbers start at 1; got {it!r}")
            out.append(pairs[k - 1])
        elif it in _NAMED_BY_TOKEN:
            out.append(_NAMED_BY_TOKEN[it]())
        else:
            named = ", ".join(f"{short}/{name}" for name, (short, _) in NAMED_CLUSTERS.items())
            raise DescriptorError(
                f"unknown cluster {it!r}; expected p<k> (k-th pair), {named}, "
                "a set such as '7p+t+o', or a dict with 'points'"
            )
    names = [c.name for c in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise DescriptorError(f"cluster names must be unique; repeated: {sorted(dup)}")
    return out


# --------------------------------------------------------------------------- orbits in a supercell


class SiteLocator:
    """Maps primitive fractional points of the infinite crystal to (supercell site, image offset)."""

    def __init__(self, reference):
        self.reference = reference
        self.inv_m = np.linalg.inv(reference.matrix.astype(float))
        self.ref_frac = reference.frac_coords()
        self.t_index = {tuple(int(v) for v in t): i for i, t in enumerate(reference.translations)}
        n = reference.n_cells
        # start of each basis site's block in the site order: A block, B block, X block
        self._start = np.array([0, n, 2 * n, 2 * n, 2 * n])
        self._nb = np.array([1, 1, 3, 3, 3])
        self._k = np.array([0, 0, 0, 1, 2])

    def locate(self, points) -> tuple[np.ndarray, np.ndarray]:
        p = np.atleast_2d(np.asarray(points, dtype=float))
        b = basis_index(p)
        cell = np.round(p - BASIS[b]).astype(int)
        n = np.floor(cell @ self.inv_m + 1e-8).astype(int)
        t_red = cell - n @ self.reference.matrix
        t_idx = np.array([self.t_index[tuple(int(v) for v in t)] for t in t_red])
        site = self._start[b] + t_idx * self._nb[b] + self._k[b]
        off = p @ self.inv_m - self.ref_frac[site]
        off_i = np.round(off).astype(int)
        if not np.allclose(off, off_i, atol=1e-6):  # pragma: no cover - geometry guard
            raise DescriptorError("internal error: cluster point does not map onto a supercell site")
        return site, off_i


class ClusterOrbit:
    """All clusters of the supercell equivalent to a prototype under the reference space group.

    Attributes: ``sites`` (n_clusters, n) supercell site indices, ``offsets`` (n_clusters, n, 3)
    integer image offsets in supercell fractional units, ``pair_s0`` (n_clusters, N, 3) the
    reference pair vectors in supercell fractional units, ``ref_distances`` (N,) Angstrom.
    The site order of every cluster is the image of the prototype's order under the operation
    that generated it.
    """

    def __init__(self, prototype: ClusterPrototype, reference):
        self.prototype = prototype
        self.reference = reference
        pv = reference.perovskite
        rots, trans = primitive_operations(pv)
        shapes = {}
        for img in _ops_images(prototype.points, rots, trans):
            k = translation_key(img)
            if k not in shapes:
                shapes[k] = img
        self.n_shapes = len(shapes)
        loc = SiteLocator(reference)
        tr = reference.translations
        pts = np.concatenate([shape[None, :, :] + tr[:, None, :] for shape in shapes.values()], axis=0)
        n_cl, n = pts.shape[:2]
        site, off = loc.locate(pts.reshape(-1, 3))
        self.sites = site.reshape(n_cl, n)
        self.offsets = off.reshape(n_cl, n, 3)
        pairs = np.array(prototype.pairs, dtype=int)
        frac = loc.ref_frac[self.sites] + self.offsets  # (n_cl, n, 3) unwrapped supercell fractional
        self.pair_s0 = frac[:, pairs[:, 1]] - frac[:, pairs[:, 0]]
        self.ref_distances = prototype.distances(pv)
        check = np.linalg.norm(self.pair_s0 @ reference.lattice, axis=2)
        if not np.allclose(check, self.ref_distances[None, :], atol=1e-6):  # pragma: no cover
            raise DescriptorError(f"internal error: orbit of {prototype.name} has inconsistent pair lengths")

    @property
    def name(self) -> str:
        return self.prototype.name

    @property
    def symmetry(self) -> ClusterSymmetry:
        """Cluster point group of the prototype: rotations, site and pair permutations."""
        return self.prototype.symmetry(self.reference.perovskite)

    @property
    def n_clusters(self) -> int:
        return len(self.sites)

    @property
    def n_sites(self) -> int:
        return self.prototype.n_sites


def site_orbits(reference) -> tuple[list[str], list[np.ndarray]]:
    """Symmetrically distinct site orbits of the supercell: names (e.g. A, B, X) and site indices."""
    eq = primitive_equivalent_sites(reference.perovskite)
    prim = reference.primitive_index
    names, members = [], []
    for rep in sorted(set(eq.tolist())):
        label = BASIS_SUBLATTICE[rep]
        if label in names:
            label = f"{label}{names.count(label) + 1}"
        names.append(label)
        members.append(np.nonzero(np.isin(prim, np.nonzero(eq == rep)[0]))[0])
    return names, members
