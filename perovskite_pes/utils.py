"""Small helpers shared by several layers (no heavy imports here)."""

from __future__ import annotations

import os
from contextlib import contextmanager


@contextmanager
def environment(**values):
    """Set environment variables for the duration of a ``with`` block, then restore them."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update({k: str(v) for k, v in values.items()})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
