"""Shared pytest fixtures: where the repo is, and the real MNIST files when they are beside it.

The real, byte-exact MNIST lives in ../shared/data/mnist (relative to the repo root) on the
developers' machines and in CI. The project never needs it: tests that do skip with a reason.
"""
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_MNIST = REPO_ROOT.parent / "shared" / "data" / "mnist"
MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]

# The scripts are single files at the top level, imported by the tests as modules.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The folder of the four real MNIST files (.gz), or a skip saying why there is none."""
    missing = [f for f in MNIST_FILES
               if not (SHARED_MNIST / f).exists() and not (SHARED_MNIST / (f + ".gz")).exists()]
    if missing:
        pytest.skip(f"real MNIST not found at {SHARED_MNIST} (missing {', '.join(missing)})")
    return SHARED_MNIST
