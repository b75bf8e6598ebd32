"""Errors of the simulation layer."""

from __future__ import annotations

from ..errors import PesError


class SimulationError(PesError, ValueError):
    """Invalid simulation input (model, start structure, temperature, time step, schedule)."""


class BlowUpError(SimulationError):
    """The run left the model's domain (an atom left its cage, energy drift): the model is outside its data.

    Attributes: ``step``, ``temperature_K``, ``max_displacement`` (Angstrom, from the reference site),
    ``reason``, and ``result`` (what was measured before the stop, when available).
    """

    def __init__(self, reason: str, step: int, temperature_K: float, max_displacement: float, result=None):
        self.reason = reason
        self.step = int(step)
        self.temperature_K = float(temperature_K)
        self.max_displacement = float(max_displacement)
        self.result = result
        super().__init__(
            f"the run blew up at step {self.step} ({self.temperature_K:.0f} K): {reason}; largest displacement "
            f"from a reference site {self.max_displacement:.2f} A. The model is outside its training data there; "
            "the trajectory written so far is kept"
        )
