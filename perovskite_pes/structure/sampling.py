"""Samplers of the configuration space (paper section III.B) and the uniqueness filter.

* :func:`grid` -- systematic grids of mode and strain amplitudes around a parent configuration
  (e.g. a relaxed tilt system); symmetry-equivalent grid points are kept once, which restricts a
  symmetric grid to the irreducible wedge.
* :func:`random_nsphere` -- amplitudes drawn uniformly on (or in) an n-sphere, seeded.
* :func:`interpolate` / :func:`interpolate_path` -- linear interpolation between configurations
  (cubic -> tetragonal -> orthorhombic).
* :class:`UniquenessFilter` -- rejects a candidate closer than a tolerance to one already
  accepted; the distance is pluggable (default: displacement/strain space, minimised over the
  reference symmetry; any callable, or an embedding such as a descriptor vector).

Candidates that put two atoms closer than ``min_distance`` (Angstrom) raise
:class:`SamplingError` (or are skipped and counted with ``too_close="skip"``).
"""

from __future__ import annotations

import itertools
import logging
import warnings
from collections.abc import Callable, Sequence

import numpy as np

from ..errors import PesError
from .configuration import Configuration, strain_to_matrix
from .symmetry import canonical_key, supercell_symmetry

logger = logging.getLogger(__name__)

#: default smallest allowed interatomic distance of a sampled configuration (Angstrom)
DEFAULT_MIN_DISTANCE = 1.5


class SamplingError(PesError, ValueError):
    """Bad sampling input or a sampled configuration with atoms closer than the minimum distance."""


# ----------------------------------------------------------------------------- helpers
def check_min_distance(config: Configuration, min_distance: float | None = DEFAULT_MIN_DISTANCE) -> float:
    """Smallest interatomic distance of ``config``; raise SamplingError when below ``min_distance``."""
    d = config.min_distance()
    if min_distance is not None and d < min_distance:
        raise SamplingError(
            f"configuration {config.tags or ''} puts two atoms {d:.3f} A apart, closer than the minimum "
            f"distance {min_distance} A; use smaller amplitudes (or a smaller min_distance)"
        )
    return d


def _directions(parent: Configuration, displacement_directions, strain_directions):
    n = parent.reference.n_atoms
    disp = np.zeros((0, n, 3)) if displacement_directions is None else np.asarray(displacement_directions, float)
    if disp.ndim == 2 and disp.shape == (n, 3):
        disp = disp[None]
    if disp.ndim != 3 or disp.shape[1:] != (n, 3):
        raise SamplingError(
            f"displacement directions must have shape (k, {n}, 3) for this supercell; "
            f"got {np.shape(displacement_directions)}"
        )
    strain = np.zeros((0, 6)) if strain_directions is None else np.asarray(strain_directions, float)
    if strain.ndim == 1 and strain.shape == (6,):
        strain = strain[None]
    if strain.ndim != 2 or strain.shape[1] != 6:
        raise SamplingError(f"strain directions must have shape (m, 6); got {np.shape(strain_directions)}")
    if not (np.all(np.isfinite(disp)) and np.all(np.isfinite(strain))):
        raise SamplingError("directions contain NaN or infinite values")
    return disp, strain


def _distorted(parent: Configuration, disp_dirs, strain_dirs, amps, tags) -> Configuration:
    k = len(disp_dirs)
    u = parent.displacements + np.tensordot(amps[:k], disp_dirs, axes=1) if k else parent.displacements.copy()
    e = parent.strain + (amps[k:] @ strain_dirs if len(strain_dirs) else 0.0)
    return Configuration(parent.reference, u, e, tags)


def describe(config: Configuration) -> str:
    """Short name of a configuration for provenance tags: tilt system, name, 'cubic' or a key prefix."""
    for key in ("tilt_system", "name"):
        if config.tags.get(key):
            return str(config.tags[key])
    if not np.any(config.displacements) and not np.any(config.strain):
        return "cubic"
    return "key:" + canonical_key(config)[:12]


def _parent_tags(parent: Configuration) -> dict:
    return {"parent": describe(parent)}


# ----------------------------------------------------------------------------- uniqueness
class UniquenessFilter:
    """Accept a candidate only if it is at least ``tol`` away from every accepted configuration.

    Distances (choose one):

    * default -- symmetry-reduced distance in displacement/strain space: the Euclidean distance
      between (u - mean u, strain_scale * strain tensor) vectors, minimised over all operations of
      the reference space group on the supercell (Angstrom). ``strain_scale`` defaults to
      a * sqrt(N): a strain e counts like every atom displaced by e * a.
    * ``embedding`` -- a callable config -> 1-D vector (e.g. a descriptor vector); Euclidean
      distance between embeddings (no symmetry reduction: use invariant descriptors).
    * ``distance`` -- a callable (config_a, config_b) -> float.
    """

    def __init__(
        self,
        tol: float = 0.05,
        distance: Callable[[Configuration, Configuration], float] | None = None,
        embedding: Callable[[Configuration], Sequence[float]] | None = None,
        strain_scale: float | None = None,
    ):
        if not np.isfinite(tol) or tol < 0:
            raise SamplingError(f"uniqueness tolerance must be a non-negative number; got {tol!r}")
        if distance is not None and embedding is not None:
            raise SamplingError("give either a distance or an embedding to UniquenessFilter, not both")
        self.tol = float(tol)
        self.distance = distance
        self.embedding = embedding
        self.strain_scale = strain_scale
        self.accepted: list[Configuration] = []
        self.n_rejected = 0
        self._vectors: list[np.ndarray] = []
        self._reference = None

    @property
    def n_accepted(self) -> int:
        return len(self.accepted)

    # -- default metric
    def _scale(self, config):
        if self.strain_scale is not None:
            return float(self.strain_scale)
        ref = config.reference
        return ref.perovskite.lattice_parameter * np.sqrt(ref.n_atoms)

    def _vector(self, config: Configuration) -> np.ndarray:
        u = config.displacements - config.displacements.mean(axis=0)
        return np.concatenate([u.ravel(), self._scale(config) * strain_to_matrix(config.strain).ravel()])

    def _images(self, config: Configuration) -> np.ndarray:
        sym = supercell_symmetry(config.reference)
        u = config.displacements - config.displacements.mean(axis=0)
        uimg = sym.apply_displacements(u).reshape(sym.n_ops, -1)
        e = strain_to_matrix(config.strain)
        eimg = np.einsum("gab,bc,gdc->gad", sym.rotations, e, sym.rotations).reshape(sym.n_ops, -1)
        return np.concatenate([uimg, self._scale(config) * eimg], axis=1)

    def nearest(self, config: Configuration) -> float:
        """Distance from ``config`` to the nearest accepted configuration (inf when none)."""
        if not self.accepted:
            return float("inf")
        if self.distance is not None:
            return float(min(self.distance(config, other) for other in self.accepted))
        if self.embedding is not None:
            v = np.asarray(self.embedding(config), float).ravel()
            acc = np.stack(self._vectors)
            return float(np.sqrt(((acc - v) ** 2).sum(axis=1)).min())
        if config.reference != self._reference:
            raise SamplingError("UniquenessFilter compares configurations of one reference supercell only")
        img = self._images(config)
        acc = np.stack(self._vectors)
        d2 = (img**2).sum(1)[:, None] + (acc**2).sum(1)[None, :] - 2 * img @ acc.T
        return float(np.sqrt(max(d2.min(), 0.0)))

    def add(self, config: Configuration) -> None:
        """Accept ``config`` unconditionally (e.g. configurations already in the database)."""
        if self._reference is None:
            self._reference = config.reference
        self.accepted.append(config)
        if self.embedding is not None:
            self._vectors.append(np.asarray(self.embedding(config), float).ravel())
        elif self.distance is None:
            self._vectors.append(self._vector(config))

    def accept(self, config: Configuration) -> bool:
        """True (and remember it) if ``config`` is new; False (counted as rejected) if it is a near-duplicate."""
        if self.accepted and self.nearest(config) < self.tol:
            self.n_rejected += 1
            return False
        self.add(config)
        return True

    def filter(self, configs) -> list[Configuration]:
        """The accepted subset of ``configs``, in order."""
        return [c for c in configs if self.accept(c)]


# ----------------------------------------------------------------------------- samplers
def _amplitude_lists(amplitudes, k: int, what: str):
    if k == 0:
        return []
    if amplitudes is None:
        raise SamplingError(f"{what} amplitudes are required when {what} directions are given")
    if all(np.isscalar(a) for a in amplitudes):
        lists = [np.asarray(amplitudes, float)] * k
    else:
        lists = [np.atleast_1d(np.asarray(a, float)) for a in amplitudes]
        if len(lists) != k:
            raise SamplingError(f"got {len(lists)} {what} amplitude lists for {k} directions")
    for a in lists:
        if not np.all(np.isfinite(a)) or a.size == 0:
            raise SamplingError(f"{what} amplitudes must be non-empty lists of finite numbers")
    return lists


def grid(
    parent: Configuration,
    displacement_directions=None,
    displacement_amplitudes=None,
    strain_directions=None,
    strain_amplitudes=None,
    unique: bool = True,
    key_tol: float = 1e-3,
    min_distance: float | None = DEFAULT_MIN_DISTANCE,
    too_close: str = "raise",
    max_points: int = 200_000,
    progress: bool = False,
) -> list[Configuration]:
    """Cartesian grid of amplitudes along displacement (k, N, 3) and strain (m, 6) directions.

    Amplitudes: one list used for every direction of that kind, or one list per direction.
    Displacement amplitudes are in Angstrom (for orthonormal modes), strain amplitudes are
    dimensionless. With ``unique=True`` grid points equivalent by a reference symmetry operation
    (equal :func:`canonical_key` at ``key_tol``) are kept once. Each result carries tags
    ``method="grid"``, ``amplitudes`` and ``parent`` (see :func:`describe`).
    """
    if too_close not in ("raise", "skip"):
        raise SamplingError(f"too_close must be 'raise' or 'skip'; got {too_close!r}")
    disp, strain = _directions(parent, displacement_directions, strain_directions)
    lists = _amplitude_lists(displacement_amplitudes, len(disp), "displacement") + _amplitude_lists(
        strain_amplitudes, len(strain), "strain"
    )
    total = int(np.prod([len(a) for a in lists])) if lists else 1
    if total > max_points:
        raise SamplingError(f"the grid has {total} points, more than max_points={max_points}; use fewer amplitudes")
    out, seen = [], set()
    points = itertools.product(*lists) if lists else [()]
    if progress:
        from tqdm import tqdm

        points = tqdm(points, total=total, desc="grid", unit="cfg", disable=None)
    base_tags = {"method": "grid", **_parent_tags(parent)}
    n_close = 0
    for amps in points:
        amps = np.array(amps, float)
        tags = {**base_tags, "amplitudes": [float(a) for a in amps]}
        config = _distorted(parent, disp, strain, amps, tags)
        if unique:
            key = canonical_key(config, tol=key_tol)
            if key in seen:
                continue
            seen.add(key)
        if min_distance is not None:
            try:
                check_min_distance(config, min_distance)
            except SamplingError:
                if too_close == "raise":
                    raise
                n_close += 1
                continue
        out.append(config)
    if n_close:
        logger.info("grid: %d of %d points skipped (atoms closer than %.2f A)", n_close, total, min_distance)
    return out


def random_nsphere(
    parent: Configuration,
    n: int,
    displacement_directions=None,
    displacement_radius: float = 0.0,
    strain_directions=None,
    strain_radius: float = 0.0,
    seed: int = 0,
    fill: bool = False,
    uniqueness: UniquenessFilter | None = None,
    min_distance: float | None = DEFAULT_MIN_DISTANCE,
    too_close: str = "raise",
    max_tries: int | None = None,
    progress: bool = False,
) -> list[Configuration]:
    """``n`` random configurations around ``parent`` with amplitudes uniform on an n-sphere.

    Displacement amplitudes (along ``displacement_directions``, default all symmetry-adapted modes
    when ``displacement_radius`` > 0) lie on a sphere of radius ``displacement_radius`` Angstrom;
    strain amplitudes (default the 6 symmetry-adapted strains when ``strain_radius`` > 0) on a
    sphere of radius ``strain_radius``. ``fill=True`` draws uniformly inside the balls instead.
    The generator is seeded (``seed=0`` is a seed like any other). With a ``uniqueness`` filter,
    near-duplicates are rejected (counted by the filter) and drawing continues until ``n`` are
    accepted or ``max_tries`` (default 20 n) candidates were drawn.
    """
    from .modes import displacement_modes, strain_basis

    if not isinstance(n, (int, np.integer)) or n < 0:
        raise SamplingError(f"number of samples must be a non-negative integer; got {n!r}")
    if displacement_radius < 0 or strain_radius < 0 or not np.isfinite(displacement_radius + strain_radius):
        raise SamplingError("sampling radii must be non-negative finite numbers")
    if too_close not in ("raise", "skip"):
        raise SamplingError(f"too_close must be 'raise' or 'skip'; got {too_close!r}")
    if displacement_directions is None and displacement_radius > 0:
        displacement_directions = displacement_modes(parent.reference).vectors
    if strain_directions is None and strain_radius > 0:
        strain_directions = strain_basis().vectors
    disp, strain = _directions(parent, displacement_directions, strain_directions)
    if len(disp) + len(strain) == 0:
        raise SamplingError("random sampling needs a positive displacement_radius or strain_radius (or directions)")
    rng = np.random.default_rng(seed)
    max_tries = 20 * n if max_tries is None else int(max_tries)

    def sphere(k, radius):
        if k == 0:
            return np.zeros(0)
        x = rng.normal(size=k)
        x /= np.linalg.norm(x)
        r = radius * (rng.uniform() ** (1.0 / k) if fill else 1.0)
        return r * x

    out = []
    base_tags = {"method": "random", "seed": int(seed), **_parent_tags(parent)}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, desc="random", unit="cfg", disable=None)
    tries = n_close = n_similar = 0
    while len(out) < n and tries < max_tries:
        tries += 1
        amps = np.concatenate([sphere(len(disp), displacement_radius), sphere(len(strain), strain_radius)])
        tags = {**base_tags, "draw": tries - 1, "amplitudes": [float(a) for a in amps]}
        config = _distorted(parent, disp, strain, amps, tags)
        if min_distance is not None:
            try:
                check_min_distance(config, min_distance)
            except SamplingError:
                if too_close == "raise":
                    raise
                n_close += 1
                continue
        if uniqueness is not None and not uniqueness.accept(config):
            n_similar += 1
            continue
        out.append(config)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    logger.info(
        "random sampling: %d accepted of %d drawn (%d too close, %d not unique)", len(out), tries, n_close, n_similar
    )
    if len(out) < n:
        warnings.warn(
            f"random sampling stopped after max_tries={max_tries} draws with {len(out)} of {n} configurations "
            f"({n_close} too close, {n_similar} not unique); lower the uniqueness threshold or the radii",
            RuntimeWarning,
            stacklevel=2,
        )
    return out


def closest_image(config: Configuration, target: Configuration) -> Configuration:
    """The symmetry-equivalent image of ``config`` closest to ``target`` (displacements and strain).

    Use before interpolating between structures relaxed in different orientations or origins.
    """
    if config.reference != target.reference:
        raise SamplingError("closest_image needs configurations of the same reference supercell")
    flt = UniquenessFilter(0.0)
    img = flt._images(config)
    d = ((img - flt._vector(target)) ** 2).sum(axis=1)
    sym = supercell_symmetry(config.reference)
    best = sym.apply(config, int(np.argmin(d)))
    # keep the rigid translation of the target
    best.displacements += target.displacements.mean(axis=0) - best.displacements.mean(axis=0)
    return best


def interpolate(
    start: Configuration, end: Configuration, n: int, endpoints: bool = True, align: bool = False
) -> list[Configuration]:
    """``n`` configurations linearly interpolated (displacements and strain) from ``start`` to ``end``.

    ``align=True`` first replaces ``end`` by its symmetry image closest to ``start``.
    """
    if start.reference != end.reference:
        raise SamplingError("cannot interpolate between configurations of different reference supercells")
    if align:
        end = closest_image(end, start)
    if not isinstance(n, (int, np.integer)) or n < (2 if endpoints else 1):
        raise SamplingError(f"number of interpolation points must be an integer >= {2 if endpoints else 1}; got {n!r}")
    lambdas = np.linspace(0, 1, n) if endpoints else np.linspace(0, 1, n + 2)[1:-1]
    names = [describe(start), describe(end)]
    out = []
    for lam in lambdas:
        tags = {"method": "interpolate", "lambda": float(lam), "start": names[0], "end": names[1]}
        out.append(
            Configuration(
                start.reference,
                (1 - lam) * start.displacements + lam * end.displacements,
                (1 - lam) * start.strain + lam * end.strain,
                tags,
            )
        )
    return out


def interpolate_path(configs: Sequence[Configuration], n_per_segment: int, align: bool = False) -> list[Configuration]:
    """Piecewise-linear path through ``configs`` (e.g. cubic -> tetragonal -> orthorhombic).

    Each segment has ``n_per_segment`` points including its ends; shared ends appear once. Tags
    gain ``segment`` and ``path_coordinate`` (0 at the first configuration, 1 per segment).
    ``align=True`` replaces each configuration by its symmetry image closest to the previous one.
    """
    if len(configs) < 2:
        raise SamplingError("a path needs at least two configurations")
    configs = list(configs)
    if align:
        for i in range(1, len(configs)):
            configs[i] = closest_image(configs[i], configs[i - 1])
    out = []
    for s, (a, b) in enumerate(zip(configs[:-1], configs[1:])):
        seg = interpolate(a, b, n_per_segment)
        if s > 0:
            seg = seg[1:]
        for c in seg:
            c.tags["segment"] = s
            c.tags["path_coordinate"] = s + c.tags["lambda"]
        out.extend(seg)
    return out
