"""The embedded configuration database: one SQLite file (Python's standard ``sqlite3``).

Why SQLite: it is a real database engine in the standard library (nothing to install or run), with
transactions that survive a crash, B-tree indexes, and locking that lets several processes on one
machine use the same file. The store uses it so:

* **WAL journal, ``synchronous=FULL``**: every committed unit of work is on disk when the call
  returns; a crash or SIGKILL at any moment leaves the last committed state (SQLite replays or
  discards the write-ahead log on the next open). Readers never block the writer and see a
  consistent snapshot.
* **one transaction per unit of work**: each public write method (and ``with store.batch():``) is a
  ``BEGIN IMMEDIATE ... COMMIT``; a failure rolls everything of it back. A second writer waits up to
  ``lock_timeout_s`` for the first one's transaction to finish.
* **indexes** on what the code looks up: the configuration's uniqueness key and id, its reference
  and the tags lifted into columns (``tilt_system``, ``method``, ``parent``); calculations on
  (configuration, settings hash) (unique), (calculator, settings hash, status) and (settings hash,
  status, energy per atom).
* **compact arrays**: displacements, strain, forces and stress are float64 little-endian bytes;
  tags, settings and launch provenance are JSON text, a calculator's settings stored once.
* **read-only commands never write**: opening an existing file changes nothing in it.
* **no silent re-initialisation**: an empty, truncated or unreadable file is an error that names
  it; a fresh store is built in a temporary file and linked into place, so another process never
  sees a half-created one.

The FireWorks LaunchPad of the embedded store lives next to the file, in FireWorks' own format
(:mod:`perovskite_pes.db.embedded`), opened only when :meth:`SQLiteStore.get_launchpad` is called.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import sqlite3
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .errors import EmbeddedStoreError, EmbeddedStoreLocked, StoreError
from .store import Store, check_id

log = logging.getLogger(__name__)

FORMAT = "perovskite-pes configuration store"
SCHEMA_VERSION = 1
APPLICATION_ID = 0x50455331  # "PES1": marks the file as ours for file(1) and for the open check
PAGE_SIZE = 8192
#: rows fetched per statement when iterating
CHUNK = 1000

SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE refs (
    rid INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, key TEXT NOT NULL UNIQUE, label TEXT NOT NULL,
    prototype TEXT NOT NULL, formula TEXT NOT NULL, species TEXT NOT NULL, lattice_parameter REAL NOT NULL,
    supercell TEXT NOT NULL, n_atoms INTEGER NOT NULL, created INTEGER NOT NULL);
CREATE INDEX refs_label ON refs (label);
CREATE INDEX refs_formula ON refs (formula);
CREATE TABLE configurations (
    cid INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, key TEXT NOT NULL UNIQUE, key_method TEXT NOT NULL,
    ref INTEGER NOT NULL REFERENCES refs (rid), n_atoms INTEGER NOT NULL,
    displacements BLOB NOT NULL, strain BLOB NOT NULL, tags TEXT NOT NULL,
    tilt_system TEXT, method TEXT, parent TEXT, source TEXT, created INTEGER NOT NULL);
CREATE INDEX configurations_ref ON configurations (ref);
CREATE INDEX configurations_tilt_system ON configurations (tilt_system);
CREATE INDEX configurations_method ON configurations (method);
CREATE INDEX configurations_parent ON configurations (parent);
CREATE TABLE settings_docs (sid INTEGER PRIMARY KEY, json TEXT NOT NULL UNIQUE);
CREATE TABLE calculations (
    kid INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, config INTEGER NOT NULL REFERENCES configurations (cid),
    calculator TEXT NOT NULL, version TEXT, settings_hash TEXT NOT NULL,
    settings INTEGER NOT NULL REFERENCES settings_docs (sid),
    status TEXT NOT NULL CHECK (status IN ('completed', 'failed')), error TEXT,
    energy REAL, energy_per_atom REAL, n_atoms INTEGER NOT NULL, forces BLOB, stress BLOB, wall_time REAL,
    output_dir TEXT, final_structure TEXT, launch TEXT, created INTEGER NOT NULL, updated INTEGER NOT NULL,
    UNIQUE (config, settings_hash));
CREATE INDEX calculations_setup ON calculations (calculator, settings_hash, status);
CREATE INDEX calculations_energy ON calculations (settings_hash, status, energy_per_atom);
CREATE TABLE superseded (
    xid INTEGER PRIMARY KEY, id BLOB NOT NULL, config INTEGER NOT NULL REFERENCES configurations (cid),
    calculator TEXT NOT NULL, version TEXT, settings_hash TEXT NOT NULL,
    settings INTEGER NOT NULL REFERENCES settings_docs (sid), status TEXT NOT NULL, error TEXT,
    energy REAL, energy_per_atom REAL, n_atoms INTEGER NOT NULL, forces BLOB, stress BLOB, wall_time REAL,
    output_dir TEXT, final_structure TEXT, launch TEXT, created INTEGER NOT NULL, updated INTEGER NOT NULL,
    superseded_at INTEGER NOT NULL, reason TEXT NOT NULL);
CREATE INDEX superseded_config ON superseded (config);
CREATE TABLE models (
    mid INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, name TEXT NOT NULL, path TEXT NOT NULL, calculator TEXT,
    settings_hash TEXT, metrics TEXT NOT NULL, hyperparameters TEXT NOT NULL, calc_ids TEXT NOT NULL,
    n_train INTEGER NOT NULL, active INTEGER NOT NULL, created INTEGER NOT NULL);
CREATE INDEX models_active ON models (calculator, active);
"""

#: calculation columns shared by ``calculations`` and ``superseded`` (after id and config)
CALC_FIELDS = (
    "calculator",
    "version",
    "settings_hash",
    "settings",
    "status",
    "error",
    "energy",
    "energy_per_atom",
    "n_atoms",
    "forces",
    "stress",
    "wall_time",
    "output_dir",
    "final_structure",
    "launch",
    "created",
    "updated",
)
#: columns of a configuration record: the light part (tables, counts) and what a full record adds
_CFG_LIGHT = "c.cid, c.id, r.id, c.n_atoms, c.tilt_system, c.method, c.parent, c.source"
_CFG_FULL = ", c.key, c.key_method, c.tags, c.created, c.displacements, c.strain"


def _calc_cols(p: str, full: bool) -> str:
    """Columns of a calculation record from table alias ``p`` (calculations or superseded)."""
    light = (
        f"{p}.id, {p}.config, {p}.calculator, {p}.version, {p}.settings_hash, {p}.status, {p}.error, "
        f"{p}.energy, {p}.energy_per_atom, {p}.n_atoms, {p}.wall_time, {p}.output_dir"
    )
    return light + (
        f", sd.json, {p}.launch, {p}.created, {p}.updated, {p}.forces, {p}.stress, {p}.final_structure" if full else ""
    )


def _calc_from(table: str, p: str, full: bool) -> str:
    return f"{table} {p}" + (f" JOIN settings_docs sd ON sd.sid = {p}.settings" if full else "")


# ------------------------------------------------------------------------------- encoding
def _bid(text_id: str) -> bytes:
    return bytes.fromhex(text_id)


def _sid(blob: bytes) -> str:
    return blob.hex()


_EPOCH = _dt.datetime(1970, 1, 1)


def _usec(t: _dt.datetime) -> int:
    """Naive-UTC datetime -> integer microseconds since the epoch (exact)."""
    if t.tzinfo is not None:
        t = t.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    d = t - _EPOCH
    return (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds


def _time(us: int | None) -> _dt.datetime | None:
    return None if us is None else _EPOCH + _dt.timedelta(microseconds=int(us))


def _json_default(o):
    if isinstance(o, _dt.datetime):
        return {"$date_us": _usec(o)}
    raise TypeError(f"cannot store a value of type {type(o).__name__}")


def _dump(obj) -> str | None:
    return None if obj is None else json.dumps(obj, separators=(",", ":"), default=_json_default)


def _hook(d: dict):
    return _time(d["$date_us"]) if len(d) == 1 and "$date_us" in d else d


def _load(text: str | None):
    if text is None:
        return None
    return json.loads(text, object_hook=_hook) if "$date_us" in text else json.loads(text)


def _blob(a) -> bytes | None:
    return None if a is None else np.ascontiguousarray(a, dtype="<f8").tobytes()


def _array(b: bytes | None, cols: int | None = None) -> np.ndarray | None:
    if b is None:
        return None
    a = np.frombuffer(b, dtype="<f8").astype(float)
    return a.reshape(-1, cols) if cols else a


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _chunks(seq, n: int = CHUNK):
    seq = list(seq)
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


# ------------------------------------------------------------------------------- file checks
def check_file(path: Path, kind: str = "the store", fix: str | None = None) -> None:
    """Refuse a store file that SQLite would misread or silently treat as empty (one-line errors).

    ``kind`` names the file in the message ("the store", "the backup") and ``fix`` says what to do.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            header = fh.read(100)
    except OSError as exc:
        raise EmbeddedStoreError(f"cannot read {kind} {path}: {exc.strerror}") from None
    if fix is None:
        fix = "restore a backup (pes db restore FILE) or move it away to start a fresh store; it was not changed"
    if size == 0:
        raise EmbeddedStoreError(f"{kind} {path} is empty (0 bytes): it was truncated or never written; {fix}")
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        raise EmbeddedStoreError(f"{kind} {path} is not a SQLite database (unrecognised content); {fix}")
    page = int.from_bytes(header[16:18], "big")
    page = 65536 if page == 1 else page
    pages = int.from_bytes(header[28:32], "big")
    valid = header[24:28] == header[92:96]
    wal = path.with_name(path.name + "-wal")
    wal_has_frames = wal.exists() and wal.stat().st_size > 32
    if valid and not wal_has_frames and size < page * pages:
        raise EmbeddedStoreError(f"{kind} {path} is truncated ({size} bytes; its header says {page * pages}); {fix}")


def _translate(exc: sqlite3.Error, path: Path, timeout: float, reading: bool = False) -> StoreError:
    msg = str(exc)
    low = msg.lower()
    if "locked" in low or "busy" in low:
        return EmbeddedStoreLocked(
            f"the store {path} is busy: another process has been writing for more than {timeout:g} s "
            "(lock_timeout_s); wait for it to finish or raise PES_LOCK_TIMEOUT; nothing was written"
        )
    if "full" in low:
        return EmbeddedStoreError(
            f"the disk holding the store {path} is full ({msg}); the unit of work was rolled "
            "back and nothing stored changed — free some space and run it again"
        )
    if "readonly" in low or "read-only" in low:
        return EmbeddedStoreError(f"the store {path} is read-only here ({msg}); nothing was written")
    if isinstance(exc, sqlite3.IntegrityError):
        return StoreError(f"the store {path} refused a write ({msg}); nothing was written")
    if "i/o" in low:
        if reading:
            return EmbeddedStoreError(f"the store {path} could not be read ({msg}); nothing was changed")
        return EmbeddedStoreError(
            f"the store {path} could not be read or written ({msg}); the unit of work was "
            "rolled back and nothing stored changed"
        )
    return EmbeddedStoreError(
        f"the store {path} is corrupt or not a perovskite-pes store ({msg}); restore a backup "
        "(pes db restore FILE) or move it away to start a fresh store; it was not changed"
    )


def _connect(path: Path, timeout: float) -> sqlite3.Connection:
    """A connection to an existing store file (never creates one)."""
    uri = f"{Path(path).absolute().as_uri()}?mode=rw"
    conn = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA cache_size = -32000")  # 32 MB
    return conn


#: errors of a first read that mean SQLite could not create or grow the WAL index (``-shm``) next
#: to the store: a full disk, a read-only directory, a file-size limit
_NO_ROOM = (
    "SQLITE_IOERR_SHMSIZE",
    "SQLITE_IOERR_SHMOPEN",
    "SQLITE_IOERR_SHMMAP",
    "SQLITE_FULL",
    "SQLITE_CANTOPEN",
    "SQLITE_READONLY_CANTINIT",
    "SQLITE_READONLY_DIRECTORY",
    "SQLITE_IOERR_WRITE",
    "SQLITE_IOERR_TRUNCATE",
)


def _wal_is_empty(path: Path) -> bool:
    """True when the store file alone holds every committed write (no write-ahead log, or an empty one)."""
    wal = path.with_name(path.name + "-wal")
    try:
        return wal.stat().st_size == 0
    except FileNotFoundError:
        return True


def _connect_snapshot(path: Path) -> sqlite3.Connection:
    """A read-only connection that needs no ``-shm`` file and takes no locks (SQLite's ``immutable``).

    Only for a store whose write-ahead log is empty, when the disk has no room for the WAL index:
    the file then holds the last committed state, and no other process can be writing to it.
    """
    uri = f"{Path(path).absolute().as_uri()}?mode=ro&immutable=1"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA query_only = ON")
    return conn


def _remove_stale(pattern_dir: Path, pattern: str, older_than_s: float = 0.0) -> None:
    """Delete files a killed process left while making a store (only those older than ``older_than_s``)."""
    now = time.time()
    for leftover in pattern_dir.glob(pattern):
        try:
            if now - leftover.stat().st_mtime >= older_than_s:
                leftover.unlink()
                log.info("removed %s, left by an interrupted process", leftover)
        except OSError:  # pragma: no cover - vanished meanwhile
            pass


def create_file(path: Path) -> bool:
    """Create an empty store at ``path`` atomically; False when another process created it first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path.parent, f".{path.name}.*.new*", older_than_s=60.0)  # creation takes milliseconds
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.new")
    for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
        leftover.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.executescript(SCHEMA)  # a private file until it is linked into place: no transaction needed
        conn.executemany(
            "INSERT INTO meta (name, value) VALUES (?, ?)",
            [
                ("format", FORMAT),
                ("schema", str(SCHEMA_VERSION)),
                ("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")),
            ],
        )
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("PRAGMA journal_mode = WAL")  # persistent: every later connection uses the WAL
        conn.close()
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # never replaces a store another process made meanwhile
            created = True
        except FileExistsError:
            created = False
    finally:
        conn.close()
        for leftover in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
            leftover.unlink(missing_ok=True)
    return created


# ------------------------------------------------------------------------------- the store
class SQLiteStore(Store):
    """The embedded store: configuration database in SQLite, LaunchPad in FireWorks' own file."""

    backend = "sqlite"

    def __init__(self, settings, path: Path | None = None):
        super().__init__(settings)
        self.path = Path(path if path is not None else settings.store_path).absolute()
        self._conn_obj: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._depth = 0
        self._ref_rids: dict[int, str] = {}
        self._server = None  # EmbeddedServer of the LaunchPad, once asked for
        #: why the store could be opened for reading only (no room on its disk), or None
        self.read_only_reason: str | None = None

    # ---------------------------------------------------------------- lifecycle
    @classmethod
    def open_file(cls, settings, path: Path | None = None, migrate: bool = True) -> SQLiteStore:
        """Open (creating, or migrating an old ``store.json``, when there is none) the store file."""
        store = cls(settings, path)
        p = store.path
        if not p.exists() and migrate and path is None and settings.legacy_store_path.exists():
            from .migrate import migrate_legacy

            migrate_legacy(settings)
        if not p.exists():
            if create_file(p):
                store.initialised = True
                log.info("created a fresh store %s", p)
        check_file(p)
        store._connect()
        try:
            store._check_format()
            if store.initialised and path is None:
                store._initialise_launchpad()
        except BaseException:
            store.close()
            raise
        return store

    def _connect(self) -> sqlite3.Connection:
        conn = None
        self.read_only_reason = None
        try:
            conn = _connect(self.path, self.settings.lock_timeout_s)
            conn.execute("PRAGMA schema_version").fetchone()  # the first read maps the WAL index (-shm)
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            if getattr(exc, "sqlite_errorname", "") not in _NO_ROOM or not _wal_is_empty(self.path):
                raise _translate(exc, self.path, self.settings.lock_timeout_s) from None
            # no room for SQLite's WAL index next to the store (a full disk): the file itself holds the last
            # committed state, so reading it still works; writing is refused with one line (see _write)
            try:
                conn = _connect_snapshot(self.path)
                conn.execute("PRAGMA schema_version").fetchone()
            except sqlite3.Error as exc2:
                raise _translate(exc2, self.path, self.settings.lock_timeout_s) from None
            self.read_only_reason = f"{exc} ({exc.sqlite_errorname})"
            log.info("the store %s is open for reading only: %s", self.path, self.read_only_reason)
        self._conn_obj = conn
        self._pid = os.getpid()
        return self._conn_obj

    def _check_format(self) -> None:
        with self._read() as conn:
            try:
                meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
            except sqlite3.OperationalError:
                meta = {}
            if meta.get("format") != FORMAT:
                raise EmbeddedStoreError(
                    f"{self.path} is a SQLite file but not a perovskite-pes store (no store "
                    "metadata); point PES_STORE_FILE at the store, or move it away to start a fresh store"
                )
            if int(meta.get("schema", 0)) > SCHEMA_VERSION:
                raise EmbeddedStoreError(
                    f"the store {self.path} was written by a newer perovskite-pes (schema "
                    f"{meta['schema']}, this version reads {SCHEMA_VERSION}); upgrade perovskite-pes"
                )

    def _conn(self) -> sqlite3.Connection:
        if self._conn_obj is None:
            raise EmbeddedStoreError(f"the store {self.path} is closed")
        if self._pid != os.getpid():  # a forked child: SQLite connections must not cross a fork
            self._depth = 0
            return self._connect()
        return self._conn_obj

    @property
    def embedded(self) -> bool:
        return True

    @property
    def is_open(self) -> bool:
        return self._conn_obj is not None

    def close(self) -> None:
        """Close the file (and the LaunchPad, flushed, with its lock released)."""
        with self._lock:
            if self._server is not None:
                from .launchpad import uninstall_shared_client

                uninstall_shared_client()
                server, self._server = self._server, None
                server.close(flush=True)
            if self._conn_obj is not None and self._pid == os.getpid():
                try:
                    self._conn_obj.close()
                except sqlite3.Error:  # pragma: no cover
                    pass
            self._conn_obj = None

    def flush(self) -> None:
        """Every unit of work is committed when it returns; this writes the open LaunchPad too."""
        if self._server is not None and self._server.is_open:
            self._server.flush()

    @contextmanager
    def _read(self):
        with self._lock:
            try:
                yield self._conn()
            except sqlite3.Error as exc:
                raise _translate(exc, self.path, self.settings.lock_timeout_s, reading=True) from None

    @contextmanager
    def _write(self):
        with self._lock:
            conn = self._conn()
            if self.read_only_reason:
                raise EmbeddedStoreError(
                    f"the store {self.path} could be opened for reading only: SQLite has no room next to it for its "
                    f"write-ahead log index ({self.read_only_reason}; a full disk?); free some space and run it "
                    "again; nothing was written"
                )
            if self._depth:  # inside another unit of work: a savepoint, so that a failure undoes only this part
                self._depth += 1
                name = f"unit{self._depth}"
                try:
                    conn.execute(f"SAVEPOINT {name}")
                    yield conn
                    conn.execute(f"RELEASE {name}")
                except BaseException as exc:
                    try:
                        conn.execute(f"ROLLBACK TO {name}")
                        conn.execute(f"RELEASE {name}")
                    except sqlite3.Error:
                        pass
                    if isinstance(exc, sqlite3.Error):
                        raise _translate(exc, self.path, self.settings.lock_timeout_s) from None
                    raise
                finally:
                    self._depth -= 1
                return
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _translate(exc, self.path, self.settings.lock_timeout_s) from None
            self._depth = 1
            try:
                yield conn
                if not conn.in_transaction:  # SQLite rolled it back after an error a caller caught (disk full ...)
                    raise EmbeddedStoreError(
                        f"the store {self.path} rolled this unit of work back after an earlier "
                        "error in it (full disk?); nothing of it was stored"
                    )
                conn.execute("COMMIT")
            except BaseException as exc:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                self._references.clear()
                self._energy_refs.clear()
                if isinstance(exc, sqlite3.Error):
                    raise _translate(exc, self.path, self.settings.lock_timeout_s) from None
                raise
            finally:
                self._depth = 0

    # ---------------------------------------------------------------- LaunchPad
    def _open_server(self):
        from .embedded import open_embedded
        from .launchpad import install_shared_client

        if self._server is None or not self._server.is_open:
            s = self.settings
            server = open_embedded(s.launchpad_path, s.lock_path, s.lock_timeout_s)
            install_shared_client(server.client)
            self._server = server
        return self._server

    def get_launchpad(self):
        """A FireWorks LaunchPad on the embedded LaunchPad file (its lock is held until :meth:`close`).

        A fresh file gets a LaunchPad reset (FireWorks' id counters); every LaunchPad operation that
        changes it writes the file atomically.
        """
        from .launchpad import PesLaunchPad, prepare_launchpad

        with self._lock:
            fresh = self._server is None or not self._server.is_open
            server = self._open_server()
            lp = PesLaunchPad.on_client(
                server.client, on_change=server.flush, host="localhost", name=self.settings.database, strm_lvl="WARNING"
            )
            if fresh:
                prepare_launchpad(lp, server.client[self.settings.database], tuneup=True)
                server.flush()
            return lp

    def _initialise_launchpad(self) -> None:
        """A fresh store gets its LaunchPad file too, so FireWorks' own ``lpad`` can read it."""
        from .embedded import EmbeddedStoreLocked as Locked

        if self.settings.launchpad_path.exists():
            return
        try:
            self.get_launchpad()
        except Locked:  # another process is creating it: it will be initialised there
            return
        finally:
            if self._server is not None:
                from .launchpad import uninstall_shared_client

                uninstall_shared_client()
                server, self._server = self._server, None
                server.close(flush=True)

    def _fireworks_counts(self) -> tuple[Counter, int]:
        if self._server is not None and self._server.is_open:
            db = self._server.client[self.settings.database]
            return Counter(d.get("state") for d in db.fireworks.find({}, {"state": 1})), db.workflows.count_documents(
                {}
            )
        from .lpfile import read_fireworks_counts

        return read_fireworks_counts(self.settings.launchpad_path, self.settings.database)

    def _location(self) -> dict:
        lp = self.settings.launchpad_path
        wal = self.path.with_name(self.path.name + "-wal")
        return {
            "store_file": str(self.path),
            "store_file_bytes": self.path.stat().st_size + (wal.stat().st_size if wal.exists() else 0),
            "launchpad_file": str(lp),
            "launchpad_file_bytes": lp.stat().st_size if lp.exists() else 0,
        }

    # ---------------------------------------------------------------- references
    def _ref_id_of(self, conn, rid: int) -> str:
        if rid not in self._ref_rids:
            self._ref_rids.update((r, _sid(i)) for r, i in conn.execute("SELECT rid, id FROM refs"))
        return self._ref_rids[rid]

    def _find_reference(self, key: str) -> str | None:
        with self._read() as conn:
            row = conn.execute("SELECT id FROM refs WHERE key = ?", (key,)).fetchone()
        return None if row is None else _sid(row[0])

    def _insert_reference(self, rec: dict) -> str:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO refs (id, key, label, prototype, formula, species, lattice_parameter, supercell, n_atoms, "
                "created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    _bid(rec["id"]),
                    rec["key"],
                    rec["label"],
                    rec["prototype"],
                    rec["formula"],
                    _dump(rec["species"]),
                    rec["lattice_parameter"],
                    _dump(rec["supercell"]),
                    rec["n_atoms"],
                    _usec(rec["created"]),
                ),
            )
        return rec["id"]

    def _reference_doc(self, ref_id: str) -> dict | None:
        with self._read() as conn:
            row = conn.execute(
                "SELECT species, lattice_parameter, supercell FROM refs WHERE id = ?", (_bid(ref_id),)
            ).fetchone()
        if row is None:
            return None
        return {"species": _load(row[0]), "lattice_parameter": row[1], "supercell": _load(row[2])}

    def _list_references(self) -> list[dict]:
        with self._read() as conn:
            counts = dict(conn.execute("SELECT ref, count(*) FROM configurations GROUP BY ref"))
            rows = conn.execute(
                "SELECT rid, id, label, prototype, formula, species, lattice_parameter, supercell, "
                "n_atoms, created FROM refs ORDER BY rid"
            ).fetchall()
        return [
            {
                "id": _sid(i),
                "label": label,
                "prototype": proto,
                "formula": formula,
                "species": _load(species),
                "lattice_parameter": a,
                "supercell": _load(sc),
                "n_atoms": n,
                "created": _time(created),
                "n_configurations": counts.get(rid, 0),
            }
            for rid, i, label, proto, formula, species, a, sc, n, created in rows
        ]

    def _reference_ids_matching(self, value: str) -> list[str]:
        q, params = "SELECT id FROM refs WHERE label = ? OR formula = ?", [value, value]
        if len(value) == 24:
            try:
                params.append(_bid(check_id(value, "reference")))
                q += " OR id = ?"
            except Exception:  # not an id: a label or formula only
                pass
        with self._read() as conn:
            return [_sid(r[0]) for r in conn.execute(q, params)]

    def _reference_labels(self) -> dict:
        with self._read() as conn:
            return {_sid(i): label for i, label in conn.execute("SELECT id, label FROM refs")}

    # ---------------------------------------------------------------- configurations
    def _ingest_configurations(self, recs: list[dict]) -> tuple[dict, int]:
        with self._write() as conn:
            ids: dict = {}
            keys = list({r["key"] for r in recs})
            for part in _chunks(keys):
                ids.update(
                    (k, _sid(i))
                    for k, i in conn.execute(
                        f"SELECT key, id FROM configurations WHERE key IN ({_marks(len(part))})", part
                    )
                )
            rids = dict((_sid(i), r) for r, i in conn.execute("SELECT rid, id FROM refs"))
            fresh = []
            for r in recs:
                if r["key"] in ids:
                    continue
                ids[r["key"]] = r["id"]
                fresh.append(
                    (
                        _bid(r["id"]),
                        r["key"],
                        r["key_method"],
                        rids[r["reference"]],
                        r["n_atoms"],
                        _blob(r["displacements"]),
                        _blob(r["strain"]),
                        _dump(r["tags"] or {}),
                        r["tilt_system"],
                        r["method"],
                        r["parent"],
                        r["source"],
                        _usec(r["created"]),
                    )
                )
            conn.executemany(
                "INSERT INTO configurations (id, key, key_method, ref, n_atoms, displacements, strain, tags, "
                "tilt_system, method, parent, source, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                fresh,
            )
        return ids, len(fresh)

    def _config_ids_for_keys(self, keys: list[str]) -> dict:
        out = {}
        with self._read() as conn:
            for part in _chunks(keys):
                out.update(
                    (k, _sid(i))
                    for k, i in conn.execute(
                        f"SELECT key, id FROM configurations WHERE key IN ({_marks(len(part))})", part
                    )
                )
        return out

    @staticmethod
    def _config_rec(row, full: bool) -> dict:
        """A configuration record from a row of _CFG_LIGHT (without the leading cid) [+ _CFG_FULL]."""
        i, ref, n_atoms, tilt, method, parent, source = row[:7]
        rec = {
            "id": _sid(i),
            "reference": _sid(ref),
            "n_atoms": n_atoms,
            "tilt_system": tilt,
            "method": method,
            "parent": parent,
            "source": source,
        }
        if full:
            key, key_method, tags, created, disp, strain = row[7:13]
            rec.update(
                key=key,
                key_method=key_method,
                tags=_load(tags),
                created=_time(created),
                displacements=_array(disp, 3),
                strain=_array(strain),
            )
        return rec

    def _configs_where(self, conn, column: str, values: list, full: bool = True) -> dict:
        """{cid: record} of the configurations whose ``column`` is in ``values``."""
        out = {}
        cols = _CFG_LIGHT + (_CFG_FULL if full else "")
        for part in _chunks(values):
            for row in conn.execute(
                f"SELECT {cols} FROM configurations c JOIN refs r ON r.rid = c.ref "
                f"WHERE c.{column} IN ({_marks(len(part))})",
                part,
            ):
                out[row[0]] = self._config_rec(row[1:], full)
        return out

    def _configs_by_id(self, ids: list[str]) -> dict:
        with self._read() as conn:
            return {r["id"]: r for r in self._configs_where(conn, "id", [_bid(i) for i in ids]).values()}

    def _n_atoms_by_id(self, ids: list[str]) -> dict:
        out = {}
        with self._read() as conn:
            for part in _chunks([_bid(i) for i in ids]):
                out.update(
                    (_sid(i), n)
                    for i, n in conn.execute(
                        f"SELECT id, n_atoms FROM configurations WHERE id IN ({_marks(len(part))})", part
                    )
                )
        return out

    @staticmethod
    def _config_where(spec: dict) -> tuple[list[str], list]:
        where, params = [], []
        for k, v in spec.items():
            if k == "reference":
                where.append(f"c.ref IN (SELECT rid FROM refs WHERE id IN ({_marks(len(v))}))")
                params.extend(_bid(x) for x in v)
            elif k == "config_id":
                where.append("c.id = ?")
                params.append(_bid(v))
            else:
                where.append(f"c.{k} = ?")
                params.append(v)
        return where, params

    @staticmethod
    def _calc_where(spec: dict) -> tuple[list[str], list]:
        where, params = [], []
        for k, v in spec.items():
            if k == "emin":
                where.append("k.energy_per_atom >= ?")
            elif k == "emax":
                where.append("k.energy_per_atom <= ?")
            elif k == "config_id":
                where.append("k.config = (SELECT cid FROM configurations WHERE id = ?)")
                v = _bid(v)
            else:
                where.append(f"k.{k} = ?")
            params.append(v)
        return where, params

    def _count_configurations(self, spec: dict) -> int:
        where, params = self._config_where(spec)
        sql = "SELECT count(*) FROM configurations c" + (" WHERE " + " AND ".join(where) if where else "")
        with self._read() as conn:
            return conn.execute(sql, params).fetchone()[0]

    # ---------------------------------------------------------------- calculations
    @staticmethod
    def _calc_rec(row, config_id: str, full: bool) -> dict:
        """A calculation record from a row of _calc_cols(.., full)."""
        (i, _config, calculator, version, settings_hash, status, error, energy, epa, n_atoms, wall, output_dir) = row[
            :12
        ]
        rec = {
            "id": _sid(i),
            "config_id": config_id,
            "calculator": calculator,
            "version": version,
            "settings_hash": settings_hash,
            "status": status,
            "error": error,
            "energy": energy,
            "energy_per_atom": epa,
            "n_atoms": n_atoms,
            "wall_time": wall,
            "output_dir": output_dir,
        }
        if full:
            settings, launch, created, updated, forces, stress, final = row[12:19]
            rec.update(
                settings=_load(settings),
                launch=_load(launch),
                created=_time(created),
                updated=_time(updated),
                forces=_array(forces, 3),
                stress=_array(stress),
                final_structure=_load(final),
            )
        return rec

    def _calcs_where(self, conn, where: str, params: list) -> list[dict]:
        rows = conn.execute(
            f"SELECT {_calc_cols('k', True)}, c.id FROM {_calc_from('calculations', 'k', True)} "
            f"JOIN configurations c ON c.cid = k.config WHERE {where} ORDER BY k.kid",
            params,
        ).fetchall()
        return [self._calc_rec(row, _sid(row[-1]), True) for row in rows]

    def _current_calculations(self, pairs: set) -> dict:
        out = {}
        with self._read() as conn:
            for part in _chunks(sorted({_bid(c) for c, _h in pairs})):
                for rec in self._calcs_where(conn, f"c.id IN ({_marks(len(part))})", part):
                    if (rec["config_id"], rec["settings_hash"]) in pairs:
                        out[(rec["config_id"], rec["settings_hash"])] = rec
        return out

    def _calculation_by_id(self, calc_id: str) -> dict | None:
        with self._read() as conn:
            found = self._calcs_where(conn, "k.id = ?", [_bid(calc_id)])
        return found[0] if found else None

    def _settings_id(self, conn, cache: dict, settings) -> int:
        text = json.dumps(settings or {}, sort_keys=True, separators=(",", ":"), default=_json_default)
        if text not in cache:
            conn.execute("INSERT OR IGNORE INTO settings_docs (json) VALUES (?)", (text,))
            cache[text] = conn.execute("SELECT sid FROM settings_docs WHERE json = ?", (text,)).fetchone()[0]
        return cache[text]

    def _calc_values(self, conn, cache: dict, r: dict) -> tuple:
        return (
            r["calculator"],
            r.get("version"),
            r["settings_hash"],
            self._settings_id(conn, cache, r.get("settings")),
            r["status"],
            r.get("error"),
            r.get("energy"),
            r.get("energy_per_atom"),
            r["n_atoms"],
            _blob(r.get("forces")),
            _blob(r.get("stress")),
            r.get("wall_time"),
            r.get("output_dir"),
            _dump(r.get("final_structure")),
            _dump(r.get("launch")),
            _usec(r["created"]),
            _usec(r["updated"]),
        )

    def _write_calculations(self, inserts: list, replaces: list, now) -> None:
        fields = ", ".join(CALC_FIELDS)
        with self._write() as conn:
            cids = {}
            for part in _chunks({_bid(r["config_id"]) for r in inserts}):
                cids.update(
                    (_sid(i), c)
                    for c, i in conn.execute(
                        f"SELECT cid, id FROM configurations WHERE id IN ({_marks(len(part))})", part
                    )
                )
            cache: dict = {}
            conn.executemany(
                f"INSERT INTO calculations (id, config, {fields}) VALUES (?, ?, {_marks(len(CALC_FIELDS))})",
                [(_bid(r["id"]), cids[r["config_id"]], *self._calc_values(conn, cache, r)) for r in inserts],
            )
            for old, new, reason in replaces:
                conn.execute(
                    f"INSERT INTO superseded (id, config, {fields}, superseded_at, reason) "
                    f"SELECT id, config, {fields}, ?, ? FROM calculations WHERE id = ?",
                    (_usec(now), reason, _bid(old["id"])),
                )
                sets = ", ".join(f"{f} = ?" for f in CALC_FIELDS)
                conn.execute(
                    f"UPDATE calculations SET {sets} WHERE id = ?",
                    (*self._calc_values(conn, cache, new), _bid(old["id"])),
                )

    def _count_calculations(self, spec: dict) -> int:
        where, params = self._calc_where(spec)
        sql = "SELECT count(*) FROM calculations k" + (" WHERE " + " AND ".join(where) if where else "")
        with self._read() as conn:
            return conn.execute(sql, params).fetchone()[0]

    def _median_energy(self, settings_hash: str) -> tuple[int, float | None]:
        base = "FROM calculations WHERE settings_hash = ? AND status = 'completed' AND energy_per_atom IS NOT NULL"
        with self._read() as conn:
            n = conn.execute(f"SELECT count(*) {base}", (settings_hash,)).fetchone()[0]
            if not n:
                return 0, None
            row = conn.execute(
                f"SELECT energy_per_atom {base} ORDER BY energy_per_atom LIMIT 1 OFFSET ?", (settings_hash, n // 2)
            ).fetchone()
        return n, row[0]

    def _superseded(self, config_id: str | None) -> list[dict]:
        where, params = ("WHERE c.id = ?", [_bid(config_id)]) if config_id else ("", [])
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_calc_cols('s', True)}, c.id, s.superseded_at, s.reason FROM "
                f"{_calc_from('superseded', 's', True)} JOIN configurations c ON c.cid = s.config "
                f"{where} ORDER BY s.xid",
                params,
            ).fetchall()
        out = []
        for row in rows:
            rec = self._calc_rec(row[:-3], _sid(row[-3]), True)
            rec.update(calc_id=rec["id"], superseded_at=_time(row[-2]), reason=row[-1])
            out.append(rec)
        return out

    # ---------------------------------------------------------------- joined records
    def _join_sql(self, columns: str, cfg_spec: dict, calc_spec: dict | None, limit, refs: bool = False):
        """SELECT ``columns`` of configurations (c) joined with their calculations (k), oldest first."""
        where, params = self._config_where(cfg_spec)
        if calc_spec is None:
            join, order = "LEFT JOIN calculations k ON k.config = c.cid", "c.cid, k.kid"
        else:
            cw, cp = self._calc_where(calc_spec)
            where, params = where + cw, params + cp
            join, order = "JOIN calculations k ON k.config = c.cid", "k.kid"
        sql = (
            f"SELECT {columns} FROM configurations c {'JOIN refs r ON r.rid = c.ref ' if refs else ''}{join}"
            + (" WHERE " + " AND ".join(where) if where else "")
            + f" ORDER BY {order}"
        )
        if limit is not None:
            sql += " LIMIT ?"
            params = params + [max(int(limit), 0)]
        return sql, params

    def _query_rows(self, cfg_spec: dict, calc_spec: dict | None, limit) -> list[dict]:
        from .store import ROW_KEYS

        sql, params = self._join_sql(
            "c.id, r.label, c.tilt_system, c.method, c.parent, c.source, c.n_atoms, k.id, "
            "k.calculator, k.settings_hash, k.status, k.energy, k.energy_per_atom",
            cfg_spec,
            calc_spec,
            limit,
            refs=True,
        )
        with self._read() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [dict(zip(ROW_KEYS, (r[0].hex(), *r[1:7], None if r[7] is None else r[7].hex(), *r[8:]))) for r in rows]

    def _joined(self, cfg_spec: dict, calc_spec: dict | None, limit=None, arrays=True):
        sql, params = self._join_sql("c.cid, k.kid", cfg_spec, calc_spec, limit)
        with self._read() as conn:
            pairs = conn.execute(sql, params).fetchall()  # which rows, in order; then their contents by chunk
        for part in _chunks(pairs):
            with self._read() as conn:
                configs = self._configs_where(conn, "cid", sorted({c for c, _k in part}), arrays)
                kids = [k for _c, k in part if k is not None]
                calcs = {}
                for chunk in _chunks(kids):
                    for row in conn.execute(
                        f"SELECT k.kid, {_calc_cols('k', arrays)} FROM {_calc_from('calculations', 'k', arrays)} "
                        f"WHERE k.kid IN ({_marks(len(chunk))})",
                        chunk,
                    ):
                        calcs[row[0]] = row[1:]
            for cid, kid in part:
                cfg = configs.get(cid)
                if cfg is None:
                    continue
                if kid is None:
                    yield cfg, None
                elif kid in calcs:
                    yield cfg, self._calc_rec(calcs[kid], cfg["id"], arrays)

    # ---------------------------------------------------------------- models
    def _model_rec(self, row) -> dict:
        i, name, path, calculator, shash, metrics, hyper, calc_ids, n_train, active, created = row
        return {
            "id": _sid(i),
            "name": name,
            "path": path,
            "calculator": calculator,
            "settings_hash": shash,
            "metrics": _load(metrics),
            "hyperparameters": _load(hyper),
            "calc_ids": _load(calc_ids),
            "n_train": n_train,
            "active": bool(active),
            "created": _time(created),
        }

    def _insert_model(self, rec: dict) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO models (id, name, path, calculator, settings_hash, metrics, hyperparameters, calc_ids, "
                "n_train, active, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    _bid(rec["id"]),
                    rec["name"],
                    rec["path"],
                    rec["calculator"],
                    rec["settings_hash"],
                    _dump(rec["metrics"]),
                    _dump(rec["hyperparameters"]),
                    _dump(rec["calc_ids"]),
                    rec["n_train"],
                    int(bool(rec["active"])),
                    _usec(rec["created"]),
                ),
            )

    def _activate_model(self, model_id: str, calculator) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE models SET active = 0 WHERE calculator IS ? AND active = 1 AND id != ?",
                (calculator, _bid(model_id)),
            )
            conn.execute("UPDATE models SET active = 1 WHERE id = ?", (_bid(model_id),))

    def _find_models(self, active=None, calculator=None, model_id=None) -> list[dict]:
        where, params = [], []
        if active is not None:
            where.append("active = ?")
            params.append(int(active))
        if calculator is not None:
            where.append("calculator = ?")
            params.append(calculator)
        if model_id is not None:
            where.append("id = ?")
            params.append(_bid(model_id))
        sql = (
            "SELECT id, name, path, calculator, settings_hash, metrics, hyperparameters, calc_ids, n_train, active, "
            "created FROM models" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY created, mid"
        )
        with self._read() as conn:
            return [self._model_rec(row) for row in conn.execute(sql, params)]

    # ---------------------------------------------------------------- statistics
    def _counts(self) -> dict:
        with self._read() as conn:
            by_ref = {
                self._ref_id_of(conn, r): n
                for r, n in conn.execute("SELECT ref, count(*) FROM configurations GROUP BY ref")
            }
            out = {
                "by_reference": by_ref,
                "by_method": dict(conn.execute("SELECT method, count(*) FROM configurations GROUP BY method")),
                "by_tilt_system": dict(
                    conn.execute("SELECT tilt_system, count(*) FROM configurations GROUP BY tilt_system")
                ),
                "calculations": {
                    (a, b, c): n
                    for a, b, c, n in conn.execute(
                        "SELECT calculator, settings_hash, status, count(*) FROM calculations GROUP BY 1, 2, 3"
                    )
                },
                "superseded": conn.execute("SELECT count(*) FROM superseded").fetchone()[0],
                "models": conn.execute("SELECT count(*) FROM models").fetchone()[0],
                "active_models": [r[0] for r in conn.execute("SELECT name FROM models WHERE active = 1 ORDER BY mid")],
            }
        return out

    # ---------------------------------------------------------------- backup and restore
    def backup(self, target, force: bool = False) -> dict:
        """Write a consistent copy of the store (and of the LaunchPad) to ``target``, one SQLite file.

        Other processes may keep writing meanwhile; the copy is the state at one instant.
        """
        from .backup import write_backup

        return write_backup(self, Path(target), force=force)

    def restore(self, source, force: bool = False) -> dict:
        """Replace the store's content (and its LaunchPad) by a backup made with :meth:`backup`."""
        from .backup import restore_backup

        return restore_backup(self, Path(source), force=force)
