"""Finite-temperature simulation with a learned PES: MD, Monte Carlo, tilt order parameters, transitions.

Sits on top of :mod:`perovskite_pes.models` (and structure/descriptors); no database, workflow or CLI
imports.
"""

from .common import SimulationResult, start_configuration
from .errors import BlowUpError, SimulationError
from .local import GlobalEnergy, LocalEnergy, energy_engine
from .mc import MonteCarlo
from .md import ENSEMBLES, MDSimulation
from .order import (
    OctahedronMap,
    OrderParameters,
    glazer_symbol,
    inplane_tilts,
    lattice_parameters,
    layer_projections,
    octahedral_rotations,
    order_parameters,
    phase_of,
    thermal_averages,
    tilt_projections,
    undeform,
)
from .sampler import Stage, StageSampler, temperature_ladder
from .static import RelaxedPhase, harmonic_frequencies, relax_phase, stacking_energies, tilt_landscape

__all__ = [
    "ENSEMBLES",
    "BlowUpError",
    "GlobalEnergy",
    "LocalEnergy",
    "MDSimulation",
    "MonteCarlo",
    "RelaxedPhase",
    "SimulationResult",
    "Stage",
    "StageSampler",
    "energy_engine",
    "start_configuration",
    "temperature_ladder",
    "OctahedronMap",
    "OrderParameters",
    "SimulationError",
    "glazer_symbol",
    "harmonic_frequencies",
    "inplane_tilts",
    "lattice_parameters",
    "layer_projections",
    "octahedral_rotations",
    "order_parameters",
    "phase_of",
    "relax_phase",
    "stacking_energies",
    "tilt_landscape",
    "thermal_averages",
    "tilt_projections",
    "undeform",
]
