#!/usr/bin/env bash
# The GPU figures of train_gpt.py's speed, in one call on one H100/H200, within BUDGET seconds
# (default 470: the three default parts in one call of under 8 minutes; compiling the full model
# takes ~100-150 s per configuration):
#   1. step:       bench/bench_gpt.py at full size, both study MLPs as train_gpt.py runs them: a
#                  real 1-GPU step (8 micro-steps of 64 x 1024 tokens, then AdamW and Muon), ms/step,
#                  fwd+bwd / AdamW / Muon, MFU (989 TFLOP/s dense bf16 peak), peak memory, the
#                  swiglu_thin/relu2 ratio, x the record's own script (978.0 ms/step on an H200), and
#                  the top kernels of one step (profile.txt). Two compiles, ~4 minutes.
#   2. components: the speed lever, batched Newton-Schulz, off and on, on its own part of the step
#                  (one Muon step of relu2's matrices): its gain without a whole-model compile
#                  per variant (~1 minute).
#   3. dbs128:     relu2 with --device-batch-size 128 (4 micro-steps: the same batch, summed in
#                  another order) if the budget still holds a compile (~2 minutes).
#   4. train:      (only if PARTS names it; run first then) train_gpt.py itself, 20 steps per MLP on full-size shards
#                  of synthetic tokens: its step_avg over steps 11-20, peak_memory and done lines.
# Each part runs under `timeout` with what is left of BUDGET, and a part that fails or is cut
# does not stop the others. Every part's output goes to OUT_DIR/<part>.txt (and the screen);
# summary.txt collects the result lines. Nothing here uses the network.
#
#   bash bench/gpu_check.sh [OUT_DIR]        # default OUT_DIR: $OUT, else /tmp/gpu_check
#   PARTS="step components" BUDGET=600 bash bench/gpu_check.sh      # choose parts and time
#
# EXTRA_BENCH / DBS2 / EXTRA_TRAIN / TOKENS change the sizes, to try this script on a CPU:
#   EXTRA_BENCH="--device cpu --n-layer 1 --n-embd 64 --n-head 1 --seq-len 64 --vocab-size 512 \
#     --device-batch-size 2 --grad-accum 2 --steps 2 --warmup 1" DBS2="--device-batch-size 4 \
#     --grad-accum 1" EXTRA_TRAIN="--device cpu --no-compile --n-layer 1 --n-embd 64 --n-head 1 \
#     --seq-len 64 --batch-size 4 --device-batch-size 2 --val-tokens 128" TOKENS=20000 \
#     PARTS="step components dbs128 train" bash bench/gpu_check.sh /tmp/gpu_check_cpu
set -uo pipefail                                  # no -e: a failed part must not stop the others
cd "$(dirname "$0")/.."
out=${1:-${OUT:-/tmp/gpu_check}}
mkdir -p "$out"
budget=${BUDGET:-470}
parts=" ${PARTS:-step components dbs128} "
: > "$out/summary.txt"

# part NAME NEEDS_S CMD...: run CMD if at least NEEDS_S seconds of the budget are left, under a
# timeout of what is left; its output to the screen and NAME.txt
part() {
    local name=$1 needs=$2 left rc
    shift 2
    [[ $parts == *" $name "* ]] || return 0
    left=$((budget - SECONDS))
    if ((left < needs)); then
        echo "== $name: skipped, ${left} s of BUDGET=${budget} left, it needs ~${needs} s" | tee -a "$out/summary.txt"
        return 0
    fi
    echo "== $name (at ${SECONDS} s, timeout $((left - 3)) s): $*"
    timeout -k 5 $((left - 3)) "$@" 2>&1 | tee "$out/$name.txt"
    rc=${PIPESTATUS[0]}
    ((rc == 0)) || echo "== $name: exit status $rc$( ((rc == 124)) && echo ' (cut by the time budget)')" \
        | tee -a "$out/summary.txt"
}

{
    date -u +"date: %Y-%m-%dT%H:%M:%SZ"
    git log -1 --format='commit: %h %s' 2>/dev/null || true
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true
    python -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
} 2>&1 | tee "$out/environment.txt"

# train first when PARTS names it: train_gpt.py's own step_avg is the headline figure
train() {
    python data/make_tiny_shards.py --out "$out/shards" --vocab 50304 --train-shards 1 \
        --tokens-per-shard "${TOKENS:-11000000}" || return        # 20 steps of 524,288 tokens + 1
    for mlp in relu2 swiglu_thin; do
        echo "mlp $mlp: train_gpt.py, 20 steps"
        # shellcheck disable=SC2086
        python train_gpt.py --mlp "$mlp" --num-iterations 20 --val-every 0 --val-tokens 65536 \
            --train-files "$out/shards/fineweb_train_*.bin" --val-files "$out/shards/fineweb_val_*.bin" \
            --log-dir "$out/logs/$mlp" ${EXTRA_TRAIN:-} | grep -E '^(step:20/20 train_loss|peak_memory|done)'
    done
}
export -f train
export out
part train 240 bash -c train
# shellcheck disable=SC2086  # EXTRA_BENCH / DBS2 / EXTRA_TRAIN are lists of flags
part step 150 python bench/bench_gpt.py --steps 6 --warmup 2 --profile "$out/profile.txt" ${EXTRA_BENCH:-}
# shellcheck disable=SC2086
part components 40 python bench/bench_gpt.py --components --mlps relu2 --steps 10 ${EXTRA_BENCH:-}
# shellcheck disable=SC2086
part dbs128 110 python bench/bench_gpt.py --mlps relu2 --steps 4 --warmup 2 ${EXTRA_BENCH:-} \
    ${DBS2:---device-batch-size 128 --grad-accum 4}

for name in step components dbs128 train; do
    [[ -f $out/$name.txt ]] || continue
    echo "-- $name" >> "$out/summary.txt"
    grep -E '^(device|shape|mlp |relu2|swiglu_thin|part |Muon step|record/|step:20|peak_memory|done|error|Traceback)' \
        "$out/$name.txt" | grep -v 'first step' >> "$out/summary.txt"
done
echo "== done (${SECONDS} s of BUDGET=${budget}); files in $out: $(cd "$out" && ls | tr '\n' ' ')"
echo "== summary ($out/summary.txt):"
cat "$out/summary.txt"
