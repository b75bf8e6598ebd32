"""Where data lives: the configuration database and the FireWorks LaunchPad.

    from perovskite_pes.db import get_store
    store = get_store()                      # Settings.load(): $PES_HOME/config.yaml + environment
    report = store.save_configurations(configs, source="enumerate")
    store.save_calculation(report.ids[0], calc_result)
    data = store.training_data(calculator="sevennet")
    lp = store.get_launchpad()               # FireWorks LaunchPad on the same data

The embedded default (no MongoDB configured) is a SQLite file under ``$PES_HOME``, safe for
several processes, with the FireWorks LaunchPad in FireWorks' own file next to it; see
:mod:`perovskite_pes.db.sqlite`. MongoDB (:mod:`perovskite_pes.db.mongo`) serves the same API.
"""

from .errors import (
    CalculationConflict,
    DatabaseUnavailable,
    EmbeddedStoreError,
    EmbeddedStoreLocked,
    NotFound,
    OutlierRecord,
    QueryError,
    StoreError,
)
from .store import (
    CALC_FILTERS,
    CONFIG_FILTERS,
    QUERY_FIELDS,
    CalcReport,
    IngestReport,
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
    "CalcReport",
    "CalculationConflict",
    "DatabaseUnavailable",
    "EmbeddedStoreError",
    "EmbeddedStoreLocked",
    "IngestReport",
    "InvalidRecord",
    "NotFound",
    "OutlierRecord",
    "QueryError",
    "Store",
    "StoreError",
    "close_store",
    "get_launchpad",
    "get_store",
]
