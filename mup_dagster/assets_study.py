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

import hashlib
from typing import Optional

import dagster as dg
from pydantic import Field

from mup_core.models.registry import get_spec
from mup_core.probe_types import ALL_PROBE_TYPES, LINEAR_PROBE_TYPES
from mup_dagster.automation import GPU_POOL, on_any_upstream_partition_update, on_upstream_version_change
from mup_dagster.metadata import image_markdown
from mup_dagster.partitions import by_model, model_partitions
from mup_dagster.resources import ArtifactStoreResource

GROUP = "probe_study"
BASELINES = ("tfidf_baseline", "prompted_baseline", "finetuned_baseline", "continuation_baseline")


def _asset(**kw):
    return dg.asset(group_name=GROUP, partitions_def=model_partitions, automation_condition=on_upstream_version_change, **kw)


def _version(data: bytes) -> dg.DataVersion:
    return dg.DataVersion(hashlib.sha256(data).hexdigest()[:24])


def _publish(context, store, name: str, table, png: Optional[bytes] = None, extra: Optional[dict] = None,
             columns: Optional[list] = None) -> dg.Output:
    """Store ``table`` (and ``png``) under study/<model>/ and return the asset's output."""
    from mup_core.experiments import to_parquet_bytes
    from mup_core.workflows import metrics_markdown

    model = context.partition_key
    data = to_parquet_bytes(table)
    key = f"study/{model}/{name}.parquet"
    store.put_bytes(key, data)
    meta = {"rows": dg.MetadataValue.int(table.height), "table_path": dg.MetadataValue.path(store.uri(key))}
    cols = columns or table.columns
    meta["table"] = dg.MetadataValue.md(metrics_markdown(table.head(60), [c for c in cols if c in table.columns]))
    value = {"table": key}
    if png is not None:
        fig_key = f"figures/{model}/{name}.png"
        store.put_bytes(fig_key, png)
        meta["figure"] = image_markdown(png, name)
        meta["figure_path"] = dg.MetadataValue.path(store.uri(fig_key))
        value["figure"] = fig_key
    meta.update(extra or {})
    return dg.Output(value, metadata=meta, data_version=_version(data + (png or b"")))


def _read(store, ref: dict):
    from mup_core.experiments import from_parquet_bytes

    return from_parquet_bytes(store.get_bytes(ref["table"]))


def _layer(context, configured: Optional[int], layer_sweep: dict, activations: dict) -> int:
    layer = configured if configured is not None else int(layer_sweep["selected_layer"])
    have = sorted(set.intersection(*(set(r["layers"]) for r in activations.values())))
    if layer not in have:
        raise dg.Failure(f"{context.asset_key.to_user_string()}: layer {layer} of {context.partition_key} has no "
                         f"activations (extracted: {have}); set `layer` to one of them or re-materialise `activations`")
    return layer


def _sets(context, store, corpus_splits, eval_datasets, activations, layer):
    from mup_core.experiments.data import study_sets

    try:
        return study_sets(store, corpus_splits, eval_datasets, activations, layer)
    except KeyError as exc:
        raise dg.Failure(f"{context.asset_key.to_user_string()}: {exc.args[0]}") from exc


# -- layer sweep ---------------------------------------------------------------------------
@dg.asset(
    group_name=GROUP,
    partitions_def=model_partitions,
    deps=[dg.AssetDep("probe_metrics", partition_mapping=by_model)],
    kinds={"matplotlib"},
    automation_condition=on_any_upstream_partition_update,
)
def layer_sweep(context: dg.AssetExecutionContext, artifact_store: ArtifactStoreResource) -> dg.Output[dict]:
    """AUROC by layer for every probe type, and the layer the study uses: the one with the
    best mean AUROC over probe types on the *selection sets* (eval_datasets' role
    ``selection``: data from outside the training distribution), or on the corpus
    validation split when there are none. Evaluation sets never choose anything."""
    from mup_core.evaluation.selection import SelectionError
    from mup_core.evaluation.selection import layer_sweep as sweep
    from mup_core.figures import study as figs
    from mup_core.workflows import collect_metrics, metrics_markdown

    model = context.partition_key
    store = artifact_store.get_store()
    try:
        found = sweep(collect_metrics(store, model))
    except SelectionError as exc:
        raise dg.Failure(f"layer_sweep of {model}: {exc}") from None
    selected, on = found["selected_layer"], ", ".join(found["chosen_on"])
    png = figs.layer_sweep(found["table"], selected, f"{model}: AUROC by layer (chosen on {on})")
    extra = {"selected_layer": dg.MetadataValue.int(selected), "chosen_on": dg.MetadataValue.json(found["chosen_on"]),
             "out_of_distribution_selection": found["out_of_distribution"],
             "best_probe": dg.MetadataValue.json(found["best_probe"]),
             "best_layer_by_probe": dg.MetadataValue.json(found["best_layer_by_probe"])}
    if found["leave_one_out"] is not None:
        loo = found["leave_one_out"]
        extra["leave_one_set_out"] = dg.MetadataValue.md(metrics_markdown(
            loo, ("held_out", "probe_type", "layer", "selection_auroc", "auroc", "tpr_at_1pct_fpr")))
        extra["leave_one_set_out_mean_auroc"] = dg.MetadataValue.float(float(loo["auroc"].mean()))
        extra["leave_one_set_out_mean_tpr_at_1pct_fpr"] = dg.MetadataValue.float(float(loo["tpr_at_1pct_fpr"].mean()))
    out = _publish(context, store, "layer_sweep", found["table"], png, extra)
    return dg.Output({**out.value, "selected_layer": selected, "best_layer_by_probe": found["best_layer_by_probe"],
                      "best_probe": found["best_probe"], "chosen_on": found["chosen_on"]},
                     metadata=out.metadata, data_version=out.data_version)


# -- probe scores at the study layer -----------------------------------------------------------
class ProbeScoresConfig(dg.Config):
    layer: Optional[int] = Field(default=None, description="layer to study; default: layer_sweep's selection")
    probe_types: list[str] = Field(default_factory=lambda: list(ALL_PROBE_TYPES))
    hyperparameters: dict[str, dict[str, float]] = Field(default_factory=dict, description="per probe type overrides")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], description="seeds of the torch probes (linear ones are deterministic)")


@_asset(kinds={"pytorch", "polars"})
def probe_scores(
    context: dg.AssetExecutionContext,
    config: ProbeScoresConfig,
    artifact_store: ArtifactStoreResource,
    corpus_splits: dict,
    eval_datasets: dict,
    activations: dict,
    layer_sweep: dict,
) -> dg.Output[dict]:
    """Every probe type (x seeds) at the study layer, trained on the corpus train split
    (early stopping on its validation split), scored on the validation split and every
    evaluation set."""
    from mup_core.baselines.compute import probe_flops
    from mup_core.experiments import VAL, concat_scores, score_rows
    from mup_core.experiments.analysis import top_tokens
    from mup_core.probes import PROBE_TYPES, train_probe

    model = context.partition_key
    unknown = [t for t in config.probe_types if t not in PROBE_TYPES]
    if unknown:
        raise dg.Failure(f"probe_scores: unknown probe types {unknown}; known: {sorted(PROBE_TYPES)}")
    layer = _layer(context, config.layer, layer_sweep, activations)
    store = artifact_store.get_store()
    sets = _sets(context, store, corpus_splits, eval_datasets, activations, layer)
    train_ds, train = sets["train"]
    val = sets[VAL][1]
    hidden = train.acts.hidden_size
    tables = []
    # per-token scores, for inspection: what each probe reads in the first high-stakes evaluation example
    inspect_name = next(n for n in sets if n not in ("train", VAL)) if len(sets) > 2 else VAL
    inspect_ds, inspect_part = sets[inspect_name]
    inspect_i = int(next(i for i, y in enumerate(inspect_part.labels) if y == 1)) if inspect_part.labels.any() else 0
    inspect_tokens = _token_strings(model, inspect_ds.input_at(inspect_i))
    highlights = {"dataset": inspect_name, "id": inspect_ds.ids[inspect_i]}
    for probe_type in config.probe_types:
        seeds = [0] if probe_type in LINEAR_PROBE_TYPES else config.seeds
        for seed in seeds:
            hp = dict(config.hyperparameters.get(probe_type, {}))
            if probe_type not in LINEAR_PROBE_TYPES:
                hp["seed"] = seed
            probe = train_probe(probe_type, train.pair(), val.pair(), model=model, layer=layer, sample_weight=train_ds.sample_weights(),
                                train_inputs_hash=train_ds.inputs_hash, train_labels_hash=train_ds.labels_hash, hyperparameters=hp)
            if seed == seeds[0] and len(inspect_tokens) == inspect_part.acts.lengths[inspect_i]:
                highlights[probe_type] = top_tokens(probe.token_scores(inspect_part.acts, inspect_i), inspect_tokens)
            for name, (ds, part) in sets.items():
                if name == "train":
                    continue
                tokens = part.acts.lengths
                tables.append(score_rows(f"probe:{probe_type}", "probe", name, ds.ids, part.labels, probe.predict_proba(part.acts),
                                         tokens, probe_flops(probe_type, hidden, tokens), seed=seed))
        context.log.info(f"probe_scores: {probe_type} done ({len(seeds)} seed(s))")
    scores = concat_scores(tables)
    chosen = layer_sweep.get("best_probe", {}).get("probe_type")  # chosen on the selection sets
    out = _publish(context, store, "scores/probes", scores, extra={"layer": dg.MetadataValue.int(layer),
                                                                   "top_tokens": dg.MetadataValue.json(highlights)},
                   columns=["method", "dataset", "seed", "id", "label", "score"])
    if chosen in config.probe_types:
        out = dg.Output({**out.value, "chosen_method": f"probe:{chosen}", "chosen_on": layer_sweep.get("chosen_on")},
                        metadata=out.metadata, data_version=out.data_version)
    return out


def _token_strings(slug: str, value) -> list[str]:
    """The tokens the model reads for one input (chat template, truncation), as text."""
    from types import SimpleNamespace

    from mup_core.activations.extract import tokenize_inputs
    from mup_core.models.loading import load_tokenizer

    tok = load_tokenizer(slug)
    ids, _ = tokenize_inputs(SimpleNamespace(tokenizer=tok, spec=get_spec(slug)), [value])
    return [tok.decode([i]) for i in ids[0]]


# -- baselines -----------------------------------------------------------------------------
def _inputs_and_tokens(store, corpus_splits, eval_datasets, slug: str):
    """{name: (dataset without ambiguous rows, token counts under ``slug``'s chat template)} for
    train, corpus-val and every evaluation set."""
    from mup_core.activations.extract import tokenize_inputs
    from mup_core.experiments import VAL
    from mup_core.models.loading import load_tokenizer
    from mup_core.workflows import evaluation_sets, load_stored_dataset

    from types import SimpleNamespace

    lm = SimpleNamespace(tokenizer=load_tokenizer(slug), spec=get_spec(slug))  # what tokenize_inputs reads
    refs = {"train": corpus_splits["train"], VAL: corpus_splits["val"], **evaluation_sets(eval_datasets)}
    out = {}
    for name, ref in refs.items():
        ds = load_stored_dataset(store, ref).unambiguous()
        if len(ds):
            ids, _ = tokenize_inputs(lm, ds.inputs)
            out[name] = (ds, [len(i) for i in ids])
    return out


def _baseline_table(method, sets, score_fn, flops_fn, seed=0):
    from mup_core.experiments import concat_scores, score_rows

    tables = []
    for name, (ds, tokens) in sets.items():
        if name == "train":
            continue
        scores = score_fn(name, ds)
        tables.append(score_rows(method, "baseline", name, ds.ids, ds.label_array(), scores, tokens, flops_fn(name, ds, tokens), seed=seed))
    return concat_scores(tables)


class TfidfConfig(dg.Config):
    C: float = 1.0
    ngram_max: int = 2


@_asset(kinds={"scikitlearn"})
def tfidf_baseline(
    context: dg.AssetExecutionContext, config: TfidfConfig, artifact_store: ArtifactStoreResource,
    corpus_splits: dict, eval_datasets: dict,
) -> dg.Output[dict]:
    """Word and word-pair TF-IDF into logistic regression, trained on the corpus train split:
    the cheapest possible monitor."""
    from mup_core.baselines import TfidfMonitor

    store = artifact_store.get_store()
    sets = _inputs_and_tokens(store, corpus_splits, eval_datasets, context.partition_key)
    train_ds, _ = sets["train"]
    mon = TfidfMonitor(C=config.C, ngram_max=config.ngram_max).fit(train_ds.inputs, train_ds.label_array())
    table = _baseline_table("tfidf", sets, lambda n, ds: mon.predict_proba(ds.inputs), lambda n, ds, t: mon.flops_per_example(ds.inputs))
    return _publish(context, store, "scores/tfidf", table, extra={"top_features": dg.MetadataValue.json(mon.top_features(8))},
                    columns=["method", "dataset", "id", "label", "score"])


class PromptedConfig(dg.Config):
    monitor_model: Optional[str] = Field(default=None, description="registry model used as the monitor; default: the partition's model")
    templates: list[str] = Field(default_factory=lambda: ["direct", "monitor", "consequences", "rubric"])
    batch_size: int = 8
    endpoint_url: Optional[str] = Field(default=None, description="OpenAI-compatible endpoint with logprobs instead of a local model")
    endpoint_model: str = ""
    endpoint_non_embedding_params: Optional[int] = Field(default=None, description="for FLOPs accounting of an endpoint model")


@_asset(pool=GPU_POOL, kinds={"pytorch"})
def prompted_baseline(
    context: dg.AssetExecutionContext, config: PromptedConfig, artifact_store: ArtifactStoreResource,
    corpus_splits: dict, eval_datasets: dict,
) -> dg.Output[dict]:
    """A prompted LLM monitor: P(Yes) / (P(Yes) + P(No)) from the next-token distribution,
    with the prompt template chosen on the corpus validation split."""
    import numpy as np

    from mup_core.baselines import EndpointPromptedMonitor, LocalPromptedMonitor, model_compute
    from mup_core.experiments import VAL
    from mup_core.models.loading import ModelUnavailableError, load_model

    store = artifact_store.get_store()
    slug = config.monitor_model or context.partition_key
    sets = _inputs_and_tokens(store, corpus_splits, eval_datasets, context.partition_key)
    if config.endpoint_url:
        mon = EndpointPromptedMonitor(config.endpoint_url, config.endpoint_model)
        per_token = 2.0 * (config.endpoint_non_embedding_params or 0)
        if not config.endpoint_non_embedding_params:
            context.log.warning("prompted_baseline: endpoint_non_embedding_params not set; FLOPs are recorded as 0")

        def flops(name, ds, tokens):
            return per_token * (np.asarray(tokens) + 80.0)  # the template adds about 80 tokens
        method = f"prompted:{config.endpoint_model}"
    else:
        try:
            lm = load_model(slug)
        except ModelUnavailableError as exc:
            raise dg.Failure(str(exc)) from exc
        compute = model_compute(lm)
        mon = LocalPromptedMonitor(lm, batch_size=config.batch_size)
        prompt_tokens: dict = {}

        def flops(name, ds, tokens):
            return compute.forward_flops(prompt_tokens[name], 1)
        method = "prompted" if slug == context.partition_key else f"prompted:{slug}"
    val_ds, _ = sets[VAL]
    dev = mon.select_template(val_ds.inputs, val_ds.label_array(), config.templates)
    context.log.info(f"prompted_baseline: dev AUROC by template {dev}; using {mon.template.name}")

    def score(name, ds):
        s = mon.predict_proba(ds.inputs)
        if getattr(mon, "prompt_tokens", None) is not None:
            prompt_tokens[name] = mon.prompt_tokens
        context.log.info(f"prompted_baseline: scored {name} ({len(ds)})")
        return s

    table = _baseline_table(method, sets, score, flops)
    return _publish(context, store, "scores/prompted", table, extra={
        "template": mon.template.name, "dev_auroc_by_template": dg.MetadataValue.json({k: round(v, 4) for k, v in dev.items()}),
        "monitor_model": config.endpoint_model if config.endpoint_url else slug,
        **({} if config.endpoint_url else {"precision": dg.MetadataValue.json(lm.precision.as_metadata())}),
    }, columns=["method", "dataset", "id", "label", "score"])


class FinetunedConfig(dg.Config):
    monitor_model: Optional[str] = Field(default=None, description="registry model to finetune; default: the partition's model")
    method: str = Field(default="lora", description="lora or full")
    steps: int = 40
    batch_size: int = 8
    lr: float = 5e-4
    max_length: int = 256
    seeds: list[int] = Field(default_factory=lambda: [0, 1])


@_asset(pool=GPU_POOL, kinds={"pytorch"})
def finetuned_baseline(
    context: dg.AssetExecutionContext, config: FinetunedConfig, artifact_store: ArtifactStoreResource,
    corpus_splits: dict, eval_datasets: dict,
) -> dg.Output[dict]:
    """A classification head on the monitor model's last token, finetuned (LoRA or full)
    on the corpus train split, once per seed."""
    import numpy as np

    from mup_core.baselines import FinetuneConfig, FinetunedClassifier
    from mup_core.baselines.compute import ModelCompute
    from mup_core.experiments import concat_scores
    from mup_core.models.loading import ModelUnavailableError

    store = artifact_store.get_store()
    slug = config.monitor_model or context.partition_key
    spec = get_spec(slug)
    sets = _inputs_and_tokens(store, corpus_splits, eval_datasets, slug)
    train_ds, _ = sets["train"]
    tables, losses = [], {}
    for seed in config.seeds:
        try:
            cfg = FinetuneConfig(method=config.method, steps=config.steps, batch_size=config.batch_size, lr=config.lr,
                                 max_length=config.max_length, seed=seed)
            clf = FinetunedClassifier(slug, cfg)
        except (ValueError, ModelUnavailableError) as exc:
            raise dg.Failure(f"finetuned_baseline: {exc}") from exc

        def log(v, _seed=seed):
            if v["step"] % 10 == 0 or v["step"] == v["steps"]:
                context.log.info(f"finetuned_baseline seed {_seed}: step {v['step']}/{v['steps']} loss {v['loss']:.3f}")

        clf.fit(train_ds.inputs, train_ds.label_array(), log=log)
        losses[seed] = round(clf.history[-1]["loss"], 4)
        n = sum(p.numel() for p in clf.body.parameters())
        emb = clf.body.get_input_embeddings().weight.numel()
        compute = ModelCompute(slug, int(n - emb), spec.hidden_size, 1)
        method = "finetuned" if slug == context.partition_key else f"finetuned:{slug}"
        tables.append(_baseline_table(method, sets, lambda name, ds: clf.predict_proba(ds.inputs),
                                      lambda name, ds, t: compute.forward_flops(np.asarray(t), 1), seed=seed))
    table = concat_scores(tables)
    return _publish(context, store, "scores/finetuned", table, extra={
        "final_loss_by_seed": dg.MetadataValue.json(losses), "method": config.method, "steps": config.steps, "monitor_model": slug,
        "precision": dg.MetadataValue.json(clf.precision.as_metadata()),
    }, columns=["method", "seed", "dataset", "id", "label", "score"])


class ContinuationConfig(dg.Config):
    monitor_model: Optional[str] = Field(default=None, description="registry model that writes the judgement; default: the partition's")
    max_new_tokens: int = 4
    batch_size: int = 8


@_asset(pool=GPU_POOL, kinds={"pytorch"})
def continuation_baseline(
    context: dg.AssetExecutionContext, config: ContinuationConfig, artifact_store: ArtifactStoreResource,
    corpus_splits: dict, eval_datasets: dict,
) -> dg.Output[dict]:
    """The monitor model writes a 1-10 stakes rating, which is parsed into a score."""
    import numpy as np

    from mup_core.baselines import ContinuationMonitor, model_compute
    from mup_core.models.loading import ModelUnavailableError, load_model

    store = artifact_store.get_store()
    slug = config.monitor_model or context.partition_key
    sets = _inputs_and_tokens(store, corpus_splits, eval_datasets, context.partition_key)
    try:
        lm = load_model(slug)
    except ModelUnavailableError as exc:
        raise dg.Failure(str(exc)) from exc
    compute = model_compute(lm)
    mon = ContinuationMonitor(lm, max_new_tokens=config.max_new_tokens, batch_size=config.batch_size)
    unparsed, examples, prompt_tokens = {}, {}, {}

    def score(name, ds):
        s = mon.predict_proba(ds.inputs)
        unparsed[name], examples[name], prompt_tokens[name] = mon.unparsed, mon.replies[:5], mon.prompt_tokens
        context.log.info(f"continuation_baseline: {name}: {len(ds)} judgements, {mon.unparsed} unparsed")
        return s

    def flops(name, ds, tokens):
        g = config.max_new_tokens
        return compute.forward_flops(np.asarray(prompt_tokens[name]) + g, g)

    method = "continuation" if slug == context.partition_key else f"continuation:{slug}"
    table = _baseline_table(method, sets, score, flops)
    return _publish(context, store, "scores/continuation", table, extra={
        "unparsed": dg.MetadataValue.json(unparsed), "example_replies": dg.MetadataValue.json(examples), "monitor_model": slug,
        "precision": dg.MetadataValue.json(lm.precision.as_metadata()),
    }, columns=["method", "dataset", "id", "label", "score"])


# -- experiments on the scores ---------------------------------------------------------------
def _all_scores(store, *refs):
    from mup_core.experiments import concat_scores

    return concat_scores([_read(store, r) for r in refs])


class ComparisonConfig(dg.Config):
    n_boot: int = Field(default=1000, description="bootstrap resamples for the 95% intervals")


@_asset(kinds={"matplotlib"})
def probe_comparison(
    context: dg.AssetExecutionContext, config: ComparisonConfig, artifact_store: ArtifactStoreResource,
    probe_scores: dict, tfidf_baseline: dict, prompted_baseline: dict, finetuned_baseline: dict, continuation_baseline: dict,
) -> dg.Output[dict]:
    """Every probe type and baseline on every evaluation set: TPR at 1 % FPR first, then AUROC,
    accuracy and Brier, with 95% bootstrap intervals, mean and std over seeds; the metadata
    leads with the mean TPR over the out-of-distribution sets."""
    import polars as pl

    from mup_core.experiments import VAL, comparison_table, method_summary
    from mup_core.figures import study as figs

    store = artifact_store.get_store()
    scores = _all_scores(store, probe_scores, tfidf_baseline, prompted_baseline, finetuned_baseline, continuation_baseline)
    table = comparison_table(scores, n_boot=config.n_boot)
    ev = table.filter(pl.col("dataset") != VAL)
    png = figs.comparison_bars(ev, f"{context.partition_key}: monitors by evaluation set (95% bootstrap CI)")
    summary = method_summary(table)
    def by_method(col):
        return dg.MetadataValue.json({r["method"]: None if r[col] is None else round(r[col], 4) for r in summary.iter_rows(named=True)})

    return _publish(context, store, "probe_comparison", table, png, {
        "ood_mean_tpr_at_1pct_fpr_by_method": by_method("ood_mean_tpr_at_1pct_fpr"),
        "mean_tpr_at_1pct_fpr_by_method": by_method("mean_tpr_at_1pct_fpr"),
        "mean_auroc_by_method": by_method("mean_auroc"),
    }, columns=["dataset", "method", "seeds", "tpr_at_1pct_fpr", "tpr_at_1pct_fpr_lo", "tpr_at_1pct_fpr_hi",
                "auroc", "auroc_lo", "auroc_hi", "auroc_std", "brier"])


@_asset(kinds={"matplotlib"})
def calibration_curves(
    context: dg.AssetExecutionContext, artifact_store: ArtifactStoreResource,
    probe_scores: dict, tfidf_baseline: dict, prompted_baseline: dict, finetuned_baseline: dict, continuation_baseline: dict,
) -> dg.Output[dict]:
    """Reliability diagrams, Brier score and expected calibration error per method."""
    from mup_core.experiments import calibration
    from mup_core.figures import study as figs

    store = artifact_store.get_store()
    table, curves = calibration(_all_scores(store, probe_scores, tfidf_baseline, prompted_baseline, finetuned_baseline, continuation_baseline))
    png = figs.reliability_diagrams(curves, f"{context.partition_key}: reliability (evaluation sets pooled)")
    return _publish(context, store, "calibration", table, png, {"curves": dg.MetadataValue.json(curves)})


@_asset(kinds={"matplotlib"})
def roc_curves(
    context: dg.AssetExecutionContext, artifact_store: ArtifactStoreResource,
    probe_scores: dict, tfidf_baseline: dict, prompted_baseline: dict, finetuned_baseline: dict, continuation_baseline: dict,
) -> dg.Output[dict]:
    """ROC curves of every method on every evaluation set (the 1% FPR line marked)."""
    import polars as pl

    from mup_core.experiments import roc_points
    from mup_core.figures import study as figs

    store = artifact_store.get_store()
    pts = roc_points(_all_scores(store, probe_scores, tfidf_baseline, prompted_baseline, finetuned_baseline, continuation_baseline))
    table = pl.DataFrame([{"dataset": d, "method": m, "auroc": v[2], "points": len(v[0])} for d, by in pts.items() for m, v in by.items()])
    png = figs.roc_curves(pts, f"{context.partition_key}: ROC curves")
    return _publish(context, store, "roc_curves", table.sort("dataset", "auroc", descending=[False, True]), png)


class LengthConfig(dg.Config):
    bins: int = 4


@_asset(kinds={"matplotlib"})
def auroc_by_length(
    context: dg.AssetExecutionContext, config: LengthConfig, artifact_store: ArtifactStoreResource,
    probe_scores: dict, tfidf_baseline: dict, prompted_baseline: dict, finetuned_baseline: dict, continuation_baseline: dict,
) -> dg.Output[dict]:
    """AUROC of every method in token-length quantile bins (evaluation sets pooled)."""
    from mup_core.experiments import auroc_by_length as by_length
    from mup_core.figures import study as figs

    store = artifact_store.get_store()
    table = by_length(_all_scores(store, probe_scores, tfidf_baseline, prompted_baseline, finetuned_baseline, continuation_baseline), config.bins)
    return _publish(context, store, "auroc_by_length", table, figs.auroc_by_length(table, f"{context.partition_key}: AUROC by input length"))


class CascadeConfig(dg.Config):
    probe_method: Optional[str] = Field(default=None, description="e.g. probe:attention; default: the probe layer_sweep chose on the selection sets (else the best on corpus validation)")
    llm_methods: Optional[list[str]] = Field(default=None, description="default: every non-TF-IDF baseline")
    fractions: list[float] = Field(default_factory=lambda: [0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0])
    combine: str = Field(default="average", description="average or replace the probe's score on deferred examples")


@_asset(kinds={"matplotlib"})
def monitoring_cascade(
    context: dg.AssetExecutionContext, config: CascadeConfig, artifact_store: ArtifactStoreResource,
    probe_scores: dict, tfidf_baseline: dict, prompted_baseline: dict, finetuned_baseline: dict, continuation_baseline: dict,
) -> dg.Output[dict]:
    """Probe first, the most uncertain fraction to an LLM monitor: mean AUROC against mean
    FLOPs per example (probes reuse the monitored model's activations)."""
    import polars as pl

    from mup_core.experiments import VAL, cascade, comparison_table, method_summary
    from mup_core.figures import study as figs

    store = artifact_store.get_store()
    scores = _all_scores(store, probe_scores, tfidf_baseline, prompted_baseline, finetuned_baseline, continuation_baseline)
    metrics = comparison_table(scores, n_boot=0)  # point estimates: the choice of probe and the summary
    # the probe layer_sweep chose on the selection sets, else the best on corpus validation
    probe = config.probe_method or probe_scores.get("chosen_method")
    if probe is None:
        val = metrics.filter((pl.col("dataset") == VAL) & (pl.col("family") == "probe"))
        probe = val.sort("auroc", descending=True)["method"][0]
    llms = config.llm_methods or sorted(m for m in scores.filter(pl.col("family") == "baseline")["method"].unique().to_list() if m != "tfidf")
    try:
        table = cascade(scores, probe, llms, config.fractions, config.combine)
    except ValueError as exc:
        raise dg.Failure(f"monitoring_cascade: {exc}") from exc
    summary = method_summary(metrics)
    png = figs.compute_frontier(summary, table, f"{context.partition_key}: {probe} → LLM cascade")
    return _publish(context, store, "monitoring_cascade", table, png, {"probe": probe})


@_asset(kinds={"matplotlib"})
def study_summary(
    context: dg.AssetExecutionContext, artifact_store: ArtifactStoreResource, probe_comparison: dict, monitoring_cascade: dict,
) -> dg.Output[dict]:
    """One figure: AUROC per method, and AUROC against compute with the cascades."""
    from mup_core.experiments import method_summary
    from mup_core.figures import study as figs

    store = artifact_store.get_store()
    summary = method_summary(_read(store, probe_comparison))
    png = figs.summary(summary, _read(store, monitoring_cascade), f"{context.partition_key}: monitors compared on accuracy and compute")
    return _publish(context, store, "summary", summary, png)


# -- experiments that train probes -------------------------------------------------------------
class GeneralisationConfig(dg.Config):
    layer: Optional[int] = None
    probe_type: str = "logistic_regression"
    by: str = Field(default="auto", description="dataset: corpus and each evaluation set (split in halves); domain: corpus "
                    "domains; auto: dataset when there are evaluation sets besides corpus-test, else domain")
    seed: int = 0


@_asset(kinds={"matplotlib"})
def generalisation_heatmap(
    context: dg.AssetExecutionContext, config: GeneralisationConfig, artifact_store: ArtifactStoreResource,
    corpus_splits: dict, eval_datasets: dict, activations: dict, layer_sweep: dict,
) -> dg.Output[dict]:
    """Train a probe on one source, evaluate on every other: the transfer matrix."""
    from mup_core.experiments import VAL, generalisation, split_part
    from mup_core.figures import study as figs

    layer = _layer(context, config.layer, layer_sweep, activations)
    store = artifact_store.get_store()
    sets = _sets(context, store, corpus_splits, eval_datasets, activations, layer)
    others = [n for n in sets if n not in ("train", VAL, "corpus-test")]
    by = config.by if config.by != "auto" else ("dataset" if others else "domain")
    sources = {}
    if by == "domain":
        train_ds, train = sets["train"]
        test_name = "corpus-test" if "corpus-test" in sets else VAL
        test_ds, test = sets[test_name]
        if "domain" not in train_ds.df.columns:
            raise dg.Failure("generalisation_heatmap: by=domain needs a `domain` column in the corpus; use by=dataset")
        tr_dom, te_dom = train_ds.df["domain"].to_list(), test_ds.df["domain"].to_list()
        for d in sorted(set(tr_dom) & set(te_dom)):
            tr = train.take([i for i, v in enumerate(tr_dom) if v == d])
            te = test.take([i for i, v in enumerate(te_dom) if v == d])
            if len(set(tr.labels)) == 2 and len(set(te.labels)) == 2:
                sources[d] = (tr, te)
    elif by == "dataset":
        sources["corpus"] = (sets["train"][1], sets["corpus-test"][1] if "corpus-test" in sets else sets[VAL][1])
        for name in others:
            part = sets[name][1]
            try:
                a, b = split_part(part, 0.5, config.seed)
            except ValueError as exc:
                context.log.warning(f"generalisation_heatmap: skipping {name}: {exc}")
                continue
            if len(set(a.labels)) == 2 and len(set(b.labels)) == 2:
                sources[name] = (a, b)
    else:
        raise dg.Failure(f"generalisation_heatmap: by must be auto, dataset or domain, got {config.by!r}")
    if len(sources) < 2:
        raise dg.Failure(f"generalisation_heatmap: need two sources with both labels, got {sorted(sources)}")
    table = generalisation(sources, config.probe_type, seed=config.seed, progress=lambda n: context.log.info(f"training on {n}"))
    png = figs.heatmap(table, f"{context.partition_key} layer {layer}: {config.probe_type} trained on rows, tested on columns")
    return _publish(context, store, "generalisation", table, png, {"layer": dg.MetadataValue.int(layer), "by": by})


class DataEfficiencyConfig(dg.Config):
    layer: Optional[int] = None
    sizes: list[int] = Field(default_factory=lambda: [8, 16, 32, 64, 128, 256, 100_000], description="training set sizes (capped at the train split)")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    probe_types: list[str] = Field(default_factory=lambda: ["logistic_regression", "difference_of_means", "lda", "attention"])
    finetuned_sizes: list[int] = Field(default_factory=lambda: [16, 64, 256], description="sizes at which the finetuned baseline is trained too (empty: none)")
    finetuned_steps: int = 20
    finetuned_seeds: list[int] = Field(default_factory=lambda: [0])


@_asset(kinds={"matplotlib"})
def data_efficiency(
    context: dg.AssetExecutionContext, config: DataEfficiencyConfig, artifact_store: ArtifactStoreResource,
    corpus_splits: dict, eval_datasets: dict, activations: dict, layer_sweep: dict,
) -> dg.Output[dict]:
    """AUROC on the evaluation sets against the number of training examples, for probes and
    the finetuned baseline (mean and std over seeds)."""
    import polars as pl

    from mup_core.baselines import FinetuneConfig, FinetunedClassifier
    from mup_core.experiments import VAL, data_efficiency as efficiency
    from mup_core.figures import study as figs

    layer = _layer(context, config.layer, layer_sweep, activations)
    store = artifact_store.get_store()
    sets = _sets(context, store, corpus_splits, eval_datasets, activations, layer)
    train_ds, train = sets["train"]
    tests = {n: p for n, (_, p) in sets.items() if n not in ("train", VAL)}
    test_inputs = {n: sets[n][0].inputs for n in tests}
    capped_ft = {min(s, len(train.labels)) for s in config.finetuned_sizes}

    def finetuned(idx, seed):
        if len(idx) not in capped_ft or seed not in config.finetuned_seeds:
            return {}
        clf = FinetunedClassifier(context.partition_key, FinetuneConfig(steps=config.finetuned_steps, seed=seed))
        clf.fit([train_ds.inputs[i] for i in idx], train.labels[idx])
        return {n: clf.predict_proba(x) for n, x in test_inputs.items()}

    table = efficiency(train, sets[VAL][1], tests, config.sizes, config.seeds, config.probe_types,
                       extra_methods={"finetuned": finetuned} if config.finetuned_sizes else None,
                       progress=lambda m: context.log.info(f"data_efficiency: {m}"))
    table = table.filter(pl.col("auroc").is_not_nan()) if table.height else table
    png = figs.mean_std_lines(table, "train_examples", "method", f"{context.partition_key} layer {layer}: data efficiency",
                              "training examples", log_x=True)
    return _publish(context, store, "data_efficiency", table.sort("method", "train_examples", "seed"), png,
                    {"layer": dg.MetadataValue.int(layer), "max_examples": dg.MetadataValue.int(int(table["train_examples"].max()))})


class FewShotConfig(dg.Config):
    layer: Optional[int] = None
    probe_type: str = "logistic_regression"
    shots: list[int] = Field(default_factory=lambda: [4, 8, 16, 32])
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    modes: list[str] = Field(default_factory=lambda: ["dev_only", "combined", "upweighted"])
    dev_fraction: float = Field(default=0.5, description="share of each evaluation set used as its dev pool (pairs kept together)")
    upweight: Optional[float] = Field(default=None, description="weight of dev examples in 'upweighted'; default: train size / shots")


@_asset(kinds={"matplotlib"})
def few_shot_adaptation(
    context: dg.AssetExecutionContext, config: FewShotConfig, artifact_store: ArtifactStoreResource,
    corpus_splits: dict, eval_datasets: dict, activations: dict, layer_sweep: dict,
) -> dg.Output[dict]:
    """Adapting a probe to each evaluation set with k labelled dev examples, in the research's
    three modes (dev only, dev added to training, dev upweighted)."""
    from mup_core.experiments import VAL, few_shot, split_part
    from mup_core.figures import study as figs

    layer = _layer(context, config.layer, layer_sweep, activations)
    store = artifact_store.get_store()
    sets = _sets(context, store, corpus_splits, eval_datasets, activations, layer)
    targets = {}
    for name, (_, part) in sets.items():
        if name in ("train", VAL):
            continue
        try:
            dev, test = split_part(part, config.dev_fraction, seed=0)
        except ValueError as exc:
            context.log.warning(f"few_shot_adaptation: skipping {name}: {exc}")
            continue
        if len(set(dev.labels)) == 2 and len(set(test.labels)) == 2:
            targets[name] = (dev, test)
    if not targets:
        raise dg.Failure("few_shot_adaptation: no evaluation set has both labels in its dev and test halves")
    try:
        table = few_shot(sets["train"][1], targets, config.shots, config.seeds, config.probe_type, config.modes, config.upweight,
                         progress=lambda m: context.log.info(f"few_shot: {m}"))
    except ValueError as exc:
        raise dg.Failure(f"few_shot_adaptation: {exc}") from exc
    base = {f"no adaptation ({n})": v for n, v in zip(table.filter(table["mode"] == "none")["dataset"], table.filter(table["mode"] == "none")["auroc"])}
    png = figs.mean_std_lines(table.filter(table["mode"] != "none"), "shots", "mode",
                              f"{context.partition_key} layer {layer}: few-shot adaptation ({config.probe_type})", "dev examples (k)",
                              log_x=True, reference=base)
    return _publish(context, store, "few_shot", table, png, {"layer": dg.MetadataValue.int(layer)})
