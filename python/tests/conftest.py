"""What the Python tests share: the repository's fixtures, and the seed case."""

import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SEED_CONFIG = ROOT / "fixtures" / "configs" / "seed-rtx3060.py"
SEED_LOG = ROOT / "fixtures" / "oom" / "seed-nanogpt-rtx3060.log"

# The seed config's keys, as nanoGPT's train.py holds them after reading the file.
SEED_KEYS = {
    "batch_size": 64,
    "gradient_accumulation_steps": 1,
    "block_size": 1024,
    "dtype": "bfloat16",
    "compile": True,
}


@pytest.fixture(scope="session")
def seed():
    import vramplan

    # Eager, as README.md's seed example runs it (the compiled run names inductor's buffers).
    return vramplan.check(SEED_CONFIG, gpu="rtx3060", compile=False)
