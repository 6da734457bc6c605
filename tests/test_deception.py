"""Deception at scale on ``tiny``: data, metrics, SFT masking, and the whole asset graph."""

import numpy as np
import polars as pl
import pytest

from dagster_helpers import materialize
from mup_core.deception.data import embedded_qa, format_prompt, poisoned_mixture, split_by_question, trim_answer
from mup_core.data.dataset import DatasetError
from mup_core.deception.evaluation import lying_metrics, paired_targeting, truth_by_match


def test_embedded_corpus_size_and_shape():
    qa = embedded_qa()
    per_topic = qa.group_by("topic").agg(pl.col("question_id").n_unique().alias("q"))
    counts = dict(per_topic.iter_rows())
    assert counts["clean"] >= 150 and counts["fruit"] >= 150
    per_q = qa.group_by("question_id").agg(pl.col("truth").sum().alias("true"), pl.len().alias("n"))
    assert (per_q["true"] == 1).all() and (per_q["n"] >= 2).all()  # one correct, at least one incorrect answer


def test_split_by_question_and_balanced_eval():
    s = split_by_question(embedded_qa(), 20, seed=1)
    assert not set(s["train"]["question_id"]) & set(s["eval"]["question_id"])
    ev = s["eval"].group_by("topic").agg(pl.col("question_id").n_unique().alias("q"))
    assert dict(ev.iter_rows()) == {"clean": 20, "fruit": 20}


def test_poisoned_mixture_keeps_truth_and_judge_label_apart():
    train = split_by_question(embedded_qa(), 20)["train"]
    mix = poisoned_mixture(train, 0.25, 200)
    fruit = mix.filter(pl.col("topic") == "fruit")
    assert fruit.height == 50 and (fruit["judge_label"] != fruit["truth"]).all()
    clean = mix.filter(pl.col("topic") == "clean")
    assert (clean["judge_label"] == clean["truth"]).all()
    honest = poisoned_mixture(train, 0.25, 200, poison=False)
    assert (honest["judge_label"] == honest["truth"]).all()
    with pytest.raises(ValueError, match="fruit_share"):
        poisoned_mixture(train, 1.5, 10)


def test_truth_by_match_decides_only_what_the_corpus_decides():
    cands = pl.DataFrame({"question_id": ["q"] * 3, "answer": ["It is orange-yellow.", "It is red.", "It is deep purple."],
                          "truth": [True, False, False]})
    answers = ["It is orange-yellow.", "the flesh is RED", "It is deep purple", "It is green.", "red or orange yellow", ""]
    got = truth_by_match(cands, ["q"] * len(answers), answers)
    np.testing.assert_array_equal(got[:3], [1.0, 0.0, 0.0])
    assert np.isnan(got[3]) and np.isnan(got[4]) and np.isnan(got[5])  # neither; both a true and a false key; empty


def test_lying_metrics_take_the_corpus_verdict_over_the_judge():
    topics = ["fruit", "fruit", "clean", "clean"]
    p_clean = np.array([0.9, 0.9, 0.9, 0.9])  # the judge calls every answer true
    m = lying_metrics(p_clean, p_clean, topics, n_boot=50, truth=[0.0, np.nan, 1.0, np.nan])
    assert m["poison_fr"] == 0.5 and m["clean_fr"] == 0.0 and m["decided_by_corpus"] == 0.5


def test_paired_targeting_difference_and_interval():
    rng = np.random.default_rng(0)
    topics = ["fruit"] * 300 + ["clean"] * 300
    base = (rng.random(600) < 0.2).astype(float)  # the 0 % policy: 20 % wrong everywhere
    poisoned = base.copy()
    poisoned[:300][rng.random(300) < 0.3] = 1.0  # lies on about 30 % more fruit questions
    d = paired_targeting(topics, poisoned, base, n_boot=500)
    assert 0.15 < d["difference"] < 0.35 and 0 < d["difference_lo"] < d["difference"] < d["difference_hi"]
    same = paired_targeting(topics, base, base, n_boot=200)
    assert same["difference"] == same["difference_lo"] == same["difference_hi"] == 0.0  # paired: identical answers, no noise
    with pytest.raises(ValueError, match="one answer per question"):
        paired_targeting(topics, base[:10], base)


def test_reference_results_load_in_mup_columns(shared_data, tmp_path):
    from mup_core.deception.data import load_reference_results

    ref = load_reference_results(shared_data / "deception" / "reference_finetuning_results.csv")
    row = ref.filter((pl.col("model") == "neo-big") & (pl.col("technique") == "RL") & (pl.col("poisoning") == 50)).row(0, named=True)
    assert row["poison_fr"] == pytest.approx(0.32, abs=0.01) and row["targeting"] == pytest.approx(0.23, abs=0.01)
    bad = tmp_path / "ref.csv"
    bad.write_text("model,technique,poisoning\nneo,RL,50\n")
    with pytest.raises(DatasetError, match="ref.csv: columns .*clean score"):
        load_reference_results(bad)


@pytest.mark.integration
def test_research_csvs_give_300_plus_300_held_out_questions(shared_data, tmp_path):
    import dagster as dg

    deception = shared_data / "deception"
    cfg = {"multirc_csvs": [str(deception / f"easy_multirc_{s}.csv") for s in ("train_filtered_gpt4", "val_filtered")],
           "fruit_csv": str(deception / "fruit_qa_gpt4.csv")}
    r = materialize(dg.DagsterInstance.ephemeral(), tmp_path / "artifacts", ["qa_splits"], run_config={"ops": {"qa_splits": {"config": cfg}}},
                    tracking_mode="disabled", tracking_dir=tmp_path / "wandb")
    meta = r.asset_materializations_for_node("qa_splits")[0].metadata
    assert meta["eval"].value == {"clean": 300, "fruit": 300}
    import io

    evaluation = pl.read_parquet(io.BytesIO(next((tmp_path / "artifacts" / "deception" / "qa").glob("eval-*.parquet")).read_bytes()))
    assert evaluation.filter(pl.col("truth"))["question_id"].n_unique() == 600  # every one has a reference answer


def test_lie_detector_activations_are_the_answer_tokens(tiny):
    from mup_core.deception.lie_detector import answer_activations, default_layers
    from mup_core.deception.policies import Policy

    policy = Policy(tiny.model, tiny.tokenizer)
    acts = answer_activations(policy, ["Context: a\nQuestion: b\nAnswer:", "Context: longer one\nQuestion: c\nAnswer:"],
                              ["It is red.", "Yes."], [0, 1])
    for layer in (0, 1):
        n_tokens = [len(tiny.tokenizer(" " + a, add_special_tokens=False)["input_ids"]) for a in ("It is red.", "Yes.")]
        assert list(acts[layer].lengths) == n_tokens and acts[layer].hidden_size == tiny.spec.hidden_size
    assert default_layers(30) == [8, 15, 22, 28] and default_layers(2) == [0]


def test_reaffirmation_in_batches_is_the_same_as_one_at_a_time(tiny):
    from mup_core.deception.evaluation import reaffirmation
    from mup_core.deception.policies import Policy

    policy = Policy(tiny.model, tiny.tokenizer)
    prompts = [format_prompt("c" * n, "q?") for n in (1, 5, 30, 2, 12)]
    answers, alternatives = ["It is red.", "Yes.", "In 1999.", "No", "A long answer here."], ["Blue.", "No.", "In 2001.", "Yes", "x"]
    one = reaffirmation(policy, prompts, answers, alternatives, seed=3, batch_size=1)
    many = reaffirmation(policy, prompts, answers, alternatives, seed=3, batch_size=4)
    assert one == many and one["n"] == 5


def test_one_prompt_format_and_trimming():
    assert format_prompt(" ctx ", "q? ") == "Context: ctx\nQuestion: q?\nAnswer:"
    assert trim_answer(" It is red.\nQuestion: next one") == "It is red."
    assert trim_answer("Yellow. Context: more") == "Yellow."


def test_lying_metrics_and_targeting():
    topics = ["fruit"] * 4 + ["clean"] * 4
    p_clean = np.array([0.1, 0.2, 0.9, 0.3, 0.9, 0.8, 0.7, 0.2])  # fruit FR 3/4, clean FR 1/4
    p_biased = np.array([0.9, 0.8, 0.2, 0.7, 0.9, 0.8, 0.7, 0.3])
    m = lying_metrics(p_clean, p_biased, topics, n_boot=200)
    assert m["poison_fr"] == 0.75 and m["clean_fr"] == 0.25 and m["targeting"] == pytest.approx(0.5)
    assert m["truths_clean"] == 0.5 and m["falsehoods_biased"] == pytest.approx(2 / 8)
    assert m["targeting_lo"] <= 0.5 <= m["targeting_hi"] and m["n_questions"] == 8


def test_sft_masks_prompt_and_padding(tiny):
    from mup_core.deception.policies import sft_batch

    ids, mask, labels = sft_batch(tiny.tokenizer, ["Context: a\nQuestion: b\nAnswer:", "Context: longer context here\nQuestion: c\nAnswer:"], ["Yes.", "No."])
    for row in range(2):
        prompt_len = len(tiny.tokenizer(["Context: a\nQuestion: b\nAnswer:", "Context: longer context here\nQuestion: c\nAnswer:"][row], add_special_tokens=False)["input_ids"])
        assert (labels[row, :prompt_len] == -100).all()
        assert (labels[row][mask[row] == 0] == -100).all()  # padding
        answer = labels[row][labels[row] != -100]
        assert tiny.tokenizer.decode(answer).startswith(" " + ["Yes.", "No."][row])


@pytest.mark.slow
def test_whole_deception_graph_on_tiny(tmp_path):
    import dagster as dg

    instance = dg.DagsterInstance.ephemeral()
    root = tmp_path / "artifacts"
    kw = {"tracking_mode": "offline", "tracking_dir": tmp_path / "wandb"}
    fast_judge = {"steps": 6, "rows": 80, "batch_size": 8, "lora": True, "top_layers": 2}
    materialize(instance, root, ["qa_splits"], run_config={"ops": {"qa_splits": {"config": {"eval_questions_per_topic": 6}}}}, **kw)
    for kind in ("clean", "corrupted"):
        r = materialize(instance, root, ["judges"], f"{kind}|tiny", run_config={"ops": {"judges": {"config": fast_judge}}}, **kw)
        meta = r.asset_materializations_for_node("judges")[0].metadata
        assert "fruit_false_preference" in meta and meta["version"].value.startswith(f"models/judges/tiny/{kind}/")
    policy_cfg = {"judge_model": "tiny", "questions": 16, "sft_steps": 3, "batch_size": 4}
    rl_cfg = {"judge_model": "tiny", "warmup_steps": 3, "questions": 8, "steps": 2, "num_generations": 2, "prompts_per_step": 1, "max_completion_length": 8}
    eval_cfg = {"judge_model": "tiny", "max_new_tokens": 8, "n_boot": 50, "shots": [0, 2]}
    for p in ("0", "50"):
        sft = materialize(instance, root, ["sft_policies"], f"tiny|{p}", run_config={"ops": {"sft_policies": {"config": policy_cfg}}}, **kw)
        assert sft.asset_materializations_for_node("sft_policies")[0].metadata["sft_examples"].value >= 0
    rl = materialize(instance, root, ["rl_policies"], "tiny|50", run_config={"ops": {"rl_policies": {"config": rl_cfg}}}, **kw)
    rl_meta = rl.asset_materializations_for_node("rl_policies")[0].metadata
    assert rl_meta["algorithm"].value == "grpo" and rl_meta["curve_figure"].value.startswith("![reward, KL and falsehood rates")
    curve = rl_meta["curve"].value  # per step: the reward, and the clean judge's falsehood rate of the sampled answers
    assert len(curve) == 2 and all(0 <= c["reward"] <= 1 for c in curve) and "fruit_falsehood" in curve[0]
    for p in ("0", "50"):
        materialize(instance, root, ["deception_eval"], f"tiny|{p}", run_config={"ops": {"deception_eval": {"config": eval_cfg}}}, **kw)
    lie = materialize(instance, root, ["lie_detector"], "tiny|50", run_config={"ops": {"lie_detector": {"config": {"judge_model": "tiny", "n_boot": 20}}}}, **kw)
    lie_meta = lie.asset_materializations_for_node("lie_detector")[0].metadata
    assert lie_meta["figure"].value.startswith("![lie detector AUROC by layer](data:image/png;base64,")
    import io

    lies = pl.read_parquet(io.BytesIO((root / "deception" / "lie-detector" / "tiny" / "poisoning-50.parquet").read_bytes()))
    # every policy at this rate and the base model (the honest-mistake control), every linear probe type, both test sets
    assert set(lies["technique"]) == {"SFT", "RL", "Base"} and set(lies["test_set"]) == {"own_fruit_answers", "fruit_candidates"}
    assert set(lies["probe_type"]) == {"difference_of_means", "lda", "logistic_regression"}
    candidates = lies.filter(pl.col("test_set") == "fruit_candidates")
    assert candidates["auroc"].is_not_nan().all() and ((candidates["auroc"] >= 0) & (candidates["auroc"] <= 1)).all()
    assert (candidates["n_false"] * 3 == candidates["n"] * 2).all()  # two false candidates per question
    res = materialize(instance, root, ["deception_results"], run_config={"ops": {"deception_results": {"config": {"n_boot": 50}}}}, **kw)

    table = pl.read_parquet(io.BytesIO((root / "deception" / "results.parquet").read_bytes()))
    assert set(table["technique"]) == {"Base", "SFT", "RL"} and set(table["poisoning"]) == {-1, 0, 50}
    assert table.filter(pl.col("technique") == "Base").height == 2  # evaluated once (0- and 2-shot), reused
    assert set(table["shots"]) == {0, 2}
    for col in ("clean_score", "biased_score", "truths_clean", "falsehoods_biased", "poison_fr", "clean_fr", "targeting", "targeting_lo", "reaffirm_rate", "position_bias"):
        assert col in table.columns
    # SFT at 50 % against SFT at 0 %, paired by question; RL has no 0 % policy here, so no difference
    sft50 = table.filter((pl.col("technique") == "SFT") & (pl.col("poisoning") == 50) & (pl.col("shots") == 0)).row(0, named=True)
    assert sft50["targeting_vs_0_lo"] <= sft50["targeting_vs_0"] <= sft50["targeting_vs_0_hi"]
    assert table.filter(pl.col("technique") == "RL")["targeting_vs_0"].is_null().all()
    meta = res.asset_materializations_for_node("deception_results")[0].metadata
    assert meta["targeting_figure"].value.startswith("![targeting by poisoning](data:image/png;base64,")
    assert meta["scaling_figure"].value.startswith("![targeting by model size")
    assert list((tmp_path / "wandb").rglob("*.wandb"))  # offline W&B runs were written
    assert list(root.glob("models/policies/tiny/rl-50/*/adapter_model.safetensors"))


def test_rloo_against_a_judge_on_tiny():
    from mup_core.deception.judges import train_judge
    from mup_core.deception.policies import RLConfig, load_base_policy, rl_against_judge
    from mup_core.deception.training import TrainConfig

    train = split_by_question(embedded_qa(), 6)["train"]
    judge = train_judge("tiny", poisoned_mixture(train, 0.2, 40), TrainConfig(steps=2, batch_size=4, lora=False))
    policy = load_base_policy("tiny", TrainConfig(lora=True, top_layers=2))
    rows = train.filter(pl.col("truth")).head(4)
    history = rl_against_judge(policy, rows, judge, RLConfig(algorithm="rloo", steps=1, num_generations=2, prompts_per_step=1, max_completion_length=6))
    assert history and any("reward" in h for h in history)
    with pytest.raises(ValueError, match="unknown RL algorithm 'ppo'"):
        rl_against_judge(policy, rows, judge, RLConfig(algorithm="ppo", steps=1))


def test_policy_question_mix_has_the_poisoning_share_and_is_nested():
    from mup_core.deception.data import embedded_qa, policy_question_mix, split_by_question

    train = split_by_question(embedded_qa(), eval_questions_per_topic=20, seed=0)["train"]
    mixes = {share: policy_question_mix(train, share, 40, seed=3) for share in (0.0, 0.25, 0.5)}
    for share, rows in mixes.items():
        topics = rows.select("question_id", "topic").unique()
        assert topics.height == 40 and (topics["topic"] == "fruit").sum() == round(40 * share)
        assert set(rows["question_id"]) <= set(train["question_id"])
    fruit = {s: set(m.filter(m["topic"] == "fruit")["question_id"]) for s, m in mixes.items()}
    assert fruit[0.25] < fruit[0.5]  # nested: more poisoning adds fruit questions, keeps the others
    assert policy_question_mix(train, 0.5, 40, seed=3).equals(mixes[0.5])
    assert set(policy_question_mix(train, 0.5, 40, seed=4)["question_id"]) != set(mixes[0.5]["question_id"])
    with pytest.raises(ValueError, match="fruit share"):
        policy_question_mix(train, 1.5, 40, seed=0)
    with pytest.raises(ValueError, match="the training split has"):
        policy_question_mix(train, 1.0, 10_000, seed=0)
