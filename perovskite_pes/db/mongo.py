"""The production store: MongoDB (pymongo), or any client with its API (mongomock in tests).

Collections (in the same database as FireWorks' ``fireworks``/``launches``/``workflows``), with the
schema and indexes of :mod:`perovskite_pes.db.documents`: ``references``, ``configurations``,
``calculations`` (unique on configuration and settings hash), ``superseded_calculations`` (results
replaced by newer ones, with provenance) and ``models``. Arrays are stored as lists, so the
documents stay readable by any MongoDB tool; each configuration also carries its pymatgen structure.

The LaunchPad shares the client, so ``lpad`` and ``pes`` see the same data; any number of workers
can use it at once.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
from bson import ObjectId

from . import documents as D
from .errors import CalculationConflict, DatabaseUnavailable
from .store import Store, check_id

log = logging.getLogger(__name__)

SUPERSEDED = "superseded_calculations"


# ------------------------------------------------------------------------------- documents <-> records
def _arr(v, cols: int | None = None):
    if v is None:
        return None
    a = np.array(v, dtype=float)
    return a.reshape(-1, cols) if cols else a


def reference_record(d: dict) -> dict:
    return {
        "id": str(d["_id"]),
        "key": d["key"],
        "label": d["label"],
        "prototype": d.get("prototype", "cubic-perovskite-Pm-3m"),
        "formula": d["formula"],
        "species": list(d["species"]),
        "lattice_parameter": float(d["lattice_parameter"]),
        "supercell": [list(map(int, row)) for row in d["supercell"]],
        "n_atoms": int(d["n_atoms"]),
        "created": d.get("created"),
    }


def config_record(d: dict, full: bool = True) -> dict:
    """A configuration record (the same keys as the SQLite store's): light, or full with arrays and tags."""
    rec = {
        "id": str(d["_id"]),
        "reference": str(d["reference"]),
        "n_atoms": d.get("n_atoms"),
        "tilt_system": d.get("tilt_system"),
        "method": d.get("method"),
        "parent": d.get("parent"),
        "source": d.get("source"),
    }
    if full:
        rec.update(
            key=d.get("key"),
            key_method=d.get("key_method"),
            tags=dict(d.get("tags") or {}),
            created=d.get("created"),
            displacements=_arr(d["displacements"], 3),
            strain=_arr(d["strain"]),
        )
    return rec


CALC_LIGHT = (
    "calculator",
    "version",
    "settings_hash",
    "status",
    "error",
    "energy",
    "energy_per_atom",
    "n_atoms",
    "wall_time",
    "output_dir",
)
CALC_KEYS = CALC_LIGHT + ("settings", "launch", "created", "updated")


def calc_record(d: dict, full: bool = True) -> dict:
    """A calculation record (the same keys as the SQLite store's): light, or full with arrays and provenance."""
    rec = {"id": str(d["_id"]), "config_id": str(d["configuration"])}
    rec.update({k: d.get(k) for k in CALC_LIGHT})
    if full:
        rec.update({k: d.get(k) for k in ("launch", "created", "updated")})
        rec.update(
            settings=d.get("settings") or {},
            forces=_arr(d.get("forces"), 3),
            stress=_arr(d.get("stress")),
            final_structure=d.get("final_structure"),
        )
    return rec


def model_record(d: dict) -> dict:
    out = {
        k: d.get(k)
        for k in (
            "name",
            "path",
            "calculator",
            "settings_hash",
            "metrics",
            "hyperparameters",
            "calc_ids",
            "n_train",
            "created",
        )
    }
    out.update(id=str(d["_id"]), active=bool(d.get("active")))
    return out


def _calc_doc(r: dict) -> dict:
    doc = {k: r.get(k) for k in CALC_KEYS}
    doc.update(
        _id=ObjectId(r["id"]),
        configuration=ObjectId(r["config_id"]),
        forces=None if r.get("forces") is None else np.asarray(r["forces"]).tolist(),
        stress=None if r.get("stress") is None else np.asarray(r["stress"]).tolist(),
        final_structure=r.get("final_structure"),
    )
    return doc


# ------------------------------------------------------------------------------- connection
def _connect_mongo(settings):
    import pymongo
    from pymongo.errors import ConfigurationError, OperationFailure, PyMongoError, ServerSelectionTimeoutError

    timeout_ms = int(settings.server_timeout_s * 1000)
    kwargs = dict(
        serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms, socketTimeoutMS=max(timeout_ms, 30000)
    )
    where = settings.redact(settings.mongo_uri)
    try:
        if settings.uri:
            if settings.tls:
                kwargs["tls"] = True
            client = pymongo.MongoClient(settings.uri, **kwargs)
        else:
            extra = {}
            if settings.username:
                extra.update(
                    username=settings.username,
                    password=settings.password,
                    authSource=settings.auth_source or settings.database,
                )
            if settings.tls:
                extra["tls"] = True
                if settings.tls_ca_file:
                    extra["tlsCAFile"] = settings.tls_ca_file
            client = pymongo.MongoClient(settings.host, settings.port, **extra, **kwargs)
    except (ConfigurationError, ValueError, TypeError) as exc:
        raise DatabaseUnavailable(
            settings.redact(f"invalid MongoDB settings for {where}: {str(exc).splitlines()[0]}")
        ) from None
    try:
        client.admin.command("ping")
        client[settings.database].list_collection_names()  # checks the credentials on this database
    except ServerSelectionTimeoutError as exc:
        client.close()
        reason = str(exc).split(",")[0].split("Timeout:")[0].strip()[:160]
        raise DatabaseUnavailable(
            settings.redact(
                f"cannot reach MongoDB at {where} within {settings.server_timeout_s:g} s ({reason}); start the "
                "server (docker compose up -d), check PES_MONGO_URI or config.yaml, "
                "or unset them to use the embedded store"
            )
        ) from None
    except OperationFailure as exc:
        client.close()
        detail = exc.details.get("errmsg", exc) if exc.details else exc
        raise DatabaseUnavailable(
            settings.redact(f"MongoDB at {where} refused access to database {settings.database!r}: {detail}")
        ) from None
    except PyMongoError as exc:
        client.close()
        raise DatabaseUnavailable(settings.redact(f"MongoDB at {where}: {str(exc).splitlines()[0][:200]}")) from None
    return client


# ------------------------------------------------------------------------------- the store
class MongoStore(Store):
    """The Store API on a MongoDB database (pymongo client, or mongomock's in tests)."""

    backend = "mongodb"

    def __init__(self, settings, client):
        super().__init__(settings)
        self.client = client
        self.db = client[settings.database]
        self._open = True

    @classmethod
    def connect(cls, settings) -> MongoStore:
        """Connect to the configured server (an unreachable one is an error within server_timeout_s)."""
        return cls.on_client(settings, _connect_mongo(settings))

    @classmethod
    def on_client(cls, settings, client) -> MongoStore:
        """The store on an existing client (a mongomock client in tests)."""
        store = cls(settings, client)
        try:
            store._setup()
        except BaseException:
            store.close()
            raise
        return store

    def _setup(self) -> None:
        import mongoengine

        from .launchpad import prepare_launchpad

        client = self.client
        mongoengine.disconnect(D.ALIAS)
        mongoengine.register_connection(
            D.ALIAS, db=self.settings.database, uuidRepresentation="standard", mongo_client_class=lambda **_: client
        )
        for doc in D.DOCUMENTS:
            doc.ensure_indexes()
        self._superseded_col.create_index("configuration")
        self.initialised = prepare_launchpad(self.get_launchpad(), self.db)

    @property
    def is_open(self) -> bool:
        return self._open

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        from mongoengine import connection as mc

        mc._connections.pop(D.ALIAS, None)  # the client is closed here, not by mongoengine
        mc.disconnect(D.ALIAS)
        self.client.close()

    def get_launchpad(self):
        """A FireWorks LaunchPad on this store's client."""
        from .launchpad import PesLaunchPad

        s = self.settings
        kwargs = dict(name=s.database, strm_lvl="WARNING")
        timeout = {"serverSelectionTimeoutMS": int(s.server_timeout_s * 1000)}
        if s.uri:
            kwargs.update(host=s.uri, uri_mode=True, mongoclient_kwargs=timeout)
        elif s.host:
            kwargs.update(
                host=s.host,
                port=s.port,
                username=s.username,
                password=s.password,
                authsource=s.auth_source or (s.database if s.username else None),
                mongoclient_kwargs={
                    **timeout,
                    **({"tls": True} if s.tls else {}),
                    **({"tlsCAFile": s.tls_ca_file} if s.tls_ca_file else {}),
                },
            )
        else:
            kwargs["host"] = "localhost"
        return PesLaunchPad.on_client(self.client, **kwargs)

    def backup(self, target, force: bool = False) -> dict:
        from .errors import StoreError

        raise StoreError(
            "pes db backup/restore work on the embedded store; for MongoDB use mongodump and "
            "mongorestore (or pes db export FILE.jsonl, which keeps every record)"
        )

    def restore(self, source, force: bool = False) -> dict:
        return self.backup(source, force)

    # ---------------------------------------------------------------- collections
    @property
    def _references_col(self):
        return self.db[D.Reference._meta["collection"]]

    @property
    def _configs(self):
        return self.db[D.Configuration._meta["collection"]]

    @property
    def _calcs(self):
        return self.db[D.Calculation._meta["collection"]]

    @property
    def _models(self):
        return self.db[D.ModelRecord._meta["collection"]]

    @property
    def _superseded_col(self):
        return self.db[SUPERSEDED]

    # ---------------------------------------------------------------- references
    def _find_reference(self, key: str) -> str | None:
        d = self._references_col.find_one({"key": key}, {"_id": 1})
        return None if d is None else str(d["_id"])

    def _insert_reference(self, rec: dict) -> str:
        son = {k: v for k, v in rec.items() if k != "id"}
        res = self._references_col.find_one_and_update(
            {"key": rec["key"]},
            {"$setOnInsert": {"_id": ObjectId(rec["id"]), **son}},
            upsert=True,
            projection={"_id": 1},
            return_document=True,
        )
        return str(res["_id"])

    def _reference_doc(self, ref_id: str) -> dict | None:
        return self._references_col.find_one({"_id": ObjectId(ref_id)})

    def _list_references(self) -> list[dict]:
        out = []
        for d in self._references_col.find({}).sort("created", 1):
            rec = reference_record(d)
            rec.pop("key")
            rec["n_configurations"] = self._configs.count_documents({"reference": d["_id"]})
            out.append(rec)
        return out

    def _reference_ids_matching(self, value: str) -> list[str]:
        q = [{"label": value}, {"formula": value}]
        if ObjectId.is_valid(value):
            q.append({"_id": ObjectId(value)})
        return [str(d["_id"]) for d in self._references_col.find({"$or": q}, {"_id": 1})]

    def _reference_labels(self) -> dict:
        return {str(d["_id"]): d["label"] for d in self._references_col.find({}, {"label": 1})}

    # ---------------------------------------------------------------- configurations
    def _config_doc(self, r: dict) -> dict:
        from ..structure import Configuration

        config = Configuration(self.get_reference(r["reference"]), r["displacements"], r["strain"])
        doc = {
            k: r[k]
            for k in ("key", "key_method", "n_atoms", "tags", "tilt_system", "method", "parent", "source", "created")
        }
        doc.update(
            _id=ObjectId(r["id"]),
            reference=ObjectId(r["reference"]),
            displacements=np.asarray(r["displacements"]).tolist(),
            strain=np.asarray(r["strain"]).tolist(),
            structure=config.to_structure().as_dict(verbosity=0),
        )
        return doc

    def _ingest_configurations(self, recs: list[dict]) -> tuple[dict, int]:
        from pymongo.errors import BulkWriteError

        col = self._configs
        keys = list({r["key"] for r in recs})
        ids = {d["key"]: str(d["_id"]) for d in col.find({"key": {"$in": keys}}, {"key": 1})}
        fresh = []
        for r in recs:
            if r["key"] not in ids:
                ids[r["key"]] = r["id"]
                fresh.append(self._config_doc(r))
        new = len(fresh)
        if fresh:
            try:
                col.insert_many(fresh, ordered=False)
            except BulkWriteError as exc:  # another writer inserted some of them meanwhile
                errors = exc.details.get("writeErrors", [])
                dup = [e for e in errors if e.get("code") == 11000]
                if len(dup) != len(errors):
                    raise
                lost = [fresh[e["index"]]["key"] for e in dup]
                for d in col.find({"key": {"$in": lost}}, {"key": 1}):
                    ids[d["key"]] = str(d["_id"])
                new -= len(lost)
        return ids, new

    def _config_ids_for_keys(self, keys: list[str]) -> dict:
        return {d["key"]: str(d["_id"]) for d in self._configs.find({"key": {"$in": list(keys)}}, {"key": 1})}

    def _configs_by_id(self, ids: list[str]) -> dict:
        return {
            str(d["_id"]): config_record(d)
            for d in self._configs.find({"_id": {"$in": [ObjectId(i) for i in ids]}}, {"structure": 0})
        }

    def _n_atoms_by_id(self, ids: list[str]) -> dict:
        return {
            str(d["_id"]): d["n_atoms"]
            for d in self._configs.find({"_id": {"$in": [ObjectId(i) for i in ids]}}, {"n_atoms": 1})
        }

    @staticmethod
    def _config_query(spec: dict) -> dict:
        q: dict = {}
        for k, v in spec.items():
            if k == "reference":
                q["reference"] = {"$in": [ObjectId(x) for x in v]}
            elif k == "config_id":
                q["_id"] = ObjectId(v)
            else:
                q[k] = v
        return q

    @staticmethod
    def _calc_query(spec: dict) -> dict:
        q: dict = {}
        window = {}
        for k, v in spec.items():
            if k == "emin":
                window["$gte"] = v
            elif k == "emax":
                window["$lte"] = v
            elif k == "config_id":
                q["configuration"] = ObjectId(v)
            else:
                q[k] = v
        if window:
            q["energy_per_atom"] = window
        return q

    def _count_configurations(self, spec: dict) -> int:
        return self._configs.count_documents(self._config_query(spec))

    # ---------------------------------------------------------------- calculations
    def _current_calculations(self, pairs: set) -> dict:
        out = {}
        q = {"configuration": {"$in": [ObjectId(c) for c in {c for c, _h in pairs}]}}
        for d in self._calcs.find(q):
            rec = calc_record(d)
            if (rec["config_id"], rec["settings_hash"]) in pairs:
                out[(rec["config_id"], rec["settings_hash"])] = rec
        return out

    def _write_calculations(self, inserts: list, replaces: list, now) -> None:
        from pymongo.errors import BulkWriteError, DuplicateKeyError

        try:
            if inserts:
                self._calcs.insert_many([_calc_doc(r) for r in inserts], ordered=True)
        except (BulkWriteError, DuplicateKeyError):
            raise CalculationConflict(
                "another process stored a calculation of one of these configurations with the same settings hash "
                "meanwhile; run the import again to compare with it"
            ) from None
        for old, new, reason in replaces:
            stored = self._calcs.find_one({"_id": ObjectId(old["id"])})
            stored.update(_id=ObjectId(), calc_id=stored["_id"], superseded_at=now, reason=reason)
            self._superseded_col.insert_one(stored)
            self._calcs.replace_one({"_id": ObjectId(old["id"])}, _calc_doc(new))

    def _calculation_by_id(self, calc_id: str) -> dict | None:
        d = self._calcs.find_one({"_id": ObjectId(calc_id)})
        return None if d is None else calc_record(d)

    def _count_calculations(self, spec: dict) -> int:
        return self._calcs.count_documents(self._calc_query(spec))

    def _median_energy(self, settings_hash: str) -> tuple[int, float | None]:
        q = {"settings_hash": settings_hash, "status": "completed", "energy_per_atom": {"$ne": None}}
        n = self._calcs.count_documents(q)
        if not n:
            return 0, None
        d = next(iter(self._calcs.find(q, {"energy_per_atom": 1}).sort("energy_per_atom", 1).skip(n // 2).limit(1)))
        return n, d["energy_per_atom"]

    def _superseded(self, config_id: str | None) -> list[dict]:
        q = {} if config_id is None else {"configuration": ObjectId(config_id)}
        out = []
        for d in self._superseded_col.find(q).sort("superseded_at", 1):
            rec = calc_record(d)
            rec.update(
                id=str(d["calc_id"]),
                calc_id=str(d["calc_id"]),
                superseded_at=d["superseded_at"],
                reason=d.get("reason"),
            )
            out.append(rec)
        return out

    # ---------------------------------------------------------------- joined records
    def _joined(self, cfg_spec: dict, calc_spec: dict | None, limit=None, arrays=True):
        config_q = self._config_query(cfg_spec)
        cfg_proj = {"structure": 0} if arrays else {"structure": 0, "displacements": 0, "strain": 0}
        calc_proj = None if arrays else {"forces": 0, "stress": 0, "final_structure": 0}
        n = 0
        if calc_spec is None:
            configs = list(self._configs.find(config_q, cfg_proj).sort("created", 1))
            by_cfg: dict = {}
            for c in self._calcs.find({"configuration": {"$in": [d["_id"] for d in configs]}}, calc_proj).sort(
                "created", 1
            ):
                by_cfg.setdefault(c["configuration"], []).append(c)
            for cfg in configs:
                rec = config_record(cfg, arrays)
                for calc in by_cfg.get(cfg["_id"], [None]):
                    if limit is not None and n >= limit:
                        return
                    n += 1
                    yield rec, (None if calc is None else calc_record(calc, arrays))
            return
        calc_q = self._calc_query(calc_spec)
        if config_q:
            calc_q["configuration"] = {"$in": [d["_id"] for d in self._configs.find(config_q, {"_id": 1})]}
        cursor = self._calcs.find(calc_q, calc_proj).sort("created", 1)
        calcs = list(cursor.limit(int(limit)) if limit is not None else cursor)
        configs = {
            d["_id"]: config_record(d, arrays)
            for d in self._configs.find({"_id": {"$in": list({c["configuration"] for c in calcs})}}, cfg_proj)
        }
        for calc in calcs:
            if calc["configuration"] in configs:
                yield configs[calc["configuration"]], calc_record(calc, arrays)

    # ---------------------------------------------------------------- models
    def _insert_model(self, rec: dict) -> None:
        doc = {k: v for k, v in rec.items() if k != "id"}
        self._models.insert_one({"_id": ObjectId(rec["id"]), **doc})

    def _activate_model(self, model_id: str, calculator) -> None:
        oid = ObjectId(model_id)
        self._models.update_many(
            {"calculator": calculator, "active": True, "_id": {"$ne": oid}}, {"$set": {"active": False}}
        )
        self._models.update_one({"_id": oid}, {"$set": {"active": True}})

    def _find_models(self, active=None, calculator=None, model_id=None) -> list[dict]:
        q: dict = {}
        if active is not None:
            q["active"] = bool(active)
        if calculator is not None:
            q["calculator"] = calculator
        if model_id is not None:
            q["_id"] = ObjectId(check_id(model_id, "model"))
        return [model_record(d) for d in self._models.find(q).sort("created", 1)]

    # ---------------------------------------------------------------- statistics
    def _counts(self) -> dict:
        by_ref, by_method, by_tilt = Counter(), Counter(), Counter()
        for c in self._configs.find({}, {"method": 1, "tilt_system": 1, "reference": 1, "_id": 0}):
            by_ref[str(c["reference"])] += 1
            by_method[c.get("method")] += 1
            by_tilt[c.get("tilt_system")] += 1
        calcs = Counter(
            (c["calculator"], c["settings_hash"], c["status"])
            for c in self._calcs.find({}, {"calculator": 1, "settings_hash": 1, "status": 1, "_id": 0})
        )
        return {
            "by_reference": dict(by_ref),
            "by_method": dict(by_method),
            "by_tilt_system": dict(by_tilt),
            "calculations": dict(calcs),
            "superseded": self._superseded_col.count_documents({}),
            "models": self._models.count_documents({}),
            "active_models": [d["name"] for d in self._models.find({"active": True}, {"name": 1}).sort("created", 1)],
        }

    def _fireworks_counts(self) -> tuple[Counter, int]:
        return Counter(
            d.get("state") for d in self.db.fireworks.find({}, {"state": 1})
        ), self.db.workflows.count_documents({})
