"""The configuration database: references, configurations, calculations and model records.

:func:`get_store` returns the process's one :class:`Store` for the current settings. It connects
one client (the embedded mongomock server or a pymongo client), binds the mongoengine documents
and the FireWorks LaunchPad to it, re-creates indexes, and initialises a fresh database (LaunchPad
reset) automatically.

Every public write method is one unit of work: it validates everything first (so a bad record
changes nothing), writes, and on the embedded store flushes the file atomically before returning.
``with store.batch():`` groups several writes into one flush.
"""

from __future__ import annotations

import threading
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from bson import ObjectId
from bson.errors import InvalidId

from ..errors import PesError
from ..settings import Settings, redact_uri
from . import documents as D
from .keys import reference_key, reference_label, uniqueness_key
from .validation import InvalidRecord, to_plain, validate_launch, validate_result


class DatabaseUnavailable(PesError):
    """The configured MongoDB server cannot be reached or refused the credentials."""


class NotFound(PesError, KeyError):
    """No document with the given id."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0]) if self.args else "not found"


class QueryError(PesError, ValueError):
    """An unknown query field or a malformed filter value."""


@dataclass
class IngestReport:
    """Outcome of :meth:`Store.save_configurations`: ``ids`` in input order."""

    new: int = 0
    existing: int = 0
    ids: list[str] = field(default_factory=list)


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


def _oid(value, what: str) -> ObjectId:
    if isinstance(value, ObjectId):
        return value
    try:
        return ObjectId(str(value))
    except (InvalidId, TypeError):
        raise NotFound(f"{what} id {value!r} is not a valid id (24 hexadecimal digits)") from None


def _validate(doc, where: str, clean: bool = True) -> None:
    """mongoengine's schema check, reported as InvalidRecord (one line, names the fields)."""
    from mongoengine import ValidationError

    try:
        doc.validate(clean=clean)
    except ValidationError as exc:
        fields = ", ".join(f"{k}: {v}" for k, v in (exc.to_dict() or {}).items()) or str(exc)
        raise InvalidRecord(f"{where}: {fields}") from None


def _str_or_none(v):
    if v is None:
        return None
    if isinstance(v, (list, tuple)):
        return None
    return str(v)


# ------------------------------------------------------------------------------- connection
def _connect_mongo(settings: Settings):
    import pymongo
    from pymongo.errors import ConfigurationError, OperationFailure, PyMongoError, ServerSelectionTimeoutError

    timeout_ms = int(settings.server_timeout_s * 1000)
    kwargs = dict(serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms, socketTimeoutMS=max(timeout_ms, 30000))
    where = redact_uri(settings.mongo_uri)
    try:
        if settings.uri:
            if settings.tls:
                kwargs["tls"] = True
            client = pymongo.MongoClient(settings.uri, **kwargs)
        else:
            extra = {}
            if settings.username:
                extra.update(username=settings.username, password=settings.password,
                             authSource=settings.auth_source or settings.database)
            if settings.tls:
                extra["tls"] = True
                if settings.tls_ca_file:
                    extra["tlsCAFile"] = settings.tls_ca_file
            client = pymongo.MongoClient(settings.host, settings.port, **extra, **kwargs)
    except (ConfigurationError, ValueError, TypeError) as exc:
        raise DatabaseUnavailable(f"invalid MongoDB settings for {where}: {str(exc).splitlines()[0]}") from None
    try:
        client.admin.command("ping")
        client[settings.database].list_collection_names()  # checks the credentials on this database
    except ServerSelectionTimeoutError as exc:
        client.close()
        reason = str(exc).split(",")[0].split("Timeout:")[0].strip()[:160]
        raise DatabaseUnavailable(
            f"cannot reach MongoDB at {where} within {settings.server_timeout_s:g} s ({reason}); start the "
            "server (docker compose up -d), check PES_MONGO_URI or config.yaml, or unset them to use the embedded store"
        ) from None
    except OperationFailure as exc:
        client.close()
        raise DatabaseUnavailable(
            f"MongoDB at {where} refused access to database {settings.database!r}: {exc.details.get('errmsg', exc) if exc.details else exc}"
        ) from None
    except PyMongoError as exc:
        client.close()
        raise DatabaseUnavailable(f"MongoDB at {where}: {str(exc).splitlines()[0][:200]}") from None
    return client


# ------------------------------------------------------------------------------- the store
class Store:
    """References, configurations, calculations and models, on MongoDB or the embedded store."""

    def __init__(self, settings: Settings, client, server=None):
        self.settings = settings
        self.client = client
        self.server = server  # EmbeddedServer or None
        self.db = client[settings.database]
        self._batch_depth = 0
        self._lock = threading.RLock()
        self._references: dict[ObjectId, object] = {}
        self._open = True
        self.initialised = False  # True when opening found a fresh database and reset it

    # ---------------------------------------------------------------- lifecycle
    @classmethod
    def open(cls, settings: Settings | None = None) -> "Store":
        settings = settings or Settings.load()
        if settings.embedded:
            from .embedded import open_embedded
            from .launchpad import install_shared_client

            server = open_embedded(settings.store_path, settings.lock_path, settings.lock_timeout_s)
            client = server.client
            install_shared_client(client)
        else:
            server, client = None, _connect_mongo(settings)
        store = cls(settings, client, server)
        try:
            store._setup()
        except BaseException:
            store.close(flush=False)
            raise
        return store

    def _setup(self) -> None:
        import mongoengine

        client = self.client
        mongoengine.disconnect(D.ALIAS)
        mongoengine.register_connection(
            D.ALIAS, db=self.settings.database, uuidRepresentation="standard", mongo_client_class=lambda **_: client
        )
        for doc in D.DOCUMENTS:
            doc.ensure_indexes()
        lp = self.get_launchpad()
        if self.db.fw_id_assigner.count_documents({}) == 0 and self.db.workflows.count_documents({}) == 0:
            lp.reset("", require_password=False)  # a fresh database: FireWorks needs its id counters
            self.initialised = True
        elif self.embedded:
            lp.tuneup()  # indexes are not kept in the file
        self.flush()

    @property
    def embedded(self) -> bool:
        return self.server is not None

    @property
    def is_open(self) -> bool:
        if not self._open:
            return False
        return self.server.is_open if self.server is not None else True

    def close(self, flush: bool = True) -> None:
        """Flush and release the store (the embedded lock is freed)."""
        if not self._open:
            return
        self._open = False
        import mongoengine

        if self.server is None:
            mongoengine.disconnect(D.ALIAS)  # closes the pymongo client too
        else:
            _forget_mongoengine()
        if self.server is not None:
            from .launchpad import uninstall_shared_client

            uninstall_shared_client()
            self.server.close(flush=flush)
        else:
            self.client.close()

    def flush(self) -> None:
        """Make every write so far durable (embedded store: atomic file write; MongoDB: no-op)."""
        if self.server is not None:
            self.server.flush()

    @contextmanager
    def batch(self):
        """Group several writes into one flush at the end of the block."""
        with self._lock:
            self._batch_depth += 1
            try:
                yield self
            finally:
                self._batch_depth -= 1
                if self._batch_depth == 0:
                    self.flush()

    def _done(self) -> None:
        if self._batch_depth == 0:
            self.flush()

    def get_launchpad(self):
        """A FireWorks LaunchPad on this store's client (flushes the embedded store after each change)."""
        from .launchpad import PesLaunchPad

        s = self.settings
        kwargs = dict(name=s.database, strm_lvl="WARNING")
        if s.embedded:
            kwargs["host"] = "localhost"
        elif s.uri:
            kwargs.update(host=s.uri, uri_mode=True,
                          mongoclient_kwargs={"serverSelectionTimeoutMS": int(s.server_timeout_s * 1000)})
        else:
            kwargs.update(host=s.host, port=s.port, username=s.username, password=s.password,
                          authsource=s.auth_source or (s.database if s.username else None),
                          mongoclient_kwargs={"serverSelectionTimeoutMS": int(s.server_timeout_s * 1000),
                                              **({"tls": True} if s.tls else {}),
                                              **({"tlsCAFile": s.tls_ca_file} if s.tls_ca_file else {})})
        return PesLaunchPad.on_client(self.client, on_change=self.flush if self.embedded else None, **kwargs)

    # ---------------------------------------------------------------- collections
    @property
    def _references_col(self):
        return D.Reference._get_collection()

    @property
    def _configs(self):
        return D.Configuration._get_collection()

    @property
    def _calcs(self):
        return D.Calculation._get_collection()

    @property
    def _models(self):
        return D.ModelRecord._get_collection()

    # ---------------------------------------------------------------- references
    def _reference_id(self, reference) -> ObjectId:
        key = reference_key(reference)
        found = self._references_col.find_one({"key": key}, {"_id": 1})
        if found:
            return found["_id"]
        doc = D.Reference(
            key=key,
            label=reference_label(reference),
            formula=reference.perovskite.formula,
            species=list(reference.perovskite.species),
            lattice_parameter=float(reference.perovskite.lattice_parameter),
            supercell=np.asarray(reference.matrix, dtype=int).tolist(),
            n_atoms=int(reference.n_atoms),
        )
        _validate(doc, "reference")
        son = doc.to_mongo().to_dict()
        res = self._references_col.find_one_and_update(
            {"key": key}, {"$setOnInsert": son}, upsert=True, projection={"_id": 1}, return_document=True
        )
        return res["_id"]

    def save_reference(self, reference) -> str:
        """Store a :class:`ReferenceSupercell` (idempotent); returns its id."""
        oid = self._reference_id(reference)
        self._done()
        return str(oid)

    def get_reference(self, ref_id):
        """The :class:`ReferenceSupercell` stored under ``ref_id``."""
        oid = _oid(ref_id, "reference")
        if oid not in self._references:
            d = self._references_col.find_one({"_id": oid})
            if d is None:
                raise NotFound(f"no reference with id {ref_id}")
            from ..structure import Perovskite, ReferenceSupercell

            self._references[oid] = ReferenceSupercell(
                Perovskite(tuple(d["species"]), d["lattice_parameter"]), np.array(d["supercell"])
            )
        return self._references[oid]

    def list_references(self) -> list[dict]:
        out = []
        for d in self._references_col.find({}, {"key": 0}).sort("created", 1):
            d["id"] = str(d.pop("_id"))
            d["n_configurations"] = self._configs.count_documents({"reference": ObjectId(d["id"])})
            out.append(d)
        return out

    # ---------------------------------------------------------------- configurations
    def _config_son(self, config, ref_oid: ObjectId, source: str | None) -> dict:
        from ..structure import Configuration

        if not isinstance(config, Configuration):
            raise InvalidRecord(
                f"save_configurations expects perovskite_pes.structure.Configuration objects; got {type(config).__name__}"
            )
        key, method = uniqueness_key(config)
        tags = to_plain(config.tags, "configuration tags")
        doc = D.Configuration(
            key=key,
            key_method=method,
            reference=ref_oid,
            strain=config.strain.tolist(),
            n_atoms=config.reference.n_atoms,
            tags=tags,
            tilt_system=_str_or_none(tags.get("tilt_system")),
            method=_str_or_none(tags.get("method")),
            parent=_str_or_none(tags.get("parent")),
            source=source,
        )
        # the (N, 3) arrays were checked by Configuration (shape, finite); adding them after the
        # schema check skips mongoengine's per-element conversion, the slow part of an ingest
        _validate(doc, "configuration", clean=False)
        son = doc.to_mongo().to_dict()
        son["displacements"] = config.displacements.tolist()
        son["structure"] = config.to_structure().as_dict(verbosity=0)
        return son

    def save_configurations(self, configs, source: str | None = None) -> IngestReport:
        """Store configurations; one that is already stored (same uniqueness key) is not duplicated.

        ``ids`` follows the input order (an existing configuration's id for the ones already there).
        """
        configs = list(configs)
        if source is not None and not isinstance(source, str):
            raise InvalidRecord(f"source must be a string; got {type(source).__name__}")
        with self._lock:
            refs: dict = {}
            for i, c in enumerate(configs):
                ref = getattr(c, "reference", None)
                if ref is None:
                    raise InvalidRecord(f"configuration {i} has no reference supercell")
                refs.setdefault(reference_key(ref), ref)
            # validate every configuration before writing anything
            placeholder = ObjectId()
            prepared = [self._config_son(c, placeholder, source) for c in configs]
            ref_oids = {h: self._reference_id(r) for h, r in refs.items()}
            for son, c in zip(prepared, configs):
                son["reference"] = ref_oids[reference_key(c.reference)]
            report = self._insert_unique(self._configs, prepared)
            self._done()
            return report

    def _insert_unique(self, col, sons: list[dict]) -> IngestReport:
        from pymongo.errors import BulkWriteError

        keys = [s["key"] for s in sons]
        existing = {d["key"]: d["_id"] for d in col.find({"key": {"$in": list(set(keys))}}, {"key": 1})}
        ids: dict[str, ObjectId] = dict(existing)
        fresh = []
        for s in sons:
            if s["key"] not in ids:
                s["_id"] = ObjectId()
                ids[s["key"]] = s["_id"]
                fresh.append(s)
        new = len(fresh)
        if fresh:
            try:
                col.insert_many(fresh, ordered=False)
            except BulkWriteError as exc:  # another writer inserted some of them meanwhile (MongoDB)
                dup = [e for e in exc.details.get("writeErrors", []) if e.get("code") == 11000]
                if len(dup) != len(exc.details.get("writeErrors", [])):
                    raise
                lost = {fresh[e["index"]]["key"] for e in dup}
                for d in col.find({"key": {"$in": list(lost)}}, {"key": 1}):
                    ids[d["key"]] = d["_id"]
                new -= len(lost)
        return IngestReport(new=new, existing=len(keys) - new, ids=[str(ids[k]) for k in keys])

    def save_configuration(self, config, source: str | None = None) -> str:
        """Store one configuration (idempotent); returns its id."""
        return self.save_configurations([config], source=source).ids[0]

    def find_configuration(self, config) -> str | None:
        """Id of the stored configuration with the same uniqueness key, or None."""
        key, _ = uniqueness_key(config)
        d = self._configs.find_one({"key": key}, {"_id": 1})
        return None if d is None else str(d["_id"])

    def _to_configuration(self, d: dict):
        from ..structure import Configuration

        return Configuration(
            self.get_reference(d["reference"]), np.array(d["displacements"], dtype=float),
            np.array(d["strain"], dtype=float), dict(d.get("tags") or {}),
        )

    def get_configuration(self, config_id):
        """The :class:`perovskite_pes.structure.Configuration` stored under ``config_id``."""
        d = self._configs.find_one({"_id": _oid(config_id, "configuration")})
        if d is None:
            raise NotFound(f"no configuration with id {config_id}")
        return self._to_configuration(d)

    def get_configurations(self, ids) -> list:
        """Several configurations, in the order of ``ids``."""
        oids = [_oid(i, "configuration") for i in ids]
        found = {d["_id"]: d for d in self._configs.find({"_id": {"$in": oids}})}
        missing = [str(o) for o in oids if o not in found]
        if missing:
            raise NotFound(f"no configuration with id {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        return [self._to_configuration(found[o]) for o in oids]

    def count_configurations(self, **filters) -> int:
        return self._configs.count_documents(self._config_query(filters))

    # ---------------------------------------------------------------- calculations
    def _prepare_calculation(self, config_id, result, launch, where="calculation") -> tuple[dict, dict]:
        oid = _oid(config_id, "configuration")
        cfg = self._configs.find_one({"_id": oid}, {"n_atoms": 1})
        if cfg is None:
            raise NotFound(f"{where}: no configuration with id {config_id}")
        fields = validate_result(result, cfg["n_atoms"], where)
        launch = validate_launch(launch)
        big = {k: fields.pop(k) for k in ("forces", "final_structure")}  # validated by validate_result
        doc = D.Calculation(configuration=oid, launch=D.LaunchInfo(**launch) if launch else None, **fields)
        _validate(doc, where)
        son = doc.to_mongo().to_dict()
        son.update(big)
        son.pop("created", None)
        for k in ("stress", "energy", "energy_per_atom", "error", "version", "output_dir", "wall_time", "launch"):
            son.setdefault(k, None)  # an update replaces every field, stale values included
        return {"configuration": oid, "settings_hash": fields["settings_hash"]}, son

    def save_calculation(self, config_id: str, result, launch: dict | None = None) -> str:
        """Store a calculation result for a stored configuration; returns the calculation id.

        Idempotent on (configuration, settings_hash): storing again updates the same document.
        ``result`` is a CalcResult (``.to_dict()``) or a dict with its keys; ``launch`` holds
        provenance (fw_id, launch_id, host, launch_dir, time). Bad input raises InvalidRecord and
        stores nothing.
        """
        with self._lock:
            flt, son = self._prepare_calculation(config_id, result, launch)
            son["updated"] = D.utcnow()
            res = self._calcs.find_one_and_update(
                flt, {"$set": son, "$setOnInsert": {"created": son["updated"]}},
                upsert=True, projection={"_id": 1}, return_document=True,
            )
            self._done()
            return str(res["_id"])

    def save_calculations(self, items) -> list[str]:
        """Several ``(config_id, result, launch)`` at once: all validated first, one flush."""
        with self._lock:
            prepared = [
                self._prepare_calculation(cid, res, launch, where=f"calculation {i}")
                for i, (cid, res, launch) in enumerate(items)
            ]
            now = D.utcnow()
            ids = []
            with self.batch():
                for flt, son in prepared:
                    son["updated"] = now
                    res = self._calcs.find_one_and_update(
                        flt, {"$set": son, "$setOnInsert": {"created": now}},
                        upsert=True, projection={"_id": 1}, return_document=True,
                    )
                    ids.append(str(res["_id"]))
            return ids

    def has_calculation(self, config_id, settings_hash: str, status: str | None = "completed") -> bool:
        """Whether ``config_id`` has a calculation with this setup (and status; None = any)."""
        q = {"configuration": _oid(config_id, "configuration"), "settings_hash": settings_hash}
        if status is not None:
            q["status"] = status
        return self._calcs.count_documents(q, limit=1) > 0

    def get_calculation(self, calc_id) -> dict:
        """One calculation as a dict (``id``, ``config_id`` and the stored fields)."""
        d = self._calcs.find_one({"_id": _oid(calc_id, "calculation")})
        if d is None:
            raise NotFound(f"no calculation with id {calc_id}")
        return _calc_dict(d)

    def _calc_query(self, calculator=None, settings_hash=None, status="completed") -> dict:
        q: dict = {}
        if calculator is not None:
            q["calculator"] = calculator
        if settings_hash is not None:
            q["settings_hash"] = settings_hash
        if status is not None:
            q["status"] = status
        return q

    def count_calculations(self, calculator=None, settings_hash=None, status="completed") -> int:
        return self._calcs.count_documents(self._calc_query(calculator, settings_hash, status))

    def training_data(self, calculator: str | None = None, settings_hash: str | None = None,
                      status: str = "completed") -> list[dict]:
        """Calculations with their configurations, for training energy models.

        Each item: ``dict(config=Configuration, energy, forces (N,3) array, stress (6,) array or None,
        calc_id, calculator, settings_hash, config_id)``, oldest calculation first.
        """
        calcs = list(self._calcs.find(self._calc_query(calculator, settings_hash, status)).sort("created", 1))
        configs = {d["_id"]: d for d in self._configs.find({"_id": {"$in": list({c["configuration"] for c in calcs})}})}
        out = []
        for c in calcs:
            cfg = configs.get(c["configuration"])
            if cfg is None:
                continue
            out.append(
                dict(
                    config=self._to_configuration(cfg),
                    energy=c.get("energy"),
                    forces=None if c.get("forces") is None else np.array(c["forces"], dtype=float),
                    stress=None if c.get("stress") is None else np.array(c["stress"], dtype=float),
                    calc_id=str(c["_id"]),
                    config_id=str(cfg["_id"]),
                    calculator=c["calculator"],
                    settings_hash=c["settings_hash"],
                )
            )
        return out

    # ---------------------------------------------------------------- models
    def register_model(self, name: str, path: str, calculator: str | None, settings_hash: str | None,
                       metrics: dict, hyperparameters: dict, calc_ids: list[str], activate: bool = True) -> str:
        """Record a trained model; with ``activate`` it becomes the active model for its calculator."""
        if not name or not isinstance(name, str):
            raise InvalidRecord("a model needs a name")
        doc = D.ModelRecord(
            name=name, path=str(path), calculator=calculator, settings_hash=settings_hash,
            metrics=to_plain(metrics or {}, "model metrics"),
            hyperparameters=to_plain(hyperparameters or {}, "model hyperparameters"),
            calc_ids=[str(c) for c in (calc_ids or [])], n_train=len(calc_ids or []), active=False,
        )
        _validate(doc, "model")
        son = doc.to_mongo().to_dict()
        with self._lock, self.batch():
            oid = self._models.insert_one(son).inserted_id
            if activate:
                self._activate(oid, calculator)
        return str(oid)

    def _activate(self, oid: ObjectId, calculator) -> None:
        self._models.update_many({"calculator": calculator, "active": True, "_id": {"$ne": oid}}, {"$set": {"active": False}})
        self._models.update_one({"_id": oid}, {"$set": {"active": True}})

    def set_active_model(self, model_id) -> None:
        oid = _oid(model_id, "model")
        d = self._models.find_one({"_id": oid}, {"calculator": 1})
        if d is None:
            raise NotFound(f"no model with id {model_id}")
        with self._lock, self.batch():
            self._activate(oid, d.get("calculator"))

    def active_model(self, calculator: str | None = None) -> dict | None:
        """The active model (for ``calculator``, or the newest active one of any calculator)."""
        q = {"active": True}
        if calculator is not None:
            q["calculator"] = calculator
        docs = list(self._models.find(q).sort("created", -1).limit(1))
        return _model_dict(docs[0]) if docs else None

    def list_models(self) -> list[dict]:
        return [_model_dict(d) for d in self._models.find({}).sort("created", 1)]

    # ---------------------------------------------------------------- queries
    def _reference_oids(self, value) -> list[ObjectId]:
        value = str(value)
        q = [{"label": value}, {"formula": value}]
        if ObjectId.is_valid(value):
            q.append({"_id": ObjectId(value)})
        return [d["_id"] for d in self._references_col.find({"$or": q}, {"_id": 1})]

    def _config_query(self, filters: dict) -> dict:
        unknown = sorted(set(filters) - set(CONFIG_FILTERS))
        if unknown:
            raise QueryError(f"unknown configuration field(s) {', '.join(unknown)}; known: {', '.join(CONFIG_FILTERS)}")
        q: dict = {}
        for k, v in filters.items():
            if v is None:
                continue
            if k == "reference":
                q["reference"] = {"$in": self._reference_oids(v)}
            elif k == "config_id":
                q["_id"] = _oid(v, "configuration")
            else:
                q[k] = str(v)
        return q

    def query(self, filters: dict | None = None, limit: int | None = None, **kwargs) -> list[dict]:
        """Rows of configurations joined with their calculations.

        Filters (see :data:`QUERY_FIELDS`): on configurations ``reference``, ``tilt_system``,
        ``method``, ``parent``, ``source``, ``config_id``; on calculations ``calculator``,
        ``settings_hash``, ``status``, ``emin``/``emax`` (eV/atom). Without calculation filters every
        matching configuration appears, with one row per calculation (or one row with empty
        calculation fields); with any, only matching calculations appear. Unknown fields raise
        QueryError.
        """
        rows = []
        for cfg, calc in self.iter_records(filters, limit=limit, **kwargs):
            rows.append(_row(cfg, calc, self._labels()))
        return rows

    def _labels(self) -> dict:
        return {d["_id"]: d["label"] for d in self._references_col.find({}, {"label": 1})}

    def _split_filters(self, filters: dict | None, kwargs: dict) -> tuple[dict, dict]:
        filters = {**(filters or {}), **kwargs}
        filters = {k: v for k, v in filters.items() if v is not None}
        unknown = sorted(set(filters) - set(QUERY_FIELDS))
        if unknown:
            raise QueryError(f"unknown query field(s) {', '.join(unknown)}; known fields: {', '.join(QUERY_FIELDS)}")
        cfg_f = {k: v for k, v in filters.items() if k in CONFIG_FILTERS}
        calc_f = {k: v for k, v in filters.items() if k in CALC_FILTERS}
        cq: dict = {}
        for k in ("calculator", "settings_hash", "status"):
            if k in calc_f:
                cq[k] = str(calc_f[k])
        if "status" in cq and cq["status"] not in ("completed", "failed"):
            raise QueryError(f"status must be completed or failed; got {cq['status']!r}")
        window = {}
        for k, op in (("emin", "$gte"), ("emax", "$lte")):
            if k in calc_f:
                try:
                    window[op] = float(calc_f[k])
                except (TypeError, ValueError):
                    raise QueryError(f"{k} must be a number (eV/atom); got {calc_f[k]!r}") from None
        if window:
            if "$gte" in window and "$lte" in window and window["$gte"] > window["$lte"]:
                raise QueryError(f"empty energy window: emin {window['$gte']} > emax {window['$lte']}")
            cq["energy_per_atom"] = window
        return self._config_query(cfg_f), (cq if calc_f else None)

    def iter_records(self, filters: dict | None = None, limit: int | None = None, **kwargs):
        """Yield ``(configuration document, calculation document or None)`` pairs (raw dicts)."""
        config_q, calc_q = self._split_filters(filters, kwargs)
        n = 0
        if calc_q is None:
            configs = list(self._configs.find(config_q).sort("created", 1))
            by_cfg: dict = {}
            for c in self._calcs.find({"configuration": {"$in": [d["_id"] for d in configs]}}).sort("created", 1):
                by_cfg.setdefault(c["configuration"], []).append(c)
            for cfg in configs:
                for calc in by_cfg.get(cfg["_id"], [None]):
                    if limit is not None and n >= limit:
                        return
                    n += 1
                    yield cfg, calc
        else:
            if config_q:
                ids = [d["_id"] for d in self._configs.find(config_q, {"_id": 1})]
                calc_q = {**calc_q, "configuration": {"$in": ids}}
            calcs = list(self._calcs.find(calc_q).sort("created", 1))
            if limit is not None:
                calcs = calcs[:limit]
            configs = {d["_id"]: d for d in self._configs.find({"_id": {"$in": list({c["configuration"] for c in calcs})}})}
            for calc in calcs:
                if calc["configuration"] in configs:
                    yield configs[calc["configuration"]], calc

    def records(self, filters: dict | None = None, limit: int | None = None, **kwargs):
        """Like :meth:`iter_records`, as ``(Configuration, calculation dict or None, config_id)``."""
        for cfg, calc in self.iter_records(filters, limit=limit, **kwargs):
            yield self._to_configuration(cfg), (None if calc is None else _calc_dict(calc)), str(cfg["_id"])

    def stats(self) -> dict:
        """Counts for people and scripts: what the store holds and where it lives."""
        configs = list(self._configs.find({}, {"method": 1, "tilt_system": 1, "reference": 1}))
        calcs = list(self._calcs.find({}, {"calculator": 1, "settings_hash": 1, "status": 1}))
        labels = self._labels()
        per_setup = Counter((c["calculator"], c["settings_hash"], c["status"]) for c in calcs)
        fw_states = Counter(d.get("state") for d in self.db.fireworks.find({}, {"state": 1}))
        out = {
            "store": self.settings.describe(),
            "embedded": self.embedded,
            "database": self.settings.database,
            "references": {labels.get(k, str(k)): v for k, v in Counter(c["reference"] for c in configs).items()},
            "configurations": len(configs),
            "by_method": dict(Counter(c.get("method") or "-" for c in configs).most_common()),
            "by_tilt_system": dict(Counter(c.get("tilt_system") or "-" for c in configs).most_common()),
            "calculations": len(calcs),
            "by_calculator": [
                {"calculator": k[0], "settings_hash": k[1], "status": k[2], "count": v}
                for k, v in sorted(per_setup.items())
            ],
            "models": self._models.count_documents({}),
            "active_models": [m["name"] for m in (_model_dict(d) for d in self._models.find({"active": True}))],
            "fireworks": dict(fw_states),
            "workflows": self.db.workflows.count_documents({}),
        }
        if self.embedded:
            p = self.server.path
            out["store_file"] = str(p)
            out["store_file_bytes"] = p.stat().st_size if p.exists() else 0
        return out


def _calc_dict(d: dict) -> dict:
    out = {k: v for k, v in d.items() if k not in ("_id", "configuration")}
    out["id"] = str(d["_id"])
    out["config_id"] = str(d["configuration"])
    return out


def _model_dict(d: dict) -> dict:
    out = {k: v for k, v in d.items() if k != "_id"}
    out["id"] = str(d["_id"])
    return out


def _row(cfg: dict, calc: dict | None, labels: dict) -> dict:
    return {
        "config_id": str(cfg["_id"]),
        "reference": labels.get(cfg["reference"], str(cfg["reference"])),
        "tilt_system": cfg.get("tilt_system"),
        "method": cfg.get("method"),
        "parent": cfg.get("parent"),
        "source": cfg.get("source"),
        "n_atoms": cfg.get("n_atoms"),
        "calc_id": None if calc is None else str(calc["_id"]),
        "calculator": None if calc is None else calc.get("calculator"),
        "settings_hash": None if calc is None else calc.get("settings_hash"),
        "status": None if calc is None else calc.get("status"),
        "energy": None if calc is None else calc.get("energy"),
        "energy_per_atom": None if calc is None else calc.get("energy_per_atom"),
    }


def _forget_mongoengine() -> None:
    """Drop mongoengine's registration without closing the shared embedded client."""
    from mongoengine import connection as mc

    mc._connections.pop(D.ALIAS, None)
    mc.disconnect(D.ALIAS)


# ------------------------------------------------------------------------------- process singleton
_current: Store | None = None
_current_lock = threading.RLock()


def get_store(settings: Settings | None = None) -> Store:
    """The process's one store for ``settings`` (default: :meth:`Settings.load`).

    Asking for a store on different settings closes (flushes) the previous one first.
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
    """Flush and close the process's store (releases the embedded store's lock)."""
    global _current
    with _current_lock:
        if _current is not None:
            _current.close()
            _current = None


def get_launchpad(settings: Settings | None = None):
    """A FireWorks LaunchPad on the same store (and the same client) as :func:`get_store`."""
    return get_store(settings).get_launchpad()

