"""Helpers that turn results into Dagster metadata the UI can show."""

from __future__ import annotations

import base64
from typing import Iterable

import dagster as dg


def image_markdown(png: bytes, alt: str) -> dg.MetadataValue:
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def label_balance(counts: dict) -> dg.MetadataValue:
    return dg.MetadataValue.json({k: int(v) for k, v in sorted(counts.items())})


def data_version(parts: Iterable[str | bytes]) -> dg.DataVersion:
    """The data version of an asset's output: the content digest of ``parts`` in order, each
    length-prefixed (so no two splits of the same bytes collide). Consumed one part at a time."""
    from mup_core.storage import content_digest

    def framed():
        for part in parts:
            data = part.encode() if isinstance(part, str) else part
            yield f"{len(data)}:".encode()
            yield data

    return dg.DataVersion(content_digest(framed()))
