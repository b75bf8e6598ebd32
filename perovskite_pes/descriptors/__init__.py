"""Collective cluster deformation (CCD) descriptors and symmetry-invariant basis functions.

Paper section II.A and Appendix A. Pure numpy / torch / spglib on top of
:mod:`perovskite_pes.structure`:

* :mod:`.clusters`   cluster prototypes, point groups, orbits in a supercell, named cluster sets
* :mod:`.metrics`    pair deformation metrics lin, quad, log, inv
* :mod:`.ccd`        the matrix U (Eq. 6), irreducible subspaces, truncation (Q*)
* :mod:`.invariants` invariant polynomials by the Reynolds operator (sparse monomials)
* :mod:`.featurizer` batched, differentiable cluster and site features (torch, float64)
"""

from .ccd import ClusterBasis
from .clusters import (
    CLUSTER_SETS,
    ClusterOrbit,
    ClusterPrototype,
    ClusterSymmetry,
    octahedron_prototype,
    pair_prototypes,
    parse_clusters,
    site_orbits,
    stack_prototype,
    tetrahedron_prototype,
    triplet_prototype,
)
from .errors import DescriptorError
from .featurizer import Featurizer
from .invariants import InvariantPolynomials, count_invariants, reynolds_matrix
from .metrics import METRICS, metric_from_ratio2, ratio_from_metric
from .symmetry import PointGroup, primitive_operations

__all__ = [
    "CLUSTER_SETS",
    "METRICS",
    "ClusterBasis",
    "ClusterOrbit",
    "ClusterPrototype",
    "ClusterSymmetry",
    "DescriptorError",
    "Featurizer",
    "InvariantPolynomials",
    "PointGroup",
    "count_invariants",
    "metric_from_ratio2",
    "octahedron_prototype",
    "pair_prototypes",
    "parse_clusters",
    "primitive_operations",
    "ratio_from_metric",
    "reynolds_matrix",
    "site_orbits",
    "stack_prototype",
    "tetrahedron_prototype",
    "triplet_prototype",
]
