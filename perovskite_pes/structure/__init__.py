"""Configuration space of a perovskite: reference, supercells, tilt systems, modes, strains, samplers.

Pure numpy / pymatgen / spglib: no database, no FireWorks.
"""

from .configuration import (
    Configuration,
    ConfigurationError,
    configuration_from_structure,
    match_structure,
    matrix_to_strain,
    strain_to_matrix,
)
from .io import ConfigurationIOError, read_configurations, write_configurations
from .modes import ModeBasis, ModeSubspace, StrainBasis, displacement_modes, strain_basis
from .reference import Perovskite, ReferenceStructureError, ReferenceSupercell, supercell_matrix
from .sampling import (
    DEFAULT_MIN_DISTANCE,
    SamplingError,
    UniquenessFilter,
    check_min_distance,
    closest_image,
    describe,
    grid,
    interpolate,
    interpolate_path,
    random_nsphere,
)
from .symmetry import SupercellSymmetry, canonical_key, space_group, supercell_symmetry, symmetrize
from .tilts import (
    GLAZER_SYSTEMS,
    GlazerError,
    GlazerSystem,
    glazer_system,
    rotation_field_displacements,
    stacked_tilt_configuration,
    tilt_angles,
    tilt_configuration,
    tilt_displacements,
    tilt_sign_pattern,
)

__all__ = [
    "Configuration",
    "DEFAULT_MIN_DISTANCE",
    "ConfigurationError",
    "ConfigurationIOError",
    "GLAZER_SYSTEMS",
    "GlazerError",
    "GlazerSystem",
    "ModeBasis",
    "ModeSubspace",
    "Perovskite",
    "ReferenceStructureError",
    "ReferenceSupercell",
    "SamplingError",
    "StrainBasis",
    "SupercellSymmetry",
    "UniquenessFilter",
    "canonical_key",
    "check_min_distance",
    "closest_image",
    "configuration_from_structure",
    "describe",
    "displacement_modes",
    "glazer_system",
    "grid",
    "interpolate",
    "interpolate_path",
    "match_structure",
    "matrix_to_strain",
    "random_nsphere",
    "read_configurations",
    "space_group",
    "strain_basis",
    "strain_to_matrix",
    "supercell_matrix",
    "supercell_symmetry",
    "symmetrize",
    "rotation_field_displacements",
    "stacked_tilt_configuration",
    "tilt_angles",
    "tilt_configuration",
    "tilt_displacements",
    "tilt_sign_pattern",
    "write_configurations",
]
