"""Octahedral tilt order parameters, lattice parameters and the phase of a perovskite structure.

For every frame (positions in the reference site order, any deformed cell):

1. The homogeneous strain and any rigid rotation of the cell are removed (polar decomposition of
   the deformation gradient), so that a strained cell shows no spurious rotations, and the
   displacements are taken by minimum image from the reference sites.
2. Each BX6 octahedron's rotation is the best-fit (Kabsch) rotation that takes its six reference
   B -> X vectors (+-a/2 along x, y, z) to the current ones, both centred on their X centroid (an
   off-centre B does not rotate the octahedron). Its rotation vector gives the angles about x, y, z.
3. The projections on the tilt patterns of the 15 Glazer systems: per axis a,
   ``R_a = <theta_a(t) (-1)^(t_x + t_y + t_z)>`` (anti-phase, R point) and
   ``M_a = <theta_a(t) (-1)^(sum of t_b, b != a)>`` (in phase, M point), averaged over the B sites t.
   Their sign depends on the choice of origin; their magnitude does not. Pnma a+b-b- has one M and
   two R components, P4/mbm a0a0c+ one M component, the cubic cell none.

Example
-------
>>> from perovskite_pes.structure import Perovskite, tilt_configuration
>>> ref = Perovskite(("Cs", "Pb", "Br"), 5.87).supercell(2)
>>> c = tilt_configuration(ref, "a0a0c+", 8.0)
>>> op = order_parameters(ref, c.positions, c.lattice)
>>> [round(float(abs(x)), 2) for x in op.M[0]], [round(float(abs(x)), 2) for x in op.R[0]]
([0.0, 0.0, 7.92], [0.0, 0.0, 0.0])
>>> glazer_symbol(op.R[0], op.M[0])
'a0a0c+'
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from ..structure import GLAZER_SYSTEMS, Configuration, ReferenceSupercell, glazer_system, space_group, tilt_sign_pattern
from .errors import SimulationError

#: tilt amplitude (degrees) below which an axis counts as untilted
DEFAULT_TILT_THRESHOLD = 1.0
#: two tilted axes with amplitudes closer than this (degrees, or this fraction of the larger) share a letter
DEFAULT_EQUAL_TOLERANCE = 0.75
DEFAULT_EQUAL_FRACTION = 0.15
#: a tilt amplitude (or a difference of two) counts only when it exceeds this many standard errors
#: over the layers perpendicular to its axis (see :func:`layer_projections`)
DEFAULT_SIGNIFICANCE = 3.0
#: layers each tilted by more than this (degrees) count as tilted even when stacked inconsistently
FAULTED_LAYER_TILT = 5.0
#: spglib tolerance (Angstrom) for the space group of a time-averaged structure
DEFAULT_PHASE_SYMPREC = 0.1


# ---------------------------------------------------------------------------------------- geometry
def _as_frames(positions, lattice, n_atoms: int):
    pos = np.asarray(positions, dtype=float)
    lat = np.asarray(lattice, dtype=float)
    if pos.ndim == 2:
        pos = pos[None]
    if lat.ndim == 2:
        lat = np.broadcast_to(lat, (pos.shape[0], 3, 3))
    if pos.shape[1:] != (n_atoms, 3) or lat.shape != (pos.shape[0], 3, 3):
        raise SimulationError(
            f"positions must be (frames, {n_atoms}, 3) and lattices (frames, 3, 3) for this supercell; "
            f"got {pos.shape} and {lat.shape}"
        )
    if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(lat))):
        raise SimulationError("positions or lattice contain NaN or infinite values")
    return pos, lat


def undeform(reference: ReferenceSupercell, positions, lattice):
    """Displacements ``(F, N, 3)`` in the reference frame and strains ``(F, 3, 3)`` (``U - I``) per frame.

    The inverse of ``x = F (r + u)``: the rotation of the polar decomposition of the cell's
    deformation gradient is dropped, displacements come by minimum image (wrapped inputs are fine).
    """
    pos, lat = _as_frames(positions, lattice, reference.n_atoms)
    f_total = np.swapaxes(lat, 1, 2) @ np.linalg.inv(reference.lattice.T)  # L = L0 F^T
    w, s, vt = np.linalg.svd(f_total)
    if np.any(np.linalg.det(w @ vt) < 0):
        raise SimulationError("a frame's cell is inverted (improper) relative to the reference")
    rot = w @ vt
    stretch = np.swapaxes(vt, 1, 2) @ (s[..., None] * vt)  # U = V S V^T, F = R U
    undeformed = pos @ rot @ np.linalg.inv(stretch)  # r + u = U^-1 R^T x (row vectors)
    frac = undeformed @ np.linalg.inv(reference.lattice)
    d = frac - reference.frac_coords()
    d -= np.round(d)
    return d @ reference.lattice, stretch - np.eye(3)


def lattice_parameters(reference: ReferenceSupercell, lattice) -> np.ndarray:
    """Pseudo-cubic lattice parameters ``(F, 6)``: a, b, c (Angstrom) and alpha, beta, gamma (degrees).

    The supercell lattice divided back into one primitive cell (``matrix^-1 L``), so any supercell
    of the reference gives the parameters of the average perovskite cell.
    """
    lat = np.asarray(lattice, dtype=float)
    lat = lat[None] if lat.ndim == 2 else lat
    prim = np.linalg.inv(reference.matrix.astype(float)) @ lat
    lengths = np.linalg.norm(prim, axis=2)
    out = np.empty((len(prim), 6))
    out[:, :3] = lengths
    for k, (i, j) in enumerate(((1, 2), (0, 2), (0, 1))):
        cos = np.einsum("fi,fi->f", prim[:, i], prim[:, j]) / (lengths[:, i] * lengths[:, j])
        out[:, 3 + k] = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    return out


@dataclass(frozen=True, eq=False)
class OctahedronMap:
    """The B sites of a supercell, their cell translations and their six X neighbours (+x, -x, +y, -y, +z, -z)."""

    b_sites: np.ndarray  # (n_B,)
    translations: np.ndarray  # (n_B, 3) integer primitive-cell translations
    x_sites: np.ndarray  # (n_B, 6)
    half: float  # a/2, Angstrom

    @classmethod
    def build(cls, reference: ReferenceSupercell) -> OctahedronMap:
        frac = reference.frac_coords()
        key = {tuple(np.round(np.mod(f, 1.0) * 1e6).astype(np.int64) % 1000000): i for i, f in enumerate(frac)}
        b_sites = np.flatnonzero(reference.sublattice == "B")
        inv = np.linalg.inv(reference.lattice)
        a = reference.perovskite.lattice_parameter
        x = np.empty((len(b_sites), 6), dtype=int)
        for n, b in enumerate(b_sites):
            for k in range(3):
                for j, sign in enumerate((1.0, -1.0)):
                    target = reference.positions[b] + sign * 0.5 * a * np.eye(3)[k]
                    f = np.mod(target @ inv, 1.0)
                    site = key.get(tuple(np.round(f * 1e6).astype(np.int64) % 1000000))
                    if site is None or reference.sublattice[site] != "X":  # pragma: no cover - geometry guard
                        raise SimulationError(f"B site {b} has no X neighbour along {'+-'[j]}{'xyz'[k]}")
                    x[n, 2 * k + j] = site
        return cls(b_sites, reference.cell_translation[b_sites].copy(), x, 0.5 * a)


def octahedral_rotations(reference: ReferenceSupercell, positions, lattice, octahedra: OctahedronMap | None = None):
    """Rotation angles (degrees) of every BX6 octahedron about x, y, z: ``(F, n_B, 3)``.

    The components of the rotation vector of the best-fit rotation (see the module docstring).
    """
    disp, _strain = undeform(reference, positions, lattice)
    return rotations_from_displacements(reference, disp, octahedra)


def rotations_from_displacements(reference: ReferenceSupercell, displacements, octahedra: OctahedronMap | None = None):
    """:func:`octahedral_rotations` from reference-frame displacements ``(F, N, 3)``."""
    from scipy.spatial.transform import Rotation

    octa = octahedra if octahedra is not None else OctahedronMap.build(reference)
    u = np.asarray(displacements, dtype=float)
    u = u[None] if u.ndim == 2 else u
    ux = u[:, octa.x_sites]  # (F, nB, 6, 3); the B site cancels out after centring on the X centroid
    # reference vectors are +-h e_k, centred already: H = sum_k p_k q_k^T has rows h (q_k+ - q_k-)
    q = ux - ux.mean(axis=2, keepdims=True)
    h = octa.half
    diff = q[:, :, 0::2] - q[:, :, 1::2]  # (F, nB, 3, 3): row k = q(+k) - q(-k) (displacement part)
    cov = h * (2.0 * h * np.eye(3) + diff)  # p_k q_k^T summed over +-: h * (2h e_k + q+ - q-)
    w, _s, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(np.swapaxes(vt, -1, -2) @ np.swapaxes(w, -1, -2)))
    vt = vt.copy()
    vt[..., 2, :] *= d[..., None]
    rot = np.swapaxes(vt, -1, -2) @ np.swapaxes(w, -1, -2)  # R with R p = q
    shape = rot.shape[:-2]
    vec = Rotation.from_matrix(rot.reshape(-1, 3, 3)).as_rotvec().reshape(*shape, 3)
    return np.degrees(vec)


def check_tilt_commensurate(reference: ReferenceSupercell) -> None:
    """Raise unless the supercell holds both the M- and the R-point tilt patterns."""
    for sym in ("a+a+a+", "a-a-a-"):
        pattern = glazer_system(sym).signs
        t = reference.matrix
        if not np.array_equal(tilt_sign_pattern(pattern, t), tilt_sign_pattern(pattern, np.zeros_like(t))):
            raise SimulationError(
                f"supercell {reference.matrix.tolist()} cannot hold the M- and R-point tilt patterns: tilt order "
                "parameters need an even supercell (e.g. 4x4x4, 6x6x6, 8x8x8)"
            )


def tilt_projections(reference: ReferenceSupercell, rotations, octahedra: OctahedronMap | None = None):
    """Signed projections ``(R, M)``, each ``(F, 3)`` degrees, of octahedral rotations ``(F, n_B, 3)``."""
    check_tilt_commensurate(reference)
    octa = octahedra if octahedra is not None else OctahedronMap.build(reference)
    rot = np.asarray(rotations, dtype=float)
    rot = rot[None] if rot.ndim == 2 else rot
    s_r = tilt_sign_pattern(("-", "-", "-"), octa.translations)
    s_m = tilt_sign_pattern(("+", "+", "+"), octa.translations)
    return (rot * s_r).mean(axis=1), (rot * s_m).mean(axis=1)


def layer_projections(reference: ReferenceSupercell, rotations, octahedra: OctahedronMap | None = None):
    """Tilt projections of one structure's rotations ``(n_B, 3)`` with their standard errors over layers.

    Corner sharing locks the rotations about an axis within a layer perpendicular to it, while
    successive layers are coupled only weakly (the flat M-R branch of the tilt modes): the layers are the
    units that order independently. Per axis a, each layer's value is the mean of its octahedra's
    rotation about a times the pattern's sign; ``R_a`` and ``M_a`` are the means over the layers (equal
    to :func:`tilt_projections`) and their standard errors are the layers' standard deviation over the
    square root of their number. A coherently tilted structure has zero error; layers tilted
    independently (a disordered cell, or a small cell above its transition) have an error of the size
    of the projection. Returns ``(R, M, R_se, M_se)``, each ``(3,)`` degrees; errors are zero where the
    layers are not of equal size (non-diagonal supercells).
    """
    check_tilt_commensurate(reference)
    octa = octahedra if octahedra is not None else OctahedronMap.build(reference)
    rot = np.asarray(rotations, dtype=float).reshape(len(octa.translations), 3)
    t = octa.translations
    out = []
    for signs in (("-", "-", "-"), ("+", "+", "+")):
        proj = rot * tilt_sign_pattern(signs, t)
        amp, se = np.zeros(3), np.zeros(3)
        for a in range(3):
            layers, counts = np.unique(t[:, a], return_counts=True)
            values = np.array([proj[t[:, a] == layer, a].mean() for layer in layers])
            amp[a] = proj[:, a].mean()
            if len(layers) > 1 and np.all(counts == counts[0]):
                se[a] = values.std(ddof=1) / np.sqrt(len(layers))
        out.append((amp, se))
    (r, r_se), (m, m_se) = out
    return r, m, r_se, m_se


def inplane_tilts(reference: ReferenceSupercell, rotations, octahedra: OctahedronMap | None = None):
    """Per axis, how strongly each layer normal to it is tilted, whatever the stacking of the layers.

    Each layer's value is the mean over its octahedra of the rotation about the axis times the in-plane
    checkerboard sign (the sign both tilt patterns share within a layer); the amplitude is the mean of
    the layers' absolute values, its error the within-layer standard deviation over the square root of
    the number of octahedra per layer (an underestimate where neighbours are correlated). Layers tilted
    alike but stacked neither all in phase nor all in anti-phase (e.g. + + - + + + + +, a stacking fault
    left by fast cooling) have a large amplitude here and small projections. Returns ``(A, A_se)``,
    each ``(3,)`` degrees; zeros where the layers are not of equal size.
    """
    check_tilt_commensurate(reference)
    octa = octahedra if octahedra is not None else OctahedronMap.build(reference)
    rot = np.asarray(rotations, dtype=float).reshape(len(octa.translations), 3)
    t = octa.translations
    amp, se = np.zeros(3), np.zeros(3)
    for a in range(3):
        others = [b for b in range(3) if b != a]
        x = rot[:, a] * np.where(t[:, others].sum(axis=1) % 2 == 0, 1.0, -1.0)
        layers, counts = np.unique(t[:, a], return_counts=True)
        if len(layers) < 2 or np.any(counts != counts[0]) or counts[0] < 2:
            continue
        amp[a] = np.mean([abs(x[t[:, a] == layer].mean()) for layer in layers])
        se[a] = np.sqrt(np.mean([x[t[:, a] == layer].var(ddof=1) for layer in layers]) / counts[0])
    return amp, se


@dataclass
class OrderParameters:
    """Per-frame tilt order parameters and lattice parameters.

    Attributes: ``R``, ``M`` (F, 3) signed projections (degrees); ``rotations`` (F, n_B, 3);
    ``lattice`` (F, 6) pseudo-cubic a, b, c, alpha, beta, gamma; ``displacements`` (F, N, 3) and
    ``strain`` (F, 3, 3) in the reference frame (for time-averaged structures).
    """

    R: np.ndarray
    M: np.ndarray
    rotations: np.ndarray
    lattice: np.ndarray
    displacements: np.ndarray
    strain: np.ndarray

    @property
    def n_frames(self) -> int:
        return len(self.R)


def order_parameters(
    reference: ReferenceSupercell, positions, lattice, octahedra: OctahedronMap | None = None
) -> OrderParameters:
    """Tilt order parameters and lattice parameters of one frame ``(N, 3)`` or many ``(F, N, 3)``."""
    check_tilt_commensurate(reference)
    octa = octahedra if octahedra is not None else OctahedronMap.build(reference)
    disp, strain = undeform(reference, positions, lattice)
    rot = rotations_from_displacements(reference, disp, octa)
    r, m = tilt_projections(reference, rot, octa)
    lat = np.asarray(lattice, dtype=float)
    return OrderParameters(r, m, rot, lattice_parameters(reference, lat), disp, strain)


# ---------------------------------------------------------------------------------------- phase
def _symbols_for(signs, amps, forced, optional):
    """Canonical Glazer symbols reachable from per-axis signs/amplitudes with the given letter merges."""
    out = []
    for extra in itertools.chain.from_iterable(itertools.combinations(optional, k) for k in range(len(optional) + 1)):
        equal = set(forced) | set(extra)
        cost = sum(abs(amps[i] - amps[j]) for i, j in extra)
        for perm in itertools.permutations(range(3)):
            letters = []
            for pos, axis in enumerate(perm):
                letter = "abc"[pos]
                for prev in range(pos):
                    other = perm[prev]
                    if signs[axis] == "0" and signs[other] == "0" or (min(axis, other), max(axis, other)) in equal:
                        letter = letters[prev]
                        break
                letters.append(letter)
            symbol = "".join(f"{letters[p]}{signs[a]}" for p, a in enumerate(perm))
            out.append((cost, symbol))
    return out


def glazer_symbol(
    R,
    M,
    threshold: float = DEFAULT_TILT_THRESHOLD,
    tolerance: float = DEFAULT_EQUAL_TOLERANCE,
    R_se=None,
    M_se=None,
    significance: float = DEFAULT_SIGNIFICANCE,
    inplane=None,
    inplane_se=None,
) -> str:
    """The Glazer system (one of the 15, in Howard & Stokes' setting) of tilt amplitudes ``R``, ``M`` (degrees).

    An axis is ``+`` when its M amplitude exceeds ``threshold`` and its R amplitude, ``-`` when its
    R amplitude does, else ``0``. Axes of the same sign whose amplitudes differ by less than
    ``tolerance`` degrees (or 15 % of the larger) share a letter; when the result is not one of the
    15 systems (e.g. a+b+c-, which Howard & Stokes merge with a+a+c-), the closest merge of letters
    that is one of them is taken. With standard errors ``R_se``, ``M_se`` (from
    :func:`layer_projections`), an amplitude below ``significance`` errors counts as no tilt, and two
    amplitudes whose difference is below ``significance`` errors of the difference share a letter.
    With in-plane amplitudes ``inplane``, ``inplane_se`` (:func:`inplane_tilts`), an axis whose layers
    are each tilted by more than ``FAULTED_LAYER_TILT`` degrees and ``significance`` errors still counts
    as tilted (in the pattern of its larger projection) when their stacking is faulted.

    >>> glazer_symbol([0, 4.6, 3.5], [8.4, 0, 0])
    'a+b-c-'
    >>> glazer_symbol([0, 4.6, 3.5], [8.4, 0, 0], R_se=[0, 0.6, 0.6], M_se=[0.3, 0, 0])
    'a+b-b-'
    >>> glazer_symbol([0, 1.9, 0], [1.4, 0, 0], R_se=[1.0, 1.1, 0.9], M_se=[0.9, 1.3, 0.7])
    'a0a0a0'
    """
    r = np.abs(np.asarray(R, dtype=float).reshape(3))
    m = np.abs(np.asarray(M, dtype=float).reshape(3))
    r_se = np.zeros(3) if R_se is None else np.asarray(R_se, dtype=float).reshape(3)
    m_se = np.zeros(3) if M_se is None else np.asarray(M_se, dtype=float).reshape(3)
    layer_amp = np.zeros(3) if inplane is None else np.abs(np.asarray(inplane, dtype=float).reshape(3))
    layer_se = np.zeros(3) if inplane_se is None else np.asarray(inplane_se, dtype=float).reshape(3)
    faulted = (layer_amp >= FAULTED_LAYER_TILT) & (layer_amp >= significance * layer_se)
    signs, amps, errs = [], [], []
    for a in range(3):
        amp, err, sign = (m[a], m_se[a], "+") if m[a] >= r[a] else (r[a], r_se[a], "-")
        if amp < threshold or (amp < significance * err and not faulted[a]):
            signs.append("0")
            amps.append(0.0)
            errs.append(0.0)
        else:
            signs.append(sign)
            amps.append(amp)
            errs.append(err)
    forced, optional = [], []
    for i, j in itertools.combinations(range(3), 2):
        if signs[i] == "0" or signs[i] != signs[j]:
            continue
        noise = significance * float(np.hypot(errs[i], errs[j]))
        close = abs(amps[i] - amps[j]) <= max(tolerance, DEFAULT_EQUAL_FRACTION * max(amps[i], amps[j]), noise)
        (forced if close else optional).append((i, j))
    known = {g.symbol for g in GLAZER_SYSTEMS}
    found = sorted((c, s) for c, s in _symbols_for(signs, amps, forced, optional) if s in known)
    if not found:  # pragma: no cover - every sign pattern reaches one of the 15 by merging letters
        raise SimulationError(f"tilt pattern {signs} matches none of the 15 Glazer systems")
    return found[0][1]


def phase_of(
    reference: ReferenceSupercell,
    order: OrderParameters,
    threshold: float = DEFAULT_TILT_THRESHOLD,
    symprec: float = DEFAULT_PHASE_SYMPREC,
    significance: float = DEFAULT_SIGNIFICANCE,
) -> dict:
    """Glazer system and space group of the time-averaged structure of the frames in ``order``.

    The displacements (rigid translation removed frame by frame) and strains are averaged; the
    Glazer system comes from the tilt projections of that average structure, counted only where they
    exceed ``significance`` standard errors over the layers perpendicular to their axis
    (:func:`layer_projections`: in a small cell above its transition the layers tilt independently and
    their mean is not zero by chance alone), the space group from spglib with ``symprec`` (Angstrom).
    """
    u = order.displacements - order.displacements.mean(axis=1, keepdims=True)
    mean_u = u.mean(axis=0)
    mean_strain = order.strain.mean(axis=0)
    octa = OctahedronMap.build(reference)
    rot = rotations_from_displacements(reference, mean_u, octa)
    r, m, r_se, m_se = layer_projections(reference, rot[0], octa)
    layer_amp, layer_se = inplane_tilts(reference, rot[0], octa)
    symbol = glazer_symbol(
        r, m, threshold, R_se=r_se, M_se=m_se, significance=significance, inplane=layer_amp, inplane_se=layer_se
    )
    config = Configuration(reference, mean_u, 0.5 * (mean_strain + mean_strain.T))
    try:
        sg_symbol, sg_number = space_group(config, symprec=symprec)
    except Exception:  # spglib can fail on badly averaged structures; the Glazer symbol still stands
        sg_symbol, sg_number = None, None
    g = glazer_system(symbol)
    return {
        "glazer": symbol,
        "glazer_space_group": g.space_group_symbol,
        "space_group": sg_symbol,
        "space_group_number": sg_number,
        "R_avg_structure": np.abs(r).tolist(),
        "M_avg_structure": np.abs(m).tolist(),
        "R_avg_structure_se": r_se.tolist(),
        "M_avg_structure_se": m_se.tolist(),
        "layer_tilt_avg_structure": layer_amp.tolist(),
        "layer_tilt_avg_structure_se": layer_se.tolist(),
    }


def thermal_averages(order: OrderParameters, temperature_K: float, n_cells: int) -> dict:
    """Averages of the tilt amplitudes and lattice parameters over frames, with susceptibilities.

    ``|R_a|`` and ``|M_a|`` are averaged frame by frame (so a domain that flips sign still counts);
    the susceptibility of an amplitude x is ``n_cells (<x^2> - <x>^2) / (k_B T)`` in deg^2/eV per
    primitive cell, whose peak marks a transition. ``R``/``M`` totals are the vector norms over axes.
    """
    from ase.units import kB

    if temperature_K <= 0:
        raise SimulationError(f"temperature must be positive (K); got {temperature_K}")
    beta_n = n_cells / (kB * temperature_K)
    out: dict = {}
    for name, x in (("R", np.abs(order.R)), ("M", np.abs(order.M))):
        total = np.linalg.norm(x, axis=1)
        out[name] = x.mean(axis=0).tolist()
        out[f"{name}_std"] = x.std(axis=0).tolist()
        out[f"{name}_total"] = float(total.mean())
        out[f"chi_{name}"] = float(beta_n * total.var())
    lat = order.lattice
    out["lattice_parameters"] = lat.mean(axis=0).tolist()
    out["lattice_parameters_std"] = lat.std(axis=0).tolist()
    srt = np.sort(lat[:, :3], axis=1)  # domains may orient along any axis: the sorted lengths compare across runs
    out["lattice_sorted"] = srt.mean(axis=0).tolist()
    return out
