"""Uniqueness keys of configurations and references.

A configuration's key is :func:`perovskite_pes.structure.canonical_key` (equal for configurations
related by a space-group operation of the reference supercell) when the structure layer provides it.
Until then, :func:`array_key` is used: a hash of the reference and of the displacement and strain
arrays rounded to :data:`DECIMALS` decimals, which identifies configurations that are identical
(not merely symmetry-equivalent). The method used is stored with every configuration
(``key_method``) so that a store written with one method is never silently mixed with the other.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache

import numpy as np

#: decimals kept when hashing displacements (Angstrom) and strains
DECIMALS = 5


@lru_cache(maxsize=64)
def reference_key(reference) -> str:
    """Stable key of a :class:`ReferenceSupercell` (species, lattice parameter, supercell matrix)."""
    p = reference.perovskite
    payload = {
        "species": list(p.species),
        "a": round(float(p.lattice_parameter), 6),
        "matrix": np.asarray(reference.matrix, dtype=int).tolist(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def reference_label(reference) -> str:
    p = reference.perovskite
    m = np.asarray(reference.matrix, dtype=int)
    if np.count_nonzero(m - np.diag(np.diag(m))) == 0:
        shape = "x".join(str(v) for v in np.diag(m))
    else:
        shape = "M" + "_".join(str(v) for v in m.ravel())
    return f"{p.formula}_a{p.lattice_parameter:.4f}_{shape}"


def _round(a) -> np.ndarray:
    r = np.round(np.asarray(a, dtype=float), DECIMALS)
    r[r == 0.0] = 0.0  # fold -0.0 into 0.0
    return r


def array_key(config) -> str:
    """Hash of the reference and the rounded displacement and strain arrays."""
    h = hashlib.sha256()
    h.update(reference_key(config.reference).encode())
    h.update(_round(config.displacements).astype("<f8").tobytes())
    h.update(_round(config.strain).astype("<f8").tobytes())
    return h.hexdigest()[:32]


def uniqueness_key(config) -> tuple[str, str]:
    """(key, method) for a configuration: the structure layer's canonical key when available."""
    try:
        from ..structure import canonical_key
    except ImportError:
        return array_key(config), "array-v1"
    # prefixed with the reference so that equal fields on different references never collide
    return f"{reference_key(config.reference)}:{canonical_key(config)}", "canonical"


__all__ = ["uniqueness_key", "array_key", "reference_key", "reference_label", "DECIMALS"]
