"""The embedded LaunchPad file without mongomock: atomic writes and a read-only parse.

Kept apart from :mod:`perovskite_pes.db.embedded` so that ``pes db stats`` can count Fireworks
without importing mongomock and FireWorks.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path

from bson import json_util

from .errors import EmbeddedStoreError

log = logging.getLogger(__name__)


def _tmp_name(path: Path, pid: int | None = None) -> Path:
    return path.with_name(f".{path.name}.{os.getpid() if pid is None else pid}.tmp")


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete the temporary files killed writers of ``path`` left (call with the lock held)."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:  # pragma: no cover - vanished or not ours
            pass
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted write of %s", len(removed), path)
    return removed


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a crash leaves either the old or the new file.

    A failure (full disk, ...) leaves the old file and no temporary file, and is an
    :class:`EmbeddedStoreError` naming the file.
    """
    path = Path(path)
    tmp = _tmp_name(path)
    try:
        # read-only on disk: only a rename replaces it, so a plain FireWorks client that rewrites the
        # file in place at exit (mongomock-persistence) fails instead of clobbering newer data
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise EmbeddedStoreError(
            f"cannot write {path}: {exc.strerror or exc}; the previous state of the file is kept"
        ) from None
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # pragma: no cover - directories cannot be fsynced on some filesystems
        pass


def _corrupt(path: Path, what: str) -> EmbeddedStoreError:
    return EmbeddedStoreError(
        f"the embedded LaunchPad file {path} {what}; it was not changed — restore a backup "
        "(pes db restore FILE), or move it away to start an empty LaunchPad"
    )


def load_document(path: Path) -> dict:
    """The parsed JSON of a mongomock-persistence file ({database: {collection: {...}}}).

    A missing file is ``{}``; an empty, whitespace-only, ``{}``, truncated or garbage file is an
    :class:`EmbeddedStoreError` naming it (never a silent fresh start).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise EmbeddedStoreError(f"cannot read {path}: {exc.strerror}") from None
    if not raw.strip():
        raise _corrupt(path, f"is empty ({len(raw)} bytes): it was truncated")
    try:
        dct = json_util.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise _corrupt(
            path, f"is not valid JSON ({str(exc).splitlines()[0][:80]}): it is truncated or damaged"
        ) from None
    if not isinstance(dct, dict) or not dct:
        raise _corrupt(path, "holds no database (expected {database: {collection: ...}})")
    return dct


def read_fireworks_counts(path, database: str) -> tuple[Counter, int]:
    """(Fireworks by state, number of workflows) of a LaunchPad file, read without lock or write."""
    dct = load_document(Path(path))
    db = dct.get(database) or {}
    try:
        fws = (db.get("fireworks") or {}).get("documents") or []
        states = Counter(doc.get("state") for _key, doc in fws)
        return states, len((db.get("workflows") or {}).get("documents") or [])
    except (AttributeError, TypeError, ValueError):
        raise _corrupt(Path(path), "is not in FireWorks' embedded format") from None
