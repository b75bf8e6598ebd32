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


def jsonable(obj, other=lambda o: o):
    """``obj`` with numpy arrays/scalars, tuples and paths turned into plain JSON types, recursively.

    Anything else that JSON cannot hold is passed to ``other`` (default: returned unchanged).
    """
    from pathlib import PurePath

    import numpy as np

    if isinstance(obj, dict):
        return {str(k): jsonable(v, other) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, other) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return other(obj)
