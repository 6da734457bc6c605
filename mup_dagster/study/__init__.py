"""The probe study: baselines and the paper's experiments as assets, partitioned by model.

```
probe_metrics (layer|model) -> layer_sweep -> probe_scores ----------------\\
corpus_splits, eval_datasets, activations -> tfidf / prompted / finetuned /  -> probe_comparison, calibration_curves,
                                             continuation baselines        /    roc_curves, auroc_by_length,
                                                                                monitoring_cascade -> study_summary
activations + layer_sweep -> generalisation_heatmap, data_efficiency, few_shot_adaptation
```

Every monitor writes its predictions into one long scores table
(``mup_core.experiments.scores``); the experiments read those tables. Each experiment
stores a parquet table and a PNG under ``study/<model>/`` and ``figures/<model>/``
and shows both in its metadata. All are configured with Dagster ``Config`` and
re-run when an input's data version changes.
"""

# modules by concern: common (helpers), probes (layer sweep, probe scores), baselines (LLM and
# TF-IDF monitors), comparisons (experiments on the scores), training (experiments that train probes)
