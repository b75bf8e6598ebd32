"""The one interface every energy source implements, and the record it returns.

Units and sign conventions (shared by every layer of the project):

* ``energy``: total energy of the cell in eV;
* ``forces``: eV/Angstrom, one row per site in the input structure's site order;
* ``stress``: eV/Angstrom^3 as a Voigt 6-vector (xx, yy, zz, yz, xz, xy) with ASE's sign
  convention, stress = (1/V) dE/d(strain): positive is tensile, i.e. minus the pressure.

A calculator separates two kinds of options:

* ``settings`` decide the numbers (functional, cutoff, k-points, model and modal, relaxation
  thresholds ...). Together with the calculator's name and version they define
  ``settings_hash``, the key that keeps data from different calculators apart.
* ``run_options`` decide only how the numbers are obtained (command line, threads, polling
  interval of custodian, walltime ...). They never enter the hash.
"""

from __future__ import annotations

import hashlib
import json
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PesError

RELAX_MODES = (None, "positions", "cell")

#: default smallest allowed interatomic distance (Angstrom) before a structure counts as overlapping
DEFAULT_MIN_DISTANCE = 0.5


class CalculatorError(PesError):
    """A calculator cannot be used as asked (unknown name, missing binary, POTCARs, weights ...)."""


class CalculatorInputError(PesError, ValueError):
    """The structure or settings given to a calculator are not valid input."""


@dataclass
class CalcResult:
    """Outcome of one calculation; failures carry ``status="failed"`` and the reason in ``error``."""

    energy: float | None
    forces: np.ndarray | None
    stress: np.ndarray | None
    calculator: str
    version: str
    settings: dict
    settings_hash: str
    wall_time: float
    status: str = "completed"
    error: str | None = None
    output_dir: str | None = None
    final_structure: Any = None  # pymatgen Structure or None

    def __post_init__(self):
        if self.status not in ("completed", "failed"):
            raise ValueError(f"status must be 'completed' or 'failed'; got {self.status!r}")
        if self.forces is not None:
            self.forces = np.asarray(self.forces, dtype=float).reshape(-1, 3)
        if self.stress is not None:
            self.stress = np.asarray(self.stress, dtype=float).reshape(6)
        if self.energy is not None:
            self.energy = float(self.energy)
        if self.status == "completed":
            bad = [
                name
                for name, value in (("energy", self.energy), ("forces", self.forces))
                if value is None or not np.all(np.isfinite(value))
            ]
            if bad:
                raise ValueError(f"a completed calculation needs finite {' and '.join(bad)}")

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    @classmethod
    def failed(cls, calc: Calculator, reason: str, wall_time: float = 0.0, output_dir=None) -> CalcResult:
        return cls(
            energy=None,
            forces=None,
            stress=None,
            calculator=calc.name,
            version=calc.version,
            settings=dict(calc.settings),
            settings_hash=calc.settings_hash,
            wall_time=float(wall_time),
            status="failed",
            error=str(reason),
            output_dir=None if output_dir is None else str(output_dir),
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("forces", "stress"):
            if d[key] is not None:
                d[key] = np.asarray(d[key]).tolist()
        if self.final_structure is not None:
            d["final_structure"] = self.final_structure.as_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CalcResult:
        d = dict(d)
        for key in ("forces", "stress"):
            if d.get(key) is not None:
                d[key] = np.asarray(d[key], dtype=float)
        if d.get("final_structure") is not None:
            from pymatgen.core import Structure

            d["final_structure"] = Structure.from_dict(d["final_structure"])
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


def settings_hash(name: str, version: str, settings: dict) -> str:
    """Stable SHA-256 (hex) of a calculator's name, version and physics settings."""
    payload = json.dumps({"name": name, "version": version, "settings": settings}, sort_keys=True, default=_jsonable)
    return hashlib.sha256(payload.encode()).hexdigest()


def _jsonable(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    raise TypeError(f"setting value {obj!r} is not JSON serialisable")


def merge_options(defaults: dict, given: dict, kind: str, calculator: str) -> dict:
    """``defaults`` updated with ``given``; unknown keys raise an error that lists the valid ones."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise CalculatorInputError(
            f"unknown {kind} for calculator {calculator!r}: {', '.join(unknown)}; "
            f"valid {kind}: {', '.join(sorted(defaults))}"
        )
    out = dict(defaults)
    out.update(given)
    return out


def check_structure(structure, min_distance: float = DEFAULT_MIN_DISTANCE, supported: set | None = None) -> None:
    """Reject input no calculator should see: not a Structure, disordered, overlapping atoms ..."""
    from pymatgen.core import Structure

    if not isinstance(structure, Structure):
        raise CalculatorInputError(
            f"expected a pymatgen Structure; got {type(structure).__name__} "
            "(use Configuration.to_structure() or read_configurations())"
        )
    if len(structure) == 0:
        raise CalculatorInputError("the structure has no sites")
    if not structure.is_ordered:
        raise CalculatorInputError("the structure is disordered (partial occupancies); calculators need an ordered one")
    if not np.all(np.isfinite(structure.cart_coords)) or not np.all(np.isfinite(structure.lattice.matrix)):
        raise CalculatorInputError("the structure contains NaN or infinite coordinates")
    if structure.volume <= 1e-6:
        raise CalculatorInputError(f"the cell volume is {structure.volume:.3g} A^3; the lattice is degenerate")
    if supported is not None:
        missing = sorted({el.symbol for el in structure.composition.elements} - set(supported))
        if missing:
            raise CalculatorInputError(f"no pseudopotential/model support for element(s) {', '.join(missing)}")
    centers, neighbours, _images, distances = structure.get_neighbor_list(r=float(min_distance))
    if len(distances):
        k = int(np.argmin(distances))
        i, j = int(centers[k]), int(neighbours[k])
        raise CalculatorInputError(
            f"overlapping atoms: sites {i} ({structure[i].specie}) and {j} ({structure[j].specie}) are "
            f"{distances[k]:.3f} A apart (minimum allowed {min_distance} A; periodic images included)"
        )


def check_relax(relax) -> str | None:
    if relax not in RELAX_MODES:
        raise CalculatorInputError(f"relax must be None, 'positions' or 'cell'; got {relax!r}")
    return relax


class Calculator(ABC):
    """Base class: subclasses set ``name``, define default settings/run options and ``_calculate``."""

    name: str = ""
    #: physics settings and their defaults (enter the settings hash)
    default_settings: dict = {}
    #: execution options and their defaults (never enter the hash)
    default_run_options: dict = {}
    #: settings that only steer relaxations (thresholds, step limits): recorded with every result
    #: but kept out of the hash, so single points with otherwise identical settings share one key
    relax_only_settings: tuple = ()

    def __init__(self, **options):
        unknown = sorted(set(options) - set(self.default_settings) - set(self.default_run_options))
        if unknown:
            raise CalculatorInputError(
                f"unknown option(s) for calculator {self.name!r}: {', '.join(unknown)}; "
                f"settings: {', '.join(sorted(self.default_settings))}; "
                f"run options: {', '.join(sorted(self.default_run_options))}"
            )
        settings_given = {k: v for k, v in options.items() if k in self.default_settings}
        run_given = {k: v for k, v in options.items() if k in self.default_run_options}
        self.settings = merge_options(self.default_settings, settings_given, "settings", self.name)
        self.run_options = merge_options(self.default_run_options, run_given, "run options", self.name)
        self._validate()

    def _validate(self) -> None:
        """Check settings; raise CalculatorInputError/CalculatorError on anything unusable."""

    @property
    @abstractmethod
    def version(self) -> str:
        """Version string of the code (and model) that produces the numbers."""

    @property
    def settings_hash(self) -> str:
        physics = {k: v for k, v in self.settings.items() if k not in self.relax_only_settings}
        return settings_hash(self.name, self.version, physics)

    @property
    def supported_elements(self) -> set | None:
        return None

    def check_available(self) -> None:
        """Raise CalculatorError naming exactly what to install or set if unusable here."""

    def check_submit(self) -> None:
        """Raise CalculatorError if a campaign with this calculator cannot run on its workers.

        Called when a campaign is submitted, on the submitting machine, which need not be able to
        run the code itself (see :meth:`check_available` for that).
        """

    def calculate(self, structure, relax: str | None = None, workdir=None) -> CalcResult:
        """Energy, forces and stress of ``structure``; with ``relax`` also the final structure.

        Bad input raises :class:`CalculatorInputError`; an unusable calculator raises
        :class:`CalculatorError`. A calculation that ran but failed (no SCF convergence, relaxation
        not converged, code crashed) returns ``status="failed"`` with the reason.
        """
        relax = check_relax(relax)
        check_structure(structure, self.run_options.get("min_distance", DEFAULT_MIN_DISTANCE), self.supported_elements)
        self.check_available()
        if workdir is not None:
            workdir = Path(workdir)
            workdir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        result = self._calculate(structure, relax, workdir)
        result.wall_time = time.perf_counter() - start
        return result

    @abstractmethod
    def _calculate(self, structure, relax: str | None, workdir: Path | None) -> CalcResult: ...

    def _result(self, energy, forces, stress, output_dir=None, final_structure=None, version=None) -> CalcResult:
        return CalcResult(
            energy=energy,
            forces=forces,
            stress=stress,
            calculator=self.name,
            version=version or self.version,
            settings=dict(self.settings),
            settings_hash=self.settings_hash,
            wall_time=0.0,
            status="completed",
            error=None,
            output_dir=None if output_dir is None else str(output_dir),
            final_structure=final_structure,
        )

    def describe(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "settings": dict(self.settings),
            "run_options": {k: v for k, v in self.run_options.items()},
            "settings_hash": self.settings_hash,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(version={self.version!r}, settings={self.settings!r})"
