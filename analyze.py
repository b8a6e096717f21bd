"""analyze.py: from the logs of train_mnist_ffn.py and train_gpt.py to plots, tables and answers.

    python analyze.py                         # every log under logs/ but logs/reference/ -> plots/
    python analyze.py logs/reference/mnist-cpu.txt --out plots/ --k 2,4,8 --bootstrap 50

MNIST logs are a POOL of trials (every model x hidden size x batch size x lr x seed). A random
search of budget k is simulated from the pool: exactly, with Dodge et al.'s expected best-of-k
(draws with replacement; or, with --estimator tang, Tang et al.'s unbiased estimator for k
distinct trials), and by bootstrap (the original study's figure, with error bars that now hold
the variance of the search, not only of the test set). Every model is compared with a baseline
(--baseline, default relu): the verdict per (model, k, hidden size) is P(model > baseline) for
the test accuracy of the validation-selected best of k, with a 95% interval from resampling SEEDS
(the trials of one seed share their data order, so every model's are resampled together) and a
p-value from a permutation test that swaps the model labels of paired trials; the same at equal
parameter count for each model whose log names its matched sizes (matched_hidden_<model>);
Holm-corrected across all the comparisons made.

GPT logs are grouped by configuration (the config: record minus the seed, plus the GPU and
world size); runs that differ only by seed are replicates, runs of a group that share their seed
are one measurement (the first finished one counts; a warning names the others), and a resumed
log is one run. Per
group: step time, final validation loss, peak memory, tokens, time and tokens to a target loss,
and the speedrun's record rule (mean final loss below the target by a one-sided t-test at
p < 0.01, and how many runs would pass it). Against the matching group of the baseline MLP
(--baseline, default relu2): the changes with
Welch t-tests (numpy only), whether both ran on the same GPU model and software and in
interleaved order, and the step and time difference at equal loss with a seed-bootstrap
interval. Logs of the original modded-nanogpt scripts (step lines only) are read too.

Whatever an answer rests on that is incomplete or odd (missing trials, diverged trials, unfinished
runs, logs of other grids or other code pooled, runs on other machines) is said in a warning, on
screen and in summary.md / summary.json, and the table cells it touches carry a note.

Writes PNGs, summary.md (also printed) and summary.json into --out (default plots/);
docs/analyze.md documents every figure and computation, docs/summary-json.md every summary.json
field, docs/log-format.md the logs it reads.

Measured result (logs/reference/mnist-cpu.txt, the CPU run of 2026-12-04, 8 seeds): geglu better
than relu at equal hidden size in all 12 comparisons, relu better at equal parameter count in all
9, Holm over the 21 together (README). Speed (2-core CPU development machine, shared, numpy 2.4.6,
end to end with figures): that 512-trial log in 3.6 s on 2026-12-04 (load about 1); earlier,
10,000 trials (2 models x 4 hidden sizes x 1,256 trials) in 10-12 s, most of it the 2,000 label
permutations of the p-values; --estimator tang about 1.3x as long.
"""
import argparse
import hashlib
import itertools
import json
import math
import re
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

import numpy as np
import matplotlib
matplotlib.use("Agg")  # files only, never a window: this runs on servers and in CI
import matplotlib.lines
import matplotlib.patches
import matplotlib.pyplot as plt
import matplotlib.ticker

HEADER_RULE = "=" * 100          # the two lines that enclose the script's source and environment
RECORD_BATCH_TOKENS = 512 * 1024  # the ModernArch record's batch: 512 sequences x 1024 tokens
MNIST_BASELINE, GPT_BASELINE = "relu", "relu2"  # --baseline's defaults: the plain MLP of each study
BAND = (0.16, 0.84)  # error bars and bands: the central 68% of a search's outcomes, inside [0, 1]
COLLAPSE_BELOW = 0.2  # a search whose chosen trial tests below this has collapsed (chance: 0.1)
# MNIST config keys that only widen the pool (more sizes, more seeds): logs that differ in these
# alone may be pooled; any other difference means another search space.
# (matched_hidden_<model> keys too: see is_scope_key)
MNIST_SCOPE_KEYS = {"models", "hidden", "matched_hidden", "param_match", "seeds"}
# Differ between replicates, or change neither what a run computes nor its train_time (checkpoint
# writes are not timed): a run with --save-every is a replicate of one without, and a resumed run
# (resume: names where it came from) of one that ran straight through.
GPT_REPLICATE_KEYS = {"seed", "id", "started", "host", "log_dir", "save_every", "save_final", "keep_last",
                      "resume"}
RECORD_TARGET_LOSS = 3.28  # the speedrun's target: a validation loss on FineWeb's GPT-2 tokens, nothing else
GPT2_VOCAB = 50257  # GPT-2's tokenizer; train_gpt.py pads the embedding to 50304
NO_TARGET = "n/a (no target for this data)"
# What a statistic that needs two independent runs says with fewer (sd, t, p, the record rule)
FEWER_THAN_2 = "n/a: fewer than 2 independent runs"
# Keys that follow from the MLP choice: a group and its baseline may differ in these only.
GPT_MLP_KEYS = {"mlp", "mlp_hidden", "params", "muon_params", "muon_matrices"}
MAX_CURVE_POINTS = 400  # k values on the exact curve when a pool has more than 1000 trials
MAX_RUNS_NEEDED = 10 ** 7  # "runs needed" beyond this is reported as not reachable
# The largest --k, --bootstrap and --resamples accepted: far beyond what the estimates need (a
# search of 10**6 trials keeps the pool's best one; intervals and p-values settle within a few
# thousand resamples), and it keeps the arrays they size below numpy's dimension limit, which a
# value like 10**20 hits with a ValueError traceback (not the MemoryError main() catches).
MAX_COUNT = 10 ** 6
# Together the flags can still ask for hours (--bootstrap 10**6 --resamples 10**6): a run whose
# resampling would touch more array elements than this is refused before it starts. The 2-core
# development machine goes through about 2 x 10**7 a second, so this is a couple of minutes.
MAX_WORK = 2 * 10 ** 9


# ----------------------------------------------------------------------------------------------
# Parsing: the log contract (docs/log-format.md)

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


def keyed(convert, f, key, *unit):
    """convert(f[key]), a BadRecord naming the key: 'val_acc: 'abc' is not a number'."""
    try:
        return convert(f[key], *unit)
    except BadRecord as e:
        raise BadRecord(f"{key}: {e}") from None


def parse_trial(f):
    trial = dict(model=f["model"], hidden=keyed(integer, f, "hidden"), batch_size=keyed(integer, f, "batch_size"),
                 lr=keyed(number, f, "lr"), seed=keyed(integer, f, "seed"), val_acc=keyed(number, f, "val_acc"),
                 test_acc=keyed(number, f, "test_acc"))
    trial["epochs"] = keyed(integer, f, "epochs") if "epochs" in f else None
    trial["params"] = keyed(number, f, "params") if "params" in f else math.nan
    trial["train_loss"] = keyed(number, f, "train_loss") if "train_loss" in f else None  # None: not logged
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


def parse_resume(f):
    facts = {key: f.get(key) for key in ("world_size", "gpu", "torch", "device_batch_size", "compile")}
    facts["gpu"] = gpu_name(facts["gpu"])
    return dict(from_step=integer(f["from_step"]), resumed=f.get("resumed"), checkpoint=f.get("checkpoint"), **facts)


def gpu_name(value):
    """train_gpt.py writes a value's spaces as %20 (values hold no spaces); the tables show the
    GPU's own name, 'NVIDIA H100 80GB HBM3', not 'NVIDIA%20H100%2080GB%20HBM3'."""
    return None if value is None else value.replace("%20", " ")


def header_facts(header):
    """(hash of the script's source, environment) from the lines of a log's header. The source
    comes first; the environment starts at its last 'python: <version>' line. The hash tells
    runs of different code apart; the environment gives the CUDA version."""
    starts = [i for i, line in enumerate(header) if line.startswith("python: ")]
    cut = starts[-1] if starts else len(header)
    source = "\n".join(line.rstrip() for line in header[:cut]).strip("\n")
    env = {}
    for line in header[cut:]:
        key, sep, value = line.partition(": ")
        if sep and key in ("python", "torch", "cuda") and value.split():
            env[key] = value.split()[0]
    return (hashlib.sha256(source.encode()).hexdigest()[:12] if source else None), env


def parse_log(path):
    """Read one log file. Returns a dict (kind, run, config, trials, steps, peak, done, resumes,
    code, env, n_bad, ...). A resumed GPT log reads as one run: for each step number and kind
    (val_loss / train_loss) the last line in the file wins (a killed run's lines after its
    checkpoint are done again by the resumed one), and a done: before a resume: is not the end."""
    text = Path(path).read_text(errors="replace")
    lines = text.splitlines()
    log = dict(path=str(path), kind=None, run={}, config={}, trials=[], steps=[], peak={},
               done={}, n_bad=0, n_records=0, original=False, header_incomplete=False,
               resumes=[], notices=[], code=None, env={}, cut_line=None, bad_lines=[])
    if lines and lines[0].startswith("run:") and not text.endswith("\n"):
        # Our scripts end every line with its newline in one write: a last line without one was cut by
        # a kill, and may still parse with a wrong value (step_avg:2 of step_avg:26.14ms; test_acc:0.9).
        log["cut_line"] = lines.pop()
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
        header = body[1:rules[1]] if rules[0] == 0 and len(rules) > 1 else body[:rules[0]]
        log["code"], log["env"] = header_facts(header)
        body = body[rules[-1] + 1:]
    steps = {}
    first_line = len(lines) - len(body) + 1  # body is the end of the file: its line numbers in the file
    for number_in_file, line in enumerate(body, first_line):
        if not RECORD_START.match(line):
            continue  # 'Running pytorch ...', comments, nvidia-smi output: not records
        try:
            name, head, f = split_record(line)
            if name == "trial":
                log["trials"].append(parse_trial(f))
            elif name == "step":
                s = parse_step(head, f)
                steps[(s["step"], s["val_loss"] is not None)] = s
            elif name == "config":
                log["config"] = f
            elif name == "peak_memory":  # one per process of a resumed run: the run's peak is the max
                for key, unit_key in (("allocated_mib", "allocated"), ("reserved_mib", "reserved"),
                                      ("max_rss_mib", "max_rss")):
                    value = number(f.get(unit_key, "nan"), "MiB")
                    log["peak"][key] = np.fmax(log["peak"].get(key, math.nan), value)
            elif name == "done":
                log["done"] = f
            elif name == "resume":
                log["resumes"].append(parse_resume(f))
                log["done"] = {}
            elif name == "warning":
                log["notices"].append(f)
            elif name == "run":
                log["run"], log["kind"] = f, head
            else:
                continue  # a record this reader does not know: new records may be added
            log["n_records"] += 1
        except (BadRecord, KeyError, IndexError) as e:
            log["n_bad"] += 1
            why = f"no {e.args[0]} key" if isinstance(e, KeyError) else str(e) or "incomplete"
            log["bad_lines"].append((number_in_file, why, line))
    log["steps"] = sorted(steps.values(), key=lambda s: s["step"])
    if "gpu" in log["run"]:
        log["run"]["gpu"] = gpu_name(log["run"]["gpu"])
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
# Statistics: expected best-of-k (Dodge et al. 2019; Tang et al. 2020), P(A > B), Holm, t-tests

def comb_ratio(m, n, k):
    """C(m, k) / C(n, k) elementwise for whole numbers 0 <= m <= n (arrays broadcast): the
    chance that k distinct draws out of n all land among m given ones. 0 where m < k, nan where
    n < k (k distinct draws do not exist)."""
    m, n, k = (np.rint(np.asarray(x, float)).astype(np.int64) for x in (m, n, k))
    log_factorial = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, max(int(n.max(initial=0)), 1) + 1)))])
    lf = lambda i: log_factorial[np.maximum(i, 0)]  # the clipped entries are masked out below
    out = np.exp(lf(m) - lf(m - k) - lf(n) + lf(n - k))
    return np.where(n >= k, np.where(m >= k, out, 0.0), np.nan)


def selection_weights(val, k, counts=None, replace=True):
    """Probability that each trial of a pool is the one kept by a random search of budget k.

    The search draws k trials (trial j with probability counts_j / sum(counts); counts = 1 for the
    plain pool, a seed-bootstrap multiplicity otherwise) and keeps the best by validation score;
    when several drawn trials tie for the best, one of the tied draws is kept uniformly at random.
    With replacement (Dodge et al.), with F the weighted CDF of the validation scores, the best
    value is v_g with probability p_g = F(v_g)^k - F(v_g-)^k. Without replacement (Tang et al.:
    k distinct trials, the copies of a resampled trial counting as distinct), F^k becomes the
    chance that all k draws land at or below v_g, C(#<=v_g, k) / C(N, k); averaged over all
    k-subsets of the pool, this is an unbiased estimate of the expected best of k. Ties share
    p_g in proportion to their counts. Shapes: val (N,); counts None or (..., N); k a scalar, or
    an array (K,) of budgets, which adds a leading axis: (K, ..., N). Rows where every count is
    0, and budgets above the pool size without replacement, come back nan.
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
        high, low = cum[..., ends], cum[..., starts] - c[..., starts]
        kk = np.asarray(k, float).reshape(np.shape(k) + (1,) * high.ndim)
        if replace:
            p_group = (high / total) ** kk - (low / total) ** kk
        else:
            p_group = comb_ratio(high, total, kk) - comb_ratio(low, total, kk)
        group_count = high - low
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


def weighted_quantiles(w, x, qs):
    """The q-quantiles (smallest x with P(X <= x) >= q) of the distribution putting weight w_i
    on x_i; w may carry leading batch dimensions. Returns one array per q."""
    order = np.argsort(x, kind="stable")
    xs = np.asarray(x, float)[order]
    cum = np.cumsum(np.asarray(w)[..., order], axis=-1)
    bad = np.isnan(cum[..., -1])
    return [np.where(bad, np.nan, xs[np.argmax(cum >= q * cum[..., -1:] - 1e-12, axis=-1)]) for q in qs]


def bootstrap_best_of_k(val, test, k, draws, rng, replace=True):
    """The study's procedure, repeated: draw k trials (with replacement, or k distinct ones),
    keep the best by validation (ties: a uniformly random one of the tied draws), record its
    test score. Without replacement and k above the pool size: nan."""
    n = len(val)
    if replace:
        idx = rng.integers(0, n, size=(draws, k))
    elif k > n:
        return np.full(draws, np.nan)
    else:
        idx = np.argsort(rng.random((draws, n)), axis=1)[:, :k]
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


def selection_weights_rows(val, ks, replace=True):
    """selection_weights for many pools at once, one per row of val (R, N), every count 1, for
    each budget in ks: (K, R, N). The best value is v with probability (#<=v/N)^k - (#<v/N)^k
    (without replacement: C(#<=v, k) / C(N, k) - C(#<v, k) / C(N, k)), shared equally by its ties."""
    n = val.shape[-1]
    order = np.argsort(val, axis=-1)
    first, end = tie_bounds(np.take_along_axis(val, order, axis=-1))
    k = np.asarray(ks, float)[:, None, None]
    if replace:
        p = (end / n) ** k - (first / n) ** k
    else:
        p = comb_ratio(end, n, k) - comb_ratio(first, n, k)
    w = np.empty((len(k),) + val.shape)
    np.put_along_axis(w, np.broadcast_to(order, w.shape), p / (end - first), axis=-1)
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
    if math.isinf(t):
        return 0.0
    return betainc_regularized(df / 2.0, 0.5, df / (df + t * t))


def t_below_p(t, df):
    """P(T <= t): the one-sided p-value of a t statistic for the alternative 'below'."""
    two_sided = t_two_sided_p(t, df)
    return two_sided / 2 if t < 0 else 1 - two_sided / 2


def welch_se_df(a, b):
    """Welch's standard error of mean(a) - mean(b) and its degrees of freedom, along axis 0 (a, b:
    arrays with at least 2 rows; df is nan where neither side has any spread)."""
    va, vb = a.var(axis=0, ddof=1) / len(a), b.var(axis=0, ddof=1) / len(b)
    with np.errstate(invalid="ignore", divide="ignore"):
        df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return np.sqrt(va + vb), df


def welch(a, b):
    """Welch's unequal-variance t-test: (t, df, two-sided p); nan when a side has < 2 values."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan, math.nan
    se, df = welch_se_df(a, b)
    if se == 0:
        return math.nan, math.nan, math.nan  # no spread at all: a t-test says nothing
    t = (a.mean() - b.mean()) / se
    return t, df, t_two_sided_p(t, df)


def one_sample_below(x, target):
    """One-sided one-sample t-test of 'the mean is below target': (t, one-sided p); nan with
    fewer than 2 values. No spread at all gives t = -inf or +inf."""
    x = np.asarray(x, float)
    if len(x) < 2:
        return math.nan, math.nan
    diff, se = x.mean() - target, x.std(ddof=1) / math.sqrt(len(x))
    t = diff / se if se > 0 else (-math.inf if diff < 0 else math.inf)
    return t, t_below_p(t, len(x) - 1)


def runs_needed(mean, sd, target, alpha):
    """The record rule's 'runs needed': the smallest number of runs n at which the one-sided
    one-sample t-test of 'mean < target' gives p < alpha, if the n runs had the observed mean and
    sd (a plug-in count, not a power calculation: at that n a new sample passes about half the
    time). None when it does not exist: mean not below the target, sd unknown, or n above
    MAX_RUNS_NEEDED."""
    if math.isnan(mean) or math.isnan(sd) or mean >= target:
        return None
    if sd == 0:
        return 2
    passes = lambda n: t_below_p((mean - target) * math.sqrt(n) / sd, n - 1) < alpha
    if not passes(MAX_RUNS_NEEDED):
        return None
    fails, ok = 1, 2  # p falls as n grows: double, then bisect
    while not passes(ok):
        fails, ok = ok, 2 * ok
    while ok - fails > 1:
        mid = (fails + ok) // 2
        fails, ok = (fails, mid) if passes(mid) else (mid, ok)
    return ok


def runs_test_p(order):
    """Exact Wald-Wolfowitz runs test of a two-symbol sequence ('bcbcbb'): P(R <= observed R),
    R the number of runs (maximal blocks of one symbol), over all orders of the same symbols.
    A small p says the symbols come in blocks; nan when one symbol is absent."""
    symbols = sorted(set(order))
    if len(symbols) != 2:
        return math.nan
    n1, n2 = order.count(symbols[0]), order.count(symbols[1])
    observed = 1 + sum(x != y for x, y in zip(order, order[1:]))

    def orders_with(r):  # how many orders have exactly r runs
        k = r // 2
        if r % 2 == 0:
            return 2 * math.comb(n1 - 1, k - 1) * math.comb(n2 - 1, k - 1)
        return math.comb(n1 - 1, k - 1) * math.comb(n2 - 1, k) + math.comb(n1 - 1, k) * math.comb(n2 - 1, k - 1)

    return sum(orders_with(r) for r in range(2, observed + 1)) / math.comb(n1 + n2, n1)


# ----------------------------------------------------------------------------------------------
# MNIST: the pool of trials

def cell_name(model, hidden):
    return f"{model} h={hidden}"  # a model is named by its key in MODELS of train_mnist_ffn.py


def matched_hidden_keys(config):
    """{model: the config: key that lists its parameter-matched hidden sizes}: matched_hidden_<model>,
    and matched_hidden alone in logs written before there were more than two models (GeGLU's)."""
    keys = {k[len("matched_hidden_"):]: k for k in config if k.startswith("matched_hidden_")}
    if "matched_hidden" in config:
        keys.setdefault("geglu", "matched_hidden")
    return keys


def is_scope_key(key):
    return key in MNIST_SCOPE_KEYS or key.startswith("matched_hidden_")


def trial_key(t, epochs=None):
    """A trial's identity; `epochs` stands in for a trial line without an epochs: key."""
    return (t["model"], t["hidden"], t["batch_size"], t["lr"], t["seed"],
            t["epochs"] if t["epochs"] is not None else epochs)


def grid_of(config):
    """The set of trial keys a train_mnist_ffn.py config: record promises (with param_match:1, each
    model also at the sizes its matched_hidden_<model> key lists: without it those keys only name
    the sizes, the run trains hidden: alone); None when the record does not say."""
    try:
        ints = lambda key: [int(v) for v in config[key].split(",") if v]
        models = config["models"].split(",")
        hidden, batch_sizes, seeds, epochs = ints("hidden"), ints("batch_sizes"), ints("seeds"), int(config["epochs"])
        lrs = [float(v) for v in config["lrs"].split(",")]
        matched = {m: [int(v) for v in config[key].split(",") if v] for m, key in matched_hidden_keys(config).items()
                   if config.get("param_match") == "1"}
    except (KeyError, ValueError):
        return None
    sizes = {m: hidden + [h for h in dict.fromkeys(matched.get(m, [])) if h not in hidden] for m in models}
    return {(m, h, bs, lr, s, epochs) for m in models for h in sizes[m] for bs in batch_sizes for lr in lrs
            for s in seeds}


TRIAL_FIELDS = ("model", "hidden", "batch_size", "lr", "seed")


def describe_missing(missing, expected, most=5):
    """Which trials of a grid are missing, in few words: whole slices first ('every trial with
    batch_size=64'; slices fixing one key, then two), the rest one by one (`most` at most)."""
    left, parts = set(missing), []
    while left:
        best = None
        for dims in itertools.chain(itertools.combinations(range(5), 1), itertools.combinations(range(5), 2)):
            for values in {tuple(t[d] for d in dims) for t in left}:
                part = {t for t in expected if tuple(t[d] for d in dims) == values}
                covered = len(part & left)
                if covered > 1 and part <= missing and (best is None or covered > best[2]):
                    best = (dims, values, covered)
        if best is None:
            break
        dims, values, covered = best
        parts.append("every trial with " + ", ".join(f"{TRIAL_FIELDS[d]}={v:g}" if d == 3 else f"{TRIAL_FIELDS[d]}={v}"
                                                     for d, v in zip(dims, values)) + f" ({covered})")
        left -= {t for t in left if tuple(t[d] for d in dims) == values}
    singles = [" ".join(f"{f}={v:g}" if f == "lr" else f"{f}={v}" for f, v in zip(TRIAL_FIELDS, t))
               for t in sorted(left)]
    parts += singles[:most] + ([f"and {len(singles) - most} more"] if len(singles) > most else [])
    return "; ".join(parts)


def check_mnist_logs(logs, warnings, notes):
    """Warnings for MNIST logs that did not finish, lack trials of the grid their config: record
    promises (and which), or were pooled with logs of another search space or other code.
    Appends to notes[(model, hidden)] what touches each pool; returns the missing trials."""
    present = {trial_key(t, int(log["config"]["epochs"]) if log["config"].get("epochs", "").isdigit() else None)
               for log in logs for t in log["trials"]}
    missing_all = []
    for log in dict((l["path"], l) for l in logs).values():  # a file given twice is checked once
        name = Path(log["path"]).name
        again = f"; `python train_mnist_ffn.py --resume {log['path']}` finishes it" if log["config"] else ""
        if not log["done"]:
            warnings.append(f"{name}: no done: record: the run did not finish (killed?){again}")
        elif log["done"].get("status", "ok") != "ok":
            warnings.append(f"{name}: the run ended with status:{log['done']['status']}{again}")
        expected = grid_of(log["config"])
        if expected is None:
            warnings.append(f"{name}: no config: record with the grid: missing trials cannot be checked")
            continue
        missing = expected - present
        if missing:
            warnings.append(f"{name}: {len(missing)} of the {len(expected)} trials of its grid missing (in no "
                            f"log read): {describe_missing(missing, expected)}")
            for (m, h), count in sorted(Counter(t[:2] for t in missing).items()):
                size = sum(1 for t in expected if t[:2] == (m, h))
                notes.setdefault((m, h), []).append(f"{cell_name(m, h)}: {count} of the {size} trials of the "
                                                    f"grid missing (the run did not finish)")
            missing_all += [dict(zip(TRIAL_FIELDS + ("epochs",), t), log=log["path"]) for t in sorted(missing)]
    distinct = list(dict((l["path"], l) for l in logs).values())
    if len(distinct) > 1:
        keys = sorted(k for k in set().union(*(l["config"] for l in distinct))
                      if len({l["config"].get(k) for l in distinct}) > 1)
        files = ", ".join(Path(l["path"]).name for l in distinct)
        if not all(is_scope_key(k) for k in keys):
            warnings.append(f"MNIST logs of different grids pooled ({files}): their config: records differ "
                            f"in {', '.join(keys)}")
        if len({l["code"] for l in distinct}) > 1:
            warnings.append(f"MNIST logs of different code pooled ({files}): the script source in their "
                            f"headers differs ({len({l['code'] for l in distinct})} versions)")
    return missing_all


def study_signature(log):
    """What must agree between logs whose trials share a pool: the config: record apart from the
    keys that only widen the pool, and the code."""
    return (tuple(sorted((k, v) for k, v in log["config"].items() if not is_scope_key(k))), log["code"])


def build_pools(logs, warnings, keep_nonfinite=True):
    """Trials of every MNIST log -> ({(model, hidden): pool}, {(model, hidden): [notes]}, missing
    trials). A trial is identified by (model, hidden, batch_size, lr, seed, epochs): the first
    occurrence is kept (files in the order given), so a log passed twice, or a copy beside the
    reference log, counts once. Trials whose train_loss is not finite (the training diverged)
    stay in with the accuracy they reached (a search that draws a diverging setting pays for it)
    unless not keep_nonfinite (--drop-nonfinite); trials with a nan accuracy cannot be ranked and
    are always left out. A cell (model, hidden) none of whose trials is left gets no pool: it is
    listed in empty[(model, hidden)] (why) and named in one warning."""
    notes = {}
    missing = check_mnist_logs(logs, warnings, notes)
    seen, duplicates, differing, read = {}, 0, 0, {}
    nan_dropped, diverged = Counter(), Counter()
    for log in logs:
        for t in log["trials"]:
            key = trial_key(t)
            if key in read:
                duplicates += 1
                first = read[key]
                differing += (first["val_acc"], first["test_acc"]) != (t["val_acc"], t["test_acc"])
                continue
            read[key] = t
            if not (math.isfinite(t["val_acc"]) and math.isfinite(t["test_acc"])):
                nan_dropped[(t["model"], t["hidden"])] += 1
                continue
            seen[key] = dict(t, signature=study_signature(log))
            if t["train_loss"] is not None and not math.isfinite(t["train_loss"]):
                diverged[(t["model"], t["hidden"])] += 1
                if not keep_nonfinite:
                    del seen[key]
    if duplicates:
        warnings.append(f"{duplicates} repeated MNIST trials (same model, hidden, batch_size, lr, "
                        f"seed, epochs) ignored, the first occurrence kept"
                        + (f"; {differing} of them had different accuracies" if differing else ""))
    if nan_dropped:
        warnings.append(f"{sum(nan_dropped.values())} MNIST trials with a nan (non-finite) accuracy left out of "
                        f"the pool: they cannot be ranked")
        for (m, h), n in sorted(nan_dropped.items()):
            notes.setdefault((m, h), []).append(f"{cell_name(m, h)}: {n} trial(s) with a nan accuracy left out")
    if diverged:
        cells = ", ".join(f"{cell_name(m, h)}: {n}" for (m, h), n in sorted(diverged.items()))
        if keep_nonfinite:
            warnings.append(f"{sum(diverged.values())} MNIST trials with a non-finite train_loss (diverged: nan or "
                            f"inf) kept in the pool with the accuracy they reached (a search that draws a diverging "
                            f"setting pays for it): {cells}; --drop-nonfinite leaves them out")
        else:
            warnings.append(f"{sum(diverged.values())} MNIST trials with a non-finite train_loss (diverged: nan "
                            f"or inf) left out of the pool (--drop-nonfinite): {cells}; this flatters the model "
                            f"that diverges more often")
        for (m, h), n in sorted(diverged.items()):
            notes.setdefault((m, h), []).append(
                f"{cell_name(m, h)}: {n} diverged trial(s) " + ("kept" if keep_nonfinite else "left out"))
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
        # the count the trainer logged (a log without params: leaves it unknown, never guessed)
        params = np.nanmedian([t["params"] for t in ts]) if any(not math.isnan(t["params"]) for t in ts) else math.nan
        out[(model, hidden)] = dict(
            model=model, hidden=hidden, params=float(params),
            val=np.array([t["val_acc"] for t in ts]), test=np.array([t["test_acc"] for t in ts]),
            seed=np.array([t["seed"] for t in ts]), batch_size=np.array([t["batch_size"] for t in ts]),
            lr=np.array([t["lr"] for t in ts]), signatures={t["signature"] for t in ts})
        if len(out[(model, hidden)]["signatures"]) > 1:
            notes.setdefault((model, hidden), []).append(
                f"{cell_name(model, hidden)}: trials from logs of different grid settings or code")
    empty = {}  # cells read whose every trial was left out: no pool, shown as missing
    for m, h in sorted({key[:2] for key in read} - set(out)):
        ts = [t for key, t in read.items() if key[:2] == (m, h)]
        why = Counter("nan accuracy" if not (math.isfinite(t["val_acc"]) and math.isfinite(t["test_acc"])) else
                      "diverged, --drop-nonfinite" if t["train_loss"] is not None and not math.isfinite(t["train_loss"])
                      else "other epochs" for t in ts)
        empty[(m, h)] = f"every one of its {len(ts)} trials left out (" + ", ".join(
            f"{n} {w}" for w, n in why.most_common()) + ")"
    if empty:
        warnings.append(f"{len(empty)} MNIST cell(s) with no trial left, shown as missing: "
                        + "; ".join(f"{cell_name(*c)}: {why}" for c, why in empty.items()))
    return out, notes, missing, empty


def resampling_work(mnist_logs, gpt_logs, args):
    """An upper bound on the array elements the resampling of these logs touches with these flags
    (what time and memory grow with): every search simulated (--bootstrap draws of k trials, or of
    the whole pool without replacement), the seed bootstrap and the label permutations of every
    comparison (--resamples x budgets x both pools' trials), the equal-loss bootstrap of every GPT
    group (--resamples x runs x validation points). Counted from the trial and step lines before
    the pools are built, so repeated trials count twice: it only has to be of the right size."""
    cells = Counter((t["model"], t["hidden"]) for log in mnist_logs for t in log["trials"])
    per_k = sum(args.k) if args.estimator == "dodge" else len(args.k) * max(cells.values(), default=0)
    work = args.bootstrap * per_k * len(cells)
    biggest = max(cells.values(), default=0)
    for n in cells.values():  # a model's pool is in at most two comparisons with the baseline (equal size, equal parameters)
        work += 2 * 2 * args.resamples * len(args.k) * (n + biggest)
    for log in gpt_logs:
        work += 2 * args.resamples * sum(1 for s in log["steps"] if s["val_loss"] is not None)
    return work


def curve_ks(n):
    if n <= 1000:
        return np.arange(1, n + 1)
    return np.unique(np.round(np.geomspace(1, n, MAX_CURVE_POINTS)).astype(int))


def analyse_pool(pool, ks, bootstrap, rng, replace=True):
    """Exact expected best-of-k for k = 1..N and the bootstrap for the k of --k, with the
    central 68% (16th to 84th percentile) of the selected trial's scores."""
    curve_k = curve_ks(len(pool["val"]))
    w = selection_weights(pool["val"], curve_k, replace=replace)  # (K, N)
    ev, ev_sd = weighted_mean_sd(w, pool["val"])
    et, et_sd = weighted_mean_sd(w, pool["test"])
    per_k = {}
    for k in ks:
        wk = selection_weights(pool["val"], k, replace=replace)
        v, vsd = weighted_mean_sd(wk, pool["val"])
        t, tsd = weighted_mean_sd(wk, pool["test"])
        lo, hi = weighted_quantiles(wk, pool["test"], BAND)
        boot = bootstrap_best_of_k(pool["val"], pool["test"], k, bootstrap, rng, replace)
        per_k[k] = dict(expected_val=v, expected_val_sd=vsd, expected_test=t, expected_test_sd=tsd,
                        expected_test_p16=float(lo), expected_test_p84=float(hi),
                        bootstrap_test_mean=boot.mean(),
                        bootstrap_test_sd=boot.std(ddof=1) if bootstrap > 1 else math.nan)
    curve = dict(k=curve_k, expected_val=ev, expected_val_sd=ev_sd, expected_test=et,
                 expected_test_sd=et_sd)
    for name, scores in (("val", pool["val"]), ("test", pool["test"])):
        curve[f"expected_{name}_p16"], curve[f"expected_{name}_p84"] = weighted_quantiles(w, scores, BAND)
    return per_k, curve


def compare_pools(a, b, ks, resamples, rng, replace=True):
    """P(A > B) for the test accuracy of the validation-selected best of k, per k: the value on
    the whole pool; a 95% interval from a seed bootstrap (both pools resampled with the same
    seeds, so the pairing is kept); a two-sided p-value from a paired permutation test."""
    seeds = np.union1d(a["seed"], b["seed"])
    counts = rng.multinomial(len(seeds), np.full(len(seeds), 1.0 / len(seeds)), size=resamples)
    ca = counts[:, np.searchsorted(seeds, a["seed"])]
    cb = counts[:, np.searchsorted(seeds, b["seed"])]
    ks = np.asarray(ks)
    points = prob_greater(a["test"], selection_weights(a["val"], ks, replace=replace),
                          b["test"], selection_weights(b["val"], ks, replace=replace))  # (K,)
    boots = prob_greater(a["test"], selection_weights(a["val"], ks, ca, replace),
                         b["test"], selection_weights(b["val"], ks, cb, replace))  # (K, resamples)
    results = []
    for k, point, boot in zip(ks, points, boots):
        point = float(point)
        boot = boot[~np.isnan(boot)]  # a resample may hold no seed of one model (or too few trials)
        if len(seeds) < 2 or len(boot) == 0:
            lo = hi = math.nan  # one seed: nothing to resample
        else:
            lo, hi = np.percentile(boot, [2.5, 97.5])
        results.append(dict(k=int(k), p_better=point, ci95=[float(lo), float(hi)],
                            seeds=int(len(seeds))))
    for r, p, n_pairs in zip(results, *permutation_test(a, b, ks, points, resamples, rng, replace)):
        r.update(p_value=p, pairs=n_pairs)
    return results


def permutation_test(a, b, ks, observed, permutations, rng, replace=True):
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
    if len(ia) < 2 or np.isnan(observed).all():
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
        null = prob_greater_rows(arrays["test"][0], selection_weights_rows(arrays["val"][0], ks, replace),
                                 arrays["test"][1], selection_weights_rows(arrays["val"][1], ks, replace))
        as_extreme += np.sum(np.abs(null - 0.5) >= np.abs(observed - 0.5)[:, None] - 1e-12, axis=1)
    p = (as_extreme + 1) / (permutations + 1)
    return [float(x) if not math.isnan(o) else math.nan for x, o in zip(p, observed)], [int(len(ia))] * len(ks)


def add_verdicts(comparisons, alpha):
    """p_adjusted (Holm over every comparison given: one family) and the verdict of each."""
    adjusted = holm([c["p_value"] for c in comparisons])
    for c, adj in zip(comparisons, adjusted):
        c["p_adjusted"] = float(adj)
        if math.isnan(c["p_better"]):
            c["verdict"] = "not testable (k exceeds the pool)"
        elif math.isnan(adj):
            c["verdict"] = "not testable (fewer than 2 paired trials)"
        elif adj < alpha:
            c["verdict"] = f"{c['model'] if c['p_better'] > 0.5 else c['baseline']} better"
        else:
            c["verdict"] = "no detectable difference"


def mean_against_wins(c, model_pool, baseline_pool, replace):
    """Where the verdict names a winner whose mean E[test] is the lower one (P > 1/2 but E[test]
    lower, or the reverse), a note saying why: P counts how often one search ends higher, the mean also
    weighs by how much, so a side that wins most pairs can lose on the mean through rare
    collapses (searches whose k draws all hit a diverging learning rate). Adds the medians
    and the collapse probabilities to c (model_* and baseline_*), and c["mean_against_wins"]: the
    winner's side ("model" or "baseline"), or None; the figure's caption (mean_against_wins_caption)
    is made from these."""
    for side, pool in (("model", model_pool), ("baseline", baseline_pool)):
        w = selection_weights(pool["val"], c["k"], replace=replace)
        c[f"{side}_median_test"] = float(weighted_quantiles(w, pool["test"], [0.5])[0])
        c[f"{side}_p_collapse"] = float(w @ (pool["test"] < COLLAPSE_BELOW))
    gap, wins = c["model_expected_test"] - c["baseline_expected_test"], c["p_better"] - 0.5
    c["mean_against_wins"] = None
    if not (gap * wins < 0 and c["verdict"].endswith(" better")):
        return None  # they agree, or the verdict names no winner that the mean could contradict
    winner, loser = (("model", "baseline") if wins > 0 else ("baseline", "model"))
    c["mean_against_wins"] = winner
    text = (f"{c[winner]}'s search ends higher in {max(c['p_better'], 1 - c['p_better']):.0%} "
            f"of pairs (median test accuracy {c[winner + '_median_test']:.3f} against "
            f"{c[loser + '_median_test']:.3f}) yet has the lower mean E[test]: ")
    if c[f"{winner}_p_collapse"] > c[f"{loser}_p_collapse"]:
        text += (f"it collapses (test accuracy below {COLLAPSE_BELOW}; chance is 0.1) with probability "
                 f"{c[winner + '_p_collapse']:.1%} against {c[loser + '_p_collapse']:.1%}, and those rare "
                 f"collapses pull its mean down.")
    else:
        text += "its losses, though rarer, are larger than its wins."
    return text + " The verdict is about how often it wins (P), not about the mean."


def mean_against_wins_caption(c):
    """A figure's short form of mean_against_wins' note for comparison c, from what that function
    recorded in c (it decides, this only words it); None where mean and verdict agree."""
    if not c["mean_against_wins"]:
        return None
    w = c["mean_against_wins"]
    l = "baseline" if w == "model" else "model"
    text = (f"{c['model']} vs {c['baseline']}, h={c['model_hidden']}: the verdict is {c['verdict']} "
            f"(P = {c['p_better']:.2f}) though its mean is lower: {c[w]}'s search ends higher in "
            f"{abs(c['p_better'] - 0.5) + 0.5:.0%} of pairs (median "
            f"{c[w + '_median_test']:.3f} vs {c[l + '_median_test']:.3f}), ")
    if c[w + "_p_collapse"] > c[l + "_p_collapse"]:
        return text + (f"but collapses below {COLLAPSE_BELOW} in {c[w + '_p_collapse']:.1%} of searches "
                       f"(vs {c[l + '_p_collapse']:.1%}), which pulls its mean down")
    return text + "but its rarer losses are larger than its wins"


def mnist_models(logs, pools):
    """The models of the pools, in the order the logs' config: records list them (then by name)."""
    listed = [m for log in logs for m in log["config"].get("models", "").split(",")]
    return [m for m in dict.fromkeys(listed + sorted(m for m, _ in pools)) if any(mm == m for mm, _ in pools)]


def matched_pairs(logs, pools, baseline, warnings):
    """{model: [(baseline hidden, model hidden), ...]} from the logs' matched_hidden_<model> records
    (the model's size matched to each size of hidden:, in that order). The trainer decides the sizes;
    here they are only checked against this baseline's logged parameter counts: a pair whose counts
    differ by more than one of the model's hidden units was matched to another model (another
    --baseline), and the model gets no equal-parameter comparison, with a warning."""
    pairs = {}
    for log in logs:
        hidden = log["config"].get("hidden", "").split(",")
        for model, key in matched_hidden_keys(log["config"]).items():
            sizes = log["config"][key].split(",")
            if len(sizes) != len(hidden) or not all(v.isdigit() for v in sizes + hidden):
                warnings.append(f"{Path(log['path']).name}: {key}:{log['config'][key]} does not give one hidden "
                                f"size per size of hidden:{log['config'].get('hidden', '')}: ignored")
                continue
            for h, m in zip(hidden, sizes):
                if model != baseline and (baseline, int(h)) in pools and (model, int(m)) in pools:
                    pairs.setdefault(model, {}).setdefault(int(h), int(m))  # the first log read wins
    out = {}
    for model, by_h in pairs.items():
        off = [(h, m) for h, m in by_h.items()
               if abs(pools[(model, m)]["params"] - pools[(baseline, h)]["params"]) > pools[(model, m)]["params"] / m]
        if off:
            h, m = off[0]
            warnings.append(f"{model}'s parameter-matched sizes in the log are not matched to {baseline}'s counts "
                            f"({cell_name(model, m)}: {pools[(model, m)]['params']:.0f} parameters, "
                            f"{cell_name(baseline, h)}: {pools[(baseline, h)]['params']:.0f}): no equal-parameter "
                            f"comparison against {baseline} (the trainer matched them to another model)")
            continue
        out[model] = sorted(by_h.items())
    return out


def comparison_notes(c, pools, notes, replace):
    """The notes of one verdict cell: those of its two pools, trials from logs of different
    settings or code between them, and why the mean and P disagree where they do."""
    a, b = (c["model"], c["model_hidden"]), (c["baseline"], c["baseline_hidden"])
    out = notes.get(a, []) + notes.get(b, [])
    if len(pools[a]["signatures"] | pools[b]["signatures"]) > 1:
        out.append(f"{cell_name(*a)} and {cell_name(*b)}: trials from logs of different grid settings or code")
    why = mean_against_wins(c, pools[a], pools[b], replace)
    if why:
        out.append(f"k={c['k']}, {cell_name(*a)} vs {cell_name(*b)}: " + why)
    c["notes"] = out


def analyse_mnist(logs, args, warnings):
    rng = np.random.default_rng(args.seed)
    replace = args.estimator == "dodge"
    baseline = args.baseline or MNIST_BASELINE
    pools, notes, missing, empty = build_pools(logs, warnings, args.keep_nonfinite)
    models = mnist_models(logs, pools)
    result = dict(pools=pools, notes=notes, missing=missing, stats={}, curves={}, comparisons=[],
                  claim=[], models=models, baseline=baseline, empty=empty)
    for key, pool in pools.items():
        result["stats"][key], result["curves"][key] = analyse_pool(pool, args.k, args.bootstrap, rng, replace)
        too_big = [k for k in args.k if k > len(pool["val"])]
        if too_big and not replace:
            warnings.append(f"{cell_name(*key)}: k={','.join(map(str, too_big))} above its {len(pool['val'])} "
                            f"trials: no without-replacement (Tang) estimate")
    base_sizes = sorted(h for m, h in pools if m == baseline)
    result["hidden"] = base_sizes
    if pools and not base_sizes:
        warnings.append(f"no {baseline} trials in the MNIST logs (models: {', '.join(models)}): no comparisons; "
                        f"--baseline names the model the others are compared with")
    # Every model against the baseline at each of the baseline's sizes, then at equal parameter count
    # where the log names the model's matched sizes: one family for Holm's correction.
    pairs = [(m, h, h, "hidden") for m in models if m != baseline for h in base_sizes if (m, h) in pools]
    pairs += [(m, hm, hb, "params") for m, matched in matched_pairs(logs, pools, baseline, warnings).items()
              for hb, hm in matched]
    for model, hm, hb, match in pairs:
        a, b = (model, hm), (baseline, hb)
        for c in compare_pools(pools[a], pools[b], args.k, args.resamples, rng, replace):
            c.update(model=model, baseline=baseline, match=match, model_hidden=hm, baseline_hidden=hb,
                     model_params=pools[a]["params"], baseline_params=pools[b]["params"],
                     model_expected_test=result["stats"][a][c["k"]]["expected_test"],
                     baseline_expected_test=result["stats"][b][c["k"]]["expected_test"])
            result["comparisons"].append(c)
    rank = {m: i for i, m in enumerate(models)}
    result["comparisons"].sort(key=lambda c: (c["match"] != "hidden", c["k"], rank[c["model"]], c["baseline_hidden"]))
    add_verdicts(result["comparisons"], args.alpha)
    for c in result["comparisons"]:
        comparison_notes(c, pools, notes, replace)
    # the claim check averages every shared pool: it rests on whatever touches any of them
    for model in models:
        shared = [h for h in base_sizes if (model, h) in pools] if model != baseline else []
        noted = [cell_name(m, h) for h in shared for m in (model, baseline) if notes.get((m, h))]
        claim_notes = [f"the means include {len(noted)} of the {2 * len(shared)} pools with notes "
                       f"({', '.join(noted)}): see the pool table"] if noted else []
        for k in args.k if shared else []:
            g = float(np.mean([result["stats"][(model, h)][k]["expected_test"] for h in shared]))
            r = float(np.mean([result["stats"][(baseline, h)][k]["expected_test"] for h in shared]))
            result["claim"].append(dict(k=k, model=model, baseline=baseline, model_mean_test=g,
                                        baseline_mean_test=r, notes=claim_notes,
                                        agrees_with_claim=None if math.isnan(g - r) else bool(g > r)))
    result["claim"].sort(key=lambda c: (c["k"], rank[c["model"]]))
    return result


def estimator_name(args):
    return ("Dodge et al., k draws with replacement" if args.estimator == "dodge"
            else "Tang et al., k distinct trials, unbiased")


def log2_hidden_axis(ax, hiddens):
    ax.set_xscale("log", base=2)
    ax.set_xticks(hiddens)
    ax.set_xticklabels([str(h) for h in hiddens])
    ax.minorticks_off()


def interval_bars(ax, x, lo, hi, color):
    """Vertical bars from lo to hi (an interval that need not be centred on the plotted point)."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    ax.errorbar(x, (lo + hi) / 2, yerr=(hi - lo) / 2, fmt="none", ecolor=color, capsize=4, lw=1.2)


def model_colors(models):
    cmap = plt.get_cmap("tab10")
    return {m: cmap(i % cmap.N) for i, m in enumerate(models)}


def plot_mnist(res, args, out):
    pools, stats, models = res["pools"], res["stats"], res["models"]
    if not pools:
        return []  # every cell had every trial left out: nothing to draw (the warning and tables say so)
    colors = model_colors(models)
    files = []
    for k in args.k:
        fig, ax = plt.subplots(figsize=(6.4, 4.8))
        shown = set()
        for i, m in enumerate(models):
            # the baseline's sizes (those of the equal-size comparisons); a model that has none of
            # them (or when there is no baseline) at its own sizes
            hs = [h for h in res["hidden"] if (m, h) in pools] or sorted(h for mm, h in pools if mm == m)
            shown.update(hs)
            s = [stats[(m, h)][k] for h in hs]
            x = np.array(hs, float) * 2 ** (0.05 * (i - (len(models) - 1) / 2))  # side by side, bars apart
            ax.plot(x, [v["expected_test"] for v in s], marker="o", color=colors[m], label=f"{m}: expectation")
            interval_bars(ax, x, [v["expected_test_p16"] for v in s], [v["expected_test_p84"] for v in s], colors[m])
            ax.plot(x, [v["bootstrap_test_mean"] for v in s], ls="none", marker="x", color=colors[m], alpha=0.8,
                    label=f"{m}: mean of {args.bootstrap} simulated searches")
        log2_hidden_axis(ax, sorted(shown))
        n = max(len(p["val"]) for p in pools.values())
        noted = [key for key in pools if res["notes"].get(key)]
        ax.set_title(f"Test accuracy vs hidden dimension, best of k = {k} trials by validation\n"
                     f"expected best of k ({estimator_name(args)}; pool of {n} trials per point);\n"
                     f"bars: 16th-84th percentile of one search's outcome"
                     + (f"\n{len(noted)} of {len(pools)} pools carry notes (missing or left-out trials, "
                        f"mixed logs): see summary.md" if noted else ""), fontsize=9)
        ax.set_xlabel("Hidden dimension")
        ax.set_ylabel("Test accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8 if len(models) <= 3 else 6.5)
        # Where the verdict's winner has the lower mean, the figure alone would contradict the
        # verdict table: say why under it (summary.md's note says the same).
        why = [mean_against_wins_caption(c) for c in res["comparisons"] if c["k"] == k and c["match"] == "hidden"]
        why = [w for w in why if w]
        if why:
            fig.text(0.02, 0, "\n".join(why), ha="left", va="top", fontsize=7.5, wrap=True)
        files.append(save(fig, out / f"mnist_k{k}.png"))

    hiddens = sorted({h for _, h in pools})
    ncols = math.ceil(math.sqrt(len(hiddens)))
    nrows = math.ceil(len(hiddens) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.6 * nrows), squeeze=False)
    for ax, h in zip(axes.flat, hiddens):
        for m in models:
            if (m, h) not in pools:
                continue
            c = res["curves"][(m, h)]
            ax.plot(c["k"], c["expected_test"], color=colors[m], label=f"{m} test")
            ax.plot(c["k"], c["expected_val"], color=colors[m], ls="--", lw=1, label=f"{m} val")
            # Bands from k = 2: at k = 1 a search is one random trial, whose 16th-84th percentile spans
            # nearly every outcome (0.1 to 0.9) and would flatten the curves that matter.
            band = c["k"] >= 2
            ax.fill_between(c["k"][band], c["expected_test_p16"][band], c["expected_test_p84"][band],
                            color=colors[m], alpha=0.2)
            ax.fill_between(c["k"][band], c["expected_val_p16"][band], c["expected_val_p84"][band],
                            color=colors[m], alpha=0.07)
        for k in args.k:
            ax.axvline(k, color="grey", lw=0.6, ls=":")
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
    labels = [f"{m} {kind}" for m in models for kind in ("test", "val") if f"{m} {kind}" in handles]
    fig.legend([handles[l] for l in labels], labels, loc="lower center", ncol=4, fontsize=8,
               bbox_to_anchor=(0.5, -0.02 - 0.025 * math.ceil(len(handles) / 4)))
    k1 = [(c["expected_test_p16"][0], c["expected_test_p84"][0]) for c in res["curves"].values()]
    fig.suptitle(f"Expected best-of-k ({estimator_name(args)}): validation accuracy of the best trial "
                 f"(dashed) and test accuracy of that trial (solid);\nbands: 16th-84th percentile of one "
                 f"search's outcome, drawn from k = 2: at k = 1 (one random trial) they span "
                 f"{min(lo for lo, _ in k1):.2f} to {max(hi for _, hi in k1):.2f} and would flatten the curves",
                 fontsize=10)
    fig.tight_layout()
    files.append(save(fig, out / "mnist_expected_best.png"))

    if any(c["match"] == "hidden" for c in res["comparisons"]):
        files.append(plot_p_better([c for c in res["comparisons"] if c["match"] == "hidden"], res, args,
                                   out / "mnist_p_better.png"))
    matched = [c for c in res["comparisons"] if c["match"] == "params"]
    if matched:
        files.append(plot_param_match(matched, res, args, colors, out / "mnist_param_match.png"))
    return files


def plot_param_match(comparisons, res, args, colors, path):
    """Expected best-of-k test accuracy at equal parameter count: one panel per k, x the baseline's
    parameter count, each model at its matched size. The sizes go in the x tick labels, not
    beside the points, where they would cover the lines and the bars."""
    pools, stats, baseline = res["pools"], res["stats"], res["baseline"]
    models = [baseline] + [m for m in res["models"] if any(c["model"] == m for c in comparisons)]
    fig, axes = plt.subplots(1, len(args.k), figsize=(4.8 * len(args.k), 4.6), squeeze=False)
    for ax, k in zip(axes.flat, args.k):
        rows = [c for c in comparisons if c["k"] == k]
        ticks = sorted({c["baseline_hidden"] for c in rows})  # baseline sizes
        x_of = {h: pools[(baseline, h)]["params"] for h in ticks}
        sizes = {h: [f"{baseline} {h}"] for h in ticks}
        for i, m in enumerate(models):
            points = ([(h, h) for h in ticks] if m == baseline else
                      [(c["baseline_hidden"], c["model_hidden"]) for c in rows if c["model"] == m])
            if m != baseline:
                for hb, hm in points:
                    sizes[hb].append(f"{m} {hm}")
            # a little apart, so that the bars of the models do not cover each other
            x = [x_of[hb] * 2 ** (0.06 * (i - (len(models) - 1) / 2)) for hb, _ in points]
            s = [stats[(m, hm)][k] for _, hm in points]
            ax.plot(x, [v["expected_test"] for v in s], marker="o", color=colors[m], label=m)
            interval_bars(ax, x, [v["expected_test_p16"] for v in s], [v["expected_test_p84"] for v in s], colors[m])
        ax.margins(x=0.1)
        ax.set_xscale("log", base=2)
        ax.set_xticks([x_of[h] for h in ticks])
        ax.set_xticklabels([f"{x_of[h]:,.0f}\n" + "\n".join(sizes[h]) for h in ticks], fontsize=7)
        ax.minorticks_off()
        ax.set_title(f"k = {k}")
        ax.set_xlabel(f"parameters ({baseline}'s count), and each model's hidden size h there")
        ax.set_ylabel("expected test accuracy of best of k")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Equal parameter count (the sizes the training log matched): expected best-of-k test accuracy "
                 f"({estimator_name(args)});\nbars: 16th-84th percentile of one search's outcome; each model's "
                 f"exact count is in summary.md", fontsize=10)
    fig.tight_layout()
    return save(fig, path)


def plot_p_better(comparisons, res, args, path):
    """P(model > baseline) per hidden size and k, one panel per model: filled markers where the
    verdict survives Holm's correction (over every comparison of summary.md), open where not."""
    models = [m for m in res["models"] if any(c["model"] == m for c in comparisons)]
    ncols = min(3, len(models))
    nrows = math.ceil(len(models) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.6 * ncols, 4.2 * nrows + 0.4), squeeze=False)
    k_colors = plt.get_cmap("tab10")
    for ax, m in zip(axes.flat, models):
        rows_m = [c for c in comparisons if c["model"] == m]
        for i, k in enumerate(args.k):
            rows = sorted((c for c in rows_m if c["k"] == k), key=lambda c: c["model_hidden"])
            x = np.array([c["model_hidden"] for c in rows], float) * 2 ** ((i - (len(args.k) - 1) / 2) * 0.08)
            y = np.array([c["p_better"] for c in rows])
            lo = np.array([c["ci95"][0] for c in rows])
            hi = np.array([c["ci95"][1] for c in rows])
            color = k_colors(i % 10)
            ax.errorbar(x, y, yerr=[np.nan_to_num(y - lo), np.nan_to_num(hi - y)], fmt="none", ecolor=color,
                        capsize=3)
            survives = np.array([c["p_adjusted"] < args.alpha for c in rows], bool)
            ax.plot(x[survives], y[survives], "o", color=color, ms=7)
            ax.plot(x[~survives], y[~survives], "o", mfc="white", mec=color, mew=1.5, ms=7)
        ax.axhline(0.5, color="grey", lw=1, ls="--")
        ax.text(0.99, 0.5, "P = 0.5: no difference ", transform=ax.get_yaxis_transform(), ha="right", va="bottom",
                fontsize=7.5, color="dimgrey")
        log2_hidden_axis(ax, sorted({c["model_hidden"] for c in rows_m}))
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("Hidden dimension")
        ax.set_ylabel(f"P({m} > {res['baseline']})")
        ax.set_title(f"{m} against {res['baseline']}", fontsize=10)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(models):]:
        ax.axis("off")
    axes.flat[0].legend(handles=[matplotlib.lines.Line2D([], [], color=k_colors(i % 10), marker="o", ls="none",
                                                         label=f"k = {k}") for i, k in enumerate(args.k)],
                        fontsize=8, loc="best")
    fig.legend(handles=[matplotlib.lines.Line2D([], [], color="black", marker="o", ls="none",
                                                label=f"filled: significant after Holm (p < {args.alpha})"),
                        matplotlib.lines.Line2D([], [], color="black", marker="o", mfc="white", ls="none",
                                                label="open: not significant after Holm")],
               loc="lower center", ncol=2, fontsize=8, bbox_to_anchor=(0.5, -0.06 / nrows))
    n = len(res["comparisons"])
    fig.suptitle(f"P(model > {res['baseline']}), best-of-k test accuracy, equal hidden size; "
                 f"{estimator_name(args)};\nbars: 95% interval from resampling seeds; Holm's correction over all "
                 f"{n} comparisons of summary.md", fontsize=10)
    fig.tight_layout()
    return save(fig, path)


# ----------------------------------------------------------------------------------------------
# GPT: runs grouped into configurations

def parse_time(text):
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None


def gpt_run(log, target_loss, warnings):
    """One GPT log -> its curves, its final numbers and how it ended.

    A run is finished when its last validation is at its last step (num_iterations) and it ended
    with status ok (or wrote no done: record after that last step). An unfinished run (killed,
    interrupted, diverged, out of memory) has no final numbers: its last validation loss is
    reported as such, never as the final one."""
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
    done, total, last_step = log["done"], max(s["total"] for s in steps), steps[-1]["step"]
    status = done.get("status", "ok") if done else None
    finished = (status in ("ok", None) and bool(val) and val[-1]["step"] >= total
                and math.isfinite(val[-1]["val_loss"]))
    last_val = f"{val[-1]['val_loss']:.4f} at step {val[-1]['step']}" if val else "none"
    left_out = (f"left out of its group's numbers, drawn dashed (last validation loss: {last_val})")
    if status not in ("ok", None):
        ended = f"{status} at step {last_step}/{total}"
        warnings.append(f"{name}: the run ended with status:{status} at step {last_step}/{total}; {left_out}")
    elif not finished and done:  # a done: record, yet no final number: its last validation loss is nan
        bad_val = bool(val) and not math.isfinite(val[-1]["val_loss"])
        ended = f"{'non-finite validation loss' if bad_val else 'stopped'} at step {last_step}/{total}"
        warnings.append(f"{name}: its done: record is there, but " + (
            f"its last validation loss is {val[-1]['val_loss']} at step {val[-1]['step']} (diverged?)" if bad_val else
            f"the run stopped at step {last_step}/{total} without a validation at its last step") + f"; {left_out}")
    elif not finished:
        ended = f"stopped at step {last_step}/{total}" + ("" if log["original"] else " (no done: record)")
        warnings.append(f"{name}: " + ("" if log["original"] else "no done: record: ")
                        + f"the run stopped at step {last_step}/{total} (killed?); {left_out}")
    else:
        ended = "finished"
        if not done and not log["original"]:
            warnings.append(f"{name}: no done: record, though it reached its last step ({total}); its "
                            f"numbers are used")
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
    world_size = log["run"].get("world_size", config.get("world_size", "?"))
    changes = []  # what a resume changed that the step time depends on, beyond continuing the run
    before = dict(world_size=world_size, gpu=log["run"].get("gpu"), torch=log["run"].get("torch"),
                  device_batch_size=config.get("device_batch_size"), compile=config.get("compile"))
    names = dict(world_size="world size", gpu="GPU", torch="torch")
    for r in log["resumes"]:
        for key, was in before.items():
            if r[key] is not None and was is not None and r[key] != was:
                changes.append(f"{names.get(key, key)} {was} -> {r[key]} at step {r['from_step']}")
                before[key] = r[key]  # a second resume is compared with the first
    if any(n.get("code_changed") == "1" for n in log["notices"]):
        changes.append("the script's code changed at a resume (warning: code_changed:1)")
    if changes:
        warnings.append(f"{name}: resumed with {'; '.join(changes)}: its step times mix both")
    peak = log["peak"]
    allocated = peak.get("allocated_mib", math.nan)
    peak_kind = "allocated" if not math.isnan(allocated) else (
        "max_rss" if not math.isnan(peak.get("max_rss_mib", math.nan)) else None)
    run = dict(path=log["path"], name=name, finished=finished, status=status, ended=ended,
               last_step=last_step, total=total,
               step_avg_ms=step_avg if finished else math.nan, last_step_avg_ms=step_avg,
               final_val_loss=final_val if finished else math.nan,
               last_val_loss=val[-1]["val_loss"] if val else math.nan,
               last_val_step=val[-1]["step"] if val else None,
               peak_memory_mib=float(allocated if peak_kind == "allocated" else peak.get("max_rss_mib", math.nan)),
               peak_memory_kind=peak_kind,
               tokens=float(max((tokens(s) for s in steps), default=math.nan)),
               seed=config.get("seed"), started=parse_time(log["run"].get("started")),
               gpu=log["run"].get("gpu", "?"), world_size=world_size, torch=log["run"].get("torch"),
               cuda=log["env"].get("cuda"), host=log["run"].get("host"), code=log["code"],
               resumed_from=[r["from_step"] for r in log["resumes"]], resume_changes=changes, repeat_of=None,
               val_step=np.array([s["step"] for s in val]), val_loss=np.array([s["val_loss"] for s in val]),
               val_time_ms=np.array([s["train_time_ms"] for s in val]),
               val_tokens=np.array([tokens(s) for s in val], float),
               train_step=np.array([s["step"] for s in train]),
               train_loss=np.array([s["train_loss"] for s in train]))
    run["target_loss"] = target_loss
    run["time_to_target_ms"], run["tokens_to_target"] = (math.nan, math.nan) if target_loss is None else \
        time_to_target(run["val_loss"], run["val_time_ms"], run["val_tokens"], target_loss)
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


def fineweb_tokens(log):
    """Whether a GPT log's run trained and validated on FineWeb's GPT-2 tokens, the data the record's
    3.28 is a target for: an original modded-nanogpt log (the record's own data), or a config: whose
    train_files and val_files lie in a fineweb10B folder (where data/cached_fineweb10B.py puts them;
    data/make_tiny_shards.py names its synthetic shards fineweb_*.bin too, but writes them elsewhere)
    with a vocab_size that holds GPT-2's tokens. A log that does not say is not taken as FineWeb."""
    if log["original"]:
        return True
    config = log["config"]
    files = [config.get("train_files"), config.get("val_files")]
    try:
        vocab = int(config.get("vocab_size", GPT2_VOCAB))
    except ValueError:
        return False
    return all(f is not None and "fineweb10b" in f.lower().replace("\\", "/").split("/")[:-1] for f in files) and \
        vocab >= GPT2_VOCAB


def run_target(log, args):
    """The target loss for a log's run: --target-loss when given, else 3.28 on FineWeb tokens, else None."""
    return args.target_loss if args.target_given or fineweb_tokens(log) else None


def mean_sd(x):
    x = np.asarray(x, float)
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return math.nan, math.nan
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else math.nan


def label_groups(groups):
    """Short labels: the MLP, plus a letter for the setting (the configuration apart from the
    MLP) when one MLP was run in several settings; summary.md's key table spells out each
    setting. An original modded-nanogpt log is labelled by its file name."""
    settings = {}
    for g in groups:
        if not g["original"]:
            g["setting"] = tuple(sorted((k, v) for k, v in g["config"].items() if k not in GPT_MLP_KEYS))
            settings.setdefault(g["setting"], chr(ord("A") + len(settings)) if len(settings) < 26
                                else f"S{len(settings) + 1}")
    per_mlp = Counter(g["mlp"] for g in groups if not g["original"])
    lettered = any(n > 1 for n in per_mlp.values())
    used = Counter()
    for g in groups:
        if g["original"]:
            g["letter"], label = None, Path(g["runs"][0]["name"]).stem
        else:
            g["letter"] = settings[g["setting"]]
            label = f"{g['mlp']} {g['letter']}" if lettered else g["mlp"]
        used[label] += 1
        g["label"] = label if used[label] == 1 else f"{label} #{used[label]}"
    return settings


def software_differences(a, b):
    """What differs between two sets of runs in GPU model, GPU count and software."""
    out = []
    for key in ("gpu", "world_size", "torch", "cuda"):
        va, vb = sorted({str(r[key]) for r in a}), sorted({str(r[key]) for r in b})
        if va != vb:
            out.append(f"{key} {','.join(va)} vs {','.join(vb)}")
    return out


def interleaving(runs, base_runs):
    """How the runs of a group ('c') and of its baseline ('b') followed each other, by start time.

    What drift of the machine does to a step-time comparison depends on the gap: how many runs
    later, on average, the group started than its baseline (mean position in the start order, c
    minus b). A steady drift of d ms per run shifts the difference of the mean step_avg by exactly
    gap x d. A B A B ... gives a gap of 1 (0 with one run more on one side), A B B A 0, one group
    first the number of runs per group. So the gap alone decides: interleaved when it is at most 1
    (no more exposed to drift than A B A B). Alternating as much as the counts allow is not
    enough when the counts differ: bbbbbbbbcb alternates all it can, yet its gap is 3.9. When the
    gap is larger, the verdict's words give the reason: one group ran first, or the runs come in
    blocks (an exact runs test), or, where neither shows, the gap itself (bbbcccbbbccc: 3 runs; a
    runs test of 12 runs cannot see blocks of three)."""
    none = dict(order=None, runs=None, runs_test_p=None, position_gap=None, interleaved=None)
    if not runs or not base_runs:
        return dict(none, verdict="n/a")
    starts = [(r["started"], "c") for r in runs] + [(r["started"], "b") for r in base_runs]
    if any(t is None for t, _ in starts):
        return dict(none, verdict="unknown: a log has no start time")
    if len({t for t, _ in starts}) < len(starts):
        return dict(none, verdict="unknown: runs share a start time")
    order = "".join(s for _, s in sorted(starts))
    n_runs = 1 + sum(x != y for x, y in zip(order, order[1:]))
    mean_position = lambda s: float(np.mean([i for i, x in enumerate(order, 1) if x == s]))
    gap = mean_position("c") - mean_position("b")
    p = runs_test_p(order)
    if abs(gap) <= 1 + 1e-9:  # the tolerance: a gap of exactly 1 (b c b c) computed in floats
        verdict = "interleaved"
    elif n_runs == 2:
        verdict = "not interleaved: one group ran first"
    elif p < 0.05:
        verdict = f"not interleaved: the runs come in blocks (runs test p={p:.2g})"
    else:
        verdict = (f"not interleaved: this group started {abs(gap):.1f} runs {'after' if gap > 0 else 'before'} "
                   f"its baseline on average")
    return dict(verdict=verdict, order=order, runs=n_runs, runs_test_p=p, position_gap=gap,
                interleaved=verdict == "interleaved")


def group_curves(runs):
    """The validation curves of finished runs on a common step grid (every validation step up to
    the shortest run's last), with loss, training time and tokens interpolated there: (R, S)."""
    last = min(r["val_step"][-1] for r in runs)
    step = np.unique(np.concatenate([r["val_step"] for r in runs]))
    step = step[step <= last].astype(float)
    at = lambda r, y: np.interp(step, r["val_step"], y)
    return dict(step=step, loss=np.array([at(r, r["val_loss"]) for r in runs]),
                time_ms=np.array([at(r, r["val_time_ms"]) for r in runs]),
                tokens=np.array([at(r, r["val_tokens"]) for r in runs]))


def first_reach(curves, level):
    """Where each row of curves (B, S) first comes down to its level (B,), linear between grid
    points: (index before, index at, fraction between them; nan where it never does)."""
    rows = np.arange(len(curves))
    below = curves <= level[:, None] + 1e-12
    i = np.argmax(below, axis=1)
    prev = np.maximum(i - 1, 0)
    y0, y1 = curves[rows, prev], curves[rows, i]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where((i > 0) & (y0 != y1), (y0 - level) / (y0 - y1), 0.0)
    return prev, i, np.where(below[rows, i], np.clip(frac, 0, 1), np.nan)


def value_at(x, prev, i, frac):
    rows = np.arange(len(x))
    return x[rows, prev] + frac * (x[rows, i] - x[rows, prev])


def equal_loss(runs, base_runs, rng, resamples):
    """The step and time difference at which a group and its baseline reach the same loss.

    Each side's mean validation curve (over its finished runs, on a common step grid) is followed
    until it first comes down to L, the final mean loss of the worse side (the lowest loss both
    reach); the steps and the mean training time there are compared. Negative: the group gets
    there first. The 95% interval resamples each side's runs (seeds) with replacement, when
    each side has two runs or more."""
    if not runs or not base_runs:
        return None
    cg, cb = group_curves(runs), group_curves(base_runs)

    def estimate(ig, ib):  # run indices (B, R) of each side -> level and (steps, time) per side
        lg, lb = cg["loss"][ig].mean(axis=1), cb["loss"][ib].mean(axis=1)
        level = np.maximum(lg[:, -1], lb[:, -1])
        sides = []
        for c, loss, idx in ((cg, lg, ig), (cb, lb, ib)):
            prev, i, frac = first_reach(loss, level)
            sides.append((value_at(np.broadcast_to(c["step"], loss.shape), prev, i, frac),
                          value_at(c["time_ms"][idx].mean(axis=1), prev, i, frac)))
        return level, sides

    level, ((sg, tg), (sb, tb)) = estimate(np.arange(len(runs))[None], np.arange(len(base_runs))[None])
    out = dict(loss=float(level[0]), steps=float(sg[0]), baseline_steps=float(sb[0]),
               delta_steps=float(sg[0] - sb[0]), time_ms=float(tg[0]), baseline_time_ms=float(tb[0]),
               delta_time_ms=float(tg[0] - tb[0]), delta_steps_ci95=[math.nan, math.nan],
               delta_time_ms_ci95=[math.nan, math.nan], resamples=0)
    # A single run's seed-to-seed spread is unknown: resampling the other side alone would give an
    # interval that takes the one run's curve as exact, so there is none unless both have two runs.
    if min(len(runs), len(base_runs)) > 1:
        _, ((sg, tg), (sb, tb)) = estimate(rng.integers(0, len(runs), (resamples, len(runs))),
                                           rng.integers(0, len(base_runs), (resamples, len(base_runs))))
        for key, d in (("delta_steps_ci95", sg - sb), ("delta_time_ms_ci95", tg - tb)):
            d = d[~np.isnan(d)]
            if len(d):
                out[key] = [float(v) for v in np.percentile(d, [2.5, 97.5])]
        out["resamples"] = resamples
    return out


def t_quantile(q, df):
    """The q-quantile of Student's t with df degrees of freedom (df may be fractional), by
    bisection on t_below_p (no scipy): t_quantile(0.975, 9) = 2.262."""
    lo, hi = -1e4, 1e4  # t_0.9999 at df 1 is 3183: well inside
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_below_p(mid, df) < q else (lo, mid)
    return (lo + hi) / 2


def increasing(x, y):
    """(x, y) with x strictly increasing, keeping the last of equal x values: train_time stays 0
    over the untimed first 10 steps, and np.interp needs increasing x."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.r_[np.diff(x) > 0, True]
    return x[keep], y[keep]


def loss_difference(runs, base_runs, axis):
    """A group's validation loss minus its baseline's, at equal step or at equal training time
    (axis 'step' or 'time'): every run of both sides interpolated onto one grid (every validation
    step of both, or the group's mean training times at its validation steps, up to where the
    shortest run ends), then averaged. Returns the grid (x: steps or seconds), the difference of
    the means, its 95% interval (Welch t at each point, from the seeds; nan unless both sides have
    two runs), and each run of both sides minus the baseline's mean."""
    if axis == "step":
        xy = lambda r: (r["val_step"], r["val_loss"])
        end = min(r["val_step"][-1] for r in runs + base_runs)
        grid = np.unique(np.concatenate([r["val_step"] for r in runs + base_runs])).astype(float)
    else:
        xy = lambda r: (r["val_time_ms"] / 1000, r["val_loss"])
        end = min(r["val_time_ms"][-1] for r in runs + base_runs) / 1000
        grid = np.unique(np.r_[group_curves(runs)["time_ms"].mean(axis=0) / 1000, end])
    grid = grid[grid <= end]
    at = lambda rs: np.array([np.interp(grid, *increasing(*xy(r))) for r in rs])
    g, b = at(runs), at(base_runs)
    diff = g.mean(axis=0) - b.mean(axis=0)
    half = np.full(len(grid), math.nan)
    if len(runs) > 1 and len(base_runs) > 1:
        se, df = welch_se_df(g, b)
        for j in range(len(grid)):  # se 0: every run of both sides at the same loss here (step 0)
            half[j] = t_quantile(0.975, df[j]) * se[j] if se[j] > 0 else 0.0
    return dict(x=grid, diff=diff, lo=diff - half, hi=diff + half, runs=g - b.mean(axis=0),
                base_runs=b - b.mean(axis=0))


def independent_runs(g):
    """A group's finished runs, one per seed: runs of one group (the same config: apart from
    GPT_REPLICATE_KEYS, on the same GPU model and count) that share their seed are one measurement
    (the same command run again), so only the first finished one started counts; analyse_gpt
    marks the others repeat_of and warns."""
    return [r for r in g["runs"] if r["finished"] and not r.get("repeat_of")]


def mark_repeated_seeds(g, warnings):
    """Marks the runs of group g that repeat a seed of another run (r["repeat_of"]: the file that
    counts), keeping the first finished one started; one warning per repeated seed."""
    by_seed = {}
    for r in g["runs"]:
        if r["seed"] is not None and not g["original"]:
            by_seed.setdefault(r["seed"], []).append(r)
    for seed, rs in by_seed.items():
        if len(rs) < 2:
            continue
        rs.sort(key=lambda r: (not r["finished"], r["started"] is None, r["started"] or 0, r["path"]))
        for r in rs[1:]:
            r["repeat_of"] = rs[0]["name"]
        text = (f"{g['label']}: {len(rs)} runs share seed {seed} and every setting ({', '.join(r['name'] for r in rs)}): "
                f"one measurement, not {len(rs)} replicates; only {rs[0]['name']} counts (rule: a group's runs with "
                f"the same seed: in config: are one run, whatever their {', '.join(sorted(GPT_REPLICATE_KEYS - {'seed'}))})")
        warnings.append(text)
        g["notes"].append(text)


def record_rule(losses, target, alpha):
    """The speedrun's rule for a loss claim: mean final validation loss below the target by a
    one-sided one-sample t-test at p < alpha; and the runs needed at the observed mean and sd."""
    losses = [x for x in losses if not math.isnan(x)]
    mean, sd = mean_sd(losses)
    t, p = one_sample_below(losses, target)
    needed = runs_needed(mean, sd, target, alpha) if len(losses) > 1 else None
    if not losses:
        verdict = "no finished run"
    elif len(losses) < 2:
        verdict = FEWER_THAN_2
    elif mean >= target:
        verdict = f"fails: mean not below {target}"
    elif p < alpha:
        verdict = "passes"
    else:
        verdict = "not yet"
    return dict(target=target, alpha=alpha, n=len(losses), mean=mean, sd=sd, t=t, p_value=p, verdict=verdict,
                runs_needed=needed, more_runs_needed=None if needed is None else max(0, needed - len(losses)))


def analyse_gpt(logs, args, warnings):
    rng = np.random.default_rng(args.seed)
    groups, runs = {}, []
    for log in logs:
        run = gpt_run(log, run_target(log, args), warnings)
        runs.append(run)
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
                                        original=log["original"], runs=[], notes=[]))
        g["runs"].append(run)
    groups = list(groups.values())
    settings = label_groups(groups)
    for g in groups:
        for r in g["runs"]:
            r["label"] = g["label"]
        mark_repeated_seeds(g, warnings)
        if g["runs"][0]["target_loss"] is None:
            c = g["config"]
            g["notes"].append(f"{g['label']}: not FineWeb GPT-2 tokens (train_files:{c.get('train_files', '?')} "
                              f"vocab_size:{c.get('vocab_size', '?')}): no target loss; --target-loss sets one")
        done = [r for r in g["runs"] if r["finished"]]
        if len(done) < len(g["runs"]):
            ended = Counter(r["ended"].split(" at ")[0] for r in g["runs"] if not r["finished"])
            g["notes"].append(f"{g['label']}: {len(g['runs']) - len(done)} of {len(g['runs'])} runs did not finish "
                              f"({', '.join(f'{n} {e}' for e, n in ended.items())}); its numbers are over the "
                              f"{len(done)} that did")
        mixed = [key for key in ("torch", "cuda") if len({r[key] for r in g["runs"]}) > 1]
        if mixed:
            text = f"{g['label']}: its runs used different software ({', '.join(mixed)})"
            warnings.append(text)
            g["notes"].append(text)
        if len({r["code"] for r in g["runs"]}) > 1:
            text = (f"{g['label']}: its runs are of different code (the script source in their headers "
                    f"differs: {len({r['code'] for r in g['runs']})} versions)")
            warnings.append(text)
            g["notes"].append(text)
        for r in g["runs"]:
            if r["resume_changes"]:
                g["notes"].append(f"{r['name']}: resumed with {'; '.join(r['resume_changes'])}")
    rows = [group_row(g, groups, args, warnings, rng) for g in groups]
    baseline = args.baseline or GPT_BASELINE
    if not any(g["mlp"] == baseline and not g["original"] for g in groups) and len({g["mlp"] for g in groups}) > 1:
        warnings.append(f"no {baseline} runs among the GPT logs (mlp: {', '.join(sorted({g['mlp'] for g in groups}))}): "
                        f"no comparisons; --baseline names the MLP the others are compared with")
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["mlp"] != baseline, rows[i]["label"]))
    runs.sort(key=lambda r: (r["started"] is None, r["started"] or 0, r["path"]))
    return dict(groups=[groups[i] for i in order], rows=[rows[i] for i in order], runs=runs, settings=settings,
                baseline=baseline)


def group_row(g, groups, args, warnings, rng):
    """One group's numbers over its finished runs, and its comparison with the baseline's group
    (--baseline, default relu2)."""
    runs = independent_runs(g)
    repeats = sum(1 for r in g["runs"] if r.get("repeat_of"))
    row = dict(label=g["label"], mlp=g["mlp"], setting=g["letter"], runs=len(runs), repeated_seed_runs=repeats,
               unfinished_runs=sum(1 for r in g["runs"] if not r["finished"] and not r.get("repeat_of")),
               files=[r["path"] for r in g["runs"]],
               original_log=g["original"], gpu=g["runs"][0]["gpu"], world_size=g["runs"][0]["world_size"],
               torch=sorted({str(r["torch"]) for r in g["runs"]}),
               resumed_runs=sum(1 for r in g["runs"] if r["resumed_from"]))
    row["step_avg_ms_mean"], row["step_avg_ms_sd"] = mean_sd([r["step_avg_ms"] for r in runs])
    row["final_val_loss_mean"], row["final_val_loss_sd"] = mean_sd([r["final_val_loss"] for r in runs])
    row["peak_memory_mib"], row["peak_memory_mib_sd"] = mean_sd([r["peak_memory_mib"] for r in runs])
    row["peak_memory_kind"] = ",".join(sorted({r["peak_memory_kind"] for r in runs if r["peak_memory_kind"]})) or None
    row["tokens"] = mean_sd([r["tokens"] for r in runs])[0]
    reached = [r for r in runs if not math.isnan(r["time_to_target_ms"])]
    row["runs_reaching_target"] = len(reached)
    all_reached = bool(runs) and len(reached) == len(runs)  # a mean over the lucky runs only would flatter
    row["time_to_target_ms"] = mean_sd([r["time_to_target_ms"] for r in runs])[0] if all_reached else math.nan
    row["tokens_to_target"] = mean_sd([r["tokens_to_target"] for r in runs])[0] if all_reached else math.nan
    row["target_loss"] = g["runs"][0]["target_loss"]  # the data is part of the configuration: one per group
    if row["target_loss"] is None:
        row["record_rule"] = dict(record_rule([], math.nan, args.record_alpha), n=len(runs), verdict=NO_TARGET)
        row["record_rule"]["mean"], row["record_rule"]["sd"] = mean_sd([r["final_val_loss"] for r in runs])
    else:
        row["record_rule"] = record_rule([r["final_val_loss"] for r in runs], row["target_loss"], args.record_alpha)
    notes = []  # about the comparison with the baseline; the group's own are in g["notes"]
    base, differs = None, []
    baseline = args.baseline or GPT_BASELINE
    candidates = [o for o in groups if o["mlp"] == baseline and not o["original"]]
    if g["mlp"] != baseline and not g["original"] and candidates:
        # The baseline is the baseline MLP's group that differs only in the MLP; failing that, the
        # one that differs in the fewest other keys, named in the table and a warning.
        def other_differences(o):
            keys = (set(o["config"]) | set(g["config"])) - GPT_MLP_KEYS
            return sorted(k for k in keys if o["config"].get(k) != g["config"].get(k))
        base = min(candidates, key=lambda o: len(other_differences(o)))
        differs = other_differences(base)
        if differs:
            warnings.append(f"{g['label']}: no {baseline} group differs from it only in the MLP; "
                            f"compared with {base['label']}, which also differs in {', '.join(differs)}")
            notes.append(f"{g['label']}: its baseline {base['label']} also differs in {', '.join(differs)}")
    row["baseline"] = base["label"] if base else None
    row["baseline_runs"] = len(independent_runs(base)) if base else 0
    row["baseline_also_differs_in"] = differs
    row["step_avg_change_pct"] = row["final_val_loss_change"] = row["peak_memory_change_pct"] = math.nan
    row["step_avg_p_value"] = row["final_val_loss_p_value"] = math.nan
    row["same_machine"], row["machine_differences"], row["interleaving"], row["equal_loss"] = None, [], None, None
    if base:
        base_runs = independent_runs(base)
        bm = mean_sd([r["step_avg_ms"] for r in base_runs])[0]
        row["step_avg_change_pct"] = 100 * (row["step_avg_ms_mean"] / bm - 1)
        row["final_val_loss_change"] = row["final_val_loss_mean"] - mean_sd(
            [r["final_val_loss"] for r in base_runs])[0]
        row["peak_memory_change_pct"] = 100 * (row["peak_memory_mib"] / mean_sd(
            [r["peak_memory_mib"] for r in base_runs])[0] - 1)
        row["step_avg_p_value"] = welch([r["step_avg_ms"] for r in runs],
                                        [r["step_avg_ms"] for r in base_runs])[2]
        row["final_val_loss_p_value"] = welch([r["final_val_loss"] for r in runs],
                                              [r["final_val_loss"] for r in base_runs])[2]
        row["machine_differences"] = software_differences(g["runs"], base["runs"])
        row["same_machine"] = not row["machine_differences"]
        if row["machine_differences"]:
            text = (f"{g['label']} vs {base['label']}: not the same GPU model and software "
                    f"({'; '.join(row['machine_differences'])}): the step-time change is not like for like")
            warnings.append(text)
            notes.append(text)
        if {r["code"] for r in g["runs"]} != {r["code"] for r in base["runs"]}:
            text = f"{g['label']} vs {base['label']}: different code (the script source in the headers differs)"
            warnings.append(text)
            notes.append(text)
        row["interleaving"] = interleaving(runs, base_runs)
        if row["interleaving"]["interleaved"] is False:
            text = (f"{g['label']} vs {base['label']}: {row['interleaving']['verdict']} (start order "
                    f"{row['interleaving']['order']}, c = {g['label']}, b = {base['label']}): drift of the "
                    f"machine can pass for a speed difference (a steady drift of d ms per run adds "
                    f"{row['interleaving']['position_gap']:+.1f} x d to the step_avg difference); "
                    f"see gpt_run_order.png")
            warnings.append(text)
            notes.append(text)
        row["equal_loss"] = equal_loss(runs, base_runs, rng, args.resamples)
    row["group_notes"], row["comparison_notes"] = list(g["notes"]), notes
    row["notes"] = row["group_notes"] + notes
    return row


def smooth(y, window):
    """Centred moving average (the ends, where the window does not fit, are dropped)."""
    if window <= 1 or len(y) <= window:
        return np.arange(len(y)), y
    kernel = np.ones(window) / window
    return np.arange(window // 2, window // 2 + len(y) - window + 1), np.convolve(y, kernel, "valid")


# Mantissas of tick values within a decade, densest first: a loss axis takes the densest set that
# puts at most 9 ticks in its range (so 3.5 and 3.3 get labels; matplotlib's own log locator labels
# only the decades, nothing between 1 and 10).
TICK_MANTISSAS = [np.round(np.arange(1, 10, step), 2) for step in (0.01, 0.02, 0.05, 0.1)] + [
    [1, 1.2, 1.4, 1.6, 1.8, 2, 2.5, 3, 3.5, 4, 4.5, 5, 6, 7, 8, 9], [1, 1.5, 2, 3, 4, 5, 6, 8], [1, 2, 5], [1]]


def loss_ticks(lo, hi, most=9):
    """Round tick values for a log-scaled loss axis from lo to hi: the densest set of TICK_MANTISSAS
    with at most `most` of them, plus one or two finer ones near the bottom, where the final
    losses are, when it has none in the bottom eighth of the axis."""
    decades = range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
    within = lambda mantissas, a, b: sorted({float(round(m * 10.0 ** e, 10)) for e in decades for m in mantissas
                                             if a <= m * 10.0 ** e <= b})
    ticks = next((t for t in (within(m, lo, hi) for m in TICK_MANTISSAS) if len(t) <= most), within([1], lo, hi))
    bottom = lo * (hi / lo) ** 0.12
    if not any(t <= bottom for t in ticks):
        ticks += next((t for t in (within(m, lo, bottom) for m in TICK_MANTISSAS) if len(t) <= 2), [])
    return sorted(ticks)


def log_loss_axis(ax, lo, hi):
    """A log-scaled loss axis from lo (rounded down to 2 digits, and labelled: the final losses sit
    there) to hi, with round ticks between."""
    step = 10.0 ** (math.floor(math.log10(lo)) - 1)
    lo = math.floor(lo / step) * step
    ax.set_yscale("log")
    ax.set_ylim(lo, hi)
    ticks = loss_ticks(lo, hi)
    if not ticks or math.log(ticks[0] / lo) > 0.04 * math.log(hi / lo):  # unless a tick sits right there
        ticks = [round(lo, 10)] + ticks
    ax.yaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:g}"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def group_colors(groups):
    cmap = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20")
    return {g["label"]: cmap(i % cmap.N) for i, g in enumerate(groups)}


def plot_gpt(res, args, out):
    """The GPT figures; a figure that would show one bar or one point, with nothing to compare it
    with, is not drawn, and res["figure_notes"] says so (summary.md lists it under the figures)."""
    groups, colors = res["groups"], group_colors(res["groups"])
    res["figure_notes"] = []
    files = [plot_val_loss(groups, colors, args, out), plot_train_loss(groups, colors, out)]
    if len(res["rows"]) > 1:
        files.append(plot_step_time(res["rows"], colors, out))
    else:
        res["figure_notes"].append(f"gpt_step_time.png not drawn: one group ({res['rows'][0]['label']}), no other bar to "
                                   f"compare its step time and memory with; they are in the GPT table")
    order = plot_run_order(res, colors, out)
    if not order:
        res["figure_notes"].append("gpt_run_order.png not drawn: no comparison or machine has two finished runs "
                                   "with a start time, so there is no order to see a drift in")
    difference = plot_val_loss_difference(res, colors, out)
    return files + [f for f in (order, difference) if f]


def last_untimed(t):
    """Index of the last point at training time 0. The first steps are untimed (warm-up): every
    validation point among them sits at t = 0, and drawn against time they make a vertical drop
    there; a time axis starts at this point instead."""
    zero = np.flatnonzero(np.asarray(t) <= 0)
    return int(zero[-1]) if len(zero) else 0


def plot_val_loss(groups, colors, args, out):
    """Validation loss against step, training time and tokens: per group the mean over its
    finished runs with a +-1 sd band, every run faint (unfinished runs dashed); the top row shows
    the whole run on a log axis, the bottom row the second half on a linear one."""
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.4))
    most_tokens = max((float(np.nanmax(r["val_tokens"], initial=0)) for g in groups for r in g["runs"]), default=0)
    scale, unit = next((s, u) for s, u in ((1e9, "billions"), (1e6, "millions"), (1e3, "thousands"), (1, ""))
                       if most_tokens >= s or s == 1)
    axis_x = (("step", lambda r: r["val_step"], lambda c: c["step"]),
              ("training time (s; validation and the first 10 steps untimed,\nso the curve starts at the last "
               "point at 0 s)", lambda r: r["val_time_ms"] / 1000,
               lambda c: c["time_ms"].mean(axis=0) / 1000),
              (f"training tokens ({unit})" if unit else "training tokens", lambda r: r["val_tokens"] / scale,
               lambda c: c["tokens"].mean(axis=0) / scale))
    handles, x_max = [], [0.0, 0.0, 0.0]
    for g in groups:
        color, finished = colors[g["label"]], [r for r in g["runs"] if r["finished"]]
        curves = group_curves(finished) if finished else None
        for col, (_, run_x, curve_x) in enumerate(axis_x):
            for r in g["runs"]:
                x_max[col] = max(x_max[col], float(np.nanmax(run_x(r), initial=0)))
                start = last_untimed(run_x(r)) if col == 1 else 0
                for ax in axes[:, col]:
                    ax.plot(run_x(r)[start:], r["val_loss"][start:], color=color, lw=0.8,
                            alpha=0.3 if r["finished"] else 0.7, ls="-" if r["finished"] else "--")
                    if not r["finished"] and len(r["val_loss"]):  # where it stopped
                        ax.plot(run_x(r)[-1:], r["val_loss"][-1:], color=color, marker="x", ms=6, alpha=0.8)
            if curves is None:
                if col == 0:  # in the legend all the same, by its dashed runs
                    handles.append((matplotlib.lines.Line2D([], [], color=color, ls="--"),
                                    f"{g['label']}: no finished run ({len(g['runs'])} unfinished)"))
                continue
            mean, x = curves["loss"].mean(axis=0), curve_x(curves)
            start = last_untimed(x) if col == 1 else 0
            for ax in axes[:, col]:
                line, = ax.plot(x[start:], mean[start:], color=color, lw=1.8)
                if len(finished) > 1:
                    sd = curves["loss"].std(axis=0, ddof=1)
                    ax.fill_between(x[start:], (mean - sd)[start:], (mean + sd)[start:], color=color, alpha=0.2, lw=0)
            if col == 0:
                unfinished = len(g["runs"]) - len(finished)
                handles.append((line, f"{g['label']}: mean of {len(finished)} run{'s' * (len(finished) != 1)}"
                                + (f" (+{unfinished} unfinished)" if unfinished else "")))
    values = np.concatenate([r["val_loss"] for g in groups for r in g["runs"]])
    values = values[np.isfinite(values)]
    for col, (xlabel, run_x, _) in enumerate(axis_x):
        for row, ax in enumerate(axes[:, col]):
            ax.axhline(args.target_loss, color="grey", ls=":", lw=0.9)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("validation loss" + (" (log scale)" if row == 0 else ""))
            ax.grid(alpha=0.3, which="major")
        if len(values) == 0:
            continue
        lo, hi = min(values.min(), args.target_loss), values.max()
        log_loss_axis(axes[0, col], lo * 0.98, hi * 1.03)
        # the second half of every finished run, where the runs are told apart
        runs = ([r for g in groups for r in g["runs"] if r["finished"]]
                or [r for g in groups for r in g["runs"] if len(r["val_loss"]) > 1])
        if not runs:
            continue
        x0 = min(float(np.nanmax(run_x(r))) / 2 for r in runs)
        late = np.concatenate([r["val_loss"][run_x(r) >= np.nanmax(run_x(r)) / 2] for r in runs])
        late = late[np.isfinite(late)]
        if len(late) and x_max[col] > 0:
            lo, hi = late.min(), late.max()
            if lo - (hi - lo) <= args.target_loss <= hi + (hi - lo):  # show the target when it is near
                lo, hi = min(lo, args.target_loss), max(hi, args.target_loss)
            pad = max(0.02 * (hi - lo), 1e-3)
            axes[1, col].set_xlim(x0, x_max[col] * 1.01)
            axes[1, col].set_ylim(lo - pad, hi + pad)
    axes[0, 1].set_title("whole run (log scale)", fontsize=10)
    axes[1, 1].set_title("second half of every run", fontsize=10)
    fig.legend([h for h, _ in handles], [l for _, l in handles], loc="lower center", fontsize=8,
               ncol=min(4, max(1, len(handles))), bbox_to_anchor=(0.5, -0.01 - 0.025 * math.ceil(len(handles) / 4)))
    fig.suptitle(f"Validation loss: per group the mean over its finished runs, band ± 1 sd over seeds "
                 f"(interpolated to common steps);\nfaint: single runs (dashed, x at the last point: unfinished); dotted: target "
                 f"{args.target_loss}", fontsize=10)
    fig.tight_layout()
    return save(fig, out / "gpt_val_loss.png")


def plot_train_loss(groups, colors, out):
    """Training loss of every run: the whole run on a log axis (left), and its moving average over the
    second half of every run on a linear axis (right), where final losses a few hundredths apart are
    told apart (on the left they share one band between two ticks)."""
    fig, (ax, late_ax) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw=dict(width_ratios=[3, 2]))
    smoothed_max, smoothed_min, windows, late, x0, x1 = 0.0, math.inf, set(), [], math.inf, 0
    for g in groups:
        for j, r in enumerate(g["runs"]):
            if len(r["train_loss"]) == 0:
                continue
            window = max(1, len(r["train_loss"]) // 50)
            windows.add(window)
            idx, y = smooth(r["train_loss"], window)
            finite = y[np.isfinite(y)]
            if len(finite):
                smoothed_max, smoothed_min = max(smoothed_max, finite.max()), min(smoothed_min, finite.min())
            color, ls = colors[g["label"]], "-" if r["finished"] else "--"
            ax.plot(r["train_step"], r["train_loss"], color=color, alpha=0.12, lw=0.5)
            ax.plot(r["train_step"][idx], y, color=color, lw=1.2, ls=ls,
                    label=f"{g['label']} ({len(g['runs'])} run{'s' * (len(g['runs']) > 1)})" if j == 0 else None)
            steps = r["train_step"][idx]
            half = steps >= steps[-1] / 2
            if r["finished"] and half.sum() > 1:
                late_ax.plot(steps[half], y[half], color=color, lw=1.2, ls=ls)
                late.append(y[half][np.isfinite(y[half])])
                x0, x1 = min(x0, steps[-1] / 2), max(x1, steps[-1])
    if smoothed_max > 0:  # the first steps (loss ~11-16) would squash the rest
        log_loss_axis(ax, smoothed_min * 0.95, smoothed_max * 1.15)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (log scale)")
    ax.set_title("Training loss at every step (too few steps to average)" if windows <= {1} else
                 f"Training loss: faint every step, solid a centred moving average over "
                 f"{'/'.join(map(str, sorted(windows)))} steps (1/50 of the run)", fontsize=10)
    ax.grid(alpha=0.3, which="major")
    if ax.get_legend_handles_labels()[0]:  # none when every run was killed before its first step
        ax.legend(fontsize=8, ncol=1 if len(groups) <= 8 else 2)
    values = np.concatenate(late) if late else np.array([])
    if len(values):
        lo, hi = values.min(), values.max()
        pad = max(0.03 * (hi - lo), 1e-3)
        late_ax.set_xlim(x0, x1 * 1.01)
        late_ax.set_ylim(lo - pad, hi + pad)
        late_ax.set_title("second half of every finished run (linear scale)", fontsize=10)
    else:
        late_ax.set_title("second half: no finished run", fontsize=10)
    late_ax.set_xlabel("step")
    late_ax.set_ylabel("training loss" + (", moving average" if windows - {1} else ""))
    late_ax.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, out / "gpt_train_loss.png")


def step_time_bar_label(key, m, runs, rss=""):
    """The label over one bar of gpt_step_time.png (key: step_avg_ms or peak_memory_mib)."""
    if math.isnan(m):
        return "no finished run" if runs == 0 else "not logged"
    # MiB in the thousands (31026) need no decimal; a step time keeps its tenth of a ms at any size
    digits = 0 if key == "peak_memory_mib" and m >= 1000 else 1
    return f"{m:.{digits}f}{rss}\nn={runs}"


def plot_step_time(rows, colors, out):
    fig, axes = plt.subplots(1, 2, figsize=(max(11, 0.8 * len(rows) + 6), 4.6))
    labels = [r["label"] for r in rows]
    x = np.arange(len(rows))
    kinds = {r["peak_memory_kind"] for r in rows if r["peak_memory_kind"]}
    memory_label = {frozenset({"allocated"}): "peak memory allocated, CUDA (MiB)",
                    frozenset({"max_rss"}): "peak memory: process max_rss, CPU (MiB)"}.get(
        frozenset(kinds), "peak memory (MiB; rss: CPU max_rss)")
    for ax, key, ylabel in ((axes[0], "step_avg_ms", "step_avg (ms)"), (axes[1], "peak_memory_mib", memory_label)):
        mean = np.array([r[key + "_mean"] if key + "_mean" in r else r[key] for r in rows], float)
        sd = np.array([r[key + "_sd"] for r in rows], float)
        ax.bar(x, np.nan_to_num(mean), color=[colors[l] for l in labels])
        has_sd = ~np.isnan(sd)
        ax.errorbar(x[has_sd], mean[has_sd], yerr=sd[has_sd], ls="none", color="black", capsize=5)
        if np.all(np.isnan(mean)):
            ax.set_ylim(0, 1)
            ax.set_yticks([])
        for xi, m, e, r in zip(x, mean, sd, rows):
            rss = " rss" if key == "peak_memory_mib" and r["peak_memory_kind"] == "max_rss" and len(kinds) > 1 else ""
            text = step_time_bar_label(key, m, r["runs"], rss)
            # above the error bar, which would cross it
            ax.annotate(text, (xi, np.nan_to_num(m) + np.nan_to_num(e)), ha="center", va="bottom", fontsize=8,
                        xytext=(0, 3), textcoords="offset points")
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=20 if len(rows) > 3 else 0, ha="right" if len(rows) > 3 else "center",
                           fontsize=8)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, axis="y")
        ax.margins(y=0.15)
    fig.suptitle("Step time and peak memory per group: mean, and ± 1 sd over its finished runs (no error bar: one run)",
                 fontsize=11)
    fig.tight_layout()
    return save(fig, out / "gpt_step_time.png")


def plot_run_order(res, colors, out):
    """step_avg of every finished run against the order the runs were started in: one panel per
    comparison (a group and its baseline), or per GPU model and count when nothing is
    compared. A trend across a panel is drift of the machine, which only interleaved runs
    (c b c b ...) share out evenly."""
    timed = lambda rs: [r for r in rs if r["started"] is not None and r["finished"] and not math.isnan(r["step_avg_ms"])]
    by_label = {g["label"]: g for g in res["groups"]}
    panels = [(f"{r['label']} vs {r['baseline']}\n{r['interleaving']['verdict']}"
               + ("" if r["same_machine"] else "; not the same GPU/software"),
               timed(by_label[r["label"]]["runs"] + by_label[r["baseline"]]["runs"]))
              for r in res["rows"] if r["baseline"]]
    if not panels:
        machines = sorted({(str(r["gpu"]), str(r["world_size"])) for r in timed(res["runs"])})
        panels = [(f"{'CPU' if m[0] == 'none' else 'GPU ' + m[0]} x {m[1]}", [r for r in timed(res["runs"]) if (str(r["gpu"]), str(r["world_size"])) == m])
                  for m in machines]
    panels = [(title, rs) for title, rs in panels if len(rs) > 1]  # one point shows no order
    if not panels:
        return None
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.9 * nrows), squeeze=False)
    for ax, (title, rs) in zip(axes.flat, panels):
        rs = sorted(rs, key=lambda r: (r["started"], r["path"]))
        for label in dict.fromkeys(r["label"] for r in rs):
            idx = [i for i, r in enumerate(rs) if r["label"] == label]
            ax.plot(np.array(idx) + 1, [rs[i]["step_avg_ms"] for i in idx], marker="o", ms=5, lw=0.8,
                    color=colors[label], label=label)
        if len(rs) <= 12:
            # with seconds when two runs started in the same minute (short runs), else they read alike
            clock = "%H:%M:%S" if len({f"{r['started']:%Y%m%d%H%M}" for r in rs}) < len(rs) else "%H:%M"
            ax.set_xticks(range(1, len(rs) + 1))
            ax.set_xticklabels([f"{i}\n{r['started']:{clock}}" for i, r in enumerate(rs, 1)], fontsize=8)
        else:
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("run, in the order started" + (" (UTC start time)" if len(rs) <= 12 else ""), fontsize=9)
        ax.set_ylabel("step_avg (ms)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("step_avg against run order: a trend is drift of the machine, which only interleaved runs "
                 "share evenly", fontsize=11)
    fig.tight_layout()
    return save(fig, out / "gpt_run_order.png")


def plot_val_loss_difference(res, colors, out):
    """Each compared group's validation loss minus its baseline's, at equal step and at equal
    training time, over the second half of the runs: the seed-to-seed spread (sd about 0.0013-0.002
    at the end) and differences of a few thousandths are invisible on gpt_val_loss.png, whose axis
    spans the whole descent; here they fill the axis."""
    by_label = {g["label"]: g for g in res["groups"]}
    finished = lambda label: [r for r in by_label[label]["runs"] if r["finished"]]
    rows = [r for r in res["rows"] if r["baseline"] and finished(r["label"]) and finished(r["baseline"])]
    if not rows:
        return None
    fig, axes = plt.subplots(len(rows), 2, figsize=(12, 3.9 * len(rows) + 0.6), squeeze=False)
    for (ax_step, ax_time), row in zip(axes, rows):
        label, base = row["label"], row["baseline"]
        runs, base_runs = finished(label), finished(base)
        for ax, axis, xlabel in ((ax_step, "step", "step"),
                                 (ax_time, "time", "training time (s, validation excluded)")):
            d = loss_difference(runs, base_runs, axis)
            window = d["x"] >= d["x"][-1] / 2
            for y in d["base_runs"]:
                ax.plot(d["x"], y, color=colors[base], lw=0.7, alpha=0.35)
            for y in d["runs"]:
                ax.plot(d["x"], y, color=colors[label], lw=0.7, alpha=0.35)
            ax.fill_between(d["x"], d["lo"], d["hi"], color=colors[label], alpha=0.25, lw=0)
            ax.plot(d["x"], d["diff"], color=colors[label], lw=2)
            ax.axhline(0, color="black", lw=0.8)
            shown = np.concatenate([d["diff"][window], d["lo"][window], d["hi"][window], d["runs"][:, window].ravel(),
                                    d["base_runs"][:, window].ravel(), [0.0]])
            shown = shown[np.isfinite(shown)]
            pad = max(0.06 * (shown.max() - shown.min()), 1e-4)
            ax.set_xlim(d["x"][-1] / 2, d["x"][-1] * 1.01)
            ax.set_ylim(shown.min() - pad, shown.max() + pad)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"Δ validation loss\n(< 0: {label} lower)")
            ax.grid(alpha=0.3)
            end = d["diff"][-1], d["lo"][-1], d["hi"][-1]
            ax.set_title(f"{label} − {base} at equal {axis}: {end[0]:+.4f}"
                         + (f" [{end[1]:+.4f}, {end[2]:+.4f}]" if not math.isnan(end[1]) else " (no interval: one run)")
                         + f" at the end; n = {len(runs)} and {len(base_runs)}", fontsize=9)
        interval = not math.isnan(d["lo"][-1])  # loss_difference gives one with two runs a side
        handles = [matplotlib.lines.Line2D([], [], color=colors[label], lw=2, label="difference of the means")] + (
                  [matplotlib.patches.Patch(color=colors[label], alpha=0.25, label="95% interval (Welch t, seeds)")]
                  if interval else []) + [
                   matplotlib.lines.Line2D([], [], color=colors[label], lw=0.7, alpha=0.6,
                                           label=f"each {label} run - {base} mean"),
                   matplotlib.lines.Line2D([], [], color=colors[base], lw=0.7, alpha=0.6,
                                           label=f"each {base} run - {base} mean")]
        ax_step.legend(handles=handles, fontsize=7, loc="best")
    fig.suptitle("Validation loss minus the baseline's, second half of the runs: every run interpolated onto a "
                 "common grid of steps (left)\nor training time (right), then averaged; band: 95% interval of the "
                 "difference of the means (Welch t at each point, from the seeds)", fontsize=10)
    fig.tight_layout()
    return save(fig, out / "gpt_val_loss_difference.png")


def save(fig, path):
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return str(path)


# ----------------------------------------------------------------------------------------------
# Reports: summary.md and summary.json

def fmt(x, spec=".4f", none="n/a"):
    return none if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def fmt_interval(ci, spec, scale=1.0):
    return "" if ci is None or any(v is None or math.isnan(v) for v in ci) else \
        f" [{format(ci[0] * scale, spec)}, {format(ci[1] * scale, spec)}]"


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def noted_table(header, rows, notes_per_row):
    """A markdown table with a 'notes' column of footnote numbers, the footnotes listed under it
    (no column when no row has a note)."""
    texts, marks = [], []
    for notes in notes_per_row:
        for n in notes:
            if n not in texts:
                texts.append(n)
        marks.append(" ".join(f"[{texts.index(n) + 1}]" for n in dict.fromkeys(notes)))
    if not texts:
        return markdown_table(header, rows)
    return (markdown_table(header + ["notes"], [list(r) + [m] for r, m in zip(rows, marks)]) + "\n\n"
            + "\n".join(f"- [{i}] {t}" for i, t in enumerate(texts, 1)))


def mnist_markdown(res, args):
    pools, stats, notes = res["pools"], res["stats"], res["notes"]
    out = ["## MNIST", "",
           "Pool of trials per model and hidden size (every batch size, learning rate and seed):", "",
           noted_table(["model", "hidden", "params", "trials", "seeds", "best val", "test of best val"],
                       [[m, h, fmt(p["params"], ".0f"), len(p["val"]), len(set(p["seed"])),
                         fmt(p["val"].max()), fmt(p["test"][np.argmax(p["val"])])]
                        for (m, h), p in pools.items()]
                       + [[m, h, "", f"missing: {why}", "", "", ""] for (m, h), why in res["empty"].items()],
                       [notes.get(key, []) for key in list(pools) + list(res["empty"])]), "",
           f"Best of k by validation accuracy, test accuracy of the selected trial: exact expectation "
           f"± sd ({estimator_name(args)}), the central 68% of a search's outcomes (16th-84th percentile), "
           f"and {args.bootstrap} simulated searches (mean ± sd); expected best validation accuracy beside it:", "",
           markdown_table(["k", "model", "hidden", "E[test] ± sd", "16th-84th pct", "bootstrap ± sd", "E[val] ± sd"],
                          [[k, m, h,
                            f"{fmt(s['expected_test'])} ± {fmt(s['expected_test_sd'])}",
                            f"{fmt(s['expected_test_p16'])}-{fmt(s['expected_test_p84'])}",
                            f"{fmt(s['bootstrap_test_mean'])} ± {fmt(s['bootstrap_test_sd'])}",
                            f"{fmt(s['expected_val'])} ± {fmt(s['expected_val_sd'])}"]
                           for k in args.k for (m, h) in pools for s in [stats[(m, h)][k]]])]
    same = [c for c in res["comparisons"] if c["match"] == "hidden"]
    matched = [c for c in res["comparisons"] if c["match"] == "params"]
    base = res["baseline"]
    family = (f"Holm-corrected over all {len(res['comparisons'])} comparisons below (both tables; family-wise "
              f"alpha {args.alpha})")
    if same:
        out += ["", f"Verdict, each model against the baseline {base} at equal hidden size: P(model > {base}) "
                f"for the test accuracy of the validation-selected best of k (ties count half); 95% interval "
                f"from {args.resamples} seed-bootstrap resamples; p from {args.resamples} random swaps of the "
                f"paired trials (same batch size, lr and seed), {family}. E[test] is the mean outcome, P how "
                f"often one search ends higher: they can disagree (see the notes):", "",
                comparison_table(same, False), "",
                f"The study's claim check (mean over hidden sizes of the expected best-of-k test accuracy; the "
                f"claim: the model's mean above {base}'s):",
                "", noted_table(["k", "model", "model mean", f"{base} mean", "study's check"],
                                [[c["k"], c["model"], fmt(c["model_mean_test"]), fmt(c["baseline_mean_test"]),
                                  {True: "agrees with claim", False: "disagrees with claim"}.get(
                                      c["agrees_with_claim"], "n/a")]
                                 for c in res["claim"]], [c["notes"] for c in res["claim"]])]
    # a cell that lost every trial and so misses its comparison with the baseline: said, not dropped
    # in silence; where the baseline lost its cell, every model of that size misses it
    others = {h for m, h in set(pools) | set(res["empty"]) if m != base}
    uncompared = [cell_name(m, h) + (" (the baseline: no model compared at this size)" if m == base else "")
                  for m, h in sorted(res["empty"], key=lambda c: (c[1], c[0] != base, c[0]))
                  if (m == base and h in others) or (m != base and (base, h) in pools)]
    if uncompared:
        out += ["", f"Not compared with {base} (every trial left out, see the pool table): " + ", ".join(uncompared)]
    if matched:
        out += ["", f"Equal parameter count: each size of {base} against the model's size the training log "
                f"names as parameter-matched (matched_hidden_<model>; parameter counts from the trial lines); "
                f"{family}:", "", comparison_table(matched, True)]
    elif same:
        out += ["", "Equal parameter count: not compared, no log names parameter-matched sizes "
                "(matched_hidden_<model>; `train_mnist_ffn.py --param-match` trains and names them)."]
    return "\n".join(out)


def comparison_table(comparisons, param_match):
    base = comparisons[0]["baseline"]
    header = (["k", "model", "model h (params)", f"{base} h (params)"] if param_match else ["k", "model", "hidden"]) + [
        "E[test] model", f"E[test] {base}", f"P(model>{base}) [95% CI]", "p", "p (Holm)", "verdict"]
    rows = []
    for c in comparisons:
        where = ([c["k"], c["model"], f"{c['model_hidden']} ({fmt(c['model_params'], '.0f')})",
                  f"{c['baseline_hidden']} ({fmt(c['baseline_params'], '.0f')})"] if param_match
                 else [c["k"], c["model"], c["model_hidden"]])
        rows.append(where + [fmt(c["model_expected_test"]), fmt(c["baseline_expected_test"]),
                             f"{fmt(c['p_better'], '.3f')} [{fmt(c['ci95'][0], '.3f')}, "
                             f"{fmt(c['ci95'][1], '.3f')}]",
                             fmt(c["p_value"], ".4f"), fmt(c["p_adjusted"], ".4f"), c["verdict"]])
    return noted_table(header, rows, [c["notes"] for c in comparisons])


def pct(x):
    return fmt(x, "+.1f", "") + ("%" if not math.isnan(x) else "")


def gpt_markdown(res, args):
    rows, L = res["rows"], args.target_loss
    if not args.target_given:  # 3.28 is FineWeb's: the columns say where it does not apply
        L = f"{L} (FineWeb GPT-2 tokens only)"
    sd = lambda r, x, spec: fmt(x, spec) if r["runs"] > 1 else FEWER_THAN_2  # one seed: no spread to report
    group_rows = [[r["label"], f"{r['runs']}" + (f" (+{r['unfinished_runs']} unfinished)" if r["unfinished_runs"] else "")
                   + (f" (+{r['repeated_seed_runs']} repeating a seed)" if r["repeated_seed_runs"] else ""),
                   "unknown" if r["gpu"] == "?" else ("CPU" if r["gpu"] == "none" else r["gpu"]) + f" x {r['world_size']}",
                   f"{fmt(r['step_avg_ms_mean'], '.2f')} ± {sd(r, r['step_avg_ms_sd'], '.2f')}",
                   f"{fmt(r['final_val_loss_mean'])} ± {sd(r, r['final_val_loss_sd'], '.4f')}",
                   fmt(r["peak_memory_mib"], ".0f") + (f" ± {fmt(r['peak_memory_mib_sd'], '.0f')}" if r["runs"] > 1 else "")
                   + (" (rss)" if r["peak_memory_kind"] == "max_rss" else ""),
                   fmt(r["tokens"], ",.0f"),
                   f"{fmt(r['time_to_target_ms'] / 1000, '.1f', 'not reached' if r['runs'] else 'n/a')}"
                   + ("" if math.isnan(r["time_to_target_ms"]) else " s") if r["target_loss"] is not None else NO_TARGET,
                   fmt(r["tokens_to_target"], ",.0f", "not reached" if r["runs"] else "n/a")
                   if r["target_loss"] is not None else NO_TARGET] for r in rows]
    out = ["## GPT", "",
           f"Per configuration (runs differing only by seed are replicates, runs sharing a seed one measurement; "
           f"unfinished runs are left out of the numbers): mean ± sd over the finished runs; peak memory is CUDA's allocated peak, or the "
           f"process's max_rss on a CPU (rss); time and tokens to validation loss {L} are interpolated "
           f"between validation points, 'not reached' unless every run reached it:", "",
           noted_table(["group", "runs", "GPU x n", "step_avg ms", "final val loss", "peak MiB", "tokens",
                        f"time to {L}", f"tokens to {L}"], group_rows, [r["group_notes"] for r in rows])]
    compared = [r for r in rows if r["baseline"]]
    welch_p = lambda r, key: fmt(r[key], ".2g") if min(r["runs"], r["baseline_runs"]) > 1 else FEWER_THAN_2
    if compared:
        out += ["", f"Against the {res['baseline']} group of the same configuration: change of the means, Welch t-test "
                "p-values (two-sided) on step_avg and on the final validation loss; whether both ran on the "
                "same GPU model and count with the same torch and CUDA (else the step times are not like for "
                "like), and the order the runs were started in (c: this group, b: the baseline):", "",
                noted_table(["group", "baseline", "Δ step_avg", "p", "Δ final loss", "p (loss)", "Δ memory",
                             "same GPU and software", "run order"],
                            [[r["label"], r["baseline"], pct(r["step_avg_change_pct"]), welch_p(r, "step_avg_p_value"),
                              fmt(r["final_val_loss_change"], "+.4f", ""), welch_p(r, "final_val_loss_p_value"),
                              pct(r["peak_memory_change_pct"]),
                              "yes" if r["same_machine"] else "no: " + "; ".join(r["machine_differences"]),
                              r["interleaving"]["verdict"] + (f" ({r['interleaving']['order']})"
                                                              if r["interleaving"]["order"] else "")]
                             for r in compared], [r["comparison_notes"] for r in compared])]
        equal = [r for r in compared if r["equal_loss"]]
        if equal:
            out += ["", "At equal loss: where each side's mean validation curve first comes down to L, the "
                    "final mean loss of the worse side (so both reach it), the steps and the training time "
                    "there; Δ < 0: the group gets there first. 95% intervals from resampling each side's runs "
                    f"({args.resamples} times; none unless each side has two runs or more):", "",
                    markdown_table(["group", "baseline", "loss L", "steps", "baseline steps", "Δ steps [95%]",
                                    "time", "baseline time", "Δ time [95%]"],
                                   [[r["label"], r["baseline"], fmt(e["loss"]), fmt(e["steps"], ".0f"),
                                     fmt(e["baseline_steps"], ".0f"),
                                     fmt(e["delta_steps"], "+.0f") + fmt_interval(e["delta_steps_ci95"], "+.0f"),
                                     f"{fmt(e['time_ms'] / 1000, '.1f')} s", f"{fmt(e['baseline_time_ms'] / 1000, '.1f')} s",
                                     f"{fmt(e['delta_time_ms'] / 1000, '+.1f')} s"
                                     + fmt_interval(e["delta_time_ms_ci95"], "+.1f", 1 / 1000)]
                                    for r in equal for e in [r["equal_loss"]]])]
    out += ["", f"Record rule (modded-nanogpt): mean final validation loss below {L} by a one-sided one-sample "
            f"t-test at p < {args.record_alpha}. 'Runs needed': the smallest number of runs at which the test "
            f"would pass if their mean and sd were the ones observed (a plug-in count, not a power "
            f"calculation: at that number a new set of runs passes about half the time):", "",
            markdown_table(["group", "runs", "mean ± sd", "t", "p (one-sided)", "verdict", "runs needed",
                            "more runs"],
                           [[r["label"], q["n"], f"{fmt(q['mean'])} ± {sd(r, q['sd'], '.4f')}"] + (
                               [NO_TARGET] * 5 if r["target_loss"] is None else
                               [fmt(q["t"], ".2f"), fmt(q["p_value"], ".2g"), q["verdict"], fmt(q["runs_needed"], "d"),
                                fmt(q["more_runs_needed"], "d")] if q["n"] > 1 else [FEWER_THAN_2] * 5)
                            for r in rows for q in [r["record_rule"]]])]
    if len(res["settings"]) > 1 or any(r["original_log"] for r in rows):
        settings = {letter: dict(setting) for setting, letter in res["settings"].items()}
        differ = sorted(k for k in set().union(*settings.values()) if len({str(s.get(k)) for s in settings.values()}) > 1)
        key_rows = []
        for g in res["groups"]:
            if g["original"]:
                what = f"original modded-nanogpt log {g['runs'][0]['path']} (no config: record, MLP assumed relu2)"
            else:
                what = " ".join(f"{k}:{settings[g['letter']].get(k)}" for k in differ) or "(the only setting)"
            key_rows.append([g["label"], g["mlp"], g["letter"] or "", what])
        out += ["", "Key: what tells the groups apart (the config: keys that differ between settings; a "
                "setting is everything but the MLP):", "", markdown_table(["group", "mlp", "setting", "settings"], key_rows)]
    run_rows = [[r["name"], r["label"], fmt(r["seed"], "", "?"),
                 r["ended"] + (f" (repeats the seed of {r['repeat_of']}: not counted)" if r["repeat_of"] else ""),
                 f"{r['last_step']}/{r['total']}",
                 fmt(r["final_val_loss"]) if r["finished"] else
                 (f"{fmt(r['last_val_loss'])} at step {r['last_val_step']} (not final)" if r["last_val_step"] is not None else "n/a"),
                 fmt(r["last_step_avg_ms"], ".2f"), f"{r['started']:%Y-%m-%d %H:%M:%S}" if r["started"] else "?",
                 ", ".join(map(str, r["resumed_from"])) or ""] for r in res["runs"]]
    out += ["", "Runs, in the order they were started (a resumed log reads as one run: its steps after the "
            "checkpoint replace those of the killed process):", "",
            markdown_table(["log", "group", "seed", "ended", "steps", "final val loss", "step_avg ms", "started (UTC)",
                            "resumed from step"], run_rows)]
    return "\n".join(out)


def jsonable(x):
    """nan -> null (JSON has no nan), numpy scalars and arrays -> Python numbers and lists."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.bool_,)):
        return bool(x)
    if isinstance(x, (float, np.floating)):
        return None if math.isnan(x) or math.isinf(x) else float(x)
    if isinstance(x, datetime):
        return x.strftime("%Y-%m-%dT%H:%M:%SZ")
    return x


RUN_JSON_KEYS = ("path", "label", "seed", "finished", "status", "ended", "last_step", "total", "final_val_loss",
                 "last_val_loss", "last_val_step", "step_avg_ms", "last_step_avg_ms", "peak_memory_mib",
                 "peak_memory_kind", "tokens", "time_to_target_ms", "tokens_to_target", "started", "gpu",
                 "world_size", "torch", "cuda", "host", "code", "resumed_from", "resume_changes", "repeat_of")


def summary_json(mnist, gpt, args, files, warnings):
    summary = dict(settings=dict(k=args.k, bootstrap=args.bootstrap, seed=args.seed,
                                 resamples=args.resamples, alpha=args.alpha, target_loss=args.target_loss,
                                 estimator=args.estimator, keep_nonfinite=args.keep_nonfinite,
                                 baseline=args.baseline,
                                 record_alpha=args.record_alpha),
                   inputs=files, warnings=warnings)
    if mnist:
        summary["mnist"] = {}
        for (m, h), pool in mnist["pools"].items():
            entry = {str(k): v for k, v in mnist["stats"][(m, h)].items()}
            entry.update(trials=len(pool["val"]), seeds=len(set(pool["seed"])), params=pool["params"],
                         notes=mnist["notes"].get((m, h), []), curve=mnist["curves"][(m, h)])
            summary["mnist"].setdefault(m, {})[str(h)] = entry
        # c["mean_against_wins"] only feeds the figure captions: the cell's notes already say it,
        # and summary.json keeps the fields docs/summary-json.md lists
        cells = lambda cs: [{k: v for k, v in c.items() if k != "mean_against_wins"} for c in cs]
        summary["mnist_baseline"] = mnist["baseline"]
        summary["mnist_comparisons"] = cells(mnist["comparisons"])  # every model against the baseline
        summary["mnist_claim_check"] = mnist["claim"]
        summary["mnist_missing_trials"] = mnist["missing"]
        summary["mnist_empty_cells"] = [dict(model=m, hidden=h, why=why) for (m, h), why in mnist["empty"].items()]
    if gpt:
        summary["gpt_baseline"] = gpt["baseline"]
        summary["gpt"] = gpt["rows"]
        summary["gpt_runs"] = [{k: r[k] for k in RUN_JSON_KEYS} for r in gpt["runs"]]
    return jsonable(summary)


# ----------------------------------------------------------------------------------------------
# main

class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not the usage block: "analyze.py: error: ..."
        print(f"analyze.py: error: {message} (python analyze.py --help lists the flags)", file=sys.stderr)
        sys.exit(2)


def positive_ints(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive integers, e.g. 2,4,8")
    if max(values) > MAX_COUNT:
        raise argparse.ArgumentTypeError(f"{text!r}: at most {MAX_COUNT} (10**6)")
    return values


def positive_int(text):
    value = positive_ints(text)
    if len(value) != 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not one positive integer")
    return value[0]


def probability(text):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a probability between 0 and 1, e.g. 0.05")
    return value


def seed_value(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number 0 or more, e.g. 0")
    return value


def finite_positive(text):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: give a finite positive number, e.g. 3.28")
    return value


def main(argv=None):
    parser = Parser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="*", default=[],
                        help="log files or directories (default: logs/, without logs/reference/: the "
                             "committed reference runs would otherwise join the pool of your own runs)")
    parser.add_argument("--out", default="plots", help="where the PNGs, summary.md and summary.json go")
    parser.add_argument("--k", type=positive_ints, default=[2, 4, 8],
                        help="search budgets (default 2,4,8; each at most 10**6, where a search keeps the "
                             "pool's best trial long before)")
    parser.add_argument("--bootstrap", type=positive_int, default=50,
                        help="simulated searches per point (at most 10**6)")
    parser.add_argument("--resamples", type=positive_int, default=2000,
                        help="seed-bootstrap resamples (intervals) and label permutations "
                             "(p-values) for P(model > baseline); GPT: resamples of the equal-loss interval "
                             "(at most 10**6: the intervals and p-values settle within a few thousand)")
    parser.add_argument("--baseline", default=None,
                        help=f"the model every other is compared with: a key of MODELS (MNIST) or MLPS (GPT) "
                             f"as the logs name it (default {MNIST_BASELINE} for MNIST, {GPT_BASELINE} for GPT)")
    parser.add_argument("--alpha", type=probability, default=0.05, help="family-wise error rate of the verdicts")
    parser.add_argument("--estimator", choices=("dodge", "tang"), default="dodge",
                        help="expected best-of-k: dodge (k draws with replacement, Dodge et al. 2019) or "
                             "tang (k distinct trials, unbiased, Tang et al. 2020)")
    parser.add_argument("--drop-nonfinite", action="store_true",
                        help="leave MNIST trials whose train_loss is nan or inf (diverged) out of the pool "
                             "(default: they stay in with the accuracy they reached, as a search that drew "
                             "them would have paid for them; the notes count them either way)")
    parser.add_argument("--seed", type=seed_value, default=0, help="seed of the random number generator")
    parser.add_argument("--target-loss", type=finite_positive, default=None,
                        help="GPT validation loss target (time/tokens to target, record rule) for every run; "
                             "default: the record's 3.28, for runs on FineWeb GPT-2 tokens only (train_files and "
                             "val_files in a fineweb10B folder, vocab_size 50257 or more); other data gets "
                             "'n/a (no target for this data)'")
    parser.add_argument("--record-alpha", type=probability, default=0.01,
                        help="p-value the record rule's one-sided t-test must beat")
    parser.add_argument("--no-figures", action="store_true", help="tables only (summary.md, summary.json)")
    args = parser.parse_args(argv)
    args.k = sorted(set(args.k))
    args.keep_nonfinite = not args.drop_nonfinite
    args.target_given = args.target_loss is not None
    args.target_loss = args.target_loss if args.target_given else RECORD_TARGET_LOSS

    try:
        files = find_logs(args.inputs) if args.inputs else find_logs(["logs"], skip=["logs/reference"])
    except FileNotFoundError as e:
        print(f"analyze.py: error: {e}", file=sys.stderr)
        return 2
    warnings, logs, unparsed = [], [], 0
    for path in files:
        log = parse_log(path)
        unparsed += log["n_bad"]
        if log["n_bad"]:
            i, why, text = log["bad_lines"][0]
            more = f" (and {log['n_bad'] - 1} more)" if log["n_bad"] > 1 else ""
            warnings.append(f"{path}: skipped {log['n_bad']} record line(s) that do not parse: line {i}{more}: "
                            f"{why}: {text[:60]!r}{'...' * (len(text) > 60)}")
        if log["cut_line"] is not None:
            warnings.append(f"{path}: its last line is cut off (killed while writing it?), skipped: "
                            f"{log['cut_line'][:80]!r}")
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
        # one line: why each file was skipped (the first three) goes into it
        why = "; ".join(w.replace(", skipped", "") for w in warnings[:3]) + ("; ..." if len(warnings) > 3 else "")
        found = (f"no log files (*.txt) in {where}" if not files else
                 f"no records in the {len(files)} log file(s) in {where} ({why})")
        # records that are there but do not parse want fixing, not a new run
        what = ("fix or remove the lines named" if unparsed else
                "run a training script first (python train_mnist_ffn.py) or pass log files")
        print(f"analyze.py: error: {found}; {what}", file=sys.stderr)
        return 2

    known = sorted({t["model"] for l in logs for t in l["trials"]} | {l["config"].get("mlp", GPT_BASELINE)
                                                                       for l in logs if l["kind"] == "gpt"})
    if args.baseline is not None and args.baseline not in known:
        print(f"analyze.py: error: --baseline {args.baseline}: no log read holds that model; give one of "
              f"{', '.join(known)}", file=sys.stderr)
        return 2
    mnist_logs = [l for l in logs if l["kind"] == "mnist"]
    gpt_logs = [l for l in logs if l["kind"] == "gpt"]
    work = resampling_work(mnist_logs, gpt_logs, args)
    if work > MAX_WORK:  # refused before any of it is done
        print(f"analyze.py: error: --k {','.join(map(str, args.k))} --bootstrap {args.bootstrap} --resamples "
              f"{args.resamples} on these logs is about {work:.1e} array elements of resampling, above the "
              f"{MAX_WORK:.0e} that keep a run within a few minutes; lower --resamples or --bootstrap (defaults: --k 2,4,8 "
              f"--bootstrap 50 --resamples 2000; intervals and p-values settle within a few thousand)", file=sys.stderr)
        return 2
    out = Path(args.out)
    made = not out.exists()
    if out.exists() and not out.is_dir():
        print(f"analyze.py: error: --out {args.out} is a file, not a folder; give a folder", file=sys.stderr)
        return 2
    try:  # before the analysis, so that a typo in --out costs nothing
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"analyze.py: error: --out {args.out}: cannot make that folder ({e.strerror or e}); "
              "give a folder you can write to", file=sys.stderr)
        return 2
    probe = out / ".analyze-write-check"  # a folder that exists can still refuse files: read-only file
    try:  # system, immutable (chattr +i), another user's
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        print(f"analyze.py: error: --out {args.out}: cannot write files there ({e.strerror or e}); "
              "give a folder you can write to", file=sys.stderr)
        if made:
            out.rmdir()
        return 2
    try:
        mnist = analyse_mnist(mnist_logs, args, warnings) if mnist_logs else None
        gpt = analyse_gpt(gpt_logs, args, warnings) if gpt_logs else None
        figures = [] if args.no_figures else (
            (plot_mnist(mnist, args, out) if mnist else []) + (plot_gpt(gpt, args, out) if gpt else []))
    except MemoryError:  # arrays of --bootstrap x --k, --resamples x seeds or pairs: each within MAX_COUNT,
        # together they can still be more than the machine holds
        print(f"analyze.py: error: out of memory with --k {','.join(map(str, args.k))} --bootstrap {args.bootstrap} "
              f"--resamples {args.resamples}; lower them (defaults: --k 2,4,8 --bootstrap 50 --resamples 2000)",
              file=sys.stderr)
        if made and not any(out.iterdir()):
            out.rmdir()  # nothing written
        return 2
    except OSError as e:  # a figure's file: the disk filled up, the folder was made read-only meanwhile
        print(f"analyze.py: error: --out {args.out}: cannot write {e.filename or 'a figure'} ({e.strerror or e})",
              file=sys.stderr)
        return 2

    parts = ["# Summary", "", "Logs: " + ", ".join(l["path"] for l in logs)]
    if warnings:  # first, so that nobody reads a table without them
        parts += ["", "## Warnings", "", "The answers below rest on these; the table cells they touch carry a "
                  "note.", ""] + [f"- {w}" for w in warnings]
    if mnist:
        parts += ["", mnist_markdown(mnist, args)]
    if gpt:
        parts += ["", gpt_markdown(gpt, args)]
    parts += ["", "Figures: " + (", ".join(Path(f).name for f in figures) or "none" + " (--no-figures)" * args.no_figures)]
    parts += [f"- {note}" for note in (gpt or {}).get("figure_notes", [])]
    text = "\n".join(parts) + "\n"
    summary = summary_json(mnist, gpt, args, [l["path"] for l in logs], warnings)
    summary["figures"] = figures
    summary["figure_notes"] = (gpt or {}).get("figure_notes", [])  # figures not drawn, and why
    try:
        (out / "summary.md").write_text(text)
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    except OSError as e:
        print(f"analyze.py: error: --out {args.out}: cannot write {e.filename} ({e.strerror or e})", file=sys.stderr)
        return 2
    print(text)
    for w in warnings:  # last on screen too, where a terminal shows them after the tables
        print(f"warning: {w}", file=sys.stderr)
    print(f"wrote {len(figures)} figures, summary.md and summary.json to {out}/"
          + (f"; {len(warnings)} warning(s) above" if warnings else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
