"""Tests of analyze.py: the statistics against brute force and hand-computed values, the parser
against the log contract and the real record's step lines, and whole runs on synthetic logs with
a known answer."""
import itertools
import json
import math
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


def write_log(path, run_line, records, source=FAKE_SOURCE):
    path.write_text("\n".join([run_line, RULE, *source, RULE, *records]) + "\n")
    return path


def trial_line(model, hidden, bs, lr, seed, val, test, epochs=1):
    params = analyze.PARAMS_PER_HIDDEN[model] * hidden
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
    comps = [dict(p_geglu_better=0.8, p_value=0.001), dict(p_geglu_better=0.2, p_value=0.001),
             dict(p_geglu_better=0.6, p_value=0.02), dict(p_geglu_better=0.9, p_value=math.nan)]
    analyze.add_verdicts(comps, 0.05)
    # adjusted: 0.003, 0.003, 0.02 (x1 after the two smaller ones), nan
    assert [c["verdict"] for c in comps][:3] == ["GeGLU better", "ReLU better", "GeGLU better"]
    assert comps[2]["p_adjusted"] == pytest.approx(0.02)
    assert comps[3]["verdict"].startswith("not testable")  # nan p: no test was possible
    comps = [dict(p_geglu_better=0.7, p_value=0.02), dict(p_geglu_better=0.7, p_value=0.03),
             dict(p_geglu_better=0.7, p_value=0.04)]
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
                                  test_acc=0.92510, epochs=1, params=25248.0)]  # not the header's fake trial
    log = analyze.parse_log(write_log(tmp_path / "g.txt", GPT_RUN, CONTRACT_GPT))
    assert log["kind"] == "gpt" and log["run"]["world_size"] == "8" and log["n_bad"] == 0
    assert log["config"]["mlp"] == "swiglu_thin" and log["config"]["train_files"].endswith("*.bin")
    assert len(log["steps"]) == 3  # not the header's fake step line
    first, second, last = log["steps"]
    assert first["val_loss"] == 10.8258 and first["train_loss"] is None and math.isnan(first["step_avg_ms"])
    assert second["train_loss"] == 10.8258 and second["tokens"] == 524288
    assert (last["step"], last["total"], last["train_time_ms"], last["step_avg_ms"]) == (1500, 1500, 3286000, 2344.31)
    assert log["peak"] == dict(allocated_mib=31026.0, reserved_mib=31990.0)
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
             f"seeds:{','.join(map(str, range(seeds)))} epochs:1 param_match:1"]
    for (model, hidden), acc in level.items():
        for bs, lr, seed in itertools.product((8, 64), lr_loss, range(seeds)):
            a = acc + lr_loss[lr] + rng.normal(0, 0.01)
            lines.append(trial_line(model, hidden, bs, lr, seed, a + rng.normal(0, 0.003), a + rng.normal(0, 0.003)))
    lines.append("done: trials:384 time:1.0s")
    return write_log(path, MNIST_RUN, lines)


def synthetic_gpt(path, mlp, seed, step_avg, final_loss, peak, done=True):
    hidden = 3072 if mlp == "relu2" else 1536
    config = (f"config: mlp:{mlp} n_layer:12 n_head:6 n_embd:768 mlp_hidden:{hidden} params:{hidden * 1000} "
              f"seq_len:1024 batch_size:512 num_iterations:1000 val_every:100 seed:{seed} compile:1 "
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
    verdicts = {(c["k"], c["hidden"]): c for c in summary["mnist_comparisons"]}
    assert set(verdicts) == {(k, h) for k in (2, 4, 8) for h in (2, 16)}
    for k in (2, 4, 8):
        assert verdicts[(k, 2)]["verdict"] == "GeGLU better" and verdicts[(k, 2)]["p_geglu_better"] > 0.7
        assert verdicts[(k, 16)]["verdict"] == "no detectable difference"
        lo, hi = verdicts[(k, 16)]["ci95"]
        assert lo < 0.5 < hi
        assert verdicts[(k, 2)]["p_adjusted"] >= verdicts[(k, 2)]["p_value"]
    assert [c["agrees_with_claim"] for c in summary["mnist_claim_check"]] == [True, True, True]
    pairs = {(c["relu_hidden"], c["geglu_hidden"]) for c in summary["mnist_param_match_comparisons"]}
    assert pairs == {(2, 1), (16, 8)}
    for c in summary["mnist_param_match_comparisons"]:
        assert c["verdict"] == "ReLU better"  # GeGLU at half the width is clearly worse here
    for model, hiddens in (("geglu", {"1", "2", "8", "16"}), ("relu", {"2", "16"})):
        assert set(h for h in summary["mnist"][model]) == hiddens
        for h in hiddens:
            entry = summary["mnist"][model][h]
            assert entry["trials"] == 64 and entry["seeds"] == 8
            assert entry["curve"]["k"] == list(range(1, 65))
            for k in ("2", "4", "8"):
                s = entry[k]
                assert set(s) == {"expected_val", "expected_val_sd", "expected_test", "expected_test_sd",
                                  "bootstrap_test_mean", "bootstrap_test_sd"}
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
             "mnist_p_geglu_better.png", "mnist_param_match.png", "gpt_val_loss.png",
             "gpt_train_loss.png", "gpt_step_time.png", "summary.md", "summary.json"]
    for name in names:
        assert (out / name).stat().st_size > 1000, name
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "summary.md").read_text()
    assert "GeGLU better" in md and "swiglu_thin" in md and "agrees with claim" in md


def test_duplicate_trials_counted_once_and_stopped_run_warned(tmp_path, capsys):
    log = synthetic_mnist(tmp_path / "a.txt", seeds=3)
    synthetic_gpt(tmp_path / "g.txt", "relu2", 0, 100.0, 3.3, 1000, done=False)
    out = tmp_path / "out"
    assert analyze.main([str(log), str(log), str(tmp_path / "g.txt"), "--out", str(out), "--k", "2",
                         "--resamples", "200"]) == 0
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
    assert analyze.main([str(tmp_path), "--out", str(out)]) == 0
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
    assert "empty.txt: no trial: or step: records, skipped" in capsys.readouterr().err


def test_default_input_is_logs_without_the_reference_runs(tmp_path, monkeypatch):
    """`python analyze.py` in a checkout reads the user's own runs under logs/, not the committed
    reference logs (which would join the pool and shadow the user's repeated trials)."""
    (tmp_path / "logs" / "reference").mkdir(parents=True)
    synthetic_mnist(tmp_path / "logs" / "reference" / "mnist-cpu.txt", seeds=3)
    mine = synthetic_mnist(tmp_path / "logs" / "mnist-mine.txt", seeds=2)
    monkeypatch.chdir(tmp_path)
    assert analyze.main(["--out", "out", "--k", "2", "--resamples", "100"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["inputs"] == [str(Path("logs") / mine.name)]
    assert summary["mnist"]["relu"]["2"]["trials"] == 2 * 4 * 2
    assert analyze.main(["logs/reference", "--out", "out2", "--k", "2", "--resamples", "100"]) == 0
    assert json.loads((tmp_path / "out2" / "summary.json").read_text())["mnist"]["relu"]["2"]["trials"] == 2 * 4 * 3
