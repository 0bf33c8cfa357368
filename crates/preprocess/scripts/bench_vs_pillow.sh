#!/usr/bin/env bash
# Ours vs the Pillow path of the reference (`load_keras` of seed_pytorch.py: PIL open,
# convert RGB, resize NEAREST, float BGR minus mean) on the same images, back to back.
# Usage: crates/preprocess/scripts/bench_vs_pillow.sh [DIR] (default: the 3,000 training
# images of ../shared/datasets/food101-10). PYTHON selects the interpreter (needs numpy, Pillow).
set -euo pipefail
cd "$(dirname "$0")/../../.."
DIR=${1:-../shared/datasets/food101-10/training}
PY=${PYTHON:-python3}
cargo build -q -p preprocess --example throughput
./target/debug/examples/throughput "$DIR" --threads 2 --reps 3 | tee /tmp/pp_rust.txt
"$PY" - "$DIR" ../shared/reference <<'PYEOF' | tee /tmp/pp_pillow.txt
import os, sys, time, statistics
sys.path.insert(0, sys.argv[2])
from seed_pytorch import load_keras
d = sys.argv[1]
files = sorted(os.path.join(d, f) for f in os.listdir(d))
rates = []
for r in range(3):
    t = time.perf_counter()
    for f in files:
        load_keras(f)
    s = time.perf_counter() - t
    rates.append(len(files) / s)
    print(f"pillow run={r+1} images={len(files)} seconds={s:.2f} img/s={len(files)/s:.1f}", flush=True)
print(f"RESULT pillow load_keras median img/s={statistics.median(rates):.1f}")
PYEOF
r=$(grep RESULT /tmp/pp_rust.txt | sed 's/.*img\/s=//')
p=$(grep RESULT /tmp/pp_pillow.txt | sed 's/.*img\/s=//')
echo "ratio ours/pillow = $(echo "scale=2; $r / $p" | bc)"
