"""The 15 Glazer tilt systems of Howard & Stokes (Acta Cryst. B54, 782 (1998)).

A Glazer symbol such as ``a+b-b-`` gives, for each cubic axis x, y, z, a letter (equal
letters: equal tilt angles) and a superscript: ``0`` no tilt, ``+`` in-phase (M point:
successive octahedra along the axis rotate in the same sense), ``-`` anti-phase (R point:
they alternate). Within a layer perpendicular to the axis, corner sharing forces neighbours
to rotate in opposite senses.

Construction in a supercell: the octahedron on the B site of primitive cell t gets the
rotation vector omega(t) = (s_x(t) theta_x, s_y(t) theta_y, s_z(t) theta_z) with
s_a(t) = (-1)^(sum of t_b, b != a) for ``+`` and (-1)^(t_x + t_y + t_z) for ``-``. Each X
atom is shared by two octahedra B1, B2 whose rigid rotations R1 = exp(omega1), R2 = exp(omega2)
predict two positions; the X atom takes their average, u_X = (R1 - R2) v / 2 with v the
B1 -> X vector. The rotation vector form (rather than a product of rotations about x, y, z)
keeps the construction independent of any axis order, so the three-fold axis of a-a-a- and
a+a+a+ survives. A and B atoms stay; the lattice stays cubic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..errors import PesError
from .configuration import Configuration
from .reference import ReferenceSupercell


class GlazerError(PesError, ValueError):
    """An unknown Glazer symbol, inconsistent tilt angles or a supercell that cannot hold the tilt."""


@dataclass(frozen=True)
class GlazerSystem:
    """One of the 15 tilt systems: Glazer symbol, Glazer's number and the Howard-Stokes space group."""

    symbol: str
    glazer_number: int
    space_group_symbol: str
    space_group_number: int

    @property
    def letters(self) -> tuple[str, str, str]:
        return tuple(self.symbol[0::2])

    @property
    def signs(self) -> tuple[str, str, str]:
        """'0', '+' or '-' for the x, y, z axes."""
        return tuple(self.symbol[1::2])

    @property
    def n_tilts(self) -> int:
        return sum(s != "0" for s in self.signs)

    def to_dict(self) -> dict:
        return {
            "symbol": self.symbol,
            "glazer_number": self.glazer_number,
            "space_group_symbol": self.space_group_symbol,
            "space_group_number": self.space_group_number,
        }


#: The 15 tilt systems of Howard & Stokes (1998), in Glazer's numbering order.
GLAZER_SYSTEMS: list[GlazerSystem] = [
    GlazerSystem("a+b+c+", 1, "Immm", 71),
    GlazerSystem("a+a+a+", 3, "Im-3", 204),
    GlazerSystem("a+b-c-", 8, "P2_1/m", 11),
    GlazerSystem("a+a+c-", 5, "P4_2/nmc", 137),
    GlazerSystem("a+b-b-", 10, "Pnma", 62),
    GlazerSystem("a-b-c-", 12, "P-1", 2),
    GlazerSystem("a-b-b-", 13, "C2/c", 15),
    GlazerSystem("a-a-a-", 14, "R-3c", 167),
    GlazerSystem("a0b+b+", 16, "I4/mmm", 139),
    GlazerSystem("a0b+c-", 17, "Cmcm", 63),
    GlazerSystem("a0b-c-", 19, "C2/m", 12),
    GlazerSystem("a0b-b-", 20, "Imma", 74),
    GlazerSystem("a0a0c+", 21, "P4/mbm", 127),
    GlazerSystem("a0a0c-", 22, "I4/mcm", 140),
    GlazerSystem("a0a0a0", 23, "Pm-3m", 221),
]
GLAZER_SYSTEMS.sort(key=lambda g: g.glazer_number)
_BY_SYMBOL = {g.symbol: g for g in GLAZER_SYSTEMS}

#: default tilt angle (degrees) per letter: distinct letters get distinct magnitudes
DEFAULT_ANGLES = {"a": 8.0, "b": 6.0, "c": 10.0}


def glazer_system(symbol: str) -> GlazerSystem:
    """Look up one of the 15 systems; accepts ``a0a0c+``, ``a^0a^0c^+``, ``A0A0C+``, spaces ignored."""
    if not isinstance(symbol, str):
        raise GlazerError(f"Glazer symbol must be a string such as 'a0a0c-'; got {symbol!r}")
    norm = re.sub(r"[\s^{}]", "", symbol).lower()
    try:
        return _BY_SYMBOL[norm]
    except KeyError:
        valid = ", ".join(g.symbol for g in GLAZER_SYSTEMS)
        raise GlazerError(
            f"{symbol!r} is not one of the 15 Howard-Stokes tilt systems; expected one of: {valid}"
        ) from None


def tilt_angles(glazer: str | GlazerSystem, angles_deg=None) -> np.ndarray:
    """Per-axis tilt angles (degrees, x, y, z) for a system, validated against its symbol.

    ``angles_deg`` may be None (defaults, distinct per letter), a scalar (all tilted axes; only
    when the tilted axes share one letter), one value per distinct letter of the tilted axes
    in order of appearance, or three per-axis values (0 on untilted axes, equal values for
    equal letters, different values for different letters).
    """
    g = glazer if isinstance(glazer, GlazerSystem) else glazer_system(glazer)
    tilted = [i for i, s in enumerate(g.signs) if s != "0"]
    distinct = []
    for i in tilted:
        if g.letters[i] not in distinct:
            distinct.append(g.letters[i])
    if angles_deg is None:
        vals = {lab: DEFAULT_ANGLES[lab] for lab in distinct}
        return np.array([vals[g.letters[i]] if i in tilted else 0.0 for i in range(3)])
    arr = np.atleast_1d(np.asarray(angles_deg, dtype=float))
    if arr.ndim != 1 or not np.all(np.isfinite(arr)):
        raise GlazerError(f"tilt angles must be finite numbers (degrees); got {angles_deg!r}")
    if arr.size == 1 and len(distinct) <= 1:
        return np.array([arr[0] if i in tilted else 0.0 for i in range(3)])
    if arr.size == len(distinct) and arr.size != 3:
        vals = dict(zip(distinct, arr))
        out = np.array([vals[g.letters[i]] if i in tilted else 0.0 for i in range(3)])
    elif arr.size == 3:
        out = arr.copy()
    else:
        raise GlazerError(
            f"{g.symbol} needs {len(distinct)} tilt angle(s) (one per distinct letter {distinct}) or "
            f"3 per-axis angles; got {arr.size}: {arr.tolist()}"
        )
    for i in range(3):
        if i not in tilted and abs(out[i]) > 0:
            raise GlazerError(f"{g.symbol} has no tilt about axis {'xyz'[i]} but angle {out[i]} was given")
    for i in tilted:
        for j in tilted:
            if j <= i:
                continue
            same = g.letters[i] == g.letters[j]
            if same and abs(abs(out[i]) - abs(out[j])) > 1e-12:
                raise GlazerError(
                    f"{g.symbol}: axes {'xyz'[i]} and {'xyz'[j]} share letter {g.letters[i]!r} and need equal "
                    f"angles; got {out[i]} and {out[j]}"
                )
            if not same and abs(abs(out[i]) - abs(out[j])) < 1e-12:
                raise GlazerError(
                    f"{g.symbol}: axes {'xyz'[i]} and {'xyz'[j]} have different letters and need different "
                    f"angle magnitudes (equal ones give a higher-symmetry system); got {out[i]} and {out[j]}"
                )
    if any(abs(out[i]) < 1e-12 for i in tilted):
        raise GlazerError(f"{g.symbol}: tilted axes need non-zero angles; got {out.tolist()}")
    return out


def tilt_sign_pattern(signs, cells: np.ndarray) -> np.ndarray:
    """(n, 3) signs s_a(t) of the rotation about each axis for integer cells t (n, 3).

    ``signs`` gives '0', '+' (M point, in phase along the axis) or '-' (R point, anti-phase) per axis.
    """
    cells = np.asarray(cells, dtype=int)
    total = cells.sum(axis=1)
    out = np.zeros((len(cells), 3))
    for a, s in enumerate(signs):
        if s == "+":
            out[:, a] = np.where((total - cells[:, a]) % 2 == 0, 1.0, -1.0)
        elif s == "-":
            out[:, a] = np.where(total % 2 == 0, 1.0, -1.0)
    return out


def check_tilt_supercell(reference: ReferenceSupercell, glazer: str | GlazerSystem) -> None:
    """Raise GlazerError unless the supercell is commensurate with the tilt pattern."""
    g = glazer if isinstance(glazer, GlazerSystem) else glazer_system(glazer)
    rows = reference.matrix
    pattern0 = tilt_sign_pattern(g.signs, np.zeros((len(rows), 3), int))
    if not np.array_equal(tilt_sign_pattern(g.signs, rows), pattern0):
        raise GlazerError(
            f"supercell {reference.matrix.tolist()} cannot hold the {g.symbol} tilt pattern (the cell must be "
            "doubled along every direction in which the rotation sense alternates); use e.g. a 2x2x2 supercell"
        )


def _rotation_matrices(rotvecs: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(rotvecs).as_matrix()


def rotation_field_displacements(reference: ReferenceSupercell, rotvec_of_cells) -> np.ndarray:
    """Displacement field (N, 3) of rigid octahedral rotations given per primitive cell.

    ``rotvec_of_cells(cells)`` maps integer cells ``(n, 3)`` to rotation vectors ``(n, 3)`` (radians) of
    the octahedra on their B sites; every X atom takes the average of the positions its two octahedra
    predict (see the module docstring). The field must be periodic in the supercell.
    """
    disp = np.zeros((reference.n_atoms, 3))
    x_sites = np.flatnonzero(reference.sublattice == "X")
    axis = reference.primitive_index[x_sites] - 2  # 0, 1, 2 for X1, X2, X3
    t1 = reference.cell_translation[x_sites]
    t2 = t1 + np.eye(3, dtype=int)[axis]
    r1 = _rotation_matrices(rotvec_of_cells(t1))
    r2 = _rotation_matrices(rotvec_of_cells(t2))
    v = 0.5 * reference.perovskite.lattice_parameter * np.eye(3)[axis]
    disp[x_sites] = 0.5 * np.einsum("nab,nb->na", r1 - r2, v)
    return disp


def tilt_displacements(reference: ReferenceSupercell, glazer: str | GlazerSystem, angles_deg=None) -> np.ndarray:
    """Displacement field (N, 3) of a Glazer tilt system (see the module docstring)."""
    g = glazer if isinstance(glazer, GlazerSystem) else glazer_system(glazer)
    angles = np.radians(tilt_angles(g, angles_deg))
    check_tilt_supercell(reference, g)
    return rotation_field_displacements(reference, lambda cells: tilt_sign_pattern(g.signs, cells) * angles)


def stacked_tilt_configuration(reference: ReferenceSupercell, axis: int, angle_deg: float, stacking, tags=None):
    """Tilts about one axis whose layers along it follow ``stacking`` (beyond the 15 Glazer systems).

    Within every layer perpendicular to ``axis`` (0, 1, 2 for x, y, z) the octahedra alternate in a
    checkerboard, as corner sharing requires; layer ``l`` along the axis is rotated by ``angle_deg`` times
    ``stacking[l % len(stacking)]``. ``[1]`` is the in-phase tilt (a0a0c+ about z), ``[1, -1]`` the
    anti-phase one (a0a0c-), ``[1, 1, -1, -1]`` the period-4 stacking between them and ``[1, -1, 1, 1]`` an
    anti-phase stacking with one fault: the energies of such stackings measure how strongly a PES couples
    tilts of successive layers, which a 2x2x2 cell cannot tell apart. The supercell must repeat the
    pattern (e.g. 2 x 2 x 4 for a period of 4 along z).

    >>> from perovskite_pes.structure import Perovskite
    >>> ref = Perovskite().supercell((2, 2, 4))
    >>> c = stacked_tilt_configuration(ref, 2, 8.0, [1, 1, -1, -1])
    >>> c.tags["stacking"], round(float(abs(c.displacements).max()), 3)
    ([1.0, 1.0, -1.0, -1.0], 0.408)
    """
    if axis not in (0, 1, 2):
        raise GlazerError(f"axis must be 0, 1 or 2 (x, y, z); got {axis!r}")
    seq = np.asarray(stacking, dtype=float).reshape(-1)
    if seq.size == 0 or not np.all(np.isfinite(seq)):
        raise GlazerError(f"stacking must be a non-empty sequence of layer factors (e.g. [1, -1]); got {stacking!r}")
    if not np.isfinite(float(angle_deg)):
        raise GlazerError(f"the tilt angle must be a finite number of degrees; got {angle_deg!r}")
    theta = np.radians(float(angle_deg))
    others = [b for b in range(3) if b != axis]

    def rotvecs(cells):
        cells = np.asarray(cells, dtype=int)
        out = np.zeros((len(cells), 3))
        checker = np.where((cells[:, others].sum(axis=1)) % 2 == 0, 1.0, -1.0)
        out[:, axis] = theta * checker * seq[cells[:, axis] % seq.size]
        return out

    rows = reference.matrix
    if not np.allclose(rotvecs(rows), rotvecs(np.zeros_like(rows))):
        raise GlazerError(
            f"supercell {rows.tolist()} cannot hold {seq.size}-layer stacking about axis {'xyz'[axis]} (it needs "
            f"a multiple of {seq.size} cells along {'xyz'[axis]} and an even number along the other axes)"
        )
    t = {"method": "tilt_stacking", "axis": "xyz"[axis], "angle": float(angle_deg), "stacking": seq.tolist()}
    t.update(tags or {})
    return Configuration(reference, rotation_field_displacements(reference, rotvecs), None, t)


def tilt_configuration(
    reference: ReferenceSupercell, glazer: str | GlazerSystem, angles_deg=None, tags=None
) -> Configuration:
    """The reference with the octahedral tilts of a Glazer system (cubic lattice, no strain).

    Tags record ``tilt_system`` (the Glazer symbol) and ``angles`` (per-axis degrees).
    """
    g = glazer if isinstance(glazer, GlazerSystem) else glazer_system(glazer)
    angles = tilt_angles(g, angles_deg)
    disp = tilt_displacements(reference, g, angles)
    t = {"method": "tilt", "tilt_system": g.symbol, "angles": [float(a) for a in angles]}
    t.update(tags or {})
    return Configuration(reference, disp, None, t)
