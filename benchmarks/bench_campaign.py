"""Wall time of a campaign split by stage, and the share spent in FireWorks and the store.

    python benchmarks/bench_campaign.py                          # the quickstart, in a fresh temp PES_HOME
    python benchmarks/bench_campaign.py --spec my.yaml --home /tmp/bench --keep

Runs the campaign with ``run_campaign`` (the code behind ``pes campaign run``) on the embedded
store of a fresh ``$PES_HOME`` and prints:

* stages: relax, enumerate, calculate, store (configuration keys, saving results, flushes inside
  the tasks), load_data + train (model selection, which includes featurisation) and register, as
  recorded by the Firetasks themselves;
* featurise: the CCD features of every stored configuration computed once more, on their own, to
  show how much of the training time is featurisation;
* FireWorks: launch run time not spent inside the tasks (checkout, state updates, the LaunchPad's
  store flushes) plus the time between launches (rapidfire, querying for work);
* the number of Fireworks and the rate at which they ran.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default=str(ROOT / "workflows" / "quickstart.yaml"))
    ap.add_argument("--home", default=None, help="PES_HOME to use (default: a fresh temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary PES_HOME")
    ap.add_argument("--progress", action="store_true", help="show the progress bars")
    args = ap.parse_args(argv)

    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="pes-bench-"))
    os.environ["PES_HOME"] = str(home)
    for var in ("PES_MONGO_URI", "PES_MONGO_HOST", "PES_STORE_FILE"):
        os.environ.pop(var, None)

    from perovskite_pes.db import get_store
    from perovskite_pes.workflows.campaign import run_campaign
    from perovskite_pes.workflows.report import stage_timings
    from perovskite_pes.workflows.spec import load_spec

    spec = load_spec(args.spec)
    t0 = time.perf_counter()
    status = run_campaign(spec, progress=args.progress, stream=sys.stderr)
    wall = time.perf_counter() - t0

    store = get_store()
    lpad = store.get_launchpad()
    t = stage_timings(lpad, spec.name)
    stages = dict(t["stages"])

    # featurisation on its own: every stored configuration, the campaign's descriptor settings
    t1 = time.perf_counter()
    data = store.training_data(calculator=spec.calculator.name)
    t_load = time.perf_counter() - t1
    feat_s = None
    if data and spec.training.enabled:
        from perovskite_pes.models.featurizers import build_featurizer

        d = spec.descriptors
        t1 = time.perf_counter()
        fz = build_featurizer(data[0]["config"].reference, d.clusters, d.max_order, d.metric, d.truncated)
        t_build = time.perf_counter() - t1
        t1 = time.perf_counter()
        configs = [x["config"] for x in data]
        for i in range(0, len(configs), 256):
            fz.featurize(configs[i : i + 256])
        feat_s = (t_build, time.perf_counter() - t1)

    in_launches = t["launch_seconds"]
    in_tasks = t["task_seconds"]
    fireworks_s = max(0.0, in_launches - in_tasks) + max(0.0, wall - in_launches)
    n_fw = status["fireworks"]["total"]

    print(f"campaign {spec.name} ({args.spec}) on {store.settings.describe()}")
    print(
        f"  Fireworks: {n_fw} ({status['fireworks']['by_state']}), configurations: {status['data']['configurations']}"
    )
    for cname, c in status["data"]["calculations"].items():
        print(f"  calculations ({cname}): {c['completed']} completed, {c['failed']} failed")
    m = next(iter(status["active_models"].values()), None)
    if m:
        print(
            f"  model: {m['name']} on {m['n_train']} calculations; "
            + ", ".join(f"{k}={v:.3g}" for k, v in m["errors"].items())
            + " (meV/atom)"
        )
    print()
    print(f"{'stage':28s} {'seconds':>9s} {'share':>7s}")
    rows = [(k, v) for k, v in stages.items()]
    rows.append(("FireWorks (outside tasks)", fireworks_s))
    for k, v in rows:
        print(f"{k:28s} {v:9.1f} {100 * v / wall:6.1f}%")
    print(f"{'total wall time':28s} {wall:9.1f}")
    print()
    store_s = stages.get("store", 0.0) + stages.get("load_data", 0.0) + stages.get("register", 0.0)
    print(
        f"share in FireWorks: {100 * fireworks_s / wall:.1f}%   "
        f"in the store (inside tasks): {100 * store_s / wall:.1f}%"
    )
    print(
        f"Firework rate: {n_fw / wall:.2f} fw/s overall; "
        f"FireWorks overhead {fireworks_s / max(n_fw, 1):.2f} s per Firework"
    )
    if feat_s is not None:
        print(
            f"featurise (measured separately, part of 'train'): build {feat_s[0]:.1f} s + "
            f"{len(data)} configurations {feat_s[1]:.1f} s; loading them from the store {t_load:.1f} s"
        )
    print("per step kind (launch seconds): " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(t["per_kind"].items())))
    from perovskite_pes.db import close_store

    close_store()
    if args.home is None and not args.keep:
        import shutil

        shutil.rmtree(home, ignore_errors=True)
    else:
        print(f"PES_HOME kept: {home}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
