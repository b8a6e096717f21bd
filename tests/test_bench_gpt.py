"""bench/bench_gpt.py runs the real model and optimisers on the CPU and prints figures that parse and
agree with each other (its timings are not asserted: benchmarks are not tests)."""
import importlib.util
import math
import re
from pathlib import Path

import pytest
import torch

import train_gpt as tg

REPO = Path(__file__).resolve().parent.parent
ROW = re.compile(r"^(\S+) +([\d,]+) +([\d.]+) +([\d.]+) +([\d.]+) +([\d.]+) +([\d.]+) +([\d,]+) +([\d.]+) +"
                 r"([\d.]+|nan)% +(\S+) +(-?[\d.]+)$")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small ops on one thread: with two threads on a busy 2-core machine they run ~50x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_gpt", REPO / "bench" / "bench_gpt.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_benchmark_step_parts_and_baseline_parse_and_agree(capsys, tmp_path):
    bench = load_bench()
    profile = tmp_path / "top.txt"
    results = bench.main(["--device", "cpu", "--steps", "2", "--warmup", "1", "--grad-accum", "2",
                          "--n-layer", "1", "--n-embd", "64", "--n-head", "1", "--seq-len", "64",
                          "--vocab-size", "512", "--device-batch-size", "2", "--peak-tflops", "1",
                          "--baseline", str(REPO / "train_gpt.py"), "--profile", str(profile)])
    out = capsys.readouterr().out
    assert "  threads: 1  " in out.splitlines()[0] and torch.get_num_threads() == 1   # its default; ours kept
    rows = {m[1]: m for m in (ROW.match(line) for line in out.splitlines()) if m}
    assert list(rows) == ["relu2", "swiglu_thin", "relu2@baseline", "swiglu_thin@baseline"]
    assert [r["label"] for r in results] == list(rows)
    tokens = 2 * 2 * 64
    for r in results:
        row = rows[r["label"]]
        step, fwd_bwd, adamw, muon = (float(row[i]) for i in (4, 5, 6, 7))
        assert step == round(r["step_ms"], 2) and step > 0
        assert 0.7 * step < fwd_bwd + adamw + muon < 1.05 * step and min(fwd_bwd, adamw, muon) > 0
        tokens_per_s = float(row[8].replace(",", ""))
        assert abs(tokens_per_s - tokens / (step / 1000)) <= 0.01 * tokens_per_s + 1
        flops = r["flops_per_token"]
        assert abs(float(row[10]) / 100 - flops * tokens_per_s / 1e12) < 0.001 + 0.01 * r["mfu"]   # peak 1 TFLOP/s
        assert row[11] == "nan" and math.isnan(r["peak_mib"])                   # no allocator figures on CPU
        assert float(row[12]) > -step / 1000                                    # first step - median step
    ratio = re.search(r"^swiglu_thin/relu2: step time ([\d.]+) ", out, re.M)
    assert ratio and abs(float(ratio[1]) - results[1]["step_ms"] / results[0]["step_ms"]) < 0.002
    assert re.search(r"^this/baseline relu2: step time [\d.]+  fwd_bwd [\d.]+  adamw [\d.]+  muon [\d.]+", out, re.M)
    text = profile.read_text()
    assert all(f"==== {label}: one step" in text for label in rows) and "aten::mm" in text


def test_flops_per_token_of_the_full_models():
    bench = load_bench()
    with torch.device("meta"):
        full = [bench.flops_per_token(tg.GPT(mlp=m), 12, 1024, 768) for m in ("relu2", "swiglu_thin")]
    assert full == [6 * 123_568_128 + 6 * 12 * 1024 * 768, 6 * 109_412_352 + 6 * 12 * 1024 * 768]
    assert 0.89 < full[1] / full[0] < 0.90                                   # "about 10% fewer"


def test_the_baseline_gpu_check_uses_runs(tmp_path, capsys):
    """bench/gpu_check.sh times the version before the speed changes (9491bb0) as its baseline: the
    bench must build that version's model too (its GPT has no rotary table to size)."""
    import subprocess
    shown = subprocess.run(["git", "show", "9491bb0:train_gpt.py"], cwd=REPO, capture_output=True, text=True)
    if shown.returncode != 0:
        pytest.skip("not a git clone with commit 9491bb0")
    baseline = tmp_path / "train_gpt_before.py"
    baseline.write_text(shown.stdout)
    results = load_bench().main(["--device", "cpu", "--steps", "1", "--warmup", "1", "--grad-accum", "1",
                                 "--n-layer", "1", "--n-embd", "32", "--n-head", "1", "--seq-len", "16",
                                 "--vocab-size", "64", "--device-batch-size", "1", "--baseline", str(baseline)])
    assert [r["label"] for r in results] == ["relu2", "swiglu_thin", "relu2@baseline", "swiglu_thin@baseline"]
    assert "this/baseline swiglu_thin: step time" in capsys.readouterr().out


def test_threads_out_of_range_get_one_line():
    """As train_gpt.py: no fewer than 1, no more than the machine's CPUs (100000 crashed torch)."""
    import os
    cpus = os.cpu_count() or 1
    for threads, words in ((0, "must be 1 or more"), (cpus + 1, f"more than the {cpus} CPUs of this machine"),
                           (100000, f"more than the {cpus} CPUs of this machine")):
        with pytest.raises(SystemExit) as e:
            load_bench().main(["--device", "cpu", "--threads", str(threads)])
        assert str(e.value.code).startswith(f"error: --threads {threads}: ") and words in str(e.value.code)
        assert len(str(e.value.code).splitlines()) == 1
    assert torch.get_num_threads() == 1  # refused before it set any


TINY = ["--device", "cpu", "--steps", "1", "--warmup", "1", "--grad-accum", "1", "--n-layer", "1", "--n-embd", "32",
        "--n-head", "1", "--seq-len", "16", "--vocab-size", "64", "--device-batch-size", "1"]


@pytest.mark.parametrize("flags, words", [
    (["--steps", "0"], "--steps 0: must be 1 or more"),
    (["--grad-accum", "-2"], "--grad-accum -2: must be 1 or more"),
    (["--device-batch-size", "0"], "--device-batch-size 0: must be 1 or more"),
    (["--warmup", "0"], "--warmup 0: must be 1 or more"),
    (["--n-embd", "0"], "--n-embd 0: must be 1 or more"),
    (["--peak-tflops", "-1"], "--peak-tflops -1.0: must be a positive number"),
    (["--n-head", "3"], "--n-head 3: --n-embd 128 must split into 3 heads"),
    (["--n-embd", "64", "--n-head", "64"], "--n-head 64: --n-embd 64 must split into 64 heads of even size"),
    (["--mlps", "nonesuch"], "invalid choice: 'nonesuch'"),
    (["--without", "nonesuch"], "invalid choice: 'nonesuch'"),
    (["--steps", "many"], "invalid int value: 'many'"),
    (["--components", "--without", "batched_ns"], "--components times the levers on their own"),
    (["--profile", "/proc/no/such/top.txt"], "--profile /proc/no/such/top.txt: cannot write there"),
])
def test_bad_input_is_refused_in_one_line_before_any_work(flags, words, capsys):
    with pytest.raises(SystemExit) as e:
        load_bench().main(["--device", "cpu"] + flags)
    message = str(e.value.code)
    assert message.startswith("error: ") and words in message and len(message.splitlines()) == 1, message
    assert capsys.readouterr().out == ""                                     # nothing was built or timed


def test_a_baseline_that_is_not_a_train_gpt_script_is_refused(tmp_path):
    log = tmp_path / "gpt-run.txt"
    log.write_text("run:gpt id:1234\nstep:1/10 train_loss:10.0 train_time:0ms\n")
    broken = tmp_path / "train_gpt_broken.py"
    broken.write_text((REPO / "train_gpt.py").read_text().replace("class GPT(nn.Module):", "class GPT(nn.Module:"))
    for path, words in ((log, "not a train_gpt.py script"), (tmp_path / "missing.py", "no such file"),
                        (broken, "not valid Python")):
        with pytest.raises(SystemExit) as e:
            load_bench().main(["--device", "cpu", "--baseline", str(path)])
        assert str(e.value.code).startswith(f"error: --baseline {path}: ") and words in str(e.value.code)


def test_refusals_exit_with_status_2_from_the_command_line(tmp_path):
    import subprocess
    import sys
    result = subprocess.run([sys.executable, str(REPO / "bench" / "bench_gpt.py"), "--device", "cpu", "--steps", "0"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.strip() == "error: --steps 0: must be 1 or more"


def test_the_mlps_come_from_train_gpt_and_default_to_the_study():
    bench = load_bench()
    results = bench.main(TINY)
    assert [r["label"] for r in results] == ["relu2", "swiglu_thin"]
    other = [m for m in tg.MLPS if m not in ("relu2", "swiglu_thin")][:1]   # one more, if train_gpt has it
    results = bench.main(TINY + ["--mlps", "relu2"] + other)
    assert [r["label"] for r in results] == ["relu2"] + other


def test_each_lever_off_runs_beside_all_on_and_the_components_parse(capsys):
    bench = load_bench()
    results = bench.main(TINY + ["--mlps", "relu2", "--without", *bench.LEVERS])
    labels = [r["label"] for r in results]
    assert labels == ["relu2"] + [f"relu2-no_{lever}" for lever in bench.LEVERS] == ["relu2", "relu2-no_batched_ns"]
    assert [r["off"] for r in results] == [[]] + [[lever] for lever in bench.LEVERS]
    out = capsys.readouterr().out
    for label in labels[1:]:
        assert re.search(rf"^levers/{label}: step time [\d.]+  fwd_bwd [\d.]+  adamw [\d.]+  muon [\d.]+", out, re.M)
    assert re.search(r"^record/this relu2: [\d.]+x .*NOT comparable", out, re.M)
    rows = bench.main(TINY + ["--components"])
    assert [(r["part"], r["lever"]) for r in rows] == [("Muon step (relu2)", "batched_ns"),
                                                        ("Muon step (swiglu_thin)", "batched_ns")]
    out = capsys.readouterr().out
    for r in rows:
        line = re.search(rf"^{re.escape(r['part'])} +{r['lever']} +([\d.]+) +([\d.]+) +([\d.]+)$", out, re.M)
        assert line and float(line[1]) == round(r["off_ms"], 2) and float(line[2]) == round(r["on_ms"], 2)
