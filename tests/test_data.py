import json

import polars as pl
import pytest

from conftest import write_jsonl
from mup_core.data import Dataset, DatasetError, load_dataset, render, save_jsonl, split_dataset

DIALOGUE = [{"role": "system", "content": "You are a helpful bank assistant."}, {"role": "user", "content": "Move my savings?"}]


def _good_lines():
    return [
        json.dumps({"inputs": "Is this mole cancer?", "ids": "a", "labels": "high-stakes", "topic": "health", "situations": {"x": 1}}),
        json.dumps({"inputs": json.dumps(DIALOGUE), "ids": "b", "labels": "low-stakes", "topic": "bank", "scale_labels": 2}),
        json.dumps({"inputs": DIALOGUE, "ids": "c", "labels": "ambiguous", "pair_id": "p1"}),
    ]


def test_jsonl_loader_decodes_dialogues_and_keeps_every_field(tmp_path):
    ds = load_dataset(write_jsonl(tmp_path / "d.jsonl", _good_lines()))
    assert ds.ids == ["a", "b", "c"]
    assert ds.input_at(0) == "Is this mole cancer?"
    assert ds.input_at(1) == DIALOGUE and ds.input_at(2) == DIALOGUE  # JSON-encoded string and list
    assert {"topic", "situations", "scale_labels", "pair_id"} <= set(ds.df.columns)
    assert json.loads(ds.df["situations"][0]) == {"x": 1}
    assert ds.label_counts() == {"high-stakes": 1, "low-stakes": 1, "ambiguous": 1}


def test_round_trip_jsonl_and_parquet(tmp_path):
    ds = load_dataset(write_jsonl(tmp_path / "d.jsonl", _good_lines()))
    save_jsonl(ds, tmp_path / "out.jsonl")
    again = load_dataset(tmp_path / "out.jsonl")
    assert again.inputs == ds.inputs and again.labels == ds.labels
    assert again.inputs_hash == ds.inputs_hash
    from mup_core.storage import LocalStore

    LocalStore(tmp_path / "store").put_table("d.parquet", ds.df)
    assert LocalStore(tmp_path / "store").get_table("d.parquet").equals(ds.df)


def test_csv_loader(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('ids,inputs,labels,scale_labels\n1,"hello, there",low-stakes,2\n2,call 911,high-stakes,9\n')
    ds = load_dataset(path)
    assert ds.ids == ["1", "2"] and ds.df["scale_labels"].to_list() == [2.0, 9.0]


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ('{"inputs": "x", "ids": "z", "labels": "high-stakes"', r"bad\.jsonl:2: malformed JSON"),
        ('{"ids": "z", "labels": "high-stakes"}', r"bad\.jsonl:2: field 'inputs' is missing"),
        ('{"inputs": "x", "ids": "z", "labels": "very-high"}', r"bad\.jsonl:2: field 'labels' has unknown value 'very-high'"),
        ('{"inputs": "x", "ids": "a", "labels": "low-stakes"}', r"bad\.jsonl: duplicate id 'a' at line 1 and line 2"),
        ('{"inputs": [{"text": "x"}], "ids": "z", "labels": "low-stakes"}', r"bad\.jsonl:2: field 'inputs' is a list but not a dialogue"),
    ],
)
def test_bad_input_errors_name_file_line_and_field(tmp_path, bad_line, message):
    first = json.dumps({"inputs": "ok", "ids": "a", "labels": "low-stakes"})
    path = write_jsonl(tmp_path / "bad.jsonl", [first, bad_line])
    with pytest.raises(DatasetError, match=message):
        load_dataset(path)


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DatasetError, match="empty.jsonl: the dataset is empty"):
        load_dataset(empty)
    with pytest.raises(DatasetError, match="nope.jsonl: file not found"):
        load_dataset(tmp_path / "nope.jsonl")
    with pytest.raises(DatasetError, match="unsupported file type '.txt'"):
        (tmp_path / "x.txt").write_text("x")
        load_dataset(tmp_path / "x.txt")


def test_dataset_frame_validation():
    with pytest.raises(DatasetError, match="duplicate id 'a' on rows 1, 2"):
        Dataset(pl.DataFrame({"ids": ["a", "a"], "inputs": ["x", "y"], "labels": ["high-stakes", "low-stakes"]}))
    with pytest.raises(DatasetError, match="empty"):
        Dataset(pl.DataFrame({"ids": [], "inputs": []}, schema={"ids": pl.Utf8, "inputs": pl.Utf8}))


def test_hashes_separate_inputs_from_labels():
    a = Dataset.from_records([{"ids": "1", "inputs": "x", "labels": "high-stakes"}, {"ids": "2", "inputs": "y", "labels": "low-stakes"}])
    relabelled = Dataset(a.df.with_columns(pl.Series("labels", ["low-stakes", "low-stakes"])))
    edited = Dataset(a.df.with_columns(pl.Series("inputs", ["x!", "y"])))
    assert relabelled.inputs_hash == a.inputs_hash and relabelled.labels_hash != a.labels_hash
    assert edited.inputs_hash != a.inputs_hash and edited.labels_hash == a.labels_hash


def test_label_array_refuses_ambiguous():
    ds = Dataset.from_records([{"ids": "1", "inputs": "x", "labels": "ambiguous"}, {"ids": "2", "inputs": "y", "labels": "high-stakes"}])
    with pytest.raises(DatasetError, match="ambiguous"):
        ds.label_array()
    assert ds.unambiguous().label_array().tolist() == [1]


def _paired(n):
    return Dataset.from_records(
        [{"ids": f"{i}-{s}", "inputs": f"text {i} {s}", "labels": lab, "pair_id": f"p{i}"}
         for i in range(n) for s, lab in (("h", "high-stakes"), ("l", "low-stakes"))]
    )


def test_splits_keep_pairs_together_and_are_deterministic():
    ds = _paired(200)
    a = split_dataset(ds, seed=3)
    b = split_dataset(ds, seed=3)
    c = split_dataset(ds, seed=4)
    assert {k: v.ids for k, v in a.items()} == {k: v.ids for k, v in b.items()}
    assert a["train"].ids != c["train"].ids
    pairs = {name: set(part.df["pair_id"]) for name, part in a.items()}
    assert not (pairs["train"] & pairs["test"]) and not (pairs["train"] & pairs["val"]) and not (pairs["val"] & pairs["test"])
    assert sum(len(p) for p in a.values()) == len(ds)
    assert 0.6 < len(a["train"]) / len(ds) < 0.8
    for part in a.values():  # minimal pairs keep every split balanced
        counts = part.label_counts()
        assert counts["high-stakes"] == counts["low-stakes"]


def test_splits_are_stable_when_rows_are_added():
    small, big = split_dataset(_paired(100), seed=0), split_dataset(_paired(150), seed=0)
    assert set(small["test"].ids) <= set(big["test"].ids)


def test_bad_split_fractions():
    with pytest.raises(DatasetError, match="sum to 1"):
        split_dataset(_paired(5), {"train": 0.5, "test": 0.2})


def test_chat_rendering_uses_model_template(tiny):
    text = render("Is this safe?", tiny.tokenizer)
    assert "<|im_start|>user\nIs this safe?<|im_end|>" in text
    dialogue = render(DIALOGUE, tiny.tokenizer)
    assert dialogue.startswith("<|im_start|>system\nYou are a helpful bank assistant.<|im_end|>")
    assert "You are a helpful AI assistant" not in dialogue  # our system prompt replaces the default


@pytest.mark.integration
@pytest.mark.parametrize(
    "relpath, rows",
    [
        ("mup/train/synthetic_prompts_gpt4o.jsonl", 1319),
        ("mup/dev/anthropic_dev_balanced.jsonl", 1004),
        ("mup/dev/mt_dev_balanced.jsonl", 192),
        ("mup/dev/mts_dev_balanced.jsonl", 364),
        ("mup/dev/toolace_dev_balanced.jsonl", 236),
    ],
)
def test_reference_files_load_with_all_fields(shared_data, relpath, rows):
    path = shared_data / relpath
    ds = load_dataset(path)
    assert len(ds) == rows
    with open(path, encoding="utf-8") as fh:
        first = json.loads(fh.readline())
    assert set(first) <= set(ds.df.columns)  # every source field preserved
    assert set(ds.labels) <= {"high-stakes", "low-stakes"}
    assert ds.df["scale_labels"].min() >= 1 and ds.df["scale_labels"].max() <= 10
    if "pair_id" in ds.df.columns:
        parts = split_dataset(ds)
        assert not set(parts["train"].df["pair_id"]) & set(parts["test"].df["pair_id"])
