"""Small helpers shared by several layers (no heavy imports here)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path


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


#: union members appear in pydantic's error locations as type tags ('int', 'tuple[str, ...]')
_TYPE_TAGS = {"int", "float", "str", "bool", "none", "dict", "list", "tuple", "literal"}


def field_path(*parts) -> str:
    """Dotted field path from location parts: ``('steps', 'interpolations', 0, 'path[1]')`` ->
    ``steps.interpolations[0].path[1]`` (empty parts skipped)."""
    out = ""
    for p in parts:
        if p is None or p == "":
            continue
        p = f"[{p}]" if isinstance(p, int) else str(p)
        out += p if (not out or p.startswith("[")) else f".{p}"
    return out


def first_error(exc, own_type: str) -> tuple[list, str, dict]:
    """The first error of a pydantic ``ValidationError`` as ``(location, message, error)``.

    ``location`` drops the type tags pydantic adds for union members; ``message`` is our own (the
    context's ``message`` of an error of type ``own_type``), "required" for a missing field, or pydantic's
    message with the offending input; ``error`` is pydantic's error dict.
    """
    err = exc.errors(include_url=False)[0]
    loc = [x for x in err["loc"] if not (isinstance(x, str) and (x in _TYPE_TAGS or "[" in x or "-" in x))]
    if err["type"] == own_type:
        return loc, err["ctx"]["message"], err
    if err["type"] == "missing":
        return loc, "required", err
    return loc, f"{err['msg'][:1].lower()}{err['msg'][1:]}; got {err.get('input')!r}", err


def pyplot():
    """matplotlib's pyplot on the Agg backend: figures are written to files, never shown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path, dpi: int = 120) -> Path:
    """Lay out ``fig``, write it as a PNG to ``path`` (creating its folder), close it; returns the path."""
    path = Path(path)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path
