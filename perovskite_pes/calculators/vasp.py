"""VASP through custodian, with inputs configured like Thomas et al. (2019).

PBEsol (GGA = PS), ENCUT 400 eV, PAW, a Gamma-centred mesh equivalent to 6x6x6 per primitive cell
(3x3x3 on the 2x2x2 supercell), no spin polarisation, Gaussian smearing, EDIFF 1e-6 eV. The
inputs come from a pymatgen input set built on the Materials Project defaults, which would
otherwise add settings that are wrong here (ISPIN 2 and MAGMOM, ISMEAR -5 on supercells, NSW 99 on
a static run, EDIFF per atom, LREAL Auto): :class:`PerovskiteVaspSet` overrides them explicitly.

POTCARs come from pymatgen's ``PMG_VASP_PSP_DIR``. The run goes through custodian's ``VaspJob``
with the usual error handlers and the ``VasprunXMLValidator``; results are parsed from
``vasprun.xml`` by pymatgen. An electronically or ionically unconverged run is a failed result.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._common import (
    DEFAULT_KPOINT_LENGTH,
    kpoint_mesh,
    missing_executables,
    new_run_dir,
    run_custodian,
    split_command,
    tail,
)
from .base import DEFAULT_MIN_DISTANCE, CalcResult, Calculator, CalculatorError, CalculatorInputError

try:  # pymatgen is a hard dependency; the import is kept local to the VASP layer
    from pymatgen.io.vasp.sets import MPRelaxSet, VaspInputSet
except ImportError:  # pragma: no cover
    VaspInputSet = object
    MPRelaxSet = None


#: INCAR for a static (single-point) run; relaxations change only the ionic keys
STATIC_INCAR = {
    "GGA": "PS",  # PBEsol
    "ENCUT": 400,
    "PREC": "Accurate",
    "ISPIN": 1,
    "MAGMOM": None,
    "ISMEAR": 0,
    "SIGMA": 0.05,
    "EDIFF": 1e-6,
    "EDIFF_PER_ATOM": None,
    "NELM": 100,
    "ALGO": "Normal",
    "LREAL": False,
    "LASPH": True,
    "NSW": 0,
    "IBRION": -1,
    "LWAVE": False,
    "LCHARG": False,
    "LORBIT": None,
    "LDAU": None,
}


@dataclass
class PerovskiteVaspSet(VaspInputSet):
    """Input set of the paper's DFT settings; a pure generator of INCAR/KPOINTS/POSCAR/POTCAR.

    Parameters beyond :class:`pymatgen.io.vasp.sets.VaspInputSet`'s:
        relax: None (static), "positions" (ISIF 2) or "cell" (ISIF 3).
        encut, ediff, sigma: plane-wave cutoff (eV), electronic convergence (eV), smearing (eV).
        mesh: explicit Gamma-centred k-point mesh, or None to derive it from ``kpoint_length``.
        ediffg, nsw: relaxation force criterion (negative: eV/A) and maximum ionic steps.
    """

    relax: str | None = None
    encut: float = 400
    ediff: float = 1e-6
    sigma: float = 0.05
    mesh: tuple | None = None
    kpoint_length: float = DEFAULT_KPOINT_LENGTH
    ediffg: float = -0.005
    nsw: int = 100
    sort_structure: bool = False  # keep the input's site order: forces come back in it
    CONFIG = MPRelaxSet.CONFIG if MPRelaxSet is not None else {}

    def __post_init__(self):
        if self.relax not in (None, "positions", "cell"):
            raise CalculatorInputError(f"relax must be None, 'positions' or 'cell'; got {self.relax!r}")
        super().__post_init__()

    @property
    def incar_updates(self) -> dict:
        updates = dict(STATIC_INCAR)
        updates.update({"ENCUT": self.encut, "EDIFF": self.ediff, "SIGMA": self.sigma})
        if self.relax is not None:
            updates.update(
                {"NSW": int(self.nsw), "IBRION": 2, "ISIF": 3 if self.relax == "cell" else 2, "EDIFFG": self.ediffg}
            )
        return updates

    @property
    def kpoints_updates(self):
        from pymatgen.io.vasp.inputs import Kpoints

        mesh = kpoint_mesh(self.structure.lattice.matrix, self.mesh, self.kpoint_length)
        return Kpoints.gamma_automatic(mesh)


def _kbar_to_ase_stress(stress_kbar) -> np.ndarray:
    """VASP's stress (kBar, positive = compressive / pressure) -> ASE Voigt eV/A^3 (positive = tensile)."""
    from ase.units import GPa

    s = -0.1 * GPa * np.asarray(stress_kbar, dtype=float)
    return np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])


def parse_vasp_run(directory, relax: str | None = None) -> dict:
    """Read ``vasprun.xml`` of a finished run.

    Returns a dict with ``energy`` (free energy of the last ionic step, the energy the forces
    derive from), ``forces``, ``stress`` (ASE convention), ``final_structure``, ``version``, or
    ``error`` (a reason) when the file is missing, malformed or the run did not converge.
    """
    from pymatgen.io.vasp.outputs import Vasprun

    path = Path(directory) / "vasprun.xml"
    if not path.exists():
        return {"error": f"no vasprun.xml in {directory}"}
    try:
        run = Vasprun(str(path), parse_dos=False, parse_eigen=False, parse_potcar_file=False, exception_on_bad_xml=True)
    except Exception as exc:  # noqa: BLE001 - any parse problem makes the record a failure
        return {"error": f"vasprun.xml could not be parsed: {type(exc).__name__}: {exc}"}
    if not run.ionic_steps:
        return {"error": "vasprun.xml holds no ionic step"}
    nelm = run.parameters.get("NELM", 60)
    if not run.converged_electronic:
        return {"error": f"electronic SCF not converged within NELM = {nelm} steps (last ionic step)"}
    if relax is not None and not run.converged_ionic:
        return {"error": f"ionic relaxation not converged within NSW = {run.parameters.get('NSW')} steps"}
    step = run.ionic_steps[-1]
    missing = [key for key in ("e_fr_energy", "forces", "stress") if key not in step]
    if missing:
        return {"error": f"vasprun.xml's last ionic step lacks {', '.join(missing)}"}
    return {
        "energy": float(step["e_fr_energy"]),
        "forces": np.asarray(step["forces"], dtype=float),
        "stress": _kbar_to_ase_stress(step["stress"]),
        "final_structure": run.final_structure,
        "version": f"vasp {run.vasp_version}",
    }


def potcar_dir() -> str | None:
    """PMG_VASP_PSP_DIR from the environment or pymatgen's settings file."""
    env = os.environ.get("PMG_VASP_PSP_DIR")
    if env:
        return env
    try:
        from pymatgen.core import SETTINGS

        return SETTINGS.get("PMG_VASP_PSP_DIR")
    except ImportError:  # pragma: no cover
        return None


class VaspCalculator(Calculator):
    """VASP via custodian (see module docstring for the physics settings)."""

    name = "vasp"
    default_settings = {
        "encut": 400,
        "ediff": 1e-6,
        "sigma": 0.05,
        "kpoints": None,
        "kpoint_length": DEFAULT_KPOINT_LENGTH,
        "ediffg": -0.005,
        "nsw": 100,
        "potcar_functional": "PBE",
        "potcar_settings": {},  # element -> POTCAR symbol overrides, e.g. {"Pb": "Pb_d"}
        "incar": {},  # further INCAR keys (applied last)
        "vasp_version": "unspecified",
    }
    relax_only_settings = ("ediffg", "nsw")
    default_run_options = {
        "vasp_cmd": None,  # default: $PES_VASP_CMD or "vasp_std"
        "polling_time_step": 5.0,
        "monitor_freq": 6,
        "max_errors": 5,
        "walltime": None,  # seconds; None lets custodian read PBS_WALLTIME
        "frozen_timeout": 3600,
        "potcar_spec": False,  # write POTCAR.spec (symbols only) instead of POTCAR: for tests
        "min_distance": DEFAULT_MIN_DISTANCE,
    }

    def _validate(self) -> None:
        if self.settings["kpoints"] is not None:
            self.settings["kpoints"] = list(kpoint_mesh(np.eye(3), self.settings["kpoints"]))
        self.vasp_cmd = split_command(
            self.run_options["vasp_cmd"] or os.environ.get("PES_VASP_CMD") or "vasp_std", "vasp_cmd"
        )

    @property
    def version(self) -> str:
        return f"vasp {self.settings['vasp_version']}"

    @property
    def supported_elements(self) -> set:
        return set(PerovskiteVaspSet.CONFIG["POTCAR"]) | set(self.settings["potcar_settings"])

    def check_available(self) -> None:
        problems = []
        missing = missing_executables(self.vasp_cmd)
        if missing:
            problems.append(
                f"VASP executable not found: {', '.join(missing)} (vasp_cmd = {' '.join(self.vasp_cmd)}); "
                "install VASP and set PES_VASP_CMD or the vasp_cmd run option, e.g. 'mpirun -np 16 vasp_std'"
            )
        if not self.run_options["potcar_spec"] and not potcar_dir():
            problems.append(
                "VASP needs POTCARs: set PMG_VASP_PSP_DIR (environment or ~/.config/.pmgrc.yaml) to the folder "
                "that holds POT_GGA_PAW_PBE/... (see 'pmg config -p')"
            )
        if problems:
            raise CalculatorError("; ".join(problems))

    def availability_details(self) -> dict:
        return {"detail": f"vasp_cmd = {' '.join(self.vasp_cmd)}, POTCARs in {potcar_dir()}"}

    def check_submit(self) -> None:
        """A VASP campaign needs a vasp_cmd and POTCARs before it is submitted, not when a worker runs it."""
        problems = []
        if not (self.run_options["vasp_cmd"] or os.environ.get("PES_VASP_CMD")):
            problems.append(
                "no vasp_cmd: set calculator.settings.vasp_cmd in the spec (e.g. 'srun vasp_std') or PES_VASP_CMD"
            )
        if not self.run_options["potcar_spec"]:
            folder = potcar_dir()
            if not folder:
                problems.append(
                    "no POTCARs: set PMG_VASP_PSP_DIR (environment or ~/.config/.pmgrc.yaml, see "
                    "'pmg config -p') to the folder that holds POT_GGA_PAW_PBE/..."
                )
            elif not Path(folder).expanduser().is_dir():
                problems.append(f"PMG_VASP_PSP_DIR={folder} is not a folder")
        if problems:
            raise CalculatorError("VASP campaign refused: " + "; ".join(problems))

    def input_set(self, structure, relax: str | None = None) -> PerovskiteVaspSet:
        s = self.settings
        return PerovskiteVaspSet(
            structure=structure,
            relax=relax,
            encut=s["encut"],
            ediff=s["ediff"],
            sigma=s["sigma"],
            mesh=s["kpoints"],
            kpoint_length=s["kpoint_length"],
            ediffg=s["ediffg"],
            nsw=s["nsw"],
            user_incar_settings=dict(s["incar"]),
            user_potcar_settings=dict(s["potcar_settings"]),
            user_potcar_functional=s["potcar_functional"],
        )

    def write_inputs(self, structure, directory, relax: str | None = None) -> Path:
        """Write INCAR, KPOINTS, POSCAR and POTCAR (or POTCAR.spec) into ``directory``."""
        directory = Path(directory)
        vis = self.input_set(structure, relax)
        spec = bool(self.run_options["potcar_spec"])
        if not spec:
            self._check_potcars(vis)
        vis.write_input(str(directory), potcar_spec=spec)
        return directory

    def _check_potcars(self, vis) -> None:
        from pymatgen.io.vasp.inputs import PotcarSingle

        for element, symbol in zip(vis.poscar.site_symbols, vis.potcar_symbols):
            try:
                PotcarSingle.from_symbol_and_functional(symbol, vis.potcar_functional)
            except (OSError, ValueError, RuntimeError) as exc:
                raise CalculatorError(
                    f"no {vis.potcar_functional} POTCAR {symbol!r} for element {element} under "
                    f"PMG_VASP_PSP_DIR={potcar_dir()}: {exc}"
                ) from exc

    def custodian_handlers(self):
        from custodian.vasp.handlers import (
            FrozenJobErrorHandler,
            NonConvergingErrorHandler,
            PotimErrorHandler,
            UnconvergedErrorHandler,
            VaspErrorHandler,
            WalltimeHandler,
        )
        from custodian.vasp.validators import VasprunXMLValidator

        handlers = [
            VaspErrorHandler(),
            UnconvergedErrorHandler(),
            NonConvergingErrorHandler(),
            PotimErrorHandler(),
            FrozenJobErrorHandler(timeout=int(self.run_options["frozen_timeout"])),
            WalltimeHandler(wall_time=self.run_options["walltime"]),
        ]
        return handlers, [VasprunXMLValidator()]

    def _calculate(self, structure, relax, workdir) -> CalcResult:
        from custodian.vasp.jobs import VaspJob

        run_dir = new_run_dir(self.name, workdir)
        self.write_inputs(structure, run_dir, relax)
        handlers, validators = self.custodian_handlers()
        job = VaspJob(self.vasp_cmd, auto_npar=False, auto_gamma=False, final=True, backup=True)
        reason = run_custodian(handlers, [job], validators, run_dir, self.run_options, stderr_file="std_err.txt")
        if reason is not None:
            return CalcResult.failed(self, reason, output_dir=run_dir)
        parsed = parse_vasp_run(run_dir, relax)
        if "error" in parsed:
            out = tail(run_dir / "vasp.out", 3)
            return CalcResult.failed(self, parsed["error"] + (f"; vasp.out: {out}" if out else ""), output_dir=run_dir)
        if len(parsed["forces"]) != len(structure):
            return CalcResult.failed(
                self,
                f"vasprun.xml has {len(parsed['forces'])} atoms but the input has {len(structure)}",
                output_dir=run_dir,
            )
        return self._result(
            parsed["energy"],
            parsed["forces"],
            parsed["stress"],
            output_dir=run_dir,
            final_structure=parsed["final_structure"] if relax else None,
            version=parsed["version"],
        )
