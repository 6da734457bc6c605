"""High-stakes probe assets: corpus -> splits -> activations -> probes -> metrics -> report.

Asset bodies stay thin: they call ``mup_core.workflows`` and record metadata.
Heavy imports (torch, transformers) happen inside the bodies so that loading the
definitions stays fast.
"""


import os
from typing import Literal, Optional

import dagster as dg
import polars as pl
from pydantic import Field

from mup_core.defaults import DEFAULT_BATCH_TOKENS, DEFAULT_SHARD_MB
from mup_core.models.registry import get_spec
from mup_core.evaluation.selection import VALIDATION
from mup_core.monitor.bundle import IN_DISTRIBUTION
from mup_core.probe_types import ALL_PROBE_TYPES
from mup_core.refs import ActivationPiece, ActivationRef, BundleRef, DatasetRef, ProbeRef, TableRef
from mup_dagster.automation import GPU_POOL, on_any_upstream_partition_update, on_upstream_version_change
from mup_dagster.config import Seeded
from mup_dagster.metadata import data_version, label_balance, publish_table
from mup_dagster.partitions import by_model, layer_and_model, model_layer_partitions, model_partitions, of_model
from mup_dagster.resources import ArtifactStoreResource, DatasetSourcesResource

GROUP = "probes"


def _dataset_metadata(ds, ref) -> dict:
    meta = {
        "rows": dg.MetadataValue.int(len(ds)),
        "label_balance": label_balance(ds.label_counts()),
        "inputs_hash": ref.inputs_hash[:16],
        "labels_hash": ref.labels_hash[:16],
        "key": ref.key,
    }
    for column in ("source", "domain", "language", "format"):
        if column in ds.df.columns:
            counts = ds.df[column].value_counts()
            meta[f"by_{column}"] = dg.MetadataValue.json({str(r[column]): int(r["count"]) for r in counts.iter_rows(named=True)})
    return meta


# how often the source files are checked for changes (a cron schedule; MUP_SOURCES_CRON overrides)
SOURCES_CRON = os.environ.get("MUP_SOURCES_CRON", "*/2 * * * *")


@dg.observable_source_asset(group_name=GROUP, automation_condition=dg.AutomationCondition.on_cron(SOURCES_CRON))
def dataset_sources(sources: DatasetSourcesResource) -> dg.DataVersion:
    """The source files of the corpus and evaluation sets; its version is their content hash,
    so an edited file (a changed label, a changed text) is discovered within two minutes."""
    from pathlib import Path

    paths = [Path(f) for f in sources.files()]
    return data_version(part for p in paths for part in (str(p), p.read_bytes() if p.exists() else b"<missing>"))


EMBEDDED = "embedded"


class TrainingSource(dg.Config):
    path: str = Field(description="'embedded' (the team's minimal-pair corpus) or a JSONL/CSV file in the research format")
    weight: float = Field(default=1.0, description="training weight of each of its rows (probes' sample_weight)")


class CorpusConfig(dg.Config):
    sources: list[TrainingSource] = Field(
        default_factory=list,
        description="training sources combined into one corpus, each with a weight, e.g. [{path: embedded}, {path: "
        "../shared/data/mup/train/synthetic_prompts_gpt4o.jsonl, weight: 0.5}]; empty: the sources resource's "
        "corpus_path (MUP_CORPUS_PATH) or the embedded corpus",
    )


@dg.asset(group_name=GROUP, kinds={"polars"}, deps=[dataset_sources], automation_condition=on_upstream_version_change)
def stakes_corpus(
    context: dg.AssetExecutionContext, config: CorpusConfig, artifact_store: ArtifactStoreResource, sources: DatasetSourcesResource
) -> dg.Output[DatasetRef]:
    """The training corpus: the embedded minimal pairs, ``corpus_path`` of the sources
    resource, or several training sources combined with per-source weights (config)."""
    from mup_core.corpus import load_embedded_corpus
    from mup_core.data.dataset import DatasetError, concat
    from mup_core.data.loaders import load_dataset
    from mup_core.workflows import store_dataset

    def load(path: str):
        return load_embedded_corpus() if path == EMBEDDED else load_dataset(path)

    try:
        if config.sources:
            parts = [load(s.path).weighted(s.weight, s.path) for s in config.sources]
            seen: dict[str, str] = {}
            for src, part in zip(config.sources, parts):
                clash = next((i for i in part.ids if i in seen), None)
                if clash is not None:
                    raise DatasetError(f"{src.path}: id {clash!r} is also in {seen[clash]}; training sources need distinct ids")
                seen.update(dict.fromkeys(part.ids, src.path))
            ds = concat(parts, "stakes-corpus")
            context.log.info("training sources: " + ", ".join(f"{s.path} ({len(p)} rows, weight {s.weight})"
                                                              for s, p in zip(config.sources, parts)))
        else:
            ds = load_dataset(sources.corpus_path, "stakes-corpus") if sources.corpus_path else load_embedded_corpus()
    except DatasetError as exc:
        raise dg.Failure(description=str(exc)) from None
    ref = store_dataset(artifact_store.get_store(), ds)
    return dg.Output(
        ref,
        metadata=_dataset_metadata(ds, ref),
        data_version=data_version([ref.inputs_hash, ref.labels_hash]),
    )


class SplitConfig(Seeded):
    train: float = 0.7
    val: float = 0.1
    test: float = 0.2


@dg.asset(group_name=GROUP, kinds={"polars"}, automation_condition=on_upstream_version_change)
def corpus_splits(
    context: dg.AssetExecutionContext, config: SplitConfig, artifact_store: ArtifactStoreResource, stakes_corpus: DatasetRef
) -> dg.Output[dict[str, DatasetRef]]:
    """Seeded train/val/test splits of the corpus; a high/low pair never straddles splits."""
    from mup_core.data.splits import split_dataset
    from mup_core.workflows import load_stored_dataset, store_dataset

    store = artifact_store.get_store()
    ds = load_stored_dataset(store, stakes_corpus)
    splits = split_dataset(ds, {"train": config.train, "val": config.val, "test": config.test}, seed=config.seed)
    refs = {name: store_dataset(store, part) for name, part in splits.items()}
    return dg.Output(
        refs,
        metadata={
            **{f"{name}_rows": dg.MetadataValue.int(ref.rows) for name, ref in refs.items()},
            **{f"{name}_labels": label_balance(ref.label_counts) for name, ref in refs.items()},
        },
        data_version=data_version(h for r in refs.values() for h in (r.inputs_hash, r.labels_hash)),
    )


class EvalDatasetsConfig(dg.Config):
    files: list[str] = Field(
        default_factory=list,
        description="JSONL/CSV files in the research format to evaluate on, e.g. ../shared/data/mup/dev/mt_dev_balanced.jsonl",
    )
    selection_files: list[str] = Field(
        default_factory=list,
        description="JSONL/CSV files from outside the training distribution on which the layer, the probe type and the "
        "alarm threshold are chosen (role 'selection'; the study never reports on them), e.g. the research's dev sets "
        "../shared/data/mup/dev/*_dev_balanced.jsonl",
    )
    include_corpus_test: bool = True


@dg.asset(group_name=GROUP, kinds={"polars"}, deps=[dataset_sources], automation_condition=on_upstream_version_change)
def eval_datasets(
    context: dg.AssetExecutionContext,
    config: EvalDatasetsConfig,
    artifact_store: ArtifactStoreResource,
    sources: DatasetSourcesResource,
    corpus_splits: dict[str, DatasetRef],
    imported_datasets: dict,
) -> dg.Output[dict[str, DatasetRef]]:
    """Evaluation sets: the corpus's held-out test split, the balanced imported sets, the
    sources resource's ``eval_files`` and any files named in config; and the selection
    sets (``selection_files``), marked ``role: selection``, which choose the probe and
    its threshold and are never reported as evaluation results."""
    from mup_core.data.dataset import DatasetError
    from mup_core.workflows import dataset_role, gather_eval_sets, selection_sets

    try:
        out = gather_eval_sets(
            artifact_store.get_store(), corpus_test=corpus_splits["test"] if config.include_corpus_test else None,
            imported={name: imported.balanced for name, imported in imported_datasets.items()},
            evaluation_files=[*sources.eval_files, *config.files],
            selection_files=[*sources.selection_files, *config.selection_files], log=context.log.info)
    except (DatasetError, ValueError) as exc:
        raise dg.Failure(description=f"eval_datasets: {exc}") from None
    if not out:
        raise dg.Failure("eval_datasets: nothing to evaluate on; set include_corpus_test or add files")
    return dg.Output(
        out,
        metadata={
            "datasets": dg.MetadataValue.json({n: {"rows": r.rows, "labels": r.label_counts, "role": dataset_role(r)}
                                               for n, r in out.items()}),
            "selection_sets": dg.MetadataValue.json(selection_sets(out)),
            "count": len(out),
        },
        data_version=data_version(x for n, r in sorted(out.items()) for x in (n, r.inputs_hash, r.labels_hash, dataset_role(r))),
    )


@dg.asset(group_name=GROUP, kinds={"polars"}, automation_condition=on_upstream_version_change)
def dataset_texts(corpus_splits: dict, eval_datasets: dict) -> dg.Output[dict[str, DatasetRef]]:
    """The datasets whose *text* activations are computed on. Its data version covers the
    input text only, so a change of labels does not re-run the forward passes."""
    from mup_core.workflows import check_eval_name

    for name in eval_datasets:  # eval_datasets refuses these; a stored older value may not have
        try:
            check_eval_name(name, "eval_datasets")
        except ValueError as exc:
            raise dg.Failure(description=f"dataset_texts: {exc}; re-materialise eval_datasets") from None
    refs = {"train": corpus_splits["train"], "val": corpus_splits["val"], **eval_datasets}
    return dg.Output(
        refs,
        metadata={"datasets": dg.MetadataValue.json({n: r.rows for n, r in refs.items()})},
        data_version=data_version(x for n, r in sorted(refs.items()) for x in (n, r.inputs_hash)),
    )


class ActivationsConfig(dg.Config):
    layers: Optional[list[int]] = Field(default=None, description="layers to keep; default: the model's probe layers")
    batch_tokens: int = Field(default=DEFAULT_BATCH_TOKENS, description="padded tokens per forward pass (raise it on a GPU)")
    shard_mb: float = Field(default=DEFAULT_SHARD_MB, description="megabytes of activations (all layers) per shard written; "
                            "peak memory is about one shard whatever the data set's size")
    storage_dtype: str = Field(default="bfloat16", description="bfloat16 or float16 (whatever the compute dtype)")
    question: Optional[str] = Field(
        default=None,
        description="prompted probing: appended to every input as a last user turn, e.g. 'Are the stakes of the "
        "situation above high or low?'; linear probes then read the conversation's and the question's mean activations "
        "side by side (with corpus + GPT-4o training prompts: 2x the TPR at 1 % FPR on the research's dev sets, "
        "docs/RESULTS.md). The live monitor scores such probes at message ends (after the user's messages and "
        "after the reply), not after every token",
    )
    overlong: Literal["truncate", "keep_end", "refuse"] = Field(
        default="truncate",
        description="an input longer than the model's maximum length: keep its first tokens (truncate, as the "
        "research does), its last ones (keep_end), or fail the run naming the inputs (refuse)",
    )


def _default_pieces() -> int:
    """``MUP_ACTIVATION_PIECES``; else one step for every dataset on one machine, one per
    dataset where steps go to workers or pods of their own (celery, k8s)."""
    value = os.environ.get("MUP_ACTIVATION_PIECES")
    if value:
        return int(value)
    return 0 if os.environ.get("MUP_EXECUTOR", "multiprocess") in ("celery", "k8s") else 1


class ActivationPiecesConfig(dg.Config):
    pieces: int = Field(default_factory=_default_pieces, description=(
        "steps the forward passes fan out to (groups of datasets of about equal size, each on a worker or GPU of "
        "its own); 0 = one per dataset. Default: MUP_ACTIVATION_PIECES, else 1 (multiprocess/in_process) or 0 "
        "(celery/k8s)"))


@dg.op(out=dg.DynamicOut(list))
def activation_pieces(context: dg.OpExecutionContext, config: ActivationPiecesConfig, dataset_texts: dict):
    """The fan-out: which datasets each forward-pass step computes."""
    import re

    from mup_core.workflows import plan_pieces

    if not dataset_texts:
        raise dg.Failure("activations: dataset_texts lists no datasets; re-materialise the dataset assets")
    groups = plan_pieces({n: r.rows for n, r in dataset_texts.items()}, config.pieces)
    for i, names in enumerate(groups):
        context.log.info(f"piece {i}: {', '.join(names)}")
        # the index keeps keys unique where names differ only in punctuation
        yield dg.DynamicOutput(names, mapping_key=f"p{i}_" + re.sub(r"[^A-Za-z0-9_]", "_", "__".join(names))[:60])


@dg.op(pool=GPU_POOL)
def activation_piece(
    context: dg.OpExecutionContext,
    config: ActivationsConfig,
    artifact_store: ArtifactStoreResource,
    dataset_texts: dict,
    names: list,
) -> ActivationPiece:
    """Forward passes of one model over some datasets: residual-stream activations at its
    probe layers, one pass per batch serving all layers, stored unpadded in safetensors
    shards; reused when model, input text and layers are unchanged."""
    from mup_core.activations import OverlongInputs
    from mup_core.models.loading import load_model
    from mup_core.workflows import activations_for_datasets, load_stored_dataset

    slug = context.partition_key
    spec = get_spec(slug)
    layers = sorted(config.layers or spec.default_layers)
    store = artifact_store.get_store()
    loaded = {name: load_stored_dataset(store, dataset_texts[name]).with_name(name) for name in names}
    context.log.info(f"loading {slug} ({spec.source})")
    lm = load_model(slug)
    context.log.info(f"{slug} on {lm.device}, computing in {lm.precision.dtype_name} ({lm.precision.reason}), "
                     f"attention {lm.attention}; layers {layers}")

    def progress(name: str, done: int, total: int) -> None:
        if done == total or done % max(1, total // 5) == 0:
            context.log.info(f"{name}: batch {done}/{total}")

    try:
        refs, stats = activations_for_datasets(
            store, lm, loaded, layers, batch_tokens=config.batch_tokens, storage_dtype=config.storage_dtype,
            shard_mb=config.shard_mb, overlong=config.overlong, question=config.question, on_batch=progress,
        )
    except OverlongInputs as exc:  # overlong="refuse": names the dataset and ids
        raise dg.Failure(description=f"activations: {exc}") from None
    for name, s in stats.items():
        if refs[name].reused:
            context.log.info(f"{name}: reused the stored activations (same model, dtype, text and layers): "
                             f"{store.uri(refs[name].prefix)}")
        elif s.get("reused_shards"):
            context.log.info(f"{name}: resumed, reused {s['reused_shards']} of {s['shards']} shards of an interrupted run")
        if s.get("truncated_examples"):
            kept = "last" if config.overlong == "keep_end" else "first"
            context.log.warning(
                f"{name}: {s['truncated_examples']} of {len(loaded[name])} inputs are longer than {spec.max_length} "
                f"tokens; kept their {kept} {spec.max_length} (config overlong={config.overlong!r}; 'refuse' fails instead)"
            )
    return ActivationPiece(refs, stats, tuple(layers), {**lm.precision.as_metadata(), "attention": lm.attention},
                         config.model_dump())


def throughput(stats, precision: dict) -> str:
    """Tokens/s of the sets computed in this run and their share of the machine's compute
    floor (forward FLOPs per second over the measured matmul rate of the compute dtype)."""
    computed = [s for s in stats if "share_of_floor" in s]
    if not computed:
        return "nothing computed in this run (every set reused)"
    tokens, seconds, flops = (sum(s[k] for s in computed) for k in ("tokens", "seconds", "flops"))
    rate = computed[0]["matmul_gflops"]
    return (f"{tokens / seconds:.0f} tokens/s = {flops / seconds / (rate * 1e9):.0%} of this machine's floor "
            f"({precision.get('compute_dtype')} matmul {rate:.0f} GFLOP/s, {flops / tokens / 1e9:.3g} GFLOP/token)")


@dg.op
def activation_sets(context: dg.OpExecutionContext, artifact_store: ArtifactStoreResource, pieces: list) -> dg.Output[dict[str, ActivationRef]]:
    """The fan-in: every piece's sets as the one ``activations`` value probes read."""
    slug = context.partition_key
    spec = get_spec(slug)
    store = artifact_store.get_store()
    refs = {n: r for piece in pieces for n, r in piece.refs.items()}
    stats = {n: s for piece in pieces for n, s in piece.stats.items()}
    layers, config = list(pieces[0].layers), pieces[0].config
    bytes_stored = sum(store.size(k) for ref in refs.values() for k in store.list(ref.prefix + "/"))
    return dg.Output(
        dict(sorted(refs.items())),
        data_version=data_version(ref.prefix for _, ref in sorted(refs.items())),
        metadata={
            "model": slug,
            # where the safetensors are (the IO manager's "path" would be its small reference pickle)
            "path": dg.MetadataValue.path(store.uri(f"activations/{slug}")),
            "layers": dg.MetadataValue.json(layers),
            "tokens": dg.MetadataValue.int(sum(r.tokens for r in refs.values())),
            "bytes": dg.MetadataValue.int(bytes_stored),
            "pieces": dg.MetadataValue.json([sorted(piece.refs) for piece in pieces]),
            "datasets": dg.MetadataValue.json(
                {
                    n: {
                        "tokens": r.tokens,
                        "reused": r.reused,
                        "shards": stats[n].get("shards", 1),
                        "tokens_per_second": round(stats[n].get("tokens_per_second", 0.0), 1),
                        "padding_efficiency": round(stats[n].get("padding_efficiency", 1.0), 3),
                        "share_of_floor": round(stats[n]["share_of_floor"], 3) if "share_of_floor" in stats[n] else None,
                        "truncated": stats[n].get("truncated_examples", 0),
                    }
                    for n, r in sorted(refs.items())
                }
            ),
            "reused": dg.MetadataValue.bool(all(r.reused for r in refs.values())),
            "throughput": throughput(stats.values(), pieces[0].precision),
            "precision": dg.MetadataValue.json(pieces[0].precision),
            "storage_dtype": config["storage_dtype"],
            "question": config.get("question") or "none (no prompted probing)",
            "truncated_examples": dg.MetadataValue.int(sum(s.get("truncated_examples", 0) for s in stats.values())),
            "overlong": config["overlong"],
            "max_length": dg.MetadataValue.int(spec.max_length),
        },
    )


@dg.graph_asset(
    group_name=GROUP,
    partitions_def=model_partitions,
    kinds={"pytorch", "safetensors"},
    automation_condition=on_upstream_version_change,
)
def activations(dataset_texts: dict):
    """Residual-stream activations of one model at its probe layers, for every dataset.

    The forward passes fan out: ``activation_pieces`` splits the datasets into groups, one
    ``activation_piece`` step each (in the GPU pool: a worker or GPU of its own on a
    cluster), and ``activation_sets`` gathers them into the value probes read.
    """
    pieces = activation_pieces(dataset_texts)
    return activation_sets(pieces.map(lambda names: activation_piece(dataset_texts, names)).collect())


class ProbesConfig(dg.Config):
    probe_types: list[str] = Field(
        default_factory=lambda: list(ALL_PROBE_TYPES),
        description="probe types to train (see mup_core.probes.PROBE_TYPES)",
    )
    hyperparameters: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="per probe type overrides, e.g. {'attention': {'lr': 0.001}}"
    )


@dg.asset(
    group_name=GROUP,
    partitions_def=model_layer_partitions,
    ins={"activations": dg.AssetIn(partition_mapping=by_model)},
    kinds={"pytorch", "scikitlearn"},
    automation_condition=on_upstream_version_change,
)
def probes(
    context: dg.AssetExecutionContext,
    config: ProbesConfig,
    artifact_store: ArtifactStoreResource,
    corpus_splits: dict,
    activations: dict,
) -> dg.Output[dict[str, ProbeRef]]:
    """Probes of every configured type for one model x layer, trained on the corpus train
    split with early stopping on its validation split."""
    from mup_core.activations.store import MissingActivations
    from mup_core.probes import configured_probes
    from mup_core.workflows import train_layer_probes

    layer, model = layer_and_model(context.partition_key)
    try:
        configured_probes(config.probe_types, config.hyperparameters)
    except ValueError as exc:  # before any training: nothing is published, the last probes stay
        raise dg.Failure(f"probes: bad configuration: {exc}") from None
    store, train = artifact_store.get_store(), corpus_splits["train"]
    try:
        trained, digest = train_layer_probes(
            store, model=model, layer=layer, train=(train, activations["train"]), val=(corpus_splits["val"], activations["val"]),
            probe_types=config.probe_types, hyperparameters=config.hyperparameters)
    except MissingActivations as exc:
        raise dg.Failure(str(exc.args[0])) from exc
    context.add_output_metadata({
        "train_examples": dg.MetadataValue.int(train.rows),
        "val_auroc": dg.MetadataValue.json({t: round(p.val_auroc, 4) for t, p in trained.items()}),
        "train_labels_hash": train.labels_hash[:16],
        "keys": dg.MetadataValue.json({t: p.key for t, p in trained.items()}),
        "path": dg.MetadataValue.path(store.uri(next(iter(trained.values())).key.rsplit("/", 1)[0])),
    })
    return dg.Output(trained, data_version=data_version([digest]))


@dg.asset(
    group_name=GROUP,
    partitions_def=model_layer_partitions,
    ins={"activations": dg.AssetIn(partition_mapping=by_model)},
    kinds={"polars"},
    automation_condition=on_upstream_version_change,
)
def probe_metrics(
    context: dg.AssetExecutionContext,
    artifact_store: ArtifactStoreResource,
    probes: dict,
    corpus_splits: dict,
    eval_datasets: dict,
    activations: dict,
) -> dg.Output[TableRef]:
    """AUROC, accuracy, TPR at 1% FPR, Brier and ECE of each probe on each eval set, and
    on the corpus validation split (``corpus-val``); the alarm threshold at 1 % FPR is
    calibrated on the selection sets (pooled) where there are any, else on corpus-val,
    and ``alarm_fpr`` is what it realises on each set (its drift)."""

    from mup_core.activations.store import MissingActivations
    from mup_core.workflows import dataset_role, evaluate_layer_probes, metrics_key, metrics_markdown, selection_sets

    layer, model = layer_and_model(context.partition_key)
    store = artifact_store.get_store()
    sets = {**{n: (r, activations.get(n)) for n, r in eval_datasets.items()}, IN_DISTRIBUTION: (corpus_splits["val"], activations["val"])}
    roles = {IN_DISTRIBUTION: VALIDATION, **{n: dataset_role(r) for n, r in eval_datasets.items()}}
    try:
        table = evaluate_layer_probes(store, model=model, layer=layer, probe_keys={t: p.key for t, p in probes.items()},
                                      eval_sets=sets, calibrate_on=selection_sets(eval_datasets) or IN_DISTRIBUTION, roles=roles)
    except MissingActivations as exc:
        raise dg.Failure(f"probe_metrics: {exc.args[0]}") from None
    key = store.put_table(metrics_key(model, layer), table)
    best = table.sort("auroc", descending=True).row(0, named=True) if table.height else {}
    context.add_output_metadata(
        {
            "table": dg.MetadataValue.md(metrics_markdown(table)),
            "mean_auroc": dg.MetadataValue.float(float(table["auroc"].mean())) if table.height else 0.0,
            "best": dg.MetadataValue.json({k: best[k] for k in ("probe_type", "dataset", "auroc")} if best else {}),
            "key": key,
            "path": dg.MetadataValue.path(store.uri(key)),
        }
    )
    return dg.Output(TableRef(key, table.height), data_version=data_version([table.write_csv()]))


@dg.asset(
    group_name=GROUP,
    partitions_def=model_partitions,
    deps=[dg.AssetDep("probe_metrics", partition_mapping=of_model)],
    kinds={"matplotlib"},
    automation_condition=on_any_upstream_partition_update,
)
def probe_report(context: dg.AssetExecutionContext, artifact_store: ArtifactStoreResource) -> dg.Output[TableRef]:
    """All layers of one model: the metrics table and the AUROC-by-layer figure."""
    from mup_core.figures import auroc_by_layer
    from mup_core.workflows import collect_metrics, report_headlines

    model = context.partition_key
    store = artifact_store.get_store()
    table = collect_metrics(store, model)
    if table.height == 0:
        raise dg.Failure(f"probe_report: no probe metrics stored for {model}; materialise probe_metrics first")
    table = table.sort("dataset", "probe_type", "layer")
    best, mean_by_probe = report_headlines(table)
    return publish_table(
        store, table, f"reports/{model}/probe_metrics.parquet", png=auroc_by_layer(table, f"{model}: probe AUROC by layer"),
        figure_key=f"figures/{model}/auroc_by_layer.png", figure_alt="AUROC by layer",
        preview=table.sort("auroc", descending=True).head(10),  # the reader's first answers: the best, the figure, the top 10
        columns=("layer", "probe_type", "dataset", "auroc", "accuracy", "tpr_at_1pct_fpr"),
        extra={
            "best": f"{best['probe_type']} at layer {best['layer']} on {best['dataset']}: AUROC {best['auroc']:.3f}, "
                    f"TPR at 1 % FPR {best['tpr_at_1pct_fpr']:.3f}",
            "layers": dg.MetadataValue.json(sorted(set(table["layer"].to_list()))),
            "best_auroc": dg.MetadataValue.float(round(float(best["auroc"]), 4)),
            "mean_auroc_by_probe": dg.MetadataValue.json({t: round(a, 3) for t, a in mean_by_probe.items()}),
        },
    )


class MonitorBundleConfig(dg.Config):
    selection_datasets: list[str] = Field(
        default_factory=list,
        description="sets (names in eval_datasets) on which the probe type and layer are chosen and the threshold "
        "calibrated: sets from outside the training distribution, e.g. the research's dev sets. Empty: eval_datasets' "
        "selection sets (selection_files), else the corpus validation split (in distribution; the bundle records it)",
    )
    probe_types: list[str] = Field(
        default_factory=lambda: ["logistic_regression"],
        description="probe types to choose among (the layer is chosen too); empty: every type with stored metrics. "
        "Default: logistic regression only — out of distribution, fewer candidates choose better on a few small "
        "selection sets, and the choice among every type generalised worse (docs/RESULTS.md)",
    )
    target_fpr: float = Field(default=0.01, description="share of low-stakes conversations allowed to raise an alarm")
    uncertain_width: float = Field(
        default=0.5, description="scores in [threshold x (1 - width), threshold) are escalated to the LLM judge"
    )
    reply_check: int = Field(
        default=0, ge=0, description="conversations per class (high, low) drawn from the selection sets that the model "
        "replies to while the bundle watches: the alarm rates before, after and at any point of the reply (the threshold "
        "is calibrated without replies). 0 = skip; each costs a generation of reply_tokens tokens")
    reply_tokens: int = Field(default=32, ge=1, description="the longest reply generated for reply_check")


@dg.asset(
    group_name=GROUP,
    partitions_def=model_partitions,
    deps=[dg.AssetDep("probe_metrics", partition_mapping=of_model)],
    kinds={"pytorch"},
    pool=GPU_POOL,  # with reply_check it runs the model
    automation_condition=on_any_upstream_partition_update,
)
def monitor_bundle(
    context: dg.AssetExecutionContext,
    config: MonitorBundleConfig,
    artifact_store: ArtifactStoreResource,
    corpus_splits: dict,
    eval_datasets: dict,
    activations: dict,
) -> BundleRef:
    """The probe deployed as a live monitor (`mup monitor`): the best layer (of the
    configured probe types: logistic regression by default) on the selection sets, its
    threshold at the target false-positive rate, the uncertain band escalated to an LLM
    judge. Re-materialised when the model's probe metrics change."""
    from mup_core.activations import read_manifest
    from mup_core.monitor import BundleError, save_bundle
    from mup_core.workflows import check_replies, choose_monitor_bundle, metrics_markdown, selection_sets

    model, store = context.partition_key, artifact_store.get_store()
    selection = list(config.selection_datasets) or selection_sets(eval_datasets) or [IN_DISTRIBUTION]
    refs = {IN_DISTRIBUTION: (corpus_splits["val"], activations["val"]), **{n: (r, activations.get(n)) for n, r in eval_datasets.items()}}
    trained_on = read_manifest(store, activations["train"].prefix).get("storage_dtype", "bfloat16")
    try:
        bundle = choose_monitor_bundle(store, model, selection, refs, target_fpr=config.target_fpr, probe_types=config.probe_types,
                                       uncertain_width=config.uncertain_width, storage_dtype=trained_on)
    except BundleError as exc:
        raise dg.Failure(description=f"monitor_bundle: {exc}") from None
    prefix = save_bundle(store, bundle, store.local_path(bundle.probe_source))
    if not bundle.out_of_distribution:
        context.log.warning("monitor_bundle: chosen and calibrated on the corpus validation split (in distribution); "
                            "set selection_datasets to dev sets from your traffic for a threshold that holds there")
    with_replies = check_replies(store, model, prefix, selection, refs, config.reply_check, config.reply_tokens,
                                 log=context.log.info) if config.reply_check else {}
    context.add_output_metadata({
        "probe": f"{bundle.probe_type} @ layer {bundle.layer}" + (f", prompted with {bundle.question!r}" if bundle.question else ""),
        "threshold": dg.MetadataValue.float(round(bundle.threshold, 4)), "scored": bundle.streaming,
        "selection": dg.MetadataValue.json({"sets": selection, "out_of_distribution": bundle.out_of_distribution, "auroc": round(
            bundle.selection_auroc, 4), "fpr": round(bundle.realised_fpr, 4), "tpr": round(bundle.tpr_at_threshold, 4)}),
        "candidates": dg.MetadataValue.md(metrics_markdown(pl.DataFrame(bundle.candidates), ("layer", "probe_type", "auroc", "tpr_at_1pct_fpr"))),
        "bundle": dg.MetadataValue.path(store.uri(prefix)),
        "serve": f"mup monitor --model {model}",
        **({"with_replies": dg.MetadataValue.json(with_replies)} if with_replies else {}),
    })
    return BundleRef(prefix, bundle.probe_type, bundle.layer, bundle.threshold)
