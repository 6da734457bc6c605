"""The steps of the probe pipeline over an artifact store.

Each Dagster asset body calls one of these and records metadata; they are plain
functions, unit-tested without Dagster. Storage keys:

```
datasets/<name>/<inputs_hash[:12]>-<labels_hash[:12]>.parquet
activations/<model>/<dataset>-<cache_key[:16]>/manifest.json, shard_NNNNN/{meta,layer_NNN}.safetensors
probes/<model>/layer_NNN/<content digest>/{<probe_type>.safetensors, _COMPLETE}
metrics/<model>/layer_NNN.parquet
```
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Collection, Mapping, Sequence

import numpy as np
import polars as pl

from mup_core.activations import (
    activation_cache_key,
    activations_complete,
    load_layer,
    read_manifest,
    write_activations,
)
from mup_core.activations.ragged import RaggedActivations
from mup_core.activations.store import MissingActivations
from mup_core.data.dataset import Dataset
from mup_core.evaluation.selection import EVALUATION, SELECTION, VALIDATION_SET
from mup_core.evaluation.metrics import compute_metrics
from mup_core.defaults import DEFAULT_BATCH_TOKENS, DEFAULT_SHARD_MB
from mup_core.probes import configured_probes, load_probe, train_probe
from mup_core.refs import ActivationRef, DatasetRef, ProbeRef
from mup_core.storage import ArtifactStore, scratch_dir

log = logging.getLogger(__name__)


# -- datasets ------------------------------------------------------------------
# names the corpus's own splits use in dataset_texts and probe_metrics; an evaluation set
# with one of them would silently take that split's place
RESERVED_DATASET_NAMES = ("train", "val", "corpus-val")


# the role of a set in eval_datasets (see mup_core.evaluation.selection): reported on, or used
# to choose the probe, layer and threshold (out-of-distribution selection; never reported)


def selection_sets(eval_datasets: Mapping[str, DatasetRef]) -> list[str]:
    """Names of the sets of ``eval_datasets`` whose role is selection, in order."""
    return [n for n, ref in eval_datasets.items() if ref.is_selection]


def evaluation_sets(eval_datasets: Mapping[str, DatasetRef]) -> dict[str, DatasetRef]:
    """The sets of ``eval_datasets`` that results are reported on (not the selection sets)."""
    return {n: ref for n, ref in eval_datasets.items() if not ref.is_selection}


def dataset_role(ref: DatasetRef) -> str:
    """The role of a set of eval_datasets (a corpus split taken as one is an evaluation set)."""
    return ref.role or EVALUATION


def check_eval_name(name: str, source: str, taken: Collection[str] = ()) -> None:
    """An evaluation set's name must not be a split's name, nor that of another set."""
    if name in RESERVED_DATASET_NAMES:
        raise ValueError(
            f"{source}: evaluation set name {name!r} is reserved for the corpus's {name} split "
            f"(reserved: {', '.join(RESERVED_DATASET_NAMES)}); rename the file, e.g. {name}-eval{_suffix(source)}"
        )
    if name in taken:
        raise ValueError(f"{source}: two evaluation sets are named {name!r}; rename this one")


def _suffix(source: str) -> str:
    from pathlib import PurePath

    return PurePath(source).suffix


def gather_eval_sets(
    store: ArtifactStore,
    *,
    corpus_test: DatasetRef | None,
    imported: Mapping[str, DatasetRef],
    evaluation_files: Sequence[str],
    selection_files: Sequence[str],
    log: Callable[[str], None] = log.info,
) -> dict[str, DatasetRef]:
    """The sets probes are evaluated on (the corpus test split as ``corpus-test``, imported
    sets, ``evaluation_files``) and chosen on (``selection_files``, role SELECTION), each
    file loaded and stored. Raises DatasetError naming the file, line and field, or
    ValueError for a reserved or repeated name; nothing is returned half-built."""
    from pathlib import Path

    from mup_core.data.loaders import load_dataset

    out: dict[str, DatasetRef] = {}
    if corpus_test is not None:
        out["corpus-test"] = corpus_test.with_(name="corpus-test")
    for name, ref in imported.items():
        check_eval_name(name, f"imported source {name}", out)
        out[name] = ref
    for file, role in [*((f, EVALUATION) for f in evaluation_files), *((f, SELECTION) for f in selection_files)]:
        ds = load_dataset(file)  # names file, line and field; nothing is stored
        check_eval_name(ds.name, str(file), out)
        out[ds.name] = store_dataset(store, ds).with_(role=role)
        log(f"loaded {Path(file).name} ({role}): {len(ds)} rows {ds.label_counts()}")
    return out


def store_dataset(store: ArtifactStore, ds: Dataset) -> DatasetRef:
    key = f"datasets/{ds.name}/{ds.inputs_hash[:12]}-{ds.labels_hash[:12]}.parquet"
    if not store.exists(key):
        store.put_table(key, ds.df)
    return DatasetRef(ds.name, key, len(ds), ds.inputs_hash, ds.labels_hash, ds.label_counts())


def load_stored_dataset(store: ArtifactStore, ref: DatasetRef) -> Dataset:
    return Dataset(store.get_table(ref.key), ref.name)


# -- activations ---------------------------------------------------------------
def plan_pieces(sizes: Mapping[str, int], pieces: int) -> list[list[str]]:
    """Split datasets (name -> rows) into at most ``pieces`` groups of about equal size, each
    computed by one step (a worker or a GPU of its own); ``pieces <= 0``: one per dataset.
    Largest first onto the lightest group; names keep their order inside a group."""
    names = sorted(sizes)
    if pieces <= 0 or pieces >= len(names):
        return [[n] for n in names]
    groups: list[list[str]] = [[] for _ in range(pieces)]
    load = [0] * pieces
    for name in sorted(names, key=lambda n: (-sizes[n], n)):
        lightest = min(range(pieces), key=lambda i: (load[i], i))
        groups[lightest].append(name)
        load[lightest] += sizes[name]
    return [sorted(g) for g in groups if g]


def activations_for_datasets(
    store: ArtifactStore,
    lm,
    datasets: Mapping[str, Dataset],
    layers: Sequence[int],
    *,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    storage_dtype: str = "bfloat16",
    shard_mb: float = DEFAULT_SHARD_MB,
    overlong: str = "truncate",
    question: str | None = None,
    on_batch: Callable[[str, int, int], None] | None = None,
) -> tuple[dict[str, ActivationRef], dict[str, dict]]:
    """Extract (or reuse) activations for each dataset. Returns refs and per-dataset stats.

    Reuse is by content: the key covers the model, the dataset's input text, the
    layers, the truncation length, the chat template and the storage dtype. Shards
    stream to the store as they are computed; an interrupted set resumes from its
    finished shards. ``overlong`` (truncate / keep_end / refuse) is what happens to an
    input longer than the model's maximum length; ``stats[name]["truncated_examples"]``
    counts those cut. ``question`` (prompted probing) is appended to every input as a last
    user turn; an overlong input then keeps its end, where the question is, and the manifest
    records how many tokens the question took per example (``RaggedActivations``).
    """
    import torch

    from mup_core.activations import OverlongInputs, tokenize_flat
    from mup_core.activations.extract import question_token_counts
    from mup_core.data.chat import with_question

    if question and overlong == "truncate":
        overlong = "keep_end"  # cutting the end would cut the question

    layers = sorted({int(x) for x in layers})
    refs: dict[str, ActivationRef] = {}
    stats: dict[str, dict] = {}
    for name, ds in datasets.items():
        key = activation_cache_key(
            lm.slug, ds.inputs_hash, layers, lm.spec.max_length, storage_dtype, lm.tokenizer.chat_template,
            compute=lm.compute, overlong=overlong, question=question,
        )
        inputs = [with_question(x, question) for x in ds.inputs] if question else ds.inputs
        prefix = f"activations/{lm.slug}/{name}-{key[:16]}"
        reused = activations_complete(store, prefix)
        try:
            if reused:
                manifest = read_manifest(store, prefix)
                if overlong == "refuse" and manifest["stats"].get("truncated_examples"):
                    tokenize_flat(lm, inputs, lm.spec.max_length, overlong="refuse")  # names them
            else:
                asked = {"question": question, "question_tokens": question_token_counts(lm, ds.inputs, question)} if question else {}
                manifest = write_activations(
                    store, prefix, lm, inputs, layers,
                    info={"model": lm.slug, "dataset": name, "inputs_hash": ds.inputs_hash, "cache_key": key,
                          **lm.precision.as_metadata(), **asked},
                    shard_mb=shard_mb,
                    batch_tokens=batch_tokens,
                    overlong=overlong,
                    storage_dtype=getattr(torch, storage_dtype),
                    on_batch=(lambda done, total, _n=name: on_batch(_n, done, total)) if on_batch else None,
                )
        except OverlongInputs as exc:
            ids = ", ".join(f"{ds.ids[p]!r} ({n} tokens)" for p, n in list(zip(exc.positions, exc.lengths))[:5])
            raise OverlongInputs(exc.positions, exc.lengths, exc.max_length, (
                f"dataset {name}: {len(exc.positions)} inputs are longer than {lm.slug}'s {exc.max_length} tokens "
                f"(ids {ids}{' ...' if len(exc.positions) > 5 else ''}); shorten them, or set overlong to "
                "'truncate' (keep the start) or 'keep_end' (keep the end)"
            )) from None
        stats[name] = dict(manifest["stats"])
        if not reused and stats[name].get("flops") and stats[name].get("seconds"):
            # how well this run used the machine: forward FLOPs per second over its measured matmul rate
            rate = lm.precision.matmul_rate()
            stats[name].update(matmul_gflops=rate, share_of_floor=stats[name]["flops"] / stats[name]["seconds"] / (rate * 1e9))
        refs[name] = ActivationRef(lm.slug, name, prefix, tuple(layers), ds.inputs_hash, manifest["tokens"], reused)
    return refs, stats


def load_activations(store: ArtifactStore, ref: ActivationRef, layer: int) -> RaggedActivations:
    if layer not in ref.layers:
        raise MissingActivations(
            f"layer {layer} of {ref.model} was not extracted for {ref.dataset} (have {list(ref.layers)}); "
            "add it to the activations asset's `layers` config (ops: activations: ops: activation_piece: config: layers) and re-materialise it"
        )
    return load_layer(store, ref.prefix, layer)


# -- probes --------------------------------------------------------------------
def probe_set_prefix(model: str, layer: int, digest: str) -> str:
    """Where one training run's probes of a layer are published: keyed by their content,
    so a new set never overwrites the one the last successful run points to."""
    return f"probes/{model}/layer_{int(layer):03d}/{digest[:16]}"


def train_layer_probes(
    store: ArtifactStore,
    *,
    model: str,
    layer: int,
    train: tuple[DatasetRef, ActivationRef],
    val: tuple[DatasetRef, ActivationRef] | None,
    probe_types: Sequence[str],
    hyperparameters: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[dict[str, ProbeRef], str]:
    """Train every probe type on one layer and publish them together.

    The whole configuration is validated before any training. The probes are written
    to a local directory first and uploaded under a content-keyed prefix with a
    ``_COMPLETE`` marker last, so a failed or concurrent run never replaces the probes
    the previous materialisation recorded. Returns ``({probe_type: summary}, digest)``.
    """
    import hashlib

    hyperparameters = hyperparameters or {}
    configured_probes(probe_types, hyperparameters)  # raises ValueError naming every problem
    train_ds, train_acts = load_labelled(store, load_stored_dataset(store, train[0]), train[1], layer)
    val_pair = None
    if val is not None:
        val_ds, val_acts = load_labelled(store, load_stored_dataset(store, val[0]), val[1], layer)
        val_pair = (val_acts, val_ds.label_array())
    val_auroc: dict[str, float] = {}
    content = hashlib.sha256()
    with scratch_dir("probes") as tmp:
        for probe_type in probe_types:
            probe = train_probe(
                probe_type,
                (train_acts, train_ds.label_array()),
                val_pair,
                model=model,
                layer=layer,
                train_inputs_hash=train_ds.inputs_hash,
                train_labels_hash=train_ds.labels_hash,
                hyperparameters=dict(hyperparameters.get(probe_type, {})),
                sample_weight=train_ds.sample_weights(),  # per training source, where sources were combined
            )
            content.update(probe.save(f"{tmp}/{probe_type}.safetensors").read_bytes())
            if val_pair is not None:
                val_auroc[probe_type] = compute_metrics(val_pair[1], probe.predict_proba(val_pair[0])[:, 1]).auroc
        digest = content.hexdigest()
        prefix = probe_set_prefix(model, layer, digest)
        if not store.dir_complete(prefix):
            store.put_dir(prefix, tmp)
    return {t: ProbeRef(model, layer, t, f"{prefix}/{t}.safetensors", len(train_ds), val_auroc.get(t, float("nan")))
            for t in probe_types}, digest


def load_labelled(store: ArtifactStore, ds: Dataset, ref: ActivationRef, layer: int) -> tuple[Dataset, RaggedActivations]:
    """A dataset without its ambiguous rows, and the matching activations of ``layer``
    (activations are stored in dataset order)."""
    clear = ds.unambiguous()
    acts = load_activations(store, ref, layer)
    keep = _row_positions(ds, clear)
    return clear, (acts if len(keep) == len(ds) else acts.subset(keep))


def _row_positions(full: Dataset, part: Dataset) -> list[int]:
    where = {id_: i for i, id_ in enumerate(full.ids)}
    return [where[i] for i in part.ids]


# -- evaluation ----------------------------------------------------------------
def evaluate_layer_probes(
    store: ArtifactStore,
    *,
    model: str,
    layer: int,
    probe_keys: Mapping[str, str],
    eval_sets: Mapping[str, tuple[DatasetRef, ActivationRef | None]],
    calibrate_on: str | Sequence[str] = VALIDATION_SET,
    target_fpr: float = 0.01,
    roles: Mapping[str, str] | None = None,
) -> pl.DataFrame:
    """Metrics of every probe on every evaluation set (ambiguous rows excluded).

    Besides the offline metrics, each probe is run as a stream (its causal score after
    every token) with the threshold that gives ``target_fpr`` on the low-stakes examples
    of ``calibrate_on``: ``alarm_threshold``, the offline FPR and TPR that threshold
    realises on each set (``alarm_fpr``, ``alarm_tpr``), the share of examples a live
    monitor would have alarmed on at some token (``stream_fpr``, ``stream_tpr``) and the
    median number of tokens a high-stakes example took to raise it
    (``median_tokens_to_alarm``). ``roles`` adds a ``role`` column (evaluation, selection
    or validation) and ``calibrated_on`` names the sets the threshold came from. Raises
    MissingActivations naming the sets without activations (``None``) before anything is loaded.
    """
    from mup_core.monitor.bundle import calibrate_threshold
    from mup_core.probes.base import tokens_until_alarm

    missing = sorted(name for name, (_, ref) in eval_sets.items() if ref is None)
    if missing:
        raise MissingActivations(f"no activations of {model} for {missing}; re-materialise `activations` for partition {model} "
                       "after changing eval_datasets")
    probes = {t: load_probe(store.local_path(k)) for t, k in probe_keys.items()}
    loaded = {}
    for name, (ds_ref, ref) in eval_sets.items():
        ds = load_stored_dataset(store, ds_ref)
        clear = ds.unambiguous()
        if len(clear) == 0 or len(set(clear.labels)) < 2:
            log.warning("skipping %s: needs both labels", name)
            continue
        clear, acts = load_labelled(store, ds, ref, layer)
        y = clear.label_array()
        loaded[name] = (acts, y, {t: p.predict_proba(acts)[:, 1] for t, p in probes.items()})
    thresholds = {}
    cal_sets = [calibrate_on] if isinstance(calibrate_on, str) else list(calibrate_on)
    cal_sets = [c for c in cal_sets if c in loaded]
    if cal_sets:
        thresholds = {t: calibrate_threshold(np.concatenate([loaded[c][2][t][loaded[c][1] == 0] for c in cal_sets]), target_fpr,
                                             np.concatenate([loaded[c][2][t][loaded[c][1] == 1] for c in cal_sets]))
                      for t in probes}
    rows = []
    for name, (acts, y, probs) in loaded.items():
        for probe_type, probe in probes.items():
            m = compute_metrics(y, probs[probe_type])
            row = {"model": model, "layer": int(layer), "probe_type": probe_type, "dataset": name, **m.as_dict(),
                   "probe_key": probe_keys[probe_type]}
            if roles is not None:
                row["role"] = roles.get(name, EVALUATION)
            if probe_type in thresholds:
                thr = thresholds[probe_type]
                row.update(alarm_threshold=thr, calibrated_on=",".join(cal_sets),
                           alarm_fpr=float(np.mean(probs[probe_type][y == 0] >= thr)),
                           alarm_tpr=float(np.mean(probs[probe_type][y == 1] >= thr)))
                row.update(stream_fpr=None, stream_tpr=None, median_tokens_to_alarm=None)
                if acts.question_tokens is None:  # a probe read with a question scores whole conversations only
                    first = [tokens_until_alarm(probe.prefix_proba(acts.example(i)), thr) for i in range(len(acts))]
                    alarmed = np.array([f is not None for f in first])
                    to_alarm = [f for f, label in zip(first, y) if f is not None and label == 1]
                    row.update(stream_fpr=float(alarmed[y == 0].mean()), stream_tpr=float(alarmed[y == 1].mean()),
                               median_tokens_to_alarm=float(np.median(to_alarm)) if to_alarm else None)
            rows.append(row)
    return pl.DataFrame(rows)


def metrics_key(model: str, layer: int) -> str:
    return f"metrics/{model}/layer_{int(layer):03d}.parquet"


def collect_metrics(store: ArtifactStore, model: str) -> pl.DataFrame:
    """Every stored per-layer metrics table of ``model``, concatenated."""
    keys = [k for k in store.list(f"metrics/{model}/") if k.endswith(".parquet")]
    if not keys:
        return pl.DataFrame()
    return pl.concat([store.get_table(k) for k in keys], how="diagonal_relaxed")


def report_headlines(table: pl.DataFrame) -> tuple[dict, dict[str, float]]:
    """What a reader of one model's metrics wants first: the best (probe type, layer,
    dataset) row off the corpus validation split (on it when there is nothing else), and
    the mean AUROC of each probe type, best first."""
    held_out = table.filter(pl.col("dataset") != VALIDATION_SET)
    best = (held_out if held_out.height else table).sort("auroc", descending=True).row(0, named=True)
    means = table.group_by("probe_type").agg(pl.col("auroc").mean()).sort("auroc", descending=True)
    return best, {t: float(a) for t, a in means.iter_rows()}


def metrics_markdown(df: pl.DataFrame, columns: Sequence[str] = ("layer", "probe_type", "dataset", "auroc", "accuracy", "tpr_at_1pct_fpr")) -> str:
    cols = [c for c in columns if c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.select(cols).iter_rows():
        lines.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines)


def choose_monitor_bundle(store: ArtifactStore, model: str, selection: Sequence[str], refs: Mapping[str, tuple[DatasetRef, ActivationRef]],
                          *, target_fpr: float, uncertain_width: float, storage_dtype: str, probe_types: Sequence[str] = ()):
    """The bundle ``mup monitor`` serves: the probe type and layer with the best AUROC on
    the ``selection`` sets (``refs``: set name -> (dataset ref, activations ref)) among the
    model's stored probe metrics (of ``probe_types`` only, when given), its threshold calibrated on those sets' low-stakes rows to
    ``target_fpr``, the realised FPR/TPR there and the uncertain band below it. Raises
    ``BundleError`` saying what to materialise when something is missing."""
    from mup_core.monitor import BundleError, MonitorBundle, calibrate_threshold, choose_probe, uncertain_band
    from mup_core.monitor.bundle import IN_DISTRIBUTION, PROMPTED_STREAMING

    table = collect_metrics(store, model)
    if "probe_key" not in table.columns:
        raise BundleError("stored probe metrics predate monitor bundles; re-materialise probe_metrics")
    best, candidates = choose_probe(table.filter(pl.col("probe_key").is_not_null()), list(selection), probe_types)
    probe = load_probe(store.local_path(best["probe_key"]))
    scores, labels, asked = [], [], set()
    for name in selection:
        ref, acts_ref = refs[name]
        if acts_ref is None:
            raise BundleError(f"no activations of {model} for selection set {name!r}; re-materialise `activations` "
                              f"for partition {model} after changing eval_datasets")
        try:
            clear, acts = load_labelled(store, load_stored_dataset(store, ref), acts_ref, int(best["layer"]))
        except MissingActivations as exc:
            raise BundleError(exc.args[0]) from None
        asked.add(read_manifest(store, acts_ref.prefix).get("question"))
        scores.append(probe.predict_proba(acts)[:, 1])
        labels.append(clear.label_array())
    if len(asked) > 1:
        raise BundleError(f"the selection sets' activations were extracted with different questions ({sorted(map(str, asked))}); "
                          "re-materialise `activations` so that one question (or none) holds for all of them")
    (question,) = asked
    s, y = np.concatenate(scores), np.concatenate(labels)
    threshold = calibrate_threshold(s[y == 0], target_fpr, s[y == 1])
    return MonitorBundle(
        question=question, **({"streaming": PROMPTED_STREAMING} if question else {}),
        model=model, layer=int(best["layer"]), probe_type=best["probe_type"], threshold=threshold, storage_dtype=storage_dtype,
        target_fpr=target_fpr, selection_sets=list(selection), out_of_distribution=list(selection) != [IN_DISTRIBUTION],
        selection_auroc=float(best["auroc"]), realised_fpr=float(np.mean(s[y == 0] >= threshold)),
        tpr_at_threshold=float(np.mean(s[y == 1] >= threshold)), uncertain_band=uncertain_band(threshold, uncertain_width),
        probe_source=best["probe_key"], candidates=candidates,
    )


def check_replies(store: ArtifactStore, model: str, prefix: str, selection: Sequence[str],
                  refs: Mapping[str, tuple[DatasetRef, ActivationRef]], per_class: int, max_tokens: int, seed: int = 0,
                  log: Callable[[str], None] = log.info) -> dict:
    """The bundle at ``prefix`` watching the model reply (``mup_core.monitor.live.reply_alarm_rates``)
    to ``per_class`` high- and ``per_class`` low-stakes conversations drawn (seeded) from the
    ``selection`` sets, where its threshold was calibrated without replies; progress and the
    result go to ``log``."""
    from mup_core.models.loading import load_model
    from mup_core.monitor import load_bundle
    from mup_core.monitor.live import LiveMonitor, reply_alarm_rates

    bundle, probe = load_bundle(store, prefix)
    pool: list[tuple[Any, int]] = []
    for name in selection:
        ds = load_stored_dataset(store, refs[name][0])
        pool += [(ds.input_at(i), int(label == "high-stakes")) for i, label in enumerate(ds.labels)
                 if label in ("high-stakes", "low-stakes")]
    rng = np.random.default_rng(seed)
    chosen = [pool[i] for label in (0, 1)
              for i in rng.permutation([i for i, (_, y) in enumerate(pool) if y == label])[:per_class]]
    monitor = LiveMonitor(load_model(model), bundle, probe)

    def progress(done: int, total: int) -> None:
        if done == total or done % max(1, total // 5) == 0:
            log(f"replies: {done}/{total} conversations")

    rates = reply_alarm_rates(monitor, [c for c, _ in chosen], [y for _, y in chosen], max_tokens, progress)
    log(f"with replies of up to {max_tokens} tokens, false alarms: {rates['fpr_before_reply']} before, "
        f"{rates['fpr_after_reply']} after, {rates['fpr_any_time']} at any point of the reply ({rates['n_low']} low-stakes "
        f"conversations; {bundle.realised_fpr:.3f} on the selection sets without replies)")
    return rates

