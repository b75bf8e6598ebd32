"""The Store API on the embedded store (and on MongoDB when PES_TEST_MONGO_URI is set)."""

import numpy as np
import pytest

from perovskite_pes.db import InvalidRecord, NotFound, QueryError, close_store, get_store
from perovskite_pes.structure import Configuration, Perovskite

N = 40


@pytest.fixture(scope="module")
def ref():
    return Perovskite().supercell(2)


def make_configs(ref, n, seed=0, **tags):
    rng = np.random.default_rng(seed)
    return [
        Configuration(ref, rng.normal(0, 0.05, (N, 3)), rng.normal(0, 0.01, 6), dict(tags, index=i))
        for i in range(n)
    ]


def result(energy=-100.0, settings_hash="h1", calculator="sevennet", **kw):
    seed = int(abs(energy) * 1000) % 2**32 if energy is not None and np.isfinite(energy) else 0
    rng = np.random.default_rng(seed)
    d = dict(energy=energy, forces=rng.normal(size=(N, 3)), stress=rng.normal(size=6) * 1e-3,
             calculator=calculator, version="0.13.0", settings={"model": "7net-mf-0"},
             settings_hash=settings_hash, wall_time=1.5, status="completed", error=None,
             output_dir=None, final_structure=None)
    d.update(kw)
    return d


class FakeCalcResult:
    """Stands in for perovskite_pes.calculators.CalcResult: anything with .to_dict()."""

    def __init__(self, **kw):
        self._d = result(**kw)

    def to_dict(self):
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self._d.items()}


def test_configuration_round_trip(store, ref):
    c = Configuration(ref, np.random.default_rng(1).normal(0, 0.1, (N, 3)), [0.01, 0.0, -0.02, 0.003, 0.0, 0.001],
                      {"tilt_system": "a0a0c+", "method": "tilt", "angles": np.array([0.0, 0.0, 8.0]), "parent": None})
    cid = store.save_configuration(c, source="test")
    back = store.get_configuration(cid)
    assert back.reference == ref
    np.testing.assert_array_equal(back.displacements, c.displacements)
    np.testing.assert_array_equal(back.strain, c.strain)
    assert back.tags == {"tilt_system": "a0a0c+", "method": "tilt", "angles": [0.0, 0.0, 8.0], "parent": None}
    doc = store._configs.find_one()
    assert doc["tilt_system"] == "a0a0c+" and doc["method"] == "tilt" and doc["source"] == "test"
    from pymatgen.core import Structure

    s = Structure.from_dict(doc["structure"])
    np.testing.assert_allclose(s.lattice.matrix, c.lattice, atol=1e-10)
    np.testing.assert_allclose(s.cart_coords, c.to_structure().cart_coords, atol=1e-8)
    assert [r["label"] for r in store.list_references()] == ["CsPbBr3_a5.8700_2x2x2"]
    with pytest.raises(NotFound):
        store.get_configuration("0" * 24)
    with pytest.raises(NotFound, match="not a valid id"):
        store.get_configuration("nope")


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
    moved = [Configuration(ref, configs[0].displacements + 0.3, configs[0].strain),
             Configuration(ref, img, sym.apply_strain(configs[0].strain)[5])]
    assert store.save_configurations(moved).ids == [first.ids[0]] * 2
    assert store.count_configurations() == 6


def test_idempotent_calculations_and_training_data(store, ref):
    ids = store.save_configurations(make_configs(ref, 3)).ids
    c1 = store.save_calculation(ids[0], result(-100.0), launch={"fw_id": 7, "host": "node1", "launch_dir": "/x", "time": 0})
    c1b = store.save_calculation(ids[0], FakeCalcResult(energy=-101.0))  # same settings hash: update
    assert c1 == c1b
    assert store.count_calculations() == 1
    assert store.get_calculation(c1)["energy"] == -101.0
    assert store.get_calculation(c1)["launch"] is None  # the update replaced the whole record
    c2 = store.save_calculation(ids[0], result(-99.0, settings_hash="h2"))
    c3 = store.save_calculation(ids[1], result(-98.0))
    store.save_calculation(ids[2], result(None, status="failed", error="SCF did not converge", forces=None, stress=None))
    assert len({c1, c2, c3}) == 3
    assert store.count_calculations() == 3 and store.count_calculations(status=None) == 4
    assert store.count_calculations(settings_hash="h1") == 2
    assert store.has_calculation(ids[0], "h2") and not store.has_calculation(ids[2], "h1")
    assert store.has_calculation(ids[2], "h1", status=None)
    data = store.training_data(calculator="sevennet", settings_hash="h1")
    assert [d["calc_id"] for d in data] == [c1, c3]
    assert data[0]["energy"] == -101.0 and data[0]["forces"].shape == (N, 3) and data[0]["stress"].shape == (6,)
    np.testing.assert_array_equal(data[1]["config"].displacements, store.get_configuration(ids[1]).displacements)
    np.testing.assert_allclose(data[0]["forces"], result(-101.0)["forces"])


@pytest.mark.parametrize(
    "bad, words",
    [
        (dict(energy=float("nan")), ["energy", "finite"]),
        (dict(energy=None), ["missing energy"]),
        (dict(forces=np.zeros((39, 3))), ["forces", "40x3", "39x3"]),
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


def test_query_filters(store, ref):
    a = store.save_configurations(make_configs(ref, 2, method="tilt", tilt_system="a0a0c+")).ids
    b = store.save_configurations(make_configs(ref, 2, seed=5, method="random")).ids
    store.save_calculation(a[0], result(-4.0 * N))
    store.save_calculation(a[1], result(-3.0 * N))
    store.save_calculation(b[0], result(-3.5 * N, calculator="chgnet", settings_hash="c1"))
    assert len(store.query()) == 4  # every configuration, with or without calculations
    assert {r["config_id"] for r in store.query(method="tilt")} == set(a)
    assert {r["config_id"] for r in store.query(tilt_system="a0a0c+", reference="CsPbBr3")} == set(a)
    assert store.query(reference="KPbI3") == []
    rows = store.query(emin=-3.6, emax=-3.4)
    assert [(r["config_id"], r["calculator"]) for r in rows] == [(b[0], "chgnet")]
    assert [r["energy_per_atom"] for r in store.query(calculator="sevennet", emax=-3.5)] == [-4.0]
    assert {r["config_id"] for r in store.query(method="random", status="completed")} == {b[0]}
    with pytest.raises(QueryError, match="unknown query field.*colour"):
        store.query(colour="red")
    with pytest.raises(QueryError, match="emin"):
        store.query(emin="low")
    stats = store.stats()
    assert stats["configurations"] == 4 and stats["calculations"] == 3
    assert stats["by_method"] == {"tilt": 2, "random": 2}


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
    assert store.list_models()[0]["metrics"] == {"test_rmse": 0.01}


def test_launchpad_shares_the_client_and_data(store):
    from fireworks import Firework, LaunchPad, ScriptTask

    lp = store.get_launchpad()
    assert lp.connection is store.client
    lp.add_wf(Firework(ScriptTask.from_str("echo hi"), name="one"))
    assert store.db.fireworks.count_documents({}) == 1
    assert store.stats()["fireworks"] == {"READY": 1}
    if store.embedded:  # any LaunchPad made in this process shares the store
        assert LaunchPad(host="localhost", name=store.settings.database).fireworks.count_documents({}) == 1


def test_reopen_keeps_data_and_indexes(store_backend, ref):
    s = get_store()
    assert s.initialised  # a fresh database gets a LaunchPad reset
    assert s.db.fw_id_assigner.count_documents({}) == 1
    ids = s.save_configurations(make_configs(ref, 3)).ids
    s.save_calculation(ids[0], result())
    close_store()
    s = get_store()
    assert not s.initialised
    assert s.count_configurations() == 3 and s.count_calculations() == 1
    assert s.save_configurations(make_configs(ref, 3)).new == 0
    # the unique indexes are back: a raw duplicate insert is refused by the database
    from pymongo.errors import DuplicateKeyError

    doc = s._calcs.find_one({}, {"_id": 0})
    with pytest.raises(DuplicateKeyError):
        s._calcs.insert_one(doc)
    close_store()
