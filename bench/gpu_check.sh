#!/usr/bin/env bash
# The GPU figures of train_gpt.py's speed, in one call on one H100/H200 (about 8 minutes):
#   1. bench/bench_gpt.py at full size: a real 1-GPU step (8 micro-steps of 64 x 1024 tokens,
#      then AdamW and Muon) for both MLPs, side by side with the version before the speed
#      changes (--baseline), and the top kernels of one step (--profile);
#   2. train_gpt.py itself, 20 steps per MLP on full-size shards of synthetic tokens (vocab 50304):
#      its last step line (step_avg over steps 11-20), peak_memory and done lines.
#
#   bash bench/gpu_check.sh [OUT_DIR]        # default OUT_DIR: $OUT, else /tmp/gpu_check
#
# The "before" script: $BASELINE if set (BASELINE=none: no baseline, ~2 minutes less), else
# train_gpt.py at commit 9491bb0 (the last before the speed changes) when this is a git clone.
# EXTRA_BENCH / EXTRA_TRAIN / TOKENS change the sizes, to try this script on a CPU:
#   EXTRA_BENCH="--device cpu --n-layer 1 --n-embd 64 --n-head 1 --seq-len 64 --vocab-size 512 \
#     --device-batch-size 2 --grad-accum 2 --steps 2 --warmup 1" EXTRA_TRAIN="--device cpu \
#     --no-compile --n-layer 1 --n-embd 64 --n-head 1 --seq-len 64 --batch-size 4 \
#     --device-batch-size 2 --val-tokens 128" TOKENS=20000 bash bench/gpu_check.sh /tmp/gpu_check_cpu
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-/tmp/gpu_check}}
mkdir -p "$out"
baseline=${BASELINE:-}
if [[ -z $baseline ]] && git cat-file -e 9491bb0:train_gpt.py 2>/dev/null; then
    baseline=$out/train_gpt_before.py
    git show 9491bb0:train_gpt.py > "$baseline"
fi
[[ $baseline == none ]] && baseline=
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'

echo "== 1. bench/bench_gpt.py: one full step per MLP${baseline:+, and the baseline $baseline} (${SECONDS}s)"
# shellcheck disable=SC2086  # EXTRA_BENCH is a list of flags
python bench/bench_gpt.py --steps 6 --warmup 2 --profile "$out/profile.txt" \
    ${baseline:+--baseline "$baseline"} ${EXTRA_BENCH:-} | tee "$out/bench.txt"

echo "== 2. train_gpt.py: 20 steps per MLP, the clock runs over steps 11-20 (${SECONDS}s)"
python data/make_tiny_shards.py --out "$out/shards" --vocab 50304 --train-shards 1 \
    --tokens-per-shard "${TOKENS:-11000000}"                # 20 steps of 524,288 tokens + 1
for mlp in relu2 swiglu_thin; do
    # shellcheck disable=SC2086  # EXTRA_TRAIN is a list of flags
    python train_gpt.py --mlp "$mlp" --num-iterations 20 --val-every 0 --val-tokens 65536 \
        --train-files "$out/shards/fineweb_train_*.bin" --val-files "$out/shards/fineweb_val_*.bin" \
        --log-dir "$out/logs/$mlp" ${EXTRA_TRAIN:-} | grep -E '^(step:20/20 train_loss|peak_memory|done)'
done
echo "== done (${SECONDS}s); files in $out"
