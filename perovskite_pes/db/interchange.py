"""Export and import of configurations and calculations: extended XYZ and JSON lines.

Extended XYZ is the interchange format of ML-potential codes: every frame holds the structure,
the energy (eV, ``energy=`` in the header), forces (eV/Angstrom, ``forces`` columns) and stress
(eV/Angstrom^3, ASE sign convention, ``stress=`` 3x3 in the header), so ``ase.io.read`` gives
atoms whose ``get_potential_energy()``, ``get_forces()`` and ``get_stress()`` work. perovskite-pes
adds its provenance to the header: ``pes_species``, ``pes_lattice_parameter``, ``pes_supercell``
(the reference), ``calculator``, ``calculator_version``, ``settings_hash``, ``status``,
``tilt_system``, ``method``, ``pes_tags`` (JSON) and the ids.

JSON lines: one object per line, ``{"config_id", "configuration": Configuration.to_dict(),
"calculation": {energy, forces, stress, calculator, version, settings, settings_hash, status,
error, wall_time, output_dir} or null, "source"}``; lossless.

Import reads and validates the whole file before anything is written; a missing energy, a frame
whose atom count or force rows do not match the reference supercell, a malformed line: each is an
:class:`ImportFormatError` naming the file and record, and nothing is stored.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import PesError
from .validation import InvalidRecord, validate_result

FORMATS = ("extxyz", "jsonl")
_SUFFIXES = {".xyz": "extxyz", ".extxyz": "extxyz", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}


class ImportFormatError(PesError, ValueError):
    """A file that cannot be imported as given."""


class ExportError(PesError):
    """An export file could not be written (its directory, a full disk); one line for ``pes``."""


def detect_format(path, fmt: str | None = None) -> str:
    if fmt:
        if fmt not in FORMATS:
            raise ImportFormatError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
        return fmt
    fmt = _format_of_name(path)
    if fmt is None:
        raise ImportFormatError(
            f"cannot tell the format of {path} from its extension; use .xyz/.extxyz (extended XYZ) or "
            ".jsonl (JSON lines), each optionally gzipped (.gz), or pass --format"
        )
    return fmt


def names_a_file_format(path) -> bool:
    """Whether ``path``'s name tells an interchange format (``.extxyz``, ``.jsonl``, either gzipped)."""
    return _format_of_name(path) is not None


def _gzipped(path) -> bool:
    return str(path).lower().endswith(".gz")


def _format_of_name(path) -> str | None:
    """The format ``path``'s name tells (a trailing ``.gz`` aside), or None."""
    name = str(path)[:-3] if _gzipped(path) else str(path)
    return _SUFFIXES.get(Path(name).suffix.lower())


def _open_text(path, mode: str, gzipped: bool):
    """A text file handle, through gzip when ``gzipped`` (decided by the user's name, not a temporary one)."""
    if gzipped:
        return gzip.open(path, mode + "t", encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def settings_hash_for(calculator: str, version: str | None = None, settings: dict | None = None) -> str:
    """Fingerprint for imported results whose file carries none (stable for the same inputs)."""
    payload = json.dumps(
        {"name": calculator, "version": version, "settings": settings or {}}, sort_keys=True, default=str
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------- export
def _record_dict(config, calc: dict | None, config_id: str, source: str | None = None) -> dict:
    out_calc = None
    if calc is not None:
        out_calc = {
            k: calc.get(k)
            for k in (
                "energy",
                "forces",
                "stress",
                "calculator",
                "version",
                "settings",
                "settings_hash",
                "status",
                "error",
                "wall_time",
                "output_dir",
            )
        }
        out_calc["calc_id"] = calc.get("id")
    return {"config_id": config_id, "configuration": config.to_dict(), "calculation": out_calc, "source": source}


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if hasattr(o, "isoformat"):
        return o.isoformat()
    return str(o)


def to_atoms(config, calc: dict | None = None, config_id: str | None = None):
    """ASE Atoms of a configuration with its calculation attached (SinglePointCalculator)."""
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms = config.to_ase()
    ref = config.reference
    info = atoms.info
    info["pes_species"] = " ".join(ref.perovskite.species)
    info["pes_lattice_parameter"] = float(ref.perovskite.lattice_parameter)
    info["pes_supercell"] = " ".join(str(int(v)) for v in np.asarray(ref.matrix).ravel())
    if config_id:
        info["config_id"] = str(config_id)
    for k in ("tilt_system", "method"):
        if config.tags.get(k) is not None:
            info[k] = str(config.tags[k])
    if config.tags:
        info["pes_tags"] = json.dumps(config.tags, default=_json_default, sort_keys=True)
    if calc is not None:
        info["calculator"] = calc["calculator"]
        info["settings_hash"] = calc["settings_hash"]
        info["status"] = calc.get("status", "completed")
        if calc.get("version") is not None:
            info["calculator_version"] = str(calc["version"])
        if calc.get("id"):
            info["calc_id"] = str(calc["id"])
        if calc.get("error"):
            info["error"] = str(calc["error"])
        results = {}
        if calc.get("energy") is not None:
            results["energy"] = float(calc["energy"])
        if calc.get("forces") is not None:
            results["forces"] = np.asarray(calc["forces"], dtype=float)
        if calc.get("stress") is not None:
            results["stress"] = np.asarray(calc["stress"], dtype=float)
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def export_records(records, path, fmt: str | None = None) -> int:
    """Write ``(Configuration, calculation dict or None, config_id)`` records; returns how many.

    Records are streamed (memory does not grow with their number) into a temporary file that
    replaces ``path`` only when complete; a failure (a full disk) removes it and is one line.
    """
    path = Path(path)
    fmt = detect_format(path, fmt)
    tmp = path.with_name(f".{path.name}.tmp")
    n = 0

    def counted():
        nonlocal n
        for rec in records:
            n += 1
            yield rec

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _open_text(tmp, "w", _gzipped(path)) as fh:
            if fmt == "jsonl":
                for config, calc, cid in counted():
                    fh.write(json.dumps(_record_dict(config, calc, cid), default=_json_default) + "\n")
            else:
                from ase.io import write

                write(fh, (to_atoms(config, calc, cid) for config, calc, cid in counted()), format="extxyz")
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}; nothing was written") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return n


# ------------------------------------------------------------------------------------- import
@dataclass
class ImportRecord:
    config: object  # perovskite_pes.structure.Configuration
    result: dict | None  # validated calculation fields, or None (structure only)
    where: str


def _reference_from(info: dict, default, where: str = ""):
    from ..structure import Perovskite, ReferenceSupercell

    if "pes_species" not in info:
        if "pes_reference" in info:  # the benchmarks' data sets: the reference supercell as one JSON entry
            ref = info["pes_reference"]
            try:
                return ReferenceSupercell.from_dict(json.loads(ref) if isinstance(ref, str) else ref)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ImportFormatError(
                    f"{where}: pes_reference is not a reference supercell ({type(exc).__name__}: {exc}); expected "
                    'JSON such as {"perovskite": {"species": ["Cs", "Pb", "Br"], "lattice_parameter": 5.94}, '
                    '"matrix": [[2, 0, 0], [0, 2, 0], [0, 0, 2]]}'
                ) from None
        return default
    species = info["pes_species"]
    species = species.split() if isinstance(species, str) else [str(s) for s in species]
    matrix = np.asarray(
        info.get("pes_supercell").split()
        if isinstance(info.get("pes_supercell"), str)
        else info.get("pes_supercell", 2),
        dtype=float,
    )
    if matrix.size == 9:
        matrix = matrix.reshape(3, 3)
    a = float(info.get("pes_lattice_parameter", default.perovskite.lattice_parameter))
    return ReferenceSupercell(Perovskite(tuple(species), a), matrix)


def _frame_result(atoms, info: dict, where: str, calculator, settings_hash, energy_key, forces_key, stress_key):
    results = dict(atoms.calc.results) if atoms.calc is not None else {}
    energy = results.get("energy") if energy_key == "energy" else None
    if energy is None:
        energy = info.get(energy_key)
    forces = results.get("forces") if forces_key == "forces" else None
    if forces is None:
        forces = atoms.arrays.get(forces_key)
    stress = results.get("stress") if stress_key == "stress" else None
    if stress is None:
        stress = info.get(stress_key)
    status = str(info.get("status", "completed"))
    name = info.get("calculator") or calculator
    if not name:
        raise ImportFormatError(f"{where}: no calculator name in the file; pass --calculator NAME")
    version = info.get("calculator_version")
    shash = (
        info.get("settings_hash")
        or settings_hash
        or settings_hash_for(str(name), None if version is None else str(version))
    )
    if status == "completed" and energy is None:
        raise ImportFormatError(f"{where}: missing energy (expected '{energy_key}=' in the header)")
    return {
        "energy": energy,
        "forces": forces,
        "stress": stress,
        "calculator": str(name),
        "version": None if version is None else str(version),
        "settings": {},
        "settings_hash": str(shash),
        "status": status,
        "error": info.get("error"),
    }


def read_records(
    path,
    fmt: str | None = None,
    reference=None,
    calculator: str | None = None,
    settings_hash: str | None = None,
    energy_key: str = "energy",
    forces_key: str = "forces",
    stress_key: str = "stress",
    require_energy: bool = True,
) -> list[ImportRecord]:
    """Read and validate a whole file; raises ImportFormatError naming the first bad record."""
    path = Path(path)
    fmt = detect_format(path, fmt)
    if not path.is_file():
        raise ImportFormatError(f"{path}: no such file")
    if reference is None:
        from ..structure import Perovskite

        reference = Perovskite().supercell(2)
    try:
        if fmt == "jsonl":
            return _read_jsonl(path, require_energy)
        return _read_extxyz(
            path, reference, calculator, settings_hash, energy_key, forces_key, stress_key, require_energy
        )
    except InvalidRecord as exc:
        raise ImportFormatError(str(exc)) from None


def _read_extxyz(path, reference, calculator, settings_hash, energy_key, forces_key, stress_key, require_energy):
    from ase.io import read

    from ..structure import ConfigurationError, match_structure, matrix_to_strain, strain_to_matrix
    from ..structure.mapping import unstrain

    try:
        frames = read(path, index=":", format="extxyz")
    except Exception as exc:  # ASE raises many types for malformed files
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImportFormatError(f"{path} is not valid extended XYZ: {msg}") from None
    if not frames:
        raise ImportFormatError(f"{path} holds no structures")
    out = []
    for i, atoms in enumerate(frames):
        where = f"{path.name} frame {i + 1} of {len(frames)}"
        info = dict(atoms.info)
        ref = _reference_from(info, reference, where)
        has_calc = atoms.calc is not None or energy_key in info or info.get("calculator") is not None
        if not has_calc and require_energy:
            raise ImportFormatError(f"{where}: missing energy (expected '{energy_key}=' in the header)")
        lattice = np.array(atoms.get_cell())
        if abs(np.linalg.det(lattice)) < 1e-6:
            raise ImportFormatError(f"{where}: needs a periodic cell (Lattice=...)")
        raw = None
        if has_calc:
            raw = _frame_result(atoms, info, where, calculator, settings_hash, energy_key, forces_key, stress_key)
            shape = None if raw["forces"] is None else np.shape(raw["forces"])
            if shape is not None and (len(shape) != 2 or shape[1] != 3):
                got = f"{shape[1]} column(s)" if len(shape) == 2 else f"shape {shape}"
                raise ImportFormatError(f"{where}: forces must have 3 columns (x, y, z in eV/A) per atom; got {got}")
            if shape is not None and shape[0] != len(atoms):
                raise ImportFormatError(f"{where}: {shape[0]} force rows for {len(atoms)} atoms")
        tags = {}
        if "pes_tags" in info:
            try:
                tags = json.loads(info["pes_tags"]) if isinstance(info["pes_tags"], str) else {}
            except ValueError:
                raise ImportFormatError(f"{where}: pes_tags is not valid JSON") from None
        for k in ("tilt_system", "method"):
            if k in info and k not in tags:
                tags[k] = str(info[k])
        try:
            config, perm = match_structure(ref, atoms, tags=tags)
        except ConfigurationError as exc:
            raise ImportFormatError(f"{where}: {exc}") from None
        result = None
        if raw is not None:
            # results are stored in the frame of the configuration's own (unrotated) structure
            rot = unstrain(ref, lattice, atoms.get_positions())[0]
            if raw["forces"] is not None:
                raw["forces"] = np.asarray(raw["forces"], dtype=float)[perm] @ rot
            if raw["stress"] is not None and np.size(raw["stress"]) in (6, 9):
                sigma = strain_to_matrix(np.reshape(raw["stress"], (3, 3) if np.size(raw["stress"]) == 9 else 6))
                raw["stress"] = matrix_to_strain(rot.T @ sigma @ rot)
            result = validate_result(raw, ref.n_atoms, where)
        out.append(ImportRecord(config, result, where))
    return out


def _read_jsonl(path, require_energy):
    from ..structure import Configuration

    out = []
    with _open_text(path, "r", _gzipped(path)) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path.name} line {lineno}"
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise ImportFormatError(f"{where}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict) or "configuration" not in obj:
                raise ImportFormatError(f"{where}: expected an object with a 'configuration' entry")
            try:
                config = Configuration.from_dict(obj["configuration"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ImportFormatError(
                    f"{where}: invalid configuration ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                ) from None
            calc = obj.get("calculation")
            if calc is None:
                if require_energy:
                    raise ImportFormatError(f"{where}: missing calculation (energy, forces, stress)")
                out.append(ImportRecord(config, None, where))
                continue
            if not isinstance(calc, dict):
                raise ImportFormatError(f"{where}: 'calculation' must be an object or null")
            calc = dict(calc)
            if calc.get("status", "completed") == "completed" and (
                calc.get("energy") is None or (isinstance(calc.get("energy"), float) and math.isnan(calc["energy"]))
            ):
                raise ImportFormatError(f"{where}: missing energy")
            if not calc.get("settings_hash") and calc.get("calculator"):
                calc["settings_hash"] = settings_hash_for(calc["calculator"], calc.get("version"), calc.get("settings"))
            out.append(ImportRecord(config, validate_result(calc, config.reference.n_atoms, where), where))
    if not out:
        raise ImportFormatError(f"{path} holds no records")
    return out


def import_records(
    store, records: list[ImportRecord], source: str, replace: bool = False, allow_outliers: bool = False
) -> dict:
    """Write validated records, configurations (deduplicated) then calculations, as one unit of work.

    A calculation that repeats a stored one is a no-op; a different result for a stored
    configuration and settings hash, or an implausible one, stops the import with nothing stored
    unless ``replace`` / ``allow_outliers`` (see :meth:`perovskite_pes.db.Store.save_calculation`).
    """
    prepared = store.prepare_configurations([r.config for r in records], source=source)  # keys: outside the lock
    with store.batch():
        report = store.save_configurations(prepared)
        items = [(cid, r.result, None) for cid, r in zip(report.ids, records) if r.result is not None]
        calcs = store.ingest_calculations(items, replace=replace, allow_outliers=allow_outliers) if items else None
    return {
        "records": len(records),
        "configurations_new": report.new,
        "configurations_existing": report.existing,
        "calculations": len(items),
        "calculations_new": calcs.new if calcs else 0,
        "calculations_unchanged": calcs.unchanged if calcs else 0,
        "calculations_replaced": calcs.replaced if calcs else 0,
        "config_ids": report.ids,
        "calc_ids": calcs.ids if calcs else [],
    }
