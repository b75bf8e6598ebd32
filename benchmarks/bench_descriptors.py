"""Feature throughput of the CCD descriptors (paper-size workload).

CsPbBr3 2x2x2 (40 atoms), the paper's best cluster set 7p+t+o, orders 2 and 4: cluster
features of N random distorted configurations (default 31,000, the paper's data set size),
evaluated in batches with torch on the given number of threads. Prints configurations per
second, the time for the whole set, the featurizer build time, feature memory and the
process's peak resident memory. Targets: >= 2,000 configurations/s at order 4 and >= 20,000/s
at order 2 on 2 CPU cores.

    python benchmarks/bench_descriptors.py [--n-configs 31000] [--threads 2] [--batch-size 128]

Wall-clock rates are the figures that count; the CPU-time rate (process CPU seconds) is printed
too because on a shared machine it shows the work done when other jobs steal the cores.
"""

from __future__ import annotations

import argparse
import resource
import time


def rss_mb() -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:  # pragma: no cover - non-Linux
        pass
    return float("nan")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-configs", type=int, default=31_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--orders", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--clusters", default="7p+t+o")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes over the set; the best is reported")
    ap.add_argument("--forces", action="store_true", help="also time features + autograd gradients (forces/stress)")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from perovskite_pes.descriptors import Featurizer
    from perovskite_pes.structure import Configuration, Perovskite

    torch.set_num_threads(args.threads)
    ref = Perovskite().supercell(2)
    rng = np.random.default_rng(0)
    n = args.n_configs
    # random distortions: 0.1 A displacements, 1 % strains (positions and lattices as the layer sees them)
    disp = rng.normal(0, 0.1, (n, ref.n_atoms, 3))
    strain = rng.normal(0, 0.01, (n, 6))
    f_mat = np.broadcast_to(np.eye(3), (n, 3, 3)).copy()
    for k, (i, j) in enumerate(((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))):
        f_mat[:, i, j] += strain[:, k]
        if i != j:
            f_mat[:, j, i] += strain[:, k]
    pos = torch.as_tensor(np.einsum("bni,bij->bnj", ref.positions[None] + disp, f_mat))
    lat = torch.as_tensor(np.einsum("ij,bjk->bik", ref.lattice, f_mat))
    print(
        f"perovskite-pes descriptor benchmark: {ref.n_atoms}-atom CsPbBr3 supercell, clusters {args.clusters}, "
        f"{n} configurations, {args.threads} torch threads, batch {args.batch_size}"
    )
    print(f"input arrays: {(pos.numel() + lat.numel()) * 8 / 2**20:.1f} MiB; RSS {rss_mb():.0f} MiB")

    for order in args.orders:
        t0 = time.perf_counter()
        feat = Featurizer(ref, args.clusters, max_order=order)
        build = time.perf_counter() - t0
        best = best_cpu = float("inf")
        with torch.no_grad():
            feat.cluster_features(pos[:8], lat[:8])  # warm-up
            for _ in range(args.repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                nbytes = 0
                for s in range(0, n, args.batch_size):
                    out = feat.cluster_features(pos[s : s + args.batch_size], lat[s : s + args.batch_size])
                    nbytes += sum(o.numel() for o in out) * 8
                best = min(best, time.perf_counter() - t0)
                best_cpu = min(best_cpu, time.process_time() - c0)
        rate = n / best
        n_feat = sum(c * f for c, f in zip(feat.n_clusters, feat.n_functions))
        target = 20_000 if order <= 2 else 2_000
        print(
            f"order {order}: {sum(feat.n_functions)} functions over {len(feat.orbit_names)} orbits "
            f"({n_feat} values per configuration); build {build:.2f} s"
        )
        print(
            f"  features: {rate:,.0f} configurations/s, {best:.2f} s for {n} "
            f"(target >= {target:,}/s: {'met' if rate >= target else 'NOT met'}); "
            f"{n / best_cpu:,.0f} per CPU-second; "
            f"feature memory {nbytes / 2**20:.0f} MiB for the set; RSS {rss_mb():.0f} MiB, peak {peak_mb():.0f} MiB"
        )
        # the public convenience path, including Configuration -> array conversion
        m = min(n, 2000)
        cfgs = [Configuration(ref, disp[i], strain[i]) for i in range(m)]
        t0 = time.perf_counter()
        feat.featurize(cfgs, batch_size=args.batch_size)
        conv = time.perf_counter() - t0
        print(f"  featurize(list of Configuration): {m / conv:,.0f} configurations/s")
        if args.forces:
            m = min(n, 4000)
            t0 = time.perf_counter()
            for s in range(0, m, args.batch_size):
                p = pos[s : s + args.batch_size].clone().requires_grad_(True)
                lt = lat[s : s + args.batch_size].clone().requires_grad_(True)
                e = sum(o.sum() for o in feat.cluster_features(p, lt))
                torch.autograd.grad(e, (p, lt))
            dt = time.perf_counter() - t0
            print(f"  features + autograd gradients: {m / dt:,.0f} configurations/s; peak {peak_mb():.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
