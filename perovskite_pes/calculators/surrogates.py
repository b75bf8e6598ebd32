"""Pretrained universal interatomic potentials that ship their weights (no network at run time).

* ``sevennet``: SevenNet multi-fidelity model ``7net-mf-0`` evaluated on its ``R2SCAN`` modal
  (the default calculator: it distinguishes in-phase from anti-phase octahedral tilts).
* ``chgnet``: CHGNet (model 0.3.0), 2-3x faster, but gives identical energies for in-phase and
  anti-phase tilts; a fast option for smoke runs, not for production.

Loaded models are cached per process (loading takes seconds). Relaxations use ASE optimizers;
``relax="cell"`` wraps the atoms in a :class:`ase.filters.FrechetCellFilter`.
"""

from __future__ import annotations

import importlib.metadata
import os
import threading
import warnings
from pathlib import Path

import numpy as np

from .base import DEFAULT_MIN_DISTANCE, CalcResult, Calculator, CalculatorError, CalculatorInputError

_MODEL_CACHE: dict[tuple, object] = {}
_CACHE_LOCK = threading.Lock()

OPTIMIZERS = ("BFGS", "FIRE", "LBFGS")


def _package_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


#: the most torch threads ``threads="auto"`` picks: a 40-atom SevenNet single point took 205 ms on 2 threads
#: against 283 ms on one on an idle 2-core machine; on busy cores two threads wait for each other (10x slower)
AUTO_MAX_THREADS = 2
_AUTO_THREADS: list[int] = []


def auto_threads() -> int:
    """Torch threads for ``threads="auto"``: as many of :data:`AUTO_MAX_THREADS` as there are idle cores
    (cores minus the 1-minute load average, rounded), at least one and never more than
    ``OMP_NUM_THREADS`` where that is set (a batch script's or a parallel test runner's share of the
    machine); decided once per process, before its own work counts in the load."""
    if not _AUTO_THREADS:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        omp = os.environ.get("OMP_NUM_THREADS", "").strip()
        if omp.isdigit() and int(omp) > 0:
            cores = min(cores, int(omp))
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
        _AUTO_THREADS.append(max(1, min(AUTO_MAX_THREADS, int(round(cores - load)))))
    return _AUTO_THREADS[0]


def set_torch_threads(threads: int | str | None) -> None:
    """Use ``threads`` intra-op threads in torch ("auto": :func:`auto_threads`; None leaves torch's choice)."""
    if threads is None:
        return
    import torch

    given = threads
    if threads == "auto":
        threads = auto_threads()
    try:
        threads = int(threads)
    except (TypeError, ValueError):
        threads = 0
    if threads < 1:
        raise CalculatorInputError(f"threads must be a positive integer or 'auto'; got {given!r}")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


class SurrogateCalculator(Calculator):
    """Common machinery for ASE-calculator based ML potentials."""

    package: str = ""
    base_settings = {"fmax": 0.01, "max_steps": 500, "optimizer": "BFGS"}
    relax_only_settings = ("fmax", "max_steps", "optimizer")
    default_run_options = {
        "device": "cpu",
        "threads": "auto",
        "min_distance": DEFAULT_MIN_DISTANCE,
        "trajectory": False,
    }

    def _validate(self) -> None:
        s = self.settings
        if s["optimizer"] not in OPTIMIZERS:
            raise CalculatorInputError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {s['optimizer']!r}")
        if not (float(s["fmax"]) > 0):
            raise CalculatorInputError(f"fmax must be a positive force in eV/A; got {s['fmax']!r}")
        if int(s["max_steps"]) < 1:
            raise CalculatorInputError(f"max_steps must be >= 1; got {s['max_steps']!r}")

    @property
    def version(self) -> str:
        return f"{self.package} {_package_version(self.package) or 'not-installed'}"

    def check_available(self) -> None:
        if _package_version(self.package) is None:
            raise CalculatorError(
                f"calculator {self.name!r} needs the Python package {self.package}: pip install {self.package}"
            )

    # ------------------------------------------------------------------ model loading
    def _cache_key(self) -> tuple:
        raise NotImplementedError

    def _load(self):
        raise NotImplementedError

    def ase_calculator(self):
        """The (cached) ASE calculator of this model."""
        self.check_available()
        set_torch_threads(self.run_options["threads"])
        key = self._cache_key()
        with _CACHE_LOCK:
            calc = _MODEL_CACHE.get(key)
            if calc is None:
                calc = self._load()
                _MODEL_CACHE[key] = calc
        return calc

    # ------------------------------------------------------------------ calculation
    def _calculate(self, structure, relax, workdir: Path | None) -> CalcResult:
        import warnings

        with warnings.catch_warnings():
            # the models warn about tensor copies and missing GPU accelerators on every call
            warnings.simplefilter("ignore", UserWarning)
            return self._calculate_quietly(structure, relax, workdir)

    def _calculate_quietly(self, structure, relax, workdir: Path | None) -> CalcResult:
        from pymatgen.io.ase import AseAtomsAdaptor

        atoms = AseAtomsAdaptor.get_atoms(structure)
        atoms.info.clear()
        atoms.calc = self.ase_calculator()
        final_structure = None
        if relax is not None:
            converged, fmax_reached, nsteps = self._relax(atoms, relax, workdir)
            final_structure = _structure_of(atoms)
            if not converged:
                return CalcResult.failed(
                    self,
                    f"relaxation ({relax}) did not converge in {nsteps} steps: largest residual force "
                    f"{fmax_reached:.4g} eV/A (target {self.settings['fmax']} eV/A)",
                    output_dir=workdir,
                )
        energy = float(atoms.get_potential_energy())
        forces = np.asarray(atoms.get_forces(), dtype=float)
        stress = np.asarray(atoms.get_stress(voigt=True), dtype=float)
        if not (np.isfinite(energy) and np.all(np.isfinite(forces)) and np.all(np.isfinite(stress))):
            return CalcResult.failed(self, "the model returned non-finite energy, forces or stress", output_dir=workdir)
        return self._result(energy, forces, stress, output_dir=workdir, final_structure=final_structure)

    def _relax(self, atoms, relax: str, workdir: Path | None):
        import ase.optimize
        from ase.filters import FrechetCellFilter

        target = FrechetCellFilter(atoms) if relax == "cell" else atoms
        optimizer_cls = getattr(ase.optimize, self.settings["optimizer"])
        logfile = str(workdir / "relax.txt") if workdir is not None else None
        trajectory = str(workdir / "relax.traj") if (workdir is not None and self.run_options["trajectory"]) else None
        opt = optimizer_cls(target, logfile=logfile, trajectory=trajectory)
        with warnings.catch_warnings():
            # the cell filter's matrix logarithm warns about 1e-13 round-off at every step
            warnings.filterwarnings("ignore", message="logm result may be inaccurate")
            converged = bool(opt.run(fmax=float(self.settings["fmax"]), steps=int(self.settings["max_steps"])))
        residual = float(np.sqrt((target.get_forces() ** 2).sum(axis=1).max()))
        return converged, residual, opt.nsteps


def _structure_of(atoms):
    """A plain pymatgen Structure (float64, no calculator results attached) of ASE ``atoms``."""
    from pymatgen.core import Lattice, Structure

    return Structure(
        Lattice(np.asarray(atoms.cell[:], dtype=float)),
        atoms.get_chemical_symbols(),
        np.asarray(atoms.positions, dtype=float),
        coords_are_cartesian=True,
    )


class SevenNetCalculator(SurrogateCalculator):
    """SevenNet (``sevenn``) universal potential; default model ``7net-mf-0`` on modal ``R2SCAN``."""

    name = "sevennet"
    package = "sevenn"
    default_settings = {"model": "7net-mf-0", "modal": "R2SCAN", **SurrogateCalculator.base_settings}

    def _cache_key(self):
        return ("sevennet", self.settings["model"], self.settings["modal"], str(self.run_options["device"]))

    def _load(self):
        import warnings

        from sevenn.calculator import SevenNetCalculator as _Calc

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return _Calc(self.settings["model"], modal=self.settings["modal"], device=self.run_options["device"])
            except (ValueError, KeyError, FileNotFoundError, NotImplementedError) as exc:
                raise CalculatorError(
                    f"cannot load SevenNet model {self.settings['model']!r} "
                    f"with modal {self.settings['modal']!r}: {exc}"
                ) from exc

    def weights_path(self) -> Path | None:
        """The checkpoint shipped with the package for the configured model (None if absent)."""
        from sevenn.util import pretrained_name_to_path

        try:
            path = Path(pretrained_name_to_path(self.settings["model"]))
        except Exception:  # noqa: BLE001 - unknown name or missing file: not a pretrained model
            path = Path(self.settings["model"])
        return path if path.is_file() else None

    def availability_details(self) -> dict:
        path = self.weights_path()
        return {"detail": f"model {self.settings['model']} (modal {self.settings['modal']}), weights {path}"}

    def check_available(self) -> None:
        super().check_available()
        if self.weights_path() is None:
            raise CalculatorError(
                f"SevenNet model {self.settings['model']!r} has no checkpoint on this machine; "
                "use a pretrained name shipped with sevenn (e.g. 7net-mf-0) or a checkpoint file path"
            )


class CHGNetCalculator(SurrogateCalculator):
    """CHGNet universal potential (weights shipped with the ``chgnet`` package)."""

    name = "chgnet"
    package = "chgnet"
    default_settings = {"model": "0.3.0", **SurrogateCalculator.base_settings}

    def _cache_key(self):
        return ("chgnet", self.settings["model"], str(self.run_options["device"]))

    def _load(self):
        import contextlib
        import io
        import warnings

        from chgnet.model import CHGNet
        from chgnet.model.dynamics import CHGNetCalculator as _Calc

        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            try:
                model = CHGNet.load(
                    model_name=self.settings["model"], use_device=self.run_options["device"], verbose=False
                )
            except (ValueError, KeyError, FileNotFoundError) as exc:
                raise CalculatorError(f"cannot load CHGNet model {self.settings['model']!r}: {exc}") from exc
            return _Calc(model=model, use_device=self.run_options["device"])

    def weights_path(self) -> Path | None:
        import chgnet

        folder = Path(chgnet.__file__).parent / "pretrained" / str(self.settings["model"])
        found = sorted(folder.glob("*.pth.tar")) if folder.is_dir() else []
        return found[0] if found else None

    def availability_details(self) -> dict:
        return {"detail": f"model {self.settings['model']}, weights {self.weights_path()}"}

    def check_available(self) -> None:
        super().check_available()
        if self.weights_path() is None:
            raise CalculatorError(
                f"CHGNet model {self.settings['model']!r} has no weights in the chgnet package; "
                "use a model shipped with chgnet 0.4.2 (0.3.0)"
            )
