"""The one way tests run the ``pes`` command: in-process through ``perovskite_pes.cli.main`` by default.

Not collected by pytest (no ``test_`` prefix); ``conftest.py`` wraps it in the ``run_pes`` fixture.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys

from perovskite_pes.utils import environment


class PesRun:
    """What a ``pes`` command did: ``returncode``, ``stdout``, ``stderr`` (like ``subprocess.CompletedProcess``)."""

    def __init__(self, args, returncode: int, stdout: str, stderr: str):
        self.args, self.returncode, self.stdout, self.stderr = args, returncode, stdout, stderr


def pes(*args, env=None, input=None, cwd=None, process=False, timeout=300) -> PesRun:
    """Run ``pes ARGS``: in this process through :func:`perovskite_pes.cli.main` (default), or with
    ``process=True`` as ``python -m perovskite_pes ARGS`` in a subprocess, for the tests where the
    process boundary is the point (locks held by another process, interpreter start-up, exit codes
    of an uncaught error). ``env`` adds environment variables for the call; ``input`` is stdin."""
    argv = [str(a) for a in args]
    if process:
        proc = subprocess.run(
            [sys.executable, "-m", "perovskite_pes", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **{k: str(v) for k, v in (env or {}).items()}},
            input=input,
            cwd=cwd,
        )
        return PesRun(argv, proc.returncode, proc.stdout, proc.stderr)
    from perovskite_pes.cli import main

    out, err = io.StringIO(), io.StringIO()
    stdin = sys.stdin
    here = os.getcwd()
    with environment(**(env or {})), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        sys.stdin = io.StringIO(input or "")
        try:
            if cwd is not None:
                os.chdir(cwd)
            rc = main(argv)
        except SystemExit as exc:  # argparse: --help, usage errors
            rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if isinstance(exc.code, str):
                err.write(exc.code + "\n")
        finally:
            sys.stdin = stdin
            os.chdir(here)
    return PesRun(argv, int(rc), out.getvalue(), err.getvalue())
