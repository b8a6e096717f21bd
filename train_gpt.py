"""train_gpt.py: the modded-nanogpt "ModernArch" GPT-2 (124M) speedrun record, with the MLP as a flag.

What it is
    The 2024-10-14 ModernArch record of modded-nanogpt, rewritten as one readable file: GPT-2
    small (12 layers, 6 heads, width 768, vocab 50304) with rotary embeddings, QK-norm,
    weightless RMSNorm, zero-initialised output projections and a tied embedding/head, trained
    on FineWeb-10B GPT-2 tokens with Muon (every matrix in the blocks) and AdamW (the tied
    embedding/head). Every default is the record's. The one switch the study needs is
    `--mlp relu2` (the record: 768 -> 3072, relu(x)^2, 3072 -> 768) or `--mlp swiglu_thin`
    (seed 003: gate and value 768 -> 1536, silu(gate) * value, 1536 -> 768). The MLP classes
    are right below the attention: edit them there.

How to run
    python data/cached_fineweb10B.py 8                        # val shard + 8 train shards (1500 steps)
    torchrun --standalone --nproc_per_node=8 train_gpt.py --mlp swiglu_thin     # 8 GPUs, 5100 steps
    torchrun --standalone --nproc_per_node=1 train_gpt.py --mlp relu2 --num-iterations 1500   # 1 GPU
    python train_gpt.py --mlp relu2 --num-iterations 1500     # also 1 GPU, one process
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

Measured results (none of them measured with this file on a GPU yet: this was written on a
machine without one)
    The record (published, its own script): 8x H100, PyTorch 2.4.1, 5100 steps:
        val_loss 3.2741, train_time 910546ms, step_avg 178.89ms.
    Seed 003 (published, the record's script with the MLP swapped):
        1x A100 40GB, 1500 steps: relu2 2344.31 ms/step val 3.5349 31026 MiB;
                                  swiglu_thin 2142.81 ms/step val 3.5589 28960 MiB.
        8x A100, 5100 steps: relu2 322.43 ms/step val 3.2950; swiglu_thin 296.30 ms/step val 3.3268.
    This file, the CPU smoke run above (measured 2026-11-22 on a shared 2-core x86 VM, torch 2.13.0
    CPU, fp32; a check that it learns, not a speed figure): about 3 s in all, 18 ms/step;
        relu2       val_loss 6.3184 (step 0) -> 4.0946 (10) -> 3.5357 (20) -> 3.2722 (30) -> 3.1909 (40)
        swiglu_thin val_loss 6.2712 (step 0) -> 4.7379 (10) -> 3.9810 (20) -> 3.7208 (30) -> 3.6506 (40)
    (log(512) = 6.24 is a uniform guess, 1.82 the tiny language's entropy rate.) Without
    --vocab-size 512 the 50304-way head makes it ~15x slower (18 s) and it falls 10.77 -> 4.23.
    Step time on a GPU: still to be measured, with `bash bench/gpu_check.sh`. Measured on one
    H100 80GB (torch 2.11 + CUDA 13, 8 micro-steps of 64 x 1024 tokens) before the two speed
    changes in this file (rotary cos/sin computed once; Newton-Schulz compiled): relu2 1198.7
    ms/step, swiglu_thin 1165.4; the record's own script 1095.4 and 1038.6 (README: Speed).

Choices where the record is silent or this file differs (all documented in the README)
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
    - swiglu_thin computes gate and value with one 768 -> 3072 matmul (one weight, gate rows
      first); Muon orthogonalises the two 1536 x 768 halves separately, as if they were the
      seed's two matrices. So swiglu_thin has 72 Muon parameters, 84 orthogonalised matrices.
"""
import argparse
import dataclasses
import glob
import math
import os
import platform
import resource
import secrets
import shutil
import socket
import subprocess
import sys
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
# Hyperparameters: the record's values. Every field is a command-line flag (--num-iterations ...).


@dataclass
class Hyperparameters:
    mlp: str = field(default="relu2", metadata=dict(choices=["relu2", "swiglu_thin"],
                     help="relu2: 768->3072, relu^2, 3072->768 (the record); swiglu_thin: seed 003"))
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
    log_dir: str = field(default="logs", metadata=dict(help="folder of the log file"))


def parse_args(argv=None) -> Hyperparameters:
    """Command-line flags derived from the dataclass: one flag per field, defaults from the field."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(Hyperparameters):
        flag = "--" + f.name.replace("_", "-")
        if f.type is bool or f.type == "bool":
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=f.default, help=f.metadata.get("help"))
        else:
            parser.add_argument(flag, dest=f.name, type=type(f.default), default=f.default,
                                choices=f.metadata.get("choices"), help=f.metadata.get("help"))
    return Hyperparameters(**vars(parser.parse_args(argv)))


class UsageError(Exception):
    """A problem with the run's inputs: printed as one line `error: ...`, exit status 2."""


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


# ---- The MLP: the one place a researcher edits. Add a class and an entry in MLPS. ------------
# A weight that holds k stacked matrices (rows) can say so with `weight.muon_blocks = k`:
# Muon then orthogonalises each of the k blocks on its own.

class MLPReLU2(nn.Module):
    """The record: d -> 4d, relu(x)^2, 4d -> d. 8 d^2 weights."""

    def __init__(self, n_embd: int):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=False)
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=False)
        self.c_proj.weight.data.zero_()

    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x)).square())


class MLPSwiGLUThin(nn.Module):
    """Seed 003: gate and value d -> 2d, silu(gate) * value, 2d -> d. 6 d^2 weights.

    Gate and value are one (4d, d) weight, gate rows first, so one matmul computes both (the
    same init as two nn.Linear(d, 2d): the bound depends on the input width only). Muon treats
    the halves as the seed's two separate 2d x d matrices.
    """

    def __init__(self, n_embd: int):
        super().__init__()
        self.hidden = 2 * n_embd
        self.c_fc = nn.Linear(n_embd, 2 * self.hidden, bias=False)
        self.c_fc.weight.muon_blocks = 2
        self.c_proj = nn.Linear(self.hidden, n_embd, bias=False)
        self.c_proj.weight.data.zero_()

    def forward(self, x):
        gate, value = self.c_fc(x).chunk(2, dim=-1)
        return self.c_proj(F.silu(gate) * value)


MLPS = {"relu2": MLPReLU2, "swiglu_thin": MLPSwiGLUThin}
MLP_HIDDEN = {"relu2": lambda d: 4 * d, "swiglu_thin": lambda d: 2 * d}   # for the log


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


# ----------------------------------------------------------------------------------------------
# Muon: momentum, orthogonalised by a Newton-Schulz iteration


def newton_schulz5(G: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Approximately the orthogonal factor U V^T of G = U S V^T, in bf16.

    The quintic p(s) = a s + b s^3 + c s^5, applied `steps` times to every singular value of
    G / |G|_F, pushes them all into a band around 1 (not exactly onto 1: these coefficients
    trade accuracy for a steep slope at 0, so even tiny singular values are lifted quickly).
    """
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.bfloat16()
    X = X / (X.norm() + eps)                     # all singular values <= 1
    tall = X.size(0) > X.size(1)
    if tall:                                     # iterate on the wide side: X X^T is the smaller Gram
        X = X.T
    for _ in range(steps):
        A = X @ X.T
        B = b * A + c * A @ A                    # (c A) A: the record's order, so its bf16 roundings
        X = a * X + B @ X
    return X.T if tall else X


class Muon(torch.optim.Optimizer):
    """Nesterov momentum, each matrix's update orthogonalised and scaled by sqrt(max(rows, cols)).

    The scale goes into the learning rate (fp32), as the record: the bf16 update is not
    rounded a second time.

    With world_size > 1 the matrices are shared out: rank r orthogonalises the matrices
    i % world_size == r, writes them into a flat bf16 buffer (zeros elsewhere) and one
    all_reduce(SUM) hands every rank every update, the same update as if each rank did all.
    A weight with `muon_blocks = k` counts as k matrices (its row blocks).
    """

    def __init__(self, params, lr=0.00036, momentum=0.95, nesterov=True, ns_steps=5,
                 rank=None, world_size=None, compile=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps))
        # compiled, as the record: eager, each bf16 matmul and elementwise op of the iteration is
        # its own kernel (measured on an H100: Muon 54.5 ms a step eager, 33-41 ms compiled)
        self.newton_schulz = torch.compile(newton_schulz5) if compile else newton_schulz5
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

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            items = self.matrices(group["params"])
            flat = torch.zeros(sum((r1 - r0) * p.size(1) for p, r0, r1 in items),
                               dtype=torch.bfloat16, device=group["params"][0].device)
            offset = 0
            for i, (p, r0, r1) in enumerate(items):
                n = (r1 - r0) * p.size(1)
                if i % self.world_size == self.rank and p.grad is not None:
                    g = p.grad[r0:r1]
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(p.grad)
                    buf = state["momentum_buffer"][r0:r1]
                    buf.mul_(group["momentum"]).add_(g)
                    g = g.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf
                    flat[offset:offset + n] = self.newton_schulz(g, steps=group["ns_steps"]).flatten()
                offset += n
            if self.world_size > 1:
                dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            offset = 0
            for p, r0, r1 in items:
                n = (r1 - r0) * p.size(1)
                scale = max(r1 - r0, p.size(1)) ** 0.5   # update.square().mean() about 1
                p[r0:r1].add_(flat[offset:offset + n].view(r1 - r0, p.size(1)).to(p.dtype),
                              alpha=-group["lr"] * scale)
                offset += n


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


class ShardError(UsageError):
    """A shard file that is not what the header says it is; the message names the file."""


def read_shard_header(path) -> int:
    """Validate the shard's header and size; return its token count."""
    size = os.path.getsize(path)
    redownload = f"delete it and run `python {DOWNLOAD_SCRIPT}` again"
    if size < HEADER_BYTES:
        raise ShardError(f"{path}: truncated: {size} bytes, shorter than the {HEADER_BYTES}-byte header; {redownload}")
    header = np.fromfile(path, dtype="<i4", count=3)
    if header[0] != SHARD_MAGIC:
        raise ShardError(f"{path}: bad magic number {header[0]} (expected {SHARD_MAGIC}): not a token shard")
    if header[1] != SHARD_VERSION:
        raise ShardError(f"{path}: unsupported shard version {header[1]} (expected {SHARD_VERSION})")
    ntok = int(header[2])
    expected = HEADER_BYTES + 2 * ntok
    if size < expected:
        raise ShardError(f"{path}: truncated: header says {ntok} tokens ({expected} bytes) but the file "
                         f"has {size} bytes; {redownload}")
    if size != expected:
        raise ShardError(f"{path}: size mismatch: header says {ntok} tokens ({expected} bytes) but the file "
                         f"has {size} bytes")
    return ntok


def windows_per_shard(ntok: int, window: int) -> int:
    """Steps one shard of ntok tokens serves when a step reads `window` tokens (+1 for the targets)."""
    return max(0, (ntok - 1) // window)


def shards_needed(num_iterations, batch_size, seq_len, shard_tokens=FULL_SHARD_TOKENS) -> int:
    """Full FineWeb train shards a run reads without wrapping around (1500 steps: 8; 5100: 27)."""
    per_shard = windows_per_shard(shard_tokens, batch_size * seq_len)
    return math.ceil(num_iterations / per_shard)


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
                raise ShardError(f"{f}: {n} tokens, fewer than one step of all ranks reads "
                                 f"({self.step_tokens + 1}); use larger shards or fewer tokens per step")
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


def find_files(pattern: str) -> list:
    """Files matching the glob, from the current folder, else (relative globs) from this file's folder."""
    files = sorted(glob.glob(pattern))
    if not files and not os.path.isabs(pattern):
        files = sorted(glob.glob(str(Path(__file__).resolve().parent / pattern)))
    return files


# ----------------------------------------------------------------------------------------------
# Logging: rank 0 writes stdout and logs/gpt-<UTC time>-<id>.txt, each line flushed at once


def value(v) -> str:
    """A record value: no spaces (paths with spaces get %20)."""
    return str(v).replace(" ", "%20")


class RunLog:
    def __init__(self, path=None):
        self.file = open(path, "a") if path is not None else None
        self.path = path

    def write(self, line: str, echo: bool = True):
        if echo:
            print(line, flush=True)
        if self.file is not None:
            self.file.write(line + "\n")
            self.file.flush()

    def close(self):
        if self.file is not None:
            self.file.close()


def environment_text() -> str:
    lines = [f"python: {sys.version.split()[0]}", f"torch: {torch.__version__}", f"numpy: {np.__version__}",
             f"platform: {platform.platform()}", f"cpu_count: {os.cpu_count()}",
             f"cuda: {torch.version.cuda} available:{torch.cuda.is_available()}"]
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
# The run


def main(argv=None) -> int:
    hp = parse_args(argv)
    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ    # set by torchrun
    rank = int(os.environ.get("RANK", 0))
    try:
        return run(hp, distributed)
    except UsageError as e:
        if rank == 0:
            print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def run(hp: Hyperparameters, distributed: bool) -> int:
    # ---- device and processes
    if hp.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda but torch sees no CUDA GPU (torch "
                         f"{torch.__version__}, CUDA build: {torch.version.cuda}); use --device cpu or auto")
    use_cuda = hp.device == "cuda" or (hp.device == "auto" and torch.cuda.is_available())
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if use_cuda:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    master = rank == 0

    # ---- check the inputs before anything slow
    if hp.n_embd % hp.n_head or (hp.n_embd // hp.n_head) % 2:
        raise UsageError(f"--n-embd {hp.n_embd} must split into --n-head {hp.n_head} heads of even size")
    for name, lr in (("--lr", hp.lr), ("--muon-lr", hp.muon_lr)):
        if not 0 <= lr < torch.finfo(torch.float32).max:
            raise UsageError(f"{name} {lr} must be a finite number >= 0")
    micro_batch = hp.device_batch_size * world_size
    if hp.batch_size % micro_batch:
        raise UsageError(f"--batch-size {hp.batch_size} is not a multiple of --device-batch-size "
                         f"{hp.device_batch_size} x {world_size} processes = {micro_batch}; "
                         "pick values where it is (gradient accumulation = batch / (device batch x processes))")
    grad_accum = hp.batch_size // micro_batch
    if hp.val_tokens % (micro_batch * hp.seq_len):
        raise UsageError(f"--val-tokens {hp.val_tokens} is not a multiple of device batch x seq len x processes "
                         f"= {micro_batch * hp.seq_len}")
    val_steps = hp.val_tokens // (micro_batch * hp.seq_len)
    warmdown_iters = min(hp.warmdown_iters, hp.num_iterations)
    tokens_per_step = hp.batch_size * hp.seq_len
    need = shards_needed(hp.num_iterations, hp.batch_size, hp.seq_len)
    download = f"python {DOWNLOAD_SCRIPT} {need}"
    train_files, val_files = find_files(hp.train_files), find_files(hp.val_files)
    if not train_files:
        raise UsageError(f"no training shards match --train-files {hp.train_files}; download FineWeb-10B with "
                         f"`{download}` ({hp.num_iterations} steps x {tokens_per_step} tokens need {need} shards "
                         f"of {FULL_SHARD_TOKENS} tokens)")
    if not val_files:
        raise UsageError(f"no validation shard matches --val-files {hp.val_files}; download it with `{download}`")
    train_loader = DistributedTokenLoader(train_files, hp.device_batch_size, hp.seq_len, rank, world_size,
                                          grad_accum, device, hp.vocab_size)
    # validation reads the first val_tokens tokens of the first val shard, as one contiguous "step"
    val_shard_tokens = [read_shard_header(f) for f in val_files][0]
    if windows_per_shard(val_shard_tokens, hp.val_tokens) == 0:
        raise UsageError(f"--val-tokens {hp.val_tokens} is more than the first validation shard {val_files[0]} "
                         f"holds ({val_shard_tokens} tokens, one is kept for the last target); lower it")
    val_loader = DistributedTokenLoader(val_files[:1], hp.device_batch_size, hp.seq_len, rank, world_size,
                                        val_steps, device, hp.vocab_size)
    steps_before_wrap = train_loader.steps_per_pass()

    if distributed:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", device_id=device if use_cuda else None)

    # ---- log header (rank 0)
    log = RunLog()
    if master:
        started = datetime.now(timezone.utc)
        run_id = secrets.token_hex(4)
        os.makedirs(hp.log_dir, exist_ok=True)
        log = RunLog(Path(hp.log_dir) / f"gpt-{started:%Y%m%d-%H%M%S}-{run_id}.txt")
        gpu = torch.cuda.get_device_name(device) if use_cuda else "none"
        log.write(f"run:gpt id:{run_id} started:{started:%Y-%m-%dT%H:%M:%SZ} torch:{torch.__version__} "
                  f"device:{device.type} world_size:{world_size} gpu:{value(gpu)} host:{value(socket.gethostname())}")
        log.write("=" * 100 + "\n" + Path(__file__).read_text() + "\n" + environment_text() + "\n" + "=" * 100,
                  echo=False)
        print(f"log: {log.path}", flush=True)

    # ---- model and optimisers (same seed on every rank: identical initial weights)
    torch.manual_seed(hp.seed)
    with device:
        model = GPT(hp.vocab_size, hp.n_layer, hp.n_head, hp.n_embd, hp.mlp)
    optimizers = build_optimizers(model, hp, rank, world_size)
    n_params = sum(p.numel() for p in model.parameters())
    n_muon = len(optimizers[1].param_groups[0]["params"])
    n_muon_matrices = len(Muon.matrices(optimizers[1].param_groups[0]["params"]))
    precision = hp.precision if hp.precision != "auto" else ("bf16" if use_cuda else "fp32")
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext())
    if hp.compile:
        if use_cuda:
            import torch._inductor.config as inductor_config
            inductor_config.coordinate_descent_tuning = True      # as the record
        model = torch.compile(model)
    if distributed:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if use_cuda else None)

    log.write(f"config: mlp:{hp.mlp} n_layer:{hp.n_layer} n_head:{hp.n_head} n_embd:{hp.n_embd} "
              f"mlp_hidden:{MLP_HIDDEN[hp.mlp](hp.n_embd)} vocab_size:{hp.vocab_size} params:{n_params} "
              f"seq_len:{hp.seq_len} batch_size:{hp.batch_size} device_batch_size:{hp.device_batch_size} "
              f"grad_accum:{grad_accum} num_iterations:{hp.num_iterations} lr:{hp.lr} muon_lr:{hp.muon_lr} "
              f"warmup_iters:{hp.warmup_iters} warmdown_iters:{warmdown_iters} val_every:{hp.val_every} "
              f"val_tokens:{hp.val_tokens} seed:{hp.seed} compile:{int(hp.compile)} "
              f"train_files:{value(hp.train_files)} val_files:{value(hp.val_files)} "
              f"muon_momentum:{hp.muon_momentum} ns_steps:{hp.ns_steps} muon_params:{n_muon} "
              f"muon_matrices:{n_muon_matrices} precision:{precision} world_size:{world_size} "
              f"train_shards:{len(train_files)} steps_before_wrap:{steps_before_wrap}")
    if warmdown_iters != hp.warmdown_iters and master:
        print(f"note: --warmdown-iters {hp.warmdown_iters} > --num-iterations {hp.num_iterations}: "
              f"using {warmdown_iters}", flush=True)
    if steps_before_wrap < hp.num_iterations:
        log.write(f"warning: data_wraps:1 train_shards:{len(train_files)} steps_before_wrap:{steps_before_wrap} "
                  f"num_iterations:{hp.num_iterations} shards_needed:{need}")
        if master:
            print(f"warning: the {len(train_files)} training shard(s) hold {steps_before_wrap} steps but the run has "
                  f"{hp.num_iterations}: it will read them again and its loss will not be comparable "
                  f"(for FineWeb: `{download}`)", flush=True)

    def synchronize():
        if use_cuda:
            torch.cuda.synchronize()

    def mean_over_ranks(t: torch.Tensor) -> torch.Tensor:
        if distributed:
            dist.all_reduce(t, op=dist.ReduceOp.AVG if use_cuda else dist.ReduceOp.SUM)
            if not use_cuda:
                t /= world_size                  # gloo has no AVG
        return t

    def step_line(step, kind, loss, train_time_ms):
        timed = step - 10                        # steps 1..10 are untimed warm-up
        step_avg = train_time_ms / timed if timed > 0 else float("nan")
        return (f"step:{step}/{hp.num_iterations} {kind}:{loss:.4f} train_time:{train_time_ms:.0f}ms "
                f"step_avg:{step_avg:.2f}ms tokens:{step * tokens_per_step}")

    # ---- the loop (the record's: clock starts at step 10, validation is not timed)
    training_time_ms, t0 = 0.0, time.perf_counter()
    val_loss, step, status = float("nan"), 0, "ok"
    try:
        for step in range(hp.num_iterations + 1):
            last_step = step == hp.num_iterations
            if step == 10:
                synchronize()
                training_time_ms, t0 = 0.0, time.perf_counter()
            if last_step or (hp.val_every > 0 and step % hp.val_every == 0):
                synchronize()
                training_time_ms += 1000 * (time.perf_counter() - t0)
                model.eval()
                val_loader.reset()
                total = torch.zeros((), device=device)
                with torch.no_grad():
                    for _ in range(val_steps):
                        x, y = val_loader.next_batch()
                        with autocast:
                            total += model(x, y).float()
                val_loss = mean_over_ranks(total / val_steps).item()
                log.write(step_line(step, "val_loss", val_loss, training_time_ms if step >= 10 else 0.0))
                synchronize()
                t0 = time.perf_counter()
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
            now_ms = training_time_ms + 1000 * (time.perf_counter() - t0)
            log.write(step_line(step + 1, "train_loss", train_loss, now_ms if step >= 10 else 0.0))
            if not math.isfinite(train_loss):
                status = "diverged"
                step += 1
                if master:
                    print(f"error: the training loss is {train_loss} at step {step}: the run diverged and "
                          "was stopped; lower --lr / --muon-lr (or add --warmup-iters)", file=sys.stderr, flush=True)
                break
    except KeyboardInterrupt:
        status = "interrupted"
    except Exception as e:                       # the log still gets its last records, then it is raised
        status, error = ("oom" if is_out_of_memory(e) else "error"), e
        if status == "oom" and master:
            advice = (f"halve it, e.g. --device-batch-size {hp.device_batch_size // 2}; the global batch of "
                      f"{hp.batch_size} is kept by accumulating twice as many micro-steps"
                      if hp.device_batch_size > 1 else "one sequence does not fit: shorten --seq-len or use a "
                      "GPU with more memory")
            print(f"error: out of memory at step {step} with --device-batch-size {hp.device_batch_size} "
                  f"({grad_accum} micro-steps per step): {advice}", file=sys.stderr, flush=True)

    # steps finished; the clock covers steps 11.. only (and not the validations)
    steps_done = hp.num_iterations if status == "ok" else step
    if steps_done <= 10:
        final_ms = 0.0
    elif status == "ok":
        final_ms = training_time_ms
    else:
        final_ms = training_time_ms + 1000 * (time.perf_counter() - t0)
    timed = steps_done - 10
    log.write(peak_memory_record(device))
    log.write(f"done: steps:{steps_done} train_time:{final_ms:.0f}ms "
              f"step_avg:{final_ms / timed if timed > 0 else float('nan'):.2f}ms "
              f"final_val_loss:{val_loss if status == 'ok' else float('nan'):.4f} status:{status} "
              f"wraps:{train_loader.wraps}")
    log.close()
    if status == "error":
        raise error
    if distributed and status in ("ok", "diverged"):
        dist.barrier()                           # every rank is done before the process group goes
    return {"ok": 0, "interrupted": 130}.get(status, 1)


if __name__ == "__main__":
    sys.exit(main())
