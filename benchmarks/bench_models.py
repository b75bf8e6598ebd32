"""Speed of the energy models (prints figures; not a test).

1. Energy + forces (+ stress) of a 6x6x6 (1,080-atom) CsPbBr3 cell with the paper's best model
   (cluster-based net, 7 pairs + triplet + octahedron, order 2, 1 hidden layer of 8 nodes), the
   site nets (11 pairs + triplet + octahedron, 1x16; the accuracy benchmark's selected recipe,
   30 pairs + triplet + octahedron, order 4, 1/d metric, 1x8 on the order-2 inputs + linear term), the
   linear CE and the pair potential, against the surrogates it would be trained on (SevenNet,
   CHGNet), measured on this machine in this run. The issue's target: >= 100x faster than the
   surrogate.
2. Cross-validation fit of the same model on 31,000 configurations (the paper's data-set size):
   featurisation once, then k folds in parallel with the batch-size schedule given here; the
   wall time is printed.
3. (``--loss``) One evaluation of the loss a net trained on forces minimises, with its gradient (what
   each Adam batch and each L-BFGS evaluation costs): the descriptors of ``cspbbr3_thermal_site.yaml``
   (10 pairs + triplet + octahedron + site, order 4, 1/d metric) computed from the positions, or
   linearised once in the pair distances (``ClusterLinearisation``), then 1x32 site or cluster nets,
   forces by autograd and the backward pass through all of it; what training does (the forces from the
   nets' input gradients carried to the positions by the linearisation, ``ClusterLinearisation.gradients``);
   against the nets alone with their inputs and the inputs' Jacobian free.

Model weights do not change the cost, so the models are fitted briefly to synthetic energies.

    python benchmarks/bench_models.py                     # both parts
    python benchmarks/bench_models.py --skip-cv           # only the 6x6x6 timings
    python benchmarks/bench_models.py --n-configs 31000 --folds 10 --epochs 1,2,10,50
    python benchmarks/bench_models.py --skip-speed --skip-cv --loss   # only part 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings

import numpy as np


def _timeit(fn, repeat: int) -> float:
    fn()  # warm-up (first call builds caches)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _check(result):
    if result.status != "completed":
        raise RuntimeError(result.error)
    return result


def synthetic_set(ref, n, seed=0):
    """Random displaced/strained configurations with energies of a fixed smooth pair potential."""
    from perovskite_pes.models import PairPotential
    from perovskite_pes.structure import Configuration

    rng = np.random.default_rng(seed)
    configs = [Configuration(ref, rng.normal(0, 0.06, (ref.n_atoms, 3)), rng.normal(0, 0.01, 6)) for _ in range(n)]
    truth = PairPotential(cutoff=6.0, n_gaussians=6, r_min=2.5)
    truth.coef_ = np.random.default_rng(1).normal(0, 0.1, truth.n_features)
    truth.e0_, truth.alpha_ = -3.0, 0.0
    return configs, truth.predict(configs, batch_size=512)


def bench_6x6x6(args):
    import torch

    from perovskite_pes.descriptors import Featurizer
    from perovskite_pes.models import ClusterNet, LinearCE, PairPotential, SiteNet
    from perovskite_pes.structure import Configuration, Perovskite

    torch.set_num_threads(args.threads)
    small = Perovskite().supercell(2)
    big = Perovskite().supercell(6)
    configs, energies = synthetic_set(small, 200)
    fz = Featurizer(small, clusters="7p+t+o", max_order=2)
    fz11 = Featurizer(small, clusters="11p+t+o", max_order=2)
    fz30 = Featurizer(small, clusters="30p+t+o", max_order=4, metric="inv")
    quick = dict(batch_sizes=(50,), epochs=2, validation_fraction=0.0)
    models = {
        "cluster net 7p+t+o o2 1x8": ClusterNet(featurizer=fz, hidden_layers=(8,), **quick).fit(configs, energies),
        "site net 11p+t+o o2 1x16": SiteNet(featurizer=fz11, hidden_layers=(16,), **quick).fit(configs, energies),
        "site net 30p+t+o o4 inv": SiteNet(
            featurizer=fz30, hidden_layers=(8,), linear_term=True, net_order=2, **quick
        ).fit(configs, energies),
        "site net 7p+t+o o2 1x8": SiteNet(featurizer=fz, hidden_layers=(8,), **quick).fit(configs, energies),
        "linear CE 7p+t+o o2": LinearCE(featurizer=fz).fit(configs, energies),
        "pair potential": PairPotential().fit(configs, energies),
    }
    rng = np.random.default_rng(5)
    config = Configuration(big, rng.normal(0, 0.05, (big.n_atoms, 3)), rng.normal(0, 0.005, 6))
    print(f"6x6x6 cell: {big.n_atoms} atoms; torch threads {torch.get_num_threads()}; median of {args.repeat} runs")
    rows = []
    t0 = time.perf_counter()
    for m in models.values():
        m.predict([config])  # builds the 6x6x6 featurizer / pair list once
    setup = time.perf_counter() - t0
    for name, m in models.items():
        t_ef = _timeit(
            lambda m=m: m.compute(config.positions, config.lattice, big, forces=True, stress=True), args.repeat
        )
        t_e = _timeit(
            lambda m=m: m.compute(config.positions, config.lattice, big, forces=False, stress=False), args.repeat
        )
        rows.append((name, t_e, t_ef))
    print(f"  (one-off setup for the 6x6x6 cell, all models: {setup:.2f} s)")
    surrogates = {}
    for name in args.surrogates.split(","):
        if not name:
            continue
        try:
            from perovskite_pes.calculators import get_calculator

            calc = get_calculator(name, threads=args.threads)
            # a new structure every call: ASE calculators return cached results for unchanged atoms
            shaken = [
                Configuration(
                    big, config.displacements + rng.normal(0, 1e-3, (big.n_atoms, 3)), config.strain
                ).to_structure()
                for _ in range(max(1, args.repeat // 2) + 1)
            ]
            it = iter(shaken)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                surrogates[name] = _timeit(
                    lambda calc=calc, it=it: _check(calc.calculate(next(it))), max(1, args.repeat // 2)
                )
        except Exception as exc:  # report and continue: a missing surrogate must not hide the model timings
            print(f"  {name}: not timed ({exc})")
    print(f"\n  {'model':<30}{'energy (s)':>12}{'E+F+S (s)':>12}" + "".join(f"{'vs ' + k:>14}" for k in surrogates))
    for name, t_e, t_ef in rows:
        print(f"  {name:<30}{t_e:12.4f}{t_ef:12.4f}" + "".join(f"{t_s / t_ef:13.0f}x" for t_s in surrogates.values()))
    for k, t in surrogates.items():
        print(f"  {k + ' (energy, forces, stress)':<30}{'':12}{t:12.3f}")
    return rows, surrogates


def bench_cv(args):
    import torch

    from perovskite_pes.models.selection import FeatureBank, cross_validate, merge_settings
    from perovskite_pes.structure import Perovskite

    ref = Perovskite().supercell(2)
    t0 = time.perf_counter()
    configs, energies = synthetic_set(ref, args.n_configs, seed=2)
    t_data = time.perf_counter() - t0
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    cfg = merge_settings(
        {
            "grid": {"model": ["cluster"], "clusters": ["7p+t+o"], "max_order": [2], "layers": [1], "nodes": [8]},
            "n_folds": args.folds,
            "n_jobs": args.n_jobs,
            "progress": True,
            "training": {
                "batch_sizes": ints(args.batch_sizes),
                "epochs": ints(args.epochs),
                "learning_rate": 1e-3,
                "patience": None,
            },
        }
    )
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    bank = FeatureBank(configs, cfg, progress=True)
    setting = {"model": "cluster", "clusters": "7p+t+o", "max_order": 2, "layers": 1, "nodes": 8}
    bank.features(setting)
    t_feat = time.perf_counter() - t0
    t0 = time.perf_counter()
    table = cross_validate(bank, [setting], energies, np.arange(len(configs)), cfg, progress=True)
    t_cv = time.perf_counter() - t0
    r = table[0]
    print(f"\nCV of the cluster net (7p+t+o, order 2, 1x8) on {len(configs)} configurations")
    print(f"  synthetic labels: {t_data:.1f} s; features of all configurations: {t_feat:.1f} s")
    print(
        f"  {args.folds}-fold CV with {args.n_jobs} workers, batch sizes {args.batch_sizes}, epochs {args.epochs}: "
        f"{t_cv:.1f} s = {t_cv / 60:.1f} min (mean fit {r['fit_time_mean']:.1f} s per fold)"
    )
    print(f"  validation RMSE {r['val_rmse_mean']:.3f} +- {r['val_rmse_std']:.3f} meV/atom (synthetic energies)")
    return t_cv


def bench_loss(args):
    """Part 3: one force-loss evaluation with its gradient, per configuration: descriptors computed from
    the positions, linearised once (what training does), or taken as given (the nets alone)."""
    import torch

    from perovskite_pes.models.featurizers import build_featurizer
    from perovskite_pes.structure import Perovskite

    torch.set_num_threads(args.threads)
    ref = Perovskite().supercell(2)
    t0 = time.perf_counter()
    fz = build_featurizer(ref, clusters="10p+t+o+s", max_order=4, metric="inv")
    t_basis = time.perf_counter() - t0
    rng = np.random.default_rng(3)
    n = args.loss_configs
    pos = torch.as_tensor(ref.positions[None] + rng.normal(0, 0.08, (n, ref.n_atoms, 3)))
    lat = torch.as_tensor(np.repeat(ref.lattice[None], n, axis=0))
    target = torch.as_tensor(rng.normal(0, 0.1, pos.shape))
    t0 = time.perf_counter()
    lin = fz.cluster_linearisation(pos, lat)
    t_lin = time.perf_counter() - t0
    ms = 1e3 / n
    print(f"\nforce-loss evaluation with its gradient, {n} configurations of the 2x2x2 cell, {args.threads} thread(s)")
    print(f"  descriptors of cspbbr3_thermal_site.yaml: basis built in {t_basis:.1f} s")
    print(
        f"  linearisation of the cluster features: {t_lin * ms:.1f} ms per configuration once, "
        f"{lin.nbytes / n / 1e3:.0f} kB per configuration"
    )
    for kind in ("site", "cluster"):
        full, linear, fast, nets, n_inputs = _time_loss(kind, fz, lin, pos, lat, target, args.repeat)
        print(f"  {kind} net 1x32 ({n_inputs} inputs a cell), ms per configuration:")
        rows = [
            ("descriptors from the positions at every evaluation", full, ""),
            ("linearised descriptors, autograd through them", linear, f"{full / linear:.2f}x faster"),
            ("nets' input gradients, linearised chain (training)", fast, f"{full / fast:.2f}x faster"),
            ("the nets alone", nets, f"{nets / full:.0%} of the first"),
        ]
        for what, seconds, note in rows:
            print(f"    {what:<52} {seconds * ms:7.3f}  {note}")


def _time_loss(kind, fz, lin, pos, lat, target, repeat):
    """Seconds of one loss + gradient of a 1x32 ``kind`` net: descriptors exact, linearised, carried by
    the linearisation from the nets' input gradients, given."""
    import torch

    from perovskite_pes.models.nets import build_mlps, orbit_sum

    idx = np.arange(len(pos))
    if kind == "site":
        inputs = lambda x: fz.site_features(x, lat)  # noqa: E731
        linear = lambda x: fz.site_features(None, None, cluster_features=lin.cluster_features(idx, x, lat))  # noqa: E731
        to_cluster = fz.site_features_adjoint
    else:
        inputs = lambda x: fz.cluster_features(x, lat)  # noqa: E731
        linear = lambda x: lin.cluster_features(idx, x, lat)  # noqa: E731
        to_cluster = list
    with torch.no_grad():
        fixed = inputs(pos)
    mlps = build_mlps([x.shape[-1] for x in fixed], [32])
    anchors = [torch.zeros(x.shape[-1], dtype=torch.float64) for x in fixed]

    def loss(features):
        mlps.zero_grad(set_to_none=True)
        x = pos.clone().requires_grad_(True)
        energy = orbit_sum(mlps, features(x), anchors)
        (grad,) = torch.autograd.grad(energy.sum(), x, create_graph=True)
        (energy.pow(2).mean() + (grad + target).pow(2).mean()).backward()

    def from_inputs(gradient_term):  # the nets on fixed inputs, the force term built from their gradients
        mlps.zero_grad(set_to_none=True)
        feats = [f.clone().requires_grad_(True) for f in fixed]
        energy = orbit_sum(mlps, feats, anchors)
        grads = torch.autograd.grad(energy.sum(), feats, create_graph=True)
        (energy.pow(2).mean() + gradient_term(grads)).backward()

    def carried(grads):  # what training does: d(energy)/d(inputs) carried to the positions
        return (lin.gradients(idx, to_cluster(grads))[0] + target).pow(2).mean()

    def free(grads):  # the inputs' gradient alone: what is left with the descriptors free
        return sum(g.pow(2).mean() for g in grads)

    full = _timeit(lambda: loss(inputs), repeat)
    lin_time = _timeit(lambda: loss(linear), repeat)
    fast = _timeit(lambda: from_inputs(carried), repeat)
    nets = _timeit(lambda: from_inputs(free), repeat)
    return full, lin_time, fast, nets, sum(x.shape[1] * x.shape[2] for x in fixed)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads for the 6x6x6 timings (same for the surrogates)"
    )
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--surrogates", default="sevennet,chgnet")
    p.add_argument("--skip-cv", action="store_true")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--n-configs", type=int, default=31000)
    p.add_argument("--folds", type=int, default=10)
    p.add_argument("--n-jobs", type=int, default=2)
    p.add_argument("--batch-sizes", default="2,10,100,1000")
    p.add_argument("--epochs", default="1,2,10,50", help="epochs per batch-size stage for the CV timing")
    p.add_argument("--loss", action="store_true", help="also time the site net's force loss (part 3)")
    p.add_argument("--loss-configs", type=int, default=200, help="2x2x2 configurations in that loss")
    args = p.parse_args(argv)
    if not args.skip_speed:
        bench_6x6x6(args)
    if not args.skip_cv:
        bench_cv(args)
    if args.loss:
        bench_loss(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
