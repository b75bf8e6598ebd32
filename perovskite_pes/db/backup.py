"""Backup and restore of the embedded store: one SQLite file holding the database and the LaunchPad.

``pes db backup FILE`` copies the store with SQLite's online backup (a consistent snapshot while
other processes keep writing) and adds the LaunchPad file's content to the copy, so one file holds
everything. ``pes db restore FILE`` checks the backup (format, integrity), then copies it into the
live store through SQLite (other processes see the old or the new content, never a mix) and writes
the LaunchPad back, holding its lock.
"""

from __future__ import annotations

import datetime as _dt
import os
import sqlite3
from pathlib import Path

from .errors import EmbeddedStoreError
from .sqlite import FORMAT, SCHEMA_VERSION, check_file

#: the table a backup adds for the LaunchPad and its provenance (never part of a live store)
BACKUP_TABLE = "pes_backup"


def _launchpad_text(store) -> str | None:
    server = store._server
    if server is not None and server.is_open:
        from .embedded import _serialise

        return _serialise(server.store._databases)
    path = store.settings.launchpad_path
    return path.read_text(encoding="utf-8") if path.exists() else None


def write_backup(store, target: Path, force: bool = False) -> dict:
    """Copy ``store`` (an open SQLiteStore) and its LaunchPad into ``target``; returns what it holds."""
    target = Path(target).absolute()
    if target.exists() and not force:
        raise EmbeddedStoreError(f"{target} exists already; choose another file or pass --force to overwrite it")
    if target.exists() and target.resolve() == store.path.resolve():
        raise EmbeddedStoreError(f"{target} is the store itself; back it up to another file")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    failed = None
    try:
        dst = sqlite3.connect(tmp, isolation_level=None)
        try:
            with store._read() as conn:
                try:
                    conn.backup(dst)
                except sqlite3.Error as exc:  # most likely the copy's side: no room for it
                    failed = exc
            if failed is not None:
                raise EmbeddedStoreError(
                    f"backing up {store.path} to {target} failed ({failed}; a full disk?); the "
                    "store was not changed and no backup was written"
                )
            dst.execute("PRAGMA journal_mode = DELETE")  # a self-contained single file
            dst.execute(f"CREATE TABLE {BACKUP_TABLE} (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
            info = [
                ("source", str(store.path)),
                ("made_at", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")),
            ]
            lp = _launchpad_text(store)
            if lp is not None:
                info.append(("launchpad", lp))
            dst.executemany(f"INSERT INTO {BACKUP_TABLE} (name, value) VALUES (?, ?)", info)
            counts = _counts(dst)
        finally:
            dst.close()
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except (OSError, sqlite3.Error) as exc:
        raise EmbeddedStoreError(
            f"cannot write the backup {target}: {getattr(exc, 'strerror', None) or exc}; nothing was written"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    return {"file": str(target), "bytes": target.stat().st_size, "launchpad": lp is not None, **counts}


def _counts(conn) -> dict:
    return {
        "configurations": conn.execute("SELECT count(*) FROM configurations").fetchone()[0],
        "calculations": conn.execute("SELECT count(*) FROM calculations").fetchone()[0],
        "models": conn.execute("SELECT count(*) FROM models").fetchone()[0],
    }


def _open_backup(source: Path) -> tuple[sqlite3.Connection, dict, str | None]:
    """A read-only connection to a checked backup, what it holds, and its LaunchPad text."""
    fix = "nothing was restored"
    check_file(source, "the backup", f"restore from a file written by pes db backup; {fix}")
    try:
        src = sqlite3.connect(f"{Path(source).absolute().as_uri()}?mode=ro", uri=True, isolation_level=None)
        meta = dict(src.execute("SELECT name, value FROM meta").fetchall())
    except sqlite3.Error as exc:
        raise EmbeddedStoreError(f"{source} is not a perovskite-pes store or backup ({exc}); {fix}") from None
    if meta.get("format") != FORMAT:
        src.close()
        raise EmbeddedStoreError(f"{source} is a SQLite file but not a perovskite-pes store or backup; {fix}")
    if int(meta.get("schema", 0)) > SCHEMA_VERSION:
        src.close()
        raise EmbeddedStoreError(f"{source} was written by a newer perovskite-pes (schema {meta['schema']}); {fix}")
    try:
        check = src.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise EmbeddedStoreError(f"{source} is damaged ({check}); {fix}")
        has_info = src.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (BACKUP_TABLE,)).fetchone()
        lp = None
        if has_info:
            row = src.execute(f"SELECT value FROM {BACKUP_TABLE} WHERE name = 'launchpad'").fetchone()
            lp = row[0] if row else None
        return src, _counts(src), lp
    except sqlite3.Error as exc:
        src.close()
        raise EmbeddedStoreError(f"{source} is damaged ({exc}); {fix}") from None


def restore_backup(store, source: Path, force: bool = False) -> dict:
    """Replace the content of ``store`` (an open SQLiteStore) and its LaunchPad by the backup ``source``."""
    from bson import json_util

    from .embedded import databases_from

    source = Path(source).absolute()
    if not source.is_file():
        raise EmbeddedStoreError(f"{source}: no such backup file")
    src, counts, lp_text = _open_backup(source)
    try:
        launchpad = None
        if lp_text is not None:
            try:
                launchpad = databases_from(json_util.loads(lp_text), source)
            except (ValueError, EmbeddedStoreError):
                raise EmbeddedStoreError(f"the LaunchPad in {source} is damaged; nothing was restored") from None
        with store._read() as conn:
            current = _counts(conn)
        if (current["configurations"] or current["calculations"]) and not force:
            raise EmbeddedStoreError(
                f"the store {store.path} holds {current['configurations']} configurations "
                f"and {current['calculations']} "
                "calculations; pass --force to replace them by the backup (back them up first: pes db backup FILE)"
            )
        server = store._open_server() if launchpad is not None else None  # holds the LaunchPad's lock
        with store._lock:
            try:
                src.backup(store._conn())
            except sqlite3.Error as exc:
                raise EmbeddedStoreError(
                    f"restoring {source} into {store.path} failed ({exc}); the store was not changed"
                ) from None
            with store._write() as conn:
                conn.execute(f"DROP TABLE IF EXISTS {BACKUP_TABLE}")
            store._references.clear()
            store._energy_refs.clear()
            store._ref_rids.clear()
        if server is not None:
            server.store._databases.clear()
            server.store._databases.update(launchpad)
            server.flush()
    finally:
        src.close()
    return {"file": str(source), "launchpad": launchpad is not None, **counts}
