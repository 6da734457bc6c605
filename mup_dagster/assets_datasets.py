"""Dataset assets: imported evaluation sources, synthetic generation and LLM labelling,
and the checks that guard datasets before anything trains on them."""

from typing import Optional

import dagster as dg
from pydantic import Field

from mup_core.llm.base import DEFAULT_MAX_FAILED_SHARE
from mup_core.refs import DatasetRef, ImportedRef, TableRef
from mup_dagster.config import Seeded
from mup_dagster.metadata import label_balance
from mup_dagster.resources import ArtifactStoreResource, LLMResource

MAX_FAILED_SHARE = Field(
    default=DEFAULT_MAX_FAILED_SHARE,
    description="share of LLM requests that may fail (after retries) before the run fails; what succeeded is stored first",
)


def _llm_outcome(context, client, what: str, failed: int, total: int, reasons, max_share: float) -> dict:
    """Log how the LLM requests went (retries included) and fail the run when too many
    failed for good. Returns the numbers for the asset's metadata."""
    from mup_core.llm.base import TooManyFailures, check_failure_share

    stats = dict(getattr(client, "stats", {}) or {})
    context.log.info(f"{what}: {total} requests, {failed} failed for good; client {client.name}: {stats}")
    if stats.get("retries"):
        context.log.warning(f"{what}: the LLM endpoint needed {stats['retries']} retries")
    try:
        check_failure_share(failed, total, max_share, what, reasons)
    except TooManyFailures as exc:
        raise dg.Failure(description=str(exc)) from None
    return {"llm_requests": total, "llm_failed": failed, "llm_retries": stats.get("retries", 0)}

GROUP = "datasets"


# -- imported evaluation sources -------------------------------------------------
class SourceSpec(dg.Config):
    kind: str = Field(description="anthropic_hh, mt, mts, toolace, mental_health, aya_redteaming, deployment_pairs")
    uri: str = Field(description="local path, s3://bucket/key or hf://datasets/OWNER/NAME/file")
    name: Optional[str] = None
    system_prompt: Optional[str] = Field(default=None, description="deployment system prompt prepended to every input")
    relabel: bool = Field(default=False, description="label with the LLM labeller (needed for sources without labels)")
    per_class: Optional[int] = Field(default=None, description="rows per class in the balanced version")
    limit: Optional[int] = None


class ImportConfig(Seeded):
    sources: list[SourceSpec] = Field(default_factory=list)
    low_max: int = 3
    high_min: int = 8
    min_confidence: int = 7
    max_failed_share: float = MAX_FAILED_SHARE


def _import_source(context, store, llm: LLMResource, spec: "SourceSpec", config: "ImportConfig") -> tuple[ImportedRef, dict]:
    """One source imported, relabelled where asked (or unlabelled), stored raw, then balanced."""
    from mup_core.data.dataset import DatasetError
    from mup_core.data.importers import balance, import_source
    from mup_core.labelling import Thresholds, label_dataset
    from mup_core.workflows import store_dataset

    label = spec.name or spec.uri
    try:
        raw = import_source(spec.kind, spec.uri, spec.name, spec.system_prompt, spec.limit)
    except DatasetError as exc:
        raise dg.Failure(description=f"source {label}: {exc}") from None
    info: dict = {"rows": len(raw)}
    if spec.relabel or not raw.has_labels:
        client = llm.get_client()
        labelled = label_dataset(raw, client, Thresholds(config.low_max, config.high_min, config.min_confidence),
                                 on_done=lambda d, t: context.log.info(f"labelled {d}/{t}") if d % 50 == 0 or d == t else None)
        raw = labelled.dataset
        info.update(failed=labelled.failed, invalid=labelled.invalid, agreement=labelled.agreement)
    # the labelled raw version is stored before anything can fail: its answers were paid for
    raw_ref = store_dataset(store, raw.with_name(f"{raw.name}-raw"))
    context.log.info(f"source {label}: raw version stored at {store.uri(raw_ref.key)}")
    if "failed" in info:
        status = raw.df["label_status"].to_list()
        info.update(_llm_outcome(context, client, f"source {label}: labelling", info["failed"] + info["invalid"],
                                 len(raw), [s for s in status if s != "ok"], config.max_failed_share))
    try:
        balanced = balance(raw, config.seed, spec.per_class)
    except DatasetError as exc:
        raise dg.Failure(
            description=f"source {label}: {exc} (the labelled raw version is stored at {store.uri(raw_ref.key)})"
        ) from None
    bal_ref = store_dataset(store, balanced.with_name(raw.name))
    return ImportedRef(raw_ref, bal_ref), {**info, "labels_raw": raw.label_counts(), "balanced_rows": len(balanced)}


@dg.asset(group_name=GROUP, kinds={"polars"})
def imported_datasets(
    context: dg.AssetExecutionContext, config: ImportConfig, artifact_store: ArtifactStoreResource, llm: LLMResource
) -> dict[str, ImportedRef]:
    """Each configured source imported from its native fields, optionally relabelled, kept
    in a raw and a balanced version. Empty unless sources are configured."""
    store = artifact_store.get_store()
    out: dict[str, ImportedRef] = {}
    report: dict[str, dict] = {}
    for spec in config.sources:
        ref, info = _import_source(context, store, llm, spec, config)
        out[ref.balanced.name], report[ref.balanced.name] = ref, info
    context.add_output_metadata({"sources": dg.MetadataValue.json(report), "count": len(out)})
    return out


# -- synthetic generation and labelling --------------------------------------------
class SituationsConfig(Seeded):
    n_pairs: int = Field(default=4, description="factor combinations, each one high/low situation pair")
    factors_file: Optional[str] = Field(default=None, description="a situation_factors.json; default: the project's")
    max_failed_share: float = MAX_FAILED_SHARE


@dg.asset(group_name=GROUP, kinds={"polars"})
def synthetic_situations(context: dg.AssetExecutionContext, config: SituationsConfig, artifact_store: ArtifactStoreResource, llm: LLMResource) -> TableRef:
    """High/low-stakes situation pairs written by the LLM from sampled factor combinations."""

    from mup_core.generation import generate_situations, load_factors, sample_combinations

    combos = sample_combinations(load_factors(config.factors_file), config.n_pairs, config.seed)
    client = llm.get_client()
    df = generate_situations(client, combos, on_done=lambda d, t: context.log.info(f"situations {d}/{t}"))
    key = artifact_store.get_store().put_table(f"synthetic/situations-seed{config.seed}-n{config.n_pairs}.parquet", df)
    ok = int((df["status"] == "ok").sum())
    outcome = _llm_outcome(context, client, "synthetic_situations", df.height - ok, df.height,
                           [s for s in df["status"].to_list() if s != "ok"], config.max_failed_share)
    preview = "\n".join(f"- **{r['intended_stakes']}** ({r['topic']}): {r['situation']}" for r in df.head(6).iter_rows(named=True))
    context.add_output_metadata({"situations": ok, "failed": df.height - ok, "key": key, "preview": dg.MetadataValue.md(preview), **outcome})
    return TableRef(key, df.height)


class PromptsConfig(Seeded):
    per_situation: int = 1
    variations_file: Optional[str] = Field(default=None, description="a prompt_variations.json; default: the project's")
    max_failed_share: float = MAX_FAILED_SHARE


@dg.asset(group_name=GROUP, kinds={"polars"})
def synthetic_prompts(context: dg.AssetExecutionContext, config: PromptsConfig, artifact_store: ArtifactStoreResource,
                      llm: LLMResource, synthetic_situations: TableRef) -> DatasetRef:
    """User prompts written from the situations in sampled variations (tone, style, language, length)."""

    from mup_core.generation import generate_prompts, load_variations
    from mup_core.workflows import store_dataset

    store = artifact_store.get_store()
    situations = store.get_table(synthetic_situations.key)
    client = llm.get_client()
    report = generate_prompts(client, situations, load_variations(config.variations_file), config.per_situation, config.seed,
                              on_done=lambda d, t: context.log.info(f"prompts {d}/{t}"))
    if report.dataset is None:
        raise dg.Failure(f"synthetic_prompts: all {report.requested} generations failed")
    ref = store_dataset(store, report.dataset)
    outcome = _llm_outcome(context, client, "synthetic_prompts", report.failed, report.requested, [], config.max_failed_share)
    context.add_output_metadata({"rows": ref.rows, "requested": report.requested, "failed": report.failed, "key": ref.key, **outcome})
    return ref


class LabelConfig(dg.Config):
    low_max: int = 3
    high_min: int = 8
    min_confidence: int = 7
    max_failed_share: float = MAX_FAILED_SHARE


@dg.asset(group_name=GROUP, kinds={"polars"})
def synthetic_labelled(context: dg.AssetExecutionContext, config: LabelConfig, artifact_store: ArtifactStoreResource,
                       llm: LLMResource, synthetic_prompts: DatasetRef) -> dg.Output[DatasetRef]:
    """The synthetic prompts with LLM stakes labels (score, confidence, explanation, status)."""
    from mup_core.labelling import Thresholds, label_agreement, label_dataset
    from mup_core.workflows import load_stored_dataset, store_dataset

    store = artifact_store.get_store()
    ds = load_stored_dataset(store, synthetic_prompts)
    client = llm.get_client()
    report = label_dataset(ds, client, Thresholds(config.low_max, config.high_min, config.min_confidence))
    ref = store_dataset(store, report.dataset.with_name("synthetic_labelled"))  # stored before the share is checked
    status = report.dataset.df["label_status"].to_list()
    outcome = _llm_outcome(context, client, "synthetic_labelled", report.failed + report.invalid, len(status),
                           [s for s in status if s != "ok"], config.max_failed_share)
    intended = [("high-stakes" if s == "high" else "low-stakes") for s in report.dataset.df["intended_stakes"]]
    agree, kappa = label_agreement(intended, report.dataset.labels)
    return dg.Output(
        ref,
        metadata={
            "rows": ref.rows,
            "label_balance": label_balance(report.counts),
            "failed": report.failed,
            "invalid": report.invalid,
            "agreement_with_intended": dg.MetadataValue.float(agree),
            "cohen_kappa_with_intended": dg.MetadataValue.float(kappa),
            "labeller": f"{llm.backend}:{llm.model}",
            **outcome,
        },
    )


# -- checks ----------------------------------------------------------------------------
def _load(artifact_store, ref):
    from mup_core.workflows import load_stored_dataset

    return load_stored_dataset(artifact_store.get_store(), ref)


@dg.asset_check(asset="corpus_splits", blocking=True, description="no input text of val/test also appears in train")
def splits_do_not_overlap(artifact_store: ArtifactStoreResource, corpus_splits: dict) -> dg.AssetCheckResult:
    texts = {name: set(_load(artifact_store, ref).df["inputs"].to_list()) for name, ref in corpus_splits.items()}
    overlaps = {f"train&{n}": len(texts["train"] & t) for n, t in texts.items() if n != "train"}
    return dg.AssetCheckResult(passed=not any(overlaps.values()), metadata={"overlaps": dg.MetadataValue.json(overlaps)})


@dg.asset_check(asset="corpus_splits", blocking=True, description="ids are unique across all splits")
def split_ids_unique(artifact_store: ArtifactStoreResource, corpus_splits: dict) -> dg.AssetCheckResult:
    ids = [i for ref in corpus_splits.values() for i in _load(artifact_store, ref).ids]
    return dg.AssetCheckResult(passed=len(ids) == len(set(ids)), metadata={"rows": len(ids), "duplicates": len(ids) - len(set(ids))})


class BalanceCheckConfig(dg.Config):
    min_minority_share: float = 0.3
    max_ambiguous_share: float = 0.2


@dg.asset_check(asset="corpus_splits", description="each split has enough of both labels and few ambiguous/failed rows")
def split_label_balance(config: BalanceCheckConfig, corpus_splits: dict) -> dg.AssetCheckResult:
    shares = {}
    passed = True
    for name, ref in corpus_splits.items():
        counts = ref.label_counts
        total = max(1, sum(counts.values()))
        high, low = counts.get("high-stakes", 0), counts.get("low-stakes", 0)
        minority = min(high, low) / max(1, high + low)
        ambiguous = counts.get("ambiguous", 0) / total
        shares[name] = {"minority_share": round(minority, 3), "ambiguous_share": round(ambiguous, 3)}
        passed &= minority >= config.min_minority_share and ambiguous <= config.max_ambiguous_share
    return dg.AssetCheckResult(passed=passed, metadata={"shares": dg.MetadataValue.json(shares)},
                               severity=dg.AssetCheckSeverity.WARN)


@dg.asset_check(asset="synthetic_labelled", description="share of ambiguous or failed labels under the bound")
def labelled_quality(config: BalanceCheckConfig, artifact_store: ArtifactStoreResource, synthetic_labelled: DatasetRef) -> dg.AssetCheckResult:
    ds = _load(artifact_store, synthetic_labelled)
    status = ds.df["label_status"].to_list()
    failed = sum(s != "ok" for s in status) / len(status)
    ambiguous = ds.labels.count("ambiguous") / len(ds)
    return dg.AssetCheckResult(
        passed=failed <= config.max_ambiguous_share and ambiguous <= config.max_ambiguous_share,
        metadata={"failed_share": failed, "ambiguous_share": ambiguous},
        severity=dg.AssetCheckSeverity.WARN,
    )
