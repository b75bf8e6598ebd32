"""Campaign specs: defaults, round trips, the shipped specs, and errors that name the field."""

from pathlib import Path

import pytest

from perovskite_pes.errors import PesError
from perovskite_pes.workflows.spec import SpecError, campaign_parents, load_spec, validate_spec

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "workflows").glob("*.yaml"))


def minimal(**extra):
    d = {"name": "t", "calculator": {"name": "sevennet"}}
    d.update(extra)
    return d


def test_defaults_and_round_trip():
    spec = validate_spec(minimal())
    assert spec.seed == 0 and spec.supercell == 2
    assert spec.reference.species == ("Cs", "Pb", "Br") and spec.reference.lattice_parameter == 5.87
    assert spec.steps.relax_reference.enabled and spec.steps.relax_tilts.enabled
    # all 15 tilt systems are parents (a0a0a0 once, as the relaxed reference)
    parents = campaign_parents(spec.steps)
    assert len(parents) == 15 and parents[0] == "a0a0a0" and len(set(parents)) == 15
    assert spec.category is None  # surrogate Fireworks run on any worker
    again = validate_spec(spec.to_dict())
    assert again.to_dict() == spec.to_dict()


def test_dft_calculators_get_the_dft_category_and_training_settings_follow_the_models_schema():
    spec = validate_spec(
        minimal(
            calculator={"name": "vasp", "settings": {"potcar_spec": True}},
            descriptors={"clusters": "4p+o", "max_order": 4, "metric": "log"},
            training={"models": ["cluster", "site"], "grid": {"nodes": [4, 8]}, "epochs": 7},
        )
    )
    assert spec.category == "dft"
    t = spec.training_settings()
    assert t["grid"] == {"model": ["cluster", "site"], "clusters": ["4p+o"], "max_order": [4], "nodes": [4, 8]}
    assert t["metric"] == "log" and t["training"]["epochs"] == 7 and t["seed"] == 0
    from perovskite_pes.models.selection import expand_grid, merge_settings

    assert len(expand_grid(merge_settings(t)["grid"])) == 4


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_specs_are_valid(path):
    spec = load_spec(path)
    assert spec.name and spec.training_settings()["grid"]["model"]


def test_shipped_specs_are_there():
    names = {p.name for p in SHIPPED}
    assert {"quickstart.yaml", "cspbbr3_paper.yaml", "cspbbr3_cp2k.yaml"} <= names


def test_paper_spec_matches_the_paper():
    spec = load_spec(ROOT / "workflows" / "cspbbr3_paper.yaml")
    assert spec.calculator.name == "vasp" and spec.category == "dft"
    assert len(campaign_parents(spec.steps)) == 15
    assert spec.descriptors.clusters == "7p+t+o"
    grid = spec.training_settings()["grid"]
    assert set(grid["clusters"]) == {"4p+o", "5p+o", "8p+o", "4p+t+o", "7p+t+o"} and set(grid["max_order"]) == {2, 4}
    assert spec.training.folds == 10 and spec.training.test_fraction == pytest.approx(0.2)
    assert tuple(spec.training.batch_sizes) == (2, 10, 100, 1000)


@pytest.mark.parametrize(
    "data, field",
    [
        ({"calculator": {"name": "sevennet"}}, "name"),
        (minimal(name="has space"), "name"),
        ({"name": "t"}, "calculator"),
        (minimal(calculator={"name": "gaussian"}), "calculator.name"),
        (minimal(colour="red"), "colour"),
        (minimal(seed=-1), "seed"),
        (minimal(reference={"species": ["Cs", "Pb"]}), "reference.species"),
        (minimal(reference={"species": ["Cs", "Xx", "Br"]}), "reference.species[1]"),
        (minimal(reference={"lattice_parameter": -5}), "reference.lattice_parameter"),
        (minimal(supercell=[[1, 0, 0], [0, 1, 0], [0, 0, 0]]), "supercell"),
        (minimal(supercell=1), "supercell"),  # cannot hold the tilt systems
        (minimal(fireworks={"per_firework": 0}), "fireworks.per_firework"),
        (minimal(fireworks={"category": "gpu"}), "fireworks.category"),
        (minimal(steps={"relax_tilts": {"systems": ["a0a0c+", "b0b0b0"]}}), "steps.relax_tilts.systems[1]"),
        (minimal(steps={"relax_tilts": {"relax": "volume"}}), "steps.relax_tilts.relax"),
        (minimal(steps={"random": {"count": 0}}), "steps.random.count"),
        (minimal(steps={"random": {"count": 5, "displacment_radius": 0.1}}), "steps.random.displacment_radius"),
        (minimal(steps={"mode_grid": {"amplitudes": [0.1, 3.0]}}), "steps.mode_grid.amplitudes[1]"),
        (minimal(steps={"strain_grid": {"subspaces": ["A2u"]}}), "steps.strain_grid.subspaces[0]"),
        (
            minimal(steps={"relax_tilts": {"systems": ["a0a0c+"]}, "interpolations": [{"path": ["a0a0a0", "a-a-a-"]}]}),
            "steps.interpolations[0].path[1]",
        ),
        (minimal(steps={"interpolations": [{"path": ["a0a0a0"]}]}), "steps.interpolations[0].path"),
        (minimal(descriptors={"clusters": "3q+o"}), "descriptors.clusters"),
        (minimal(descriptors={"clusters": "0p+o"}), "descriptors.clusters"),
        (minimal(training={"grid": {"clusters": ["7p+t+o", "sphere"]}}), "training.grid.clusters[1]"),
        (minimal(descriptors={"max_order": 3}), "descriptors.max_order"),
        (minimal(descriptors={"metric": "cubic"}), "descriptors.metric"),
        (minimal(training={"models": ["forest"]}), "training.models[0]"),
        (minimal(training={"grid": {"depth": [3]}}), "training.grid.depth"),
        (minimal(training={"grid": {"nodes": [8, 0]}}), "training.grid.nodes[1]"),
        (minimal(training={"folds": 1}), "training.folds"),
        (minimal(training={"batch_sizes": [10, 100], "epochs": [5]}), "training.epochs"),
        # training.options reach train_and_select only when the training Firework runs: checked up front
        (minimal(training={"options": {"larger_test_fraction": 1.5}}), "training.options: larger_test_fraction must"),
        (
            minimal(training={"options": {"max_energy": 600}}),
            "training.options: unknown selection setting 'max_energy'; known",
        ),
        (
            minimal(training={"options": {"training": {"force_weight": "high"}}}),
            "training.options: training.force_weight",
        ),
        (minimal(retrain={"min_new_count": None, "min_new_fraction": None}), "retrain"),
        (minimal(retrain={"require": "most"}), "retrain.require"),
        (minimal(simulate={"t_min": 400, "t_max": 300}), "simulate.t_max"),
        (minimal(simulate={"supercell": 3}), "simulate.supercell"),
        (minimal(simulate={"method": "langevin"}), "simulate.method"),
        (minimal(simulate={"heat_start": "a+b+c-"}), "simulate.heat_start"),
        (minimal(simulate={"timestep_fs": 40}), "simulate.timestep_fs"),
        (minimal(simulate={"directions": ["up"]}), "simulate.directions[0]"),
        (minimal(simulate={"tmax": 500}), "simulate.tmax"),
        (minimal(simulate=True, training={"enabled": False}), "simulate"),
        (minimal(active={"lower": 0.5, "upper": 0.2}), "active.upper"),
        (minimal(active={"lower": 0.2, "upper": 0.2}), "active.upper"),
        (minimal(active={"lower": -0.1}), "active.lower"),
        (minimal(active={"supercells": [2, 4], "lower": [0.05, -0.1]}), "active.lower[1]"),
        (minimal(active={"supercells": [2, 4], "lower": [0.05, 0.2, 0.3]}), "active.lower: a list gives one bound"),
        (minimal(active={"lower": [0.05]}), "active.lower"),  # a list needs supercells
        (minimal(active={"supercells": [2, 4], "lower": [0.05, 0.6]}), "active.upper: the trust window needs lower"),
        (minimal(active={"budget": 0}), "active.budget"),
        (minimal(active={"committee": 1}), "active.committee"),
        (minimal(active={"temperatures": [300, -5]}), "active.temperatures[1]"),
        (minimal(active={"starts": ["a+b+c-"]}), "active.starts[0]"),
        (minimal(active={"metric": "virial"}), "active.metric"),
        (minimal(active={"supercells": [2, 0]}), "active.supercells[1]"),
        (minimal(active={"supercells": "4"}), "active.supercells[0]"),
        (minimal(active={"supercells": [3], "starts": ["a+b-b-"]}), "active.supercells"),
        (minimal(active={"supercells": [2, 4]}, training={"models": ["linear"]}), "active.supercells"),
        (minimal(active=True, training={"enabled": False}), "active"),
    ],
)
def test_malformed_specs_name_the_field(data, field):
    with pytest.raises(SpecError) as info:
        validate_spec(data)
    msg = str(info.value)
    # a field path ends at ":"; a longer expectation (path and the start of the message) is matched as given
    assert msg.startswith(f"campaign spec: {field}" + ("" if " " in field else ":")), msg
    assert "\n" not in msg and "pydantic" not in msg  # one line of ours, not a validation-error dump
    assert isinstance(info.value, PesError) and isinstance(info.value, ValueError)


def test_errors_say_what_is_allowed():
    with pytest.raises(SpecError, match=r"one of \['sevennet', 'chgnet', 'cp2k', 'vasp'\]"):
        validate_spec(minimal(calculator={"name": "gaussian"}))
    with pytest.raises(SpecError, match="allowed fields here are"):
        validate_spec(minimal(steps={"random": {"radius": 1}}))
    with pytest.raises(SpecError, match="a0a0c\\+"):  # lists the known tilt systems
        validate_spec(minimal(steps={"relax_tilts": {"systems": ["x"]}}))


def test_load_spec_reports_missing_files_and_bad_yaml(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)


def test_malformed_spec_is_rejected_before_anything_is_submitted(run_pes, pes_home, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ncalculator: {name: sevennet}\nsteps:\n  random: {count: -3}\n")
    proc = run_pes("campaign", "submit", bad, check=2)
    assert proc.stderr.strip().splitlines() == ["pes: error: campaign spec: steps.random.count: must be >= 1; got -3"]
    proc = run_pes("campaign", "run", bad, check=2)
    assert "steps.random.count" in proc.stderr
    # nothing reached the LaunchPad (the store may not even exist yet)
    from perovskite_pes.db import get_launchpad

    assert get_launchpad().workflows.count_documents({}) == 0


def test_longer_pair_sets_and_the_staged_net_recipe_validate():
    """Any '+'-joined set the descriptors layer builds is allowed, and net options reach train_and_select."""
    from perovskite_pes.models.selection import merge_settings

    spec = validate_spec(
        minimal(
            descriptors={"clusters": "30p+t+o", "max_order": 4, "metric": "inv"},
            training={
                "models": ["site", "linear"],
                "grid": {"clusters": ["11p+t+o", "30p+t+o", "10p+t+o+s"]},
                "options": {"training": {"linear_term": True, "net_order": 2, "epochs": 0}},
            },
        )
    )
    settings = merge_settings(spec.training_settings())
    assert settings["grid"]["clusters"] == ["11p+t+o", "30p+t+o", "10p+t+o+s"] and settings["metric"] == "inv"
    assert settings["training"]["linear_term"] is True and settings["training"]["net_order"] == 2


def test_simulate_step_is_off_by_default_and_builds_a_firework_before_the_report():
    from perovskite_pes.workflows.builder import build_workflow

    assert not validate_spec(minimal()).simulate.enabled
    spec = validate_spec(minimal(simulate={"method": "mc", "t_min": 200, "t_max": 400, "seeds": [3]}))
    assert spec.simulate.enabled and spec.simulate.supercell == 4 and spec.simulate.seeds == (3,)
    kwargs = spec.simulate.scan_kwargs()
    assert kwargs["method"] == "mc" and "timestep_fs" not in kwargs and "enabled" not in kwargs
    assert validate_spec(spec.to_dict()).to_dict() == spec.to_dict()
    wf = build_workflow(spec)
    by_name = {fw.name: fw for fw in wf.fws}
    sim, report, train = by_name["t: simulate"], by_name["t: report (final)"], by_name["t: train (final)"]
    assert wf.links[train.fw_id] == [sim.fw_id] and wf.links[sim.fw_id] == [report.fw_id]
    assert sim.tasks[0]["simulate"]["t_max"] == 400.0


def test_simulate_guard_reaches_the_scan_and_old_hashes_stay():
    from perovskite_pes.simulation.common import DEFAULT_MAX_DISPLACEMENT
    from perovskite_pes.simulation.transitions import TransitionScan
    from perovskite_pes.workflows.builder import spec_hash
    from perovskite_pes.workflows.spec import SimulateSpec

    assert SimulateSpec.model_fields["max_displacement"].default == DEFAULT_MAX_DISPLACEMENT
    plain = validate_spec(minimal(simulate=True))
    assert "max_displacement" not in plain.to_dict()["simulate"]  # the hash of a spec without it is unchanged
    assert plain.simulate.scan_kwargs()["max_displacement"] == DEFAULT_MAX_DISPLACEMENT
    spec = validate_spec(minimal(simulate={"max_displacement": 3}))
    assert spec.to_dict()["simulate"]["max_displacement"] == 3.0 and spec_hash(spec) != spec_hash(plain)
    assert validate_spec(spec.to_dict()) == spec
    assert TransitionScan("model", **spec.simulate.scan_kwargs()).options["max_displacement"] == 3.0
    with pytest.raises(SpecError, match=r"^campaign spec: simulate.max_displacement: must be >= 0.5"):
        validate_spec(minimal(simulate={"max_displacement": 0.1}))


def test_trust_bounds_per_supercell():
    one = validate_spec(minimal(active={"supercells": [2, 4], "lower": 0.05, "upper": 2.0})).active
    assert one.trust_bounds() == (0.05, 2.0)
    spec = validate_spec(minimal(active={"supercells": [2, 4], "lower": [0.05, 0.3], "upper": 2.0}))
    assert spec.active.trust_bounds() == ({2: 0.05, 4: 0.3}, {2: 2.0, 4: 2.0})
    assert spec.to_dict()["active"]["lower"] == [0.05, 0.3] and validate_spec(spec.to_dict()) == spec
    with pytest.raises(SpecError, match=r"active.upper: the trust window needs lower < upper for the 4x4x4 cell"):
        validate_spec(minimal(active={"supercells": [2, 4], "lower": [0.05, 0.3], "upper": [1, 0.2]}))


def test_active_loop_starts_after_the_first_training_with_a_committee():
    from perovskite_pes.workflows.builder import build_workflow

    spec = validate_spec(minimal(active={"temperatures": [300, 600], "committee": 3}, simulate={"method": "mc"}))
    assert spec.active.enabled and spec.active.temperatures == (300.0, 600.0)
    wf = build_workflow(spec)
    by_name = {fw.name: fw for fw in wf.fws}
    train, loop = by_name["t: train (initial)"], by_name["t: active learning 1"]
    assert loop.fw_id in wf.links[train.fw_id] and "t: simulate" not in by_name  # the loop adds it at its end
    task = loop.tasks[0]
    assert task["iteration"] == 1 and task["training"]["committee"] == {"size": 3, "resample": "bootstrap"}
    assert task["simulate"]["method"] == "mc"
    assert train.tasks[0]["training"]["committee"] == {"size": 3, "resample": "bootstrap"}
    assert "supercells" not in task["active"] and task["active"]["supercell"] == 2  # the training cell
    wider = build_workflow(validate_spec(minimal(active={"supercells": [2, 4]})))
    task = next(fw for fw in wider.fws if fw.name == "t: active learning 1").tasks[0]
    assert task["active"]["supercells"] == [2, 4]


# a spec touching every section, in the short forms a YAML file may use (scalars for lists, true/false
# for steps, a switched-off section with values, defaults left out)
EVERY_SECTION = {
    "name": "t",
    "calculator": {"name": "sevennet"},
    "simulate": {"enabled": False, "t_min": 7},
    "steps": {
        "relax_tilts": {"systems": "a0a0c+", "angles_deg": {"a": 5, "b": 6, "c": 7}},
        "mode_grid": {"amplitudes": 0.1},
        "random": True,
        "strain_grid": False,
        "interpolations": [{"path": ["a0a0a0", "a0a0c+"]}],
    },
    "supercell": [2, 2, 2],
    "reference": {"lattice_parameter": 6},
    "retrain": False,
    "training": {"batch_sizes": 10, "epochs": [3], "options": {"training": {"patience": 5}}},
}


def test_spec_hashes_do_not_change():
    """Submitted campaigns are recognised by the hash of the filled-in spec: it must not drift."""
    from perovskite_pes.workflows.builder import spec_hash

    assert spec_hash(validate_spec(minimal())) == "54584283070c85e07d418b452af7f1d97ab28ef8"
    assert spec_hash(validate_spec(EVERY_SECTION)) == "3bbe8ee58d13a239b2e2a066be2157fe5a6a967c"
    assert spec_hash(load_spec(ROOT / "workflows" / "quickstart.yaml")) == "41c213bedd3645ebe01ffe5146c11083f951e453"


def test_a_field_added_later_enters_the_spec_dict_only_when_set():
    from perovskite_pes.workflows.builder import spec_hash

    default = validate_spec(minimal(active={"iterations": 2}))
    off = validate_spec(minimal(active={"iterations": 2, "final_exploration": False}))
    assert "final_exploration" not in default.to_dict()["active"] and default.active.final_exploration
    assert off.to_dict()["active"]["final_exploration"] is False
    assert spec_hash(off) != spec_hash(default)
    assert validate_spec(off.to_dict()) == off  # round trip
    folds = validate_spec(minimal(active={"committee": 3, "resample": "cv"}, training={"folds": 3}))
    assert folds.to_dict()["active"]["resample"] == "cv" and "resample" not in default.to_dict()["active"]
    with pytest.raises(SpecError, match=r"active.committee: .*must equal training.folds \(5\); got 4"):
        validate_spec(minimal(active={"committee": 4, "resample": "cv"}, training={"folds": 5}))
    far = validate_spec(minimal(active={"iterations": 2, "max_displacement": 3}))
    assert "max_displacement" not in default.to_dict()["active"] and default.active.max_displacement == 2.0
    assert far.to_dict()["active"]["max_displacement"] == 3.0 and validate_spec(far.to_dict()) == far
    assert spec_hash(far) != spec_hash(default)
    with pytest.raises(SpecError, match=r"active.max_displacement"):
        validate_spec(minimal(active={"max_displacement": 0.1}))
    near = validate_spec(minimal(active={"iterations": 2, "distance_margin": 0.1}))
    assert "distance_margin" not in default.to_dict()["active"] and default.active.distance_margin is None
    assert near.to_dict()["active"]["distance_margin"] == 0.1 and validate_spec(near.to_dict()) == near
    assert spec_hash(near) != spec_hash(default)
    for bad in (-0.1, 1.0, "close"):
        with pytest.raises(SpecError, match=r"^campaign spec: active.distance_margin: "):
            validate_spec(minimal(active={"distance_margin": bad}))


def test_short_forms_and_switches():
    spec = validate_spec(EVERY_SECTION)
    st = spec.steps
    assert st.relax_tilts.systems == ("a0a0c+",) and st.relax_tilts.angles_deg == {"a": 5.0, "b": 6.0, "c": 7.0}
    assert st.mode_grid.enabled and st.mode_grid.amplitudes == (0.1,)  # a mapping switches a step on
    assert st.random.enabled and st.random.count == 100  # true: on, with its defaults
    assert not st.strain_grid.enabled and not spec.retrain.enabled
    assert spec.simulate == validate_spec(minimal()).simulate  # switched off: back to its defaults
    assert spec.training.batch_sizes == (10,) and spec.training.epochs == (3,)
    assert spec.reference.lattice_parameter == 6.0 and isinstance(spec.reference.lattice_parameter, float)
    assert validate_spec(minimal(steps={"random": {}})).steps.random.enabled  # an empty mapping is a mapping
    assert not validate_spec(minimal(steps={"random": None})).steps.random.enabled  # an empty entry is no entry
    assert not validate_spec(
        minimal(steps={"mode_grid": {"enabled": False, "amplitudes": [0.2]}})
    ).steps.mode_grid.enabled
    # the file it came from is kept, but it is no field of the spec
    with pytest.raises(SpecError, match="source: unknown field"):
        validate_spec(minimal(source="x.yaml"))
    assert load_spec(ROOT / "workflows" / "quickstart.yaml").source.endswith("quickstart.yaml")
    assert "source" not in spec.to_dict() and "description" not in validate_spec(minimal(description="text")).to_dict()


def test_specs_are_frozen_typed_models():
    import pydantic

    spec = validate_spec(minimal())
    assert isinstance(spec, pydantic.BaseModel)
    with pytest.raises(pydantic.ValidationError):
        spec.seed = 3
    with pytest.raises(pydantic.ValidationError):
        spec.steps.random.count = 3


def test_training_defaults_are_train_and_selects():
    """Defaults the spec shares with model selection are written once, in the selection settings."""
    from perovskite_pes.models.selection import SelectionSettings, merge_settings

    sel = SelectionSettings()
    t = validate_spec(minimal()).training
    assert (t.folds, t.test_fraction, t.n_jobs) == (sel.n_folds, sel.test_fraction, sel.n_jobs)
    assert list(t.batch_sizes) == sel.training.batch_sizes and list(t.epochs) == sel.training.epochs
    assert (t.learning_rate, t.force_weight) == (sel.training.learning_rate, sel.training.force_weight)
    assert t.stress_weight == sel.training.stress_weight == 0.0
    merged = merge_settings(validate_spec(minimal()).training_settings())
    defaults = sel.to_dict()
    for key in ("n_folds", "test_fraction", "n_jobs", "metric", "truncated"):
        assert merged[key] == defaults[key], key
    assert merged["training"] == defaults["training"]


def test_stress_weight_reaches_the_nets_and_is_checked():
    spec = minimal()
    spec["training"] = {"stress_weight": 0.5}
    with_stress = validate_spec(spec)
    assert with_stress.training_settings()["training"]["stress_weight"] == 0.5
    assert (
        with_stress.to_dict()["training"]["stress_weight"] == 0.5
        and validate_spec(with_stress.to_dict()) == with_stress
    )
    assert "stress_weight" not in validate_spec(minimal()).to_dict()["training"]  # the hash of older specs stays
    spec["training"] = {"stress_weight": -1}
    with pytest.raises(SpecError, match="stress_weight"):
        validate_spec(spec)


def test_schema_command_prints_a_schema_the_shipped_specs_satisfy(capsys):
    import json

    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    from perovskite_pes.cli import main
    from perovskite_pes.workflows.spec import CampaignSpec

    assert main(["campaign", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert set(schema["required"]) == {"name", "calculator"}
    assert set(schema["properties"]) == set(CampaignSpec.input_fields()) and "source" not in schema["properties"]
    # editors show the fields' documentation
    assert "one Firework" in schema["$defs"]["FireworksSpec"]["properties"]["per_firework"]["description"]
    validator = jsonschema.Draft202012Validator(schema)
    for path in SHIPPED:
        errors = list(validator.iter_errors(yaml.safe_load(path.read_text())))
        assert not errors, (path.name, [e.message for e in errors])
    assert not list(validator.iter_errors(EVERY_SECTION))
    # what an editor can flag without running anything: unknown keys, bounds, choices, Glazer symbols
    for bad in (
        minimal(colour="red"),
        minimal(steps={"random": {"count": -3}}),
        minimal(steps={"random": {"radius": 1}}),
        minimal(fireworks={"category": "gpu"}),
        minimal(simulate={"heat_start": "a+b+c-"}),
        minimal(training={"test_fraction": 0}),
        {"name": "t"},
    ):
        assert list(validator.iter_errors(bad)), bad


def test_validate_command_names_the_loop_and_the_closing_ladder(capsys):
    import json

    from perovskite_pes.cli import main

    assert main(["campaign", "validate", str(ROOT / "workflows" / "cspbbr3_active.yaml"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["active"] == "10 round(s), at most 5000 calculations, committee of 4, MD at 100-700 K in 2x2x2, 4x4x4"
    assert out["simulate"] == "MD heat/cool 8x8x8, 100-650 K every 25 K, seeds [0, 1]"
    assert "thermal_md" in out["steps"] and "tilt_grid" in out["steps"]
    assert main(["campaign", "validate", str(ROOT / "workflows" / "cspbbr3_thermal.yaml"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["active"] == "off" and out["simulate"].startswith("MC heat 8x8x8")
