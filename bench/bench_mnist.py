"""Benchmark: train_mnist_ffn.py's batched trainer against a plain per-trial PyTorch loop, and
what each of its speed tricks is worth.

Trains the study's grid (--models, default relu,geglu, x hidden 2,4,8,16 x batch sizes 8,64 x 4
learning rates) for --seeds seeds (default 1: 64 trials), both ways, in one run, and prints both wall times,
trials per second and the ratio. The plain loop is what one would write without batching:
for each trial, its own weights, torch.optim.Adam, and one forward/backward per batch, with the
same models, init and data order as the script. The batched side runs as the script runs it:
its batch-size groups in chunks of SEED_CHUNK seeds, --workers chunks at the same time (default
2, one per core of a 2-core CPU; one at a time on a GPU), with subnormal floats flushed to zero
for both sides (the plain loop measured the same either way: its time goes to per-op overhead,
not arithmetic).

--phases (default with --device cuda) splits the study's time into setup, capture, training and
evaluation, the steps replayed as CUDA graphs against run eagerly, side by side, and says how
many trials come out identical both ways, and with graphs twice (the GPU's own run-to-run
spread). --chunks times
the script's chunks of seeds (each chunk's lines logged as it ends) against whole batch-size
groups, side by side. --cold instead runs the script itself (the study of --models and --seeds)
--repeat times, each in a fresh process, and says where its first run's seconds went (threads
sampled every 10 ms: the script's line, and the import or function under way), the first-use
costs that the warmed-up timings leave out; with --against FILE, interleaved with another version
of the script (a change's before and after, in one run). bench/gpu_check_mnist.sh runs the GPU figures in one
command.

--tricks also times the batched side once without each of its speed tricks, one at a time, in
the same run (docs/benchmarks.md's table of tricks): a trick is worth keeping only if removing it
makes training slower.

    python bench/bench_mnist.py                      # one seed, full epoch (about a minute on 2 cores)
    python bench/bench_mnist.py --tricks --repeat 3  # and what each trick is worth, fastest of 3
    python bench/bench_mnist.py --quick              # a tenth of the training images
    python bench/bench_mnist.py --seeds 8 --device cuda --skip-plain
    python bench/bench_mnist.py --seeds 8 --chunks --skip-plain --repeat 2  # chunks vs whole groups
    python bench/bench_mnist.py --models relu,swiglu --quick  # any models of MODELS
    python bench/bench_mnist.py --cold --seeds 8 --device cuda  # the script's own run, and where it goes
    python bench/bench_mnist.py --cold --repeat 5 --against /tmp/old.py  # and against another version

Bad input (a flag, --device cuda without a GPU, a missing or damaged data folder) gets one line
`error: ...` and exit status 2, before anything is timed.
"""
import argparse
import contextlib
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import train_mnist_ffn as M  # noqa: E402


def plain_trial(t, data):
    """One trial the ordinary way: its own tensors, torch.optim.Adam, a loop over batches."""
    w = {name: v.to(data["train_x"].device).requires_grad_() for name, v in M.init_weights(t.model, t.hidden, t.seed).items()}
    hidden_fn, inputs = M.MODELS[t.model]
    forward = lambda x: hidden_fn({name: x @ w[name] for name in inputs}) @ w["w_out"]
    opt = torch.optim.Adam(w.values(), lr=t.lr)
    n = len(data["train_y"])
    orders = M.data_orders(t.seed, n, t.epochs).to(data["train_x"].device)
    for epoch in range(t.epochs):
        for i in range(0, n, t.batch_size):
            index = orders[epoch, i:i + t.batch_size]
            loss = F.cross_entropy(forward(data["train_x"][index]), data["train_y"][index])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():
        return [(forward(data[s + "_x"]).argmax(-1) == data[s + "_y"]).float().mean().item()
                for s in ("val", "test")]


# ------------------------------------------------------------------------------------------
# The batched trainer without one trick at a time: each replaces one piece of the script by the
# plain way of doing the same thing (the numbers stay the same up to float rounding).

def autograd_readout_grads(layout, h, y, w_out):
    """The read-out and the loss differentiated by autograd instead of by hand."""
    with torch.enable_grad():
        h, w_out = h.detach().requires_grad_(), w_out.detach().requires_grad_()
        logits = layout.logits(h, w_out)
        loss = (torch.logsumexp(logits, 3) - (logits * y).sum(3)).mean(2).sum()
        grad_h, grad_out = torch.autograd.grad(loss, [h, w_out])
    return logits.detach(), grad_h, grad_out


@contextlib.contextmanager
def replaced(name, value):
    saved = getattr(M, name)
    setattr(M, name, value)
    try:
        yield
    finally:
        setattr(M, name, saved)


@contextlib.contextmanager
def denormals_kept():
    torch.set_flush_denormal(False)
    try:
        yield
    finally:
        torch.set_flush_denormal(True)


TRICKS = [  # (what the script does, how the bench takes it away, workers)
    ("two batch-size groups at once, one thread each (--workers 2)", contextlib.nullcontext, 1),
    ("subnormal floats flushed to zero", denormals_kept, None),
    ("read-out and loss differentiated by hand", lambda: replaced("readout_grads", autograd_readout_grads), None),
    ("Adam's fused kernel (one pass over the weights)", lambda: replaced("FUSED_ADAM", False), None),
]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_units(units, data, workers, device):
    sync(device)
    start = time.perf_counter()
    results = {}
    for _, unit_results in M.train_groups(units, data, workers):
        results.update(unit_results)
    sync(device)
    return time.perf_counter() - start, results


class FlagParser(argparse.ArgumentParser):
    def error(self, message):  # argparse's usage + error lines, as one line (main's `error: ...`)
        raise M.UsageError(f"{message} (python bench/bench_mnist.py --help lists the flags)")


def at_least_1(text):
    return M.parse_int(1, text)


def phases(trials, batch_sizes, data, device):
    """The study's wall time split into setup, capture, training and evaluation, with the steps
    replayed as CUDA graphs and run eagerly, side by side (each group after the other, as the
    script does on a GPU); and whether the two give the same numbers."""
    rows, results = {}, {}
    for what, graphs in (("CUDA graphs", True), ("eager", False), ("graphs again", True)):
        clock, results[what] = {}, {}
        sync(device)
        start = time.perf_counter()
        for bs in batch_sizes:
            group_clock = {}
            results[what].update(M.train_group([t for t in trials if t.batch_size == bs], data, graphs=graphs,
                                               clock=group_clock))
            for phase, s in group_clock.items():
                clock[phase] = clock.get(phase, 0.0) + s
            clock[f"train bs{bs}"] = group_clock["train"]
        sync(device)
        clock["total"] = time.perf_counter() - start
        rows[what] = clock
    n = len(data["train_y"])
    print(f"the study's training and evaluation ({len(trials)} trials), seconds:")
    print(f"  {'':<14}" + "".join(f"{what:>13}" for what in rows))
    for phase in ["setup", "capture", "train", "eval", "total"] + [f"train bs{bs}" for bs in batch_sizes]:
        print(f"  {phase:<14}" + "".join(f"{rows[what].get(phase, 0.0):13.3f}" for what in rows))
    for bs in batch_sizes:
        steps = math.ceil(n / bs) * trials[0].epochs
        print(f"  {'ms/step bs' + str(bs):<14}" + "".join(f"{1000 * rows[what][f'train bs{bs}'] / steps:13.3f}"
                                                           for what in rows))
    # graphs against graphs: how far the same code differs from itself run to run (the GPU's
    # nondeterministic kernels), what graphs against eager steps must be read against
    for x, y in (("CUDA graphs", "eager"), ("CUDA graphs", "graphs again")):
        a, b = results[x], results[y]
        diff = max((abs(a[t][k] - b[t][k]) for t in trials for k in ("train_loss", "val_acc", "test_acc")
                    if a[t][k] == a[t][k] and b[t][k] == b[t][k]), default=0.0)
        same = sum(all(a[t][k] == b[t][k] or a[t][k] != a[t][k] and b[t][k] != b[t][k]
                       for k in ("train_loss", "val_acc", "test_acc")) for t in trials)
        print(f"  {x} vs {y}: {same} of {len(trials)} trials identical, largest difference {diff:.2e} "
              f"(train_loss, accuracies)")


def startup(folder, device, downloaded):
    """What passes before the first step: loading and checking the data, starting CUDA,
    nvidia-smi for the log's header (the script overlaps the last two with the first).
    Returns the loaded arrays, which the bench then trains on."""
    start = time.perf_counter()
    arrays = M.load_mnist(folder, downloaded=downloaded)
    loaded = time.perf_counter()
    M.mnist_tensors(arrays, torch.device("cpu"))
    tensors = time.perf_counter()
    smi = M.start_nvidia_smi()
    M.environment(smi)
    smi_done = time.perf_counter()
    print(f"startup: data read+md5+parse {loaded - start:.3f} s, split+scale {tensors - loaded:.3f} s, "
          f"nvidia-smi {smi_done - tensors:.3f} s" + ("" if device.type == "cuda" else " (CPU: no CUDA start)"))
    return arrays


# --cold: the script itself, in a fresh process (what a user's command pays once: imports, CUDA's
# first kernels, the first optimiser), with a sampler that notes every 10 ms what each thread runs.
COLD_CHILD = r"""
import collections, json, os, sys, threading, time
t0 = time.perf_counter()
sys.path.insert(0, REPO)
import train_mnist_ffn as M
imported = time.perf_counter()
samples, done = collections.Counter(), threading.Event()
IDLE = {"wait", "_wait_for_tstate_lock", "select", "get", "acquire", "_worker"}

def where(frame):
    # the script's innermost line, and the top-level import under way (if any) or the innermost function
    line, importing, inner = None, None, f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_code.co_name}"
    while frame is not None:
        code = frame.f_code
        if line is None and code.co_filename == M.__file__:
            line = f"train_mnist_ffn.py:{frame.f_lineno} {code.co_name}"
        if code.co_name == "_find_and_load" and "importlib" in code.co_filename:
            importing = frame.f_locals.get("name")
        frame = frame.f_back
    return line, f"import {importing}" if importing else inner

def sample():
    names = {}
    while not done.wait(0.01):
        for tid, frame in sys._current_frames().items():
            if tid == threading.get_ident():
                continue
            line, what = where(frame)
            if line is None and frame.f_code.co_name in IDLE:
                continue                     # a pool's thread with nothing to do
            if tid not in names:
                names[tid] = next((t.name for t in threading.enumerate() if t.ident == tid), str(tid))
            samples[names[tid], line or "(outside the script)", what] += 1

threading.Thread(target=sample, daemon=True).start()
started = time.perf_counter()
M.main(ARGV)
ended = time.perf_counter()
done.set()
print("COLD " + json.dumps(dict(import_s=imported - t0, main_s=ended - started, total_s=ended - t0,
                                top=[[*key, n / 100] for key, n in samples.most_common(16)])))
"""


def cold(args, folder, device):
    """The study as the script runs it, --repeat times, each run a fresh process: the seconds to
    import it (torch), of main() (data, CUDA, the first optimiser, training, evaluation: to the last
    log line) and, for the first run, where each of main's threads spent them (10 ms samples; a
    thread that waits, for a subprocess, another thread or the GPU, counts as waiting on that
    line): what the warmed-up timings above leave out. --against FILE (another version of
    train_mnist_ffn.py, say `git show HEAD~1:train_mnist_ffn.py > /tmp/old.py`) runs it too,
    interleaved with this one, and prints both medians and their ratio: a change's before/after."""
    import json
    import shutil
    import statistics
    import subprocess
    import tempfile
    argv = ["--models", ",".join(args.models), "--seeds", str(args.seeds), "--device", device.type,
            "--data-dir", str(folder), "--threads", str(args.threads), "--workers", str(args.workers)]
    argv += ["--train-limit", "4800"] if args.quick else []
    print(f"cold: python train_mnist_ffn.py {' '.join(argv)}, each run a fresh process", flush=True)
    with tempfile.TemporaryDirectory() as other:
        versions = {"this": REPO}
        if args.against:  # the other version, under the script's name, in a folder of its own
            shutil.copy(args.against, Path(other) / "train_mnist_ffn.py")
            versions[f"against {args.against}"] = Path(other)
        runs = {name: [] for name in versions}
        for i in range(args.repeat):
            for name, repo in versions.items():
                with tempfile.TemporaryDirectory() as logs:
                    code = COLD_CHILD.replace("REPO", repr(str(repo))).replace("ARGV", repr(argv + ["--log-dir", logs]))
                    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
                line = next((x for x in out.stdout.splitlines() if x.startswith("COLD ")), None)
                if line is None:
                    raise M.UsageError(f"--cold: the study ({name}) failed: "
                                       f"{(out.stderr or out.stdout).strip().splitlines()[-1:]}")
                runs[name].append(json.loads(line[5:]))
                r = runs[name][-1]
                print(f"  run {i + 1} ({name}): import {r['import_s']:6.2f} s  main {r['main_s']:6.2f} s  "
                      f"total {r['total_s']:6.2f} s", flush=True)
    for name, its in runs.items():
        print(f"  where main()'s threads spent the first run ({name}), seconds of 10 ms samples "
              f"(a thread waiting counts too):")
        for thread, line, what, s in its[0]["top"]:
            print(f"    {s:6.2f}  {thread:<22} {line:<40} {what}")
    if args.against:
        mine, theirs = runs.values()
        print(f"  medians of {args.repeat} interleaved runs each:")
        for part in ("main_s", "total_s"):
            a, b = statistics.median(r[part] for r in mine), statistics.median(r[part] for r in theirs)
            print(f"    {part[:-2]:<6} this {a:6.2f} s  against {b:6.2f} s  this/against {a / b:.3f}")


def main():
    """Bad input (a flag, the device, the data folder): one line `error: ...`, exit status 2,
    before anything is timed."""
    try:
        args, device, folder = setup()
        if args.cold:
            return cold(args, folder, device)
        data = load(args, device, folder)
    except M.UsageError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2)
    bench(args, device, data)


def setup():
    parser = FlagParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=at_least_1, default=1, help="seeds of the grid (64 trials each for the default models)")
    parser.add_argument("--models", type=lambda s: M.parse_list(str, s), default=M.Hparams.models,
                        help=f"keys of MODELS in train_mnist_ffn.py (default {','.join(M.Hparams.models)}, the study's)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--quick", action="store_true", help="train on 4,800 of the 48,000 images")
    parser.add_argument("--data-dir", default=None,
                        help="MNIST folder (default: ../shared/data/mnist if present, else data/mnist)")
    parser.add_argument("--threads", type=at_least_1, default=M.Hparams.threads, help="torch CPU threads (both ways)")
    parser.add_argument("--workers", type=at_least_1, default=M.Hparams.workers,
                        help="chunks the batched trainer trains at once on the CPU (as train_mnist_ffn.py)")
    parser.add_argument("--skip-plain", action="store_true", help="time only the batched trainer")
    parser.add_argument("--tricks", action="store_true", help="also time the batched trainer without each trick")
    parser.add_argument("--repeat", type=at_least_1, default=1,
                        help="time each batched variant this many times, interleaved, and keep the fastest "
                             "(a shared machine's slow spells hit one run, not all)")
    parser.add_argument("--phases", action="store_true",
                        help="also split the study's time into setup, capture, training and evaluation, "
                             "CUDA graphs against eager steps (default with --device cuda)")
    parser.add_argument("--chunks", action="store_true",
                        help="also time training whole batch-size groups against the script's chunks of "
                             "SEED_CHUNK seeds (what a kill can lose), side by side")
    parser.add_argument("--seed-chunk", type=at_least_1, default=None,
                        help="seeds a chunk for --chunks (default: the script's SEED_CHUNK for the device)")
    parser.add_argument("--cold", action="store_true",
                        help="only run the script itself, --repeat times, each in a fresh process (imports and the "
                             "first use of CUDA and Adam included): its seconds and where they go")
    parser.add_argument("--against", default=None, metavar="FILE",
                        help="with --cold: another version of train_mnist_ffn.py to run too, interleaved, "
                             "and compare (medians and their ratio)")
    args = parser.parse_args()
    if args.against and not args.cold:
        raise M.UsageError("--against compares another version of the script's own run: it needs --cold")
    if args.against and not Path(args.against).is_file():
        raise M.UsageError(f"--against {args.against}: no such file; pass a copy of train_mnist_ffn.py "
                           f"(git show HEAD~1:train_mnist_ffn.py > /tmp/old.py)")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise M.UsageError("--device cuda but torch sees no CUDA GPU; use --device cpu")
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    shared = REPO.parent / "shared" / "data" / "mnist"
    folder = Path(args.data_dir) if args.data_dir else (shared if shared.is_dir() else M.DEFAULT_DATA_DIR)
    if not folder.is_dir() and folder != M.DEFAULT_DATA_DIR:
        raise M.UsageError(f"--data-dir {folder}: no such folder; pass the folder of the four MNIST files")
    if folder == M.DEFAULT_DATA_DIR:
        M.download_mnist(folder)
    return args, device, folder


def load(args, device, folder):
    """The data on the device, after the startup's parts are timed (CUDA first, as the script)."""
    if device.type == "cuda":
        start_cuda = time.perf_counter()
        free = M.start_cuda(device)
        print(f"startup: CUDA context and cuBLAS {time.perf_counter() - start_cuda:.3f} s "
              f"({free / 2**30:.1f} GiB free)")
    arrays = startup(folder, device, downloaded=folder == M.DEFAULT_DATA_DIR)
    return M.mnist_tensors(arrays, device, 4800 if args.quick else 0)


def bench(args, device, data):
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as train_mnist_ffn.py does (the plain loop measured the same either way)
    workers = args.workers if device.type == "cpu" else 1  # as the script: one graph capture at a time
    hp = M.Hparams(models=args.models, seeds=args.seeds)
    trials = M.grid(hp)
    print(f"{len(trials)} trials ({args.seeds} seed(s) of the grid of {','.join(hp.models)}), {len(data['train_y'])} training "
          f"images, device {device}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"batched with {workers} worker(s)")

    # warm-up (allocator, kernels) on a tiny slice, not timed
    tiny = dict(data, train_x=data["train_x"][:64], train_y=data["train_y"][:64])
    M.train_group([t for t in trials if t.batch_size == 8][:4], tiny)

    script_units = M.seed_chunks(trials, hp.batch_sizes, args.seeds, min(args.seeds, M.SEED_CHUNK[device.type]))
    variants = [("as the script trains", contextlib.nullcontext, None)] + (TRICKS if args.tricks else [])
    seconds, results = {}, {}
    for _ in range(args.repeat):
        for what, without, w in variants:
            with without():
                s, results[what] = time_units(script_units, data, min(w or workers, workers), device)
            seconds[what] = min(seconds.get(what, math.inf), s)
    batched_s, batched = seconds[variants[0][0]], results[variants[0][0]]
    print(f"batched:  {batched_s:8.2f} s  {len(trials) / batched_s:8.2f} trials/s"
          + (f"  (fastest of {args.repeat})" if args.repeat > 1 else ""))
    if args.tricks:
        print("each trick: the batched time without it, and so what it saves")
        for what, _, _ in TRICKS:
            drift = max(abs(results[what][t]["test_acc"] - batched[t]["test_acc"]) for t in trials if t.lr <= 0.01)
            print(f"  {what:<60} without: {seconds[what]:6.2f} s  {seconds[what] / batched_s:5.2f}x  "
                  f"(test accuracy moved by at most {drift:.4f} at lr <= 0.01)")
    if args.phases or device.type == "cuda":
        phases(trials, hp.batch_sizes, data, device)
    if args.chunks:
        chunk = min(args.seeds, args.seed_chunk or M.SEED_CHUNK[device.type])
        ways = {"whole groups": M.seed_chunks(trials, hp.batch_sizes, args.seeds, args.seeds),
                f"chunks of {chunk} seed(s)": M.seed_chunks(trials, hp.batch_sizes, args.seeds, chunk)}
        best = {}
        for _ in range(args.repeat):
            for what, units in ways.items():
                best[what] = min(best.get(what, math.inf), time_units(units, data, workers, device)[0])
        print(f"training in chunks (lines logged as each ends) against whole groups, {workers} worker(s)"
              + (f", fastest of {args.repeat}" if args.repeat > 1 else "") + ":")
        for what, s in best.items():
            print(f"  {what:<22} {s:8.2f} s")
        (whole, s_whole), (chunked, s_chunked) = best.items()
        print(f"  chunked / whole: {s_chunked / s_whole:.3f}")
    if args.skip_plain:
        return

    start = time.perf_counter()
    plain = {t: plain_trial(t, data) for t in trials}
    sync(device)
    plain_s = time.perf_counter() - start
    print(f"plain:    {plain_s:8.2f} s  {len(trials) / plain_s:8.2f} trials/s")
    print(f"ratio:    {plain_s / batched_s:8.1f}x faster batched")
    # the two agree up to float rounding, which chaotic (high-lr) training amplifies
    for name, keep in (("lr <= 0.01", lambda t: t.lr <= 0.01), ("all", lambda t: True)):
        diffs = sorted(abs(plain[t][1] - batched[t]["test_acc"]) for t in trials if keep(t))
        print(f"test accuracy, batched vs plain, {name}: median difference {diffs[len(diffs) // 2]:.5f}, "
              f"largest {diffs[-1]:.5f}")


if __name__ == "__main__":
    main()
