"""Helpers shared by the DFT calculators: k-point meshes, run folders, commands, custodian."""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import uuid
from collections import deque
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .base import CalculatorError, CalculatorInputError

# custodian logs every correction at ERROR level; without a handler of the application's, Python's
# last-resort handler would print those lines (a handler name, nothing else) to stderr
logging.getLogger("custodian").addHandler(logging.NullHandler())

#: k-point "length" (Angstrom) equivalent to a 6x6x6 mesh on the 5.87 A primitive cell of CsPbBr3,
#: i.e. 3x3x3 on the 2x2x2 supercell (Thomas et al. 2019)
DEFAULT_KPOINT_LENGTH = 6 * 5.87


def kpoint_mesh(lattice, kpoints=None, kpoint_length: float = DEFAULT_KPOINT_LENGTH) -> tuple[int, int, int]:
    """Gamma-centred mesh: explicit ``kpoints`` or n_i = max(1, round(kpoint_length / |a_i|)).

    Rounding (not ceiling) keeps the mesh of a strained cell equal to the unstrained one for
    strains up to about +-15 %, so all configurations of a data set share one mesh.
    """
    if kpoints is not None:
        mesh = np.asarray(kpoints)
        if mesh.shape != (3,) or not np.all(mesh == np.round(mesh)) or np.any(mesh < 1):
            raise CalculatorInputError(f"kpoints must be three positive integers; got {kpoints!r}")
        return tuple(int(k) for k in mesh)
    length = float(kpoint_length)
    if not length > 0:
        raise CalculatorInputError(f"kpoint_length must be a positive length in Angstrom; got {kpoint_length!r}")
    lengths = np.linalg.norm(np.asarray(lattice, dtype=float), axis=1)
    return tuple(int(max(1, round(length / a))) for a in lengths)


def pes_home() -> Path:
    return Path(os.environ.get("PES_HOME") or Path.home() / ".perovskite_pes").expanduser()


def new_run_dir(calculator: str, workdir=None) -> Path:
    """``workdir`` itself, or a fresh folder under $PES_HOME/calculations/<calculator>/."""
    if workdir is not None:
        path = Path(workdir)
    else:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        path = pes_home() / "calculations" / calculator / f"{stamp}-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def split_command(cmd, what: str) -> list[str]:
    """A command as a list of arguments (custodian iterates over it: a plain string would be split
    into characters)."""
    if isinstance(cmd, str):
        parts = shlex.split(cmd)
    elif isinstance(cmd, (list, tuple)):
        parts = [str(c) for c in cmd]
    else:
        raise CalculatorInputError(f"{what} must be a string or a list of arguments; got {type(cmd).__name__}")
    if not parts:
        raise CalculatorInputError(f"{what} is empty")
    return parts


_LAUNCHERS = {"mpirun", "mpiexec", "srun", "aprun", "orterun", "ibrun"}


def missing_executables(cmd: list[str]) -> list[str]:
    """Executables of ``cmd`` not found on PATH (the launcher and, after an MPI launcher, the code)."""
    missing = []
    if shutil.which(cmd[0]) is None:
        missing.append(cmd[0])
    if os.path.basename(cmd[0]) in _LAUNCHERS:
        code = cmd[-1]
        if shutil.which(code) is None:
            missing.append(code)
    return missing


def tail(path: Path, n: int = 6) -> str:
    try:
        with open(path, errors="replace") as fh:
            return "".join(deque(fh, maxlen=n)).strip()
    except OSError:
        return ""


def run_custodian(handlers, jobs, validators, directory: Path, run_options: dict, stderr_file: str | None = None):
    """Run ``jobs`` under custodian in ``directory``; return None on success or the failure reason."""
    from custodian import Custodian
    from custodian.custodian import CustodianError

    c = Custodian(
        handlers,
        jobs,
        validators=validators,
        max_errors=int(run_options["max_errors"]),
        polling_time_step=float(run_options["polling_time_step"]),
        monitor_freq=int(run_options["monitor_freq"]),
        directory=str(directory),
    )
    try:
        c.run()
    except CustodianError as exc:
        # "<custodian.cp2k.handlers.FrozenJobErrorHandler object at 0x7f...>" -> "FrozenJobErrorHandler"
        message = re.sub(r"<(?:[\w]+\.)*(\w+) object at 0x[0-9a-fA-F]+>", r"\1", str(exc))
        return _custodian_reason(c.run_log, f"custodian stopped the run: {message}", directory, stderr_file)
    except FileNotFoundError as exc:
        raise CalculatorError(f"cannot start the code: {exc}") from exc
    # an error without a correction that custodian logs without raising (e.g. a wall-time stop)
    stopped = [entry["handler"] for entry in c.run_log if entry.get("handler") is not None]
    if stopped:
        name = getattr(stopped[-1], "__name__", None) or type(stopped[-1]).__name__
        return _custodian_reason(
            c.run_log, f"custodian stopped the run: {name} found an error it cannot correct", directory, stderr_file
        )
    return None


def _custodian_reason(run_log, head: str, directory: Path, stderr_file: str | None) -> str:
    errors = []
    for entry in run_log:
        for corr in entry.get("corrections", []):
            errors.extend(str(e) for e in corr.get("errors", []))
    seen = list(dict.fromkeys(errors))
    reason = head
    validator = run_log[-1].get("validator") if run_log else None
    if getattr(validator, "message", ""):
        reason += f": {validator.message}"
    if seen:
        reason += f" (errors seen, {len(errors)} correction(s) tried: {', '.join(seen)})"
    if stderr_file:
        err = tail(directory / stderr_file)
        if err:
            reason += f"; stderr: {err}"
    return reason
