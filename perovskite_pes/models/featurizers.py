"""Building, caching and (de)serialising the descriptor featurizers the models are built on.

The models only rely on the descriptors layer's contract (``perovskite_pes.descriptors.Featurizer``):
``cluster_features`` / ``site_features`` (differentiable torch), ``n_functions``,
``n_site_features``, ``orbit_names``, ``site_orbit_names``, ``to_dict``/``from_dict`` and
``for_reference``; ``degrees``/``site_degrees`` when a net uses ``net_order``. Site nets with
``net_order`` evaluate faster on featurizers that also offer ``site_feature_sums`` and
``site_features(..., max_degree=)`` (the descriptors layer's do).
"""

from __future__ import annotations

import json
import logging
import time

from ..structure import ReferenceSupercell
from .base import ModelError

logger = logging.getLogger(__name__)

_CACHE: dict = {}


def _featurizer_class():
    try:
        from ..descriptors import Featurizer
    except ImportError as exc:  # pragma: no cover - the descriptors layer is part of the package
        raise ModelError(
            f"the descriptors layer (perovskite_pes.descriptors.Featurizer) is not available: {exc}"
        ) from exc
    return Featurizer


def build_featurizer(
    reference: ReferenceSupercell, clusters="7p+t+o", max_order: int = 2, metric: str = "lin", truncated: bool = False
):
    """A :class:`~perovskite_pes.descriptors.Featurizer` (cached per process: building a basis takes time)."""
    key = (
        json.dumps(reference.to_dict(), sort_keys=True),
        json.dumps(clusters, sort_keys=True, default=str),
        int(max_order),
        metric,
        bool(truncated),
    )
    if key not in _CACHE:
        cls = _featurizer_class()
        t0 = time.perf_counter()
        _CACHE[key] = cls(reference, clusters=clusters, max_order=max_order, metric=metric, truncated=truncated)
        logger.info(
            "built the descriptor basis clusters=%s max_order=%d metric=%s on a %d-atom supercell in %.1f s",
            clusters,
            int(max_order),
            metric,
            reference.n_atoms,
            time.perf_counter() - t0,
        )
    return _CACHE[key]


def featurizer_from_recipe(recipe: dict, reference: ReferenceSupercell | None = None):
    key = (
        "recipe",
        json.dumps(recipe, sort_keys=True, default=str),
        None if reference is None else json.dumps(reference.to_dict()),
    )
    if key not in _CACHE:
        cls = _featurizer_class()
        _CACHE[key] = cls.from_dict(recipe, reference=reference)
    return _CACHE[key]


def featurizer_for_load(recipe: dict, given, directory) -> object:
    """The featurizer a saved model needs: ``given`` if it matches the stored recipe, else rebuilt from it."""
    if given is None:
        return featurizer_from_recipe(recipe)
    mine = json.loads(json.dumps(given.to_dict(), default=str))
    if json.dumps(mine, sort_keys=True) != json.dumps(recipe, sort_keys=True):
        raise ModelError(
            f"{directory}: the featurizer passed to load() differs from the one the model was trained with"
        )
    return given


def reference_of(featurizer) -> ReferenceSupercell:
    ref = getattr(featurizer, "reference", None)
    if not isinstance(ref, ReferenceSupercell):
        raise ModelError(f"featurizer {type(featurizer).__name__} has no .reference ReferenceSupercell")
    return ref


class FeaturizerFamily:
    """One featurizer basis across supercells: the training one plus ``for_reference`` copies."""

    def __init__(self, featurizer):
        self.base = featurizer
        self.reference = reference_of(featurizer)
        self._by_ref = {self.reference: featurizer}

    def __call__(self, reference: ReferenceSupercell):
        if reference not in self._by_ref:
            if reference.perovskite != self.reference.perovskite:
                raise ModelError(
                    f"the model was trained on {self.reference.perovskite.formula} (a = "
                    f"{self.reference.perovskite.lattice_parameter} A); cannot evaluate a supercell of "
                    f"{reference.perovskite.formula} (a = {reference.perovskite.lattice_parameter} A)"
                )
            self._by_ref[reference] = self.base.for_reference(reference)
        return self._by_ref[reference]
