"""Helpers that turn results into Dagster metadata the UI can show."""

from __future__ import annotations

import base64

import dagster as dg


def image_markdown(png: bytes, alt: str) -> dg.MetadataValue:
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def label_balance(counts: dict) -> dg.MetadataValue:
    return dg.MetadataValue.json({k: int(v) for k, v in sorted(counts.items())})
