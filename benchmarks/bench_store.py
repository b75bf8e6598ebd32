"""How the configuration database scales: 1,000 -> 100,000 configurations imported in chunks of 1,000.

    python benchmarks/bench_store.py                         # the embedded (SQLite) store, fresh temp PES_HOME
    python benchmarks/bench_store.py -n 20000 --every 5      # a quicker look
    python benchmarks/bench_store.py --mongo-uri mongodb://user:pass@localhost:27017/   # the same on MongoDB

Each chunk is 1,000 2x2x2 configurations (40 atoms) with a calculation each (energy, 40x3 forces,
stress), stored as ``pes db import`` stores a file it has read: ``import_records`` (uniqueness keys,
validation, the data policy, one transaction). Making the records is not timed. Prints:

* per reported chunk: stored count before it, seconds for the chunk, store size and bytes per
  configuration (with its calculation);
* training data (``Store.training_data``) loaded when 31,000 are stored (the paper's size);
* at the end: open + ``stats()`` in-process, and ``pes db stats`` / ``pes db query`` as commands
  (wall time and peak RSS of the process), filtered queries in-process;
* the embedded LaunchPad (FireWorks' own file) at the paper's scale: 31,000 configurations in
  Fireworks of 200 (155 Fireworks), its size and the time of one write.

The issue's targets (2-core machine) are printed next to the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

N_ATOMS = 40
TILTS = ("a0a0a0", "a0a0c+", "a0a0c-", "a-a-a-", "a+b-b-")
METHODS = ("random", "grid", "tilt", "interpolate")


def make_records(ref, start: int, n: int, rng):
    """n import records (configuration + validated calculation) numbered from ``start``."""
    from perovskite_pes.db.interchange import ImportRecord
    from perovskite_pes.db.validation import validate_result
    from perovskite_pes.structure import Configuration

    out = []
    for i in range(start, start + n):
        tags = {"method": METHODS[i % len(METHODS)], "tilt_system": TILTS[i % len(TILTS)], "index": i}
        config = Configuration(ref, rng.normal(0, 0.08, (N_ATOMS, 3)), rng.normal(0, 0.01, 6), tags)
        result = dict(
            energy=-150.0 + rng.normal(0, 0.5),
            forces=rng.normal(0, 0.5, (N_ATOMS, 3)),
            stress=rng.normal(0, 1e-3, 6),
            calculator="sevennet",
            version="0.13.0",
            settings={"model": "7net-mf-0", "modal": "PBE"},
            settings_hash="bench-h1",
            wall_time=0.5,
            status="completed",
        )
        out.append(ImportRecord(config, validate_result(result, N_ATOMS, f"record {i}"), f"record {i}"))
    return out


#: runs a command and writes its peak RSS (KiB) to a file: started from this small process, the child's
#: figure does not inherit the benchmark's own memory (Linux keeps the high-water mark across fork)
_LAUNCHER = (
    "import os, subprocess, sys; p = subprocess.Popen(sys.argv[2:]); _, status, usage = os.wait4(p.pid, 0); "
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss)); sys.exit(os.waitstatus_to_exitcode(status))"
)


def run_child(args: list[str], env: dict) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MB, stdout) of one command."""
    with tempfile.TemporaryDirectory() as tmp:
        rss_file = Path(tmp) / "rss"
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", _LAUNCHER, str(rss_file), *args], capture_output=True, text=True, env=env
        )
        wall = time.perf_counter() - t0
        if proc.returncode:
            raise SystemExit(f"{' '.join(args)} failed: {proc.stderr.strip()}")
        return wall, int(rss_file.read_text()) / 1024, proc.stdout


def store_bytes(store) -> int | None:
    if not store.embedded:
        return None
    store._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return store.path.stat().st_size


def bench_launchpad(home: Path, n_configs: int = 31_000, per_firework: int = 200) -> dict:
    """The embedded LaunchPad file at the paper's scale: one Firework per 200 configuration ids."""
    from bson import ObjectId
    from fireworks import Firework, ScriptTask, Workflow

    from perovskite_pes.db import close_store, get_store
    from perovskite_pes.settings import Settings

    close_store()
    store = get_store(Settings.load(environ={"PES_HOME": str(home)}))
    lp = store.get_launchpad()
    ids = [str(ObjectId()) for _ in range(n_configs)]
    fws = [
        Firework(
            ScriptTask.from_str("true"),
            name=f"calculate {k}",
            spec={"config_ids": ids[k : k + per_firework], "pes_kind": "calculate"},
        )
        for k in range(0, n_configs, per_firework)
    ]
    t0 = time.perf_counter()
    lp.add_wf(Workflow(fws, name="paper-scale"))
    add = time.perf_counter() - t0
    server = store._server
    times = []
    for fw_id in range(1, 11):  # as a launch does: change one Firework, write the file
        lp.update_spec([fw_id], {"_touched": fw_id})
        t0 = time.perf_counter()
        server.flush()
        times.append(time.perf_counter() - t0)
    size = store.settings.launchpad_path.stat().st_size
    close_store()
    return {"fireworks": len(fws), "file_MB": size / 1e6, "add_s": add, "write_s": float(np.median(times))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=100_000, help="configurations in the end (default 100,000)")
    ap.add_argument("--chunk", type=int, default=1_000, help="configurations per chunk (default 1,000)")
    ap.add_argument("--every", type=int, default=10, help="print a line every this many chunks (and after the first)")
    ap.add_argument("--training-at", type=int, default=31_000, help="time training_data when this many are stored")
    ap.add_argument("--mongo-uri", help="run against this MongoDB server instead (a fresh database, dropped after)")
    ap.add_argument("--home", help="PES_HOME (default: a fresh temporary directory)")
    ap.add_argument("--no-launchpad", action="store_true", help="skip the LaunchPad measurement")
    ap.add_argument(
        "--paired",
        type=int,
        default=3,
        help="chunks into a small store and into the full one, alternately, to compare them under the same "
        "machine load (default 3; 0 skips)",
    )
    args = ap.parse_args(argv)

    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="pes-bench-store-"))
    for var in ("PES_MONGO_URI", "PES_MONGO_HOST", "PES_STORE_FILE", "PES_DATABASE"):
        os.environ.pop(var, None)
    os.environ["PES_HOME"] = str(home)
    db_name = None
    if args.mongo_uri:
        db_name = f"pes_bench_{uuid.uuid4().hex[:8]}"
        os.environ.update(PES_MONGO_URI=args.mongo_uri, PES_DATABASE=db_name)

    from perovskite_pes.db import Store, close_store, get_store
    from perovskite_pes.db.interchange import import_records
    from perovskite_pes.structure import Perovskite

    ref = Perovskite().supercell(2)
    rng = np.random.default_rng(0)
    store = get_store()
    print(f"store: {store.describe()}  (machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f})")
    print(
        f"chunks of {args.chunk:,}: seconds per chunk over the chunks stored since the previous line "
        "(median, slowest), store size after them; the first chunk alone (it also pays for the set-up)"
    )
    print(f"{'stored':>8} {'median s':>9} {'max s':>7} {'store MB':>9} {'B/config':>9}")
    rows, window, training = [], [], None
    n_chunks = args.n // args.chunk
    for k in range(n_chunks):
        stored = k * args.chunk
        if args.training_at and stored == args.training_at:
            t0 = time.perf_counter()
            data = store.training_data(calculator="sevennet", settings_hash="bench-h1")
            training = (len(data), time.perf_counter() - t0)
            del data
            print(f"training_data: {training[0]:,} configurations loaded in {training[1]:.2f} s (target <= 10 s)")
        records = make_records(ref, stored, args.chunk, rng)
        t0 = time.perf_counter()
        summary = import_records(store, records, source="bench")
        window.append(time.perf_counter() - t0)
        assert summary["configurations_new"] == args.chunk and summary["calculations_new"] == args.chunk
        if k == 0 or (k + 1) % args.every == 0 or k == n_chunks - 1:
            size = store_bytes(store)
            n_now = stored + args.chunk
            row = (
                n_now,
                float(np.median(window)),
                max(window),
                None if size is None else size / 1e6,
                None if size is None else size / n_now,
            )
            rows.append(row)
            window = []
            print(
                f"{n_now:8,d} {row[1]:9.2f} {row[2]:7.2f} "
                + ("        -         -" if size is None else f"{row[3]:9.1f} {row[4]:9.0f}"),
                flush=True,
            )
    n = n_chunks * args.chunk
    base = rows[1] if len(rows) > 2 else rows[0]  # the first chunk also pays for imports and symmetry set-up
    print(
        f"median chunk near {n:,} / near {base[0]:,} stored: {rows[-1][1] / base[1]:.2f} (target <= 1.5); "
        f"median chunk near {n:,}: {rows[-1][1]:.2f} s (target <= 5 s)"
    )
    if rows[-1][4] is not None:
        print(f"bytes per configuration with its calculation: {rows[-1][4]:.0f} (target <= 4,000)")

    # the same comparison without the machine's load drifting in between: chunks into a store holding
    # 1,000 and into this one, alternately
    if args.paired:
        from perovskite_pes.settings import Settings

        small_home = Path(tempfile.mkdtemp(prefix="pes-bench-small-"))
        small = Store.open(
            Settings.load(environ={**os.environ, "PES_HOME": str(small_home), "PES_MONGO_URI": "", "PES_DATABASE": ""})
        )
        if not store.embedded:
            small.close()
            small = None
        else:
            import_records(small, make_records(ref, 10**7, args.chunk, rng), source="bench")
        times = {"small": [], "large": []}
        for r in range(args.paired if small is not None else 0):
            for label, target in (("small", small), ("large", store)):
                records = make_records(ref, (2 + r) * 10**7 + (label == "large") * 10**6, args.chunk, rng)
                t0 = time.perf_counter()
                import_records(target, records, source="bench")
                times[label].append(time.perf_counter() - t0)
        if small is not None:
            a, b = np.median(times["small"]), np.median(times["large"])
            print(
                f"alternating chunks ({args.paired} each): into a store of 1,000 {a:.2f} s, into this one ({n:,}) "
                f"{b:.2f} s: ratio {b / a:.2f} (target <= 1.5)"
            )
            small.close()
        shutil.rmtree(small_home, ignore_errors=True)

    settings = store.settings
    close_store()
    t0 = time.perf_counter()
    s = Store.open(settings)
    st = s.stats()
    print(f"open + stats() in-process at {st['configurations']:,}: {time.perf_counter() - t0:.3f} s (target <= 1 s)")
    queries = {
        "tilt_system=a0a0c+, emax": dict(tilt_system="a0a0c+", emax=-3.74),
        "method=grid (all rows)": dict(method="grid"),
        "calculator, window, limit 50": dict(calculator="sevennet", emin=-3.76, emax=-3.74, limit=50),
    }
    for label, q in queries.items():
        limit = q.pop("limit", None)
        t0 = time.perf_counter()
        got = s.query(q, limit=limit)
        print(f"query {label}: {len(got)} rows in {time.perf_counter() - t0:.3f} s (target <= 1 s)")
    s.close()

    env = dict(os.environ)
    cmd = [sys.executable, "-m", "perovskite_pes"]
    t_imp, rss_imp, _ = run_child(cmd + ["db", "--help"], env)
    for label, extra in (
        ("pes db stats --json", ["db", "stats", "--json"]),
        (
            "pes db query --tilt-system a0a0c+ --emax -3.74 --json",
            ["db", "query", "--tilt-system", "a0a0c+", "--emax", "-3.74", "--json"],
        ),
        (
            "pes db query --method grid --emin -3.76 --limit 100 --json",
            ["db", "query", "--method", "grid", "--emin", "-3.76", "--limit", "100", "--json"],
        ),
    ):
        wall, rss, out = run_child(cmd + extra, env)
        rows_out = json.loads(out)
        what = (
            f"{rows_out['configurations']:,} configurations" if isinstance(rows_out, dict) else f"{len(rows_out)} rows"
        )
        print(f"{label}: {wall:.2f} s, peak RSS {rss:.1f} MB ({what}; target <= 300 MB)")
    print(f"(pes db --help, i.e. Python start and imports only: {t_imp:.2f} s, {rss_imp:.1f} MB)")

    if args.mongo_uri:
        import pymongo

        pymongo.MongoClient(args.mongo_uri).drop_database(db_name)
    elif not args.no_launchpad:
        lp_home = Path(tempfile.mkdtemp(prefix="pes-bench-lp-"))
        lp = bench_launchpad(lp_home)
        shutil.rmtree(lp_home, ignore_errors=True)
        print(
            f"LaunchPad at the paper's scale: {lp['fireworks']} Fireworks of 200 configurations, file "
            f"{lp['file_MB']:.1f} MB, add_wf {lp['add_s']:.2f} s, one write {lp['write_s'] * 1000:.0f} ms"
        )
    print(f"n = {n:,}; PES_HOME {home}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
