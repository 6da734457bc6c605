"""LLM and TF-IDF monitors the probes are compared against, each writing a scores table."""

from typing import Optional

import dagster as dg
from pydantic import Field

from mup_core.baselines.continuation import ContinuationMonitor
from mup_core.baselines.finetuned import FinetuneConfig
from mup_core.baselines.prompted import LocalPromptedMonitor
from mup_core.experiments.scores import baseline_table
from mup_dagster.automation import GPU_POOL
from mup_dagster.config import config_from, default_of
from mup_core.refs import TableRef
from mup_dagster.resources import ArtifactStoreResource
from mup_dagster.study.common import publish, study_asset

# -- baselines -----------------------------------------------------------------------------
def _inputs_and_tokens(store, corpus_splits, eval_datasets, slug: str):
    """{name: (dataset without ambiguous rows, token counts under ``slug``'s chat template)} for
    train, corpus-val and every evaluation set."""
    from mup_core.activations.extract import tokenize_inputs, tokenizer_only
    from mup_core.experiments import VAL
    from mup_core.workflows import evaluation_sets, load_stored_dataset

    lm = tokenizer_only(slug)
    refs = {"train": corpus_splits["train"], VAL: corpus_splits["val"], **evaluation_sets(eval_datasets)}
    out = {}
    for name, ref in refs.items():
        ds = load_stored_dataset(store, ref).unambiguous()
        if len(ds):
            ids, _ = tokenize_inputs(lm, ds.inputs)
            out[name] = (ds, [len(i) for i in ids])
    return out


class TfidfConfig(dg.Config):
    C: float = 1.0
    ngram_max: int = 2


@study_asset(kinds={"scikitlearn"})
def tfidf_baseline(
    context: dg.AssetExecutionContext, config: TfidfConfig, artifact_store: ArtifactStoreResource,
    corpus_splits: dict, eval_datasets: dict,
) -> dg.Output[TableRef]:
    """Word and word-pair TF-IDF into logistic regression, trained on the corpus train split:
    the cheapest possible monitor."""
    from mup_core.baselines import TfidfMonitor

    store = artifact_store.get_store()
    sets = _inputs_and_tokens(store, corpus_splits, eval_datasets, context.partition_key)
    train_ds, _ = sets["train"]
    mon = TfidfMonitor(C=config.C, ngram_max=config.ngram_max).fit(train_ds.inputs, train_ds.label_array())
    table = baseline_table("tfidf", sets, lambda n, ds: mon.predict_proba(ds.inputs), lambda n, ds, t: mon.flops_per_example(ds.inputs))
    return publish(context, store, "scores/tfidf", table, extra={"top_features": dg.MetadataValue.json(mon.top_features(8))},
                    columns=["method", "dataset", "id", "label", "score"])


class PromptedConfig(dg.Config):
    monitor_model: Optional[str] = Field(default=None, description="registry model used as the monitor; default: the partition's model")
    templates: list[str] = Field(default_factory=lambda: ["direct", "monitor", "consequences", "rubric"])
    batch_size: int = default_of(LocalPromptedMonitor, "batch_size")
    endpoint_url: Optional[str] = Field(default=None, description="OpenAI-compatible endpoint with logprobs instead of a local model")
    endpoint_model: str = ""
    endpoint_non_embedding_params: Optional[int] = Field(default=None, description="for FLOPs accounting of an endpoint model")


@study_asset(pool=GPU_POOL, kinds={"pytorch"})
def prompted_baseline(
    context: dg.AssetExecutionContext, config: PromptedConfig, artifact_store: ArtifactStoreResource,
    corpus_splits: dict, eval_datasets: dict,
) -> dg.Output[TableRef]:
    """A prompted LLM monitor: P(Yes) / (P(Yes) + P(No)) from the next-token distribution,
    with the prompt template chosen on the corpus validation split."""
    from mup_core.baselines import EndpointPromptedMonitor, LocalPromptedMonitor
    from mup_core.baselines.prompted import prompted_scores
    from mup_core.models.loading import ModelUnavailableError, load_model

    store = artifact_store.get_store()
    slug = config.monitor_model or context.partition_key
    sets = _inputs_and_tokens(store, corpus_splits, eval_datasets, context.partition_key)
    if config.endpoint_url:
        mon = EndpointPromptedMonitor(config.endpoint_url, config.endpoint_model, non_embedding_params=config.endpoint_non_embedding_params)
        method, monitor_model, extra = f"prompted:{config.endpoint_model}", config.endpoint_model, {}
        if not config.endpoint_non_embedding_params:
            context.log.warning("prompted_baseline: endpoint_non_embedding_params not set; FLOPs are recorded as 0")
    else:
        try:
            mon = LocalPromptedMonitor(load_model(slug), batch_size=config.batch_size)
        except ModelUnavailableError as exc:
            raise dg.Failure(str(exc)) from exc
        method, monitor_model = ("prompted" if slug == context.partition_key else f"prompted:{slug}"), slug
        extra = {"precision": dg.MetadataValue.json(mon.lm.precision.as_metadata())}
    table, dev = prompted_scores(mon, sets, config.templates, method, log=lambda m: context.log.info(f"prompted_baseline: {m}"))
    return publish(context, store, "scores/prompted", table, extra={
        "template": mon.template.name, "dev_auroc_by_template": dg.MetadataValue.json({k: round(v, 4) for k, v in dev.items()}),
        "monitor_model": monitor_model, **extra,
    }, columns=["method", "dataset", "id", "label", "score"])


class FinetunedConfig(config_from(FinetuneConfig(), exclude=("seed",))):
    """The finetuning recipe (mup_core.baselines.FinetuneConfig), once per seed."""

    monitor_model: Optional[str] = Field(default=None, description="registry model to finetune; default: the partition's model")
    seeds: list[int] = Field(default_factory=lambda: [0, 1])


@study_asset(pool=GPU_POOL, kinds={"pytorch"})
def finetuned_baseline(
    context: dg.AssetExecutionContext, config: FinetunedConfig, artifact_store: ArtifactStoreResource,
    corpus_splits: dict, eval_datasets: dict,
) -> dg.Output[TableRef]:
    """A classification head on the monitor model's last token, finetuned (LoRA or full)
    on the corpus train split, once per seed."""
    from mup_core.baselines import FinetunedClassifier
    from mup_core.experiments import concat_scores
    from mup_core.models.loading import ModelUnavailableError

    store = artifact_store.get_store()
    slug = config.monitor_model or context.partition_key
    sets = _inputs_and_tokens(store, corpus_splits, eval_datasets, slug)
    train_ds, _ = sets["train"]
    tables, losses = [], {}
    for seed in config.seeds:
        try:
            clf = FinetunedClassifier(slug, config.core(seed=seed))
        except (ValueError, ModelUnavailableError) as exc:
            raise dg.Failure(f"finetuned_baseline: {exc}") from exc

        def log(v, _seed=seed):
            if v["step"] % 10 == 0 or v["step"] == v["steps"]:
                context.log.info(f"finetuned_baseline seed {_seed}: step {v['step']}/{v['steps']} loss {v['loss']:.3f}")

        clf.fit(train_ds.inputs, train_ds.label_array(), log=log)
        losses[seed] = round(clf.history[-1]["loss"], 4)
        method = "finetuned" if slug == context.partition_key else f"finetuned:{slug}"
        tables.append(baseline_table(method, sets, lambda name, ds: clf.predict_proba(ds.inputs),
                                     lambda name, ds, t: clf.flops(t), seed=seed))
    table = concat_scores(tables)
    return publish(context, store, "scores/finetuned", table, extra={
        "final_loss_by_seed": dg.MetadataValue.json(losses), "method": config.method, "steps": config.steps, "monitor_model": slug,
        "precision": dg.MetadataValue.json(clf.precision.as_metadata()),
    }, columns=["method", "seed", "dataset", "id", "label", "score"])


class ContinuationConfig(dg.Config):
    monitor_model: Optional[str] = Field(default=None, description="registry model that writes the judgement; default: the partition's")
    max_new_tokens: int = default_of(ContinuationMonitor, "max_new_tokens")
    batch_size: int = default_of(ContinuationMonitor, "batch_size")


@study_asset(pool=GPU_POOL, kinds={"pytorch"})
def continuation_baseline(
    context: dg.AssetExecutionContext, config: ContinuationConfig, artifact_store: ArtifactStoreResource,
    corpus_splits: dict, eval_datasets: dict,
) -> dg.Output[TableRef]:
    """The monitor model writes a 1-10 stakes rating, which is parsed into a score."""
    from mup_core.baselines import ContinuationMonitor
    from mup_core.models.loading import ModelUnavailableError, load_model

    store = artifact_store.get_store()
    slug = config.monitor_model or context.partition_key
    sets = _inputs_and_tokens(store, corpus_splits, eval_datasets, context.partition_key)
    try:
        lm = load_model(slug)
    except ModelUnavailableError as exc:
        raise dg.Failure(str(exc)) from exc
    mon = ContinuationMonitor(lm, max_new_tokens=config.max_new_tokens, batch_size=config.batch_size)
    unparsed, examples = {}, {}

    def score(name, ds):
        s = mon.predict_proba(ds.inputs)
        unparsed[name], examples[name] = mon.unparsed, mon.replies[:5]
        context.log.info(f"continuation_baseline: {name}: {len(ds)} judgements, {mon.unparsed} unparsed")
        return s

    method = "continuation" if slug == context.partition_key else f"continuation:{slug}"
    table = baseline_table(method, sets, score, lambda name, ds, tokens: mon.flops())
    return publish(context, store, "scores/continuation", table, extra={
        "unparsed": dg.MetadataValue.json(unparsed), "example_replies": dg.MetadataValue.json(examples), "monitor_model": slug,
        "precision": dg.MetadataValue.json(lm.precision.as_metadata()),
    }, columns=["method", "dataset", "id", "label", "score"])
