"""The mathematics of train_gpt.py against a plain reference written here, from the record's
definitions (../shared/reference/modernarch.md, seed 003), not from the script's helpers.

- The model: the reference below is written out as tensor formulas (RMSNorm as x / sqrt(mean
  x^2 + eps), rotary as one 2x2 rotation matrix per pair and position, attention as a masked
  softmax of Q K^T, the MLPs from their formulas, cross-entropy as logsumexp - target logit).
  The script's GPT, built in float64 with every weight re-randomised (its output projections
  start at zero, which would hide half of each block), must give the reference's loss and every
  parameter's gradient to 1e-10 relative, for every MLP in train_gpt.MLPS (each one's formula is
  written here, in REFERENCE_MLPS: an entry without one fails the tests, saying so).
- Properties no implementation can hide: causality, blocks are the identity at init, the init
  scale, the tied embedding/head is one tensor.
- The optimisers: Muon's Newton-Schulz iteration against the record's, bit for bit; several steps
  of Muon and AdamW, with the record's schedule, against a plain reference of the record's
  update rules.
- The training loop itself (train_gpt.main, as a user runs it): its weights after a few steps
  against a plain loop written here (the step's batches read from the shard by hand, the loss
  averaged over the micro-steps, the record's schedule).
"""
import math
from typing import Callable, NamedTuple

import numpy as np
import pytest
import torch

import train_gpt as tg


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small matmuls on one thread: with two threads on a busy 2-core machine they run ~50x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


MLPS = list(tg.MLPS)                                             # every entry, whatever its name
SMALL = dict(vocab_size=96, n_layer=2, n_head=2, n_embd=32)      # head dim 16


# ---- the reference model ---------------------------------------------------------------------

def ref_rms_norm(x):
    """Weightless RMSNorm over the last dim. The record calls F.rms_norm without an eps, so the eps
    is torch's default for it: the machine epsilon of the dtype."""
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + torch.finfo(x.dtype).eps)


def ref_rotations(T, D, base=10000.0):
    """R[t] (D x D) rotates each pair (i, i + D/2) of a head vector at position t by the angle
    t * base^(-2i/D): (x_i, x_{i+D/2}) -> (x_i cos + x_{i+D/2} sin, -x_i sin + x_{i+D/2} cos).
    The angles are float32, as the record computes them; their cos and sin are float64."""
    h = D // 2
    freq = 1.0 / base ** (torch.arange(0, D, 2, dtype=torch.float32) / D)
    angle = (torch.arange(T, dtype=torch.float32)[:, None] * freq[None, :]).double()    # (T, h)
    R = torch.zeros(T, D, D, dtype=torch.float64)
    for i in range(h):
        R[:, i, i], R[:, i, i + h] = angle[:, i].cos(), angle[:, i].sin()
        R[:, i + h, i], R[:, i + h, i + h] = -angle[:, i].sin(), angle[:, i].cos()
    return R


def ref_attention(x, W, prefix, n_head):
    B, T, C = x.shape
    D = C // n_head
    R = ref_rotations(T, D)
    heads = lambda name: (x @ W[prefix + name].T).view(B, T, n_head, D)  # noqa: E731
    q, k, v = heads("c_q.weight"), heads("c_k.weight"), heads("c_v.weight")
    q = ref_rms_norm(torch.einsum("tij,bthj->bthi", R, q))              # rotary, then QK-norm
    k = ref_rms_norm(torch.einsum("tij,bthj->bthi", R, k))
    scores = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(D)      # (B, H, T query, T key)
    future = torch.arange(T)[None, :] > torch.arange(T)[:, None]      # key s after query t
    scores = scores.masked_fill(future, -math.inf)
    weights = torch.exp(scores - scores.amax(-1, keepdim=True))
    weights = weights / weights.sum(-1, keepdim=True)
    y = torch.einsum("bhts,bshd->bthd", weights, v).reshape(B, T, C)
    return y @ W[prefix + "c_proj.weight"].T


# ---- the reference MLPs: every entry of train_gpt.MLPS, from its formula

def ref_relu(h):
    return torch.where(h > 0, h, 0.0)


def ref_gelu(h):
    """The exact GELU, h Phi(h) with the normal CDF Phi written with erf."""
    return h * 0.5 * (1 + torch.erf(h / math.sqrt(2)))


def ref_silu(h):
    return h / (1 + torch.exp(-h))


def ref_glu_width(d):
    """The GLU variants' width at the record's parameter count (Shazeer 2020 keeps the parameters
    of the 4d MLP he replaces): 3 d h = 8 d^2, h = 8d/3, to the nearest multiple of 128 (at
    least one): 2048 at d = 768."""
    return 128 * max(1, math.floor(8 * d / 3 / 128 + 0.5))


class RefMLP(NamedTuple):
    hidden: Callable        # the width of the hidden layer, of the model width d
    gated: bool             # gate and value matrices, activation(x Wg) * (x Wv); else activation(x Wfc)
    activation: Callable


REFERENCE_MLPS = {
    "relu2": RefMLP(lambda d: 4 * d, False, lambda h: ref_relu(h) ** 2),     # the record
    "swiglu_thin": RefMLP(lambda d: 2 * d, True, ref_silu),                  # seed 003
    "relu": RefMLP(lambda d: 4 * d, False, ref_relu),
    "gelu": RefMLP(lambda d: 4 * d, False, ref_gelu),
    "reglu": RefMLP(ref_glu_width, True, ref_relu),
    "geglu": RefMLP(ref_glu_width, True, ref_gelu),
    "swiglu": RefMLP(ref_glu_width, True, ref_silu),
}


def reference_mlp(mlp) -> RefMLP:
    if mlp not in REFERENCE_MLPS:
        pytest.fail(f"train_gpt.MLPS has {mlp!r} but tests/test_gpt_math.py has no reference formula for it: "
                    "add its width, gating and activation to REFERENCE_MLPS")
    return REFERENCE_MLPS[mlp]


def ref_mlp(x, W, prefix, mlp):
    ref = reference_mlp(mlp)
    if ref.gated:                                                      # three matrices, as seed 003 has them
        gate = x @ W[prefix + "c_fc_gate.weight"].T
        value = x @ W[prefix + "c_fc_val.weight"].T
        return (ref.activation(gate) * value) @ W[prefix + "c_proj.weight"].T
    return ref.activation(x @ W[prefix + "c_fc.weight"].T) @ W[prefix + "c_proj.weight"].T


def ref_logits(W, idx, n_layer, n_head, mlp):
    E = W["lm_head.weight"]                                            # tied: the embedding is the head
    x = E[idx]
    for layer in range(n_layer):
        p = f"blocks.{layer}."
        x = x + ref_attention(ref_rms_norm(x), W, p + "attn.", n_head)
        x = x + ref_mlp(ref_rms_norm(x), W, p + "mlp.", mlp)
    return ref_rms_norm(x) @ E.T


def ref_loss(W, idx, targets, n_layer, n_head, mlp):
    logits = ref_logits(W, idx, n_layer, n_head, mlp)
    top = logits.amax(-1, keepdim=True)
    logsumexp = (top + torch.log(torch.exp(logits - top).sum(-1, keepdim=True))).squeeze(-1)
    return (logsumexp - logits.gather(-1, targets[..., None]).squeeze(-1)).mean()


def reference_weights(model, mlp):
    """The reference's weights, copied from the script's model by name. A gated MLP's one (2h, d)
    gate/value weight is two (h, d) matrices, gate rows first (as seed 003 has them)."""
    W = {}
    for name, p in model.named_parameters():
        name = "lm_head.weight" if name == "wte.weight" else name
        if reference_mlp(mlp).gated and name.endswith("mlp.c_fc.weight"):
            gate, value = p.detach().chunk(2)
            W[name.replace("c_fc", "c_fc_gate")], W[name.replace("c_fc", "c_fc_val")] = gate, value
        else:
            W[name] = p.detach()
    return {name: w.clone().requires_grad_() for name, w in W.items()}


def script_grads_as_reference(model, W, mlp):
    """The reference's gradient of each script parameter (a gated MLP's two halves joined)."""
    out = {}
    for name, p in model.named_parameters():
        ref = "lm_head.weight" if name == "wte.weight" else name
        if reference_mlp(mlp).gated and ref.endswith("mlp.c_fc.weight"):
            out[name] = torch.cat([W[ref.replace("c_fc", "c_fc_gate")].grad, W[ref.replace("c_fc", "c_fc_val")].grad])
        else:
            out[name] = W[ref].grad
    return out


def random_model(mlp, seed=0, **shape):
    """The script's GPT in float64 with every weight random and non-zero (the output projections
    start at zero: re-randomised here, else half of each block would be untested)."""
    shape = {**SMALL, **shape}
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)        # the whole model in float64, its rotary table too
    try:
        torch.manual_seed(seed)
        model = tg.GPT(mlp=mlp, **shape)
    finally:
        torch.set_default_dtype(default)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 1.0 / math.sqrt(p.size(1)))
    assert all(p.dtype == torch.float64 for p in model.parameters())
    return model, shape


def relative_error(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


# ---- the model against the reference ---------------------------------------------------------

@pytest.mark.parametrize("mlp", MLPS)
def test_loss_and_every_gradient_equal_the_reference_in_float64(mlp):
    model, shape = random_model(mlp)
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, shape["vocab_size"], (2, 12), generator=g)
    targets = torch.randint(0, shape["vocab_size"], (2, 12), generator=g)
    loss = model(idx, targets)
    loss.backward()
    W = reference_weights(model, mlp)
    expected = ref_loss(W, idx, targets, shape["n_layer"], shape["n_head"], mlp)
    expected.backward()
    assert loss.dtype == torch.float64 and 2.0 < expected.item() < 10.0          # a real, non-trivial loss
    assert abs(loss.item() - expected.item()) <= 1e-10 * abs(expected.item())
    grads = script_grads_as_reference(model, W, mlp)
    assert set(grads) == {name for name, _ in model.named_parameters()}
    for name, p in model.named_parameters():
        assert p.grad is not None and grads[name].abs().max() > 0, name
        assert relative_error(p.grad, grads[name]) <= 1e-10, name


def reference_shapes(mlp, vocab_size, n_layer, n_embd, **_):
    """Every matrix of the record with the MLP's (a gated one's gate and value apart), by name: (out, in)."""
    d = n_embd
    block = {"attn.c_q.weight": (d, d), "attn.c_k.weight": (d, d), "attn.c_v.weight": (d, d),
             "attn.c_proj.weight": (d, d)}
    h = reference_mlp(mlp).hidden(d)
    if reference_mlp(mlp).gated:
        block.update({"mlp.c_fc_gate.weight": (h, d), "mlp.c_fc_val.weight": (h, d), "mlp.c_proj.weight": (d, h)})
    else:
        block.update({"mlp.c_fc.weight": (h, d), "mlp.c_proj.weight": (d, h)})
    shapes = {f"blocks.{layer}.{name}": shape for layer in range(n_layer) for name, shape in block.items()}
    return {"lm_head.weight": (vocab_size, d), **shapes}


@pytest.mark.parametrize("mlp", MLPS)
def test_sequences_longer_than_the_rotary_table_equal_the_reference(mlp):
    """The model keeps cos/sin for max_seq_len positions; a longer sequence computes its own."""
    model, shape = random_model(mlp, max_seq_len=8)
    idx = torch.randint(0, shape["vocab_size"], (2, 12), generator=torch.Generator().manual_seed(4))
    loss = model(idx, idx)
    expected = ref_loss(reference_weights(model, mlp), idx, idx, shape["n_layer"], shape["n_head"], mlp)
    assert model.rotary_cos.shape == (8, 8) and abs(loss.item() - expected.item()) <= 1e-10 * expected.item()


@pytest.mark.parametrize("n_embd", [32, 80])           # 80: 8d/3 = 213, nearer 256 than 128
@pytest.mark.parametrize("mlp", MLPS)
def test_the_script_has_exactly_the_reference_matrices(mlp, n_embd):
    """The same matrices, names and shapes as the reference (the tied matrix is one parameter, no
    biases, no norm weights), and so the same parameter count."""
    model, shape = random_model(mlp, n_embd=n_embd)
    W = reference_weights(model, mlp)
    assert {name: tuple(w.shape) for name, w in W.items()} == reference_shapes(mlp, **shape)
    assert len(list(model.parameters())) == 1 + shape["n_layer"] * 6
    assert sum(w.numel() for w in W.values()) == sum(p.numel() for p in model.parameters())
    # what a checkpoint saves: the weights only (the rotary table is recomputed, not saved)
    assert set(model.state_dict()) == {name for name, _ in model.named_parameters()} | {"lm_head.weight"}


def test_every_mlp_of_the_script_has_a_reference_formula():
    """The tests above run for every entry of train_gpt.MLPS; one without a formula here fails them."""
    assert set(tg.MLPS) <= set(REFERENCE_MLPS), \
        f"no reference formula for {sorted(set(tg.MLPS) - set(REFERENCE_MLPS))}: add it to REFERENCE_MLPS"
    with pytest.raises(pytest.fail.Exception, match="'mine' but tests/test_gpt_math.py has no reference formula"):
        reference_mlp("mine")


FULL_SIZE_TOTALS = {"relu2": 123_568_128, "swiglu_thin": 109_412_352,      # the record's, seed 003's
                    # the parameter-matched ones: 2048 x 768 x 3 = 4d x d x 2 weights per block
                    "relu": 123_568_128, "gelu": 123_568_128,
                    "reglu": 123_568_128, "geglu": 123_568_128, "swiglu": 123_568_128}


@pytest.mark.parametrize("mlp", MLPS)
def test_parameter_counts_of_the_full_model(mlp):
    """GPT-2 small (d = 768, 12 layers, vocab 50304) built on the meta device: the reference's
    matrices, the published totals, the count the memory check makes before building the model
    (one block times --n-layer), and what Muon orthogonalises: each reference block matrix apart."""
    with torch.device("meta"):
        model = tg.GPT(mlp=mlp)
    shape = dict(vocab_size=50304, n_layer=12, n_embd=768)
    expected = reference_shapes(mlp, **shape)
    total = sum(rows * cols for rows, cols in expected.values())
    assert sum(p.numel() for p in model.parameters()) == total == FULL_SIZE_TOTALS.get(mlp, total)
    assert all(p.ndim == 2 for p in model.parameters())                      # no biases, no norm weights
    assert tg.count_parameters(tg.Hyperparameters(mlp=mlp)) == total
    assert tg.count_parameters(tg.Hyperparameters(mlp=mlp, n_layer=10**6, n_embd=64, n_head=2)) == \
        50304 * 64 + 10**6 * sum(p.numel() for p in tg.Block(64, 2, mlp).parameters())
    orthogonalised = sorted(tuple(p[r0:r1].shape) for p, r0, r1 in tg.Muon.matrices(list(model.blocks.parameters())))
    assert orthogonalised == sorted(s for name, s in expected.items() if name.startswith("blocks."))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_rms_norm_eps_is_the_machine_epsilon_as_the_record(dtype):
    """The record's F.rms_norm(x, (x.size(-1),)) has torch's default eps, finfo(dtype).eps. Only
    inputs with a mean square near eps can show which eps a norm uses (the model test cannot)."""
    eps = torch.finfo(dtype).eps
    x = torch.randn(4, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for mean_square in (eps, 10 * eps, 1.0):
        xs = (x * math.sqrt(mean_square)).to(dtype)
        expected = xs.double() / torch.sqrt((xs.double() ** 2).mean(-1, keepdim=True) + eps)
        assert relative_error(tg.rms_norm(xs).double(), expected) < 4 * eps, mean_square


# ---- properties --------------------------------------------------------------------------------

def captured_logits(model, idx):
    """The logits the script's GPT computes (its head's output, seen by a forward hook)."""
    seen = []
    handle = model.lm_head.register_forward_hook(lambda module, inputs, output: seen.append(output.detach()))
    try:
        model(idx, torch.zeros_like(idx))
    finally:
        handle.remove()
    return seen[0]


@pytest.mark.parametrize("mlp", MLPS)
def test_changing_token_t_changes_nothing_before_t(mlp):
    model, shape = random_model(mlp)
    idx = torch.randint(0, shape["vocab_size"], (1, 16), generator=torch.Generator().manual_seed(2))
    before = captured_logits(model, idx)
    for t in (0, 5, 15):
        changed = idx.clone()
        changed[0, t] = (idx[0, t] + 1) % shape["vocab_size"]
        after = captured_logits(model, changed)
        assert torch.allclose(after[:, :t], before[:, :t], rtol=0, atol=1e-12), t    # the past: unchanged
        assert (after[:, t:] - before[:, t:]).abs().amax(-1).min() > 1e-3, t          # t and later: changed
    # ... and the loss of a position does not depend on later targets or tokens: the loss of the
    # first 8 positions is the mean of the full sequence's first 8 per-position losses
    targets = torch.randint(0, shape["vocab_size"], (1, 16), generator=torch.Generator().manual_seed(3))
    full = torch.nn.functional.cross_entropy(before[0], targets[0], reduction="none")
    assert abs(model(idx[:, :8], targets[:, :8]).item() - full[:8].mean().item()) < 1e-12


@pytest.mark.parametrize("mlp", MLPS)
def test_every_block_starts_as_the_identity(mlp):
    torch.manual_seed(0)
    model = tg.GPT(mlp=mlp, **SMALL)
    x = torch.randn(2, 12, SMALL["n_embd"])
    cos, sin = tg.rotary_cos_sin(12, SMALL["n_embd"] // SMALL["n_head"], "cpu")
    for block in model.blocks:
        assert not block.attn.c_proj.weight.any() and not block.mlp.c_proj.weight.any()
        assert torch.equal(block(x, cos, sin), x)


@pytest.mark.parametrize("mlp", MLPS)
def test_init_is_nn_linear_default_for_every_matrix_and_the_tied_head(mlp):
    """nn.Linear's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), for every matrix (the tied
    matrix too: the head's init, not the embedding's N(0, 1)); output projections are zero."""
    torch.manual_seed(0)
    model = tg.GPT(vocab_size=2048, n_layer=2, n_head=2, n_embd=128, mlp=mlp)
    for name, p in model.named_parameters():
        if name.endswith("c_proj.weight"):
            assert not p.any(), name
            continue
        bound = 1 / math.sqrt(p.size(1))
        assert p.abs().max() <= bound and p.abs().max() > 0.99 * bound, name
        assert abs(p.std().item() / (bound / math.sqrt(3)) - 1) < 0.03, name
    assert model.wte.weight is model.lm_head.weight


def test_the_tied_embedding_and_head_are_one_tensor():
    model, shape = random_model("relu2")
    names = [name for name, _ in model.named_parameters()]
    assert "wte.weight" in names and "lm_head.weight" not in names         # one parameter
    assert model.wte.weight.data_ptr() == model.lm_head.weight.data_ptr()
    with torch.no_grad():
        model.lm_head.weight[3] += 1.0                                         # writing the head ...
    assert torch.equal(model.wte(torch.tensor([3])), model.lm_head.weight[3:4])   # ... writes the embedding


# ---- the optimisers against a reference --------------------------------------------------------

def ref_lr_factor(it, num_iterations, warmup_iters, warmdown_iters):
    """The record's get_lr: linear warmup, then 1, then linear decay to 0 over the last warmdown_iters."""
    if it < warmup_iters:
        return (it + 1) / warmup_iters
    if it < num_iterations - warmdown_iters:
        return 1.0
    return (num_iterations - it) / warmdown_iters


def ref_orthogonalise(G, record_order=True):
    """The record's zeropower_via_newtonschulz5 with its 5 steps, operation for operation: in bf16,
    normalised by the Frobenius norm, iterated on the wide side (transposed when tall), each step
    A = X X^T, B = A X, X = a X + b B + (c A) B, as the record writes it (KellerJordan/
    modded-nanogpt, records/101724_DistributedMuon/train_gpt2.py; its Newton-Schulz is the
    10/14 record's). record_order=False: the same polynomial grouped as (b A + (c A) A) X, which
    train_gpt.py used before and which rounds to bf16 at other points."""
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.bfloat16()
    X = X / (X.norm() + 1e-7)
    tall = G.size(0) > G.size(1)
    if tall:
        X = X.T
    for _ in range(5):
        A = X @ X.T
        if record_order:
            B = A @ X
            X = a * X + b * B + c * A @ B
        else:
            X = a * X + (b * A + c * A @ A) @ X
    return X.T if tall else X


@pytest.mark.parametrize("shape", [(48, 48), (192, 48), (48, 192)])
def test_newton_schulz_is_the_records_iteration_bit_for_bit(shape):
    """newton_schulz5 == the record's iteration, bit for bit, on a square, a tall (transposed) and
    a wide matrix. Equality, not a tolerance: both run the same eager bf16 ops in the same order on
    one thread, so they give the same bits (measured: equal on every shape tried, up to 3072 x 768).
    The other grouping of the same polynomial, (b A + c A A) X, rounds elsewhere and differs in
    ~90% of the entries, by up to ~0.02 on entries of at most ~0.4 (measured on these shapes):
    the assert below checks that this test tells the two apart."""
    G = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    X = tg.newton_schulz5(G)
    assert X.dtype == torch.bfloat16 and X.shape == G.shape
    assert torch.equal(X, ref_orthogonalise(G))
    assert not torch.equal(ref_orthogonalise(G), ref_orthogonalise(G, record_order=False))


class RefMuon:
    """The record's Muon on a list of matrices: buf = m buf + g; Nesterov u = g + m buf; the
    orthogonalised u, scaled by sqrt(max(rows, cols)) inside the fp32 learning rate."""

    def __init__(self, matrices, lr, momentum=0.95):
        self.matrices, self.lr, self.momentum = matrices, lr, momentum
        self.bufs = [torch.zeros_like(p) for p in matrices]

    def step(self, grads, factor):
        for p, g, buf in zip(self.matrices, grads, self.bufs):
            buf.mul_(self.momentum).add_(g)
            u = g.add(buf, alpha=self.momentum)
            p.add_(ref_orthogonalise(u), alpha=-self.lr * factor * max(p.shape) ** 0.5)


class RefAdamW:
    """Adam with decoupled weight decay 0 (so plain Adam), betas (0.9, 0.95), eps 1e-8, in float64."""

    def __init__(self, p, lr, betas=(0.9, 0.95), eps=1e-8):
        self.p, self.lr, self.betas, self.eps, self.t = p.double(), lr, betas, eps, 0
        self.m, self.v = torch.zeros_like(self.p), torch.zeros_like(self.p)

    def step(self, g, factor):
        b1, b2 = self.betas
        self.t += 1
        g = g.double()
        self.m = b1 * self.m + (1 - b1) * g
        self.v = b2 * self.v + (1 - b2) * g * g
        m_hat, v_hat = self.m / (1 - b1 ** self.t), self.v / (1 - b2 ** self.t)
        self.p = self.p - self.lr * factor * m_hat / (v_hat.sqrt() + self.eps)


@pytest.mark.parametrize("mlp", MLPS)
def test_optimiser_steps_equal_the_record_update_rules(mlp):
    """Six steps of build_optimizers' AdamW + Muon, with the learning rate set as train_gpt.py's loop
    sets it, against the reference with the record's schedule (warmup 2, flat, warmdown 3 of 6 steps).

    Tolerances (the weights are N(0, 1/48): below ~0.7, where an fp32 ulp is 6e-8).
    Muon: the reference runs the record's operations in the record's order (the iteration in
    bf16, the update added in fp32 with lr x scale as alpha), so on one machine both give the same
    bits (measured: 0). We allow 1e-8, less than one fp32 rounding of the larger weights: one bf16
    rounding more or less anywhere (the scale applied in bf16, the iteration not transposed) moves
    some weight by ~2^-9 of its update, ~1e-6; the iteration grouped as (b A + c A A) X instead of
    the record's a X + b A X + (c A)(A X) rounds at every step and moves them by 1e-4 (measured).
    AdamW: torch computes in fp32, the reference in float64, so each of the 6 steps rounds the
    weights to fp32 (< 4e-8 each at these sizes): we allow 1e-7. Weight decay 0.01 moves a weight
    of 0.1 by 3.6e-6 a step; other betas change the steps after the first by far more."""
    # width 48: no matrix has a power-of-two sqrt(max(rows, cols)) (64 would: 8 and 16), so a scale
    # applied in bf16 would round
    hp = tg.Hyperparameters(mlp=mlp, n_layer=2, n_head=2, n_embd=48, vocab_size=128, num_iterations=6,
                            warmup_iters=2, warmdown_iters=3, compile=False)
    torch.manual_seed(0)
    model = tg.GPT(hp.vocab_size, hp.n_layer, hp.n_head, hp.n_embd, mlp)
    with torch.no_grad():                                  # c_proj non-zero, like a trained model
        for p in model.parameters():
            p.normal_(0.0, 1.0 / math.sqrt(p.size(1)))
    adamw, muon = tg.build_optimizers(model, hp)
    names = {id(p): name for name, p in model.named_parameters()}
    assert [names[id(p)] for g in adamw.param_groups for p in g["params"]] == ["wte.weight"]   # the tied head only
    block_names = [name for name, _ in model.named_parameters() if name.startswith("blocks.")]
    assert [names[id(p)] for g in muon.param_groups for p in g["params"]] == block_names
    assert all(g["weight_decay"] == 0 and g["betas"] == (0.9, 0.95) for g in adamw.param_groups)

    def split(name, w):                                    # the record's matrices of a script weight
        return list(w.chunk(2)) if reference_mlp(mlp).gated and name.endswith("c_fc.weight") else [w]

    # the reference: the head in float64; the block matrices as the record has them (gate, value apart)
    head = RefAdamW(model.lm_head.weight.detach().clone(), lr=0.0036)
    start = head.p.clone()
    ref_matrices = [m.clone() for name, p in model.named_parameters() if name.startswith("blocks.")
                    for m in split(name, p.detach())]
    assert len(ref_matrices) == hp.n_layer * (7 if reference_mlp(mlp).gated else 6)
    start_matrices = [m.clone() for m in ref_matrices]
    muon_ref = RefMuon(ref_matrices, lr=0.00036)

    g = torch.Generator().manual_seed(1)
    for step in range(hp.num_iterations):
        # small gradients, ~1e-6 as late in training: Adam's eps (1e-8) then changes its steps by ~1%
        grads = {name: 1e-6 * torch.randn(p.shape, generator=g) for name, p in model.named_parameters()}
        for name, p in model.named_parameters():
            p.grad = grads[name].clone()
        factor = tg.lr_factor(step, hp.num_iterations, hp.warmup_iters, hp.warmdown_iters)
        for opt in (adamw, muon):                          # as train_gpt.py's loop
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * factor
            opt.step()
        ref_factor = ref_lr_factor(step, hp.num_iterations, hp.warmup_iters, hp.warmdown_iters)
        head.step(grads["wte.weight"], ref_factor)
        muon_ref.step([m for name in block_names for m in split(name, grads[name])], ref_factor)

    ours_head = model.lm_head.weight.detach().double()
    assert (ours_head - head.p).abs().max().item() <= 1e-7
    assert (head.p - start).abs().max().item() > 0.01                            # it did move
    script_matrices = [m for name, p in model.named_parameters() if name.startswith("blocks.")
                       for m in split(name, p.detach())]
    for ours, ref, first in zip(script_matrices, ref_matrices, start_matrices):
        assert (ours - ref).abs().max().item() <= 1e-8
        assert (ref - first).abs().max().item() > 1e-3                          # it did move


def exact_quintic(G, steps=5):
    """The Newton-Schulz quintic iteration in float64: what the bf16 iterations approximate (in
    float64 the grouping's roundings, ~1e-16, do not matter at the 3% measured here)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.double() / G.double().norm()
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X


def test_compiled_newton_schulz_is_as_close_to_the_exact_iteration_as_the_eager_one():
    """With --compile (the default) Muon's Newton-Schulz is compiled too, as in the record. Inductor
    fuses the elementwise ops and rounds to bf16 at other points than eager, so the bits differ;
    both differ from the exact float64 iteration by bf16 rounding amplified by the iteration
    (~3% Frobenius, measured), and the compiled one must be no further from it. One tall shape
    (the transposed path; c_fc's): inductor takes seconds per shape on a CPU, and
    test_compiled_model_trains_like_the_eager_one runs the compiled Muon on every shape."""
    hp = tg.Hyperparameters(n_layer=1, n_head=2, n_embd=48, vocab_size=128, compile=True)
    model = tg.GPT(hp.vocab_size, hp.n_layer, hp.n_head, hp.n_embd, hp.mlp)
    muon = tg.build_optimizers(model, hp)[1]
    assert muon.newton_schulz is not tg.newton_schulz5
    assert tg.build_optimizers(model, tg.Hyperparameters(compile=False))[1].newton_schulz is tg.newton_schulz5
    G = torch.randn((192, 48), generator=torch.Generator().manual_seed(0))
    exact = exact_quintic(G)
    eager, compiled = tg.newton_schulz5(G), muon.newton_schulz(G)
    assert compiled.dtype == torch.bfloat16 and compiled.shape == G.shape
    error = lambda X: ((X.double() - exact).norm() / exact.norm()).item()  # noqa: E731
    assert error(eager) < 0.05 and error(compiled) < 1.2 * error(eager)


# ---- the training loop ------------------------------------------------------------------------

def write_reference_shard(path, tokens):
    """A shard in the record's format: 256 little-endian int32 (magic 20240520, version 1, token
    count), then the tokens as uint16."""
    header = np.zeros(256, dtype="<i4")
    header[:3] = 20240520, 1, len(tokens)
    path.write_bytes(header.tobytes() + np.asarray(tokens, dtype="<u2").tobytes())


@pytest.mark.parametrize("mlp", MLPS)
def test_the_training_loop_is_the_record_step_with_its_schedule(tmp_path, mlp):
    """train_gpt.main trains 5 steps of 2 micro-steps (warmup 2, flat, warmdown 2: factors 0.5, 1,
    1, 1, 0.5); a plain loop written here must end at the same weights. The model and optimisers
    are the script's (the tests above pin them); what this pins is the loop around them: step s
    reads the s-th step's micro-batches in order (the clean order, see the docstring's list), the
    gradient is the mean over the micro-steps, the lr factor of step s is the record's get_lr(s)
    (test_optimiser_steps_equal_the_record_update_rules calls the script's lr_factor itself, so
    only this test sees what the loop passes it), then zero_grad.

    Both sides run the same fp32 CPU operations in the same order on one thread, so they agree
    bit for bit: the test asks for equality. Dividing the loss by the number of micro-steps or not
    changes the weights only through Adam's eps and Newton-Schulz's eps (both optimisers ignore a
    gradient's scale otherwise); bit equality sees that too."""
    V, T, B, A, N, seed = 64, 16, 2, 2, 5, 7                # vocab, seq, device batch, micro-steps, steps
    rng = np.random.default_rng(0)
    train = rng.integers(0, V, size=N * A * B * T + 1 + 100)
    write_reference_shard(tmp_path / "fineweb_train_000001.bin", train)
    write_reference_shard(tmp_path / "fineweb_val_000000.bin", rng.integers(0, V, size=4 * B * T + 1))
    hp = dict(mlp=mlp, n_layer=1, n_head=2, n_embd=32, vocab_size=V, seq_len=T, batch_size=A * B,
              device_batch_size=B, num_iterations=N, warmup_iters=2, warmdown_iters=2, seed=seed)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in hp.items()]
    assert tg.main(flags + ["--val-every=0", f"--val-tokens={B * T}", "--save-final", "--no-compile",
                            "--device=cpu", "--threads=1", f"--train-files={tmp_path}/fineweb_train_*.bin",
                            f"--val-files={tmp_path}/fineweb_val_*.bin", f"--log-dir={tmp_path}/logs"]) == 0
    [checkpoint] = (tmp_path / "logs").glob(f"gpt-*/step{N}.pt")
    trained = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]

    # the plain loop: the initial weights as --seed makes them (torch seeded, then the model built)
    torch.manual_seed(seed)
    model = tg.GPT(V, hp["n_layer"], hp["n_head"], hp["n_embd"], mlp, T)
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizers = tg.build_optimizers(model, tg.Hyperparameters(**hp, compile=False))
    tokens = torch.from_numpy(train.astype(np.int64))
    for step in range(N):
        for micro in range(A):
            at = (step * A + micro) * B * T                 # one shard, one process: windows back to back
            window = tokens[at:at + B * T + 1]
            loss = model(window[:-1].view(B, T), window[1:].view(B, T))
            (loss / A).backward()
        factor = ref_lr_factor(step, N, hp["warmup_iters"], hp["warmdown_iters"])
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * factor
            opt.step()
        model.zero_grad(set_to_none=True)

    for name, p in model.named_parameters():
        assert not torch.equal(p.detach(), start[name]), name                     # it trained
        assert torch.equal(trained[name], p.detach()), (name, (trained[name] - p.detach()).abs().max().item())


# ---- the speed lever: Newton-Schulz batched over same-shaped matrices, the same bits -------------

def test_batched_newton_schulz_is_the_per_matrix_iteration_bit_for_bit():
    """Newton-Schulz on a batch of same-shaped matrices == on each alone (on the CPU the same bf16
    ops per matrix: the same bits), for a square, a tall and a wide shape; and Muon batched ==
    Muon one matrix at a time over three steps of a swiglu_thin model (gate/value blocks apart)."""
    for shape in [(48, 48), (192, 48), (48, 192)]:
        G = torch.randn((3, *shape), generator=torch.Generator().manual_seed(0))
        assert torch.equal(tg.newton_schulz5(G), torch.stack([tg.newton_schulz5(m) for m in G]))
    torch.manual_seed(0)
    batched = tg.GPT(64, 2, 2, 32, "swiglu_thin")
    alone = tg.GPT(64, 2, 2, 32, "swiglu_thin")
    alone.load_state_dict(batched.state_dict())
    start = [p.detach().clone() for p in batched.parameters()]
    opt_b = tg.Muon(list(batched.blocks.parameters()), lr=0.01)
    opt_a = tg.Muon(list(alone.blocks.parameters()), lr=0.01, batched=False)
    assert opt_b.batched and not opt_a.batched
    for step in range(3):
        g = torch.Generator().manual_seed(step)
        for p, q in zip(batched.blocks.parameters(), alone.blocks.parameters()):
            p.grad = torch.randn(p.shape, generator=g)
            q.grad = p.grad.clone()
        opt_b.step()
        opt_a.step()
    assert all(torch.equal(p, q) for p, q in zip(batched.parameters(), alone.parameters()))
    assert all(not torch.equal(p, s) for p, s in zip(batched.blocks.parameters(), start))     # it moved
