import re
from collections import Counter

from mup_core.corpus import load_embedded_corpus, parse_pairs
from mup_core.data import DatasetError


def test_corpus_size_domains_languages_and_formats():
    ds = load_embedded_corpus()
    df = ds.df
    assert df.height >= 600 and df["pair_id"].n_unique() >= 300
    assert df["domain"].n_unique() >= 8
    assert (df["language"] != "en").mean() >= 0.10
    dialogues = [ds.input_at(i) for i in range(len(ds)) if df["format"][i] == "dialogue"]
    assert any(m[0]["role"] == "system" for m in dialogues)
    assert any(sum(1 for x in m if x["role"] == "user") >= 2 for m in dialogues)
    lengths = [len(t) for t in df["inputs"]]
    assert min(lengths) < 100 and max(lengths) > 500


def test_every_pair_has_one_high_and_one_low():
    df = load_embedded_corpus().df
    counts = Counter(zip(df["pair_id"], df["labels"]))
    assert len(counts) == df.height  # no pair repeats a label
    for pair in set(df["pair_id"]):
        assert counts[(pair, "high-stakes")] == 1 and counts[(pair, "low-stakes")] == 1


def test_corpus_shares_no_sentence_with_reference_data(shared_data):
    def sentences(text):
        return {s.strip().lower() for s in re.split(r"[.!?\n]", text) if len(s.strip()) > 30}

    ours = set()
    for text in load_embedded_corpus().df["inputs"]:
        ours |= sentences(text)
    theirs = set()
    for path in (shared_data / "mup").rglob("*.jsonl"):
        theirs |= sentences(path.read_text(encoding="utf-8"))
    assert not (ours & theirs)


def test_parser_errors_name_file_and_line():
    import pytest

    with pytest.raises(DatasetError, match=r"x\.txt:4: expected 'H:'"):
        parse_pairs("H: a\nL: b\n\nnonsense\n", "x", "x.txt")
    with pytest.raises(DatasetError, match=r"x\.txt:1: the pair has no L side"):
        parse_pairs("H: only high\n", "x", "x.txt")
