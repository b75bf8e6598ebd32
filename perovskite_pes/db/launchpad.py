"""The FireWorks LaunchPad on the process's shared client.

:class:`PesLaunchPad` is a plain FireWorks ``LaunchPad`` whose connection is a client given to it:
the MongoDB client of the configuration database, or on the embedded store the mongomock client of
the LaunchPad file, which it writes after each of its operations that change the database (add a
workflow, check out or complete a launch, rerun, ...). So a Firework that completed is on disk even
if the worker is killed right after.
"""

from __future__ import annotations

import functools
import threading
from contextlib import contextmanager

import fireworks.core.launchpad as _fw_launchpad
from fireworks import LaunchPad

#: LaunchPad methods that write to the database; each is followed by a flush of the embedded store
MUTATING_METHODS = (
    "reset",
    "add_wf",
    "bulk_add_wfs",
    "append_wf",
    "delete_fws",
    "delete_wf",
    "update_spec",
    "tuneup",
    "pause_fw",
    "defuse_fw",
    "reignite_fw",
    "resume_fw",
    "defuse_wf",
    "pause_wf",
    "reignite_wf",
    "archive_wf",
    "reserve_fw",
    "cancel_reservation_by_reservation_id",
    "cancel_reservation",
    "detect_unreserved",
    "mark_fizzled",
    "detect_lostruns",
    "set_reservation_id",
    "checkout_fw",
    "change_launch_dir",
    "restore_backup_data",
    "complete_launch",
    "ping_launch",
    "rerun_fw",
    "set_priority",
    "add_offline_run",
    "recover_offline",
    "forget_offline",
)

_depth = threading.local()
_patch_lock = threading.RLock()


def _flushing(method):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        level = getattr(_depth, "n", 0)
        _depth.n = level + 1
        try:
            return method(self, *args, **kwargs)
        finally:
            _depth.n = level
            if level == 0 and self._pes_on_change is not None:
                self._pes_on_change()

    return wrapper


class PesLaunchPad(LaunchPad):
    """A FireWorks LaunchPad bound to the shared client of :func:`perovskite_pes.db.get_store`."""

    _pes_on_change = None

    @classmethod
    def on_client(cls, client, on_change=None, **kwargs) -> PesLaunchPad:
        """Build a LaunchPad whose connection is ``client`` (kwargs are LaunchPad's: host, name, ...)."""
        if type(client).__module__.startswith("mongomock"):
            from .embedded import _enable_gridfs

            _enable_gridfs()  # FireWorks' LaunchPad builds a GridFS on its database
        with use_client(client):
            lp = cls(**kwargs)
        lp._pes_on_change = on_change
        return lp


for _name in MUTATING_METHODS:
    if hasattr(LaunchPad, _name):
        setattr(PesLaunchPad, _name, _flushing(getattr(LaunchPad, _name)))


def prepare_launchpad(lp, db, tuneup: bool = False) -> bool:
    """Reset a fresh LaunchPad database (FireWorks needs its id counters); True when it did.

    With ``tuneup`` an existing one gets its indexes re-created (the embedded file does not keep them).
    """
    if db.fw_id_assigner.count_documents({}) == 0 and db.workflows.count_documents({}) == 0:
        lp.reset("", require_password=False)
        return True
    if tuneup:
        lp.tuneup()
    return False


class _SharedClientFactory:
    """Stands in for ``MongoClient`` in FireWorks' launchpad module: returns the shared client."""

    def __init__(self, client):
        self.client = client

    def __call__(self, *args, **kwargs):
        return self.client


_original_client_class = _fw_launchpad.MongoClient
_installed: _SharedClientFactory | None = None


@contextmanager
def use_client(client):
    """Within the block, every LaunchPad created gets ``client`` as its connection."""
    with _patch_lock:
        previous = _fw_launchpad.MongoClient
        _fw_launchpad.MongoClient = _SharedClientFactory(client)
        try:
            yield
        finally:
            _fw_launchpad.MongoClient = previous


def install_shared_client(client) -> None:
    """Make every LaunchPad created in this process (``LaunchPad.auto_load()`` included) use ``client``.

    Used for the embedded store, where a second client would hold a private copy of the data.
    """
    global _installed
    with _patch_lock:
        _installed = _SharedClientFactory(client)
        _fw_launchpad.MongoClient = _installed


def uninstall_shared_client() -> None:
    global _installed
    with _patch_lock:
        if _installed is not None and _fw_launchpad.MongoClient is _installed:
            _fw_launchpad.MongoClient = _original_client_class
        _installed = None
