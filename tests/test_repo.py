"""The repository keeps its promises to a newcomer: the README's two commands exist, name files
that exist, and CI runs exactly the README's test command."""
import re


def _readme_commands(readme: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)


def test_readme_opens_with_the_two_commands(repo_root):
    commands = _readme_commands((repo_root / "README.md").read_text())
    assert commands[0] == "pip install -r requirements.txt && python train_mnist_ffn.py"
    assert commands[1] == "pip install -r requirements-dev.txt && python -m pytest"


def test_readme_commands_name_files_that_exist(repo_root):
    for command in _readme_commands((repo_root / "README.md").read_text())[:2]:
        for word in command.split():
            if re.fullmatch(r"[\w./-]+\.(txt|py)", word):
                assert (repo_root / word).is_file(), f"README command names missing file {word}"


def test_ci_runs_the_readme_test_command(repo_root):
    test_command = _readme_commands((repo_root / "README.md").read_text())[1]
    ci_lines = [line.strip() for line in (repo_root / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines


def test_requirements_pin_only_the_three_dependencies(repo_root):
    names = [re.split(r"[<>=!~ ]", line)[0]
             for line in (repo_root / "requirements.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert sorted(names) == ["matplotlib", "numpy", "torch"]
    dev = (repo_root / "requirements-dev.txt").read_text()
    assert "-r requirements.txt" in dev and "pytest" in dev
