"""Reading and writing configurations: extended XYZ, CIF and POSCAR.

Every format carries the reference and the sampling tags so that reading gives the same
configurations back:

* extended XYZ (one file, one frame per configuration, written by ASE): header keys
  ``pes_species`` ("Cs Pb Br"), ``pes_lattice_parameter``, ``pes_supercell`` (9 integers),
  ``pes_tags`` (JSON) and ``tilt_system``, the same keys the database export uses.
* CIF (one file, one data block per configuration, written by pymatgen): a comment line
  ``#pes: {"reference": ..., "tags": ...}`` precedes each block.
* POSCAR (a directory, files ``POSCAR-00000`` ...): the comment line is ``pes: {...}`` (JSON).

Reading maps each structure onto the reference supercell (:func:`.configuration.match_structure`), so
files written by other programs (any site order, rotated, wrapped) are read too; then a
reference must be given unless the file records one.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np

from ..errors import PesError
from .configuration import Configuration, match_structure
from .reference import Perovskite, ReferenceSupercell

logger = logging.getLogger(__name__)

FORMATS = ("extxyz", "cif", "poscar")


class ConfigurationIOError(PesError, ValueError):
    """A file that cannot be written or read as configurations."""


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"tag value of type {type(o).__name__} is not JSON-serialisable")


def _tags_json(tags: dict) -> str:
    try:
        return json.dumps(tags, default=_json_default, sort_keys=True, separators=(",", ":"))
    except TypeError as exc:
        raise ConfigurationIOError(f"configuration tags must be JSON-serialisable: {exc}") from None


def detect_format(path, fmt: str | None = None) -> str:
    """'extxyz', 'cif' or 'poscar' from ``fmt`` or the path (a directory or a name with POSCAR/.vasp is POSCAR)."""
    if fmt is not None:
        f = fmt.lower()
        if f in ("xyz", "ext-xyz"):
            f = "extxyz"
        if f in ("vasp", "poscars"):
            f = "poscar"
        if f not in FORMATS:
            raise ConfigurationIOError(
                f"unknown configuration file format {fmt!r}; expected one of {', '.join(FORMATS)}"
            )
        return f
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".xyz", ".extxyz"):
        return "extxyz"
    if suffix in (".cif", ".mcif"):
        return "cif"
    if p.is_dir() or "poscar" in p.name.lower() or suffix == ".vasp" or suffix == "":
        return "poscar"
    raise ConfigurationIOError(
        f"cannot tell the format of {str(p)!r} from its name; use .extxyz/.xyz, .cif or a directory for POSCAR files "
        "(or give the format explicitly)"
    )


def _header(config: Configuration) -> dict:
    return {"reference": config.reference.to_dict(), "tags": config.tags}


def _reference_from_header(d: dict | None):
    if not d or "reference" not in d:
        return None
    return ReferenceSupercell.from_dict(d["reference"])


# ----------------------------------------------------------------------------- writing
def write_configurations(path, configs, fmt: str | None = None) -> list[str]:
    """Write configurations to ``path``; returns the files written.

    extxyz and cif write one file holding all configurations; poscar writes a directory of files.
    """
    configs = list(configs)
    for i, c in enumerate(configs):
        if not isinstance(c, Configuration):
            raise ConfigurationIOError(f"item {i} is a {type(c).__name__}, not a Configuration")
    fmt = detect_format(path, fmt)
    path = Path(path)
    if fmt == "extxyz":
        return [_write_extxyz(path, configs)]
    if fmt == "cif":
        return [_write_cif(path, configs)]
    return _write_poscars(path, configs)


def _write_extxyz(path: Path, configs) -> str:
    from ase.io import write

    frames = []
    for c in configs:
        atoms = c.to_ase()
        ref = c.reference
        atoms.info["pes_species"] = " ".join(ref.perovskite.species)
        atoms.info["pes_lattice_parameter"] = float(ref.perovskite.lattice_parameter)
        atoms.info["pes_supercell"] = " ".join(str(int(v)) for v in ref.matrix.ravel())
        if c.tags.get("tilt_system") is not None:
            atoms.info["tilt_system"] = str(c.tags["tilt_system"])
        atoms.info["pes_tags"] = _tags_json(c.tags)
        frames.append(atoms)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    write(str(tmp), frames, format="extxyz")
    tmp.replace(path)
    return str(path)


def _write_cif(path: Path, configs) -> str:
    from pymatgen.io.cif import CifWriter

    blocks = []
    for i, c in enumerate(configs):
        text = str(CifWriter(c.to_structure()))
        text = re.sub(r"^data_.*$", f"data_pes_{i:05d}", text, count=1, flags=re.M)
        blocks.append(f"#pes: {_tags_json(_header(c))}\n{text}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text("\n".join(blocks))
    tmp.replace(path)
    return str(path)


def _write_poscars(path: Path, configs) -> list[str]:
    from pymatgen.io.vasp import Poscar

    if path.exists() and not path.is_dir():
        raise ConfigurationIOError(f"{str(path)!r} exists and is not a directory; POSCAR output needs a directory")
    path.mkdir(parents=True, exist_ok=True)
    out = []
    for i, c in enumerate(configs):
        comment = "pes: " + _tags_json(_header(c))
        f = path / f"POSCAR-{i:05d}"
        Poscar(c.to_structure(), comment=comment).write_file(str(f))
        out.append(str(f))
    return out


# ----------------------------------------------------------------------------- reading
def _to_config(structure, reference, header_ref, tags, where: str) -> Configuration:
    ref = reference or header_ref
    if ref is None:
        raise ConfigurationIOError(
            f"{where}: the file does not record its reference supercell; give the reference (species, lattice "
            "parameter, supercell) explicitly"
        )
    try:
        return match_structure(ref, structure, tags=tags)[0]
    except PesError as exc:
        raise ConfigurationIOError(f"{where}: {exc}") from None


def read_configurations(
    path, reference: ReferenceSupercell | None = None, fmt: str | None = None
) -> list[Configuration]:
    """Read configurations written by :func:`write_configurations` (or by other programs).

    ``reference`` overrides the reference recorded in the file (and is required when the file
    records none).
    """
    path = Path(path)
    if not path.exists():
        raise ConfigurationIOError(f"no such file or directory: {str(path)!r}")
    fmt = detect_format(path, fmt)
    readers = {"extxyz": _read_extxyz, "cif": _read_cif}
    configs = readers.get(fmt, _read_poscars)(path, reference)
    logger.info("read %d configurations (%s) from %s", len(configs), fmt, path)
    return configs


def _read_extxyz(path: Path, reference):
    from ase.io import read

    try:
        frames = read(str(path), index=":", format="extxyz")
    except Exception as exc:  # ASE raises assorted errors for malformed files
        raise ConfigurationIOError(f"{path}: not a readable extended XYZ file ({exc})") from None
    out = []
    for i, atoms in enumerate(frames):
        info = atoms.info
        header_ref = None
        if "pes_species" in info:
            species = info["pes_species"]
            species = species.split() if isinstance(species, str) else [str(s) for s in species]
            sc = info.get("pes_supercell", "2 0 0 0 2 0 0 0 2")
            matrix = np.array(sc.split() if isinstance(sc, str) else np.ravel(sc), dtype=float)
            matrix = matrix.reshape(3, 3) if matrix.size == 9 else matrix
            header_ref = ReferenceSupercell(Perovskite(tuple(species), float(info["pes_lattice_parameter"])), matrix)
        tags = {}
        if "pes_tags" in info:
            raw = info["pes_tags"]
            tags = json.loads(raw) if isinstance(raw, str) else dict(raw)
        out.append(_to_config(atoms, reference, header_ref, tags, f"{path} frame {i}"))
    return out


def _read_cif(path: Path, reference):
    from pymatgen.io.cif import CifParser

    text = path.read_text()
    # split into data blocks, each with the '#pes:' comment that precedes it
    parts = re.split(r"(?m)^(?=#pes: |data_)", text)
    blocks, pending = [], None
    for part in parts:
        if part.startswith("#pes: "):
            first, _, rest = part.partition("\n")
            pending = json.loads(first[len("#pes: ") :])
            part = rest
            if not part.strip():
                continue
        if part.lstrip().startswith("data_"):
            blocks.append((pending, part))
            pending = None
    if not blocks:
        raise ConfigurationIOError(f"{path}: no CIF data blocks found")
    out = []
    for i, (header, block) in enumerate(blocks):
        try:
            structures = CifParser.from_str(block).parse_structures(primitive=False)
        except Exception as exc:
            raise ConfigurationIOError(f"{path} block {i}: not a readable CIF block ({exc})") from None
        tags = (header or {}).get("tags", {})
        out.append(_to_config(structures[0], reference, _reference_from_header(header), tags, f"{path} block {i}"))
    return out


def _read_poscars(path: Path, reference):
    from pymatgen.io.vasp import Poscar

    files = (
        sorted(f for f in path.iterdir() if f.is_file() and ("POSCAR" in f.name or f.suffix == ".vasp"))
        if path.is_dir()
        else [path]
    )
    if not files:
        raise ConfigurationIOError(f"{path}: no POSCAR files found")
    out = []
    for f in files:
        try:
            poscar = Poscar.from_file(str(f), check_for_potcar=False)
        except Exception as exc:
            raise ConfigurationIOError(f"{f}: not a readable POSCAR ({exc})") from None
        header = None
        comment = poscar.comment or ""
        if comment.startswith("pes: "):
            header = json.loads(comment[len("pes: ") :])
        tags = (header or {}).get("tags", {})
        out.append(_to_config(poscar.structure, reference, _reference_from_header(header), tags, str(f)))
    return out
