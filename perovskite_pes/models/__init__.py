"""Energy models of the potential energy surface (paper section II.B, III.C-E).

* :class:`PairPotential` -- ridge on Gaussian radial functions per species pair (baseline).
* :class:`LinearCE` -- linear anharmonic cluster expansion, Eq. (2).
* :class:`ClusterNet` -- one MLP per cluster orbit, summed over its clusters, Eq. (13).
* :class:`SiteNet` -- one MLP per site orbit on site correlation functions, Eqs. (15)-(16).
* :class:`Committee` -- K models of one kind on resamples: the mean and its spread (uncertainty).

All are scikit-learn-style estimators (hyperparameters in the constructor, ``fit`` returns
self), give energies, forces and stress by autograd for any supercell of the reference, and
save to / load from a directory without pickle. :func:`train_and_select` runs the paper's
cross-validated model selection; :class:`PESCalculator` is an ASE calculator.
"""

from .base import EnergyModel, ModelError, NotFittedError, load_model
from .calculator import PESCalculator
from .committee import Committee
from .linear import LinearCE
from .nets import ClusterNet, SiteNet
from .pair import PairPotential
from .selection import DEFAULT_SETTINGS, train_and_select, training_stresses

MODEL_TYPES = {cls.model_type: cls for cls in (PairPotential, LinearCE, ClusterNet, SiteNet, Committee)}

__all__ = [
    "ClusterNet",
    "Committee",
    "DEFAULT_SETTINGS",
    "EnergyModel",
    "LinearCE",
    "MODEL_TYPES",
    "ModelError",
    "NotFittedError",
    "PESCalculator",
    "PairPotential",
    "SiteNet",
    "load_model",
    "train_and_select",
    "training_stresses",
]
