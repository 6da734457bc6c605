"""The probe study's experiments as plain functions (the Dagster assets call them)."""

from mup_core.experiments.analysis import (
    auroc_by_length,
    calibration,
    cascade,
    comparison_table,
    method_summary,
    roc_points,
)
from mup_core.experiments.scores import VAL, concat_scores, score_rows
from mup_core.experiments.training import (
    FEW_SHOT_MODES,
    Part,
    data_efficiency,
    few_shot,
    generalisation,
    score_probe_types,
    split_part,
    transfer_sources,
)

__all__ = [
    "FEW_SHOT_MODES",
    "VAL",
    "Part",
    "auroc_by_length",
    "calibration",
    "cascade",
    "comparison_table",
    "concat_scores",
    "data_efficiency",
    "few_shot",
    "generalisation",
    "method_summary",
    "roc_points",
    "score_rows",
    "score_probe_types",
    "split_part",
    "transfer_sources",
]
