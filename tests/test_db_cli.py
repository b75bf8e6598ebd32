"""`pes init` and `pes db ...` through subprocesses, with a temporary PES_HOME.

Tests that take ``store_backend`` also run against MongoDB when PES_TEST_MONGO_URI is set.
"""

import gzip
import json

import numpy as np
import pytest
import yaml

from perovskite_pes.db import close_store, get_store
from perovskite_pes.structure import Configuration, Perovskite

N = 40


def _seed_store(n=3):
    """Store n configurations (one tilted, two random) with sevennet calculations; release the store."""
    ref = Perovskite().supercell(2)
    rng = np.random.default_rng(4)
    configs = [
        Configuration(
            ref,
            rng.normal(0, 0.05, (N, 3)),
            rng.normal(0, 0.01, 6),
            {"method": "tilt" if i == 0 else "random", "tilt_system": "a0a0c+" if i == 0 else None},
        )
        for i in range(n)
    ]
    store = get_store()
    ids = store.save_configurations(configs).ids
    for i, cid in enumerate(ids):
        store.save_calculation(
            cid,
            dict(
                energy=-3.0 * N - i,
                forces=rng.normal(size=(N, 3)),
                stress=rng.normal(size=6) * 1e-3,
                calculator="sevennet",
                version="0.13.0",
                settings_hash="h1",
                status="completed",
            ),
        )
    close_store()
    return configs, ids


def _one_line_error(proc):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pes: error:"), proc.stderr
    return lines[0]


def test_init_writes_config_and_launchers(run_pes, pes_home):
    proc = run_pes("init", "--queue", "pbs", check=0)
    assert str(pes_home / "config.yaml") in proc.stdout
    cfg = yaml.safe_load((pes_home / "config.yaml").read_text())
    assert cfg == {"database": "perovskite_pes"}
    fw = pes_home / "fireworks"
    from fireworks import FWorker
    from fireworks.user_objects.queue_adapters.common_adapter import CommonAdapter

    fwconf = yaml.safe_load((fw / "FW_config.yaml").read_text())
    assert fwconf["MONGOMOCK_SERVERSTORE_FILE"] == str(pes_home / "store.launchpad.json")
    assert fwconf["LAUNCHPAD_LOC"] == str(fw / "my_launchpad.yaml")
    lp = yaml.safe_load((fw / "my_launchpad.yaml").read_text())
    assert lp["name"] == "perovskite_pes" and lp["uri_mode"] is False
    assert FWorker.from_file(str(fw / "my_fworker_dft.yaml")).category == "dft"
    assert FWorker.from_file(str(fw / "my_fworker_ml.yaml")).query["spec._category"] == {"$exists": False}
    qa = CommonAdapter.from_file(str(fw / "my_qadapter.yaml"))
    assert qa.q_type == "PBS" and str(fw) in qa["rocket_launch"]
    assert CommonAdapter.from_file(str(fw / "my_qadapter_slurm.yaml")).q_type == "SLURM"
    # the store was created, and its LaunchPad initialised so that FireWorks' own lpad can read it
    assert (pes_home / "store.sqlite").exists()
    assert "fw_id_assigner" in json.loads((pes_home / "store.launchpad.json").read_text())["perovskite_pes"]
    # a second init refuses to overwrite
    assert "--force" in _one_line_error(run_pes("init"))


def test_init_with_unreachable_mongodb_writes_nothing(run_pes, pes_home):
    proc = run_pes("init", "--mongo-uri", "mongodb://u:secret@127.0.0.1:9/campaign", env={"PES_MONGO_TIMEOUT": "1"})
    msg = _one_line_error(proc)
    assert "cannot reach MongoDB" in msg and "secret" not in msg
    assert not (pes_home / "config.yaml").exists()
    run_pes("init", "--mongo-uri", "mongodb://u:secret@db.example:27017/campaign", "--no-check", check=0)
    lp = yaml.safe_load((pes_home / "fireworks" / "my_launchpad.yaml").read_text())
    assert lp["uri_mode"] is True and lp["name"] == "campaign"
    assert yaml.safe_load((pes_home / "fireworks" / "FW_config.yaml").read_text())["MONGOMOCK_SERVERSTORE_FILE"] is None


def test_malformed_config_is_one_line(run_pes, pes_home):
    (pes_home / "config.yaml").write_text("mongo_uri: [\n")
    assert "not valid YAML" in _one_line_error(run_pes("db", "stats"))


def test_stats_query_and_unknown_field(run_pes, store_backend, tmp_path):
    _configs, ids = _seed_store()
    st = json.loads(run_pes("db", "stats", "--json", check=0).stdout)
    assert st["configurations"] == 3 and st["calculations"] == 3
    assert st["embedded"] == (store_backend == "embedded")
    rows = json.loads(run_pes("db", "query", "--method", "random", "--emax", "-3.01", "--json", check=0).stdout)
    assert [r["config_id"] for r in rows] == [ids[1], ids[2]]
    rows = json.loads(run_pes("db", "query", "--where", "tilt_system=a0a0c+", "--json", check=0).stdout)
    assert [r["config_id"] for r in rows] == [ids[0]]
    out = tmp_path / "poscars"
    run_pes("db", "query", "--calculator", "sevennet", "-o", out, check=0)
    assert sorted(p.stem for p in out.iterdir()) == sorted(ids)
    one_file = tmp_path / "rows.jsonl.gz"  # a gzipped interchange name is one file, not a folder of POSCARs
    run_pes("db", "query", "--calculator", "sevennet", "-o", one_file, check=0)
    assert one_file.is_file() and len(gzip.decompress(one_file.read_bytes()).splitlines()) == 3
    msg = _one_line_error(run_pes("db", "query", "--where", "colour=red"))
    assert "unknown query field 'colour'" in msg and "tilt_system" in msg


@pytest.mark.parametrize("fmt", ["xyz", "jsonl", "extxyz.gz", "jsonl.gz"])
def test_export_import_round_trip(run_pes, pes_home, tmp_path, fmt):
    configs, ids = _seed_store()
    path = tmp_path / f"data.{fmt}"
    assert "exported 3" in run_pes("db", "export", path, check=0).stdout
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == fmt.endswith(".gz")  # gzipped exactly when named so
    if "xyz" in fmt:  # readable by ASE as the interchange format of ML-potential codes
        from ase.io import read

        frames = read(path, ":")
        assert len(frames) == 3
        e = [a.get_potential_energy() for a in frames]
        np.testing.assert_allclose(e, [-120.0, -121.0, -122.0])
        assert frames[0].get_forces().shape == (N, 3) and frames[0].get_stress().shape == (6,)
    other = tmp_path / "other_home"
    proc = run_pes("db", "import", path, "--json", env={"PES_HOME": str(other)}, check=0)
    summary = json.loads(proc.stdout)
    assert summary["configurations_new"] == 3 and summary["calculations"] == 3
    again = json.loads(run_pes("db", "import", path, "--json", env={"PES_HOME": str(other)}, check=0).stdout)
    assert again["configurations_new"] == 0 and again["calculations_unchanged"] == 3  # a no-op, no duplicates
    assert again["calculations_new"] == again["calculations_replaced"] == 0
    from perovskite_pes.settings import Settings

    store = get_store(Settings.load(other))
    assert store.count_configurations() == 3 and store.count_calculations() == 3
    data = {d["energy"]: d for d in store.training_data()}
    original = get_store()  # switches back to the first home
    src = {d["energy"]: d for d in original.training_data()}
    for energy, d in src.items():
        np.testing.assert_allclose(data[energy]["forces"], d["forces"], atol=1e-8)
        np.testing.assert_allclose(data[energy]["stress"], d["stress"], atol=1e-8)
        np.testing.assert_allclose(data[energy]["config"].displacements, d["config"].displacements, atol=1e-7)
        np.testing.assert_allclose(data[energy]["config"].strain, d["config"].strain, atol=1e-9)
    close_store()


def test_import_refuses_bad_files_and_stores_nothing(run_pes, store_backend, tmp_path):
    ref = Perovskite().supercell(2)
    c = Configuration(ref, np.random.default_rng(0).normal(0, 0.05, (N, 3)))
    good = {
        "configuration": c.to_dict(),
        "calculation": {
            "energy": -1.0,
            "forces": np.zeros((N, 3)).tolist(),
            "stress": [0.0] * 6,
            "calculator": "cp2k",
            "settings_hash": "x",
        },
    }
    no_energy = json.loads(json.dumps(good))
    del no_energy["calculation"]["energy"]
    short_forces = json.loads(json.dumps(good))
    short_forces["calculation"]["forces"] = short_forces["calculation"]["forces"][:-1]
    cases = {
        "no_energy": (no_energy, "line 2: missing energy"),
        "forces": (short_forces, "line 2: forces must have shape 40x3"),
    }
    for name, (bad, words) in cases.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
        assert words in _one_line_error(run_pes("db", "import", path))
    # extended XYZ: a frame without energy, and one with an atom missing
    from ase.io import write

    atoms = c.to_ase()
    write(tmp_path / "noenergy.xyz", [atoms], format="extxyz")
    assert "frame 1 of 1: missing energy" in _one_line_error(
        run_pes("db", "import", tmp_path / "noenergy.xyz", "--calculator", "vasp")
    )
    from ase.calculators.singlepoint import SinglePointCalculator

    short = atoms[:-1]
    short.calc = SinglePointCalculator(short, energy=-1.0, forces=np.zeros((N - 1, 3)))
    write(tmp_path / "short.xyz", [short], format="extxyz")
    assert "has 39 atoms" in _one_line_error(run_pes("db", "import", tmp_path / "short.xyz", "--calculator", "vasp"))
    st = get_store()
    assert st.count_configurations() == 0 and st.count_calculations(status=None) == 0
    close_store()


def test_import_foreign_extxyz_in_any_atom_order(run_pes, store_backend, tmp_path):
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    ref = Perovskite().supercell(2)
    c = Configuration(ref, np.random.default_rng(2).normal(0, 0.1, (N, 3)), [0.01, 0, 0, 0, 0, 0.002])
    atoms = c.to_ase()
    forces = np.random.default_rng(3).normal(size=(N, 3))
    perm = np.random.default_rng(5).permutation(N)
    shuffled = atoms[perm]
    shuffled.calc = SinglePointCalculator(shuffled, energy=-150.0, forces=forces[perm])
    write(tmp_path / "dft.xyz", [shuffled], format="extxyz")  # no pes_* provenance: defaults apply
    run_pes("db", "import", tmp_path / "dft.xyz", "--calculator", "vasp", check=0)
    (item,) = get_store().training_data()
    assert item["calculator"] == "vasp"
    np.testing.assert_allclose(item["forces"], forces, atol=1e-8)
    np.testing.assert_allclose(item["config"].displacements, c.displacements, atol=1e-6)
    close_store()


def test_import_keeps_the_reference_of_a_benchmark_data_set(run_pes, pes_home, tmp_path):
    """The benchmarks write their reference as one ``pes_reference`` entry (gzipped): imported frames keep
    it (here a = 5.95 A, not the import's default 5.87), so they train beside configurations of that cell."""
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    ref = Perovskite(lattice_parameter=5.95).supercell(2)
    c = Configuration(ref, np.random.default_rng(2).normal(0, 0.1, (N, 3)), [0.02, 0, 0, 0, 0, 0.001], {"kind": "md"})
    atoms = c.to_ase()
    atoms.calc = SinglePointCalculator(atoms, energy=-150.0, forces=np.zeros((N, 3)), stress=np.zeros(6))
    atoms.info["pes_reference"] = json.dumps(ref.to_dict())
    atoms.info["pes_tags"] = json.dumps(c.tags)
    write(tmp_path / "set.extxyz.gz", [atoms], format="extxyz")
    run_pes("db", "import", tmp_path / "set.extxyz.gz", "--calculator", "sevennet", check=0)
    (item,) = get_store().training_data()
    assert item["config"].reference.perovskite.lattice_parameter == pytest.approx(5.95)
    np.testing.assert_allclose(item["config"].strain, c.strain, atol=1e-9)
    np.testing.assert_allclose(item["config"].displacements, c.displacements, atol=1e-6)
    assert item["config"].tags["kind"] == "md"
    close_store()
    atoms.info["pes_reference"] = '{"perovskite": {"species": ["Cs"'  # cut short: one line, nothing stored
    write(tmp_path / "bad.extxyz", [atoms], format="extxyz")
    msg = _one_line_error(run_pes("db", "import", tmp_path / "bad.extxyz", "--calculator", "sevennet"))
    assert "bad.extxyz frame 1 of 1: pes_reference is not a reference supercell" in msg
    assert get_store().count_configurations() == 1
    close_store()


def test_lpad_and_pes_see_the_same_data(run_pes, pes_home):
    import os
    import subprocess

    run_pes("init", check=0)
    run_pes("db", "lpad", "add_scripts", "echo hi", "-n", "hello", check=0)
    env = dict(os.environ, FW_CONFIG_FILE=str(pes_home / "fireworks" / "FW_config.yaml"))
    plain = subprocess.run(
        ["lpad", "get_fws", "-d", "count"], capture_output=True, text=True, env=env, timeout=120, cwd=pes_home
    )
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.strip().splitlines()[-1] == "1"
    assert json.loads(run_pes("db", "stats", "--json", check=0).stdout)["fireworks"] == {"READY": 1}


def test_wheel_installs_ship_every_launcher_template_and_spec(tmp_path, monkeypatch):
    """setup.cfg's data_files list every template and example spec; template_dir() finds an installed copy."""
    import configparser
    import shutil
    import sys
    from pathlib import Path

    from perovskite_pes.db import launchers
    from perovskite_pes.errors import PesError

    root = Path(__file__).resolve().parents[1]
    cfg = configparser.ConfigParser()
    cfg.read(root / "setup.cfg")
    shipped = {
        k: {Path(x.strip()).name for x in v.split("\n") if x.strip()} for k, v in cfg["options.data_files"].items()
    }
    assert shipped["share/perovskite_pes/launchers"] == {p.name for p in (root / "launchers").iterdir() if p.is_file()}
    assert shipped["share/perovskite_pes/workflows"] == {p.name for p in (root / "workflows").glob("*.yaml")}
    # a wheel install: no source tree next to the package, templates under <prefix>/share
    share = tmp_path / "share" / "perovskite_pes" / "launchers"
    shutil.copytree(root / "launchers", share)
    monkeypatch.delenv("PES_LAUNCHER_TEMPLATES", raising=False)
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    monkeypatch.setattr(
        launchers, "__file__", str(tmp_path / "site-packages" / "perovskite_pes" / "db" / "launchers.py")
    )
    assert launchers.template_dir() == share
    shutil.rmtree(share)
    with pytest.raises(PesError, match="launcher templates not found"):
        launchers.template_dir()


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _record(config, energy, forces, calculator="cp2k", settings_hash="x"):
    return {
        "configuration": config.to_dict(),
        "calculation": {
            "energy": energy,
            "forces": np.asarray(forces).tolist(),
            "stress": [0.0] * 6,
            "calculator": calculator,
            "settings_hash": settings_hash,
        },
    }


def test_import_data_policy(run_pes, pes_home, tmp_path):
    ref = Perovskite().supercell(2)
    rng = np.random.default_rng(6)
    configs = [Configuration(ref, rng.normal(0, 0.05, (N, 3))) for _ in range(4)]
    forces = [rng.normal(size=(N, 3)) for _ in configs]
    good = _jsonl(tmp_path / "good.jsonl", [_record(c, -150.0 - i, f) for i, (c, f) in enumerate(zip(configs, forces))])
    run_pes("db", "import", good, check=0)
    # the same configuration again with an absurd energy: refused, and the good result stays
    for energy in (1e300, -1e12):
        bad = _jsonl(tmp_path / "absurd.jsonl", [_record(configs[0], energy, forces[0])])
        msg = _one_line_error(run_pes("db", "import", bad))
        assert "eV/atom from the reference" in msg and "--allow-outliers" in msg and "absurd.jsonl" not in msg[:5]
    # a different, plausible result: refused without --replace
    changed = _jsonl(tmp_path / "changed.jsonl", [_record(configs[0], -149.5, forces[0])])
    msg = _one_line_error(run_pes("db", "import", changed))
    assert "already has a different cp2k calculation" in msg and "--replace" in msg
    assert [d["energy"] for d in get_store().training_data()][0] == -150.0
    close_store()
    out = json.loads(run_pes("db", "import", changed, "--replace", "--json", check=0).stdout)
    assert (out["calculations_replaced"], out["calculations_new"]) == (1, 0)
    st = json.loads(run_pes("db", "stats", "--json", check=0).stdout)
    assert st["calculations"] == 4 and st["superseded_calculations"] == 1
    huge = _jsonl(tmp_path / "huge.jsonl", [_record(configs[1], -151.0, np.full((N, 3), 60.0))])
    assert "above 50 eV/A" in _one_line_error(run_pes("db", "import", huge, "--replace"))
    run_pes("db", "import", huge, "--replace", "--allow-outliers", check=0)
    store = get_store()
    assert [s["energy"] for s in store.superseded_calculations()] == [-150.0, -151.0]
    assert store.count_calculations() == 4
    close_store()


def test_extxyz_with_two_force_columns_is_one_line(run_pes, pes_home, tmp_path):
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    atoms = Configuration(Perovskite().supercell(2)).to_ase()
    atoms.calc = SinglePointCalculator(atoms, energy=-150.0, forces=np.zeros((N, 3)))
    path = tmp_path / "frames.xyz"
    write(path, [atoms], format="extxyz")
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace("forces:R:3", "forces:R:2")
    lines[2:] = [" ".join(line.split()[:-1]) for line in lines[2:]]
    path.write_text("\n".join(lines) + "\n")
    msg = _one_line_error(run_pes("db", "import", path, "--calculator", "vasp"))
    assert "frames.xyz frame 1 of 1: forces must have 3 columns" in msg and "got 2 column(s)" in msg
    assert get_store().count_configurations() == 0
    close_store()


def test_a_closed_pipe_ends_quietly(pes_home, tmp_path):
    import os
    import subprocess
    import sys

    ref = Perovskite().supercell(2)
    rng = np.random.default_rng(1)
    get_store().save_configurations([Configuration(ref, rng.normal(0, 0.05, (N, 3))) for _ in range(400)])
    close_store()
    proc = subprocess.run(
        f"{sys.executable} -m perovskite_pes db query --json | head -n 2",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert proc.stdout.splitlines() == ["[", " {"] and proc.stderr == ""
    proc = subprocess.run(
        f"set -o pipefail; {sys.executable} -m perovskite_pes db query | head -n 1",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert proc.returncode == 0 and proc.stderr == ""


@pytest.mark.parametrize("password", ["se/cr:et@42", "se%2Fcr%3Aet%4042"])
def test_passwords_never_reach_messages(run_pes, pes_home, password):
    uri = f"mongodb://pes:{password}@127.0.0.1:9/campaign"
    env = {"PES_MONGO_TIMEOUT": "1"}
    procs = [run_pes("init", "--mongo-uri", uri, env=env), run_pes("db", "stats", env={**env, "PES_MONGO_URI": uri})]
    for proc in procs:
        msg = _one_line_error(proc)
        text = proc.stdout + proc.stderr
        for piece in ("se/cr", "cr:et", "et@42", "se%2F", "42"):
            assert piece not in text, text
        assert "mongodb://pes:***@" in msg or "percent-encode" in msg
    assert not (pes_home / "config.yaml").exists()
