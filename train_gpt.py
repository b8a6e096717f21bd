"""train_gpt.py: the modded-nanogpt "ModernArch" GPT-2 (124M) speedrun record, with the MLP as a flag.

What it is
    The 2024-10-14 ModernArch record of modded-nanogpt, rewritten as one readable file: GPT-2
    small (12 layers, 6 heads, width 768, vocab 50304) with rotary embeddings, QK-norm,
    weightless RMSNorm, zero-initialised output projections and a tied embedding/head, trained
    on FineWeb-10B GPT-2 tokens with Muon (every matrix in the blocks) and AdamW (the tied
    embedding/head). Every default is the record's. The one switch the study needs is --mlp, an
    entry of MLPS (widths for d = 768):
        relu2        the record (the default): 768 -> 3072, relu(x)^2, 3072 -> 768
        swiglu_thin  seed 003: gate and value 768 -> 1536, silu(gate) * value, 1536 -> 768
        relu, gelu   768 -> 3072, relu(x) or gelu(x) (the exact, erf one), 3072 -> 768
        reglu, geglu, swiglu   Shazeer (2020)'s GLU variants at the record's parameter count: gate
                     and value 768 -> 2048 (8d/3, to a multiple of 128), act(gate) * value, 2048 -> 768
    To add an MLP, write its class (or reuse MLP / GatedMLP) and add its entry to MLPS: the MLP
    section is right below the attention. --mlp, the log and the tests follow from MLPS.

How to run
    python data/cached_fineweb10B.py 8                        # val shard + 8 train shards (1500 steps)
    torchrun --standalone --nproc_per_node=8 train_gpt.py --mlp swiglu_thin     # 8 GPUs, 5100 steps
    torchrun --standalone --nproc_per_node=1 train_gpt.py --mlp relu2 --num-iterations 1500   # 1 GPU
    python train_gpt.py --mlp relu2 --num-iterations 1500     # also 1 GPU, one process
    python train_gpt.py --mlp relu2 --num-iterations 1500 --save-every 250    # checkpoints beside the log
    python train_gpt.py --resume logs/gpt-<time>-<id>.txt     # continue that run after a crash or a kill
    # two nodes of 8 GPUs (run on each node; --node-rank 0 on the first):
    torchrun --nnodes=2 --node-rank=0 --nproc_per_node=8 --master-addr=HOST0 --master-port=29500 train_gpt.py
    # CPU smoke run (seconds, no GPU, no download):
    python data/make_tiny_shards.py --out data/tiny && python train_gpt.py \\
        --train-files 'data/tiny/fineweb_train_*.bin' --val-files 'data/tiny/fineweb_val_*.bin' \\
        --vocab-size 512 --n-layer 2 --n-embd 64 --n-head 2 --seq-len 64 --batch-size 16 \\
        --device-batch-size 16 --num-iterations 40 --val-every 10 --val-tokens 8192 --no-compile --device cpu
    The global batch (512 sequences of 1024 tokens) is the same on any number of GPUs: each
    step accumulates batch_size / (device_batch_size x world_size) micro-steps. On a GPU that
    runs out of memory, halve --device-batch-size (the accumulation doubles to keep the batch).

Measured results (docs/benchmarks.md has every figure with its machine)
    This file on one NVIDIA H200 (torch 2.11 + CUDA 13): the full model, 8 micro-steps of
    64 x 1024 random tokens a step, torch.compile, one run each, step_avg over steps 11-20.
    One machine, one day, relu2: 985.7 ms/step, peak 31,536 MiB allocated, before the speed levers
    (commit 6aac9ba); 974.5 ms/step, 35,097 MiB with three levers. Each lever off -> on, on its own
    part (bench/bench_gpt.py --components): the head + loss chunked, its gradient in the forward,
    31.30 -> 30.54 ms a micro-step; q/k/v from one matmul, 4.27 -> 4.49 ms an attention layer
    (slower); Newton-Schulz batched, 59.42 -> 9.21 ms a Muon step. Kept: batched Newton-Schulz
    only (the chunked head saved ~0.6% of a step and, the one lever that changes the forward's
    activations, is the likely cause of the +3.5 GB, unverified). An H200 on another day, before
    the levers: relu2 926.6, swiglu_thin 881.5, the record's own script 978.0 ms/step (31,073 MiB;
    compiling about 100 s): machines differ by ~6%, and the 1.15x target over the record is not reached.
    Published (the record's script): the record, 8x H100, PyTorch 2.4.1, 5100 steps:
        val_loss 3.2741, train_time 910546ms, step_avg 178.89ms.
    Seed 003 (published, the record's script with the MLP swapped):
        1x A100 40GB, 1500 steps: relu2 2344.31 ms/step val 3.5349 31026 MiB;
                                  swiglu_thin 2142.81 ms/step val 3.5589 28960 MiB.
        8x A100, 5100 steps: relu2 322.43 ms/step val 3.2950; swiglu_thin 296.30 ms/step val 3.3268.
    This file, the CPU smoke run above (on a shared 2-core x86 VM, torch 2.13.0 CPU, fp32; a check
    that it learns, not a speed figure): about 4 s in all, 18-24 ms/step;
        relu2       val_loss 6.3184 (step 0) -> 4.0946 (10) -> 3.5361 (20) -> 3.2725 (30) -> 3.1912 (40)
        swiglu_thin val_loss 6.2712 (step 0) -> 4.7385 (10) -> 3.9816 (20) -> 3.7213 (30) -> 3.6511 (40)
    (log(512) = 6.24 is a uniform guess, 1.82 the tiny language's entropy rate.) Without
    --vocab-size 512 the 50304-way head makes it ~15x slower (18 s) and it falls 10.77 -> 4.23.

Choices where the record is silent or this file differs (docs/train_gpt.md describes them)
    - Paths: a relative --train-files/--val-files glob is matched from the current folder; if
      nothing matches there it is matched from this file's folder, where
      data/cached_fineweb10B.py puts the data. --log-dir is relative to the current folder.
    - Peak memory goes into the log file (the record printed it to stdout only).
    - train_loss is the mean loss of the whole global batch (all micro-steps, all ranks); the
      record printed rank 0's last micro-batch loss. It makes 1 and N GPUs comparable.
    - The shard window moves on to the next shard when the step's windows of *all* ranks would
      not fit (the record tested each rank's own window, so ranks could switch at different steps).
    - Data order: the record fetches a batch before its loop and then resets its loader, so its
      first step trains on its first micro-batch twice and every later micro-batch comes one
      late. Here step s reads the s-th step's micro-batches in order, none of them twice.
    - --warmdown-iters larger than --num-iterations is clamped to it (the record's formula
      would start the run at a reduced learning rate); the log holds the value used.
    - Precision: bf16 autocast on CUDA (the record); fp32 on CPU by default (--precision).
    - The gated MLPs (swiglu_thin and the GLU variants) compute gate and value with one matmul
      (one weight, gate rows first: 768 -> 3072 for swiglu_thin); Muon orthogonalises the two
      halves separately, as if they were the seed's two matrices. So with a gated MLP the model
      has 72 Muon parameters and 84 orthogonalised matrices (the record: 72 and 72).
    - The config: record holds every field of Hyperparameters (the value used where one is
      resolved or clamped: device, precision, warmdown_iters) and the derived keys (mlp_hidden,
      params, grad_accum, ...); the log contract's keys first, in its order.
    - Speed lever: Muon's Newton-Schulz runs once per shape on each rank's same-shaped matrices
      stacked (batched), not once per matrix: the same result bit for bit (tests/test_gpt_math.py);
      bench/bench_gpt.py --without batched_ns / --components measures it.
"""
import argparse
import dataclasses
import glob
import hashlib
import itertools
import math
import os
import platform
import resource
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------------
# Hyperparameters: the record's values. Every field is a command-line flag (--num-iterations ...)
# and a key of the log's config: record.


@dataclass
class Hyperparameters:
    mlp: str = field(default="relu2", metadata=dict(choices=lambda: list(MLPS),     # MLPS's names when parsed
                     help="the MLP of every block: a name in MLPS, the MLP section of this file (relu2: the "
                          "record; swiglu_thin: seed 003)"))
    # model
    n_layer: int = field(default=12, metadata=dict(help="transformer blocks"))
    n_head: int = field(default=6, metadata=dict(help="attention heads (head dim = n_embd / n_head)"))
    n_embd: int = field(default=768, metadata=dict(help="model width"))
    vocab_size: int = field(default=50304, metadata=dict(help="GPT-2's 50257 padded to a multiple of 128"))
    # batch: batch_size sequences of seq_len tokens per step, split into micro-steps
    seq_len: int = field(default=1024, metadata=dict(help="tokens per sequence"))
    batch_size: int = field(default=512, metadata=dict(help="global batch in sequences, on any number of GPUs"))
    device_batch_size: int = field(default=64, metadata=dict(
        help="sequences per GPU per micro-step; halve it on out-of-memory"))
    # optimisation
    num_iterations: int = field(default=5100, metadata=dict(help="training steps (seed 003's short runs: 1500)"))
    lr: float = field(default=0.0036, metadata=dict(help="AdamW lr of the tied embedding/head"))
    muon_lr: float = field(default=0.00036, metadata=dict(help="Muon lr of the matrices in the blocks"))
    muon_momentum: float = field(default=0.95, metadata=dict(help="Muon's Nesterov momentum"))
    ns_steps: int = field(default=5, metadata=dict(help="Newton-Schulz iterations in Muon"))
    warmup_iters: int = field(default=0, metadata=dict(help="linear lr warmup steps"))
    warmdown_iters: int = field(default=1450, metadata=dict(help="final steps over which lr falls linearly to 0"))
    # evaluation
    val_every: int = field(default=125, metadata=dict(help="validate every N steps (0: only at the end)"))
    val_tokens: int = field(default=10485760, metadata=dict(help="first N tokens of the val shard(s)"))
    # run
    seed: int = field(default=0, metadata=dict(help="seed of the initialisation"))
    train_files: str = field(default="data/fineweb10B/fineweb_train_*.bin", metadata=dict(help="glob of train shards"))
    val_files: str = field(default="data/fineweb10B/fineweb_val_*.bin", metadata=dict(help="glob of val shards"))
    compile: bool = field(default=True, metadata=dict(help="torch.compile the model (--no-compile to skip)"))
    device: str = field(default="auto", metadata=dict(choices=["auto", "cuda", "cpu"],
                        help="auto: cuda if there is one"))
    precision: str = field(default="auto", metadata=dict(choices=["auto", "bf16", "fp32"],
                           help="autocast dtype; auto: bf16 on CUDA (the record), fp32 on CPU"))
    threads: int = field(default=1, metadata=dict(
        help="torch's CPU threads per process. One is best on a small or shared CPU: with more, a busy "
             "core stalls the others (the CPU smoke run: 3.4 s idle, 2 minutes beside one busy process)"))
    log_dir: str = field(default="logs", metadata=dict(help="folder of the log file"))
    # checkpoints: logs/gpt-<time>-<id>/step<N>.pt, next to the run's log
    save_every: int = field(default=0, metadata=dict(help="write a checkpoint every N steps (0: never)"))
    save_final: bool = field(default=False, metadata=dict(help="write a checkpoint after the last step"))
    keep_last: int = field(default=0, metadata=dict(help="keep only the K newest checkpoints of the run (0: all)"))
    resume: str = field(default="", metadata=dict(
        help="continue a run: its checkpoint (logs/gpt-<time>-<id>/step<N>.pt), or its log (the newest checkpoint)"))


class UsageError(Exception):
    """A problem with the run's inputs: printed as one line `error: ...`, exit status 2."""


class FlagParser(argparse.ArgumentParser):
    def error(self, message):                    # argparse's usage + error lines, as one line
        if message.startswith("unrecognized arguments: ") and any(os.path.exists(a) for a in message.split()[2:]):
            raise UsageError(f"{message}: quote the --train-files / --val-files glob, or the shell expands it")
        if message.endswith("expected one argument"):            # `--lr -inf`: argparse takes -inf for a flag
            flag = message.split()[1].rstrip(":")
            raise UsageError(f"{message}: give it a value (one that starts with '-' goes as {flag}=VALUE)")
        raise UsageError(f"{message} (python train_gpt.py --help lists the flags)")


def parse_flags(argv=None) -> dict:
    """The flags typed on the command line, {field name: value}: one flag per dataclass field."""
    parser = FlagParser(description=__doc__.split("\n\n")[0], argument_default=argparse.SUPPRESS)
    for f in dataclasses.fields(Hyperparameters):
        flag, help = "--" + f.name.replace("_", "-"), f"{f.metadata['help']} (default: {f.default!r})"
        if f.type is bool or f.type == "bool":
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, help=help)
        else:
            choices = f.metadata.get("choices")
            parser.add_argument(flag, dest=f.name, type=type(f.default), help=help,
                                choices=choices() if callable(choices) else choices)
    return vars(parser.parse_args(argv))


def parse_args(argv=None) -> Hyperparameters:
    """The run's settings: the flags typed, the dataclass's defaults for the others."""
    return Hyperparameters(**parse_flags(argv))


AT_LEAST_ONE = ("n_layer", "n_head", "n_embd", "vocab_size", "seq_len", "batch_size", "device_batch_size",
                "num_iterations", "val_tokens", "threads")
AT_LEAST_ZERO = ("ns_steps", "warmup_iters", "warmdown_iters", "val_every", "save_every", "keep_last")


def check_settings(hp: Hyperparameters, world_size: int):
    """Refuse, before anything is read or written, a setting out of its range or at odds with the others."""
    def flag(name):
        return f"--{name.replace('_', '-')} {getattr(hp, name)}"

    defaults = Hyperparameters()
    if hp.mlp not in MLPS:                       # argparse checks a flag; this, a resumed run's setting
        raise UsageError(f"--mlp {hp.mlp}: not an entry of MLPS in {Path(__file__).name} ({', '.join(MLPS)}); "
                         "add it there, or pick one of those")
    for name in AT_LEAST_ONE + AT_LEAST_ZERO:
        lowest = 1 if name in AT_LEAST_ONE else 0
        if getattr(hp, name) < lowest:
            raise UsageError(f"{flag(name)}: must be {lowest} or more (default {getattr(defaults, name)})")
    for name in ("lr", "muon_lr"):               # finite in float32, where the optimisers compute
        if not 0 <= getattr(hp, name) < torch.finfo(torch.float32).max:
            raise UsageError(f"{flag(name)}: must be a finite number >= 0 (default {getattr(defaults, name)})")
    if not 0 <= hp.muon_momentum < 1:
        raise UsageError(f"{flag('muon_momentum')}: must be at least 0 and below 1 (default {defaults.muon_momentum})")
    cpus = os.cpu_count() or 1
    if hp.threads > cpus:                        # more only wait for each other (and 100000 crash torch)
        raise UsageError(f"{flag('threads')}: more than the {cpus} CPUs of this machine; use {cpus} or fewer "
                         f"(default {defaults.threads})")
    if not hp.log_dir:
        raise UsageError("--log-dir '': give it a folder (e.g. --log-dir logs)")
    if not 0 <= hp.seed < 2**64:
        raise UsageError(f"{flag('seed')}: must be between 0 and 2^64 - 1 (torch's seeds)")
    if hp.n_embd % hp.n_head or (hp.n_embd // hp.n_head) % 2:
        raise UsageError(f"{flag('n_head')}: --n-embd {hp.n_embd} must split into {hp.n_head} heads of even "
                         "size (rotary turns pairs of dimensions); pick a width and head count where it does")
    if hp.warmup_iters > hp.num_iterations:
        raise UsageError(f"{flag('warmup_iters')}: more than --num-iterations {hp.num_iterations}, the lr would "
                         "never reach its value; lower it")
    micro_batch = hp.device_batch_size * world_size
    if hp.batch_size % micro_batch:
        raise UsageError(f"{flag('batch_size')}: not a multiple of --device-batch-size {hp.device_batch_size} x "
                         f"{world_size} processes = {micro_batch}; pick values where it is (gradient "
                         "accumulation = batch / (device batch x processes))")
    if hp.val_tokens % (micro_batch * hp.seq_len):
        raise UsageError(f"{flag('val_tokens')}: not a multiple of --device-batch-size x --seq-len x processes "
                         f"= {micro_batch * hp.seq_len}; pick a multiple of it")
    if hp.save_every > hp.num_iterations:
        raise UsageError(f"{flag('save_every')}: more than --num-iterations {hp.num_iterations}, so no checkpoint "
                         "would be written; lower it (or use --save-final for one at the end)")
    if hp.keep_last and not (hp.save_every or hp.save_final):
        raise UsageError(f"{flag('keep_last')}: no checkpoints are written; add --save-every N (or --save-final)")


# ----------------------------------------------------------------------------------------------
# The model


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, (x.size(-1),))          # weightless, over the last dimension


def rotary_cos_sin(seq_len: int, head_dim: int, device, dtype=torch.float32, base: float = 10000.0):
    """cos and sin of shape (seq_len, head_dim/2): pair i of a head rotates at base^(-2i/head_dim).

    The angles are float32, as the record computes them; cos and sin are taken in `dtype` (the
    model's: float32, or float64 in the tests)."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq).to(dtype)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Half-split rotation of x (B, T, H, D): dims (i, i + D/2) form the rotated pairs."""
    cos, sin = cos[None, :, None, :].to(x.dtype), sin[None, :, None, :].to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.n_head, self.head_dim = n_head, n_embd // n_head
        self.c_q = nn.Linear(n_embd, n_embd, bias=False)
        self.c_k = nn.Linear(n_embd, n_embd, bias=False)
        self.c_v = nn.Linear(n_embd, n_embd, bias=False)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=False)
        self.c_proj.weight.data.zero_()          # each block starts as the identity

    def forward(self, x, cos, sin):
        B, T, C = x.shape
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_head, self.head_dim)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        q, k = rms_norm(q), rms_norm(k)          # QK-norm over the head dim
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


# ---- The MLP: the one place a researcher edits. ------------------------------------------------
# MLPS (below the classes) maps each --mlp name to a callable that builds the MLP for the model width
# d. To add an MLP, add an entry, e.g. `"bilinear": lambda d: GatedMLP(d, glu_hidden(d), lambda x: x)`,
# or write a class here and add `"mine": MyMLP`. The rest follows from MLPS: --mlp's choices, the
# log's mlp_hidden and the tests (tests/test_gpt_math.py then asks for the entry's reference formula,
# written there from the MLP's definition). An MLP module
#   - maps (B, T, d) to (B, T, d) and names its output projection c_proj: the log's mlp_hidden is
#     c_proj.in_features, and c_proj starts at zero, so that each block starts as the identity (the record);
#   - has matrices only (no biases: Muon takes every parameter of the blocks, and it is for matrices);
#   - may stack k matrices in one weight (rows) and say so with `weight.muon_blocks = k`: Muon then
#     orthogonalises each of the k blocks on its own, as if they were k separate weights.


class MLP(nn.Module):
    """d -> hidden, activation, hidden -> d. The record: hidden 4d, relu(x)^2; 2 d hidden weights."""

    def __init__(self, n_embd: int, hidden: int, activation):
        super().__init__()
        self.activation = activation
        self.c_fc = nn.Linear(n_embd, hidden, bias=False)
        self.c_proj = nn.Linear(hidden, n_embd, bias=False)
        self.c_proj.weight.data.zero_()

    def forward(self, x):
        return self.c_proj(self.activation(self.c_fc(x)))


class GatedMLP(nn.Module):
    """A gated linear unit (Shazeer 2020, "GLU Variants Improve Transformer"): gate and value
    d -> hidden, activation(gate) * value, hidden -> d; 3 d hidden weights.

    Gate and value are one (2 hidden, d) weight, gate rows first, so one matmul computes both (the
    same init as two nn.Linear(d, hidden): the bound depends on the input width only); with
    muon_blocks = 2, Muon treats the halves as two separate hidden x d matrices.
    """

    def __init__(self, n_embd: int, hidden: int, activation):
        super().__init__()
        self.activation = activation
        self.c_fc = nn.Linear(n_embd, 2 * hidden, bias=False)
        self.c_fc.weight.muon_blocks = 2
        self.c_proj = nn.Linear(hidden, n_embd, bias=False)
        self.c_proj.weight.data.zero_()

    def forward(self, x):
        gate, value = self.c_fc(x).chunk(2, dim=-1)
        return self.c_proj(self.activation(gate) * value)


def relu2(x):
    return F.relu(x).square()


def glu_hidden(n_embd: int) -> int:
    """The gated MLPs' width at the record's parameter count: 3 d h = 8 d^2 at h = 8d/3, rounded to
    the nearest multiple of 128 (halves up; at least 128). d = 768: 2048, exactly 8 d^2 weights."""
    return 128 * max(1, (8 * n_embd + 192) // 384)


MLPS = {                                 # --mlp NAME: a callable that builds the MLP for model width d
    "relu2": lambda d: MLP(d, 4 * d, relu2),                    # the record (the default)
    "swiglu_thin": lambda d: GatedMLP(d, 2 * d, F.silu),        # seed 003: 6 d^2 weights, 3/4 of the record's
    "relu": lambda d: MLP(d, 4 * d, F.relu),
    "gelu": lambda d: MLP(d, 4 * d, F.gelu),                    # the exact (erf) GELU
    "reglu": lambda d: GatedMLP(d, glu_hidden(d), F.relu),      # Shazeer (2020)'s GLU variants, at the
    "geglu": lambda d: GatedMLP(d, glu_hidden(d), F.gelu),      # record's parameter count
    "swiglu": lambda d: GatedMLP(d, glu_hidden(d), F.silu),
}


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, mlp: str):
        super().__init__()
        self.attn = CausalSelfAttention(n_embd, n_head)
        self.mlp = MLPS[mlp](n_embd)

    def forward(self, x, cos, sin):
        x = x + self.attn(rms_norm(x), cos, sin)
        return x + self.mlp(rms_norm(x))


class GPT(nn.Module):
    def __init__(self, vocab_size=50304, n_layer=12, n_head=6, n_embd=768, mlp="relu2", max_seq_len=1024):
        super().__init__()
        self.head_dim = n_embd // n_head
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.blocks = nn.ModuleList([Block(n_embd, n_head, mlp) for _ in range(n_layer)])
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.wte.weight = self.lm_head.weight    # tied: one matrix, nn.Linear's init
        # The rotary cos/sin, computed once and kept, as the record does. Computed inside the
        # compiled forward, inductor fused them into the rotary kernel and took cos and sin again
        # for every element of q and k (measured on an H100: 17% of a step). Not saved.
        w = self.lm_head.weight
        cos, sin = rotary_cos_sin(max_seq_len, self.head_dim, w.device, w.dtype)
        self.register_buffer("rotary_cos", cos, persistent=False)
        self.register_buffer("rotary_sin", sin, persistent=False)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        T = idx.size(1)
        if T <= self.rotary_cos.size(0):
            cos, sin = self.rotary_cos[:T], self.rotary_sin[:T]
        else:                                    # longer than the table: this call computes its own
            cos, sin = rotary_cos_sin(T, self.head_dim, idx.device, self.rotary_cos.dtype)
        x = self.wte(idx)
        for block in self.blocks:
            x = block(x, cos, sin)
        logits = self.lm_head(rms_norm(x))
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))   # fp32 (or float64) for the loss
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def count_parameters(hp) -> int:
    """The model's weights before it is built, for the memory check: one block built on the meta
    device (nothing allocated) times --n-layer, plus the tied embedding/head. Not the whole GPT on
    the meta device: for --n-layer 1000000 that took minutes and gigabytes of Python objects before
    the check could refuse it. The tests hold it to the count of the built model."""
    with torch.device("meta"):
        block = Block(hp.n_embd, hp.n_head, hp.mlp)
    return hp.vocab_size * hp.n_embd + hp.n_layer * sum(p.numel() for p in block.parameters())


# ----------------------------------------------------------------------------------------------
# Muon: momentum, orthogonalised by a Newton-Schulz iteration


def newton_schulz5(G: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Approximately the orthogonal factor U V^T of G = U S V^T, in bf16; G may be a batch of
    same-shaped matrices (..., rows, cols), each orthogonalised on its own.

    The quintic p(s) = a s + b s^3 + c s^5, applied `steps` times to every singular value of
    G / |G|_F, pushes them all into a band around 1 (not exactly onto 1: these coefficients
    trade accuracy for a steep slope at 0, so even tiny singular values are lifted quickly).
    """
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.bfloat16()
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + eps)      # all singular values <= 1
    tall = X.size(-2) > X.size(-1)
    if tall:                                     # iterate on the wide side: X X^T is the smaller Gram
        X = X.mT
    for _ in range(steps):
        # grouped as the record groups it, so its bf16 roundings: a X + b (A X) + (c A)(A X).
        # (b A + c A A) X is the same polynomial with fewer multiply-adds on a wide X (n^3 for
        # A A instead of n n m for A (A X)) but rounds at other points
        A = X @ X.mT
        B = A @ X
        X = a * X + b * B + c * A @ B
    return X.mT if tall else X


class Muon(torch.optim.Optimizer):
    """Nesterov momentum, each matrix's update orthogonalised and scaled by sqrt(max(rows, cols)).

    The scale goes into the learning rate (fp32), as the record: the bf16 update is not
    rounded a second time.

    With world_size > 1 the matrices are shared out: rank r orthogonalises the matrices
    i % world_size == r, writes them into a flat bf16 buffer (zeros elsewhere) and one
    all_reduce(SUM) hands every rank every update, the same update as if each rank did all.
    A weight with `muon_blocks = k` counts as k matrices (its row blocks).

    batched: a rank's matrices of one shape go through Newton-Schulz together, as one batch
    (3 calls a step for the 12-layer model instead of 72-84: the iteration's bf16 matmuls are
    small, 768 wide, and one call each left the GPU mostly waiting on launches).
    """

    def __init__(self, params, lr=0.00036, momentum=0.95, nesterov=True, ns_steps=5,
                 rank=None, world_size=None, compile=False, batched=True):
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps))
        # compiled, as the record: eager, each bf16 matmul and elementwise op of the iteration is
        # its own kernel (measured on an H100: Muon 54.5 ms a step eager, 33-41 ms compiled).
        # dynamic=False: one graph per shape, its kernels tuned for it (a handful of shapes)
        self.newton_schulz = torch.compile(newton_schulz5, dynamic=False) if compile else newton_schulz5
        self.batched = batched
        distributed = dist.is_available() and dist.is_initialized()
        self.rank = rank if rank is not None else (dist.get_rank() if distributed else 0)
        self.world_size = world_size if world_size is not None else (dist.get_world_size() if distributed else 1)

    @staticmethod
    def matrices(params):
        """(param, first row, last row) of every matrix Muon orthogonalises, in a fixed order."""
        out = []
        for p in params:
            assert p.ndim == 2, "Muon is for matrices"
            blocks = getattr(p, "muon_blocks", 1)
            rows = p.size(0) // blocks
            out += [(p, j * rows, (j + 1) * rows) for j in range(blocks)]
        return out

    def orthogonalised(self, updates: dict, steps: int) -> dict:
        """{i: Newton-Schulz of updates[i]}: one call per matrix, or (batched) one per shape."""
        if not self.batched:
            return {i: self.newton_schulz(u, steps=steps) for i, u in updates.items()}
        by_shape = {}
        for i, u in updates.items():
            by_shape.setdefault(tuple(u.shape), []).append(i)
        out = {}
        for ids in by_shape.values():
            out.update(zip(ids, self.newton_schulz(torch.stack([updates[i] for i in ids]), steps=steps).unbind(0)))
        return out

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            items = self.matrices(group["params"])
            updates = {}                         # this rank's matrices: their Nesterov momentum
            for i, (p, r0, r1) in enumerate(items):
                if i % self.world_size == self.rank and p.grad is not None:
                    g = p.grad[r0:r1]
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(p.grad)
                    buf = state["momentum_buffer"][r0:r1]
                    buf.mul_(group["momentum"]).add_(g)
                    updates[i] = g.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf
            done = self.orthogonalised(updates, group["ns_steps"])
            if self.world_size > 1:
                flat = torch.zeros(sum((r1 - r0) * p.size(1) for p, r0, r1 in items),
                                   dtype=torch.bfloat16, device=group["params"][0].device)
                offset = 0
                for i, (p, r0, r1) in enumerate(items):
                    n = (r1 - r0) * p.size(1)
                    if i in done:
                        flat[offset:offset + n] = done[i].flatten()
                    offset += n
                dist.all_reduce(flat, op=dist.ReduceOp.SUM)
                offset = 0
                for i, (p, r0, r1) in enumerate(items):
                    n = (r1 - r0) * p.size(1)
                    done[i] = flat[offset:offset + n].view(r1 - r0, p.size(1))
                    offset += n
            for i, (p, r0, r1) in enumerate(items):
                if i in done:                    # a matrix without a gradient: no update (zeros before)
                    scale = max(r1 - r0, p.size(1)) ** 0.5   # update.square().mean() about 1
                    p[r0:r1].add_(done[i].to(p.dtype), alpha=-group["lr"] * scale)


def build_optimizers(model: GPT, hp: Hyperparameters, rank=None, world_size=None):
    """AdamW on the tied embedding/head, Muon on every matrix inside the blocks (the record's split).
    With hp.compile, Muon's Newton-Schulz iteration is compiled too."""
    head = [model.lm_head.weight]
    matrices = [p for p in model.blocks.parameters()]
    assert len({id(p) for p in head + matrices}) == len(list(model.parameters())), "a parameter has no optimiser"
    adamw = torch.optim.AdamW(head, lr=hp.lr, betas=(0.9, 0.95), weight_decay=0.0,
                              fused=head[0].is_cuda)
    muon = Muon(matrices, lr=hp.muon_lr, momentum=hp.muon_momentum, ns_steps=hp.ns_steps,
                rank=rank, world_size=world_size, compile=hp.compile)
    for opt in (adamw, muon):
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
    return [adamw, muon]


def lr_factor(step: int, num_iterations: int, warmup_iters: int, warmdown_iters: int) -> float:
    """The record's schedule: linear warmup (none by default), 1, then linear to 0 over warmdown."""
    if step < warmup_iters:
        return (step + 1) / warmup_iters
    if step < num_iterations - warmdown_iters:
        return 1.0
    return (num_iterations - step) / warmdown_iters


# ----------------------------------------------------------------------------------------------
# Data: shards of GPT-2 tokens (header of 256 int32: magic, version, token count; then uint16)

SHARD_MAGIC, SHARD_VERSION, HEADER_BYTES = 20240520, 1, 256 * 4
FULL_SHARD_TOKENS = 100_000_000                  # a FineWeb-10B shard: 200,001,024 bytes
DOWNLOAD_SCRIPT = "data/cached_fineweb10B.py"
FINEWEB_DIR = Path(__file__).resolve().parent / "data" / "fineweb10B"     # where DOWNLOAD_SCRIPT puts them


class ShardError(UsageError):
    """A shard file that is not what the header says it is; the message names the file."""


def redo_shard_advice(path, ntok=None) -> str:
    """What to do about a shard cut short: download a FineWeb shard again; remake any other."""
    path = Path(path)
    if ntok == FULL_SHARD_TOKENS or path.resolve().parent == FINEWEB_DIR:
        index = "".join(c for c in path.stem if c.isdigit()).lstrip("0") or "0"    # fineweb_train_000007 -> 7
        folder = "" if path.resolve().parent == FINEWEB_DIR else f" --dir {path.parent}"
        return f"run `python {DOWNLOAD_SCRIPT} {index}{folder}`, which downloads incomplete shards again"
    tiny = " (the synthetic set: `python data/make_tiny_shards.py --out DIR`)" * path.name.startswith("fineweb_")
    return (f"it is not a FineWeb-10B download (those hold {FULL_SHARD_TOKENS:,} tokens): write it again with "
            f"the program that made it{tiny}")


def read_shard_header(path) -> int:
    """Validate the shard's header and size; return its token count."""
    size = os.path.getsize(path)
    if size < HEADER_BYTES:
        raise ShardError(f"{path}: truncated: {size} bytes, shorter than the {HEADER_BYTES}-byte header; "
                         f"{redo_shard_advice(path)}")
    header = np.fromfile(path, dtype="<i4", count=3)
    if header[0] != SHARD_MAGIC:
        raise ShardError(f"{path}: bad magic number {header[0]} (expected {SHARD_MAGIC}): not a token shard; "
                         "check --train-files / --val-files")
    if header[1] != SHARD_VERSION:
        raise ShardError(f"{path}: unsupported shard version {header[1]} (expected {SHARD_VERSION})")
    ntok = int(header[2])
    expected = HEADER_BYTES + 2 * ntok
    if size < expected:
        raise ShardError(f"{path}: truncated: header says {ntok} tokens ({expected} bytes) but the file "
                         f"has {size} bytes; {redo_shard_advice(path, ntok)}")
    if size != expected:
        raise ShardError(f"{path}: size mismatch: header says {ntok} tokens ({expected} bytes) but the file "
                         f"has {size} bytes; {redo_shard_advice(path, ntok)}")
    return ntok


def windows_per_shard(ntok: int, window: int) -> int:
    """Steps one shard of ntok tokens serves when a step reads `window` tokens (+1 for the targets)."""
    return max(0, (ntok - 1) // window)


def shards_needed(num_iterations, batch_size, seq_len, shard_tokens=FULL_SHARD_TOKENS):
    """Full FineWeb train shards a run reads without wrapping around (1500 steps: 8; 5100: 27);
    None when one step reads more tokens than a shard holds (no number of shards will do)."""
    per_shard = windows_per_shard(shard_tokens, batch_size * seq_len)
    return math.ceil(num_iterations / per_shard) if per_shard else None


class DistributedTokenLoader:
    """Batches of (inputs, targets) for one rank.

    A micro-step of the whole job reads one window of B*T*world_size tokens: rank r takes the
    B*T + 1 tokens at offset r*B*T of it, and the window advances by B*T*world_size. A step is
    `micro_steps` windows; before a step the loader moves on to the next shard if the step would
    pass the shard's end (for all ranks at once), and after the last shard it wraps around to the
    first (`wraps` counts it). So the tokens of a step depend on the global batch only: 1 GPU
    with 8 micro-steps reads exactly what 8 GPUs with 1 micro-step read.
    """

    def __init__(self, files, B: int, T: int, rank: int = 0, world_size: int = 1, micro_steps: int = 1,
                 device="cpu", vocab_size: int = 65536):
        self.files, self.B, self.T, self.vocab_size = list(files), B, T, vocab_size
        self.rank, self.world_size, self.micro_steps, self.device = rank, world_size, micro_steps, device
        self.ntoks = [read_shard_header(f) for f in self.files]
        self.window = B * T * world_size
        self.step_tokens = self.window * micro_steps
        for f, n in zip(self.files, self.ntoks):
            if windows_per_shard(n, self.step_tokens) == 0:
                raise ShardError(f"{f}: {n} tokens, fewer than one step reads (--batch-size x --seq-len + 1 = "
                                 f"{self.step_tokens + 1}); lower --batch-size or --seq-len, or use larger shards")
        self.reset()

    def reset(self):
        self.shard, self.position, self.micro, self.wraps = 0, 0, 0, 0
        self.tokens = self._load(0)

    def _load(self, i):
        tokens = np.fromfile(self.files[i], dtype="<u2", count=self.ntoks[i], offset=HEADER_BYTES)
        if len(tokens) and int(tokens.max()) >= self.vocab_size:
            raise ShardError(f"{self.files[i]}: holds token id {int(tokens.max())}, not below --vocab-size "
                             f"{self.vocab_size}")
        return tokens

    def next_batch(self):
        BT = self.B * self.T
        start = self.position + self.rank * BT
        buf = torch.from_numpy(self.tokens[start:start + BT + 1].astype(np.int64))
        self.position += self.window
        self.micro = (self.micro + 1) % self.micro_steps
        if self.micro == 0 and self.position + self.step_tokens + 1 > len(self.tokens):
            self.shard = (self.shard + 1) % len(self.files)
            self.wraps += self.shard == 0
            self.position, self.tokens = 0, self._load(self.shard)
        x, y = buf[:-1].view(self.B, self.T), buf[1:].view(self.B, self.T)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def steps_per_pass(self) -> int:
        """Steps before the loader wraps around to the first shard."""
        return sum(windows_per_shard(n, self.step_tokens) for n in self.ntoks)

    def state_dict(self) -> dict:
        """Where the next step reads, between steps. `position` counts tokens of the whole job's
        stream in the shard, so it means the same on any number of ranks (for the same global batch)."""
        assert self.micro == 0, "the loader's position is saved between steps"
        return dict(shard=self.shard, position=self.position, micro=self.micro, wraps=self.wraps)

    def load_state_dict(self, state: dict):
        self.shard, self.position, self.micro, self.wraps = (state[k] for k in ("shard", "position", "micro", "wraps"))
        self.tokens = self._load(self.shard)

    def file_list(self) -> list:
        """[name, token count] of each shard: what a resumed run must read again."""
        return [[Path(f).name, n] for f, n in zip(self.files, self.ntoks)]


def find_files(pattern: str) -> list:
    """Files matching the glob, from the current folder, else (relative globs) from this file's folder."""
    files = sorted(f for f in glob.glob(pattern) if os.path.isfile(f))
    if not files and pattern and not os.path.isabs(pattern):
        files = sorted(f for f in glob.glob(str(Path(__file__).resolve().parent / pattern)) if os.path.isfile(f))
    return files


def no_files_message(flag: str, pattern: str, need, why: str = "") -> str:
    """Why nothing matches a --train-files / --val-files glob, and what to do about it. need: the
    FineWeb shards the run reads (None: not even one step fits in a shard); why: what adds up to
    need, said after the download command."""
    if not pattern or os.path.isdir(pattern):
        return f"{flag} {pattern or repr('')}: give it a glob of shard files (e.g. '{pattern or 'data/tiny'}/*.bin')"
    folder = Path(pattern).parent
    if folder.name == FINEWEB_DIR.name:          # FineWeb's folder (here, or where --dir put it): download it
        if need is None:
            return (f"no shard matches {flag} {pattern}, and a FineWeb-10B shard ({FULL_SHARD_TOKENS:,} tokens) "
                    "would not hold one step of --batch-size x --seq-len tokens: lower them")
        elsewhere = "" if folder == Path("data/fineweb10B") or folder.resolve() == FINEWEB_DIR else f" --dir {folder}"
        return (f"no shard matches {flag} {pattern}; download FineWeb-10B with "
                f"`python {DOWNLOAD_SCRIPT} {need}{elsewhere}`{why}")
    beside_script = Path(__file__).resolve().parent / folder
    if not folder.is_dir() and not folder.is_absolute() and beside_script.is_dir():
        folder = beside_script
    if not folder.is_dir():
        return f"no file matches {flag} {pattern}: there is no folder {folder}; check the path"
    names = sorted(p.name for p in folder.iterdir())
    holds = (f"it holds {len(names)} other file(s): {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}"
             if names else "it is empty")
    return f"no file in {folder} matches {flag} {pattern} ({holds}); check the pattern (and quote it)"


# ----------------------------------------------------------------------------------------------
# Logging: rank 0 writes stdout and logs/gpt-<UTC time>-<id>.txt, each line flushed at once


def value(v) -> str:
    """A record value: no spaces (paths with spaces get %20)."""
    return str(v).replace(" ", "%20")


# The config: record's first keys, in the log contract's order (analyze.py and users' greps rely on
# it). Every other field of Hyperparameters follows in the dataclass's order, then the other derived keys.
CONFIG_KEYS_FIRST = ("mlp n_layer n_head n_embd mlp_hidden vocab_size params seq_len batch_size device_batch_size "
                     "grad_accum num_iterations lr muon_lr warmup_iters warmdown_iters val_every val_tokens seed "
                     "compile train_files val_files").split()


def config_record(hp: Hyperparameters, **derived) -> str:
    """The config: record: every field of hp (booleans as 0/1), and the derived keys. A derived key that
    is also a field (a value resolved or clamped: precision, warmdown_iters) gives the value used."""
    values = {**{f.name: getattr(hp, f.name) for f in dataclasses.fields(hp)}, **derived}
    assert set(CONFIG_KEYS_FIRST) <= set(values), f"no value for {set(CONFIG_KEYS_FIRST) - set(values)}"
    keys = CONFIG_KEYS_FIRST + [k for k in values if k not in CONFIG_KEYS_FIRST]
    return "config: " + " ".join(f"{k}:{value(int(values[k]) if isinstance(values[k], bool) else values[k])}"
                                 for k in keys)


class RunLog:
    """Rank 0's log (appended to: a resumed run continues its file); RunLog() is the other ranks' (silent)."""

    def __init__(self, path=None):
        self.file = open(path, "a") if path is not None else None
        self.path = path
        self.stdout_gone = False

    def write(self, line: str, echo: bool = True):
        if self.file is not None:                # the file first: a line on screen is a line in the log
            self.file.write(line + "\n")
            self.file.flush()
            if echo and not self.stdout_gone:
                try:
                    print(line, flush=True)
                except BrokenPipeError:          # stdout's reader went away (`| head`): the run stops as
                    self.stdout_gone = True      # on Ctrl-C, and its last records go to the file only
                    raise

    def close(self):
        if self.file is not None:
            self.file.close()


def environment_text() -> str:
    lines = [f"python: {sys.version.split()[0]}", f"torch: {torch.__version__}", f"numpy: {np.__version__}",
             f"platform: {platform.platform()}", f"cpu_count: {os.cpu_count()}",
             f"cuda: {torch.version.cuda} available:{torch.cuda.is_available()}",
             f"torch_threads: {torch.get_num_threads()}"]
    if shutil.which("nvidia-smi"):
        try:
            lines.append(subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout)
        except (OSError, subprocess.SubprocessError) as e:
            lines.append(f"nvidia-smi failed: {e}")
    return "\n".join(lines)


def peak_memory_record(device: torch.device) -> str:
    if device.type == "cuda":
        return (f"peak_memory: allocated:{torch.cuda.max_memory_allocated(device) // 2**20}MiB "
                f"reserved:{torch.cuda.max_memory_reserved(device) // 2**20}MiB")
    # No allocator statistics on CPU: the process's peak resident set size instead (Linux: KiB).
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    return f"peak_memory: allocated:nanMiB reserved:nanMiB max_rss:{rss_mib}MiB"


def is_out_of_memory(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and "DefaultCPUAllocator: can't allocate memory" in str(e))


# ----------------------------------------------------------------------------------------------
# Checkpoints: logs/gpt-<time>-<id>/step<N>.pt beside the log, with everything the next step needs

CHECKPOINT_KIND, CHECKPOINT_VERSION = "train_gpt.py checkpoint", 1
# Settings a resumed run may change: how it runs, not what it computes. (The shards that --train-files
# and --val-files match must still be the run's, and --precision must resolve to the run's dtype.)
RESUMABLE = {"device_batch_size", "compile", "device", "precision", "threads", "log_dir", "train_files",
             "val_files", "save_every", "save_final", "keep_last", "resume"}


def checkpoint_folder(log_path) -> Path:
    return Path(log_path).with_suffix("")        # logs/gpt-<time>-<id>.txt -> logs/gpt-<time>-<id>/


def checkpoints_in(folder) -> list:
    """[(step, path)] of the folder's complete checkpoints, oldest first (a *.tmp is an unfinished one)."""
    return sorted((int(p.stem[4:]), p) for p in Path(folder).glob("step*.pt") if p.stem[4:].isdigit())


def find_checkpoint(resume: str):
    """The checkpoint --resume names (or the newest of the log / folder it names), and the run's log.
    A log or folder of a run that finished is refused here, before any checkpoint is loaded."""
    path = Path(resume)
    if path.is_file() and path.suffix == ".pt":
        return path, path.parent.with_suffix(".txt")
    if path.is_file():
        with open(path, errors="replace") as f:
            if not f.readline().startswith("run:gpt "):
                raise UsageError(f"--resume {resume}: not a train_gpt.py log or checkpoint; pass a run's log "
                                 "(logs/gpt-<time>-<id>.txt) or one of its checkpoints "
                                 "(logs/gpt-<time>-<id>/step<N>.pt)")
        folder = checkpoint_folder(path)
    elif path.is_dir():
        folder = path
    else:
        raise UsageError(f"--resume {resume}: no such file or folder; pass a run's log (logs/gpt-<time>-<id>.txt) "
                         "or one of its checkpoints (logs/gpt-<time>-<id>/step<N>.pt)")
    found = checkpoints_in(folder) if folder.is_dir() else []
    if not found:
        raise UsageError(f"--resume {resume}: the run has no checkpoint in {folder}/ (it ran without --save-every "
                         "or --save-final), so it cannot be resumed; start it again with --save-every N")
    log = folder.with_suffix(".txt")
    # A finished run's newest checkpoint may be before its end: resuming the log or folder (not a
    # checkpoint named on purpose, e.g. to train its last steps again) would quietly train them
    # again. Refused before the checkpoint is loaded (about 1.5 GB at full size). A missing log is
    # run()'s to report.
    if log.is_file():
        ended = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("done: ")][-1:]
        if ended and " status:ok" in ended[0]:
            raise UsageError(f"--resume {resume}: the run finished (its log ends with `{ended[0]}`); there "
                             "is nothing left to train: start a new run to train longer")
    return found[-1][1], log


def load_checkpoint(path) -> dict:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:                       # a user's file: however it fails to load, one line says so
        reason = (str(e).strip().splitlines() or [""])[0][:200]
        raise UsageError(f"--resume {path}: cannot be read as a checkpoint ({type(e).__name__}: {reason}); "
                         "resume from another checkpoint of the run") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("kind") != CHECKPOINT_KIND:
        raise UsageError(f"--resume {path}: not a train_gpt.py checkpoint")
    if checkpoint.get("version") != CHECKPOINT_VERSION:
        raise UsageError(f"--resume {path}: checkpoint format {checkpoint.get('version')}, but this train_gpt.py "
                         f"reads format {CHECKPOINT_VERSION}; resume with the train_gpt.py that wrote it")
    return checkpoint


def resumed_settings(checkpoint: dict, given: dict, path) -> Hyperparameters:
    """The run's settings from the checkpoint, with the flags typed now that only change how it runs."""
    names = {f.name for f in dataclasses.fields(Hyperparameters)}
    run = Hyperparameters(**{k: v for k, v in checkpoint["hp"].items() if k in names})
    clashes = [f"--{k.replace('_', '-')} {v} (the run's: {getattr(run, k)})" for k, v in given.items()
               if k not in RESUMABLE and v != getattr(run, k)]
    if clashes:
        raise UsageError(f"--resume {path}: {', '.join(clashes)}: a resumed run keeps every setting that changes "
                         "what it computes; drop the flag(s), or start a new run without --resume")
    return dataclasses.replace(run, **{k: v for k, v in given.items() if k in RESUMABLE})


def gathered_muon_state(muon: "Muon") -> dict:
    """Muon's state_dict with every matrix's state, on every rank.

    Muon updates matrix i (in Muon.matrices order) on rank i % world_size only, so a rank's state
    tensors hold current rows for its own matrices and zeros (or, after a resume, stale rows) for the
    others'. One all_reduce per tensor sums each rank's own rows: the state one rank would have.
    """
    state_dict = muon.state_dict()
    if muon.world_size == 1:
        return state_dict
    params = [p for group in muon.param_groups for p in group["params"]]       # state_dict()'s numbering
    owned = {p: [] for p in params}
    for group in muon.param_groups:
        for i, (p, r0, r1) in enumerate(Muon.matrices(group["params"])):
            if i % muon.world_size == muon.rank:
                owned[p].append((r0, r1))
    names = [None] * muon.world_size             # a rank that owns no matrix of a weight has no state for it
    dist.all_gather_object(names, [(i, key) for i, p in enumerate(params) for key in muon.state.get(p, {})])
    state = {}
    for i, key in sorted(set().union(*map(set, names))):
        p = params[i]
        mine = muon.state.get(p, {}).get(key)
        assert mine is None or (torch.is_tensor(mine) and mine.shape == p.shape), \
            f"Muon state {key!r} is not a tensor of its weight's shape: teach gathered_muon_state to gather it"
        full = torch.zeros_like(p, dtype=p.dtype if mine is None else mine.dtype)
        for r0, r1 in owned[p]:
            full[r0:r1] = mine[r0:r1]
        dist.all_reduce(full, op=dist.ReduceOp.SUM)
        state.setdefault(i, {})[key] = full
    return dict(state_dict, state=state)


def write_checkpoint(checkpoint: dict, path: Path, keep_last: int):
    """Write to <path>.tmp, then rename: a kill during the write leaves no file that looks complete."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if keep_last:
        for _, old in checkpoints_in(path.parent)[:-keep_last]:
            old.unlink()


def source_in_log(log_text: str, source: str) -> bool:
    """Whether the log's header holds exactly this source (the header is written as in run())."""
    first_line_end = log_text.find("\n") + 1
    return log_text.startswith("=" * 100 + "\n" + source + "\n", first_line_end)


def command_line(args) -> str:
    """The command that runs this script with args, launched as this process was (python or torchrun)."""
    script = os.path.relpath(__file__)
    script = script if not script.startswith("..") else __file__
    world, local = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    launcher = ("python" if world == 1 else f"torchrun --standalone --nproc_per_node={world}" if local == world
                else "torchrun <your launch flags, on each node>")
    return " ".join([launcher, shlex.quote(script)] + [shlex.quote(str(a)) for a in args])


# ----------------------------------------------------------------------------------------------
# The run


class TrainClock:
    """The record's training time: it runs from step 10 on (the steps before are warm-up: torch.compile
    compiles, caches fill) and stops while the run validates or writes a checkpoint. A resumed run
    starts from the checkpoint's time and step count, so the log reads as one run."""

    def __init__(self, synchronize, ms=0.0, timed_steps=0):
        self.synchronize, self.ms, self.timed_steps, self.t0 = synchronize, ms, timed_steps, None

    def start(self):
        self.synchronize()
        self.t0 = time.perf_counter()

    def stop(self) -> bool:
        """Stop the clock; True if it was running."""
        if self.t0 is None:
            return False
        self.synchronize()
        self.ms += 1000 * (time.perf_counter() - self.t0)
        self.t0 = None
        return True

    def read(self) -> float:
        return self.ms + (1000 * (time.perf_counter() - self.t0) if self.t0 is not None else 0.0)


def raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ    # set by torchrun
    rank = int(os.environ.get("RANK", 0))
    threads = torch.get_num_threads()
    on_main_thread = threading.current_thread() is threading.main_thread()
    if on_main_thread:   # SIGTERM (a job's time limit; torchrun stopping the other ranks) ends the run as Ctrl-C does
        previous_sigterm = signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    try:
        given = parse_flags(argv)
        return run(Hyperparameters(**given), given, argv, distributed)
    except UsageError as e:
        if rank == 0:
            print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    except (KeyboardInterrupt, BrokenPipeError):  # before the training loop, which handles its own
        if rank == 0:
            print("interrupted before training started", file=sys.stderr, flush=True)
        return 130
    finally:
        torch.set_num_threads(threads)           # a caller in the same process (the tests) keeps its own
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous_sigterm)
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def resumed_run(hp: Hyperparameters, given: dict, master: bool):
    """--resume: the run's settings (the checkpoint's; the flags typed now may change how it runs
    only), its checkpoint, the checkpoint's path, the run's log and (rank 0) the log's text."""
    checkpoint_path, log_path = find_checkpoint(hp.resume)
    checkpoint = load_checkpoint(checkpoint_path)
    hp = resumed_settings(checkpoint, given, checkpoint_path)
    if checkpoint["step"] >= hp.num_iterations:
        raise UsageError(f"--resume {checkpoint_path}: the run ended there (step {checkpoint['step']} of "
                         f"{hp.num_iterations}); there is nothing left to train")
    if master and not log_path.is_file():
        raise UsageError(f"--resume {checkpoint_path}: the run's log {log_path} is not there (a resumed run "
                         "appends to it); put it back beside the checkpoint folder")
    log_text = log_path.read_text(errors="replace") if master else ""
    if master and not log_text.startswith(f"run:gpt id:{checkpoint['log_id']} "):
        raise UsageError(f"--resume {checkpoint_path}: {log_path} is not the log of the checkpoint's run "
                         f"(id {checkpoint['log_id']})")
    if master and "log_dir" in given:
        print(f"note: --log-dir is not used by --resume: the run continues in {log_path}", flush=True)
    return hp, checkpoint, checkpoint_path, log_path, log_text


def choose_device(hp: Hyperparameters, local_rank: int, checkpoint):
    """This process's device, and the autocast precision: 'bf16' or 'fp32'."""
    if hp.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda but torch sees no CUDA GPU (torch "
                         f"{torch.__version__}, CUDA build: {torch.version.cuda}); use --device cpu or auto")
    use_cuda = hp.device == "cuda" or (hp.device == "auto" and torch.cuda.is_available())
    if use_cuda:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    precision = hp.precision if hp.precision != "auto" else ("bf16" if use_cuda else "fp32")
    if checkpoint and precision != checkpoint["precision"]:
        raise UsageError(f"--resume: the run trained in {checkpoint['precision']}, this would train in {precision} "
                         f"(--device {hp.device} --precision {hp.precision}); add "
                         f"--precision {checkpoint['precision']}")
    return device, precision


def load_data(hp: Hyperparameters, rank: int, world_size: int, device, checkpoint):
    """This rank's train and val loaders: a step is `micro_steps` micro-batches of each. A resumed
    run's shards must be the run's, and its train loader continues where the run left off."""
    micro_batch = hp.device_batch_size * world_size
    grad_accum = hp.batch_size // micro_batch
    val_steps = hp.val_tokens // (micro_batch * hp.seq_len)
    need = shards_needed(hp.num_iterations, hp.batch_size, hp.seq_len)
    train_files, val_files = find_files(hp.train_files), find_files(hp.val_files)
    if not train_files:
        why = (f" ({hp.num_iterations} steps x {hp.batch_size * hp.seq_len} tokens need {need} "
               f"shard{'s' * (need != 1)} of {FULL_SHARD_TOKENS} tokens)")
        raise UsageError(no_files_message("--train-files", hp.train_files, need, why))
    if not val_files:
        raise UsageError(no_files_message("--val-files", hp.val_files, need))
    train_loader = DistributedTokenLoader(train_files, hp.device_batch_size, hp.seq_len, rank, world_size,
                                          grad_accum, device, hp.vocab_size)
    # validation reads the first val_tokens tokens of the first val shard, as one contiguous "step"
    val_shard_tokens = [read_shard_header(f) for f in val_files][0]
    if windows_per_shard(val_shard_tokens, hp.val_tokens) == 0:
        raise UsageError(f"--val-tokens {hp.val_tokens} is more than the first validation shard {val_files[0]} "
                         f"holds ({val_shard_tokens} tokens, one is kept for the last target); lower it")
    val_loader = DistributedTokenLoader(val_files[:1], hp.device_batch_size, hp.seq_len, rank, world_size,
                                        val_steps, device, hp.vocab_size)
    if checkpoint:
        for flag, loader, kind in (("--train-files", train_loader, "train"), ("--val-files", val_loader, "val")):
            ran, now = checkpoint["data"][kind], loader.file_list()
            if ran != now:
                a, b = next((a, b) for a, b in itertools.zip_longest(ran, now) if a != b)
                say = lambda f: f"{f[0]} ({f[1]} tokens)" if f else "no file"  # noqa: E731
                raise UsageError(f"--resume: {flag} {getattr(hp, flag[2:].replace('-', '_'))} reads {say(b)} where "
                                 f"the run read {say(a)}; pass a {flag} that matches the run's shards")
        train_loader.load_state_dict(checkpoint["loader"])
    return train_loader, val_loader


def build_model(hp: Hyperparameters, device, rank: int, world_size: int, checkpoint):
    """The model and its optimisers: seeded (the same initial weights on every rank), or with a resumed
    run's weights, optimiser states and random state. A model too big for the device is refused first."""
    use_cuda = device.type == "cuda"
    expected_params = count_parameters(hp)       # its size first, without allocating it
    memory = (torch.cuda.mem_get_info(device)[1] if use_cuda
              else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    if 16 * expected_params > memory:            # fp32 weights, gradients and two optimiser states each
        raise UsageError(f"the model (--n-layer {hp.n_layer} --n-embd {hp.n_embd} --vocab-size {hp.vocab_size}) has "
                         f"{expected_params:,} weights: with their gradients and optimiser states that is more than the "
                         f"{memory / 2**30:.0f} GiB of {device.type} memory; make it smaller")
    torch.manual_seed(hp.seed)
    try:
        with device:
            model = GPT(hp.vocab_size, hp.n_layer, hp.n_head, hp.n_embd, hp.mlp, hp.seq_len)
        optimizers = build_optimizers(model, hp, rank, world_size)
    except Exception as e:                       # sizes a user typed: too big is an answer, not a traceback
        if not is_out_of_memory(e):
            raise
        raise UsageError(f"the model (--n-layer {hp.n_layer} --n-embd {hp.n_embd} --vocab-size {hp.vocab_size}) "
                         f"does not fit in the {device.type} memory; make it smaller") from None
    if checkpoint:
        try:
            model.load_state_dict(checkpoint["model"])
        except RuntimeError as e:
            raise UsageError(f"--resume: the checkpoint's weights do not fit this model (was the model code "
                             f"changed?): {str(e).splitlines()[0]}") from None
        for opt, state in zip(optimizers, checkpoint["optimizers"]):
            opt.load_state_dict(state)
        torch.set_rng_state(checkpoint["rng"]["torch"])
        if use_cuda and checkpoint["rng"]["cuda"] is not None:
            torch.cuda.set_rng_state(checkpoint["rng"]["cuda"], device)
    return model, optimizers


def open_log(hp: Hyperparameters, master: bool, device, world_size: int, grad_accum: int, checkpoint,
             checkpoint_path, log_path, log_text):
    """The run's log and id. Rank 0: a new file that starts with the run: record, the source and the
    environment, or (resumed) the run's own file, appended to from a resume: record on. Other ranks:
    RunLog(), which writes nothing."""
    run_id = checkpoint["log_id"] if checkpoint else secrets.token_hex(4)
    if not master:
        return RunLog(), run_id
    started = datetime.now(timezone.utc)
    if checkpoint is None:
        log_path = Path(hp.log_dir) / f"gpt-{started:%Y%m%d-%H%M%S}-{run_id}.txt"
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if hp.save_every > 0 or hp.save_final:
            checkpoint_folder(log_path).mkdir(exist_ok=True)
        log = RunLog(log_path)
        if checkpoint is not None and not log_text.endswith("\n"):
            # the killed process was cut in the middle of a line: the resume: record starts a line
            # of its own rather than run into it (which would make readers skip both)
            log.write("", echo=False)
    except OSError as e:
        where = f"--log-dir {hp.log_dir}" if checkpoint is None else f"the run's log {log_path}"
        raise UsageError(f"{where}: cannot write there ({e.strerror or e}: {e.filename}); "
                         "choose a folder you can write to" + " with --log-dir" * (checkpoint is None)) from None
    source = Path(__file__).read_text()
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    if checkpoint is None:
        log.write(f"run:gpt id:{run_id} started:{started:%Y-%m-%dT%H:%M:%SZ} torch:{torch.__version__} "
                  f"device:{device.type} world_size:{world_size} gpu:{value(gpu)} "
                  f"host:{value(socket.gethostname())}")
        log.write("=" * 100 + "\n" + source + "\n" + environment_text() + "\n" + "=" * 100, echo=False)
        print(f"log: {log.path}", flush=True)
    else:
        log.write(f"resume: from_step:{checkpoint['step']} checkpoint:{value(checkpoint_path)} "
                  f"resumed:{started:%Y-%m-%dT%H:%M:%SZ} world_size:{world_size} gpu:{value(gpu)} "
                  f"torch:{torch.__version__} "
                  f"device_batch_size:{hp.device_batch_size} grad_accum:{grad_accum} compile:{int(hp.compile)} "
                  f"train_time:{checkpoint['train_time_ms']:.0f}ms host:{value(socket.gethostname())}")
        print(f"log: {log.path} (appended to)", flush=True)
        if not source_in_log(log_text, source):
            log.write(f"warning: code_changed:1 source_hash:{hashlib.sha256(source.encode()).hexdigest()[:16]}")
            print(f"warning: {Path(__file__).name} is not the source in the log's header: the steps from "
                  f"{checkpoint['step'] + 1} on run the changed code", flush=True)
    return log, run_id


def write_config(log: RunLog, master: bool, hp: Hyperparameters, model: GPT, optimizers, train_loader,
                 device, precision: str, world_size: int):
    """The config: record of a new run (and the warning of a run that will read its shards again)."""
    warmdown_iters = min(hp.warmdown_iters, hp.num_iterations)
    steps_before_wrap, train_shards = train_loader.steps_per_pass(), len(train_loader.files)
    muon_params = optimizers[1].param_groups[0]["params"]
    log.write(config_record(hp, mlp_hidden=model.blocks[0].mlp.c_proj.in_features,
                            params=sum(p.numel() for p in model.parameters()), grad_accum=train_loader.micro_steps,
                            warmdown_iters=warmdown_iters, device=device.type, precision=precision,
                            muon_params=len(muon_params), muon_matrices=len(Muon.matrices(muon_params)),
                            world_size=world_size, train_shards=train_shards, steps_before_wrap=steps_before_wrap))
    if warmdown_iters != hp.warmdown_iters and master:
        print(f"note: --warmdown-iters {hp.warmdown_iters} > --num-iterations {hp.num_iterations}: "
              f"using {warmdown_iters}", flush=True)
    if steps_before_wrap < hp.num_iterations:
        need = shards_needed(hp.num_iterations, hp.batch_size, hp.seq_len)
        log.write(f"warning: data_wraps:1 train_shards:{train_shards} steps_before_wrap:{steps_before_wrap} "
                  f"num_iterations:{hp.num_iterations} shards_needed:{'nan' if need is None else need}")
        if master:
            fineweb = all(n == FULL_SHARD_TOKENS for n in train_loader.ntoks)
            print(f"warning: the {train_shards} training shard(s) hold {steps_before_wrap} steps but the run "
                  f"has {hp.num_iterations}: it will read them again and its loss will not be comparable "
                  + (f"(for FineWeb: `python {DOWNLOAD_SCRIPT} {need}`)" if fineweb
                     else "(add shards or lower --num-iterations)"),
                  flush=True)


def compiled_and_wrapped(model: GPT, hp: Hyperparameters, device, distributed: bool, local_rank: int):
    """The model the loop calls: torch.compile'd (--compile), in DDP when there are several processes."""
    use_cuda = device.type == "cuda"
    if hp.compile:
        if use_cuda:
            import torch._inductor.config as inductor_config
            inductor_config.coordinate_descent_tuning = True      # as the record
        model = torch.compile(model)
    if distributed:
        # broadcast_buffers=False: the only buffers are the rotary cos/sin, the same on every rank
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if use_cuda else None,
                                                          broadcast_buffers=False)
    return model


def compile_on_a_dry_step(model, hp: Hyperparameters, device, grad_accum: int, autocast, distributed: bool):
    """torch.compile compiles on the first step, which the record leaves out of train_time (its first
    10 steps are untimed): a resumed, compiled run compiles on a dry step (zeros, no update) first."""
    model.train()
    dry = torch.zeros(hp.device_batch_size, hp.seq_len, dtype=torch.long, device=device)
    for micro in range(grad_accum):
        with nullcontext() if (not distributed or micro == grad_accum - 1) else model.no_sync():
            with autocast:
                loss = model(dry, dry)
            loss.backward()
    model.zero_grad(set_to_none=True)


def print_what_next(status: str, log_path, steps_done: int, hp: Hyperparameters, argv: list, grad_accum: int):
    """The line that ends the run on screen: the command to type next."""
    if status == "ok":
        print(f"next: python analyze.py {log_path}", flush=True)
    if status not in ("interrupted", "oom"):
        return
    found = checkpoints_in(checkpoint_folder(log_path))

    def continue_from_checkpoint(*flags):
        return (f"to continue from step {found[-1][0]} (the newest checkpoint): "
                + command_line([*flags, "--resume", log_path]))

    if status == "interrupted":
        print(f"interrupted at step {steps_done} of {hp.num_iterations}; every finished line is in {log_path}; "
              + (continue_from_checkpoint() if found else "it has no checkpoint to continue from; to be able "
                 "to resume, start it again with checkpoints: "
                 + command_line(argv + ["--save-every", max(1, hp.num_iterations // 10)])),
              file=sys.stderr, flush=True)
    else:
        half = hp.device_batch_size // 2
        advice = (f"halve it, e.g. --device-batch-size {half}; the global batch of {hp.batch_size} is kept by "
                  "accumulating twice as many micro-steps" if half else "one sequence does not fit: shorten "
                  "--seq-len or use a GPU with more memory")
        if found and half:
            advice += "; " + continue_from_checkpoint("--device-batch-size", half)
        print(f"error: out of memory at step {steps_done} with --device-batch-size {hp.device_batch_size} "
              f"({grad_accum} micro-steps per step): {advice}", file=sys.stderr, flush=True)


def run(hp: Hyperparameters, given: dict, argv: list, distributed: bool) -> int:
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    master = rank == 0

    # ---- setup: settings, device, data, model and optimisers, the log
    checkpoint = checkpoint_path = log_path = log_text = None
    if hp.resume:
        hp, checkpoint, checkpoint_path, log_path, log_text = resumed_run(hp, given, master)
    check_settings(hp, world_size)
    torch.set_num_threads(hp.threads)
    device, precision = choose_device(hp, local_rank, checkpoint)
    use_cuda = device.type == "cuda"
    train_loader, val_loader = load_data(hp, rank, world_size, device, checkpoint)
    grad_accum, val_steps = train_loader.micro_steps, val_loader.micro_steps
    warmdown_iters = min(hp.warmdown_iters, hp.num_iterations)
    tokens_per_step = hp.batch_size * hp.seq_len
    raw_model, optimizers = build_model(hp, device, rank, world_size, checkpoint)   # raw: what checkpoints save
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext())
    log, run_id = open_log(hp, master, device, world_size, grad_accum, checkpoint, checkpoint_path, log_path,
                           log_text)
    if distributed:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", device_id=device if use_cuda else None)
    model = compiled_and_wrapped(raw_model, hp, device, distributed, local_rank)
    if checkpoint is None:
        write_config(log, master, hp, raw_model, optimizers, train_loader, device, precision, world_size)

    def synchronize():
        if use_cuda:
            torch.cuda.synchronize()

    def mean_over_ranks(t: torch.Tensor) -> torch.Tensor:
        if distributed:
            dist.all_reduce(t, op=dist.ReduceOp.AVG if use_cuda else dist.ReduceOp.SUM)
            if not use_cuda:
                t /= world_size                  # gloo has no AVG
        return t

    start_step = checkpoint["step"] if checkpoint else 0
    clock = TrainClock(synchronize, *((checkpoint["train_time_ms"], checkpoint["timed_steps"]) if checkpoint else ()))
    clock_from = max(10, start_step)
    if checkpoint and hp.compile:
        compile_on_a_dry_step(model, hp, device, grad_accum, autocast, distributed)

    def step_line(step, kind, loss, ms):
        step_avg = ms / clock.timed_steps if clock.timed_steps else float("nan")
        return (f"step:{step}/{hp.num_iterations} {kind}:{loss:.4f} train_time:{ms:.0f}ms "
                f"step_avg:{step_avg:.2f}ms tokens:{step * tokens_per_step}")

    def save_checkpoint(step):
        muon_state = gathered_muon_state(optimizers[1])      # every rank takes part; rank 0 writes
        if not master:
            return
        path = checkpoint_folder(log.path) / f"step{step}.pt"
        state = dict(kind=CHECKPOINT_KIND, version=CHECKPOINT_VERSION, log_id=run_id, step=step,
                     train_time_ms=clock.ms, timed_steps=clock.timed_steps, hp=dataclasses.asdict(hp),
                     precision=precision, world_size=world_size, loader=train_loader.state_dict(),
                     data=dict(train=train_loader.file_list(), val=val_loader.file_list()),
                     model=raw_model.state_dict(), optimizers=[optimizers[0].state_dict(), muon_state],
                     rng=dict(torch=torch.get_rng_state(), cuda=torch.cuda.get_rng_state(device) if use_cuda else None))
        try:
            write_checkpoint(state, path, hp.keep_last)
        except OSError as e:
            raise UsageError(f"writing the checkpoint {path} failed ({e.strerror or e}); free some disk space "
                             "(or use --keep-last K), then resume from the run's last checkpoint") from None
        log.write(f"checkpoint: step:{step} path:{value(path)} size:{path.stat().st_size / 2**20:.1f}MiB")

    # ---- the loop (the record's: the clock starts at step 10, validation is not timed)
    val_loss, step, steps_done, status, finished_ms = float("nan"), start_step, start_step, "ok", clock.ms
    try:
        for step in range(start_step, hp.num_iterations + 1):
            last_step = step == hp.num_iterations
            if step == clock_from:
                clock.start()
            continuing = checkpoint is not None and step == start_step   # its val line and checkpoint exist
            if not continuing and (last_step or (hp.val_every > 0 and step % hp.val_every == 0)):
                running = clock.stop()
                model.eval()
                val_loader.reset()
                total = torch.zeros((), device=device)
                with torch.no_grad():
                    for _ in range(val_steps):
                        x, y = val_loader.next_batch()
                        with autocast:
                            total += model(x, y).float()
                val_loss = mean_over_ranks(total / val_steps).item()
                finished_ms = clock.ms
                log.write(step_line(step, "val_loss", val_loss, finished_ms))
                if running:
                    clock.start()
            if not continuing and step > 0 and ((hp.save_every and step % hp.save_every == 0)
                                                or (last_step and hp.save_final)):
                running = clock.stop()
                save_checkpoint(step)
                if running:
                    clock.start()
            if last_step:
                break

            model.train()
            loss_sum = torch.zeros((), device=device)
            for micro in range(grad_accum):
                x, y = train_loader.next_batch()
                # DDP all-reduces the gradients on the last micro-step only
                sync = nullcontext() if (not distributed or micro == grad_accum - 1) else model.no_sync()
                with sync:
                    with autocast:
                        loss = model(x, y)
                    (loss / grad_accum).backward()
                loss_sum += loss.detach().float()
            factor = lr_factor(step, hp.num_iterations, hp.warmup_iters, warmdown_iters)
            for opt in optimizers:
                for group in opt.param_groups:
                    group["lr"] = group["initial_lr"] * factor
                opt.step()
            model.zero_grad(set_to_none=True)
            train_loss = mean_over_ranks(loss_sum / grad_accum).item()
            steps_done = step + 1
            clock.timed_steps += step >= 10
            finished_ms = clock.read()
            log.write(step_line(steps_done, "train_loss", train_loss, finished_ms))
            if not math.isfinite(train_loss):
                status = "diverged"
                if master:
                    print(f"error: the training loss is {train_loss} at step {steps_done}: the run diverged and "
                          "was stopped; lower --lr / --muon-lr (or add --warmup-iters)", file=sys.stderr, flush=True)
                break
    except (KeyboardInterrupt, BrokenPipeError):  # Ctrl-C, SIGTERM, or stdout's reader gone (`| head`)
        status = "interrupted"
    except Exception as e:                       # the log still gets its last records, then it is raised
        status, error = ("oom" if is_out_of_memory(e) else "error"), e

    timed = clock.timed_steps
    log.write(peak_memory_record(device))
    log.write(f"done: steps:{steps_done} train_time:{finished_ms:.0f}ms "
              f"step_avg:{finished_ms / timed if timed else float('nan'):.2f}ms "
              f"final_val_loss:{val_loss if status == 'ok' else float('nan'):.4f} status:{status} "
              f"wraps:{train_loader.wraps}")
    log.close()
    if master:
        print_what_next(status, log.path, steps_done, hp, argv, grad_accum)
    if status == "error":
        raise error
    if distributed and status in ("ok", "diverged"):
        dist.barrier()                           # every rank is done before the process group goes
    return {"ok": 0, "interrupted": 130}.get(status, 1)


if __name__ == "__main__":
    code = main()
    if code == 130:
        # Interrupted: every record is written and the log closed. Python's own teardown of the modules
        # torch loaded (torch.optim imports torch._dynamo and sympy) took another 0.4-1.4 s on the
        # 2-core CPU; whoever pressed Ctrl-C gets the prompt back now instead.
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except OSError:                      # its reader is gone (`| head`): nothing more can be said there
                pass
        os._exit(code)
    sys.exit(code)
