#!/usr/bin/env bash
# The GPU figures of train_mnist_ffn.py (issue 19), in one command, about a minute and a half on one H100/H200:
#   1. the default study, python train_mnist_ffn.py --device cuda, twice (the first run pays the
#      cold file cache and CUDA's kernel loading): its wall time from the command's start to the
#      log's last line (the last trial line, then done:), and its progress lines;
#   2. bench/bench_mnist.py --cold: the study once more in a fresh process, sampled every 10 ms:
#      where its seconds go before and during training (imports, CUDA's first use, the first
#      optimiser, ...), what the warmed-up timings of 3. do not see; with AGAINST=FILE (an older
#      train_mnist_ffn.py, e.g. `git show bcf21a0:train_mnist_ffn.py > .gpu/old_train_mnist_ffn.py`,
#      the script before Adam's step became a function call), three fresh runs of each, interleaved,
#      and the medians' ratio (about a minute more);
#   3. bench/bench_mnist.py --device cuda --seeds 8 --skip-plain: the startup's parts (data,
#      CUDA, nvidia-smi), and the study's training split into setup, capture, training and
#      evaluation with the steps replayed as CUDA graphs against run eagerly, side by side, with
#      whether both give the same numbers, and graphs twice (the GPU's run-to-run spread).
#
#   bash bench/gpu_check_mnist.sh MNIST_DIR [OUT_DIR]   # default OUT_DIR: $OUT, else /tmp/gpu_check_mnist
#
# MNIST_DIR: a folder with MNIST's four .gz files (e.g. .gpu/mnist, which git ignores). To try
# this script on a CPU: DEVICE=cpu EXTRA="--train-limit 4800 --seeds 1" SEEDS=1 BENCH_EXTRA=--quick
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:?usage: bash bench/gpu_check_mnist.sh MNIST_DIR [OUT_DIR]}
out=${2:-${OUT:-/tmp/gpu_check_mnist}}
device=${DEVICE:-cuda}
extra=${EXTRA:-}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python -c 'import time; t = time.perf_counter(); import torch; print(f"import torch: {time.perf_counter() - t:.2f} s; torch {torch.__version__}, CUDA {torch.version.cuda}")'
for run in 1 2; do
    rm -rf "$out/logs$run"       # a folder of its own: the log to time is the only one there
    start=$(date +%s.%N)
    # shellcheck disable=SC2086
    timeout 120 python train_mnist_ffn.py --device "$device" --data-dir "$data" --log-dir "$out/logs$run" $extra \
        > "$out/study$run.txt" 2>&1 || { echo "study run $run failed:"; tail -20 "$out/study$run.txt"; exit 1; }
    end=$(date +%s.%N)
    log=$(ls "$out/logs$run"/mnist-*.txt)
    python - "$log" "$start" "$end" "$run" <<'PY'
import os, sys
log, start, end, run = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
lines = open(log).read().splitlines()
trials = sum(line.startswith("trial:") for line in lines)
print(f"study run {run}: {trials} trial lines; start -> last log line {os.path.getmtime(log) - start:.2f} s; "
      f"whole command {end - start:.2f} s; {lines[-1]}")
PY
    grep -E "trials done|trained in" "$out/study$run.txt" | sed 's/^/    /'
done
against=()
[ -n "${AGAINST:-}" ] && against=(--repeat 3 --against "$AGAINST")
# shellcheck disable=SC2086
timeout 300 python bench/bench_mnist.py --device "$device" --seeds ${SEEDS:-8} --cold --data-dir "$data" \
    "${against[@]}" ${BENCH_EXTRA:-} 2>&1 | tee "$out/cold.txt"
# shellcheck disable=SC2086
timeout 300 python bench/bench_mnist.py --device "$device" --seeds ${SEEDS:-8} --skip-plain --phases --data-dir "$data" \
    ${BENCH_EXTRA:-} 2>&1 | tee "$out/bench.txt"
