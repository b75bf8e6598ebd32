#!/usr/bin/env bash
# The CP2K benchmark of docs/calculators.md, resumable: run it again and it goes on where it stopped.
#
#   PES_HOME=/data/cp2k_bench PES_CP2K_CMD=cp2k.psmp OMP_NUM_THREADS=1 \
#       nohup nice bash benchmarks/run_cp2k_benchmark.sh > cp2k_bench.log 2>&1 &
#
# 1. the a0a0c- tilt energy against cutoff and k-mesh (benchmarks/bench_cp2k_convergence.py);
# 2. the cubic cell's share of workflows/cspbbr3_cp2k.yaml first: the same spec without the tilt
#    systems (18 configurations and a first model within hours instead of after three 40-atom
#    relaxations); the store keeps its calculations, so step 3 does not repeat them;
# 3. the whole campaign workflows/cspbbr3_cp2k.yaml (three tilt systems, 57 configurations, model).
# Then `python benchmarks/report_cp2k_benchmark.py` prints the tilt wells, time per calculation and
# the model. PYTHON may name another interpreter command (e.g. one that runs a frozen copy of the package).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PES_HOME:?set PES_HOME to a folder of its own for the benchmark}"
PYTHON=${PYTHON:-python}
$PYTHON benchmarks/bench_cp2k_convergence.py --out "$PES_HOME/convergence.jsonl"
python -c 'import sys, yaml
spec = yaml.safe_load(open("workflows/cspbbr3_cp2k.yaml"))
spec["name"] = "cspbbr3_cp2k_cubic"
spec["steps"]["relax_tilts"] = False
yaml.safe_dump(spec, sys.stdout, sort_keys=False)' > "$PES_HOME/cspbbr3_cp2k_cubic.yaml"
$PYTHON -m perovskite_pes campaign run "$PES_HOME/cspbbr3_cp2k_cubic.yaml" --no-progress || true
$PYTHON -m perovskite_pes campaign run workflows/cspbbr3_cp2k.yaml --no-progress || true
