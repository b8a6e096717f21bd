"""The repository's requirements name only the three dependencies (the README's commands and links:
tests/test_readme.py)."""
import re


def test_requirements_pin_only_the_three_dependencies(repo_root):
    names = [re.split(r"[<>=!~ ]", line)[0]
             for line in (repo_root / "requirements.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert sorted(names) == ["matplotlib", "numpy", "torch"]
    dev = (repo_root / "requirements-dev.txt").read_text()
    assert "-r requirements.txt" in dev and "pytest" in dev
