"""What MD and Monte Carlo share: the start structure, results, checkpoints and blow-up checks."""

from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..models.base import EnergyModel, ModelError, load_model
from ..models.calculator import infer_supercell
from ..structure import Configuration, Perovskite, ReferenceSupercell, glazer_system, tilt_configuration
from ..utils import jsonable
from .errors import BlowUpError, SimulationError
from .order import check_tilt_commensurate, undeform

logger = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1
#: an atom further than this from its reference site (Angstrom, a third of the cubic cell) has left its cage
DEFAULT_MAX_DISPLACEMENT = 2.0


@contextmanager
def torch_threads(n: int | None):
    """Run with ``n`` torch threads (None: leave torch's setting). Small tensors and busy machines run
    fastest on one thread: more threads spin-wait on each other when the cores are shared."""
    import torch

    old = torch.get_num_threads()
    if n is not None:
        if int(n) < 1:
            raise SimulationError(f"threads must be a positive integer; got {n!r}")
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def resolve_model(model) -> EnergyModel:
    """A fitted model, or the path of a saved one."""
    if isinstance(model, EnergyModel):
        if not model.is_fitted:
            raise SimulationError(f"{type(model).__name__} is not fitted: train or load a model first")
        m = model
    else:
        try:
            m = load_model(Path(model).expanduser())
        except ModelError as exc:
            raise SimulationError(f"cannot load the model: {exc}") from None
    if getattr(m, "reference_", None) is None:
        raise SimulationError("the model does not record the reference supercell it was trained on; refit or resave it")
    return m


def driver_calculator(driver, perovskite: Perovskite | None = None):
    """``(perovskite, calculator_for(reference))`` of a model, a saved model's path, or an ASE calculator
    (which needs ``perovskite``, the reference it is compared on)."""
    from ase.calculators.calculator import BaseCalculator

    from ..models.calculator import PESCalculator

    if isinstance(driver, BaseCalculator):
        if perovskite is None:
            raise SimulationError("an ASE calculator needs perovskite= (the reference perovskite it is compared on)")
        return perovskite, lambda reference: driver
    model = resolve_model(driver)
    return model.reference_.perovskite, lambda reference: PESCalculator(model, supercell=reference)


def simulation_cell(perovskite: Perovskite, supercell) -> ReferenceSupercell:
    """The N x N x N (or given matrix) supercell of the (model's) reference perovskite."""
    if isinstance(supercell, ReferenceSupercell):
        if supercell.perovskite != perovskite:
            raise SimulationError(
                f"the supercell is of {supercell.perovskite.formula} (a = {supercell.perovskite.lattice_parameter} A); "
                f"the model was trained on {perovskite.formula} (a = {perovskite.lattice_parameter} A)"
            )
        return supercell
    try:
        return perovskite.supercell(supercell)
    except Exception as exc:
        raise SimulationError(
            f"supercell must be an integer N (N x N x N), three integers or a 3x3 matrix; got {supercell!r}: {exc}"
        ) from None


def start_configuration(perovskite: Perovskite, supercell=4, start="a0a0a0", angles=None) -> Configuration:
    """The start of a run: the cubic cell, a Glazer tilt system (default angles or ``angles``), or a structure.

    ``perovskite`` is the reference the model was trained on (``model.reference_.perovskite``).
    ``start`` is a Glazer symbol (``a0a0a0`` is the cubic cell), a :class:`Configuration`, ASE
    ``Atoms``, or the path of a structure file ASE reads (extxyz, POSCAR, CIF, ...). A structure must
    be a supercell of the reference perovskite (atoms in any order); it sets the supercell.
    """
    if isinstance(start, Configuration):
        if start.reference.perovskite != perovskite:
            raise SimulationError("the start configuration is not a supercell of the model's reference perovskite")
        return start
    if isinstance(start, str) and not os.path.exists(start):
        try:
            g = glazer_system(start)
        except Exception as exc:
            raise SimulationError(
                f"start must be a Glazer symbol (e.g. a0a0a0, a+b-b-) or a structure file: {exc}"
            ) from None
        ref = simulation_cell(perovskite, supercell)
        if g.symbol == "a0a0a0":
            return Configuration(ref, tags={"start": "a0a0a0"})
        try:
            check_tilt_commensurate(ref)
            return tilt_configuration(ref, g, angles, tags={"start": g.symbol})
        except Exception as exc:
            raise SimulationError(f"cannot start from {g.symbol} in supercell {ref.matrix.tolist()}: {exc}") from None
    atoms = start
    if not hasattr(start, "get_positions"):
        from ase.io import read

        try:
            atoms = read(str(start))
        except Exception as exc:
            raise SimulationError(f"cannot read the start structure {start}: {exc}") from None
    try:
        ref = infer_supercell(perovskite.supercell(1), atoms.cell.array, len(atoms))
        return Configuration.from_structure(
            ref, atoms, tags={"start": str(start) if isinstance(start, (str, Path)) else "atoms"}
        )
    except Exception as exc:
        raise SimulationError(
            f"the start structure does not match the model's reference ({perovskite.formula}, a = "
            f"{perovskite.lattice_parameter} A): {exc}"
        ) from None


def check_frame(
    reference: ReferenceSupercell,
    positions,
    lattice,
    energy: float,
    step: int,
    temperature_K: float,
    max_displacement: float,
    min_energy_per_fu: float | None = None,
) -> float:
    """Raise :class:`BlowUpError` when a frame is outside any physical domain; return the largest displacement."""
    u, _ = undeform(reference, positions, lattice)
    u = u[0] - u[0].mean(axis=0)
    norms = np.sqrt((u * u).sum(axis=1))
    worst = int(np.argmax(norms))
    dmax = float(norms[worst])
    if not np.isfinite(energy):
        raise BlowUpError("the energy is not finite", step, temperature_K, dmax)
    if dmax > max_displacement:
        raise BlowUpError(
            f"atom {worst} ({reference.species[worst]}) moved {dmax:.2f} A from its site (limit {max_displacement} A)",
            step,
            temperature_K,
            dmax,
        )
    if min_energy_per_fu is not None and energy / reference.n_cells < min_energy_per_fu:
        raise BlowUpError(
            f"the energy fell to {energy / reference.n_cells * 1000:.0f} meV per formula unit "
            "above the cubic reference "
            f"(limit {min_energy_per_fu * 1000:.0f})",
            step,
            temperature_K,
            dmax,
        )
    return dmax


@dataclass
class SimulationResult:
    """What a run measured: one summary per stage (thermal averages, susceptibilities, phase) and run figures."""

    method: str
    settings: dict
    reference: ReferenceSupercell
    stages: list = field(default_factory=list)
    series: list = field(default_factory=list)
    steps: int = 0
    wall_time_s: float = 0.0
    model: str = ""
    trajectory: str | None = None
    completed: bool = False
    #: the largest distance of any atom from its site (A, rigid translation removed) in the frames checked
    max_displacement_A: float = 0.0

    @property
    def atoms(self) -> int:
        return self.reference.n_atoms

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.wall_time_s if self.wall_time_s > 0 else 0.0

    def to_dict(self, series: bool = False) -> dict:
        """JSON-able summary; the top-level order parameters, lattice and phase are those of the last stage."""
        last = self.stages[-1] if self.stages else {}
        out = {
            "method": self.method,
            "model": self.model,
            "temperature_K": last.get("temperature_K"),
            "steps": int(self.steps),
            "atoms": int(self.atoms),
            "supercell": self.reference.matrix.tolist(),
            "steps_per_second": float(self.steps_per_second),
            "wall_time_s": float(self.wall_time_s),
            "order_parameters": {
                "R": last.get("R"),
                "M": last.get("M"),
                "R_total": last.get("R_total"),
                "M_total": last.get("M_total"),
                "chi_R": last.get("chi_R"),
                "chi_M": last.get("chi_M"),
                "units": "degrees; susceptibilities deg^2/eV per formula unit",
            },
            "lattice_parameters": last.get("lattice_parameters"),
            "phase": (last.get("phase") or {}).get("glazer"),
            "space_group": (last.get("phase") or {}).get("space_group"),
            "stages": self.stages,
            "settings": self.settings,
            "trajectory": self.trajectory,
            "completed": bool(self.completed),
            "max_displacement_A": float(self.max_displacement_A),
        }
        if series:
            out["series"] = self.series
        return jsonable(out)


# ---------------------------------------------------------------------------------------- checkpoints
def write_checkpoint(path: Path, state: dict) -> None:
    """Atomically write a JSON checkpoint (no pickle: arrays as lists)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(jsonable({"version": CHECKPOINT_VERSION, **state})))
    os.replace(tmp, path)


def read_checkpoint(path: Path, method: str) -> dict:
    path = Path(path)
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SimulationError(f"cannot read the checkpoint {path}: {exc}") from None
    if state.get("version") != CHECKPOINT_VERSION or state.get("method") != method:
        raise SimulationError(
            f"{path} is not a {method} checkpoint of this version "
            f"(found {state.get('method')!r}, version {state.get('version')!r})"
        )
    return state


def check_same_run(state: dict, **expected) -> None:
    """A restart must continue the run it was written by: same schedule, settings and cell."""
    for key, value in expected.items():
        if json.dumps(jsonable(state.get(key)), sort_keys=True) != json.dumps(jsonable(value), sort_keys=True):
            raise SimulationError(
                f"the checkpoint was written by a different run ({key} differs); "
                "remove it or use the same options to resume"
            )
