"""Step time, tokens/s, MFU and peak memory of train_gpt.py's two MLPs, side by side in one run.

    python bench/bench_gpt.py                       # on CUDA: the full record model, 30 timed steps each
    python bench/bench_gpt.py --device cpu          # anywhere: a reduced model, in well under a minute

It imports train_gpt.py and times its real model, optimisers (AdamW + Muon) and precision on
random tokens (no data files): one step = forward + backward of --device-batch-size sequences
(x --grad-accum micro-steps) + both optimiser steps, as in training. Both MLPs are built and
warmed up (compilation included; peak memory is each model's own, measured then), then their
steps are timed interleaved, so that drift of the machine affects both alike; the step time is
the median.

FLOPs per token come from the model's shapes: 6 x (weights of every matmul, the tied head
included, the embedding lookup not) + 6 x n_layer x seq_len x n_embd for causal attention
(QK^T and AV: 4 T d multiply-adds per token and layer forward, x3 with backward, halved by the
causal mask). MFU = FLOPs per token x tokens/s / peak; the peak defaults to the H100 SXM's
dense bf16 989 TFLOP/s on CUDA (--peak-tflops for other GPUs) and is unknown (nan) on CPU.
"""
import argparse
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import train_gpt as tg  # noqa: E402

FULL = dict(n_layer=12, n_head=6, n_embd=768, vocab_size=50304, seq_len=1024, device_batch_size=64)
REDUCED = dict(n_layer=2, n_head=2, n_embd=256, vocab_size=8192, seq_len=256, device_batch_size=4)


def flops_per_token(model: tg.GPT, n_layer: int, seq_len: int, n_embd: int) -> int:
    matmul_weights = sum(p.numel() for p in model.blocks.parameters()) + model.lm_head.weight.numel()
    return 6 * matmul_weights + 6 * n_layer * seq_len * n_embd


def build(mlp: str, shape: dict, args, device: torch.device) -> dict:
    """The model and optimisers of one MLP, warmed up; peak memory is this model's own."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)     # the other model, already built, is not counted
    hp = tg.Hyperparameters(mlp=mlp, **shape)
    torch.manual_seed(0)
    with device:
        model = tg.GPT(hp.vocab_size, hp.n_layer, hp.n_head, hp.n_embd, mlp)
    optimizers = tg.build_optimizers(model, hp)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    compiled = torch.compile(model) if args.compile else model
    B, T = hp.device_batch_size, hp.seq_len
    x = torch.randint(0, hp.vocab_size, (args.grad_accum, B, T), device=device)
    y = torch.randint(0, hp.vocab_size, (args.grad_accum, B, T), device=device)

    def step():
        for micro in range(args.grad_accum):
            with autocast:
                loss = compiled(x[micro], y[micro])
            (loss / args.grad_accum).backward()
        for opt in optimizers:
            opt.step()
        model.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    sync(device)
    peak = ((torch.cuda.max_memory_allocated(device) - before) / 2**20) if device.type == "cuda" else float("nan")
    return dict(mlp=mlp, step=step, tokens=args.grad_accum * B * T, peak_mib=peak,
                params=sum(p.numel() for p in model.parameters()),
                flops_per_token=flops_per_token(model, hp.n_layer, hp.seq_len, hp.n_embd))


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(runs: list, steps: int, device, peak_tflops: float) -> list:
    """Time the runs' steps interleaved (a, b, b, a, a, b, ...) so drift hits both alike."""
    times = {r["mlp"]: [] for r in runs}
    for i in range(steps):
        for r in (runs if i % 2 == 0 else runs[::-1]):
            t0 = time.perf_counter()
            r["step"]()
            sync(device)
            times[r["mlp"]].append(time.perf_counter() - t0)
    out = []
    for r in runs:
        step_s = statistics.median(times[r["mlp"]])
        out.append(dict(mlp=r["mlp"], params=r["params"], flops_per_token=r["flops_per_token"],
                        step_ms=1000 * step_s, mean_ms=1000 * statistics.mean(times[r["mlp"]]),
                        tokens_per_s=r["tokens"] / step_s, peak_mib=r["peak_mib"],
                        mfu=r["flops_per_token"] * r["tokens"] / step_s / (peak_tflops * 1e12)))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    parser.add_argument("--full", action="store_true", help="the full record model on CPU too (slow)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per MLP (30 on CUDA, 10 on CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (10 on CUDA, 2 on CPU)")
    parser.add_argument("--grad-accum", type=int, default=1, help="micro-steps per step")
    parser.add_argument("--device-batch-size", type=int, default=None, help="sequences per micro-step")
    for name in ("n_layer", "n_head", "n_embd", "seq_len", "vocab_size"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=None, help="override the shape")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="dense bf16 peak of the GPU (default 989, H100 SXM; nan on CPU)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile (default: on CUDA yes, on CPU no)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but torch sees no CUDA GPU; use --device cpu")
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    shape = dict(FULL if (cuda or args.full) else REDUCED)
    for name in ("device_batch_size", "n_layer", "n_head", "n_embd", "seq_len", "vocab_size"):
        if getattr(args, name):
            shape[name] = getattr(args, name)
    args.steps = args.steps or (30 if cuda else 10)
    args.warmup = args.warmup if args.warmup is not None else (10 if cuda else 2)
    args.compile = cuda if args.compile is None else args.compile
    args.peak_tflops = args.peak_tflops or (989.0 if cuda else float("nan"))
    if cuda:
        import torch._inductor.config as inductor_config
        inductor_config.coordinate_descent_tuning = True        # as train_gpt.py
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    print(f"device: {name}  torch {torch.__version__}  precision: {'bf16 autocast' if cuda else 'fp32'}  "
          f"compile: {args.compile}")
    print(f"shape: {shape}  grad_accum: {args.grad_accum}  warmup: {args.warmup}  timed steps: {args.steps}  "
          f"peak: {args.peak_tflops} TFLOP/s")
    runs = [build(mlp, shape, args, device) for mlp in ("relu2", "swiglu_thin")]
    results = bench(runs, args.steps, device, args.peak_tflops)
    print(f"{'mlp':<12} {'params':>11} {'GFLOP/tok':>9} {'step ms':>9} {'mean ms':>9} {'tokens/s':>11} "
          f"{'TFLOP/s':>8} {'MFU':>6} {'peak MiB':>9}")
    for r in results:
        print(f"{r['mlp']:<12} {r['params']:>11,} {r['flops_per_token'] / 1e9:>9.3f} {r['step_ms']:>9.2f} "
              f"{r['mean_ms']:>9.2f} {r['tokens_per_s']:>11,.0f} "
              f"{r['flops_per_token'] * r['tokens_per_s'] / 1e12:>8.3f} {100 * r['mfu']:>5.1f}% {r['peak_mib']:>9.0f}")
    relu2, swiglu = results
    print(f"swiglu_thin/relu2: step time {swiglu['step_ms'] / relu2['step_ms']:.3f}  "
          f"FLOPs/token {swiglu['flops_per_token'] / relu2['flops_per_token']:.3f}  "
          f"peak memory {swiglu['peak_mib'] / relu2['peak_mib']:.3f}")
    return results


if __name__ == "__main__":
    main()
