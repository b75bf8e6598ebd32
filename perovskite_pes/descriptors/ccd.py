"""Collective cluster deformations (CCDs): the matrix U of Eq. (6) and the cluster basis.

Construction (Appendix A):
1. G^(F)_mn = <f_m f_n> under isotropic Gaussian displacements of the cluster sites
   (sigma = ``sigma_fraction`` x the crystal's nearest-neighbour distance), estimated by Monte
   Carlo with antithetic samples and a fixed seed, then averaged over the cluster point group
   (M G M^T) so that it commutes with every M^(F)(g) exactly.
2. Its eigenvectors, grouped by equal eigenvalue and ordered from the largest eigenvalue,
   span invariant subspaces. Each group is checked for irreducibility with the characters; an
   accidentally degenerate group is split with a random group-averaged symmetric matrix.
3. Inside every irreducible subspace the basis is made canonical: Gram-Schmidt of the
   projections of the pair axes e_l, largest projection first, so that U does not depend on
   the eigensolver's arbitrary rotation inside a degenerate subspace.
U has orthonormal rows (no whitening): Q is dimensionless like F, and Q = U F with
F = U^T Q when untruncated. ``truncated=True`` keeps the leading 3n-6 CCDs (Q*), i.e. the
subspaces of largest eigenvalue, for clusters with more pairs than degrees of freedom.
"""

from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np

from .clusters import ClusterPrototype
from .errors import DescriptorError
from .invariants import InvariantPolynomials
from .metrics import check_metric, metric_from_ratio2, ratio_from_metric

logger = logging.getLogger(__name__)

DEFAULT_SIGMA_FRACTION = 0.15
DEFAULT_SAMPLES = 200_000


def nearest_neighbour_distance(perovskite) -> float:
    """Shortest distance between reference sites (B-X, a/2, for the cubic perovskite)."""
    return 0.5 * perovskite.lattice_parameter


def correlation_matrix(proto: ClusterPrototype, perovskite, metric: str, sigma: float, n_samples: int, seed: int):
    """Monte Carlo G^(F) (N x N), uncentred second moments of the pair metrics (Eq. A1)."""
    x0 = proto.cartesian(perovskite)
    pairs = np.array(proto.pairs)
    d0 = proto.distances(perovskite)
    rng = np.random.default_rng(seed)
    half = max(1, int(n_samples) // 2)
    g = np.zeros((len(pairs), len(pairs)))
    total = 0
    chunk = 20_000
    for start in range(0, half, chunk):
        m = min(chunk, half - start)
        noise = rng.standard_normal((m, len(x0), 3)) * sigma
        for sign in (1.0, -1.0):  # antithetic pairs cancel the odd-order noise terms
            x = x0[None] + sign * noise
            vec = x[:, pairs[:, 1]] - x[:, pairs[:, 0]]
            r2 = (vec**2).sum(-1) / d0**2
            f = metric_from_ratio2(r2, metric)
            g += f.T @ f
            total += m
    return g / total


def _group_eigen(values, tol):
    groups, cur = [], [0]
    for i in range(1, len(values)):
        if abs(values[i] - values[cur[-1]]) <= tol:
            cur.append(i)
        else:
            groups.append(cur)
            cur = [i]
    groups.append(cur)
    return groups


class ClusterBasis:
    """U, its irreducible subspaces and the invariant polynomials of one cluster prototype.

    Attributes: ``U`` (n_ccd, N), ``subspaces`` list of dicts (irrep, dim, start, eigenvalue),
    ``invariants`` (:class:`InvariantPolynomials` in the CCDs), ``group_name`` (Schoenflies),
    ``metric``, ``truncated``, ``max_order``.
    """

    def __init__(self, prototype, perovskite, metric, max_order, truncated, U, subspaces, invariants, settings):
        self.prototype = prototype
        self.perovskite = perovskite
        self.metric = metric
        self.max_order = int(max_order)
        self.truncated = bool(truncated)
        self.U = np.asarray(U, dtype=float)
        self.subspaces = [dict(s) for s in subspaces]
        self.invariants = invariants
        self.settings = dict(settings)
        self.symmetry = prototype.symmetry(perovskite)
        self.group_name = self.symmetry.group.name

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(
        cls,
        prototype: ClusterPrototype,
        perovskite,
        metric: str = "lin",
        max_order: int = 2,
        truncated: bool = False,
        sigma_fraction: float = DEFAULT_SIGMA_FRACTION,
        n_samples: int = DEFAULT_SAMPLES,
        seed: int = 0,
    ) -> ClusterBasis:
        check_metric(metric)
        if not (0 < float(sigma_fraction) < 1):
            raise DescriptorError(f"sigma_fraction must be in (0, 1); got {sigma_fraction!r}")
        if int(n_samples) < 100:
            raise DescriptorError(f"n_samples must be at least 100; got {n_samples!r}")
        key = (
            prototype.key(),
            tuple(perovskite.species),
            float(perovskite.lattice_parameter),
            metric,
            int(max_order),
            bool(truncated),
            float(sigma_fraction),
            int(n_samples),
            int(seed),
        )
        u, subspaces = _build_u_cached(*key[:4], bool(truncated), float(sigma_fraction), int(n_samples), int(seed))
        obj = cls.__new__(cls)
        obj.prototype = prototype
        obj.perovskite = perovskite
        obj.metric = metric
        obj.max_order = int(max_order)
        obj.truncated = bool(truncated)
        obj.U = u.copy()
        obj.subspaces = [dict(s) for s in subspaces]
        obj.settings = {"sigma_fraction": float(sigma_fraction), "n_samples": int(n_samples), "seed": int(seed)}
        obj.symmetry = prototype.symmetry(perovskite)
        obj.group_name = obj.symmetry.group.name
        obj.check_block_diagonal()
        obj.invariants = _invariants_cached(
            u.tobytes(),
            u.shape,
            prototype.key(),
            tuple(perovskite.species),
            float(perovskite.lattice_parameter),
            int(max_order),
        )
        logger.debug(
            "cluster %s (%s): %d CCDs = %s, %d invariants up to degree %d",
            prototype.name,
            obj.group_name,
            obj.n_ccd,
            obj.irrep_summary(),
            obj.invariants.n_functions,
            int(max_order),
        )
        return obj

    # ------------------------------------------------------------------ symmetry
    def q_matrices(self) -> np.ndarray:
        """M^(Q)(g) = U M^(F)(g) U^T for every cluster point-group operation: (n_ops, n_ccd, n_ccd)."""
        mf = self.symmetry.pair_matrices()
        return np.einsum("ij,gjk,lk->gil", self.U, mf, self.U)

    def check_block_diagonal(self, atol: float = 1e-8) -> None:
        """Raise unless every M^(Q)(g) is orthogonal and block diagonal in the subspaces."""
        mq = self.q_matrices()
        mask = np.zeros(mq.shape[1:], dtype=bool)
        for s in self.subspaces:
            a, b = s["start"], s["start"] + s["dim"]
            mask[a:b, a:b] = True
        if np.abs(mq[:, ~mask]).max(initial=0.0) > atol:
            raise DescriptorError(f"M^(Q) of cluster {self.prototype.name} is not block diagonal")
        eye = np.eye(mq.shape[1])
        if not np.allclose(np.einsum("gij,gkj->gik", mq, mq), eye[None], atol=atol):
            raise DescriptorError(f"M^(Q) of cluster {self.prototype.name} is not orthogonal")

    @property
    def n_ccd(self) -> int:
        return self.U.shape[0]

    @property
    def n_pairs(self) -> int:
        return self.U.shape[1]

    @property
    def irreps(self) -> list[str]:
        return [s["irrep"] for s in self.subspaces]

    def irrep_summary(self) -> str:
        """e.g. '2A1g + T1u + 2Eg + T2g + T2u' (order of first appearance)."""
        counts: dict[str, int] = {}
        for s in self.subspaces:
            counts[s["irrep"]] = counts.get(s["irrep"], 0) + 1
        return " + ".join((f"{c}{k}" if c > 1 else k) for k, c in counts.items())

    # ------------------------------------------------------------------ geometry helpers
    def ccd(self, distances) -> np.ndarray:
        """Q from pair distances (..., N) in the prototype's pair order (numpy)."""
        d0 = self.prototype.distances(self.perovskite)
        f = metric_from_ratio2((np.asarray(distances, dtype=float) / d0) ** 2, self.metric)
        return f @ self.U.T

    def distances_from_ccd(self, q) -> np.ndarray:
        """Pair distances from a full (untruncated) CCD vector: d = d~ r(U^T q)."""
        if self.n_ccd != self.n_pairs:
            raise DescriptorError("distances can only be recovered from the full (untruncated) CCD vector")
        f = np.asarray(q, dtype=float) @ self.U
        return self.prototype.distances(self.perovskite) * ratio_from_metric(f, self.metric)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict:
        return {
            "prototype": self.prototype.to_dict(),
            "metric": self.metric,
            "max_order": self.max_order,
            "truncated": self.truncated,
            "group": self.group_name,
            "U": self.U.tolist(),
            "subspaces": self.subspaces,
            "invariants": self.invariants.to_dict(),
            "settings": self.settings,
        }

    @classmethod
    def from_dict(cls, d: dict, perovskite) -> ClusterBasis:
        try:
            proto = ClusterPrototype.from_dict(d["prototype"])
            obj = cls(
                proto,
                perovskite,
                check_metric(d["metric"]),
                d["max_order"],
                d["truncated"],
                np.array(d["U"], dtype=float),
                d["subspaces"],
                InvariantPolynomials.from_dict(d["invariants"]),
                d.get("settings", {}),
            )
        except KeyError as exc:
            raise DescriptorError(f"invalid cluster basis recipe: missing {exc}") from exc
        if obj.U.shape[1] != len(proto.pairs) or obj.invariants.n_vars != obj.U.shape[0]:
            raise DescriptorError(f"cluster basis recipe of {proto.name} has inconsistent dimensions")
        obj.check_block_diagonal(atol=1e-6)
        return obj


# --------------------------------------------------------------------------- cached builders


def _prototype_from_key(key) -> ClusterPrototype:
    return ClusterPrototype("cluster", np.array(key, dtype=float) / 2.0)


@lru_cache(maxsize=64)
def _build_u_cached(pkey, species, a, metric, truncated, sigma_fraction, n_samples, seed):
    from ..structure import Perovskite

    perovskite = Perovskite(species, a)
    proto = _prototype_from_key(pkey)
    sym = proto.symmetry(perovskite)
    group = sym.group
    mf = sym.pair_matrices()
    n_pairs = len(proto.pairs)
    if n_pairs == 1:
        chi = np.ones(sym.order)
        return np.ones((1, 1)), [{"irrep": group.irrep_name(chi), "dim": 1, "start": 0, "eigenvalue": None}]
    sigma = sigma_fraction * nearest_neighbour_distance(perovskite)
    g = correlation_matrix(proto, perovskite, metric, sigma, n_samples, seed)
    g = np.einsum("gij,jk,glk->il", mf, g, mf) / sym.order
    g = 0.5 * (g + g.T)
    w, v = np.linalg.eigh(g)
    w, v = w[::-1], v[:, ::-1]
    tol = 1e-9 * max(abs(w).max(), 1e-300)
    rng = np.random.default_rng(seed + 1)

    def characters(basis):
        return np.einsum("ji,gjk,ki->g", basis, mf, basis)

    def irreducible(basis):
        chi = characters(basis)
        if group.irrep_labels:
            dec = group.decompose(chi)
            return len(dec) == 1 and list(dec.values())[0] == 1
        return abs(chi @ chi / sym.order - 1.0) < 1e-6

    def split(basis, depth=0):
        if irreducible(basis):
            return [basis]
        if depth > 5:
            raise DescriptorError(f"could not split the CCDs of cluster {proto.name} into irreducible subspaces")
        x = rng.standard_normal((basis.shape[1], basis.shape[1]))
        x = x + x.T
        reps = np.einsum("ji,gjk,kl->gil", basis, mf, basis)
        y = np.einsum("gij,jk,glk->il", reps, x, reps) / sym.order
        yw, yv = np.linalg.eigh(0.5 * (y + y.T))
        out = []
        for grp in _group_eigen(yw, 1e-9 * max(abs(yw).max(), 1e-300)):
            out.extend(split(basis @ yv[:, grp], depth + 1))
        return out

    blocks = []  # (eigenvalue, basis)
    for grp in _group_eigen(w, tol):
        for b in split(v[:, grp]):
            blocks.append((float(np.mean(w[grp])), b))
    # canonical basis inside each irreducible subspace
    rows, subspaces = [], []
    start = 0
    n_keep = n_pairs
    n_sites = proto.n_sites
    if truncated and n_sites >= 4 and n_pairs > 3 * n_sites - 6:
        n_keep = 3 * n_sites - 6
    for ev, b in blocks:
        if start >= n_keep:
            break
        p = b @ b.T
        cand = p.T  # column l: projection of e_l
        norms = np.round(np.linalg.norm(cand, axis=0), 9)
        order = sorted(range(n_pairs), key=lambda k: (-norms[k], k))
        basis = []
        for col in order:
            vec = cand[:, col].copy()
            for u in basis:
                vec -= (u @ vec) * u
            nv = np.linalg.norm(vec)
            if nv > 1e-6:
                basis.append(vec / nv)
            if len(basis) == b.shape[1]:
                break
        basis = np.array(basis)
        chi = characters(basis.T)
        subspaces.append({"irrep": group.irrep_name(chi), "dim": int(b.shape[1]), "start": start, "eigenvalue": ev})
        rows.append(basis)
        start += b.shape[1]
    u = np.vstack(rows)
    u[np.abs(u) < 1e-13] = 0.0
    return u, subspaces


@lru_cache(maxsize=64)
def _invariants_cached(u_bytes, u_shape, pkey, species, a, max_order):
    from ..structure import Perovskite

    u = np.frombuffer(u_bytes, dtype=float).reshape(u_shape)
    sym = _prototype_from_key(pkey).symmetry(Perovskite(species, a))
    mq = np.einsum("ij,gjk,lk->gil", u, sym.pair_matrices(), u)
    mq[np.abs(mq) < 1e-12] = 0.0
    return InvariantPolynomials.build(mq, max_order)
