"""``pes basis show`` and ``pes basis count`` through the command line (in-process)."""

import json

import pytest

from cli_support import pes as run_pes_command


def pes(*args, home):
    return run_pes_command("basis", *args, env={"PES_HOME": str(home)})


def test_count_octahedron_json(tmp_path):
    r = pes("count", "--cluster", "octahedron", "--max-order", "4", "--json", home=tmp_path)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["point_group"] == "Oh" and d["n_ccd"] == 15
    assert sorted(s["irrep"] for s in d["subspaces"]) == sorted(["A1g", "T1u", "Eg", "T2g", "T2u", "A1g", "Eg"])
    assert sum(s["dim"] for s in d["subspaces"]) == 15
    assert d["invariants_per_degree"]["1"] == 2 and d["invariants_per_degree"]["2"] == 9
    assert d["n_invariants"] == sum(d["invariants_per_degree"].values())


@pytest.mark.parametrize(
    "cluster, extra, group, n_ccd, per_degree",
    [
        ("tetrahedron", [], "Td", 6, {"1": 1, "2": 3, "3": 6}),
        ("octahedron", ["--truncated"], "Oh", 12, {"1": 1, "2": 5, "3": 14}),
        ("pair", ["--pair", "1", "--metric", "quad"], "C4v", 1, {"1": 1, "2": 1, "3": 1}),
        ("triplet", ["--metric", "log"], "D4h", 3, {"1": 2, "2": 4, "3": 6}),
        ("stack", [], "C2v", 3, {"1": 2, "2": 4, "3": 6}),
    ],
)
def test_count_clusters(tmp_path, cluster, extra, group, n_ccd, per_degree):
    r = pes("count", "--cluster", cluster, "--max-order", "3", *extra, "--json", home=tmp_path)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert (d["point_group"], d["n_ccd"], d["invariants_per_degree"]) == (group, n_ccd, per_degree)


def test_cluster_choices_are_the_named_clusters():
    from perovskite_pes.cli.basis import CLUSTER_CHOICES
    from perovskite_pes.descriptors.clusters import NAMED_CLUSTERS

    assert CLUSTER_CHOICES == ("pair", *NAMED_CLUSTERS)


def test_count_table_output(tmp_path):
    r = pes("count", "--cluster", "tetrahedron", "--max-order", "2", home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Td" in r.stdout and "A1 + T2 + E" in r.stdout


def test_show_json_and_recipe(tmp_path):
    out = tmp_path / "recipe.json"
    r = pes("show", "--clusters", "4p+t+o", "--max-order", "2", "--json", "--output", str(out), home=tmp_path)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert [o["name"] for o in d["orbits"]] == ["p1_Pb-Br", "p2_Cs-Br", "p3_Br-Br", "p4_Cs-Pb", "triplet", "octahedron"]
    assert [o["n_clusters"] for o in d["orbits"]] == [48, 96, 96, 64, 24, 8]
    assert [s["name"] for s in d["site_orbits"]] == ["A", "B", "X"]
    from perovskite_pes.descriptors import Featurizer

    f = Featurizer.from_dict(json.loads(out.read_text()))
    assert sum(f.n_functions) == d["n_cluster_features"]


def test_show_table(tmp_path):
    r = pes("show", "--clusters", "p1+o", home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "octahedron" in r.stdout and "Site orbits" in r.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["count", "--cluster", "octahedron", "--max-order", "0"], "--max-order"),
        (["show", "--clusters", "2p+cube"], "unknown cluster"),
        (["count", "--cluster", "pair", "--pair", "0"], "--pair"),
        (["show", "--species", "Cs", "Pb", "Qq"], "Qq"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, args, message):
    r = pes(*args, home=tmp_path)
    assert r.returncode == 2
    assert message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
