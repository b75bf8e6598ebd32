"""Migration of the embedded store of earlier versions (one mongomock JSON file) to SQLite.

Earlier versions kept everything, configurations and FireWorks LaunchPad alike, in
``$PES_HOME/store.json``. :func:`migrate_legacy` splits it: the configuration collections
(``references``, ``configurations``, ``calculations``, ``models``) go into the SQLite store with
their ids and dates, everything else (the LaunchPad) into the LaunchPad file next to it. It runs
automatically the first time a store is opened where only the old file exists, and as
``pes db migrate``.

Nothing is lost and nothing is half-done: the new store is built in a temporary file, checked
(the counts must match) and only then linked into place; the old file is renamed to
``store.json.migrated`` last and kept. A failure leaves the old file as it was and no new store.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from pathlib import Path

import numpy as np

from .embedded import _write_atomic, holding_lock, load_document
from .errors import EmbeddedStoreError, EmbeddedStoreLocked
from .mongo import calc_record, config_record, model_record, reference_record

log = logging.getLogger(__name__)

#: the collections of the configuration database; every other one belongs to the LaunchPad
CONFIG_COLLECTIONS = ("references", "configurations", "calculations", "models")


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)


def _records(source: Path, name: str, docs: list, convert) -> list[dict]:
    out = []
    for d in docs:
        try:
            rec = convert(d)
        except (KeyError, TypeError, ValueError) as exc:
            raise EmbeddedStoreError(
                f"{source}: {name} document {d.get('_id')} cannot be migrated (missing or malformed {exc}); "
                "nothing was changed"
            ) from None
        for k in ("created", "updated"):
            if k in rec and rec[k] is None:
                rec[k] = _now()
        out.append(rec)
    return out


def _check_arrays(source: Path, recs: list[dict], n_atoms: dict) -> None:
    for r in recs:
        n = n_atoms.get(r.get("config_id", r["id"]))
        checks = (
            (("displacements", (n, 3)), ("strain", (6,)))
            if "displacements" in r
            else (("forces", (n, 3)), ("stress", (6,)))
        )
        for k, shape in checks:
            v = r.get(k)
            if v is not None and (np.shape(v) != shape or not np.all(np.isfinite(v))):
                raise EmbeddedStoreError(
                    f"{source}: {k} of {r['id']} has shape {np.shape(v)}, expected {shape} finite "
                    "numbers; nothing was changed"
                )


def _update_fireworks_config(settings, old: Path, new: Path) -> None:
    """Point the FireWorks config ``pes init`` wrote at the new LaunchPad file."""
    path = settings.launcher_dir / "FW_config.yaml"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return
    if str(old) in text:
        path.write_text(
            text.replace(json.dumps(str(old)), json.dumps(str(new))).replace(str(old), str(new)), encoding="utf-8"
        )
        log.info("pointed %s at %s", path, new)


def migrate_legacy(settings, source: Path | None = None) -> dict | None:
    """Convert an old ``store.json`` into the SQLite store and the LaunchPad file; returns counts.

    Returns None when another process migrated it meanwhile. Refuses (one line, nothing changed) an
    empty or damaged old file, or a target store that exists already.
    """
    automatic = source is None
    source = Path(source if source is not None else settings.legacy_store_path).absolute()
    target = settings.store_path
    lp_path = settings.launchpad_path
    if not source.is_file():
        raise EmbeddedStoreError(f"{source}: no such file to migrate")
    # earlier versions hold <store.json>.lock while they run: never convert under a process still writing it
    try:
        with holding_lock(source, source.with_name(source.name + ".lock"), settings.lock_timeout_s):
            return _migrate_locked(settings, source, target, lp_path, automatic)
    except EmbeddedStoreLocked as exc:
        holder = str(exc).split(" in use by ", 1)[-1]
        raise EmbeddedStoreLocked(f"{source} cannot be migrated now: it is in use by {holder}") from None


def _migrate_locked(settings, source: Path, target: Path, lp_path: Path, automatic: bool) -> dict | None:
    from .sqlite import SQLiteStore

    with holding_lock(lp_path, settings.lock_path, settings.lock_timeout_s):
        if target.exists():
            if automatic:
                return None
            raise EmbeddedStoreError(
                f"the store {target} exists already; migrate into a fresh one (move it away, or "
                "point PES_STORE_FILE at a new file)"
            )
        document = load_document(source)
        name = settings.database
        if name not in document:
            raise EmbeddedStoreError(
                f"{source} holds no database {name!r} (it holds {', '.join(document)}); set "
                "PES_DATABASE to the one to migrate; nothing was changed"
            )
        try:
            cols = {c: [d for _k, d in (document[name].get(c) or {}).get("documents", [])] for c in CONFIG_COLLECTIONS}
        except (AttributeError, TypeError, ValueError):
            raise EmbeddedStoreError(f"{source} is not in FireWorks' embedded format; nothing was changed") from None
        refs = _records(source, "reference", cols["references"], reference_record)
        configs = _records(source, "configuration", cols["configurations"], config_record)
        calcs = _records(source, "calculation", cols["calculations"], calc_record)
        models = _records(source, "model", cols["models"], model_record)
        n_atoms = {c["id"]: c["n_atoms"] for c in configs}
        _check_arrays(source, configs, n_atoms)
        _check_arrays(source, [c for c in calcs if c["config_id"] in n_atoms], n_atoms)
        orphans = [c["id"] for c in calcs if c["config_id"] not in n_atoms]
        if orphans:
            raise EmbeddedStoreError(
                f"{source}: calculation {orphans[0]} belongs to no stored configuration "
                f"({len(orphans)} such); nothing was changed"
            )

        from .sqlite import _remove_stale

        _remove_stale(target.parent, f".{target.name}.*.migrating*")  # an interrupted migration's (we hold the lock)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.migrating")
        store = SQLiteStore.open_file(settings, path=tmp, migrate=False)
        try:
            with store._write():
                for r in refs:
                    store._insert_reference(r)
                _ids, n_new = store._ingest_configurations(configs)
                if n_new != len(configs):
                    raise EmbeddedStoreError(
                        f"{source} holds {len(configs) - n_new} configurations with duplicate "
                        "uniqueness keys; nothing was changed"
                    )
                store._write_calculations(calcs, [], _now())
                for m in models:
                    store._insert_model(m)
            counts = {
                "references": len(store.list_references()),
                "configurations": store.count_configurations(),
                "calculations": store.count_calculations(status=None),
                "models": len(store.list_models()),
            }
        finally:
            store.close()
        expected = {
            "references": len(refs),
            "configurations": len(configs),
            "calculations": len(calcs),
            "models": len(models),
        }
        if counts != expected:  # pragma: no cover - a bug, never a silent loss
            tmp.unlink(missing_ok=True)
            raise EmbeddedStoreError(f"migration of {source} stored {counts}, expected {expected}; nothing was changed")

        launchpad = {
            db: {c: v for c, v in cs.items() if not (db == name and c in CONFIG_COLLECTIONS)}
            for db, cs in document.items()
        }
        from bson import json_util

        _write_atomic(lp_path, json_util.dumps(launchpad))
        try:
            os.link(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        kept = source.with_name(source.name + ".migrated")
        if kept.exists():
            kept = source.with_name(f"{source.name}.migrated-{_now():%Y%m%dT%H%M%S}")
        os.replace(source, kept)
        _update_fireworks_config(settings, source, lp_path)
    counts.update(
        source=str(source),
        kept=str(kept),
        store=str(target),
        launchpad=str(lp_path),
        fireworks=len((launchpad.get(name, {}).get("fireworks") or {}).get("documents", [])),
    )
    log.warning(
        "migrated the embedded store %s to %s (%d configurations, %d calculations); the old file is kept as %s",
        source,
        target,
        counts["configurations"],
        counts["calculations"],
        kept,
    )
    return counts
