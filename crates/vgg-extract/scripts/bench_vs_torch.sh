#!/usr/bin/env bash
# VGG16 conv-stack forward throughput (224x224 -> pool5), this crate vs PyTorch, side by side
# in one run, both with 2 threads: ours (examples/throughput.rs), then PyTorch channels_last,
# then PyTorch NCHW (shared/reference/torch_bench.py). Prints each median in images/s and the
# ratio ours / best PyTorch per batch size.
#
# Usage: crates/vgg-extract/scripts/bench_vs_torch.sh [REPS [BATCH...]]   (default: 5 1 8 32)
# Env:   PYTHON      interpreter with torch (default: python3)
#        SHARED_DIR  the project's shared folder (default: ../../../shared from the crate)
#        THREADS     threads for both sides (default: 2)
set -euo pipefail

crate=$(cd "$(dirname "$0")/.." && pwd)
shared=${SHARED_DIR:-$crate/../../../shared}
python=${PYTHON:-python3}
threads=${THREADS:-2}
reps=${1:-5}
if [ $# -gt 1 ]; then shift; batches=("$@"); else batches=(1 8 32); fi
bench=$shared/reference/torch_bench.py
[ -f "$bench" ] || { echo "error: $bench not found (set SHARED_DIR)" >&2; exit 1; }

export RAYON_NUM_THREADS=$threads OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads
cd "$crate"
cargo build --release -q -p vgg-extract --example throughput
log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "== ours ($threads threads)"
cargo run --release -q -p vgg-extract --example throughput -- "$reps" "${batches[@]}" | tee -a "$log"
echo "== torch channels_last"
"$python" "$bench" vgg "$reps" cl "${batches[@]}" | tee -a "$log"
echo "== torch NCHW"
"$python" "$bench" vgg "$reps" nocl "${batches[@]}" | tee -a "$log"

echo
awk '
  /^RESULT ours vgg16/  { split($4, b, "="); split($6, v, "="); ours[b[2]] = v[2] }
  /^RESULT torch vgg16/ { split($4, c, "="); split($5, b, "="); split($7, v, "=");
                          if (c[2] == "True") cl[b[2]] = v[2]; else nc[b[2]] = v[2] }
  END {
    printf "%6s %10s %14s %11s %12s\n", "batch", "ours img/s", "torch cl img/s", "torch NCHW", "ours/best"
    n = split(batches, bs, " ")
    for (i = 1; i <= n; i++) {
      k = bs[i]; best = cl[k] > nc[k] ? cl[k] : nc[k]
      printf "%6s %10.3f %14.3f %11.3f %11.2fx\n", k, ours[k], cl[k], nc[k], (best > 0 ? ours[k] / best : 0)
    }
  }' batches="${batches[*]}" "$log"
