"""Where a training step of train_gpt.py goes, for the study's MLPs side by side in one run.

    python bench/bench_gpt.py                        # on CUDA: a real 1-GPU step of the full model
    python bench/bench_gpt.py --device cpu           # anywhere: a reduced model, seconds
    python bench/bench_gpt.py --without batched_ns   # also with the speed lever off, side by side
    python bench/bench_gpt.py --components           # the lever off/on on its own part of the step
    python bench/bench_gpt.py --profile top.txt      # also the top kernels of one step per MLP
    python bench/bench_gpt.py --baseline old/train_gpt.py     # and an older version, side by side

One step is what train_gpt.py's loop does in a step on 1 GPU: --grad-accum micro-steps (8 on
CUDA: 8 x 64 sequences of 1024 tokens = the record's 524,288-token batch) of forward +
backward under bf16 autocast, then the AdamW and Muon steps, then zero_grad. It imports the
script's real model and optimisers (build_optimizers: with --compile, Newton-Schulz is compiled
too) and feeds random tokens (no data files). The MLPs (--mlps, any of train_gpt.MLPS; default
the study's relu2 and swiglu_thin) are built and warmed up first (peak memory is each model's
own, measured then; "compile s" is the first step's time minus the median step's: compilation
and warm-up), then their steps are timed interleaved (a b b a a b ...) so that drift of the
machine hits all alike. Every figure is a median over the timed steps; the parts
(forward+backward, AdamW, Muon) are timed with CUDA events on a GPU, perf_counter on a CPU.

train_gpt.py's speed levers (LEVERS; on in a run) can be switched off: --without LEVER adds, per
MLP, a run with that lever off ("relu2-no_LEVER") beside the run with all on, and prints
levers/LABEL ratios (all on / this). The one lever left is batched_ns: Muon's Newton-Schulz once
per shape on the stacked same-shaped matrices, not once per matrix (with it off, the step is the
record's path). Two more were measured on an H200 and removed, the head + loss chunked with its
gradient in the forward (a 0.6% gain, and likely, unverified, the +3.5 GB of peak memory) and
q/k/v from one matmul (slower): train_gpt.py's docstring has the figures. A whole-model compile
per variant is ~100 s on a GPU, so --components measures the lever instead on the part of the
step it changes: one Muon step over a model's block matrices per MLP, off and on. With
--baseline, the MLPs of another train_gpt.py (say the version before a speed change, from
`git show REV:train_gpt.py`) are built and timed in the same interleaving, and the ratios
this/baseline are printed too: a before/after from one run.

FLOPs per token come from the model's shapes: 6 x (weights of every matmul, the tied head
included, the embedding lookup not) + 6 x n_layer x seq_len x n_embd for causal attention
(QK^T and AV: 2 T d multiply-adds = 4 T d FLOPs per token and layer forward, x3 with backward,
halved by the causal mask). MFU = FLOPs per token x tokens/s / peak; the peak defaults to 989
TFLOP/s on CUDA, the dense (no sparsity) bf16 peak of the H100 SXM and of the H200 (--peak-tflops
for other GPUs), and is unknown (nan) on CPU. "record/this relu2" divides the record's own
script's step time on an H200 (RECORD_H200_MS) by this relu2 step: comparable only on an H200 at
the full size and batch.

Bad input (a count below 1, heads that do not divide the width, a --baseline that is not a
train_gpt.py, a --profile path that cannot be written, ...) is refused in one line `error: ...`,
exit status 2, before anything is built or timed.
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


# The speed levers of train_gpt.py, each on by default there; --without switches one off (for one
# run per MLP beside the run with all of them). batched_ns: Muon(batched=...).
LEVERS = ("batched_ns",)
# the record's own script (relu2) on one H200, torch 2.11 + CUDA 13, full size, 8 micro-steps of
# 64 x 1024 tokens, steps 11-20 timed (issue 23): what "x the record" is measured against
RECORD_H200_MS = 978.0


def build(tg, label: str, mlp: str, shape: dict, args, device: torch.device, off=frozenset()) -> dict:
    """The model and optimisers of one MLP, warmed up; peak memory is this model's own."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)     # the other models, already built, are not counted
    hp = tg.Hyperparameters(mlp=mlp, compile=args.compile, **shape)
    torch.manual_seed(0)
    # as train_gpt.py builds it (its rotary table --seq-len long); a --baseline from before that
    # table (gpu_check.sh's old default, 9491bb0) has no max_seq_len and computes cos/sin in forward
    table = dict(max_seq_len=hp.seq_len) if "max_seq_len" in inspect.signature(tg.GPT).parameters else {}
    with device:
        model = tg.GPT(hp.vocab_size, hp.n_layer, hp.n_head, hp.n_embd, mlp, **table)
    optimizers = tg.build_optimizers(model, hp)
    for opt in optimizers:
        if hasattr(opt, "batched"):
            opt.batched = "batched_ns" not in off
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
    return dict(label=label, mlp=mlp, off=off, step=step, tokens=args.grad_accum * B * T, peak_mib=peak,
                first_s=first_s, params=sum(p.numel() for p in model.parameters()),
                flops_per_token=flops_per_token(model, hp.n_layer, hp.seq_len, hp.n_embd))


def bench(runs: list, steps: int, peak_tflops: float) -> list:
    """Time the runs' steps interleaved (a, b, b, a, a, b, ...) so drift hits all alike."""
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


# ---- the levers one at a time, on the part of the step each changes (no whole-model compile)

def time_ms(fn, device, repeat: int) -> float:
    """Median ms of fn() over `repeat` calls after two untimed ones (compilation, warm-up)."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def components(tg, shape: dict, args, device) -> list:
    """Each lever off and on, timed on its own part of the step (the optimiser step for batched_ns),
    compiled as in a run when --compile: a few seconds of compilation each instead of a whole
    model's. Rows: (part, lever, ms off, ms on)."""
    T, d, V, H = (shape[k] for k in ("seq_len", "n_embd", "vocab_size", "n_head"))
    # Newton-Schulz is compiled once per shape (dynamic=False): per matrix and batched, both MLPs, are
    # 10 shapes, over dynamo's default limit of 8 graphs per function (the rest would run eager)
    import torch._dynamo
    for limit in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, limit):
            setattr(torch._dynamo.config, limit, max(getattr(torch._dynamo.config, limit), 64))
    rows = []
    # Muon: a whole model's block matrices, one optimiser step per MLP
    for mlp in args.mlps:
        times = []
        torch.manual_seed(0)
        with device:
            model = tg.GPT(V, shape["n_layer"], H, d, mlp, T)
        matrices = list(model.blocks.parameters())
        for p in matrices:
            p.grad = torch.randn_like(p)
        for on in (False, True):
            muon = tg.Muon(matrices, compile=args.compile, batched=on)
            times.append(time_ms(muon.step, device, args.steps))
        rows.append((f"Muon step ({mlp})", "batched_ns", *times))
        del model, matrices
    return rows


# ---- the command line

def refuse(message: str):
    """One line `error: ...` (exit status 2 from the command line), before any work."""
    raise SystemExit(f"error: {message}")


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):                    # argparse's usage + error lines, as one line
        refuse(f"{message} (python bench/bench_gpt.py --help lists the flags)")


def check_baseline(path: Path):
    """--baseline must be a train_gpt.py: a Python file with the model and optimisers bench builds."""
    if not path.is_file():
        refuse(f"--baseline {path}: no such file; give an older train_gpt.py (git show REV:train_gpt.py > FILE)")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        refuse(f"--baseline {path}: cannot read it as text ({e}); give an older train_gpt.py script")
    if not all(name in text for name in ("class GPT", "def build_optimizers", "class Hyperparameters")):
        refuse(f"--baseline {path}: not a train_gpt.py script (no GPT, Hyperparameters or build_optimizers: "
               "a log file?); give an older train_gpt.py, e.g. from git show REV:train_gpt.py")
    try:
        compile(text, str(path), "exec")
    except SyntaxError as e:
        refuse(f"--baseline {path}: not valid Python (line {e.lineno}: {e.msg}); give an older train_gpt.py script")


def main(argv=None):
    tg = load_script(REPO / "train_gpt.py")
    study = [m for m in ("relu2", "swiglu_thin") if m in tg.MLPS]
    parser = OneLineParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    parser.add_argument("--full", action="store_true", help="the full record model on CPU too (slow)")
    parser.add_argument("--mlps", nargs="+", default=study, choices=list(tg.MLPS), metavar="MLP",
                        help=f"the MLPs to time, of train_gpt.MLPS: {', '.join(tg.MLPS)} "
                             f"(default: the study's {' '.join(study)})")
    parser.add_argument("--without", nargs="+", default=[], choices=LEVERS, metavar="LEVER",
                        help=f"also time each MLP with this speed lever of train_gpt.py off ({', '.join(LEVERS)}), "
                             "side by side")
    parser.add_argument("--components", action="store_true",
                        help="instead of whole steps, time each lever off and on on its own part of the step "
                             "(batched_ns: a Muon step): no whole-model compile")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per MLP (10 on CUDA, 5 on CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (3 on CUDA, 1 on CPU)")
    parser.add_argument("--grad-accum", type=int, default=None,
                        help="micro-steps per step (8 on CUDA: the record's batch on 1 GPU; 2 on CPU)")
    parser.add_argument("--device-batch-size", type=int, default=None, help="sequences per micro-step")
    for name in ("n_layer", "n_head", "n_embd", "seq_len", "vocab_size"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=None, help="override the shape")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="dense bf16 peak of the GPU (default 989: H100 SXM and H200, without sparsity; "
                             "nan on CPU)")
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
        refuse("--device cuda but torch sees no CUDA GPU; use --device cpu")
    if args.threads < 1:
        refuse(f"--threads {args.threads}: must be 1 or more")
    cpus = os.cpu_count() or 1
    if args.threads > cpus:                      # as train_gpt.py: more only wait for each other (100000 crash torch)
        refuse(f"--threads {args.threads}: more than the {cpus} CPUs of this machine; use {cpus} or fewer")
    for name in ("steps", "grad_accum", "device_batch_size", "n_layer", "n_head", "n_embd", "seq_len", "vocab_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            refuse(f"--{name.replace('_', '-')} {getattr(args, name)}: must be 1 or more")
    if args.warmup is not None and args.warmup < 1:
        refuse(f"--warmup {args.warmup}: must be 1 or more (the first step compiles and is not timed)")
    if args.peak_tflops is not None and not 0 < args.peak_tflops < float("inf"):
        refuse(f"--peak-tflops {args.peak_tflops}: must be a positive number (the GPU's dense bf16 TFLOP/s)")
    if args.baseline:
        check_baseline(args.baseline)
    if args.components and (args.baseline or args.without or args.profile):
        refuse("--components times the levers on their own: drop --baseline / --without / --profile, "
               "or drop --components for whole steps")
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    shape = dict(FULL if (cuda or args.full) else REDUCED)
    for name in ("device_batch_size", "n_layer", "n_head", "n_embd", "seq_len", "vocab_size"):
        if getattr(args, name):
            shape[name] = getattr(args, name)
    if shape["n_embd"] % shape["n_head"] or (shape["n_embd"] // shape["n_head"]) % 2:
        refuse(f"--n-head {shape['n_head']}: --n-embd {shape['n_embd']} must split into {shape['n_head']} heads "
               "of even size (rotary turns pairs of dimensions); pick a width and head count where it does")
    if args.profile:                             # written now: an unwritable path is refused before any timing
        try:
            args.profile.write_text("")
        except OSError as e:
            refuse(f"--profile {args.profile}: cannot write there ({e.strerror or e}); give a path in a folder "
                   "you can write to")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return run(args, tg, cuda, shape)
    finally:
        torch.set_num_threads(threads)           # a caller in the same process (the tests) keeps its own


def run(args, tg, cuda: bool, shape: dict):
    scripts = [("", tg)] + ([("@baseline", load_script(args.baseline))] if args.baseline else [])
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    args.steps = args.steps or (10 if cuda else 5)
    args.warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    args.grad_accum = args.grad_accum or (8 if cuda else 2)
    args.compile = cuda if args.compile is None else args.compile
    args.peak_tflops = args.peak_tflops or (989.0 if cuda else float("nan"))
    if cuda and not args.components:
        import torch._inductor.config as inductor_config
        inductor_config.coordinate_descent_tuning = True        # as train_gpt.py
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    print(f"device: {name}  torch {torch.__version__}  precision: {'bf16 autocast' if cuda else 'fp32'}  "
          f"compile: {args.compile}  threads: {args.threads}  baseline: {args.baseline}")
    print(f"shape: {shape}  grad_accum: {args.grad_accum}  tokens/step: "
          f"{args.grad_accum * shape['device_batch_size'] * shape['seq_len']}  warmup: {args.warmup}  "
          f"timed steps: {args.steps}  peak: {args.peak_tflops} TFLOP/s (MFU's denominator: dense bf16; "
          "989 is the H100 SXM's and the H200's)", flush=True)
    if args.components and cuda:
        print("components: compiled without inductor's coordinate-descent tuning (train_gpt.py's), so that "
              "each part compiles in seconds; lever off and on alike", flush=True)
    if args.components:
        rows = components(tg, shape, args, device)
        print(f"{'part':<34} {'lever':<16} {'off ms':>9} {'on ms':>9} {'on/off':>7}")
        for part, lever, off, on in rows:
            print(f"{part:<34} {lever:<16} {off:>9.2f} {on:>9.2f} {on / off:>7.3f}")
        sys.stdout.flush()
        return [dict(part=part, lever=lever, off_ms=off, on_ms=on) for part, lever, off, on in rows]

    variants = [frozenset()] + [frozenset((lever,)) for lever in dict.fromkeys(args.without)]
    runs = []
    for suffix, script in scripts:
        for off in (variants if suffix == "" else [frozenset()]):
            tag = "".join("-no_" + lever for lever in off)
            runs += [build(script, mlp + tag + suffix, mlp, shape, args, device, off) for mlp in args.mlps]
    results = bench(runs, args.steps, args.peak_tflops)
    for r, run_ in zip(results, runs):
        r["off"] = sorted(run_["off"])
    width = max(len(r["label"]) for r in results)
    print(f"{'mlp':<{width}} {'params':>11} {'GFLOP/tok':>9} {'step ms':>9} {'fwd+bwd':>9} {'adamw':>7} {'muon':>7} "
          f"{'tokens/s':>11} {'TFLOP/s':>8} {'MFU':>6} {'peak MiB':>9} {'compile s':>9}")
    for r in results:
        print(f"{r['label']:<{width}} {r['params']:>11,} {r['flops_per_token'] / 1e9:>9.3f} {r['step_ms']:>9.2f} "
              f"{r['fwd_bwd_ms']:>9.2f} {r['adamw_ms']:>7.2f} {r['muon_ms']:>7.2f} {r['tokens_per_s']:>11,.0f} "
              f"{r['flops_per_token'] * r['tokens_per_s'] / 1e12:>8.3f} {100 * r['mfu']:>5.1f}% "
              f"{r['peak_mib']:>9.0f} {r['compile_s']:>9.1f}")
    by_label = {r["label"]: r for r in results}
    for suffix, _ in scripts:
        relu2, swiglu = by_label.get("relu2" + suffix), by_label.get("swiglu_thin" + suffix)
        if relu2 and swiglu:
            print(f"swiglu_thin/relu2{suffix}: step time {swiglu['step_ms'] / relu2['step_ms']:.3f}  "
                  f"fwd+bwd {swiglu['fwd_bwd_ms'] / relu2['fwd_bwd_ms']:.3f}  "
                  f"FLOPs/token {swiglu['flops_per_token'] / relu2['flops_per_token']:.3f}  "
                  f"peak memory {swiglu['peak_mib'] / relu2['peak_mib']:.3f}")
    for r in results:
        mlp, label = r["mlp"], r["label"]
        if label == mlp or label.endswith("@baseline"):
            continue
        this = by_label[mlp]                     # all levers on, beside this one with some off
        print(f"levers/{label}: step time {this['step_ms'] / r['step_ms']:.3f}  "
              + "  ".join(f"{k} {this[k + '_ms'] / r[k + '_ms']:.3f}" for k in PARTS)
              + f"  peak memory {this['peak_mib'] / r['peak_mib']:.3f}")
    for mlp in args.mlps:
        if f"{mlp}@baseline" in by_label:
            this, base = by_label[mlp], by_label[f"{mlp}@baseline"]
            print(f"this/baseline {mlp}: step time {this['step_ms'] / base['step_ms']:.3f}  "
                  + "  ".join(f"{k} {this[k + '_ms'] / base[k + '_ms']:.3f}" for k in PARTS)
                  + f"  peak memory {this['peak_mib'] / base['peak_mib']:.3f}")
    if "relu2" in by_label:
        tokens = args.grad_accum * shape["device_batch_size"] * shape["seq_len"]
        comparable = cuda and shape["n_layer"] == FULL["n_layer"] and shape["n_embd"] == FULL["n_embd"] \
            and shape["vocab_size"] == FULL["vocab_size"] and tokens == 524288
        print(f"record/this relu2: {RECORD_H200_MS / by_label['relu2']['step_ms']:.3f}x  (the record's own script, "
              f"{RECORD_H200_MS} ms/step on one H200, over this {by_label['relu2']['step_ms']:.1f}; "
              + ("comparable only on an H200" if comparable else "NOT comparable: not the full model and batch on a GPU")
              + ")")
    sys.stdout.flush()
    if args.profile:
        args.profile.write_text(f"bench/bench_gpt.py --profile: {name}, torch {torch.__version__}, "
                                f"baseline {args.baseline}, shape {shape}, grad_accum {args.grad_accum}\n")
        for r in runs:
            profile(r, args.profile, device)
        print(f"profile: {args.profile}")
    return results


if __name__ == "__main__":
    try:
        main()
    except SystemExit as e:                      # a refusal: its one line, exit status 2 (as train_gpt.py)
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            sys.exit(2)
        raise
