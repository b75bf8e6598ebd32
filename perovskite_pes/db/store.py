"""The configuration database: references, configurations, calculations and model records.

:func:`get_store` returns the process's one :class:`Store` for the current settings:

* :class:`perovskite_pes.db.sqlite.SQLiteStore` (the embedded default): a SQLite file under
  ``$PES_HOME``, safe for several processes, one transaction per unit of work;
* :class:`perovskite_pes.db.mongo.MongoStore`: a MongoDB server (or a mongomock client in tests).

Both implement the same API; this base class holds everything that does not depend on the engine:
validation (a bad record changes nothing), the uniqueness of configurations, the data policy for
calculations (a repeated result is a no-op, a different one is refused unless ``replace``, outliers
are refused unless ``allow_outliers``), query filters and the statistics. The engines implement the
storage primitives (the ``_`` methods marked "engine" below).
"""

from __future__ import annotations

import datetime as _dt
import logging
import threading
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from bson import ObjectId
from bson.errors import InvalidId

from ..settings import Settings
from .errors import (
    CalculationConflict,
    DatabaseUnavailable,
    NotFound,
    OutlierRecord,
    QueryError,
    StoreError,
)
from .keys import reference_key, reference_label, uniqueness_key
from .validation import (
    InvalidRecord,
    describe_difference,
    outlier_reason,
    same_result,
    to_plain,
    validate_launch,
    validate_result,
)

log = logging.getLogger(__name__)

__all__ = [
    "CALC_FILTERS",
    "CONFIG_FILTERS",
    "QUERY_FIELDS",
    "CalcReport",
    "CalculationConflict",
    "DatabaseUnavailable",
    "IngestReport",
    "NotFound",
    "OutlierRecord",
    "QueryError",
    "Store",
    "StoreError",
    "close_store",
    "get_launchpad",
    "get_store",
]


@dataclass
class IngestReport:
    """Outcome of :meth:`Store.save_configurations`: ``ids`` in input order."""

    new: int = 0
    existing: int = 0
    ids: list[str] = field(default_factory=list)


@dataclass
class CalcReport:
    """Outcome of :meth:`Store.ingest_calculations`: ``ids`` in input order."""

    new: int = 0
    unchanged: int = 0  # the same result was stored already: nothing written
    replaced: int = 0  # the stored one was kept as superseded
    ids: list[str] = field(default_factory=list)


@dataclass
class PreparedConfigurations:
    """Configurations validated, with their records and uniqueness keys (:meth:`Store.prepare_configurations`)."""

    configs: list
    records: list[dict]


#: filters on configurations
CONFIG_FILTERS = {
    "reference": "reference label (e.g. CsPbBr3_a5.8700_2x2x2), formula (CsPbBr3) or id",
    "tilt_system": "Glazer symbol from the sampling tags, e.g. a0a0c+",
    "method": "sampling method from the tags, e.g. tilt, grid, random, interpolate",
    "parent": "id or name of the parent configuration",
    "source": "where the configuration came from (enumerate, import:<file>, ...)",
    "config_id": "configuration id",
}
#: filters on calculations (any of them restricts rows to configurations with such a calculation)
CALC_FILTERS = {
    "calculator": "calculator name: sevennet, chgnet, cp2k, vasp, ...",
    "settings_hash": "calculator setup fingerprint",
    "status": "completed or failed",
    "emin": "lowest energy, eV/atom (total energy / number of atoms)",
    "emax": "highest energy, eV/atom",
}
QUERY_FIELDS = {**CONFIG_FILTERS, **CALC_FILTERS}

#: configuration fields lifted from the tags into indexed columns
TAG_FIELDS = ("tilt_system", "method", "parent")


def utcnow() -> _dt.datetime:
    """Naive UTC, what BSON stores and both engines return."""
    return _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)


def new_id() -> str:
    """A fresh id (24 hexadecimal digits, a MongoDB ObjectId; sortable by creation time)."""
    return str(ObjectId())


def check_id(value, what: str) -> str:
    """``value`` as a canonical id string; NotFound when it cannot be an id."""
    if isinstance(value, ObjectId):
        return str(value)
    try:
        return str(ObjectId(str(value)))
    except (InvalidId, TypeError):
        raise NotFound(f"{what} id {value!r} is not a valid id (24 hexadecimal digits)") from None


def _str_or_none(v):
    if v is None or isinstance(v, (list, tuple)):
        return None
    return str(v)


def check_limit(limit) -> int | None:
    """``limit`` as a row count (None: no limit); a negative or non-integer one is a QueryError."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 0:
        raise QueryError(f"limit must be a whole number >= 0; got {limit!r}")
    return int(limit)


def median_energy_reference(n_stored: int, stored_median, batch: list[float]):
    """(reference energy per atom, what it is) for the outlier check of one settings hash."""
    if n_stored:
        return stored_median, f"median of the {n_stored} stored calculations with this settings hash"
    if len(batch) > 1:
        return float(np.median(batch)), f"median of the {len(batch)} new calculations with this settings hash"
    return None, "no reference"


# ------------------------------------------------------------------------------- the store
class Store:
    """References, configurations, calculations and models: the engine-independent part."""

    #: "sqlite" or "mongodb"
    backend = ""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._lock = threading.RLock()
        self._references: dict[str, object] = {}
        self._energy_refs: dict[str, list] = {}  # settings_hash -> [n stored, median, writes since]
        self.initialised = False  # True when opening created a fresh database

    # ---------------------------------------------------------------- lifecycle
    @classmethod
    def open(cls, settings: Settings | None = None) -> Store:
        """The store the settings point at: the embedded SQLite file or a MongoDB server."""
        settings = settings or Settings.load()
        if settings.embedded:
            from .sqlite import SQLiteStore

            return SQLiteStore.open_file(settings)
        from .mongo import MongoStore

        return MongoStore.connect(settings)

    @property
    def embedded(self) -> bool:
        return False

    @property
    def is_open(self) -> bool:  # engine
        raise NotImplementedError

    def close(self) -> None:  # engine
        raise NotImplementedError

    def flush(self) -> None:
        """Make everything written so far durable (each unit of work already is; kept for callers)."""

    @contextmanager
    def _write(self):  # engine: one transaction (nested: part of the outer one)
        yield

    @contextmanager
    def batch(self):
        """Group several writes into one unit of work: all of them are stored, or none."""
        with self._write():
            yield self

    def get_launchpad(self):  # engine
        raise NotImplementedError

    def describe(self) -> str:
        return self.settings.describe()

    # ---------------------------------------------------------------- references
    def _reference_id(self, reference) -> str:
        key = reference_key(reference)
        found = self._find_reference(key)
        if found is not None:
            return found
        p = reference.perovskite
        rec = dict(
            id=new_id(),
            key=key,
            label=reference_label(reference),
            prototype="cubic-perovskite-Pm-3m",
            formula=p.formula,
            species=[str(s) for s in p.species],
            lattice_parameter=float(p.lattice_parameter),
            supercell=np.asarray(reference.matrix, dtype=int).tolist(),
            n_atoms=int(reference.n_atoms),
            created=utcnow(),
        )
        if not rec["lattice_parameter"] > 0:
            raise InvalidRecord(f"reference: lattice parameter must be positive; got {rec['lattice_parameter']}")
        return self._insert_reference(rec)

    def save_reference(self, reference) -> str:
        """Store a :class:`ReferenceSupercell` (idempotent); returns its id."""
        with self._write():
            return self._reference_id(reference)

    def get_reference(self, ref_id):
        """The :class:`ReferenceSupercell` stored under ``ref_id``."""
        rid = check_id(ref_id, "reference")
        if rid not in self._references:
            d = self._reference_doc(rid)
            if d is None:
                raise NotFound(f"no reference with id {ref_id}")
            from ..structure import Perovskite, ReferenceSupercell

            self._references[rid] = ReferenceSupercell(
                Perovskite(tuple(d["species"]), d["lattice_parameter"]), np.array(d["supercell"])
            )
        return self._references[rid]

    def list_references(self) -> list[dict]:
        """Every reference with its number of configurations, oldest first."""
        return self._list_references()

    # ---------------------------------------------------------------- configurations
    def _config_record(self, config, where: str, source: str | None, n_atoms: dict) -> dict:
        from ..structure import Configuration

        if not isinstance(config, Configuration):
            raise InvalidRecord(
                "save_configurations expects perovskite_pes.structure.Configuration objects; "
                f"got {type(config).__name__}"
            )
        if getattr(config, "reference", None) is None:
            raise InvalidRecord(f"{where} has no reference supercell")
        key, method = uniqueness_key(config)
        tags = to_plain(config.tags, f"{where} tags")
        if config.reference not in n_atoms:
            n_atoms[config.reference] = int(config.reference.n_atoms)
        rec = dict(
            id=new_id(),
            key=key,
            key_method=method,
            reference=None,
            n_atoms=n_atoms[config.reference],
            displacements=np.ascontiguousarray(config.displacements, dtype=float),
            strain=np.ascontiguousarray(config.strain, dtype=float),
            tags=tags,
            source=source,
            created=utcnow(),
        )
        for k in TAG_FIELDS:
            rec[k] = _str_or_none(tags.get(k))
        return rec

    def prepare_configurations(self, configs, source: str | None = None) -> PreparedConfigurations:
        """Validate configurations and compute their uniqueness keys (the costly part) without touching
        the store; :meth:`save_configurations` takes the result. Lets a caller that groups several
        writes in :meth:`batch` keep this work out of the transaction (other writers wait less)."""
        configs = list(configs)
        if source is not None and not isinstance(source, str):
            raise InvalidRecord(f"source must be a string; got {type(source).__name__}")
        n_atoms: dict = {}
        recs = [self._config_record(c, f"configuration {i}", source, n_atoms) for i, c in enumerate(configs)]
        return PreparedConfigurations(configs, recs)

    def save_configurations(self, configs, source: str | None = None) -> IngestReport:
        """Store configurations; one that is already stored (same uniqueness key) is not duplicated.

        ``ids`` follows the input order (an existing configuration's id for the ones already there).
        Everything is validated first; then all of them are stored in one transaction. ``configs``
        may be the result of :meth:`prepare_configurations` (``source`` is then ignored).
        """
        prepared = (
            configs if isinstance(configs, PreparedConfigurations) else self.prepare_configurations(configs, source)
        )
        configs, recs = prepared.configs, prepared.records
        if not recs:
            return IngestReport()
        with self._lock, self._write():
            ref_ids: dict = {}
            for c, r in zip(configs, recs):
                k = reference_key(c.reference)
                if k not in ref_ids:
                    ref_ids[k] = self._reference_id(c.reference)
                r["reference"] = ref_ids[k]
            ids_by_key, n_new = self._ingest_configurations(recs)
        return IngestReport(new=n_new, existing=len(recs) - n_new, ids=[ids_by_key[r["key"]] for r in recs])

    def save_configuration(self, config, source: str | None = None) -> str:
        """Store one configuration (idempotent); returns its id."""
        return self.save_configurations([config], source=source).ids[0]

    def find_configuration(self, config) -> str | None:
        """Id of the stored configuration with the same uniqueness key, or None."""
        key, _ = uniqueness_key(config)
        return self._config_ids_for_keys([key]).get(key)

    def _to_configuration(self, rec: dict):
        from ..structure import Configuration

        return Configuration(
            self.get_reference(rec["reference"]), rec["displacements"], rec["strain"], dict(rec.get("tags") or {})
        )

    def get_configuration(self, config_id):
        """The :class:`perovskite_pes.structure.Configuration` stored under ``config_id``."""
        cid = check_id(config_id, "configuration")
        rec = self._configs_by_id([cid]).get(cid)
        if rec is None:
            raise NotFound(f"no configuration with id {config_id}")
        return self._to_configuration(rec)

    def get_configurations(self, ids) -> list:
        """Several configurations, in the order of ``ids``."""
        cids = [check_id(i, "configuration") for i in ids]
        found = self._configs_by_id(cids)
        missing = [c for c in cids if c not in found]
        if missing:
            raise NotFound(
                f"no configuration with id {missing[0]}"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            )
        return [self._to_configuration(found[c]) for c in cids]

    def count_configurations(self, **filters) -> int:
        return self._count_configurations(self._config_spec(filters))

    # ---------------------------------------------------------------- calculations
    def save_calculation(
        self, config_id: str, result, launch: dict | None = None, replace: bool = False, allow_outliers: bool = False
    ) -> str:
        """Store a calculation result for a stored configuration; returns the calculation id.

        One calculation per (configuration, settings_hash). Storing the same result again is a
        no-op; a different result raises :class:`CalculationConflict` unless ``replace`` (the old
        one is then kept as superseded, see :meth:`superseded_calculations`); a new result for a
        *failed* calculation always replaces it. An implausible energy or force raises
        :class:`OutlierRecord` unless ``allow_outliers``. ``result`` is a CalcResult
        (``.to_dict()``) or a dict with its keys; ``launch`` holds provenance (fw_id, launch_id,
        host, launch_dir, time). Bad input raises InvalidRecord and stores nothing.
        """
        return self.ingest_calculations(
            [(config_id, result, launch)], replace=replace, allow_outliers=allow_outliers, _single=True
        ).ids[0]

    def save_calculations(self, items, replace: bool = False, allow_outliers: bool = False) -> list[str]:
        """Several ``(config_id, result, launch)`` at once: all checked first, one transaction."""
        return self.ingest_calculations(items, replace=replace, allow_outliers=allow_outliers).ids

    def ingest_calculations(
        self, items, replace: bool = False, allow_outliers: bool = False, _single: bool = False
    ) -> CalcReport:
        """Like :meth:`save_calculations`, with how many were new, unchanged and replaced."""
        items = list(items)
        wheres = ["calculation" if _single else f"calculation {i}" for i in range(len(items))]
        cids = [check_id(cid, "configuration") for cid, _res, _launch in items]
        n_atoms = self._n_atoms_by_id(list(set(cids)))
        recs = []
        for where, cid, (_c, res, launch) in zip(wheres, cids, items):
            if cid not in n_atoms:
                raise NotFound(f"{where}: no configuration with id {cid}")
            fields = validate_result(res, n_atoms[cid], where)
            fields.update(config_id=cid, launch=validate_launch(launch))
            recs.append(fields)
        if not allow_outliers:
            self._check_outliers(recs, wheres)
        with self._lock, self._write():
            report = self._apply_policy(recs, wheres, replace)
        for r in recs:
            if r["status"] == "completed" and r["settings_hash"] in self._energy_refs:
                self._energy_refs[r["settings_hash"]][2] += 1
        return report

    def _apply_policy(self, recs: list[dict], wheres: list[str], replace: bool) -> CalcReport:
        current = self._current_calculations({(r["config_id"], r["settings_hash"]) for r in recs})
        now = utcnow()
        report = CalcReport()
        inserts, replaces, conflicts = [], [], []
        pending: dict = {}  # (config, hash) -> record written earlier in this batch
        for where, r in zip(wheres, recs):
            pair = (r["config_id"], r["settings_hash"])
            old = pending.get(pair) or current.get(pair)
            if old is None:
                r.update(id=new_id(), created=now, updated=now)
                inserts.append(r)
                report.new += 1
            elif same_result(old, r):
                r = old
                report.unchanged += 1
            elif replace or old["status"] == "failed":
                reason = (
                    "replaced on request" if replace and old["status"] != "failed" else "rerun of a failed calculation"
                )
                r.update(id=old["id"], created=old["created"], updated=now)
                earlier = [k for k, x in enumerate(inserts) if x is old]
                if earlier:  # new, and twice in this batch: the later one is stored
                    inserts[earlier[0]] = r
                else:
                    replaces.append((old, r, reason))
                    report.replaced += 1
            else:
                conflicts.append(
                    f"{where}: configuration {r['config_id']} already has a different {r['calculator']} "
                    f"calculation with settings hash {r['settings_hash']} ({describe_difference(old, r)})"
                )
                continue
            pending[pair] = r
            report.ids.append(r["id"])
        if conflicts:
            more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
            raise CalculationConflict(
                f"{conflicts[0]}{more}; nothing was stored — pass --replace (replace=True) to "
                "store the new result and keep the old one as superseded"
            )
        self._write_calculations(inserts, replaces, now)
        return report

    def _energy_reference(self, settings_hash: str):
        """(number of stored completed calculations, their median energy per atom).

        Cached once there are a hundred: the median of many moves slowly, so it is recomputed only
        after this process stored half as many again.
        """
        cached = self._energy_refs.get(settings_hash)
        if cached is None or cached[0] < 100 or cached[2] > cached[0] // 2:
            n, median = self._median_energy(settings_hash)
            cached = self._energy_refs[settings_hash] = [n, median, 0]
        return cached[0], cached[1]

    def _check_outliers(self, recs: list[dict], wheres: list[str]) -> None:
        by_hash: dict = {}
        for r in recs:
            if r["status"] == "completed":
                by_hash.setdefault(r["settings_hash"], []).append(r["energy_per_atom"])
        refs = {h: median_energy_reference(*self._energy_reference(h), batch) for h, batch in by_hash.items()}
        for where, r in zip(wheres, recs):
            ref, what = refs.get(r["settings_hash"], (None, ""))
            reason = outlier_reason(r, ref, what)
            if reason:
                raise OutlierRecord(
                    f"{where} (configuration {r['config_id']}): {reason}; nothing was stored — pass "
                    "--allow-outliers (allow_outliers=True) to store it anyway"
                )

    def has_calculation(self, config_id, settings_hash: str, status: str | None = "completed") -> bool:
        """Whether ``config_id`` has a calculation with this setup (and status; None = any)."""
        spec = {"config_id": check_id(config_id, "configuration"), "settings_hash": settings_hash}
        if status is not None:
            spec["status"] = status
        return self._count_calculations(spec) > 0

    def get_calculation(self, calc_id) -> dict:
        """One calculation as a dict (``id``, ``config_id`` and the stored fields; arrays as numpy)."""
        rec = self._calculation_by_id(check_id(calc_id, "calculation"))
        if rec is None:
            raise NotFound(f"no calculation with id {calc_id}")
        return rec

    @staticmethod
    def _calc_spec(calculator=None, settings_hash=None, status="completed") -> dict:
        spec = {"calculator": calculator, "settings_hash": settings_hash, "status": status}
        return {k: v for k, v in spec.items() if v is not None}

    def count_calculations(self, calculator=None, settings_hash=None, status="completed") -> int:
        return self._count_calculations(self._calc_spec(calculator, settings_hash, status))

    def list_calculations(
        self, calculator=None, settings_hash=None, status=None, limit: int | None = None
    ) -> list[dict]:
        """Calculations without their arrays (id, config_id, calculator, settings_hash, status, error, energy, ...)."""
        spec = self._calc_spec(calculator, settings_hash, status)
        if check_limit(limit) == 0:
            return []
        return [calc for _cfg, calc in self._joined({}, spec, limit=limit, arrays=False)]

    def superseded_calculations(self, config_id=None) -> list[dict]:
        """Calculations replaced by a newer result, oldest first: the old record with ``calc_id`` (the
        calculation that replaced it), ``superseded_at`` and ``reason``."""
        return self._superseded(None if config_id is None else check_id(config_id, "configuration"))

    def training_data(
        self, calculator: str | None = None, settings_hash: str | None = None, status: str = "completed"
    ) -> list[dict]:
        """Calculations with their configurations, for training energy models.

        Each item: ``dict(config=Configuration, energy, forces (N,3) array, stress (6,) array or None,
        calc_id, calculator, settings_hash, config_id)``, oldest calculation first.
        """
        out = []
        for cfg, c in self._joined({}, self._calc_spec(calculator, settings_hash, status), arrays=True):
            out.append(
                dict(
                    config=self._to_configuration(cfg),
                    energy=c["energy"],
                    forces=c["forces"],
                    stress=c["stress"],
                    calc_id=c["id"],
                    config_id=cfg["id"],
                    calculator=c["calculator"],
                    settings_hash=c["settings_hash"],
                )
            )
        return out

    # ---------------------------------------------------------------- models
    def register_model(
        self,
        name: str,
        path: str,
        calculator: str | None,
        settings_hash: str | None,
        metrics: dict,
        hyperparameters: dict,
        calc_ids: list[str],
        activate: bool = True,
    ) -> str:
        """Record a trained model; with ``activate`` it becomes the active model for its calculator."""
        if not name or not isinstance(name, str):
            raise InvalidRecord("a model needs a name")
        for what, v in (("calculator", calculator), ("settings_hash", settings_hash)):
            if v is not None and not isinstance(v, str):
                raise InvalidRecord(f"model {what} must be a string or None; got {type(v).__name__}")
        rec = dict(
            id=new_id(),
            name=name,
            path=str(path),
            calculator=calculator,
            settings_hash=settings_hash,
            metrics=to_plain(metrics or {}, "model metrics"),
            hyperparameters=to_plain(hyperparameters or {}, "model hyperparameters"),
            calc_ids=[str(c) for c in (calc_ids or [])],
            n_train=len(calc_ids or []),
            active=False,
            created=utcnow(),
        )
        with self._lock, self._write():
            self._insert_model(rec)
            if activate:
                self._activate_model(rec["id"], calculator)
        return rec["id"]

    def set_active_model(self, model_id) -> None:
        mid = check_id(model_id, "model")
        with self._lock, self._write():
            found = self._find_models(model_id=mid)
            if not found:
                raise NotFound(f"no model with id {model_id}")
            self._activate_model(mid, found[0].get("calculator"))

    def active_model(self, calculator: str | None = None) -> dict | None:
        """The active model (for ``calculator``, or the newest active one of any calculator)."""
        found = self._find_models(active=True, calculator=calculator)
        return found[-1] if found else None

    def list_models(self) -> list[dict]:
        return self._find_models()

    # ---------------------------------------------------------------- queries
    def _config_spec(self, filters: dict) -> dict:
        unknown = sorted(set(filters) - set(CONFIG_FILTERS))
        if unknown:
            raise QueryError(f"unknown configuration field(s) {', '.join(unknown)}; known: {', '.join(CONFIG_FILTERS)}")
        spec: dict = {}
        for k, v in filters.items():
            if v is None:
                continue
            if k == "reference":
                spec["reference"] = self._reference_ids_matching(str(v))
            elif k == "config_id":
                spec["config_id"] = check_id(v, "configuration")
            else:
                spec[k] = str(v)
        return spec

    def _split_filters(self, filters: dict | None, kwargs: dict) -> tuple[dict, dict | None]:
        """(configuration spec, calculation spec or None when no calculation filter is given)."""
        filters = {**(filters or {}), **kwargs}
        filters = {k: v for k, v in filters.items() if v is not None}
        unknown = sorted(set(filters) - set(QUERY_FIELDS))
        if unknown:
            raise QueryError(f"unknown query field(s) {', '.join(unknown)}; known fields: {', '.join(QUERY_FIELDS)}")
        cfg_f = {k: v for k, v in filters.items() if k in CONFIG_FILTERS}
        calc_f = {k: v for k, v in filters.items() if k in CALC_FILTERS}
        spec = {k: str(calc_f[k]) for k in ("calculator", "settings_hash", "status") if k in calc_f}
        if spec.get("status", "completed") not in ("completed", "failed"):
            raise QueryError(f"status must be completed or failed; got {spec['status']!r}")
        for k in ("emin", "emax"):
            if k in calc_f:
                try:
                    spec[k] = float(calc_f[k])
                except (TypeError, ValueError):
                    raise QueryError(f"{k} must be a number (eV/atom); got {calc_f[k]!r}") from None
        if "emin" in spec and "emax" in spec and spec["emin"] > spec["emax"]:
            raise QueryError(f"empty energy window: emin {spec['emin']} > emax {spec['emax']}")
        return self._config_spec(cfg_f), (spec if calc_f else None)

    def query(self, filters: dict | None = None, limit: int | None = None, **kwargs) -> list[dict]:
        """Rows of configurations joined with their calculations (no arrays).

        Filters (see :data:`QUERY_FIELDS`): on configurations ``reference``, ``tilt_system``,
        ``method``, ``parent``, ``source``, ``config_id``; on calculations ``calculator``,
        ``settings_hash``, ``status``, ``emin``/``emax`` (eV/atom). Without calculation filters every
        matching configuration appears, with one row per calculation (or one row with empty
        calculation fields); with any, only matching calculations appear. Unknown fields raise
        QueryError.
        """
        cfg_spec, calc_spec = self._split_filters(filters, kwargs)
        if check_limit(limit) == 0:
            return []
        return self._query_rows(cfg_spec, calc_spec, limit)

    def _query_rows(self, cfg_spec: dict, calc_spec: dict | None, limit) -> list[dict]:
        """The rows of :meth:`query` (engines may answer it in one statement)."""
        labels = self._reference_labels()
        return [_row(cfg, calc, labels) for cfg, calc in self._joined(cfg_spec, calc_spec, limit=limit, arrays=False)]

    def iter_records(self, filters: dict | None = None, limit: int | None = None, **kwargs):
        """Yield ``(configuration record, calculation record or None)`` pairs (dicts, arrays as numpy)."""
        cfg_spec, calc_spec = self._split_filters(filters, kwargs)
        if check_limit(limit) == 0:
            return
        yield from self._joined(cfg_spec, calc_spec, limit=limit, arrays=True)

    def records(self, filters: dict | None = None, limit: int | None = None, **kwargs):
        """Like :meth:`iter_records`, as ``(Configuration, calculation dict or None, config_id)``."""
        for cfg, calc in self.iter_records(filters, limit=limit, **kwargs):
            yield self._to_configuration(cfg), calc, cfg["id"]

    def stats(self) -> dict:
        """Counts for people and scripts: what the store holds and where it lives."""
        c = self._counts()
        labels = self._reference_labels()
        fw_states, n_workflows = self._fireworks_counts()

        def named(counts: dict, names=None) -> dict:
            out = Counter()
            for k, n in counts.items():
                out[(names or {}).get(k, k) or "-"] += n
            return dict(out.most_common())

        out = {
            "store": self.describe(),
            "backend": self.backend,
            "embedded": self.embedded,
            "database": self.settings.database,
            "references": named(c["by_reference"], labels),
            "configurations": sum(c["by_reference"].values()),
            "by_method": named(c["by_method"]),
            "by_tilt_system": named(c["by_tilt_system"]),
            "calculations": sum(c["calculations"].values()),
            "by_calculator": [
                {"calculator": k[0], "settings_hash": k[1], "status": k[2], "count": v}
                for k, v in sorted(c["calculations"].items())
            ],
            "superseded_calculations": c["superseded"],
            "models": c["models"],
            "active_models": c["active_models"],
            "fireworks": dict(fw_states),
            "workflows": n_workflows,
        }
        out.update(self._location())
        return out

    # ---------------------------------------------------------------- engine primitives
    # references
    def _find_reference(self, key: str) -> str | None:
        raise NotImplementedError  # noqa: E704

    def _insert_reference(self, rec: dict) -> str:
        raise NotImplementedError  # noqa: E704

    def _reference_doc(self, ref_id: str) -> dict | None:
        raise NotImplementedError  # noqa: E704

    def _list_references(self) -> list[dict]:
        raise NotImplementedError  # noqa: E704

    def _reference_ids_matching(self, value: str) -> list[str]:
        raise NotImplementedError  # noqa: E704

    def _reference_labels(self) -> dict:
        raise NotImplementedError  # noqa: E704

    # configurations
    def _ingest_configurations(self, recs: list[dict]) -> tuple[dict, int]:
        raise NotImplementedError  # noqa: E704

    def _config_ids_for_keys(self, keys: list[str]) -> dict:
        raise NotImplementedError  # noqa: E704

    def _configs_by_id(self, ids: list[str]) -> dict:
        raise NotImplementedError  # noqa: E704

    def _n_atoms_by_id(self, ids: list[str]) -> dict:
        raise NotImplementedError  # noqa: E704

    def _count_configurations(self, spec: dict) -> int:
        raise NotImplementedError  # noqa: E704

    # calculations
    def _current_calculations(self, pairs: set) -> dict:
        raise NotImplementedError  # noqa: E704

    def _write_calculations(self, inserts: list, replaces: list, now) -> None:
        raise NotImplementedError  # noqa: E704

    def _calculation_by_id(self, calc_id: str) -> dict | None:
        raise NotImplementedError  # noqa: E704

    def _count_calculations(self, spec: dict) -> int:
        raise NotImplementedError  # noqa: E704

    def _median_energy(self, settings_hash: str) -> tuple[int, float | None]:
        raise NotImplementedError  # noqa: E704

    def _superseded(self, config_id: str | None) -> list[dict]:
        raise NotImplementedError  # noqa: E704

    # configurations joined with calculations, oldest first
    def _joined(self, cfg_spec: dict, calc_spec: dict | None, limit=None, arrays=True):
        raise NotImplementedError  # noqa: E704

    # models
    def _insert_model(self, rec: dict) -> None:
        raise NotImplementedError  # noqa: E704

    def _activate_model(self, model_id: str, calculator) -> None:
        raise NotImplementedError  # noqa: E704

    def _find_models(self, active=None, calculator=None, model_id=None) -> list[dict]:
        raise NotImplementedError  # noqa: E704

    # statistics
    def _counts(self) -> dict:
        raise NotImplementedError  # noqa: E704

    def _fireworks_counts(self) -> tuple[Counter, int]:
        raise NotImplementedError  # noqa: E704

    def _location(self) -> dict:
        return {}  # noqa: E704


#: the columns of a :meth:`Store.query` row: configuration, then calculation (None without one)
ROW_KEYS = (
    "config_id",
    "reference",
    "tilt_system",
    "method",
    "parent",
    "source",
    "n_atoms",
    "calc_id",
    "calculator",
    "settings_hash",
    "status",
    "energy",
    "energy_per_atom",
)


def _row(cfg: dict, calc: dict | None, labels: dict) -> dict:
    calc = calc or {}
    return dict(
        zip(
            ROW_KEYS,
            (
                cfg["id"],
                labels.get(cfg["reference"], cfg["reference"]),
                cfg.get("tilt_system"),
                cfg.get("method"),
                cfg.get("parent"),
                cfg.get("source"),
                cfg.get("n_atoms"),
                calc.get("id"),
                calc.get("calculator"),
                calc.get("settings_hash"),
                calc.get("status"),
                calc.get("energy"),
                calc.get("energy_per_atom"),
            ),
        )
    )


# ------------------------------------------------------------------------------- process singleton
_current: Store | None = None
_current_lock = threading.RLock()


def get_store(settings: Settings | None = None) -> Store:
    """The process's one store for ``settings`` (default: :meth:`Settings.load`).

    Asking for a store on different settings closes the previous one first.
    """
    global _current
    with _current_lock:
        settings = settings or Settings.load()
        if _current is not None and _current.is_open and _current.settings.identity() == settings.identity():
            return _current
        if _current is not None:
            _current.close()
            _current = None
        _current = Store.open(settings)
        return _current


def close_store() -> None:
    """Close the process's store (releases the embedded LaunchPad's lock)."""
    global _current
    with _current_lock:
        if _current is not None:
            _current.close()
            _current = None


def get_launchpad(settings: Settings | None = None):
    """A FireWorks LaunchPad on the same store as :func:`get_store`."""
    return get_store(settings).get_launchpad()
