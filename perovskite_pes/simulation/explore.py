"""Active learning at temperature, the science half: explore with MD, select what the committee does not know.

:func:`explore` runs MD with the current model over a ladder of temperatures, start structures (tilt
systems) and strains in one supercell, and keeps every sampled frame as a candidate. A run
that blows up is stopped; the frames it sampled before (where the model starts to fail) stay
candidates, marked ``blowup``.

:func:`select` asks a committee for its spread on every candidate (per-atom maximum force
deviation, as DP-GEN defines it, or the energy spread per atom) and keeps the frames inside a trust
window: below ``lower`` the model already knows the region, above ``upper`` the frame is nonsense
(except frames from just before a blow-up, which is where the model fails). Frames with atoms closer
than ``min_distance`` are dropped, or, per pair of species, closer than a fraction of the shortest
distance the training data hold (:func:`distance_floors`: the last frames before a blow-up often
lie far above any training energy, where a label trains nothing). The rest are spread out in
descriptor space (farthest-point order, starting from the most uncertain), de-duplicated with the
symmetry-aware uniqueness filter against each other and against what is already known (per
supercell: candidates may come from several), and capped.

Example
-------
>>> cands, runs = explore(committee, temperatures=[300, 600], starts=["a+b-b-", "a0a0a0"])  # doctest: +SKIP
>>> sel = select(committee, cands, lower=0.05, upper=0.5, max_selected=50)  # doctest: +SKIP
>>> sel.configurations, sel.per_temperature  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ..structure import Configuration, UniquenessFilter
from ..structure.sampling import DEFAULT_MIN_DISTANCE
from .common import DEFAULT_MAX_DISPLACEMENT, resolve_model, start_configuration
from .errors import BlowUpError, SimulationError
from .md import MDSimulation
from .sampler import Stage

logger = logging.getLogger(__name__)

METRICS = ("force", "energy")


@dataclass
class Candidate:
    """One explored frame and where it came from."""

    config: Configuration
    temperature_K: float
    start: str
    strain: float
    step: int
    blowup: bool = False


def explore(
    model,
    temperatures,
    starts=("a+b-b-", "a0a0a0"),
    strains=(0.0,),
    supercell=2,
    steps: int = 400,
    equilibration: int = 100,
    sample_every: int = 10,
    timestep_fs: float = 4.0,
    seed: int = 0,
    threads: int | None = 1,
    keep_before_blowup: int = 5,
    progress: bool = False,
    max_displacement: float = DEFAULT_MAX_DISPLACEMENT,
):
    """MD with ``model`` for every (temperature, start, strain); returns ``(candidates, runs)``.

    ``strains`` are hydrostatic strains of the cell (0: NPT, flexible cell; otherwise NVT in the
    strained cell). ``runs`` has one record per MD run (steps done, blow-up message). A run that
    moves an atom further than ``max_displacement`` (A) from its site counts as a blow-up.
    """
    m = resolve_model(model)
    pv = m.reference_.perovskite
    candidates: list[Candidate] = []
    runs = []
    k = 0
    for t in temperatures:
        for start in starts:
            for strain in strains:
                base = start_configuration(pv, supercell, start)
                e = float(strain)
                config = Configuration(base.reference, base.displacements, [e, e, e, 0.0, 0.0, 0.0], dict(base.tags))
                frames: list[Candidate] = []

                def keep(
                    positions,
                    lattice,
                    energy,
                    temperature,
                    step,
                    _t=t,
                    _s=start,
                    _e=e,
                    _frames=frames,
                    _ref=config.reference,
                ):
                    c = Configuration.from_arrays(
                        _ref,
                        lattice,
                        positions,
                        remove_translation=True,
                        tags={"method": "active", "temperature_K": float(_t), "start": _s, "strain": _e},
                    )
                    _frames.append(Candidate(c, float(_t), _s, _e, int(step)))

                sim = MDSimulation(
                    m,
                    supercell=supercell,
                    start=config,
                    ensemble="npt" if e == 0.0 else "nvt",
                    timestep_fs=timestep_fs,
                    sample_every=sample_every,
                    threads=threads,
                    seed=int(seed) * 1000 + k,
                    max_displacement=float(max_displacement),
                )
                k += 1
                record = {
                    "temperature_K": float(t),
                    "start": start,
                    "strain": e,
                    "supercell": np.asarray(supercell).tolist(),
                    "blowup": None,
                }
                try:
                    res = sim.run([Stage(float(t), int(steps), int(equilibration))], progress=progress, on_sample=keep)
                    record["steps"] = res.steps
                except BlowUpError as exc:
                    record["blowup"] = str(exc)
                    record["steps"] = exc.step
                    for c in frames[-int(keep_before_blowup) :]:
                        c.blowup = True
                    frames[:] = frames[-int(keep_before_blowup) :] if keep_before_blowup else []
                    logger.info("exploration at %.0f K from %s (strain %g) blew up at step %d", t, start, e, exc.step)
                record["frames"] = len(frames)
                runs.append(record)
                candidates += frames
    return candidates, runs


@dataclass
class Selection:
    """What :func:`select` kept, and the statistics the stopping rule and the report need."""

    configurations: list = field(default_factory=list)
    spreads: list = field(default_factory=list)
    per_temperature: dict = field(default_factory=dict)
    per_supercell: dict = field(default_factory=dict)
    n_candidates: int = 0
    n_in_window: int = 0
    n_duplicates: int = 0
    n_too_close: int = 0
    #: the floor per pair of species the frames were held to (A; empty with one number for all pairs)
    distance_floors: dict = field(default_factory=dict)

    def fraction_uncertain(self) -> float:
        """Largest fraction, over temperatures, of explored frames above the lower trust bound."""
        return max((v["fraction_above_lower"] for v in self.per_temperature.values()), default=0.0)

    def to_dict(self) -> dict:
        return {
            "n_candidates": self.n_candidates,
            "n_in_window": self.n_in_window,
            "n_selected": len(self.configurations),
            "n_duplicates": self.n_duplicates,
            "n_too_close": self.n_too_close,
            "distance_floors": dict(self.distance_floors),
            "fraction_uncertain": self.fraction_uncertain(),
            "per_temperature": self.per_temperature,
            "per_supercell": self.per_supercell,
            "selected_spreads": [float(s) for s in self.spreads],
        }


def spreads_of(committee, configs, metric: str = "force") -> np.ndarray:
    """The committee's spread per configuration: max force deviation (eV/A) or energy spread per atom (eV)."""
    if metric not in METRICS:
        raise SimulationError(f"spread metric must be one of {METRICS}; got {metric!r}")
    if not hasattr(committee, "predict_uncertainty"):
        raise SimulationError(f"{type(committee).__name__} gives no uncertainty: train a committee (several models)")
    unc = committee.predict_uncertainty(configs, forces=metric == "force")
    if metric == "force":
        return np.asarray(unc["max_force_deviation"], dtype=float)
    n_atoms = np.array([c.reference.n_atoms for c in configs], dtype=float)
    return np.asarray(unc["energy_std"], dtype=float) / n_atoms


def _descriptors(configs) -> np.ndarray:
    """Invariant descriptor vectors (orbit sums of the paper's basis per primitive cell), standardised."""
    import torch

    from ..models.featurizers import build_featurizer

    out = []
    by_ref: dict = {}
    for k, c in enumerate(configs):
        by_ref.setdefault(c.reference, []).append(k)
    rows = [None] * len(configs)
    for ref, idx in by_ref.items():
        fz = build_featurizer(ref, "7p+t+o", 2)
        pos = torch.as_tensor(np.stack([configs[k].positions for k in idx]))
        lat = torch.as_tensor(np.stack([configs[k].lattice for k in idx]))
        with torch.no_grad():
            x = torch.cat([f.sum(1) for f in fz.cluster_features(pos, lat)], dim=1).numpy() / ref.n_cells
        for j, k in enumerate(idx):
            rows[k] = x[j]
    out = np.array(rows)
    std = out.std(axis=0)
    std[std < 1e-12] = 1.0
    return (out - out.mean(axis=0)) / std


def farthest_point_order(x: np.ndarray, first: int) -> list[int]:
    """Indices of ``x`` rows in farthest-point order, starting from ``first``."""
    n = len(x)
    order = [int(first)]
    d = np.linalg.norm(x - x[first], axis=1)
    for _ in range(n - 1):
        nxt = int(np.argmax(d))
        if d[nxt] <= 0 and len(order) >= n:
            break
        order.append(nxt)
        d = np.minimum(d, np.linalg.norm(x - x[nxt], axis=1))
    return list(dict.fromkeys(order))[:n]


def _cell_label(reference) -> str:
    return "x".join(str(int(n)) for n in np.diag(reference.matrix))


def _bound_per_frame(bound, cells: np.ndarray, name: str) -> np.ndarray:
    """A trust bound for every frame: one number for all, or a mapping N -> bound for N x N x N cells."""
    if not isinstance(bound, Mapping):
        return np.full(len(cells), float(bound))
    by_label = {f"{int(n)}x{int(n)}x{int(n)}": float(v) for n, v in bound.items()}
    missing = sorted(set(cells.tolist()) - set(by_label))
    if missing:
        raise SimulationError(
            f"{name} gives trust bounds for the supercells {sorted(by_label)}, not for {missing}: give one per "
            "supercell explored in (or one number for all)"
        )
    return np.array([by_label[c] for c in cells])


def _check_window(lower, upper) -> None:
    """0 <= lower < upper, both numbers or both mappings N -> number over the same supercells."""
    per_cell = isinstance(lower, Mapping), isinstance(upper, Mapping)
    if per_cell[0] != per_cell[1] or (all(per_cell) and set(lower) != set(upper)):
        raise SimulationError(
            "trust window: give lower and upper both as numbers or both per supercell (the same supercells); "
            f"got lower={lower}, upper={upper}"
        )
    pairs = [(n, lower[n], upper[n]) for n in lower] if per_cell[0] else [(None, lower, upper)]
    for n, lo, up in pairs:
        if not 0 <= float(lo) < float(up):
            where = "" if n is None else f" for the {n}x{n}x{n} cell"
            raise SimulationError(f"trust window needs 0 <= lower < upper{where}; got lower={lo}, upper={up}")


def distance_floors(configs, margin: float) -> dict[str, float]:
    """``(1 - margin)`` times the shortest distance of each pair of species over ``configs``: the floors
    :func:`select` takes as ``min_distance`` to keep frames near the geometries ``configs`` cover.

    >>> from perovskite_pes.structure import Configuration, Perovskite
    >>> floors = distance_floors([Configuration(Perovskite().supercell(2))], 0.1)
    >>> round(floors["Br-Pb"], 4), round(floors["Br-Br"], 3)
    (2.6415, 3.736)
    """
    if not 0 <= float(margin) < 1:
        raise SimulationError(f"distance margin must be a fraction in [0, 1); got {margin}")
    if not len(configs):
        raise SimulationError("distance floors need at least one configuration")
    shortest: dict[str, float] = {}
    for c in configs:
        for pair, d in c.pair_min_distances().items():
            shortest[pair] = min(d, shortest.get(pair, np.inf))
    return {pair: (1.0 - float(margin)) * d for pair, d in shortest.items() if np.isfinite(d)}


def _far_enough(config, min_distance) -> bool:
    """No two atoms closer than ``min_distance`` (A), or than its floor for their pair of species (a
    mapping keyed as :meth:`Configuration.pair_min_distances` keys them)."""
    if not isinstance(min_distance, Mapping):
        return config.min_distance() >= float(min_distance)
    return all(d >= min_distance.get(pair, 0.0) for pair, d in config.pair_min_distances().items())


def select(
    committee,
    candidates: list[Candidate],
    lower: float | Mapping[int, float],
    upper: float | Mapping[int, float],
    max_selected: int,
    uniqueness_tolerance: float = 0.05,
    known=(),
    metric: str = "force",
    min_distance: float | Mapping[str, float] = DEFAULT_MIN_DISTANCE,
) -> Selection:
    """Frames inside the trust window, spread out in descriptor space, unique, at most ``max_selected``.

    ``lower`` and ``upper``: one number for every frame, or a mapping N -> bound for the frames of each
    N x N x N cell explored in (the largest force deviation of a 320-atom cell is larger than that of a
    40-atom one at the same accuracy per atom). ``min_distance``: frames with two atoms closer than this
    (A) are left out, frames from before a blow-up included; or a mapping ``"A-B"`` -> floor per pair of
    species (:func:`distance_floors`), which keeps the selection near the geometries the training data
    cover."""
    _check_window(lower, upper)
    if int(max_selected) < 1:
        raise SimulationError(f"max_selected must be a positive integer; got {max_selected}")
    sel = Selection(n_candidates=len(candidates))
    if isinstance(min_distance, Mapping):  # "Pb-Br" is "Br-Pb": the names in alphabetical order
        min_distance = {"-".join(sorted(str(k).split("-"))): float(v) for k, v in min_distance.items()}
        sel.distance_floors = dict(min_distance)
    if not candidates:
        return sel
    configs = [c.config for c in candidates]
    cells = np.array([_cell_label(c.reference) for c in configs])
    lo, up = _bound_per_frame(lower, cells, "lower"), _bound_per_frame(upper, cells, "upper")
    s = spreads_of(committee, configs, metric)

    def stats(m) -> dict:
        return {
            "frames": int(m.sum()),
            "fraction_above_lower": float((s[m] >= lo[m]).mean()),
            "fraction_above_upper": float((s[m] >= up[m]).mean()),
            "median_spread": float(np.median(s[m])),
        }

    temps = np.array([c.temperature_K for c in candidates])
    for t in np.unique(temps):
        sel.per_temperature[f"{t:.0f}"] = stats(temps == t)
    if len(set(cells)) > 1:  # the largest force deviation grows with the number of atoms: say by how much
        for cell in sorted(set(cells), key=lambda x: int(x.split("x")[0])):
            sel.per_supercell[cell] = stats(cells == cell)
    blow = np.array([c.blowup for c in candidates])
    ok = np.array([_far_enough(c.config, min_distance) for c in candidates])
    sel.n_too_close = int((~ok).sum())
    window = (s >= lo) & ((s < up) | blow) & ok
    sel.n_in_window = int(window.sum())
    idx = np.flatnonzero(window)
    if not len(idx):
        return sel
    x = _descriptors([configs[k] for k in idx])
    order = [idx[j] for j in farthest_point_order(x, int(np.argmax(s[idx])))]
    # one uniqueness filter per supercell (frames of different cells are never duplicates of each other)
    filters: dict = {}
    for k in idx:
        filters.setdefault(configs[k].reference, UniquenessFilter(uniqueness_tolerance))
    for c in known:
        if c.reference in filters:
            filters[c.reference].add(c)
    for k in order:
        if len(sel.configurations) >= int(max_selected):
            break
        if filters[configs[k].reference].accept(configs[k]):
            sel.configurations.append(configs[k])
            sel.spreads.append(float(s[k]))
        else:
            sel.n_duplicates += 1
    return sel
