"""Vectorised, differentiable cluster and site features in torch (float64).

Evaluation, for a batch of B configurations:
1. every distinct pair ("bond") of every cluster once: the pair vector
       x_j - x_i - k @ L,   k = round((frac_j - frac_i) - s0)   (no gradient through k)
   where s0 is the reference pair vector in supercell fractional units (explicit image
   offset included). This unwraps atoms that were re-wrapped into the cell and keeps pairs
   longer than half the supercell right, as long as no pair deviates from its reference
   vector by half a supercell.
2. per group of orbits that share a basis (e.g. all pairs): metric f(d^2/d~^2), Q = F U^T,
   then all monomials from two gathers of precomputed "half" products and one dense
   matrix product with the coefficient matrix.
3. site features (Eq. 15): index_add of cluster features over the cluster->site incidence,
   divided by the number of sites of the cluster.
Forces and stress follow by autograd through positions and lattice.
"""

from __future__ import annotations

import functools
import logging
import math
import time

import numpy as np

from .ccd import DEFAULT_SAMPLES, DEFAULT_SIGMA_FRACTION, ClusterBasis
from .clusters import ClusterOrbit, ClusterPrototype, parse_clusters, site_orbits
from .errors import DescriptorError
from .metrics import check_metric, metric_from_ratio2

logger = logging.getLogger(__name__)

FORMAT = "perovskite_pes.descriptors.Featurizer"
FORMAT_VERSION = 1


def _species_label(species: list[str]) -> str:
    """'Pb-Br' for pairs and triplets, 'Br6' style for larger clusters."""
    if len(species) <= 3:
        return "-".join(species)
    counts: dict[str, int] = {}
    for s in species:
        counts[s] = counts.get(s, 0) + 1
    return "".join(f"{s}{n if n > 1 else ''}" for s, n in counts.items())


class _PolyEval:
    """Evaluates all invariants of one basis from Q (..., n) with two gathers per monomial."""

    def __init__(self, invariants, torch):
        exps, coef = invariants.dense()
        n = invariants.n_vars
        max_deg = int(exps.sum(axis=1).max()) if len(exps) else 1
        h = max(1, math.ceil(max_deg / 2))
        full = []
        for e in exps:
            idx = [v for v in range(n) for _ in range(int(e[v]))]
            idx += [n] * (2 * h - len(idx))
            full.append(idx)
        full = np.array(full, dtype=np.int64).reshape(-1, 2 * h)
        halves = {}
        m0, m1 = [], []
        for row in full:
            a, b = tuple(row[:h]), tuple(row[h:])
            m0.append(halves.setdefault(a, len(halves)))
            m1.append(halves.setdefault(b, len(halves)))
        hidx = np.array(list(halves), dtype=np.int64).reshape(-1, h)
        self.h = h
        self.hidx = [torch.as_tensor(hidx[:, k]) for k in range(h)]
        self.m0 = torch.as_tensor(np.array(m0, dtype=np.int64))
        self.m1 = torch.as_tensor(np.array(m1, dtype=np.int64))
        self.coef = torch.as_tensor(coef, dtype=torch.float64)
        self.torch = torch
        self.powers = torch.as_tensor(exps[:, 0].astype(float)) if n == 1 else None
        self.int_powers = [int(p) for p in exps[:, 0]] if n == 1 else None
        # invariants are sparse in the monomials: gather + index_add beats a dense product
        nz_m, nz_f = np.nonzero(coef)
        self.n_fun = coef.shape[1]
        self.sparse = None
        if n > 1 and len(nz_m) < 0.25 * coef.size:
            self.sparse = (
                torch.as_tensor(nz_m.astype(np.int64)),
                torch.as_tensor(nz_f.astype(np.int64)),
                torch.as_tensor(coef[nz_m, nz_f]),
            )

    def __call__(self, q):
        torch = self.torch
        if self.powers is not None:  # one variable: all monomials are powers, built by products
            x = q[..., 0]
            pw = [torch.ones_like(x)]
            for _ in range(max(self.int_powers, default=0)):
                pw.append(pw[-1] * x)
            return torch.stack([pw[k] for k in self.int_powers], dim=-1) @ self.coef
        # feature-major layout: every gather below copies whole contiguous rows
        lead = q.shape[:-1]
        qt = q.reshape(-1, q.shape[-1]).T
        qe = torch.cat([qt, torch.ones_like(qt[:1])], dim=0)
        hv = qe.index_select(0, self.hidx[0])
        for k in range(1, self.h):
            hv = hv * qe.index_select(0, self.hidx[k])
        mono = hv.index_select(0, self.m0) * hv.index_select(0, self.m1)  # (n_mono, M)
        if self.sparse is None:
            out = self.coef.T @ mono
        else:
            m_idx, f_idx, vals = self.sparse
            terms = mono.index_select(0, m_idx) * vals[:, None]
            out = torch.zeros((self.n_fun, terms.shape[1]), dtype=terms.dtype, device=terms.device)
            out = out.index_add(0, f_idx, terms)
        return out.T.reshape(*lead, self.n_fun)


class Featurizer:
    """Cluster (Eq. 13) and site (Eq. 15) features of configurations of one reference supercell.

    Parameters
    ----------
    reference : ReferenceSupercell
    clusters : set name ("4p+o", "5p+o", "8p+o", "4p+t+o", "7p+t+o"), "+"-joined string or list
    max_order : highest polynomial degree of the invariant basis functions
    metric : pair deformation metric, one of lin, quad, log, inv
    truncated : keep only the leading 3n-6 CCDs of clusters with more pairs than that
    sigma_fraction, n_samples, seed : Monte Carlo settings of the G^(F) matrix (Appendix A)
    """

    def __init__(
        self,
        reference,
        clusters="7p+t+o",
        max_order: int = 2,
        metric: str = "lin",
        truncated: bool = False,
        *,
        sigma_fraction: float = DEFAULT_SIGMA_FRACTION,
        n_samples: int = DEFAULT_SAMPLES,
        seed: int = 0,
    ):
        from ..structure import ReferenceSupercell

        if not isinstance(reference, ReferenceSupercell):
            raise DescriptorError(f"reference must be a ReferenceSupercell; got {type(reference).__name__}")
        check_metric(metric)
        if isinstance(max_order, bool) or int(max_order) != max_order or max_order < 1:
            raise DescriptorError(f"max_order must be a positive integer; got {max_order!r}")
        t0 = time.perf_counter()
        prototypes = parse_clusters(clusters, reference.perovskite)
        bases = [
            ClusterBasis.build(
                p, reference.perovskite, metric, int(max_order), truncated, sigma_fraction, n_samples, seed
            )
            for p in prototypes
        ]
        self._init(
            reference,
            prototypes,
            bases,
            clusters,
            int(max_order),
            metric,
            bool(truncated),
            {"sigma_fraction": float(sigma_fraction), "n_samples": int(n_samples), "seed": int(seed)},
        )
        logger.debug("%r built in %.2f s", self, time.perf_counter() - t0)

    # ------------------------------------------------------------------ setup
    def _init(self, reference, prototypes, bases, spec, max_order, metric, truncated, settings):
        """Set up the featurizer from its recipe (the constructor, :meth:`from_dict` and
        :meth:`for_reference` all end here): the orbits of the prototypes on ``reference``, then
        the index tables evaluation uses (:meth:`_index_bonds`, :meth:`_group_orbits`,
        :meth:`_index_sites`)."""
        self.reference = reference
        self.prototypes = list(prototypes)
        self.bases = list(bases)
        self.clusters = spec if isinstance(spec, str) else [p.to_dict() for p in self.prototypes]
        self.max_order = max_order
        self.metric = metric
        self.truncated = truncated
        self.settings = dict(settings)
        self.orbits = [ClusterOrbit(p, reference) for p in self.prototypes]
        self._index_bonds()
        self._group_orbits()
        self._index_cache: dict = {}  # column subsets and incidence weights, built on first use
        self._index_sites(reference)

    def _index_bonds(self):
        """Every distinct bond (site pair and image offset) of all clusters, once: ``_bi``, ``_bj``,
        ``_bs0``; ``_bond_idx[o]`` ``(n_clusters, n_pairs)`` points each pair of orbit o at its bond."""
        import torch

        bond_key: dict[tuple, int] = {}
        bi, bj, bs0 = [], [], []
        self._bond_idx = []
        for orb in self.orbits:
            pairs = np.array(orb.prototype.pairs, dtype=int)
            i = orb.sites[:, pairs[:, 0]]
            j = orb.sites[:, pairs[:, 1]]
            s0 = orb.pair_s0
            idx = np.zeros(i.shape, dtype=np.int64)
            for c in range(i.shape[0]):
                for p in range(i.shape[1]):
                    a, b, v = int(i[c, p]), int(j[c, p]), s0[c, p]
                    key_v = tuple(np.round(v * 1e6).astype(np.int64))
                    neg = tuple(-x for x in key_v)
                    if a > b or (a == b and neg < key_v):
                        a, b, v, key_v = b, a, -v, neg
                    k = (a, b, key_v)
                    if k not in bond_key:
                        bond_key[k] = len(bi)
                        bi.append(a)
                        bj.append(b)
                        bs0.append(v)
                    idx[c, p] = bond_key[k]
            self._bond_idx.append(idx)
        self._bi = torch.as_tensor(np.array(bi, dtype=np.int64))
        self._bj = torch.as_tensor(np.array(bj, dtype=np.int64))
        self._bs0 = torch.as_tensor(np.array(bs0, dtype=float).reshape(-1, 3))

    def _group_orbits(self):
        """``_groups``: orbits that share metric, U and invariants (e.g. all pair orbits) are evaluated
        together, with their bond indices and reference distances stacked."""
        import torch

        groups: dict[tuple, dict] = {}
        for o, basis in enumerate(self.bases):
            key = (basis.metric, basis.U.shape, basis.U.tobytes(), repr(basis.invariants.to_dict()))
            g = groups.setdefault(key, {"orbits": [], "basis": basis})
            g["orbits"].append(o)
        self._groups = []
        for g in groups.values():
            idx = np.concatenate([self._bond_idx[o] for o in g["orbits"]], axis=0)
            inv_d0sq = np.concatenate(
                [
                    np.broadcast_to(1.0 / self.orbits[o].ref_distances ** 2, self._bond_idx[o].shape)
                    for o in g["orbits"]
                ],
                axis=0,
            )
            sizes = [self.orbits[o].n_clusters for o in g["orbits"]]
            basis = g["basis"]
            u = None if basis.U.shape == (1, 1) and basis.U[0, 0] == 1.0 else torch.as_tensor(basis.U.T.copy())
            self._groups.append(
                {
                    "orbits": g["orbits"],
                    "sizes": sizes,
                    "bond_idx": torch.as_tensor(idx),
                    "inv_d0sq": torch.as_tensor(np.ascontiguousarray(inv_d0sq)),
                    "metric": basis.metric,
                    "UT": u,
                    "poly": _PolyEval(basis.invariants, torch),
                }
            )

    def _index_sites(self, reference):
        """Site orbits and, per site orbit, the clusters that contain each of its sites (Eq. 15)."""
        import torch

        self.site_orbit_names, self._site_members = site_orbits(reference)
        self._site_contrib = []
        self.site_feature_orbits = []
        for members in self._site_members:
            local = -np.ones(reference.n_atoms, dtype=np.int64)
            local[members] = np.arange(len(members))
            contrib, names = [], []
            for o, orb in enumerate(self.orbits):
                hit = local[orb.sites] >= 0  # (n_cl, n)
                if not hit.any():
                    continue
                c_idx, k_idx = np.nonzero(hit)
                contrib.append(
                    (
                        o,
                        torch.as_tensor(c_idx.astype(np.int64)),
                        torch.as_tensor(local[orb.sites[c_idx, k_idx]]),
                        float(orb.n_sites),
                    )
                )
                names.append(orb.name)
            self._site_contrib.append(contrib)
            self.site_feature_orbits.append(names)

    # ------------------------------------------------------------------ device
    @property
    def device(self):
        return self._bi.device

    def to(self, device) -> Featurizer:
        """Move the index and coefficient tensors to a torch device (in place); returns self."""
        import torch

        def mv(x):
            return x.to(device) if isinstance(x, torch.Tensor) else x

        self._bi, self._bj, self._bs0 = mv(self._bi), mv(self._bj), mv(self._bs0)
        for g in self._groups:
            for k in ("bond_idx", "inv_d0sq", "UT"):
                g[k] = mv(g[k])
            p = g["poly"]
            p.hidx = [mv(x) for x in p.hidx]
            p.m0, p.m1, p.coef, p.powers = mv(p.m0), mv(p.m1), mv(p.coef), mv(p.powers)
            if p.sparse is not None:
                p.sparse = tuple(mv(x) for x in p.sparse)
        self._site_contrib = [[(o, mv(c), mv(loc), n) for o, c, loc, n in contrib] for contrib in self._site_contrib]
        self._index_cache = {}
        return self

    # ------------------------------------------------------------------ description
    @property
    def orbit_names(self) -> list[str]:
        return [o.name for o in self.orbits]

    @property
    def n_functions(self) -> list[int]:
        return [b.invariants.n_functions for b in self.bases]

    @property
    def n_clusters(self) -> list[int]:
        return [o.n_clusters for o in self.orbits]

    @property
    def degrees(self) -> list[list[int]]:
        """Polynomial degree of every function, per orbit."""
        return [b.invariants.degrees for b in self.bases]

    @property
    def site_degrees(self) -> list[list[int]]:
        """Polynomial degree of every site feature, per site orbit (the columns of site_features)."""
        deg = self.degrees
        return [[d for contrib_item in contrib for d in deg[contrib_item[0]]] for contrib in self._site_contrib]

    @property
    def n_site_features(self) -> list[int]:
        nf = self.n_functions
        return [sum(nf[c[0]] for c in contrib) for contrib in self._site_contrib]

    @property
    def n_sites(self) -> list[int]:
        return [len(m) for m in self._site_members]

    @property
    def site_indices(self) -> list[np.ndarray]:
        """Supercell site indices of every site orbit (the order of site_features' rows)."""
        return [m.copy() for m in self._site_members]

    def feature_names(self, sites: bool = False) -> list[list[str]]:
        """Column names of :meth:`cluster_features` (one list per cluster orbit) or, with ``sites``, of
        :meth:`site_features` (one list per site orbit): ``"<cluster orbit>/phi<m>_d<degree>"``."""
        names = [[f"{orb}/phi{m}_d{d}" for m, d in enumerate(deg)] for orb, deg in zip(self.orbit_names, self.degrees)]
        if not sites:
            return names
        return [[n for item in contrib for n in names[item[0]]] for contrib in self._site_contrib]

    def featurize_labelled(self, configs, sites: bool = False, batch_size: int = 128) -> dict[str, dict]:
        """:meth:`featurize` with names: per orbit (cluster orbits, or site orbits with ``sites``)
        ``{"names": [F column names], "values": array [B, U, F]}`` (numpy), in orbit order."""
        feats = self.featurize(configs, batch_size=batch_size, sites=sites)
        orbits = self.site_orbit_names if sites else self.orbit_names
        return {
            orbit: {"names": names, "values": x.numpy()}
            for orbit, names, x in zip(orbits, self.feature_names(sites=sites), feats)
        }

    def describe(self) -> list[dict]:
        """One row per cluster orbit: what ``pes basis show`` prints."""
        pv = self.reference.perovskite
        rows = []
        for orb, b in zip(self.orbits, self.bases):
            rows.append(
                {
                    "name": orb.name,
                    "species": _species_label(orb.prototype.species(pv)),
                    "n_sites": orb.n_sites,
                    "n_pairs": len(orb.prototype.pairs),
                    "max_distance": float(orb.ref_distances.max()),
                    "n_clusters": orb.n_clusters,
                    "point_group": b.group_name,
                    "n_ccd": b.n_ccd,
                    "irreps": b.irrep_summary(),
                    "n_functions": b.invariants.n_functions,
                    "per_degree": {str(k): v for k, v in sorted(b.invariants.counts_per_degree().items())},
                }
            )
        return rows

    # ------------------------------------------------------------------ evaluation
    def _inputs(self, positions, lattice):
        import torch

        pos = torch.as_tensor(positions, dtype=torch.float64, device=self.device)
        lat = torch.as_tensor(lattice, dtype=torch.float64, device=self.device)
        n = self.reference.n_atoms
        if pos.dim() == 2:
            pos = pos.unsqueeze(0)
        if lat.dim() == 2:
            lat = lat.unsqueeze(0)
        if pos.dim() != 3 or pos.shape[1:] != (n, 3):
            raise DescriptorError(
                f"positions must have shape (B, {n}, 3) for this {n}-atom supercell; got {tuple(pos.shape)}"
            )
        if lat.shape[1:] != (3, 3):
            raise DescriptorError(f"lattice must have shape (B, 3, 3); got {tuple(lat.shape)}")
        if lat.shape[0] != pos.shape[0]:
            if lat.shape[0] == 1:
                lat = lat.expand(pos.shape[0], 3, 3)
            else:
                raise DescriptorError(f"batch sizes differ: {pos.shape[0]} positions vs {lat.shape[0]} lattices")
        return pos, lat

    def bond_distances2(self, positions, lattice):
        """Squared length of every distinct cluster pair: (B, n_bonds)."""
        import torch

        pos, lat = self._inputs(positions, lattice)
        return self._bonds_d2(pos @ torch.linalg.inv(lat), lat, self._bi, self._bj, self._bs0)

    @staticmethod
    def _bond_vectors(frac, lat, bi, bj, bs0):
        """Cartesian vectors (B, n, 3) of bonds ``bi -> bj`` with reference image offsets ``bs0``."""
        import torch

        ds = frac.index_select(1, bj) - frac.index_select(1, bi) - bs0
        with torch.no_grad():
            k = torch.round(ds)
        return torch.bmm(bs0 + (ds - k), lat)

    @classmethod
    def _bonds_d2(cls, frac, lat, bi, bj, bs0):
        vec = cls._bond_vectors(frac, lat, bi, bj, bs0)
        return (vec * vec).sum(-1)

    def cluster_features_subset(self, positions, lattice, selection):
        """Features of selected clusters only: per orbit, Tensor (B, len(selection[o]), n_functions).

        ``selection[o]`` is a LongTensor of cluster indices of orbit ``o`` (None or empty: none). The
        values equal ``cluster_features(...)[o][:, selection[o]]``; only the pairs of the selected
        clusters are evaluated, so a local change (one moved site) costs O(1), not O(N).
        """
        import torch

        pos, lat = self._inputs(positions, lattice)
        frac = pos @ torch.linalg.inv(lat)
        out = []
        for o in range(len(self.orbits)):
            nf = self.bases[o].invariants.n_functions
            out.append(torch.zeros(pos.shape[0], 0, nf, dtype=pos.dtype, device=pos.device))
        for g in self._groups:
            chosen = [(o, selection[o]) for o in g["orbits"] if selection[o] is not None and len(selection[o])]
            if not chosen:
                continue
            bidx = torch.cat([self._orbit_bonds(o).index_select(0, sel) for o, sel in chosen])  # (m, p)
            inv_d0sq = torch.cat([self._orbit_inv_d0sq(o).expand(len(sel), -1) for o, sel in chosen])
            flat = bidx.reshape(-1)
            d2 = self._bonds_d2(
                frac,
                lat,
                self._bi.index_select(0, flat),
                self._bj.index_select(0, flat),
                self._bs0.index_select(0, flat),
            ).reshape(pos.shape[0], *bidx.shape)
            feats = self._group_functions(g, d2 * inv_d0sq)
            for (o, _sel), part in zip(chosen, feats.split([len(sel) for _o, sel in chosen], dim=1)):
                out[o] = part
        return out

    def _orbit_bonds(self, orbit: int):
        import torch

        key = ("bonds", orbit, str(self.device))
        t = self._index_cache.get(key)
        if t is None:
            t = torch.as_tensor(self._bond_idx[orbit], device=self.device)
            self._index_cache[key] = t
        return t

    def _orbit_inv_d0sq(self, orbit: int):
        import torch

        key = ("inv_d0sq", orbit, str(self.device))
        t = self._index_cache.get(key)
        if t is None:
            t = torch.as_tensor(1.0 / self.orbits[orbit].ref_distances ** 2, dtype=torch.float64, device=self.device)[
                None
            ]
            self._index_cache[key] = t
        return t

    @staticmethod
    def _group_functions(group, r2):
        """The invariant basis functions of a cluster group from its clusters' squared pair ratios
        ``r2`` (..., n_clusters, n_bonds)."""
        f = metric_from_ratio2(r2, group["metric"])
        return group["poly"](f if group["UT"] is None else f @ group["UT"])

    def _by_orbit(self, per_group):
        """Per cluster orbit, the clusters' part of each group's features (one tensor per group)."""
        out = [None] * len(self.orbits)
        for g, feats in zip(self._groups, per_group):
            for o, part in zip(g["orbits"], feats.split(g["sizes"], dim=1)):
                out[o] = part
        return out

    def _group_r2(self, d2):
        """Per cluster group, the squared pair ratios (B, n_clusters, n_bonds) from all pairs' ``d2``."""
        return [d2[:, g["bond_idx"]] * g["inv_d0sq"] for g in self._groups]

    def cluster_features(self, positions, lattice):
        """Per cluster orbit, Tensor (B, n_clusters, n_functions) of the invariant basis functions."""
        r2 = self._group_r2(self.bond_distances2(positions, lattice))
        return self._by_orbit([self._group_functions(g, x) for g, x in zip(self._groups, r2)])

    def linearisation_nbytes(self, n_configs: int) -> int:
        """Memory of :meth:`cluster_linearisation` for ``n_configs`` configurations (bytes)."""
        per = 3 * len(self._bi)  # the bond vectors
        for g in self._groups:
            n_clusters, n_bonds = g["bond_idx"].shape
            per += n_clusters * (n_bonds * (g["poly"].n_fun + 1) + g["poly"].n_fun)
        return 8 * per * int(n_configs)

    def cluster_linearisation(self, positions, lattice, chunk: int = 64) -> ClusterLinearisation:
        """The cluster features of configurations and their derivatives by each cluster's squared pair
        ratios, for training on forces: see :class:`ClusterLinearisation`."""
        import torch

        pos, lat = self._inputs(positions, lattice)
        with torch.no_grad():
            vectors = self._bond_vectors(pos @ torch.linalg.inv(lat), lat, self._bi, self._bj, self._bs0)
        r2 = self._group_r2((vectors * vectors).sum(-1))
        values, jac = [], []
        for g, r2_0 in zip(self._groups, r2):
            n_bonds = r2_0.shape[-1]
            of_r2 = functools.partial(self._group_functions, g)
            vals, jacs = [], []
            for start in range(0, r2_0.shape[0], chunk):
                x = r2_0[start : start + chunk]
                tangents = torch.eye(n_bonds, dtype=x.dtype).reshape(n_bonds, 1, 1, n_bonds).expand(n_bonds, *x.shape)
                dv = torch.func.vmap(lambda t, x=x, f=of_r2: torch.func.jvp(f, (x,), (t,))[1])(tangents)
                vals.append(of_r2(x))
                jacs.append(dv.permute(1, 2, 3, 0).contiguous())  # (b, n_clusters, n_functions, n_bonds)
            values.append(torch.cat(vals))
            jac.append(torch.cat(jacs))
        return ClusterLinearisation(self, r2, values, jac, vectors)

    def ccd(self, positions, lattice):
        """Per cluster orbit, the CCD vectors Q: Tensor (B, n_clusters, n_ccd)."""
        import torch

        d2 = self.bond_distances2(positions, lattice)
        dev = d2.device
        out = []
        for o, b in enumerate(self.bases):
            idx = torch.as_tensor(self._bond_idx[o], device=dev)
            r2 = d2[:, idx] / torch.as_tensor(self.orbits[o].ref_distances ** 2, device=dev)
            out.append(metric_from_ratio2(r2, b.metric) @ torch.as_tensor(b.U.T.copy(), device=dev))
        return out

    def site_features(self, positions, lattice, cluster_features=None, max_degree: int | None = None):
        """Per site orbit (A, B, X), Tensor (B, n_sites_in_orbit, n_site_features) of Eq. (15).

        Features are the concatenation, over the cluster orbits listed in
        ``site_feature_orbits[s]``, of (1/n_alpha) sum over clusters containing the site.
        ``max_degree`` keeps only the functions of degree <= max_degree (the columns where
        ``site_degrees[s] <= max_degree``, in the same order) and skips the work for the rest.
        """
        import torch

        feats = cluster_features if cluster_features is not None else self.cluster_features(positions, lattice)
        out = []
        for members, contrib in zip(self._site_members, self._site_contrib):
            parts = []
            for o, c_idx, local, n_sites in contrib:
                f = (
                    feats[o]
                    if max_degree is None
                    else feats[o].index_select(2, self._columns_up_to(o, max_degree, feats[o].device))
                )
                src = f[:, c_idx, :] / n_sites
                acc = torch.zeros(src.shape[0], len(members), src.shape[2], dtype=src.dtype, device=src.device)
                parts.append(acc.index_add(1, local, src))
            out.append(
                torch.cat(parts, dim=2)
                if parts
                else torch.zeros(feats[0].shape[0], len(members), 0, dtype=torch.float64, device=feats[0].device)
            )
        return out

    def site_features_adjoint(self, site_grads):
        """The transpose of :meth:`site_features` as a map from cluster features: given per site orbit
        the derivatives of a scalar by the site features ``(B, n_sites_in_orbit, n_site_features)``,
        per cluster orbit its derivatives by the cluster features ``(B, n_clusters, n_functions)``
        (the chain rule of a site-based energy without building a graph through the sites; linear, so
        differentiable in ``site_grads``)."""
        import torch

        b = site_grads[0].shape[0]
        out = [
            torch.zeros(
                b,
                orb.n_clusters,
                self.bases[o].invariants.n_functions,
                dtype=site_grads[0].dtype,
                device=site_grads[0].device,
            )
            for o, orb in enumerate(self.orbits)
        ]
        for grads, contrib in zip(site_grads, self._site_contrib):
            widths = [out[o].shape[2] for o, *_ in contrib]
            for (o, c_idx, local, _n_sites), part in zip(contrib, grads.split(widths, dim=2)):
                out[o] = out[o].index_add(1, c_idx, part.index_select(1, local))
        return [x / orb.n_sites for x, orb in zip(out, self.orbits)]

    def site_feature_sums(self, cluster_features):
        """Per site orbit, Tensor (B, n_site_features): the site features summed over the orbit's sites,
        straight from the cluster features (each cluster weighted by how many of its sites are in the
        orbit), without building the per-site features."""
        import torch

        out = []
        for s, contrib in enumerate(self._site_contrib):
            parts = []
            for j, (o, c_idx, _local, n_sites) in enumerate(contrib):
                key = ("incidence", s, j, str(c_idx.device))
                w = self._index_cache.get(key)
                if w is None:
                    w = torch.bincount(c_idx, minlength=self.orbits[o].n_clusters).to(torch.float64) / n_sites
                    self._index_cache[key] = w
                parts.append(torch.einsum("c,bcf->bf", w, cluster_features[o]))
            b = cluster_features[0].shape[0]
            out.append(torch.cat(parts, dim=1) if parts else torch.zeros(b, 0, dtype=torch.float64))
        return out

    def _columns_up_to(self, orbit: int, max_degree: int, device):
        import torch

        key = ("columns", orbit, int(max_degree), str(device))
        cols = self._index_cache.get(key)
        if cols is None:
            deg = np.asarray(self.bases[orbit].invariants.degrees)
            cols = torch.as_tensor(np.nonzero(deg <= int(max_degree))[0], device=device)
            self._index_cache[key] = cols
        return cols

    def arrays(self, configs):
        """Positions (B, N, 3) and lattices (B, 3, 3) of configurations, as float64 tensors."""
        import torch

        configs = list(configs)
        for c in configs:
            ref = getattr(c, "reference", None)
            if ref != self.reference:
                raise DescriptorError(
                    "configuration belongs to a different reference supercell than this featurizer; "
                    "use Featurizer.for_reference(config.reference)"
                )
        pos = np.array([c.positions for c in configs], dtype=float).reshape(-1, self.reference.n_atoms, 3)
        lat = np.array([c.lattice for c in configs], dtype=float).reshape(-1, 3, 3)
        return torch.as_tensor(pos), torch.as_tensor(lat)

    def featurize(self, configs, batch_size: int = 128, sites: bool = False, progress: bool = False):
        """Cluster features (or site features with ``sites=True``) of a list of configurations."""
        import torch

        configs = list(configs)
        if not configs:
            raise DescriptorError("no configurations to featurize")
        chunks = []
        rng = range(0, len(configs), batch_size)
        if progress:
            from tqdm import tqdm

            rng = tqdm(rng, desc="features", unit="batch")
        with torch.no_grad():
            for start in rng:
                pos, lat = self.arrays(configs[start : start + batch_size])
                cf = self.cluster_features(pos, lat)
                chunks.append(self.site_features(pos, lat, cf) if sites else cf)
        return [torch.cat([c[k] for c in chunks], dim=0) for k in range(len(chunks[0]))]

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict:
        """JSON-able recipe: clusters, U matrices and invariant polynomials (rebuilds identical features)."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "reference": self.reference.to_dict(),
            "clusters": self.clusters,
            "max_order": self.max_order,
            "metric": self.metric,
            "truncated": self.truncated,
            "settings": self.settings,
            "bases": [b.to_dict() for b in self.bases],
        }

    @classmethod
    def from_dict(cls, d: dict, reference=None) -> Featurizer:
        from ..structure import ReferenceSupercell

        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise DescriptorError(f"not a featurizer recipe (expected format {FORMAT!r})")
        if int(d.get("version", 0)) > FORMAT_VERSION:
            raise DescriptorError(
                f"featurizer recipe version {d.get('version')} is newer than supported ({FORMAT_VERSION})"
            )
        ref = reference if reference is not None else ReferenceSupercell.from_dict(d["reference"])
        bases = [ClusterBasis.from_dict(b, ref.perovskite) for b in d["bases"]]
        obj = cls.__new__(cls)
        obj._init(
            ref,
            [b.prototype for b in bases],
            bases,
            d["clusters"],
            int(d["max_order"]),
            d["metric"],
            bool(d["truncated"]),
            d.get("settings", {}),
        )
        return obj

    def for_reference(self, other) -> Featurizer:
        """The identical basis (same U and polynomials) on another supercell, e.g. 6x6x6."""
        from ..structure import ReferenceSupercell

        if not isinstance(other, ReferenceSupercell):
            raise DescriptorError(f"for_reference needs a ReferenceSupercell; got {type(other).__name__}")
        if tuple(other.perovskite.species) != tuple(self.reference.perovskite.species):
            raise DescriptorError(
                f"for_reference: species {other.perovskite.species} differ from {self.reference.perovskite.species}"
            )
        obj = self.__class__.__new__(self.__class__)
        bases = [ClusterBasis.from_dict(b.to_dict(), other.perovskite) for b in self.bases]
        obj._init(
            other, self.prototypes, bases, self.clusters, self.max_order, self.metric, self.truncated, self.settings
        )
        return obj

    def __repr__(self):
        clusters = self.clusters if isinstance(self.clusters, str) else f"{len(self.orbits)} custom orbits"
        return (
            f"Featurizer(clusters={clusters!r}, max_order={self.max_order}, metric={self.metric!r}, "
            f"truncated={self.truncated}; {len(self.orbits)} orbits, {sum(self.n_functions)} functions, "
            f"{self.reference.n_atoms}-atom supercell)"
        )


def _as_rows(idx):
    """Row indices as a LongTensor, or as a slice (a view, no copy) when they are consecutive."""
    import torch

    if isinstance(idx, slice):
        return idx
    idx = torch.as_tensor(idx, dtype=torch.long)
    n = len(idx)
    if n and int(idx[-1]) - int(idx[0]) == n - 1 and bool((idx.diff() == 1).all()):
        return slice(int(idx[0]), int(idx[0]) + n)
    return idx


class ClusterLinearisation:
    """Cluster features of fixed configurations to first order in their pair distances.

    Training a net on forces needs the features and their first derivatives at the training
    geometries only, for every weight update; both are fixed. This object holds, per cluster group,
    the features ``C0`` of the configurations and their Jacobian ``J`` by the squared pair ratios
    ``r2`` of each cluster (a few per cluster), so that :meth:`cluster_features` returns
    ``C0 + J (r2(x) - r2_0)``: equal to the featurizer's values at the stored geometry, with the same
    derivatives by positions and strain, at the cost of the pair distances instead of the invariant
    polynomials. Away from the stored geometry it is a linear approximation, so use it only there.
    With the bond vectors it also stores, :meth:`gradients` carries derivatives by the cluster
    features at the stored geometry straight to the positions and the strain (training on forces).

    >>> import numpy as np
    >>> from perovskite_pes.descriptors import Featurizer
    >>> from perovskite_pes.structure import Perovskite
    >>> ref = Perovskite().supercell(2)
    >>> fz = Featurizer(ref, clusters="4p+o", max_order=2)
    >>> pos = ref.positions[None] + np.random.default_rng(0).normal(0, 0.05, (3, ref.n_atoms, 3))
    >>> lat = np.repeat(ref.lattice[None], 3, axis=0)
    >>> lin = fz.cluster_linearisation(pos, lat)
    >>> exact, linear = fz.cluster_features(pos, lat), lin.cluster_features([0, 1, 2], pos, lat)
    >>> all(np.allclose(a.numpy(), b.numpy()) for a, b in zip(exact, linear))
    True
    """

    def __init__(self, featurizer, r2, values, jacobians, bond_vectors):
        self.featurizer = featurizer
        self.r2 = r2
        self.values = values
        self.jacobians = jacobians
        self.bond_vectors = bond_vectors

    @property
    def nbytes(self) -> int:
        tensors = (*self.r2, *self.values, *self.jacobians, self.bond_vectors)
        return sum(t.numel() * t.element_size() for t in tensors)

    def gradients(self, idx, cluster_grads, strain: bool = False):
        """Derivatives of a scalar by the positions ``(len(idx), N, 3)`` and, with ``strain``, by the
        homogeneous strain ``(len(idx), 3, 3)`` (else None) of configurations ``idx`` (consecutive ones
        are read as views, so store them in the order they are asked for) at their stored
        geometry, from its derivatives by their cluster features (per cluster orbit ``(len(idx),
        n_clusters, n_functions)``).

        The chain rule through the stored Jacobians and bond vectors, the same numbers as autograd
        through :meth:`cluster_features` at the stored positions, but linear in ``cluster_grads`` with
        fixed coefficients: what training on forces needs, differentiable in the net's weights
        through ``cluster_grads`` only.
        """
        import torch

        fz = self.featurizer
        idx = _as_rows(idx)
        vec = self.bond_vectors[idx]
        b, n_bonds = vec.shape[:2]
        d_d2 = torch.zeros(b, n_bonds, dtype=vec.dtype, device=vec.device)
        for g, jac in zip(fz._groups, self.jacobians):
            grads = torch.cat([cluster_grads[o] for o in g["orbits"]], dim=1)  # (b, n_clusters, n_functions)
            jac_b = jac[idx]  # (b, n_clusters, n_functions, n_bonds)
            if jac_b.shape[-1] == 1:  # pair clusters: a product and a sum beat many 1-column matmuls
                d_r2 = (grads * jac_b[..., 0]).sum(-1, keepdim=True)
            else:
                d_r2 = torch.matmul(grads.unsqueeze(-2), jac_b).squeeze(-2)  # (b, n_clusters, n_bonds)
            d_d2 = d_d2.index_add(1, g["bond_idx"].reshape(-1), (d_r2 * g["inv_d0sq"]).reshape(b, -1))
        along = 2.0 * d_d2.unsqueeze(-1) * vec  # d(scalar)/d(bond vector)
        n_atoms = fz.reference.n_atoms
        d_pos = (
            torch.zeros(b, n_atoms, 3, dtype=vec.dtype, device=vec.device)
            .index_add(1, fz._bj, along)
            .index_add(1, fz._bi, -along)
        )
        d_strain = torch.einsum("bni,bnj->bij", vec, along) if strain else None
        return d_pos, d_strain

    def cluster_features(self, idx, positions, lattice):
        """Per cluster orbit, Tensor (len(idx), n_clusters, n_functions) for configurations ``idx`` at
        ``positions`` and ``lattice`` (differentiable in both)."""
        import torch

        fz = self.featurizer
        idx = _as_rows(idx)
        r2 = fz._group_r2(fz.bond_distances2(positions, lattice))
        return fz._by_orbit(
            [
                c0[idx] + torch.einsum("bcfk,bck->bcf", jac[idx], x - r2_0[idx])
                for x, r2_0, c0, jac in zip(r2, self.r2, self.values, self.jacobians)
            ]
        )


__all__ = ["Featurizer", "ClusterLinearisation", "ClusterPrototype"]
