"""Custodian pieces for CP2K that repair a run without changing the numbers it produces.

A correction may change how a result is reached (more SCF iterations, gentler density mixing, a
fresh start after the process was killed) but never what is computed: the functional, basis,
cutoff, k-points and occupations stay those of the settings hash. Custodian's own
``UnconvergedScfErrorHandler`` is therefore not used for diagonalisation runs: it never raises
``MAX_SCF`` (so a too small iteration limit is never fixed) and its last resort switches on
Fermi-Dirac smearing with 1000 added orbitals, a different energy functional from the one the
settings promise.

* :class:`Cp2kProcessJob` -- custodian's ``Cp2kJob`` started in a process group of its own and
  stopped by signalling that group only (``Cp2kJob.terminate`` runs ``killall cp2k.psmp``, which
  stops every CP2K on the machine, other users' included).
* :class:`ScfConvergenceHandler` -- an SCF that ran out of iterations: double ``MAX_SCF``; when the
  SCF was not steadily converging also halve the Broyden mixing ``ALPHA``.
* :class:`FrozenRunHandler` -- custodian's ``FrozenJobErrorHandler`` (no output for ``frozen_timeout``
  seconds), safe on an output CP2K is still writing: custodian parses the whole output with pymatgen
  at every check, and pymatgen raises ``IndexError`` on an atomic-kind section written only in part,
  which stopped a healthy run with a traceback (seen under load). Such an output has not reached the
  SCF, so only its age counts there.
* :class:`InterruptedRunHandler` -- CP2K ended without ``PROGRAM ENDED`` and without an error of its
  own (killed by a signal, the out-of-memory killer, a lost node): keep the partial output and run
  again from the start.

* :class:`GridChargeValidator` -- a finished run whose density does not integrate to the number of
  electrons on the real-space grid: the cutoff is too small for the basis sets. CP2K converges
  such a run without complaint, to a wrong energy; nothing but other settings can repair it, so
  the calculation fails with the reason.

Custodian's ``WalltimeHandler`` (CP2K stopped at ``GLOBAL/WALLTIME``) is used as it is; neither it
nor the frozen-run handler has a correction for a diagonalisation run, so the calculation fails with
their reason and a later rerun (``pes campaign rerun-failed``) starts it again.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from custodian.cp2k.handlers import FrozenJobErrorHandler
from custodian.cp2k.interpreter import Cp2kModder
from custodian.cp2k.jobs import Cp2kJob
from custodian.custodian import ErrorHandler, Validator

logger = logging.getLogger(__name__)

#: a CP2K run that finished (successfully or not) prints this as one of its last lines
PROGRAM_ENDED = "PROGRAM ENDED AT"
#: CP2K's own error banner (a run that CP2K itself aborted is not an interrupted run)
_ABORT_RE = re.compile(r"\[ABORT\]")
_NOT_CONVERGED_RE = re.compile(r"SCF run NOT converged|Leaving inner SCF loop after reaching")
#: CP2K stopped at GLOBAL/WALLTIME (custodian's WalltimeHandler looks for the same line)
WALLTIME_STOP = "exceeded requested execution time"
_CORE_RE = re.compile(r"Core density on regular grids:\s+(-?[\d.]+)\s+(-?[\d.Ee+-]+)")
_TOTAL_RE = re.compile(r"Total charge density on r-space grids:\s+(-?[\d.Ee+-]+)")
#: one row of CP2K's SCF table: step, method, (mixing alpha), time, convergence, energy, change
_SCF_ROW_RE = re.compile(
    r"^\s*\d+\s+\S+\s+(?:[\d.E+-]+\s+)?[\d.]+\s+([\d.]+E[+-]\d+|[\d.]+)\s+-?[\d.]+\s+-?[\d.E+-]+\s*$"
)


class Cp2kProcessJob(Cp2kJob):
    """``Cp2kJob`` whose process (and its MPI children) is stopped on its own, never by name."""

    process: subprocess.Popen | None = None
    terminated_by_custodian: bool = False

    def run(self, directory="./"):
        cmd = [*self.cp2k_cmd, "-i", self.input_file]
        logger.info("running %s in %s", " ".join(cmd), directory)
        with (
            open(os.path.join(directory, self.output_file), "w") as out,
            open(os.path.join(directory, self.stderr_file), "w", buffering=1) as err,
        ):
            self.process = subprocess.Popen(cmd, cwd=directory, stdout=out, stderr=err, start_new_session=True)
        self.terminated_by_custodian = False
        return self.process

    def terminate(self, directory="./") -> None:
        p = self.process
        if p is None or p.poll() is not None:
            return
        self.terminated_by_custodian = True
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 30)):
            try:
                os.killpg(p.pid, sig)
                os.killpg(p.pid, signal.SIGCONT)  # a stopped (hung) process acts on SIGTERM only once resumed
            except ProcessLookupError:
                return
            try:
                p.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def scf_convergence_values(text: str) -> list[float]:
    """The 'Convergence' column of the last SCF table in a CP2K output."""
    blocks = text.split("Step     Update method")
    if len(blocks) < 2:
        return []
    values = []
    for line in blocks[-1].splitlines()[2:]:
        m = _SCF_ROW_RE.match(line)
        if m is None:
            if values:
                break
            continue
        values.append(float(m.group(1)))
    return values


def _keyword(ci, path: str, key: str, default):
    section = ci.by_path(path) if ci.check(path) else None
    if section is None or key not in section.keywords:
        return default
    return section.get(key).values[0]


class ScfConvergenceHandler(ErrorHandler):
    """An SCF that stopped at ``MAX_SCF`` without reaching ``EPS_SCF``.

    Corrections, applied to the input before custodian runs CP2K again: ``MAX_SCF`` doubled (up to
    ``max_scf_limit``); if the SCF was not converging (no lower over its last five steps) the
    Broyden ``ALPHA`` is halved as well (down to ``min_alpha``). With neither left
    to change the error is unrecoverable and the calculation fails with this reason.
    """

    is_monitor = True

    def __init__(
        self,
        input_file: str = "cp2k.inp",
        output_file: str = "cp2k.out",
        max_scf_limit: int = 1000,
        min_alpha: float = 0.02,
    ) -> None:
        self.input_file = input_file
        self.output_file = output_file
        self.max_scf_limit = int(max_scf_limit)
        self.min_alpha = float(min_alpha)

    def check(self, directory="./") -> bool:
        text = _read(Path(directory) / self.output_file)
        # an SCF cut short by the wall-time limit is the WalltimeHandler's business, not a convergence problem
        return bool(_NOT_CONVERGED_RE.search(text)) and WALLTIME_STOP not in text

    def correct(self, directory="./") -> dict:
        from pymatgen.io.cp2k.inputs import Cp2kInput

        ci = Cp2kInput.from_file(os.path.join(directory, self.input_file))
        conv = scf_convergence_values(_read(Path(directory) / self.output_file))
        max_scf = int(_keyword(ci, "FORCE_EVAL/DFT/SCF", "MAX_SCF", 50))
        alpha = float(_keyword(ci, "FORCE_EVAL/DFT/SCF/MIXING", "ALPHA", 0.4))
        steady = len(conv) >= 2 and conv[-1] < conv[max(0, len(conv) - 6)]
        scf: dict = {}
        if max_scf < self.max_scf_limit:
            scf["MAX_SCF"] = min(2 * max_scf, self.max_scf_limit)
        if not steady and alpha > self.min_alpha:
            scf["MIXING"] = {"ALPHA": max(alpha / 2, self.min_alpha)}
        last = f"{conv[-1]:.2e}" if conv else "unknown"
        error = (
            f"SCF not converged within MAX_SCF = {max_scf} steps (last convergence {last}, "
            f"{'steadily decreasing' if steady else 'not steadily decreasing'})"
        )
        if not scf:
            return {"errors": [error], "actions": []}
        actions = [{"dict": self.input_file, "action": {"_set": {"FORCE_EVAL": {"DFT": {"SCF": scf}}}}}]
        Cp2kModder(ci=ci, filename=self.input_file, directory=directory).apply_actions(actions)
        return {"errors": [error], "actions": actions}


class FrozenRunHandler(FrozenJobErrorHandler):
    """Custodian's frozen-run monitor, safe on a half-written output.

    >>> FrozenRunHandler(output_file="cp2k.out", timeout=3600).timeout
    3600
    """

    def check(self, directory="./") -> bool:
        try:
            return super().check(directory)
        except (IndexError, KeyError, TypeError, AttributeError) as exc:
            # the header is being written: the run has not reached its SCF, and it is frozen only when
            # the output has not changed for the timeout
            path = os.path.join(directory, self.output_file)
            logger.debug("CP2K output %s not parseable yet (%s: %s)", path, type(exc).__name__, exc)
            return time.time() - os.stat(path).st_mtime > self.timeout


class InterruptedRunHandler(ErrorHandler):
    """CP2K's process ended before ``PROGRAM ENDED`` without an error message of its own.

    That is a process killed from outside (a signal, the out-of-memory killer, a lost node), not a
    problem of the input: the partial output is kept as ``<output>.interrupted-<n>`` and the run is
    repeated unchanged, at most ``max_num_corrections`` times. Runs that custodian itself stopped
    (after another handler's correction) are not counted.
    """

    is_monitor = False

    def __init__(self, job: Cp2kProcessJob, output_file: str = "cp2k.out", max_reruns: int = 2) -> None:
        self.job = job
        self.output_file = output_file
        self.max_reruns = int(max_reruns)
        self.max_num_corrections = self.max_reruns
        self.raise_on_max = False
        self._n = 0

    def check(self, directory="./") -> bool:
        if self.job.terminated_by_custodian:
            return False
        text = _read(Path(directory) / self.output_file)
        if PROGRAM_ENDED in text:
            return False
        tail = "\n".join(text.splitlines()[-60:])
        return not _ABORT_RE.search(tail)

    def correct(self, directory="./") -> dict:
        self._n += 1
        p = self.job.process
        code = None if p is None else p.returncode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        kept = f"{self.output_file}.interrupted-{self._n}"
        # a copy: the other handlers still read the output after this one (the rerun overwrites it)
        shutil.copyfile(os.path.join(directory, self.output_file), os.path.join(directory, kept))
        return {
            "errors": [f"CP2K stopped before finishing without an error of its own ({how}); output kept as {kept}"],
            "actions": [{"file": self.output_file, "action": {"_file_copy": {"dest": kept}}}],
        }


def grid_charge_error(text: str) -> tuple[float, float] | None:
    """(largest deviation of the core or total charge on the real-space grid, number of electrons) of
    the last SCF step in a CP2K output; None if CP2K printed neither."""
    cores, totals = _CORE_RE.findall(text), _TOTAL_RE.findall(text)
    if not cores or not totals:
        return None
    n_electrons, core_dev = (float(v) for v in cores[-1])
    return max(abs(core_dev), abs(float(totals[-1]))), n_electrons


class GridChargeValidator(Validator):
    """A finished run fails validation when the charge on the real-space grid misses the number of
    electrons by more than ``tolerance`` per electron: a cutoff too small for the Gaussian basis and
    core charges (at converged cutoffs the deviation is about 1e-10 per electron)."""

    def __init__(self, input_file: str = "cp2k.inp", output_file: str = "cp2k.out", tolerance: float = 1e-6) -> None:
        self.input_file = input_file
        self.output_file = output_file
        self.tolerance = float(tolerance)
        self.message = ""

    def check(self, directory="./") -> bool:
        found = grid_charge_error(_read(Path(directory) / self.output_file))
        if found is None or found[1] <= 0:
            return False
        error, n_el = found
        if error <= self.tolerance * n_el:
            return False
        cutoff = re.search(r"^\s*CUTOFF\s+(\S+)", _read(Path(directory) / self.input_file), re.MULTILINE)
        self.message = (
            f"the real-space grid misses {error:.2e} of {n_el:.0f} electrons (more than {self.tolerance:g} per "
            f"electron): the cutoff{f' ({float(cutoff.group(1)):g} Ry)' if cutoff else ''} is too small for these "
            "basis sets; raise cutoff (and rel_cutoff)"
        )
        return True
