"""Tests of analyze.py: the statistics against brute force and hand-computed values, the parser
against the log contract and the real record's step lines, and whole runs on synthetic logs with
a known answer."""
import argparse
import itertools
import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

import analyze

RULE = "=" * 100
RECORD_STEPS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "modded-nanogpt" / \
    "2024-10-14_ModernArch.steps.txt"
# Lines that look like records but sit in the header (a script's own source holds such lines).
FAKE_SOURCE = ["'''Example log lines:", "trial: model:relu hidden:2 batch_size:8 lr:0.1 seed:0 epochs:1 "
               "params:1588 train_loss:9 val_acc:0.99 test_acc:0.99 time:1s",
               "step:9/9 val_loss:0.1 train_time:1ms step_avg:1ms tokens:9", "'''", "python 3.11"]


# Where train_gpt.py's FineWeb runs read their data: the record's 3.28 target applies to them only
FINEWEB_FILES = ("vocab_size:50304 train_files:data/fineweb10B/fineweb_train_*.bin "
                 "val_files:data/fineweb10B/fineweb_val_*.bin")


def write_log(path, run_line, records, source=FAKE_SOURCE):
    path.write_text("\n".join([run_line, RULE, *source, RULE, *records]) + "\n")
    return path


# The parameter count train_mnist_ffn.py logs per hidden unit (784 per input matrix, 10 of W_out):
# analyze.py takes it from the trial lines, so these test logs carry it as the trainer's do.
PARAMS_PER_HIDDEN = {"relu": 794, "geglu": 1578, "swiglu": 1578}


def trial_line(model, hidden, bs, lr, seed, val, test, epochs=1):
    params = PARAMS_PER_HIDDEN[model] * hidden
    return (f"trial: model:{model} hidden:{hidden} batch_size:{bs} lr:{lr} seed:{seed} epochs:{epochs} "
            f"params:{params} train_loss:0.3 val_acc:{val:.5f} test_acc:{test:.5f} time:0.1s")


# ---------------------------------------------------------------------------------------------
# Expected best-of-k against brute force

def brute_force_weights(val, k, counts=None):
    """Enumerate every k-tuple of draws; keep the best by val, a uniformly random one of the tied
    draws; return P(trial j is kept)."""
    n = len(val)
    counts = np.ones(n) if counts is None else np.asarray(counts, float)
    w = np.zeros(n)
    for draw in itertools.product(range(n), repeat=k):
        prob = np.prod([counts[i] / counts.sum() for i in draw])
        if prob == 0:
            continue
        best = max(val[i] for i in draw)
        tied = [i for i in draw if val[i] == best]
        for i in tied:
            w[i] += prob / len(tied)
    return w


POOLS = [
    ([0.5, 0.7, 0.7, 0.9, 0.7], [0.52, 0.60, 0.80, 0.88, 0.75]),   # a three-way tie below the best
    ([0.3, 0.3, 0.3], [0.1, 0.2, 0.9]),                              # everything tied
    ([0.9, 0.1, 0.5, 0.9, 0.2, 0.4], [0.3, 0.1, 0.5, 0.95, 0.2, 0.4]),  # tie at the top
    ([0.42], [0.40]),
]


@pytest.mark.parametrize("val,test", POOLS)
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_expected_best_of_k_matches_brute_force(val, test, k):
    val, test = np.array(val), np.array(test)
    w = analyze.selection_weights(val, k)
    brute = brute_force_weights(val, k)
    np.testing.assert_allclose(w, brute, atol=1e-12)
    for scores in (val, test):  # expected best validation score, and test score of that trial
        mean, sd = analyze.weighted_mean_sd(w, scores)
        bmean = brute @ scores
        np.testing.assert_allclose(mean, bmean, atol=1e-12)
        np.testing.assert_allclose(sd, math.sqrt(brute @ (scores - bmean) ** 2), atol=1e-9)
    if k == 1:
        np.testing.assert_allclose(analyze.weighted_mean_sd(w, val)[0], val.mean())


def test_expected_best_of_k_with_resampled_counts_matches_brute_force():
    val, test = np.array(POOLS[0][0]), np.array(POOLS[0][1])
    counts = np.array([[2, 0, 1, 3, 1], [0, 0, 0, 1, 4], [1, 1, 1, 1, 1]])
    for k in (1, 2, 3):
        w = analyze.selection_weights(val, k, counts)
        for row, c in zip(w, counts):
            np.testing.assert_allclose(row, brute_force_weights(val, k, c), atol=1e-12)
    assert np.all(np.isnan(analyze.selection_weights(val, 2, np.zeros((1, 5)))))


def test_curve_over_many_k_matches_one_k_at_a_time():
    val, test = np.array(POOLS[2][0]), np.array(POOLS[2][1])
    ks = np.arange(1, 7)
    curve = analyze.selection_weights(val, ks)
    for k, row in zip(ks, curve):
        np.testing.assert_allclose(row, analyze.selection_weights(val, k), atol=1e-14)
    best = analyze.weighted_mean_sd(curve, val)[0]
    assert np.all(np.diff(best) >= 0) and best[-1] <= val.max()


def test_bootstrap_agrees_with_exact_formula_within_its_standard_error():
    rng = np.random.default_rng(3)
    val = np.round(rng.uniform(0.8, 0.9, 30), 2)  # rounded: many ties
    test = val + rng.normal(0, 0.01, 30)
    k, draws = 4, 20000
    w = analyze.selection_weights(val, k)
    mean, sd = analyze.weighted_mean_sd(w, test)
    boot = analyze.bootstrap_best_of_k(val, test, k, draws, np.random.default_rng(0))
    assert abs(boot.mean() - mean) < 4 * sd / math.sqrt(draws)
    assert abs(boot.std() / sd - 1) < 0.05
    # the chosen trial's distribution itself (test scores are distinct, so they name the trial)
    freq = np.array([(boot == t).mean() for t in test])
    assert np.all(np.abs(freq - w) < 4 * np.sqrt(w * (1 - w) / draws) + 1e-12)


# ---------------------------------------------------------------------------------------------
# P(A > B), Holm, Welch

def test_prob_greater_hand_computed():
    pg = analyze.prob_greater
    assert pg(np.array([1.0, 3.0]), np.array([0.5, 0.5]), np.array([2.0]), np.array([1.0])) == 0.5
    assert pg(np.array([1.0, 2.0]), np.array([0.5, 0.5]), np.array([1.0]), np.array([1.0])) == 0.75
    assert pg(np.array([1.0]), np.array([1.0]), np.array([1.0]), np.array([1.0])) == 0.5
    # k=2 from val [0.1, 0.2]: the second trial (test 0.9) is kept with probability 3/4
    wa = analyze.selection_weights(np.array([0.1, 0.2]), 2)
    assert pg(np.array([0.5, 0.9]), wa, np.array([0.7]), np.array([1.0])) == pytest.approx(0.75)
    # batched weights: one answer per row
    rows = pg(np.array([1.0, 2.0]), np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([1.5]), np.array([[1.0], [1.0]]))
    np.testing.assert_allclose(rows, [0.0, 1.0])


def test_prob_greater_k1_is_mann_whitney_and_matches_enumeration_for_k2():
    rng = np.random.default_rng(1)
    a_val, a_test = rng.integers(0, 4, 5) / 4, rng.integers(0, 5, 5) / 4
    b_val, b_test = rng.integers(0, 4, 4) / 4, rng.integers(0, 5, 4) / 4
    u = sum((x > y) + 0.5 * (x == y) for x in a_test for y in b_test) / (5 * 4)
    assert analyze.prob_greater(a_test, analyze.selection_weights(a_val, 1),
                                b_test, analyze.selection_weights(b_val, 1)) == pytest.approx(u)
    wa, wb = brute_force_weights(a_val, 2), brute_force_weights(b_val, 2)
    expected = sum(wa[i] * wb[j] * ((a_test[i] > b_test[j]) + 0.5 * (a_test[i] == b_test[j]))
                   for i in range(5) for j in range(4))
    assert analyze.prob_greater(a_test, analyze.selection_weights(a_val, 2), b_test,
                                analyze.selection_weights(b_val, 2)) == pytest.approx(expected)


def test_row_versions_match_one_pool_at_a_time():
    rng = np.random.default_rng(5)
    val_a, test_a = rng.integers(0, 6, (7, 9)) / 5, rng.integers(0, 6, (7, 9)) / 5  # many ties
    val_b, test_b = rng.integers(0, 6, (7, 5)) / 5, rng.integers(0, 6, (7, 5)) / 5
    ks = [1, 2, 5]
    wa, wb = analyze.selection_weights_rows(val_a, ks), analyze.selection_weights_rows(val_b, ks)
    p = analyze.prob_greater_rows(test_a, wa, test_b, wb)
    for i, k in enumerate(ks):
        for r in range(7):
            np.testing.assert_allclose(wa[i, r], analyze.selection_weights(val_a[r], k), atol=1e-14)
            single = analyze.prob_greater(test_a[r], wa[i, r], test_b[r], wb[i, r])
            assert p[i, r] == pytest.approx(single, abs=1e-12)


def pool(val, test, seeds, configs=((64, 0.01),)):
    """A pool as build_pools makes it: one trial per (config, seed), in that order."""
    keys = [(bs, lr, s) for bs, lr in configs for s in seeds]
    return dict(val=np.asarray(val, float), test=np.asarray(test, float), seed=np.array([k[2] for k in keys]),
                batch_size=np.array([k[0] for k in keys]), lr=np.array([k[1] for k in keys]))


def permutation_p(a, b, ks, permutations, rng):
    """permutation_test with the observed P(A > B) computed as compare_pools does."""
    observed = analyze.prob_greater(a["test"], analyze.selection_weights(a["val"], ks),
                                    b["test"], analyze.selection_weights(b["val"], ks))
    return analyze.permutation_test(a, b, ks, observed, permutations, rng)


def test_permutation_test_hand_cases():
    rng = np.random.default_rng(0)
    same = pool([0.5, 0.6, 0.7, 0.8], [0.5, 0.6, 0.7, 0.8], range(4))
    # identical pools: every swap leaves P at exactly 1/2, as extreme as observed: p = 1
    assert permutation_p(same, same, [1, 2], 999, rng)[0] == [1.0, 1.0]
    # A beats B in every pair: observed P = 1 for k=1. Swaps of 10 independent pairs reach
    # |P - 1/2| = 1/2 only when all pairs swap or none does (2 of 2^10 patterns): p ~ 2/1024
    a = pool(np.arange(10) + 100, np.arange(10) + 100, range(10))
    b = pool(np.arange(10), np.arange(10), range(10))
    p, pairs = permutation_p(a, b, [1], 20000, rng)
    assert pairs == [10] and p[0] == pytest.approx(2 / 1024, abs=0.0008)
    # two-sided: B beating A in every pair is just as extreme
    assert permutation_p(b, a, [1], 20000, rng)[0][0] == pytest.approx(2 / 1024, abs=0.0008)
    # no pairs (different seeds): no test
    c = pool([0.1, 0.2], [0.1, 0.2], [50, 51])
    assert math.isnan(permutation_p(same, c, [1], 99, rng)[0][0])


def test_holm_hand_computed():
    np.testing.assert_allclose(analyze.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(analyze.holm([0.01, math.nan, 0.04]), [0.02, math.nan, 0.04])
    np.testing.assert_allclose(analyze.holm([0.5, 0.9]), [1.0, 1.0])


def test_verdicts_after_holm():
    pair = dict(model="geglu", baseline="relu")
    comps = [dict(pair, p_better=0.8, p_value=0.001), dict(pair, p_better=0.2, p_value=0.001),
             dict(pair, model="swiglu", p_better=0.6, p_value=0.02), dict(pair, p_better=0.9, p_value=math.nan)]
    analyze.add_verdicts(comps, 0.05)
    # adjusted: 0.003, 0.003, 0.02 (x1 after the two smaller ones), nan
    assert [c["verdict"] for c in comps][:3] == ["geglu better", "relu better", "swiglu better"]
    assert comps[2]["p_adjusted"] == pytest.approx(0.02)
    assert comps[3]["verdict"].startswith("not testable")  # nan p: no test was possible
    comps = [dict(pair, p_better=0.7, p_value=0.02), dict(pair, p_better=0.7, p_value=0.03),
             dict(pair, p_better=0.7, p_value=0.04)]
    analyze.add_verdicts(comps, 0.05)  # 0.06, 0.06, 0.06: nothing survives
    assert {c["verdict"] for c in comps} == {"no detectable difference"}


def t_tail_numeric(t, df):
    """2 * integral of Student's t density from |t| to infinity, by brute numerical integration."""
    x = np.concatenate([np.linspace(abs(t), abs(t) + 50, 200001), np.geomspace(abs(t) + 50, 1e7, 200001)[1:]])
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    pdf = np.exp(log_c - (df + 1) / 2 * np.log1p(x * x / df))
    return 2 * np.trapezoid(pdf, x)


def test_t_distribution_p_values_known_values():
    p = analyze.t_two_sided_p
    assert p(1.0, 1) == pytest.approx(0.5, abs=1e-12)          # Cauchy: P(|T| > 1) = 1/2
    assert p(1.5, 2) == pytest.approx(1 - 1.5 / math.sqrt(2 + 1.5 ** 2), abs=1e-12)  # closed form, df=2
    assert p(0.0, 7) == pytest.approx(1.0)
    # textbook table: two-sided 5% and 1% critical values
    assert p(2.228, 10) == pytest.approx(0.05, abs=5e-4)
    assert p(2.042, 30) == pytest.approx(0.05, abs=5e-4)
    assert p(4.032, 5) == pytest.approx(0.01, abs=1e-4)
    assert p(1.959964, 1e7) == pytest.approx(0.05, abs=1e-5)  # large df: the normal
    assert p(3.7, 5.882) == pytest.approx(t_tail_numeric(3.7, 5.882), rel=1e-5)


def test_welch_hand_computed():
    t, df, p = analyze.welch([1, 2, 3, 4, 5], [2, 4, 6, 8, 10])
    # means 3 and 6, variances 2.5 and 10: se^2 = 0.5 + 2, df = 2.5^2 / (0.5^2/4 + 2^2/4)
    assert t == pytest.approx(-3 / math.sqrt(2.5))
    assert df == pytest.approx(6.25 / (0.0625 + 1.0))
    assert p == pytest.approx(t_tail_numeric(t, df), rel=1e-5)
    assert 0.10 < p < 0.12
    assert all(math.isnan(v) for v in analyze.welch([1.0], [1.0, 2.0]))


def test_time_to_target_interpolates_between_validation_points():
    loss, time, tokens = np.array([4.0, 3.5, 3.0]), np.array([0.0, 100.0, 200.0]), np.array([0, 10, 20.0])
    t, n = analyze.time_to_target(loss, time, tokens, 3.28)
    assert t == pytest.approx(144.0) and n == pytest.approx(14.4)
    assert all(math.isnan(v) for v in analyze.time_to_target(loss, time, tokens, 2.9))
    assert analyze.time_to_target(loss, time, tokens, 5.0) == (0.0, 0.0)


# ---------------------------------------------------------------------------------------------
# Parsing

CONTRACT_MNIST = [
    "config: models:relu,geglu hidden:2,4,8,16 batch_sizes:8,64 lrs:0.1,0.01,0.001,0.0001 seeds:0,1,2,3 "
    "epochs:1 train:48000 val:12000 split_seed:42 init_std:0.02 data:mnist",
    "trial: model:geglu hidden:16 batch_size:8 lr:0.001 seed:3 epochs:1 params:25248 train_loss:0.2345 "
    "val_acc:0.92342 test_acc:0.92510 time:0.84s",
    "done: trials:512 time:12.3s",
]
CONTRACT_GPT = [
    "config: mlp:swiglu_thin n_layer:12 n_head:6 n_embd:768 mlp_hidden:1536 vocab_size:50304 params:123 "
    "seq_len:1024 batch_size:512 device_batch_size:64 grad_accum:1 num_iterations:1500 lr:0.0036 "
    "muon_lr:0.00036 warmup_iters:0 warmdown_iters:1450 val_every:125 val_tokens:10485760 seed:0 compile:1 "
    "train_files:data/fineweb10B/fineweb_train_*.bin val_files:data/fineweb10B/fineweb_val_*.bin",
    "step:0/1500 val_loss:10.8258 train_time:0ms step_avg:nanms tokens:0",
    "step:1/1500 train_loss:10.8258 train_time:0ms step_avg:nanms tokens:524288",
    "step:1500/1500 val_loss:3.5349 train_time:3286000ms step_avg:2344.31ms tokens:786432000",
    "peak_memory: allocated:31026MiB reserved:31990MiB",
    "done: steps:1500 train_time:3286000ms step_avg:2344.31ms final_val_loss:3.5349",
]
MNIST_RUN = "run:mnist id:0a1b2c3d started:2026-01-01T00:00:00Z torch:2.13.0 device:cpu host:box"
GPT_RUN = "run:gpt id:0a1b2c3d started:2026-01-01T00:00:00Z torch:2.13.0 device:cuda world_size:8 gpu:H100"


def test_parse_every_contract_example(tmp_path):
    log = analyze.parse_log(write_log(tmp_path / "m.txt", MNIST_RUN, CONTRACT_MNIST))
    assert log["kind"] == "mnist" and log["run"]["id"] == "0a1b2c3d" and log["n_bad"] == 0
    assert log["config"]["hidden"] == "2,4,8,16" and log["done"]["trials"] == "512"
    assert log["trials"] == [dict(model="geglu", hidden=16, batch_size=8, lr=0.001, seed=3, val_acc=0.92342,
                                  test_acc=0.92510, epochs=1, params=25248.0, train_loss=0.2345)]  # not the header's fake trial
    log = analyze.parse_log(write_log(tmp_path / "g.txt", GPT_RUN, CONTRACT_GPT))
    assert log["kind"] == "gpt" and log["run"]["world_size"] == "8" and log["n_bad"] == 0
    assert log["config"]["mlp"] == "swiglu_thin" and log["config"]["train_files"].endswith("*.bin")
    assert len(log["steps"]) == 3  # not the header's fake step line
    first, second, last = log["steps"]
    assert first["val_loss"] == 10.8258 and first["train_loss"] is None and math.isnan(first["step_avg_ms"])
    assert second["train_loss"] == 10.8258 and second["tokens"] == 524288
    assert (last["step"], last["total"], last["train_time_ms"], last["step_avg_ms"]) == (1500, 1500, 3286000, 2344.31)
    assert (log["peak"]["allocated_mib"], log["peak"]["reserved_mib"]) == (31026.0, 31990.0)
    assert math.isnan(log["peak"]["max_rss_mib"])  # CUDA's peak here; max_rss: is the CPU's
    assert log["done"]["final_val_loss"] == "3.5349"


def test_parse_truncated_lines_unknown_keys_and_unknown_records(tmp_path):
    records = [
        CONTRACT_MNIST[1].replace("time:0.84s", "time:0.84s future_key:xyz"),  # unknown key: fine
        "gpu_temperature: celsius:71",                                         # unknown record: ignored
        CONTRACT_MNIST[1][:60],                                               # truncated: no accuracies
        "trial: model:relu hidden:",                                           # truncated value
        "trial: model:relu hidden:4 batch_size:8 lr:0.1 seed:0 val_acc:0.9 test_acc:0.9x",  # bad number
        "trial: model:relu hidden:4 batch_size:8 lr:0.1 seed:0 val_acc:0.9 test_acc",        # not key:value
        "Running pytorch 2.4.1 (not a record)",
        "",
    ]
    log = analyze.parse_log(write_log(tmp_path / "m.txt", MNIST_RUN, records))
    assert log["n_bad"] == 4 and len(log["trials"]) == 1 and log["trials"][0]["hidden"] == 16
    log = analyze.parse_log(write_log(tmp_path / "g.txt", GPT_RUN, [CONTRACT_GPT[1], "step:1500/15",
                                                                 "step:3/1500 train_loss:3.1 train_ti"]))
    assert log["n_bad"] == 2 and len(log["steps"]) == 1


def test_header_without_closing_rule_yields_no_records(tmp_path):
    path = tmp_path / "m.txt"
    path.write_text("\n".join([MNIST_RUN, RULE, *FAKE_SOURCE]) + "\n")  # killed while writing the header
    log = analyze.parse_log(path)
    assert log["header_incomplete"] and log["trials"] == []


@pytest.mark.skipif(not RECORD_STEPS.exists(), reason=f"record step lines not found at {RECORD_STEPS}")
def test_parse_record_step_lines():
    log = analyze.parse_log(RECORD_STEPS)
    assert log["kind"] == "gpt" and log["original"] and log["n_bad"] == 0 and not log["config"]
    train = [s for s in log["steps"] if s["train_loss"] is not None]
    val = [s for s in log["steps"] if s["val_loss"] is not None]
    assert len(train) == 5100 and [s["step"] for s in val] == list(range(0, 5100, 125)) + [5100]
    warnings = []
    run = analyze.gpt_run(log, 3.28, warnings)
    assert run["step_avg_ms"] == 178.89 and run["final_val_loss"] == 3.2741
    assert run["tokens"] == 5100 * 524288 and any("inferred" in w for w in warnings)
    # 3.2776 at step 5000 (892894 ms) and 3.2741 at 5100 (910546 ms) do not bracket 3.28;
    # 3.2857 at 4875 (870349 ms) and 3.2776 at 5000 do
    frac = (3.2857 - 3.28) / (3.2857 - 3.2776)
    assert run["time_to_target_ms"] == pytest.approx(870349 + frac * (892894 - 870349))
    assert run["tokens_to_target"] == pytest.approx((4875 + frac * 125) * 524288)


# ---------------------------------------------------------------------------------------------
# Whole runs on synthetic logs with a known answer

def synthetic_mnist(path, seeds=8):
    """GeGLU clearly better at hidden 2, both models alike at 16; GeGLU h=1 and h=8 trials make
    the equal-parameter pairs (ReLU 2 ~ GeGLU 1, ReLU 16 ~ GeGLU 8)."""
    rng = np.random.default_rng(7)
    level = {("relu", 2): 0.60, ("geglu", 2): 0.70, ("relu", 16): 0.92, ("geglu", 16): 0.92,
             ("geglu", 1): 0.45, ("geglu", 8): 0.88}
    lr_loss = {0.1: -0.30, 0.01: 0.0, 0.001: -0.01, 0.0001: -0.12}
    lines = ["config: models:relu,geglu hidden:2,16 batch_sizes:8,64 lrs:0.1,0.01,0.001,0.0001 "
             f"seeds:{','.join(map(str, range(seeds)))} epochs:1 param_match:1 matched_hidden:1,8"]
    for (model, hidden), acc in level.items():
        for bs, lr, seed in itertools.product((8, 64), lr_loss, range(seeds)):
            a = acc + lr_loss[lr] + rng.normal(0, 0.01)
            lines.append(trial_line(model, hidden, bs, lr, seed, a + rng.normal(0, 0.003), a + rng.normal(0, 0.003)))
    lines.append("done: trials:384 time:1.0s")
    return write_log(path, MNIST_RUN, lines)


def synthetic_gpt(path, mlp, seed, step_avg, final_loss, peak, done=True):
    hidden = 3072 if mlp == "relu2" else 1536
    config = (f"config: mlp:{mlp} n_layer:12 n_head:6 n_embd:768 mlp_hidden:{hidden} params:{hidden * 1000} "
              f"seq_len:1024 batch_size:512 num_iterations:1000 val_every:100 seed:{seed} compile:1 {FINEWEB_FILES} "
              f"muon_params:{24 if mlp == 'relu2' else 36} world_size:8")  # muon_params follows the MLP
    lines = [config]
    for step in range(0, 1001):
        loss = final_loss + 8 * math.exp(-step / 150) - 8 * math.exp(-1000 / 150)
        t = max(0, step - 10) * step_avg
        lines.append(f"step:{step}/1000 train_loss:{loss + 0.05 * math.sin(step):.4f} train_time:{t:.0f}ms "
                     f"step_avg:{step_avg if step > 10 else float('nan'):.2f}ms tokens:{step * 524288}"
                     if step else "")
        if step % 100 == 0:
            lines.append(f"step:{step}/1000 val_loss:{loss:.4f} train_time:{t:.0f}ms "
                         f"step_avg:{step_avg:.2f}ms tokens:{step * 524288}")
    lines.append(f"peak_memory: allocated:{peak}MiB reserved:{peak + 900}MiB")
    if done:
        lines.append(f"done: steps:1000 train_time:{990 * step_avg:.0f}ms step_avg:{step_avg:.2f}ms "
                     f"final_val_loss:{final_loss:.4f}")
    return write_log(path, GPT_RUN, [l for l in lines if l])


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    synthetic_mnist(logs / "mnist-20260101-000000-0a1b2c3d.txt")
    for seed, (relu, swiglu) in enumerate([(100.4, 92.1), (99.7, 91.8), (100.1, 92.4)]):
        synthetic_gpt(logs / f"gpt-relu2-{seed}.txt", "relu2", seed, relu, 3.250, 31026)
        synthetic_gpt(logs / f"gpt-swiglu-{seed}.txt", "swiglu_thin", seed, swiglu, 3.270 + 0.001 * seed, 28960)
    out = tmp_path_factory.mktemp("plots")
    inputs = [str(logs)] + ([str(RECORD_STEPS)] if RECORD_STEPS.exists() else [])
    assert analyze.main(inputs + ["--out", str(out), "--resamples", "1000"]) == 0
    return out, json.loads((out / "summary.json").read_text())


def test_synthetic_mnist_gives_the_known_answer(synthetic_run):
    _, summary = synthetic_run
    assert summary["mnist_baseline"] == "relu"
    assert {(c["model"], c["baseline"]) for c in summary["mnist_comparisons"]} == {("geglu", "relu")}
    verdicts = {(c["k"], c["model_hidden"]): c for c in summary["mnist_comparisons"] if c["match"] == "hidden"}
    assert set(verdicts) == {(k, h) for k in (2, 4, 8) for h in (2, 16)}
    assert all(c["baseline_hidden"] == c["model_hidden"] for c in verdicts.values())
    for k in (2, 4, 8):
        assert verdicts[(k, 2)]["verdict"] == "geglu better" and verdicts[(k, 2)]["p_better"] > 0.7
        assert verdicts[(k, 16)]["verdict"] == "no detectable difference"
        lo, hi = verdicts[(k, 16)]["ci95"]
        assert lo < 0.5 < hi
        assert verdicts[(k, 2)]["p_adjusted"] >= verdicts[(k, 2)]["p_value"]
    assert [c["agrees_with_claim"] for c in summary["mnist_claim_check"]] == [True, True, True]
    # the log's matched_hidden:1,8 (a log of before matched_hidden_<model>: GeGLU's sizes) pairs
    # ReLU 2 with GeGLU 1 and ReLU 16 with GeGLU 8
    matched = [c for c in summary["mnist_comparisons"] if c["match"] == "params"]
    assert {(c["baseline_hidden"], c["model_hidden"]) for c in matched} == {(2, 1), (16, 8)}
    for c in matched:
        assert c["verdict"] == "relu better"  # GeGLU at half the width is clearly worse here
        assert (c["baseline_params"], c["model_params"]) in {(1588, 1578), (12704, 12624)}  # from the trial lines
    # Holm over every comparison made: both tables are one family of 12
    p = sorted(c["p_value"] for c in summary["mnist_comparisons"])
    assert min(c["p_adjusted"] for c in summary["mnist_comparisons"]) == pytest.approx(min(1.0, 12 * p[0]))
    for model, hiddens in (("geglu", {"1", "2", "8", "16"}), ("relu", {"2", "16"})):
        assert set(h for h in summary["mnist"][model]) == hiddens
        for h in hiddens:
            entry = summary["mnist"][model][h]
            assert entry["trials"] == 64 and entry["seeds"] == 8
            assert entry["curve"]["k"] == list(range(1, 65))
            for k in ("2", "4", "8"):
                s = entry[k]
                assert set(s) == {"expected_val", "expected_val_sd", "expected_test", "expected_test_sd",
                                  "expected_test_p16", "expected_test_p84", "bootstrap_test_mean",
                                  "bootstrap_test_sd"}
                # the error bars' interval is made of accuracies: inside [0, 1] whatever the spread
                assert 0 <= s["expected_test_p16"] <= s["expected_test_p84"] <= 1
                # the 50 simulated searches agree with the exact expectation within their error
                assert abs(s["bootstrap_test_mean"] - s["expected_test"]) < 4 * s["expected_test_sd"] / math.sqrt(50) + 1e-9


def test_synthetic_gpt_gives_the_known_answer(synthetic_run):
    _, summary = synthetic_run
    groups = {g["label"]: g for g in summary["gpt"]}
    relu, swiglu = groups["relu2"], groups["swiglu_thin"]
    assert relu["runs"] == swiglu["runs"] == 3 and relu["mlp"] == "relu2"
    assert swiglu["step_avg_ms_mean"] == pytest.approx((92.1 + 91.8 + 92.4) / 3)
    assert swiglu["step_avg_change_pct"] == pytest.approx(100 * (92.1 / 100.066666 - 1), abs=0.01)
    assert swiglu["step_avg_p_value"] < 0.001
    assert swiglu["final_val_loss_change"] == pytest.approx(0.021, abs=1e-6)
    assert swiglu["peak_memory_change_pct"] == pytest.approx(100 * (28960 / 31026 - 1))
    assert swiglu["baseline"] == "relu2"
    for key in ("step_avg_change_pct", "final_val_loss_change", "step_avg_p_value", "baseline"):
        assert relu[key] is None  # the baseline has no change against itself
    assert relu["tokens"] == 1000 * 524288
    # val loss = final + 8 (exp(-s/150) - exp(-1000/150)) crosses 3.28 near step 794 for relu2
    # (final 3.25) and near steps 897-911 for swiglu_thin (final 3.270-3.272); validation every 100 steps
    assert 700 * 524288 < relu["tokens_to_target"] < 800 * 524288
    assert 850 * 524288 < swiglu["tokens_to_target"] < 950 * 524288  # the mean of 3 runs
    assert 690 * 100 < relu["time_to_target_ms"] < 790 * 100.5
    if RECORD_STEPS.exists():
        record = [g for g in summary["gpt"] if g["original_log"]]
        assert len(record) == 1 and record[0]["mlp"] == "relu2" and record[0]["step_avg_change_pct"] is None
        assert any("assumed relu2" in w for w in summary["warnings"])


def test_every_figure_and_summary_written(synthetic_run):
    out, summary = synthetic_run
    names = ["mnist_k2.png", "mnist_k4.png", "mnist_k8.png", "mnist_expected_best.png",
             "mnist_p_better.png", "mnist_param_match.png", "gpt_val_loss.png",
             "gpt_train_loss.png", "gpt_step_time.png", "gpt_val_loss_difference.png", "summary.md", "summary.json"]
    for name in names:
        assert (out / name).stat().st_size > 1000, name
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary["figure_notes"] == []  # three runs a group: every figure has something to compare
    md = (out / "summary.md").read_text()
    assert "geglu better" in md and "swiglu_thin" in md and "agrees with claim" in md


def test_duplicate_trials_counted_once_and_stopped_run_warned(tmp_path, capsys):
    log = synthetic_mnist(tmp_path / "a.txt", seeds=3)
    synthetic_gpt(tmp_path / "g.txt", "relu2", 0, 100.0, 3.3, 1000, done=False)
    out = tmp_path / "out"
    assert analyze.main([str(log), str(log), str(tmp_path / "g.txt"), "--out", str(out), "--k", "2",
                         "--resamples", "200", "--no-figures"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mnist"]["relu"]["2"]["trials"] == 2 * 4 * 3
    assert any(w.startswith("144 repeated MNIST trials") for w in summary["warnings"])
    assert any("no done: record" in w for w in summary["warnings"])
    assert summary["gpt"][0]["time_to_target_ms"] is None  # 3.3 never reaches 3.28: "not reached"
    assert "not reached" in capsys.readouterr().out


def test_baseline_that_differs_in_more_than_the_mlp_is_named(tmp_path):
    synthetic_gpt(tmp_path / "r.txt", "relu2", 0, 100.0, 3.25, 1000)
    path = synthetic_gpt(tmp_path / "s.txt", "swiglu_thin", 0, 92.0, 3.27, 900)
    path.write_text(path.read_text().replace("val_every:100", "val_every:50"))
    out = tmp_path / "out"
    assert analyze.main([str(tmp_path), "--out", str(out), "--no-figures"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    swiglu = next(g for g in summary["gpt"] if g["mlp"] == "swiglu_thin")
    assert swiglu["baseline"] == "relu2" and swiglu["baseline_also_differs_in"] == ["val_every"]
    assert swiglu["step_avg_change_pct"] == pytest.approx(-8.0)
    assert swiglu["step_avg_p_value"] is None  # one run a side: no t-test
    assert any("also differs in val_every" in w for w in summary["warnings"])


def test_no_logs_is_a_clear_error(tmp_path, capsys):
    assert analyze.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "run a training script first" in err and len(err.strip().splitlines()) == 1
    assert analyze.main([str(tmp_path / "missing")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "empty.txt").write_text(MNIST_RUN + "\n" + RULE + "\n" + RULE + "\n")
    assert analyze.main([str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"no records in the 1 log file(s) in {tmp_path} ({tmp_path / 'empty.txt'}: no trial: or step: records)" \
        in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_default_input_is_logs_without_the_reference_runs(tmp_path, monkeypatch):
    """`python analyze.py` in a checkout reads the user's own runs under logs/, not the committed
    reference logs (which would join the pool and shadow the user's repeated trials)."""
    (tmp_path / "logs" / "reference").mkdir(parents=True)
    synthetic_mnist(tmp_path / "logs" / "reference" / "mnist-cpu.txt", seeds=3)
    mine = synthetic_mnist(tmp_path / "logs" / "mnist-mine.txt", seeds=2)
    monkeypatch.chdir(tmp_path)
    assert analyze.main(["--out", "out", "--k", "2", "--resamples", "100", "--no-figures"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["inputs"] == [str(Path("logs") / mine.name)]
    assert summary["mnist"]["relu"]["2"]["trials"] == 2 * 4 * 2
    assert analyze.main(["logs/reference", "--out", "out2", "--k", "2", "--resamples", "100", "--no-figures"]) == 0
    assert json.loads((tmp_path / "out2" / "summary.json").read_text())["mnist"]["relu"]["2"]["trials"] == 2 * 4 * 3


# ---------------------------------------------------------------------------------------------
# A small generator of logs that follow the contract (docs/log-format.md), for sets of
# runs with a known answer

def gpt_log(path, mlp="relu2", seed=0, final_loss=3.27, step_avg=100.0, started="2026-01-01T00:00:00Z",
            gpu="H100", torch="2.11.0", world_size=8, steps=1000, val_every=100, n_layer=12, peak=31026,
            kill_at=None, status="ok", resume=None, source=FAKE_SOURCE, cpu=False, cuda=None):
    """One train_gpt.py log. Validation loss final_loss + 8 (exp(-s/tau) - exp(-steps/tau)),
    tau = steps / 6.67; train_time leaves out the first 10 steps. kill_at: the log ends after that
    step (no peak_memory, no done); status: of the done: record, written at kill_at when given.
    resume=(checkpoint, killed_at): the run is killed at killed_at with step lines after its
    checkpoint that are wrong (+1 on every loss), then resumed from the checkpoint to the end."""
    hidden = 3072 if mlp == "relu2" else 1536
    tau = steps / 6.67
    loss = lambda s: final_loss + 8 * (math.exp(-s / tau) - math.exp(-steps / tau))
    config = (f"config: mlp:{mlp} n_layer:{n_layer} n_head:6 n_embd:768 mlp_hidden:{hidden} params:{hidden * 1000} "
              f"seq_len:1024 batch_size:512 num_iterations:{steps} val_every:{val_every} seed:{seed} compile:1 {FINEWEB_FILES} "
              f"muon_params:72 muon_matrices:{72 if mlp == 'relu2' else 84} world_size:{world_size}")

    def step_lines(s, wrong=0.0):
        t = max(0, s - 10) * step_avg
        avg = f"{step_avg:.2f}" if s > 10 else "nan"
        lines = [] if s == 0 else [f"step:{s}/{steps} train_loss:{loss(s) + wrong + 0.05 * math.sin(s):.4f} "
                                   f"train_time:{t:.0f}ms step_avg:{avg}ms tokens:{s * 524288}"]
        if s % val_every == 0 or s == steps:
            lines.append(f"step:{s}/{steps} val_loss:{loss(s) + wrong:.4f} train_time:{t:.0f}ms step_avg:{avg}ms "
                         f"tokens:{s * 524288}")
        return lines

    last = kill_at if kill_at is not None else steps
    records = [config]
    if resume:
        checkpoint, killed_at = resume
        for s in range(0, killed_at + 1):
            records += step_lines(s, wrong=1.0 if s > checkpoint else 0.0)
        records.append(f"resume: from_step:{checkpoint} checkpoint:logs/x/step{checkpoint}.pt "
                       f"resumed:2026-01-02T00:00:00Z world_size:{world_size}")
        start = checkpoint + 1
    else:
        start = 0
    for s in range(start, last + 1):
        records += step_lines(s)
    if cpu:
        records.append("peak_memory: allocated:nanMiB reserved:nanMiB max_rss:346MiB")
    elif kill_at is None or status != "ok":
        records.append(f"peak_memory: allocated:{peak}MiB reserved:{peak + 900}MiB")
    if kill_at is None or status != "ok":
        records.append(f"done: steps:{last} train_time:{max(0, last - 10) * step_avg:.0f}ms step_avg:{step_avg:.2f}ms "
                       f"final_val_loss:{loss(last):.4f} status:{status}")
    run_line = (f"run:gpt id:{seed:08x} started:{started} torch:{torch} device:cuda world_size:{world_size} "
                f"gpu:{gpu} host:node1")
    env = ["python: 3.11.7", f"torch: {torch}"] + ([f"cuda: {cuda} available:True"] if cuda else [])
    return write_log(path, run_line, records, source=list(source) + env)


def hours(i):
    return f"2026-01-01T{i:02d}:00:00Z"


def gpt_scenarios(folder):
    """Five settings in one folder (n_layer tells them apart), each relu2 against swiglu_thin:
    L12 a real difference (interleaved), L11 no difference (interleaved), L10 too few runs (one a
    side), L9 not interleaved (every relu2 run first), L8 the two MLPs on two GPU models; and a
    CPU smoke run (memory from max_rss) beside them."""
    gpt_log(folder / "cpu-relu2-0.txt", "relu2", 0, 3.3, 120.0, hours(0), gpu="none", world_size=1, cpu=True)
    relu_t, swiglu_t = [100.2, 99.8, 100.1, 99.9, 100.0], [92.1, 91.9, 92.3, 91.8, 92.0]
    relu_l, swiglu_l = [3.2500, 3.2512, 3.2495, 3.2507, 3.2503], [3.2700, 3.2712, 3.2693, 3.2705, 3.2698]
    for i in range(5):  # L12: real difference in time and loss; c b c b ...
        gpt_log(folder / f"l12-relu2-{i}.txt", "relu2", i, relu_l[i], relu_t[i], hours(2 * i), n_layer=12)
        gpt_log(folder / f"l12-swiglu-{i}.txt", "swiglu_thin", i, swiglu_l[i], swiglu_t[i], hours(2 * i + 1), n_layer=12)
    same_t = [[100.1, 99.8, 100.3, 99.9], [100.0, 100.2, 99.7, 100.1]]
    same_l = [[3.2710, 3.2695, 3.2702, 3.2690], [3.2700, 3.2698, 3.2705, 3.2694]]
    for i in range(4):  # L11: no difference at all
        gpt_log(folder / f"l11-relu2-{i}.txt", "relu2", i, same_l[0][i], same_t[0][i], hours(2 * i), n_layer=11)
        gpt_log(folder / f"l11-swiglu-{i}.txt", "swiglu_thin", i, same_l[1][i], same_t[1][i], hours(2 * i + 1), n_layer=11)
    gpt_log(folder / "l10-relu2-0.txt", "relu2", 0, 3.25, 100.0, hours(0), n_layer=10)  # L10: one run a side
    gpt_log(folder / "l10-swiglu-0.txt", "swiglu_thin", 0, 3.27, 92.0, hours(1), n_layer=10)
    for i in range(4):  # L9: all relu2 runs, then all swiglu_thin runs
        gpt_log(folder / f"l9-relu2-{i}.txt", "relu2", i, relu_l[i], relu_t[i], hours(i), n_layer=9)
        gpt_log(folder / f"l9-swiglu-{i}.txt", "swiglu_thin", i, swiglu_l[i], swiglu_t[i], hours(4 + i), n_layer=9)
    for i in range(3):  # L8: relu2 on an H100, swiglu_thin on an A100
        gpt_log(folder / f"l8-relu2-{i}.txt", "relu2", i, relu_l[i], relu_t[i], hours(2 * i), n_layer=8, gpu="H100")
        gpt_log(folder / f"l8-swiglu-{i}.txt", "swiglu_thin", i, swiglu_l[i], 2 * swiglu_t[i], hours(2 * i + 1),
                n_layer=8, gpu="A100")
    return folder


@pytest.fixture(scope="module")
def gpt_scenario_run(tmp_path_factory):
    logs = gpt_scenarios(tmp_path_factory.mktemp("scenarios"))
    out = tmp_path_factory.mktemp("scenario-plots")
    assert analyze.main([str(logs), "--out", str(out), "--resamples", "400"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    return out, summary, {g["label"]: g for g in summary["gpt"]}


def test_scenarios_are_told_apart_by_short_labels_and_a_key(gpt_scenario_run):
    out, summary, groups = gpt_scenario_run
    # five settings, each MLP in each: the MLP plus a setting letter, the key table spells them out
    assert len(groups) == 11 and all(len(label) <= len("swiglu_thin A") for label in groups)
    assert groups[next(l for l in groups if groups[l]["gpu"] == "none")]["peak_memory_kind"] == "max_rss"
    letter = {g["files"][0].split("/")[-1].split("-")[0]: g["setting"] for g in summary["gpt"]}
    for g in summary["gpt"]:
        if g["mlp"] == "swiglu_thin" and g["gpu"] == "H100":  # the GPU is part of a setting (L8: A100)
            assert g["baseline"] == f"relu2 {g['setting']}" and g["baseline_also_differs_in"] == []
    md = (out / "summary.md").read_text()
    key = md.split("Key: what tells the groups apart")[1]
    assert f"| relu2 {letter['l9']} | relu2 | {letter['l9']} | gpu:H100 n_layer:9 world_size:8 |" in key
    assert f"| swiglu_thin {letter['l8']} | swiglu_thin | {letter['l8']} | gpu:A100 n_layer:8 world_size:8 |" in key


def scenario(groups, summary, prefix):
    """(swiglu_thin row, relu2 row) of the setting whose logs start with prefix."""
    rows = [g for g in summary["gpt"] if g["files"][0].split("/")[-1].startswith(prefix + "-")]
    return next(g for g in rows if g["mlp"] == "swiglu_thin"), next(g for g in rows if g["mlp"] == "relu2")


def test_scenario_real_difference(gpt_scenario_run):
    _, summary, groups = gpt_scenario_run
    swiglu, relu = scenario(groups, summary, "l12")
    assert swiglu["runs"] == relu["runs"] == 5
    assert swiglu["step_avg_change_pct"] == pytest.approx(100 * (92.02 / 100.0 - 1))
    assert swiglu["step_avg_p_value"] < 1e-6 and swiglu["final_val_loss_p_value"] < 1e-6
    assert swiglu["same_machine"] is True and swiglu["interleaving"]["verdict"] == "interleaved"
    assert swiglu["interleaving"]["order"] == "bc" * 5
    # At equal loss: L = swiglu_thin's final mean (the worse side), 3.27016. relu2's mean curve,
    # 3.25034 + 8 (exp(-s/150) - exp(-1000/150)), comes down to it between its validation points at
    # 800 and 900; linear between them (as the analysis does):
    e = swiglu["equal_loss"]
    level = np.mean([3.2700, 3.2712, 3.2693, 3.2705, 3.2698])
    relu_curve = lambda s: round(np.mean([3.2500, 3.2512, 3.2495, 3.2507, 3.2503]) + 8 * (math.exp(-s / (1000 / 6.67))
                                                                                      - math.exp(-6.67)), 4)
    assert e["loss"] == pytest.approx(level, abs=2e-4)
    y800, y900 = relu_curve(800), relu_curve(900)
    expected_step = 800 + 100 * (y800 - e["loss"]) / (y800 - y900)
    assert e["baseline_steps"] == pytest.approx(expected_step, abs=2) and e["steps"] == pytest.approx(1000)
    assert e["delta_steps"] == pytest.approx(1000 - expected_step, abs=2)
    # time at those points: swiglu_thin 990 timed steps x 92.02 ms; relu2 (steps - 10) x 100 ms
    assert e["delta_time_ms"] == pytest.approx(990 * 92.02 - (expected_step - 10) * 100.0, rel=0.01)
    lo, hi = e["delta_steps_ci95"]
    assert lo <= e["delta_steps"] <= hi and hi - lo < 20  # five seeds with sd 0.0007: a narrow interval
    assert e["delta_time_ms_ci95"][0] < e["delta_time_ms"] < e["delta_time_ms_ci95"][1]
    rule = relu["record_rule"]  # relu2 at 3.2503 +- 0.0007 is far below 3.28: passes
    assert rule["verdict"] == "passes" and rule["p_value"] < 1e-6 and rule["more_runs_needed"] == 0
    assert swiglu["record_rule"]["verdict"] == "passes"


def test_scenario_no_difference(gpt_scenario_run):
    _, summary, groups = gpt_scenario_run
    swiglu, relu = scenario(groups, summary, "l11")
    assert swiglu["step_avg_p_value"] > 0.5 and swiglu["final_val_loss_p_value"] > 0.5
    assert abs(swiglu["step_avg_change_pct"]) < 0.1 and swiglu["interleaving"]["verdict"] == "interleaved"
    lo, hi = swiglu["equal_loss"]["delta_steps_ci95"]
    assert lo < 0 < hi  # the same curve: no step difference at equal loss


def test_scenario_too_few_runs(gpt_scenario_run):
    _, summary, groups = gpt_scenario_run
    swiglu, relu = scenario(groups, summary, "l10")
    assert swiglu["runs"] == relu["runs"] == 1
    assert swiglu["step_avg_change_pct"] == pytest.approx(-8.0)
    assert swiglu["step_avg_p_value"] is None and swiglu["final_val_loss_p_value"] is None
    assert relu["record_rule"]["verdict"] == analyze.FEWER_THAN_2 and relu["record_rule"]["runs_needed"] is None
    assert swiglu["equal_loss"]["delta_steps_ci95"] == [None, None]  # no seeds to resample
    assert swiglu["interleaving"]["verdict"] == "interleaved"  # b c: as interleaved as one run a side can be


def test_too_few_runs_three_against_one(tmp_path):
    """Three relu2 runs (3.279 +- 0.0015) against one swiglu_thin run: the record rule can be
    tested on relu2 but not passed yet; nothing that needs a spread on both sides is given."""
    for i, loss in enumerate([3.2775, 3.2790, 3.2805]):
        gpt_log(tmp_path / f"relu2-{i}.txt", "relu2", i, loss, 100.0 + i, hours(2 * i))
    gpt_log(tmp_path / "swiglu-0.txt", "swiglu_thin", 0, 3.2830, 95.0, hours(1))
    assert analyze.main([str(tmp_path), "--out", str(tmp_path / "out"), "--no-figures", "--resamples", "200"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    rows = {g["label"]: g for g in summary["gpt"]}
    rule = rows["relu2"]["record_rule"]
    # t = -0.001 / (0.0015 / sqrt 3) = -1.1547 at df 2, where P(T <= t) = (1 + t / sqrt(2 + t^2)) / 2
    assert rule["t"] == pytest.approx(-1 / math.sqrt(0.75), rel=1e-3)
    assert rule["p_value"] == pytest.approx((1 + rule["t"] / math.sqrt(2 + rule["t"] ** 2)) / 2, rel=1e-9)
    assert rule["verdict"] == "not yet"
    # n = 15: t = 2.582 < 2.624 (df 14, one-sided 1%); n = 16: t = 2.667 > 2.602 (df 15)
    assert (rule["runs_needed"], rule["more_runs_needed"]) == (16, 13)
    swiglu = rows["swiglu_thin"]
    assert swiglu["record_rule"]["verdict"] == analyze.FEWER_THAN_2
    assert swiglu["step_avg_p_value"] is None and swiglu["final_val_loss_p_value"] is None
    e = swiglu["equal_loss"]  # a point estimate, but no interval: one run says nothing of its seed spread
    assert e["delta_steps"] > 0 and e["delta_steps_ci95"] == [None, None] and e["delta_time_ms_ci95"] == [None, None]
    md = (tmp_path / "out" / "summary.md").read_text()
    line = next(l for l in md.splitlines() if l.startswith("| swiglu_thin | relu2 | -"))
    assert line.split(" | ")[3] == line.split(" | ")[5] == analyze.FEWER_THAN_2  # the Welch p cells say why


def test_scenario_not_interleaved(gpt_scenario_run):
    out, summary, groups = gpt_scenario_run
    swiglu, relu = scenario(groups, summary, "l9")
    assert swiglu["interleaving"]["verdict"] == "not interleaved: one group ran first"
    assert swiglu["interleaving"]["order"] == "bbbbcccc" and swiglu["same_machine"] is True
    assert any(w.startswith(f"{swiglu['label']} vs {relu['label']}: not interleaved") for w in summary["warnings"])
    # the interleaved settings raise no such warning
    assert sum("not interleaved" in w for w in summary["warnings"]) == 1
    assert (out / "gpt_run_order.png").stat().st_size > 1000


def test_scenario_two_gpus(gpt_scenario_run):
    _, summary, groups = gpt_scenario_run
    swiglu, relu = scenario(groups, summary, "l8")
    assert swiglu["same_machine"] is False and swiglu["machine_differences"] == ["gpu A100 vs H100"]
    assert swiglu["baseline"] == relu["label"] and swiglu["baseline_also_differs_in"] == ["gpu"]
    assert any("not the same GPU model and software (gpu A100 vs H100)" in w for w in summary["warnings"])
    assert any("not the same GPU model" in n for n in swiglu["comparison_notes"])
    for label, g in groups.items():  # the machine check flags only this setting
        if g["baseline"] and g is not swiglu:
            assert g["same_machine"] is True


def test_same_gpu_other_software_is_not_like_for_like(tmp_path):
    """One GPU model (named as train_gpt.py writes it, spaces as %20), the two MLPs on other torch
    and CUDA versions: the comparison says which, and the GPU reads as the GPU names itself."""
    gpu = "NVIDIA%20H100%2080GB%20HBM3"
    for i in range(3):
        gpt_log(tmp_path / f"relu2-{i}.txt", "relu2", i, 3.2780 + 0.001 * i, 100.0 + 0.2 * i, hours(2 * i), gpu=gpu,
                torch="2.11.0+cu130", cuda="13.0")
        gpt_log(tmp_path / f"swiglu-{i}.txt", "swiglu_thin", i, 3.2830 + 0.001 * i, 95.0 + 0.2 * i, hours(2 * i + 1),
                gpu=gpu, torch="2.12.0+cu128", cuda="12.8")
    assert analyze.main([str(tmp_path), "--out", str(tmp_path / "out"), "--no-figures", "--resamples", "200"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    swiglu = next(g for g in summary["gpt"] if g["mlp"] == "swiglu_thin")
    assert swiglu["gpu"] == "NVIDIA H100 80GB HBM3" and swiglu["baseline_also_differs_in"] == []
    assert swiglu["same_machine"] is False
    assert swiglu["machine_differences"] == ["torch 2.12.0+cu128 vs 2.11.0+cu130", "cuda 12.8 vs 13.0"]
    assert swiglu["interleaving"]["verdict"] == "interleaved"  # in order, yet not like for like
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "| NVIDIA H100 80GB HBM3 x 8 |" in md and "%20" not in md.split("## GPT")[1].split("Runs, in")[0]
    assert "| no: torch 2.12.0+cu128 vs 2.11.0+cu130; cuda 12.8 vs 13.0 |" in md
    # peak memory with its sd over the runs (all 31026 MiB here: sd 0)
    assert "| 31026 ± 0 |" in md


def test_scenario_tables_in_summary_md(gpt_scenario_run):
    out, summary, groups = gpt_scenario_run
    md = (out / "summary.md").read_text()
    swiglu, _ = scenario(groups, summary, "l8")
    line = next(l for l in md.splitlines() if l.startswith(f"| {swiglu['label']} | {swiglu['baseline']} | +"))
    assert "| no: gpu A100 vs H100 |" in line and line.rstrip().endswith("|") and "[" in line.split("|")[-2]
    assert "Record rule (modded-nanogpt)" in md and "| passes |" in md and "| n/a: fewer than 2 independent runs |" in md
    assert "At equal loss" in md and md.count("| interleaved (bcbcbcbcbc) |") == 1  # L12's five pairs


def test_resumed_log_reads_as_one_run(tmp_path):
    """A run killed at step 650 after its checkpoint at 500, resumed from 500: the killed process's
    lines after 500 (wrong on purpose here) are superseded, and the log reads as the whole run."""
    whole = analyze.gpt_run(analyze.parse_log(gpt_log(tmp_path / "whole.txt", final_loss=3.26)), 3.28, [])
    warnings = []
    log = analyze.parse_log(gpt_log(tmp_path / "resumed.txt", final_loss=3.26, resume=(500, 650)))
    resumed = analyze.gpt_run(log, 3.28, warnings)
    assert [s["step"] for s in log["steps"] if s["val_loss"] is not None] == list(range(0, 1001, 100))
    np.testing.assert_array_equal(resumed["val_loss"], whole["val_loss"])
    np.testing.assert_array_equal(resumed["train_loss"], whole["train_loss"])
    np.testing.assert_array_equal(resumed["val_time_ms"], whole["val_time_ms"])
    assert resumed["finished"] and resumed["final_val_loss"] == whole["final_val_loss"] == 3.26
    assert resumed["step_avg_ms"] == whole["step_avg_ms"] and resumed["resumed_from"] == [500]
    assert warnings == []  # a plain resume is no cause for a warning; the runs table says it
    out = tmp_path / "out"
    assert analyze.main([str(tmp_path / "resumed.txt"), "--out", str(out), "--no-figures"]) == 0
    run_row = next(l for l in (out / "summary.md").read_text().splitlines() if l.startswith("| resumed.txt |"))
    assert run_row.endswith("| 500 |") and "| finished |" in run_row
    assert json.loads((out / "summary.json").read_text())["gpt_runs"][0]["resumed_from"] == [500]


def test_checkpoints_do_not_split_a_group(tmp_path):
    """--save-every changes neither the numbers nor train_time (writes are not timed): a run with
    checkpoints (here resumed) is a replicate of the runs without."""
    gpt_log(tmp_path / "plain.txt", seed=0)
    saved = gpt_log(tmp_path / "saved.txt", seed=1, resume=(500, 650), started="2026-01-01T01:00:00Z")
    saved.write_text(saved.read_text().replace(" world_size:8\n", " world_size:8 save_every:250\n", 1))
    out = tmp_path / "out"
    assert analyze.main([str(tmp_path / "plain.txt"), str(saved), "--out", str(out), "--no-figures"]) == 0
    [group] = json.loads((out / "summary.json").read_text())["gpt"]
    assert group["runs"] == 2 and group["resumed_runs"] == 1 and group["label"] == "relu2"


def test_done_before_a_resume_is_not_the_end(tmp_path):
    """Interrupted (done: status:interrupted) at step 650, resumed from the checkpoint at 500, and
    killed after writing its last step but before its own done:: the run reached its end, so it
    is finished; the interrupted record of the first process is not how it ended."""
    path = gpt_log(tmp_path / "r.txt", resume=(500, 650))
    lines = path.read_text().splitlines()
    at = next(i for i, l in enumerate(lines) if l.startswith("resume:"))
    lines[at:at] = ["peak_memory: allocated:31000MiB reserved:31900MiB",
                    "done: steps:650 train_time:64000ms step_avg:100.00ms final_val_loss:4.0 status:interrupted"]
    path.write_text("\n".join(l for l in lines if not l.startswith("done: steps:1000")) + "\n")
    warnings = []
    log = analyze.parse_log(path)
    run = analyze.gpt_run(log, 3.28, warnings)
    assert log["done"] == {} and run["finished"] and run["status"] is None and run["final_val_loss"] == 3.27
    assert run["peak_memory_mib"] == 31026  # the larger of the two processes' peaks
    assert warnings == ["r.txt: no done: record, though it reached its last step (1000); its numbers are used"]


def test_resume_with_other_code_or_world_size_is_warned(tmp_path):
    path = gpt_log(tmp_path / "r.txt", resume=(500, 650))
    text = path.read_text().replace("resume: from_step:500 checkpoint:logs/x/step500.pt resumed:2026-01-02T00:00:00Z "
                                    "world_size:8", "resume: from_step:500 checkpoint:logs/x/step500.pt "
                                    "resumed:2026-01-02T00:00:00Z world_size:4 gpu:A100 torch:2.11.0 compile:0 "
                                    "future_key:1\nwarning: code_changed:1 old:abc new:def")
    path.write_text(text)
    warnings = []
    run = analyze.gpt_run(analyze.parse_log(path), 3.28, warnings)
    assert run["finished"] and run["resume_changes"] == [
        "world size 8 -> 4 at step 500", "GPU H100 -> A100 at step 500", "compile 1 -> 0 at step 500",
        "the script's code changed at a resume (warning: code_changed:1)"]
    assert len(warnings) == 1 and "its step times mix both" in warnings[0]


def test_unfinished_runs_give_no_final_numbers(tmp_path):
    """A run killed at step 12 (its only validation at step 0) and one that diverged are left out
    of their groups' numbers, with a warning and a note; the killed one's step-0 loss is never
    reported as its final loss."""
    for i, loss in enumerate([3.250, 3.252, 3.251]):
        gpt_log(tmp_path / f"relu2-{i}.txt", "relu2", i, loss, 100.0, hours(2 * i))
    gpt_log(tmp_path / "relu2-killed.txt", "relu2", 3, 3.25, 100.0, hours(7), kill_at=12)
    for i, loss in enumerate([3.270, 3.271]):
        gpt_log(tmp_path / f"swiglu-{i}.txt", "swiglu_thin", i, loss, 92.0, hours(2 * i + 1))
    gpt_log(tmp_path / "swiglu-diverged.txt", "swiglu_thin", 2, 3.27, 92.0, hours(8), kill_at=400, status="diverged")
    out = tmp_path / "out"
    assert analyze.main([str(tmp_path), "--out", str(out), "--resamples", "200", "--no-figures"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    groups = {g["label"]: g for g in summary["gpt"]}
    relu, swiglu = groups["relu2"], groups["swiglu_thin"]
    assert (relu["runs"], relu["unfinished_runs"], swiglu["runs"], swiglu["unfinished_runs"]) == (3, 1, 2, 1)
    assert relu["final_val_loss_mean"] == pytest.approx(3.251)  # not pulled up by the killed run's 10.9
    assert swiglu["record_rule"]["n"] == 2
    killed = next(r for r in summary["gpt_runs"] if r["path"].endswith("relu2-killed.txt"))
    assert killed["finished"] is False and killed["final_val_loss"] is None
    assert killed["last_val_step"] == 0 and killed["last_val_loss"] > 10 and killed["step_avg_ms"] is None
    assert any("relu2-killed.txt: no done: record: the run stopped at step 12/1000" in w for w in summary["warnings"])
    assert any("swiglu-diverged.txt: the run ended with status:diverged at step 400/1000" in w
               for w in summary["warnings"])
    assert relu["group_notes"] == ["relu2: 1 of 4 runs did not finish (1 stopped); its numbers are over the 3 that did"]
    md = (out / "summary.md").read_text()
    assert "| relu2 | 3 (+1 unfinished) |" in md
    killed_row = next(l for l in md.splitlines() if l.startswith("| relu2-killed.txt |"))
    assert "at step 0 (not final)" in killed_row and "stopped at step 12/1000 (no done: record)" in killed_row
    # only the finished runs were compared, and their start order c b c b ... is interleaved
    assert swiglu["interleaving"]["order"] == "bcbcb"


def test_a_last_line_cut_by_a_kill_is_skipped_not_misread(tmp_path):
    """Both scripts end each line with its newline in one write: a last line without one was cut
    by a kill, and its cut value may still parse (step_avg:2 of step_avg:100.00ms, test_acc:0.9)."""
    gpt = gpt_log(tmp_path / "gpt.txt", kill_at=12)
    gpt.write_text(gpt.read_text().rstrip("\n")[:-len("0.00ms tokens:6291456")])   # step 12's: step_avg:10
    mnist = synthetic_mnist(tmp_path / "mnist.txt")
    lines = mnist.read_text().splitlines()[:-1]                                     # killed: no done:
    mnist.write_text("\n".join(lines)[:-len("0000")])                              # its last test_acc cut
    warnings = []
    run = analyze.gpt_run(analyze.parse_log(gpt), 3.28, warnings)
    assert run["last_step"] == 11 and run["last_step_avg_ms"] == 100.0 and not any("tokens" in w for w in warnings)
    log = analyze.parse_log(mnist)
    assert len(log["trials"]) == 383 and log["cut_line"] == lines[-1][:-4] and log["n_bad"] == 0
    out = tmp_path / "out"
    assert analyze.main([str(gpt), str(mnist), "--out", str(out), "--no-figures", "--resamples", "50"]) == 0
    cut = [w for w in json.loads((out / "summary.json").read_text())["warnings"] if "last line is cut off" in w]
    assert [w.split(":")[0] for w in cut] == [str(gpt), str(mnist)]


def test_cpu_memory_from_max_rss(tmp_path):
    gpt_log(tmp_path / "cpu.txt", gpu="none", world_size=1, cpu=True)
    out = tmp_path / "out"
    assert analyze.main([str(tmp_path / "cpu.txt"), "--out", str(out), "--no-figures"]) == 0
    row = json.loads((out / "summary.json").read_text())["gpt"][0]
    assert row["peak_memory_mib"] == 346 and row["peak_memory_kind"] == "max_rss"
    assert "| relu2 | 1 | CPU x 1 |" in (out / "summary.md").read_text()
    assert "| 346 (rss) |" in (out / "summary.md").read_text()


def test_a_single_run_draws_no_lonely_bar_or_point_and_its_time_axis_starts_timed(tmp_path):
    """The CI smoke run's shape (40 steps, validation every 10): one run, so no step-time bar or
    run-order point with nothing beside it (summary.md says why); its validation points at steps 0
    and 10 both sit at train_time 0 (the first 10 steps are untimed), and the time axis starts at
    the second (step 10), not with a vertical drop from step 0. (With runs to compare, both
    figures are drawn: test_every_figure_and_summary_written, the scenario tests.)"""
    path = gpt_log(tmp_path / "smoke.txt", steps=40, val_every=10, gpu="none", world_size=1, cpu=True)
    out = tmp_path / "out"
    assert analyze.main([str(path), "--out", str(out)]) == 0
    summary, md = json.loads((out / "summary.json").read_text()), (out / "summary.md").read_text()
    assert sorted(Path(f).name for f in summary["figures"]) == ["gpt_train_loss.png", "gpt_val_loss.png"]
    assert not (out / "gpt_step_time.png").exists() and not (out / "gpt_run_order.png").exists()
    assert len(summary["figure_notes"]) == 2
    for note in summary["figure_notes"]:
        assert f"- {note}" in md
    assert summary["figure_notes"][0].startswith("gpt_step_time.png not drawn: one group (relu2)")
    run = analyze.gpt_run(analyze.parse_log(path), 3.28, [])
    assert list(run["val_step"][:3]) == [0, 10, 20] and list(run["val_time_ms"][:2]) == [0, 0]
    assert analyze.last_untimed(run["val_time_ms"]) == 1  # step 10: the last point at 0 s
    assert analyze.last_untimed([0.0, 125.0, 250.0]) == 0 and analyze.last_untimed([]) == 0


def test_gpt_baseline_flag_picks_the_group_the_others_are_compared_with(tmp_path):
    """Three MLPs (as MLPS can hold): each non-baseline group is compared with the --baseline's group."""
    for i, (mlp, loss) in enumerate((("relu2", 3.25), ("swiglu_thin", 3.27), ("geglu", 3.26))):
        for seed in range(2):
            gpt_log(tmp_path / f"{mlp}-{seed}.txt", mlp, seed, loss + 0.001 * seed, 100.0 + i, hours(3 * seed + i))
    summary, md = run_main(tmp_path, *sorted(tmp_path.glob("*.txt")))
    rows = {r["mlp"]: r for r in summary["gpt"]}
    assert [r["mlp"] for r in summary["gpt"]][0] == "relu2"  # the baseline first
    assert rows["relu2"]["baseline"] is None and rows["swiglu_thin"]["baseline"] == rows["geglu"]["baseline"] == "relu2"
    assert rows["geglu"]["final_val_loss_change"] == pytest.approx(0.01)
    assert "Against the relu2 group" in md
    summary, md = run_main(tmp_path, *sorted(tmp_path.glob("*.txt")), flags=["--baseline", "geglu"])
    rows = {r["mlp"]: r for r in summary["gpt"]}
    assert [r["mlp"] for r in summary["gpt"]][0] == "geglu" and rows["geglu"]["baseline"] is None
    assert rows["relu2"]["baseline"] == rows["swiglu_thin"]["baseline"] == "geglu"
    assert rows["relu2"]["final_val_loss_change"] == pytest.approx(-0.01)
    assert "Against the geglu group" in md and summary["gpt_baseline"] == "geglu"


def test_runs_of_different_code_in_one_group_are_warned(tmp_path):
    gpt_log(tmp_path / "a.txt", seed=0, started=hours(0))
    gpt_log(tmp_path / "b.txt", seed=1, started=hours(1), source=FAKE_SOURCE + ["# an edit"])
    gpt_log(tmp_path / "c.txt", seed=2, started=hours(2), torch="2.12.0")
    warnings = []
    res = analyze.analyse_gpt([analyze.parse_log(tmp_path / n) for n in ("a.txt", "b.txt", "c.txt")],
                              argparse.Namespace(target_loss=3.28, target_given=False, record_alpha=0.01, resamples=10, seed=0,
                                                 baseline=None), warnings)
    assert len(res["rows"]) == 1 and res["rows"][0]["runs"] == 3  # still replicates: same config
    assert any("different software (torch)" in w for w in warnings)
    assert any("different code" in w and "2 versions" in w for w in warnings)
    assert len(res["rows"][0]["group_notes"]) == 2


def mnist_log(path, hidden=(2, 4), batch_sizes=(8, 64), lrs=(0.1, 0.01, 0.001, 0.0001), seeds=2, skip=(),
              done="done: trials:{n} time:1.0s", source=FAKE_SOURCE, level=None, collapse_lr=None, rng_seed=0,
              matched=None):
    """One train_mnist_ffn.py log of the grid given; level: {(model, hidden): accuracy}, its models
    in the order of their first key; matched:
    {model: its matched sizes, one per size of hidden} (written as --param-match does); skip: trial
    keys (model, hidden, batch_size, lr, seed) not written; lr inf trains to train_loss nan and
    chance accuracy, as the real script does; collapse_lr: GeGLU trials of that lr collapse to
    chance (finite loss); done: None for a killed run."""
    rng = np.random.default_rng(rng_seed)
    level = level or {("relu", 2): 0.60, ("geglu", 2): 0.70, ("relu", 4): 0.85, ("geglu", 4): 0.85}
    models = list(dict.fromkeys(m for m, _ in level))
    match = "".join(f" matched_hidden_{m}:{','.join(map(str, sizes))}" for m, sizes in (matched or {}).items())
    records = [f"config: models:{','.join(models)} hidden:{','.join(map(str, hidden))} "
               f"batch_sizes:{','.join(map(str, batch_sizes))} lrs:{','.join(map(repr, lrs))} "
               f"seeds:{','.join(map(str, range(seeds)))} epochs:1 train:48000 val:12000 test:10000 split_seed:42 "
               f"init_std:0.02 data:mnist param_match:{int(bool(matched))}{match} train_limit:0"]
    n = 0
    cells = [(m, h) for m in models for h in hidden] + [
        (m, h) for m, sizes in (matched or {}).items() for h in dict.fromkeys(sizes) if h not in hidden]
    for (model, h), bs, lr, seed in itertools.product(cells, batch_sizes, lrs, range(seeds)):
        if (model, h, bs, lr, seed) in skip:
            continue
        acc = level[(model, h)] - {0.1: 0.2}.get(lr, 0.0) + rng.normal(0, 0.01)
        loss = "0.3"
        if math.isinf(lr):
            acc, loss = 0.0991, "nan"
        elif model == "geglu" and lr == collapse_lr:
            acc = 0.0991
        records.append(trial_line(model, h, bs, lr, seed, acc, acc + rng.normal(0, 0.003)).replace(
            "train_loss:0.3", f"train_loss:{loss}"))
        n += 1
    if done:
        records.append(done.format(n=n))
    return write_log(path, MNIST_RUN, records, source=list(source) + ["python: 3.11.7"])


def run_main(tmp_path, *inputs, flags=()):
    out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
    assert analyze.main([str(i) for i in inputs] + ["--out", str(out), "--k", "2", "--resamples", "100",
                                                     "--bootstrap", "10", "--no-figures", *flags]) == 0
    return json.loads((out / "summary.json").read_text()), (out / "summary.md").read_text()


def test_killed_mnist_run_names_the_missing_trials_and_marks_the_cells(tmp_path):
    """Killed with the batch-size-64 group unfinished: half the grid missing, no done: record."""
    skip = {k for k in itertools.product(("relu", "geglu"), (2, 4), (64,), (0.1, 0.01, 0.001, 0.0001), range(2))}
    path = mnist_log(tmp_path / "mnist-killed.txt", skip=skip, done=None)
    summary, md = run_main(tmp_path, path)
    w = summary["warnings"]
    assert any(x.startswith("mnist-killed.txt: no done: record: the run did not finish") and "--resume" in x for x in w)
    assert "mnist-killed.txt: 32 of the 64 trials of its grid missing (in no log read): every trial with batch_size=64 (32)" in w
    assert len(summary["mnist_missing_trials"]) == 32 and {t["batch_size"] for t in summary["mnist_missing_trials"]} == {64}
    for c in summary["mnist_comparisons"]:  # every cell lost half its trials, and says so
        assert any("8 of the 16 trials of the grid missing" in n for n in c["notes"])
    assert summary["mnist"]["relu"]["2"]["notes"] == ["relu h=2: 8 of the 16 trials of the grid missing (the run did not finish)"]
    table = md.split("Verdict,")[1]
    assert "| notes |" in table and "- [1] geglu h=2: 8 of the 16 trials of the grid missing" in table
    # the claim check averages the pools: it says it rests on noted ones
    assert all(c["notes"] == ["the means include 4 of the 4 pools with notes (geglu h=2, relu h=2, "
                              "geglu h=4, relu h=4): see the pool table"] for c in summary["mnist_claim_check"])
    assert "| k | model | model mean | relu mean | study's check | notes |" in md
    # the same run finished (a complete grid with done:) has no such warning or note
    summary, md = run_main(tmp_path, mnist_log(tmp_path / "mnist-full.txt"))
    assert summary["warnings"] == [] and all(c["notes"] == [] for c in summary["mnist_comparisons"])
    # a log of param_match:0 names no matched sizes: no equal-parameter table, and summary.md says why
    assert {c["match"] for c in summary["mnist_comparisons"]} == {"hidden"}
    assert "Equal parameter count: not compared, no log names parameter-matched sizes" in md
    assert "| notes |" not in md and all(c["notes"] == [] for c in summary["mnist_claim_check"])


def test_a_third_model_gets_its_verdict_against_the_baseline(tmp_path, capsys):
    """A log of relu, geglu and swiglu (a model added to MODELS), trained with --param-match: swiglu
    gets its own verdicts against relu at equal hidden size and at the sizes the log matched."""
    level = {("relu", 2): 0.60, ("geglu", 2): 0.70, ("swiglu", 2): 0.50, ("relu", 4): 0.85, ("geglu", 4): 0.85,
             ("swiglu", 4): 0.85, ("geglu", 1): 0.45, ("swiglu", 1): 0.40}
    path = mnist_log(tmp_path / "m.txt", level=level, seeds=4, matched={"geglu": (1, 2), "swiglu": (1, 2)})
    out = tmp_path / "out"
    assert analyze.main([str(path), "--out", str(out), "--k", "2", "--resamples", "200", "--bootstrap", "10"]) == 0
    summary, md = json.loads((out / "summary.json").read_text()), (out / "summary.md").read_text()
    assert summary["warnings"] == []
    cells = {(c["model"], c["match"], c["baseline_hidden"]): c for c in summary["mnist_comparisons"]}
    assert {c["baseline"] for c in cells.values()} == {"relu"}
    assert set(cells) == {(m, match, h) for m in ("geglu", "swiglu") for match in ("hidden", "params") for h in (2, 4)}
    assert cells[("swiglu", "hidden", 2)]["verdict"] == "relu better" and cells[("swiglu", "hidden", 2)]["p_better"] < 0.2
    assert cells[("geglu", "hidden", 2)]["verdict"] == "geglu better"
    assert cells[("swiglu", "hidden", 4)]["verdict"] == "no detectable difference"
    # equal parameters: relu 2 (1588) ~ swiglu 1 (1578), relu 4 (3176) ~ swiglu 2 (3156), as the log says
    eq = cells[("swiglu", "params", 2)]
    assert (eq["model_hidden"], eq["model_params"], eq["baseline_params"]) == (1, 1578, 1588)
    assert eq["verdict"] == "relu better"  # 0.40 against 0.60
    # one Holm family over all 8 cells: the smallest p is multiplied by 8
    smallest = min(summary["mnist_comparisons"], key=lambda c: c["p_value"])
    assert smallest["p_adjusted"] == pytest.approx(min(1.0, 8 * smallest["p_value"]))
    assert "| 2 | swiglu | 2 | " in md and "P(model>relu)" in md
    verdicts = md.split("Verdict, each model against the baseline relu")[1]
    assert next(l for l in verdicts.splitlines() if l.startswith("| 2 | swiglu | 2 | ")).endswith("| relu better |")
    assert next(l for l in verdicts.splitlines() if l.startswith("| 2 | swiglu | 1 (1578) | 2 (1588) |")).endswith(
        "| relu better |")
    assert [(c["model"], c["agrees_with_claim"]) for c in summary["mnist_claim_check"]] == [("geglu", True), ("swiglu", False)]
    assert {"mnist_p_better.png", "mnist_param_match.png"} <= {Path(f).name for f in summary["figures"]}
    # Against geglu: relu and swiglu at equal hidden size; the log's sizes were matched to relu's
    # counts, not geglu's, so no equal-parameter comparison, and a warning says why
    summary, md = run_main(tmp_path, path, flags=["--baseline", "geglu"])
    assert {(c["model"], c["baseline"], c["match"]) for c in summary["mnist_comparisons"]} == {
        ("relu", "geglu", "hidden"), ("swiglu", "geglu", "hidden")}
    assert any(w.startswith("swiglu's parameter-matched sizes in the log are not matched to geglu's counts")
               for w in summary["warnings"])
    assert "P(model>geglu)" in md
    # a baseline that no log holds: one line, before any work, that names the models there are
    capsys.readouterr()
    assert analyze.main([str(path), "--out", str(tmp_path / "none"), "--baseline", "bilinear"]) == 2
    assert capsys.readouterr().err == ("analyze.py: error: --baseline bilinear: no log read holds that model; give "
                                       "one of geglu, relu, swiglu\n")
    assert not (tmp_path / "none").exists()
    # one that only the GPT logs hold leaves MNIST without comparisons, and says so
    gpt_log(tmp_path / "gpt.txt", "swiglu_thin")
    summary, _ = run_main(tmp_path, path, tmp_path / "gpt.txt", flags=["--baseline", "swiglu_thin"])
    assert summary["mnist_comparisons"] == [] and any(
        w.startswith("no swiglu_thin trials in the MNIST logs (models: relu, geglu, swiglu)") for w in summary["warnings"])


@pytest.mark.slow
def test_real_param_match_run_gets_every_model_compared(tmp_path, mnist_dir, repo_root):
    """A real `train_mnist_ffn.py --param-match` run (tiny: 512 training images): every model of its
    MODELS list is compared with relu at each hidden size, and at the sizes its config: record names
    as matched (matched_hidden_<model>, or matched_hidden for GeGLU in logs before those keys), with
    the parameter counts of its trial lines."""
    import subprocess
    import sys
    subprocess.run([sys.executable, str(repo_root / "train_mnist_ffn.py"), "--param-match", "--hidden", "2,4",
                    "--batch-sizes", "64", "--seeds", "2", "--train-limit", "512", "--workers", "1",
                    "--data-dir", str(mnist_dir), "--log-dir", str(tmp_path / "logs")], check=True, capture_output=True)
    (log,) = (tmp_path / "logs").glob("mnist-*.txt")
    config = analyze.parse_log(log)["config"]
    models = config["models"].split(",")
    matched = {m: [int(h) for h in config[key].split(",")] for m, key in analyze.matched_hidden_keys(config).items()}
    assert matched and set(matched) <= set(models)
    summary, md = run_main(tmp_path, log)
    got = {(c["model"], c["match"], c["baseline_hidden"]): c for c in summary["mnist_comparisons"]}
    want = {(m, "hidden", h) for m in models if m != "relu" for h in (2, 4)}
    want |= {(m, "params", h) for m, sizes in matched.items() if m != "relu" for h in (2, 4)}
    assert set(got) == want
    params = {(t["model"], t["hidden"]): t["params"] for t in analyze.parse_log(log)["trials"]}
    for m, sizes in matched.items():
        for h, hm in zip((2, 4), sizes):
            c = got[(m, "params", h)]
            assert (c["model_hidden"], c["model_params"], c["baseline_params"]) == (hm, params[(m, hm)], params[("relu", h)])
    assert all(c["verdict"] for c in got.values()) and "Equal parameter count" in md


def test_describe_missing_slices_then_single_trials():
    grid = set(itertools.product(("relu", "geglu"), (2, 4), (8, 64), (0.1, 0.01), range(2), (1,)))
    missing = {t for t in grid if t[0] == "geglu" and t[2] == 64} | {("relu", 2, 8, 0.1, 1, 1)}
    text = analyze.describe_missing(missing, grid)
    assert text == "every trial with model=geglu, batch_size=64 (8); model=relu hidden=2 batch_size=8 lr=0.1 seed=1"
    many = {t for t in grid if t[4] == 1 and t[2] == 8 and t[1] == 2}
    assert analyze.describe_missing(many, grid).count(";") == 3  # four single trials, no slice covers two


def test_interrupted_mnist_run_is_warned_with_the_resume_command(tmp_path):
    path = mnist_log(tmp_path / "m.txt", skip={("relu", 4, 64, 0.1, 1)},
                     done="done: trials:{n} time:1.0s new_trials:{n} status:interrupted")
    summary, _ = run_main(tmp_path, path)
    assert any(w.startswith("m.txt: the run ended with status:interrupted; `python train_mnist_ffn.py --resume")
               for w in summary["warnings"])
    assert any(w.endswith("model=relu hidden=4 batch_size=64 lr=0.1 seed=1") for w in summary["warnings"])
    notes = {(c["model_hidden"]): c["notes"] for c in summary["mnist_comparisons"]}
    assert notes[2] == [] and notes[4] == ["relu h=4: 1 of the 16 trials of the grid missing (the run did not finish)"]


def test_nonfinite_trials_kept_by_default_and_left_out_on_request(tmp_path):
    """--lrs inf trains to train_loss:nan at chance accuracy: a search that draws such a setting pays
    for it, so the trials stay in the pool (a cell of 16 trials grows to 20) unless --drop-nonfinite;
    the warning and the notes count them either way."""
    path = mnist_log(tmp_path / "m.txt", lrs=(0.1, 0.01, 0.001, 0.0001, math.inf))
    summary, md = run_main(tmp_path, path)
    assert summary["mnist"]["relu"]["2"]["trials"] == 20 and summary["settings"]["keep_nonfinite"] is True
    assert ("16 MNIST trials with a non-finite train_loss (diverged: nan or inf) kept in the pool with the accuracy "
            "they reached (a search that draws a diverging setting pays for it): geglu h=2: 4, geglu h=4: 4, "
            "relu h=2: 4, relu h=4: 4; --drop-nonfinite leaves them out") in summary["warnings"]
    assert all("4 diverged trial(s) kept" in " ".join(c["notes"]) for c in summary["mnist_comparisons"])
    # the diverged draws cost the search: best-of-2 is lower with them than without
    dropped, _ = run_main(tmp_path, path, flags=["--drop-nonfinite"])
    assert dropped["mnist"]["relu"]["2"]["trials"] == 16 and dropped["settings"]["keep_nonfinite"] is False
    assert any(w.startswith("16 MNIST trials with a non-finite train_loss (diverged: nan or inf) left out of the "
                            "pool (--drop-nonfinite)") for w in dropped["warnings"])
    assert all("4 diverged trial(s) left out" in " ".join(c["notes"]) for c in dropped["mnist_comparisons"])
    assert summary["mnist"]["relu"]["2"]["2"]["expected_test"] < dropped["mnist"]["relu"]["2"]["2"]["expected_test"]


def nonfinite_run(tmp_path, path, *flags):
    """analyze.main with figures, any warning (matplotlib's too) an error: (summary, summary.md)."""
    out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert analyze.main([str(path), "--out", str(out), "--k", "2", "--resamples", "100", "--bootstrap", "10",
                             *flags]) == 0
    return json.loads((out / "summary.json").read_text()), (out / "summary.md").read_text()


def test_every_trial_nonfinite_or_nan_is_no_traceback(tmp_path):
    """A grid whose every trial diverged (train_loss nan, chance accuracy, as --lrs inf trains): kept,
    it is a pool at chance; left out (--drop-nonfinite), or with every test_acc nan, every cell is
    missing: one warning names them, the pool table says 'missing', no figure, no traceback."""
    path = mnist_log(tmp_path / "m.txt", lrs=(math.inf,))
    summary, md = nonfinite_run(tmp_path, path)
    assert summary["mnist"]["relu"]["2"]["trials"] == 4 and summary["mnist"]["relu"]["2"]["2"]["expected_test"] < 0.2
    assert summary["mnist_empty_cells"] == [] and summary["figures"]
    summary, md = nonfinite_run(tmp_path, path, "--drop-nonfinite")
    assert "mnist" not in summary or summary["mnist"] == {}
    empty = [w for w in summary["warnings"] if "with no trial left" in w]
    assert empty == ["4 MNIST cell(s) with no trial left, shown as missing: geglu h=2: every one of its 4 trials "
                     "left out (4 diverged, --drop-nonfinite); geglu h=4: every one of its 4 trials left out (4 "
                     "diverged, --drop-nonfinite); relu h=2: every one of its 4 trials left out (4 diverged, "
                     "--drop-nonfinite); relu h=4: every one of its 4 trials left out (4 diverged, --drop-nonfinite)"]
    assert len(summary["mnist_empty_cells"]) == 4 and summary["figures"] == []
    assert "| relu | 2 |  | missing: every one of its 4 trials left out (4 diverged, --drop-nonfinite) |" in md
    assert ("Not compared with relu (every trial left out, see the pool table): relu h=2 (the baseline: no model "
            "compared at this size), relu h=4 (the baseline: no model compared at this size)\n") in md
    nan_test = tmp_path / "nan_test.txt"
    nan_test.write_text(re.sub(r"test_acc:[0-9.]+", "test_acc:nan", mnist_log(tmp_path / "m2.txt").read_text()))
    summary, md = nonfinite_run(tmp_path, nan_test)
    assert "64 MNIST trials with a nan (non-finite) accuracy left out of the pool: they cannot be ranked" in summary["warnings"]
    assert any(w.startswith("4 MNIST cell(s) with no trial left") and "(16 nan accuracy)" in w for w in summary["warnings"])


def test_one_model_missing_at_a_size_is_said_and_the_rest_compared(tmp_path):
    """GeGLU h=2 lost every trial (nan accuracies): ReLU h=2 keeps its pool, h=4 is compared, h=2 is
    named as not compared, and the figures are drawn without it."""
    path = mnist_log(tmp_path / "m.txt")
    path.write_text("\n".join(re.sub(r"val_acc:[0-9.]+", "val_acc:nan", line) if line.startswith(
        "trial: model:geglu hidden:2 ") else line for line in path.read_text().splitlines()) + "\n")
    summary, md = nonfinite_run(tmp_path, path)
    assert {c["model_hidden"] for c in summary["mnist_comparisons"]} == {4} and summary["mnist"]["relu"]["2"]["trials"] == 16
    assert summary["mnist_empty_cells"] == [dict(model="geglu", hidden=2, why="every one of its 16 trials left out "
                                                 "(16 nan accuracy)")]
    assert "Not compared with relu (every trial left out, see the pool table): geglu h=2\n" in md
    assert len([w for w in summary["warnings"] if "with no trial left" in w]) == 1 and summary["figures"]


def test_a_missing_cell_is_named_by_model_beside_a_third_model_compared(tmp_path):
    """With a third model, a size is not all-or-nothing: geglu h=2 lost its trials while swiglu h=2
    is compared with relu h=2; relu h=4 (the baseline) lost its trials, so no model is compared there."""
    level = {(m, h): 0.6 + 0.1 * i + 0.1 * j for j, h in enumerate((2, 4)) for i, m in enumerate(("relu", "geglu", "swiglu"))}
    path = mnist_log(tmp_path / "m.txt", level=level)
    lost = ("trial: model:geglu hidden:2 ", "trial: model:relu hidden:4 ")
    path.write_text("\n".join(re.sub(r"val_acc:[0-9.]+", "val_acc:nan", line) if line.startswith(lost) else line
                              for line in path.read_text().splitlines()) + "\n")
    summary, md = nonfinite_run(tmp_path, path)
    assert {(c["model"], c["model_hidden"]) for c in summary["mnist_comparisons"]} == {("swiglu", 2)}
    assert ("Not compared with relu (every trial left out, see the pool table): geglu h=2, "
            "relu h=4 (the baseline: no model compared at this size)\n") in md


@pytest.mark.slow
def test_real_run_whose_every_trial_diverges(tmp_path, mnist_dir, repo_root):
    """A real `train_mnist_ffn.py --lrs 1e30` run: every train_loss nan."""
    import subprocess
    import sys
    subprocess.run([sys.executable, str(repo_root / "train_mnist_ffn.py"), "--lrs", "1e30", "--hidden", "2",
                    "--batch-sizes", "64", "--seeds", "2", "--train-limit", "512", "--workers", "1",
                    "--data-dir", str(mnist_dir), "--log-dir", str(tmp_path / "logs")], check=True, capture_output=True)
    (log,) = (tmp_path / "logs").glob("mnist-*.txt")
    assert log.read_text().count("train_loss:nan") == 4
    summary, _ = nonfinite_run(tmp_path, log)
    assert summary["mnist"]["relu"]["2"]["trials"] == 2 and any("kept in the pool" in w for w in summary["warnings"])
    summary, md = nonfinite_run(tmp_path, log, "--drop-nonfinite")
    assert len(summary["mnist_empty_cells"]) == 2 and "missing: every one of its 2 trials left out" in md


def test_logs_of_different_grids_or_code_pooled_are_warned(tmp_path):
    a = mnist_log(tmp_path / "a.txt", hidden=(2,))
    b = mnist_log(tmp_path / "b.txt", hidden=(4,))  # another hidden size only: widens the pool, no warning
    summary, _ = run_main(tmp_path, a, b)
    assert summary["warnings"] == []
    c = mnist_log(tmp_path / "c.txt", hidden=(4,), lrs=(0.1, 0.01), source=FAKE_SOURCE + ["# edited"])
    summary, md = run_main(tmp_path, a, c)
    assert any(w.startswith("MNIST logs of different grids pooled (a.txt, c.txt): their config: records differ in "
                            "hidden, lrs") for w in summary["warnings"])
    assert any(w.startswith("MNIST logs of different code pooled (a.txt, c.txt)") for w in summary["warnings"])
    # each cell comes from one log, so no cell is mixed; pooling a and c in one cell is
    d = mnist_log(tmp_path / "d.txt", hidden=(2,), seeds=3, source=FAKE_SOURCE + ["# edited"], rng_seed=1)
    summary, _ = run_main(tmp_path, a, d)
    assert all(any("trials from logs of different grid settings or code" in n for n in c["notes"])
               for c in summary["mnist_comparisons"])


def test_mean_and_p_that_disagree_get_their_explanation(tmp_path):
    """GeGLU beats ReLU in most pairs of searches, but a quarter of its trials (lr 0.1) collapse
    to chance: with k = 2 both draws collapse 1 time in 16, which pulls GeGLU's mean below ReLU's
    while P(GeGLU > ReLU) stays near 15/16."""
    level = {("relu", 2): 0.90, ("geglu", 2): 0.94, ("relu", 4): 0.92, ("geglu", 4): 0.95}
    path = mnist_log(tmp_path / "m.txt", level=level, collapse_lr=0.1, seeds=4)
    summary, md = run_main(tmp_path, path)
    c = next(c for c in summary["mnist_comparisons"] if c["model_hidden"] == 2)
    assert c["model_expected_test"] < c["baseline_expected_test"] and c["p_better"] > 0.85
    assert c["model_p_collapse"] == pytest.approx(1 / 16) and c["baseline_p_collapse"] == 0
    assert c["model_median_test"] > c["baseline_median_test"]
    note = c["notes"][0]
    assert note.startswith("k=2, geglu h=2 vs relu h=2: geglu's search ends higher in") and "probability 6.2% against 0.0%" in note
    assert note in md  # beside the table, as its footnote
    # and under the figure that shows the means (mnist_k2.png), in short, from the cells as the figure
    # gets them: run_main's analysis again (summary.json leaves out their mean_against_wins)
    args = argparse.Namespace(seed=0, estimator="dodge", keep_nonfinite=False, k=[2], bootstrap=10, resamples=100,
                              alpha=0.05, baseline=None)
    res = analyze.analyse_mnist([analyze.parse_log(path)], args, [])
    cells = res["comparisons"]
    assert [(c["model_hidden"], c["notes"]) for c in cells] == [(c["model_hidden"], c["notes"]) for c in summary["mnist_comparisons"]]
    c = next(c for c in cells if c["model_hidden"] == 2)
    assert c["mean_against_wins"] == "model"
    caption = analyze.mean_against_wins_caption(c)
    assert caption.startswith("geglu vs relu, h=2: the verdict is geglu better (P = 0.9") and "in 6.2% of searches (vs 0.0%)" in caption
    for cell in cells:  # a caption exactly where the table has the note
        explained = any(n.startswith(f"k={cell['k']}, ") for n in cell["notes"])
        assert (analyze.mean_against_wins_caption(cell) is not None) == explained
    # where mean and verdict agree, neither note nor caption
    agree = dict(c, model_expected_test=c["baseline_expected_test"] + 0.01)
    assert analyze.mean_against_wins(agree, res["pools"][("geglu", 2)], res["pools"][("relu", 2)], True) is None
    assert agree["mean_against_wins"] is None and analyze.mean_against_wins_caption(agree) is None
    # mean + sd of such a lopsided outcome passes accuracy 1; the bars' percentile interval cannot
    s = summary["mnist"]["geglu"]["2"]["2"]
    assert s["expected_test"] + s["expected_test_sd"] > 1
    assert 0 <= s["expected_test_p16"] <= s["expected_test_p84"] <= 1


def test_weighted_quantiles_hand_computed():
    x, w = np.array([0.3, 0.1, 0.2, 0.9]), np.array([0.1, 0.05, 0.05, 0.8])  # CDF 0.05, 0.1, 0.2, 1
    assert [float(q) for q in analyze.weighted_quantiles(w, x, [0.05, 0.16, 0.5, 0.84])] == [0.1, 0.3, 0.9, 0.9]
    lo, hi = analyze.weighted_quantiles(np.array([[0.5, 0.5, 0, 0], [0, 0, 0, 1.0]]), x, [0.16, 0.84])
    assert list(lo) == [0.1, 0.9] and list(hi) == [0.3, 0.9]  # one answer per row of weights


# ---------------------------------------------------------------------------------------------
# Tang et al.'s expected best of k distinct trials

def brute_force_weights_distinct(val, k, counts=None):
    """Enumerate every set of k distinct trials (a trial resampled c times counts as c distinct
    copies); keep the best by val, a uniformly random one of the tied; P(trial j is kept)."""
    counts = np.ones(len(val), int) if counts is None else np.asarray(counts, int)
    copies = [j for j in range(len(val)) for _ in range(counts[j])]
    w, subsets = np.zeros(len(val)), list(itertools.combinations(range(len(copies)), k))
    for subset in subsets:
        drawn = [copies[i] for i in subset]
        best = max(val[j] for j in drawn)
        tied = [j for j in drawn if val[j] == best]
        for j in tied:
            w[j] += 1 / len(subsets) / len(tied)
    return w


@pytest.mark.parametrize("val,test", POOLS)
@pytest.mark.parametrize("k", [1, 2, 3, 4, 6])
def test_expected_best_of_distinct_k_matches_brute_force(val, test, k):
    val = np.array(val)
    w = analyze.selection_weights(val, k, replace=False)
    if k > len(val):  # k distinct trials of a smaller pool do not exist
        assert np.all(np.isnan(w))
        return
    np.testing.assert_allclose(w, brute_force_weights_distinct(val, k), atol=1e-12)
    if k == len(val):  # every trial drawn: the best is certain
        assert analyze.weighted_mean_sd(w, val)[0] == pytest.approx(val.max())


def test_distinct_k_with_resampled_counts_and_rows_match_brute_force():
    val = np.array(POOLS[0][0])
    counts = np.array([[2, 0, 1, 3, 1], [0, 0, 0, 1, 4], [1, 1, 1, 1, 1]])
    for k in (1, 2, 3):
        w = analyze.selection_weights(val, k, counts, replace=False)
        for row, c in zip(w, counts):
            np.testing.assert_allclose(row, brute_force_weights_distinct(val, k, c), atol=1e-12)
    rng = np.random.default_rng(2)
    rows = rng.integers(0, 4, (6, 7)) / 4  # many ties
    ws = analyze.selection_weights_rows(rows, [1, 3, 7], replace=False)
    for i, k in enumerate([1, 3, 7]):
        for r in range(6):
            np.testing.assert_allclose(ws[i, r], analyze.selection_weights(rows[r], k, replace=False), atol=1e-12)


def test_tang_is_unbiased_and_dodge_biased_low():
    """Pools of N i.i.d. draws from a small distribution, all enumerated with their probabilities:
    averaged over the pools, the without-replacement estimate of the expected best of k equals the
    true expected maximum of k draws; Dodge's with-replacement estimate falls short."""
    values, probs, n = np.array([0.2, 0.5, 0.9]), np.array([0.5, 0.3, 0.2]), 4
    for k in (2, 3):
        truth = sum(np.prod(probs[list(d)]) * values[list(d)].max()
                    for d in itertools.product(range(3), repeat=k))
        tang = dodge = 0.0
        for pool in itertools.product(range(3), repeat=n):
            p, v = np.prod(probs[list(pool)]), values[list(pool)]
            tang += p * analyze.weighted_mean_sd(analyze.selection_weights(v, k, replace=False), v)[0]
            dodge += p * analyze.weighted_mean_sd(analyze.selection_weights(v, k), v)[0]
        assert tang == pytest.approx(truth, abs=1e-12)
        assert dodge < truth - 0.005


def test_bootstrap_without_replacement_agrees_with_the_exact_formula():
    rng = np.random.default_rng(4)
    val = np.round(rng.uniform(0.8, 0.9, 12), 2)
    test = val + rng.normal(0, 0.01, 12)
    w = analyze.selection_weights(val, 5, replace=False)
    mean, sd = analyze.weighted_mean_sd(w, test)
    boot = analyze.bootstrap_best_of_k(val, test, 5, 20000, np.random.default_rng(0), replace=False)
    assert abs(boot.mean() - mean) < 4 * sd / math.sqrt(20000)
    assert np.all(np.isnan(analyze.bootstrap_best_of_k(val, test, 13, 5, rng, replace=False)))


def test_estimator_flag_reaches_the_tables_and_figures(tmp_path):
    path = mnist_log(tmp_path / "m.txt")
    summary, md = run_main(tmp_path, path, flags=["--estimator", "tang"])
    dodge, _ = run_main(tmp_path, path)
    assert summary["settings"]["estimator"] == "tang" and "Tang et al., k distinct trials, unbiased" in md
    e_tang, e_dodge = summary["mnist"]["geglu"]["2"]["2"]["expected_val"], dodge["mnist"]["geglu"]["2"]["2"]["expected_val"]
    assert e_tang > e_dodge  # k distinct trials: never the same trial twice, so a better best
    assert summary["mnist"]["geglu"]["2"]["curve"]["expected_val"][-1] == pytest.approx(
        max(float(l.split("val_acc:")[1].split()[0]) for l in path.read_text().splitlines()
            if l.startswith("trial: model:geglu hidden:2 ")))  # k = N: the best trial, surely
    for c in summary["mnist_comparisons"]:
        assert 0 <= c["p_better"] <= 1 and c["p_value"] is not None


# ---------------------------------------------------------------------------------------------
# The record rule, the runs test, ticks

def test_one_sided_t_test_and_runs_needed_against_a_t_table():
    # t table, one-sided 1%: 2.602 at df 15, 2.624 at df 14
    assert analyze.t_below_p(-2.602, 15) == pytest.approx(0.01, abs=2e-4)
    assert analyze.t_below_p(2.602, 15) == pytest.approx(0.99, abs=2e-4)
    t, p = analyze.one_sample_below([3.2770, 3.2790, 3.2780], 3.28)  # mean 3.278, sd 0.001, n 3
    assert t == pytest.approx(-0.002 / (0.001 / math.sqrt(3))) and p == pytest.approx(analyze.t_below_p(t, 2))
    # mean 3.279, sd 0.0015: t = -(2/3) sqrt(n); n = 15 gives 2.582 < 2.624 (fails), 16 gives 2.667 > 2.602
    assert analyze.runs_needed(3.279, 0.0015, 3.28, 0.01) == 16
    assert analyze.runs_needed(3.281, 0.0015, 3.28, 0.01) is None  # above the target: no n will do
    assert analyze.runs_needed(3.2799999, 0.002, 3.28, 0.01) is None  # beyond MAX_RUNS_NEEDED
    rule = analyze.record_rule([3.2790 + 0.0015 * d for d in (-1, 0, 1)], 3.28, 0.01)
    assert rule["verdict"] == "not yet" and rule["runs_needed"] == 16 and rule["more_runs_needed"] == 13
    assert analyze.record_rule([3.2795, 3.2805], 3.28, 0.01)["verdict"] == "fails: mean not below 3.28"
    assert analyze.record_rule([3.27, 3.27], 3.28, 0.01)["verdict"] == "passes"  # no spread: t = -inf


def test_t_quantile_against_a_t_table():
    q = analyze.t_quantile
    assert q(0.975, 9) == pytest.approx(2.262, abs=5e-4) and q(0.975, 1) == pytest.approx(12.706, abs=5e-4)
    assert q(0.995, 4) == pytest.approx(4.604, abs=5e-4) and q(0.975, 1e7) == pytest.approx(1.960, abs=5e-4)
    assert q(0.025, 9) == pytest.approx(-2.262, abs=5e-4) and q(0.5, 3.3) == pytest.approx(0.0, abs=1e-6)


def curve_run(step_ms, offset, steps=1000, val_every=100):
    """A finished run whose validation loss falls linearly with the step, 5 - 0.002 step, plus
    offset; train_time leaves out the first 10 steps."""
    step = np.arange(0, steps + 1, val_every)
    return dict(val_step=step, val_loss=5 - 0.002 * step + offset, val_time_ms=np.maximum(step - 10, 0) * step_ms,
                val_tokens=step * 524288.0)


def test_loss_difference_at_equal_step_and_time_by_hand():
    """Two group runs at 95 ms/step, 0.004 above three baseline runs at 100 ms/step (seed offsets
    +-0.001). At equal step the difference is 0.004 everywhere, with the Welch interval of
    {0.003, 0.005} against {-0.001, 0, 0.001}; at equal time T (s) the faster group is
    (T / 0.095 - T / 0.1) steps ahead, 0.002 loss each: 0.004 - 0.002 T (1/0.095 - 1/0.1)."""
    runs = [curve_run(95.0, 0.004 + d) for d in (-0.001, 0.001)]
    base = [curve_run(100.0, d) for d in (-0.001, 0.0, 0.001)]
    d = analyze.loss_difference(runs, base, "step")
    np.testing.assert_array_equal(d["x"], np.arange(0, 1001, 100))
    np.testing.assert_allclose(d["diff"], 0.004, atol=1e-12)
    vg, vb = 2e-6 / 2, 1e-6 / 3  # sample variances over n
    df = (vg + vb) ** 2 / (vg ** 2 / 1 + vb ** 2 / 2)  # 1.684
    half = d["hi"] - d["diff"]
    np.testing.assert_allclose(half, half[0], rtol=1e-9)
    assert analyze.t_below_p(half[0] / math.sqrt(vg + vb), df) == pytest.approx(0.975, abs=1e-9)
    assert 4.303 * math.sqrt(vg + vb) < half[0] < 12.706 * math.sqrt(vg + vb)  # between df 2 and df 1
    np.testing.assert_allclose(d["runs"], [[0.003] * 11, [0.005] * 11], atol=1e-12)
    np.testing.assert_allclose(d["base_runs"][0], -0.001, atol=1e-12)
    t = analyze.loss_difference(runs, base, "time")
    assert t["x"][-1] == pytest.approx(990 * 0.095)  # the grid ends where the shortest run does
    late = t["x"] >= 9.0  # from the baseline's first timed validation on, every curve is linear in time
    expected = 0.004 - 0.002 * t["x"] * (1 / 0.095 - 1 / 0.1)
    np.testing.assert_allclose(t["diff"][late], expected[late], atol=1e-9)
    assert t["diff"][-1] == pytest.approx(0.004 - 0.002 * 94.05 * (1 / 0.095 - 1 / 0.1))
    one = analyze.loss_difference(runs[:1], base, "step")  # one run: the difference, no interval
    assert np.all(np.isnan(one["lo"])) and one["diff"][-1] == pytest.approx(0.003)


def test_runs_test_matches_enumeration():
    for order in ("bbbccc", "bcbcbc", "bbcbcc", "bbbbcc", "bcccccb", "cbbbbbbbbc"):
        runs = lambda o: 1 + sum(x != y for x, y in zip(o, o[1:]))
        orders = set(itertools.permutations(order))
        expected = sum(runs(o) <= runs(order) for o in orders) / len(orders)
        assert analyze.runs_test_p(order) == pytest.approx(expected)
    assert analyze.runs_test_p("bbbcccbbbccc") == pytest.approx(62 / 924)  # 2 + 10 + 50 orders with <= 4 runs


def order_verdict(order):
    """interleaving() on runs started one hour apart in the given order of c and b."""
    run = lambda h: dict(started=analyze.parse_time(hours(h)))
    return analyze.interleaving([run(i) for i, x in enumerate(order) if x == "c"],
                                [run(i) for i, x in enumerate(order) if x == "b"])


def test_interleaving_verdicts_and_the_drift_they_let_in():
    # the position gap (mean start position of c minus b) is what a steady drift multiplies
    for order, verdict, gap in [
            ("bcbcbc", "interleaved", 1.0),                     # A B A B
            ("bcbcb", "interleaved", 0.0),                      # one run more on one side
            ("bccbbccbbccb", "interleaved", 0.0),               # A B B A: no linear drift at all
            ("bcbcbbcbc", "interleaved", 0.9),                  # A B A B with one run missing
            ("bbbccc", "not interleaved: one group ran first", 3.0),
            # 7 + 7 runs, 4 blocks: (2 + 12 + 72) / C(14, 7) = 86 / 3432 orders have as few
            ("bbbbbbcbcccccc", "not interleaved: the runs come in blocks (runs test p=0.025)", 76 / 7 - 29 / 7),
            # blocks of three: the runs test of 12 runs cannot see them (p = 62/924 = 0.067), the gap does
            ("bbbcccbbbccc", "not interleaved: this group started 3.0 runs after its baseline on average", 3.0),
            ("cccbbbcccbbb", "not interleaved: this group started 3.0 runs before its baseline on average", -3.0),
            # unequal counts: alternating all the counts allow still leaves a large gap, and the gap decides
            ("bbbbbbbbcb", "not interleaved: this group started 3.9 runs after its baseline on average", 9 - 46 / 9),
            ("bcbbbbbbbb", "not interleaved: this group started 3.9 runs before its baseline on average", 2 - 53 / 9),
            ("bbbbbcb", "not interleaved: this group started 2.3 runs after its baseline on average", 6 - 22 / 6)]:
        v = order_verdict(order)
        assert (v["verdict"], v["order"]) == (verdict, order)
        assert v["position_gap"] == pytest.approx(gap, abs=0.05)
        assert v["interleaved"] is (verdict == "interleaved")
    # the gap is what drift does: step_avg = 100 + 0.5 ms x position, the same for both MLPs
    order = "bbbcccbbbccc"
    drift = lambda x: np.mean([100 + 0.5 * i for i, y in enumerate(order, 1) if y == x])
    assert drift("c") - drift("b") == pytest.approx(0.5 * order_verdict(order)["position_gap"])
    run = lambda h: dict(started=analyze.parse_time(hours(h)))
    assert analyze.interleaving([run(1)], [run(1)])["verdict"] == "unknown: runs share a start time"


def test_step_time_bar_labels_drop_the_decimal_only_for_memory_in_the_thousands():
    assert analyze.step_time_bar_label("step_avg_ms", 2344.31, 3) == "2344.3\nn=3"
    assert analyze.step_time_bar_label("step_avg_ms", 99.96, 1) == "100.0\nn=1"
    assert analyze.step_time_bar_label("peak_memory_mib", 31026.4, 3) == "31026\nn=3"
    assert analyze.step_time_bar_label("peak_memory_mib", 346.04, 1, " rss") == "346.0 rss\nn=1"
    assert analyze.step_time_bar_label("step_avg_ms", math.nan, 0) == "no finished run"
    assert analyze.step_time_bar_label("peak_memory_mib", math.nan, 2) == "not logged"


def test_loss_ticks_label_the_final_losses():
    for lo, hi in ((3.185, 11.3), (3.09, 12.6), (3.25, 3.6), (1.8, 6.5), (0.05, 2.3), (3.27, 3.28)):
        ticks = analyze.loss_ticks(lo, hi)
        assert 2 <= len(ticks) <= 11 and all(lo <= t <= hi for t in ticks) and ticks == sorted(ticks)
        assert ticks[0] <= lo * (hi / lo) ** 0.12  # one near the bottom, where the final losses are
    assert analyze.loss_ticks(3.185, 11.3) == [3.5, 4.0, 4.5, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    assert analyze.loss_ticks(3.25, 3.6)[:3] == [3.25, 3.3, 3.35]


def test_bad_flag_values_get_one_line(tmp_path, capsys):
    too_big = [["--k", str(10**20)], ["--k", f"2,{10**13}"], ["--k", str(10**6 + 1)], ["--bootstrap", str(10**20)],
               ["--resamples", str(10**20)], ["--resamples", str(10**13)]]  # above MAX_COUNT, refused as parsed
    for flags in [["--alpha", "0"], ["--alpha", "nan"], ["--record-alpha", "1.5"], ["--target-loss", "inf"],
                  ["--target-loss", "-1"], ["--estimator", "median"], ["--k", "0"]] + too_big:
        with pytest.raises(SystemExit) as e:
            analyze.main([str(tmp_path)] + flags)
        err = capsys.readouterr().err
        assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("analyze.py: error: ")
        assert flags[0] in err and ("at most 1000000" in err) == (flags in too_big), err
    # values it can only find out about while it runs: a --out it cannot make, sizes beyond the memory
    # (each within its maximum: 10**6 searches of 10**6 draws are 8 TB of trial indices)
    synthetic_mnist(tmp_path / "mnist.txt")
    (tmp_path / "a_file").write_text("not a folder")
    huge = [(["--k", str(10**6), "--bootstrap", str(10**6)], f"--k {10**6} --bootstrap {10**6} --resamples 2000 "
             f"on these logs is about 6.0e+12 array elements of resampling, above the 2e+09"),
            (["--bootstrap", str(10**6), "--resamples", str(10**6)], "--k 2,4,8 --bootstrap 1000000 --resamples 1000000 "
             "on these logs is about 9.3e+09 array elements")]  # each flag within its maximum, together hours
    for flags, words in [(["--out", str(tmp_path / "a_file" / "plots")], "cannot make that folder")] + huge:
        out = ["--out", str(tmp_path / "plots")] if flags[0] != "--out" else []
        assert analyze.main([str(tmp_path / "mnist.txt"), "--no-figures"] + out + flags) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and err.startswith("analyze.py: error: ") and words in err, err
        assert not (tmp_path / "plots").exists()


# ---------------------------------------------------------------------------------------------
# Inputs that cannot carry a confident answer (issue 21)

def test_runs_that_share_a_seed_are_one_measurement(tmp_path, capsys):
    """The same command run twice (seed 0 both times, same loss) used to give sd 0, t = -inf, p = 0
    and 'passes'. It is one measurement: n = 1, and nothing that needs a spread is given."""
    gpt_log(tmp_path / "a.txt", seed=0, final_loss=3.27, started=hours(0))
    gpt_log(tmp_path / "b.txt", seed=0, final_loss=3.27, started=hours(1))
    summary, md = run_main(tmp_path, tmp_path / "a.txt", tmp_path / "b.txt")
    (row,) = summary["gpt"]
    assert row["runs"] == 1 and row["repeated_seed_runs"] == 1 and row["final_val_loss_sd"] is None
    rule = row["record_rule"]
    assert rule["verdict"] == analyze.FEWER_THAN_2 and rule["t"] is None and rule["p_value"] is None
    assert rule["runs_needed"] is None
    assert ("relu2: 2 runs share seed 0 and every setting (a.txt, b.txt): one measurement, not 2 replicates; only "
            "a.txt counts (rule: a group's runs with the same seed: in config: are one run, whatever their host, id, "
            "keep_last, log_dir, resume, save_every, save_final, started)") in summary["warnings"]
    assert [r["repeat_of"] for r in summary["gpt_runs"]] == [None, "a.txt"]
    assert "| relu2 | 1 (+1 repeating a seed) |" in md
    assert f"| relu2 | 1 | 3.2700 ± {analyze.FEWER_THAN_2} | " + " | ".join([analyze.FEWER_THAN_2] * 5) + " |" in md
    # a second seed makes two independent runs: the rule is tested again
    gpt_log(tmp_path / "c.txt", seed=1, final_loss=3.272, started=hours(2))
    summary, _ = run_main(tmp_path, tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt")
    rule = summary["gpt"][0]["record_rule"]
    assert summary["gpt"][0]["runs"] == rule["n"] == 2 and rule["t"] == pytest.approx(-9.0)  # mean 3.271, se 0.001


def test_welch_p_needs_two_seeds_a_side(tmp_path):
    """swiglu_thin run twice with seed 0 against three relu2 seeds: one measurement against three,
    so the Welch p cells say why there is none."""
    for i in range(3):
        gpt_log(tmp_path / f"r{i}.txt", "relu2", i, 3.25 + 0.001 * i, 100.0 + i, hours(2 * i))
    for i in range(2):
        gpt_log(tmp_path / f"s{i}.txt", "swiglu_thin", 0, 3.27, 92.0 + i, hours(2 * i + 1))
    summary, md = run_main(tmp_path, tmp_path)
    swiglu = next(g for g in summary["gpt"] if g["mlp"] == "swiglu_thin")
    assert swiglu["runs"] == 1 and swiglu["baseline_runs"] == 3 and swiglu["step_avg_p_value"] is None
    line = next(l for l in md.splitlines() if l.startswith("| swiglu_thin | relu2 | -"))
    assert line.split(" | ")[3] == line.split(" | ")[5] == analyze.FEWER_THAN_2


def test_target_only_on_fineweb_tokens(tmp_path):
    """The synthetic shards of data/make_tiny_shards.py (named fineweb_*.bin, vocab 512): no 3.28
    target, unless --target-loss gives one; FineWeb's files keep it."""
    tiny = gpt_log(tmp_path / "tiny.txt", final_loss=3.0)
    tiny.write_text(tiny.read_text().replace("vocab_size:50304", "vocab_size:512").replace("data/fineweb10B/", "data/tiny/"))
    gpt_log(tmp_path / "tiny2.txt", seed=1, final_loss=3.01, started=hours(1)).write_text(
        (tmp_path / "tiny2.txt").read_text().replace("vocab_size:50304", "vocab_size:512").replace("data/fineweb10B/",
                                                                                                   "data/tiny/"))
    summary, md = run_main(tmp_path, tiny, tmp_path / "tiny2.txt")
    (row,) = summary["gpt"]
    assert row["target_loss"] is None and row["time_to_target_ms"] is None and row["record_rule"]["verdict"] == analyze.NO_TARGET
    assert "| n/a (no target for this data) | n/a (no target for this data) | [1] |" in md
    assert "- [1] relu2: not FineWeb GPT-2 tokens (train_files:data/tiny/fineweb_train_*.bin vocab_size:512): no target " \
           "loss; --target-loss sets one" in md
    assert "| relu2 | 2 | 3.0050 ± 0.0071 | " + " | ".join([analyze.NO_TARGET] * 5) + " |" in md
    summary, md = run_main(tmp_path, tiny, tmp_path / "tiny2.txt", flags=["--target-loss", "3.28"])
    (row,) = summary["gpt"]
    assert row["target_loss"] == 3.28 and row["time_to_target_ms"] > 0 and row["record_rule"]["verdict"] == "passes"
    fineweb = gpt_log(tmp_path / "fw.txt", final_loss=3.0)
    summary, _ = run_main(tmp_path, fineweb)
    assert summary["gpt"][0]["target_loss"] == 3.28 and summary["gpt"][0]["time_to_target_ms"] > 0


def test_a_value_that_is_not_a_number_is_named(tmp_path, capsys):
    path = mnist_log(tmp_path / "m.txt")
    lines = path.read_text().splitlines()
    i = next(n for n, l in enumerate(lines) if l.startswith("trial:") and n > lines.index(RULE, 2))  # not the header's
    lines[i] = re.sub(r"val_acc:[0-9.]+", "val_acc:abc", lines[i])
    path.write_text("\n".join(lines) + "\n")
    summary, _ = run_main(tmp_path, path)
    assert any(w.startswith(f"{path}: skipped 1 record line(s) that do not parse: line {i + 1}: val_acc: 'abc' is "
                            f"not a number: 'trial: model:relu hidden:2") for w in summary["warnings"])
    only_bad = tmp_path / "bad" / "m.txt"
    only_bad.parent.mkdir()
    capsys.readouterr()
    only_bad.write_text("\n".join(l for n, l in enumerate(lines) if not l.startswith("trial:") or n <= i) + "\n")
    assert analyze.main([str(only_bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "run a training script first" not in err
    assert f"line {i + 1}: val_acc: 'abc' is not a number" in err and err.strip().endswith("fix or remove the lines named")


def unwritable_folder(path):
    """A folder that refuses new files: immutable (chattr +i) where that works (as root), else
    without write permission (which root would ignore); None when neither can be made here."""
    import subprocess
    path.mkdir()
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        path.chmod(0o555)
    try:
        (path / "probe").write_text("")
    except OSError:
        return path
    return None


def test_out_that_refuses_files_is_one_line(tmp_path, capsys):
    import subprocess
    log = gpt_log(tmp_path / "g.txt")
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    cases = [(a_file, "is a file, not a folder; give a folder"),
             (a_file / "sub", "cannot make that folder")]
    locked = unwritable_folder(tmp_path / "locked")
    if locked:
        cases.append((locked, "cannot write files there"))
    try:
        for out, words in cases:
            assert analyze.main([str(log), "--out", str(out), "--no-figures"]) == 2
            err = capsys.readouterr().err
            assert len(err.strip().splitlines()) == 1 and err.startswith(f"analyze.py: error: --out {out}") and words in err
    finally:
        subprocess.run(["chattr", "-i", str(tmp_path / "locked")], capture_output=True)
        (tmp_path / "locked").chmod(0o755)
    if not locked:
        pytest.skip("no folder that refuses files could be made here (chattr +i and chmod both ignored)")


def test_gpt_log_with_nan_losses_and_its_done_record(tmp_path):
    """A run whose last validation loss is nan but which wrote its done: record is said to have one."""
    path = gpt_log(tmp_path / "n.txt")
    text = re.sub(r"step:1000/1000 val_loss:[0-9.]+", "step:1000/1000 val_loss:nan", path.read_text())
    path.write_text(re.sub(r"final_val_loss:[0-9.]+", "final_val_loss:nan", text))
    summary, _ = run_main(tmp_path, path)
    assert not any("no done: record" in w for w in summary["warnings"])
    assert any(w.startswith("n.txt: its done: record is there, but its last validation loss is nan at step 1000 "
                            "(diverged?); left out of its group's numbers") for w in summary["warnings"])
    assert summary["gpt_runs"][0]["ended"] == "non-finite validation loss at step 1000/1000"


def test_log_killed_at_step_0_draws_without_warnings(tmp_path):
    path = gpt_log(tmp_path / "k.txt", kill_at=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert analyze.main([str(path), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "gpt_train_loss.png").exists()


@pytest.mark.slow
def test_real_smoke_runs_repeated_are_one_measurement_without_target(tmp_path, repo_root):
    """The README's CPU smoke run, twice with the same command: one measurement, no 3.28 target."""
    import subprocess
    import sys
    subprocess.run([sys.executable, str(repo_root / "data" / "make_tiny_shards.py"), "--out", str(tmp_path / "tiny")],
                   check=True, capture_output=True)
    command = [sys.executable, str(repo_root / "train_gpt.py"), "--train-files", str(tmp_path / "tiny" / "fineweb_train_*.bin"),
               "--val-files", str(tmp_path / "tiny" / "fineweb_val_*.bin"), "--vocab-size", "512", "--n-layer", "2",
               "--n-embd", "64", "--n-head", "2", "--seq-len", "64", "--batch-size", "16", "--device-batch-size", "16",
               "--num-iterations", "20", "--val-every", "10", "--val-tokens", "4096", "--no-compile", "--device", "cpu",
               "--log-dir", str(tmp_path / "logs")]
    for _ in range(2):
        subprocess.run(command, check=True, capture_output=True)
    summary, md = run_main(tmp_path, tmp_path / "logs")
    (row,) = summary["gpt"]
    assert row["runs"] == 1 and row["repeated_seed_runs"] == 1 and row["record_rule"]["verdict"] == analyze.NO_TARGET
    assert row["time_to_target_ms"] is None and "time to 3.28" in md and analyze.NO_TARGET in md
    assert any("2 runs share seed 0 and every setting" in w for w in summary["warnings"])
