"""Benchmark: train_mnist_ffn.py's batched trainer against a plain per-trial PyTorch loop, and
what each of its speed tricks is worth.

Trains the study's grid (--models, default relu,geglu, x hidden 2,4,8,16 x batch sizes 8,64 x 4
learning rates) for --seeds seeds (default 1: 64 trials), both ways, in one run, and prints both wall times,
trials per second and the ratio. The plain loop is what one would write without batching:
for each trial, its own weights, torch.optim.Adam, and one forward/backward per batch, with the
same models, init and data order as the script. The batched side runs as the script runs it:
its batch-size groups at the same time on --workers threads (default 2, one per core of a
2-core CPU), with subnormal floats flushed to zero for both sides (the plain loop measured the
same either way: its time goes to per-op overhead, not arithmetic).

--tricks also times the batched side once without each of its speed tricks, one at a time, in
the same run (docs/benchmarks.md's table of tricks): a trick is worth keeping only if removing it
makes training slower.

    python bench/bench_mnist.py                      # one seed, full epoch (about a minute on 2 cores)
    python bench/bench_mnist.py --tricks --repeat 3  # and what each trick is worth, fastest of 3
    python bench/bench_mnist.py --quick              # a tenth of the training images
    python bench/bench_mnist.py --seeds 8 --device cuda
    python bench/bench_mnist.py --models relu,swiglu --quick  # any models of MODELS

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


def time_batched(trials, batch_sizes, data, workers, device):
    sync(device)
    start = time.perf_counter()
    results = {}
    for _, group_results in M.train_groups([[t for t in trials if t.batch_size == bs] for bs in batch_sizes],
                                           data, workers):
        results.update(group_results)
    sync(device)
    return time.perf_counter() - start, results


class FlagParser(argparse.ArgumentParser):
    def error(self, message):  # argparse's usage + error lines, as one line (main's `error: ...`)
        raise M.UsageError(f"{message} (python bench/bench_mnist.py --help lists the flags)")


def at_least_1(text):
    return M.parse_int(1, text)


def main():
    """Bad input (a flag, the device, the data folder): one line `error: ...`, exit status 2,
    before anything is timed."""
    try:
        args, device, data = setup()
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
                        help="batch-size groups the batched trainer trains at once (as train_mnist_ffn.py)")
    parser.add_argument("--skip-plain", action="store_true", help="time only the batched trainer")
    parser.add_argument("--tricks", action="store_true", help="also time the batched trainer without each trick")
    parser.add_argument("--repeat", type=at_least_1, default=1,
                        help="time each batched variant this many times, interleaved, and keep the fastest "
                             "(a shared machine's slow spells hit one run, not all)")
    args = parser.parse_args()
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
    data = M.mnist_tensors(M.load_mnist(folder, downloaded=folder == M.DEFAULT_DATA_DIR), device,
                           4800 if args.quick else 0)
    return args, device, data


def bench(args, device, data):
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as train_mnist_ffn.py does (the plain loop measured the same either way)
    hp = M.Hparams(models=args.models, seeds=args.seeds)
    trials = M.grid(hp)
    print(f"{len(trials)} trials ({args.seeds} seed(s) of the grid of {','.join(hp.models)}), {len(data['train_y'])} training "
          f"images, device {device}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"batched with {args.workers} worker(s)")

    # warm-up (allocator, kernels) on a tiny slice, not timed
    tiny = dict(data, train_x=data["train_x"][:64], train_y=data["train_y"][:64])
    M.train_group([t for t in trials if t.batch_size == 8][:4], tiny)

    variants = [("as the script trains", contextlib.nullcontext, None)] + (TRICKS if args.tricks else [])
    seconds, results = {}, {}
    for _ in range(args.repeat):
        for what, without, workers in variants:
            with without():
                s, results[what] = time_batched(trials, hp.batch_sizes, data, workers or args.workers, device)
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
