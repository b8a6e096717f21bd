"""Tests of train_mnist_ffn.py: data (IDX parsing, checksums, downloads from mirrors), every
model of MODELS trained beside others as alone and as a plain per-trial loop with
torch.optim.Adam, isolation of a diverging trial, resume, bad input (of the trainer and of
bench/bench_mnist.py), Ctrl-C and the log contract with its config: record. CPU. The trainer, resume and command-line tests run on a synthetic MNIST-shaped set
made here; only the tests about the real files (format, checksums, downloads, the reference
log's accuracies) need real MNIST from ../shared and skip without it."""
import contextlib
import dataclasses
import functools
import io
import gzip
import os
import http.server
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import train_mnist_ffn as M

TRAIN_LABEL_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


# ------------------------------------------------------------------------------------------
# helpers written here, independent of the script

def idx_bytes(array, code):
    """An IDX file: magic 0,0,<code>,<ndim>, big-endian uint32 dims, big-endian data."""
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    big = array.astype(array.dtype.newbyteorder(">"))
    return header + big.tobytes()


def copy_mnist(src, dst):
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.glob("*.gz"):
        shutil.copy(f, dst / f.name)
    return dst


def parse_line(line):
    """The contract: `<name>:<value>` tokens separated by single spaces; first names the record."""
    tokens = line.split(" ")
    assert all(re.fullmatch(r"[a-z_]+:\S*", tok) for tok in tokens), f"not a record line: {line!r}"
    name, first = tokens[0].split(":", 1)
    values = dict(tok.split(":", 1) for tok in tokens[1:])
    assert len(values) == len(tokens) - 1, f"repeated key in {line!r}"
    return name, first, values


def read_records(path):
    """Lines 1 and the records after the second 100-'=' line, checked against the contract."""
    lines = path.read_text().split("\n")
    assert lines[-1] == "", "the log must end with a newline"
    lines = lines[:-1]
    assert lines[1] == "=" * 100
    end = lines.index("=" * 100, 2)
    return [parse_line(lines[0])] + [parse_line(line) for line in lines[end + 1:]]


def number(text):
    return float(text)  # accepts nan/inf too


# ------------------------------------------------------------------------------------------
# IDX parsing and the data files

def test_real_mnist_parses_with_the_known_label_counts(mnist_dir):
    arrays = M.load_mnist(mnist_dir, downloaded=False)
    assert arrays["train-images-idx3-ubyte"].shape == (60000, 28, 28)
    assert arrays["train-labels-idx1-ubyte"].shape == (60000,)
    assert arrays["t10k-images-idx3-ubyte"].shape == (10000, 28, 28)
    assert arrays["t10k-labels-idx1-ubyte"].shape == (10000,)
    assert arrays["train-images-idx3-ubyte"].dtype == np.uint8
    assert np.bincount(arrays["train-labels-idx1-ubyte"]).tolist() == TRAIN_LABEL_COUNTS
    assert arrays["train-images-idx3-ubyte"].max() == 255


def test_split_is_48000_12000_disjoint_and_scaled(mnist_dir):
    data = M.mnist_tensors(M.load_mnist(mnist_dir, downloaded=False), torch.device("cpu"))
    assert data["train_x"].shape == (48000, 784) and data["val_x"].shape == (12000, 784)
    assert data["test_x"].shape == (10000, 784)
    assert 0.0 == data["train_x"].min() and data["train_x"].max() == 1.0
    assert data["train_y"].bincount().sum() + data["val_y"].bincount().sum() == 60000
    # the split is the documented one: randperm(60000) of a generator seeded 42
    perm = torch.randperm(60000, generator=torch.Generator().manual_seed(42))
    raw = torch.from_numpy(M.load_mnist(mnist_dir, downloaded=False)["train-labels-idx1-ubyte"]).long()
    assert torch.equal(data["val_y"], raw[perm[48000:]])


def test_parse_idx_synthetic_files():
    images = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    assert np.array_equal(M.parse_idx(idx_bytes(images, 0x08)), images)
    labels = np.array([7, 0, 9], dtype=np.uint8)
    assert np.array_equal(M.parse_idx(idx_bytes(labels, 0x08)), labels)
    ints = np.array([[1, -2], [70000, 3]], dtype=np.int32)
    parsed = M.parse_idx(idx_bytes(ints, 0x0C))
    assert parsed.shape == (2, 2) and parsed.tolist() == ints.tolist()
    floats = np.array([0.5, -1.25], dtype=np.float32)
    assert M.parse_idx(idx_bytes(floats, 0x0D)).tolist() == [0.5, -1.25]
    with pytest.raises(ValueError, match="size mismatch"):
        M.parse_idx(idx_bytes(images, 0x08)[:-1])
    with pytest.raises(ValueError, match="magic"):
        M.parse_idx(b"\x01\x00\x08\x01" + bytes(8))


def expect_error(folder, downloaded=False, verify=True):
    with pytest.raises(M.UsageError) as info:
        M.load_mnist(folder, downloaded=downloaded, verify=verify)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_file_names_the_file_and_the_fix(synthetic_dir, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(synthetic_dir, folder)
    (folder / "t10k-labels-idx1-ubyte").unlink()
    message = expect_error(folder, verify=False)
    assert "t10k-labels-idx1-ubyte" in message and "not found" in message
    assert "python train_mnist_ffn.py" in message


def test_truncated_files_are_refused(synthetic_dir, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(synthetic_dir, folder)
    raw = (folder / "train-labels-idx1-ubyte").read_bytes()
    (folder / "train-labels-idx1-ubyte").write_bytes(raw[:1234])  # an uncompressed, cut file
    message = expect_error(folder, downloaded=True, verify=False)
    assert f"{folder / 'train-labels-idx1-ubyte'}: truncated (expected 60008 bytes after decompression, " \
           f"got 1234); delete it and rerun python train_mnist_ffn.py to download again" in message
    # a cut .gz file
    (folder / "train-labels-idx1-ubyte").unlink()
    gz = gzip.compress(raw)
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gz[:len(gz) // 2])
    message = expect_error(folder, verify=False)
    assert "train-labels-idx1-ubyte.gz: truncated" in message and "--data-dir" in message


def test_checksum_mismatch_is_refused(mnist_dir, tmp_path):
    folder = copy_mnist(mnist_dir, tmp_path / "m")
    raw = bytearray(gzip.decompress((folder / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # one wrong label, same size
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(raw)))
    message = expect_error(folder)
    assert "t10k-labels-idx1-ubyte.gz: checksum mismatch" in message
    assert "27ae3e4e09519cfbb04c329615203637" in message


# ------------------------------------------------------------------------------------------
# downloading from mirrors (the network is stood in for by local files and a local server)

@pytest.fixture
def local_server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_download_falls_through_a_dead_mirror(mnist_dir, tmp_path, local_server, monkeypatch):
    root, url = local_server
    copy_mnist(mnist_dir, root / "good")
    monkeypatch.setattr(M, "MIRRORS", [url + "absent/", url + "good/"])
    target = tmp_path / "data" / "mnist"
    M.download_mnist(target)
    assert sorted(p.name for p in target.iterdir()) == sorted(n + ".gz" for n in M.MNIST_FILES)
    arrays = M.load_mnist(target, downloaded=True)
    assert np.bincount(arrays["train-labels-idx1-ubyte"]).tolist() == TRAIN_LABEL_COUNTS


def test_corrupt_mirror_never_leaves_a_file_taken_as_valid(mnist_dir, tmp_path, monkeypatch):
    bad = copy_mnist(mnist_dir, tmp_path / "bad")
    gz = (bad / "train-images-idx3-ubyte.gz").read_bytes()
    (bad / "train-images-idx3-ubyte.gz").write_bytes(gz[:len(gz) // 3])  # cut download
    labels = bytearray(gzip.decompress((bad / "train-labels-idx1-ubyte.gz").read_bytes()))
    labels[-1] ^= 1
    (bad / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(labels)))  # wrong bytes
    target = tmp_path / "data"
    # only the corrupt mirror: the download fails with one line, and leaves no file behind
    monkeypatch.setattr(M, "MIRRORS", [bad.as_uri() + "/", (tmp_path / "nowhere").as_uri() + "/"])
    with pytest.raises(M.UsageError) as info:
        M.download_mnist(target)
    assert "train-images-idx3-ubyte.gz" in str(info.value) and "\n" not in str(info.value)
    assert not any("train-images" in p.name for p in target.iterdir())
    # the corrupt mirror first, a good one second: the good copies are the ones kept
    good = copy_mnist(mnist_dir, tmp_path / "good")
    monkeypatch.setattr(M, "MIRRORS", [bad.as_uri() + "/", good.as_uri() + "/"])
    M.download_mnist(target)
    assert sorted(p.name for p in target.iterdir()) == sorted(n + ".gz" for n in M.MNIST_FILES)
    M.load_mnist(target, downloaded=True)  # every file verifies


# ------------------------------------------------------------------------------------------
# A synthetic MNIST-shaped data set, so that the trainer, resume and isolation tests run on any
# clone: 60,000 + 10,000 images of 28 x 28 in the real files' format and sizes, a border of two
# pixels that is 0 in every image (as MNIST's 71 unlit pixels), and classes that can be learned
# (each class lights its own random pattern, with noise). Its checksums are not MNIST's, so the
# script reads it with --no-checksum (load_mnist(verify=False)).

def synthetic_arrays(seed=0):
    rng = np.random.default_rng(seed)
    patterns = rng.random((10, 24, 24)) < 0.25

    def images(n):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        lit = patterns[labels] ^ (rng.random((n, 24, 24)) < 0.08)  # flip 8% of the pixels
        inner = (lit * rng.integers(96, 256, (n, 24, 24))).astype(np.uint8)
        out = np.zeros((n, 28, 28), np.uint8)
        out[:, 2:26, 2:26] = inner
        return out, labels

    train, train_labels = images(60000)
    test, test_labels = images(10000)
    return {"train-images-idx3-ubyte": train, "train-labels-idx1-ubyte": train_labels,
            "t10k-images-idx3-ubyte": test, "t10k-labels-idx1-ubyte": test_labels}


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic-mnist")
    for name, array in synthetic_arrays().items():
        (folder / name).write_bytes(idx_bytes(array, 0x08))  # uncompressed, as a user may keep them
    return folder


@pytest.fixture(scope="session")
def synthetic_full(synthetic_dir):
    return M.mnist_tensors(M.load_mnist(synthetic_dir, downloaded=False, verify=False), torch.device("cpu"))


@pytest.fixture(scope="session")
def small_data(synthetic_full):
    """272 training images (batch size 64 leaves a last batch of 16), 600 val and test images."""
    d = synthetic_full
    return dict(train_x=d["train_x"][:272], train_y=d["train_y"][:272], val_x=d["val_x"][:600],
                val_y=d["val_y"][:600], test_x=d["test_x"][:600], test_y=d["test_y"][:600])


def float64(data):
    return {k: v.double() if v.is_floating_point() else v for k, v in data.items()}


def test_synthetic_set_is_mnist_shaped(synthetic_dir, synthetic_full):
    arrays = M.load_mnist(synthetic_dir, downloaded=False, verify=False)
    assert {k: v.shape for k, v in arrays.items()} == {
        "train-images-idx3-ubyte": (60000, 28, 28), "train-labels-idx1-ubyte": (60000,),
        "t10k-images-idx3-ubyte": (10000, 28, 28), "t10k-labels-idx1-ubyte": (10000,)}
    unlit = (synthetic_full["train_x"] == 0).all(0)
    assert unlit.view(28, 28)[:2].all() and 100 < int(unlit.sum()) < 784  # a dark border, as MNIST's
    with pytest.raises(M.UsageError, match="checksum mismatch.*--no-checksum"):
        M.load_mnist(synthetic_dir, downloaded=False)  # it is not MNIST: refused unless asked


# ------------------------------------------------------------------------------------------
# The models: whatever a MODELS entry does, each trial trains beside others as it trains alone,
# and as a plain per-trial loop with torch.optim.Adam trains it. The test models do what a layout
# could get wrong: two normalise over the hidden units (a layout that put several trials' units on
# one axis would mix them), one takes a mean over the batch (axis -2: a layout with anything else
# there would mix trials), and one writes its input in place (views a layout hands out may
# forbid that, where the plain loop allows it).

def ffn_rmsnorm_relu(xw):
    units = torch.relu(xw["w_in"])
    return units * torch.rsqrt(units.pow(2).mean(-1, keepdim=True) + 1e-3)


def ffn_softmax_gate(xw):
    return xw["w_in"] * torch.softmax(xw["w_gate"], -1)


def ffn_batch_centred_relu(xw):  # batch statistics: each unit minus its mean over the batch (axis -2)
    units = torch.relu(xw["w_in"])
    return units - units.mean(-2, keepdim=True)


def ffn_inplace_reglu(xw):  # writes one of its inputs in place, as nn.ReLU(inplace=True) does
    return F.relu(xw["w_gate"], inplace=True) * xw["w_in"]


TEST_MODELS = {"rmsnorm_relu": (ffn_rmsnorm_relu, ("w_in",)), "softmax_gate": (ffn_softmax_gate, ("w_in", "w_gate")),
               "batch_centred_relu": (ffn_batch_centred_relu, ("w_in",)),
               "inplace_reglu": (ffn_inplace_reglu, ("w_in", "w_gate"))}
EVERY_MODEL = list(M.MODELS) + list(TEST_MODELS)


@pytest.fixture
def models(monkeypatch):
    """The script's MODELS with the test models added, as a researcher adds an entry."""
    for name, entry in TEST_MODELS.items():
        monkeypatch.setitem(M.MODELS, name, entry)
    return M.MODELS


def reference_trial(model, hidden, batch_size, lr, seed, data, epochs=1):
    """One trial trained alone, the plain way: the documented init and data order, the model's
    own function on x @ W for each of its matrices, a matmul read-out, F.cross_entropy and
    torch.optim.Adam. Returns final weights, train loss and accuracies."""
    dtype = data["train_x"].dtype
    hidden_fn, names = M.MODELS[model]
    g = torch.Generator().manual_seed(zlib.crc32(f"{model}-h{hidden}-seed{seed}".encode()))
    w = {name: torch.randn(784, hidden, generator=g) * 0.02 for name in names}
    w["w_out"] = torch.randn(hidden, 10, generator=g) * 0.02
    w = {k: v.to(dtype).requires_grad_() for k, v in w.items()}

    def forward(x):
        return hidden_fn({name: x @ w[name] for name in names}) @ w["w_out"]

    opt = torch.optim.Adam(list(w.values()), lr=lr)
    n = len(data["train_y"])
    order_generator = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        order = torch.randperm(n, generator=order_generator)  # a new order each epoch
        losses = []  # train_loss comes from the final epoch
        for i in range(0, n, batch_size):
            index = order[i:i + batch_size]
            loss = F.cross_entropy(forward(data["train_x"][index]), data["train_y"][index])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    tail = max(1, len(losses) // 10)
    acc = {}
    with torch.no_grad():  # EVAL_BATCH images at a time, as the script does (a model may use batch statistics)
        for split in ("val", "test"):
            xs, ys = data[split + "_x"], data[split + "_y"]
            correct = sum((forward(xs[i:i + M.EVAL_BATCH]).argmax(-1) == ys[i:i + M.EVAL_BATCH]).sum().item()
                          for i in range(0, len(ys), M.EVAL_BATCH))
            acc[split] = correct / len(ys)
    return {k: v.detach() for k, v in w.items()}, sum(losses[-tail:]) / tail, acc


def trials_of(model, batch_size, seeds=(0, 3), epochs=1):
    """A model's trials at two hidden sizes and three learning rates, the chaotic 0.1 included."""
    return [M.Trial(model, h, batch_size, lr, seed, epochs) for h in (3, 8) for lr in (0.1, 0.01, 0.001)
            for seed in seeds]


def others_beside(model, batch_size):
    """Trials of every other model, to train beside `model`'s."""
    return [M.Trial(m, h, batch_size, lr, 1, 1) for m in M.MODELS if m != model for h, lr in ((2, 0.01), (5, 0.001))]


def assert_same_result(a, b, weight_tol, loss_tol, acc_tol):
    assert set(a["weights"]) == set(b["weights"])
    for name in a["weights"]:
        assert a["weights"][name].dtype == b["weights"][name].dtype
        assert torch.allclose(a["weights"][name], b["weights"][name], rtol=0, atol=weight_tol), name
    assert a["train_loss"] == pytest.approx(b["train_loss"], rel=loss_tol, abs=loss_tol)
    for split in ("val_acc", "test_acc"):
        assert a[split] == pytest.approx(b[split], abs=acc_tol)


@pytest.mark.parametrize("model", EVERY_MODEL)
@pytest.mark.parametrize("batch_size", [8, 64])
def test_every_model_trains_beside_others_as_it_trains_alone(models, model, batch_size, small_data):
    """float64 on the CPU: a trial trained in a group with other hidden sizes, learning rates,
    seeds and models ends with the weights, loss and accuracies it ends with when it is the only
    trial of its group, exactly up to float64 rounding. The one difference is the matmuls'
    rounding, which depends on the width of the matrix (one ulp, 1e-16): the results agree to
    1e-12 at lr <= 0.01, and to 1e-7 at lr 0.1, where 34 chaotic steps amplify it (GeGLU at
    batch size 8: 4e-9 measured). A model that mixed trials would differ by 1e-3 or more."""
    data = float64(small_data)
    mine = trials_of(model, batch_size)
    beside = M.train_group(mine + others_beside(model, batch_size), data, return_weights=True)
    for t in mine:
        alone = M.train_group([t], data, return_weights=True)[t]
        tol = 1e-12 if t.lr <= 0.01 else 1e-7
        assert_same_result(beside[t], alone, weight_tol=tol, loss_tol=tol, acc_tol=0 if t.lr <= 0.01 else 1 / 600)


@pytest.mark.parametrize("model", EVERY_MODEL)
def test_every_model_trains_as_a_plain_loop_with_torch_adam(models, model, small_data):
    """float64: every trial equals the plain loop of reference_trial (its own weights, a matmul
    read-out, F.cross_entropy, torch.optim.Adam): same init, same data order, same Adam up to
    rounding (lr x the update at lr 1), same train_loss rule. The arithmetic differs only in
    rounding: the results agree to 1e-12 at lr <= 0.01 (1e-14 measured) and to 1e-7 at the
    chaotic lr 0.1 (2e-9 measured, GeGLU)."""
    data = float64(small_data)
    trials = trials_of(model, 8)
    results = M.train_group(trials + others_beside(model, 8), data, return_weights=True)
    for t in trials:
        weights, train_loss, acc = reference_trial(t.model, t.hidden, t.batch_size, t.lr, t.seed, data)
        plain = {"weights": weights, "train_loss": train_loss, "val_acc": acc["val"], "test_acc": acc["test"]}
        tol = 1e-12 if t.lr <= 0.01 else 1e-7
        assert_same_result(results[t], plain, weight_tol=tol, loss_tol=tol, acc_tol=1.5 / 600)
        assert results[t]["params"] == sum(v.numel() for v in weights.values())
    # and it learned: the loss fell below log(10) = 2.30, the accuracy far above chance (0.1)
    best = min(results[t]["train_loss"] for t in trials)
    assert best < 1.5 and max(results[t]["val_acc"] for t in trials) > 0.6


@pytest.mark.parametrize("model", EVERY_MODEL)
def test_float32_beside_others_within_stated_tolerance(models, model, small_data):
    """float32, what the study runs in: beside others and alone differ by the matmuls' rounding
    (~1e-7 relative), which training amplifies the more, the higher the learning rate. After 34
    steps at batch size 8 the weights (of size 0.02 to 1) agree to 2e-6 at lr 0.001 (6e-7
    measured) and to 1e-4 at lr 0.01 (2e-5 measured, the normalising model); at lr 0.1 training
    is chaotic (up to 7e-3 measured) and only the float64 test above can speak for it."""
    trials = [t for t in trials_of(model, 8) if t.lr <= 0.01]
    beside = M.train_group(trials + others_beside(model, 8), small_data, return_weights=True)
    for t in trials:
        alone = M.train_group([t], small_data, return_weights=True)[t]
        tol = {0.001: 2e-6, 0.01: 1e-4}[t.lr]
        assert_same_result(beside[t], alone, weight_tol=tol, loss_tol=tol, acc_tol=1.5 / 600)


def test_several_epochs_equal_the_plain_loop(small_data):
    """--epochs 3: a new data order each epoch, Adam's state carried over, train_loss from the
    last epoch only (float64, 100 images, batch size 8: 13 steps an epoch, the last one of 4)."""
    data = float64(small_data)
    data = dict(data, train_x=data["train_x"][:100], train_y=data["train_y"][:100])
    trials = [M.Trial(model, h, 8, lr, seed, 3) for model, h, lr in (("relu", 2, 0.01), ("geglu", 4, 0.01),
                                                                     ("relu", 16, 0.1)) for seed in (0, 2)]
    results = M.train_group(trials, data, return_weights=True)
    for t in trials:
        weights, train_loss, acc = reference_trial(t.model, t.hidden, 8, t.lr, t.seed, data, epochs=3)
        plain = {"weights": weights, "train_loss": train_loss, "val_acc": acc["val"], "test_acc": acc["test"]}
        assert_same_result(results[t], plain, weight_tol=1e-9, loss_tol=1e-9, acc_tol=1.5 / 600)


def test_a_diverging_trial_changes_no_other_trial(models, small_data):
    """The same layout twice, once with three trials at lr 1e30 (they overflow to inf/NaN, one of
    them a model that normalises over its units), once with them at a sane lr: every other
    trial's weights and numbers are bit-for-bit the same."""
    base = [M.Trial(m, h, 8, lr, seed, 1) for m in EVERY_MODEL for h, lr in ((3, 0.01), (8, 0.1)) for seed in (0, 1)]
    wild_models = ("relu", "geglu", "rmsnorm_relu")
    sane = base + [M.Trial(m, 5, 8, 0.001, 0, 1) for m in wild_models]
    wild = base + [M.Trial(m, 5, 8, 1e30, 0, 1) for m in wild_models]
    a = M.train_group(sane, small_data, return_weights=True)
    b = M.train_group(wild, small_data, return_weights=True)
    for t in wild[len(base):]:  # they did diverge (a loss of nan, inf or astronomically large)
        assert not b[t]["train_loss"] < 100
    for t in base:
        for name in a[t]["weights"]:
            assert torch.equal(a[t]["weights"][name], b[t]["weights"][name]), (t, name)
        assert (a[t]["train_loss"], a[t]["val_acc"], a[t]["test_acc"]) == \
               (b[t]["train_loss"], b[t]["val_acc"], b[t]["test_acc"])


def test_groups_trained_at_once_equal_groups_trained_one_by_one(small_data):
    """train_groups (the script's --workers 2) trains the groups in two threads: each group's
    numbers are bit-for-bit those of training it alone."""
    groups = [[M.Trial(m, h, bs, lr, seed, 1) for m in M.MODELS for h, lr in ((2, 0.01), (16, 0.1))
               for seed in (0, 1)] for bs in (8, 64)]
    alone = {g[0].batch_size: M.train_group(g, small_data) for g in groups}
    together = {g[0].batch_size: r for g, r in M.train_groups(groups, small_data, workers=2)}
    assert set(together) == {8, 64}
    for bs, results in together.items():
        assert set(results) == set(alone[bs])
        for t, r in results.items():
            assert {k: v for k, v in r.items() if k != "time"} == {k: v for k, v in alone[bs][t].items() if k != "time"}


def test_a_stopped_run_stops_its_other_groups(small_data):
    """When the caller stops listening (an error while writing the log, Ctrl-C), the groups still
    training end at their next progress report instead of running to the end."""
    quick = [M.Trial("relu", 2, 272, 0.01, 0, 1)]            # one step
    slow = [M.Trial("relu", 2, 1, 0.01, 0, 8)]               # 8 epochs of batch size 1: 2176 steps
    reports = []
    run = M.train_groups([quick, slow], small_data, workers=2, progress=lambda gi, f: reports.append((gi, f)))
    group, results = next(run)
    assert group == quick and set(results) == set(quick)
    run.close()  # returns once the slow group has stopped
    slow_reports = [f for gi, f in reports if gi == 1]
    assert max(slow_reports, default=0) < 0.5  # run to its end, it would report up to 1.0


def test_the_steps_a_cuda_graph_captures_compute_what_the_eager_loop_computes(small_data, monkeypatch):
    """On CUDA the steps run STEPS_PER_GRAPH at a time as captured graphs (the first run of each
    kind, with and without the train_loss, eager as the capture's warm-up; a smaller last batch
    eager). On the CPU train_group(graphs=True) runs that same schedule, the graphs' steps called
    eagerly: it must give the one-step-at-a-time loop's numbers bit for bit (float32; 2 epochs
    of 100 images at batch size 3: 34 steps an epoch, the last of 1 image, 3 of them with the
    loss; 2 steps a graph, so graphs with and without the loss are both captured and replayed)."""
    monkeypatch.setattr(M, "STEPS_PER_GRAPH", 2)
    data = dict(small_data, train_x=small_data["train_x"][:100], train_y=small_data["train_y"][:100])
    trials = [M.Trial(m, h, 3, lr, seed, 2) for m in M.MODELS for h, lr in ((2, 0.01), (8, 0.1)) for seed in (0, 1)]
    clocks = {True: {}, False: {}}
    runs = {graphs: M.train_group(trials, data, return_weights=True, graphs=graphs, clock=clocks[graphs])
            for graphs in (True, False)}
    assert "capture" in clocks[True] and "capture" not in clocks[False]
    for t in trials:
        a, b = runs[True][t], runs[False][t]
        assert (a["train_loss"], a["val_acc"], a["test_acc"]) == (b["train_loss"], b["val_acc"], b["test_acc"])
        for name in a["weights"]:
            assert torch.equal(a["weights"][name], b["weights"][name]), (t, name)


@pytest.mark.parametrize("model", EVERY_MODEL)
def test_param_match_rule(models, model):
    """Every model is matched to the baseline by how many 784 x h projections it reads (its
    parameter count is checked against its weights in the plain-loop test): one, as relu, keeps
    relu's sizes; two, as the gated ones, about halves them."""
    n_matrices = len(M.MODELS[model][1])
    assert M.n_params(model, 5) == (784 * n_matrices + 10) * 5
    matched = [M.matched_hidden(h, model) for h in (1, 2, 3, 4, 8, 16)]
    assert matched == {1: [1, 2, 3, 4, 8, 16], 2: [1, 1, 2, 2, 4, 8]}[n_matrices]  # 3: |3156-2382| < |1578-2382|
    run_models = tuple(dict.fromkeys((M.BASELINE, model)))
    grid = M.grid(M.Hparams(models=run_models, seeds=1, param_match=len(run_models) == 2))
    extra = [t for t in grid if t.hidden not in M.Hparams.hidden]  # the matched sizes not in --hidden
    assert len(grid) == 32 * len(run_models) + len(extra)
    assert {(t.model, t.hidden) for t in extra} == ({(model, 1)} if n_matrices == 2 else set())


def test_param_match_sizes_every_model_but_the_baseline():
    hp = M.Hparams(models=tuple(M.MODELS), seeds=1, param_match=True)
    matched = M.param_matched(hp)
    assert list(matched) == [m for m in M.MODELS if m != M.BASELINE]
    assert all(sizes == [M.matched_hidden(h, m) for h in hp.hidden] for m, sizes in matched.items())
    assert sorted(M.grid(hp)) == sorted(M.Trial(m, h, bs, lr, 0, 1) for m in M.MODELS
                                        for h in sorted(set(hp.hidden) | set(matched.get(m, [])))
                                        for bs in hp.batch_sizes for lr in hp.lrs)
    # without --param-match the log still names the matched sizes, and the grid is --hidden alone
    plain = M.Hparams(models=tuple(M.MODELS), seeds=1)
    assert M.param_matched(plain) == matched
    assert len(M.grid(plain)) == len(M.MODELS) * len(plain.hidden) * len(plain.batch_sizes) * len(plain.lrs)
    assert M.param_matched(M.Hparams(models=("geglu", "swish"), seeds=1)) == {}  # no baseline, nothing to match


# ------------------------------------------------------------------------------------------
# the command line, the log and resume (on the synthetic set)

SMALL = ["--train-limit", "160", "--seeds", "2", "--hidden", "2,4", "--lrs", "0.01,0.001",
         "--batch-sizes", "8,64"]


def trial_lines(path, drop_time=True):
    lines = [line for name, _, values in read_records(path) if name == "trial"
             for line in [" ".join(f"{k}:{v}" for k, v in values.items() if not (drop_time and k == "time"))]]
    return lines


@pytest.fixture(scope="module")
def full_run(synthetic_dir, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("logs")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        path = M.main(SMALL + ["--data-dir", str(synthetic_dir), "--no-checksum", "--log-dir", str(log_dir),
                               "--param-match"])
    return path, out.getvalue()


def test_every_line_of_the_log_follows_the_contract(full_run):
    path, out = full_run
    m = re.fullmatch(r"mnist-(\d{8}-\d{6})-([0-9a-f]{8})\.txt", path.name)
    assert m, path.name
    records = read_records(path)
    name, first, run = records[0]
    assert (name, first) == ("run", "mnist") and run["id"] == m.group(2)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", run["started"])
    assert run["started"].replace("-", "").replace(":", "").replace("T", "-")[:15] == m.group(1)
    assert run["device"] == "cpu" and run["torch"] == torch.__version__ and run["host"]
    header = path.read_text().split("=" * 100 + "\n")[1]
    assert (Path(M.__file__).read_text().rstrip("\n") + "\n") in header and "numpy:" in header
    names = [r[0] for r in records]
    assert names[1] == "config" and names[-1] == "done" and set(names[2:-1]) == {"trial"}
    config = records[1][2]
    assert config["models"] == ",".join(M.Hparams.models) and config["hidden"] == "2,4" and config["seeds"] == "0,1"
    assert config["split_seed"] == "42" and config["param_match"] == "1" and config["train"] == "160"
    assert config["val"] == "12000" and config["init_std"] == "0.02" and config["data"] == "unverified"
    assert config["matched_hidden"] == config["matched_hidden_geglu"] == "1,2"
    assert {f.name for f in M.grid_fields()} <= set(config)  # every field that shapes the results
    # the contract's keys in its order, then the keys added since (never renamed or reordered)
    assert list(config)[:12] == ["models", "hidden", "batch_sizes", "lrs", "seeds", "epochs", "train", "val",
                                 "test", "split_seed", "init_std", "data"]
    assert list(config)[12:] == ["param_match", "matched_hidden", "matched_hidden_geglu", "train_limit",
                                 "no_checksum", "adam_betas", "adam_eps", "seed_chunk", "data_dir"]
    trials = [r[2] for r in records if r[0] == "trial"]
    # 2 models x 2 hidden x 2 batch sizes x 2 lrs x 2 seeds, plus GeGLU at h=1 (param-matched to ReLU h=2)
    assert len(trials) == 32 + 8
    keys = {"model", "hidden", "batch_size", "lr", "seed", "epochs", "params", "train_loss", "val_acc",
            "test_acc", "time"}
    for t in trials:
        assert keys <= set(t)
        assert t["model"] in M.Hparams.models and int(t["params"]) == M.n_params(t["model"], int(t["hidden"]))
        for k in ("train_loss", "val_acc", "test_acc"):
            number(t[k])
        assert re.fullmatch(r"\d+\.\d+s", t["time"])
    assert {int(t["hidden"]) for t in trials if t["model"] == "geglu"} == {1, 2, 4}
    done = records[-1][2]
    assert done["trials"] == "40" and re.fullmatch(r"\d+\.\d+s", done["time"]) and done["status"] == "ok"
    # each group's clock is shared out among its trials, and the two groups train at once
    # (--workers 2), so the trial times add up to at most twice the run's wall time
    assert sum(float(t["time"][:-1]) for t in trials) <= 2 * float(done["time"][:-1]) + 0.1
    # stdout: progress, the table of best accuracies, and the next command
    assert "40/40 trials done" in out and "best val" in out
    assert out.rstrip().endswith(f"next: python analyze.py {path}")


def test_resume_after_a_kill_gives_the_same_trial_lines(full_run, synthetic_dir, tmp_path):
    full_run = full_run[0]
    lines = full_run.read_text().split("\n")
    end = lines.index("=" * 100, 2)
    first_trial = next(i for i in range(end, len(lines)) if lines[i].startswith("trial:"))
    # killed while writing the 7th trial line: 6 whole lines survive and the 7th up to its time
    cut = tmp_path / full_run.name
    seventh = lines[first_trial + 6]
    cut.write_text("\n".join(lines[:first_trial + 6]) + "\n" + seventh[:seventh.index(" time:")])
    path = M.main(["--resume", str(cut), "--data-dir", str(synthetic_dir)])  # --no-checksum from the log
    assert path == cut
    assert sorted(trial_lines(cut)) == sorted(trial_lines(full_run))
    assert len(set(trial_lines(cut))) == len(trial_lines(cut))
    assert [r[0] for r in read_records(cut)].count("done") == 1
    # resuming a complete log trains nothing and writes nothing
    before = cut.read_text()
    M.main(["--resume", str(cut), "--data-dir", str(synthetic_dir)])
    assert cut.read_text() == before


def test_resume_fills_the_gaps_of_a_group(full_run, synthetic_dir, tmp_path):
    full_run = full_run[0]
    lines = full_run.read_text().split("\n")
    keep = [line for line in lines if not (line.startswith("trial:") and " seed:1 " in line
                                           and " batch_size:8 " in line and " model:relu " in line)
            and not line.startswith("done:")]
    gap = tmp_path / full_run.name
    gap.write_text("\n".join(keep))
    M.main(["--resume", str(gap), "--data-dir", str(synthetic_dir)])
    assert sorted(trial_lines(gap)) == sorted(trial_lines(full_run))
    assert read_records(gap)[-1][2]["new_trials"] == "4"  # ReLU, h 2 and 4, two lrs, seed 1


def test_resume_refuses_a_different_grid(full_run, synthetic_dir, capsys):
    with pytest.raises(SystemExit) as info:
        M.main(["--resume", str(full_run[0]), "--data-dir", str(synthetic_dir), "--seeds", "3"])
    assert info.value.code == 2 and "--seeds" in capsys.readouterr().err


def test_a_third_model_and_a_new_hyperparameter_need_no_other_edit(synthetic_dir, tmp_path, monkeypatch, capsys):
    """A researcher adds a model (one function, one MODELS entry) and a field to Hparams: the
    model trains with --param-match, matched to relu by its parameter count, and the field is a
    flag and a key of the config: record, which --resume reads back (and holds the run to)."""
    monkeypatch.setitem(M.MODELS, "softmax_gate", TEST_MODELS["softmax_gate"])
    extended = dataclasses.make_dataclass("Hparams", [("label_smoothing", float, M.flag(0.0, "a new knob"))],
                                          bases=(M.Hparams,), frozen=True)
    monkeypatch.setattr(M, "Hparams", extended)
    common = ["--data-dir", str(synthetic_dir)]
    path = M.main(["--models", "relu,softmax_gate,swish", "--param-match", "--hidden", "2,4", "--seeds", "1",
                   "--lrs", "0.01", "--batch-sizes", "64", "--train-limit", "160", "--no-checksum",
                   "--label-smoothing", "0.25", "--log-dir", str(tmp_path)] + common)
    records = read_records(path)
    config = records[1][2]
    assert config["label_smoothing"] == "0.25" and "matched_hidden" not in config  # (no geglu in this run)
    assert config["matched_hidden_softmax_gate"] == "1,2" and config["matched_hidden_swish"] == "2,4"
    trials = {(v["model"], int(v["hidden"])): int(v["params"]) for name, _, v in records if name == "trial"}
    assert trials == {("relu", 2): 1588, ("relu", 4): 3176, ("swish", 2): 1588, ("swish", 4): 3176,
                      ("softmax_gate", 1): 1578, ("softmax_gate", 2): 3156, ("softmax_gate", 4): 6312}
    lines = path.read_text()
    path.write_text(lines[:lines.index("trial: model:swish")])  # killed before swish's lines were written
    with pytest.raises(SystemExit) as info:
        M.main(["--resume", str(path), "--label-smoothing", "0.5"] + common)
    assert info.value.code == 2 and "drop --label-smoothing" in capsys.readouterr().err
    M.main(["--resume", str(path)] + common)
    assert read_records(path)[-1][2]["new_trials"] == "2"
    assert {(v["model"], int(v["hidden"])) for name, _, v in read_records(path) if name == "trial"} == set(trials)


def test_a_log_of_the_previous_trainer_resumes(mnist_dir, repo_root, tmp_path):
    """tests/data/mnist-previous-trainer.txt was written by an earlier trainer (a block-diagonal
    read-out, whole batch-size groups, no data_dir: or seed_chunk: in its config): with one
    batch-size-64 trial line and its done: line taken out, --resume retrains that group and writes
    back the missing line, which the new trainer computes as the old one did, up to float32
    rounding (lr 0.001 is not chaotic: the accuracies agree to a few images)."""
    reference = (repo_root / "tests" / "data" / "mnist-previous-trainer.txt").read_text().split("\n")
    target = next(i for i, line in enumerate(reference)
                  if line.startswith("trial: model:geglu hidden:16 batch_size:64 lr:0.001 seed:3 "))
    removed = reference[target]
    log = tmp_path / "mnist-20261123-003631-5e33f3a7.txt"
    log.write_text("\n".join(line for i, line in enumerate(reference) if i != target and not line.startswith("done:")))
    M.main(["--resume", str(log), "--data-dir", str(mnist_dir), "--threads", "1"])
    records = read_records(log)
    new = [v for name, _, v in records if name == "trial" and v["model"] == "geglu" and v["hidden"] == "16"
           and v["batch_size"] == "64" and v["lr"] == "0.001" and v["seed"] == "3"]
    assert len(new) == 1 and len([r for r in records if r[0] == "trial"]) == 512
    old = parse_line(removed)[2]
    for key in ("val_acc", "test_acc"):
        assert float(new[0][key]) == pytest.approx(float(old[key]), abs=5e-4)  # 6 of 12,000 images
    assert float(new[0]["train_loss"]) == pytest.approx(float(old["train_loss"]), abs=2e-3)
    assert records[-1][2]["new_trials"] == "1" and records[-1][2]["status"] == "ok"


# ------------------------------------------------------------------------------------------
# bad input: one line `error: ...`, exit status 2, nothing written; Ctrl-C: a record and the
# command that resumes

@pytest.mark.parametrize("args, complaint", [
    (["--models", "relu,nosuchmodel"], "unknown model"),
    (["--models", ""], "comma-separated list"),
    (["--hidden", "2,,4"], "comma-separated list"),
    (["--hidden", "0,4"], "positive"),
    (["--lrs", "0.1,-0.01"], "positive"),
    (["--lrs", "nan"], "positive"),
    (["--lrs", "inf"], "finite"),
    (["--lrs", "1e400"], "finite"),
    (["--batch-sizes", "0"], "positive"),
    (["--seeds", "0"], "at least 1"),
    (["--epochs", "two"], "integer"),
    (["--threads", "0"], "at least 1"),
    (["--train-limit", "-5"], "at least 0"),
    (["--device", "tpu"], "invalid choice"),
    (["--no-such-flag"], "unrecognized arguments"),
    (["--models", "relu", "--param-match"], "needs relu and at least one other model"),
    (["--models", "geglu,swiglu", "--param-match"], "needs relu and at least one other model"),
])
def test_the_parser_refuses_bad_values_in_one_line(args, complaint, capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        M.main(args + ["--log-dir", str(tmp_path / "logs")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and complaint in err
    assert not (tmp_path / "logs").exists()


def run_script(repo_root, *args, **kwargs):
    return subprocess.run([sys.executable, str(repo_root / "train_mnist_ffn.py"), *args], capture_output=True,
                          text=True, timeout=300, **kwargs)


def one_line_error(run):
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("error: ") and run.stderr.count("\n") == 1, run.stderr
    assert "Traceback" not in run.stderr
    return run.stderr


def test_bad_files_and_folders_get_one_line(repo_root, synthetic_dir, tmp_path):
    gpt_log = tmp_path / "gpt-20261201-000000-0123abcd.txt"
    gpt_log.write_text("run:gpt id:0123abcd\nconfig: mlp:relu2 n_layer:2 seq_len:64 seed:0\n"
                       "step:0/40 val_loss:6.3000 train_time:0ms step_avg:nanms tokens:0\n")
    message = one_line_error(run_script(repo_root, "--resume", str(gpt_log), "--data-dir", str(synthetic_dir)))
    assert "not a train_mnist_ffn.py grid" in message
    garbage = tmp_path / "garbage.txt"
    garbage.write_bytes(bytes(range(256)) * 8)
    assert "no config: line" in one_line_error(run_script(repo_root, "--resume", str(garbage)))
    assert "no such log" in one_line_error(run_script(repo_root, "--resume", str(tmp_path / "absent.txt")))
    assert "no such folder" in one_line_error(run_script(repo_root, "--data-dir", str(tmp_path / "nowhere")))
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    message = one_line_error(run_script(repo_root, "--log-dir", str(blocked / "logs"), "--data-dir",
                                        str(synthetic_dir), "--no-checksum"))
    assert f"--log-dir {blocked / 'logs'}: cannot write there" in message
    # a corrupt file of a folder given with --data-dir: named, with what to do, and no log written
    folder = tmp_path / "m"
    shutil.copytree(synthetic_dir, folder)
    (folder / "t10k-images-idx3-ubyte").unlink()
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    message = one_line_error(run_script(repo_root, "--data-dir", str(folder), "--no-checksum", "--log-dir",
                                        str(tmp_path / "logs")))
    assert "t10k-images-idx3-ubyte.gz: corrupt" in message and "replace it with an intact copy" in message
    assert not (tmp_path / "logs").exists()  # no log, and no empty folder either


@pytest.mark.parametrize("args, complaint", [
    (["--hidden", "100000"], "use smaller --hidden sizes"),  # about 260 GiB on the CPU
    (["--batch-sizes", "8,100000"], "--batch-sizes 100000 is more than the 48000 training images"),
    (["--train-limit", "500", "--batch-sizes", "501"], "more than the 500 training images"),
])
def test_sizes_that_cannot_work_are_refused_before_anything_is_written(args, complaint, synthetic_dir, tmp_path,
                                                                       capsys):
    with pytest.raises(SystemExit) as info:
        M.main(args + ["--data-dir", str(synthetic_dir), "--no-checksum", "--log-dir", str(tmp_path / "logs")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1 and complaint in err
    if "--hidden" in args:  # the estimate and what there is, in GiB
        needed, have = map(float, re.search(r"about ([\d.]+) GiB, more than the ([\d.]+) GiB", err).groups())
        assert needed > have
    assert not (tmp_path / "logs").exists()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write to a read-only file")
def test_a_read_only_log_to_resume_is_one_line(full_run, tmp_path):
    log = tmp_path / full_run[0].name
    shutil.copy(full_run[0], log)
    log.chmod(0o444)
    message = one_line_error(run_script(Path(M.__file__).parent, "--resume", str(log)))
    assert "cannot write to it" in message


def test_resume_needs_only_the_log_and_refuses_a_flag_that_contradicts_it(full_run, synthetic_dir, tmp_path, capsys):
    """The data folder (and --no-checksum, the grid, the chunking) come from the log's config: a
    cut log resumes with --resume LOG alone; another --data-dir is a one-line error."""
    config = read_records(full_run[0])[1][2]
    assert Path(config["data_dir"]) == synthetic_dir.resolve() and config["seed_chunk"] == "2"
    lines = full_run[0].read_text().split("\n")
    cut = tmp_path / full_run[0].name
    cut.write_text("\n".join(line for line in lines if not line.startswith(("done:", "trial: model:geglu"))))
    with pytest.raises(SystemExit) as info:
        M.main(["--resume", str(cut), "--data-dir", str(tmp_path)])
    assert info.value.code == 2 and "drop --data-dir" in capsys.readouterr().err
    M.main(["--resume", str(cut)])
    assert sorted(trial_lines(cut)) == sorted(trial_lines(full_run[0]))


def test_a_sigkill_keeps_every_finished_chunk_and_resume_gives_the_same_lines(repo_root, synthetic_dir, tmp_path):
    """One batch size in two chunks of seeds (0-3, 4-7): killed with SIGKILL as soon as the first
    chunk's lines are in the log, while the group still trains its second chunk; --resume LOG
    (nothing else) then writes the lines an uninterrupted run writes, to the last digit."""
    args = ["--data-dir", str(synthetic_dir), "--no-checksum", "--train-limit", "1500", "--seeds", "8", "--hidden",
            "2", "--lrs", "0.01", "--models", "relu", "--batch-sizes", "1", "--workers", "1"]
    killed_dir = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, str(repo_root / "train_mnist_ffn.py"), *args, "--log-dir",
                                str(killed_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while process.poll() is None:
            logs = list(killed_dir.glob("mnist-*.txt"))
            if logs and "\ntrial:" in logs[0].read_text():
                break
            time.sleep(0.01)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read()
    log = logs[0]
    kept = trial_lines(log)
    assert len(kept) == 4 and {line.split(" seed:")[1][0] for line in kept} == {"0", "1", "2", "3"}
    assert "done" not in [r[0] for r in read_records(log)]
    with contextlib.redirect_stdout(io.StringIO()):
        M.main(["--resume", str(log)])
        whole = M.main(args + ["--log-dir", str(tmp_path / "whole")])
    assert sorted(trial_lines(log)) == sorted(trial_lines(whole)) and len(trial_lines(whole)) == 8


def run_to_the_second_group(repo_root, synthetic_dir, log_dir):
    """The script in a process of its own, two batch-size groups (64, then 1: with one worker they
    train in --batch-sizes order), returned once it has printed that the batch-size-64 group is done."""
    process = subprocess.Popen([sys.executable, "-u", str(repo_root / "train_mnist_ffn.py"), "--data-dir",
                                str(synthetic_dir), "--no-checksum", "--log-dir", str(log_dir), "--train-limit",
                                "20000", "--seeds", "1", "--hidden", "2", "--lrs", "0.01", "--batch-sizes", "64,1",
                                "--workers", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
        if "trials done (batch size 64)" in line:
            break
    return process


def test_ctrl_c_keeps_every_finished_line_and_says_how_to_resume(repo_root, synthetic_dir, tmp_path):
    """SIGINT while the batch-size-1 group trains (the batch-size-64 group has finished): exit
    status 130 within a second, the finished group's lines, a done: record with
    status:interrupted, and the resume command; that command then finishes the grid."""
    log_dir = tmp_path / "logs"
    process = run_to_the_second_group(repo_root, synthetic_dir, log_dir)
    time.sleep(0.3)
    sent = time.perf_counter()
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert time.perf_counter() - sent < 1.0
    assert process.returncode == 130, err
    log = next(log_dir.glob("mnist-*.txt"))
    assert "Traceback" not in err and err.count("\n") == 1
    assert f"resume with: python train_mnist_ffn.py --resume {log}" in err
    records = read_records(log)
    done = [v for name, _, v in records if name == "done"]
    assert len(done) == 1 and done[0]["status"] == "interrupted"
    finished = [v for name, _, v in records if name == "trial"]
    assert len(finished) == int(done[0]["new_trials"]) == 2  # one group: relu and geglu at h 2
    resumed = run_script(repo_root, "--resume", str(log), "--data-dir", str(synthetic_dir))
    assert resumed.returncode == 0, resumed.stderr
    records = read_records(log)
    assert len([r for r in records if r[0] == "trial"]) == 4
    assert [v["status"] for name, _, v in records if name == "done"] == ["interrupted", "ok"]


def test_a_reader_of_stdout_that_goes_away_stops_the_run_as_ctrl_c_does(repo_root, synthetic_dir, tmp_path):
    """`python train_mnist_ffn.py | head`: once head has its lines and exits, the next line the script
    prints cannot be written; the run then stops as on Ctrl-C (exit status 130, no traceback, a
    done: record with status:interrupted, every finished line kept), and --resume finishes it."""
    log_dir = tmp_path / "logs"
    process = run_to_the_second_group(repo_root, synthetic_dir, log_dir)
    process.stdout.close()  # what head does when it has its lines
    err = process.stderr.read()
    assert process.wait(timeout=120) == 130, err
    assert "Traceback" not in err and err.startswith("interrupted: ") and err.count("\n") == 1, err
    log = next(log_dir.glob("mnist-*.txt"))
    records = read_records(log)
    done = [v for name, _, v in records if name == "done"]
    assert len(done) == 1 and done[0]["status"] == "interrupted"
    assert len([r for r in records if r[0] == "trial"]) == int(done[0]["new_trials"]) in (2, 4)
    resumed = run_script(repo_root, "--resume", str(log))
    assert resumed.returncode == 0, resumed.stderr
    assert len([r for r in read_records(log) if r[0] == "trial"]) == 4


def test_a_reader_of_stdout_gone_before_the_first_line_or_the_summary_loses_nothing(repo_root, synthetic_dir,
                                                                                     tmp_path):
    """stdout's reader gone before the script's first line (`| head -n 0`): the run stops as on
    Ctrl-C, its log resumable; gone while a finished run prints its summary (here a --resume of
    the finished log, whose first line already fails): exit status 0, nothing on stderr."""
    log_dir = tmp_path / "logs"

    def with_stdout_closed(*args):
        process = subprocess.Popen([sys.executable, str(repo_root / "train_mnist_ffn.py"), *args],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        process.stdout.close()  # before the script has written anything
        err = process.stderr.read()
        return process.wait(timeout=120), err

    status, err = with_stdout_closed("--data-dir", str(synthetic_dir), "--no-checksum", "--log-dir", str(log_dir),
                                     "--train-limit", "2000", "--seeds", "1", "--hidden", "2", "--lrs", "0.01")
    assert status == 130 and "Traceback" not in err and err.startswith("interrupted: 0 of the 4 trials"), err
    log = next(log_dir.glob("mnist-*.txt"))
    assert [(v["status"], v["trials"]) for name, _, v in read_records(log) if name == "done"] == [("interrupted", "0")]
    assert run_script(repo_root, "--resume", str(log)).returncode == 0
    finished = log.read_text()
    assert finished.count("\ntrial: ") == 4 and finished.rstrip().endswith("status:ok")
    status, err = with_stdout_closed("--resume", str(log))
    assert (status, err) == (0, "") and log.read_text() == finished


# ------------------------------------------------------------------------------------------
# bench/bench_mnist.py: bad input gets one line, exit status 2, before anything is timed

def run_bench(repo_root, *args):
    return subprocess.run([sys.executable, str(repo_root / "bench" / "bench_mnist.py"), *args], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("args, complaint", [
    (["--seeds", "0"], "--seeds: must be at least 1"),
    (["--repeat", "0"], "--repeat: must be at least 1"),
    (["--workers", "0"], "--workers: must be at least 1"),
    (["--threads", "-1"], "--threads: must be at least 1"),
    (["--seeds", "two"], "expected an integer"),
    (["--models", "relu,nosuchmodel"], "unknown model"),
    (["--no-such-flag"], "unrecognized arguments"),
])
def test_bench_refuses_bad_flags_in_one_line(repo_root, args, complaint):
    assert complaint in one_line_error(run_bench(repo_root, *args))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a CUDA GPU")
def test_bench_refuses_cuda_without_a_gpu(repo_root):
    assert "--device cuda but torch sees no CUDA GPU" in one_line_error(run_bench(repo_root, "--device", "cuda"))


def test_bench_refuses_a_missing_or_damaged_data_folder(repo_root, synthetic_dir, tmp_path):
    message = one_line_error(run_bench(repo_root, "--data-dir", str(tmp_path / "nowhere")))
    assert "no such folder" in message
    folder = tmp_path / "m"
    shutil.copytree(synthetic_dir, folder)
    images = folder / "train-images-idx3-ubyte"  # the first file read (the others would fail MNIST's checksums)
    images.write_bytes(images.read_bytes()[:1000])  # a cut copy
    assert "train-images-idx3-ubyte: truncated" in one_line_error(run_bench(repo_root, "--data-dir", str(folder)))
    images.unlink()
    assert "train-images-idx3-ubyte(.gz) not found" in one_line_error(run_bench(repo_root, "--data-dir", str(folder)))


def test_bench_cold_runs_the_script_fresh_and_says_where_its_time_went(repo_root, mnist_dir, tmp_path):
    # the probe that locates a GPU study's start-up seconds: it must really run the script in a new
    # process (to its last log line) and attribute samples to the script's own lines; --against
    # runs another version of the script too (here an edited copy, whose edit must show) and
    # compares the medians
    other = tmp_path / "older.py"
    other.write_text((repo_root / "train_mnist_ffn.py").read_text().replace(
        "def train_group(", "time.sleep(1.5)  # an older, slower start\n\n\ndef train_group(", 1))
    out = run_bench(repo_root, "--cold", "--quick", "--models", "relu", "--seeds", "1", "--data-dir", str(mnist_dir),
                    "--against", str(other))
    assert out.returncode == 0, out.stderr
    runs = {}
    for which in ("this", f"against {other}"):
        run_line = next(line for line in out.stdout.splitlines() if line.startswith(f"  run 1 ({which}):"))
        import_s, main_s, total_s = (float(x) for x in re.findall(r"([\d.]+) s", run_line))
        assert 0 < import_s and 0 < main_s and total_s == pytest.approx(import_s + main_s, abs=0.02)
        runs[which] = import_s
        where = out.stdout.split(f"({which}), seconds of 10 ms samples")[1].splitlines()[1:17]
        assert any(re.search(r"ThreadPoolExecutor\S* +train_mnist_ffn\.py:\d+ (train_group|step)", line)
                   for line in where), out.stdout
    assert runs[f"against {other}"] > runs["this"] + 1.0  # the copy's sleep is in its import: it ran the copy
    total = next(line for line in out.stdout.splitlines() if line.strip().startswith("total"))
    this_s, against_s, ratio = (float(x) for x in re.findall(r"(\d+\.\d+)", total))
    assert ratio == pytest.approx(this_s / against_s, abs=0.002) and ratio < 1, total


def test_bench_against_needs_cold_and_a_file(repo_root, tmp_path):
    assert "needs --cold" in one_line_error(run_bench(repo_root, "--against", str(repo_root / "train_mnist_ffn.py")))
    assert "no such file" in one_line_error(run_bench(repo_root, "--cold", "--against", str(tmp_path / "nope.py")))
