"""The single Definitions object of mup (``dagster ... -m mup_dagster.definitions``)."""

from __future__ import annotations

import dagster as dg

from mup_dagster import assets_probes
from mup_dagster.resources import default_artifact_store

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([assets_probes]),
    resources={"artifact_store": default_artifact_store()},
)
