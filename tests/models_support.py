"""Test support for the models layer: a small featurizer with the descriptors layer's interface.

``ShellFeaturizer`` uses the nearest pair shells of the cubic perovskite (B-X, A-X, X-X, A-B) as
cluster orbits, with the invariant functions (f, f^2) of the linear pair deformation
f = d / d0 - 1; site features are the sums over the clusters containing each site. It is
deliberately simple (every pair orbit is a true orbit of Pm-3m, so energies built on it are
symmetric) and lets the model tests run independently of the full CCD basis.
"""

from __future__ import annotations

import numpy as np
import torch

from perovskite_pes.models.base import EnergyModel
from perovskite_pes.structure import Configuration, Perovskite, ReferenceSupercell

SUB = {"A": 0, "B": 1, "X": 2}


class ShellFeaturizer:
    def __init__(self, reference: ReferenceSupercell, rmax: float | None = None):
        from ase import Atoms
        from ase.neighborlist import neighbor_list

        self.reference = reference
        a = reference.perovskite.lattice_parameter
        self.rmax = float(rmax if rmax is not None else 0.9 * a)
        atoms = Atoms(symbols=reference.species, positions=reference.positions, cell=reference.lattice, pbc=True)
        i, j, s, d = neighbor_list("ijSd", atoms, self.rmax)
        keep = i < j
        i, j, s, d = i[keep], j[keep], s[keep], d[keep]
        lab = np.array([SUB[x] for x in reference.sublattice])
        key = [("ABX"[min(lab[p], lab[q])] + "ABX"[max(lab[p], lab[q])], round(dd / a, 4)) for p, q, dd in zip(i, j, d)]
        names = sorted(set(key), key=lambda k: (k[1], k[0]))
        self.orbit_names = [f"{n}@{r:.4f}a" for n, r in names]
        self._orbits = []
        for name in names:
            sel = np.array([k == name for k in key])
            self._orbits.append(
                (
                    torch.as_tensor(i[sel]),
                    torch.as_tensor(j[sel]),
                    torch.as_tensor(s[sel], dtype=torch.float64),
                    torch.as_tensor(d[sel]),
                )
            )
        self.n_functions = [2] * len(self._orbits)
        self.site_orbit_names = ["A", "B", "X"]
        self.n_site_features = [2 * len(self._orbits)] * 3
        self.degrees = [[1, 2]] * len(self._orbits)  # f and f^2
        self.site_degrees = [[1, 2] * len(self._orbits)] * 3
        self._sites = [torch.as_tensor(np.where(reference.sublattice == lab)[0]) for lab in "ABX"]

    def cluster_features(self, positions, lattice):
        out = []
        for i, j, s, d0 in self._orbits:
            vec = positions[:, j] - positions[:, i] + torch.einsum("pk,bkl->bpl", s, lattice)
            f = torch.sqrt((vec**2).sum(-1)) / d0 - 1.0
            out.append(torch.stack([f, f**2], dim=-1))
        return out

    def site_features(self, positions, lattice, cluster_features=None):
        n = self.reference.n_atoms
        per_orbit = []
        cf = cluster_features if cluster_features is not None else self.cluster_features(positions, lattice)
        for (i, j, _s, _d), phi in zip(self._orbits, cf):
            g = torch.zeros(phi.shape[0], n, 2, dtype=phi.dtype)
            g = g.index_add(1, i, phi).index_add(1, j, phi)
            per_orbit.append(g)
        g = torch.cat(per_orbit, dim=-1)
        return [g[:, idx] for idx in self._sites]

    def featurize(self, configs):
        pos = torch.as_tensor(np.stack([c.positions for c in configs]))
        lat = torch.as_tensor(np.stack([c.lattice for c in configs]))
        return self.cluster_features(pos, lat)

    def to_dict(self):
        return {"kind": "shells", "reference": self.reference.to_dict(), "rmax": self.rmax}

    @classmethod
    def from_dict(cls, d, reference=None):
        return cls(reference or ReferenceSupercell.from_dict(d["reference"]), d["rmax"])

    def for_reference(self, other):
        return ShellFeaturizer(other, self.rmax)


# ---------------------------------------------------------------------------------------- data
def morse_energy(configs, pairs=(("BX", 2.935, 0.6, 1.6), ("AX", 4.15, 0.05, 1.2), ("XX", 4.15, 0.04, 1.0))):
    """A known smooth synthetic PES: Morse pairs on the nearest shells (eV), plus a cell offset."""
    from ase.neighborlist import neighbor_list

    out = []
    for c in configs:
        atoms = c.to_ase()
        i, j, d = neighbor_list("ijd", atoms, 5.0)
        lab = np.array([SUB[x] for x in c.reference.sublattice])
        kind = np.array(["ABX"[min(a, b)] + "ABX"[max(a, b)] for a, b in zip(lab[i], lab[j])])
        e = -3.0 * c.reference.n_cells
        for name, r0, de, alpha in pairs:
            sel = (kind == name) & (np.abs(d - r0) < 0.7)
            x = np.exp(-alpha * (d[sel] - r0))
            e += 0.5 * np.sum(de * (x**2 - 2 * x) + de)
        out.append(e)
    return np.array(out)


def random_configs(reference, n, seed=0, amplitude=0.08, strain=0.01):
    rng = np.random.default_rng(seed)
    return [
        Configuration(
            reference, rng.normal(0, amplitude, (reference.n_atoms, 3)), rng.normal(0, strain, 6), {"kind": "random"}
        )
        for _ in range(n)
    ]


def small_reference():
    return Perovskite().supercell(2)


def repeat_configuration(config: Configuration, reference_big: ReferenceSupercell) -> Configuration:
    """The periodic repetition of a configuration of a diagonal supercell in a bigger diagonal one."""
    small = config.reference
    reps = np.diag(small.matrix)
    lookup = {}
    for k in range(small.n_atoms):
        lookup[(int(small.primitive_index[k]), *map(int, small.cell_translation[k] % reps))] = k
    idx = [
        lookup[(int(reference_big.primitive_index[k]), *map(int, reference_big.cell_translation[k] % reps))]
        for k in range(reference_big.n_atoms)
    ]
    return Configuration(reference_big, config.displacements[idx], config.strain)


class Harmonic(EnergyModel):
    """Einstein solid: E = k/2 sum_i |x_i - x_i^ref|^2 (fixed cell), for exact thermal averages."""

    model_type = "harmonic-test"

    def __init__(self, k: float, reference):
        self.k = k
        self.e0_ = 0.0
        self.reference_ = reference

    def _energy(self, positions, lattice, reference):
        import torch

        frac = positions @ torch.linalg.inv(lattice)
        d = frac - torch.as_tensor(reference.frac_coords())
        d = d - torch.round(d).detach()
        disp = d @ lattice
        return 0.5 * self.k * (disp * disp).sum(dim=(1, 2))
