"""Configuration space of a perovskite: reference, supercells, tilt systems, modes, strains, samplers.

Pure numpy / pymatgen / spglib: no database, no FireWorks.
"""

from .configuration import Configuration, ConfigurationError, matrix_to_strain, strain_to_matrix
from .reference import Perovskite, ReferenceError, ReferenceSupercell, supercell_matrix

__all__ = [
    "Configuration",
    "ConfigurationError",
    "Perovskite",
    "ReferenceError",
    "ReferenceSupercell",
    "matrix_to_strain",
    "strain_to_matrix",
    "supercell_matrix",
]
