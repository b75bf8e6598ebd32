"""The embedded store's safety: durable flushes, SIGKILL, concurrent processes, shared clients."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from perovskite_pes.db import DatabaseUnavailable, EmbeddedStoreError, close_store, get_store
from perovskite_pes.settings import Settings

WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from perovskite_pes.db import get_store
    from perovskite_pes.structure import Configuration, Perovskite

    seed, n = int(sys.argv[1]), int(sys.argv[2])
    store = get_store()
    print("open", flush=True)
    ref = Perovskite().supercell(2)
    rng = np.random.default_rng(seed)
    for i in range(n):
        store.save_configuration(Configuration(ref, rng.normal(0, 0.05, (40, 3)), tags={"writer": seed, "i": i}))
        print("flushed", i, flush=True)
    if "--hang" in sys.argv:
        time.sleep(300)
    """
)


@pytest.fixture
def writer(tmp_path, pes_home):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    procs = []

    def start(seed, n, hang=False, env=None):
        full_env = dict(os.environ, **(env or {}))
        p = subprocess.Popen([sys.executable, str(script), str(seed), str(n)] + (["--hang"] if hang else []),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env)
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=30)


def _wait_for(proc, line, timeout=60):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        out = proc.stdout.readline()
        if not out:
            raise AssertionError(f"writer ended before {line!r}: {seen} {proc.stderr.read()}")
        seen.append(out.strip())
        if out.strip() == line:
            return seen
    raise AssertionError(f"timed out waiting for {line!r}")


def _writes_of(store, seed):
    return sorted(d["tags"]["i"] for d in store._configs.find({"tags.writer": seed}, {"tags": 1}))


def test_writes_flushed_before_sigkill_survive(writer, pes_home):
    p = writer(seed=1, n=10_000)
    _wait_for(p, "flushed 7")
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    text = (pes_home / "store.json").read_text()
    json.loads(text)  # never a torn file
    store = get_store()
    got = _writes_of(store, 1)
    assert len(got) >= 8 and got == list(range(len(got)))


def test_two_concurrent_writers_all_writes_present(writer, pes_home):
    a = writer(seed=11, n=4, env={"PES_LOCK_TIMEOUT": "120"})
    b = writer(seed=22, n=4, env={"PES_LOCK_TIMEOUT": "120"})
    for p in (a, b):
        assert p.wait(timeout=180) == 0, p.stderr.read()
    store = get_store()
    assert _writes_of(store, 11) == [0, 1, 2, 3]
    assert _writes_of(store, 22) == [0, 1, 2, 3]


def test_second_process_is_refused_with_a_clear_message(writer, pes_home):
    holder = writer(seed=3, n=1, hang=True)
    _wait_for(holder, "flushed 0")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "perovskite_pes", "db", "stats"], capture_output=True, text=True,
                          env=dict(os.environ, PES_LOCK_TIMEOUT="1"), timeout=120)
    waited = time.monotonic() - t0
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1
    assert f"process {holder.pid}" in err and "MongoDB" in err and "one process at a time" in err
    assert waited >= 1.0
    # in this process too: refused, and the store file is untouched
    with pytest.raises(EmbeddedStoreError, match="in use by"):
        get_store(Settings.load(environ={"PES_HOME": str(pes_home), "PES_LOCK_TIMEOUT": "0"}))
    holder.kill()
    holder.wait(timeout=30)
    assert _writes_of(get_store(), 3) == [0]  # the kernel released the dead holder's lock


def test_other_clients_in_the_process_share_the_open_store(pes_home, monkeypatch):
    import mongomock_persistence

    store = get_store()
    store.db.notes.insert_one({"n": 1})
    monkeypatch.setenv("MONGOMOCK_SERVERSTORE_FILE", str(store.server.path))
    other = mongomock_persistence.MongoClient()
    assert other[store.settings.database].notes.count_documents({}) == 1
    other[store.settings.database].notes.insert_one({"n": 2})
    assert store.db.notes.count_documents({}) == 2  # one copy of the data, not two
    close_store()
    monkeypatch.delenv("MONGOMOCK_SERVERSTORE_FILE")
    assert get_store().db.notes.count_documents({}) == 2


def test_flush_is_atomic_when_the_write_fails(pes_home, monkeypatch):
    import perovskite_pes.db.embedded as emb

    store = get_store()
    store.db.notes.insert_one({"n": 1})
    store.flush()
    before = (pes_home / "store.json").read_text()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(emb.os, "replace", broken_replace)
    store.db.notes.insert_one({"n": 2})
    with pytest.raises(OSError):
        store.flush()
    assert (pes_home / "store.json").read_text() == before
    assert not [p for p in pes_home.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()


def test_corrupt_store_file_is_a_clear_error(pes_home):
    (pes_home / "store.json").write_text('{"perovskite_pes": {"configurations": ')
    with pytest.raises(EmbeddedStoreError, match="corrupt") as err:
        get_store()
    assert str(pes_home / "store.json") in str(err.value)


def test_unreachable_mongodb_fails_fast(pes_home, monkeypatch):
    monkeypatch.setenv("PES_MONGO_URI", "mongodb://127.0.0.1:9/pes_unreachable")
    monkeypatch.setenv("PES_MONGO_TIMEOUT", "1")
    t0 = time.monotonic()
    with pytest.raises(DatabaseUnavailable, match="cannot reach MongoDB at mongodb://127.0.0.1:9") as err:
        get_store()
    assert time.monotonic() - t0 < 10
    assert "\n" not in str(err.value)


def test_launchpad_changes_are_on_disk_without_an_explicit_flush(pes_home):
    from fireworks import Firework, ScriptTask

    store = get_store()
    store.get_launchpad().add_wf(Firework(ScriptTask.from_str("echo hi"), name="durable"))
    on_disk = json.loads((pes_home / "store.json").read_text())
    docs = on_disk[store.settings.database]["fireworks"]["documents"]
    assert [d[1]["name"] for d in docs] == ["durable"]
