"""Experiment tracking with Weights & Biases: ``online``, ``offline`` (default) or ``disabled``.

Offline runs are written under ``dir`` and can be uploaded later with ``wandb sync``.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path


class Tracker:
    def __init__(self, mode: str = "offline", project: str = "mup", directory: str | os.PathLike | None = None, entity: str | None = None):
        if mode not in ("online", "offline", "disabled"):
            raise ValueError(f"tracking mode must be online, offline or disabled, got {mode!r}")
        from mup_core.paths import mup_home

        self.mode, self.project, self.entity = mode, project, entity
        self.directory = Path(directory or mup_home() / "wandb")

    @contextmanager
    def run(self, name: str, config: dict, group: str | None = None):
        if self.mode == "disabled":
            yield _NullRun()
            return
        import wandb

        self.directory.mkdir(parents=True, exist_ok=True)
        run = wandb.init(project=self.project, entity=self.entity, name=name, group=group, config=config,
                         mode=self.mode, dir=str(self.directory), reinit="finish_previous")
        try:
            yield run
        finally:
            run.finish()


class _NullRun:
    id = None
    dir = None

    def log(self, *_args, **_kwargs) -> None:
        pass
