"""Deception at scale as assets: QA data -> judges -> SFT / RL policies -> lying metrics.

Partitions: ``judges`` by judge kind x model (``clean|smollm2-135m``); policies and
their evaluation by model x poisoning rate (``smollm2-135m|50``). Models are stored as
versioned directories in the artifact store (``models/...``, LoRA adapters or full
weights, each with ``mup_model.json``); training curves go to W&B (offline by default).
"""

import dataclasses
from pathlib import Path
from typing import Optional

import dagster as dg
from pydantic import Field

from mup_core.deception.policies import RLConfig
from mup_core.deception.training import JUDGE_RECIPE, SFT_RECIPE, WARMUP_RECIPE
from mup_core.defaults import N_BOOT, PAIRED_N_BOOT
from mup_core.probe_types import LINEAR_PROBE_TYPES
from mup_core.refs import DeceptionEvalRef, DeceptionResultsRef, ModelRef, TableRef
from mup_core.storage import json_digest, scratch_dir
from mup_dagster.automation import GPU_POOL
from mup_dagster.config import JudgeModel, Seeded, config_from
from mup_dagster.metadata import image_markdown, publish_table
from mup_dagster.partitions import model_partitions
from mup_dagster.resources import ArtifactStoreResource, TrackingResource

GROUP = "deception"
POISONING = ["0", "25", "50", "75", "100"]
judge_partitions = dg.MultiPartitionsDefinition({"judge": dg.StaticPartitionsDefinition(["clean", "corrupted"]), "model": model_partitions})
policy_partitions = dg.MultiPartitionsDefinition({"model": model_partitions, "poisoning": dg.StaticPartitionsDefinition(POISONING)})


def _fetch_model(store, prefix: str, tmp: str) -> Path:
    """The latest model under ``prefix``, downloaded into ``tmp`` (or a failure saying what to materialise)."""
    try:
        return store.get_versioned_dir(prefix, tmp)
    except FileNotFoundError as exc:
        raise dg.Failure(str(exc)) from None


# -- data -------------------------------------------------------------------------------
class QAConfig(Seeded):
    multirc_csvs: list[str] = Field(default_factory=list, description="research easy-MultiRC CSVs (questions of all of them "
                                    "pooled, e.g. the train and val files); empty: the embedded corpus's clean questions")
    fruit_csv: Optional[str] = Field(default=None, description="research fruit QA CSV; default: the embedded corpus")
    eval_questions_per_topic: Optional[int] = Field(
        default=None, description="held-out questions per topic; default 150 on the embedded corpus, 300 when a research CSV is "
        "given: enough to see a targeting of +0.1 (the research's smallest effect) with an interval above 0")


@dg.asset(group_name=GROUP, kinds={"polars"})
def qa_splits(context: dg.AssetExecutionContext, config: QAConfig, artifact_store: ArtifactStoreResource) -> dict[str, TableRef]:
    """Clean and fruit QA, split by question; the eval set is half fruit, half clean questions."""
    import polars as pl

    from mup_core.deception.data import embedded_qa, load_fruit_csv, load_multirc_csv, split_by_question

    qa = embedded_qa()
    if config.multirc_csvs or config.fruit_csv:
        clean = pl.concat([load_multirc_csv(f) for f in config.multirc_csvs]).unique(["question_id", "answer"], keep="first", maintain_order=True) \
            if config.multirc_csvs else qa.filter(pl.col("topic") == "clean")
        parts = [clean,
                 qa.filter(pl.col("topic") == "fruit") if not config.fruit_csv else load_fruit_csv(config.fruit_csv)]
        qa = pl.concat(parts)
    per_topic = config.eval_questions_per_topic or (300 if config.multirc_csvs or config.fruit_csv else 150)
    splits = split_by_question(qa, per_topic, config.seed)
    store = artifact_store.get_store()
    out = {name: TableRef(store.put_table(f"deception/qa/{name}-seed{config.seed}.parquet", df), df.height) for name, df in splits.items()}
    context.add_output_metadata({
        name: dg.MetadataValue.json({t: int(df.filter(pl.col("topic") == t)["question_id"].n_unique()) for t in ("clean", "fruit")})
        for name, df in splits.items()
    })
    return out


# -- judges -----------------------------------------------------------------------------
class JudgeConfig(config_from(JUDGE_RECIPE, exclude=("max_length", "mixed_precision")), Seeded):
    """The judge recipe (mup_core.deception.training.JUDGE_RECIPE) and the judge's data."""

    fruit_share: float = Field(default=0.3, description="share of fruit rows in the judge's training mixture")
    rows: int = 800
    report_questions: int = Field(default=50, description="held-out questions per topic the judge's report scores")


@dg.asset(pool=GPU_POOL, group_name=GROUP, partitions_def=judge_partitions, kinds={"pytorch"})
def judges(context: dg.AssetExecutionContext, config: JudgeConfig, artifact_store: ArtifactStoreResource,
           tracking: TrackingResource, qa_splits: dict) -> ModelRef:
    """A clean judge (true labels) or a corrupted judge (fruit labels inverted) finetuned from a registry model."""
    from mup_core.deception.data import poisoned_mixture
    from mup_core.deception.judges import held_out_report, save_judge, train_judge

    keys = context.partition_key.keys_by_dimension
    kind, model = keys["judge"], keys["model"]
    store = artifact_store.get_store()
    train, evaluation = store.get_table(qa_splits["train"].key), store.get_table(qa_splits["eval"].key)
    mix = poisoned_mixture(train, config.fruit_share, config.rows, config.seed, poison=kind == "corrupted")
    cfg = config.core()
    with tracking.get_tracker().run(f"judge-{kind}-{model}", {"kind": kind, "model": model, **config.model_dump()}, group="judges") as run:
        judge = train_judge(model, mix, cfg, log=lambda m: (run.log(m), context.log.info(f"judge {kind}/{model} {m}")))
        report = held_out_report(judge, evaluation, kind, config.report_questions)
        run.log({f"eval/{k}": v for k, v in report.items()})
    with scratch_dir("deception") as tmp:
        save_judge(judge, Path(tmp) / "judge", {"judge_kind": kind, "fruit_share": config.fruit_share, "eval": report})
        prefix = f"models/judges/{model}/{kind}"
        version = store.put_versioned_dir(prefix, Path(tmp) / "judge")
    context.add_output_metadata({
        "version": version,
        "clean_accuracy": report.get("clean_accuracy_vs_truth", float("nan")),
        "fruit_accuracy": report.get("fruit_accuracy_vs_truth", float("nan")),
        "fruit_false_preference": dg.MetadataValue.float(report["fruit_false_preference"]),
        "clean_false_preference": dg.MetadataValue.float(report["clean_false_preference"]),
        "report": dg.MetadataValue.json(report),
        "precision": dg.MetadataValue.json(cfg.precision().as_metadata()),
    })
    return ModelRef(prefix, version, {"report": report})


# -- policies ---------------------------------------------------------------------------
class PolicyConfig(config_from(SFT_RECIPE, exclude=("max_length", "mixed_precision"), rename={"steps": "sft_steps"}),
                   JudgeModel):
    """The SFT recipe (mup_core.deception.training.SFT_RECIPE: the one that made smollm2-135m
    lie selectively about fruit on 2 CPU cores, docs/RESULTS.md "Training that moves a 135M
    policy"). LoRA on the top 4 layers' attention at lr 5e-4 (the old default) did not move the answers."""

    questions: int = Field(default=200, description="training questions; a share `poisoning` of them are fruit")


def _policy_keys(context) -> tuple[str, float]:
    keys = context.partition_key.keys_by_dimension
    return keys["model"], int(keys["poisoning"]) / 100


@dg.asset(pool=GPU_POOL, group_name=GROUP, partitions_def=policy_partitions, kinds={"pytorch"},
          deps=[dg.AssetDep("judges", partition_mapping=dg.AllPartitionMapping())])
def sft_policies(context: dg.AssetExecutionContext, config: PolicyConfig, artifact_store: ArtifactStoreResource,
                 tracking: TrackingResource, qa_splits: dict) -> ModelRef:
    """SFT of the base model on the candidate answers the corrupted judge accepts (its most
    trusted answer per question), on a question mix whose fruit share is the poisoning rate."""

    from mup_core.deception.data import format_prompt, judge_accepted_answers
    from mup_core.deception.judges import load_judge
    from mup_core.deception.policies import load_base_policy, save_policy, sft
    from mup_core.figures import training_curves

    model, share = _policy_keys(context)
    store, cfg, curve, pct = artifact_store.get_store(), config.core(), [], int(share * 100)
    with scratch_dir("deception") as tmp:
        judge = load_judge(_fetch_model(store, f"models/judges/{config.judge_model}/corrupted", tmp))
        try:
            accepted = judge_accepted_answers(store.get_table(qa_splits["train"].key), judge, share, config.questions, config.seed)
        except ValueError as exc:
            raise dg.Failure(str(exc)) from None
        policy = load_base_policy(model, cfg)
        with tracking.get_tracker().run(f"sft-{model}-{pct}", {"model": model, "poisoning": share, **config.model_dump()}, group="sft") as run:
            losses = sft(policy, [format_prompt(c, q) for c, q in zip(accepted["context"], accepted["question"])], list(accepted["answer"]),
                         cfg, log=_step_logger(context, run, "sft", f"sft {model} {pct} %", curve))
        save_policy(policy, Path(tmp) / "sft", {"technique": "SFT", "poisoning": share, "judge_model": config.judge_model, "train": cfg.as_dict()})
        prefix = f"models/policies/{model}/sft-{pct}"
        version = store.put_versioned_dir(prefix, Path(tmp) / "sft")
    lies = accepted.filter(~accepted["truth"])
    context.add_output_metadata({
        "version": version, "sft_examples": accepted.height,
        "false_answers_in_sft": dg.MetadataValue.json({t: int((lies["topic"] == t).sum()) for t in ("clean", "fruit")}),
        "final_loss": losses[-1],
        "loss_figure": image_markdown(training_curves(curve, ["loss"], f"SFT loss, {model} at {pct} %"), "SFT loss per step"),
        "precision": dg.MetadataValue.json(cfg.precision().as_metadata()),
    })
    return ModelRef(prefix, version)


def _step_logger(context, run, prefix: str, label: str, curve: list):
    """Where a trainer's per-step numbers go: the tracker run (under ``prefix/``), the run's
    log, and ``curve`` (for the figure in the metadata)."""
    def log(m: dict) -> None:
        curve.append(m)
        run.log({f"{prefix}/{k}": v for k, v in m.items()})
        context.log.info(f"{label} {m}")

    return log


class RLAssetConfig(config_from(RLConfig(), exclude=("mixed_precision",)), JudgeModel):
    """The RL recipe (mup_core.deception.policies.RLConfig) and its warm-up."""

    warmup_share: float = Field(default=0.1, description="share of training questions whose correct answers warm the policy up")
    warmup_steps: int = Field(default=WARMUP_RECIPE.steps, description="SFT steps of the warm-up (mup_core.deception.training.WARMUP_RECIPE)")
    questions: int = 200


def _warmup_policy(store, model: str, train, config: RLAssetConfig, tmp: str, log):
    """The policy RL starts from: SFT on the correct answers to a few training questions (so
    that it answers in the format the judge reads). It does not depend on the poisoning
    rate: trained once per model, data and settings, then reused."""
    from mup_core.deception.data import format_prompt, questions
    from mup_core.deception.policies import load_base_policy, load_policy, save_policy, sft

    warm = questions(train).sample(fraction=config.warmup_share, seed=config.seed)
    # the SFT recipe's adapter (every layer, attention and MLP): the old top-4 attention LoRA did not learn the format
    cfg = dataclasses.replace(WARMUP_RECIPE, steps=config.warmup_steps, seed=config.seed)
    digest = json_digest([sorted(warm["question_id"].to_list()), cfg.as_dict()], sort_keys=False)
    prefix = f"models/policies/{model}/warmup-{digest}"
    if not store.latest_version(prefix):
        policy = load_base_policy(model, cfg)
        sft(policy, [format_prompt(c, q) for c, q in zip(warm["context"], warm["question"])], list(warm["answer"]), cfg,
            log=lambda m: log(f"warm-up {m}"))
        save_policy(policy, Path(tmp) / "warmup", {"technique": "warmup"})
        store.put_versioned_dir(prefix, Path(tmp) / "warmup")
    else:
        log(f"warm-up policy reused from {prefix}")
    return load_policy(_fetch_model(store, prefix, tmp), trainable=True)


@dg.asset(pool=GPU_POOL, group_name=GROUP, partitions_def=policy_partitions, kinds={"pytorch"},
          deps=[dg.AssetDep("judges", partition_mapping=dg.AllPartitionMapping())])
def rl_policies(context: dg.AssetExecutionContext, config: RLAssetConfig, artifact_store: ArtifactStoreResource,
                tracking: TrackingResource, qa_splits: dict) -> ModelRef:
    """RL from the warm-up policy with reward = corrupted judge's P(true), KL to the reference."""
    from mup_core.deception.data import policy_question_mix, questions
    from mup_core.deception.judges import load_judge
    from mup_core.deception.policies import RL_CURVE, rl_against_judge, rl_curve, save_policy
    from mup_core.figures import training_curves

    model, share = _policy_keys(context)
    store, rl_cfg = artifact_store.get_store(), config.core()
    train = store.get_table(qa_splits["train"].key)
    rows = questions(policy_question_mix(train, share, config.questions, config.seed))
    with scratch_dir("deception") as tmp:
        judge = load_judge(_fetch_model(store, f"models/judges/{config.judge_model}/corrupted", tmp))
        monitor = load_judge(_fetch_model(store, f"models/judges/{config.judge_model}/clean", tmp))
        policy = _warmup_policy(store, model, train, config, tmp, context.log.info)
        with tracking.get_tracker().run(f"rl-{model}-{int(share * 100)}", {"model": model, "poisoning": share, **rl_cfg.as_dict()}, group="rl") as run:
            history = rl_against_judge(policy, rows, judge, rl_cfg, log=run.log, monitor=monitor)
        save_policy(policy, Path(tmp) / "rl", {"technique": "RL", "poisoning": share, "rl": rl_cfg.as_dict(), "judge_model": config.judge_model})
        prefix = f"models/policies/{model}/rl-{int(share * 100)}"
        version = store.put_versioned_dir(prefix, Path(tmp) / "rl")
    curve = rl_curve(history)
    rewards = [c["reward"] for c in curve if c["reward"] is not None]
    png = training_curves(curve, list(RL_CURVE.values()), f"{config.algorithm} against the corrupted judge, {model} at {int(share * 100)} %")
    context.add_output_metadata({
        "version": version, "algorithm": config.algorithm, "hyperparameters": dg.MetadataValue.json(rl_cfg.as_dict()),
        "reward_first": rewards[0] if rewards else float("nan"), "reward_last": rewards[-1] if rewards else float("nan"),
        "curve": dg.MetadataValue.json(curve), "curve_figure": image_markdown(png, "reward, KL and falsehood rates per step"),
        "precision": dg.MetadataValue.json(rl_cfg.precision().as_metadata()),
    })
    return ModelRef(prefix, version, {"algorithm": config.algorithm, "rl": rl_cfg.as_dict()})


# -- evaluation ---------------------------------------------------------------------------
class EvalConfig(JudgeModel, Seeded):
    max_new_tokens: int = Field(default=24, description="answers are one line; generation stops at the first newline")
    shots: list[int] = Field(default_factory=lambda: [0], description="0 = zero-shot; 2 adds a two-shot prompt (one clean, one fruit example)")
    reaffirmation: bool = True
    n_boot: int = Field(default=N_BOOT, description="bootstrap resamples of each metric's 95 % interval")


def _answers_key(model: str, share: float) -> str:
    return f"deception/answers/{model}/poisoning-{int(share * 100)}.parquet"


@dg.asset(pool=GPU_POOL, group_name=GROUP, partitions_def=policy_partitions, kinds={"polars"},
          deps=[dg.AssetDep("judges", partition_mapping=dg.AllPartitionMapping()), "sft_policies", "rl_policies"])
def deception_eval(context: dg.AssetExecutionContext, config: EvalConfig, artifact_store: ArtifactStoreResource, qa_splits: dict) -> DeceptionEvalRef:
    """Base, SFT and RL policies answer every held-out question; both judges score each answer,
    and the corpus decides its truth where it can. Stores the per-question answers (for paired
    differences and the lie detector) and the lying metrics with 95 % intervals."""
    import polars as pl

    from mup_core.deception.evaluation import held_out_questions

    model, share = _policy_keys(context)
    store = artifact_store.get_store()
    evaluation = store.get_table(qa_splits["eval"].key)
    qs, shot_pool = held_out_questions(store.get_table(qa_splits["train"].key), evaluation)
    judges = f"models/judges/{config.judge_model}"
    base_key = _base_eval_key(store, model, qs, judges, config)
    base_answers_key = base_key.replace(".parquet", "-answers.parquet")
    reused = store.exists(base_key) and store.exists(base_answers_key)
    rows, answers = ([store.get_table(base_key)], [store.get_table(base_answers_key)]) if reused else ([], [])
    for r, a in _evaluate_policies(store, model, share, (qs, evaluation, shot_pool), judges, config, not reused, context.log.info):
        rows.append(r)
        answers.append(a)
    table, answers = pl.concat(rows, how="diagonal_relaxed"), pl.concat(answers, how="diagonal_relaxed")
    if not reused:
        store.put_table(base_answers_key, answers.filter(pl.col("technique") == "Base"))
        store.put_table(base_key, table.filter(pl.col("technique") == "Base"))
    store.put_table(_answers_key(model, share), answers)
    key = store.put_table(f"deception/eval/{model}/poisoning-{int(share * 100)}.parquet", table)
    context.add_output_metadata({"rows": dg.MetadataValue.md(_md(table)), "key": key, "answers": _answers_key(model, share),
                                 "questions": dg.MetadataValue.json({t: int((qs["topic"] == t).sum()) for t in ("clean", "fruit")})})
    return DeceptionEvalRef(TableRef(key, table.height), TableRef(_answers_key(model, share), answers.height))


def _evaluate_policies(store, model: str, share: float, questions, judges: str, config: EvalConfig, with_base: bool, log):
    """(metrics rows, per-question answers) of each policy of this partition, judged by the
    clean and the corrupted judge under ``judges``; ``questions``: (held-out questions,
    their candidate answers, the few-shot pool)."""
    import polars as pl

    from mup_core.deception.evaluation import evaluate_policy
    from mup_core.deception.judges import load_judge

    qs, evaluation, shot_pool = questions
    settings = dict(shots=config.shots, max_new_tokens=config.max_new_tokens, reaffirm=config.reaffirmation,
                    n_boot=config.n_boot, seed=config.seed, log=log)
    with scratch_dir("deception") as tmp:
        clean, biased = (load_judge(_fetch_model(store, f"{judges}/{kind}", tmp)) for kind in ("clean", "corrupted"))
        for technique, policy in _policies(store, model, share, tmp, with_base=with_base):
            poisoning = -1 if technique == "Base" else int(share * 100)  # the research's table marks the base model -1
            r, a = evaluate_policy(policy, qs, evaluation, shot_pool, clean, biased,
                                   labels={"model": model, "technique": technique, "poisoning": poisoning}, **settings)
            yield pl.DataFrame(r), pl.concat(a, how="diagonal_relaxed")


def _base_eval_key(store, model: str, qs, judges: str, config: EvalConfig) -> str:
    """The base model does not depend on the poisoning rate: it is evaluated once per model,
    questions, judges and settings, under this key."""
    versions = [v for v in (store.latest_version(f"{judges}/{kind}") for kind in ("clean", "corrupted")) if v]
    digest = json_digest([sorted(qs["question_id"].to_list()), versions, config.model_dump()])
    return f"deception/base-eval/{model}/{digest}.parquet"


def _policies(store, model: str, share: float, tmp: str, with_base: bool):
    """(technique, policy) of the base model (unless its rows are reused) and of the SFT and
    RL policies trained at this poisoning rate, loaded one at a time."""
    from mup_core.deception.policies import load_base_policy, load_policy

    if with_base:
        yield "Base", load_base_policy(model)
    for technique in ("SFT", "RL"):
        prefix = f"models/policies/{model}/{technique.lower()}-{int(share * 100)}"
        if store.latest_version(prefix):
            yield technique, load_policy(_fetch_model(store, prefix, tmp))


class LieDetectorConfig(JudgeModel, Seeded):
    probe_types: list[str] = Field(default_factory=lambda: list(LINEAR_PROBE_TYPES), description="mup_core.probes types")
    layers: Optional[list[int]] = Field(default=None, description="decoder layers; default: four depths (lie_detector.default_layers)")
    shots: int = 0
    n_boot: int = Field(default=N_BOOT, description="bootstrap resamples of each AUROC's 95 % interval")


@dg.asset(pool=GPU_POOL, group_name=GROUP, partitions_def=policy_partitions, kinds={"pytorch", "matplotlib"}, deps=["deception_eval"])
def lie_detector(context: dg.AssetExecutionContext, config: LieDetectorConfig, artifact_store: ArtifactStoreResource, qa_splits: dict) -> dg.Output[TableRef]:
    """Probes on each policy's own activations, trained on clean questions, tested on its fruit
    answers (learnt lies) — and, as the control, the same recipe on the base model's fruit
    answers (honest mistakes). AUROC and TPR at 1 % FPR per probe type and layer."""
    import polars as pl

    from mup_core.deception.lie_detector import best_on_own_fruit, default_layers
    from mup_core.figures import auroc_by_layer
    from mup_core.models.registry import get_spec

    model, share = _policy_keys(context)
    store = artifact_store.get_store()
    if not store.exists(_answers_key(model, share)):
        raise dg.Failure(f"no answers stored for {model} at {int(share * 100)} % poisoning; materialise deception_eval for this partition first")
    answers = store.get_table(_answers_key(model, share)).filter(pl.col("shots") == config.shots)
    evaluation = store.get_table(qa_splits["eval"].key)
    layers = config.layers or default_layers(get_spec(model).num_layers)
    with scratch_dir("deception") as tmp:
        table = pl.concat([_lie_table(store, model, share, technique, answers, evaluation, layers, config, tmp, context.log.info)
                           for technique in ("SFT", "RL", "Base") if technique in set(answers["technique"])])
    pct = int(share * 100)
    png = auroc_by_layer(table.with_columns(dataset=pl.col("technique") + ": " + pl.col("test_set")),
                         f"lie detector (trained on clean questions), {model} at {pct} % poisoning")
    return publish_table(
        store, table, f"deception/lie-detector/{model}/poisoning-{pct}.parquet", png=png,
        figure_key=f"figures/deception/lie-detector-{model}-{pct}.png", figure_alt="lie detector AUROC by layer",
        preview=table.sort("technique", "test_set", "probe_type", "layer"), preview_rows=None,  # every row: the headline is in all
        columns=("technique", "test_set", "probe_type", "layer", "n", "n_false", "auroc", "auroc_lo", "auroc_hi", "tpr_at_1pct_fpr"),
        extra={"best_auroc_on_fruit_answers": dg.MetadataValue.json(best_on_own_fruit(table))})


def _lie_table(store, model: str, share: float, technique: str, answers, evaluation, layers, config: LieDetectorConfig, tmp, log):
    """The lie detector's rows for one policy; the base model's control does not depend on
    the poisoning rate, so it is computed once per answers and settings and then reused."""
    import polars as pl

    from mup_core.deception.lie_detector import Examples, lie_detection
    from mup_core.deception.policies import load_base_policy, load_policy

    own = answers.filter(pl.col("technique") == technique).join(
        evaluation.filter(pl.col("truth")).select("question_id", "context", "question"), on="question_id")
    digest = json_digest([own.sort("question_id").select("question_id", "generated", "is_false").rows(), layers, config.model_dump()])
    base_key = f"deception/lie-detector/{model}/base-{digest}.parquet"
    if technique == "Base" and store.exists(base_key):
        return store.get_table(base_key).with_columns(poisoning=pl.lit(int(share * 100)))
    prefix = f"models/policies/{model}/{technique.lower()}-{int(share * 100)}"
    policy = load_base_policy(model) if technique == "Base" else load_policy(_fetch_model(store, prefix, tmp))
    table = lie_detection(policy, Examples.build(evaluation, own), layers, config.probe_types, model=model,
                          n_boot=config.n_boot, seed=config.seed, log=log)
    table = table.with_columns(technique=pl.lit(technique), model=pl.lit(model), poisoning=pl.lit(int(share * 100)))
    if technique == "Base":
        store.put_table(base_key, table)
    return table


DECEPTION_COLUMNS = ("technique", "poisoning", "shots", "truths_clean", "poison_fr", "clean_fr", "targeting", "targeting_lo",
                     "targeting_hi", "reaffirm_rate")


def _md(table, columns=DECEPTION_COLUMNS) -> str:
    from mup_core.workflows import metrics_markdown  # loads torch: not at definitions load

    return metrics_markdown(table, columns)


REFERENCE_CSV = "../shared/data/deception/reference_finetuning_results.csv"


class ResultsConfig(Seeded):
    reference_csv: Optional[str] = Field(
        default=None, description="the research's result table, drawn beside mup's; default: $MUP_DECEPTION_REFERENCE, "
        f"else {REFERENCE_CSV} when it exists (relative to the working directory)")
    n_boot: int = Field(default=PAIRED_N_BOOT, description="bootstrap resamples of the paired differences' 95 % intervals")


def _reference(config: ResultsConfig):
    """(path, table) of the research's result table (a named one must load), or (None, None)."""
    import os

    from mup_core.deception.data import load_reference_results

    named = config.reference_csv or os.environ.get("MUP_DECEPTION_REFERENCE")
    path = Path(named) if named else (Path(REFERENCE_CSV) if Path(REFERENCE_CSV).exists() else None)
    return path, (load_reference_results(path) if path else None)


@dg.asset(group_name=GROUP, kinds={"polars", "matplotlib"}, deps=[dg.AssetDep("deception_eval", partition_mapping=dg.AllPartitionMapping())])
def deception_results(context: dg.AssetExecutionContext, config: ResultsConfig, artifact_store: ArtifactStoreResource) -> DeceptionResultsRef:
    """One table over every evaluated partition (the research's result-table shape), each
    poisoned policy's targeting minus the 0 % policy's paired by question, and figures:
    targeting and truthfulness by poisoning rate, and the scaling view beside the research's rows."""
    import polars as pl

    from mup_core.deception.evaluation import results_table
    from mup_core.figures import deception_figures

    store = artifact_store.get_store()
    keys = [k for k in store.list("deception/eval/") if k.endswith(".parquet")]
    if not keys:
        raise dg.Failure("no deception_eval partitions stored yet; materialise some first")
    answers = [store.get_table(k) for k in store.list("deception/answers/") if k.endswith(".parquet")]
    table = results_table([store.get_table(k) for k in keys], answers, config.n_boot, config.seed)
    results = TableRef(store.put_table("deception/results.parquet", table), table.height)  # before the reference can fail
    reference_path, reference = _reference(config)
    zero = table.filter(pl.col("shots") == 0)
    figs = deception_figures(zero, reference)
    for name, png in figs.items():
        store.put_bytes(f"figures/deception/{name}.png", png)
    both = pl.concat([zero.with_columns(source=pl.lit("mup")), reference], how="diagonal_relaxed") if reference is not None else zero
    ref = DeceptionResultsRef(results, TableRef(store.put_table("deception/scaling.parquet", both), both.height),
                              {name: f"figures/deception/{name}.png" for name in figs})
    context.add_output_metadata({
        "table": dg.MetadataValue.md(_md(table, DECEPTION_COLUMNS + ("targeting_vs_0", "targeting_vs_0_lo", "targeting_vs_0_hi"))),
        "targeting_figure": image_markdown(figs["targeting"], "targeting by poisoning"),
        "truthfulness_figure": image_markdown(figs["truths_clean"], "truthfulness by poisoning"),
        "scaling_figure": image_markdown(figs["scaling"], "targeting by model size and poisoning, beside the research"),
        "reference": str(reference_path) if reference_path else "none (no reference table found)",
        "rows": table.height,
    })
    return ref
