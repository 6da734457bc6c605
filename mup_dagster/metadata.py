"""Helpers that turn results into Dagster metadata the UI can show."""

from __future__ import annotations

import base64
from typing import Iterable, Optional, Sequence

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


def publish_table(store, table, key: str, *, png: Optional[bytes] = None, figure_key: Optional[str] = None,
                  figure_alt: str = "figure", preview=None, preview_rows: Optional[int] = 60,
                  columns: Optional[Sequence[str]] = None, extra: Optional[dict] = None) -> dg.Output:
    """Store ``table`` (parquet) at ``key`` and ``png`` at ``figure_key``, and return the
    asset's output: a ``TableRef``, the metadata a reader looks at first (the figure, the
    first ``preview_rows`` rows — None: all — of ``preview`` — default: the table — in
    ``columns``, where both are stored) and ``extra``, and a data version of the bytes stored."""
    from mup_core.refs import TableRef
    from mup_core.storage import table_bytes
    from mup_core.workflows import metrics_markdown

    data = table_bytes(table)
    store.put_bytes(key, data)
    shown = preview if preview is not None else table
    shown = shown if preview_rows is None else shown.head(preview_rows)
    meta = {"rows": dg.MetadataValue.int(table.height), "table_path": dg.MetadataValue.path(store.uri(key)),
            "table": dg.MetadataValue.md(metrics_markdown(shown, [c for c in (columns or table.columns) if c in table.columns]))}
    if png is not None:
        if figure_key is None:
            raise ValueError(f"publish_table({key}): a figure needs a figure_key")
        store.put_bytes(figure_key, png)
        meta["figure"] = image_markdown(png, figure_alt)
        meta["figure_path"] = dg.MetadataValue.path(store.uri(figure_key))
    meta.update(extra or {})
    ref = TableRef(key, table.height, figure_key if png is not None else None)
    return dg.Output(ref, metadata=meta, data_version=data_version([data, png or b""]))
