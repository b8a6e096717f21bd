"""train_mnist_ffn.py: a family of MLP hidden layers on MNIST, every trial of the grid trained at once.

The study: a one-hidden-layer network 784 -> h -> 10 without biases, its hidden layer one of
MODELS: plain (relu, gelu, swish) or gated (geglu, reglu, swiglu, bilinear; Shazeer 2020); by
default ReLU, relu(x W_in), against GeGLU, (x W_in) * gelu(x W_gate); for h in {2,4,8,16},
trained for one epoch with Adam at batch sizes {8,64} and learning rates {1e-1,1e-2,1e-3,1e-4},
for 8 seeds: 512 trials, one `trial:` line each in logs/mnist-<UTC time>-<id>.txt.
`python analyze.py LOG` turns that pool into the random-search comparison.

    python train_mnist_ffn.py                                  # the whole study (downloads MNIST)
    python train_mnist_ffn.py --data-dir ../shared/data/mnist  # use a folder of the four files
    python train_mnist_ffn.py --resume logs/mnist-....txt      # finish a killed run

Measured (docs/benchmarks.md has every figure with its machine and date): the full default study,
512 trials on real MNIST, on 2026-12-04 in 12.1-12.3 s from command start to the last log line on
one NVIDIA H200 (torch 2.11 + CUDA 13; its training, as CUDA graphs, 1.8 s, 8.4x faster than
eager steps) and in 42.0 s on a shared 2-core AMD EPYC VM (torch 2.13.0 CPU). bench/bench_mnist.py,
one seed of the grid (64 trials) on that VM: batched about 10x faster than a plain per-trial loop
(median of five runs 10.7x; 14.3x on a quiet hour, 4.05 s against 57.9 s). A step of one seed's
32 batch-8 trials takes about 0.66 ms: the two matmuls 0.14 ms, Adam over their 280k weights
0.15 ms, the models' 8 calls and their autograd backward 0.25 ms, the read-out and the loss
0.10 ms. At 8 seeds (3.9 ms a step) memory traffic, not per-op overhead, bounds the step. The
study's result on logs/reference/mnist-cpu.txt (the CPU run of 2026-12-04): GeGLU better than ReLU at equal
hidden size in all 12 comparisons, ReLU better at equal parameter count in all 9 (README).

How the trials are batched. Trials with the same batch size (and epochs) form a group; a group
trains in chunks of seeds (4 seeds a chunk on the CPU, 8 on a GPU; the log's seed_chunk:), each
chunk one computation whose trial lines reach the log as it ends, so a kill loses at most the
chunks in training (about 12 s of work each on 2 quiet CPU cores, for batch size 8). On the CPU the chunks train two at a
time, one thread each (--workers); on a GPU one at a time, each step of a chunk replayed from a
CUDA graph of STEPS_PER_GRAPH steps (the GPU's steps are a few dozen tiny kernels each: launching
them one by one, not arithmetic, was the time), the CPU running the very same step eagerly.
Inside a group the trials sit in blocks, one per (model, hidden size), each trained at every
learning rate and seed: the input matrices of every trial (W_in, and W_gate for a gated model) are the
columns of one matrix W_x per seed, so one batched matmul computes every projection x @ W; each
block's model function gets each projection as its own tensor [seeds, learning rates, batch, h],
one trial's [batch, h] on the last two axes as it would get alone, so whatever it does over the
hidden units or the batch (a norm, a softmax, batch statistics), even writing its inputs in
place, stays within each trial; and the read-out sums each trial's own hidden units into its own
10 logits (index_add).
The loss is the sum of the trials' mean cross-entropies, so each trial's gradient is exactly
its own, and a trial that diverges to inf/NaN cannot touch another: nothing ever adds one
trial's numbers to another's. Autograd runs only through the model functions (the code one
edits); the matmuls, the read-out and the loss are differentiated by hand. One fused Adam
step at lr 1 (torch.optim.adam.adam, what torch.optim.Adam(fused=True).step runs) trains every
trial at its own learning rate: each weight is kept divided by its trial's lr (train_group says
why that is exactly Adam at lr). Each trial therefore computes what it computes alone, up to
float rounding (the tests check every entry of MODELS, in float64, against training it alone and
against a plain loop).

Rules that make every trial reproducible and the comparison paired:
- split: the 60,000 training images are split 48,000 train / 12,000 validation by
  torch.randperm(60000, generator=torch.Generator().manual_seed(42)): the first 48,000 of
  that permutation train, the rest validate. Test accuracy is on the 10,000 test images.
- data order: a function of the seed only. Epoch e of seed s visits the training images in the
  order of the (e+1)-th torch.randperm(n_train) drawn from torch.Generator().manual_seed(s),
  in consecutive batches (the last one smaller if batch size does not divide n_train). So
  ReLU and GeGLU trials (every h, every lr) of one seed see the same images in the same
  order, and batch sizes 8 and 64 of one seed see the same order cut differently.
- init: a function of (model, hidden, seed): generator
  torch.Generator().manual_seed(zlib.crc32(f"{model}-h{hidden}-seed{seed}".encode())), then
  each input matrix (W_in, then W_gate for a gated model) as torch.randn(784, h) * 0.02 and W_out as
  torch.randn(h, 10) * 0.02, in that order. Trials differing only in lr or batch size start
  from the same weights.
- train_loss: mean cross-entropy over the last 10% of the batches of the final epoch.
- val_acc, test_acc: the validation and test images go through the models EVAL_BATCH (1000) at a
  time (only a model that uses batch statistics can tell).
- time: each chunk's wall clock (training + evaluation) is shared among its trials in
  proportion to their parameter counts (their share of the arithmetic). Chunks that train at
  the same time (--workers) overlap, so the times of a run add up to more than its wall clock.
- files: MNIST is downloaded into data/mnist/ next to this script; logs go to --log-dir
  (default logs/, relative to the current directory). --resume LOG needs nothing else: the grid,
  the data folder (data_dir:), --no-checksum (data:unverified) and the chunking (seed_chunk:)
  come from the log's config: line, and a flag given again that contradicts them is refused. It
  retrains any chunk that has a trial missing from the log, whole, and writes only the missing
  lines: they are then bit-for-bit the lines of an uninterrupted run (on the CPU).
- sizes: a grid whose estimated memory exceeds the host's available RAM (or the GPU's free
  memory), or a batch size above the training images, is refused before anything is written.
"""
import argparse
import functools
import gzip
import hashlib
import math
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.adam import adam  # the function torch.optim.Adam.step calls (train_group says why)


# ------------------------------------------------------------------------------------------
# Hyperparameters: the defaults live here, and every field is also a command-line flag
# (--batch-sizes 8,64 etc.; lists are comma-separated).

def flag(default, help, **extra):
    return field(default=default, metadata={"help": help, **extra})


@dataclass(frozen=True)
class Hparams:
    models: tuple = flag(("relu", "geglu"), "models to train (keys of MODELS in this file)")
    hidden: tuple = flag((2, 4, 8, 16), "hidden sizes h")
    batch_sizes: tuple = flag((8, 64), "batch sizes; trials of one batch size train together")
    lrs: tuple = flag((0.1, 0.01, 0.001, 0.0001), "Adam learning rates")
    seeds: int = flag(8, "number of seeds: trains seeds 0..N-1")
    epochs: int = flag(1, "passes over the 48,000 training images")
    param_match: bool = flag(False, "also train every other model at the hidden size whose parameter "
                                    "count is closest to relu's (BASELINE in this file) at each --hidden "
                                    "size: about h/2 for a gated model, which reads two projections")
    # grid=False: a field that says where and how a run runs, not what it computes; it is not in
    # the config: record, and --resume takes it from the command line. Every other field is.
    device: str = flag("auto", "auto (cuda when available), cpu or cuda",
                       choices=("auto", "cpu", "cuda"), grid=False)
    threads: int = flag(1, "CPU threads for torch. One is best on a small or shared CPU: the "
                           "grid's per-step ops are small, and on a busy machine intra-op threads "
                           "wait on each other (25x slower measured on 2 shared cores)", grid=False)
    workers: int = flag(2, "groups (one per batch size) trained at the same time, each in its own "
                           "thread with --threads intra-op threads; 2 uses both cores of a 2-core CPU",
                     grid=False)
    log_dir: str = flag("logs", "folder for the log file", grid=False)
    data_dir: str = flag("", "folder with the four MNIST files (.gz or raw); default: download "
                             "into data/mnist/ next to this script", grid=False)
    resume: str = flag("", "continue this log: add the trial lines missing from it", grid=False)
    train_limit: int = flag(0, "train on only the first N of the 48,000 training images "
                               "(0 = all; for tests and quick looks)", minimum=0)
    no_checksum: bool = flag(False, "accept --data-dir files in MNIST's format and sizes whose checksums "
                                    "are not MNIST's (Fashion-MNIST, a synthetic set); logged as data:unverified")


def grid_fields():
    """The fields of Hparams that shape the results: each is a key of the config: record, and
    --resume takes them from there (a function, not a constant: a test extends Hparams)."""
    return [f for f in fields(Hparams) if f.metadata.get("grid", True)]


SPLIT_SEED = 42       # the 48,000 / 12,000 train / validation split
INIT_STD = 0.02       # every weight is N(0, 1) * 0.02
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
FUSED_ADAM = True     # torch.optim.Adam's fused kernel: one pass over the weights (bench --tricks)
N_TRAIN, N_VAL = 48_000, 12_000
EVAL_BATCH = 1000     # validation and test images go through the models 1000 at a time
STEPS_PER_GRAPH = 25  # training steps captured in one CUDA graph (a replay launches them all at once)
SEED_CHUNK = {"cpu": 4, "cuda": 8}  # seeds of a batch size trained (and logged) together; run() says why


class UsageError(Exception):
    """A problem with the input (a flag, a file, the data): main prints it as one line
    `error: ...` and exits with status 2, before anything is written where it can be."""


# ------------------------------------------------------------------------------------------
# The models. A trial is one FFN 784 -> h -> 10 without biases: logits = hidden(x) @ W_out.
# Change the MLP here. A hidden layer is written as a function of its input projections,
# xw[name] = x @ W_name for each 784 x h input matrix it names in MODELS (for one trial alone:
# hidden = ffn_geglu({"w_in": x @ w_in, "w_gate": x @ w_gate})). The trainer computes the
# projections of every trial of a group in one matmul and calls each function once per hidden
# size: each tensor it gets and returns is [..., batch, h], one trial's batch and units on the
# last two axes as for one trial alone and other trials on leading axes, so anything over the
# units or the batch (axis -2) is per trial. Its inputs are its own: it may write them in place.

# The family of Shazeer (2020), "GLU Variants Improve Transformer": plain FFNs act on one
# projection; the gated ones (GLU variants) multiply the projection w_in by an activation of a
# second one, w_gate, so at the same h they have about twice the input weights.

def ffn_relu(xw):
    return torch.relu(xw["w_in"])


def ffn_geglu(xw):
    return xw["w_in"] * F.gelu(xw["w_gate"])  # exact (erf) GELU, as nn.GELU()


def ffn_reglu(xw):
    return xw["w_in"] * torch.relu(xw["w_gate"])


def ffn_swiglu(xw):
    return xw["w_in"] * F.silu(xw["w_gate"])  # Swish with beta 1: x * sigmoid(x)


def ffn_bilinear(xw):
    return xw["w_in"] * xw["w_gate"]  # the gate without an activation


def ffn_gelu(xw):
    return F.gelu(xw["w_in"])  # exact (erf) GELU, as nn.GELU()


def ffn_swish(xw):
    return F.silu(xw["w_in"])  # Swish with beta 1: x * sigmoid(x)


# name -> (hidden-layer function, the 784 x h input matrices it uses). W_out (h x 10) is common.
# The parameter count, the init, --param-match's sizes and the config: record follow from the
# entry; the tests check every entry against a plain loop.
MODELS = {
    "relu": (ffn_relu, ("w_in",)),
    "geglu": (ffn_geglu, ("w_in", "w_gate")),
    "reglu": (ffn_reglu, ("w_in", "w_gate")),
    "swiglu": (ffn_swiglu, ("w_in", "w_gate")),
    "bilinear": (ffn_bilinear, ("w_in", "w_gate")),
    "gelu": (ffn_gelu, ("w_in",)),
    "swish": (ffn_swish, ("w_in",)),
}
BASELINE = "relu"  # --param-match sizes every other model to this one's parameter counts


def n_params(model, hidden):
    """Each 784 x h input matrix the model names, and W_out (h x 10): 794h plain, 1578h gated."""
    return (784 * len(MODELS[model][1]) + 10) * hidden


def matched_hidden(baseline_hidden, model):
    """The hidden size of `model` whose parameter count is closest to BASELINE's at
    baseline_hidden (ties -> the smaller size, at least 1): relu 2,4,8,16 -> a gated model's
    1,2,4,8, a plain one's 2,4,8,16."""
    target, per_unit = n_params(BASELINE, baseline_hidden), n_params(model, 1)
    low = max(1, target // per_unit)
    return min((low, low + 1), key=lambda h: (abs(h * per_unit - target), h))


def param_matched(hp):
    """{model: its parameter-matched size at each --hidden size, in that order} for every model of
    the run but BASELINE ({} without BASELINE). The config: record names them in every run, so
    analyze.py can compare at equal parameter count whatever pairs the grid holds (relu 4 and
    geglu 2 in the default grid); --param-match also trains the sizes the grid lacks."""
    if BASELINE not in hp.models:
        return {}
    return {model: [matched_hidden(h, model) for h in hp.hidden] for model in hp.models if model != BASELINE}


def init_weights(model, hidden, seed):
    """The initial weights of one trial, on the CPU: a function of (model, hidden, seed) only."""
    g = torch.Generator().manual_seed(zlib.crc32(f"{model}-h{hidden}-seed{seed}".encode()))
    w = {name: torch.randn(784, hidden, generator=g) * INIT_STD for name in MODELS[model][1]}
    w["w_out"] = torch.randn(hidden, 10, generator=g) * INIT_STD
    return w


def data_orders(seed, n_train, epochs):
    """The order in which one seed visits the training images: [epochs, n_train] indices."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(n_train, generator=g) for _ in range(epochs)])


# ------------------------------------------------------------------------------------------
# Data: the four IDX files, downloaded from the first mirror that serves a good copy.

MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
]
MNIST_FILES = {  # name -> (bytes after decompression, md5 of those bytes)
    "train-images-idx3-ubyte": (47040016, "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels-idx1-ubyte": (60008, "a25bea736e30d166cdddb491f175f624"),
    "t10k-images-idx3-ubyte": (7840016, "2646ac647ad5339dbf082846283269ea"),
    "t10k-labels-idx1-ubyte": (10008, "27ae3e4e09519cfbb04c329615203637"),
}
DEFAULT_DATA_DIR = Path(__file__).resolve().parent / "data" / "mnist"
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(raw):
    """An IDX file's bytes -> numpy array (magic 0,0,dtype,ndim; big-endian uint32 dims; data)."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise ValueError("not an IDX file (bad magic number)")
    dtype, ndim = np.dtype(IDX_DTYPES[raw[2]]), raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise ValueError("IDX header is cut short")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = 4 + 4 * ndim + math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"IDX size mismatch: header says {expected} bytes, file has {len(raw)}")
    return np.frombuffer(raw, dtype, offset=4 + 4 * ndim).reshape(shape).astype(dtype.newbyteorder("="))


def check_mnist_bytes(name, compressed_or_raw, is_gz, verify=True):
    """Decompress (if .gz) and check size and (if verify) md5. Returns (raw bytes, None) or (None, problem)."""
    size, md5 = MNIST_FILES[name]
    if is_gz:
        try:
            raw = gzip.decompress(compressed_or_raw)
        except EOFError:
            return None, "truncated (the gzip stream ends early)"
        except (OSError, zlib.error) as e:
            return None, f"corrupt (not a valid gzip file: {e})"
    else:
        raw = compressed_or_raw
    if len(raw) < size:
        return None, f"truncated (expected {size} bytes after decompression, got {len(raw)})"
    if len(raw) > size:
        return None, f"corrupt (expected {size} bytes after decompression, got {len(raw)})"
    if verify and (digest := hashlib.md5(raw).hexdigest()) != md5:
        return None, f"checksum mismatch (md5 {digest}, expected {md5}; --no-checksum accepts other data in MNIST's format)"
    return raw, None


def download_mnist(folder):
    """Fetch the missing files into folder, trying MIRRORS in order. A file appears under its
    final name only after its decompressed md5 matched (written to a temp name, then renamed)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in MNIST_FILES:
        if (folder / name).exists() or (folder / (name + ".gz")).exists():
            continue
        problems = []
        for mirror in MIRRORS:
            url = mirror + name + ".gz"
            print(f"downloading {url}", flush=True)
            try:
                with urllib.request.urlopen(url, timeout=60) as response:
                    payload = response.read()
            except Exception as e:  # any network failure: try the next mirror
                problems.append(f"{url}: {e}")
                continue
            _, problem = check_mnist_bytes(name, payload, is_gz=True)
            if problem:
                problems.append(f"{url}: {problem}")
                continue
            tmp = folder / f".{name}.gz.part-{os.getpid()}"
            tmp.write_bytes(payload)
            os.replace(tmp, folder / (name + ".gz"))
            break
        else:
            raise UsageError(f"could not download {name}.gz from any mirror "
                             f"({'; '.join(problems)}); check the connection, or put the four "
                             f"MNIST files in a folder and pass --data-dir DIR")


def load_mnist(folder, downloaded, verify=True):
    """The four files of folder as numpy arrays, each verified; one clear line if one is bad."""
    fix = ("delete it and rerun python train_mnist_ffn.py to download again" if downloaded else
           "replace it with an intact copy, or run python train_mnist_ffn.py without --data-dir "
           "to download MNIST")
    arrays = {}
    for name in MNIST_FILES:
        path = folder / name if (folder / name).exists() else folder / (name + ".gz")
        if not path.exists():
            raise UsageError(f"{folder / name}(.gz) not found; put the four MNIST files "
                             f"there, or run python train_mnist_ffn.py without --data-dir to "
                             f"download them")
        raw, problem = check_mnist_bytes(name, path.read_bytes(), is_gz=path.suffix == ".gz", verify=verify)
        if problem:
            raise UsageError(f"{path}: {problem}; {fix}")
        arrays[name] = parse_idx(raw)
        if "labels" in name and arrays[name].max() > 9:
            raise UsageError(f"{path}: labels must be 0 to 9, found {arrays[name].max()}")
    return arrays


def mnist_tensors(arrays, device, train_limit=0):
    """Split, scale to [0, 1] and move to the device: train/val/test images and labels."""
    images = torch.from_numpy(arrays["train-images-idx3-ubyte"]).reshape(-1, 784)
    labels = torch.from_numpy(arrays["train-labels-idx1-ubyte"]).long()
    split = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SPLIT_SEED))
    train, val = split[:N_TRAIN], split[N_TRAIN:N_TRAIN + N_VAL]
    if train_limit:
        train = train[:train_limit]
    test_images = torch.from_numpy(arrays["t10k-images-idx3-ubyte"]).reshape(-1, 784)
    test_labels = torch.from_numpy(arrays["t10k-labels-idx1-ubyte"]).long()
    scale = lambda u8: (u8.float() / 255).to(device)  # as torchvision's ToTensor
    return {"train_x": scale(images[train]), "train_y": labels[train].to(device),
            "val_x": scale(images[val]), "val_y": labels[val].to(device),
            "test_x": scale(test_images), "test_y": test_labels.to(device)}


# ------------------------------------------------------------------------------------------
# Batched training: the trials of one batch size train as one computation.
#
# A trial of a group is (block, learning rate, seed), a block being one (model, hidden size). The
# input matrices of every trial are columns of one matrix W_x per seed, so one batched matmul
# computes every projection x @ W of a step. Each block's model function gets each projection as
# a tensor of its own shaped [S, L, B, h] (seeds, learning rates, batch, hidden): one trial's
# [B, h] on the last two axes, exactly what it gets alone, and the other trials on leading axes.
# So a model computes for each trial what it computes for that trial alone, whatever it does over
# the hidden units or the batch, in place or not. The read-out sums only a trial's own units into
# its 10 logits, and the loss is the sum of the trials' mean cross-entropies: each trial's
# gradient is its own, and a trial that diverges to inf/NaN touches no other (nothing ever adds
# one trial's numbers to another's).

@dataclass(frozen=True, order=True)
class Trial:
    model: str
    hidden: int
    batch_size: int
    lr: float
    seed: int
    epochs: int


class Layout:
    """Where every trial of a group lives. seeds (S) and lrs (L): the group's; blocks: one per
    (model, hidden), as (model, hidden, {input matrix name: its X columns}, its U units). Every
    block trains at every lr and seed (a group asked for less trains the rest too).
    W_x [S, 784, L * X]: for each lr, X columns, every block's input matrices side by side.
    W_out [S, L, U, 10]: for each lr, U rows, every block's hidden units (unit_block[u]: its block)."""

    def __init__(self, trials, device, dtype):
        self.seeds = sorted({t.seed for t in trials})
        self.lrs = sorted({t.lr for t in trials}, reverse=True)
        self.blocks, x0, u0 = [], 0, 0
        for model, hidden in sorted({(t.model, t.hidden) for t in trials}):
            names = MODELS[model][1]
            columns = {name: slice(x0 + i * hidden, x0 + (i + 1) * hidden) for i, name in enumerate(names)}
            self.blocks.append((model, hidden, columns, slice(u0, u0 + hidden)))
            x0, u0 = x0 + len(names) * hidden, u0 + hidden
        S, L, self.n_columns = len(self.seeds), len(self.lrs), x0
        self.widths = [hidden for _, hidden, columns, _ in self.blocks for _ in columns]  # of each input matrix
        hiddens = torch.tensor([hidden for _, hidden, _, _ in self.blocks])
        self.unit_block = torch.repeat_interleave(torch.arange(len(self.blocks)), hiddens).to(device)
        w_x = torch.zeros(S, 784, L, x0, dtype=dtype)
        w_out = torch.zeros(S, L, u0, 10, dtype=dtype)
        for s, seed in enumerate(self.seeds):  # every lr starts from the same weights
            for model, hidden, columns, units in self.blocks:
                init = init_weights(model, hidden, seed)
                for name, cols in columns.items():
                    w_x[s, :, :, cols] = init[name].unsqueeze(1)
                w_out[s, :, units] = init["w_out"]
        self.w_x, self.w_out = w_x.view(S, 784, L * x0).to(device), w_out.to(device)
        lrs = torch.tensor(self.lrs, dtype=dtype)  # each trial's lr on each of its weights:
        self.lr_x = lrs.repeat_interleave(x0).view(1, 1, -1).to(device)  # per column of W_x
        self.lr_out = lrs.view(1, L, 1, 1).to(device)  # per lr of W_out

    def hidden_units(self, xw):
        """All hidden units h [S, L, B, U] from all projections xw [S, B, L * X]: each block's
        model function applied to its own projections, each a tensor of its own [S, L, B, hidden]
        (copied out of xw, so a model may write its inputs in place as in a plain loop)."""
        S, B = xw.shape[:2]
        by_lr = xw.view(S, B, len(self.lrs), self.n_columns).transpose(1, 2)  # [S, L, B, X]
        projections = iter([p.clone() for p in by_lr.split(self.widths, 3)])
        return torch.cat([MODELS[model][0]({name: next(projections) for name in columns})
                          for model, _, columns, _ in self.blocks], 3)

    def logits(self, h, w_out):
        """Each trial's 10 logits [S, L, B, 10, blocks] from all hidden units h [S, L, B, U] and
        the read-outs W_out [S, L, U, 10]: unit u adds h[u] * W_out[u] to its own block's logits
        only (index_add), so an inf or NaN stays in its trial. (Summed with the units before the
        classes, 2-3x faster than after on the CPU; the logits come back with the classes before
        the blocks, where a softmax over them is ~10x faster than over a short last axis.)"""
        products = h.unsqueeze(4) * w_out.unsqueeze(2)  # [S, L, B, U, 10]
        logits = products.new_zeros(*products.shape[:3], len(self.blocks), 10).index_add_(3, self.unit_block, products)
        return logits.transpose(3, 4)

    def trial_weights(self, s, l, b):
        """Block b at lr index l of seed index s as one trial alone has it: {"w_in": 784 x h, ...,
        "w_out": h x 10}."""
        _, _, columns, units = self.blocks[b]
        first = l * self.n_columns
        weights = {name: self.w_x[s, :, first + cols.start:first + cols.stop] for name, cols in columns.items()}
        weights["w_out"] = self.w_out[s, l, units]
        return {name: w.detach().cpu().clone() for name, w in weights.items()}


def readout_grads(layout, h, y, w_out):
    """The read-out and the loss, differentiated by hand: from hidden units h [S, L, B, U], one-hot
    targets y [S, 1, B, 10, 1] and W_out [S, L, U, 10], each trial's logits [S, L, B, 10, blocks]
    and the gradients of the summed mean cross-entropies with respect to h and W_out. d loss /
    d logits = (softmax - one-hot) / B for each trial; a unit's gradients come from its own
    trial's logits."""
    logits = layout.logits(h, w_out)
    d_logits = torch.softmax(logits, 3).sub_(y).div_(h.shape[2])  # [S, L, B, 10, blocks]
    d_units = d_logits.transpose(3, 4).index_select(3, layout.unit_block)  # [S, L, B, U, 10]
    grad_h = (d_units * w_out.unsqueeze(2)).sum(4)  # [S, L, B, U]
    grad_out = (d_units * h.unsqueeze(4)).sum(2)  # [S, L, U, 10]
    return logits, grad_h, grad_out


def train_group(trials, data, progress=None, return_weights=False, graphs=None, clock=None):
    """Train trials that share batch_size and epochs as one computation. Returns {trial: result}
    for every trial asked for (result: train_loss, val_acc, test_acc, params, time[, weights]).
    data: the tensors of mnist_tensors(); training runs on their device and in their dtype.
    progress(fraction) is called every 25 steps and during the evaluation (it may raise to stop
    the group: at most about 0.3 s later on the 2-core CPU, 8 seeds at batch size 64).
    graphs (default: on CUDA): the steps run STEPS_PER_GRAPH at a time as CUDA graphs; on the CPU
    the same steps, in the same schedule, run eagerly (what the tests compare with graphs off).
    clock: a dict that gets the seconds of setup, capture, train and eval (synchronised on CUDA)."""
    batch_size, epochs = trials[0].batch_size, trials[0].epochs
    assert all(t.batch_size == batch_size and t.epochs == epochs for t in trials)
    device, dtype = data["train_x"].device, data["train_x"].dtype
    cuda = device.type == "cuda"
    graphs = cuda if graphs is None else graphs
    start = last = time.perf_counter()

    def tick(phase):  # the time since the last tick goes to phase (timed runs only: it syncs)
        nonlocal last
        if clock is not None:
            if cuda:
                torch.cuda.synchronize(device)
            now = time.perf_counter()
            clock[phase] = clock.get(phase, 0.0) + now - last
            last = now

    layout = Layout(trials, device, dtype)
    S, L, n_blocks = len(layout.seeds), len(layout.lrs), len(layout.blocks)
    # Adam with one learning rate per trial, in one fused pass over all the weights. Each weight
    # w is kept as q = w / lr, lr its trial's. Adam at lr 1, handed the gradient of w, moves q by
    # Adam's unit update u (-m_hat / (sqrt(v_hat) + eps): the moments depend on the gradient
    # only), so w = lr * q moves by lr * u, Adam's step at lr. The matmuls multiply the lr back in
    # on their small side: x @ w = (x @ q) * lr, one lr per column.
    q_x = layout.w_x / layout.lr_x  # [S, 784, L * X]
    q_out = layout.w_out / layout.lr_out  # [S, L, U, 10]
    # Adam's state as torch.optim.Adam keeps it (two moments per weight, a step count on the
    # weight's device), stepped by torch.optim.adam.adam, the function Adam.step calls: the class
    # imports torch._dynamo when first used, which cost the CPU study 0.71 s of its start
    # (bench --cold --against). (capturable: the step count stays on the GPU, as a graph needs;
    # the fused kernel computes the same either way.)
    weights = [q_x, q_out]
    exp_avgs, exp_avg_sqs = [torch.zeros_like(q) for q in weights], [torch.zeros_like(q) for q in weights]
    step_counts = [torch.zeros((), dtype=torch.float32, device=device) for _ in weights]

    def adam_step(grads):
        adam(weights, grads, exp_avgs, exp_avg_sqs, [], step_counts, fused=FUSED_ADAM,
             capturable=graphs and cuda, amsgrad=False, beta1=ADAM_BETAS[0], beta2=ADAM_BETAS[1], lr=1.0,
             weight_decay=0.0, eps=ADAM_EPS, maximize=False)

    targets = F.one_hot(data["train_y"], 10).to(dtype).unsqueeze(-1)  # [n, 10, 1]
    n = len(targets)
    # Every step's images, on the device: row r of `full` holds the S * batch_size image indices of
    # the r-th full batch (epoch by epoch, each seed's own batch in turn), row e of `last` those of
    # epoch e's last, smaller batch (when batch_size does not divide n). A step reads its row at a
    # counter kept on the device and moves the counter on, so no step needs the host.
    orders = torch.stack([data_orders(seed, n, epochs) for seed in layout.seeds])  # [S, epochs, n]
    n_full, n_last = divmod(n, batch_size)
    full = (orders[:, :, :n_full * batch_size].reshape(S, epochs, n_full, batch_size).permute(1, 2, 0, 3)
            .reshape(epochs * n_full, S * batch_size).to(device))
    last_batches = orders[:, :, n_full * batch_size:].permute(1, 0, 2).reshape(epochs, S * n_last).to(device)
    rows = {"full": (full, torch.zeros(1, dtype=torch.long, device=device)),
            "last": (last_batches, torch.zeros(1, dtype=torch.long, device=device))}
    steps_per_epoch = n_full + (n_last > 0)
    loss_from = (epochs - 1) * steps_per_epoch + steps_per_epoch - max(1, steps_per_epoch // 10)
    loss_sum = torch.zeros(S, L, n_blocks, device=device, dtype=dtype)  # train_loss: the last 10% of batches

    def step(kind, with_loss):
        """One training step of every trial, on the next batch of `kind` (full or last)."""
        table, row = rows[kind]
        index = table.index_select(0, row).view(-1)  # each seed's own images
        row += 1
        x = data["train_x"].index_select(0, index).view(S, -1, 784)  # [S, B, 784]
        y = targets.index_select(0, index).view(S, 1, -1, 10, 1)  # [S, 1, B, 10, 1]
        # Autograd records only the model functions (the code one edits); the matmuls, the
        # read-out and the loss around them are differentiated by hand.
        xw = (torch.bmm(x, q_x) * layout.lr_x).requires_grad_()  # [S, B, L * X]: x @ W_x
        w_out = q_out * layout.lr_out
        h = layout.hidden_units(xw)  # [S, L, B, U]
        with torch.no_grad():
            logits, grad_h, grad_out = readout_grads(layout, h, y, w_out)
            if with_loss:  # each trial's mean cross-entropy on this batch
                loss_sum.add_((torch.logsumexp(logits, 3) - (logits * y).sum(3)).mean(2))
        grad_xw, = torch.autograd.grad(h, xw, grad_h)
        adam_step([torch.bmm(x.transpose(1, 2), grad_xw), grad_out])  # the gradients of the weights

    # The schedule: runs of up to STEPS_PER_GRAPH full-batch steps alike (with or without the
    # loss), a last batch alone. With graphs, the first run of each kind is eager (CUDA loads its
    # kernels, cuBLAS its workspace: the warm-up a capture needs), and each later run of
    # STEPS_PER_GRAPH replays the graph of its kind, captured when first needed; on the CPU the
    # "graph" runs the same steps eagerly.
    plan = []  # [kind, with_loss, steps]
    for i in range(epochs * steps_per_epoch):
        kind = "last" if i % steps_per_epoch == n_full else "full"
        if plan and plan[-1][:2] == [kind, i >= loss_from] and kind == "full" and plan[-1][2] < STEPS_PER_GRAPH:
            plan[-1][2] += 1
        else:
            plan.append([kind, i >= loss_from, 1])
    captured = {}

    def run_steps(kind, with_loss, steps):
        for _ in range(steps):
            step(kind, with_loss)

    def graph_of(with_loss):
        if with_loss not in captured:
            tick("train")
            if cuda:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    run_steps("full", with_loss, STEPS_PER_GRAPH)
                captured[with_loss] = graph.replay
            else:
                captured[with_loss] = functools.partial(run_steps, "full", with_loss, STEPS_PER_GRAPH)
            tick("capture")
        return captured[with_loss]

    tick("setup")
    done_steps, warmed = 0, set()
    for kind, with_loss, steps in plan:
        if graphs and steps == STEPS_PER_GRAPH and with_loss in warmed:
            graph_of(with_loss)()
        elif graphs and cuda:  # eager, on a side stream: the warm-up a capture needs
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                run_steps(kind, with_loss, steps)
            torch.cuda.current_stream(device).wait_stream(side)
        else:
            run_steps(kind, with_loss, steps)
        warmed.add(with_loss)
        if progress is not None and (done_steps + steps) // 25 > done_steps // 25:
            progress((done_steps + steps) / (epochs * steps_per_epoch))
        done_steps += steps
    tick("train")
    layout.w_x, layout.w_out = q_x * layout.lr_x, q_out * layout.lr_out  # the trained weights
    # evaluation: every trial's accuracy on the validation and test images, EVAL_BATCH at a time
    accuracy = {}
    with torch.no_grad():
        for split in ("val", "test"):
            xs, ys = data[split + "_x"], data[split + "_y"]
            correct = torch.zeros(S, L, n_blocks, dtype=torch.long, device=device)
            for s in range(S):  # a seed at a time, so that the read-out's products stay small
                for j in range(0, len(ys), EVAL_BATCH):
                    h = layout.hidden_units(torch.matmul(xs[j:j + EVAL_BATCH], layout.w_x[s:s + 1]))
                    logits = layout.logits(h, layout.w_out[s:s + 1])
                    correct[s] += (logits.argmax(3) == ys[j:j + EVAL_BATCH, None]).sum(2)[0]
                    if progress is not None:  # (it may stop the evaluation too)
                        progress(1.0)
            accuracy[split] = (correct.double() / len(ys)).tolist()
        train_losses = (loss_sum / (epochs * steps_per_epoch - loss_from)).tolist()
    tick("eval")
    elapsed = time.perf_counter() - start
    trained_params = S * L * sum(n_params(model, hidden) for model, hidden, _, _ in layout.blocks)
    results = {}
    for t in trials:
        s, l = layout.seeds.index(t.seed), layout.lrs.index(t.lr)
        b = next(i for i, block in enumerate(layout.blocks) if block[:2] == (t.model, t.hidden))
        params_t = n_params(t.model, t.hidden)
        results[t] = {"params": params_t, "train_loss": train_losses[s][l][b],
                      "val_acc": accuracy["val"][s][l][b], "test_acc": accuracy["test"][s][l][b],
                      "time": elapsed * params_t / trained_params}
        if return_weights:
            results[t]["weights"] = layout.trial_weights(s, l, b)
    return results


def train_groups(groups, data, workers, progress=None):
    """Train the groups `workers` at a time, each in its own thread, and yield (group, results) as
    each one finishes. With one intra-op thread each, a worker keeps one CPU core busy: torch
    releases the GIL inside its ops, and a batch-8 group spends most of its time there. On a
    2-core CPU the batch-64 group then costs no wall time at all beside the batch-8 one.
    progress(group index, fraction) is called from the worker threads."""
    stop = threading.Event()

    def train(gi):
        def report(fraction):
            if stop.is_set():  # the caller has stopped listening (an error, Ctrl-C): end this group
                raise RuntimeError("stopped")
            if progress is not None:
                progress(gi, fraction)
        return train_group(groups[gi], data, report)

    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        futures = {pool.submit(train, gi): gi for gi in range(len(groups))}
        for future in as_completed(futures):
            yield groups[futures[future]], future.result()
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------------------------------------
# Logging: records as in the log contract (one `name:value` token list per line).

def trial_record(t, r):
    return (f"trial: model:{t.model} hidden:{t.hidden} batch_size:{t.batch_size} lr:{t.lr!r} "
            f"seed:{t.seed} epochs:{t.epochs} params:{r['params']} train_loss:{r['train_loss']:.4f} "
            f"val_acc:{r['val_acc']:.5f} test_acc:{r['test_acc']:.5f} time:{r['time']:.3f}s")


def parse_record(line):
    """A record line -> (name, {key: value}); None if the line is not a record."""
    tokens = line.split(" ")
    if not tokens or ":" not in tokens[0] or any(":" not in tok for tok in tokens):
        return None
    name, first = tokens[0].split(":", 1)
    values = dict(tok.split(":", 1) for tok in tokens[1:])
    if first:
        values[name] = first
    return name, values


def trial_key(values):
    return Trial(values["model"], int(values["hidden"]), int(values["batch_size"]), float(values["lr"]),
                 int(values["seed"]), int(values["epochs"]))


def read_log(path):
    """The config and the finished trials of a log: (config values, {Trial: values}). A last line
    without its newline was cut by a kill and does not count; nor does a trial line missing keys."""
    config, done, in_header = None, {}, False
    for line in path.read_bytes().decode(errors="replace").split("\n")[:-1]:
        if line == "=" * 100:
            in_header = not in_header
            continue
        record = None if in_header else parse_record(line)
        if record and record[0] == "config":
            config = record[1]
        elif record and record[0] == "trial":
            try:
                assert {"params", "train_loss", "val_acc", "test_acc", "time"} <= set(record[1])
                done[trial_key(record[1])] = record[1]
            except (AssertionError, KeyError, ValueError):
                print(f"warning: {path}: skipping a trial line that does not parse: {line}", file=sys.stderr)
    return config, done


def memory_needed(hp, units, n_train, workers):
    """Estimated peak bytes of a run (float32): (on the training device) the data, and for each of
    the `workers` largest chunks training at once its weights with their gradient, Adam's moments
    and copies, one step's tensors and the evaluation's; (on the host) the trials' bookkeeping."""
    def chunk_bytes(unit):
        S, L, B = len({t.seed for t in unit}), len(hp.lrs), unit[0].batch_size
        blocks = {(t.model, t.hidden) for t in unit}
        X = sum(len(MODELS[model][1]) * hidden for model, hidden in blocks)  # input-matrix columns
        U = sum(hidden for _, hidden in blocks)  # hidden units
        weights = 6 * S * L * (784 * X + 10 * U)  # W, q, grad, 2 moments, a product's temporary
        step = S * B * L * (4 * X + 3 * 10 * U)  # projections, their copies and gradients; read-out
        evaluation = L * EVAL_BATCH * (3 * X + 2 * 10 * U)
        orders = 3 * 2 * S * hp.epochs * n_train  # int64: the orders and the step tables
        return 4 * (weights + step + evaluation + orders + 10 * n_train)
    biggest = sorted((chunk_bytes(u) for u in units), reverse=True)[:workers]
    data = 4 * (n_train + N_VAL + 10_000) * 785
    return data + sum(biggest), 1500 * sum(len(u) for u in units)


def check_memory(hp, units, n_train, workers, device, cuda_free):
    """Refuse, in one line, a grid whose estimated memory exceeds what the machine has: the host's
    available RAM (always), the GPU's free memory (cuda_free, once known)."""
    training, bookkeeping = memory_needed(hp, units, n_train, workers)
    meminfo = Path("/proc/meminfo")
    available = (int(next(line.split()[1] for line in meminfo.read_text().splitlines()
                          if line.startswith("MemAvailable:"))) * 1024 if meminfo.exists()
                 else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))
    checks = [(bookkeeping + (training if device.type == "cpu" else 0), available, "of the host's RAM available")]
    if cuda_free is not None:
        checks.append((training, cuda_free, "of the GPU's memory free"))
    for needed, have, where in checks:
        if needed > have:
            fix = ("use fewer --seeds" if bookkeeping > training else
                   "use smaller --hidden sizes, or fewer --lrs or --models")
            raise UsageError(f"--seeds {hp.seeds} x --hidden {','.join(map(str, hp.hidden))} (x {len(hp.lrs)} lrs, "
                             f"{len(hp.models)} models) needs about {needed / 2**30:.1f} GiB, more than the "
                             f"{have / 2**30:.1f} GiB {where}; {fix}")


def start_nvidia_smi():
    """nvidia-smi's report for the log, started at once: it takes a second or more on a GPU
    machine, which it spends beside the data loading instead of before the first step."""
    try:
        return subprocess.Popen(["nvidia-smi"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) \
            if shutil.which("nvidia-smi") else None
    except OSError:
        return None


def environment(nvidia_smi):
    lines = [f"python: {sys.version}", f"torch: {torch.__version__}", f"numpy: {np.__version__}",
             f"platform: {platform.platform()}", f"cpu_count: {os.cpu_count()}",
             f"torch_threads: {torch.get_num_threads()}"]
    if nvidia_smi is not None:
        try:
            lines.append(nvidia_smi.communicate(timeout=30)[0])
        except Exception as e:
            nvidia_smi.kill()
            lines.append(f"nvidia-smi failed: {e}")
    return "\n".join(lines).rstrip("\n") + "\n"


def start_cuda(device):
    """Create the CUDA context and cuBLAS's handle (a second or more on a GPU machine), in a
    thread beside the data loading; returns the device's free memory in bytes."""
    ones = torch.ones(1, 2, 2, device=device)
    torch.bmm(ones, ones)
    return torch.cuda.mem_get_info(device)[0]


# ------------------------------------------------------------------------------------------
# Command line.

class FlagParser(argparse.ArgumentParser):
    def error(self, message):  # argparse's usage + error lines, as one line
        raise UsageError(f"{message} (python train_mnist_ffn.py --help lists the flags)")


def parse_list(kind, text):
    items = [s.strip() for s in text.split(",")]
    if not text.strip() or any(not s for s in items):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    try:
        values = tuple(kind(s) for s in items)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {kind.__name__}, got {text!r}")
    if kind is not str and any(not (0 < v < math.inf) for v in values):  # also refuses nan
        raise argparse.ArgumentTypeError(f"values must be positive and finite, got {text!r}")
    if kind is str and any(v not in MODELS for v in values):
        raise argparse.ArgumentTypeError(f"unknown model in {text!r}; known: {','.join(MODELS)}")
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"repeated value in {text!r}")
    return values


def parse_int(minimum, text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    return value


def make_parser():
    parser = FlagParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in fields(Hparams):
        meta, name = f.metadata, "--" + f.name.replace("_", "-")
        help_text = meta["help"]
        if isinstance(f.default, bool):
            parser.add_argument(name, action="store_true", default=argparse.SUPPRESS, help=help_text)
        elif isinstance(f.default, tuple):
            kind = type(f.default[0])
            parser.add_argument(name, type=lambda s, kind=kind: parse_list(kind, s), default=argparse.SUPPRESS,
                                metavar=",".join(str(v) for v in f.default), help=help_text)
        elif isinstance(f.default, int):
            parser.add_argument(name, type=lambda s, m=meta.get("minimum", 1): parse_int(m, s),
                                default=argparse.SUPPRESS, help=f"{help_text} (default {f.default})")
        else:
            parser.add_argument(name, choices=meta.get("choices"), default=argparse.SUPPRESS,
                                help=f"{help_text} (default {f.default!r})" if f.default else help_text)
    return parser


def config_value(value):
    """A config: value: lists comma-separated, booleans 0/1, floats as repr (1e-05, 0.0001)."""
    if isinstance(value, tuple):
        return ",".join(config_value(v) for v in value)
    return str(int(value)) if isinstance(value, bool) else repr(value) if isinstance(value, float) else str(value)


def config_value_from(default, text):
    """config_value read back, as the type of the field's default."""
    if isinstance(default, tuple):
        return tuple(type(default[0])(v) for v in text.split(","))
    return text == "1" if isinstance(default, bool) else type(default)(text)


def config_record(hp, data, **derived):
    """The config: record: every grid field of hp, in Hparams' order, and what follows from them,
    then the `derived` keys (the run's seed_chunk and data_dir, which --resume reads back).
    The log contract's keys keep their order (models ... epochs, then the data's train val test
    split_seed init_std data) and old readers their keys (seeds as the list 0..N-1, matched_hidden
    for geglu); keys are only ever added."""
    record = {}
    for f in grid_fields():
        record[f.name] = config_value(getattr(hp, f.name))
        if f.name == "seeds":
            record["seeds"] = config_value(tuple(range(hp.seeds)))
        elif f.name == "epochs":
            record.update(train=len(data["train_y"]), val=len(data["val_y"]), test=len(data["test_y"]),
                          split_seed=SPLIT_SEED, init_std=INIT_STD, data="unverified" if hp.no_checksum else "mnist")
        elif f.name == "param_match":
            matched = param_matched(hp)
            if "geglu" in matched:  # the key analyze.py read before there were other models
                record["matched_hidden"] = config_value(tuple(matched["geglu"]))
            record.update({f"matched_hidden_{model}": config_value(tuple(sizes)) for model, sizes in matched.items()})
    record.update(adam_betas=config_value(ADAM_BETAS), adam_eps=ADAM_EPS, **derived)
    return "config: " + " ".join(f"{key}:{value}" for key, value in record.items())


def config_from_log(path, config):
    """Hparams grid values from a log's config: record."""
    try:
        lists = lambda key, kind: tuple(kind(v) for v in config[key].split(","))
        seeds = lists("seeds", int)
        from_log = {"models": lists("models", str), "hidden": lists("hidden", int),
                    "batch_sizes": lists("batch_sizes", int), "lrs": lists("lrs", float), "seeds": len(seeds),
                    "epochs": int(config["epochs"]), "param_match": config.get("param_match") == "1",
                    "train_limit": int(config.get("train_limit", "0")),
                    "no_checksum": config.get("data") == "unverified",
                    "seed_chunk": int(config.get("seed_chunk", len(seeds)))}  # earlier logs: a group at once
        if "data_dir" in config:  # earlier logs did not record it
            from_log["data_dir"] = urllib.parse.unquote(config["data_dir"])
        for f in grid_fields():  # a field added since: read back as config_record wrote it, or its default
            if f.name not in from_log:
                from_log[f.name] = config_value_from(f.default, config[f.name]) if f.name in config else f.default
    except (KeyError, ValueError):
        raise UsageError(f"{path}: its config: line is not a train_mnist_ffn.py grid (a train_gpt.py log?); "
                         f"pass the log of a train_mnist_ffn.py run")
    if seeds != tuple(range(len(seeds))):
        raise UsageError(f"{path}: the log's seeds:{config['seeds']} are not 0..N-1; start a new log")
    unknown = [m for m in from_log["models"] if m not in MODELS]
    if unknown:
        raise UsageError(f"{path}: the log's models {','.join(unknown)} are not in MODELS of this file; "
                         f"add them back, or start a new log")
    return from_log


def grid(hp):
    """Every trial of the study (plus each model's parameter-matched sizes with --param-match)."""
    sizes = {model: list(hp.hidden) for model in hp.models}
    for model, matched in (param_matched(hp) if hp.param_match else {}).items():
        sizes[model] += [h for h in sorted(set(matched)) if h not in hp.hidden]
    return [Trial(model, h, bs, lr, seed, hp.epochs) for bs in hp.batch_sizes for model in hp.models
            for h in sizes[model] for lr in hp.lrs for seed in range(hp.seeds)]


def seed_chunks(trials, batch_sizes, seeds, seed_chunk):
    """The training units: each batch size's trials in chunks of seed_chunk seeds, in --batch-sizes
    order, then by seed (a chunk's trial lines reach the log as it ends)."""
    chunk_of = {(bs, first): [] for bs in batch_sizes for first in range(0, seeds, seed_chunk)}
    for t in trials:
        chunk_of[t.batch_size, t.seed - t.seed % seed_chunk].append(t)
    return list(chunk_of.values())


def main(argv=None):
    """The command line. Returns the log's path; bad input: one line `error: ...`, exit status 2;
    Ctrl-C (or SIGTERM, or stdout's reader gone): a `done: ... status:interrupted` record and exit status 130."""
    threads = torch.get_num_threads()
    on_main_thread = threading.current_thread() is threading.main_thread()
    if on_main_thread:  # SIGTERM (a job's time limit) ends the run as Ctrl-C does
        previous_sigterm = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return run(argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2)
    finally:
        torch.set_num_threads(threads)  # a caller in the same process (the tests) keeps its own
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous_sigterm)


def run(argv):
    parser = make_parser()
    given = vars(parser.parse_args(argv))
    t0 = time.perf_counter()
    if given.get("data_dir"):  # the log records it as an absolute path: a --resume finds it from anywhere
        given["data_dir"] = str(Path(given["data_dir"]).resolve())
    log_path = Path(given["resume"]) if given.get("resume") else None
    seed_chunk = None
    if log_path is not None:  # continue the grid recorded in the log
        if not log_path.is_file():
            raise UsageError(f"--resume {log_path}: no such log; pass the path of a train_mnist_ffn.py log")
        try:
            open(log_path, "r+b").close()  # appending will work (opening r+b changes nothing)
        except OSError as e:
            raise UsageError(f"--resume {log_path}: cannot write to it ({e.strerror}); make it writable "
                             f"(chmod u+w) or resume a writable copy")
        config, done = read_log(log_path)
        if config is None:
            raise UsageError(f"--resume {log_path}: no config: line; it is not a train_mnist_ffn.py log")
        from_log = config_from_log(log_path, config)
        seed_chunk = from_log.pop("seed_chunk")
        clashes = [k for k in [f.name for f in grid_fields()] + ["data_dir"]
                   if k in given and k in from_log and given[k] != from_log[k]]
        if clashes:
            raise UsageError(f"--resume continues the grid recorded in {log_path}; drop "
                             f"{', '.join('--' + k.replace('_', '-') for k in clashes)} or start a new log")
        given.update(from_log)
    hp = Hparams(**given)
    if hp.param_match and (BASELINE not in hp.models or len(hp.models) < 2):
        raise UsageError(f"--param-match sizes the other models to {BASELINE}'s parameter counts: it needs "
                         f"{BASELINE} and at least one other model in --models")
    torch.set_num_threads(hp.threads)
    # Adam's moments of the rarely lit border pixels decay below 1e-38 (float32's smallest normal
    # number), and arithmetic on such subnormal numbers is ~2x slower on x86 CPUs: the batch-8
    # Adam step measured 250 us instead of 100. Flushing them to zero changes no number above
    # 1e-38 (and nothing on a GPU, which flushes already).
    torch.set_flush_denormal(True)
    device = torch.device("cuda" if hp.device == "cuda" or (hp.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda but torch sees no CUDA GPU; use --device cpu")
    n_train = min(N_TRAIN, hp.train_limit or N_TRAIN)
    if max(hp.batch_sizes) > n_train:
        raise UsageError(f"--batch-sizes {max(hp.batch_sizes)} is more than the {n_train} training images "
                         f"(a batch cannot repeat images); use batch sizes up to {n_train}")
    trials = grid(hp)
    # The trials of a batch size train in chunks of seed_chunk seeds (the log records it, so a
    # --resume chunks as the run it continues): each chunk's lines are in the log as it ends, so a
    # kill loses at most one chunk of work. On the CPU four seeds a chunk (2 chunks of about 12 s
    # for batch size 8 on 2 cores; 2 seeds a chunk made the study 4% slower, 4 seeds 9% faster
    # than whole groups: bench --chunks --quick); on a GPU 8, whose steps cost the same for 1 or 8.
    seed_chunk = seed_chunk or min(hp.seeds, SEED_CHUNK[device.type])
    units = seed_chunks(trials, hp.batch_sizes, hp.seeds, seed_chunk)
    workers = hp.workers if device.type == "cpu" else 1  # a graph captures one stream: one chunk at a time
    nvidia_smi = start_nvidia_smi() if log_path is None else None
    cuda_start = ThreadPoolExecutor(1).submit(start_cuda, device) if device.type == "cuda" else None
    check_memory(hp, units, n_train, workers, device, None)
    if log_path is None:  # the log's folder must be writable before minutes of download and training
        log_dir = Path(hp.log_dir)
        existing = next(p for p in [log_dir, *log_dir.resolve().parents] if p.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise UsageError(f"--log-dir {log_dir}: cannot write there ({existing} is not a writable folder); "
                             f"pass a folder you can write to")

    # data
    if hp.data_dir:
        folder = Path(hp.data_dir)
        if not folder.is_dir():
            raise UsageError(f"--data-dir {folder}: no such folder")
    else:
        folder = DEFAULT_DATA_DIR
        download_mnist(folder)
    data = mnist_tensors(load_mnist(folder, downloaded=not hp.data_dir, verify=not hp.no_checksum), device,
                         hp.train_limit)
    if cuda_start is not None:
        check_memory(hp, units, n_train, workers, device, cuda_start.result())

    # the log
    if log_path is None:
        try:
            log_dir.mkdir(parents=True, exist_ok=True)
            run_id = secrets.token_hex(4)
            started = datetime.now(timezone.utc)
            log_path = log_dir / f"mnist-{started:%Y%m%d-%H%M%S}-{run_id}.txt"
            log = open(log_path, "w")
        except OSError as e:
            raise UsageError(f"--log-dir {log_dir}: cannot write there ({e.strerror}); pass a folder you can write to")
        done = {}
        device_name = f"cuda:{device.index or 0}" if device.type == "cuda" else "cpu"
        log.write(f"run:mnist id:{run_id} started:{started:%Y-%m-%dT%H:%M:%SZ} torch:{torch.__version__} "
                  f"device:{device_name} host:{socket.gethostname().replace(' ', '_')}\n")
        log.write("=" * 100 + "\n" + Path(__file__).read_text().rstrip("\n") + "\n" + environment(nvidia_smi)
                  + "=" * 100 + "\n")
        log.write(config_record(hp, data, seed_chunk=seed_chunk, data_dir=urllib.parse.quote(hp.data_dir)) + "\n")
        log.flush()
    else:
        content = log_path.read_bytes()
        if content and not content.endswith(b"\n"):  # a line cut by the kill: drop it, it was not finished
            with open(log_path, "r+b") as f:
                f.truncate(content.rfind(b"\n") + 1)
        log = open(log_path, "a")
    todo = [t for t in trials if t not in done]

    # Train the chunks (workers at a time); every finished chunk's lines are in the log at once.
    # A chunk with any trial missing from the log is trained whole, in the layout of an
    # uninterrupted run, so the lines a resumed run writes are bit-for-bit those the
    # uninterrupted run would have written (on the CPU).
    units = [u for u in units if any(t not in done for t in u)]
    # for the ETA: a step costs about (1 + batch_size / 32) x its parameters (measured on CPU)
    work = [math.ceil(n_train / u[0].batch_size) * (1 + u[0].batch_size / 32) * sum(n_params(t.model, t.hidden) for t in u)
            for u in units]
    fractions, finished, last_print, lock = [0.0] * len(units), 0, [time.perf_counter()], threading.Lock()

    def label(unit):
        seeds = sorted({t.seed for t in unit})
        return f"batch size {unit[0].batch_size}" + ("" if len(seeds) == hp.seeds else
                                                      f", seeds {seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else f", seed {seeds[0]}")

    def progress(ui, fraction):  # called from the worker threads
        with lock:
            fractions[ui] = fraction
            now = time.perf_counter()
            if now - last_print[0] < 5:
                return
            last_print[0] = now
            f = sum(w * fr for w, fr in zip(work, fractions)) / sum(work)
            elapsed = now - t0
            running = ", ".join(f"{label(u)} {100 * fr:.0f}%" for u, fr in zip(units, fractions) if 0 < fr < 1)
            print(f"  {finished}/{len(todo)} trials done ({running}), elapsed {elapsed:.0f}s, "
                  f"remaining ~{elapsed * (1 - f) / max(f, 1e-9):.0f}s", flush=True)

    status = "ok"
    try:
        print(f"log: {log_path}\n{len(trials)} trials, {len(trials) - len(todo)} already in the log, "
              f"{len(todo)} to train on {device} ({n_train} training images)", flush=True)
        for unit, results in train_groups(units, data, workers, progress):
            missing = sorted(t for t in unit if t not in done)
            for t in missing:
                log.write(trial_record(t, results[t]) + "\n")
                done[t] = {k: str(v) for k, v in results[t].items()}
            log.flush()
            with lock:
                fractions[units.index(unit)] = 1.0
                finished += len(missing)
            print(f"  {finished}/{len(todo)} trials done ({label(unit)}), "
                  f"elapsed {time.perf_counter() - t0:.1f}s", flush=True)
    except (KeyboardInterrupt, BrokenPipeError):  # Ctrl-C, SIGTERM, stdout's reader gone (`| head`):
        if not todo:  # (a --resume of a finished log: nothing to interrupt)
            raise
        status = "interrupted"  # the finished chunks' lines are in the log already
    if todo:
        log.write(f"done: trials:{len(done)} time:{time.perf_counter() - t0:.1f}s new_trials:{finished} "
                  f"status:{status}\n")
    log.close()
    if status == "interrupted":
        print(f"interrupted: {finished} of the {len(todo)} trials to train are in {log_path}; resume with: "
              f"python train_mnist_ffn.py --resume {log_path}", file=sys.stderr, flush=True)
        raise SystemExit(130)

    # summary: the best validation accuracy per model and hidden size, and its test accuracy
    wanted = set(trials)
    print(f"\n{'model':<8} {'hidden':>6} {'params':>7} {'best val':>9} {'its test':>9}  batch_size,lr,seed")
    for model in hp.models:
        for h in sorted({t.hidden for t in trials if t.model == model}):
            mine = [(float(v["val_acc"]), float(v["test_acc"]), t) for t, v in done.items()
                    if t.model == model and t.hidden == h and t in wanted]
            val, test, t = max(mine, key=lambda m: (m[0] if m[0] == m[0] else -1, m[1]))
            print(f"{model:<8} {h:>6} {n_params(model, h):>7} {val:>9.4f} {test:>9.4f}  {t.batch_size},{t.lr!r},{t.seed}")
    print(f"\n{len(todo)} trials trained in {time.perf_counter() - t0:.1f}s; log: {log_path}\n"
          f"next: python analyze.py {log_path}")
    return log_path


if __name__ == "__main__":
    try:
        main()
        sys.stdout.flush()  # the summary (to a pipe, stdout is written when its buffer fills)
    except BrokenPipeError:  # stdout's reader left during the summary (`| head`): the log is complete,
        pass  # and the failed write dropped what was left to say (Python's last flush has nothing to do)
    except SystemExit as e:
        if e.code != 130:
            raise
        # Interrupted: the log is written and closed. Python's own teardown of the modules torch
        # loaded took up to a second more on the 2-core CPU; whoever pressed Ctrl-C gets the
        # prompt back now instead.
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except OSError:  # its reader is gone (`| head`): nothing more can be said there
                pass
        os._exit(130)
