"""Duplicate detection for campaign Fireworks.

Every relaxation, enumeration and calculation Firework carries ``spec.pes_dupe_key``: a hash of
what it computes (step kind, the configurations' ids -- the store gives one id per canonical key --
or the parent/tilt system, and the calculator name and settings). When such a Firework is about to
run and another Firework with the same key has already run or is running, FireWorks links that
launch instead of running it again (``_steal_launches``). Together with the per-configuration check
in :func:`perovskite_pes.workflows.steps.calculate_batch` (skip configurations that already have a
completed calculation with the same settings hash) this makes re-submitting a campaign, or
overlapping campaigns, compute nothing twice.

The registered name is stored in workflows: never rename this class.
"""

from __future__ import annotations

import hashlib
import json

from fireworks.features.dupefinder import DupeFinderBase
from fireworks.utilities.fw_utilities import explicit_serialize


def dupe_key(kind: str, *parts) -> str:
    """Stable SHA-1 of a step kind and its JSON-able inputs."""
    payload = json.dumps([kind, *parts], sort_keys=True, default=str)
    return hashlib.sha1(payload.encode()).hexdigest()


@explicit_serialize
class CampaignDupeFinder(DupeFinderBase):
    """Fireworks are duplicates when their ``spec.pes_dupe_key`` is equal.

    Only Fireworks that completed or are running count: a FIZZLED one is not copied (rerun it, or let
    the new one run: finished calculations are skipped either way).
    """

    def query(self, spec):
        return {
            "spec.pes_dupe_key": spec["pes_dupe_key"],
            "state": {"$in": ["COMPLETED", "RUNNING"]},
            "launches": {"$ne": []},
        }

    def verify(self, spec1, spec2):
        return spec1.get("pes_dupe_key") == spec2.get("pes_dupe_key")
