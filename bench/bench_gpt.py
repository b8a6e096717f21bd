"""Where a training step of train_gpt.py goes, for both MLPs side by side in one run.

    python bench/bench_gpt.py                        # on CUDA: a real 1-GPU step of the full model
    python bench/bench_gpt.py --device cpu           # anywhere: a reduced model, seconds
    python bench/bench_gpt.py --profile top.txt      # also the top kernels of one step per MLP
    python bench/bench_gpt.py --baseline old/train_gpt.py     # and an older version, side by side

One step is what train_gpt.py's loop does in a step on 1 GPU: --grad-accum micro-steps (8 on
CUDA: 8 x 64 sequences of 1024 tokens = the record's 524,288-token batch) of forward +
backward under bf16 autocast, then the AdamW and Muon steps, then zero_grad. It imports the
script's real model and optimisers (build_optimizers: with --compile, Newton-Schulz is compiled
too) and feeds random tokens (no data files). Both MLPs are built and warmed up first (peak
memory is each model's own, measured then; "compile s" is the first step's time minus the median
step's: compilation and warm-up), then their steps are timed interleaved (a b b a a b ...) so that
drift of the machine hits both alike. Every figure is a median over the timed steps; the parts
(forward+backward, AdamW, Muon) are timed with CUDA events on a GPU, perf_counter on a CPU.
With --baseline, the same two MLPs of another train_gpt.py (say the version before a speed
change, from `git show REV:train_gpt.py`) are built and timed in the same interleaving, and the
ratios this/baseline are printed too: a before/after from one run.

FLOPs per token come from the model's shapes: 6 x (weights of every matmul, the tied head
included, the embedding lookup not) + 6 x n_layer x seq_len x n_embd for causal attention
(QK^T and AV: 2 T d multiply-adds = 4 T d FLOPs per token and layer forward, x3 with backward,
halved by the causal mask). MFU = FLOPs per token x tokens/s / peak; the peak defaults to the H100 SXM's
dense bf16 989 TFLOP/s on CUDA (--peak-tflops for other GPUs) and is unknown (nan) on CPU.
"""
import argparse
import importlib.util
import inspect
import os
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
FULL = dict(n_layer=12, n_head=6, n_embd=768, vocab_size=50304, seq_len=1024, device_batch_size=64)
REDUCED = dict(n_layer=2, n_head=2, n_embd=128, vocab_size=4096, seq_len=128, device_batch_size=4)
PARTS = ("fwd_bwd", "adamw", "muon")


def load_script(path: Path):
    spec = importlib.util.spec_from_file_location("train_gpt", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def flops_per_token(model, n_layer: int, seq_len: int, n_embd: int) -> int:
    matmul_weights = sum(p.numel() for p in model.blocks.parameters()) + model.lm_head.weight.numel()
    return 6 * matmul_weights + 6 * n_layer * seq_len * n_embd


class Clock:
    """Marks between the parts of a step: CUDA events on a GPU (read after a synchronize), else
    perf_counter (CPU ops are synchronous)."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.marks = []

    def mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def intervals_ms(self):
        """Milliseconds between consecutive marks (synchronises first on a GPU)."""
        if self.cuda:
            torch.cuda.synchronize()
            out = [a.elapsed_time(b) for a, b in zip(self.marks, self.marks[1:])]
        else:
            out = [1000 * (b - a) for a, b in zip(self.marks, self.marks[1:])]
        self.marks = []
        return out


def build(tg, label: str, mlp: str, shape: dict, args, device: torch.device) -> dict:
    """The model and optimisers of one MLP, warmed up; peak memory is this model's own."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)     # the other model, already built, is not counted
    hp = tg.Hyperparameters(mlp=mlp, compile=args.compile, **shape)
    torch.manual_seed(0)
    # as train_gpt.py builds it (its rotary table --seq-len long); a --baseline from before that
    # table (gpu_check.sh's default, 9491bb0) has no max_seq_len and computes cos/sin in forward
    table = dict(max_seq_len=hp.seq_len) if "max_seq_len" in inspect.signature(tg.GPT).parameters else {}
    with device:
        model = tg.GPT(hp.vocab_size, hp.n_layer, hp.n_head, hp.n_embd, mlp, **table)
    optimizers = tg.build_optimizers(model, hp)
    names = ["muon" if isinstance(opt, tg.Muon) else "adamw" for opt in optimizers]
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    compiled = torch.compile(model) if args.compile else model
    B, T = hp.device_batch_size, hp.seq_len
    x = torch.randint(0, hp.vocab_size, (args.grad_accum, B, T), device=device)
    y = torch.randint(0, hp.vocab_size, (args.grad_accum, B, T), device=device)
    clock = Clock(device)

    def step():
        """One training step as train_gpt.py's loop; returns its parts and total in ms."""
        clock.mark()
        for micro in range(args.grad_accum):
            with autocast:
                loss = compiled(x[micro], y[micro])
            (loss / args.grad_accum).backward()
        clock.mark()
        for opt in optimizers:                           # lr factor 1: the record's first 3650 steps
            opt.step()
            clock.mark()
        model.zero_grad(set_to_none=True)
        clock.mark()
        ms = clock.intervals_ms()
        parts = dict(fwd_bwd=ms[0], **dict(zip(names, ms[1:-1])))
        return dict(parts, step=sum(ms))

    t0 = time.perf_counter()
    step()
    first_s = time.perf_counter() - t0
    for _ in range(args.warmup - 1):
        step()
    peak = ((torch.cuda.max_memory_allocated(device) - before) / 2**20) if device.type == "cuda" else float("nan")
    print(f"{label}: first step {first_s:.1f} s (compilation and warm-up)", flush=True)
    return dict(label=label, mlp=mlp, step=step, tokens=args.grad_accum * B * T, peak_mib=peak, first_s=first_s,
                params=sum(p.numel() for p in model.parameters()),
                flops_per_token=flops_per_token(model, hp.n_layer, hp.seq_len, hp.n_embd))


def bench(runs: list, steps: int, peak_tflops: float) -> list:
    """Time the runs' steps interleaved (a, b, b, a, a, b, ...) so drift hits both alike."""
    times = {r["label"]: [] for r in runs}
    for i in range(steps):
        for r in (runs if i % 2 == 0 else runs[::-1]):
            times[r["label"]].append(r["step"]())
    out = []
    for r in runs:
        median = {k: statistics.median(t[k] for t in times[r["label"]]) for k in ("step",) + PARTS}
        step_s = median["step"] / 1000
        out.append(dict(label=r["label"], mlp=r["mlp"], params=r["params"], flops_per_token=r["flops_per_token"],
                        step_ms=median["step"], **{f"{k}_ms": median[k] for k in PARTS},
                        tokens_per_s=r["tokens"] / step_s, peak_mib=r["peak_mib"],
                        compile_s=r["first_s"] - step_s,
                        mfu=r["flops_per_token"] * r["tokens"] / step_s / (peak_tflops * 1e12)))
    return out


def profile(r: dict, path: Path, device, rows: int = 30):
    """The top kernels of one step (torch.profiler's key_averages table) appended to path."""
    from torch.profiler import ProfilerActivity, profile as torch_profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        r["step"]()
    sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    with open(path, "a") as f:
        f.write(f"==== {r['label']}: one step, top {rows} by {sort_by}\n")
        f.write(prof.key_averages().table(sort_by=sort_by, row_limit=rows) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    parser.add_argument("--full", action="store_true", help="the full record model on CPU too (slow)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per MLP (10 on CUDA, 5 on CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (3 on CUDA, 1 on CPU)")
    parser.add_argument("--grad-accum", type=int, default=None,
                        help="micro-steps per step (8 on CUDA: the record's batch on 1 GPU; 2 on CPU)")
    parser.add_argument("--device-batch-size", type=int, default=None, help="sequences per micro-step")
    for name in ("n_layer", "n_head", "n_embd", "seq_len", "vocab_size"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=None, help="override the shape")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="dense bf16 peak of the GPU (default 989, H100 SXM; nan on CPU)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the model and Newton-Schulz (default: on CUDA yes, on CPU no)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch's CPU threads (default 1, at most the CPU count, as train_gpt.py's --threads: "
                             "on a busy 2-core machine the default of one per core ran the CPU bench 40x slower, "
                             "5.1 s a step instead of 0.13)")
    parser.add_argument("--profile", type=Path, default=None, help="write the top kernels of one step here")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another train_gpt.py (e.g. an older version) to time side by side")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but torch sees no CUDA GPU; use --device cpu")
    if args.threads < 1:
        sys.exit(f"error: --threads {args.threads}: must be 1 or more")
    cpus = os.cpu_count() or 1
    if args.threads > cpus:                      # as train_gpt.py: more only wait for each other (100000 crash torch)
        sys.exit(f"error: --threads {args.threads}: more than the {cpus} CPUs of this machine; use {cpus} or fewer")
    if args.baseline and not args.baseline.is_file():
        sys.exit(f"error: --baseline {args.baseline}: no such file")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return run(args)
    finally:
        torch.set_num_threads(threads)           # a caller in the same process (the tests) keeps its own


def run(args):
    scripts = [("", load_script(REPO / "train_gpt.py"))] + ([("@baseline", load_script(args.baseline))]
                                                            if args.baseline else [])
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    shape = dict(FULL if (cuda or args.full) else REDUCED)
    for name in ("device_batch_size", "n_layer", "n_head", "n_embd", "seq_len", "vocab_size"):
        if getattr(args, name):
            shape[name] = getattr(args, name)
    args.steps = args.steps or (10 if cuda else 5)
    args.warmup = max(1, args.warmup if args.warmup is not None else (3 if cuda else 1))
    args.grad_accum = args.grad_accum or (8 if cuda else 2)
    args.compile = cuda if args.compile is None else args.compile
    args.peak_tflops = args.peak_tflops or (989.0 if cuda else float("nan"))
    if cuda:
        import torch._inductor.config as inductor_config
        inductor_config.coordinate_descent_tuning = True        # as train_gpt.py
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    print(f"device: {name}  torch {torch.__version__}  precision: {'bf16 autocast' if cuda else 'fp32'}  "
          f"compile: {args.compile}  threads: {args.threads}  baseline: {args.baseline}")
    print(f"shape: {shape}  grad_accum: {args.grad_accum}  tokens/step: "
          f"{args.grad_accum * shape['device_batch_size'] * shape['seq_len']}  warmup: {args.warmup}  "
          f"timed steps: {args.steps}  peak: {args.peak_tflops} TFLOP/s", flush=True)
    runs = [build(tg, mlp + suffix, mlp, shape, args, device) for suffix, tg in scripts
            for mlp in ("relu2", "swiglu_thin")]
    results = bench(runs, args.steps, args.peak_tflops)
    width = max(len(r["label"]) for r in results)
    print(f"{'mlp':<{width}} {'params':>11} {'GFLOP/tok':>9} {'step ms':>9} {'fwd+bwd':>9} {'adamw':>7} {'muon':>7} "
          f"{'tokens/s':>11} {'TFLOP/s':>8} {'MFU':>6} {'peak MiB':>9} {'compile s':>9}")
    for r in results:
        print(f"{r['label']:<{width}} {r['params']:>11,} {r['flops_per_token'] / 1e9:>9.3f} {r['step_ms']:>9.2f} "
              f"{r['fwd_bwd_ms']:>9.2f} {r['adamw_ms']:>7.2f} {r['muon_ms']:>7.2f} {r['tokens_per_s']:>11,.0f} "
              f"{r['flops_per_token'] * r['tokens_per_s'] / 1e12:>8.3f} {100 * r['mfu']:>5.1f}% "
              f"{r['peak_mib']:>9.0f} {r['compile_s']:>9.1f}")
    for i, (suffix, _) in enumerate(scripts):
        relu2, swiglu = results[2 * i: 2 * i + 2]
        print(f"swiglu_thin/relu2{suffix}: step time {swiglu['step_ms'] / relu2['step_ms']:.3f}  "
              f"fwd+bwd {swiglu['fwd_bwd_ms'] / relu2['fwd_bwd_ms']:.3f}  "
              f"FLOPs/token {swiglu['flops_per_token'] / relu2['flops_per_token']:.3f}  "
              f"peak memory {swiglu['peak_mib'] / relu2['peak_mib']:.3f}")
    for this, base in zip(results, results[2:]):
        print(f"this/baseline {this['mlp']}: step time {this['step_ms'] / base['step_ms']:.3f}  "
              + "  ".join(f"{k} {this[k + '_ms'] / base[k + '_ms']:.3f}" for k in PARTS)
              + f"  peak memory {this['peak_mib'] / base['peak_mib']:.3f}")
    sys.stdout.flush()
    if args.profile:
        args.profile.write_text(f"bench/bench_gpt.py --profile: {name}, torch {torch.__version__}, "
                                f"baseline {args.baseline}, shape {shape}, grad_accum {args.grad_accum}\n")
        for r in runs:
            profile(r, args.profile, device)
        print(f"profile: {args.profile}")
    return results


if __name__ == "__main__":
    main()
