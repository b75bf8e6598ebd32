"""FireWorks campaigns: from a YAML spec to a trained model, with automated retraining.

Thin layer on top of the library: the Firetasks (:mod:`.tasks`) carry ids and settings and call
the steps in :mod:`.steps` and :mod:`.retrain`; configurations, calculations and models live in
the store of :func:`perovskite_pes.db.get_store`, and the LaunchPad is the one of
:func:`perovskite_pes.db.get_launchpad` (same data as ``lpad``).

    from perovskite_pes.workflows import load_spec, run_campaign
    status = run_campaign(load_spec("workflows/quickstart.yaml"))
"""

from .retrain import RetrainDecision, RetrainError, RetrainPolicy, retrain_decision, train_and_register
from .spec import CampaignSpec, SpecError, load_spec, validate_spec

__all__ = [
    "CampaignSpec",
    "RetrainDecision",
    "RetrainError",
    "RetrainPolicy",
    "SpecError",
    "build_workflow",
    "campaign_status",
    "load_spec",
    "rerun_failed",
    "retrain_decision",
    "run_campaign",
    "submit_campaign",
    "train_and_register",
    "validate_spec",
]


def __getattr__(name):  # FireWorks is imported only when a workflow function is used
    if name == "build_workflow":
        from .builder import build_workflow

        return build_workflow
    if name in ("submit_campaign", "run_campaign", "campaign_status", "rerun_failed"):
        from . import campaign

        return getattr(campaign, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
