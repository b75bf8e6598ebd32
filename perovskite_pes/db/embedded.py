"""The embedded LaunchPad: FireWorks' mongomock-persistence file, made safe.

The configuration database of the embedded store is a SQLite file (:mod:`perovskite_pes.db.sqlite`);
the FireWorks LaunchPad stays in FireWorks' own embedded format, which is small (one document per
Firework, a few hundred for a campaign of the paper's size) and readable by FireWorks' ``lpad``.

FireWorks can run on a mongomock server whose data lives in one JSON file
(``MONGOMOCK_SERVERSTORE_FILE``, served by ``mongomock_persistence``). As shipped, that mechanism
reads the whole file when a client is created and writes it back only at normal interpreter exit,
non-atomically and without any locking, and every client holds a private copy. This module keeps
the file format and changes how it is used:

* **one store per process**: :func:`open_embedded` returns the same :class:`EmbeddedServer` for the
  same file; every mongomock client created in this process for that file (including one made by
  FireWorks because ``MONGOMOCK_SERVERSTORE_FILE`` is set) shares its data instead of copying it;
* **atomic durable writes**: :meth:`EmbeddedServer.flush` writes a temporary file, fsyncs it,
  renames it over the store and fsyncs the directory, so the file is always either the previous or
  the new complete state. Callers flush after each completed unit of work; a final flush runs at
  normal exit;
* **a lock**: the process that opens the store holds an exclusive ``flock`` on ``<file>.lock`` until
  it closes it. A second process waits up to ``lock_timeout`` seconds, then is refused with a message
  that names the holder and says to use MongoDB for parallel workers. The kernel releases the lock
  when the holder dies, even by SIGKILL; the temporary file a killed flush left behind is removed by
  the next process that takes the lock;
* **no silent re-initialisation**: an empty, truncated or unreadable file is an error that names it.

:func:`read_fireworks_counts` reads the file without the lock and without writing (for ``pes db
stats`` while a campaign runs).
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time
import weakref
from contextlib import contextmanager
from pathlib import Path

import mongomock
import mongomock_persistence  # noqa: F401  (patches mongomock's stores with to_dict/from_dict)
from bson import json_util
from mongomock.store import DatabaseStore, ServerStore

from .errors import EmbeddedStoreError, EmbeddedStoreLocked
from .lpfile import _corrupt, _write_atomic, load_document, read_fireworks_counts, remove_stale_temporaries  # noqa: F401

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# process-wide registry: one server per store file
_servers: dict[str, EmbeddedServer] = {}
_registry_lock = threading.RLock()


def _key(path) -> str:
    return os.path.realpath(os.fspath(path))


def open_embedded(path, lock_path=None, lock_timeout: float = 60.0) -> EmbeddedServer:
    """The process's server for the store file ``path`` (opened, locked and loaded on first use)."""
    with _registry_lock:
        key = _key(path)
        server = _servers.get(key)
        if server is not None and server.is_open:
            return server
        server = EmbeddedServer(path, lock_path=lock_path, lock_timeout=lock_timeout)
        server.open()
        _servers[key] = server
        return server


def _serialise(databases: dict) -> str:
    """JSON text of a mongomock server's databases, in mongomock-persistence's file format."""
    out = {}
    for db_name, db in list(databases.items()):
        cols = {}
        for col_name, col in list(db._collections.items()):
            with col._rwlock.reader():
                docs = list(col._documents.items())
            cols[col_name] = {"name": col.name, "documents": docs}
        if cols:  # a database merely looked at (FireWorks' lpad touches "admin") holds nothing to keep
            out[db_name] = cols
    # the C encoder walks the plain data; bson's hook only converts ObjectId, datetime, ... (same
    # extended JSON as json_util.dumps, which walks everything in Python first and is much slower)
    return json.dumps(out, default=json_util.default, separators=(",", ":"))


def databases_from(dct: dict, path: Path) -> dict:
    """mongomock databases from a parsed file (``path`` names it in errors)."""
    try:
        return {k: DatabaseStore.from_dict(v) for k, v in dct.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _corrupt(path, f"is not in FireWorks' embedded format ({str(exc).splitlines()[0][:80]})") from None


def _load_databases(path: Path) -> dict:
    return databases_from(load_document(path), path)


class EmbeddedServer:
    """One store file, loaded into a mongomock server held by this process under an exclusive lock."""

    def __init__(self, path, lock_path=None, lock_timeout: float = 60.0):
        self.path = Path(path).expanduser().absolute()
        self.lock_path = Path(lock_path) if lock_path else self.path.with_name(self.path.name + ".lock")
        self.lock_timeout = float(lock_timeout)
        self._lock_fd: int | None = None
        self._pid: int | None = None
        self._flush_lock = threading.RLock()
        self._last_written: str | None = None
        self.store: ServerStore | None = None
        self.client: mongomock.MongoClient | None = None
        self.n_flushes = 0
        self.created = False  # True when open() found no file

    # ------------------------------------------------------------------ lifecycle
    @property
    def is_open(self) -> bool:
        return self.client is not None and self._pid == os.getpid()

    def open(self) -> EmbeddedServer:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        try:
            remove_stale_temporaries(self.path)
            self.created = not self.path.exists()
            store = ServerStore.__new__(ServerStore)  # no file reading, no exit-time writer
            store._databases = _load_databases(self.path)
            self.store = store
            self.client = mongomock.MongoClient(_store=store)
            self._pid = os.getpid()
            # what the file holds already: a process that only reads (or re-creates indexes) never rewrites it
            self._last_written = None if self.created else _serialise(store._databases)
        except BaseException:
            self._release_lock()
            raise
        _enable_gridfs()
        _closers.add(self)
        return self

    def close(self, flush: bool = True) -> None:
        """Flush (unless told not to), release the lock and forget the in-memory data."""
        if self.client is None:
            return
        try:
            if flush and self._pid == os.getpid():
                self.flush()
        finally:
            self._release_lock()
            self.client = None
            self.store = None
            self._pid = None
            with _registry_lock:
                if _servers.get(_key(self.path)) is self:
                    del _servers[_key(self.path)]
            _closers.discard(self)

    def flush(self) -> bool:
        """Write the whole store atomically and durably. Returns False when nothing had changed."""
        if self.client is None:
            raise EmbeddedStoreError(f"the embedded LaunchPad {self.path} is closed")
        if self._pid != os.getpid():
            raise EmbeddedStoreError(
                f"the embedded LaunchPad {self.path} was opened by process {self._pid}; a forked child "
                "cannot write it (open the store in the child, or use MongoDB for parallel workers)"
            )
        with self._flush_lock:
            for attempt in range(5):
                try:
                    text = _serialise(self.store._databases)
                    break
                except RuntimeError:  # a collection changed size under us (another thread); retry
                    if attempt == 4:
                        raise
                    time.sleep(0.01)
            if text == self._last_written:
                return False
            _write_atomic(self.path, text)
            self._last_written = text
            self.n_flushes += 1
            return True

    # ------------------------------------------------------------------ locking
    def _holder(self) -> str:
        try:
            info = json.loads(self.lock_path.read_text(encoding="utf-8") or "{}")
            cmd = " ".join(info.get("argv", []))[:80]
            return f"process {info.get('pid')} on {info.get('host')} ({cmd})"
        except (OSError, ValueError):
            return "another process"

    def _acquire_lock(self) -> None:
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise EmbeddedStoreError(
                f"cannot open the lock {self.lock_path}: {exc.strerror or exc}; nothing was changed"
            ) from None
        deadline = time.monotonic() + max(self.lock_timeout, 0.0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(fd)
                    raise EmbeddedStoreError(f"cannot lock {self.lock_path}: {exc.strerror}") from None
                if time.monotonic() >= deadline:
                    holder = self._holder()
                    os.close(fd)
                    waited = (
                        f"after waiting {self.lock_timeout:g} s" if self.lock_timeout > 0 else "(lock_timeout_s is 0)"
                    )
                    raise EmbeddedStoreLocked(
                        f"the embedded LaunchPad {self.path} is in use by {holder} {waited}; it serves one "
                        "process at a time, so wait for that process to finish, raise PES_LOCK_TIMEOUT, "
                        "or use MongoDB for parallel workers (pes init --mongo-uri URI, or set PES_MONGO_URI)"
                    ) from None
                time.sleep(0.05)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "argv": sys.argv[:4], "since": time.time()}
        try:  # who holds the lock, for others' messages: best effort (a full disk must not stop a reader)
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        except OSError as exc:
            log.info("could not note this process in %s: %s", self.lock_path, exc)
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is None:
            return
        try:
            os.ftruncate(self._lock_fd, 0)
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        except OSError:  # pragma: no cover
            pass
        finally:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        return f"EmbeddedServer({str(self.path)!r}, {state})"


# ---------------------------------------------------------------------------------------------
# final flush at normal exit
_closers: weakref.WeakSet[EmbeddedServer] = weakref.WeakSet()


@atexit.register
def _close_all_at_exit() -> None:  # pragma: no cover - runs at interpreter exit
    for server in list(_closers):
        try:
            if server._pid == os.getpid():
                server.close(flush=True)
        except Exception as exc:
            log.error("could not write the embedded LaunchPad %s: %s", server.path, exc)


_gridfs_enabled = False


def _enable_gridfs() -> None:
    """FireWorks' LaunchPad builds a GridFS fallback on its database; mongomock needs this switch."""
    global _gridfs_enabled
    if not _gridfs_enabled:
        from mongomock.gridfs import enable_gridfs_integration

        enable_gridfs_integration()
        _gridfs_enabled = True


# ---------------------------------------------------------------------------------------------
# make any other mongomock-persistence client in this process safe
_original_server_store_init = ServerStore.__init__


def _safe_server_store_init(self, filename=None):
    """mongomock-persistence's ServerStore init, made to share an open store and write atomically.

    If the file (``MONGOMOCK_SERVERSTORE_FILE`` or ``filename``) is a store this process holds,
    the new client shares its data (no private copy, no writer at exit). Otherwise the file is
    read as before, and the exit-time write is atomic.
    """
    target = os.environ.get("MONGOMOCK_SERVERSTORE_FILE", filename)
    self._filename = target
    if not target:
        self._databases = {}
        return
    server = _servers.get(_key(target))
    if server is not None and server.is_open:
        self._databases = server.store._databases
        return
    self._databases = _load_databases(Path(target))
    self._finalizer = weakref.finalize(self, _finalize_private_store, target, self._databases)


def _finalize_private_store(target, databases) -> None:  # pragma: no cover - exit-time path
    server = _servers.get(_key(target))
    if server is not None and server.is_open:
        return  # the shared store is authoritative; never overwrite it with a stale private copy
    _write_atomic(Path(target), _serialise(databases))


ServerStore.__init__ = _safe_server_store_init


@contextmanager
def holding_lock(path, lock_path=None, lock_timeout: float = 60.0):
    """Hold the lock of the LaunchPad file ``path`` (without loading it) for the block."""
    server = EmbeddedServer(path, lock_path=lock_path, lock_timeout=lock_timeout)
    server.path.parent.mkdir(parents=True, exist_ok=True)
    server._acquire_lock()
    try:
        yield server
    finally:
        server._release_lock()
