"""``pes retrain``: train a new model when enough new data has arrived (by hand or from cron)."""

from __future__ import annotations

import json

HELP = "retrain the energy model when new calculations have arrived (--if-grown: only past the policy)"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "retrain",
        help=HELP,
        description="Train a new model on every completed calculation of one calculator (and settings hash) and "
        "register it; it becomes the active model only if its cross-validation RMSE is not worse than the "
        "active model's by more than the tolerance. Without new calculations since the active model it does "
        "nothing and says so. With --if-grown it retrains only when the new data passes the retrain policy "
        "(count and/or fraction), which is what a cron job wants.",
    )
    p.add_argument("--if-grown", action="store_true", help="retrain only when the new data passes the retrain policy")
    p.add_argument("--force", action="store_true", help="retrain even without new data")
    p.add_argument("--calculator", help="calculator whose data to train on (default: the spec's or the active model's)")
    p.add_argument(
        "--settings-hash", help="calculator settings hash (default: the active model's, or the only one stored)"
    )
    p.add_argument("--spec", help="take training settings and the retrain policy from this campaign spec (YAML)")
    p.add_argument("--min-new-count", type=int, default=None, help="policy: retrain after this many new calculations")
    p.add_argument(
        "--min-new-fraction",
        type=float,
        default=None,
        help="policy: retrain when new calculations are this fraction of the active model's training set",
    )
    p.add_argument("--require", choices=("any", "all"), default=None, help="policy: any or all thresholds")
    p.add_argument(
        "--cv-tolerance",
        type=float,
        default=None,
        help="activate the new model if its CV RMSE <= (1 + tolerance) x the active model's",
    )
    p.add_argument("--name", default=None, help="name of the new model (default retrain-<calculator>)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(func=cmd_retrain)


def _settings_hashes(store, calculator: str) -> list[str]:
    rows = store.stats().get("by_calculator", [])
    return sorted({r["settings_hash"] for r in rows if r["calculator"] == calculator and r["status"] == "completed"})


def cmd_retrain(args) -> int:
    from ..db import get_store
    from ..errors import PesError
    from ..workflows.retrain import RetrainPolicy, retrain_decision, train_and_register
    from ..workflows.spec import RetrainPolicySpec, load_spec, validate_spec

    if args.if_grown and args.force:
        raise PesError("--if-grown and --force contradict each other; give one")
    store = get_store()
    spec = load_spec(args.spec) if args.spec else None
    calculator = args.calculator or (spec.calculator.name if spec else None)
    active_any = store.active_model(calculator=calculator) if calculator else store.active_model()
    if calculator is None:
        if active_any is None:
            raise PesError(
                "no --calculator given and no active model to take it from; "
                "give --calculator (sevennet, chgnet, cp2k, vasp) or --spec"
            )
        calculator = active_any["calculator"]
    settings_hash = args.settings_hash
    if settings_hash is None and spec is not None and spec.calculator.name == calculator:
        from ..workflows.campaign import check_calculator

        settings_hash = check_calculator(spec).settings_hash
    if settings_hash is None:
        active = store.active_model(calculator=calculator)
        if active and active.get("settings_hash"):
            settings_hash = active["settings_hash"]
        else:
            hashes = _settings_hashes(store, calculator)
            if len(hashes) > 1:
                raise PesError(
                    f"{calculator} calculations with {len(hashes)} different settings are stored; "
                    f"choose one with --settings-hash: {', '.join(hashes)}"
                )
            settings_hash = hashes[0] if hashes else None

    if spec is not None:
        training = spec.training_settings()
        base_policy = spec.to_dict()["retrain"]
    else:
        prev = (store.active_model(calculator=calculator) or {}).get("hyperparameters") or {}
        training = prev.get("training_settings")
        if training is None:
            training = validate_spec({"name": "retrain", "calculator": {"name": calculator}}).training_settings()
        base_policy = RetrainPolicySpec().to_dict()
    for key, value in (
        ("min_new_count", args.min_new_count),
        ("min_new_fraction", args.min_new_fraction),
        ("require", args.require),
        ("cv_tolerance", args.cv_tolerance),
    ):
        if value is not None:
            base_policy[key] = value
    policy = RetrainPolicy.from_dict({**base_policy, "enabled": True})
    mode = "policy" if args.if_grown else ("force" if args.force else "if_new")
    decision = retrain_decision(store, calculator, settings_hash, policy, mode=mode)
    out = {"decision": decision.to_dict(), "trained": False}
    if decision.retrain:
        out["model"] = train_and_register(
            store,
            calculator,
            settings_hash,
            training,
            policy,
            name=args.name or f"retrain-{calculator}",
            provenance={"trigger": "pes retrain", "mode": mode},
        )
        out["trained"] = True
    if args.json:
        print(json.dumps(out, indent=2, default=str))
        return 0
    if not decision.retrain:
        print(f"nothing to do: {decision.reason}")
        return 0
    m = out["model"]
    print(f"retrained: {decision.reason}")
    print(f"model {m['name']} [{m['model_id']}] on {m['n_calculations']} calculations, CV RMSE {m['cv_rmse']}")
    print(("activated: " if m["activated"] else "not activated: ") + m["why"])
    print(f"path: {m['path']}")
    return 0
