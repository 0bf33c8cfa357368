#!/usr/bin/env bash
# Times one training step of the scratch CNN (batch 32, 224x224, 2 threads) with this crate and
# with PyTorch (the project's torch_bench.py), back to back, and prints the speed ratio.
#
# Shared machines are noisy, so the two alternate for ROUNDS rounds of REPS timed steps each;
# each round prints both medians and their ratio, and the last line gives the median of the
# per-round ratios and the ratio of the fastest steps.
#
# Usage: crates/scratch-cnn/scripts/bench_vs_torch.sh [REPS] [ROUNDS]      (defaults 5, 3)
# Environment: PYTHON (default python3; needs torch), TORCH_BENCH (default
# ../shared/reference/torch_bench.py beside the repository), BATCH (default 32),
# CARGO_TARGET_DIR as usual.
set -euo pipefail
reps=${1:-5}
rounds=${2:-3}
batch=${BATCH:-32}
python=${PYTHON:-python3}
root=$(cd "$(dirname "$0")/../../.." && pwd)
torch_bench=${TORCH_BENCH:-$root/../shared/reference/torch_bench.py}
[ -f "$torch_bench" ] || { echo "torch_bench.py not found at $torch_bench (set TORCH_BENCH)" >&2; exit 2; }

cd "$root"
cargo build --quiet --release -p scratch-cnn --example step_timing
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT

# img/s of the median step, and of the fastest step, from a RESULT line.
median_ips() { grep '^RESULT' "$1" | sed -E 's/.*img\/s=([0-9.]+).*/\1/'; }
best_ips() {
    grep '^RESULT' "$1" | sed -E 's/.*b=([0-9]+).*runs=\[([^]]*)\].*/\1 \2/' |
        awk '{ b = $1; gsub(/,/, " "); m = 1e30; for (i = 2; i <= NF; i++) if ($i + 0 < m) m = $i + 0; printf "%.2f", b / m }'
}

for r in $(seq 1 "$rounds"); do
    echo "== round $r: ours (load $(cut -d' ' -f1 /proc/loadavg))"
    cargo run --quiet --release -p scratch-cnn --example step_timing -- "$reps" "$batch" 2 224 >"$log/ours$r"
    grep -E '^(RESULT|forward)' "$log/ours$r"
    echo "== round $r: torch (load $(cut -d' ' -f1 /proc/loadavg))"
    "$python" "$torch_bench" cnn "$reps" nocl "$batch" >"$log/torch$r"
    grep '^RESULT' "$log/torch$r"
    o=$(median_ips "$log/ours$r")
    t=$(median_ips "$log/torch$r")
    awk -v o="$o" -v t="$t" -v r="$r" 'BEGIN { printf "round %d: ours/torch = %.2f\n", r, o / t }' | tee -a "$log/ratios"
    echo "$(best_ips "$log/ours$r") $(best_ips "$log/torch$r")" >>"$log/best"
done
median_ratio=$(sed -E 's/.*= //' "$log/ratios" | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }')
awk -v m="$median_ratio" '
    { if ($1 > o) o = $1; if ($2 > t) t = $2 }
    END { printf "RATIO ours/torch: median of rounds %.2f; fastest steps %.2f (ours %.2f img/s, torch %.2f img/s)\n", m, o / t, o, t }
' "$log/best"
