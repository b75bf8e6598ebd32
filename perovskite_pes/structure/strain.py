"""Strain in the project's convention, and the error of a configuration that cannot be built.

A symmetric 3x3 strain tensor e is stored as the 6-vector (e_xx, e_yy, e_zz, e_yz, e_xz, e_xy)
(tensor components, *not* engineering shear); the deformation gradient is F = I + e.
"""

from __future__ import annotations

import numpy as np

from ..errors import PesError

VOIGT_PAIRS = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


class ConfigurationError(PesError, ValueError):
    """Raised when a structure or array cannot be represented as a configuration."""


def strain_to_matrix(strain) -> np.ndarray:
    """6-vector (xx, yy, zz, yz, xz, xy) -> symmetric 3x3 tensor."""
    s = np.asarray(strain, dtype=float)
    if s.shape == (3, 3):
        if not np.allclose(s, s.T, atol=1e-10):
            raise ConfigurationError("strain tensor must be symmetric")
        return s.copy()
    if s.shape != (6,):
        raise ConfigurationError(
            f"strain must be a 6-vector (xx, yy, zz, yz, xz, xy) or a symmetric 3x3; got shape {s.shape}"
        )
    m = np.zeros((3, 3))
    for k, (i, j) in enumerate(VOIGT_PAIRS):
        m[i, j] = m[j, i] = s[k]
    return m


def matrix_to_strain(m) -> np.ndarray:
    """Symmetric 3x3 tensor -> 6-vector (xx, yy, zz, yz, xz, xy)."""
    m = np.asarray(m, dtype=float)
    return np.array([0.5 * (m[i, j] + m[j, i]) for i, j in VOIGT_PAIRS])
