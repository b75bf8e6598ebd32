"""The campaign steps as plain functions: relax, enumerate, calculate a batch.

The Firetasks in :mod:`perovskite_pes.workflows.tasks` are thin wrappers around these; nothing here
imports FireWorks, so the steps can be tested, timed and reused (``pes retrain``, benchmarks) on
their own. Everything is addressed by ids and settings; configurations and results live in the
store (:func:`perovskite_pes.db.get_store`).
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import PesError

logger = logging.getLogger(__name__)

CUBIC = "a0a0a0"
#: Angstrom: a relaxed tilt system that left its space group by more than this is logged as a warning
SYMMETRY_DRIFT_WARNING = 0.05


class CampaignStepError(PesError):
    """A campaign step cannot go on (a relaxation failed, a whole batch cannot run ...)."""


class BatchFailures(CampaignStepError):
    """Some calculations of a batch failed; they are stored as failed calculations."""


# ------------------------------------------------------------------------------- calculators
_CALCULATORS: dict[str, object] = {}


def calculator_key(calculator: dict) -> str:
    return json.dumps({"name": calculator["name"], "settings": calculator.get("settings") or {}}, sort_keys=True)


def get_calculator_cached(calculator: dict):
    """One calculator object per (name, settings) and process: ML surrogates load their weights once."""
    from ..calculators import get_calculator

    key = calculator_key(calculator)
    if key not in _CALCULATORS:
        _CALCULATORS[key] = get_calculator(calculator["name"], **(calculator.get("settings") or {}))
    return _CALCULATORS[key]


def progress_enabled() -> bool:
    """Inner progress bars (per calculation) are shown when ``PES_PROGRESS`` is set (``pes campaign run``)."""
    return os.environ.get("PES_PROGRESS", "") not in ("", "0")


# ------------------------------------------------------------------------------- references
def reference_supercell(reference: dict, supercell):
    from ..structure import Perovskite

    return Perovskite(tuple(reference["species"]), float(reference["lattice_parameter"])).supercell(supercell)


def relax_reference(reference: dict, calculator: dict, relax: str = "cell", workdir=None, digits: int = 4) -> dict:
    """Relax the cubic primitive cell; returns the reference dict with the relaxed lattice parameter.

    The lattice parameter is rounded to ``digits`` decimals (Angstrom) so that resubmitting a campaign
    finds the same reference, hence the same configurations, again.
    """
    ref = reference_supercell(reference, 1)
    calc = get_calculator_cached(calculator)
    result = calc.calculate(ref.to_structure(), relax=relax, workdir=workdir)
    if result.status != "completed":
        raise CampaignStepError(f"relaxation of the cubic reference failed: {result.error}")
    if result.final_structure is None:
        raise CampaignStepError("relaxation of the cubic reference returned no final structure")
    a = round(float(result.final_structure.volume) ** (1.0 / 3.0), digits)
    return {
        "species": list(reference["species"]),
        "lattice_parameter": a,
        "energy_per_cell": float(result.energy),
        "start_lattice_parameter": float(reference["lattice_parameter"]),
        "settings_hash": result.settings_hash,
    }


def tilt_angles_for(glazer: str, angles_deg) -> list[float] | None:
    """Per-letter tilt angles of a system from the spec's ``angles_deg`` (None, a number or {a, b, c})."""
    if angles_deg is None:
        return None
    from ..structure.tilts import DEFAULT_ANGLES, glazer_system

    g = glazer_system(glazer)
    if isinstance(angles_deg, dict):
        per_letter = {k: float(v) for k, v in angles_deg.items()}
    else:
        scale = float(angles_deg) / DEFAULT_ANGLES["a"]
        per_letter = {k: v * scale for k, v in DEFAULT_ANGLES.items()}
    letters = []
    for letter, sign in zip(g.letters, g.signs):
        if sign != "0" and letter not in letters:
            letters.append(letter)
    if not letters:
        return None
    return [per_letter[letter] for letter in letters]


def relax_tilt(
    store,
    reference: dict,
    supercell,
    glazer: str,
    calculator: dict,
    relax: str = "cell",
    angles_deg=None,
    campaign: str | None = None,
    workdir=None,
) -> dict:
    """Build tilt system ``glazer`` in the supercell, relax it and store the relaxed configuration.

    The relaxed structure is stored projected onto the space group of the tilt system it started from
    (:func:`perovskite_pes.structure.symmetrize`): a relaxation that drifts off it by numerical noise or
    a weak symmetry-breaking instability would otherwise make the symmetry twins enumerated around the
    parent merge or not from one run to the next. The largest displacement the projection removed is
    stored (tag ``symmetry_removed``, Angstrom) and logged as a warning above 0.05 A.

    Returns ``{"config_id", "energy", "space_group", ...}``; a failed relaxation raises
    :class:`CampaignStepError` with the calculator's reason.
    """
    from ..structure import Configuration, symmetrize, tilt_configuration

    ref = reference_supercell(reference, supercell)
    start = tilt_configuration(ref, glazer, tilt_angles_for(glazer, angles_deg))
    calc = get_calculator_cached(calculator)
    key = relaxation_key(calc, reference, supercell, glazer, relax, angles_deg)
    stored = _stored_relaxation(store, glazer, key)
    if stored is not None:
        logger.info("relaxation of %s found in the store (%s): not repeated", glazer, stored["config_id"])
        return stored
    result = calc.calculate(start.to_structure(), relax=relax, workdir=workdir)
    if result.status != "completed":
        raise CampaignStepError(f"relaxation of tilt system {glazer} failed: {result.error}")
    final = result.final_structure
    if final is None:
        raise CampaignStepError(f"relaxation of tilt system {glazer} returned no final structure")
    tags = _tags("tilt", glazer, relaxed=relax, campaign=campaign, relax_key=key, relax_energy=float(result.energy))
    drifted = Configuration.from_arrays(
        ref, final.lattice.matrix, final.cart_coords, tags=tags, remove_translation=True
    )
    relaxed = symmetrize(drifted, like=start)
    removed = float(np.abs(relaxed.displacements - drifted.displacements).max())
    relaxed.tags["symmetry_removed"] = round(removed, 6)
    if removed > SYMMETRY_DRIFT_WARNING:
        logger.warning(
            "relaxed %s left its space group by up to %.3f A (a symmetry-breaking instability of the "
            "calculator?); the parent stored is its projection back onto the space group",
            glazer,
            removed,
        )
    report = store.save_configurations([relaxed], source=_source(campaign))
    store.flush()
    return _relaxation_summary(str(report.ids[0]), glazer, relaxed)


def relaxation_key(calc, reference: dict, supercell, glazer: str, relax: str, angles_deg=None) -> str:
    """What makes two tilt relaxations the same: code, every setting (the relaxation's own included),
    reference, supercell, system, starting angles and what is relaxed. Stored with the relaxed
    configuration, so that a campaign run again on a store that holds it (another LaunchPad, or a
    store imported from another machine with ``pes db import``) does not relax again."""
    from .dupefinder import dupe_key

    ref = {k: reference[k] for k in ("species", "lattice_parameter")}
    sc = np.asarray(supercell).tolist()
    return dupe_key("relaxation", calc.name, calc.version, calc.settings, ref, sc, glazer, relax, angles_deg)


def _stored_relaxation(store, glazer: str, key: str) -> dict | None:
    for config, _calc, config_id in store.records({"tilt_system": glazer, "method": "tilt"}):
        if config.tags.get("relax_key") == key:
            return _relaxation_summary(str(config_id), glazer, config)
    return None


def _relaxation_summary(config_id: str, glazer: str, relaxed) -> dict:
    from ..structure import space_group

    energy = relaxed.tags.get("relax_energy")
    return {
        "config_id": config_id,
        "glazer": glazer,
        "energy": None if energy is None else float(energy),
        "space_group": "{} ({})".format(*space_group(relaxed)),
        "symmetry_removed": relaxed.tags.get("symmetry_removed"),
        "max_displacement": float(np.abs(relaxed.displacements).max()),
        "strain": relaxed.strain.tolist(),
    }


def _source(campaign: str | None) -> str | None:
    return f"campaign:{campaign}" if campaign else None


def parent_configuration(store, reference: dict, supercell, glazer: str, parents: dict):
    """The relaxed parent ``glazer`` (from the store), or the undistorted reference for the cubic one."""
    from ..structure import Configuration

    cid = (parents or {}).get(glazer)
    if cid is not None:
        return store.get_configuration(cid)
    if glazer == CUBIC:
        return Configuration(reference_supercell(reference, supercell), tags=_tags("tilt", CUBIC, relaxed=None))
    raise CampaignStepError(f"parent {glazer} has not been relaxed (its relaxation Firework did not complete)")


# ------------------------------------------------------------------------------- enumeration
def _seed(seed: int, *labels) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(seed)] + [zlib.crc32(str(label).encode()) for label in labels])


def _grid_modes(basis, subspaces="all", components: str = "all"):
    """(mode vector (N,3), label) pairs of the chosen subspaces (by unique name or irrep label).

    ``components="first"`` keeps one mode per subspace: at the cubic parent the other components of
    an irreducible subspace are symmetry images of it.
    """
    subs = list(basis.subspaces)
    if subspaces not in (None, "all"):
        chosen = []
        for wanted in subspaces:
            found = [s for s in subs if wanted in (s.name, s.label)]
            if not found:
                raise CampaignStepError(
                    f"steps.mode_grid.subspaces: no displacement subspace {wanted!r}; available: "
                    + ", ".join(s.name for s in subs)
                )
            chosen += [s for s in found if s not in chosen]
        subs = chosen
    labels = basis.labels
    for s in subs:
        for i in s.indices[:1] if components == "first" else s.indices:
            yield basis.vectors[i], labels[i]


def strain_wedge_grid(amplitudes, subspaces="all"):
    """(direction 6-vector, label, amplitude) on the irreducible wedge of each strain subspace of m-3m.

    A1g: the volume direction, signed amplitudes. Eg: directions at 0, 30 and 60 degrees between the
    tetragonal Eg(1) direction and the next mirror line (the 60-degree sector is the fundamental
    domain of the D3 image of Oh), magnitudes only. T2g: the corners of the wedge
    0 <= e_yz <= e_xz <= e_xy, i.e. (0,0,1), (0,1,1)/sqrt2 and (1,1,1)/sqrt3, signed amplitudes
    (a simultaneous sign flip of the three shears is not a symmetry).
    """
    from ..structure.modes import strain_basis

    sb = strain_basis()
    v = sb.vectors
    amps = [float(a) for a in amplitudes]
    mags = sorted({abs(a) for a in amps if a != 0})
    known = ("A1g", "Eg", "T2g")
    wanted = known if subspaces in (None, "all") else tuple(subspaces)
    for w in wanted:
        if w not in known:
            raise CampaignStepError(f"steps.strain_grid.subspaces: unknown strain subspace {w!r}; known: {list(known)}")
    if "A1g" in wanted:
        for a in amps:
            yield v[0], "A1g", a
    if "Eg" in wanted:
        for deg in (0.0, 30.0, 60.0):
            t = np.radians(deg)
            for a in mags:
                yield np.cos(t) * v[1] + np.sin(t) * v[2], f"Eg({deg:g}deg)", a
    if "T2g" in wanted:
        for name, c in (("T2g(001)", (0, 0, 1)), ("T2g(011)", (0, 1, 1)), ("T2g(111)", (1, 1, 1))):
            d = np.asarray(c, float) @ v[3:6]
            d /= np.linalg.norm(d)
            for a in amps:
                yield d, name, a


def _with(parent, displacements=None, strain=None, tags=None):
    from ..structure import Configuration

    return Configuration(
        parent.reference,
        parent.displacements if displacements is None else displacements,
        parent.strain if strain is None else strain,
        tags=tags or {},
    )


def _tags(method: str, glazer: str | None, **extra) -> dict:
    """Provenance tags; ``method``, ``tilt_system`` and ``parent`` become queryable database fields."""
    out = {"method": method, "kind": method}  # "kind": the models layer reports errors per kind
    if glazer is not None:
        out.update(tilt_system=glazer, parent=glazer)
    out.update(extra)
    return out


def _far_enough(config, min_distance: float) -> bool:
    from ..structure.sampling import SamplingError, check_min_distance

    try:
        check_min_distance(config, min_distance)
    except SamplingError:
        return False
    return True


def enumerate_around(
    parent, glazer: str, sampling: dict, seed: int = 0, include_parent: bool = True, min_distance: float = 1.5
) -> list:
    """Configurations around one relaxed parent: mode grid, strain grid, random n-sphere samples and (around
    the cubic parent) the tilt grid.

    ``sampling`` holds the campaign spec's ``mode_grid``, ``strain_grid``, ``random`` and ``tilt_grid`` sections.
    The parent itself comes first. Candidates with two atoms closer than ``min_distance`` Angstrom
    are dropped. Each configuration is tagged with its provenance (method, tilt system, mode or
    strain label and amplitude, random draw).
    """
    from ..structure.modes import displacement_modes

    out = []
    if include_parent:
        out.append(_with(parent, tags=_tags("tilt", glazer, relaxed=parent.tags.get("relaxed"))))

    mg = sampling.get("mode_grid") or {}
    if mg.get("enabled"):
        basis = displacement_modes(parent.reference)
        cap = mg.get("max_per_parent")
        grid = []
        for mode, label in _grid_modes(basis, mg.get("subspaces", "all"), mg.get("components", "all")):
            for amp in mg.get("amplitudes", []):
                grid.append(
                    _with(
                        parent,
                        displacements=parent.displacements + float(amp) * mode,
                        tags=_tags("grid", glazer, grid="mode", mode=label, amplitude=float(amp)),
                    )
                )
        grid = [c for c in grid if _far_enough(c, min_distance)]
        out.extend(grid[:cap] if cap else grid)

    sg = sampling.get("strain_grid") or {}
    if sg.get("enabled") and (sg.get("around", "reference") == "all" or glazer == CUBIC):
        for direction, label, amp in strain_wedge_grid(sg.get("amplitudes", []), sg.get("subspaces", "all")):
            c = _with(
                parent,
                strain=parent.strain + amp * direction,
                tags=_tags("grid", glazer, grid="strain", strain=label, amplitude=float(amp)),
            )
            if _far_enough(c, min_distance):
                out.append(c)

    rd = sampling.get("random") or {}
    around = rd.get("around", "all")
    if rd.get("enabled") and (
        around == "all"
        or (around == "reference" and glazer == CUBIC)
        or (isinstance(around, (list, tuple)) and glazer in around)
    ):
        out.extend(random_samples(parent, glazer, rd, seed, min_distance))

    tg = sampling.get("tilt_grid") or {}
    if tg.get("enabled") and glazer == CUBIC:
        out.extend(tilt_grid(parent, tg, seed, min_distance))
    return out


def grid_tilt_angles(glazer: str, angle: float, ratios=None) -> list[float] | None:
    """Per-letter angles of ``glazer`` that rotate each octahedron by ``angle`` degrees in all.

    ``angle`` is the length of the per-axis rotation vector, so that every system at the same angle
    strains the octahedra about as much (a-a-a- at 18 degrees tilts 10.4 degrees about each axis);
    distinct letters keep the default ratios a 8 : b 6 : c 10, or ``ratios`` (one positive number per
    distinct letter, in order of appearance).

    >>> [round(a, 2) for a in grid_tilt_angles("a+b-b-", 18.0, ratios=[1.0, 0.5])]
    [14.7, 7.35]
    """
    from ..structure.tilts import DEFAULT_ANGLES, tilt_angles

    per_letter = tilt_angles_for(glazer, dict(DEFAULT_ANGLES))
    if per_letter is None:
        return None
    if ratios is not None:
        if len(ratios) != len(per_letter) or min(ratios) <= 0:
            raise ValueError(
                f"tilt ratios of {glazer} must be {len(per_letter)} positive numbers, one per distinct letter; "
                f"got {list(ratios)}"
            )
        per_letter = [float(r) for r in ratios]
    norm = float(np.linalg.norm(tilt_angles(glazer, per_letter)))
    return [float(a) * angle / norm for a in per_letter]


def tilt_grid(parent, tg: dict, seed: int = 0, min_distance: float = 1.5) -> list:
    """The ``tilt_grid`` step: tilt systems at large angles on the cubic ``parent``, pure and with noise.

    Every system of ``tg["systems"]`` ("all": the 14 tilted ones) at every angle of ``tg["angles"]`` (each
    octahedron's total rotation, degrees: :func:`grid_tilt_angles`), once per level of ``tg["noise"]`` (RMS
    random displacement per atom, Angstrom; level 0 is the pure tilt) and ``tg["copies"]`` times per non-zero
    level. Gaussian noise, net translation removed, reproducible from the campaign seed. Systems with more
    than one distinct letter also come with ``tg["ratios"]`` further letter ratios drawn at random (each
    letter's share uniform in [0.1, 1]) at every angle, treated like the default ratio: what independent
    tilts about the axes look like, which one fixed ratio per system never shows.

    >>> from perovskite_pes.structure import Configuration
    >>> cubic = Configuration(reference_supercell({"species": ["Cs", "Pb", "Br"], "lattice_parameter": 5.87}, 2))
    >>> configs = tilt_grid(cubic, {"systems": ["a0a0c-", "a+b-b-"], "angles": [12, 24], "noise": [0, 0.1]})
    >>> len(configs), configs[-1].tags["tilt_system"], configs[-1].tags["angle_deg"]
    (8, 'a+b-b-', 24.0)
    """
    systems = tg.get("systems", "all")
    if systems == "all":
        from .spec import glazer_symbols

        systems = [g for g in glazer_symbols() if g != CUBIC]
    noise = [float(x) for x in tg.get("noise", [0.0])]
    copies = int(tg.get("copies", 1))
    n_atoms = len(parent.displacements)
    out = []
    for glazer in systems:
        for angle in [0.0] if glazer == CUBIC else [float(a) for a in tg.get("angles", [])]:
            for base, draw, extra in _tilt_grid_bases(parent, glazer, angle, int(tg.get("ratios", 0)), seed):
                for level in noise:
                    if level == 0 and glazer == CUBIC:
                        continue  # the parent itself
                    for copy in range(1 if level == 0 else copies):
                        labels = (glazer, angle, level, copy) + (() if draw is None else (draw,))
                        rng = np.random.default_rng(_seed(seed, "tilt_grid", *labels))
                        kick = rng.normal(scale=level / np.sqrt(3.0), size=(n_atoms, 3)) if level else 0.0
                        if level:
                            kick -= kick.mean(axis=0)
                        tags = _tags("tilt_grid", glazer, angle_deg=angle, noise=level, copy=copy, seed=int(seed))
                        c = _with(parent, displacements=base + kick, tags={**tags, **extra})
                        if _far_enough(c, min_distance):
                            out.append(c)
    return out


def _tilt_grid_bases(parent, glazer: str, angle: float, n_ratios: int, seed: int):
    """The pure tilts of one (system, angle) of the tilt grid: (displacements, draw, extra tags) for the
    default letter ratio (draw None) and, for systems with more than one letter, ``n_ratios`` random ones."""
    from ..structure.tilts import tilt_displacements

    if glazer == CUBIC:
        return [(parent.displacements, None, {})]
    letters = tilt_angles_for(glazer, 1.0)
    out = []
    for draw in [None] + (list(range(n_ratios)) if len(letters) > 1 else []):
        ratios = None
        if draw is not None:
            pick = np.random.default_rng(_seed(seed, "tilt_grid_ratio", glazer, angle, draw))
            ratios = pick.uniform(0.1, 1.0, len(letters))
        per_letter = grid_tilt_angles(glazer, angle, ratios)
        extra = {} if draw is None else {"ratio_draw": draw, "letter_angles_deg": [round(a, 3) for a in per_letter]}
        out.append((parent.displacements + tilt_displacements(parent.reference, glazer, per_letter), draw, extra))
    return out


def random_samples(parent, glazer: str, rd: dict, seed: int = 0, min_distance: float = 1.5) -> list:
    """``count`` random configurations around ``parent``: mode amplitudes and symmetry-adapted strain
    amplitudes drawn uniformly on (``fill``: in) n-spheres of the given radii, near-duplicates of
    already drawn ones (symmetry-reduced distance below ``uniqueness_tolerance``) rejected.
    Reproducible: the generator is seeded from the campaign seed and the parent's symbol."""
    from ..structure.sampling import UniquenessFilter, random_nsphere

    tol = float(rd.get("uniqueness_tolerance", 0.0) or 0.0)
    uniq = UniquenessFilter(tol) if tol > 0 else None
    if uniq is not None:
        uniq.add(parent)
    child_seed = int(_seed(seed, "random", glazer).generate_state(1)[0])
    configs = random_nsphere(
        parent,
        int(rd.get("count", 0)),
        displacement_radius=float(rd.get("displacement_radius", 0.0)),
        strain_radius=float(rd.get("strain_radius", 0.0)),
        seed=child_seed,
        fill=bool(rd.get("fill", False)),
        uniqueness=uniq,
        min_distance=min_distance,
        too_close="skip",
    )
    for c in configs:
        c.tags = _tags(
            "random",
            glazer,
            draw=c.tags.get("draw"),
            seed=int(seed),
            displacement_radius=float(rd.get("displacement_radius", 0.0)),
            strain_radius=float(rd.get("strain_radius", 0.0)),
        )
    return configs


def thermal_md_samples(parents: dict, calculator: dict, tm: dict, seed: int = 0, progress: bool = False) -> list:
    """The ``thermal_md`` step: frames of NPT MD driven by the calculator itself, from relaxed parents.

    ``parents`` maps the Glazer symbols of ``tm["starts"]`` to relaxed parent configurations (their
    supercell is the training supercell). For every supercell of ``tm["supercells"]`` (none: the training
    one; a larger N x N x N cell starts from the parent repeated), temperature (``tm["temperatures"]``, or
    its i-th list for the i-th supercell) and start,
    ``tm["equilibration"]`` steps, then every ``tm["every"]``-th of ``tm["steps"]`` steps becomes a
    configuration tagged with method ``thermal_md``, its temperature, start and step (and ``supercell``
    in a larger cell); ``tm["steps"]`` and ``tm["every"]`` may give one value per supercell. With ``tm["ladder"]`` each
    start is one run through the temperatures in order (the state carried over, ``tm["equilibration"]``
    steps at each) instead of a fresh run per temperature. A run that leaves the data (an atom out of
    its cage) keeps the frames it sampled before. Reproducible from the campaign seed.
    """
    calc = get_calculator_cached(calculator)
    ase_calc = calc.ase_calculator()
    out = []

    def at(key, default, i):  # one value, or the i-th of one per supercell
        value = tm.get(key, default)
        return int(value[i] if isinstance(value, (list, tuple)) else value)

    for i, n in enumerate(tm.get("supercells") or [None]):
        tm_n = dict(tm, every=at("every", 10, i), steps=at("steps", 200, i))
        starts = {}  # each start once per cell: a larger cell's parent repeated (None: the parent's own cell)
        for start in tm.get("starts", []):
            parent = parents[start]
            k = None if n is None else n // int(round(parent.reference.n_cells ** (1 / 3)))
            starts[start] = (parent, None) if k in (None, 1) else (parent.repeated(k), int(n))
        temperatures = tm.get("temperatures", [])
        if temperatures and isinstance(temperatures[0], (list, tuple)):  # one list per supercell
            temperatures = temperatures[i]
        temperatures = [float(t) for t in temperatures]
        runs = [temperatures] if tm.get("ladder") else [[t] for t in temperatures]
        for temps in runs:
            for start, (parent, cell) in starts.items():
                out.extend(_thermal_md_run(ase_calc, parent, start, temps, cell, tm_n, seed, progress))
    return out


def _thermal_md_run(ase_calc, parent, start: str, temps: list, cell, tm: dict, seed: int, progress: bool) -> list:
    """The frames of one thermal MD run from ``parent`` through the temperatures ``temps`` (K, the state
    carried over from one to the next), one every ``tm["every"]`` steps after ``tm["equilibration"]`` at
    each; ``cell``: N of a larger N x N x N cell ``parent`` was repeated into (tagged, own seed), else None."""
    from ..simulation import BlowUpError, MDSimulation, Stage
    from ..structure import Configuration

    # a single temperature keeps the seed it always had; a ladder has one of its own
    extra, key = {}, ("thermal_md", start, temps[0] if len(temps) == 1 else "ladder")
    if cell is not None:
        extra, key = {"supercell": cell}, (*key, cell)
    frames = []

    def keep(positions, lattice, energy, temperature, step):
        tags = _tags("thermal_md", start, temperature_K=float(temperature), step=int(step), seed=int(seed), **extra)
        frames.append(
            Configuration.from_arrays(parent.reference, lattice, positions, tags=tags, remove_translation=True)
        )

    sim = MDSimulation(
        ase_calc,
        supercell=parent.reference,
        start=parent,
        ensemble="npt",
        timestep_fs=float(tm.get("timestep_fs", 4.0)),
        sample_every=int(tm.get("every", 10)),
        seed=int(_seed(seed, *key).generate_state(1)[0]),
    )
    try:
        n, eq = int(tm.get("steps", 200)), int(tm.get("equilibration", 50))
        sim.run([Stage(t, n, eq) for t in temps], progress=progress, on_sample=keep)
    except BlowUpError as exc:
        where = f" in the {cell}x{cell}x{cell} cell" if cell is not None else ""
        at = f"{temps[0]:.0f} K" if len(temps) == 1 else f"the ladder {temps[0]:.0f}-{temps[-1]:.0f} K"
        logger.warning("thermal MD at %s from %s%s left the data: %s", at, start, where, exc)
    return frames


def interpolate_path(parents: list, glazers: list[str], n: int) -> list:
    """``n`` configurations along each leg of a path of parents (shared end points once); each parent
    is first replaced by its symmetry image closest to the previous one."""
    from ..structure.sampling import interpolate_path as path

    configs = path(parents, n, align=True)
    name = "->".join(glazers)
    for c in configs:
        seg = int(c.tags.get("segment", 0))
        c.tags = _tags(
            "interpolate",
            None,
            path=name,
            leg=f"{glazers[seg]}->{glazers[seg + 1]}",
            path_coordinate=float(c.tags.get("path_coordinate", 0.0)),
        )
    return configs


def store_configurations(store, configs: list, campaign: str | None, settings_hash: str | None = None) -> dict:
    """Save configurations (the store de-duplicates by canonical key) and list those still to calculate."""
    if not configs:
        return {"new": 0, "existing": 0, "ids": [], "todo": []}
    report = store.save_configurations(configs, source=_source(campaign))
    store.flush()
    ids = [str(i) for i in report.ids]
    seen = set()
    unique = [i for i in ids if not (i in seen or seen.add(i))]
    todo = [i for i in unique if settings_hash is None or not _has_completed(store, i, settings_hash)]
    logger.info(
        "stored %d configurations (%d new, %d known); %d still to calculate",
        len(unique),
        int(report.new),
        int(report.existing),
        len(todo),
    )
    return {"new": int(report.new), "existing": int(report.existing), "ids": unique, "todo": todo}


def _has_completed(store, config_id: str, settings_hash: str) -> bool:
    """Is there a *completed* calculation of this configuration with these settings?"""
    try:
        return bool(store.has_calculation(config_id, settings_hash, status="completed"))
    except TypeError:
        warnings.warn(
            f"{type(store).__name__}.has_calculation takes no status: a failed calculation of {config_id} "
            "counts as done and is not repeated",
            RuntimeWarning,
            stacklevel=2,
        )
        return bool(store.has_calculation(config_id, settings_hash))


def chunk(ids: list, size: int) -> list[list]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]


# ------------------------------------------------------------------------------- calculation
@dataclass
class BatchReport:
    n: int = 0
    calculated: int = 0
    skipped: int = 0
    failed: dict = field(default_factory=dict)  # config id -> reason
    seconds_calculate: float = 0.0
    seconds_store: float = 0.0
    settings_hash: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def calculate_batch(
    store,
    config_ids: list[str],
    calculator: dict,
    workdir=None,
    flush_every: int = 0,
    launch: dict | None = None,
    progress: bool | None = None,
) -> BatchReport:
    """Calculate every configuration of a batch that has no completed calculation with these settings.

    Results, failed ones included, go through ``store.save_calculation`` (each durable when stored);
    the store is also flushed every ``flush_every`` calculations and at the end. Bad input for one
    structure (overlapping atoms ...) is recorded as a failed calculation of that configuration; a
    calculator that cannot run at all (missing binary, POTCARs) raises.
    """
    from tqdm.auto import tqdm

    from ..calculators import CalcResult
    from ..calculators.base import CalculatorInputError

    calc = get_calculator_cached(calculator)
    h = calc.settings_hash
    rep = BatchReport(n=len(config_ids), settings_hash=h)
    progress = progress_enabled() if progress is None else progress
    bar = tqdm(config_ids, desc="  calculations", unit="calc", leave=False, disable=not progress)
    # every save_calculation is its own unit of work (durable when it returns): a long batch never
    # holds the store's write lock while it calculates
    for k, cid in enumerate(bar):
        t0 = time.perf_counter()
        if _has_completed(store, cid, h):  # e.g. stored by an earlier, killed run of this batch
            rep.skipped += 1
            rep.seconds_store += time.perf_counter() - t0
            continue
        structure = store.get_configuration(cid).to_structure()
        rep.seconds_store += time.perf_counter() - t0

        t0 = time.perf_counter()
        try:
            result = calc.calculate(structure, workdir=None if workdir is None else Path(workdir) / f"calc_{cid}")
        except CalculatorInputError as exc:
            result = CalcResult.failed(calc, f"invalid input structure: {exc}")
        rep.seconds_calculate += time.perf_counter() - t0

        t0 = time.perf_counter()
        store.save_calculation(cid, result, launch=launch)
        if result.status == "completed":
            rep.calculated += 1
        else:
            rep.failed[cid] = result.error or "unknown failure"
        if flush_every and (k + 1) % flush_every == 0:
            store.flush()
        rep.seconds_store += time.perf_counter() - t0
    t0 = time.perf_counter()
    store.flush()
    rep.seconds_store += time.perf_counter() - t0
    logger.info(
        "%s: %d of %d configurations calculated, %d failed, %d skipped (done before) in %.1f s",
        calculator["name"],
        rep.calculated,
        rep.n,
        len(rep.failed),
        rep.skipped,
        rep.seconds_calculate,
    )
    return rep


def simulate_model(model_path, simulate: dict, workdir) -> dict:
    """The campaign's finite-temperature step: a heating/cooling scan of the model (see ``SimulateTask``).

    Returns a JSON-able summary: transitions, the phase per temperature of every run, the plot. A
    model that cannot be simulated (none trained, a blow-up in the first temperature) gives a summary
    with ``error`` instead of an exception, so the campaign report still gets written.
    """
    from ..simulation import SimulationError
    from ..simulation.plots import plot_scan
    from ..simulation.transitions import TransitionScan

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if model_path is None:
        return {"error": "no model was trained or active: nothing to simulate", "transitions": []}
    try:
        scan = TransitionScan(str(model_path), **simulate).run(workdir=workdir, progress=progress_enabled())
    except SimulationError as exc:
        summary = {"error": str(exc), "transitions": [], "model": str(model_path)}
        (workdir / "result.json").write_text(json.dumps(summary, indent=1))
        return summary
    data = scan.to_dict()
    data["model"] = str(model_path)
    data["plot"] = str(plot_scan(data, workdir / "transitions.png"))
    (workdir / "result.json").write_text(json.dumps(data, indent=1))
    return {
        "model": str(model_path),
        "transitions": data["transitions"],
        "phases": [
            {
                "seed": r["seed"],
                "direction": r["direction"],
                "temperature_K": r["temperature_K"],
                "phase": r["phase"],
                "stopped": r["stopped"],
                "reentered": r.get("reentered", []),
                "against_direction": r.get("against_direction", []),
            }
            for r in data["runs"]
        ],
        "wall_time_s": data["wall_time_s"],
        "atoms": data["atoms"],
        "result": str(workdir / "result.json"),
        "plot": data["plot"],
    }
