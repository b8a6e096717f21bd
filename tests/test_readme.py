"""The README keeps its promises to a newcomer on a fresh clone.

- Its first commands install the CPU build of torch on a CPU-only machine before anything else,
  then install and run the MNIST study; its test command is the one .ci/run runs.
- Every command in its ```bash blocks works: a block whose commands all run in seconds on a CPU
  (the GPT-2 smoke run and its analysis) is run verbatim with bash in a copy of the repository;
  every other command is checked to parse: the script it names is run with those very flags,
  under an argparse that stops right after the script's own parser accepted them (so nothing
  is downloaded or trained), and `pip install` lines are dry-run offline against this
  environment.
- Every relative link in README.md and docs/*.md names a file of the repository, and every
  #anchor a heading of that file.
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

INSTALL_CPU_TORCH = re.compile(r"pip install torch==(\S+) --index-url https://download\.pytorch\.org/whl/cpu")
RUN_COMMAND = "pip install -r requirements.txt && python train_mnist_ffn.py"
TEST_COMMAND = "pip install -r requirements-dev.txt && python -m pytest"

# Runs each (script, args) given as JSON in argv[1] with argparse stopped right after parsing:
# prints {"script": exit status or "parsed"} as JSON. A script that parses its flags goes no further.
PARSE_ONLY = r'''
import argparse, json, runpy, sys

class Parsed(BaseException):       # not an Exception: no `except Exception` in a script catches it
    pass

_parse_args = argparse.ArgumentParser.parse_args
def parse_then_stop(self, args=None, namespace=None):
    _parse_args(self, args, namespace)
    raise Parsed

argparse.ArgumentParser.parse_args = parse_then_stop
results = []
for script, args in json.loads(sys.argv[1]):
    sys.argv = [script, *args]
    try:
        runpy.run_path(script, run_name="__main__")
        results.append("ran to the end")
    except Parsed:
        results.append("parsed")
    except SystemExit as e:
        results.append(f"exit status {e.code}")
print(json.dumps(results))
'''


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)\n```", text, flags=re.S)


def commands(block: str) -> list[list[str]]:
    """The block's simple commands as argument lists: comments dropped, `&&` and `;` split, and a
    `for VAR in A B ...; do ...; done` loop reduced to its body with $VAR set to A."""
    result, env = [], {}
    for line in block.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split, lexer.commenters = True, "#"
        current = []
        for token in [*lexer, ";"]:
            if token not in ("&&", ";"):
                current.append(token)
                continue
            if current[:1] == ["do"]:
                current = current[1:]
            if current[:1] == ["for"]:
                env["$" + current[1]] = current[3]          # for VAR in FIRST ...
            elif current and current != ["done"]:
                result.append([env.get(word, word) for word in current])
            current = []
    return result


def script_and_args(command: list[str]) -> tuple[str, list[str]]:
    """`python X.py ARGS` or `torchrun [OPTIONS] X.py ARGS` -> (X.py, ARGS)."""
    assert command[0] in ("python", "torchrun"), f"README command neither python nor torchrun: {command}"
    at = next(i for i, word in enumerate(command) if word.endswith(".py"))
    return command[at], command[at + 1:]


def runs_in_seconds_on_a_cpu(command: list[str]) -> bool:
    if command[0] != "python" or command[1] == "-m":
        return False
    script, args = script_and_args(command)
    return (script in ("data/make_tiny_shards.py", "analyze.py")
            or script == "train_gpt.py" and "--device" in args and args[args.index("--device") + 1] == "cpu")


def test_readme_opens_with_the_install_for_cpu_only_machines_then_the_two_commands():
    blocks = bash_blocks(README)
    assert INSTALL_CPU_TORCH.fullmatch(blocks[0]), "the first command installs torch's CPU build"
    assert blocks[1:3] == [RUN_COMMAND, TEST_COMMAND]
    # the CPU build pinned is the torch the requirements allow (torch>=2.11)
    pinned = tuple(int(part) for part in INSTALL_CPU_TORCH.fullmatch(blocks[0])[1].split(".")[:2])
    bound = re.search(r"^torch>=(\d+)\.(\d+)", (REPO / "requirements.txt").read_text(), flags=re.M)
    assert pinned >= (int(bound[1]), int(bound[2]))


def test_ci_runs_the_readme_test_command():
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert TEST_COMMAND in ci_lines


def test_readme_pip_commands_are_satisfied_by_this_environment():
    """Each `pip install` of the README, dry-run offline: its files exist and parse, and what it
    installs is what the suite runs on (the CPU torch line only where this is that torch)."""
    pip_commands = [c for block in bash_blocks(README) for c in commands(block) if c[:2] == ["pip", "install"]]
    assert len(pip_commands) == 3
    for command in pip_commands:
        pin = next((word.split("==")[1] for word in command if word.startswith("torch==")), None)
        if pin is not None and torch.__version__.split("+")[0] != pin:
            continue                      # the README pins the CPU build the project tests on; this is another
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", *command[2:]],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{shlex.join(command)}:\n{done.stdout}{done.stderr}"
        assert "Would install" not in done.stdout, f"{shlex.join(command)} would change this environment:\n{done.stdout}"


def test_readme_commands_that_take_long_parse(tmp_path):
    """The study, the GPU runs, the downloads: the scripts accept the README's flags."""
    checks = []
    for block in bash_blocks(README):
        if all(runs_in_seconds_on_a_cpu(c) for c in commands(block)):
            continue                      # run whole by the next test
        for command in commands(block):
            if command[:2] == ["pip", "install"] or command[:3] == ["python", "-m", "pytest"]:
                continue                  # the tests above
            script, args = script_and_args(command)
            assert (REPO / script).is_file(), f"README names a missing script: {shlex.join(command)}"
            checks.append((shlex.join(command), str(REPO / script), args))
    assert len(checks) >= 5               # the study, the GPU loop and its analysis, downloads, GPU runs
    done = subprocess.run([sys.executable, "-c", PARSE_ONLY, json.dumps([c[1:] for c in checks])],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.splitlines()[-1])
    refused = [f"{command}: {result}" for (command, _, _), result in zip(checks, results) if result != "parsed"]
    assert not refused, "README commands the scripts refuse:\n" + "\n".join(refused) + "\n" + done.stderr


def test_readme_commands_that_run_in_seconds_run(tmp_path):
    """The GPT-2 CPU smoke run and its analysis, pasted into bash in a fresh copy of the scripts."""
    blocks = [block for block in bash_blocks(README)
              if all(runs_in_seconds_on_a_cpu(c) for c in commands(block))]
    assert blocks, "the README shows the CPU smoke run"
    for path in ["train_gpt.py", "train_mnist_ffn.py", "analyze.py", "data/make_tiny_shards.py"]:
        (tmp_path / path).parent.mkdir(exist_ok=True)
        shutil.copy(REPO / path, tmp_path / path)
    bin_dir = tmp_path / "bin"                    # `python` in the block is the suite's interpreter
    bin_dir.mkdir()
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    (bin_dir / "python").chmod(0o755)
    for block in blocks:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300, env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
        assert done.returncode == 0, f"{block}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    smoke_logs = list((tmp_path / "logs").rglob("gpt-*.txt"))
    assert len(smoke_logs) == 1
    done_line = [line for line in smoke_logs[0].read_text().splitlines() if line.startswith("done:")][-1]
    assert "steps:40 " in done_line and "status:ok" in done_line
    # the README says the validation loss falls to 3.19 with relu2
    assert abs(float(re.search(r"final_val_loss:(\S+)", done_line)[1]) - 3.19) < 0.05, done_line
    assert (tmp_path / "plots" / "smoke" / "summary.md").is_file()


def github_anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors for the headings outside code blocks: a repeated one gets -1, -2, ..."""
    seen, result = {}, set()
    for heading in re.findall(r"^#{1,6} (.+)$", re.sub(r"```.*?```", "", markdown, flags=re.S), flags=re.M):
        anchor = github_anchor(heading)
        result.add(anchor if anchor not in seen else f"{anchor}-{seen[anchor]}")
        seen[anchor] = seen.get(anchor, 0) + 1
    return result


@pytest.mark.parametrize("page", DOCS, ids=[str(p.relative_to(REPO)) for p in DOCS])
def test_relative_links_resolve(page):
    text = page.read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", re.sub(r"```.*?```", "", text, flags=re.S))
    broken = []
    for link in links:
        if re.match(r"[a-z]+:", link):
            continue                          # https:, mailto:
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.is_relative_to(REPO) or not target.exists():
            broken.append(f"{link}: no such file in the repository")
        elif anchor and target.suffix == ".md" and anchor not in anchors(target.read_text()):
            broken.append(f"{link}: no heading with that anchor in {target.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}:\n" + "\n".join(broken)


def test_github_anchor_matches_githubs_rule():
    assert github_anchor("Parameter matching (`--param-match`)") == "parameter-matching---param-match"
    assert github_anchor("GPT-2 (train_gpt.py)") == "gpt-2-train_gptpy"
    assert anchors("# A\n```\n# not a heading\n```\n## A\n") == {"a", "a-1"}
