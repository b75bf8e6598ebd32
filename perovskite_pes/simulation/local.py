"""Energy changes of local Monte Carlo moves in O(1): cached cluster and site terms of the model.

The linear cluster expansion and the cluster net are sums of one term per cluster; the site net is
a sum of one term per site, each a function of the clusters that contain the site. A move of site
i therefore changes only the terms of the clusters containing i (cluster models) or of the sites
that share a cluster with i (site nets). :class:`LocalEnergy` caches every cluster's basis
functions (and every site's features) for the current structure and, for a move, evaluates only
the touched clusters (:meth:`perovskite_pes.descriptors.Featurizer.cluster_features_subset`).

Many moves are evaluated at once when they do not interact: no term depends on two of them. The
sites are coloured once (greedy colouring of the interaction graph: sharing a cluster for cluster
models, sharing a cluster with a common site for site nets), and a colour class is a set of moves
whose energy changes add up exactly, so accepting each with its own Metropolis test is the same as
visiting them one after the other.

Models that are not sums of local terms (the pair potential) use :class:`GlobalEnergy`: each move is
a full energy evaluation, O(N).
"""

from __future__ import annotations

import logging

import numpy as np

from ..models.base import EnergyModel
from ..structure import ReferenceSupercell

logger = logging.getLogger(__name__)


def _torch():
    import torch

    return torch


class GlobalEnergy:
    """Energy differences by full evaluation (any model): one move at a time, O(N) each."""

    local = False

    def __init__(self, model: EnergyModel, reference: ReferenceSupercell):
        self.model = model
        self.reference = reference
        self.positions = None
        self.lattice = None
        self.energy = None

    def reset(self, positions, lattice) -> float:
        self.positions = np.array(positions, dtype=float)
        self.lattice = np.array(lattice, dtype=float)
        self.energy = float(
            self.model.compute(self.positions, self.lattice, self.reference, forces=False, stress=False)["energy"]
        )
        return self.energy

    def colors(self) -> list[np.ndarray]:
        return [np.array([i]) for i in range(self.reference.n_atoms)]

    def delta(self, sites, new_positions) -> np.ndarray:
        sites = np.asarray(sites)
        pos = self.positions.copy()
        pos[sites] = new_positions
        e = float(self.model.compute(pos, self.lattice, self.reference, forces=False, stress=False)["energy"])
        self._pending = (sites, np.asarray(new_positions), e)
        return np.array([e - self.energy])

    def commit(self, accepted) -> None:
        sites, new, e = self._pending
        if bool(np.asarray(accepted).reshape(-1)[0]):
            self.positions[sites] = new
            self.energy = e


class LocalEnergy:
    """Cached cluster/site terms of a cluster-based model on one supercell; O(1) energy changes of moves.

    Example
    -------
    >>> le = LocalEnergy(model, reference)                     # doctest: +SKIP
    >>> e = le.reset(positions, lattice)                       # full evaluation, fills the caches  # doctest: +SKIP
    >>> de = le.delta(sites, new_positions)                    # sites from one colour class  # doctest: +SKIP
    >>> le.commit(de < 0)                                      # keep the accepted moves  # doctest: +SKIP
    """

    local = True

    def __init__(self, model: EnergyModel, reference: ReferenceSupercell):
        torch = _torch()
        self.model = model
        self.reference = reference
        self.kind = model.unit_kind
        if self.kind not in ("cluster", "site"):
            raise ValueError(f"{type(model).__name__} is not a sum of local terms")
        self.fz = model.featurizer_for(reference)
        n = reference.n_atoms
        self.sites_of = [orb.sites.astype(np.int64) for orb in self.fz.orbits]  # (n_cl, n_sites) per orbit
        # site -> clusters containing it, per orbit, padded: (N, k_max) with -1
        self.site_clusters = []
        for sites in self.sites_of:
            n_cl, k = sites.shape
            pairs = np.unique(np.stack([sites.reshape(-1), np.repeat(np.arange(n_cl), k)], axis=1), axis=0)
            counts = np.bincount(pairs[:, 0], minlength=n)
            width = int(counts.max()) if len(counts) else 0
            table = -np.ones((n, max(width, 1)), dtype=np.int64)
            start = np.concatenate([[0], np.cumsum(counts)[:-1]])
            col = np.arange(len(pairs)) - start[pairs[:, 0]]
            table[pairs[:, 0], col] = pairs[:, 1]
            self.site_clusters.append(torch.as_tensor(table))
        if self.kind == "site":
            self._init_sites()
        self.positions = None

    def _init_sites(self):
        """Where each cluster's functions land in the site features: site orbit, row and column offset."""
        fz = self.fz
        n = self.reference.n_atoms
        self.site_orbit = -np.ones(n, dtype=np.int64)
        self.site_row = -np.ones(n, dtype=np.int64)
        for so, members in enumerate(fz.site_indices):
            self.site_orbit[members] = so
            self.site_row[members] = np.arange(len(members))
        n_fun = fz.n_functions
        self.col_offset = -np.ones((len(fz.site_indices), len(fz.orbits)), dtype=np.int64)
        for so, names in enumerate(fz.site_feature_orbits):
            off = 0
            for name in names:
                o = fz.orbit_names.index(name)
                self.col_offset[so, o] = off
                off += n_fun[o]
        self.n_per_cluster = [float(orb.n_sites) for orb in fz.orbits]

    # ------------------------------------------------------------------ state
    def reset(self, positions, lattice) -> float:
        """Full evaluation at ``positions`` (N, 3, reference order, unwrapped) and ``lattice``; returns the energy."""
        torch = _torch()
        self.positions = torch.as_tensor(np.array(positions, dtype=float))
        self.lattice = torch.as_tensor(np.array(lattice, dtype=float))
        with torch.no_grad():
            feats = self.fz.cluster_features(self.positions[None], self.lattice[None])
            self.phi = [f[0].clone() for f in feats]
            if self.kind == "site":
                site = self.fz.site_features(self.positions[None], self.lattice[None], feats)
                self.G = [s[0].clone() for s in site]
                self.site_e = [self.model.unit_energies(so, g) for so, g in enumerate(self.G)]
            energy = self.model.compute(
                self.positions.numpy(), self.lattice.numpy(), self.reference, forces=False, stress=False
            )["energy"]
        self.energy = float(energy)
        self._pending = None
        return self.energy

    # ------------------------------------------------------------------ colouring
    def interaction_sets(self):
        """Sparse boolean (N, N): sites whose moves interact (share a term)."""
        import scipy.sparse as sp

        n = self.reference.n_atoms
        rows, cols = [], []
        offset = 0
        for sites in self.sites_of:
            n_cl, k = sites.shape
            rows.append(sites.reshape(-1))
            cols.append(offset + np.repeat(np.arange(n_cl), k))
            offset += n_cl
        inc = sp.csr_matrix(
            (np.ones(sum(len(r) for r in rows)), (np.concatenate(rows), np.concatenate(cols))), shape=(n, offset)
        )
        adj = (inc @ inc.T).astype(bool).astype(np.float32)
        if self.kind == "site":  # a site term depends on every site of every cluster containing it
            adj = (adj @ adj).astype(bool)
        return adj.tocsr()

    def colors(self) -> list[np.ndarray]:
        """Classes of sites whose moves do not interact (greedy colouring, largest classes first)."""
        adj = self.interaction_sets()
        n = self.reference.n_atoms
        color = -np.ones(n, dtype=np.int64)
        for i in range(n):
            nb = adj.indices[adj.indptr[i] : adj.indptr[i + 1]]
            used = np.unique(color[nb])
            used = used[used >= 0]
            c = 0
            for u in used:  # sorted: the first gap is the smallest free colour
                if u != c:
                    break
                c += 1
            color[i] = c
        classes = [np.flatnonzero(color == c) for c in range(color.max() + 1)]
        logger.info("%d sites in %d non-interacting classes (%s model)", n, len(classes), self.kind)
        return classes

    # ------------------------------------------------------------------ moves
    def _touched(self, sites_t):
        """Per orbit: touched cluster indices and, for each, the index (in ``sites``) of the move that touches it."""
        torch = _torch()
        sel, owner = [], []
        for table in self.site_clusters:
            rows = table.index_select(0, sites_t)  # (m, k)
            valid = rows >= 0
            sel.append(rows[valid])
            owner.append(torch.nonzero(valid)[:, 0])
        return sel, owner

    def delta(self, sites, new_positions) -> np.ndarray:
        """Energy change (eV) of each move ``sites[j] -> new_positions[j]``; the moves must not interact."""
        torch = _torch()
        sites_t = torch.as_tensor(np.asarray(sites, dtype=np.int64))
        new_t = torch.as_tensor(np.asarray(new_positions, dtype=float))
        m = len(sites_t)
        pos = self.positions.clone()
        pos[sites_t] = new_t
        sel, owner = self._touched(sites_t)
        with torch.no_grad():
            new = self.fz.cluster_features_subset(pos[None], self.lattice[None], sel)
            de = torch.zeros(m, dtype=torch.float64)
            if self.kind == "cluster":
                for o, (s, w) in enumerate(zip(sel, owner)):
                    if len(s):
                        diff = self.model.unit_energies(o, new[o][0]) - self.model.unit_energies(
                            o, self.phi[o].index_select(0, s)
                        )
                        de.index_add_(0, w, diff)
                site_part = None
            else:
                site_part = self._site_delta(sel, owner, new, de)
                if getattr(self.model, "cluster_window_", None) is not None:  # a bounded site net's cluster walls
                    for o, (s, w) in enumerate(zip(sel, owner)):
                        if len(s):
                            diff = self.model.cluster_wall(o, new[o][0]) - self.model.cluster_wall(
                                o, self.phi[o].index_select(0, s)
                            )
                            de.index_add_(0, w, diff)
        self._pending = (sites_t, new_t, sel, owner, [x[0] for x in new], site_part)
        return de.numpy()

    def _site_delta(self, sel, owner, new, de):
        """Add the site-term changes to ``de``; returns what :meth:`commit` needs."""
        torch = _torch()
        n_so = len(self.G)
        rows_by, cols_by, vals_by, own_by = (
            [[] for _ in range(n_so)],
            [[] for _ in range(n_so)],
            [[] for _ in range(n_so)],
            [[] for _ in range(n_so)],
        )
        for o, (s, w) in enumerate(zip(sel, owner)):
            if not len(s):
                continue
            d = (new[o][0] - self.phi[o].index_select(0, s)) / self.n_per_cluster[o]  # (m_o, F_o)
            members = torch.as_tensor(self.sites_of[o]).index_select(0, s)  # (m_o, n)
            nf = d.shape[1]
            for k in range(members.shape[1]):
                site = members[:, k].numpy()
                so = self.site_orbit[site]
                for target in np.unique(so):
                    pick = np.flatnonzero(so == target)
                    off = int(self.col_offset[target, o])
                    rows_by[target].append(torch.as_tensor(self.site_row[site[pick]]))
                    cols_by[target].append(off + torch.arange(nf))
                    vals_by[target].append(d[pick])
                    own_by[target].append(w[pick])
        changes = []
        for so in range(n_so):
            if not rows_by[so]:
                changes.append(None)
                continue
            rows = torch.cat(rows_by[so])
            owners = torch.cat(own_by[so])
            uniq, inv = torch.unique(rows, return_inverse=True)
            width = self.G[so].shape[1]
            dg = torch.zeros(len(uniq), width, dtype=torch.float64)
            for r_inv, cols, vals in zip(inv.split([len(r) for r in rows_by[so]]), cols_by[so], vals_by[so]):
                dg.index_put_(
                    (r_inv[:, None].expand(-1, len(cols)), cols[None, :].expand(len(r_inv), -1)), vals, accumulate=True
                )
            row_owner = torch.zeros(len(uniq), dtype=torch.long)
            row_owner[inv] = owners
            g_new = self.G[so].index_select(0, uniq) + dg
            e_new = self.model.unit_energies(so, g_new)
            de.index_add_(0, row_owner, e_new - self.site_e[so].index_select(0, uniq))
            changes.append((uniq, row_owner, g_new, e_new))
        return changes

    def commit(self, accepted) -> None:
        """Keep the accepted moves of the last :meth:`delta` (boolean per move) and update the caches."""
        torch = _torch()
        sites_t, new_t, sel, owner, new_phi, site_part = self._pending
        acc = torch.as_tensor(np.asarray(accepted, dtype=bool))
        if not bool(acc.any()):
            return
        self.positions[sites_t[acc]] = new_t[acc]
        for o, (s, w) in enumerate(zip(sel, owner)):
            if len(s):
                keep = acc[w]
                self.phi[o][s[keep]] = new_phi[o][keep]
        if site_part is not None:
            for so, ch in enumerate(site_part):
                if ch is None:
                    continue
                uniq, row_owner, g_new, e_new = ch
                keep = acc[row_owner]
                self.G[so][uniq[keep]] = g_new[keep]
                self.site_e[so][uniq[keep]] = e_new[keep]
        self._pending = None


def energy_engine(model: EnergyModel, reference: ReferenceSupercell, engine: str = "auto"):
    """:class:`LocalEnergy` for cluster and site models (``auto`` or ``local``), else :class:`GlobalEnergy`."""
    if engine not in ("auto", "local", "global"):
        raise ValueError(f"engine must be auto, local or global; got {engine!r}")
    if engine == "global" or (engine == "auto" and model.unit_kind not in ("cluster", "site")):
        return GlobalEnergy(model, reference)
    return LocalEnergy(model, reference)
