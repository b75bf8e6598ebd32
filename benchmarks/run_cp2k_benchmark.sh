#!/usr/bin/env bash
# The CP2K benchmark of docs/calculators.md, resumable: run it again and it goes on where it stopped.
#
#   PES_HOME=/data/cp2k_bench PES_CP2K_CMD=cp2k.psmp OMP_NUM_THREADS=1 \
#       nohup nice bash benchmarks/run_cp2k_benchmark.sh > cp2k_bench.log 2>&1 &
#
# In order of what the benchmark is for:
# 1. the tilt wells, one tilt system at a time (a0a0c-, a0a0c+, a+b-b-): workflows/cspbbr3_cp2k.yaml
#    with its sampling and training switched off and one tilt system, as a campaign of its own with the
#    same settings: the cubic reference relaxed (cell, once: the later campaigns find it done), the tilt
#    system relaxed at its volume (positions), and the relaxed parents' single points in the 40-atom
#    cell. One system at a time and all relaxations before the single points, because a 40-atom
#    calculation takes 10-20 min on a loaded shared core and the one-parameter systems (a0a0c-,
#    a0a0c+: one tilt angle in a fixed cubic cell) finish first;
# 2. the whole campaign workflows/cspbbr3_cp2k.yaml (57 configurations, model): its relaxations have the
#    same duplicate keys as those of step 1, so they are not repeated;
# 3. the convergence of the a0a0c- tilt energy with the k-point mesh at 250 Ry
#    (benchmarks/bench_cp2k_convergence.py; the cutoffs were measured before).
# Then `python benchmarks/report_cp2k_benchmark.py` prints the tilt wells, time per calculation and
# the model. PYTHON may name another interpreter command (e.g. one that runs a frozen copy of the package).
#
# Across machines: everything stored (relaxed parents with their relaxation keys, every calculation with
# its provenance) is exported after each step to BENCH_DATA (JSON lines; default
# benchmarks/data/cp2k_cspbbr3.jsonl of this checkout), and a new store is first filled from that file.
# A campaign run on the filled store repeats no stored relaxation and no stored calculation, so
# committing the file carries the benchmark from one machine (or working day) to the next; only the
# 5-atom reference relaxation (6 min) is repeated.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PES_HOME:?set PES_HOME to a folder of its own for the benchmark}"
PYTHON=${PYTHON:-python}
BENCH_DATA=${BENCH_DATA:-$PWD/benchmarks/data/cp2k_cspbbr3.jsonl}
mkdir -p "$PES_HOME" "$(dirname "$BENCH_DATA")"
if [ -s "$BENCH_DATA" ] && [ ! -e "$PES_HOME/.imported" ]; then
    $PYTHON -m perovskite_pes db import "$BENCH_DATA" && touch "$PES_HOME/.imported"
fi
save() {  # everything stored so far, written whole and then moved into place (a file of its own per
          # process: the periodic save below may run at the same moment as a step's)
    local part="$BENCH_DATA.part.$BASHPID"
    $PYTHON -m perovskite_pes db export "$part" --format jsonl && mv "$part" "$BENCH_DATA" || rm -f "$part"
}
(while sleep 600; do save >/dev/null; done) &  # and every 10 min, for a machine that goes away mid-step
trap 'kill $! 2>/dev/null || true' EXIT
wells_spec() {  # the wells campaign of one tilt system: its spec file
    local tag=${1//+/p}; tag=${tag//-/m}
    python - "$1" "$tag" > "$PES_HOME/cspbbr3_cp2k_wells_$tag.yaml" <<'PY'
import sys, yaml
spec = yaml.safe_load(open("workflows/cspbbr3_cp2k.yaml"))
spec["name"] = "cspbbr3_cp2k_wells_" + sys.argv[2]
spec["steps"]["relax_tilts"]["systems"] = [sys.argv[1]]
for step in ("mode_grid", "strain_grid", "random"):
    spec["steps"][step] = False
spec["training"] = {"enabled": False}
spec["retrain"] = False
yaml.safe_dump(spec, sys.stdout, sort_keys=False)
PY
    echo "$PES_HOME/cspbbr3_cp2k_wells_$tag.yaml"
}
# 1a. the relaxations first (the relaxed parents' single points repeat the relaxations' last energies,
#     so they wait): a system whose relaxation finished is skipped, otherwise its campaign runs the
#     reference (found done after the first), the relaxation and the instant enumeration
for system in a0a0c- a0a0c+ a+b-b-; do
    spec=$(wells_spec "$system")
    tag=$(basename "$spec" .yaml)
    if grep -qs "GEOMETRY OPTIMIZATION COMPLETED" "$PES_HOME"/campaigns/"$tag"/launches/*/relax_"$system"/cp2k.out; then
        continue
    fi
    $PYTHON -m perovskite_pes campaign run "$spec" --no-progress --max-fireworks 3 || true
    save
done
# Fireworks of a campaign that FIZZLED (a calculation failed, e.g. stopped as frozen after the machine
# was suspended) or were RUNNING when an earlier driver was killed are made ready again first: nothing
# else runs on this store while the driver does, and finished calculations are never repeated
rerun_failed() { $PYTHON -m perovskite_pes campaign rerun-failed "$1" || true; }
# 1b. the relaxed parents' single points (and the 40-atom cubic cell's)
for system in a0a0c- a0a0c+ a+b-b-; do
    spec=$(wells_spec "$system")
    rerun_failed "$(basename "$spec" .yaml)"
    $PYTHON -m perovskite_pes campaign run "$spec" --no-progress || true
    save
done
rerun_failed cspbbr3_cp2k
$PYTHON -m perovskite_pes campaign run workflows/cspbbr3_cp2k.yaml --no-progress || true
save
$PYTHON benchmarks/bench_cp2k_convergence.py --out "$PES_HOME/convergence.jsonl" --cutoffs 250 --kmeshes 3,1 --k-cutoff 250
