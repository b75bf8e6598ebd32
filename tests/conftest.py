"""Shared fixtures: a temporary PES_HOME, the process's store on it, and the `pes` runner (in-process).

``store`` runs on the embedded store, and also on a real MongoDB when ``PES_TEST_MONGO_URI`` is
set (a fresh database per test, dropped afterwards).
"""

from __future__ import annotations

import os
import uuid

import pytest

from cli_support import pes

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one worker per core: each keeps to one thread (torch, BLAS, and the processes tests start), so
    # workers never spin-wait for each other's cores
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

#: environment variables that would point a test at a user's data
_PES_VARS = (
    "PES_MONGO_URI",
    "PES_MONGO_HOST",
    "PES_MONGO_PORT",
    "PES_MONGO_USER",
    "PES_MONGO_PASSWORD",
    "PES_MONGO_AUTH_SOURCE",
    "PES_MONGO_TLS",
    "PES_MONGO_TLS_CA_FILE",
    "PES_DATABASE",
    "PES_MONGO_TIMEOUT",
    "PES_STORE_FILE",
    "PES_LOCK_TIMEOUT",
    "MONGOMOCK_SERVERSTORE_FILE",
    "FW_CONFIG_FILE",
)

STORE_BACKENDS = ["embedded"] + (["mongo"] if os.environ.get("PES_TEST_MONGO_URI") else [])


@pytest.fixture(scope="module")
def ref():
    """The model tests' small reference (models_support); a module that needs another defines its own."""
    from models_support import small_reference

    return small_reference()


@pytest.fixture(scope="module")
def featurizer(ref):
    """The model tests' pair-shell featurizer on ``ref``; modules with their own ``ref`` define their own."""
    from models_support import ShellFeaturizer

    return ShellFeaturizer(ref)


@pytest.fixture
def pes_home(tmp_path, monkeypatch):
    """A fresh, empty PES_HOME (embedded store) for this test; the process's store is closed after."""
    home = tmp_path / "pes_home"
    home.mkdir()
    for var in _PES_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PES_HOME", str(home))
    monkeypatch.setenv("PES_LOCK_TIMEOUT", "10")
    yield home
    from perovskite_pes.db import close_store

    close_store()


@pytest.fixture(params=STORE_BACKENDS)
def store_backend(request, pes_home, monkeypatch):
    """'embedded', or 'mongo' (a fresh database on PES_TEST_MONGO_URI); sets the environment."""
    if request.param == "mongo":
        name = f"pes_test_{uuid.uuid4().hex[:12]}"
        monkeypatch.setenv("PES_MONGO_URI", os.environ["PES_TEST_MONGO_URI"])
        monkeypatch.setenv("PES_DATABASE", name)
        yield "mongo"
        import pymongo

        client = pymongo.MongoClient(os.environ["PES_TEST_MONGO_URI"], serverSelectionTimeoutMS=5000)
        client.drop_database(name)
        client.close()
    else:
        yield "embedded"


@pytest.fixture
def store(store_backend):
    """The process's Store on a fresh PES_HOME (and a fresh MongoDB database when testing on one)."""
    from perovskite_pes.db import close_store, get_store

    s = get_store()
    yield s
    close_store()


@pytest.fixture
def run_pes(pes_home):
    """Run ``pes ARGS`` (see :func:`pes`) on this test's PES_HOME; ``check=N`` asserts the exit status."""

    def run(*args, check=None, env=None, input=None, process=False, timeout=300):
        result = pes(*args, env=env, input=input, process=process, timeout=timeout)
        if check is not None and result.returncode != check:
            raise AssertionError(
                f"pes {' '.join(map(str, args))} exited {result.returncode}, expected {check}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    return run
