"""analyze.py: from the logs of train_mnist_ffn.py and train_gpt.py to plots, tables and answers.

    python analyze.py                         # every log under logs/ but logs/reference/ -> plots/
    python analyze.py logs/reference/mnist-cpu.txt --out plots/ --k 2,4,8 --bootstrap 50

MNIST logs are a POOL of trials (every model x hidden size x batch size x lr x seed). A random
search of budget k is simulated from the pool: exactly, with Dodge et al.'s expected best-of-k
(k = 1..N, with one-standard-deviation bands), and by bootstrap (the original study's figure,
with error bars that now hold the variance of the search, not only of the test set). The
verdict per (k, hidden size) is P(GeGLU > ReLU) for the test accuracy of the validation-selected
best of k, with a 95% interval from resampling SEEDS (GeGLU and ReLU trials of one seed share
their data order, so they are resampled together) and a p-value from a permutation test
that swaps the model labels of paired trials, Holm-corrected across all the comparisons.

GPT logs are grouped by configuration (the config: record minus the seed, plus the GPU and
world size); runs that differ only by seed are replicates. Per group: step time, final
validation loss, peak memory and tokens, the change against the matching relu2 group with a
Welch t-test (numpy only), and time and tokens to a target validation loss. Logs of the original
modded-nanogpt scripts (step lines only) are read too.

Writes PNGs, summary.md (also printed) and summary.json into --out (default plots/); the README
documents every figure and every summary.json field.

Measured (2-core CPU development machine, shared, numpy 2.4.6, end to end with figures): the
576-trial default study with --param-match in about 2 s; 10,000 trials (2 models x 4 hidden
sizes x 1,256 trials) in 10-12 s, most of it the 2,000 label permutations of the p-values.
"""
import argparse
import json
import math
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import matplotlib
matplotlib.use("Agg")  # files only, never a window: this runs on servers and in CI
import matplotlib.pyplot as plt
import matplotlib.ticker

HEADER_RULE = "=" * 100          # the two lines that enclose the script's source and environment
RECORD_BATCH_TOKENS = 512 * 1024  # the ModernArch record's batch: 512 sequences x 1024 tokens
MODEL_NAMES = {"relu": "FFN_ReLU", "geglu": "FFN_GeGLU"}
MODEL_COLORS = {"geglu": "tab:blue", "relu": "tab:orange"}
PARAMS_PER_HIDDEN = {"relu": 784 + 10, "geglu": 2 * 784 + 10}  # 794h and 1578h (no biases)
PARAM_MATCH_TOLERANCE = 0.10  # a GeGLU size counts as "equal parameters" within 10% of ReLU's
GPT_REPLICATE_KEYS = {"seed", "id", "started", "host", "log_dir"}  # differ between replicates
# Keys that follow from the MLP choice: a group and its relu2 baseline may differ in these only.
GPT_MLP_KEYS = {"mlp", "mlp_hidden", "params", "muon_params", "muon_matrices"}
MAX_CURVE_POINTS = 400  # k values on the exact curve when a pool has more than 1000 trials


# ----------------------------------------------------------------------------------------------
# Parsing: the log contract (../shared/specs/log-format.md)

RECORD_START = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*:")


class BadRecord(ValueError):
    """A record line that cannot be read (truncated, a value that is not a number, ...)."""


def split_record(line):
    """'name:value key:value ...' -> (name, value, {key: value}); raises BadRecord."""
    tokens = line.split()
    name, _, head = tokens[0].partition(":")
    fields = {}
    for token in tokens[1:]:
        key, colon, value = token.partition(":")
        if not colon or not key:
            raise BadRecord(f"token {token!r} is not key:value")
        fields[key] = value
    return name, head, fields


def number(value, unit=""):
    """'2344.31ms' -> 2344.31 for unit 'ms'; 'nan' and 'nanms' -> nan; raises BadRecord."""
    if unit and value.endswith(unit):
        value = value[: -len(unit)]
    try:
        return float(value)
    except ValueError:
        raise BadRecord(f"{value!r} is not a number") from None


def integer(value):
    try:
        return int(value)
    except ValueError:
        raise BadRecord(f"{value!r} is not an integer") from None


def parse_trial(f):
    trial = dict(model=f["model"], hidden=integer(f["hidden"]), batch_size=integer(f["batch_size"]),
                 lr=number(f["lr"]), seed=integer(f["seed"]), val_acc=number(f["val_acc"]),
                 test_acc=number(f["test_acc"]))
    trial["epochs"] = integer(f["epochs"]) if "epochs" in f else None
    trial["params"] = number(f["params"]) if "params" in f else math.nan
    return trial


def parse_step(head, f):
    step, slash, total = head.partition("/")
    if not slash:
        raise BadRecord(f"step value {head!r} is not s/N")
    if "val_loss" not in f and "train_loss" not in f:
        raise BadRecord("step line with neither val_loss nor train_loss")
    return dict(step=integer(step), total=integer(total),
                val_loss=number(f["val_loss"]) if "val_loss" in f else None,
                train_loss=number(f["train_loss"]) if "train_loss" in f else None,
                train_time_ms=number(f["train_time"], "ms"), step_avg_ms=number(f["step_avg"], "ms"),
                tokens=number(f["tokens"]) if "tokens" in f else None)


def parse_log(path):
    """Read one log file. Returns a dict (kind, run, config, trials, steps, peak, done, n_bad)."""
    lines = Path(path).read_text(errors="replace").splitlines()
    log = dict(path=str(path), kind=None, run={}, config={}, trials=[], steps=[], peak={},
               done={}, n_bad=0, n_records=0, original=False, header_incomplete=False)
    body = lines
    if lines and lines[0].startswith("run:"):
        _, kind, log["run"] = split_record(lines[0])
        log["kind"] = kind
        body = lines[1:]
    # Records come after the last rule: ours have source+environment between two rules, the
    # original modded-nanogpt logs have source, a rule, environment, a rule. The source holds
    # lines that look like records, so a header without its closing rule yields no records.
    rules = [i for i, line in enumerate(body) if line == HEADER_RULE]
    if log["run"] and body and body[0] == HEADER_RULE and len(rules) < 2:
        log["header_incomplete"] = True
        return log
    if rules:
        body = body[rules[-1] + 1:]
    for line in body:
        if not RECORD_START.match(line):
            continue  # 'Running pytorch ...', comments, nvidia-smi output: not records
        try:
            name, head, f = split_record(line)
            if name == "trial":
                log["trials"].append(parse_trial(f))
            elif name == "step":
                log["steps"].append(parse_step(head, f))
            elif name == "config":
                log["config"] = f
            elif name == "peak_memory":
                log["peak"] = dict(allocated_mib=number(f["allocated"], "MiB"),
                                   reserved_mib=number(f.get("reserved", "nan"), "MiB"))
            elif name == "done":
                log["done"] = f
            elif name == "run":
                log["run"], log["kind"] = f, head
            else:
                continue  # a record this reader does not know: new records may be added
            log["n_records"] += 1
        except (BadRecord, KeyError, IndexError):
            log["n_bad"] += 1
    if log["kind"] is None:  # no run: line -- the original modded-nanogpt scripts
        if log["steps"]:
            log["kind"], log["original"] = "gpt", True
        elif log["trials"]:
            log["kind"] = "mnist"
    return log


def find_logs(inputs, skip=()):
    """Files as given; directories searched recursively for *.txt (sorted, so runs repeat),
    leaving out the folders in `skip`."""
    files = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += sorted(q for q in p.rglob("*.txt")
                            if q.is_file() and not any(s in q.parents for s in map(Path, skip)))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{item}: no such file or directory")
    return files


# ----------------------------------------------------------------------------------------------
# Statistics: expected best-of-k (Dodge et al. 2019), P(A > B), Holm, Welch

def selection_weights(val, k, counts=None):
    """Probability that each trial of a pool is the one kept by a random search of budget k.

    The search draws k trials with replacement (trial j with probability counts_j / sum(counts);
    counts = 1 for the plain pool, a seed-bootstrap multiplicity otherwise) and keeps the best by
    validation score; when several drawn trials tie for the best, one of the tied draws is kept
    uniformly at random. With F the weighted CDF of the validation scores, the best value is v_g
    with probability p_g = F(v_g)^k - F(v_g-)^k (Dodge et al.), and ties share p_g in proportion
    to their counts. Shapes: val (N,); counts None or (..., N); k a scalar, or an array (K,) of
    budgets, which adds a leading axis: (K, ..., N). Rows where every count is 0 come back nan.
    """
    val = np.asarray(val, float)
    order = np.argsort(val, kind="stable")
    sorted_val = val[order]
    c = np.ones(len(val)) if counts is None else np.asarray(counts, float)[..., order]
    cum = np.cumsum(c, axis=-1)
    total = cum[..., -1:]
    first = np.r_[True, sorted_val[1:] != sorted_val[:-1]]  # first trial of each tie group
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(val)] - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        f_high = cum[..., ends] / total
        f_low = (cum[..., starts] - c[..., starts]) / total
        kk = np.asarray(k, float).reshape(np.shape(k) + (1,) * f_high.ndim)
        p_group = f_high ** kk - f_low ** kk
        group_count = cum[..., ends] - cum[..., starts] + c[..., starts]
        share = np.where(c > 0, c / group_count[..., group], 0.0)
        w_sorted = p_group[..., group] * share
    w = np.empty_like(w_sorted)
    w[..., order] = w_sorted
    return w


def weighted_mean_sd(w, x):
    """Mean and standard deviation of the discrete distribution putting weight w_i on x_i."""
    mean = w @ x
    var = np.maximum(w @ (x * x) - mean * mean, 0.0)
    return mean, np.sqrt(var)


def bootstrap_best_of_k(val, test, k, draws, rng):
    """The study's procedure, repeated: draw k trials with replacement, keep the best by
    validation (ties: a uniformly random one of the tied draws), record its test score."""
    idx = rng.integers(0, len(val), size=(draws, k))
    v = np.asarray(val)[idx]
    tied = v == v.max(axis=1, keepdims=True)
    pick = np.argmax(rng.random((draws, k)) * tied, axis=1)  # uniform among the tied draws
    return np.asarray(test)[idx[np.arange(draws), pick]]


def prob_greater(test_a, w_a, test_b, w_b):
    """P(X > Y) + P(X = Y) / 2 for independent X ~ (test_a, w_a) and Y ~ (test_b, w_b).

    Weights may carry leading batch dimensions (one distribution per bootstrap resample)."""
    ob = np.argsort(test_b, kind="stable")
    tb = np.asarray(test_b, float)[ob]
    cum = np.cumsum(np.asarray(w_b)[..., ob], axis=-1)
    cum = np.concatenate([np.zeros(cum.shape[:-1] + (1,)), cum], axis=-1)
    lo = np.searchsorted(tb, test_a, side="left")
    hi = np.searchsorted(tb, test_a, side="right")
    below, at = cum[..., lo], cum[..., hi] - cum[..., lo]
    return np.sum(np.asarray(w_a) * (below + 0.5 * at), axis=-1)


def tie_bounds(sorted_rows):
    """For rows sorted ascending: per element, the index of the first element equal to it and
    one past the last one (so #values < v and #values <= v), by running max/min along the row."""
    n = sorted_rows.shape[-1]
    index = np.broadcast_to(np.arange(n), sorted_rows.shape)
    starts = np.ones(sorted_rows.shape, bool)
    starts[..., 1:] = sorted_rows[..., 1:] != sorted_rows[..., :-1]
    ends = np.ones(sorted_rows.shape, bool)
    ends[..., :-1] = starts[..., 1:]
    first = np.maximum.accumulate(np.where(starts, index, 0), axis=-1)
    end = np.minimum.accumulate(np.where(ends, index + 1, n)[..., ::-1], axis=-1)[..., ::-1]
    return first, end


def selection_weights_rows(val, ks):
    """selection_weights for many pools at once, one per row of val (R, N), every count 1, for
    each budget in ks: (K, R, N). The best value is v with probability (#<=v/N)^k - (#<v/N)^k,
    shared equally by its ties."""
    n = val.shape[-1]
    order = np.argsort(val, axis=-1)
    first, end = tie_bounds(np.take_along_axis(val, order, axis=-1))
    k = np.asarray(ks, float)[:, None, None]
    w = np.empty((len(k),) + val.shape)
    np.put_along_axis(w, np.broadcast_to(order, w.shape),
                      ((end / n) ** k - (first / n) ** k) / (end - first), axis=-1)
    return w


def prob_greater_rows(test_a, w_a, test_b, w_b):
    """prob_greater row by row, where every row has its own values: test_* (R, N_*), weights
    (..., R, N_*). Both samples of a row are sorted together; B's weight below and at each of
    A's values is read off the running sum of B's weights over the merged row."""
    merged = np.concatenate([test_a, test_b], axis=-1)
    order = np.argsort(merged, axis=-1)
    first, end = tie_bounds(np.take_along_axis(merged, order, axis=-1))
    shape = np.broadcast_shapes(w_a.shape[:-1], w_b.shape[:-1])
    order, first, end = (np.broadcast_to(x, shape + x.shape[-1:]) for x in (order, first, end))
    zeros_a, zeros_b = np.zeros(shape + test_a.shape[-1:]), np.zeros(shape + test_b.shape[-1:])
    wa = np.take_along_axis(np.concatenate([np.broadcast_to(w_a, zeros_a.shape), zeros_b], axis=-1),
                            order, axis=-1)
    wb = np.take_along_axis(np.concatenate([zeros_a, np.broadcast_to(w_b, zeros_b.shape)], axis=-1),
                            order, axis=-1)
    cum = np.concatenate([np.zeros(wb.shape[:-1] + (1,)), np.cumsum(wb, axis=-1)], axis=-1)
    below = np.take_along_axis(cum, first, axis=-1)
    at = np.take_along_axis(cum, end, axis=-1) - below
    return np.sum(wa * (below + 0.5 * at), axis=-1)


def holm(p_values):
    """Holm-Bonferroni adjusted p-values (nan stays nan and does not count as a comparison)."""
    p = np.asarray(p_values, float)
    adjusted = np.full_like(p, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    running = 0.0
    for rank, i in enumerate(ok[np.argsort(p[ok], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def betainc_regularized(a, b, x):
    """I_x(a, b) by the continued fraction of the incomplete beta (modified Lentz method)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):  # the fraction converges fast only below this point
        return 1.0 - betainc_regularized(b, a, 1.0 - x)
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * h / a


def t_two_sided_p(t, df):
    """P(|T| >= |t|) for Student's t with df degrees of freedom (df may be fractional)."""
    if math.isnan(t) or math.isnan(df) or df <= 0:
        return math.nan
    return betainc_regularized(df / 2.0, 0.5, df / (df + t * t))


def welch(a, b):
    """Welch's unequal-variance t-test: (t, df, two-sided p); nan when a side has < 2 values."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return math.nan, math.nan, math.nan  # no spread at all: a t-test says nothing
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return t, df, t_two_sided_p(t, df)


# ----------------------------------------------------------------------------------------------
# MNIST: the pool of trials

def model_name(model):
    return MODEL_NAMES.get(model, f"FFN_{model}")


def build_pools(logs, warnings):
    """Trials of every MNIST log -> {(model, hidden): pool}. A trial is identified by
    (model, hidden, batch_size, lr, seed, epochs): the first occurrence is kept (files in the
    order given), so a log passed twice, or a copy beside the reference log, counts once."""
    seen, duplicates, differing, nan_dropped = {}, 0, 0, 0
    for log in logs:
        for t in log["trials"]:
            key = (t["model"], t["hidden"], t["batch_size"], t["lr"], t["seed"], t["epochs"])
            if key in seen:
                duplicates += 1
                first = seen[key]
                differing += (first["val_acc"], first["test_acc"]) != (t["val_acc"], t["test_acc"])
                continue
            if math.isnan(t["val_acc"]) or math.isnan(t["test_acc"]):
                nan_dropped += 1
                continue
            seen[key] = t
    if duplicates:
        warnings.append(f"{duplicates} repeated MNIST trials (same model, hidden, batch_size, lr, "
                        f"seed, epochs) ignored, the first occurrence kept"
                        + (f"; {differing} of them had different accuracies" if differing else ""))
    if nan_dropped:
        warnings.append(f"{nan_dropped} MNIST trials with a nan accuracy left out of the pool")
    trials = list(seen.values())
    epochs = Counter(t["epochs"] for t in trials)
    if len(epochs) > 1:  # one epoch and three epochs are not the same search space
        keep = epochs.most_common(1)[0][0]
        warnings.append(f"MNIST trials of several epoch counts {dict(epochs)}: analysing "
                        f"epochs={keep} only")
        trials = [t for t in trials if t["epochs"] == keep]
    pools = {}
    for t in trials:
        pools.setdefault((t["model"], t["hidden"]), []).append(t)
    out = {}
    for (model, hidden), ts in sorted(pools.items()):
        params = np.nanmedian([t["params"] for t in ts]) if any(
            not math.isnan(t["params"]) for t in ts) else PARAMS_PER_HIDDEN.get(model, math.nan) * hidden
        out[(model, hidden)] = dict(
            model=model, hidden=hidden, params=float(params),
            val=np.array([t["val_acc"] for t in ts]), test=np.array([t["test_acc"] for t in ts]),
            seed=np.array([t["seed"] for t in ts]), batch_size=np.array([t["batch_size"] for t in ts]),
            lr=np.array([t["lr"] for t in ts]))
    return out


def curve_ks(n):
    if n <= 1000:
        return np.arange(1, n + 1)
    return np.unique(np.round(np.geomspace(1, n, MAX_CURVE_POINTS)).astype(int))


def analyse_pool(pool, ks, bootstrap, rng):
    """Exact expected best-of-k for k = 1..N and the bootstrap for the k of --k."""
    curve_k = curve_ks(len(pool["val"]))
    w = selection_weights(pool["val"], curve_k)  # (K, N)
    ev, ev_sd = weighted_mean_sd(w, pool["val"])
    et, et_sd = weighted_mean_sd(w, pool["test"])
    per_k = {}
    for k in ks:
        wk = selection_weights(pool["val"], k)
        v, vsd = weighted_mean_sd(wk, pool["val"])
        t, tsd = weighted_mean_sd(wk, pool["test"])
        boot = bootstrap_best_of_k(pool["val"], pool["test"], k, bootstrap, rng)
        per_k[k] = dict(expected_val=v, expected_val_sd=vsd, expected_test=t, expected_test_sd=tsd,
                        bootstrap_test_mean=boot.mean(),
                        bootstrap_test_sd=boot.std(ddof=1) if bootstrap > 1 else math.nan)
    curve = dict(k=curve_k, expected_val=ev, expected_val_sd=ev_sd, expected_test=et,
                 expected_test_sd=et_sd)
    return per_k, curve


def compare_pools(a, b, ks, resamples, rng):
    """P(A > B) for the test accuracy of the validation-selected best of k, per k: the value on
    the whole pool; a 95% interval from a seed bootstrap (both pools resampled with the same
    seeds, so the pairing is kept); a two-sided p-value from a paired permutation test."""
    seeds = np.union1d(a["seed"], b["seed"])
    counts = rng.multinomial(len(seeds), np.full(len(seeds), 1.0 / len(seeds)), size=resamples)
    ca = counts[:, np.searchsorted(seeds, a["seed"])]
    cb = counts[:, np.searchsorted(seeds, b["seed"])]
    ks = np.asarray(ks)
    points = prob_greater(a["test"], selection_weights(a["val"], ks),
                          b["test"], selection_weights(b["val"], ks))  # (K,)
    boots = prob_greater(a["test"], selection_weights(a["val"], ks, ca),
                         b["test"], selection_weights(b["val"], ks, cb))  # (K, resamples)
    results = []
    for k, point, boot in zip(ks, points, boots):
        point = float(point)
        boot = boot[~np.isnan(boot)]  # a resample may hold no seed of one model
        if len(seeds) < 2 or len(boot) == 0:
            lo = hi = math.nan  # one seed: nothing to resample
        else:
            lo, hi = np.percentile(boot, [2.5, 97.5])
        results.append(dict(k=int(k), p_geglu_better=point, ci95=[float(lo), float(hi)],
                            seeds=int(len(seeds))))
    for r, p, n_pairs in zip(results, *permutation_test(a, b, ks, points, resamples, rng)):
        r.update(p_value=p, pairs=n_pairs)
    return results


def permutation_test(a, b, ks, observed, permutations, rng):
    """Two-sided p-values of P(A > B) = 1/2 for each k (observed: its value per k on the pools
    as they are), by swapping model labels at random.

    Trials of A and B with the same (batch_size, lr, seed) form a pair (same configuration, same
    data order). If the model made no difference, swapping the two trials of any pair would not
    change the joint distribution of the pool; so the observed |P - 1/2| is compared with its
    value under random swaps of every pair (a Monte-Carlo sign-flip test, exact in level). The
    bootstrap alone would not do for a test: with a handful of seeds it is far too optimistic.
    """
    key = lambda pool, i: (pool["batch_size"][i], pool["lr"][i], pool["seed"][i])
    in_b = {key(b, j): j for j in range(len(b["val"]))}
    ia = np.array([i for i in range(len(a["val"])) if key(a, i) in in_b], int)
    ib = np.array([in_b[key(a, i)] for i in ia], int)
    if len(ia) < 2:
        return [math.nan] * len(ks), [int(len(ia))] * len(ks)
    swap = rng.random((permutations, len(ia))) < 0.5
    as_extreme = np.zeros(len(ks))
    chunk = max(1, 500_000 // (len(a["val"]) + len(b["val"])))  # bounds the memory of big pools
    for start in range(0, permutations, chunk):
        s = swap[start:start + chunk]
        arrays = {}
        for name in ("val", "test"):
            xa = np.repeat(a[name][None], len(s), axis=0)
            xb = np.repeat(b[name][None], len(s), axis=0)
            xa[:, ia] = np.where(s, b[name][ib], a[name][ia])
            xb[:, ib] = np.where(s, a[name][ia], b[name][ib])
            arrays[name] = xa, xb
        null = prob_greater_rows(arrays["test"][0], selection_weights_rows(arrays["val"][0], ks),
                                 arrays["test"][1], selection_weights_rows(arrays["val"][1], ks))
        as_extreme += np.sum(np.abs(null - 0.5) >= np.abs(observed - 0.5)[:, None] - 1e-12, axis=1)
    return [float(p) for p in (as_extreme + 1) / (permutations + 1)], [int(len(ia))] * len(ks)


def add_verdicts(comparisons, alpha):
    adjusted = holm([c["p_value"] for c in comparisons])
    for c, adj in zip(comparisons, adjusted):
        c["p_adjusted"] = float(adj)
        if math.isnan(adj):
            c["verdict"] = "not testable (fewer than 2 paired trials)"
        elif adj < alpha:
            c["verdict"] = "GeGLU better" if c["p_geglu_better"] > 0.5 else "ReLU better"
        else:
            c["verdict"] = "no detectable difference"


def param_match_pairs(pools):
    """ReLU hidden h -> the GeGLU hidden size whose parameter count is closest (ties: the smaller),
    kept when within PARAM_MATCH_TOLERANCE of ReLU's count."""
    relu = sorted(h for m, h in pools if m == "relu")
    geglu = sorted(h for m, h in pools if m == "geglu")
    pairs = []
    for h in relu:
        target = pools[("relu", h)]["params"]
        if not geglu or math.isnan(target):
            continue
        best = min(geglu, key=lambda g: (abs(pools[("geglu", g)]["params"] - target), g))
        if abs(pools[("geglu", best)]["params"] - target) <= PARAM_MATCH_TOLERANCE * target:
            pairs.append((h, best))
    return pairs


def analyse_mnist(logs, args, warnings):
    rng = np.random.default_rng(args.seed)
    pools = build_pools(logs, warnings)
    result = dict(pools=pools, stats={}, curves={}, comparisons=[], param_match=[], claim=[])
    for key, pool in pools.items():
        result["stats"][key], result["curves"][key] = analyse_pool(pool, args.k, args.bootstrap, rng)
    shared = sorted({h for m, h in pools if m == "relu"} & {h for m, h in pools if m == "geglu"})
    result["hidden"] = shared
    for h in shared:
        for c in compare_pools(pools[("geglu", h)], pools[("relu", h)], args.k, args.resamples, rng):
            result["comparisons"].append(dict(hidden=h, **c))
    result["comparisons"].sort(key=lambda c: (c["k"], c["hidden"]))
    add_verdicts(result["comparisons"], args.alpha)
    for c in result["comparisons"]:
        c["geglu_expected_test"] = result["stats"][("geglu", c["hidden"])][c["k"]]["expected_test"]
        c["relu_expected_test"] = result["stats"][("relu", c["hidden"])][c["k"]]["expected_test"]
    for k in args.k if shared else []:
        g = float(np.mean([result["stats"][("geglu", h)][k]["expected_test"] for h in shared]))
        r = float(np.mean([result["stats"][("relu", h)][k]["expected_test"] for h in shared]))
        result["claim"].append(dict(k=k, geglu_mean_test=g, relu_mean_test=r,
                                    agrees_with_claim=bool(g > r)))
    for h_relu, h_geglu in param_match_pairs(pools):
        for c in compare_pools(pools[("geglu", h_geglu)], pools[("relu", h_relu)], args.k,
                               args.resamples, rng):
            c.update(relu_hidden=h_relu, geglu_hidden=h_geglu,
                     relu_params=pools[("relu", h_relu)]["params"],
                     geglu_params=pools[("geglu", h_geglu)]["params"],
                     geglu_expected_test=result["stats"][("geglu", h_geglu)][c["k"]]["expected_test"],
                     relu_expected_test=result["stats"][("relu", h_relu)][c["k"]]["expected_test"])
            result["param_match"].append(c)
    result["param_match"].sort(key=lambda c: (c["k"], c["relu_hidden"]))
    add_verdicts(result["param_match"], args.alpha)  # a family of its own: its own table
    return result


def log2_hidden_axis(ax, hiddens):
    ax.set_xscale("log", base=2)
    ax.set_xticks(hiddens)
    ax.set_xticklabels([str(h) for h in hiddens])
    ax.minorticks_off()


def plot_mnist(res, args, out):
    pools, stats = res["pools"], res["stats"]
    models = sorted({m for m, _ in pools}, key=lambda m: (m != "geglu", m))
    files = []
    for k in args.k:
        fig, ax = plt.subplots(figsize=(6.4, 4.8))
        for m in models:
            hs = res["hidden"] or sorted(h for mm, h in pools if mm == m)
            hs = [h for h in hs if (m, h) in pools]
            mean = [stats[(m, h)][k]["bootstrap_test_mean"] for h in hs]
            sd = [stats[(m, h)][k]["bootstrap_test_sd"] for h in hs]
            exact = [stats[(m, h)][k]["expected_test"] for h in hs]
            color = MODEL_COLORS.get(m)
            ax.errorbar(hs, mean, yerr=sd, marker="o", capsize=4, color=color, label=model_name(m))
            ax.plot(hs, exact, ls=":", marker="x", color=color, alpha=0.8,
                    label=f"{model_name(m)}, exact expectation")
        log2_hidden_axis(ax, sorted({h for m in models for h in
                                     (res["hidden"] or [hh for mm, hh in pools if mm == m])}))
        n = max(len(p["val"]) for p in pools.values())
        ax.set_title(f"Test Accuracy vs Hidden Dimension (k = {k} trials)\n"
                     f"best of k by validation accuracy; mean ± 1 sd over {args.bootstrap} "
                     f"simulated searches (pool of {n} trials per point)", fontsize=10)
        ax.set_xlabel("Hidden dimension")
        ax.set_ylabel("Test accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        files.append(save(fig, out / f"mnist_k{k}.png"))

    hiddens = sorted({h for _, h in pools})
    ncols = math.ceil(math.sqrt(len(hiddens)))
    nrows = math.ceil(len(hiddens) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.6 * nrows), squeeze=False)
    for ax, h in zip(axes.flat, hiddens):
        for m in models:
            if (m, h) not in pools:
                continue
            c, color = res["curves"][(m, h)], MODEL_COLORS.get(m)
            ax.plot(c["k"], c["expected_test"], color=color, label=f"{model_name(m)} test")
            ax.fill_between(c["k"], c["expected_test"] - c["expected_test_sd"],
                            c["expected_test"] + c["expected_test_sd"], color=color, alpha=0.2)
            ax.plot(c["k"], c["expected_val"], color=color, ls="--", lw=1, label=f"{model_name(m)} val")
            ax.fill_between(c["k"], c["expected_val"] - c["expected_val_sd"],
                            c["expected_val"] + c["expected_val_sd"], color=color, alpha=0.07)
        for k in args.k:
            ax.axvline(k, color="grey", lw=0.6, ls=":")
        if ax.get_ylim()[1] > 1.0:  # a +1 sd band may pass 1; accuracy cannot
            ax.set_ylim(top=1.005)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}"))
        ax.set_title(f"hidden = {h}")
        ax.set_xlabel("search budget k (trials)")
        ax.set_ylabel("expected best accuracy")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(hiddens):]:
        ax.axis("off")
    handles = {}
    for ax in axes.flat:  # one legend for the figure: a panel may hold only one model
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=4, fontsize=8,
               bbox_to_anchor=(0.5, -0.04))
    fig.suptitle("Expected best-of-k (Dodge et al.): validation accuracy of the best trial (dashed) "
                 "and test accuracy of that trial (solid), ± 1 sd", fontsize=10)
    fig.tight_layout()
    files.append(save(fig, out / "mnist_expected_best.png"))

    if res["comparisons"]:
        files.append(plot_p_improvement(res["comparisons"], "hidden", args,
                                        "P(GeGLU > ReLU), best-of-k test accuracy, equal hidden size",
                                        out / "mnist_p_geglu_better.png"))
    if res["param_match"]:
        fig, axes = plt.subplots(1, len(args.k), figsize=(4.6 * len(args.k), 4.2), squeeze=False)
        for ax, k in zip(axes.flat, args.k):
            rows = [c for c in res["param_match"] if c["k"] == k]
            for m, hkey in (("geglu", "geglu_hidden"), ("relu", "relu_hidden")):
                x = [pools[(m, c[hkey])]["params"] for c in rows]
                y = [stats[(m, c[hkey])][k]["expected_test"] for c in rows]
                sd = [stats[(m, c[hkey])][k]["expected_test_sd"] for c in rows]
                ax.errorbar(x, y, yerr=sd, marker="o", capsize=4, color=MODEL_COLORS.get(m),
                            label=model_name(m))
                for xi, yi, c in zip(x, y, rows):
                    ax.annotate(f"h={c[hkey]}", (xi, yi), textcoords="offset points", xytext=(4, -10),
                                fontsize=7, color=MODEL_COLORS.get(m))
            ax.set_xscale("log", base=2)
            ticks = [pools[("relu", c["relu_hidden"])]["params"] for c in rows]
            ax.set_xticks(ticks)
            ax.set_xticklabels([f"{t:,.0f}" for t in ticks], fontsize=8)
            ax.minorticks_off()
            ax.set_title(f"k = {k}")
            ax.set_xlabel("parameters (ReLU's count at each tick)")
            ax.set_ylabel("expected test accuracy of best of k")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle("Equal parameter count: expected best-of-k test accuracy ± 1 sd", fontsize=10)
        fig.tight_layout()
        files.append(save(fig, out / "mnist_param_match.png"))
    return files


def plot_p_improvement(comparisons, hkey, args, title, path):
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    hs = sorted({c[hkey] for c in comparisons})
    for i, k in enumerate(args.k):
        rows = sorted((c for c in comparisons if c["k"] == k), key=lambda c: c[hkey])
        x = np.array([c[hkey] for c in rows], float) * 2 ** ((i - (len(args.k) - 1) / 2) * 0.08)
        y = np.array([c["p_geglu_better"] for c in rows])
        lo = np.array([c["ci95"][0] for c in rows])
        hi = np.array([c["ci95"][1] for c in rows])
        ax.errorbar(x, y, yerr=[np.nan_to_num(y - lo), np.nan_to_num(hi - y)], marker="o", capsize=3,
                    ls="none", label=f"k = {k}")
    ax.axhline(0.5, color="grey", lw=1, ls="--")
    log2_hidden_axis(ax, hs)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("Hidden dimension" if hkey == "hidden" else "ReLU hidden dimension")
    ax.set_ylabel("P(GeGLU > ReLU)")
    ax.set_title(title + "\n95% interval from resampling seeds", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)


# ----------------------------------------------------------------------------------------------
# GPT: runs grouped into configurations

def gpt_run(log, target_loss, warnings):
    """One GPT log -> its curves and final numbers."""
    steps, config = log["steps"], log["config"]
    name = Path(log["path"]).name
    if log["original"]:
        batch_tokens = RECORD_BATCH_TOKENS
    else:
        try:
            batch_tokens = int(config["batch_size"]) * int(config["seq_len"])
        except (KeyError, ValueError):
            batch_tokens = RECORD_BATCH_TOKENS
    if any(s["tokens"] is None for s in steps):
        warnings.append(f"{name}: no tokens: on step lines; tokens inferred as step x {batch_tokens:,}"
                        + (" (the record's batch, 512 x 1024)" if batch_tokens == RECORD_BATCH_TOKENS else ""))
    tokens = lambda s: s["tokens"] if s["tokens"] is not None else s["step"] * batch_tokens
    val = [s for s in steps if s["val_loss"] is not None]
    train = [s for s in steps if s["train_loss"] is not None]
    done = log["done"]
    step_avg = math.nan
    try:
        step_avg = number(done["step_avg"], "ms")
    except (KeyError, BadRecord):
        finite = [s["step_avg_ms"] for s in steps if not math.isnan(s["step_avg_ms"])]
        step_avg = finite[-1] if finite else math.nan
    try:
        final_val = number(done["final_val_loss"])
    except (KeyError, BadRecord):
        final_val = val[-1]["val_loss"] if val else math.nan
    if not done and not log["original"]:
        warnings.append(f"{name}: no done: record (the run was stopped?); its last lines are used")
    elif done.get("status", "ok") != "ok":
        warnings.append(f"{name}: the run ended with status:{done['status']}")
    run = dict(path=log["path"], name=name, step_avg_ms=step_avg, final_val_loss=final_val,
               peak_memory_mib=log["peak"].get("allocated_mib", math.nan),
               tokens=float(max((tokens(s) for s in steps), default=math.nan)),
               val_step=np.array([s["step"] for s in val]), val_loss=np.array([s["val_loss"] for s in val]),
               val_time_ms=np.array([s["train_time_ms"] for s in val]),
               val_tokens=np.array([tokens(s) for s in val], float),
               train_step=np.array([s["step"] for s in train]),
               train_loss=np.array([s["train_loss"] for s in train]))
    run["time_to_target_ms"], run["tokens_to_target"] = time_to_target(
        run["val_loss"], run["val_time_ms"], run["val_tokens"], target_loss)
    return run


def time_to_target(loss, time_ms, tokens, target):
    """First crossing of the target by the validation curve, linear between validation points."""
    for i in range(len(loss)):
        if loss[i] <= target:
            if i == 0:
                return float(time_ms[0]), float(tokens[0])
            frac = (loss[i - 1] - target) / (loss[i - 1] - loss[i])
            return (float(time_ms[i - 1] + frac * (time_ms[i] - time_ms[i - 1])),
                    float(tokens[i - 1] + frac * (tokens[i] - tokens[i - 1])))
    return math.nan, math.nan


def mean_sd(x):
    x = np.asarray(x, float)
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return math.nan, math.nan
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else math.nan


def analyse_gpt(logs, args, warnings):
    groups = {}
    for log in logs:
        run = gpt_run(log, args.target_loss, warnings)
        if log["original"]:
            # The public record is the relu2 ModernArch; nothing in the file says so.
            warnings.append(f"{run['name']}: no config: record (original modded-nanogpt log): "
                            f"its own group, mlp assumed relu2")
            key, config = (("file", run["path"]),), {"mlp": "relu2"}
        else:
            config = {k: v for k, v in log["config"].items() if k not in GPT_REPLICATE_KEYS}
            config["world_size"] = log["run"].get("world_size", "?")
            config["gpu"] = log["run"].get("gpu", "?")  # step time is a property of the hardware
            key = tuple(sorted(config.items()))
        g = groups.setdefault(key, dict(key=key, config=config, mlp=config.get("mlp", "?"),
                                        original=log["original"], runs=[]))
        g["runs"].append(run)
    groups = list(groups.values())
    for g in groups:  # labels: the mlp, plus whatever tells same-mlp groups apart
        same = [o for o in groups if o["mlp"] == g["mlp"] and not o["original"]]
        if g["original"]:
            g["label"] = f"{Path(g['runs'][0]['name']).stem} (relu2, assumed)"
        elif len(same) == 1:
            g["label"] = g["mlp"]
        else:
            differ = sorted(k for k in g["config"] if len({str(o["config"].get(k)) for o in same}) > 1)
            g["label"] = g["mlp"] + " " + " ".join(f"{k}:{g['config'].get(k)}" for k in differ)
    rows = []
    for g in groups:
        runs = g["runs"]
        row = dict(label=g["label"], mlp=g["mlp"], runs=len(runs), files=[r["path"] for r in runs],
                   original_log=g["original"])
        row["step_avg_ms_mean"], row["step_avg_ms_sd"] = mean_sd([r["step_avg_ms"] for r in runs])
        row["final_val_loss_mean"], row["final_val_loss_sd"] = mean_sd([r["final_val_loss"] for r in runs])
        row["peak_memory_mib"], row["peak_memory_mib_sd"] = mean_sd([r["peak_memory_mib"] for r in runs])
        row["tokens"] = mean_sd([r["tokens"] for r in runs])[0]
        reached = [r for r in runs if not math.isnan(r["time_to_target_ms"])]
        row["runs_reaching_target"] = len(reached)
        all_reached = len(reached) == len(runs)  # a mean over the lucky runs only would flatter
        row["time_to_target_ms"] = mean_sd([r["time_to_target_ms"] for r in runs])[0] if all_reached else math.nan
        row["tokens_to_target"] = mean_sd([r["tokens_to_target"] for r in runs])[0] if all_reached else math.nan
        base, differs = None, []
        relu2 = [o for o in groups if o["mlp"] == "relu2" and not o["original"]]
        if g["mlp"] != "relu2" and not g["original"] and relu2:
            # The baseline is the relu2 group that differs only in the MLP; failing that, the
            # one that differs in the fewest other keys, named in the table and a warning.
            def other_differences(o):
                keys = (set(o["config"]) | set(g["config"])) - GPT_MLP_KEYS
                return sorted(k for k in keys if o["config"].get(k) != g["config"].get(k))
            base = min(relu2, key=lambda o: len(other_differences(o)))
            differs = other_differences(base)
            if differs:
                warnings.append(f"{g['label']}: no relu2 group differs from it only in the MLP; "
                                f"compared with {base['label']}, which also differs in {', '.join(differs)}")
        row["baseline"] = base["label"] if base else None
        row["baseline_also_differs_in"] = differs
        row["step_avg_change_pct"] = row["final_val_loss_change"] = row["peak_memory_change_pct"] = math.nan
        row["step_avg_p_value"] = row["final_val_loss_p_value"] = math.nan
        if base:
            bm = mean_sd([r["step_avg_ms"] for r in base["runs"]])[0]
            row["step_avg_change_pct"] = 100 * (row["step_avg_ms_mean"] / bm - 1)
            row["final_val_loss_change"] = row["final_val_loss_mean"] - mean_sd(
                [r["final_val_loss"] for r in base["runs"]])[0]
            row["peak_memory_change_pct"] = 100 * (row["peak_memory_mib"] / mean_sd(
                [r["peak_memory_mib"] for r in base["runs"]])[0] - 1)
            row["step_avg_p_value"] = welch([r["step_avg_ms"] for r in runs],
                                            [r["step_avg_ms"] for r in base["runs"]])[2]
            row["final_val_loss_p_value"] = welch([r["final_val_loss"] for r in runs],
                                                  [r["final_val_loss"] for r in base["runs"]])[2]
        rows.append(row)
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["mlp"] != "relu2", rows[i]["label"]))
    return dict(groups=[groups[i] for i in order], rows=[rows[i] for i in order])


def smooth(y, window):
    """Centred moving average (the ends, where the window does not fit, are dropped)."""
    if window <= 1 or len(y) <= window:
        return np.arange(len(y)), y
    kernel = np.ones(window) / window
    return np.arange(window // 2, window // 2 + len(y) - window + 1), np.convolve(y, kernel, "valid")


def plot_gpt(res, args, out):
    groups, rows = res["groups"], res["rows"]
    colors = {g["label"]: f"C{i % 10}" for i, g in enumerate(groups)}
    files = []
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    all_loss = np.concatenate([r["val_loss"] for g in groups for r in g["runs"]] or [np.array([np.nan])])
    for g in groups:
        for j, r in enumerate(g["runs"]):
            label = f"{g['label']} ({len(g['runs'])} run{'s' * (len(g['runs']) > 1)})" if j == 0 else None
            for ax, x in zip(axes, (r["val_step"], r["val_time_ms"] / 1000, r["val_tokens"] / 1e9)):
                ax.plot(x, r["val_loss"], color=colors[g["label"]], marker=".", ms=3, lw=1, label=label)
    finite = all_loss[np.isfinite(all_loss)]
    for ax, xl in zip(axes, ("step", "training time (s, validation excluded)", "training tokens (billions)")):
        ax.axhline(args.target_loss, color="grey", ls="--", lw=0.8)
        ax.set_xlabel(xl)
        ax.set_ylabel("validation loss")
        ax.grid(alpha=0.3)
        if len(finite):  # the first points (loss ~11-16) would squash the part that matters
            low = min(finite.min(), args.target_loss)
            ax.set_ylim(low - 0.05, min(finite.max(), low + 2.5) + 0.05)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Validation loss (dashed: target {args.target_loss})", fontsize=11)
    fig.tight_layout()
    files.append(save(fig, out / "gpt_val_loss.png"))

    fig, ax = plt.subplots(figsize=(8, 4.8))
    smoothed_max = 0.0
    for g in groups:
        for j, r in enumerate(g["runs"]):
            if len(r["train_loss"]) == 0:
                continue
            window = max(1, len(r["train_loss"]) // 50)
            idx, y = smooth(r["train_loss"], window)
            smoothed_max = max(smoothed_max, float(np.nanmax(y)))
            color = colors[g["label"]]
            ax.plot(r["train_step"], r["train_loss"], color=color, alpha=0.12, lw=0.5)
            ax.plot(r["train_step"][idx], y, color=color, lw=1.2,
                    label=f"{g['label']} (moving average of {window} steps)" if j == 0 else None)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:g}"))
    if smoothed_max > 0:  # the first steps (loss ~11-16) would squash the rest
        ax.set_ylim(top=smoothed_max * 1.15)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (log scale)")
    ax.set_title("Training loss (faint: every step)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    files.append(save(fig, out / "gpt_train_loss.png"))

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    labels = [r["label"] for r in rows]
    x = np.arange(len(rows))
    for ax, key, ylabel in ((axes[0], "step_avg_ms", "step_avg (ms)"),
                            (axes[1], "peak_memory_mib", "peak memory allocated (MiB)")):
        mean = np.array([r[key + "_mean"] if key + "_mean" in r else r[key] for r in rows], float)
        sd = np.array([r[key + "_sd"] for r in rows], float)
        ax.bar(x, np.nan_to_num(mean), color=[colors[l] for l in labels])
        has_sd = ~np.isnan(sd)
        ax.errorbar(x[has_sd], mean[has_sd], yerr=sd[has_sd], ls="none", color="black", capsize=5)
        if np.all(np.isnan(mean)):
            ax.set_ylim(0, 1)
            ax.set_yticks([])
        for xi, m, r in zip(x, mean, rows):
            ax.annotate("not logged" if math.isnan(m) else f"{m:.1f}\nn={r['runs']}", (xi, np.nan_to_num(m)),
                        ha="center", va="bottom", fontsize=8, xytext=(0, 3), textcoords="offset points")
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=15, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("Step time and peak memory per group: mean ± 1 sd over runs (no bar: one run)", fontsize=11)
    fig.tight_layout()
    files.append(save(fig, out / "gpt_step_time.png"))
    return files


def save(fig, path):
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return str(path)


# ----------------------------------------------------------------------------------------------
# Reports: summary.md and summary.json

def fmt(x, spec=".4f", none="n/a"):
    return none if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def mnist_markdown(res, args):
    pools, stats = res["pools"], res["stats"]
    out = ["## MNIST", "",
           "Pool of trials per model and hidden size (every batch size, learning rate and seed):", "",
           markdown_table(["model", "hidden", "params", "trials", "seeds", "best val", "test of best val"],
                          [[model_name(m), h, fmt(p["params"], ".0f"), len(p["val"]), len(set(p["seed"])),
                            fmt(p["val"].max()), fmt(p["test"][np.argmax(p["val"])])]
                           for (m, h), p in pools.items()]), "",
           f"Best of k by validation accuracy, test accuracy of the selected trial: exact expectation "
           f"± sd (Dodge et al.) and {args.bootstrap} simulated searches (mean ± sd); expected best "
           f"validation accuracy beside it:", "",
           markdown_table(["k", "model", "hidden", "E[test] ± sd", "bootstrap ± sd", "E[val] ± sd"],
                          [[k, model_name(m), h,
                            f"{fmt(s['expected_test'])} ± {fmt(s['expected_test_sd'])}",
                            f"{fmt(s['bootstrap_test_mean'])} ± {fmt(s['bootstrap_test_sd'])}",
                            f"{fmt(s['expected_val'])} ± {fmt(s['expected_val_sd'])}"]
                           for k in args.k for (m, h) in pools for s in [stats[(m, h)][k]]])]
    if res["comparisons"]:
        out += ["", f"Verdict: P(GeGLU > ReLU) for the test accuracy of the validation-selected best of "
                f"k (ties count half); 95% interval from {args.resamples} seed-bootstrap resamples; "
                f"p from {args.resamples} random swaps of the paired GeGLU/ReLU trials, Holm-corrected "
                f"over the {len(res['comparisons'])} comparisons (family-wise alpha {args.alpha}):", "",
                comparison_table(res["comparisons"], False), "",
                "The study's claim check (mean over hidden sizes of the expected best-of-k test accuracy):",
                "", markdown_table(["k", "GeGLU mean", "ReLU mean", "study's check"],
                                   [[c["k"], fmt(c["geglu_mean_test"]), fmt(c["relu_mean_test"]),
                                     "agrees with claim" if c["agrees_with_claim"] else "disagrees with claim"]
                                    for c in res["claim"]])]
    if res["param_match"]:
        out += ["", "Equal parameter count (each ReLU size against the GeGLU size with the closest "
                f"parameter count, within {PARAM_MATCH_TOLERANCE:.0%}; Holm over this table):", "",
                comparison_table(res["param_match"], True)]
    return "\n".join(out)


def comparison_table(comparisons, param_match):
    header = (["k", "ReLU h (params)", "GeGLU h (params)"] if param_match else ["k", "hidden"]) + [
        "E[test] GeGLU", "E[test] ReLU", "P(GeGLU>ReLU) [95% CI]", "p", "p (Holm)", "verdict"]
    rows = []
    for c in comparisons:
        where = ([c["k"], f"{c['relu_hidden']} ({c['relu_params']:.0f})",
                  f"{c['geglu_hidden']} ({c['geglu_params']:.0f})"] if param_match else [c["k"], c["hidden"]])
        rows.append(where + [fmt(c["geglu_expected_test"]), fmt(c["relu_expected_test"]),
                             f"{fmt(c['p_geglu_better'], '.3f')} [{fmt(c['ci95'][0], '.3f')}, "
                             f"{fmt(c['ci95'][1], '.3f')}]",
                             fmt(c["p_value"], ".4f"), fmt(c["p_adjusted"], ".4f"), c["verdict"]])
    return markdown_table(header, rows)


def gpt_markdown(res, args):
    rows = []
    for r in res["rows"]:
        rows.append([r["label"], r["runs"], f"{fmt(r['step_avg_ms_mean'], '.2f')} ± {fmt(r['step_avg_ms_sd'], '.2f')}",
                     fmt(r["step_avg_change_pct"], "+.1f", "") + ("%" if not math.isnan(r["step_avg_change_pct"]) else ""),
                     fmt(r["step_avg_p_value"], ".2g", ""),
                     f"{fmt(r['final_val_loss_mean'])} ± {fmt(r['final_val_loss_sd'])}",
                     fmt(r["final_val_loss_change"], "+.4f", ""), fmt(r["final_val_loss_p_value"], ".2g", ""),
                     fmt(r["peak_memory_mib"], ".0f"),
                     fmt(r["peak_memory_change_pct"], "+.1f", "") + ("%" if not math.isnan(r["peak_memory_change_pct"]) else ""),
                     fmt(r["tokens"], ",.0f"),
                     f"{fmt(r['time_to_target_ms'] / 1000, '.1f', 'not reached')}"
                     + ("" if math.isnan(r["time_to_target_ms"]) else " s"),
                     fmt(r["tokens_to_target"], ",.0f", "not reached")])
    return "\n".join([
        "## GPT", "",
        f"Per configuration (runs differing only by seed are replicates): mean ± sd over runs; "
        f"changes against the relu2 group of the same configuration, Welch t-test p-values on "
        f"step_avg and on the final validation loss; time and tokens to validation loss {args.target_loss} (interpolated; "
        f"'not reached' unless every run of the group reached it):", "",
        markdown_table(["group", "runs", "step_avg ms", "Δ time", "p", "final val loss", "Δ loss", "p (loss)",
                        "peak MiB", "Δ memory", "tokens", f"time to {args.target_loss}",
                        f"tokens to {args.target_loss}"], rows)])


def jsonable(x):
    """nan -> null (JSON has no nan), numpy scalars and arrays -> Python numbers and lists."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return None if math.isnan(x) or math.isinf(x) else float(x)
    return x


def summary_json(mnist, gpt, args, files, warnings):
    summary = dict(settings=dict(k=args.k, bootstrap=args.bootstrap, seed=args.seed,
                                 resamples=args.resamples, alpha=args.alpha, target_loss=args.target_loss),
                   inputs=files, warnings=warnings)
    if mnist:
        summary["mnist"] = {}
        for (m, h), pool in mnist["pools"].items():
            entry = {str(k): v for k, v in mnist["stats"][(m, h)].items()}
            entry.update(trials=len(pool["val"]), seeds=len(set(pool["seed"])), params=pool["params"],
                         curve=mnist["curves"][(m, h)])
            summary["mnist"].setdefault(m, {})[str(h)] = entry
        summary["mnist_comparisons"] = mnist["comparisons"]
        summary["mnist_claim_check"] = mnist["claim"]
        summary["mnist_param_match_comparisons"] = mnist["param_match"]
    if gpt:
        summary["gpt"] = gpt["rows"]
    return jsonable(summary)


# ----------------------------------------------------------------------------------------------
# main

def positive_ints(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive integers, e.g. 2,4,8")
    return values


def positive_int(text):
    value = positive_ints(text)
    if len(value) != 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not one positive integer")
    return value[0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="*", default=[],
                        help="log files or directories (default: logs/, without logs/reference/: the "
                             "committed reference runs would otherwise join the pool of your own runs)")
    parser.add_argument("--out", default="plots", help="where the PNGs, summary.md and summary.json go")
    parser.add_argument("--k", type=positive_ints, default=[2, 4, 8], help="search budgets (default 2,4,8)")
    parser.add_argument("--bootstrap", type=positive_int, default=50, help="simulated searches per point")
    parser.add_argument("--resamples", type=positive_int, default=2000,
                        help="seed-bootstrap resamples (intervals) and label permutations "
                             "(p-values) for P(GeGLU > ReLU)")
    parser.add_argument("--alpha", type=float, default=0.05, help="family-wise error rate of the verdicts")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random number generator")
    parser.add_argument("--target-loss", type=float, default=3.28, help="GPT validation loss target")
    args = parser.parse_args(argv)
    args.k = sorted(set(args.k))

    try:
        files = find_logs(args.inputs) if args.inputs else find_logs(["logs"], skip=["logs/reference"])
    except FileNotFoundError as e:
        print(f"analyze.py: error: {e}", file=sys.stderr)
        return 2
    warnings, logs = [], []
    for path in files:
        log = parse_log(path)
        if log["n_bad"]:
            warnings.append(f"{path}: skipped {log['n_bad']} record line(s) that do not parse")
        if log["header_incomplete"]:
            warnings.append(f"{path}: header never closed by a line of 100 '=': no records, skipped")
        elif log["kind"] not in ("mnist", "gpt") or not (log["trials"] or log["steps"]):
            warnings.append(f"{path}: no trial: or step: records, skipped")
        else:
            if log["kind"] == "mnist" and not log["run"]:
                warnings.append(f"{path}: no run: line; read as an MNIST log from its trial: lines")
            logs.append(log)
    if not logs:
        where = " ".join(args.inputs) or "logs/ (logs/reference/ is left out unless named)"
        found = f"no log files (*.txt) in {where}" if not files else f"no records in the {len(files)} log file(s) in {where}"
        print(f"analyze.py: error: {found}; run a training script first "
              f"(python train_mnist_ffn.py) or pass log files", file=sys.stderr)
        for w in warnings:
            print(f"warning: {w}", file=sys.stderr)
        return 2

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mnist_logs = [l for l in logs if l["kind"] == "mnist"]
    gpt_logs = [l for l in logs if l["kind"] == "gpt"]
    mnist = analyse_mnist(mnist_logs, args, warnings) if mnist_logs else None
    gpt = analyse_gpt(gpt_logs, args, warnings) if gpt_logs else None
    figures = (plot_mnist(mnist, args, out) if mnist else []) + (plot_gpt(gpt, args, out) if gpt else [])

    parts = ["# Summary", "", "Logs: " + ", ".join(l["path"] for l in logs)]
    if mnist:
        parts += ["", mnist_markdown(mnist, args)]
    if gpt:
        parts += ["", gpt_markdown(gpt, args)]
    if warnings:
        parts += ["", "## Warnings", ""] + [f"- {w}" for w in warnings]
    parts += ["", "Figures: " + ", ".join(Path(f).name for f in figures)]
    text = "\n".join(parts) + "\n"
    (out / "summary.md").write_text(text)
    summary = summary_json(mnist, gpt, args, [l["path"] for l in logs], warnings)
    summary["figures"] = figures
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(text)
    print(f"wrote {len(figures)} figures, summary.md and summary.json to {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
