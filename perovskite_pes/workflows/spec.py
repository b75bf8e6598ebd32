"""Campaign specifications: a YAML file that says what to enumerate, calculate and train.

A spec is validated completely before anything is submitted; every error is one line that names the
field (as a dotted path such as ``steps.random.count``) and what is allowed there. The validated spec
is a frozen tree of pydantic models (each default written once, on its field);
:meth:`CampaignSpec.to_dict` gives back a plain, JSON-able dict (defaults filled in) that travels
inside Firework specs and whose hash identifies the campaign, and :func:`spec_json_schema` the JSON
schema editors check a YAML spec with (``pes campaign schema``).

Layout of a spec (every section except ``name`` and ``calculator`` is optional)::

    name: quickstart                  # letters, digits, '.', '_' and '-'
    seed: 0                           # random seed of every sampler and of training
    reference: {species: [Cs, Pb, Br], lattice_parameter: 5.87}
    supercell: 2                      # n, [n1, n2, n3] or a 3x3 integer matrix
    calculator: {name: sevennet, settings: {}}
    fireworks: {per_firework: 200, category: auto, flush_every: 0}
    steps:
      relax_reference: {relax: cell}                       # or false
      relax_tilts: {systems: all, angles_deg: null, relax: cell}   # or false
      mode_grid: {amplitudes: [-0.1, 0.1], subspaces: all, max_per_parent: null}
      strain_grid: {amplitudes: [-0.02, 0.02], subspaces: all, around: reference}
      random: {count: 100, displacement_radius: 0.3, strain_radius: 0.02,
               uniqueness_tolerance: 0.01, around: all, fill: false}
      tilt_grid: {systems: all, angles: [12, 18, 24], noise: [0, 0.1], copies: 1}   # on the cubic cell
      thermal_md: {temperatures: [300, 600], starts: [a0a0a0], steps: 200, equilibration: 50, every: 10}
      interpolations: [{path: [a0a0a0, a0a0c-, a-a-c+], n: 8}]
    descriptors: {clusters: 7p+t+o, max_order: 2, metric: lin, truncated: false}
    training: {models: [cluster, site], grid: {layers: [1], nodes: [8, 16]}, folds: 10,
               test_fraction: 0.2, batch_sizes: [2, 10, 100, 1000], epochs: [20, 50, 200, 1000]}
    retrain: {enabled: true, min_new_count: 500, min_new_fraction: 0.2, require: any,
              cv_tolerance: 0.05}
    simulate: {method: md, supercell: 4, t_min: 100, t_max: 500, t_step: 50, steps: 500,
               equilibration: 250, seeds: [0, 1]}   # optional: the model's phase sequence at the end
    active: {committee: 4, temperatures: [150, 300, 450, 600], lower: 0.05, upper: 0.5,
             supercells: [2, 4]}      # optional: active learning at temperature after the first training
"""

import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from ..descriptors.clusters import NAMED_CLUSTERS
from ..errors import PesError
from ..models.selection import SelectionSettings
from ..utils import field_path as _join
from ..utils import first_error

#: calculators known to :func:`perovskite_pes.calculators.get_calculator`
CALCULATORS = ("sevennet", "chgnet", "cp2k", "vasp")
#: calculators that run DFT (custodian, compute nodes) rather than an ML surrogate in-process
DFT_CALCULATORS = ("cp2k", "vasp")
#: cluster sets of the paper (section III.C)
CLUSTER_SETS = ("4p+o", "5p+o", "8p+o", "4p+t+o", "7p+t+o")
METRICS = ("lin", "quad", "log", "inv")
#: model kinds of perovskite_pes.models.train_and_select: cluster-/site-based nets, linear CE, pair potential
MODEL_TYPES = ("cluster", "site", "linear", "pair")
#: hyperparameters a training grid may scan (besides the model kinds)
GRID_KEYS = ("clusters", "max_order", "layers", "nodes")
RELAX_MODES = ("positions", "cell")
CATEGORIES = ("auto", "dft", "ml", "none")
ORDERS = (2, 4, 6)
CUBIC = "a0a0a0"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: the selection defaults the training section shares (train_and_select holds them)
_SELECTION = SelectionSettings()


class SpecError(PesError, ValueError):
    """A campaign spec is malformed; the message names the field and what is allowed."""


# --------------------------------------------------------------------------- errors
def _fail(at: str, message: str):
    """Refuse the value being validated; ``at`` is the rest of the field path below it ('' for itself)."""
    raise PydanticCustomError("campaign_spec", "{message}", {"message": message, "at": at})


def _error_line(exc: ValidationError, within: tuple[str, ...] = ()) -> str:
    """The first error of a validation as one line: ``campaign spec: <field path>: <what is wrong>``;
    ``within``: the path of the section validated on its own (e.g. ``("active",)``)."""
    loc, message, err = first_error(exc, "campaign_spec")
    path = _join(*within, *loc, (err.get("ctx") or {}).get("at"))
    return f"campaign spec: {path}: {message}" if path else f"campaign spec: {message}"


# --------------------------------------------------------------------------- value checks
def _check_mapping(value, allowed) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        _fail("", f"expected a mapping with keys {list(allowed)}; got {type(value).__name__} {value!r}")
    unknown = [k for k in value if k not in allowed]
    if unknown:
        _fail(str(unknown[0]), f"unknown field; allowed fields here are {list(allowed)}")
    return dict(value)


def _bool(value, at: str = "") -> bool:
    if not isinstance(value, bool):
        _fail(at, f"expected true or false; got {value!r}")
    return value


def _int(value, minimum: int | None = None, allow_none: bool = False, at: str = "") -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(at, f"expected an integer{'' if minimum is None else f' >= {minimum}'}; got {value!r}")
    if minimum is not None and value < minimum:
        _fail(at, f"must be >= {minimum}; got {value}")
    return int(value)


def _float(
    value,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    allow_none: bool = False,
    at: str = "",
) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(at, f"expected a number; got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        _fail(at, f"expected a finite number; got {value!r}")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        _fail(at, f"must be {'>' if lo_open else '>='} {float(lo)}; got {v}")
    if hi is not None and v > hi:
        _fail(at, f"must be <= {float(hi)}; got {v}")
    return v


def _choice(value, allowed, at: str = ""):
    if value not in allowed:
        _fail(at, f"must be one of {list(allowed)}; got {value!r}")
    return value


@lru_cache(maxsize=1)
def _glazer_tuple() -> tuple[str, ...]:
    from ..structure import GLAZER_SYSTEMS

    out = []
    for entry in GLAZER_SYSTEMS:
        if isinstance(entry, str):
            out.append(entry)
        elif isinstance(entry, dict):
            out.append(entry.get("glazer") or entry.get("symbol"))
        else:
            out.append(getattr(entry, "glazer", None) or getattr(entry, "symbol", None) or entry[0])
    return tuple(out)


def glazer_symbols() -> list[str]:
    """The 15 Glazer tilt-system symbols the structure layer knows (Howard & Stokes order)."""
    return list(_glazer_tuple())


def _glazer(value, at: str = "") -> str:
    known = glazer_symbols()
    if not isinstance(value, str) or value not in known:
        _fail(at, f"unknown Glazer tilt system {value!r}; allowed: {known}")
    return value


def _listed(value, element, what: str, wrap: tuple = (int, float, str)) -> tuple:
    """A non-empty list (a lone scalar of the ``wrap`` types counts as a list of one), each item checked."""
    if isinstance(value, wrap) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        _fail("", f"{what}; got {value!r}")
    return tuple(element(v, at=f"[{i}]") for i, v in enumerate(value))


def _listed_of(element, wrap=(int, float, str)):
    return lambda v: _listed(v, element, "expected a non-empty list", wrap=wrap)


def _str_list_or_all(value) -> str | tuple[str, ...]:
    if value == "all" or value is None:
        return "all"
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
        _fail("", f"expected 'all' or a non-empty list of names; got {value!r}")
    return tuple(value)


_CLUSTER_TOKEN = re.compile(
    r"^(\d+p|p\d+|" + "|".join(t for name, (short, _) in NAMED_CLUSTERS.items() for t in (short, name)) + ")$"
)
_CLUSTER_HELP = (
    f"must be one of the paper's sets {list(CLUSTER_SETS)}, another '+'-joined set of <k>p (the first k pairs), "
    f"p<k>, {', '.join(short for short, _ in NAMED_CLUSTERS.values())} (e.g. 30p+t+o)"
)


def _cluster_set(value: str, at: str = "") -> str:
    tokens = [x.strip() for x in value.split("+")]
    if not all(_CLUSTER_TOKEN.match(x) for x in tokens) or any(x in ("0p", "p0") for x in tokens):
        _fail(at, f"{_CLUSTER_HELP}; got {value!r}")
    return value


def _order(value, at: str = "") -> int:
    order = _int(value, minimum=1, at=at)
    if order not in ORDERS:
        _fail(at, f"must be one of {list(ORDERS)}; got {value!r}")
    return order


def _plain(obj):
    """Tuples -> lists, recursively (JSON/BSON friendly)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


# --------------------------------------------------------------------------- field types
def _checked(kind, check, schema_input=None, **field):
    """``kind`` validated by ``check`` (which refuses with the spec's one-line messages)."""
    validator = (
        BeforeValidator(check) if schema_input is None else BeforeValidator(check, json_schema_input_type=schema_input)
    )
    return Annotated[kind, Field(**field), validator] if field else Annotated[kind, validator]


def _Int(minimum: int | None = None, optional: bool = False):
    bounds = {} if (minimum is None or optional) else {"ge": minimum}
    return _checked(int | None if optional else int, lambda v: _int(v, minimum, allow_none=optional), **bounds)


def _Float(lo: float | None = None, hi: float | None = None, lo_open: bool = False, optional: bool = False):
    bounds = {}
    if not optional:
        if lo is not None:
            bounds["gt" if lo_open else "ge"] = lo
        if hi is not None:
            bounds["le"] = hi
    return _checked(
        float | None if optional else float, lambda v: _float(v, lo, hi, lo_open=lo_open, allow_none=optional), **bounds
    )


def _Choice(*allowed):
    return _checked(Literal[allowed], lambda v: _choice(v, allowed))


Bool = _checked(bool, _bool)
Glazer = _checked(str, _glazer, json_schema_extra=lambda schema: schema.update(enum=glazer_symbols()))
GlazerList = tuple[Glazer, ...]
AllOrNames = _checked(Literal["all"] | tuple[str, ...], _str_list_or_all, str | list[str])
Mapping = _checked(dict[str, Any], lambda v: _check_mapping(v, ()) if not isinstance(v, dict) else dict(v))


def _amplitudes(limit: float, closed: bool, what: str):
    def check(value):
        values = _listed(value, _float, "expected a non-empty list of numbers", wrap=(int, float))
        for i, a in enumerate(values):
            if abs(a) > limit or (not closed and abs(a) == limit):
                _fail(f"[{i}]", f"{what}; got {a}")
        return values

    return _checked(tuple[float, ...], check, float | list[float])


def _switch(value):
    """A step given as a mapping is on unless it says ``enabled: false``; true/false switch it with its
    defaults; an empty entry is the same as leaving the step out."""
    if value is None:
        return {}
    if isinstance(value, bool):
        return {"enabled": value}
    if isinstance(value, dict) and "enabled" not in value:
        return {**value, "enabled": True}
    return value


def _switchable(section):
    """A step or section that may also be given as true/false (on/off with its defaults) or left empty."""
    return Annotated[section, BeforeValidator(_switch, json_schema_input_type=section | bool | None)]


# --------------------------------------------------------------------------- sections
class _Section(BaseModel):
    """A mapping of the spec: unknown fields are refused by name, values checked field by field."""

    # field docstrings become the descriptions of the JSON schema (editors show them)
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)
    #: fields a YAML spec cannot set
    _internal: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def input_fields(cls) -> list[str]:
        return [k for k in cls.model_fields if k not in cls._internal]

    @model_validator(mode="before")
    @classmethod
    def _as_mapping(cls, data):
        if isinstance(data, cls):
            return data
        return _check_mapping(data, cls.input_fields())


class _Step(_Section):
    """A section with an ``enabled`` switch (see :func:`_switch` for how a spec sets it);
    ``_reset_when_off``: a switched-off section keeps its defaults whatever else it says."""

    _reset_when_off: ClassVar[bool] = False

    @model_validator(mode="before")
    @classmethod
    def _as_mapping(cls, data):
        if isinstance(data, cls):
            return data
        if data is None:
            return {}
        if isinstance(data, bool):
            return {"enabled": data}
        d = _check_mapping(data, [k for k in cls.input_fields() if k != "enabled"] + ["enabled"])
        if "enabled" in d:
            d["enabled"] = _bool(d["enabled"], "enabled")
            if cls._reset_when_off and not d["enabled"]:
                return {"enabled": False}
        return d


class ReferenceSpec(_Section):
    """The cubic reference perovskite ABX3 (the relaxed lattice parameter replaces the starting one)."""

    species: _checked(tuple[str, str, str], lambda v: _species(v)) = ("Cs", "Pb", "Br")
    lattice_parameter: _Float(0.0, lo_open=True) = 5.87


def _species(value) -> tuple[str, str, str]:
    if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(isinstance(s, str) for s in value):
        _fail("", f"expected three element symbols [A, B, X]; got {value!r}")
    from pymatgen.core import Element

    for i, s in enumerate(value):
        if not Element.is_valid_symbol(s):
            _fail(f"[{i}]", f"unknown chemical element {s!r}")
    return tuple(value)


def _calculator_settings(value) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        _fail("", f"expected a mapping of calculator settings; got {value!r}")
    return dict(value)


class CalculatorSpec(_Section):
    name: _Choice(*CALCULATORS)
    settings: _checked(dict[str, Any], _calculator_settings, dict[str, Any] | None) = {}
    """Settings of :func:`perovskite_pes.calculators.get_calculator` (see docs/calculators.md)."""

    @model_validator(mode="before")
    @classmethod
    def _as_mapping(cls, data):
        d = _check_mapping(data, cls.input_fields())
        if "name" not in d:
            _fail("name", f"required: one of {list(CALCULATORS)}")
        return d

    @property
    def is_dft(self) -> bool:
        return self.name in DFT_CALCULATORS


class FireworksSpec(_Section):
    per_firework: _Int(1) = 200
    """Configurations calculated by one Firework (hundreds for surrogates on the embedded store)."""
    category: _Choice(*CATEGORIES) = "auto"
    """FireWorks category of calculation Fireworks: auto = "dft" for VASP/CP2K, no category for the surrogates (any
    worker runs them); "none" = no category; "dft"/"ml" force one.
    """
    flush_every: _Int(0) = 0
    """Flush the store every this many calculations inside a batch (0: once, at the end of the batch)."""
    fizzle_on: _Choice("any", "all") = "any"
    """A batch Firework FIZZLES when this many of its calculations failed: "any" or "all"."""


class RelaxReferenceSpec(_Step):
    enabled: Bool = True
    relax: _Choice(*RELAX_MODES) = "cell"


def _tilt_systems(value):
    systems = _str_list_or_all(value)
    if systems != "all":
        systems = tuple(_glazer(g, f"[{i}]") for i, g in enumerate(systems))
        if len(set(systems)) != len(systems):
            _fail("", f"lists a tilt system twice: {list(systems)}")
    return systems


def _tilt_angles(value):
    if isinstance(value, dict):
        angles = _check_mapping(value, ("a", "b", "c"))
        angles = {k: _float(v, lo=0.0, hi=45.0, lo_open=True, at=k) for k, v in angles.items()}
        for letter in "abc":
            if letter not in angles:
                _fail(letter, "missing: give an angle (degrees) for each letter a, b and c")
        if len({angles["a"], angles["b"], angles["c"]}) != 3:
            _fail("", f"letters a, b, c need different angles; got {angles}")
        return angles
    return _float(value, lo=0.0, hi=30.0, lo_open=True, allow_none=True)


class RelaxTiltsSpec(_Step):
    enabled: Bool = True
    systems: _checked(Literal["all"] | tuple[str, ...], _tilt_systems, str | list[str]) = "all"
    angles_deg: _checked(float | dict[str, float] | None, _tilt_angles) = None
    """Starting tilt angles: None (the structure layer's defaults: a 8, b 6, c 10 degrees), a number (the angle of
    letter a; b and c scaled like the defaults) or a mapping {a: .., b: .., c: ..}.
    """
    relax: _Choice(*RELAX_MODES) = "cell"


class ModeGridSpec(_Step):
    enabled: Bool = False
    amplitudes: _amplitudes(1.5, True, "displacement amplitudes are in Angstrom and must lie in [-1.5, 1.5]") = (
        -0.1,
        0.1,
    )
    subspaces: AllOrNames = "all"
    max_per_parent: _Int(1, optional=True) = None
    components: _Choice("all", "first") = "all"
    """Modes to use: "all" of each chosen subspace, or the "first" of each (its partners are symmetry images at the
    cubic parent).
    """


def _strain_subspaces(value):
    names = _str_list_or_all(value)
    if names != "all":
        names = tuple(_choice(w, ("A1g", "Eg", "T2g"), f"[{i}]") for i, w in enumerate(names))
    return names


class StrainGridSpec(_Step):
    enabled: Bool = False
    amplitudes: _amplitudes(0.3, False, "strain amplitudes are dimensionless and must lie in (-0.3, 0.3)") = (
        -0.02,
        0.02,
    )
    subspaces: _checked(
        Literal["all"] | tuple[Literal["A1g", "Eg", "T2g"], ...], _strain_subspaces, str | list[str]
    ) = "all"
    around: _Choice("reference", "all") = "reference"


def _random_around(value):
    if value in ("all", "reference"):
        return value
    return tuple(_glazer(g, f"[{i}]") for i, g in enumerate(_str_list_or_all(value)))


class RandomSpec(_Step):
    enabled: Bool = False
    count: _Int(1) = 100
    displacement_radius: _Float(0.0, 1.5) = 0.3
    strain_radius: _Float(0.0, 0.3) = 0.02
    uniqueness_tolerance: _Float(0.0) = 0.0
    around: _checked(Literal["all", "reference"] | tuple[str, ...], _random_around, str | list[str]) = "all"
    """Parents to sample around: "all", "reference" (the cubic cell) or a list of Glazer symbols."""
    fill: Bool = False
    """Draw uniformly inside the n-balls instead of on their surface."""

    @model_validator(mode="after")
    def _moves_something(self):
        if self.enabled and self.displacement_radius == 0 and self.strain_radius == 0:
            _fail("", "displacement_radius and strain_radius are both 0: every sample would be the parent itself")
        return self


def _tilt_grid_angles(value):
    return _listed(
        value,
        lambda x, at: _float(x, lo=0.0, hi=45.0, lo_open=True, at=at),
        "expected a non-empty list of tilt angles in degrees, each in (0, 45]",
    )


def _tilt_grid_noise(value):
    return _listed(
        value,
        lambda x, at: _float(x, lo=0.0, hi=0.5, at=at),
        "expected a non-empty list of RMS displacements per atom in Angstrom, each in [0, 0.5]",
    )


class TiltGridSpec(_Step):
    """Large tilts: every listed Glazer system at every angle, on the relaxed cubic reference.

    ``angles`` are each octahedron's total rotation (degrees, the length of its per-axis rotation vector, so
    that every system at one angle costs about as much strain); a system's distinct letters keep the ratios
    of the structure layer's defaults (a 8 : b 6 : c 10). Each (system, angle) comes pure (noise 0) and as
    ``copies`` configurations per non-zero ``noise`` level with random displacements of that RMS per atom
    (Angstrom), the thermal motion around a tilted structure. "all" means the 14 tilted systems;
    naming ``a0a0a0`` adds the noisy cubic cell (once per noise level and copy, whatever the angles).
    ``ratios`` adds that many random letter ratios per angle to the systems with more than one letter.
    """

    enabled: Bool = False
    systems: _checked(Literal["all"] | tuple[str, ...], _tilt_systems, str | list[str]) = "all"
    angles: _checked(tuple[float, ...], _tilt_grid_angles, float | list[float]) = (12.0, 18.0, 24.0)
    noise: _checked(tuple[float, ...], _tilt_grid_noise, float | list[float]) = (0.0,)
    copies: _Int(1) = 1
    ratios: _Int(0) = 0


def _md_supercell(value, at):
    n = _int(value, minimum=1, at=at)
    if n > 8:
        _fail(at, f"a supercell to run MD in is an integer N (N x N x N) from 1 to 8; got {n}")
    return n


def _per_supercell(value):
    """A positive int, or a list of them (one per supercell of ``supercells``)."""
    if isinstance(value, (list, tuple)):
        return _listed_of(lambda x, at: _int(x, minimum=1, at=at), wrap=())(value)
    return _int(value, minimum=1)


def _one_per_supercell(section, *fields: tuple[str, str]) -> None:
    """Refuse a list-valued field of ``section`` whose length is not that of its ``supercells``
    (``fields``: (name, what one value is))."""
    for name, what in fields:
        value = getattr(section, name)
        if isinstance(value, tuple) and len(value) != len(section.supercells):
            _fail(
                name,
                f"a list gives one {what} per supercell of supercells ({list(section.supercells)}); "
                f"got {len(value)} for {len(section.supercells)}",
            )


def _md_temperatures(value):
    """Temperatures in (0, 3000] K: one number, a list of them, or a list (one per supercell) of such
    lists or numbers."""

    def temperature(x, at):
        return _float(x, lo=0.0, hi=3000.0, lo_open=True, at=at)

    if isinstance(value, (list, tuple)) and any(isinstance(v, (list, tuple)) for v in value):
        return tuple(
            _listed(
                v,
                lambda x, at, j=j: temperature(x, f"[{j}]{at}"),
                f"the list of supercell [{j}] is empty or not a list",
            )
            for j, v in enumerate(value)
        )
    return _listed(value, temperature, "expected a non-empty list")


def _bound_per_supercell(value):
    """A number >= 0, or a list of them (one per supercell of ``supercells``)."""
    if isinstance(value, (list, tuple)):
        return _listed_of(lambda x, at: _float(x, lo=0.0, at=at), wrap=())(value)
    return _float(value, lo=0.0)


class ThermalMDSpec(_Step):
    """Thermal configurations: NPT MD driven by the campaign's calculator itself (an ML surrogate) in the
    training supercell, from relaxed parents, at every temperature.

    After ``equilibration`` steps, every ``every``-th of the next ``steps`` steps becomes a configuration,
    calculated and stored like the enumerated ones: what MD at these temperatures visits, which grids and
    n-sphere samples around the wells do not reach. Off unless given.
    """

    enabled: Bool = False
    temperatures: _checked(
        tuple[float, ...] | tuple[tuple[float, ...], ...], _md_temperatures, float | list[float] | list[list[float]]
    ) = (300.0, 600.0)
    """Temperatures (K): one list for every supercell, or one list per supercell of ``supercells``, e.g.
    ``[[100, 300, 450, 600], [450, 500, 550, 600]]`` to spend the 4x4x4 cell's steps where it is hot."""
    starts: _checked(tuple[str, ...], _listed_of(_glazer), str | list[str]) = ("a0a0a0",)
    """Relaxed parents to start from (Glazer symbols; a0a0a0 is the relaxed cubic cell)."""
    steps: _checked(int | tuple[int, ...], _per_supercell, int | list[int]) = 200
    """MD steps sampled at each temperature: one number, or one per supercell of ``supercells`` (each
    4x4x4 step is one calculation of eight times the work of a 2x2x2 one)."""
    equilibration: _Int(0) = 50
    every: _checked(int | tuple[int, ...], _per_supercell, int | list[int]) = 10
    """MD steps between frames: one number, or one per supercell of ``supercells`` (a 4x4x4 frame is
    eight times the work of a 2x2x2 one to calculate and to train on)."""
    timestep_fs: _Float(0.1, 10.0) = 4.0
    ladder: Bool = False
    """False: a fresh run from the relaxed parent at every temperature. True: one run per start (and
    supercell) through ``temperatures`` in the order given, each temperature starting from the state
    the one before left, with ``equilibration`` steps at each: a stepwise heating (or cooling) that
    needs only a short equilibration after the first temperature, so fewer steps are spent unsampled."""
    supercells: _checked(tuple[int, ...], _listed_of(_md_supercell), int | list[int]) = ()
    """N x N x N supercells to run in (empty: the training supercell). A larger cell starts from the
    relaxed parent repeated (N must be a multiple of the training supercell's), and its frames, e.g.
    ``[2, 4]``: 320 atoms, hold the long-wavelength tilt fluctuations a 2x2x2 cell cannot; each is one
    calculation, about eight times the work of a 2x2x2 one. They train the nets only."""

    @model_validator(mode="after")
    def _one_value_per_supercell(self):
        _one_per_supercell(self, ("steps", "number of steps"), ("every", "spacing"))
        if self.temperatures and isinstance(self.temperatures[0], tuple):
            _one_per_supercell(self, ("temperatures", "list of temperatures"))
        return self


def _path(value):
    if not isinstance(value, (list, tuple)) or len(value) < 2:
        _fail("", f"expected a list of at least two Glazer symbols; got {value!r}")
    return tuple(_glazer(g, f"[{j}]") for j, g in enumerate(value))


class InterpolationSpec(_Section):
    path: _checked(tuple[str, ...], _path, list[str])
    n: _Int(2) = 8


def _interpolations(value):
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        _fail("", f"expected a list of {{path: [glazer, glazer, ...], n: int}}; got {value!r}")
    return list(value)


class StepsSpec(_Section):
    relax_reference: _switchable(RelaxReferenceSpec) = RelaxReferenceSpec()
    relax_tilts: _switchable(RelaxTiltsSpec) = RelaxTiltsSpec()
    mode_grid: _switchable(ModeGridSpec) = ModeGridSpec()
    strain_grid: _switchable(StrainGridSpec) = StrainGridSpec()
    random: _switchable(RandomSpec) = RandomSpec()
    tilt_grid: _switchable(TiltGridSpec) = TiltGridSpec()
    thermal_md: _switchable(ThermalMDSpec) = ThermalMDSpec()
    interpolations: _checked(tuple[InterpolationSpec, ...], _interpolations) = ()

    @model_validator(mode="after")
    def _parents_are_relaxed(self):
        """Parents that interpolations and ``random.around`` name must be produced by the relax steps."""
        available = set(campaign_parents(self))
        for i, ip in enumerate(self.interpolations):
            for j, g in enumerate(ip.path):
                if g not in available:
                    _fail(
                        f"interpolations[{i}].path[{j}]",
                        f"tilt system {g!r} is not relaxed by this campaign; relaxed parents are {sorted(available)}",
                    )
        if self.thermal_md.enabled:
            for j, g in enumerate(self.thermal_md.starts):
                if g not in available:
                    _fail(
                        f"thermal_md.starts[{j}]",
                        f"tilt system {g!r} is not relaxed by this campaign; relaxed parents are {sorted(available)}",
                    )
        if isinstance(self.random.around, tuple):
            for j, g in enumerate(self.random.around):
                if g not in available:
                    _fail(
                        f"random.around[{j}]",
                        f"tilt system {g!r} is not relaxed by this campaign; relaxed parents are {sorted(available)}",
                    )
        return self

    @model_validator(mode="after")
    def _something_to_do(self):
        if not (
            self.mode_grid.enabled
            or self.strain_grid.enabled
            or self.random.enabled
            or self.tilt_grid.enabled
            or self.thermal_md.enabled
            or self.interpolations
            or self.relax_tilts.enabled
            or self.relax_reference.enabled
        ):
            _fail(
                "",
                "no step is enabled: enable relax_reference, relax_tilts, mode_grid, strain_grid, random, "
                "tilt_grid, thermal_md or interpolations",
            )
        return self


def campaign_parents(steps: StepsSpec) -> list[str]:
    """Glazer symbols of the relaxed parents a campaign enumerates around ("a0a0a0" = the reference)."""
    out = [CUBIC]
    if steps.relax_tilts.enabled:
        systems = glazer_symbols() if steps.relax_tilts.systems == "all" else list(steps.relax_tilts.systems)
        out += [g for g in systems if g != CUBIC]
    return out


def _clusters(value, at: str = ""):
    """A named cluster set, or an explicit non-empty list of clusters."""
    if isinstance(value, str):
        return _cluster_set(value, at)
    if isinstance(value, (list, tuple)) and value:
        return tuple(_plain(list(value)))
    _fail(at, f"{_CLUSTER_HELP} or an explicit non-empty list of clusters; got {value!r}")


class DescriptorSpec(_Section):
    clusters: _checked(str | tuple[Any, ...], _clusters, str | list[Any]) = "7p+t+o"
    max_order: _checked(Literal[ORDERS], _order) = 2
    metric: _Choice(*METRICS) = "lin"
    truncated: Bool = False


def _grid_value(key: str):
    def check(x, at):
        if key == "clusters":
            if isinstance(x, str):
                return _cluster_set(x, at)
            if not (isinstance(x, list) and x):
                _fail(at, f"{_CLUSTER_HELP} or an explicit list of clusters; got {x!r}")
            return x
        if key == "max_order":
            if x not in ORDERS:
                _fail(at, f"must be one of {list(ORDERS)}; got {x!r}")
            return x
        return _int(x, minimum=1, at=at)

    return check


def _grid(value) -> dict:
    grid = _check_mapping(value, GRID_KEYS)
    out = {}
    for k, v in grid.items():
        if not isinstance(v, list):
            v = [v]
        if not v:
            _fail(k, "expected a non-empty list of values to try")
        out[k] = _plain([_grid_value(k)(x, f"{k}[{i}]") for i, x in enumerate(v)])
    return out


def _options(value) -> dict:
    if not value:
        return {}
    if not isinstance(value, dict):
        _fail("", f"expected a mapping of extra train_and_select settings; got {value!r}")
    return dict(value)


class TrainingSpec(_Section):
    """Model selection settings (paper section III.C), handed to ``perovskite_pes.models.train_and_select``.

    The grid scans ``models`` x clusters x max_order x layers x nodes; clusters and max_order
    default to the ``descriptors`` section. Defaults shared with ``train_and_select`` (folds,
    test fraction, batch sizes, epochs, learning rate, force weight, workers) are its defaults.
    """

    enabled: Bool = True
    """False: the campaign only produces data (no training, no retraining)."""
    models: _checked(
        tuple[Literal[MODEL_TYPES], ...],
        lambda v: _listed(
            v,
            lambda m, at: _choice(m, MODEL_TYPES, at),
            f"expected a non-empty list of model kinds from {list(MODEL_TYPES)}",
            wrap=(str,),
        ),
        str | list[str],
    ) = ("cluster",)
    grid: _checked(dict[str, list[Any]], _grid, dict[str, Any] | None) = {}
    """Hyperparameter grid: clusters, max_order, layers, nodes -> lists of values to try."""
    folds: _Int(2) = _SELECTION.n_folds
    """Cross-validation folds (train_and_select's ``n_folds``)."""
    test_fraction: _Float(0.0, 0.9, lo_open=True) = _SELECTION.test_fraction
    batch_sizes: _checked(
        tuple[int, ...],
        lambda v: _listed(
            v, lambda b, at: _int(b, minimum=1, at=at), "expected a non-empty list of positive integers", wrap=(int,)
        ),
        int | list[int],
    ) = tuple(_SELECTION.training.batch_sizes)
    """Adam batch-size schedule and epochs per stage (one number or one per stage)."""
    epochs: int | list[int] | tuple[int, ...] = (
        tuple(_SELECTION.training.epochs)
        if isinstance(_SELECTION.training.epochs, list)
        else _SELECTION.training.epochs
    )
    learning_rate: _Float(0.0, lo_open=True) = _SELECTION.training.learning_rate
    force_weight: _Float(0.0) = _SELECTION.training.force_weight
    """Weight of the force term in the loss (0: energies only, as in the paper)."""
    stress_weight: _Float(0.0) = _SELECTION.training.stress_weight
    """Weight of the stress term in the loss (0: none; the calculations must hold stresses)."""
    n_jobs: _Int(1) = _SELECTION.n_jobs
    """Parallel workers for the cross-validation folds."""
    options: _checked(dict[str, Any], _options, dict[str, Any] | None) = {}
    """Other settings handed unchanged to perovskite_pes.models.train_and_select (merged last)."""

    @field_validator("epochs", mode="before")
    @classmethod
    def _epochs(cls, value, info: ValidationInfo):
        if isinstance(value, (list, tuple)):
            n = len(info.data["batch_sizes"]) if "batch_sizes" in info.data else len(value)
            if len(value) != n:
                _fail("", f"give one number of epochs or one per batch size ({n}); got {value!r}")
            return tuple(_int(x, minimum=1, at=f"[{i}]") for i, x in enumerate(value))
        return _int(value, minimum=1)


class RetrainPolicySpec(_Step):
    enabled: Bool = True
    min_new_count: _Int(1, optional=True) = 500
    """Retrain when at least this many new valid calculations arrived since the active model."""
    min_new_fraction: _Float(0.0, lo_open=True, optional=True) = 0.2
    """... and/or when they are at least this fraction of the data the active model was trained on."""
    require: _Choice("any", "all") = "any"
    """Either threshold suffices ("any"), or every threshold that is set must be passed ("all")."""
    cv_tolerance: _Float(0.0) = 0.05
    """A retrained model is activated only if its CV RMSE <= old CV RMSE * (1 + cv_tolerance)."""
    final: Bool = True
    """Train at the end of the campaign whenever any new data arrived (independent of the thresholds)."""

    @model_validator(mode="after")
    def _has_a_threshold(self):
        if self.enabled and self.min_new_count is None and self.min_new_fraction is None:
            _fail("", "set min_new_count and/or min_new_fraction (or enabled: false)")
        return self

    def to_dict(self) -> dict:
        return self.model_dump()


def _even_supercell(value):
    n = _int(value, minimum=2)
    if n % 2:
        _fail("", f"the tilt order parameters need an even N x N x N supercell; got {n}")
    return n


class SimulateSpec(_Step):
    """The finite-temperature step that ends a campaign: heat and cool its model, locate the transitions.

    Handed to :class:`perovskite_pes.simulation.transitions.TransitionScan` (``steps`` and
    ``equilibration`` are MD steps or MC sweeps per temperature). Off unless given; switched off, it
    keeps its defaults.
    """

    _reset_when_off: ClassVar[bool] = True
    enabled: Bool = False
    method: _Choice("md", "mc") = "md"
    supercell: _checked(int, _even_supercell, ge=2) = 4
    t_min: _Float(0.0, lo_open=True) = 100.0
    t_max: _Float(0.0, lo_open=True) = 500.0
    t_step: _Float(0.0, lo_open=True) = 50.0
    steps: _Int(1) = 500
    equilibration: _Int(0) = 250
    seeds: _checked(
        tuple[int, ...],
        lambda v: _listed(v, lambda x, at: _int(x, minimum=0, at=at), "expected a non-empty list of integers", wrap=()),
        list[int],
    ) = (0, 1)
    directions: _checked(
        tuple[Literal["heat", "cool"], ...],
        lambda v: _listed(
            v, lambda x, at: _choice(x, ("heat", "cool"), at), "expected a list of heat and/or cool", wrap=()
        ),
        list[str],
    ) = ("heat", "cool")
    heat_start: Glazer = "a+b-b-"
    cool_start: Glazer = "a0a0a0"
    ensemble: _Choice("nvt", "npt") = "npt"
    timestep_fs: _Float(0.1, 10.0) = 4.0
    max_displacement: _Float(0.5, 10.0) = 2.0
    """An atom further than this from its site (A) stops a run: the model has left its data. The
    surrogate's own MD moves a Br 2 A at 500-600 K (docs/simulation.md), so a model fit for those
    temperatures may need 3."""

    @model_validator(mode="after")
    def _temperatures(self):
        if self.t_max <= self.t_min:
            _fail("t_max", f"must be above t_min ({self.t_min} K); got {self.t_max}")
        if (self.t_max - self.t_min) / self.t_step > 200:
            _fail("t_step", f"{self.t_step} K makes more than 200 temperatures from {self.t_min} to {self.t_max} K")
        return self

    def scan_kwargs(self) -> dict:
        """Keyword arguments of ``TransitionScan``."""
        d = _plain(self.model_dump(exclude={"enabled"}))
        timestep = d.pop("timestep_fs")
        if self.method == "md":
            d["timestep_fs"] = timestep
        return d


class ActiveSpec(_Step):
    """Active learning at temperature after the first training: explore -> select -> label -> retrain.

    Each iteration runs MD with the current committee (``committee`` models, bootstrap resamples)
    at every temperature, start and strain in the training supercell, keeps the frames whose committee
    spread lies in the trust window [``lower``, ``upper``) (``metric``: max force deviation in eV/A, or
    energy spread in eV/atom), spreads them out and de-duplicates them, labels at most
    ``max_selected`` with the campaign's calculator and retrains. It stops when, at every temperature,
    less than ``stop_fraction`` of the explored frames lie above ``lower``, after ``iterations``
    rounds of labelling (one more exploration then measures the final committee), or when ``budget``
    calculations have been spent. Off unless given; switched off, it keeps its defaults.
    """

    _reset_when_off: ClassVar[bool] = True
    enabled: Bool = False
    iterations: _Int(1) = 5
    budget: _Int(1) = 2000
    committee: _Int(2) = 4
    temperatures: _checked(
        tuple[float, ...],
        _listed_of(lambda x, at: _float(x, lo=0.0, hi=3000.0, lo_open=True, at=at)),
        float | list[float],
    ) = (150.0, 300.0, 450.0, 600.0)
    starts: _checked(tuple[str, ...], _listed_of(_glazer), str | list[str]) = ("a+b-b-", "a0a0c+", "a0a0a0")
    strains: _checked(
        tuple[float, ...], _listed_of(lambda x, at: _float(x, lo=-0.1, hi=0.1, at=at)), float | list[float]
    ) = (0.0,)
    supercells: _checked(tuple[int, ...], _listed_of(_md_supercell), int | list[int]) = ()
    """N x N x N supercells to explore in (empty: the campaign's training supercell). Frames of a larger
    cell (e.g. ``[2, 4]``: 320 atoms) hold the long-wavelength motion a 2x2x2 cell cannot; they are
    labelled as they are (one calculation each, eight times the work of a 2x2x2 one) and every
    committee member trains on them. The largest force deviation grows with the number of atoms, so a
    larger cell's frames reach the trust window sooner: ``lower`` and ``upper`` take one bound per
    supercell."""
    steps: _Int(1) = 300
    equilibration: _Int(0) = 100
    sample_every: _Int(1) = 10
    timestep_fs: _Float(0.1, 10.0) = 4.0
    metric: _Choice("force", "energy") = "force"
    lower: _checked(float | tuple[float, ...], _bound_per_supercell, float | list[float]) = 0.05
    """Lower trust bound: one number, or one per supercell of ``supercells`` (the largest force
    deviation of a 320-atom cell is larger than that of a 40-atom one at the same accuracy per atom)."""
    upper: _checked(float | tuple[float, ...], _bound_per_supercell, float | list[float]) = 0.5
    """Upper trust bound: one number, or one per supercell of ``supercells``."""
    max_selected: _Int(1) = 100
    uniqueness_tolerance: _Float(0.0) = 0.05
    stop_fraction: _Float(0.0, 1.0) = 0.05
    resample: _Choice("bootstrap", "cv") = "bootstrap"
    """How the committee is made: ``bootstrap``, members refitted on bootstrap resamples after the
    cross-validation; ``cv``, the cross-validation's fold models of the selected setting, with no fit of
    their own (``committee`` must equal ``training.folds``)."""
    max_displacement: _Float(0.5, 10.0) = 2.0
    """An atom further than this from its site (A) ends an exploration run as a blow-up (its last frames
    become candidates whatever their spread). The surrogate's own 4x4x4 MD moves a Br 2 A at 500-600 K
    (docs/simulation.md): exploring there in a larger cell may need 3, as ``simulate`` does."""
    final_exploration: Bool = True
    """Explore once more when the iterations or the budget are spent, to measure the final committee
    (false: skip that exploration, which labels nothing)."""
    distance_margin: _Float(0.0, 0.99, optional=True) = None
    """Leave out frames with a pair of atoms closer than ``1 - distance_margin`` times the shortest
    distance of that pair of species in the training data (those within the training window,
    ``training.options.max_energy_mev_per_fu``, where one is set), frames from before a blow-up
    included: they lie where a label trains nothing (e.g. 0.1; docs/campaigns.md). None: only the
    fixed 1.5 A floor."""

    @model_validator(mode="after")
    def _trust_window(self):
        _one_per_supercell(self, ("lower", "bound"), ("upper", "bound"))
        lower, upper = self.trust_bounds()
        per_cell = isinstance(lower, dict)
        for n, lo, up in [(n, lower[n], upper[n]) for n in lower] if per_cell else [(None, lower, upper)]:
            if up <= lo:
                where = f" for the {n}x{n}x{n} cell" if per_cell else ""
                _fail("upper", f"the trust window needs lower < upper{where}; got lower={lo}, upper={up}")
        return self

    def trust_bounds(self) -> tuple:
        """(lower, upper) as :func:`~perovskite_pes.simulation.explore.select` takes them: two numbers, or,
        where either is a list, two mappings N -> bound over ``supercells``."""
        if not (isinstance(self.lower, tuple) or isinstance(self.upper, tuple)):
            return self.lower, self.upper

        def per_cell(value) -> dict:
            values = value if isinstance(value, tuple) else (value,) * len(self.supercells)
            return dict(zip(self.supercells, values))

        return per_cell(self.lower), per_cell(self.upper)

    @model_validator(mode="after")
    def _supercells_hold_the_starts(self):
        if self.supercells:
            from ..structure import Perovskite
            from ..structure.tilts import check_tilt_supercell

            for n in self.supercells:
                for g in self.starts:
                    try:
                        check_tilt_supercell(Perovskite().supercell(n), g)
                    except ValueError as exc:
                        _fail("supercells", f"{exc} (start {g} of the exploration)")
        return self

    def explore_kwargs(self) -> dict:
        return {
            "temperatures": list(self.temperatures),
            "starts": list(self.starts),
            "strains": list(self.strains),
            "steps": self.steps,
            "equilibration": self.equilibration,
            "sample_every": self.sample_every,
            "timestep_fs": self.timestep_fs,
            "max_displacement": self.max_displacement,
        }


def _name(value) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        _fail("", f"must be 1-64 letters, digits, '.', '_' or '-' starting with a letter or digit; got {value!r}")
    return value


def _supercell(value):
    from ..structure import supercell_matrix

    try:
        supercell_matrix(value)
    except (ValueError, TypeError) as exc:
        _fail("", f"{exc}")
    return _plain(value) if isinstance(value, (list, tuple)) else value


class CampaignSpec(_Section):
    """A validated campaign spec (build it with :func:`validate_spec` or :func:`load_spec`)."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", use_attribute_docstrings=True, title="perovskite-pes campaign spec"
    )
    _internal: ClassVar[tuple[str, ...]] = ("source",)

    name: _checked(str, _name, description="campaign name: 1-64 letters, digits, '.', '_' or '-'")
    calculator: CalculatorSpec
    seed: _Int(0) = 0
    """Random seed of every sampler and of training."""
    reference: ReferenceSpec = ReferenceSpec()
    supercell: _checked(Any, _supercell, int | list[int] | list[list[int]]) = 2
    """The supercell: n, [n1, n2, n3] or a 3x3 integer matrix (kept as written: it is part of the campaign's
    identity)."""
    fireworks: FireworksSpec = FireworksSpec()
    steps: StepsSpec = StepsSpec()
    descriptors: DescriptorSpec = DescriptorSpec()
    training: TrainingSpec = TrainingSpec()
    retrain: _switchable(RetrainPolicySpec) = RetrainPolicySpec()
    simulate: _switchable(SimulateSpec) = SimulateSpec()
    active: _switchable(ActiveSpec) = ActiveSpec()
    description: Annotated[Any, Field(exclude=True)] = None
    """Free text for people; not part of the campaign's identity."""
    source: SkipJsonSchema[str | None] = Field(default=None, exclude=True)
    """The file the spec was read from (set by load_spec, not by the YAML)."""

    @model_validator(mode="before")
    @classmethod
    def _as_mapping(cls, data):
        if isinstance(data, cls):
            return data
        d = _check_mapping(data, cls.input_fields())
        if "name" not in d:
            _fail("name", "required: a campaign name (letters, digits, '.', '_', '-')")
        if "calculator" not in d:
            _fail("calculator", f"required: a mapping with 'name' (one of {list(CALCULATORS)}) and optional 'settings'")
        return d

    @model_validator(mode="after")
    def _needs_a_model(self):
        if self.simulate.enabled and not self.training.enabled:
            _fail("simulate", "needs a model: enable training (the simulation runs the campaign's final model)")
        if self.active.enabled and not self.training.enabled:
            _fail("active", "needs a model to explore with: enable training")
        if self.active.enabled and self.active.resample == "cv" and self.active.committee != self.training.folds:
            _fail(
                "active.committee",
                f"with resample: cv the committee is the cross-validation's fold models, so it must equal "
                f"training.folds ({self.training.folds}); got {self.active.committee}",
            )
        from ..structure import supercell_matrix

        own = supercell_matrix(self.supercell)
        tm = self.steps.thermal_md

        def beside(cells):  # the supercells other than the training one
            return [n for n in cells if not (supercell_matrix(n) == own).all()]

        larger = beside(tm.supercells)
        for field, on, others in (
            ("active.supercells", self.active.enabled, beside(self.active.supercells)),
            ("steps.thermal_md.supercells", tm.enabled and self.training.enabled, larger),
        ):
            if on and others and not set(self.training.models) <= {"cluster", "site"}:
                _fail(
                    field,
                    f"frames of supercells {others} beside the training one train only the nets: training.models "
                    f"must be cluster and/or site; got {list(self.training.models)}",
                )
        k = int(own[0, 0])
        if tm.enabled and larger and (not (own == supercell_matrix(k)).all() or any(n % k for n in larger)):
            _fail(
                "steps.thermal_md.supercells",
                f"a larger cell starts from the relaxed parent repeated, so each N must be a multiple of the "
                f"training supercell's ({own.tolist()}); got {list(tm.supercells)}",
            )
        return self

    @model_validator(mode="after")
    def _thermal_md_needs_a_surrogate(self):
        if self.steps.thermal_md.enabled and self.calculator.is_dft:
            _fail(
                "steps.thermal_md",
                f"needs an ML surrogate calculator ({', '.join(c for c in CALCULATORS if c not in DFT_CALCULATORS)}) "
                f"to drive the MD; with {self.calculator.name} it would be ab initio MD: use active learning instead",
            )
        return self

    @model_validator(mode="after")
    def _training_settings_are_valid(self):
        """What the training Firework hands to ``train_and_select`` (``training.options`` merged last) is
        checked now, not hours later when that Firework runs."""
        if self.training.enabled:
            from ..models.selection import SelectionSettings, SettingsError

            try:
                SelectionSettings.from_input(self.campaign_training_settings())
            except SettingsError as exc:
                _fail("training.options", str(exc).removeprefix("selection settings: "))
        return self

    @model_validator(mode="after")
    def _supercell_holds_the_tilts(self):
        if self.steps.relax_tilts.enabled:
            from ..structure.tilts import check_tilt_supercell

            cell = self.reference_supercell()
            for g in campaign_parents(self.steps):
                try:
                    check_tilt_supercell(cell, g)
                except ValueError as exc:
                    _fail("supercell", f"{exc} (needed by steps.relax_tilts)")
        return self

    @property
    def category(self) -> str | None:
        """FireWorks category of calculation Fireworks (None: no category)."""
        cat = self.fireworks.category
        if cat == "auto":
            return "dft" if self.calculator.is_dft else None
        return None if cat == "none" else cat

    def to_dict(self) -> dict:
        """Plain JSON-able dict with every default filled in (its hash identifies the campaign).

        Steps added after campaigns were first hashed (``tilt_grid``, ``thermal_md``) appear only when enabled,
        and fields added later (``active.final_exploration``, ``active.resample``, ``active.supercells``,
        ``active.max_displacement``, ``active.distance_margin``,
        ``training.stress_weight``, ``steps.tilt_grid.ratios``, ``steps.thermal_md.supercells`` and ``ladder``,
        ``simulate.max_displacement``) only when they differ from their default, so that the hash of a spec
        that does not use them stays what it was.
        """
        d = _plain(self.model_dump())
        for step in ("tilt_grid", "thermal_md"):
            if not getattr(self.steps, step).enabled:
                del d["steps"][step]
        for key in ("final_exploration", "resample", "supercells", "max_displacement", "distance_margin"):
            if getattr(self.active, key) == ActiveSpec.model_fields[key].default:
                del d["active"][key]
        if "tilt_grid" in d["steps"] and not self.steps.tilt_grid.ratios:
            del d["steps"]["tilt_grid"]["ratios"]
        if "thermal_md" in d["steps"]:
            for key in ("supercells", "ladder"):
                if not getattr(self.steps.thermal_md, key):
                    del d["steps"]["thermal_md"][key]
        if self.simulate.max_displacement == SimulateSpec.model_fields["max_displacement"].default:
            del d["simulate"]["max_displacement"]
        if self.training.stress_weight == TrainingSpec.model_fields["stress_weight"].default:
            del d["training"]["stress_weight"]
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str | None = None) -> "CampaignSpec":
        return validate_spec(d, source=source)

    def reference_supercell(self, lattice_parameter: float | None = None):
        from ..structure import Perovskite

        a = self.reference.lattice_parameter if lattice_parameter is None else lattice_parameter
        return Perovskite(tuple(self.reference.species), a).supercell(self.supercell)

    def training_settings(self) -> dict:
        """Settings for :func:`perovskite_pes.models.train_and_select` (its schema)."""
        t = self.training
        d = self.descriptors
        grid = {
            "model": list(t.models),
            "clusters": [d.clusters if isinstance(d.clusters, str) else _plain(list(d.clusters))],
            "max_order": [d.max_order],
        }
        grid.update(_plain(dict(t.grid)))
        out = {
            "grid": grid,
            "metric": d.metric,
            "truncated": d.truncated,
            "n_folds": t.folds,
            "test_fraction": t.test_fraction,
            "seed": self.seed,
            "n_jobs": t.n_jobs,
            "training": {
                "batch_sizes": list(t.batch_sizes),
                "epochs": list(t.epochs) if isinstance(t.epochs, (list, tuple)) else t.epochs,
                "learning_rate": t.learning_rate,
                "force_weight": t.force_weight,
                "stress_weight": t.stress_weight,
            },
        }
        for key, value in _plain(dict(t.options)).items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = {**out[key], **value}
            else:
                out[key] = value
        return out

    def campaign_training_settings(self) -> dict:
        """:meth:`training_settings` as the campaign trains: with an ``active:`` section every training makes
        a committee, since exploration needs the committee's spread from the first training on."""
        out = self.training_settings()
        if self.active.enabled:
            out["committee"] = {"size": self.active.committee, "resample": self.active.resample}
        return out


# --------------------------------------------------------------------------- entry points
def load_spec(path) -> CampaignSpec:
    """Read and validate a campaign spec from a YAML file."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise SpecError(
            f"campaign spec file {str(p)!r} does not exist (expected a YAML file such as workflows/quickstart.yaml)"
        )
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"campaign spec {p}: not valid YAML: {exc}") from None
    return validate_spec(data, source=str(p))


def validate_spec(data, source: str | None = None) -> CampaignSpec:
    """Validate a spec given as a dict (as read from YAML) and fill in the defaults.

    Raises :class:`SpecError` with one line naming the first offending field.
    """
    try:
        spec = CampaignSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_error_line(exc)) from None
    return spec if source is None else spec.model_copy(update={"source": source})


def validate_active(settings: dict) -> ActiveSpec:
    """The active-learning loop's settings as a Firework holds them (the spec's ``active`` section, perhaps
    written before a field existed, with other keys beside it) validated like a spec's: a field missing
    takes its default, keys that are no field of :class:`ActiveSpec` are ignored. Raises :class:`SpecError`
    with one line naming the offending field."""
    known = {k: v for k, v in settings.items() if k in ActiveSpec.model_fields}
    try:
        return ActiveSpec.model_validate(known | {"enabled": True})
    except ValidationError as exc:
        raise SpecError(_error_line(exc, within=("active",))) from None


def spec_json_schema() -> dict:
    """JSON schema (draft 2020-12) of a campaign spec, for editors that check YAML files."""
    schema = CampaignSpec.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
