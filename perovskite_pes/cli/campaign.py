"""``pes campaign``: submit, run, inspect and repair FireWorks campaigns from a YAML spec."""

from __future__ import annotations

import json
import sys

HELP = "FireWorks campaigns from a YAML spec: validate, submit, run, schema, status, rerun-failed"


def register(subparsers) -> None:
    p = subparsers.add_parser("campaign", help=HELP, description=HELP)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])
    verbs = p.add_subparsers(dest="verb", metavar="VERB")

    v = verbs.add_parser("validate", help="check a campaign spec and show what it would submit (nothing is added)")
    v.add_argument("spec", help="campaign spec (YAML), e.g. workflows/quickstart.yaml")
    v.add_argument("--json", action="store_true", help="print JSON for scripts")
    v.set_defaults(func=cmd_validate)

    s = verbs.add_parser(
        "submit",
        help="validate a spec and add its workflow to the LaunchPad",
        description="Validate SPEC completely, then add its workflow to the LaunchPad of the configured store "
        "(the same one `lpad` and `pes db` use). Submitting the same spec again adds nothing unless --force; "
        "even then nothing is computed twice.",
    )
    s.add_argument("spec", help="campaign spec (YAML)")
    s.add_argument("--force", action="store_true", help="add the workflow even if this spec was submitted before")
    s.add_argument("--json", action="store_true", help="print JSON for scripts")
    s.set_defaults(func=cmd_submit)

    r = verbs.add_parser(
        "run",
        help="submit a spec (once) and run all its Fireworks here, with progress bars",
        description="Submit SPEC (unless already submitted) and run its Fireworks in this process until none is "
        "left, then print the status: Fireworks by state, data counts and the trained model with its errors. "
        "Fireworks left RUNNING by a killed earlier run on the embedded store are rerun first.",
    )
    r.add_argument("spec", help="campaign spec (YAML), e.g. workflows/quickstart.yaml")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.add_argument("--max-fireworks", type=int, default=None, metavar="N", help="stop after N Fireworks")
    r.add_argument("--verbose", action="store_true", help="show FireWorks' own log lines")
    r.add_argument("--json", action="store_true", help="print the final status as JSON")
    r.set_defaults(func=cmd_run)

    sc = verbs.add_parser(
        "schema",
        help="print the JSON schema of a campaign spec (for editors)",
        description="Print the JSON schema (draft 2020-12) of a campaign spec. YAML editors check specs against "
        "it, e.g. with the YAML language server: `pes campaign schema > campaign.schema.json`, then a first line "
        "`# yaml-language-server: $schema=campaign.schema.json` in the spec.",
    )
    sc.add_argument("-o", "--output", metavar="FILE", help="write the schema to FILE instead of printing it")
    sc.set_defaults(func=cmd_schema)

    st = verbs.add_parser("status", help="Fireworks by state, failures with reasons, data counts, active model")
    st.add_argument("name", nargs="?", help="campaign name (default: all campaigns)")
    st.add_argument("--json", action="store_true", help="print JSON for scripts")
    st.set_defaults(func=cmd_status)

    rf = verbs.add_parser(
        "rerun-failed",
        help="rerun FIZZLED Fireworks and recover lost runs (killed workers)",
        description="Detect lost runs (RUNNING Fireworks whose worker stopped pinging) and rerun them together "
        "with every FIZZLED Firework of the campaign. Finished calculations are never repeated.",
    )
    rf.add_argument("name", nargs="?", help="campaign name (default: all campaigns)")
    rf.add_argument(
        "--lost-after",
        type=float,
        default=None,
        metavar="SECONDS",
        help="a RUNNING Firework is lost after this many seconds without a ping "
        "(default: 0 on the embedded store, FireWorks' 4 hours on MongoDB)",
    )
    rf.add_argument("--json", action="store_true", help="print JSON for scripts")
    rf.set_defaults(func=cmd_rerun_failed)


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _spec_summary(spec) -> dict:
    from ..workflows.spec import campaign_parents

    st = spec.steps
    return {
        "name": spec.name,
        "calculator": spec.calculator.name,
        "supercell": spec.supercell,
        "parents": campaign_parents(st),
        "steps": [
            k
            for k, on in (
                ("relax_reference", st.relax_reference.enabled),
                ("relax_tilts", st.relax_tilts.enabled),
                ("mode_grid", st.mode_grid.enabled),
                ("strain_grid", st.strain_grid.enabled),
                ("random", st.random.enabled),
                ("tilt_grid", st.tilt_grid.enabled),
                ("thermal_md", st.thermal_md.enabled),
                ("interpolations", bool(st.interpolations)),
            )
            if on
        ],
        "per_firework": spec.fireworks.per_firework,
        "category": spec.category,
        "descriptors": spec.to_dict()["descriptors"],
        "models": list(spec.training.models),
        "retrain": spec.to_dict()["retrain"],
        "active": _loop_summary(spec.active),
        "simulate": _ladder_summary(spec.simulate),
    }


def _loop_summary(a) -> str:
    """The active-learning loop in one line ("off" when the spec has none)."""
    if not a.enabled:
        return "off"
    cells = ", ".join(f"{n}x{n}x{n}" for n in a.supercells) if a.supercells else "the training cell"
    return (
        f"{a.iterations} round(s), at most {a.budget} calculations, committee of {a.committee}, "
        f"MD at {_kelvins(a.temperatures)} in {cells}"
    )


def _ladder_summary(s) -> str:
    """The closing finite-temperature step in one line ("off" when the spec has none)."""
    if not s.enabled:
        return "off"
    return (
        f"{s.method.upper()} {'/'.join(s.directions)} {s.supercell}x{s.supercell}x{s.supercell}, "
        f"{_kelvins((s.t_min, s.t_max))} every {s.t_step:g} K, seeds {list(s.seeds)}"
    )


def _kelvins(ts) -> str:
    return f"{min(ts):g}-{max(ts):g} K"


def cmd_validate(args) -> int:
    from ..workflows.builder import build_workflow
    from ..workflows.campaign import check_calculator, check_training
    from ..workflows.spec import load_spec

    spec = load_spec(args.spec)
    check_calculator(spec)
    check_training(spec)
    wf = build_workflow(spec)
    out = _spec_summary(spec)
    out["initial_fireworks"] = len(wf.fws)
    if args.json:
        _print_json(out)
    else:
        print(f"{args.spec}: valid campaign {spec.name!r}")
        for k, v in out.items():
            print(f"  {k:18s} {v}")
    return 0


def cmd_submit(args) -> int:
    from ..workflows.campaign import submit_campaign
    from ..workflows.spec import load_spec

    spec = load_spec(args.spec)
    out = submit_campaign(spec, force=args.force)
    if args.json:
        _print_json(out)
    else:
        print(
            f"campaign {spec.name}: {out['reason']}"
            + (f" ({out['n_fireworks']} Fireworks)" if out["submitted"] else "")
        )
    return 0


def cmd_run(args) -> int:
    from ..workflows.campaign import run_campaign
    from ..workflows.spec import load_spec

    spec = load_spec(args.spec)
    out = run_campaign(
        spec,
        progress=not args.no_progress and not args.json,
        max_fireworks=args.max_fireworks,
        stream=sys.stderr,
        quiet=not args.verbose,
    )
    if args.json:
        _print_json(out)
    else:
        print(
            out["submitted"]["reason"]
            if not out["submitted"]["submitted"]
            else f"submitted {out['submitted']['n_fireworks']} Fireworks"
        )
        print(f"ran {out['n_launched']} Fireworks in {out['wall_time']:.1f} s")
        _print_status(out)
        from ..workflows.campaign import campaign_dir

        report = campaign_dir(spec.name) / "report.json"
        print(f"report: {report}")
        if report.exists():
            data = json.loads(report.read_text())
            for plot in data.get("plots", []):
                print(f"  plot: {plot}")
            _print_parents(data.get("parents"))
            _print_simulation(data.get("simulation"))
        if out["failures"]:
            print(
                f"{len(out['failures'])} Fireworks FIZZLED (reasons above); `pes campaign rerun-failed "
                f"{spec.name}` runs them again"
            )
    return 0 if not out["failures"] else 1


def _print_parents(parents: list | None) -> None:
    """The relaxed tilt systems in order of energy: the calculator's own phase ordering at 0 K."""
    if not parents:
        return
    print(
        "relaxed parents (meV/f.u. above the lowest): "
        + ", ".join(f"{p['glazer']} {p.get('space_group') or '?'} {p['above_lowest_meV_per_fu']:.1f}" for p in parents)
    )


def _print_simulation(sim: dict | None) -> None:
    """The simulate step's outcome: transitions, or why there are none."""
    if not sim:
        return
    if sim.get("error"):
        print(f"simulation: {sim['error']}")
        return
    print(
        f"simulation ({sim['atoms']} atoms, {sim['wall_time_s'] / 60:.1f} min): "
        + (
            "; ".join(
                f"{t['from']} -> {t['to']} at {t['temperature_K']:.0f} +- {t['uncertainty_K']:.0f} K"
                for t in sim["transitions"]
            )
            or "no transition in the range"
        )
    )
    from ..simulation.transitions import fluctuation_warning

    for run in sim.get("phases", []):
        if run.get("stopped"):
            print(f"  {run['direction']} seed {run['seed']} stopped early: {run['stopped']}")
        if warning := fluctuation_warning(run):
            print(f"  {run['direction']} seed {run['seed']} {warning}")


def _print_status(st: dict) -> None:
    fw = st["fireworks"]
    print(f"store: {st['store']}")
    print(f"campaigns: {', '.join(st['campaigns']) or 'none'}")
    print(f"Fireworks: {fw['total']} " + " ".join(f"{k}={v}" for k, v in sorted(fw["by_state"].items())))
    for kind, states in sorted(fw["by_kind"].items()):
        print(f"  {kind:16s} " + " ".join(f"{k}={v}" for k, v in sorted(states.items())))
    if st["failures"]:
        print(f"failures ({len(st['failures'])}):")
        for f in st["failures"]:
            print(f"  fw {f['fw_id']} {f['name']}: {f['reason']}")
    data = st["data"]
    print(f"configurations: {data['configurations']}")
    for cname, c in data["calculations"].items():
        print(f"calculations ({cname}): {c['completed']} completed, {c['failed']} failed")
    for cname, m in st["active_models"].items():
        if m is None:
            print(f"active model ({cname}): none yet")
        else:
            errs = (
                (", ".join(f"{k}={v:.4g}" for k, v in m["errors"].items()) + " meV/atom")
                if m["errors"]
                else "no errors recorded"
            )
            from .model import data_line

            n_apart = {k: m.get(k) for k in ("n_excluded", "n_larger", "n_larger_test")}
            fitted = data_line(m.get("n_fit"), m["n_train"], m.get("n_test"), **n_apart)
            print(f"active model ({cname}): {m['name']} [{m['id']}] {fitted}; {errs}")
            print(f"  path: {m['path']}")


def cmd_schema(args) -> int:
    from ..workflows.spec import spec_json_schema

    text = json.dumps(spec_json_schema(), indent=2)
    if args.output:
        from pathlib import Path

        Path(args.output).write_text(text + "\n")
        print(f"JSON schema of a campaign spec written to {args.output}")
    else:
        print(text)
    return 0


def cmd_status(args) -> int:
    from ..workflows.campaign import campaign_status

    st = campaign_status(args.name)
    if args.json:
        _print_json(st)
    else:
        _print_status(st)
    return 0


def cmd_rerun_failed(args) -> int:
    from ..workflows.campaign import rerun_failed

    out = rerun_failed(args.name, lost_after=args.lost_after)
    if args.json:
        _print_json(out)
    else:
        lost = out["lost"]["lost_fireworks"]
        print(f"lost runs recovered: {len(lost)}" + (f" (fw {', '.join(map(str, lost))})" if lost else ""))
        print(
            f"FIZZLED Fireworks rerun: {len(out['fizzled'])}"
            + (f" (fw {', '.join(map(str, out['fizzled']))})" if out["fizzled"] else "")
        )
        if not out["rerun"]:
            print("nothing to rerun")
    return 0
