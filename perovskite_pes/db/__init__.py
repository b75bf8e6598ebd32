"""Where data lives: the configuration database and the FireWorks LaunchPad, on one client.

    from perovskite_pes.db import get_store
    store = get_store()                      # Settings.load(): $PES_HOME/config.yaml + environment
    report = store.save_configurations(configs, source="enumerate")
    store.save_calculation(report.ids[0], calc_result)
    data = store.training_data(calculator="sevennet")
    lp = store.get_launchpad()               # FireWorks LaunchPad on the same data

The embedded default (no MongoDB configured) is a file under ``$PES_HOME`` in FireWorks'
mongomock-persistence format, written atomically after every unit of work and locked to one
process at a time; see :mod:`perovskite_pes.db.embedded`.
"""

from .embedded import EmbeddedServer, EmbeddedStoreError, EmbeddedStoreLocked
from .store import (
    CALC_FILTERS,
    CONFIG_FILTERS,
    QUERY_FIELDS,
    DatabaseUnavailable,
    IngestReport,
    NotFound,
    QueryError,
    Store,
    close_store,
    get_launchpad,
    get_store,
)
from .validation import InvalidRecord

__all__ = [
    "CALC_FILTERS",
    "CONFIG_FILTERS",
    "QUERY_FIELDS",
    "DatabaseUnavailable",
    "EmbeddedServer",
    "EmbeddedStoreError",
    "EmbeddedStoreLocked",
    "IngestReport",
    "InvalidRecord",
    "NotFound",
    "QueryError",
    "Store",
    "close_store",
    "get_launchpad",
    "get_store",
]
