"""Structure -> configuration: undo a rigid rotation, a translation, re-wrapping and a site permutation.

Steps (:func:`match_sites`; :func:`perovskite_pes.structure.configuration.match_structure` builds the
configuration from its result):

1. Polar decomposition of the deformation gradient of the lattice, F_total = R U: the rigid
   rotation R is dropped and U - I is the strain (the lattice rows must be the rotated/strained
   rows of the reference supercell, as in any structure built from a configuration).
2. Positions are rotated back and unstrained: r + u = U^-1 R^T x.
3. A rigid translation is estimated from the B sublattice (circular mean of the offsets of the
   B atoms from the primitive lattice points, in (-1/2, 1/2] of a primitive cell) and removed.
4. Atoms are matched to reference sites of the same species by the Hungarian algorithm on the
   minimum-image distances in the supercell. The matching is unique when every atom lies closer
   to its site than half the distance between two sites of its species; otherwise (or when a
   displacement exceeds ``max_displacement``) the structure is rejected.
"""

from __future__ import annotations

import numpy as np

from .reference import ReferenceSupercell
from .strain import ConfigurationError, matrix_to_strain


def _arrays(structure):
    """(lattice rows, cartesian positions, species symbols) of a pymatgen Structure or ASE Atoms."""
    if hasattr(structure, "get_cell") and hasattr(structure, "get_chemical_symbols"):
        return (
            np.array(structure.get_cell(), dtype=float),
            np.array(structure.get_positions(), dtype=float),
            list(structure.get_chemical_symbols()),
        )
    if hasattr(structure, "lattice") and hasattr(structure, "cart_coords"):
        return (
            np.array(structure.lattice.matrix, dtype=float),
            np.array(structure.cart_coords, dtype=float),
            [site.specie.symbol for site in structure],
        )
    raise ConfigurationError(f"expected a pymatgen Structure or ASE Atoms; got {type(structure).__name__}")


def _same_species_nn(reference: ReferenceSupercell, species: str) -> float:
    """Shortest distance between two reference sites of ``species`` (periodic images included)."""
    pos = reference.positions[np.array(reference.species) == species]
    if len(pos) < 2:
        return float(np.linalg.norm(reference.lattice, axis=1).min())
    d = (pos[:, None] - pos[None]) @ np.linalg.inv(reference.lattice)
    d -= np.round(d)
    dist = np.linalg.norm(d @ reference.lattice, axis=2)
    np.fill_diagonal(dist, np.inf)
    # a site and its own periodic image in a small supercell
    return float(min(dist.min(), np.linalg.norm(reference.lattice, axis=1).min()))


def unstrain(reference: ReferenceSupercell, lattice, positions):
    """Rotation R, stretch U and the positions r + u = U^-1 R^T x (rows) in the reference frame."""
    from scipy.linalg import polar

    lattice = np.asarray(lattice, float)
    if lattice.shape != (3, 3) or abs(np.linalg.det(lattice)) < 1e-8:
        raise ConfigurationError(f"structure lattice must be a non-singular 3x3 matrix; got {lattice.tolist()}")
    f_total = lattice.T @ np.linalg.inv(reference.lattice.T)
    rot, u = polar(f_total, side="right")
    if np.linalg.det(rot) < 0:
        raise ConfigurationError("structure lattice is inverted (left-handed) relative to the reference supercell")
    if np.abs(u - np.eye(3)).max() > 0.3:
        raise ConfigurationError(
            "structure lattice does not correspond to the reference supercell "
            f"{reference.matrix.tolist()} (implied strain {np.round(u - np.eye(3), 3).tolist()}); "
            "give the lattice vectors in the supercell's own basis"
        )
    undeformed = np.asarray(positions, float) @ rot @ np.linalg.inv(u)
    return rot, u, undeformed


def match_sites(
    reference: ReferenceSupercell,
    structure,
    remove_translation: bool = False,
    max_displacement: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Displacements ``(N, 3)``, strain (6-vector) and site order of a structure (any site order,
    rotated, translated, wrapped) mapped onto the reference supercell.

    ``order[site]`` is the index of the input atom matched to reference site ``site``.
    ``max_displacement`` (Angstrom) bounds each matched displacement (default: just under half the
    distance between neighbouring sites of the same species).
    """
    from scipy.optimize import linear_sum_assignment

    lattice, positions, species = _arrays(structure)
    n = reference.n_atoms
    if len(species) != n:
        raise ConfigurationError(
            f"structure has {len(species)} atoms but the reference supercell {reference.matrix.tolist()} "
            f"of {reference.perovskite.formula} has {n}"
        )
    ref_species = np.array(reference.species)
    got = {s: species.count(s) for s in set(species)}
    want = {s: int((ref_species == s).sum()) for s in set(reference.species)}
    if got != want:
        raise ConfigurationError(f"structure composition {got} does not match the reference {want}")
    _rot, u_stretch, p = unstrain(reference, lattice, positions)

    a_prim = reference.perovskite.lattice
    # rigid translation from the B sublattice (B sites sit on the primitive lattice points)
    b_species = reference.perovskite.species[1]
    pf = p[np.array(species) == b_species] @ np.linalg.inv(a_prim)
    offsets = pf - np.round(pf)
    tau = np.angle(np.exp(2j * np.pi * offsets).mean(axis=0)) / (2 * np.pi)
    tau_cart = tau @ a_prim
    p = p - tau_cart

    lat_inv = np.linalg.inv(reference.lattice)
    order = np.empty(n, dtype=int)
    disp = np.empty((n, 3))
    species_arr = np.array(species)
    for sp in sorted(set(species)):
        atoms = np.flatnonzero(species_arr == sp)
        sites = np.flatnonzero(ref_species == sp)
        d = (p[atoms][:, None, :] - reference.positions[sites][None, :, :]) @ lat_inv
        d -= np.round(d)
        dc = d @ reference.lattice
        dist = np.linalg.norm(dc, axis=2)
        rows, cols = linear_sum_assignment(dist)
        limit = max_displacement if max_displacement is not None else 0.499 * _same_species_nn(reference, sp)
        worst = dist[rows, cols].argmax()
        if dist[rows[worst], cols[worst]] > limit:
            raise ConfigurationError(
                f"no unique matching of the structure to the reference: a {sp} atom (input index "
                f"{atoms[rows[worst]]}) is {dist[rows[worst], cols[worst]]:.3f} A from its site, more than "
                f"{limit:.3f} A (atoms must stay within half a {sp}-{sp} distance of a reference site)"
            )
        order[sites[cols]] = atoms[rows]
        disp[sites[cols]] = dc[rows, cols]
    if remove_translation:
        disp -= disp.mean(axis=0)
    else:
        disp += tau_cart
    return disp, matrix_to_strain(u_stretch - np.eye(3)), order
