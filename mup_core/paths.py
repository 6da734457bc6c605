"""Where mup keeps its caches and artifacts on the local disk.

Everything hangs off ``MUP_HOME`` (default ``~/.mup``); the Makefile points it at
``.mup/`` inside the project so that the demo, the UI and the tests share one place.
"""

from __future__ import annotations

import os
from pathlib import Path


def mup_home() -> Path:
    return Path(os.environ.get("MUP_HOME", Path.home() / ".mup")).expanduser()


def model_cache_dir() -> Path:
    """Converted model weights (GGUF -> safetensors, tiny models)."""
    return Path(os.environ.get("MUP_MODEL_CACHE", mup_home() / "models")).expanduser()


def artifact_root() -> Path:
    """Default root of the local artifact store."""
    return Path(os.environ.get("MUP_ARTIFACT_ROOT", mup_home() / "artifacts")).expanduser()
