"""Tests of train_gpt.py on the CPU: the record's model and optimiser, the data loader, the log
contract, failures, and that 2 processes (torchrun, gloo) train exactly like 1."""
import dataclasses
import json
import math
import os
import re
import resource
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import train_gpt as tg

REPO = Path(__file__).resolve().parent.parent
TINY = ["--n-layer", "2", "--n-embd", "64", "--n-head", "2", "--seq-len", "64", "--vocab-size", "512",
        "--no-compile", "--device", "cpu"]


# ---- helpers ---------------------------------------------------------------------------------

def write_shard(path, tokens, magic=tg.SHARD_MAGIC, version=tg.SHARD_VERSION, count=None):
    header = np.zeros(256, dtype="<i4")
    header[:3] = magic, version, len(tokens) if count is None else count
    path.write_bytes(header.tobytes() + np.asarray(tokens, dtype="<u2").tobytes())
    return path


@pytest.fixture(scope="module")
def tiny_shards(tmp_path_factory):
    """Shards of data/make_tiny_shards.py's learnable language (vocab 512), in the real format."""
    out = tmp_path_factory.mktemp("tiny")
    subprocess.run([sys.executable, str(REPO / "data" / "make_tiny_shards.py"), "--out", str(out),
                    "--train-shards", "2", "--tokens-per-shard", "100000"], check=True, capture_output=True)
    return out


def shard_flags(folder):
    return ["--train-files", str(folder / "fineweb_train_*.bin"), "--val-files", str(folder / "fineweb_val_*.bin")]


RECORD = re.compile(r"^[a-z_]+:\S*$")
STEP = re.compile(r"^step:(\d+)/(\d+) (val_loss|train_loss):(\S+) train_time:(\d+)ms "
                  r"step_avg:(nan|\d+\.\d\d)ms tokens:(\d+)$")
CONTRACT_KEYS = {
    "run": "run id started torch device world_size gpu",
    "config": "mlp n_layer n_head n_embd mlp_hidden vocab_size params seq_len batch_size device_batch_size "
              "grad_accum num_iterations lr muon_lr warmup_iters warmdown_iters val_every val_tokens seed "
              "compile train_files val_files",
    "peak_memory": "peak_memory allocated reserved",
    "done": "done steps train_time step_avg final_val_loss",
}


def parse_log(path):
    """Read a gpt log by the contract: header, then record lines only, every one parseable."""
    lines = Path(path).read_text().splitlines()
    assert lines[0].startswith("run:gpt ") and lines[1] == "=" * 100
    end = lines.index("=" * 100, 2)
    assert "import torch" in "\n".join(lines[2:end]) and "torch: " in "\n".join(lines[2:end])
    records = []
    for line in [lines[0]] + lines[end + 1:]:
        tokens = line.split(" ")
        assert all(RECORD.match(t) for t in tokens), f"not a record line: {line!r}"
        name = tokens[0].split(":")[0]
        fields = dict(t.split(":", 1) for t in tokens)
        if name == "step":
            m = STEP.match(line)
            assert m, f"step line not in the record's format: {line!r}"
            fields = dict(step=int(m[1]), of=int(m[2]), kind=m[3], loss=float(m[4]), train_time=int(m[5]),
                          step_avg=float(m[6]), tokens=int(m[7]))
        if name in CONTRACT_KEYS:
            missing = set(CONTRACT_KEYS[name].split()) - set(fields)
            assert not missing, f"{name} record lacks {missing}"
        records.append((name, fields))
    return records


def only_log(log_dir):
    logs = list(Path(log_dir).glob("gpt-*.txt"))
    assert len(logs) == 1 and re.fullmatch(r"gpt-\d{8}-\d{6}-[0-9a-f]{8}\.txt", logs[0].name)
    return logs[0]


def losses(records, kind):
    return [(f["step"], f["loss"]) for name, f in records if name == "step" and f["kind"] == kind]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args, cwd, nproc=2):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                           "--master_addr=127.0.0.1", f"--master_port={free_port()}"] + args,
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


# ---- defaults and the model ------------------------------------------------------------------

def test_flags_come_from_the_dataclass_and_defaults_are_the_record():
    hp = tg.parse_args([])
    assert hp == tg.Hyperparameters()
    assert (hp.mlp, hp.n_layer, hp.n_head, hp.n_embd, hp.vocab_size) == ("relu2", 12, 6, 768, 50304)
    assert (hp.seq_len, hp.batch_size, hp.device_batch_size, hp.num_iterations) == (1024, 512, 64, 5100)
    assert (hp.lr, hp.muon_lr, hp.muon_momentum, hp.ns_steps) == (0.0036, 0.00036, 0.95, 5)
    assert (hp.warmup_iters, hp.warmdown_iters, hp.val_every, hp.val_tokens) == (0, 1450, 125, 10485760)
    assert hp.compile and hp.train_files == "data/fineweb10B/fineweb_train_*.bin"
    hp = tg.parse_args(["--mlp", "swiglu_thin", "--no-compile", "--muon-lr", "0.001", "--device-batch-size", "32"])
    assert (hp.mlp, hp.compile, hp.muon_lr, hp.device_batch_size) == ("swiglu_thin", False, 0.001, 32)
    assert [tg.parse_args(["--mlp", name]).mlp for name in tg.MLPS] == list(tg.MLPS)   # every MLP is a choice


@pytest.mark.parametrize("mlp", list(tg.MLPS))
def test_output_projections_start_at_zero_so_blocks_start_as_identity(mlp):
    torch.manual_seed(0)
    model = tg.GPT(vocab_size=128, n_layer=2, n_head=2, n_embd=64, mlp=mlp)
    for block in model.blocks:
        assert not block.attn.c_proj.weight.any() and not block.mlp.c_proj.weight.any()
        assert block.attn.c_q.weight.std() > 0 and block.mlp.c_fc.weight.std() > 0
    idx = torch.randint(0, 128, (2, 16))
    targets = torch.randint(0, 128, (2, 16))
    logits = tg.rms_norm(model.wte(idx)) @ model.lm_head.weight.T            # no blocks at all
    expected = torch.nn.functional.cross_entropy(logits.view(-1, 128), targets.view(-1))
    torch.testing.assert_close(model(idx, targets), expected)


def test_rotary_is_a_rotation_and_relative():
    cos, sin = tg.rotary_cos_sin(16, 8, "cpu")
    q, k = torch.randn(1, 16, 1, 8), torch.randn(1, 16, 1, 8)
    rq = tg.apply_rotary(q, cos, sin)
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1))               # norm kept
    # the same q, k at positions (3, 1) and (12, 10) give the same score: it depends on i - j only
    q0, k0 = q[:, :1].expand(1, 16, 1, 8), k[:, :1].expand(1, 16, 1, 8)
    rq, rk = tg.apply_rotary(q0, cos, sin), tg.apply_rotary(k0, cos, sin)
    torch.testing.assert_close((rq[0, 3] * rk[0, 1]).sum(), (rq[0, 12] * rk[0, 10]).sum())


# ---- Muon ------------------------------------------------------------------------------------

def test_newton_schulz_singular_values_lie_in_the_quintic_band():
    torch.manual_seed(0)
    G = torch.randn(1536, 768)
    s_in = torch.linalg.svdvals((G / G.norm()).double()).numpy()
    # Where the exact iteration sends these singular values: the quintic, 5 times, in float64.
    a, b, c = 3.4445, -4.7750, 2.0315
    grid = np.linspace(s_in.min(), 1.0, 100_001)
    exact = s_in.copy()
    for _ in range(5):
        grid, exact = (a * x + b * x ** 3 + c * x ** 5 for x in (grid, exact))
    lo, hi = grid.min(), grid.max()
    assert 0.6 < lo < 0.75 and 1.05 < hi < 1.2                               # a band, not exactly 1
    X = tg.newton_schulz5(G)
    assert X.dtype == torch.bfloat16 and X.shape == G.shape
    s_out = torch.linalg.svdvals(X.float()).numpy()
    bf16_slack = 0.03                                                        # bf16 has 8 bits of mantissa
    assert lo - bf16_slack < s_out.min() and s_out.max() < hi + bf16_slack
    assert np.abs(np.sort(s_out) - np.sort(exact)).max() < bf16_slack
    assert tg.newton_schulz5(G.T).shape == (768, 1536)                       # wide matrices too


def test_fused_swiglu_weight_gets_the_update_of_two_separate_matrices():
    """Muon on the fused (3072, 768) gate/value weight == Muon on the seed's two 1536x768 weights."""
    torch.manual_seed(0)
    mlp = tg.MLPS["swiglu_thin"](768)
    fused = mlp.c_fc.weight
    gate = torch.nn.Parameter(fused.detach()[:1536].clone())
    val = torch.nn.Parameter(fused.detach()[1536:].clone())
    opt_fused, opt_separate = tg.Muon([fused], lr=0.01), tg.Muon([gate, val], lr=0.01)
    for _ in range(3):
        grad = torch.randn(3072, 768)
        fused.grad, gate.grad, val.grad = grad.clone(), grad[:1536].clone(), grad[1536:].clone()
        opt_fused.step()
        opt_separate.step()
    assert torch.equal(fused.detach(), torch.cat([gate.detach(), val.detach()]))
    # and it is not the update of one 3072x768 matrix
    whole = torch.nn.Parameter(mlp.c_fc.weight.detach().clone())
    whole.grad = torch.randn(3072, 768)
    other = torch.nn.Parameter(whole.detach().clone())
    other.muon_blocks, other.grad = 2, whole.grad.clone()
    tg.Muon([whole], lr=0.01).step()
    tg.Muon([other], lr=0.01).step()
    assert not torch.allclose(whole, other)


MUON_SPLIT_SCRIPT = """
import json, sys, copy, torch, torch.distributed as dist
sys.path.insert(0, sys.argv[1])
import train_gpt as tg
dist.init_process_group("gloo")
torch.manual_seed(0)
model = tg.GPT(vocab_size=64, n_layer=2, n_head=2, n_embd=32, mlp="swiglu_thin")
reference = copy.deepcopy(model)
for p, q in zip(model.blocks.parameters(), reference.blocks.parameters()):
    q.muon_blocks = getattr(p, "muon_blocks", 1)
split = tg.Muon(list(model.blocks.parameters()), lr=0.01)                     # rank r: i % 2 == r
alone = tg.Muon(list(reference.blocks.parameters()), lr=0.01, rank=0, world_size=1)   # all of them
for step in range(3):
    g = torch.Generator().manual_seed(step)                                   # same grads on both ranks
    for p, q in zip(model.blocks.parameters(), reference.blocks.parameters()):
        p.grad = torch.randn(p.shape, generator=g)
        q.grad = p.grad.clone()
    split.step()
    alone.step()
same = all(torch.equal(p, q) for p, q in zip(model.parameters(), reference.parameters()))
owned = sum(1 for i in range(len(tg.Muon.matrices(split.param_groups[0]["params"]))) if i % 2 == dist.get_rank())
moved = any(not torch.equal(p, q) for p, q in zip(model.parameters(), tg.GPT(64, 2, 2, 32, "swiglu_thin").parameters()))
json.dump(dict(same=same, owned=owned, world=split.world_size, moved=moved),
          open(sys.argv[2] + f"/rank{dist.get_rank()}.json", "w"))
dist.barrier()
dist.destroy_process_group()
"""


def test_split_muon_across_two_ranks_equals_one_rank_doing_all(tmp_path):
    script = tmp_path / "muon_split.py"
    script.write_text(MUON_SPLIT_SCRIPT)
    result = torchrun([str(script), str(REPO), str(tmp_path)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in (0, 1):
        r = json.loads((tmp_path / f"rank{rank}.json").read_text())
        # 2 blocks x 7 matrices (q, k, v, o, gate, value, proj): 7 each
        assert r == dict(same=True, owned=7, world=2, moved=True)


# ---- the schedule ----------------------------------------------------------------------------

def test_lr_schedule_is_the_record():
    f = lambda s: tg.lr_factor(s, 5100, 0, 1450)  # noqa: E731
    assert [f(0), f(1000), f(3649), f(3650)] == [1.0, 1.0, 1.0, 1.0]
    assert f(3651) == pytest.approx(1449 / 1450) and f(4375) == pytest.approx(0.5)
    assert f(5099) == pytest.approx(1 / 1450) and f(5100) == 0.0
    factors = [f(s) for s in range(3650, 5100)]
    assert all(a > b for a, b in zip(factors, factors[1:]))                  # linear, falling
    w = lambda s: tg.lr_factor(s, 100, 10, 20)  # noqa: E731
    assert [w(0), w(4), w(9), w(10), w(79), w(80), w(90)] == [0.1, 0.5, 1.0, 1.0, 1.0, 1.0, 0.5]


# ---- data ------------------------------------------------------------------------------------

def test_shards_needed_for_the_seed_and_record_runs():
    assert tg.shards_needed(1500, 512, 1024) == 8 == math.ceil(1500 * 512 * 1024 / 1e8)
    assert tg.shards_needed(5100, 512, 1024) == 27 == math.ceil(5100 * 512 * 1024 / 1e8)
    # the count is enough: that many full shards serve the run without wrapping
    assert 8 * tg.windows_per_shard(100_000_000, 512 * 1024) >= 1500
    assert 27 * tg.windows_per_shard(100_000_000, 512 * 1024) >= 5100


@pytest.mark.parametrize("kind, words", [
    ("magic", "bad magic number 1234"), ("version", "unsupported shard version 7"),
    ("longer", "size mismatch"), ("shorter", "truncated"), ("header", "truncated")])
def test_bad_shards_fail_with_the_file_named(tmp_path, kind, words):
    path = tmp_path / f"fineweb_train_{kind}.bin"
    tokens = np.arange(1000) % 500
    if kind == "magic":
        write_shard(path, tokens, magic=1234)
    elif kind == "version":
        write_shard(path, tokens, version=7)
    elif kind == "longer":
        write_shard(path, tokens, count=999)
    elif kind == "shorter":
        write_shard(path, tokens, count=1001)
    else:
        path.write_bytes(b"\0" * 100)
    with pytest.raises(tg.ShardError, match=re.escape(str(path)) + ".*" + words):
        tg.DistributedTokenLoader([path], 2, 8)


def test_bad_shard_on_the_command_line_is_one_line(tmp_path, capsys):
    write_shard(tmp_path / "fineweb_val_000000.bin", np.arange(5000) % 500)
    write_shard(tmp_path / "fineweb_train_000001.bin", np.arange(5000) % 500, count=4000)
    code = tg.main(TINY + shard_flags(tmp_path) + ["--log-dir", str(tmp_path / "logs")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: ") and "fineweb_train_000001.bin" in err and "size mismatch" in err


def test_loader_windows_per_rank_and_shard_changes(tmp_path):
    B, T = 2, 4
    a = write_shard(tmp_path / "a.bin", np.arange(0, 41))                    # 41 tokens: 2 windows of 16 (+1)
    b = write_shard(tmp_path / "b.bin", np.arange(100, 118))                  # 18 tokens: 1 window
    r0, r1 = (tg.DistributedTokenLoader([a, b], B, T, rank, 2) for rank in (0, 1))
    solo = tg.DistributedTokenLoader([a, b], B, T, 0, 1, micro_steps=2)       # 1 rank, 2 micro-steps
    expected_starts = [0, 16, 100, 0, 16, 100]                                # shard a, a, b, then wraps
    for start in expected_starts:
        (x0, y0), (x1, y1) = r0.next_batch(), r1.next_batch()
        assert x0.flatten().tolist() == list(range(start, start + 8)) and x0.shape == (B, T)
        assert y0.flatten().tolist() == list(range(start + 1, start + 9))
        assert x1.flatten().tolist() == list(range(start + 8, start + 16))   # rank 1: offset B*T
        assert y1.flatten().tolist() == list(range(start + 9, start + 17))
        assert torch.equal(solo.next_batch()[0], x0) and torch.equal(solo.next_batch()[0], x1)
    assert r0.wraps == r1.wraps == 2 and r0.steps_per_pass() == 3 and x0.dtype == torch.int64
    r0.reset()
    assert r0.next_batch()[0].flatten().tolist() == list(range(8)) and r0.wraps == 0


def test_missing_fineweb_names_the_download_command_and_shard_count(tmp_path, capsys):
    folder = tmp_path / "fineweb10B"                                         # FineWeb downloaded elsewhere (--dir)
    code = tg.main(["--num-iterations", "1500", "--train-files", str(folder / "fineweb_train_*.bin"),
                    "--log-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert f"`python data/cached_fineweb10B.py 8 --dir {folder}`" in err and "need 8 shards" in err
    assert not list(tmp_path.glob("gpt-*.txt"))                              # nothing started
    assert tg.main(["--num-iterations", "100", "--train-files", "data/fineweb10B/none_*.bin"]) == 2
    err = capsys.readouterr().err                                            # the default folder: no --dir
    assert "`python data/cached_fineweb10B.py 1`" in err and "need 1 shard of" in err


@pytest.mark.parametrize("make, words", [
    (lambda folder: None, "there is no folder"),
    (lambda folder: (folder.mkdir(), (folder / "train.bin").write_bytes(b"")), "it holds 1 other file(s): train.bin"),
    (lambda folder: folder.mkdir(), "it is empty")])
def test_no_shards_in_a_custom_folder_says_what_is_wrong_not_how_to_download_fineweb(tmp_path, capsys, make,
                                                                                     words):
    make(tmp_path / "mydata")
    code = tg.main(["--train-files", str(tmp_path / "mydata" / "shard_*.bin"), "--log-dir", str(tmp_path / "logs")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and words in err and "mydata" in err
    assert "cached_fineweb10B" not in err and "FineWeb" not in err and not (tmp_path / "logs").exists()


@pytest.mark.parametrize("count, folder, advice", [
    (5100, "tiny", "not a FineWeb-10B download"),                            # the synthetic set cut short
    (tg.FULL_SHARD_TOKENS, "fineweb10B", "`python data/cached_fineweb10B.py 7 --dir "),   # a FineWeb shard
])
def test_a_truncated_shard_gets_advice_that_fits_its_kind(tmp_path, capsys, count, folder, advice):
    (tmp_path / folder).mkdir()
    write_shard(tmp_path / folder / "fineweb_val_000000.bin", np.arange(5000) % 500)
    write_shard(tmp_path / folder / "fineweb_train_000007.bin", np.arange(5000) % 500, count=count)
    code = tg.main(TINY + shard_flags(tmp_path / folder) + ["--log-dir", str(tmp_path / "logs")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "fineweb_train_000007.bin: truncated" in err and advice in err
    if folder == "tiny":
        assert "cached_fineweb10B" not in err and "make_tiny_shards.py" in err


def test_wrapping_run_warns_in_stdout_and_log(tmp_path, capsys):
    for name in ("fineweb_val_000000.bin", "fineweb_train_000001.bin"):
        write_shard(tmp_path / name, np.arange(3000) % 500)                   # 2 steps of 16 x 64 + 1
    code = tg.main(TINY + shard_flags(tmp_path) + ["--batch-size", "16", "--device-batch-size", "16",
                   "--num-iterations", "3", "--val-every", "0", "--val-tokens", "1024",
                   "--log-dir", str(tmp_path / "logs")])
    assert code == 0
    assert "warning: the 1 training shard(s) hold 2 steps but the run has 3" in capsys.readouterr().out
    records = parse_log(only_log(tmp_path / "logs"))
    warning = [f for name, f in records if name == "warning"]
    assert warning and warning[0]["data_wraps"] == "1" and warning[0]["steps_before_wrap"] == "2"
    assert [f for name, f in records if name == "done"][0]["wraps"] == "1"


def test_val_tokens_beyond_the_val_shard_are_refused(tmp_path, capsys):
    for name in ("fineweb_val_000000.bin", "fineweb_train_000001.bin"):
        write_shard(tmp_path / name, np.arange(3000) % 500)
    code = tg.main(TINY + shard_flags(tmp_path) + ["--batch-size", "16", "--device-batch-size", "16",
                   "--val-tokens", "4096", "--log-dir", str(tmp_path / "logs")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--val-tokens 4096 is more than the first validation shard" in err
    assert "fineweb_val_000000.bin" in err and len(err.splitlines()) == 1


BAD_SETTINGS = [                                  # (flags, words the one line must hold)
    *[([flag, value], f"{flag} {value}: must be 1 or more") for flag, value in [
        ("--batch-size", "0"), ("--seq-len", "0"), ("--n-head", "0"), ("--n-layer", "0"), ("--n-embd", "-64"),
        ("--vocab-size", "0"), ("--device-batch-size", "-16"), ("--num-iterations", "0"), ("--val-tokens", "0"),
        ("--threads", "0")]],
    *[([flag, value], f"{flag} {value}: must be 0 or more") for flag, value in [
        ("--ns-steps", "-1"), ("--warmup-iters", "-1"), ("--warmdown-iters", "-5"), ("--val-every", "-1"),
        ("--save-every", "-1"), ("--keep-last", "-2")]],
    *[([flag, value], f"{flag} {float(value)}: must be a finite number >= 0") for flag, value in [
        ("--lr", "nan"), ("--lr", "inf"), ("--lr", "1e39"), ("--muon-lr", "-0.1"), ("--muon-lr", "-2.5")]],
    (["--muon-momentum", "1"], "--muon-momentum 1.0: must be at least 0 and below 1"),
    (["--muon-momentum", "nan"], "--muon-momentum nan: must be at least 0 and below 1"),
    (["--seed", "-1"], "--seed -1: must be between 0 and 2^64 - 1"),
    (["--seed", str(2**64)], f"--seed {2**64}: must be between 0 and 2^64 - 1"),
    (["--n-embd", "64", "--n-head", "3"], "--n-head 3: --n-embd 64 must split into 3 heads of even size"),
    (["--n-embd", "6", "--n-head", "2"], "--n-head 2: --n-embd 6 must split into 2 heads of even size"),
    (["--warmup-iters", "5"], "--warmup-iters 5: more than --num-iterations 4"),
    (["--batch-size", "24"], "--batch-size 24: not a multiple of --device-batch-size 16 x 1 processes"),
    (["--device-batch-size", "32"], "--batch-size 16: not a multiple of --device-batch-size 32"),
    (["--val-tokens", "1000"], "--val-tokens 1000: not a multiple of"),
    (["--save-every", "5"], "--save-every 5: more than --num-iterations 4"),
    (["--keep-last", "2"], "--keep-last 2: no checkpoints are written"),
    (["--batch-size", "x"], "argument --batch-size: invalid int value: 'x'"),
    (["--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
    (["--mlp", "nosuch"], "argument --mlp: invalid choice: 'nosuch'"),
    (["--bogus", "1"], "unrecognized arguments: --bogus 1"),
    (["--val-files", str(REPO / "train_gpt.py"), str(REPO / "README.md")],      # a glob the shell expanded
     f"unrecognized arguments: {REPO / 'README.md'}: quote the --train-files / --val-files glob"),
    (["--val-files", str(REPO / "data")], f"--val-files {REPO / 'data'}: give it a glob of shard files"),
    (["--n-embd", "100000"], "has 240,051,200,000 weights: with their gradients and optimiser states that is more"),
    (["--n-layer", "1000000"], "has 49,152,032,768 weights: with their gradients"),       # counted, not built
    (["--batch-size", "1600000"], "fewer than one step reads (--batch-size x --seq-len + 1 = 102400001)"),
    (["--threads", str(os.cpu_count() + 1)], f"--threads {os.cpu_count() + 1}: more than the {os.cpu_count()} CPUs"),
    (["--log-dir", ""], "--log-dir '': give it a folder"),
    (["--lr", "-inf"], "argument --lr: expected one argument: give it a value (one that starts with '-' goes as "
                       "--lr=VALUE)"),
]


@pytest.mark.parametrize("flags, words", BAD_SETTINGS, ids=[" ".join(f) for f, _ in BAD_SETTINGS])
def test_bad_settings_are_refused_with_one_line_before_anything_is_written(tiny_shards, tmp_path, capsys, flags,
                                                                          words):
    """Valid shards and a run that would start: only the check stops it, and no log is left behind."""
    code = tg.main(TINY + shard_flags(tiny_shards) + ["--batch-size", "16", "--device-batch-size", "16",
                   "--num-iterations", "4", "--val-every", "0", "--val-tokens", "1024",
                   "--log-dir", str(tmp_path / "logs")] + flags)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: ") and words in err, err
    assert not (tmp_path / "logs").exists() and not list(Path.cwd().glob("gpt-*.txt"))


def test_the_checked_base_run_is_valid(tiny_shards, tmp_path):
    """The base of the test above trains when no bad flag is added (so each refusal is the check's)."""
    assert tg.main(TINY + shard_flags(tiny_shards) + ["--batch-size", "16", "--device-batch-size", "16",
                   "--num-iterations", "4", "--val-every", "0", "--val-tokens", "1024",
                   "--log-dir", str(tmp_path / "logs")]) == 0
    assert parse_log(only_log(tmp_path / "logs"))[-1][1]["status"] == "ok"


@pytest.mark.parametrize("where", ["under_a_file", "is_a_file"])
def test_an_unwritable_log_dir_is_one_line(tiny_shards, tmp_path, capsys, where):
    (tmp_path / "file").write_text("not a folder")
    log_dir = tmp_path / "file" / "logs" if where == "under_a_file" else tmp_path / "file"
    code = tg.main(TINY + shard_flags(tiny_shards) + ["--batch-size", "16", "--device-batch-size", "16",
                   "--num-iterations", "4", "--val-tokens", "1024", "--log-dir", str(log_dir)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith(f"error: --log-dir {log_dir}: cannot write")
    assert "choose a folder you can write to with --log-dir" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    code = tg.main(["--device", "cuda", "--log-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--device cuda" in err and "--device cpu" in err


# ---- training runs ---------------------------------------------------------------------------

@pytest.mark.parametrize("mlp", list(tg.MLPS))
def test_loss_falls_on_tiny_shards_and_every_log_line_parses(tiny_shards, tmp_path, capsys, mlp):
    log_dir = tmp_path / "logs"
    threads_before = torch.get_num_threads()
    code = tg.main(TINY + shard_flags(tiny_shards) + [
        "--mlp", mlp, "--batch-size", "16", "--device-batch-size", "8", "--num-iterations", "30",
        "--val-every", "10", "--val-tokens", "4096", "--log-dir", str(log_dir)])
    assert code == 0
    records = parse_log(only_log(log_dir))
    names = [name for name, _ in records]
    assert names[:2] == ["run", "config"] and names[-2:] == ["peak_memory", "done"]
    config = dict(records[1][1])
    assert (config["mlp"], config["grad_accum"], config["warmdown_iters"]) == (mlp, "2", "30")   # clamped
    assert config["mlp_hidden"] == str(tg.MLPS[mlp](64).c_proj.in_features) and config["precision"] == "fp32"
    # the contract's keys first, in its order; then every other field of the dataclass, and derived keys
    assert list(config)[1:1 + len(CONTRACT_KEYS["config"].split())] == CONTRACT_KEYS["config"].split()
    assert {f.name for f in dataclasses.fields(tg.Hyperparameters)} <= set(config)
    assert (config["device"], config["save_final"], config["log_dir"]) == ("cpu", "0", str(log_dir))
    val = losses(records, "val_loss")
    train = losses(records, "train_loss")
    assert [s for s, _ in val] == [0, 10, 20, 30] and [s for s, _ in train] == list(range(1, 31))
    assert abs(val[0][1] - math.log(512)) < 0.3                              # starts at a uniform guess
    assert val[-1][1] < val[0][1] - 2.0 and val[-1][1] < val[1][1]          # and clearly learns (~3.3)
    steps = {(f["step"], f["kind"]): f for name, f in records if name == "step"}
    assert steps[(30, "train_loss")]["tokens"] == 30 * 16 * 64
    assert steps[(5, "train_loss")]["train_time"] == 0 and math.isnan(steps[(10, "train_loss")]["step_avg"])
    assert steps[(30, "train_loss")]["step_avg"] == pytest.approx(steps[(30, "train_loss")]["train_time"] / 20,
                                                                   abs=0.1)
    done = records[-1][1]
    assert done["status"] == "ok" and done["steps"] == "30" and float(done["final_val_loss"]) == \
        pytest.approx(val[-1][1], abs=1e-4)
    assert records[-2][1]["allocated"] == "nanMiB" and int(records[-2][1]["max_rss"][:-3]) > 0
    out = capsys.readouterr().out                                            # stdout has the records too
    assert f"step:30/30 val_loss:{val[-1][1]:.4f}" in out
    assert "\ntorch_threads: 1\n" in only_log(log_dir).read_text()         # --threads 1, the default
    assert torch.get_num_threads() == threads_before                         # and this process keeps its own


class MLPTanh(torch.nn.Module):
    """A researcher's own MLP, as the comment above train_gpt.py's MLPs asks for one: d -> 3d, tanh,
    3d -> d, its output projection named c_proj and zero at init."""

    def __init__(self, n_embd):
        super().__init__()
        self.c_fc = torch.nn.Linear(n_embd, 3 * n_embd, bias=False)
        self.c_proj = torch.nn.Linear(3 * n_embd, n_embd, bias=False)
        self.c_proj.weight.data.zero_()

    def forward(self, x):
        return self.c_proj(torch.tanh(self.c_fc(x)))


def test_an_mlp_added_to_mlps_trains_end_to_end_with_nothing_else_changed(tiny_shards, tmp_path, monkeypatch,
                                                                           capsys):
    """A new MLP is a class and an entry in MLPS (the extension point; set here for this test only):
    --mlp takes its name, the log names it with its width and size, it learns, and the run ends with
    the command that analyses its log."""
    monkeypatch.setitem(tg.MLPS, "tanh3", MLPTanh)
    log_dir = tmp_path / "logs"
    assert tg.main(TINY + shard_flags(tiny_shards) + [
        "--mlp", "tanh3", "--batch-size", "16", "--device-batch-size", "16", "--num-iterations", "30",
        "--val-every", "10", "--val-tokens", "4096", "--log-dir", str(log_dir)]) == 0
    records = parse_log(only_log(log_dir))
    config, d = dict(records)["config"], 64
    assert (config["mlp"], config["mlp_hidden"]) == ("tanh3", str(3 * d))
    assert config["params"] == str(512 * d + 2 * (4 * d * d + 2 * 3 * d * d))    # the embedding, 2 blocks
    assert config["muon_matrices"] == str(2 * (4 + 2))                        # 4 attention matrices, c_fc, c_proj
    val = losses(records, "val_loss")
    assert [s for s, _ in val] == [0, 10, 20, 30] and val[-1][1] < val[0][1] - 2.0 and val[-1][1] < val[1][1]
    assert capsys.readouterr().out.splitlines()[-1] == f"next: python analyze.py {only_log(log_dir)}"


def test_an_mlp_no_longer_in_mlps_is_one_line():
    """A resumed run takes --mlp from its checkpoint, past argparse's choices: the check names the MLPs."""
    with pytest.raises(tg.UsageError, match="--mlp tanh3: not an entry of MLPS in train_gpt.py \\(relu2, swiglu_thin"):
        tg.check_settings(tg.Hyperparameters(mlp="tanh3"), world_size=1)


def test_a_field_added_to_the_dataclass_is_in_the_config_record():
    """The config: record holds every field of the settings, so runs that differ in a setting someone
    adds never look alike; the contract's keys keep their places."""
    @dataclasses.dataclass
    class WithDropout(tg.Hyperparameters):
        dropout: float = dataclasses.field(default=0.1, metadata=dict(help="dropout"))

    derived = dict(mlp_hidden=3072, params=123_568_128, grad_accum=8, precision="bf16")
    record = tg.config_record(WithDropout(), **derived)
    name, *tokens = record.split(" ")
    fields = dict(t.split(":", 1) for t in tokens)
    assert name == "config:" and len(fields) == len(tokens)                   # every key once
    assert fields["dropout"] == "0.1" and fields["precision"] == "bf16" and fields["compile"] == "1"
    assert list(fields)[:len(CONTRACT_KEYS["config"].split())] == CONTRACT_KEYS["config"].split()
    assert set(fields) == {f.name for f in dataclasses.fields(WithDropout)} | set(derived)
    assert tg.config_record(WithDropout(dropout=0.2), **derived) == record.replace("dropout:0.1", "dropout:0.2")


def test_two_processes_train_exactly_like_one_with_twice_the_accumulation(tiny_shards, tmp_path):
    args = TINY + shard_flags(tiny_shards) + [
        "--mlp", "swiglu_thin", "--batch-size", "16", "--device-batch-size", "8", "--num-iterations", "8",
        "--val-every", "4", "--val-tokens", "2048", "--precision", "fp32"]
    distributed = torchrun([str(REPO / "train_gpt.py")] + args + ["--log-dir", str(tmp_path / "two")], cwd=REPO)
    assert distributed.returncode == 0, distributed.stderr[-3000:]
    assert tg.main(args + ["--log-dir", str(tmp_path / "one")]) == 0
    two, one = parse_log(only_log(tmp_path / "two")), parse_log(only_log(tmp_path / "one"))
    assert (dict(two)["config"]["grad_accum"], dict(one)["config"]["grad_accum"]) == ("1", "2")
    assert dict(two)["run"]["world_size"] == "2"
    for kind in ("train_loss", "val_loss"):
        a, b = losses(two, kind), losses(one, kind)
        assert [s for s, _ in a] == [s for s, _ in b] and len(a) >= 3
        np.testing.assert_allclose([v for _, v in a], [v for _, v in b], rtol=0, atol=2e-4)
    assert losses(one, "val_loss")[-1][1] < losses(one, "val_loss")[0][1] - 0.5     # it trained
    assert dict(one)["done"]["train_time"] == "0ms"                         # 8 steps: all untimed warm-up


def test_fewer_larger_micro_steps_train_the_same(tiny_shards, tmp_path):
    # --device-batch-size only regroups a step's sequences (on a GPU with memory to spare, 128 x 4
    # micro-steps instead of the record's 64 x 8): the same tokens, the same gradient, summed in
    # another order, so the losses agree to float rounding
    args = TINY + shard_flags(tiny_shards) + [
        "--batch-size", "16", "--num-iterations", "8", "--val-every", "4", "--val-tokens", "2048"]
    for dbs in (4, 16):
        assert tg.main(args + ["--device-batch-size", str(dbs), "--log-dir", str(tmp_path / str(dbs))]) == 0
    four, one = parse_log(only_log(tmp_path / "4")), parse_log(only_log(tmp_path / "16"))
    assert (dict(four)["config"]["grad_accum"], dict(one)["config"]["grad_accum"]) == ("4", "1")
    for kind in ("train_loss", "val_loss"):
        a, b = losses(four, kind), losses(one, kind)
        assert [s for s, _ in a] == [s for s, _ in b] and len(a) >= 3
        np.testing.assert_allclose([v for _, v in a], [v for _, v in b], rtol=0, atol=2e-4)
    assert losses(one, "val_loss")[-1][1] < losses(one, "val_loss")[0][1] - 0.5     # it trained



def test_compiled_model_trains_like_the_eager_one(tiny_shards, tmp_path):
    """torch.compile is the default (as in the record): the compiled model (inductor's CPU
    backend here) must run and give the eager model's losses up to float rounding, also when it
    resumes (it compiles again, on a dry step), and its checkpoints hold the plain model's names. ~40 s."""
    args = [a for a in TINY if a != "--no-compile"] + shard_flags(tiny_shards) + [
        "--batch-size", "16", "--device-batch-size", "16", "--num-iterations", "6", "--val-every", "3",
        "--val-tokens", "2048"]
    assert tg.main(args + ["--compile", "--save-every", "3", "--log-dir", str(tmp_path / "compiled")]) == 0
    first = tg.checkpoint_folder(only_log(tmp_path / "compiled")) / "step3.pt"
    assert list(torch.load(first, weights_only=True)["model"]) == list(tg.GPT(512, 2, 2, 64).state_dict())
    assert tg.main(["--resume", str(first)]) == 0                              # steps 4..6 again, compiled
    assert tg.main(args + ["--no-compile", "--log-dir", str(tmp_path / "eager")]) == 0
    compiled, eager = parse_log(only_log(tmp_path / "compiled")), parse_log(only_log(tmp_path / "eager"))
    assert (dict(compiled)["config"]["compile"], dict(eager)["config"]["compile"]) == ("1", "0")
    assert [f["from_step"] for name, f in compiled if name == "resume"] == ["3"]
    for kind in ("train_loss", "val_loss"):
        a, b = dict(losses(compiled, kind)), dict(losses(eager, kind))             # the last line of a step wins
        assert sorted(a) == sorted(b) and len(a) >= 3
        np.testing.assert_allclose([a[s] for s in sorted(a)], [b[s] for s in sorted(b)], rtol=0, atol=1e-3)
    assert losses(eager, "val_loss")[-1][1] < losses(eager, "val_loss")[0][1] - 0.5     # it trained


# ---- failures --------------------------------------------------------------------------------

def test_diverging_run_stops_with_the_step_and_keeps_its_log(tiny_shards, tmp_path, capsys):
    code = tg.main(TINY + shard_flags(tiny_shards) + [
        "--lr", "1e20", "--batch-size", "16", "--device-batch-size", "16", "--num-iterations", "20",
        "--val-every", "0", "--val-tokens", "1024", "--log-dir", str(tmp_path)])
    err = capsys.readouterr().err
    records = parse_log(only_log(tmp_path))
    train = losses(records, "train_loss")
    bad_step = train[-1][0]
    assert code == 1 and not math.isfinite(train[-1][1]) and all(math.isfinite(v) for _, v in train[:-1])
    assert bad_step < 20 and f"at step {bad_step}" in err and "diverged" in err
    assert [name for name, _ in records[-2:]] == ["peak_memory", "done"]
    assert records[-1][1]["status"] == "diverged" and records[-1][1]["steps"] == str(bad_step)


SMOKE_RUN = TINY + ["--batch-size", "16", "--device-batch-size", "16", "--num-iterations", "40", "--val-every",
                    "10", "--val-tokens", "8192"]              # the README's CPU smoke run, on the tiny shards


def start_smoke_run(tiny_shards, log_dir, *extra):
    return subprocess.Popen([sys.executable, "train_gpt.py"] + SMOKE_RUN + shard_flags(tiny_shards)
                            + ["--log-dir", str(log_dir), *extra],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def signal_at(proc, prefix, signum):
    """Read the run's stdout until a line starts with prefix, send the signal, wait: (stdout, stderr)."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(prefix):
            proc.send_signal(signum)
            break
    out, err = proc.communicate(timeout=120)
    return "".join(seen) + out, err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_ends_with_one_line_a_done_record_and_every_finished_line(tiny_shards, tmp_path, signum):
    """Ctrl-C (or a job's SIGTERM) ends the run at once: status:interrupted, and the next command to type.
    2000 steps, not the smoke run's 40: the 35 steps after step 5 take under a second, and on a busy
    machine this process read step 5's line late enough that the run had ended (exit 0)."""
    longer = ["--num-iterations", "2000"]
    proc = start_smoke_run(tiny_shards, tmp_path, *longer)
    out, err = signal_at(proc, "step:5/2000 train_loss", signum)
    assert proc.returncode == 130 and "Traceback" not in err
    message = err.strip().splitlines()
    assert len(message) == 1, err
    records = parse_log(only_log(tmp_path))
    assert records[-2][0] == "peak_memory" and records[-1][0] == "done" and records[-1][1]["status"] == "interrupted"
    steps = int(records[-1][1]["steps"])
    assert 5 <= steps < 2000 and [s for s, _ in losses(records, "train_loss")] == list(range(1, steps + 1))
    assert [line for line in out.splitlines() if line.startswith("step:")] == \
        [line for line in only_log(tmp_path).read_text().splitlines() if line.startswith("step:")]
    assert message[0].startswith(f"interrupted at step {steps} of 2000; every finished line is in {only_log(tmp_path)}")
    command = shlex.split(message[0].split("start it again with checkpoints: ")[1])   # no checkpoint to resume
    assert command[:2] == ["python", "train_gpt.py"] and command[-2:] == ["--save-every", "200"]
    assert command[2:-2] == SMOKE_RUN + shard_flags(tiny_shards) + ["--log-dir", str(tmp_path)] + longer


def test_a_reader_of_stdout_that_goes_away_stops_the_run_as_ctrl_c_does(tiny_shards, tmp_path):
    """`python train_gpt.py ... | head`: when head exits, the next line cannot be printed; the run
    stops as on Ctrl-C (exit status 130, no traceback) and its log still ends with peak_memory and
    done status:interrupted, every finished step in it."""
    proc = start_smoke_run(tiny_shards, tmp_path, "--num-iterations", "2000")
    for line in proc.stdout:
        if line.startswith("step:5/2000 train_loss"):
            break
    proc.stdout.close()                          # what head does when it has its lines
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 130 and "Traceback" not in err, err
    assert err.startswith("interrupted at step ") and len(err.strip().splitlines()) == 1, err
    records = parse_log(only_log(tmp_path))
    assert records[-2][0] == "peak_memory" and records[-1][0] == "done" and records[-1][1]["status"] == "interrupted"
    steps = int(records[-1][1]["steps"])
    assert 5 <= steps < 2000 and [s for s, _ in losses(records, "train_loss")] == list(range(1, steps + 1))


def test_the_command_an_interrupted_run_prints_resumes_it(tiny_shards, tmp_path):
    proc = start_smoke_run(tiny_shards, tmp_path, "--save-every", "10")
    _, err = signal_at(proc, "step:15/40 train_loss", signal.SIGINT)
    log = only_log(tmp_path)
    assert proc.returncode == 130 and len(err.strip().splitlines()) == 1, err
    command = err.strip().split("to continue from step 10 (the newest checkpoint): ")[1]
    assert command == f"python train_gpt.py --resume {log}"
    resumed = subprocess.run([sys.executable] + shlex.split(command)[1:], cwd=REPO, capture_output=True, text=True,
                             timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    records = parse_log(log)
    names = [name for name, _ in records]
    assert names.count("run") == names.count("config") == names.count("resume") == 1
    assert [f["status"] for name, f in records if name == "done"] == ["interrupted", "ok"]
    last = {(f["step"], f["kind"]): f for name, f in records if name == "step"}      # the last line of each wins
    assert sorted(s for s, kind in last if kind == "train_loss") == list(range(1, 41))
    assert sorted(s for s, kind in last if kind == "val_loss") == [0, 10, 20, 30, 40]


def test_a_bad_later_shard_stops_the_run_with_its_name_and_the_log_is_closed(tmp_path, capsys):
    write_shard(tmp_path / "fineweb_val_000000.bin", np.arange(3000) % 500)
    write_shard(tmp_path / "fineweb_train_000001.bin", np.arange(3000) % 500)
    write_shard(tmp_path / "fineweb_train_000002.bin", np.arange(3000) % 600)   # ids up to 599 >= vocab 512
    code = tg.main(TINY + shard_flags(tmp_path) + ["--batch-size", "16", "--device-batch-size", "16",
                   "--num-iterations", "5", "--val-every", "0", "--val-tokens", "1024",
                   "--log-dir", str(tmp_path / "logs")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "fineweb_train_000002.bin: holds token id 599, not below --vocab-size 512" in err
    records = parse_log(only_log(tmp_path / "logs"))
    assert [s for s, _ in losses(records, "train_loss")] == [1]               # the step before it is kept
    assert records[-1][0] == "done" and records[-1][1]["status"] == "error"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs RLIMIT_AS as Linux has it")
def test_out_of_memory_gives_the_device_batch_advice(tiny_shards, tmp_path):
    """A real allocation failure: the process may map 8 GiB, a micro-batch's fp32 logits need 13 GiB."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (8 * 2**30, 8 * 2**30))
    flags = ["--n-layer", "1", "--n-embd", "64", "--n-head", "2", "--vocab-size", "50304", "--seq-len", "512",
             "--batch-size", "128", "--device-batch-size", "128", "--num-iterations", "3", "--val-every", "0",
             "--val-tokens", "65536", "--no-compile", "--device", "cpu", "--log-dir", str(tmp_path)]
    result = subprocess.run([sys.executable, str(REPO / "train_gpt.py")] + flags + shard_flags(tiny_shards),
                            preexec_fn=limit, capture_output=True, text=True, timeout=120)
    if not list(tmp_path.glob("gpt-*.txt")) and "import torch" in result.stderr:
        pytest.skip(f"this torch build cannot even start within 8 GiB of address space: {result.stderr[-300:]}")
    assert result.returncode == 1, result.stderr[-2000:]
    assert "out of memory at step 0" in result.stderr and "--device-batch-size 64" in result.stderr
    assert "global batch of 128 is kept" in result.stderr
    records = parse_log(only_log(tmp_path))
    assert records[-1][1]["status"] == "oom" and records[-2][0] == "peak_memory"
