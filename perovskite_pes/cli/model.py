"""``pes model``: train, list, show energy models; predict and evaluate structures from files."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from ._tables import print_table

HELP = "train energy models (cross-validated), list/show the registry, predict and evaluate structures"


def register(subparsers) -> None:
    p = subparsers.add_parser("model", help=HELP, description=HELP)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])
    verbs = p.add_subparsers(dest="verb", metavar="VERB")

    t = verbs.add_parser(
        "train",
        help="select a model by k-fold CV on the database's calculations, refit, test, register",
        description="Train on every completed calculation of one calculator: 80/20 train/test split, k-fold "
        "cross-validation over the grid (model type x cluster set x order x layers x nodes), the best refitted on "
        "the training part, test RMSE with pair-potential and linear-CE baselines, figures and report in the "
        "model's folder, and the model recorded in the database.",
    )
    t.add_argument(
        "--calculator", default=None, help="calculator whose calculations to train on (default: the only one stored)"
    )
    t.add_argument("--settings-hash", default=None, help="calculator settings hash (default: the only one stored)")
    t.add_argument("--name", default=None, help="model name (default <calculator>-<model type>)")
    t.add_argument(
        "--models", default=None, help="comma-separated model types: cluster, site, linear, pair (default cluster)"
    )
    t.add_argument(
        "--clusters",
        default=None,
        help="comma-separated cluster sets: the paper's 4p+o, 5p+o, 8p+o, 4p+t+o, "
        "7p+t+o (default) or any <k>p+t+o, e.g. 30p+t+o",
    )
    t.add_argument("--orders", default=None, help="comma-separated basis orders (default 2)")
    t.add_argument("--layers", default=None, help="comma-separated hidden-layer counts (default 1)")
    t.add_argument("--nodes", default=None, help="comma-separated nodes per layer (default 8)")
    t.add_argument(
        "--metric", default=None, choices=["lin", "quad", "log", "inv"], help="pair deformation metric (default lin)"
    )
    t.add_argument("--linear-term", action="store_true", help="nets = ridge linear CE + MLPs trained on what it misses")
    t.add_argument("--net-order", type=int, default=None, help="highest basis degree the MLPs see (with --linear-term)")
    t.add_argument("--lbfgs-iterations", type=int, default=None, help="L-BFGS refinement after Adam (default 0)")
    t.add_argument("--folds", type=int, default=None, help="cross-validation folds (default 10)")
    t.add_argument("--test-fraction", type=float, default=None, help="share held out for the test (default 0.2)")
    t.add_argument(
        "--larger-test-fraction",
        type=float,
        default=None,
        help="share of the configurations of larger supercells held out and scored apart (default 0: all of them "
        "train the nets)",
    )
    t.add_argument("--epochs", default=None, help="epochs per batch-size stage, one number or comma-separated")
    t.add_argument("--batch-sizes", default=None, help="batch-size schedule (default 2,10,100,1000)")
    t.add_argument("--learning-rate", type=float, default=None)
    t.add_argument("--force-weight", type=float, default=None, help="weight of the force term in the loss (default 0)")
    t.add_argument(
        "--stress-weight", type=float, default=None, help="weight of the stress term in the loss (default 0)"
    )
    t.add_argument(
        "--energy-weight-scale",
        type=float,
        default=None,
        help="weigh each configuration by S/(S + its energy per atom above the lowest), S in eV/atom (default: equal)",
    )
    t.add_argument(
        "--size-weight",
        type=float,
        default=None,
        metavar="P",
        help="weigh each configuration by (its atoms / the smallest supercell's) ** P (default 0: equal; 1: per cell)",
    )
    t.add_argument(
        "--max-energy",
        type=float,
        default=None,
        metavar="MEV_PER_FU",
        help="train only on configurations within this many meV per formula unit of the lowest energy (default: all)",
    )
    t.add_argument("--n-jobs", type=int, default=None, help="parallel cross-validation workers (default 2)")
    t.add_argument("--seed", type=int, default=None, help="random seed of the split, folds and fits (default 0)")
    t.add_argument(
        "--committee",
        type=int,
        default=None,
        metavar="K",
        help="refit the selected setting as a committee of K models (K >= 2) whose spread estimates the error",
    )
    t.add_argument(
        "--resample",
        default=None,
        choices=["bootstrap", "folds", "none", "cv"],
        help="training data of the committee's members: bootstrap resamples (default), K-fold complements, or all; "
        "cv: the cross-validation's fold models of the selected setting are the committee (K = --folds, no refit)",
    )
    t.add_argument("--learning-curve", default=None, help="training fractions for a learning curve, e.g. 0.25,0.5,1")
    t.add_argument(
        "--settings",
        default=None,
        metavar="FILE",
        help="YAML/JSON file with train_and_select settings, or a campaign spec (its training as the campaign "
        "trains), merged first",
    )
    t.add_argument("--workdir", default=None, help="output folder (default $PES_HOME/models/<name>-<time>)")
    t.add_argument("--no-activate", action="store_true", help="register without making it the active model")
    t.add_argument("--json", action="store_true", help="print JSON for scripts")
    t.set_defaults(func=cmd_train)

    ls = verbs.add_parser("list", help="registered models with their test RMSE and which one is active")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)

    sh = verbs.add_parser("show", help="one model: recipe, hyperparameters and metrics")
    sh.add_argument(
        "model", nargs="?", default=None, help="model id, name or saved-model folder (default: the active model)"
    )
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(func=cmd_show)

    for verb, helptext in (
        ("predict", "energies (and forces) of the structures in an extended XYZ, CIF or POSCAR file"),
        ("evaluate", "RMSE and MAE against the energies in an extended XYZ file"),
    ):
        v = verbs.add_parser(
            verb,
            help=helptext,
            description=helptext + ". Structures may be in any atom order, "
            "rotated or wrapped; they must be supercells of the model's reference perovskite.",
        )
        v.add_argument("file", help="structure file (.xyz/.extxyz, .cif, POSCAR/CONTCAR/.vasp)")
        v.add_argument("--model", default=None, help="model id, name or saved-model folder (default: the active model)")
        v.add_argument(
            "--format", default=None, help="file format for ASE when the name does not tell (extxyz, cif, vasp)"
        )
        v.add_argument(
            "--supercell",
            default=None,
            help="supercell of the reference: n, 'n1 n2 n3' or 9 integers (default: inferred)",
        )
        v.add_argument("--json", action="store_true")
        if verb == "predict":
            v.add_argument("--forces", action="store_true", help="also print forces (eV/A), per atom in file order")
            v.add_argument(
                "--stress", action="store_true", help="also print the stress (eV/A^3, Voigt xx yy zz yz xz xy)"
            )
            v.set_defaults(func=cmd_predict)
        else:
            v.add_argument(
                "--energy-key", default="energy", help="info key of the reference energy (default: the file's energy)"
            )
            v.add_argument(
                "--by",
                action="append",
                default=None,
                metavar="KEY",
                help="break the errors down by this info key of the file, or key of its pes_tags, e.g. "
                "temperature_K or supercell in a `pes db export` file (repeatable; default: every text info key "
                "with 2-50 distinct values, e.g. kind or tilt_system); RMSE, mean error (model minus file) and max",
            )
            v.add_argument(
                "--plot",
                default=None,
                metavar="PNG",
                help="committee models: where to write the calibration plot (default calibration-<file>.png here)",
            )
            v.set_defaults(func=cmd_evaluate)


# ---------------------------------------------------------------------------------------- helpers
def _ints(text: str, what: str) -> list[int]:
    from ..models import ModelError

    try:
        return [int(x) for x in str(text).replace(" ", ",").split(",") if x]
    except ValueError:
        raise ModelError(f"{what} must be comma-separated integers; got {text!r}") from None


def _fmt(x, digits=3):
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def _load_settings_file(path) -> dict:
    from ..models import ModelError

    p = Path(path)
    if not p.is_file():
        raise ModelError(f"settings file {path!r} does not exist")
    text = p.read_text()
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:
        raise ModelError(f"{path}: not valid YAML/JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a mapping of train_and_select settings or a campaign spec")
    if "steps" in data:  # a campaign spec: its training section as the campaign runs it
        from ..workflows.spec import validate_spec

        return validate_spec(data, source=str(p)).campaign_training_settings()
    return data


def _resolve_model(spec):
    """(model record or None, model folder) from an id, a name, a folder or the active model."""
    from ..models import ModelError

    if spec is not None and Path(spec).expanduser().is_dir():
        return None, Path(spec).expanduser()
    from ..db import get_store

    store = get_store()
    if spec is None:
        rec = store.active_model()
        if rec is None:
            raise ModelError("no active model in the database: train one (pes model train) or pass --model")
    else:
        matches = [m for m in store.list_models() if m["id"] == spec or m["name"] == spec]
        if not matches:
            raise ModelError(f"no model with id or name {spec!r} (see pes model list), and no such folder")
        rec = matches[-1]  # the newest of that name
    path = Path(rec["path"])
    if not (path / "model.json").is_file():
        raise ModelError(f"model {rec['name']} ({rec['id']}): its folder {path} is missing or holds no model.json")
    return rec, path


def _read_frames(path, fmt=None):
    from ase.io import read

    from ..models import ModelError

    p = Path(path)
    if not p.exists():
        raise ModelError(f"structure file {path!r} does not exist")
    try:
        frames = read(str(p), index=":", format=fmt)
    except Exception as exc:  # ASE raises many kinds for unreadable files
        raise ModelError(f"{path}: cannot read structures ({exc}); give --format (extxyz, cif, vasp)") from None
    if not isinstance(frames, list):
        frames = [frames]
    if not frames:
        raise ModelError(f"{path}: no structures in the file")
    return frames


def _supercell_arg(text):
    if text is None:
        return None
    vals = _ints(text, "--supercell")
    if len(vals) == 1:
        return vals[0]
    if len(vals) == 3:
        return vals
    if len(vals) == 9:
        return [vals[0:3], vals[3:6], vals[6:9]]
    from ..models import ModelError

    raise ModelError(f"--supercell needs 1, 3 or 9 integers; got {len(vals)}")


def _predict_frames(model_dir, frames, supercell):
    """Per frame: energy, forces (file order), stress with the model, via the ASE calculator; for a
    committee also its spread (energy_std, forces_std, max_force_deviation)."""
    from ..models import ModelError, PESCalculator
    from ..models.calculator import SPREAD_PROPERTIES

    calc = PESCalculator(model_dir, supercell=supercell)
    out = []
    for i, atoms in enumerate(frames):
        a = atoms.copy()
        a.calc = calc
        try:
            r = {
                "energy": a.get_potential_energy(),
                "forces": a.get_forces(),
                "stress": a.get_stress(),
                "n_atoms": len(a),
            }
        except ModelError as exc:
            raise ModelError(f"structure {i}: {exc}") from None
        if calc.uncertainty:
            r.update({k: calc.results[k] for k in SPREAD_PROPERTIES})
        out.append(r)
    return calc, out


# ---------------------------------------------------------------------------------------- verbs
def cmd_train(args) -> int:
    import numpy as np

    from ..db import get_store
    from ..models import ModelError, train_and_select, training_stresses
    from ..settings import Settings
    from ..workflows.retrain import metrics_from_report

    store = get_store()
    data = store.training_data(calculator=args.calculator, settings_hash=args.settings_hash, status="completed")
    if not data:
        raise ModelError(
            f"no completed calculations{' of ' + args.calculator if args.calculator else ''} "
            "in the database to train on"
        )
    calculators = sorted({d["calculator"] for d in data})
    if len(calculators) > 1:
        raise ModelError(
            f"the database holds calculations of several calculators {calculators}; choose one with --calculator"
        )
    hashes = sorted({d.get("settings_hash") for d in data if d.get("settings_hash")})
    if len(hashes) > 1:
        raise ModelError(
            f"calculations of {calculators[0]} with several settings hashes {hashes}; choose one with --settings-hash"
        )
    calculator = calculators[0]
    settings_hash = args.settings_hash or (hashes[0] if hashes else None)

    settings = _load_settings_file(args.settings) if args.settings else {}
    # command-line values override the settings file, which overrides train_and_select's defaults
    # (except the model types: the command trains the cluster net unless told otherwise)
    grid = dict(settings.get("grid", {}))
    grid.setdefault("model", ["cluster"])
    for key, value in (("model", args.models), ("clusters", args.clusters)):
        if value:
            grid[key] = value.split(",")
    for key, value, flag in (
        ("max_order", args.orders, "--orders"),
        ("layers", args.layers, "--layers"),
        ("nodes", args.nodes, "--nodes"),
    ):
        if value:
            grid[key] = _ints(value, flag)
    settings["grid"] = grid
    if args.metric:
        settings["metric"] = args.metric
    # a flag given wins over the settings file, which wins over train_and_select's defaults
    for key, value in (
        ("max_energy_mev_per_fu", args.max_energy),
        ("larger_test_fraction", args.larger_test_fraction),
        ("n_folds", args.folds),
        ("test_fraction", args.test_fraction),
        ("n_jobs", args.n_jobs),
        ("seed", args.seed),
    ):
        if value is not None:
            settings[key] = value
    settings["progress"] = True
    training = dict(settings.get("training", {}))
    if args.epochs:
        ep = _ints(args.epochs, "--epochs")
        training["epochs"] = ep[0] if len(ep) == 1 else ep
    if args.batch_sizes:
        training["batch_sizes"] = _ints(args.batch_sizes, "--batch-sizes")
    if args.learning_rate is not None:
        training["learning_rate"] = args.learning_rate
    if args.force_weight is not None:
        training["force_weight"] = args.force_weight
    if args.stress_weight is not None:
        training["stress_weight"] = args.stress_weight
    if args.energy_weight_scale is not None:
        training["energy_weight_scale"] = args.energy_weight_scale
    if args.size_weight is not None:
        training["size_weight"] = args.size_weight
    if args.linear_term:
        training["linear_term"] = True
    if args.net_order is not None:
        training["net_order"] = args.net_order
    if args.lbfgs_iterations is not None:
        training["lbfgs_iterations"] = args.lbfgs_iterations
    settings["training"] = training
    if args.learning_curve:
        settings["learning_curve"] = [float(x) for x in args.learning_curve.split(",") if x]
    if args.committee is not None or args.resample is not None:
        committee = dict(settings.get("committee") or {})
        if args.committee is not None:
            committee["size"] = args.committee
        if args.resample is not None:
            committee["resample"] = args.resample
        if not committee.get("size"):
            raise ModelError("--resample needs --committee K (or committee.size in the settings file)")
        settings["committee"] = committee

    configs = [d["config"] for d in data]
    energies = np.array([float(d["energy"]) for d in data])
    forces = [d.get("forces") for d in data]
    if float(training.get("force_weight") or 0) > 0 and any(f is None for f in forces):
        raise ModelError("--force-weight > 0 but some calculations have no forces")
    forces = None if any(f is None for f in forces) else forces
    stresses = training_stresses(data, float(training.get("stress_weight") or 0) > 0, "--stress-weight > 0")

    size = int((settings.get("committee") or {}).get("size") or 0)
    name = args.name or f"{calculator}-{'-'.join(grid['model'])}" + (f"-committee{size}" if size else "")
    workdir = (
        Path(args.workdir)
        if args.workdir
        else Settings.load().home / "models" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    model, report = train_and_select(configs, energies, forces, settings, workdir, stresses=stresses)
    metrics = metrics_from_report(report)
    model_id = store.register_model(
        name=name,
        path=str(workdir / "model"),
        calculator=calculator,
        settings_hash=settings_hash,
        metrics=metrics,
        hyperparameters={"best": report["best"], "settings": report["settings"]},
        calc_ids=[d["calc_id"] for d in data],
        activate=not args.no_activate,
    )
    store.flush()
    summary = {
        "id": model_id,
        "name": name,
        "path": str(workdir / "model"),
        "calculator": calculator,
        "settings_hash": settings_hash,
        "active": not args.no_activate,
        "metrics": metrics,
    }
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    if report.get("excluded_indices"):
        print(
            f"{len(report['excluded_indices'])} of {len(data)} configurations lie more than "
            f"{report['settings']['max_energy_mev_per_fu']:g} "
            "meV/f.u. above the lowest energy and were left out"
        )
    if report.get("larger_supercells"):
        sizes = report["larger_supercells"]["supercells"]
        print(
            f"{len(report['larger_supercells']['indices'])} configurations of larger supercells ("
            + ", ".join(f"{n} of {atoms} atoms" for atoms, n in sizes.items())
            + ") trained the nets as well; the CV and test errors below are those of the smallest supercell"
        )
    if report.get("larger_test"):
        lt = report["larger_test"]
        per = ", ".join(
            f"{v['rmse_mev_per_atom']:.3g} on {v['n']} of {atoms} atoms" for atoms, v in lt["per_supercell"].items()
        )
        f_rmse = lt.get("force_rmse_ev_per_a")
        forces = f", forces {f_rmse:.3g} eV/A" if f_rmse is not None else ""
        rmse = lt["rmse_mev_per_atom"]
        print(f"held-out configurations of larger supercells: RMSE {rmse:.3g} meV/atom ({per}){forces}")
    _print_cv(report)
    _print_test(report)
    if report.get("committee"):
        _print_calibration(report["committee"])
    print(f"model {name} ({model_id}) saved in {workdir / 'model'}{' and activated' if not args.no_activate else ''}")
    print(f"report and figures: {workdir}")
    return 0


def _print_calibration(cal: dict) -> None:
    """Spread against error on the test set: one row per quantity."""
    rows = []
    for key, what in (("test_energy", "energy (meV/atom)"), ("test_forces", "max force over atoms (eV/A)")):
        c = cal.get(key)
        if c:
            rows.append([what, c["n"], _fmt(c["rms_spread"], 4), _fmt(c["rms_error"], 4), _fmt(c["spearman"], 2)])
    _model_table(
        f"committee of {cal['size']} ({cal['resample']}): spread against error on the test set",
        ["quantity", "n", "RMS spread", "RMS error", "Spearman rho"],
        rows,
    )


def _print_cv(report):
    _model_table(
        "cross-validation (RMSE meV/atom)",
        ["setting", "train", "validation"],
        [
            [
                r["label"],
                f"{r['train_rmse_mean']:.3f} ± {r['train_rmse_std']:.3f}",
                f"{r['val_rmse_mean']:.3f} ± {r['val_rmse_std']:.3f}",
            ]
            for r in report["cv_table"]
        ],
    )


def _print_test(report):
    rows = []
    for m in report["models"].values():
        rows.append(
            [
                m["label"],
                _fmt(m["train"]["rmse_mev_per_atom"]),
                _fmt(m["test"]["rmse_mev_per_atom"]),
                _fmt(m["test"]["rmse_low_mev_per_atom"]),
            ]
        )
    _model_table(
        f"refit on {report['n_train']} training configurations, tested on {report['n_test']} (meV/atom)",
        ["model", "train RMSE", "test RMSE", "test RMSE <125 meV/f.u."],
        rows,
    )


def cmd_list(args) -> int:
    from ..db import get_store

    models = get_store().list_models()
    if args.json:
        print(json.dumps(models, indent=2, default=str))
        return 0
    if not models:
        print("no models registered (train one with: pes model train)")
        return 0
    rows = []
    for m in models:
        met = m.get("metrics") or {}
        rows.append(
            [
                m["id"],
                m["name"],
                m.get("calculator"),
                met.get("best"),
                _fmt(met.get("cv_rmse")),
                _fmt(met.get("test_rmse")),
                met.get("n_train", m.get("n_train")),
                met.get("n_test", "-"),
                "yes" if m.get("active") else "",
                str(m.get("created", ""))[:19],
            ]
        )
    _model_table(
        "models (RMSE meV/atom)",
        ["id", "name", "calculator", "selected", "CV RMSE", "test RMSE", "n fit", "n test", "active", "created"],
        rows,
    )
    return 0


def data_line(
    n_fit, n_data, n_test, what: str = "calculations", n_excluded=None, n_larger=None, n_larger_test=None
) -> str:
    """How many of a model's ``n_data`` calculations fitted it and how many tested it (one phrase); the
    ones left out above the training energy window and those of larger supercells (trained on, or held
    out and scored on their own) are counted apart."""
    if n_fit is None or n_test is None:
        return f"{n_data} {what}"
    if not (n_excluded or n_larger or n_larger_test):
        return f"fitted on {n_fit} of {n_data} {what}, tested on the other {n_test}"
    if n_larger_test:
        apart = [f"{n_larger or 0} of larger supercells trained on, {n_larger_test} held out and scored apart"]
    else:
        apart = [f"{n_larger} of larger supercells trained on, not scored"] if n_larger else []
    apart += [f"{n_excluded} above the energy window left out"] if n_excluded else []
    return f"fitted on {n_fit} of {n_data} {what}, tested on {n_test} ({'; '.join(apart)})"


def _data_line(rec: dict) -> str:
    met = rec.get("metrics") or {}
    n_data = len(rec.get("calc_ids") or []) or rec.get("n_train")
    return data_line(
        met.get("n_train"),
        n_data,
        met.get("n_test"),
        f"{rec.get('calculator')} calculations",
        met.get("n_excluded"),
        met.get("n_larger"),
        met.get("n_larger_test"),
    )


def cmd_show(args) -> int:
    from ..models.base import read_recipe

    rec, path = _resolve_model(args.model)
    recipe = read_recipe(path)
    out = {
        "record": {k: v for k, v in (rec or {}).items() if k != "calc_ids"},
        "path": str(path),
        "model_type": recipe["model_type"],
        "hyperparameters": recipe["hyperparameters"],
        "e0_per_fu": recipe["e0_per_fu"],
        "reference": recipe.get("reference"),
        "orbits": recipe["state"].get("orbit_names") or [],
        "n_inputs": recipe["state"].get("n_inputs"),
        "provenance": recipe.get("provenance"),
    }
    if args.json:
        print(json.dumps(out, indent=2, default=str))
        return 0
    if rec:
        print(
            f"model {rec['name']} ({rec['id']}){'  [active]' if rec.get('active') else ''}: {_data_line(rec)} "
            f"(settings {rec.get('settings_hash')})"
        )
    print(f"folder: {path}")
    print(f"type: {recipe['model_type']}   E0: {recipe['e0_per_fu']:.6f} eV per formula unit")
    hp = recipe["hyperparameters"]
    print("hyperparameters: " + ", ".join(f"{k}={v}" for k, v in hp.items()))
    if out["orbits"]:
        print("inputs per orbit: " + ", ".join(f"{n} ({k})" for n, k in zip(out["orbits"], out["n_inputs"] or [])))
    met = (rec or {}).get("metrics") or (recipe.get("provenance") or {})
    if met:
        print(
            "metrics: "
            + ", ".join(f"{k}={_fmt(v) if isinstance(v, float) else v}" for k, v in met.items() if k != "figures")
        )
    return 0


def cmd_predict(args) -> int:
    frames = _read_frames(args.file, args.format)
    _rec, path = _resolve_model(args.model)
    calc, res = _predict_frames(path, frames, _supercell_arg(args.supercell))
    spread = calc.uncertainty
    if args.json:
        out = []
        for i, r in enumerate(res):
            d = {
                "index": i,
                "n_atoms": r["n_atoms"],
                "energy": r["energy"],
                "energy_per_atom": r["energy"] / r["n_atoms"],
            }
            if spread:
                d.update(
                    energy_std=r["energy_std"],
                    energy_std_per_atom=r["energy_std"] / r["n_atoms"],
                    max_force_deviation=r["max_force_deviation"],
                )
            if args.forces:
                d["forces"] = r["forces"].tolist()
                if spread:
                    d["forces_std"] = r["forces_std"].tolist()
            if args.stress:
                d["stress"] = r["stress"].tolist()
            out.append(d)
        print(json.dumps({"model": str(path), "structures": out}, indent=2))
        return 0
    columns = ["#", "atoms", "energy (eV)", "eV/atom"] + (
        ["spread (meV/atom)", "max force dev. (eV/A)"] if spread else []
    )
    rows = []
    for i, r in enumerate(res):
        row = [i, r["n_atoms"], f"{r['energy']:.6f}", f"{r['energy'] / r['n_atoms']:.6f}"]
        if spread:
            row += [f"{1000 * r['energy_std'] / r['n_atoms']:.3f}", f"{r['max_force_deviation']:.4f}"]
        if args.stress:
            row.append(" ".join(f"{s:.5f}" for s in r["stress"]))
        rows.append(row)
    _model_table(
        f"predictions of {path}" + (" (committee mean and spread)" if spread else ""),
        columns + (["stress (eV/A^3)"] if args.stress else []),
        rows,
    )
    if args.forces:
        for i, (atoms, r) in enumerate(zip(frames, res)):
            print(f"forces of structure {i} (eV/A){'; last column: deviation among the committee' if spread else ''}:")
            for k, (sym, f) in enumerate(zip(atoms.get_chemical_symbols(), r["forces"])):
                print(
                    f"  {sym:<3}{f[0]:12.6f}{f[1]:12.6f}{f[2]:12.6f}"
                    + (f"{r['forces_std'][k]:12.6f}" if spread else "")
                )
    return 0


def cmd_evaluate(args) -> int:
    import numpy as np

    from ..models import ModelError

    frames = _read_frames(args.file, args.format)
    ref_e = []
    for i, atoms in enumerate(frames):
        e = atoms.info.get(args.energy_key) if args.energy_key != "energy" else None
        if e is None:
            try:
                e = atoms.get_potential_energy() if atoms.calc is not None else atoms.info.get("energy")
            except Exception:
                e = atoms.info.get("energy")
        if e is None:
            raise ModelError(
                f"{args.file}: structure {i} has no reference energy (key {args.energy_key!r}); "
                "evaluate needs labelled extended XYZ"
            )
        ref_e.append(float(e))
    ref_e = np.array(ref_e)
    _rec, path = _resolve_model(args.model)
    calc, res = _predict_frames(path, frames, _supercell_arg(args.supercell))
    pred = np.array([r["energy"] for r in res])
    n = np.array([r["n_atoms"] for r in res], dtype=float)
    err = (pred - ref_e) / n * 1000.0
    out = {
        "model": str(path),
        "file": str(args.file),
        "n": len(frames),
        "rmse_mev_per_atom": float(np.sqrt(np.mean(err**2))),
        "mae_mev_per_atom": float(np.mean(np.abs(err))),
        "max_abs_error_mev_per_atom": float(np.max(np.abs(err))),
    }
    ref_f = [_forces_of(a) for a in frames]
    has_forces = all(f is not None for f in ref_f)
    if has_forces:
        df = np.concatenate([(r["forces"] - f).ravel() for r, f in zip(res, ref_f)])
        out["force_rmse_ev_per_a"] = float(np.sqrt(np.mean(df**2)))
        out["force_mae_ev_per_a"] = float(np.mean(np.abs(df)))
    if calc.uncertainty:
        out["spread"] = _evaluate_spread(args, res, err, n, ref_f if has_forces else None)
    out.update(_breakdown(frames, pred, ref_e, n, args.by, path))
    outside = out["outside_training_energy_range"]
    if outside:
        lo, hi = out["training_energy_range_mev_per_fu"]
        print(
            f"warning: {len(outside)} of {len(frames)} structures lie outside the energy range "
            "of the model's training data "
            f"({lo:.1f} to {hi:.1f} meV/f.u. above its lowest energy), so their errors measure extrapolation: "
            f"structures {', '.join(map(str, outside[:20]))}{' ...' if len(outside) > 20 else ''}",
            file=sys.stderr,
        )
    if args.json:
        out["errors_mev_per_atom"] = err.tolist()
        print(json.dumps(out, indent=2))
        return 0
    print(f"{out['n']} structures from {args.file} with {path}")
    print(
        f"energy RMSE {out['rmse_mev_per_atom']:.3f} meV/atom   MAE {out['mae_mev_per_atom']:.3f} meV/atom   "
        f"max {out['max_abs_error_mev_per_atom']:.3f} meV/atom"
    )
    if "force_rmse_ev_per_a" in out:
        print(f"force RMSE {out['force_rmse_ev_per_a']:.4f} eV/A   MAE {out['force_mae_ev_per_a']:.4f} eV/A")
    _print_breakdown(out)
    if "spread" in out:
        sp = out["spread"]
        _model_table(
            "committee spread next to the error, per structure",
            ["#", "error (meV/atom)", "spread (meV/atom)"]
            + (["max force error (eV/A)", "max force dev. (eV/A)"] if has_forces else []),
            [
                [i, f"{err[i]:.3f}", f"{sp['energy_std_mev_per_atom'][i]:.3f}"]
                + ([f"{sp['max_force_error'][i]:.4f}", f"{sp['max_force_deviation'][i]:.4f}"] if has_forces else [])
                for i in range(len(err))
            ],
        )
        line = f"Spearman rank correlation of spread and |error|: energy {_fmt(sp['energy']['spearman'], 2)}"
        if has_forces:
            line += f", max force {_fmt(sp['forces']['spearman'], 2)}"
        print(line)
        print(f"calibration plot: {sp['plot']}")
    return 0


def _breakdown(frames, pred, ref_e, n_atoms, keys, model_dir) -> dict:
    """Errors (meV/atom) per bin of reference energy and per value of the file's info keys, and the
    structures outside the energy range of the model's training data."""
    import numpy as np

    from ..models import reports
    from ..models.base import read_recipe

    per_fu = ref_e / (n_atoms / 5.0)
    trained = (read_recipe(model_dir).get("provenance") or {}).get("training_energy_range_ev_per_fu")
    zero = float(trained[0]) if trained else float(per_fu.min())
    above = (per_fu - zero) * 1000.0
    top = max(125.0, 25.0 * math.ceil(float(above.max()) / 25.0))
    out = {
        "energy_zero": "the lowest energy of the model's training data" if trained else "the lowest energy in the file",
        "by_energy_mev_per_fu": [b for b in reports.binned_errors(pred, ref_e, n_atoms, 25.0, top, zero) if b["n"]],
        "outside_training_energy_range": [],
        "training_energy_range_mev_per_fu": None,
    }
    if trained:
        lo, hi = 0.0, (float(trained[1]) - zero) * 1000.0
        out["training_energy_range_mev_per_fu"] = [lo, hi]
        out["outside_training_energy_range"] = [int(i) for i in np.flatnonzero((above < lo - 1.0) | (above > hi + 1.0))]
    if keys is None:
        keys = sorted({k for a in frames for k, v in a.info.items() if isinstance(v, str) and k != "pes_tags"})
        keys = [k for k in keys if 2 <= len({str(a.info.get(k)) for a in frames}) <= 50]
    out["by"] = {}
    fields = ("n", "rmse_mev_per_atom", "bias_mev_per_atom", "max_mev_per_atom")
    tags = [_frame_tags(a.info) for a in frames]  # parsed once, looked up per key
    for key in keys:
        values = [
            str(a.info[key]) if key in a.info else "(none)" if t.get(key) is None else str(t[key])
            for a, t in zip(frames, tags)
        ]
        stats = reports.per_kind_stats(pred, ref_e, n_atoms, values, e_min_per_fu=zero)
        out["by"][key] = {v: {f: st[f] for f in fields} for v, st in stats.items()}
    return out


def _frame_tags(info: dict) -> dict:
    """A frame's ``pes_tags`` (the JSON tags ``pes db export`` writes: ``temperature_K``, ``supercell``,
    ``start``, ``iteration``...) as a dict; empty when absent or not valid JSON. ``--by`` falls back on them
    for a key the frame's info lacks."""
    tags = info.get("pes_tags")
    if isinstance(tags, str):
        try:
            tags = json.loads(tags)
        except ValueError:
            return {}
    return tags if isinstance(tags, dict) else {}


def _print_breakdown(out: dict) -> None:
    print(f"reference energies binned in meV per formula unit above {out['energy_zero']}")
    _model_table(
        "energy error per energy bin",
        ["meV/f.u.", "n", "RMSE (meV/atom)"],
        [[f"{b['lo']:.0f}-{b['hi']:.0f}", b["n"], _fmt(b["rmse_mev_per_atom"])] for b in out["by_energy_mev_per_fu"]],
    )
    for key, groups in out["by"].items():
        _model_table(
            f"energy error by {key}",
            [key, "n", "RMSE (meV/atom)", "mean error (meV/atom)", "max |error| (meV/atom)"],
            [
                [v, g["n"], _fmt(g["rmse_mev_per_atom"]), _fmt(g["bias_mev_per_atom"]), _fmt(g["max_mev_per_atom"])]
                for v, g in groups.items()
            ],
        )


def _evaluate_spread(args, res, err, n_atoms, ref_forces) -> dict:
    """A committee's spread per structure next to its error, rank correlations, and the calibration plot."""
    import numpy as np

    from ..models import reports

    spread = np.array([r["energy_std"] for r in res]) / n_atoms * 1000.0
    out = {
        "energy_std_mev_per_atom": spread.tolist(),
        "max_force_deviation": [float(r["max_force_deviation"]) for r in res],
        "energy": reports.spread_calibration(spread, err),
    }
    panels = {"energy, meV/atom": (spread, err)}
    if ref_forces is not None:
        f_err = np.array([np.linalg.norm(r["forces"] - f, axis=1).max() for r, f in zip(res, ref_forces)])
        out["max_force_error"] = f_err.tolist()
        out["forces"] = reports.spread_calibration(out["max_force_deviation"], f_err)
        panels["max force over atoms, eV/A"] = (out["max_force_deviation"], f_err)
    plot = Path(args.plot) if args.plot else Path(f"calibration-{Path(args.file).stem}.png")
    out["plot"] = str(reports.calibration_plot(plot, panels))
    return out


def _forces_of(atoms):
    try:
        if atoms.calc is not None and "forces" in atoms.calc.results:
            return atoms.get_forces()
    except Exception:
        return None
    f = atoms.arrays.get("forces")
    return None if f is None else f


def _model_table(title: str, columns: list[str], rows: list[list]) -> None:
    print_table(title, columns, rows)
