"""Checks applied to everything before it is written: nothing malformed reaches the database.

Besides the shape checks, the data policy lives here: :func:`same_result` decides whether a new
calculation repeats a stored one (a no-op) or differs from it (refused unless replaced on purpose),
and :func:`outlier_reason` flags energies and forces outside the physically plausible range.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping

import numpy as np

from ..errors import PesError

STATUSES = ("completed", "failed")
RESULT_KEYS = (
    "energy",
    "forces",
    "stress",
    "calculator",
    "version",
    "settings",
    "settings_hash",
    "wall_time",
    "status",
    "error",
    "output_dir",
    "final_structure",
)


class InvalidRecord(PesError, ValueError):
    """A calculation result, configuration or query that cannot be stored or run as given."""


def to_plain(value, where: str = "value"):
    """Convert numpy scalars/arrays, tuples, paths and sets to BSON-storable plain Python.

    Mapping keys must be strings without a leading ``$`` or a ``.`` (MongoDB field names).
    """
    if value is None or isinstance(value, (bool, str, int, _dt.datetime)):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                k = str(k)
            if k.startswith("$") or "." in k:
                raise InvalidRecord(f"{where}: key {k!r} cannot be stored (no leading '$' and no '.' in keys)")
            out[k] = to_plain(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_plain(v, where) for v in value]
    if hasattr(value, "as_dict"):
        return to_plain(value.as_dict(), where)
    if hasattr(value, "to_dict"):
        return to_plain(value.to_dict(), where)
    if hasattr(value, "__fspath__"):
        return str(value)
    raise InvalidRecord(f"{where}: cannot store a value of type {type(value).__name__}")


def result_to_dict(result) -> dict:
    """A CalcResult-like object (with ``.to_dict()``) or a plain dict -> plain dict."""
    if isinstance(result, Mapping):
        return dict(result)
    if hasattr(result, "to_dict"):
        d = result.to_dict()
        if isinstance(d, Mapping):
            return dict(d)
    raise InvalidRecord(
        f"a calculation result must be a dict or an object with .to_dict() (a CalcResult); got {type(result).__name__}"
    )


def _finite_array(value, shape, name: str, where: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise InvalidRecord(f"{where}: {name} must be numbers; got {type(value).__name__}") from None
    if arr.shape != shape:
        expected = "x".join(str(s) for s in shape)
        got = "x".join(str(s) for s in arr.shape) or "a scalar"
        hint = f" ({shape[0]} rows, one per atom)" if len(shape) == 2 else ""
        raise InvalidRecord(f"{where}: {name} must have shape {expected}{hint}; got {got}")
    if not np.all(np.isfinite(arr)):
        raise InvalidRecord(f"{where}: {name} contains NaN or infinite values")
    return arr


def validate_result(result, n_atoms: int, where: str = "calculation") -> dict:
    """Check a calculation result against a configuration of ``n_atoms`` atoms; return clean fields.

    A completed result needs a finite energy, forces of shape (n_atoms, 3) and a stress of shape (6,)
    (Voigt xx, yy, zz, yz, xz, xy) or None. A failed result needs ``error``; its numbers may be None.
    Forces and stress come back as float64 arrays.
    """
    d = result_to_dict(result)
    status = d.get("status", "completed")
    if status not in STATUSES:
        raise InvalidRecord(f"{where}: status must be one of {', '.join(STATUSES)}; got {status!r}")
    calculator = d.get("calculator")
    if not isinstance(calculator, str) or not calculator:
        raise InvalidRecord(f"{where}: missing calculator name")
    settings_hash = d.get("settings_hash")
    if not isinstance(settings_hash, str) or not settings_hash:
        raise InvalidRecord(f"{where}: missing settings_hash (the calculator setup's fingerprint)")
    out = {
        "calculator": calculator,
        "version": None if d.get("version") is None else str(d["version"]),
        "settings_hash": settings_hash,
        "settings": to_plain(d.get("settings") or {}, f"{where}: settings"),
        "status": status,
        "error": None if d.get("error") is None else str(d["error"]),
        "output_dir": None if d.get("output_dir") is None else str(d["output_dir"]),
        "final_structure": to_plain(d.get("final_structure"), f"{where}: final_structure"),
        "n_atoms": int(n_atoms),
    }
    wall = d.get("wall_time")
    if wall is not None:
        try:
            wall = float(wall)
        except (TypeError, ValueError):
            raise InvalidRecord(f"{where}: wall_time must be a number of seconds; got {wall!r}") from None
    out["wall_time"] = wall

    energy, forces, stress = d.get("energy"), d.get("forces"), d.get("stress")
    if status == "completed":
        if energy is None:
            raise InvalidRecord(f"{where}: missing energy (a completed calculation needs its total energy in eV)")
        try:
            energy = float(energy)
        except (TypeError, ValueError):
            raise InvalidRecord(f"{where}: energy must be a number (eV); got {energy!r}") from None
        if not math.isfinite(energy):
            raise InvalidRecord(f"{where}: energy is {energy} (must be finite)")
        if forces is None:
            raise InvalidRecord(f"{where}: missing forces (a completed calculation needs {n_atoms}x3 forces)")
    else:
        if not out["error"]:
            raise InvalidRecord(f"{where}: a failed calculation must say why (error)")
        if energy is not None:
            try:
                energy = float(energy)
            except (TypeError, ValueError):
                energy = None
            if energy is not None and not math.isfinite(energy):
                energy = None
    out["energy"] = energy
    out["energy_per_atom"] = None if energy is None else energy / n_atoms
    out["forces"] = None if forces is None else _finite_array(forces, (n_atoms, 3), "forces", where)
    if stress is not None:
        s = np.asarray(stress, dtype=float) if not isinstance(stress, str) else None
        if s is not None and s.shape == (3, 3):
            s = s[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
        out["stress"] = _finite_array(
            s if s is not None else stress, (6,), "stress (Voigt xx, yy, zz, yz, xz, xy)", where
        )
    else:
        out["stress"] = None
    return out


def validate_launch(launch) -> dict | None:
    """Launch provenance: fw_id, launch_id, host, launch_dir, time (+ anything else under extra)."""
    if launch is None:
        return None
    if not isinstance(launch, Mapping):
        raise InvalidRecord(
            f"launch provenance must be a dict (fw_id, host, launch_dir, time); got {type(launch).__name__}"
        )
    known = {"fw_id", "launch_id", "host", "launch_dir", "time"}
    out = {k: launch[k] for k in known if launch.get(k) is not None}
    for k in ("fw_id", "launch_id"):
        if k in out:
            try:
                out[k] = int(out[k])
            except (TypeError, ValueError):
                raise InvalidRecord(f"launch {k} must be an integer; got {out[k]!r}") from None
    if "time" in out and not isinstance(out["time"], _dt.datetime):
        t = out["time"]
        try:
            out["time"] = (
                _dt.datetime.fromtimestamp(float(t), _dt.timezone.utc).replace(tzinfo=None)
                if isinstance(t, (int, float))
                else _dt.datetime.fromisoformat(str(t))
            )
        except (TypeError, ValueError):
            raise InvalidRecord(f"launch time must be a datetime, ISO string or UNIX time; got {t!r}") from None
    if "time" in out and out["time"].tzinfo is not None:  # stored as naive UTC, like every other date
        out["time"] = out["time"].astimezone(_dt.timezone.utc).replace(tzinfo=None)
    extra = {k: v for k, v in launch.items() if k not in known}
    if extra:
        out["extra"] = to_plain(extra, "launch")
    return out


# ------------------------------------------------------------------------------------ data policy
#: results closer than this are the same result (a no-op when stored again): eV, eV/A, eV/A^3.
#: Loose enough for a round trip through extended XYZ text, far below any physical difference.
SAME_ENERGY_EV = 1e-6
SAME_FORCE_EV_A = 1e-6
SAME_STRESS_EV_A3 = 1e-7
#: outside these, a completed result is physically implausible and refused unless allowed
MAX_ENERGY_DEVIATION_EV_ATOM = 10.0
MAX_FORCE_EV_A = 50.0
#: no code's total energy reaches this per atom (all-electron totals of the heaviest elements are a few 1e5 eV
#: per atom): it catches a first result of a new settings hash, which has no reference to be compared with
MAX_ABS_ENERGY_EV_ATOM = 1e6


def _close(a, b, atol: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= atol))


def same_result(old: Mapping, new: Mapping) -> bool:
    """Whether two calculation results of one configuration and setup are the same result."""
    if old.get("status") != new.get("status"):
        return False
    if new.get("status") == "failed":
        return (old.get("error") or "") == (new.get("error") or "")
    return (
        _close(old.get("energy"), new.get("energy"), SAME_ENERGY_EV)
        and _close(old.get("forces"), new.get("forces"), SAME_FORCE_EV_A)
        and _close(old.get("stress"), new.get("stress"), SAME_STRESS_EV_A3)
    )


def describe_difference(old: Mapping, new: Mapping) -> str:
    """A few words on how two results of one configuration and setup differ."""
    if old.get("status") != new.get("status"):
        return f"stored {old.get('status')}, new {new.get('status')}"
    if new.get("status") == "failed":
        return f"stored error {str(old.get('error'))[:60]!r}, new {str(new.get('error'))[:60]!r}"
    if not _close(old.get("energy"), new.get("energy"), SAME_ENERGY_EV):
        return f"stored energy {old.get('energy'):.6f} eV, new {new.get('energy'):.6g} eV"
    if not _close(old.get("forces"), new.get("forces"), SAME_FORCE_EV_A):
        if old.get("forces") is None or new.get("forces") is None:
            return "forces stored on one side only"
        return f"forces differ by up to {np.abs(np.asarray(old['forces']) - np.asarray(new['forces'])).max():.3g} eV/A"
    return "stresses differ"


def outlier_reason(fields: Mapping, reference_energy: float | None, reference_what: str) -> str | None:
    """Why a completed result is physically implausible, or None.

    Forces above :data:`MAX_FORCE_EV_A` (per atom) are implausible for any structure a campaign
    calculates; an energy per atom more than :data:`MAX_ENERGY_DEVIATION_EV_ATOM` from
    ``reference_energy`` (eV/atom, described by ``reference_what``) too, and, with or without a
    reference, one beyond :data:`MAX_ABS_ENERGY_EV_ATOM` in magnitude.
    """
    if fields.get("status") != "completed":
        return None
    forces = fields.get("forces")
    if forces is not None and len(forces):
        norms = np.linalg.norm(np.asarray(forces, dtype=float), axis=1)
        worst = int(np.argmax(norms))
        if norms[worst] > MAX_FORCE_EV_A:
            return f"force {norms[worst]:.4g} eV/A on atom {worst} is above {MAX_FORCE_EV_A:g} eV/A"
    epa = fields.get("energy_per_atom")
    if epa is not None and reference_energy is not None and abs(epa - reference_energy) > MAX_ENERGY_DEVIATION_EV_ATOM:
        return (
            f"energy {epa:.6g} eV/atom is {abs(epa - reference_energy):.4g} eV/atom from the reference "
            f"{reference_energy:.6g} eV/atom ({reference_what}); "
            f"more than {MAX_ENERGY_DEVIATION_EV_ATOM:g} is implausible"
        )
    if epa is not None and abs(epa) > MAX_ABS_ENERGY_EV_ATOM:
        return (
            f"energy {epa:.6g} eV/atom is beyond {MAX_ABS_ENERGY_EV_ATOM:g} eV/atom in magnitude, "
            "which no code produces"
        )
    return None
