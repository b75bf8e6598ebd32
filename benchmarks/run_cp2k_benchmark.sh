#!/usr/bin/env bash
# The CP2K benchmark of docs/calculators.md, resumable: run it again and it goes on where it stopped.
#
#   PES_HOME=/data/cp2k_bench PES_CP2K_CMD=cp2k.psmp OMP_NUM_THREADS=1 \
#       nohup nice bash benchmarks/run_cp2k_benchmark.sh > cp2k_bench.log 2>&1 &
#
# 1. the a0a0c- tilt energy against cutoff and k-mesh (benchmarks/bench_cp2k_convergence.py),
# 2. the campaign workflows/cspbbr3_cp2k.yaml (reference, three tilt systems, 57 configurations, model),
# then `python benchmarks/report_cp2k_benchmark.py` prints tilt wells, time per calculation and the model.
# PYTHON may name another interpreter command (e.g. one that runs a frozen copy of the package).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PES_HOME:?set PES_HOME to a folder of its own for the benchmark}"
PYTHON=${PYTHON:-python}
$PYTHON benchmarks/bench_cp2k_convergence.py --out "$PES_HOME/convergence.jsonl"
$PYTHON -m perovskite_pes campaign run workflows/cspbbr3_cp2k.yaml --no-progress || true
