"""The embedded store (SQLite + the LaunchPad file): several processes, SIGKILL, corruption, disk full,
read-only commands, migration of the old JSON store, backup and restore."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from perovskite_pes.db import EmbeddedStoreError, EmbeddedStoreLocked, close_store, get_store
from perovskite_pes.settings import Settings
from perovskite_pes.structure import Configuration, Perovskite

WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from perovskite_pes.db import get_store
    from perovskite_pes.structure import Configuration, Perovskite

    seed, n, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    store = get_store()
    ref = Perovskite().supercell(2)
    rng = np.random.default_rng(seed)
    configs = [Configuration(ref, rng.normal(0, 0.05, (40, 3)), tags={"writer": seed, "i": i}) for i in range(n)]
    print("open", flush=True)
    if mode == "hang-in-batch":
        with store.batch():
            store.save_configuration(configs[0], source=f"writer-{seed}")
            print("in batch", flush=True)
            time.sleep(300)
    if mode == "hang-with-launchpad":
        store.get_launchpad()
        print("launchpad", flush=True)
        time.sleep(300)
    for i, c in enumerate(configs):
        store.save_configuration(c, source=f"writer-{seed}")
        print("stored", i, flush=True)
    """
)


@pytest.fixture
def writer(tmp_path, pes_home):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    procs = []

    def start(seed, n, mode="write", env=None):
        full_env = dict(os.environ, **(env or {}))
        p = subprocess.Popen(
            [sys.executable, str(script), str(seed), str(n), mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
        )
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=30)


def _wait_for(proc, line, timeout=120):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        out = proc.stdout.readline()
        if not out:
            raise AssertionError(f"writer ended before {line!r}: {seen[-3:]} {proc.stderr.read()}")
        seen.append(out.strip())
        if out.strip() == line:
            return seen
    raise AssertionError(f"timed out waiting for {line!r}")


def _writes_of(store, seed):
    return sorted(c.tags["i"] for c, _calc, _id in store.records(source=f"writer-{seed}"))


def _seed(n=5, launchpad=True):
    """A store with n configurations, their calculations, a model and (optionally) a workflow."""
    ref = Perovskite().supercell(2)
    rng = np.random.default_rng(3)
    store = get_store()
    ids = store.save_configurations(
        [Configuration(ref, rng.normal(0, 0.05, (40, 3)), tags={"method": "random"}) for _ in range(n)]
    ).ids
    store.save_calculations(
        [
            (
                cid,
                dict(
                    energy=-150.0 - i,
                    forces=rng.normal(size=(40, 3)),
                    stress=np.zeros(6),
                    calculator="sevennet",
                    settings_hash="h1",
                ),
                None,
            )
            for i, cid in enumerate(ids)
        ]
    )
    store.register_model("m1", "/m", "sevennet", "h1", {"rmse": 1.0}, {}, [])
    if launchpad:
        from fireworks import Firework, ScriptTask

        store.get_launchpad().add_wf(Firework(ScriptTask.from_str("echo hi"), name="seeded"))
    close_store()
    return ids


def _one_line_error(proc):
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pes: error:"), proc.stderr
    return lines[0]


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


# ------------------------------------------------------------------------------------ processes
def test_two_processes_writing_500_each_end_with_1000(writer, pes_home):
    get_store()  # create the store first so that both writers open an existing one
    close_store()
    a, b = writer(11, 500), writer(22, 500)
    store = get_store()
    seen = [0]
    while a.poll() is None or b.poll() is None:  # a reader alongside the writers: never blocked, never less
        n = store.count_configurations()
        assert n >= seen[-1]
        seen.append(n)
        time.sleep(0.2)
    for p in (a, b):
        assert p.wait(timeout=300) == 0, p.stderr.read()
    assert store.count_configurations() == 1000
    assert _writes_of(store, 11) == list(range(500)) and _writes_of(store, 22) == list(range(500))
    assert len({r["config_id"] for r in store.query()}) == 1000
    assert any(0 < n < 1000 for n in seen)  # the reader saw the writes arrive while they ran


def test_sigkill_at_random_moments_leaves_a_prefix_and_a_rerun_completes(writer, pes_home):
    n = 300
    get_store()
    close_store()
    rng = np.random.default_rng(2024)
    # each kill lands while the writer is storing: after a random number of acknowledged writes, a random delay later
    for after, delay in zip(rng.integers(0, n - 100, size=4), rng.uniform(0.0, 0.05, size=4)):
        p = writer(5, n)
        _wait_for(p, f"stored {after}")
        time.sleep(delay)
        os.kill(p.pid, signal.SIGKILL)
        assert p.wait(timeout=30) == -signal.SIGKILL  # killed, not finished
        acknowledged = sum(1 for line in p.stdout.read().splitlines() if line.startswith("stored"))
        store = get_store()
        got = _writes_of(store, 5)
        assert got == list(range(len(got)))  # a prefix of the work, no gaps
        assert len(got) >= max(acknowledged, after + 1)  # everything reported stored is stored
        assert store._conn().execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        close_store()
    p = writer(5, n)
    assert p.wait(timeout=300) == 0, p.stderr.read()
    store = get_store()
    assert _writes_of(store, 5) == list(range(n)) and store.count_configurations() == n  # no duplicates
    close_store()
    assert sorted(f.name for f in pes_home.iterdir()) == [
        "store.launchpad.json",
        "store.launchpad.json.lock",
        "store.sqlite",
    ]  # nothing half-made left behind


def test_a_killed_import_stores_all_or_nothing_and_a_rerun_completes(pes_home, tmp_path):
    from perovskite_pes.db.interchange import export_records

    n = 200
    ref = Perovskite().supercell(2)
    rng = np.random.default_rng(31)
    records = [
        (
            Configuration(ref, rng.normal(0, 0.05, (40, 3))),
            dict(
                energy=-150.0 - 0.01 * i,
                forces=rng.normal(size=(40, 3)),
                stress=np.zeros(6),
                calculator="vasp",
                settings_hash="v1",
                status="completed",
            ),
            None,
        )
        for i in range(n)
    ]
    data = tmp_path / "frames.jsonl"
    export_records(records, data)
    get_store()
    close_store()
    cmd = [sys.executable, "-m", "perovskite_pes", "db", "import", str(data)]
    for delay in rng.uniform(0.5, 6.0, size=3):  # while it reads, validates, computes keys or writes
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        p.kill()
        p.communicate(timeout=30)
        store = get_store()
        n_cfg, n_calc = store.count_configurations(), store.count_calculations()
        assert (n_cfg, n_calc) in ((0, 0), (n, n)), (delay, n_cfg, n_calc)  # one unit of work: all or nothing
        assert store._conn().execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        close_store()
    assert subprocess.run(cmd, capture_output=True, timeout=300).returncode == 0
    again = subprocess.run(cmd + ["--json"], capture_output=True, text=True, timeout=300)
    assert json.loads(again.stdout)["calculations_unchanged"] == n
    store = get_store()
    assert (store.count_configurations(), store.count_calculations()) == (n, n)  # no duplicates
    assert sorted(d["energy"] for d in store.training_data()) == sorted(-150.0 - 0.01 * i for i in range(n))


def test_a_long_write_makes_other_writers_wait_and_readers_proceed(writer, pes_home, run_pes):
    _seed(2, launchpad=False)
    holder = writer(7, 2, mode="hang-in-batch")
    _wait_for(holder, "in batch")
    # readers are not blocked by the open write transaction
    st = json.loads(run_pes("db", "stats", "--json", check=0, env={"PES_LOCK_TIMEOUT": "1"}).stdout)
    assert st["configurations"] == 2
    store = get_store(Settings.load(environ={"PES_HOME": str(pes_home), "PES_LOCK_TIMEOUT": "1"}))
    t0 = time.monotonic()
    with pytest.raises(EmbeddedStoreLocked, match="busy") as err:
        store.save_configuration(Configuration(Perovskite().supercell(2), np.full((40, 3), 0.01)))
    assert time.monotonic() - t0 >= 0.9 and "\n" not in str(err.value) and str(store.path) in str(err.value)
    holder.kill()
    holder.wait(timeout=30)
    assert store.count_configurations() == 2  # the killed process's open transaction left nothing
    store.save_configuration(Configuration(Perovskite().supercell(2), np.full((40, 3), 0.01)))
    assert store.count_configurations() == 3


def test_an_import_computes_its_keys_before_it_takes_the_write_lock(pes_home, monkeypatch):
    """The costly part of an import (uniqueness keys: symmetry images of every configuration) runs outside
    its transaction, so a campaign worker waiting to store a result waits for the writes only."""
    import perovskite_pes.db.store as store_mod
    from perovskite_pes.db.interchange import ImportRecord, import_records

    store = get_store()
    ref = Perovskite().supercell(2)
    rng = np.random.default_rng(12)
    records = [
        ImportRecord(
            Configuration(ref, rng.normal(0, 0.05, (40, 3))),
            dict(
                energy=-150.0 - 0.1 * i,
                forces=rng.normal(size=(40, 3)),
                stress=np.zeros(6),
                calculator="vasp",
                settings_hash="v1",
            ),
            f"frame {i + 1}",
        )
        for i in range(6)
    ]
    in_transaction = []
    real = store_mod.uniqueness_key

    def watched(config):
        in_transaction.append(store._conn().in_transaction)
        return real(config)

    monkeypatch.setattr(store_mod, "uniqueness_key", watched)
    summary = import_records(store, records, source="import:test")
    assert (summary["configurations_new"], summary["calculations_new"]) == (6, 6)
    assert in_transaction == [False] * 6


def test_the_launchpad_serves_one_process_and_stats_still_work(writer, pes_home, run_pes):
    _seed(1)
    holder = writer(3, 1, mode="hang-with-launchpad")
    _wait_for(holder, "launchpad")
    msg = _one_line_error(run_pes("db", "lpad", "get_fws", env={"PES_LOCK_TIMEOUT": "1"}))
    assert f"process {holder.pid}" in msg and "MongoDB" in msg and "one process at a time" in msg
    st = json.loads(run_pes("db", "stats", "--json", check=0).stdout)  # reads the LaunchPad file without its lock
    assert st["fireworks"] == {"READY": 1} and st["configurations"] == 1
    holder.kill()
    holder.wait(timeout=30)
    assert get_store().get_launchpad().fireworks.count_documents({}) == 1  # the dead holder's lock is gone


# ------------------------------------------------------------------------------------ durability, indexes
def _plans_with_scans(store, work):
    """The SELECTs the store ran during ``work()`` whose query plan scans a whole table."""
    conn = store._conn()
    statements = []
    conn.set_trace_callback(statements.append)  # statements with their values filled in
    try:
        work()
    finally:
        conn.set_trace_callback(None)
    out = []
    for sql in statements:
        if sql.lstrip().upper().startswith("SELECT"):
            scans = [
                row[-1]
                for row in conn.execute("EXPLAIN QUERY PLAN " + sql)
                if row[-1].startswith("SCAN") and not row[-1].startswith("SCAN refs")
            ]  # a row per reference
            if scans:
                out.append((sql[:120], scans))
    return out


def test_every_lookup_uses_an_index_and_every_unit_of_work_is_durable(pes_home):
    store = get_store()
    assert store._conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._conn().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: on disk when a commit returns
    ref = Perovskite().supercell(2)
    rng = np.random.default_rng(4)
    ids = store.save_configurations(
        [
            Configuration(
                ref, rng.normal(0, 0.05, (40, 3)), tags={"method": "random", "tilt_system": "a0a0c+", "parent": "p"}
            )
            for _ in range(4)
        ]
    ).ids
    store.save_calculations(
        [
            (i, dict(energy=-150.0 - k, forces=rng.normal(size=(40, 3)), calculator="vasp", settings_hash="v1"), None)
            for k, i in enumerate(ids[:3])
        ]
    )
    label = store.list_references()[0]["label"]

    def lookups():  # what imports, campaigns and filtered queries look up
        store.find_configuration(Configuration(ref, rng.normal(0, 0.05, (40, 3))))
        store.save_configurations([Configuration(ref, rng.normal(0, 0.05, (40, 3)))])
        store.has_calculation(ids[0], "v1")
        store.save_calculation(
            ids[3], dict(energy=-151.0, forces=rng.normal(size=(40, 3)), calculator="vasp", settings_hash="v1")
        )
        store.get_configuration(ids[1])
        store.get_calculation(store.query(config_id=ids[2])[0]["calc_id"])
        for filters in (
            {"tilt_system": "a0a0c+"},
            {"method": "random"},
            {"parent": "p"},
            {"reference": label},
            {"calculator": "vasp", "settings_hash": "v1", "emin": -4.0, "emax": -3.0},
            {"settings_hash": "v1", "status": "completed"},
        ):
            store.query(filters, limit=10)
            if set(filters) <= {"tilt_system", "method", "parent", "reference"}:
                store.count_configurations(**filters)
        store.training_data(calculator="vasp", settings_hash="v1")

    assert _plans_with_scans(store, lookups) == []
    # and the check itself finds a scan when an index is missing
    store._conn().execute("DROP INDEX configurations_tilt_system")
    assert _plans_with_scans(store, lambda: store.query(tilt_system="a0a0c+"))
    # committed means visible to, and durable for, any other process as soon as the call returns
    out = subprocess.run(
        [sys.executable, "-c", "from perovskite_pes.db import get_store; print(get_store().count_configurations())"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.stdout.split()[-1] == "5", out.stderr


# ------------------------------------------------------------------------------------ corruption
def _valid_store_bytes(pes_home):
    _seed(60, launchpad=False)
    return (pes_home / "store.sqlite").read_bytes()


@pytest.mark.parametrize("case", ["empty", "whitespace", "json", "garbage", "truncated", "foreign sqlite"])
def test_a_damaged_store_file_is_one_line_and_nothing_changes(case, pes_home, run_pes, tmp_path):
    path = pes_home / "store.sqlite"
    if case == "truncated":
        good = _valid_store_bytes(pes_home)
        content = good[: len(good) // 2]
    elif case == "foreign sqlite":
        import sqlite3

        other = tmp_path / "other.sqlite"
        with sqlite3.connect(other) as conn:
            conn.execute("CREATE TABLE t (x)")
        content = other.read_bytes()
    else:
        content = {
            "empty": b"",
            "whitespace": b"  \n\t\n",
            "json": b"{}",
            "garbage": np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes(),
        }[case]
    path.write_bytes(content)
    before = _digest(path)
    for args in (("db", "stats"), ("db", "query", "--json"), ("db", "import", tmp_path / "missing.jsonl")):
        msg = _one_line_error(run_pes(*args))
        if args[1] != "import":
            assert str(path) in msg and ("restore" in msg or "move it away" in msg), msg
    with pytest.raises(EmbeddedStoreError) as err:
        get_store()
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert _digest(path) == before  # never re-initialised, never touched


@pytest.mark.parametrize("content", [b"", b"   \n", b"{}", b'{"perovskite_pes": {"fireworks": '])
def test_a_damaged_launchpad_file_is_one_line(content, pes_home, run_pes):
    _seed(1)
    lp = pes_home / "store.launchpad.json"
    os.chmod(lp, 0o600)
    lp.write_bytes(content)
    msg = _one_line_error(run_pes("db", "stats"))
    assert str(lp) in msg
    msg = _one_line_error(run_pes("db", "lpad", "get_fws"))
    assert str(lp) in msg
    assert lp.read_bytes() == content


def test_a_full_disk_rolls_the_unit_of_work_back(pes_home):
    store = get_store()
    ref = Perovskite().supercell(2)
    rng = np.random.default_rng(1)
    store.save_configurations([Configuration(ref, rng.normal(0, 0.05, (40, 3))) for _ in range(5)])
    pages = store._conn().execute("PRAGMA page_count").fetchone()[0]
    store._conn().execute(f"PRAGMA max_page_count = {pages + 2}")  # the file cannot grow: as a full disk
    with pytest.raises(EmbeddedStoreError, match="full") as err:
        store.save_configurations([Configuration(ref, rng.normal(0, 0.05, (40, 3))) for _ in range(200)])
    assert "\n" not in str(err.value) and "nothing stored changed" in str(err.value)
    assert store.count_configurations() == 5
    # inside a batch, SQLite rolls the whole transaction back: the batch says so instead of committing part
    with pytest.raises(EmbeddedStoreError, match="rolled this unit of work back"):
        with store.batch():
            store.save_configuration(Configuration(ref, rng.normal(0, 0.05, (40, 3))))
            with pytest.raises(EmbeddedStoreError, match="full"):
                store.save_configurations([Configuration(ref, rng.normal(0, 0.05, (40, 3))) for _ in range(200)])
    assert store.count_configurations() == 5
    store._conn().execute("PRAGMA max_page_count = 1073741823")
    assert store.save_configurations([Configuration(ref, rng.normal(0, 0.05, (40, 3))) for _ in range(3)]).new == 3


def _no_room_to_grow_files():  # as on a full disk: this process may create files but not write into them
    import resource

    resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE semantics of Linux")
def test_a_full_disk_lets_reading_commands_work_and_others_fail_in_one_line(pes_home, tmp_path):
    ids = _seed(5)
    store_file = pes_home / "store.sqlite"
    for leftover in ("-wal", "-shm"):  # as after every process closed it: SQLite must make its WAL index anew
        assert not store_file.with_name(store_file.name + leftover).exists()
    before = _digest(store_file)
    ref = Perovskite().supercell(2)
    incoming = tmp_path / "incoming.jsonl"
    incoming.write_text(json.dumps({"configuration": Configuration(ref, np.full((40, 3), 0.03)).to_dict()}) + "\n")

    def pes(*args):
        return subprocess.run(
            [sys.executable, "-m", "perovskite_pes", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=120,
            env=dict(os.environ),
            preexec_fn=_no_room_to_grow_files,
        )

    st = pes("db", "stats", "--json")
    assert st.returncode == 0 and json.loads(st.stdout)["configurations"] == 5, st.stderr
    rows = pes("db", "query", "--json")
    assert rows.returncode == 0 and [r["config_id"] for r in json.loads(rows.stdout)] == ids, rows.stderr
    msg = _one_line_error(pes("db", "import", incoming, "--structures-only"))
    assert str(store_file) in msg and "reading only" in msg and "nothing was written" in msg
    out = tmp_path / "out" / "export.jsonl"
    msg = _one_line_error(pes("db", "export", out))
    assert f"cannot write {out}" in msg and not out.exists() and not list(out.parent.iterdir())
    msg = _one_line_error(pes("db", "query", "-o", tmp_path / "frames.xyz"))
    assert "frames.xyz" in msg and not (tmp_path / "frames.xyz").exists()
    msg = _one_line_error(pes("db", "backup", tmp_path / "copy.sqlite"))
    assert "no backup was written" in msg and not [p for p in tmp_path.iterdir() if "copy.sqlite" in p.name]
    assert _digest(store_file) == before
    # room again: the same import works, on top of whatever SQLite's failed attempts left next to the store
    store = get_store()
    assert store.read_only_reason is None and store.count_configurations() == 5
    close_store()
    assert (
        subprocess.run(
            [sys.executable, "-m", "perovskite_pes", "db", "import", incoming, "--structures-only"],
            capture_output=True,
            text=True,
            timeout=120,
        ).returncode
        == 0
    )
    store = get_store()
    assert store.count_configurations() == 6
    assert store._conn().execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_failed_launchpad_write_keeps_the_old_file_and_no_temporary(pes_home, monkeypatch):
    from fireworks import Firework, ScriptTask

    import perovskite_pes.db.embedded as emb

    store = get_store()
    lp = store.get_launchpad()
    lp.add_wf(Firework(ScriptTask.from_str("echo 1"), name="first"))
    path = pes_home / "store.launchpad.json"
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(emb.os, "replace", broken_replace)
    with pytest.raises(EmbeddedStoreError, match="No space left on device") as err:
        lp.add_wf(Firework(ScriptTask.from_str("echo 2"), name="second"))
    assert str(path) in str(err.value)
    assert path.read_bytes() == before
    assert not [p for p in pes_home.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()  # the disk has room again: the next write stores both workflows
    lp.add_wf(Firework(ScriptTask.from_str("echo 3"), name="third"))
    assert len(json.loads(path.read_text())["perovskite_pes"]["fireworks"]["documents"]) == 3


def test_a_killed_flush_leaves_no_temporary_behind(pes_home):
    half_made = pes_home / ".store.sqlite.4242.1.new"  # what a kill while creating a store leaves
    half_made.write_bytes(b"SQLite format 3\x00")
    os.utime(half_made, (time.time() - 120, time.time() - 120))
    _seed(1)
    assert not half_made.exists()
    stale = pes_home / ".store.launchpad.json.4242.tmp"
    stale.write_bytes(b"")  # what a kill during a flush leaves
    assert get_store().get_launchpad().fireworks.count_documents({}) == 1
    assert not stale.exists()


def test_read_only_commands_never_write(pes_home, run_pes, tmp_path):
    _seed(5)
    store_file, lp = pes_home / "store.sqlite", pes_home / "store.launchpad.json"
    before = (_digest(store_file), _digest(lp))
    files = sorted(p.name for p in pes_home.iterdir())
    run_pes("db", "stats", check=0)
    run_pes("db", "query", "--method", "random", "--json", check=0)
    run_pes("db", "query", "-o", tmp_path / "poscars", check=0)
    run_pes("db", "export", tmp_path / "out.jsonl", check=0)
    run_pes("db", "backup", tmp_path / "copy.sqlite", check=0)
    run_pes("db", "lpad", "get_fws", "-d", "count", check=0)  # opens the LaunchPad, changes nothing
    close_store()  # when run_pes runs the commands in this process
    assert (_digest(store_file), _digest(lp)) == before
    assert sorted(p.name for p in pes_home.iterdir()) == files  # and leave nothing next to them


# ------------------------------------------------------------------------------------ migration
def _legacy_store(home):
    """Write home/store.json as earlier versions did: mongomock collections, LaunchPad included."""
    import mongomock
    from fireworks import Firework, ScriptTask

    from perovskite_pes.db.embedded import _serialise
    from perovskite_pes.db.mongo import MongoStore

    settings = Settings.load(environ={"PES_HOME": str(home), "PES_MONGO_URI": "mongodb://localhost/perovskite_pes"})
    client = mongomock.MongoClient()
    old = MongoStore.on_client(settings, client)
    ref = Perovskite().supercell(2)
    rng = np.random.default_rng(8)
    configs = [
        Configuration(ref, rng.normal(0, 0.05, (40, 3)), rng.normal(0, 0.01, 6), {"method": "random", "i": i})
        for i in range(12)
    ]
    ids = old.save_configurations(configs, source="enumerate").ids
    forces = [rng.normal(size=(40, 3)) for _ in ids]
    calc_ids = old.save_calculations(
        [
            (
                cid,
                dict(
                    energy=-150.0 - i,
                    forces=f,
                    stress=rng.normal(size=6) * 1e-3,
                    calculator="sevennet",
                    settings_hash="h1",
                ),
                {"fw_id": i},
            )
            for i, (cid, f) in enumerate(zip(ids, forces))
        ]
    )
    old.register_model("net", "/models/net", "sevennet", "h1", {"rmse": 0.5}, {"nodes": 8}, calc_ids)
    old.get_launchpad().add_wf(Firework(ScriptTask.from_str("echo old"), name="old workflow"))
    (home / "store.json").write_text(_serialise(client._store._databases))
    before = {
        "calcs": [old.get_calculation(c) for c in calc_ids],
        "rows": old.query(),
        "tags": [old.get_configuration(i).tags for i in ids],
        "models": old.list_models(),
        "references": old.list_references(),
    }
    old.close()
    return configs, ids, calc_ids, forces, before


def test_an_old_json_store_is_migrated_on_first_open(pes_home):
    configs, ids, calc_ids, forces, before = _legacy_store(pes_home)
    original = (pes_home / "store.json").read_bytes()
    fw = pes_home / "fireworks"
    fw.mkdir()
    (fw / "FW_config.yaml").write_text(f'MONGOMOCK_SERVERSTORE_FILE: "{pes_home / "store.json"}"\n')
    store = get_store()
    assert store.backend == "sqlite"
    assert not (pes_home / "store.json").exists()
    assert (pes_home / "store.json.migrated").read_bytes() == original  # kept, unchanged
    assert store.count_configurations() == 12 and store.count_calculations() == 12
    assert [r["config_id"] for r in store.query()] == ids  # ids and order kept
    data = store.training_data()
    assert [d["calc_id"] for d in data] == calc_ids
    for d, c, f in zip(data, configs, forces):
        np.testing.assert_array_equal(d["config"].displacements, c.displacements)
        np.testing.assert_array_equal(d["config"].strain, c.strain)
        np.testing.assert_array_equal(d["forces"], f)
    assert store.get_calculation(calc_ids[3])["launch"]["fw_id"] == 3
    # nothing lost: every field of every record, dates to the microsecond
    assert store.query() == before["rows"] and [store.get_configuration(i).tags for i in ids] == before["tags"]
    for old_calc in before["calcs"]:
        new_calc = store.get_calculation(old_calc["id"])
        assert set(new_calc) == set(old_calc)
        for k, v in old_calc.items():
            if isinstance(v, np.ndarray):
                np.testing.assert_array_equal(new_calc[k], v)
            else:
                assert new_calc[k] == v, k
    assert store.list_models() == before["models"] and store.list_references() == before["references"]
    model = store.active_model("sevennet")
    assert model["calc_ids"] == calc_ids and model["hyperparameters"] == {"nodes": 8}
    assert store.save_configurations(configs).new == 0  # the uniqueness keys came along
    lp = store.get_launchpad()
    assert [d["name"] for d in lp.fireworks.find({})] == ["old workflow"]
    assert str(pes_home / "store.launchpad.json") in (fw / "FW_config.yaml").read_text()
    close_store()
    assert get_store().count_configurations() == 12  # a second open does not migrate again


def test_pes_db_migrate_and_a_damaged_old_store(pes_home, run_pes):
    from perovskite_pes.db.embedded import holding_lock

    _legacy_store(pes_home)
    legacy = pes_home / "store.json"
    with holding_lock(legacy, legacy.with_name("store.json.lock"), 0):  # as a running earlier version does
        msg = _one_line_error(run_pes("db", "stats", env={"PES_LOCK_TIMEOUT": "0"}))
        assert f"{legacy} cannot be migrated now: it is in use by process {os.getpid()}" in msg
    assert legacy.exists() and not (pes_home / "store.sqlite").exists()
    out = run_pes("db", "migrate", check=0).stdout
    assert "migrated 12 configurations, 12 calculations, 1 models and 1 Fireworks" in out
    assert "exists already" in _one_line_error(run_pes("db", "migrate", pes_home / "store.json.migrated"))
    other = pes_home / "other"
    other.mkdir()
    (other / "store.json").write_text("")
    msg = _one_line_error(run_pes("db", "stats", env={"PES_HOME": str(other)}))
    assert str(other / "store.json") in msg and "empty" in msg
    assert sorted(p.name for p in other.iterdir() if not p.name.endswith(".lock")) == ["store.json"]


# ------------------------------------------------------------------------------------ backup
def test_a_backup_taken_while_another_process_writes_is_one_consistent_moment(writer, pes_home, tmp_path):
    from perovskite_pes.db.sqlite import SQLiteStore

    get_store()
    close_store()
    p = writer(9, 300)
    _wait_for(p, "stored 20")
    summary = get_store().backup(tmp_path / "snapshot.sqlite")
    assert p.wait(timeout=300) == 0, p.stderr.read()
    snap = SQLiteStore.open_file(
        Settings.load(environ={"PES_HOME": str(tmp_path / "elsewhere")}),
        path=tmp_path / "snapshot.sqlite",
        migrate=False,
    )
    try:
        got = sorted(c.tags["i"] for c, _calc, _id in snap.records(source="writer-9"))
        assert got == list(range(len(got))) and 21 <= len(got) == summary["configurations"]  # a prefix: one moment
        assert snap._conn().execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        snap.close()
    assert get_store().count_configurations() == 300


def test_backup_and_restore(pes_home, run_pes, tmp_path):
    _seed(5)
    backup = tmp_path / "backup.sqlite"
    out = run_pes("db", "backup", backup, check=0).stdout
    assert "backed up 5 configurations, 5 calculations, 1 models and the LaunchPad" in out
    assert "exists already" in _one_line_error(run_pes("db", "backup", backup))
    store = get_store()
    ref = Perovskite().supercell(2)
    store.save_configurations([Configuration(ref, np.full((40, 3), 0.02 * k)) for k in range(1, 4)])
    from fireworks import Firework, ScriptTask

    store.get_launchpad().add_wf(Firework(ScriptTask.from_str("echo later"), name="later"))
    close_store()
    assert "--force" in _one_line_error(run_pes("db", "restore", backup))
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"SQLite format 3\x00" + b"\x01" * 5000)
    before = _digest(pes_home / "store.sqlite")
    assert str(garbage) in _one_line_error(run_pes("db", "restore", garbage, "--force"))
    not_a_backup = tmp_path / "frames.xyz"
    not_a_backup.write_text("40\n\n")
    msg = _one_line_error(run_pes("db", "restore", not_a_backup, "--force"))
    assert f"the backup {not_a_backup} is not a SQLite database" in msg and "nothing was restored" in msg
    assert _digest(pes_home / "store.sqlite") == before
    run_pes("db", "restore", backup, "--force", check=0)
    st = json.loads(run_pes("db", "stats", "--json", check=0).stdout)
    assert (st["configurations"], st["calculations"], st["models"], st["fireworks"]) == (5, 5, 1, {"READY": 1})
    store = get_store()
    assert [d["energy"] for d in store.training_data()] == [-150.0, -151.0, -152.0, -153.0, -154.0]
    assert not store._conn().execute("SELECT 1 FROM sqlite_master WHERE name = 'pes_backup'").fetchone()
    assert store._conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._conn().execute("PRAGMA integrity_check").fetchone()[0] == "ok"
