"""mup_dagster: the asset graph of mup. Thin: asset bodies call mup_core."""

import warnings

import dagster as dg

# Multi-partition mappings and data versions are "beta" in Dagster 1.13; we rely on them on purpose.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
