"""The Store API, the same tests on every engine: SQLite (the embedded store), mongomock, and a real
MongoDB when PES_TEST_MONGO_URI is set."""

import os
import uuid

import numpy as np
import pytest

from perovskite_pes.db import (
    CalculationConflict,
    InvalidRecord,
    NotFound,
    OutlierRecord,
    QueryError,
    Store,
    close_store,
    get_store,
)
from perovskite_pes.settings import Settings
from perovskite_pes.structure import Configuration, Perovskite

N = 40
BACKENDS = ["sqlite", "mongomock"] + (["mongo"] if os.environ.get("PES_TEST_MONGO_URI") else [])


class Engine:
    """Opens (and re-opens) a store of one kind on a fresh PES_HOME or database."""

    def __init__(self, kind, home, monkeypatch):
        self.kind = kind
        env = {"PES_HOME": str(home)}
        if kind == "mongomock":
            import mongomock

            self.client = mongomock.MongoClient()
            env["PES_MONGO_URI"] = "mongodb://localhost:27017/pes_test"
        elif kind == "mongo":
            self.name = f"pes_test_{uuid.uuid4().hex[:12]}"
            monkeypatch.setenv("PES_MONGO_URI", os.environ["PES_TEST_MONGO_URI"])
            monkeypatch.setenv("PES_DATABASE", self.name)
            env.update(PES_MONGO_URI=os.environ["PES_TEST_MONGO_URI"], PES_DATABASE=self.name)
        self.settings = Settings.load(environ=env)

    def open(self) -> Store:
        if self.kind == "mongomock":
            from perovskite_pes.db.mongo import MongoStore

            return MongoStore.on_client(self.settings, self.client)
        return Store.open(self.settings)

    def cleanup(self):
        if self.kind == "mongo":
            import pymongo

            client = pymongo.MongoClient(os.environ["PES_TEST_MONGO_URI"], serverSelectionTimeoutMS=5000)
            client.drop_database(self.name)
            client.close()


@pytest.fixture(params=BACKENDS)
def engine(request, pes_home, monkeypatch):
    e = Engine(request.param, pes_home, monkeypatch)
    yield e
    e.cleanup()


@pytest.fixture
def store(engine):
    s = engine.open()
    yield s
    s.close()


@pytest.fixture(scope="module")
def ref():
    return Perovskite().supercell(2)


def make_configs(ref, n, seed=0, **tags):
    rng = np.random.default_rng(seed)
    return [
        Configuration(ref, rng.normal(0, 0.05, (N, 3)), rng.normal(0, 0.01, 6), dict(tags, index=i)) for i in range(n)
    ]


def result(energy=-100.0, settings_hash="h1", calculator="sevennet", **kw):
    seed = int(abs(energy) * 1000) % 2**32 if energy is not None and np.isfinite(energy) else 0
    rng = np.random.default_rng(seed)
    d = dict(
        energy=energy,
        forces=rng.normal(size=(N, 3)),
        stress=rng.normal(size=6) * 1e-3,
        calculator=calculator,
        version="0.13.0",
        settings={"model": "7net-mf-0"},
        settings_hash=settings_hash,
        wall_time=1.5,
        status="completed",
        error=None,
        output_dir=None,
        final_structure=None,
    )
    d.update(kw)
    return d


class FakeCalcResult:
    """Stands in for perovskite_pes.calculators.CalcResult: anything with .to_dict()."""

    def __init__(self, **kw):
        self._d = result(**kw)

    def to_dict(self):
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self._d.items()}


def test_configuration_round_trip(store, ref):
    c = Configuration(
        ref,
        np.random.default_rng(1).normal(0, 0.1, (N, 3)),
        [0.01, 0.0, -0.02, 0.003, 0.0, 0.001],
        {"tilt_system": "a0a0c+", "method": "tilt", "angles": np.array([0.0, 0.0, 8.0]), "parent": None},
    )
    cid = store.save_configuration(c, source="test")
    back = store.get_configuration(cid)
    assert back.reference == ref
    np.testing.assert_array_equal(back.displacements, c.displacements)  # float64, bit for bit
    np.testing.assert_array_equal(back.strain, c.strain)
    assert back.tags == {"tilt_system": "a0a0c+", "method": "tilt", "angles": [0.0, 0.0, 8.0], "parent": None}
    np.testing.assert_allclose(back.to_structure().cart_coords, c.to_structure().cart_coords, atol=1e-12)
    (row,) = store.query()
    assert (row["tilt_system"], row["method"], row["source"], row["n_atoms"]) == ("a0a0c+", "tilt", "test", N)
    (r,) = store.list_references()
    assert (r["label"], r["n_configurations"], r["species"]) == ("CsPbBr3_a5.8700_2x2x2", 1, ["Cs", "Pb", "Br"])
    assert store.get_configurations([cid, cid])[1].tags["method"] == "tilt"
    with pytest.raises(NotFound):
        store.get_configuration("0" * 24)
    with pytest.raises(NotFound, match="not a valid id"):
        store.get_configuration("nope")


def test_reference_round_trip_is_idempotent(store):
    other = Perovskite(("Cs", "Pb", "I"), 6.3).supercell(2)
    rid = store.save_reference(other)
    assert store.save_reference(other) == rid  # the same reference is stored once
    back = store.get_reference(rid)
    assert back == other and back.n_atoms == N
    assert [r["label"] for r in store.list_references()] == ["CsPbI3_a6.3000_2x2x2"]


def test_idempotent_configuration_ingestion(store, ref):
    configs = make_configs(ref, 6, method="random")
    first = store.save_configurations(configs)
    assert (first.new, first.existing, len(set(first.ids))) == (6, 0, 6)
    again = store.save_configurations(configs[:3] + configs[:1])
    assert (again.new, again.existing) == (0, 4)
    assert again.ids == first.ids[:3] + first.ids[:1]
    # a rigid translation and a space-group image are the same configuration
    from perovskite_pes.structure import supercell_symmetry

    sym = supercell_symmetry(ref)
    img = sym.apply_displacements(configs[0].displacements)[5]
    moved = [
        Configuration(ref, configs[0].displacements + 0.3, configs[0].strain),
        Configuration(ref, img, sym.apply_strain(configs[0].strain)[5]),
    ]
    assert store.save_configurations(moved).ids == [first.ids[0]] * 2
    assert store.find_configuration(moved[1]) == first.ids[0]
    assert store.count_configurations() == 6
    # a duplicate inside one call is stored once
    twice = make_configs(ref, 1, seed=9)
    rep = store.save_configurations(twice + twice)
    assert (rep.new, rep.existing, rep.ids[0] == rep.ids[1]) == (1, 1, True)
    with pytest.raises(InvalidRecord, match="Configuration objects"):
        store.save_configurations([configs[0], "not a configuration"])
    assert store.count_configurations() == 7


def test_calculations_training_data_and_order(store, ref):
    ids = store.save_configurations(make_configs(ref, 3)).ids
    c1 = store.save_calculation(
        ids[0], result(-100.0), launch={"fw_id": 7, "host": "node1", "launch_dir": "/x", "time": 0}
    )
    c2 = store.save_calculation(ids[0], result(-99.0, settings_hash="h2"))
    c3 = store.save_calculation(ids[1], FakeCalcResult(energy=-98.0))
    store.save_calculation(
        ids[2], result(None, status="failed", error="SCF did not converge", forces=None, stress=None)
    )
    assert len({c1, c2, c3}) == 3
    assert store.count_calculations() == 3 and store.count_calculations(status=None) == 4
    assert store.count_calculations(settings_hash="h1") == 2
    assert store.has_calculation(ids[0], "h2") and not store.has_calculation(ids[2], "h1")
    assert store.has_calculation(ids[2], "h1", status=None)
    got = store.get_calculation(c1)
    assert got["launch"]["fw_id"] == 7 and got["launch"]["time"].year == 1970 and got["config_id"] == ids[0]
    assert got["settings"] == {"model": "7net-mf-0"} and got["energy_per_atom"] == pytest.approx(-100.0 / N)
    data = store.training_data(calculator="sevennet", settings_hash="h1")
    assert [d["calc_id"] for d in data] == [c1, c3]  # oldest first; the failed one is not training data
    assert data[0]["energy"] == -100.0 and data[0]["forces"].shape == (N, 3) and data[0]["stress"].shape == (6,)
    np.testing.assert_array_equal(data[0]["forces"], result(-100.0)["forces"])
    np.testing.assert_array_equal(data[1]["config"].displacements, store.get_configuration(ids[1]).displacements)
    assert [c["id"] for c in store.list_calculations(status="failed")] == [store.query(status="failed")[0]["calc_id"]]


def test_same_result_again_is_a_no_op(store, ref):
    (cid,) = store.save_configurations(make_configs(ref, 1)).ids
    first = store.save_calculation(cid, result(-100.0), launch={"fw_id": 1})
    before = store.get_calculation(first)
    again = result(-100.0)
    again["energy"] += 1e-9
    again["forces"] = again["forces"] + 1e-9  # a round trip through text changes the last digits
    rep = store.ingest_calculations([(cid, again, {"fw_id": 2})])
    assert (rep.new, rep.unchanged, rep.replaced, rep.ids) == (0, 1, 0, [first])
    after = store.get_calculation(first)
    assert after["updated"] == before["updated"] and after["launch"]["fw_id"] == 1
    assert store.superseded_calculations() == []


def test_different_result_is_refused_unless_replaced(store, ref):
    ids = store.save_configurations(make_configs(ref, 2)).ids
    c1 = store.save_calculation(ids[0], result(-100.0), launch={"fw_id": 3, "host": "node7"})
    with pytest.raises(CalculationConflict) as err:
        store.save_calculation(ids[0], result(-101.0))
    msg = str(err.value)
    assert "\n" not in msg and ids[0] in msg and "--replace" in msg and "-100.000000" in msg
    assert store.get_calculation(c1)["energy"] == -100.0
    # a batch with one conflict stores nothing, not even its good records
    with pytest.raises(CalculationConflict, match="calculation 1"):
        store.save_calculations([(ids[1], result(-50.0), None), (ids[0], result(-102.0), None)])
    assert not store.has_calculation(ids[1], "h1")
    # replace=True keeps the old one as superseded, with its provenance
    assert store.save_calculation(ids[0], result(-101.0), replace=True, launch={"fw_id": 4}) == c1
    now = store.get_calculation(c1)
    assert now["energy"] == -101.0 and now["launch"]["fw_id"] == 4
    (old,) = store.superseded_calculations(ids[0])
    assert old["calc_id"] == c1 and old["energy"] == -100.0 and old["launch"]["host"] == "node7"
    assert old["reason"] == "replaced on request" and old["superseded_at"] >= old["updated"]
    np.testing.assert_array_equal(old["forces"], result(-100.0)["forces"])
    assert store.count_calculations() == 1 and store.stats()["superseded_calculations"] == 1
    assert [d["energy"] for d in store.training_data()] == [-101.0]


def test_failed_calculation_is_replaced_by_a_rerun_but_never_replaces_a_result(store, ref):
    ids = store.save_configurations(make_configs(ref, 2)).ids
    failed = result(None, status="failed", error="SCF did not converge", forces=None, stress=None)
    c = store.save_calculation(ids[0], failed)
    assert store.save_calculation(ids[0], result(-100.0)) == c  # the rerun that worked
    assert store.get_calculation(c)["status"] == "completed"
    assert [s["reason"] for s in store.superseded_calculations()] == ["rerun of a failed calculation"]
    store.save_calculation(ids[1], result(-90.0))
    with pytest.raises(CalculationConflict, match="stored completed, new failed"):
        store.save_calculation(ids[1], failed)


def test_outliers_are_refused_unless_allowed(store, ref):
    ids = store.save_configurations(make_configs(ref, 8)).ids
    store.save_calculations([(cid, result(-150.0 - i), None) for i, cid in enumerate(ids[:5])])  # about -3.8 eV/atom
    for bad, words in (
        (result(1e300), ["eV/atom from the reference", "median of the 5 stored"]),
        (result(-1e12), ["eV/atom from the reference"]),
        (result(-150.0, forces=np.full((N, 3), 40.0)), ["above 50 eV/A", "atom 0"]),
    ):
        with pytest.raises(OutlierRecord) as err:
            store.save_calculation(ids[5], bad)
        msg = str(err.value)
        assert "\n" not in msg and "--allow-outliers" in msg and all(w in msg for w in words), msg
    assert not store.has_calculation(ids[5], "h1")
    # a new setup has no stored reference: the batch's own median is used
    with pytest.raises(OutlierRecord, match="median of the 3 new"):
        store.save_calculations(
            [(ids[i], result(e, settings_hash="h9"), None) for i, e in ((0, -150.0), (1, -151.0), (2, -151.0 + 12 * N))]
        )
    assert store.count_calculations(settings_hash="h9") == 0
    # a lone first result of a new setup, or a batch of equally absurd ones, has no sane reference: the absolute bound
    for batch in (
        [(ids[6], result(1e300, settings_hash="h8"), None)],
        [(ids[i], result(-1e12, settings_hash="h8"), None) for i in (5, 6, 7)],
    ):
        with pytest.raises(OutlierRecord, match="beyond 1e\\+06 eV/atom"):
            store.save_calculations(batch)
    assert store.count_calculations(settings_hash="h8") == 0
    # an outlier replacing a good result is refused even with replace=True
    with pytest.raises(OutlierRecord):
        store.save_calculation(ids[0], result(1e300), replace=True)
    cid = store.save_calculation(ids[5], result(-150.0 + 12 * N), allow_outliers=True)
    assert store.get_calculation(cid)["energy"] == -150.0 + 12 * N


@pytest.mark.parametrize(
    "bad, words",
    [
        (dict(energy=float("nan")), ["energy", "finite"]),
        (dict(energy=None), ["missing energy"]),
        (dict(forces=np.zeros((39, 3))), ["forces", "40x3", "39x3"]),
        (dict(forces=np.zeros((40, 2))), ["forces", "40x3", "40x2"]),
        (dict(stress=np.zeros(5)), ["stress", "6"]),
        (dict(settings_hash=""), ["settings_hash"]),
        (dict(status="done"), ["status"]),
        (dict(status="failed", error=None), ["error"]),
    ],
)
def test_bad_results_are_refused_and_nothing_stored(store, ref, bad, words):
    cid = store.save_configuration(make_configs(ref, 1)[0])
    with pytest.raises(InvalidRecord) as err:
        store.save_calculation(cid, result(**bad))
    for w in words:
        assert w in str(err.value)
    assert store.count_calculations(status=None) == 0


def test_batch_of_calculations_is_all_or_nothing(store, ref):
    ids = store.save_configurations(make_configs(ref, 2)).ids
    with pytest.raises(InvalidRecord, match="calculation 1"):
        store.save_calculations([(ids[0], result(-1.0), None), (ids[1], result(-2.0, forces=np.zeros((4, 3))), None)])
    assert store.count_calculations(status=None) == 0
    with pytest.raises(NotFound):
        store.save_calculation("0" * 24, result())
    # a failure inside store.batch() undoes the block's earlier writes too (SQLite: one transaction)
    if store.backend == "sqlite":
        with pytest.raises(RuntimeError):
            with store.batch():
                store.save_calculation(ids[0], result(-1.0))
                store.save_configurations(make_configs(ref, 3, seed=7))
                raise RuntimeError("interrupted")
        assert store.count_calculations(status=None) == 0 and store.count_configurations() == 2
        # a refused unit inside a batch leaves nothing of itself; the rest of the batch is kept
        with store.batch():
            store.save_calculation(ids[0], result(-1.0))
            with pytest.raises(InvalidRecord):
                store.save_calculations(
                    [(ids[1], result(-2.0), None), (ids[1], result(-3.0, forces=np.zeros(3)), None)]
                )
        assert store.count_calculations() == 1 and not store.has_calculation(ids[1], "h1")


def test_query_filters(store, ref):
    a = store.save_configurations(make_configs(ref, 2, method="tilt", tilt_system="a0a0c+")).ids
    b = store.save_configurations(make_configs(ref, 2, seed=5, method="random")).ids
    store.save_calculation(a[0], result(-4.0 * N))
    store.save_calculation(a[1], result(-3.0 * N))
    store.save_calculation(b[0], result(-3.5 * N, calculator="chgnet", settings_hash="c1"))
    assert [r["config_id"] for r in store.query()] == a + b  # every configuration, oldest first
    assert {r["config_id"] for r in store.query(method="tilt")} == set(a)
    assert {r["config_id"] for r in store.query(tilt_system="a0a0c+", reference="CsPbBr3")} == set(a)
    ref_id = store.list_references()[0]["id"]
    assert len(store.query(reference=ref_id)) == 4 and store.query(reference="KPbI3") == []
    rows = store.query(emin=-3.6, emax=-3.4)
    assert [(r["config_id"], r["calculator"]) for r in rows] == [(b[0], "chgnet")]
    assert [r["energy_per_atom"] for r in store.query(calculator="sevennet", emax=-3.5)] == [-4.0]
    assert {r["config_id"] for r in store.query(method="random", status="completed")} == {b[0]}
    assert [r["config_id"] for r in store.query(config_id=b[1])] == [b[1]]
    assert len(store.query(limit=3)) == 3 and len(store.query(calculator="sevennet", limit=1)) == 1
    # limit 0 is no rows on every engine (MongoDB's cursor would read it as "no limit")
    assert store.query(limit=0) == store.query(calculator="sevennet", limit=0) == [] == list(store.records(limit=0))
    for bad in (-1, 1.5, "3"):
        with pytest.raises(QueryError, match="limit must be a whole number"):
            store.query(limit=bad)
    assert store.count_configurations(method="random") == 2
    with pytest.raises(QueryError, match="unknown query field.*colour"):
        store.query(colour="red")
    with pytest.raises(QueryError, match="emin"):
        store.query(emin="low")
    with pytest.raises(QueryError, match="empty energy window"):
        store.query(emin=1, emax=0)
    stats = store.stats()
    assert stats["configurations"] == 4 and stats["calculations"] == 3
    assert stats["by_method"] == {"tilt": 2, "random": 2} and stats["by_tilt_system"] == {"a0a0c+": 2, "-": 2}
    assert stats["references"] == {"CsPbBr3_a5.8700_2x2x2": 4}
    assert {(r["calculator"], r["count"]) for r in stats["by_calculator"]} == {("sevennet", 2), ("chgnet", 1)}
    records = list(store.records(method="tilt"))
    assert [cid for _c, _k, cid in records] == a and records[0][1]["forces"].shape == (N, 3)


def test_models_registry(store):
    m1 = store.register_model("ce-1", "/m/1", "sevennet", "h1", {"test_rmse": 0.01}, {"order": 2}, ["a", "b"])
    m2 = store.register_model("net-2", "/m/2", "sevennet", "h1", {"test_rmse": 0.005}, {"nodes": 8}, ["a"])
    m3 = store.register_model("other", "/m/3", "cp2k", "x", {}, {}, [], activate=True)
    assert store.active_model("sevennet")["id"] == m2
    assert store.active_model("cp2k")["id"] == m3
    store.set_active_model(m1)
    assert store.active_model("sevennet")["name"] == "ce-1"
    assert store.active_model("cp2k")["id"] == m3  # other calculators unaffected
    assert [m["name"] for m in store.list_models()] == ["ce-1", "net-2", "other"]
    first = store.list_models()[0]
    assert first["metrics"] == {"test_rmse": 0.01} and first["calc_ids"] == ["a", "b"] and first["n_train"] == 2
    assert store.stats()["active_models"] == ["ce-1", "other"]
    with pytest.raises(NotFound):
        store.set_active_model("0" * 24)


def test_launchpad_shares_the_data(store):
    from fireworks import Firework, LaunchPad, ScriptTask

    lp = store.get_launchpad()
    lp.add_wf(Firework(ScriptTask.from_str("echo hi"), name="one"))
    assert store.stats()["fireworks"] == {"READY": 1} and store.stats()["workflows"] == 1
    if store.embedded:  # any LaunchPad made in this process shares the embedded LaunchPad
        assert LaunchPad(host="localhost", name=store.settings.database).fireworks.count_documents({}) == 1


def test_reopen_keeps_data_and_uniqueness(engine, ref):
    s = engine.open()
    assert s.initialised  # a fresh database
    ids = s.save_configurations(make_configs(ref, 3)).ids
    s.save_calculation(ids[0], result())
    s.register_model("m", "/m", "sevennet", "h1", {}, {}, [])
    s.close()
    s = engine.open()
    try:
        assert not s.initialised
        assert s.count_configurations() == 3 and s.count_calculations() == 1 and s.active_model()["name"] == "m"
        assert s.save_configurations(make_configs(ref, 3)).new == 0
        # the engine itself refuses a second calculation of the same configuration and settings hash
        if s.backend == "sqlite":
            import sqlite3

            with pytest.raises(sqlite3.IntegrityError):
                s._conn().execute(
                    "INSERT INTO calculations (id, config, calculator, settings_hash, settings, status, "
                    "n_atoms, created, updated) SELECT randomblob(12), config, calculator, settings_hash, "
                    "settings, status, n_atoms, created, updated FROM calculations"
                )
        else:
            from pymongo.errors import DuplicateKeyError

            doc = s._calcs.find_one({}, {"_id": 0})
            with pytest.raises(DuplicateKeyError):
                s._calcs.insert_one(doc)
    finally:
        s.close()


def test_get_store_is_one_per_process(pes_home):
    a = get_store()
    assert get_store() is a and a.backend == "sqlite"
    close_store()
    assert not a.is_open and get_store() is not a
