"""CP2K (Quickstep, GPW) through custodian: the open-source DFT code available everywhere.

Defaults: PBEsol (``&PBE PARAMETRIZATION PBESOL``), GTH pseudopotentials (Cs q9, Pb q4, Br q7) with
DZVP-MOLOPT-SR-GTH bases, 400 Ry cutoff, a Gamma-centred Monkhorst-Pack mesh equivalent to 6x6x6 per
primitive cell (``FULL_GRID``: CP2K's k-point symmetry reduction is unreliable for distorted cells),
closed-shell (RKS), diagonalisation with Broyden mixing. Relaxations use CP2K's own GEO_OPT
(positions) or CELL_OPT (positions and cell).

Traps handled here:

* coordinates go in a separate XYZ file (``&TOPOLOGY COORD_FILE_NAME``): custodian re-reads and
  re-writes the input file with pymatgen, whose parser would reorder an inline ``&COORD`` block;
* output goes to stdout (custodian redirects it); ``-o file`` would append to an existing file, and
  trajectory files of an earlier run in the same folder are removed before a run for the same reason;
* ``CP2K_DATA_DIR`` is CP2K's own variable: the data directory is only read here to check that
  basis sets and pseudopotentials exist, never exported for pymatgen;
* ``Cp2kOutput`` gives the energy in eV (pymatgen's Hartree), forces in Hartree/Bohr and the stress
  in GPa with CP2K's sign (positive = compressive); forces and trajectory energies are converted
  with the same constants as the energy (ASE's older Hartree differs by 8e-9, 1e-4 eV on a 40-atom
  cell), the stress to ASE's convention.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from pathlib import Path

import numpy as np

from ..utils import environment
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

DEFAULT_CP2K_CMD = "mpirun --allow-run-as-root -np 2 cp2k.psmp"
DEFAULT_DATA_DIR = "/usr/share/cp2k"
PROJECT = "pes"
INPUT_FILE = "cp2k.inp"
OUTPUT_FILE = "cp2k.out"
COORD_FILE = "structure.xyz"

#: per-element defaults; other elements fall back to the generic names below
DEFAULT_POTENTIALS = {"Cs": "GTH-PBE-q9", "Pb": "GTH-PBE-q4", "Br": "GTH-PBE-q7"}
GENERIC_POTENTIAL = "GTH-PBE"
GENERIC_BASIS = "DZVP-MOLOPT-SR-GTH"


def _hartree() -> float:
    """eV per Hartree, the constant pymatgen's parser converts CP2K's energies with."""
    from pymatgen.core.units import Ha_to_eV

    return float(Ha_to_eV)


def _force_unit() -> float:
    """eV/A per Hartree/Bohr, with the energy's constants."""
    from pymatgen.core.units import bohr_to_ang

    return _hartree() / float(bohr_to_ang)


@functools.lru_cache(maxsize=8)
def cp2k_version(executable: str) -> str | None:
    """'2023.1' from ``<executable> --version`` (None if it cannot be run)."""
    try:
        out = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"CP2K version\s+(\S+)", out)
    return m.group(1) if m else None


@functools.lru_cache(maxsize=32)
def _names_in_data_file(path: str) -> dict[str, set[str]]:
    """Element -> names (with aliases) defined in a CP2K basis or potential file."""
    names: dict[str, set[str]] = {}
    try:
        with open(path, errors="replace") as fh:
            for line in fh:
                if not line or line[0] in "#!\n" or not line.strip():
                    continue
                parts = line.split()
                if len(parts) >= 2 and parts[0][:1].isalpha() and parts[0][:1].isupper() and len(parts[0]) <= 2:
                    if parts[1][:1].isalpha():
                        names.setdefault(parts[0], set()).update(parts[1:])
    except OSError:
        return {}
    return names


class Cp2kCalculator(Calculator):
    """CP2K single points and relaxations (see the module docstring)."""

    name = "cp2k"
    default_settings = {
        "xc": "PBESOL",  # PARAMETRIZATION of &PBE: PBESOL, ORIG (PBE) or REVPBE
        "cutoff": 400.0,  # Ry
        "rel_cutoff": 50.0,  # Ry
        "basis_file": "BASIS_MOLOPT",
        "potential_file": "GTH_POTENTIALS",
        "basis": {},  # element -> basis name (default DZVP-MOLOPT-SR-GTH)
        "potentials": {},  # element -> potential name (defaults: Cs q9, Pb q4, Br q7, else GTH-PBE)
        "kpoints": None,
        "kpoint_length": DEFAULT_KPOINT_LENGTH,
        "eps_scf": 1e-7,
        "max_scf": 100,
        "mixing_alpha": 0.3,
        "eps_default": 1e-12,
        "fmax": 0.01,  # eV/A, relaxations (CP2K MAX_FORCE)
        "max_iter": 200,  # relaxations
        "pressure_tolerance": 100.0,  # bar, cell relaxations
    }
    relax_only_settings = ("fmax", "max_iter", "pressure_tolerance")
    default_run_options = {
        "cp2k_cmd": None,  # default: $PES_CP2K_CMD or "mpirun --allow-run-as-root -np 2 cp2k.psmp"
        "data_dir": None,  # default: $CP2K_DATA_DIR or /usr/share/cp2k
        "omp_threads": 1,
        "polling_time_step": 1.0,
        "monitor_freq": 10,
        "max_errors": 3,
        "walltime": None,  # seconds (CP2K's GLOBAL/WALLTIME); default: $PES_CP2K_WALLTIME, else no limit
        "frozen_timeout": 3600,  # seconds without new output before a run counts as hung
        "max_reruns": 2,  # reruns of a run killed from outside (signal, out-of-memory killer)
        "min_distance": DEFAULT_MIN_DISTANCE,
    }

    def _validate(self) -> None:
        s = self.settings
        if s["xc"].upper() not in ("PBESOL", "ORIG", "REVPBE"):
            raise CalculatorInputError(f"xc must be PBESOL, ORIG (PBE) or REVPBE; got {s['xc']!r}")
        for key in ("cutoff", "rel_cutoff", "eps_scf", "fmax", "mixing_alpha"):
            if not float(s[key]) > 0:
                raise CalculatorInputError(f"{key} must be positive; got {s[key]!r}")
        if s["kpoints"] is not None:
            s["kpoints"] = list(kpoint_mesh(np.eye(3), s["kpoints"]))
        self.cp2k_cmd = split_command(
            self.run_options["cp2k_cmd"] or os.environ.get("PES_CP2K_CMD") or DEFAULT_CP2K_CMD, "cp2k_cmd"
        )
        self.data_dir = Path(self.run_options["data_dir"] or os.environ.get("CP2K_DATA_DIR") or DEFAULT_DATA_DIR)
        for key in ("walltime", "frozen_timeout"):
            value = self.run_options[key]
            if value is not None and not (
                isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
            ):
                raise CalculatorInputError(f"{key} must be a positive number of seconds; got {value!r}")

    @property
    def walltime(self) -> float | None:
        """Seconds CP2K may run (GLOBAL/WALLTIME): the run option, else $PES_CP2K_WALLTIME, read at run time
        so that a worker's batch script can hand over the time its job has left."""
        value = self.run_options["walltime"]
        if value is None and os.environ.get("PES_CP2K_WALLTIME"):
            raw = os.environ["PES_CP2K_WALLTIME"]
            try:
                value = float(raw)
            except ValueError:
                raise CalculatorInputError(f"PES_CP2K_WALLTIME must be a number of seconds; got {raw!r}") from None
        return None if value is None else float(value)

    @property
    def executable(self) -> str:
        return self.cp2k_cmd[-1]

    @property
    def version(self) -> str:
        return f"cp2k {cp2k_version(self.executable) or 'unknown'}"

    def check_available(self) -> None:
        missing = missing_executables(self.cp2k_cmd)
        if missing:
            raise CalculatorError(
                f"CP2K not usable: {', '.join(missing)} not found (cp2k_cmd = {' '.join(self.cp2k_cmd)}); "
                "install it (Debian/Ubuntu: apt-get install cp2k openmpi-bin) or set PES_CP2K_CMD"
            )
        for key in ("basis_file", "potential_file"):
            if not (self.data_dir / self.settings[key]).is_file():
                raise CalculatorError(
                    f"CP2K data file {self.settings[key]} not found in {self.data_dir}: install CP2K's basis sets and "
                    "pseudopotentials (Debian/Ubuntu: apt-get install cp2k-data) or point CP2K_DATA_DIR (or the "
                    "data_dir run option) at the folder that holds them"
                )

    def availability_details(self) -> dict:
        return {"detail": f"cp2k_cmd = {' '.join(self.cp2k_cmd)}, data in {self.data_dir}"}

    def kind_parameters(self, elements) -> dict[str, tuple[str, str]]:
        """Element -> (basis, potential); raises if the data files lack one."""
        basis_names = _names_in_data_file(str(self.data_dir / self.settings["basis_file"]))
        pot_names = _names_in_data_file(str(self.data_dir / self.settings["potential_file"]))
        out = {}
        for el in elements:
            basis = self.settings["basis"].get(el, GENERIC_BASIS)
            pot = self.settings["potentials"].get(el, DEFAULT_POTENTIALS.get(el, GENERIC_POTENTIAL))
            if pot not in pot_names.get(el, set()):
                raise CalculatorInputError(
                    f"no pseudopotential {pot!r} for element {el} in {self.data_dir / self.settings['potential_file']}"
                    + (f"; available: {', '.join(sorted(pot_names[el]))}" if el in pot_names else "")
                )
            if basis not in basis_names.get(el, set()):
                raise CalculatorInputError(
                    f"no basis set {basis!r} for element {el} in {self.data_dir / self.settings['basis_file']}"
                    + (f"; available: {', '.join(sorted(basis_names[el]))}" if el in basis_names else "")
                )
            out[el] = (basis, pot)
        return out

    # ------------------------------------------------------------------ input
    def input(self, structure, relax: str | None = None):
        """The CP2K input as a pymatgen ``Cp2kInput`` (coordinates live in ``structure.xyz``)."""
        from pymatgen.io.cp2k.inputs import Cp2kInput, Keyword, Section

        def sec(name, keywords=None, subsections=(), params=(), alias=None):
            kw = {k: Keyword(k, *(v if isinstance(v, tuple) else (v,))) for k, v in (keywords or {}).items()}
            subs = {s.alias or s.name: s for s in subsections}
            return Section(name, subsections=subs, keywords=kw, section_parameters=params, alias=alias)

        s = self.settings
        elements = list(dict.fromkeys(site.specie.symbol for site in structure))
        kinds = self.kind_parameters(elements)
        mesh = kpoint_mesh(structure.lattice.matrix, s["kpoints"], s["kpoint_length"])
        run_type = {None: "ENERGY_FORCE", "positions": "GEO_OPT", "cell": "CELL_OPT"}[relax]
        lat = structure.lattice.matrix

        kpoints = []
        if mesh != (1, 1, 1):
            kpoints = [sec("KPOINTS", {"SCHEME": ("MONKHORST-PACK", *mesh), "FULL_GRID": True})]
        dft = sec(
            "DFT",
            {
                "BASIS_SET_FILE_NAME": s["basis_file"],
                "POTENTIAL_FILE_NAME": s["potential_file"],
                # closed shell; written out because pymatgen's output parser needs both keywords
                "CHARGE": 0,
                "MULTIPLICITY": 1,
            },
            [
                sec("MGRID", {"CUTOFF": float(s["cutoff"]), "REL_CUTOFF": float(s["rel_cutoff"]), "NGRIDS": 5}),
                sec("QS", {"EPS_DEFAULT": float(s["eps_default"]), "EXTRAPOLATION": "USE_GUESS"}),
                sec(
                    "SCF",
                    {"EPS_SCF": float(s["eps_scf"]), "MAX_SCF": int(s["max_scf"]), "SCF_GUESS": "ATOMIC"},
                    [
                        sec("DIAGONALIZATION", {"ALGORITHM": "STANDARD"}, params=(True,)),
                        sec("MIXING", {"METHOD": "BROYDEN_MIXING", "ALPHA": float(s["mixing_alpha"]), "NBROYDEN": 8}),
                    ],
                ),
                sec(
                    "XC",
                    subsections=[sec("XC_FUNCTIONAL", subsections=[sec("PBE", {"PARAMETRIZATION": s["xc"].upper()})])],
                ),
                *kpoints,
            ],
        )
        subsys = sec(
            "SUBSYS",
            subsections=[
                sec("CELL", {"A": tuple(lat[0]), "B": tuple(lat[1]), "C": tuple(lat[2]), "PERIODIC": "XYZ"}),
                sec("TOPOLOGY", {"COORD_FILE_NAME": COORD_FILE, "COORD_FILE_FORMAT": "XYZ"}),
            ],
        )
        for el, (basis, pot) in kinds.items():
            subsys.insert(
                sec("KIND", {"ELEMENT": el, "BASIS_SET": basis, "POTENTIAL": pot}, params=(el,), alias=f"KIND_{el}")
            )
        force_eval = sec(
            "FORCE_EVAL",
            {"METHOD": "QUICKSTEP", "STRESS_TENSOR": "ANALYTICAL"},
            [
                dft,
                subsys,
                sec("PRINT", subsections=[sec("FORCES", params=("ON",)), sec("STRESS_TENSOR", params=("ON",))]),
            ],
        )
        glob = {"PROJECT": PROJECT, "RUN_TYPE": run_type, "PRINT_LEVEL": "MEDIUM"}
        if self.walltime is not None:
            glob["WALLTIME"] = float(self.walltime)
        sections = [sec("GLOBAL", glob), force_eval]
        if relax is not None:
            max_force = float(s["fmax"]) / _force_unit()
            # CP2K stops only when all four of MAX_FORCE, RMS_FORCE, MAX_DR and RMS_DR hold, and its
            # defaults for the other three (RMS_FORCE 3e-4 Ha/bohr, MAX_DR 3e-3 bohr, RMS_DR 1.5e-3
            # bohr) would overrule a looser fmax: the predicted step of a soft tilt mode stays above
            # 3e-3 bohr until the forces are ~1e-3 eV/A. fmax alone decides, as in ASE and VASP.
            opt = {
                "OPTIMIZER": "BFGS",
                "MAX_ITER": int(s["max_iter"]),
                "MAX_FORCE": max_force,
                "RMS_FORCE": max_force,
                "MAX_DR": 1.0,
                "RMS_DR": 1.0,
            }
            motion = [sec("GEO_OPT", opt)]
            if relax == "cell":
                motion = [
                    sec(
                        "CELL_OPT",
                        {**opt, "TYPE": "DIRECT_CELL_OPT", "PRESSURE_TOLERANCE": float(s["pressure_tolerance"])},
                    )
                ]
            motion.append(
                sec(
                    "PRINT",
                    subsections=[
                        sec("TRAJECTORY", params=("ON",)),
                        sec("CELL", params=("ON",)),
                        sec("RESTART", params=("OFF",)),
                    ],
                )
            )
            sections.append(sec("MOTION", subsections=motion))
        ci = Cp2kInput(subsections={sec_.name: sec_ for sec_ in sections})
        return ci

    def write_inputs(self, structure, directory, relax: str | None = None) -> Path:
        """Write ``cp2k.inp`` and ``structure.xyz`` into ``directory`` (old outputs there are removed)."""
        directory = Path(directory)
        ci = self.input(structure, relax)
        for old in [directory / OUTPUT_FILE, *directory.glob(f"{PROJECT}-*")]:
            if old.is_file():
                old.unlink()
        ci.write_file(INPUT_FILE, str(directory))
        lines = [str(len(structure)), "perovskite-pes structure (Angstrom)"]
        lines += [
            f"{site.specie.symbol} {x:.10f} {y:.10f} {z:.10f}"
            for site, (x, y, z) in zip(structure, structure.cart_coords)
        ]
        (directory / COORD_FILE).write_text("\n".join(lines) + "\n")
        return directory

    # ------------------------------------------------------------------ run
    def custodian_job(self):
        """The custodian job, error handlers and validators of one run (see :mod:`.cp2k_custodian`)."""
        from custodian.cp2k.handlers import WalltimeHandler

        from .cp2k_custodian import (
            Cp2kProcessJob,
            FrozenRunHandler,
            GridChargeValidator,
            InterruptedRunHandler,
            ScfConvergenceHandler,
        )

        job = Cp2kProcessJob(
            list(self.cp2k_cmd), input_file=INPUT_FILE, output_file=OUTPUT_FILE, final=True, backup=True
        )
        handlers = [
            ScfConvergenceHandler(input_file=INPUT_FILE, output_file=OUTPUT_FILE),
            WalltimeHandler(output_file=OUTPUT_FILE, enable_checkpointing=False),
            FrozenRunHandler(
                input_file=INPUT_FILE, output_file=OUTPUT_FILE, timeout=float(self.run_options["frozen_timeout"])
            ),
            InterruptedRunHandler(job, output_file=OUTPUT_FILE, max_reruns=int(self.run_options["max_reruns"])),
        ]
        return job, handlers, [GridChargeValidator(input_file=INPUT_FILE, output_file=OUTPUT_FILE)]

    def _calculate(self, structure, relax, workdir) -> CalcResult:
        run_dir = new_run_dir(self.name, workdir)
        self.write_inputs(structure, run_dir, relax)
        job, handlers, validators = self.custodian_job()
        with environment(OMP_NUM_THREADS=str(self.run_options["omp_threads"])):
            reason = run_custodian(handlers, [job], validators, run_dir, self.run_options, stderr_file="std_err.txt")
        if reason is not None:
            return CalcResult.failed(self, reason, output_dir=run_dir)
        parsed = parse_cp2k_run(run_dir, len(structure), relax)
        if "error" in parsed:
            return CalcResult.failed(self, parsed["error"], output_dir=run_dir)
        final = None
        if relax is not None:
            final = parsed["final_structure"]
            if final is None or len(final) != len(structure):
                return CalcResult.failed(
                    self, "could not read the relaxed structure from CP2K's output", output_dir=run_dir
                )
        return self._result(
            parsed["energy"], parsed["forces"], parsed["stress"], output_dir=run_dir, final_structure=final
        )


def parse_cp2k_run(directory, n_atoms: int, relax: str | None = None) -> dict:
    """Energy (eV), forces (eV/A), stress (ASE convention) of the last step of a CP2K run, or ``error``.

    Relaxations also give ``final_structure``, read from the trajectory (``pes-pos-1.xyz``) and,
    for cell relaxations, the cell file (``pes-1.cell``); the energy of the last trajectory frame
    must match the last energy in the output, so the numbers belong to the returned structure.
    """
    import warnings

    from ase.units import GPa
    from pymatgen.io.cp2k.outputs import Cp2kOutput

    directory = Path(directory)
    path = directory / OUTPUT_FILE
    if not path.is_file():
        return {"error": f"no {OUTPUT_FILE} in {directory}"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # auto_load=False and the pieces needed: the full auto_load also parses trajectories into
            # ionic steps and fails when CP2K prints forces more often than it writes frames
            out = Cp2kOutput(str(path), auto_load=False, verbose=False)
            out.ran_successfully()
            out.convergence()
            out.parse_energies()
            out.parse_forces()
            out.parse_stresses()
    except Exception as exc:  # noqa: BLE001 - a broken output is a failed record
        err = tail(directory / "std_err.txt", 3)
        return {
            "error": f"CP2K output could not be parsed: {type(exc).__name__}: {exc}"
            + (f"; stderr: {err}" if err else "")
        }
    data = out.data
    if not data.get("completed"):
        return {"error": "CP2K did not finish (no 'PROGRAM ENDED' in the output); tail: " + tail(path, 4)}
    scf = data.get("scf_converged") or []
    if not scf or not scf[-1]:
        return {"error": "CP2K SCF not converged (last SCF run: 'SCF run NOT converged')"}
    if relax is not None and data.get("geo_opt_not_converged"):
        return {"error": f"CP2K {'CELL_OPT' if relax == 'cell' else 'GEO_OPT'} did not converge within MAX_ITER"}
    forces = data.get("forces") or []
    stress = data.get("stress_tensor") or []
    if not forces or len(forces[-1]) != n_atoms:
        return {"error": f"CP2K output holds no forces for the {n_atoms} atoms"}
    if not stress:
        return {"error": "CP2K output holds no stress tensor"}
    energy = float(out.final_energy)
    s = -np.asarray(stress[-1], dtype=float) * GPa
    result = {
        "energy": energy,
        "forces": np.asarray(forces[-1], dtype=float) * _force_unit(),
        "stress": np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]]),
        "final_structure": None,
    }
    if relax is not None:
        frame = _last_frame(directory / f"{PROJECT}-pos-1.xyz")
        if frame is None:
            return {"error": f"no trajectory {PROJECT}-pos-1.xyz to read the relaxed structure from"}
        symbols, positions, frame_energy = frame
        if len(symbols) != n_atoms:
            return {"error": f"the trajectory holds {len(symbols)} atoms, expected {n_atoms}"}
        if frame_energy is not None and abs(frame_energy * _hartree() - energy) > 1e-5:
            return {"error": "the last trajectory frame and the last energy of the output disagree"}
        cell_file = directory / f"{PROJECT}-1.cell"
        if relax == "cell":
            if not cell_file.is_file():
                return {"error": f"no cell file {cell_file.name} to read the relaxed cell from"}
            lattice = np.loadtxt(cell_file, ndmin=2)[-1, 2:11].reshape(3, 3)
        else:
            lattice = _input_lattice(directory)
        from pymatgen.core import Lattice, Structure

        result["final_structure"] = Structure(Lattice(lattice), symbols, positions, coords_are_cartesian=True)
    return result


def _last_frame(path: Path):
    """(symbols, positions, energy in Hartree or None) of the last frame of a CP2K XYZ trajectory."""
    if not path.is_file():
        return None
    lines = path.read_text().splitlines()
    frames = []
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        n = int(lines[i].split()[0])
        frames.append((lines[i + 1], lines[i + 2 : i + 2 + n]))
        i += 2 + n
    if not frames:
        return None
    comment, rows = frames[-1]
    m = re.search(r"E\s*=\s*(-?[\d.]+(?:[eE][-+]?\d+)?)", comment)
    symbols = [r.split()[0] for r in rows]
    positions = np.array([[float(x) for x in r.split()[1:4]] for r in rows])
    return symbols, positions, float(m.group(1)) if m else None


def _input_lattice(directory: Path) -> np.ndarray:
    from pymatgen.io.cp2k.inputs import Cp2kInput

    ci = Cp2kInput.from_file(str(directory / INPUT_FILE))
    cell = ci["FORCE_EVAL"]["SUBSYS"]["CELL"]
    return np.array([[float(v) for v in cell[k].values] for k in ("A", "B", "C")])
