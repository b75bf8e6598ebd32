"""Campaign specifications: a YAML file that says what to enumerate, calculate and train.

A spec is validated completely before anything is submitted; every error names the field (as a
dotted path such as ``steps.random.count``) and what is allowed there. The validated spec is a
frozen tree of dataclasses; :meth:`CampaignSpec.to_dict` gives back a plain, JSON-able dict
(defaults filled in) that travels inside Firework specs.

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
      interpolations: [{path: [a0a0a0, a0a0c-, a-a-c+], n: 8}]
    descriptors: {clusters: 7p+t+o, max_order: 2, metric: lin, truncated: false}
    training: {models: [cluster, site], grid: {layers: [1], nodes: [8, 16]}, folds: 10,
               test_fraction: 0.2, batch_sizes: [2, 10, 100, 1000], epochs: [20, 50, 200, 1000]}
    retrain: {enabled: true, min_new_count: 500, min_new_fraction: 0.2, require: any,
              cv_tolerance: 0.05}
    simulate: {method: md, supercell: 4, t_min: 100, t_max: 500, t_step: 50, steps: 500,
               equilibration: 250, seeds: [0, 1]}   # optional: the model's phase sequence at the end
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import PesError

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
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class SpecError(PesError, ValueError):
    """A campaign spec is malformed; the message names the field and what is allowed."""


# --------------------------------------------------------------------------- helpers
def _fail(path: str, message: str):
    raise SpecError(f"campaign spec: {path}: {message}")


def _mapping(value, path: str, allowed: tuple[str, ...]) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        _fail(path, f"expected a mapping with keys {list(allowed)}; got {type(value).__name__} {value!r}")
    unknown = [k for k in value if k not in allowed]
    if unknown:
        _fail(f"{path}.{unknown[0]}" if path else str(unknown[0]), f"unknown field; allowed fields here are {list(allowed)}")
    return dict(value)


def _bool(value, path: str) -> bool:
    if not isinstance(value, bool):
        _fail(path, f"expected true or false; got {value!r}")
    return value


def _int(value, path: str, minimum: int | None = None, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(path, f"expected an integer{'' if minimum is None else f' >= {minimum}'}; got {value!r}")
    if minimum is not None and value < minimum:
        _fail(path, f"must be >= {minimum}; got {value}")
    return int(value)


def _float(value, path: str, lo: float | None = None, hi: float | None = None, allow_none: bool = False,
           lo_open: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(path, f"expected a number; got {value!r}")
    v = float(value)
    if v != v or v in (float("inf"), float("-inf")):
        _fail(path, f"expected a finite number; got {value!r}")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        _fail(path, f"must be {'>' if lo_open else '>='} {lo}; got {v}")
    if hi is not None and v > hi:
        _fail(path, f"must be <= {hi}; got {v}")
    return v


def _choice(value, path: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        _fail(path, f"must be one of {list(allowed)}; got {value!r}")
    return value


def _float_list(value, path: str, allow_empty: bool = False) -> tuple[float, ...]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or (not value and not allow_empty):
        _fail(path, f"expected a non-empty list of numbers; got {value!r}")
    return tuple(_float(v, f"{path}[{i}]") for i, v in enumerate(value))


def _str_list_or_all(value, path: str) -> str | tuple[str, ...]:
    if value == "all" or value is None:
        return "all"
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
        _fail(path, f"expected 'all' or a non-empty list of names; got {value!r}")
    return tuple(value)


def glazer_symbols() -> list[str]:
    """The 15 Glazer tilt-system symbols the structure layer knows (Howard & Stokes order)."""
    from ..structure import GLAZER_SYSTEMS

    out = []
    for entry in GLAZER_SYSTEMS:
        if isinstance(entry, str):
            out.append(entry)
        elif isinstance(entry, dict):
            out.append(entry.get("glazer") or entry.get("symbol"))
        else:
            out.append(getattr(entry, "glazer", None) or getattr(entry, "symbol", None) or entry[0])
    return out


def _glazer(value, path: str, known: list[str]) -> str:
    if not isinstance(value, str) or value not in known:
        _fail(path, f"unknown Glazer tilt system {value!r}; allowed: {known}")
    return value


# --------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class ReferenceSpec:
    species: tuple[str, str, str] = ("Cs", "Pb", "Br")
    lattice_parameter: float = 5.87


@dataclass(frozen=True)
class CalculatorSpec:
    name: str = "sevennet"
    settings: dict = field(default_factory=dict)

    @property
    def is_dft(self) -> bool:
        return self.name in DFT_CALCULATORS


@dataclass(frozen=True)
class FireworksSpec:
    #: configurations calculated by one Firework (hundreds for surrogates on the embedded store)
    per_firework: int = 200
    #: FireWorks category of calculation Fireworks: auto = "dft" for VASP/CP2K, no category for the
    #: surrogates (any worker runs them); "none" = no category; "dft"/"ml" force one
    category: str = "auto"
    #: flush the store every this many calculations inside a batch (0: once, at the end of the batch)
    flush_every: int = 0
    #: a batch Firework FIZZLES when this many of its calculations failed: "any" or "all"
    fizzle_on: str = "any"


@dataclass(frozen=True)
class RelaxReferenceSpec:
    enabled: bool = True
    relax: str = "cell"


@dataclass(frozen=True)
class RelaxTiltsSpec:
    enabled: bool = True
    systems: str | tuple[str, ...] = "all"
    #: starting tilt angles: None (the structure layer's defaults: a 8, b 6, c 10 degrees), a number
    #: (the angle of letter a; b and c scaled like the defaults) or a mapping {a: .., b: .., c: ..}
    angles_deg: float | dict | None = None
    relax: str = "cell"


@dataclass(frozen=True)
class ModeGridSpec:
    enabled: bool = False
    amplitudes: tuple[float, ...] = (-0.1, 0.1)
    subspaces: str | tuple[str, ...] = "all"
    max_per_parent: int | None = None
    #: "all" modes of each chosen subspace, or the "first" of each (its partners are symmetry images
    #: at the cubic parent)
    components: str = "all"


@dataclass(frozen=True)
class StrainGridSpec:
    enabled: bool = False
    amplitudes: tuple[float, ...] = (-0.02, 0.02)
    subspaces: str | tuple[str, ...] = "all"
    around: str = "reference"


@dataclass(frozen=True)
class RandomSpec:
    enabled: bool = False
    count: int = 100
    displacement_radius: float = 0.3
    strain_radius: float = 0.02
    uniqueness_tolerance: float = 0.0
    around: str | tuple[str, ...] = "all"
    #: draw uniformly inside the n-balls instead of on their surface
    fill: bool = False


@dataclass(frozen=True)
class InterpolationSpec:
    path: tuple[str, ...]
    n: int = 8


@dataclass(frozen=True)
class StepsSpec:
    relax_reference: RelaxReferenceSpec = field(default_factory=RelaxReferenceSpec)
    relax_tilts: RelaxTiltsSpec = field(default_factory=RelaxTiltsSpec)
    mode_grid: ModeGridSpec = field(default_factory=ModeGridSpec)
    strain_grid: StrainGridSpec = field(default_factory=StrainGridSpec)
    random: RandomSpec = field(default_factory=RandomSpec)
    interpolations: tuple[InterpolationSpec, ...] = ()


@dataclass(frozen=True)
class DescriptorSpec:
    clusters: str | tuple = "7p+t+o"
    max_order: int = 2
    metric: str = "lin"
    truncated: bool = False


@dataclass(frozen=True)
class TrainingSpec:
    """Model selection settings (paper section III.C), handed to ``perovskite_pes.models.train_and_select``.

    The grid scans ``models`` x clusters x max_order x layers x nodes; clusters and max_order
    default to the ``descriptors`` section.
    """

    #: false: the campaign only produces data (no training, no retraining)
    enabled: bool = True
    models: tuple[str, ...] = ("cluster",)
    #: hyperparameter grid: clusters, max_order, layers, nodes -> lists of values to try
    grid: dict = field(default_factory=dict)
    folds: int = 10
    test_fraction: float = 0.2
    #: Adam batch-size schedule and epochs per stage (one number or one per stage)
    batch_sizes: tuple[int, ...] = (2, 10, 100, 1000)
    epochs: Any = (20, 50, 200, 1000)
    learning_rate: float = 1e-3
    #: weight of the force term in the loss (0: energies only, as in the paper)
    force_weight: float = 0.0
    #: parallel workers for the cross-validation folds
    n_jobs: int = 2
    #: other settings handed unchanged to perovskite_pes.models.train_and_select (merged last)
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RetrainPolicySpec:
    enabled: bool = True
    #: retrain when at least this many new valid calculations arrived since the active model
    min_new_count: int | None = 500
    #: ... and/or when they are at least this fraction of the data the active model was trained on
    min_new_fraction: float | None = 0.2
    #: "any": either threshold suffices; "all": every threshold that is set must be passed
    require: str = "any"
    #: a retrained model is activated only if its CV RMSE <= old CV RMSE * (1 + cv_tolerance)
    cv_tolerance: float = 0.05
    #: train at the end of the campaign whenever any new data arrived (independent of the thresholds)
    final: bool = True


@dataclass(frozen=True)
class SimulateSpec:
    """The finite-temperature step that ends a campaign: heat and cool its model, locate the transitions.

    Handed to :class:`perovskite_pes.simulation.transitions.TransitionScan` (``steps`` and
    ``equilibration`` are MD steps or MC sweeps per temperature).
    """

    enabled: bool = False
    method: str = "md"
    supercell: int = 4
    t_min: float = 100.0
    t_max: float = 500.0
    t_step: float = 50.0
    steps: int = 500
    equilibration: int = 250
    seeds: tuple[int, ...] = (0, 1)
    directions: tuple[str, ...] = ("heat", "cool")
    heat_start: str = "a+b-b-"
    cool_start: str = "a0a0a0"
    ensemble: str = "npt"
    timestep_fs: float = 4.0

    def scan_kwargs(self) -> dict:
        """Keyword arguments of ``TransitionScan``."""
        d = _plain(asdict(self))
        d.pop("enabled")
        timestep = d.pop("timestep_fs")
        if self.method == "md":
            d["timestep_fs"] = timestep
        return d


@dataclass(frozen=True)
class ActiveSpec:
    """Active learning at temperature after the first training: explore -> select -> label -> retrain.

    Each iteration runs MD with the current committee (``committee`` models, bootstrap resamples)
    at every temperature, start and strain in the training supercell, keeps the frames whose committee
    spread lies in the trust window [``lower``, ``upper``) (``metric``: max force deviation in eV/A, or
    energy spread in eV/atom), spreads them out and de-duplicates them, labels at most
    ``max_selected`` with the campaign's calculator and retrains. It stops when, at every temperature,
    less than ``stop_fraction`` of the explored frames lie above ``lower``, after ``iterations``
    rounds of labelling (one more exploration then measures the final committee), or when ``budget``
    calculations have been spent.
    """

    enabled: bool = False
    iterations: int = 5
    budget: int = 2000
    committee: int = 4
    temperatures: tuple[float, ...] = (150.0, 300.0, 450.0, 600.0)
    starts: tuple[str, ...] = ("a+b-b-", "a0a0c+", "a0a0a0")
    strains: tuple[float, ...] = (0.0,)
    steps: int = 300
    equilibration: int = 100
    sample_every: int = 10
    timestep_fs: float = 4.0
    metric: str = "force"
    lower: float = 0.05
    upper: float = 0.5
    max_selected: int = 100
    uniqueness_tolerance: float = 0.05
    stop_fraction: float = 0.05

    def explore_kwargs(self) -> dict:
        return {"temperatures": list(self.temperatures), "starts": list(self.starts), "strains": list(self.strains),
                "steps": self.steps, "equilibration": self.equilibration, "sample_every": self.sample_every,
                "timestep_fs": self.timestep_fs}


@dataclass(frozen=True)
class CampaignSpec:
    name: str
    calculator: CalculatorSpec
    seed: int = 0
    reference: ReferenceSpec = field(default_factory=ReferenceSpec)
    supercell: Any = 2
    fireworks: FireworksSpec = field(default_factory=FireworksSpec)
    steps: StepsSpec = field(default_factory=StepsSpec)
    descriptors: DescriptorSpec = field(default_factory=DescriptorSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    retrain: RetrainPolicySpec = field(default_factory=RetrainPolicySpec)
    simulate: SimulateSpec = field(default_factory=SimulateSpec)
    active: ActiveSpec = field(default_factory=ActiveSpec)
    source: str | None = None

    @property
    def category(self) -> str | None:
        """FireWorks category of calculation Fireworks (None: no category)."""
        cat = self.fireworks.category
        if cat == "auto":
            return "dft" if self.calculator.is_dft else None
        return None if cat == "none" else cat

    def to_dict(self) -> dict:
        d = _plain(asdict(self))
        d.pop("source", None)
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
        grid = {"model": list(t.models), "clusters": [d.clusters if isinstance(d.clusters, str) else _plain(list(d.clusters))],
                "max_order": [d.max_order]}
        grid.update(_plain(dict(t.grid)))
        out = {
            "grid": grid,
            "metric": d.metric,
            "truncated": d.truncated,
            "n_folds": t.folds,
            "test_fraction": t.test_fraction,
            "seed": self.seed,
            "n_jobs": t.n_jobs,
            "training": {"batch_sizes": list(t.batch_sizes),
                         "epochs": list(t.epochs) if isinstance(t.epochs, (list, tuple)) else t.epochs,
                         "learning_rate": t.learning_rate, "force_weight": t.force_weight},
        }
        for key, value in _plain(dict(t.options)).items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = {**out[key], **value}
            else:
                out[key] = value
        return out


def _plain(obj):
    """Tuples -> lists, recursively (JSON/BSON friendly)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


# --------------------------------------------------------------------------- validation
_TOP = ("name", "seed", "reference", "supercell", "calculator", "fireworks", "steps", "descriptors",
        "training", "retrain", "simulate", "active", "description")


def load_spec(path) -> CampaignSpec:
    """Read and validate a campaign spec from a YAML file."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise SpecError(f"campaign spec file {str(p)!r} does not exist (expected a YAML file such as workflows/quickstart.yaml)")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"campaign spec {p}: not valid YAML: {exc}") from None
    return validate_spec(data, source=str(p))


def validate_spec(data, source: str | None = None) -> CampaignSpec:
    """Validate a spec given as a dict (as read from YAML) and fill in the defaults."""
    d = _mapping(data, "", _TOP)
    if "name" not in d:
        _fail("name", "required: a campaign name (letters, digits, '.', '_', '-')")
    name = d["name"]
    if not isinstance(name, str) or not _NAME_RE.match(name):
        _fail("name", f"must be 1-64 letters, digits, '.', '_' or '-' starting with a letter or digit; got {name!r}")
    seed = _int(d.get("seed", 0), "seed", minimum=0)

    r = _mapping(d.get("reference"), "reference", ("species", "lattice_parameter"))
    species = r.get("species", ["Cs", "Pb", "Br"])
    if not isinstance(species, (list, tuple)) or len(species) != 3 or not all(isinstance(s, str) for s in species):
        _fail("reference.species", f"expected three element symbols [A, B, X]; got {species!r}")
    from pymatgen.core import Element

    for i, s in enumerate(species):
        if not Element.is_valid_symbol(s):
            _fail(f"reference.species[{i}]", f"unknown chemical element {s!r}")
    reference = ReferenceSpec(
        tuple(species), _float(r.get("lattice_parameter", 5.87), "reference.lattice_parameter", lo=0.0, lo_open=True)
    )

    supercell = d.get("supercell", 2)
    from ..structure import supercell_matrix

    try:
        supercell_matrix(supercell)
    except (ValueError, TypeError) as exc:
        _fail("supercell", f"{exc}")
    if isinstance(supercell, (list, tuple)):
        supercell = _plain(supercell)

    if "calculator" not in d:
        _fail("calculator", f"required: a mapping with 'name' (one of {list(CALCULATORS)}) and optional 'settings'")
    c = _mapping(d["calculator"], "calculator", ("name", "settings"))
    calc_name = _choice(c.get("name"), "calculator.name", CALCULATORS)
    calc_settings = c.get("settings") or {}
    if not isinstance(calc_settings, dict):
        _fail("calculator.settings", f"expected a mapping of calculator settings; got {calc_settings!r}")
    calculator = CalculatorSpec(calc_name, dict(calc_settings))

    f = _mapping(d.get("fireworks"), "fireworks", ("per_firework", "category", "flush_every", "fizzle_on"))
    fws = FireworksSpec(
        per_firework=_int(f.get("per_firework", 200), "fireworks.per_firework", minimum=1),
        category=_choice(f.get("category", "auto"), "fireworks.category", CATEGORIES),
        flush_every=_int(f.get("flush_every", 0), "fireworks.flush_every", minimum=0),
        fizzle_on=_choice(f.get("fizzle_on", "any"), "fireworks.fizzle_on", ("any", "all")),
    )

    steps = _steps(d.get("steps"))
    descriptors = _descriptors(d.get("descriptors"))
    training = _training(d.get("training"))
    retrain = _retrain(d.get("retrain"))
    simulate = _simulate(d.get("simulate"))
    if simulate.enabled and not training.enabled:
        _fail("simulate", "needs a model: enable training (the simulation runs the campaign's final model)")
    active = _active(d.get("active"))
    if active.enabled and not training.enabled:
        _fail("active", "needs a model to explore with: enable training")
    if steps.relax_tilts.enabled:
        from ..structure import Perovskite
        from ..structure.tilts import check_tilt_supercell

        cell = Perovskite(reference.species, reference.lattice_parameter).supercell(supercell)
        for g in campaign_parents(steps):
            try:
                check_tilt_supercell(cell, g)
            except ValueError as exc:
                _fail("supercell", f"{exc} (needed by steps.relax_tilts)")
    return CampaignSpec(
        name=name, calculator=calculator, seed=seed, reference=reference, supercell=supercell,
        fireworks=fws, steps=steps, descriptors=descriptors, training=training, retrain=retrain,
        simulate=simulate, active=active, source=source,
    )


def _enabled_section(value, path: str, allowed: tuple[str, ...], default_enabled: bool) -> dict | None:
    """A step may be given as a mapping, as true/false, or left out (its default)."""
    if value is None:
        return {"enabled": default_enabled}
    if isinstance(value, bool):
        return {"enabled": value}
    out = _mapping(value, path, allowed + ("enabled",))
    out.setdefault("enabled", True)
    out["enabled"] = _bool(out["enabled"], f"{path}.enabled")
    return out


def _steps(value) -> StepsSpec:
    s = _mapping(value, "steps", ("relax_reference", "relax_tilts", "mode_grid", "strain_grid", "random", "interpolations"))
    known = None

    def glazers():
        nonlocal known
        if known is None:
            known = glazer_symbols()
        return known

    rr = _enabled_section(s.get("relax_reference"), "steps.relax_reference", ("relax",), True)
    relax_reference = RelaxReferenceSpec(
        rr["enabled"], _choice(rr.get("relax", "cell"), "steps.relax_reference.relax", RELAX_MODES)
    )

    rt = _enabled_section(s.get("relax_tilts"), "steps.relax_tilts", ("systems", "angles_deg", "relax"), True)
    systems = _str_list_or_all(rt.get("systems", "all"), "steps.relax_tilts.systems")
    if systems != "all":
        systems = tuple(_glazer(g, f"steps.relax_tilts.systems[{i}]", glazers()) for i, g in enumerate(systems))
        if len(set(systems)) != len(systems):
            _fail("steps.relax_tilts.systems", f"lists a tilt system twice: {list(systems)}")
    angles = rt.get("angles_deg")
    if isinstance(angles, dict):
        angles = _mapping(angles, "steps.relax_tilts.angles_deg", ("a", "b", "c"))
        angles = {k: _float(v, f"steps.relax_tilts.angles_deg.{k}", lo=0.0, hi=45.0, lo_open=True) for k, v in angles.items()}
        for letter in "abc":
            if letter not in angles:
                _fail(f"steps.relax_tilts.angles_deg.{letter}", "missing: give an angle (degrees) for each letter a, b and c")
        if len({angles["a"], angles["b"], angles["c"]}) != 3:
            _fail("steps.relax_tilts.angles_deg", f"letters a, b, c need different angles; got {angles}")
    elif angles is not None:
        angles = _float(angles, "steps.relax_tilts.angles_deg", lo=0.0, hi=30.0, lo_open=True)
    relax_tilts = RelaxTiltsSpec(
        rt["enabled"], systems, angles,
        _choice(rt.get("relax", "cell"), "steps.relax_tilts.relax", RELAX_MODES),
    )

    mg = _enabled_section(s.get("mode_grid"), "steps.mode_grid",
                          ("amplitudes", "subspaces", "max_per_parent", "components"), False)
    mode_grid = ModeGridSpec(
        mg["enabled"],
        _float_list(mg.get("amplitudes", [-0.1, 0.1]), "steps.mode_grid.amplitudes"),
        _str_list_or_all(mg.get("subspaces", "all"), "steps.mode_grid.subspaces"),
        _int(mg.get("max_per_parent"), "steps.mode_grid.max_per_parent", minimum=1, allow_none=True),
        _choice(mg.get("components", "all"), "steps.mode_grid.components", ("all", "first")),
    )
    for i, a in enumerate(mode_grid.amplitudes):
        if abs(a) > 1.5:
            _fail(f"steps.mode_grid.amplitudes[{i}]", f"displacement amplitudes are in Angstrom and must lie in [-1.5, 1.5]; got {a}")

    sg = _enabled_section(s.get("strain_grid"), "steps.strain_grid", ("amplitudes", "subspaces", "around"), False)
    strain_grid = StrainGridSpec(
        sg["enabled"],
        _float_list(sg.get("amplitudes", [-0.02, 0.02]), "steps.strain_grid.amplitudes"),
        _str_list_or_all(sg.get("subspaces", "all"), "steps.strain_grid.subspaces"),
        _choice(sg.get("around", "reference"), "steps.strain_grid.around", ("reference", "all")),
    )
    if strain_grid.subspaces != "all":
        for i, w in enumerate(strain_grid.subspaces):
            _choice(w, f"steps.strain_grid.subspaces[{i}]", ("A1g", "Eg", "T2g"))
    for i, a in enumerate(strain_grid.amplitudes):
        if abs(a) >= 0.3:
            _fail(f"steps.strain_grid.amplitudes[{i}]", f"strain amplitudes are dimensionless and must lie in (-0.3, 0.3); got {a}")

    rd = _enabled_section(
        s.get("random"), "steps.random",
        ("count", "displacement_radius", "strain_radius", "uniqueness_tolerance", "around", "fill"), False,
    )
    around = rd.get("around", "all")
    if around not in ("all", "reference"):
        around = _str_list_or_all(around, "steps.random.around")
        around = tuple(_glazer(g, f"steps.random.around[{i}]", glazers()) for i, g in enumerate(around))
    random = RandomSpec(
        rd["enabled"],
        _int(rd.get("count", 100), "steps.random.count", minimum=1),
        _float(rd.get("displacement_radius", 0.3), "steps.random.displacement_radius", lo=0.0, hi=1.5),
        _float(rd.get("strain_radius", 0.02), "steps.random.strain_radius", lo=0.0, hi=0.3),
        _float(rd.get("uniqueness_tolerance", 0.0), "steps.random.uniqueness_tolerance", lo=0.0),
        around,
        _bool(rd.get("fill", False), "steps.random.fill"),
    )
    if random.enabled and random.displacement_radius == 0 and random.strain_radius == 0:
        _fail("steps.random", "displacement_radius and strain_radius are both 0: every sample would be the parent itself")

    interps = s.get("interpolations", [])
    if interps is None:
        interps = []
    if not isinstance(interps, list):
        _fail("steps.interpolations", f"expected a list of {{path: [glazer, glazer, ...], n: int}}; got {interps!r}")
    paths = []
    for i, item in enumerate(interps):
        p = f"steps.interpolations[{i}]"
        it = _mapping(item, p, ("path", "n"))
        path = it.get("path")
        if not isinstance(path, list) or len(path) < 2:
            _fail(f"{p}.path", f"expected a list of at least two Glazer symbols; got {path!r}")
        path = tuple(_glazer(g, f"{p}.path[{j}]", glazers()) for j, g in enumerate(path))
        paths.append(InterpolationSpec(path, _int(it.get("n", 8), f"{p}.n", minimum=2)))

    steps = StepsSpec(relax_reference, relax_tilts, mode_grid, strain_grid, random, tuple(paths))
    # parents that interpolations and 'random.around' name must be produced by the relax steps
    available = set(campaign_parents(steps))
    for i, ip in enumerate(steps.interpolations):
        for j, g in enumerate(ip.path):
            if g not in available:
                _fail(f"steps.interpolations[{i}].path[{j}]",
                      f"tilt system {g!r} is not relaxed by this campaign; relaxed parents are {sorted(available)}")
    if isinstance(random.around, tuple):
        for j, g in enumerate(random.around):
            if g not in available:
                _fail(f"steps.random.around[{j}]", f"tilt system {g!r} is not relaxed by this campaign; relaxed parents are {sorted(available)}")
    if not (mode_grid.enabled or strain_grid.enabled or random.enabled or steps.interpolations
            or relax_tilts.enabled or relax_reference.enabled):
        _fail("steps", "no step is enabled: enable relax_reference, relax_tilts, mode_grid, strain_grid, random or interpolations")
    return steps


CUBIC = "a0a0a0"


def campaign_parents(steps: StepsSpec) -> list[str]:
    """Glazer symbols of the relaxed parents a campaign enumerates around ("a0a0a0" = the reference)."""
    out = [CUBIC]
    if steps.relax_tilts.enabled:
        systems = glazer_symbols() if steps.relax_tilts.systems == "all" else list(steps.relax_tilts.systems)
        out += [g for g in systems if g != CUBIC]
    return out


_CLUSTER_TOKEN = re.compile(r"^(\d+p|p\d+|t|triplet|o|octahedron|tet|tetrahedron)$")
_CLUSTER_HELP = (f"must be one of the paper's sets {list(CLUSTER_SETS)}, another '+'-joined set of <k>p (the first k pairs), "
                 "p<k>, t, o, tet (e.g. 30p+t+o)")


def _cluster_set(value: str, path: str) -> str:
    tokens = [x.strip() for x in value.split("+")]
    if not all(_CLUSTER_TOKEN.match(x) for x in tokens) or any(x in ("0p", "p0") for x in tokens):
        _fail(path, f"{_CLUSTER_HELP}; got {value!r}")
    return value


def _descriptors(value) -> DescriptorSpec:
    d = _mapping(value, "descriptors", ("clusters", "max_order", "metric", "truncated"))
    clusters = d.get("clusters", "7p+t+o")
    if isinstance(clusters, str):
        _cluster_set(clusters, "descriptors.clusters")
    elif isinstance(clusters, list) and clusters:
        clusters = tuple(_plain(clusters))
    else:
        _fail("descriptors.clusters", f"{_CLUSTER_HELP} or an explicit non-empty list of clusters; got {clusters!r}")
    order = _int(d.get("max_order", 2), "descriptors.max_order", minimum=1)
    if order not in (2, 4, 6):
        _fail("descriptors.max_order", f"must be one of [2, 4, 6]; got {order}")
    return DescriptorSpec(
        clusters, order, _choice(d.get("metric", "lin"), "descriptors.metric", METRICS),
        _bool(d.get("truncated", False), "descriptors.truncated"),
    )


def _training(value) -> TrainingSpec:
    t = _mapping(value, "training", ("enabled", "models", "grid", "folds", "test_fraction", "batch_sizes", "epochs",
                                     "learning_rate", "force_weight", "n_jobs", "options"))
    models = t.get("models", ["cluster"])
    if isinstance(models, str):
        models = [models]
    if not isinstance(models, list) or not models:
        _fail("training.models", f"expected a non-empty list of model kinds from {list(MODEL_TYPES)}; got {models!r}")
    models = tuple(_choice(m, f"training.models[{i}]", MODEL_TYPES) for i, m in enumerate(models))
    grid = _mapping(t.get("grid"), "training.grid", GRID_KEYS)
    for k, v in grid.items():
        if not isinstance(v, list):
            v = grid[k] = [v]
        if not v:
            _fail(f"training.grid.{k}", "expected a non-empty list of values to try")
        for i, x in enumerate(v):
            p = f"training.grid.{k}[{i}]"
            if k == "clusters":
                if isinstance(x, str):
                    _cluster_set(x, p)
                elif not (isinstance(x, list) and x):
                    _fail(p, f"{_CLUSTER_HELP} or an explicit list of clusters; got {x!r}")
            elif k == "max_order":
                if x not in (2, 4, 6):
                    _fail(p, f"must be one of [2, 4, 6]; got {x!r}")
            else:
                _int(x, p, minimum=1)
    batch_sizes = t.get("batch_sizes", [2, 10, 100, 1000])
    if isinstance(batch_sizes, int) and not isinstance(batch_sizes, bool):
        batch_sizes = [batch_sizes]
    if not isinstance(batch_sizes, list) or not batch_sizes:
        _fail("training.batch_sizes", f"expected a non-empty list of positive integers; got {batch_sizes!r}")
    batch_sizes = tuple(_int(b, f"training.batch_sizes[{i}]", minimum=1) for i, b in enumerate(batch_sizes))
    epochs = t.get("epochs", [20, 50, 200, 1000])
    if isinstance(epochs, list):
        if len(epochs) != len(batch_sizes):
            _fail("training.epochs", f"give one number of epochs or one per batch size ({len(batch_sizes)}); got {epochs!r}")
        epochs = tuple(_int(x, f"training.epochs[{i}]", minimum=1) for i, x in enumerate(epochs))
    else:
        epochs = _int(epochs, "training.epochs", minimum=1)
    options = t.get("options") or {}
    if not isinstance(options, dict):
        _fail("training.options", f"expected a mapping of extra train_and_select settings; got {options!r}")
    test_fraction = _float(t.get("test_fraction", 0.2), "training.test_fraction", lo=0.0, hi=0.9, lo_open=True)
    return TrainingSpec(
        enabled=_bool(t.get("enabled", True), "training.enabled"),
        models=models, grid=_plain(dict(grid)),
        folds=_int(t.get("folds", 10), "training.folds", minimum=2),
        test_fraction=test_fraction,
        batch_sizes=batch_sizes,
        epochs=epochs,
        learning_rate=_float(t.get("learning_rate", 1e-3), "training.learning_rate", lo=0.0, lo_open=True),
        force_weight=_float(t.get("force_weight", 0.0), "training.force_weight", lo=0.0),
        n_jobs=_int(t.get("n_jobs", 2), "training.n_jobs", minimum=1),
        options=dict(options),
    )


def _retrain(value) -> RetrainPolicySpec:
    r = _enabled_section(value, "retrain", ("min_new_count", "min_new_fraction", "require", "cv_tolerance", "final"), True)
    policy = RetrainPolicySpec(
        enabled=r["enabled"],
        min_new_count=_int(r.get("min_new_count", 500), "retrain.min_new_count", minimum=1, allow_none=True),
        min_new_fraction=_float(r.get("min_new_fraction", 0.2), "retrain.min_new_fraction", lo=0.0, allow_none=True,
                                lo_open=True),
        require=_choice(r.get("require", "any"), "retrain.require", ("any", "all")),
        cv_tolerance=_float(r.get("cv_tolerance", 0.05), "retrain.cv_tolerance", lo=0.0),
        final=_bool(r.get("final", True), "retrain.final"),
    )
    if policy.enabled and policy.min_new_count is None and policy.min_new_fraction is None:
        _fail("retrain", "set min_new_count and/or min_new_fraction (or enabled: false)")
    return policy


def _simulate(value) -> SimulateSpec:
    keys = tuple(k for k in SimulateSpec.__dataclass_fields__ if k != "enabled")
    r = _enabled_section(value, "simulate", keys, False)
    if not r["enabled"]:
        return SimulateSpec()
    dflt = SimulateSpec()
    method = _choice(r.get("method", dflt.method), "simulate.method", ("md", "mc"))
    t_min = _float(r.get("t_min", dflt.t_min), "simulate.t_min", lo=0.0, lo_open=True)
    t_max = _float(r.get("t_max", dflt.t_max), "simulate.t_max", lo=0.0, lo_open=True)
    if t_max <= t_min:
        _fail("simulate.t_max", f"must be above t_min ({t_min} K); got {t_max}")
    t_step = _float(r.get("t_step", dflt.t_step), "simulate.t_step", lo=0.0, lo_open=True)
    if (t_max - t_min) / t_step > 200:
        _fail("simulate.t_step", f"{t_step} K makes more than 200 temperatures from {t_min} to {t_max} K")
    seeds = r.get("seeds", list(dflt.seeds))
    if not isinstance(seeds, (list, tuple)) or not seeds:
        _fail("simulate.seeds", f"expected a non-empty list of integers; got {seeds!r}")
    directions = r.get("directions", list(dflt.directions))
    if not isinstance(directions, (list, tuple)) or not directions:
        _fail("simulate.directions", f"expected a list of heat and/or cool; got {directions!r}")
    known = glazer_symbols()
    supercell = _int(r.get("supercell", dflt.supercell), "simulate.supercell", minimum=2)
    if supercell % 2:
        _fail("simulate.supercell", f"the tilt order parameters need an even N x N x N supercell; got {supercell}")
    ensemble = _choice(r.get("ensemble", dflt.ensemble), "simulate.ensemble", ("nvt", "npt"))
    timestep = _float(r.get("timestep_fs", dflt.timestep_fs), "simulate.timestep_fs", lo=0.1, hi=10.0)
    return SimulateSpec(
        enabled=True, method=method, supercell=supercell, t_min=t_min, t_max=t_max, t_step=t_step,
        steps=_int(r.get("steps", dflt.steps), "simulate.steps", minimum=1),
        equilibration=_int(r.get("equilibration", dflt.equilibration), "simulate.equilibration", minimum=0),
        seeds=tuple(_int(x, f"simulate.seeds[{i}]", minimum=0) for i, x in enumerate(seeds)),
        directions=tuple(_choice(x, f"simulate.directions[{i}]", ("heat", "cool")) for i, x in enumerate(directions)),
        heat_start=_glazer(r.get("heat_start", dflt.heat_start), "simulate.heat_start", known),
        cool_start=_glazer(r.get("cool_start", dflt.cool_start), "simulate.cool_start", known),
        ensemble=ensemble, timestep_fs=timestep,
    )


def _active(value) -> ActiveSpec:
    keys = tuple(k for k in ActiveSpec.__dataclass_fields__ if k != "enabled")
    r = _enabled_section(value, "active", keys, False)
    if not r["enabled"]:
        return ActiveSpec()
    dflt = ActiveSpec()
    known = glazer_symbols()

    def listed(key, convert):
        v = r.get(key, list(getattr(dflt, key)))
        if isinstance(v, (int, float, str)) and not isinstance(v, bool):
            v = [v]
        if not isinstance(v, (list, tuple)) or not v:
            _fail(f"active.{key}", f"expected a non-empty list; got {v!r}")
        return tuple(convert(x, f"active.{key}[{i}]") for i, x in enumerate(v))

    lower = _float(r.get("lower", dflt.lower), "active.lower", lo=0.0)
    upper = _float(r.get("upper", dflt.upper), "active.upper", lo=0.0)
    if upper <= lower:
        _fail("active.upper", f"the trust window needs lower < upper; got lower={lower}, upper={upper}")
    return ActiveSpec(
        enabled=True,
        iterations=_int(r.get("iterations", dflt.iterations), "active.iterations", minimum=1),
        budget=_int(r.get("budget", dflt.budget), "active.budget", minimum=1),
        committee=_int(r.get("committee", dflt.committee), "active.committee", minimum=2),
        temperatures=listed("temperatures", lambda x, p: _float(x, p, lo=0.0, hi=3000.0, lo_open=True)),
        starts=listed("starts", lambda x, p: _glazer(x, p, known)),
        strains=listed("strains", lambda x, p: _float(x, p, lo=-0.1, hi=0.1)),
        steps=_int(r.get("steps", dflt.steps), "active.steps", minimum=1),
        equilibration=_int(r.get("equilibration", dflt.equilibration), "active.equilibration", minimum=0),
        sample_every=_int(r.get("sample_every", dflt.sample_every), "active.sample_every", minimum=1),
        timestep_fs=_float(r.get("timestep_fs", dflt.timestep_fs), "active.timestep_fs", lo=0.1, hi=10.0),
        metric=_choice(r.get("metric", dflt.metric), "active.metric", ("force", "energy")),
        lower=lower,
        upper=upper,
        max_selected=_int(r.get("max_selected", dflt.max_selected), "active.max_selected", minimum=1),
        uniqueness_tolerance=_float(r.get("uniqueness_tolerance", dflt.uniqueness_tolerance),
                                    "active.uniqueness_tolerance", lo=0.0),
        stop_fraction=_float(r.get("stop_fraction", dflt.stop_fraction), "active.stop_fraction", lo=0.0, hi=1.0),
    )
