"""Checkpoints and --resume of train_gpt.py on the CPU: a run killed (SIGKILL) after a checkpoint and
resumed writes the step lines of a run never stopped, on 1 process and across 1 and 2 (gloo); what
a checkpoint holds; every setting that would change the run is refused, the others are allowed."""
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import analyze
import train_gpt as tg
from test_gpt import REPO, TINY, free_port, only_log, parse_log, shard_flags, tiny_shards, write_shard  # noqa: F401

# 40 steps of 16 x 64 tokens, validated every 10 (2 micro-batches of val): checkpoints of ~1.1 MB.
RUN = TINY + ["--batch-size", "16", "--device-batch-size", "16", "--num-iterations", "40", "--val-every", "10",
              "--val-tokens", "2048", "--threads", "1"]


def start(args):
    """train_gpt.py in a fresh process (no state of this one leaks in: threads, denormal flushing)."""
    return subprocess.Popen([sys.executable, str(REPO / "train_gpt.py")] + args, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc):
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return out


def kill_tree(pid):
    """SIGKILL a process and every process under it (torchrun starts each rank in a session of its own)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue                                                           # a process that just ended
        children.setdefault(parent, []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def kill_after(proc, line_start):
    """SIGKILL the run (torchrun: and its ranks) as soon as it prints a line starting so."""
    for line in proc.stdout:
        if line.startswith(line_start):
            kill_tree(proc.pid)
            break
    else:
        pytest.fail(f"the run ended before printing {line_start!r}: {proc.communicate()[1][-2000:]}")
    proc.communicate(timeout=60)


def last_lines(records):
    """{(step, kind): fields} keeping, for each, the last line in file order (the log contract)."""
    return {(f["step"], f["kind"]): f for name, f in records if name == "step"}


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def tensors(tree, prefix=""):
    """{path: tensor} of every tensor in a nested dict / list (a checkpoint's state)."""
    if torch.is_tensor(tree):
        return {prefix: tree}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else []
    return {k: v for key, sub in items for k, v in tensors(sub, f"{prefix}/{key}").items()}


@pytest.fixture(scope="module")
def baseline(tiny_shards, tmp_path_factory):
    """The run never stopped, with a checkpoint every 10 steps: its log."""
    log_dir = tmp_path_factory.mktemp("baseline")
    finish(start(RUN + shard_flags(tiny_shards) + ["--save-every", "10", "--save-final", "--log-dir", str(log_dir)]))
    return only_log(log_dir)


@pytest.fixture(scope="module")
def killed(tiny_shards, tmp_path_factory):
    """The same run (checkpoints every 20 steps), SIGKILLed once its step-20 checkpoint is on disk."""
    log_dir = tmp_path_factory.mktemp("killed")
    kill_after(start(RUN + shard_flags(tiny_shards) + ["--save-every", "20", "--save-final",
                                                       "--log-dir", str(log_dir)]), "checkpoint: step:20 ")
    return only_log(log_dir)


@pytest.fixture
def killed_copy(killed, tmp_path):
    """A fresh copy of the killed run (log + checkpoint folder) for a test to resume."""
    shutil.copytree(killed.parent, tmp_path / "logs")
    return tmp_path / "logs" / killed.name


# ---- exactness ---------------------------------------------------------------------------------

def test_a_killed_run_resumed_writes_the_step_lines_of_the_run_never_stopped(baseline, killed_copy):
    log = killed_copy
    folder = tg.checkpoint_folder(log)
    killed_records = parse_log(log)
    assert "done" not in [name for name, _ in killed_records]                   # it was killed, not asked
    assert [p.name for _, p in tg.checkpoints_in(folder)] == ["step20.pt"] and not list(folder.glob("*.tmp"))
    out = finish(start(["--resume", str(log)]))
    assert f"log: {log} (appended to)" in out
    records = parse_log(log)
    names = [name for name, _ in records]
    assert names.count("run") == names.count("config") == names.count("resume") == 1
    resume = dict(records)["resume"]
    assert resume["from_step"] == "20" and resume["checkpoint"] == str(folder / "step20.pt")
    assert (resume["gpu"], resume["torch"], resume["device_batch_size"]) == ("none", torch.__version__, "16")
    assert resume["world_size"] == "1" and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", resume["resumed"])
    after = records[names.index("resume") + 1:]
    assert after[0][0] == "step" and after[0][1]["step"] == 21 and after[0][1]["kind"] == "train_loss"

    ours, theirs = last_lines(records), last_lines(parse_log(baseline))
    assert sorted(ours) == sorted(theirs) and len(ours) == 40 + 5
    for key in theirs:                                                         # identical apart from times
        assert (ours[key]["loss"], ours[key]["tokens"]) == (theirs[key]["loss"], theirs[key]["tokens"]), key
    assert dict(records)["done"]["status"] == "ok" and dict(records)["done"]["final_val_loss"] == \
        f"{theirs[(40, 'val_loss')]['loss']:.4f}"
    # the clock continues from the checkpoint's time: it never runs back, and step_avg covers steps 11..
    assert ours[(20, "val_loss")]["train_time"] == int(resume["train_time"][:-2]) <= after[0][1]["train_time"]
    times = [f["train_time"] for name, f in after if name == "step"]
    assert times == sorted(times) and times[-1] > times[0]
    # train_time is logged rounded to 1 ms, step_avg to 0.01 ms: they agree within 0.5 / 30 + 0.005
    assert ours[(40, "val_loss")]["step_avg"] == pytest.approx(ours[(40, "val_loss")]["train_time"] / 30,
                                                               abs=0.5 / 30 + 0.005)
    # and the state is bit for bit the same: at the kill's checkpoint, and at the end
    for step in (20, 40):
        a, b = load(folder / f"step{step}.pt"), load(tg.checkpoint_folder(baseline) / f"step{step}.pt")
        assert (a["step"], a["loader"], a["timed_steps"]) == (b["step"], b["loader"], b["timed_steps"]) == \
            (step, a["loader"], step - 10)
        ta, tb = tensors([a["model"], a["optimizers"], a["rng"]]), tensors([b["model"], b["optimizers"], b["rng"]])
        assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta), step


def test_a_line_cut_by_the_kill_stays_apart_from_the_resumed_records(killed_copy):
    """A kill in the middle of a write leaves a last line without its newline: the resumed run's
    resume: record must start a line of its own, or readers would skip it with the cut line."""
    log = killed_copy
    text = log.read_text()
    text = text[:text.index("\n", text.index("\ncheckpoint: step:20 ") + 1) + 1] + "step:21/40 train_loss:3.9"
    log.write_text(text)                                                       # killed while writing step 21
    finish(start(["--resume", str(log)]))
    lines = log.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("resume: from_step:20 "))
    assert lines[at - 1] == "step:21/40 train_loss:3.9" and lines[-1].startswith("done: steps:40 ")
    records = analyze.parse_log(log)
    assert records["resumes"][0]["from_step"] == 20 and records["done"]["status"] == "ok" and records["n_bad"] == 1


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="kills the ranks it finds in /proc (Linux)")
def test_a_run_moved_between_one_and_two_processes_trains_like_one(baseline, killed_copy):
    """1 process to step 20, killed; 2 processes (gloo) from 20 to 30, killed; 1 process to 40."""
    log = killed_copy
    folder = tg.checkpoint_folder(log)
    two = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", str(REPO / "train_gpt.py"),
           "--resume", str(log), "--device-batch-size", "8", "--save-every", "10"]
    proc = subprocess.Popen(two, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    kill_after(proc, "checkpoint: step:30 ")
    # rank 0 wrote the 2-rank checkpoint: Muon's momentum of every matrix, whichever rank updated it
    ours, theirs = load(folder / "step30.pt"), load(tg.checkpoint_folder(baseline) / "step30.pt")
    assert ours["world_size"] == 2 and ours["loader"] == theirs["loader"]
    muon_ours, muon_theirs = ours["optimizers"][1]["state"], theirs["optimizers"][1]["state"]
    assert muon_ours.keys() == muon_theirs.keys() and len(muon_ours) == 12
    for i in muon_theirs:
        a, b = muon_ours[i]["momentum_buffer"], muon_theirs[i]["momentum_buffer"]
        assert (a - b).norm() <= 0.01 * b.norm(), i                          # the same up to float rounding
    finish(start(["--resume", str(log)]))                                      # 1 process, 2 micro-steps

    records = parse_log(log)
    resumes = [f for name, f in records if name == "resume"]
    assert [(r["from_step"], r["world_size"], r["grad_accum"]) for r in resumes] == [("20", "2", "1"),
                                                                                     ("30", "1", "2")]
    ours, theirs = last_lines(records), last_lines(parse_log(baseline))
    assert sorted(ours) == sorted(theirs)
    for kind in ("train_loss", "val_loss"):
        keys = sorted(k for k in theirs if k[1] == kind)
        assert [ours[k]["tokens"] for k in keys] == [theirs[k]["tokens"] for k in keys]
        np.testing.assert_allclose([ours[k]["loss"] for k in keys], [theirs[k]["loss"] for k in keys],
                                   rtol=0, atol=2e-4)
    assert [f["status"] for name, f in records if name == "done"] == ["ok"]


# ---- what a checkpoint holds -------------------------------------------------------------------

def test_a_checkpoint_holds_the_whole_state_of_the_run(baseline):
    ckpt = load(tg.checkpoint_folder(baseline) / "step20.pt")
    records = parse_log(baseline)
    run, config = dict(records)["run"], dict(records)["config"]
    assert ckpt["kind"] == tg.CHECKPOINT_KIND and ckpt["log_id"] == run["id"] and ckpt["step"] == 20
    assert ckpt["hp"] == {**tg.dataclasses.asdict(tg.parse_args(RUN)), "save_every": 10, "save_final": True,
                          "log_dir": ckpt["hp"]["log_dir"], "train_files": ckpt["hp"]["train_files"],
                          "val_files": ckpt["hp"]["val_files"]}
    model = tg.GPT(512, 2, 2, 64, "relu2")
    assert list(ckpt["model"]) == list(model.state_dict())                     # plain names: no _orig_mod., module.
    adamw, muon = ckpt["optimizers"]
    assert set(adamw["state"][0]) == {"step", "exp_avg", "exp_avg_sq"} and float(adamw["state"][0]["step"]) == 20
    assert len(muon["state"]) == 12 and all(set(s) == {"momentum_buffer"} for s in muon["state"].values())
    assert ckpt["loader"] == dict(shard=0, position=20 * 16 * 64, micro=0, wraps=0)
    assert [n for _, n in ckpt["data"]["train"]] == [100_000, 100_000] and len(ckpt["data"]["val"]) == 1
    assert ckpt["train_time_ms"] == pytest.approx(last_lines(records)[(20, "val_loss")]["train_time"], abs=0.5)
    assert torch.is_tensor(ckpt["rng"]["torch"]) and ckpt["precision"] == config["precision"] == "fp32"
    # the disk cost is docs/train_gpt.md's formula: fp32 weights (the tied matrix once) + AdamW's two moments
    # of the embedding/head + Muon's momentum of every block matrix, plus a little framing
    head, params = 512 * 64, 131_072
    size = (tg.checkpoint_folder(baseline) / "step20.pt").stat().st_size
    assert 4 * (params + 2 * head + (params - head)) < size < 4 * (params + 2 * head + (params - head)) + 64 * 1024
    recorded = [f for name, f in records if name == "checkpoint"]
    assert [f["step"] for f in recorded] == ["10", "20", "30", "40"] and recorded[1]["size"] == \
        f"{size / 2**20:.1f}MiB"


def test_a_checkpoint_is_written_under_a_temporary_name_and_a_failed_write_leaves_nothing(tmp_path):
    during = []

    class Probe:                                                               # pickled in the middle of the write
        def __reduce__(self):
            during.append(sorted(p.name for p in tmp_path.iterdir()))
            return int, (0,)

    tg.write_checkpoint({"weights": torch.zeros(1000), "probe": Probe()}, tmp_path / "step5.pt", keep_last=0)
    assert during == [["step5.pt.tmp"]] and [p.name for p in tmp_path.iterdir()] == ["step5.pt"]
    with pytest.raises(Exception):
        tg.write_checkpoint({"weights": torch.zeros(1000), "unpicklable": lambda: 0}, tmp_path / "step6.pt", 0)
    assert [p.name for p in tmp_path.iterdir()] == ["step5.pt"]
    for step in (10, 15):
        tg.write_checkpoint({"step": step}, tmp_path / f"step{step}.pt", keep_last=2)
    assert [p.name for _, p in tg.checkpoints_in(tmp_path)] == ["step10.pt", "step15.pt"]


# ---- what --resume allows and refuses ----------------------------------------------------------

def test_resume_allows_changes_of_how_the_run_runs_and_warns_of_changed_code(killed_copy, tmp_path, capsys):
    log = killed_copy
    folder = tg.checkpoint_folder(log)
    (folder / "step35.pt.tmp").write_bytes(b"a checkpoint cut short by a kill")     # not taken, not complete
    text = log.read_text()
    log.write_text(text.replace("\nimport argparse\n", "\nimport argparse  # edited since\n", 1))   # the header's
    code = tg.main(["--resume", str(folder), "--device-batch-size", "8", "--log-dir", str(tmp_path / "elsewhere"),
                    "--save-every", "5", "--keep-last", "2"])
    out = capsys.readouterr().out
    assert code == 0 and "note: --log-dir is not used by --resume" in out and not (tmp_path / "elsewhere").exists()
    assert "warning: train_gpt.py is not the source in the log's header: the steps from 21 on" in out
    records = parse_log(log)
    names = [name for name, _ in records]
    i = names.index("resume")
    assert records[i][1]["from_step"] == "20" and records[i][1]["grad_accum"] == "2"
    assert records[i + 1][0] == "warning" and records[i + 1][1]["code_changed"] == "1"
    assert [p.name for _, p in tg.checkpoints_in(folder)] == ["step35.pt", "step40.pt"]     # --keep-last 2
    assert records[-1][1]["status"] == "ok"


@pytest.mark.parametrize("flags, words", [
    (["--threads", "2", "--compile", "--mlp", "swiglu_thin", "--device", "cpu"],     # only --mlp is refused
     "--resume LOG: --mlp swiglu_thin (the run's: relu2): a resumed run keeps every setting"),
    (["--n-embd", "32"], "--n-embd 32 (the run's: 64)"),
    (["--batch-size", "32", "--lr", "0.01"], "--batch-size 32 (the run's: 16), --lr 0.01 (the run's: 0.0036)"),
    (["--num-iterations", "50"], "--num-iterations 50 (the run's: 40)"),
    (["--warmdown-iters", "10"], "--warmdown-iters 10 (the run's: 1450)"),
    (["--seed", "1"], "--seed 1 (the run's: 0)"),
    (["--val-tokens", "1024"], "--val-tokens 1024 (the run's: 2048)"),
    (["--precision", "bf16"], "the run trained in fp32, this would train in bf16"),
    (["--train-files", "OTHER"], "reads fineweb_train_000001.bin (3000 tokens) where the run read "
                                 "fineweb_train_000001.bin (100000 tokens)"),
])
def test_resume_refuses_a_setting_that_would_change_the_run(killed_copy, tmp_path, capsys, flags, words):
    other = tmp_path / "other"
    other.mkdir()
    write_shard(other / "fineweb_train_000001.bin", np.arange(3000) % 500)          # not the run's shards
    flags = [str(other / "fineweb_train_*.bin") if f == "OTHER" else f for f in flags]
    words = words.replace("LOG", str(tg.checkpoint_folder(killed_copy) / "step20.pt"))
    before = {p: p.read_bytes() for p in killed_copy.parent.rglob("*") if p.is_file()}
    code = tg.main(["--resume", str(killed_copy)] + flags)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and words in err, err
    assert {p: p.read_bytes() for p in killed_copy.parent.rglob("*") if p.is_file()} == before   # nothing written


def test_resume_explains_what_it_cannot_resume(baseline, killed_copy, tmp_path, capsys):
    def refused(path, *flags):
        assert tg.main(["--resume", str(path), *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error: --resume ")
        return err

    assert "no such file or folder" in refused(tmp_path / "nothing.pt")
    no_checkpoints = tmp_path / "gpt-20260101-000000-00000000.txt"
    no_checkpoints.write_text(killed_copy.read_text())
    assert "the run has no checkpoint in" in refused(no_checkpoints) and "--save-every N" in refused(no_checkpoints)
    (tmp_path / "mnist.txt").write_text("run:mnist id:0 started:x\n")
    assert "not a train_gpt.py log or checkpoint" in refused(tmp_path / "mnist.txt")
    (tmp_path / "garbage.pt").write_bytes(b"\x00" * 100)
    assert "cannot be read as a checkpoint" in refused(tmp_path / "garbage.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    assert "not a train_gpt.py checkpoint" in refused(tmp_path / "other.pt")
    final = tg.checkpoint_folder(baseline) / "step40.pt"
    assert "the run ended there (step 40 of 40); there is nothing left to train" in refused(final)
    # the log of a run that finished, whose newest checkpoint is before its end: it would train its last
    # steps again, into its log (a checkpoint named on purpose does that, as test_gpt.py's compile test)
    finished = tmp_path / "finished" / baseline.name
    shutil.copytree(baseline.parent, finished.parent)
    (tg.checkpoint_folder(finished) / "step40.pt").unlink()
    before = finished.read_bytes()
    assert "the run finished (its log ends with `done: steps:40 " in refused(finished)
    assert finished.read_bytes() == before
    # refused before any checkpoint is loaded: unreadable ones change nothing, for the log or its folder
    for checkpoint in tg.checkpoint_folder(finished).glob("*.pt"):
        checkpoint.write_bytes(b"\x00" * 100)
    assert "the run finished (its log ends with `done: steps:40 " in refused(finished)
    assert "the run finished (its log ends with `done: steps:40 " in refused(tg.checkpoint_folder(finished))
    moved = tmp_path / "moved" / "gpt-x"
    moved.mkdir(parents=True)
    shutil.copy(tg.checkpoint_folder(killed_copy) / "step20.pt", moved)
    assert "the run's log" in refused(moved / "step20.pt") and "is not there" in refused(moved / "step20.pt")
