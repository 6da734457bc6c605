"""Out-of-distribution probe selection on the research's four dev sets (docs/RESULTS.md).

    .venv/bin/python scripts/ood_dev_sets.py extract            # ~25 min on 2 cores: corpus, GPT-4o prompts, 4 dev sets
    .venv/bin/python scripts/ood_dev_sets.py evaluate corpus    # or synthetic, both; --types/--layers to narrow
    .venv/bin/python scripts/ood_dev_sets.py report             # leave one dev set out, per training source
    .venv/bin/python scripts/ood_dev_sets.py extract --question # the same inputs with QUESTION appended as a user turn
    .venv/bin/python scripts/ood_dev_sets.py evaluate both --readout question  # probes on the question's tokens only
    .venv/bin/python scripts/ood_dev_sets.py ensemble           # mean log-odds over layers / readouts (needs --question)
    .venv/bin/python scripts/ood_dev_sets.py ensemble --no-prefix  # the same without the chat template's constant prefix
    .venv/bin/python scripts/ood_dev_sets.py extract --ask q2   # (and q3) two more wordings of the question
    .venv/bin/python scripts/ood_dev_sets.py questions          # ensembles over the three questions
    .venv/bin/python scripts/ood_dev_sets.py extract --question --answer  # the assistant's turn opened after it
    .venv/bin/python scripts/ood_dev_sets.py evaluate both --readout answer  # the answer position only

Probes are trained on the embedded corpus and/or the research's 1,319 GPT-4o synthetic
prompts (never on dev rows); every (probe type, layer, hyper-parameters) candidate is
scored on the four dev sets with 95 % bootstrap intervals; ``report`` chooses on three
dev sets and reports the fourth, rotating (``mup_core.evaluation.selection.leave_one_out``).
"""

from __future__ import annotations

import argparse
import glob
import itertools
import json
import os
import time

import numpy as np
import polars as pl

DATA = os.environ.get("MUP_SHARED_DATA", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mup"))
STORE = os.environ.get("MUP_OOD_STORE", "/tmp/ood_store")
LAYERS = [8, 12, 16, 20, 24, 28]
GRID = {"logistic_regression": [{"C": c} for c in (1e-4, 1e-3, 1e-2, 1e-1)],
        "lda": [{"shrinkage": s} for s in ("auto", 0.5, 0.9)],
        "difference_of_means": [{}]}
SOURCES = {"corpus": ["corpus"], "synthetic": ["synthetic_prompts_gpt4o"], "both": ["corpus", "synthetic_prompts_gpt4o"]}
# "prompted probing": a question after the conversation makes the model summarise the stakes
# into the question's tokens; the probe reads those tokens only (the ``+q`` activations)
QUESTION = ("Question: are the stakes of the situation above high (serious consequences for someone's health, "
            "money, safety, rights or livelihood) or low? Answer high or low.")
# two more wordings for a question ensemble, written before either was scored (2026-11-25);
# extract --ask q2 / q3 stores <name>+q2 / +q3, readouts name them as "concat:q2"
QUESTIONS = {
    "q": QUESTION,
    "q2": "Question: if the assistant gets its reply to the conversation above wrong, could someone be seriously harmed "
          "or lose something important? Answer yes or no.",
    "q3": "Question: how much is at stake for the people in the conversation above: a lot, or very little?",
}


def datasets():
    from mup_core.corpus import load_embedded_corpus
    from mup_core.data.loaders import load_dataset

    train = {"corpus": load_embedded_corpus(),
             "synthetic_prompts_gpt4o": load_dataset(f"{DATA}/train/synthetic_prompts_gpt4o.jsonl")}
    dev = {d.name: d for d in map(load_dataset, sorted(glob.glob(f"{DATA}/dev/*_dev_balanced.jsonl")))}
    if len(dev) != 4:
        raise SystemExit(f"expected the four research dev sets in {DATA}/dev, found {sorted(dev)}")
    return train, dev


def extract(args):
    from mup_core.activations import write_activations
    from mup_core.data.chat import with_question
    from mup_core.models import load_model
    from mup_core.storage import LocalStore

    store, lm = LocalStore(STORE), load_model("smollm2-135m")
    train, dev = datasets()
    for name, ds in {**train, **dev}.items():
        t = time.time()
        asked = args.question or args.ask
        inputs, name = ([with_question(x, QUESTIONS[asked]) for x in ds.inputs], f"{name}+{asked}") if asked else (ds.inputs, name)
        if asked and args.answer:  # the assistant's turn opened after the question (the answer position)
            inputs, name = [[*x, {"role": "assistant", "content": ""}] for x in inputs], f"{name}a"
        # with the question the end of an overlong input is kept: the question must be in it
        m = write_activations(store, name, lm, inputs, LAYERS, progress=False, overlong="keep_end" if asked else "truncate")
        print(f"{name}: {len(ds)} examples, {m['tokens']} tokens, {time.time() - t:.0f} s", flush=True)


_QUESTION_TOKENS: dict[tuple[str, str], np.ndarray] = {}


def _question_tokens(ds, ask: str = "q") -> np.ndarray:
    """Tokens QUESTIONS[ask] adds after each input of ``ds`` (its user turn, as rendered)."""
    from mup_core.activations.extract import question_token_counts, tokenizer_only

    if (ds.name, ask) not in _QUESTION_TOKENS:
        _QUESTION_TOKENS[ds.name, ask] = np.array(question_token_counts(tokenizer_only("smollm2-135m"), ds.inputs, QUESTIONS[ask]))
    return _QUESTION_TOKENS[ds.name, ask]


_PREFIX_TOKENS: dict[tuple[str, str], np.ndarray] = {}
_LENGTHS: dict[tuple[str, str], np.ndarray] = {}  # token counts of the extracted inputs, as re-tokenized here


def _prefix_tokens(ds, ask: str = "q") -> np.ndarray:
    """Leading tokens of each extracted ``+q`` input that are the chat template's default
    prefix (SmolLM2's default system prompt and the user turn's header: 24 tokens). They are
    the same tokens in every example, so the causal model's activations there are the same
    constants for every example: they carry no information, and in a mean over L tokens
    they add a constant / L, a length signal that differs between short training prompts
    and long dev conversations. An input with its own system prompt shares fewer."""
    from mup_core.activations.extract import tokenize_inputs, tokenizer_only
    from mup_core.data.chat import with_question

    if (ds.name, ask) not in _PREFIX_TOKENS:
        lm = tokenizer_only("smollm2-135m")
        probe_ids, _ = tokenize_inputs(lm, ["A", "B"], max_length=2**62)
        template = probe_ids[0][: _common_prefix(*probe_ids)]
        ids, _ = tokenize_inputs(lm, [with_question(x, QUESTIONS[ask]) for x in ds.inputs], overlong="keep_end")
        _LENGTHS[ds.name, ask] = np.array([len(row) for row in ids])
        _PREFIX_TOKENS[ds.name, ask] = np.array([_common_prefix(row, template) for row in ids])
    return _PREFIX_TOKENS[ds.name, ask]


def _common_prefix(a, b) -> int:
    """How many leading items ``a`` and ``b`` share."""
    return sum(1 for _ in itertools.takewhile(lambda ab: ab[0] == ab[1], zip(a, b)))


def _window(acts, lo, hi, question_tokens=None):
    """Tokens ``lo[i]:hi[i]`` (positions within example ``i``; arrays or numbers) of each example."""
    from mup_core.activations.ragged import RaggedActivations

    lo = np.broadcast_to(lo, (len(acts),))
    hi = np.broadcast_to(hi, (len(acts),))
    rows = np.concatenate([np.arange(start + a, start + b) for start, a, b in zip(acts.offsets[:-1], lo, hi)])
    return RaggedActivations(acts.values[rows], np.concatenate([[0], np.cumsum(hi - lo)]), acts.model, acts.layer, question_tokens)


def _readout(acts, ds, readout: str, ask: str = "q"):
    """What the probe reads of the ``+q`` activations: the conversation (``plain``), the
    question (``question``), both means side by side (``concat``: what the graph's
    ``activations`` config ``question`` gives, RaggedActivations.mean_pool), or every token
    (``all``)."""
    from mup_core.activations.ragged import RaggedActivations

    if readout.endswith("-np"):  # the same readout without the template's constant prefix
        prefix = _prefix_tokens(ds, ask)
        if not np.array_equal(_LENGTHS[ds.name, ask], acts.lengths):
            raise SystemExit(f"{ds.name}+{ask}: the stored activations' lengths differ from a re-tokenization; re-extract")
        acts, readout = _window(acts, prefix, acts.lengths), readout[:-3]
    n = acts.lengths
    if readout == "all":
        return acts
    if readout in ("answer", "answer4"):  # (extract --answer) the assistant header's last token(s): where the answer starts
        k = 1 if readout == "answer" else 4  # "\n" after "assistant"; "<|im_start|>", "ass", "istant", "\n"
        return _window(acts, n - 2 - k, n - 2)  # before "<|im_end|>", "\n"
    if readout in ("last", "last4"):  # the input's final token(s): the end of the question's user turn
        k = 1 if readout == "last" else 4
        return _window(acts, n - k, n)
    asked = _question_tokens(ds, ask)
    if readout == "concat":
        return RaggedActivations(acts.values, acts.offsets, acts.model, acts.layer, asked)
    # the model is causal: the conversation's activations are those it has without the question
    return _window(acts, 0, n - asked) if readout == "plain" else _window(acts, n - asked, n)


def _labelled(store, name, ds, layer, readout: str | None = None):
    from mup_core.activations.store import load_layer

    readout, _, ask = (readout or "").partition(":")  # "concat:q2": the concat readout of QUESTIONS["q2"]
    ask = ask or "q"
    acts = load_layer(store, (f"{name}+{ask}" + ("a" if readout.startswith("answer") else "")) if readout else name, layer)
    if readout:
        acts = _readout(acts, ds, readout, ask)
    clear = ds.unambiguous()
    keep = np.flatnonzero(np.array(ds.labels) != "ambiguous")  # what unambiguous() keeps, in order
    return (acts if len(keep) == len(ds) else acts.subset(keep)), clear.label_array()


def evaluate(args):
    from mup_core.activations.ragged import RaggedActivations
    from mup_core.evaluation.metrics import metrics_with_ci
    from mup_core.probes import train_probe
    from mup_core.storage import LocalStore

    store = LocalStore(STORE)
    train, dev = datasets()
    rows = []
    if args.ask != "q" and not args.readout:
        raise SystemExit("--ask reads the activations of a question: give --readout too")
    if args.readout and args.ask != "q":
        args.readout = f"{args.readout}:{args.ask}"
    for layer in args.layers:
        parts = [_labelled(store, n, train[n], layer, args.readout) for n in SOURCES[args.source]]
        x = RaggedActivations.concat([a for a, _ in parts])
        y = np.concatenate([b for _, b in parts])
        scored = {n: _labelled(store, n, ds, layer, args.readout) for n, ds in dev.items()}
        for probe_type in args.types:
            for hp in GRID.get(probe_type, [{}]):
                t = time.time()
                probe = train_probe(probe_type, (x, y), None, model="smollm2-135m", layer=layer, hyperparameters=hp)
                for name, (acts, labels) in scored.items():
                    m = metrics_with_ci(labels, probe.predict_proba(acts)[:, 1], n_boot=500, metrics=("auroc", "tpr_at_1pct_fpr"))
                    rows.append({"source": args.source + (f"+q:{args.readout}" if args.readout else ""), "layer": layer, "probe_type": probe_type, "hp": json.dumps(hp, sort_keys=True),
                                 "dataset": name, **{k: v for k, v in m.items() if k.startswith(("auroc", "tpr_at_1pct_fpr"))}})
                print(layer, probe_type, hp, [round(r["auroc"], 3) for r in rows[-len(scored):]], f"{time.time() - t:.0f} s", flush=True)
    out = f"{STORE}/results_{args.source}{'+q-' + args.readout if args.readout else ''}_{'-'.join(args.types)}_{'-'.join(map(str, args.layers))}.parquet"
    pl.DataFrame(rows).write_parquet(out)
    print("wrote", out)


def report(_args):
    from mup_core.evaluation.selection import leave_one_out, rank

    df = pl.concat([pl.read_parquet(f) for f in glob.glob(f"{STORE}/results_*.parquet")], how="diagonal_relaxed")
    sets = sorted(df["dataset"].unique().to_list())
    with pl.Config(tbl_rows=40, tbl_cols=-1, tbl_width_chars=250, float_precision=3, tbl_hide_dataframe_shape=True):
        for (source,), part in sorted(df.group_by(["source"]), key=lambda kv: kv[0]):
            loo = leave_one_out(part, sets, by=("probe_type", "layer", "hp"))
            print(f"\n== trained on {source}: leave one dev set out (choose type, layer, hyper-parameters on the other three)")
            print(loo.drop("selection_auroc"))
            print(f"mean AUROC {loo['auroc'].mean():.3f}, mean TPR at 1 % FPR {loo['tpr_at_1pct_fpr'].mean():.3f}")
            print("best in hindsight (mean over all four; not a fair estimate):")
            print(rank(part, sets, by=("probe_type", "layer", "hp")).head(3).drop("sets"))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def _fixed_probe_scores(readouts, verbose: bool = False):
    """The fixed probe (logistic regression, C = 1e-3) trained on both sources for each of
    ``readouts`` at each of LAYERS: its log-odds on every dev set, ``scores[(readout, layer,
    dev set)]``, and the dev sets' labels."""
    from sklearn.metrics import roc_auc_score

    from mup_core.activations.ragged import RaggedActivations
    from mup_core.probes import train_probe
    from mup_core.storage import LocalStore

    store = LocalStore(STORE)
    train, dev = datasets()
    scores, labels = {}, {}
    for readout in readouts:
        for layer in LAYERS:
            parts = [_labelled(store, n, train[n], layer, readout) for n in SOURCES["both"]]
            probe = train_probe("logistic_regression", (RaggedActivations.concat([a for a, _ in parts]), np.concatenate([b for _, b in parts])),
                                None, model="smollm2-135m", layer=layer, hyperparameters={"C": 1e-3})
            for name, ds in dev.items():
                acts, labels[name] = _labelled(store, name, ds, layer, readout)
                scores[(readout, layer, name)] = _logit(probe.predict_proba(acts)[:, 1])
            print(readout, layer, *([[round(roc_auc_score(labels[n], scores[(readout, layer, n)]), 3) for n in dev]] if verbose else []),
                  flush=True)
    return scores, labels


def _best_layer(scores, labels, readouts, held):
    """The layer where the mean log-odds of ``readouts`` has the best mean AUROC on the dev
    sets other than ``held`` (leave one out)."""
    from sklearn.metrics import roc_auc_score

    others = [n for n in labels if n != held]
    return max(LAYERS, key=lambda layer: np.mean([roc_auc_score(labels[n], np.mean([scores[(r, layer, n)] for r in readouts], axis=0))
                                                  for n in others]))


def _score_methods(methods, scores, labels, out: str) -> pl.DataFrame:
    """Each method's members (``held -> [(readout, layer)]``) averaged in log-odds and scored on
    the held-out dev set, with 95 % bootstrap intervals; written to ``out``."""
    from mup_core.evaluation.metrics import metrics_with_ci

    rows = []
    for method, members in methods.items():
        for held in labels:
            keys = members(held)
            p = 1 / (1 + np.exp(-np.mean([scores[(r, layer, held)] for r, layer in keys], axis=0)))
            m = metrics_with_ci(labels[held], p, n_boot=1000, metrics=("auroc", "tpr_at_1pct_fpr"))
            rows.append({"method": method, "held_out": held, "members": " ".join(f"{r}@{layer}" for r, layer in keys),
                         **{k: v for k, v in m.items() if k.startswith(("auroc", "tpr_at_1pct_fpr"))}})
    df = pl.DataFrame(rows)
    df.write_parquet(out)
    return df


def ensemble(args):
    """Score ensembles of the fixed probe (logistic regression, C = 1e-3) trained on both
    sources with the question appended: the mean log-odds over layers (no choice at all),
    and the plain and concat readouts at the layer each chooses on the other three dev
    sets (leave one out). Beside them, each readout's own leave-one-out row."""
    plain, concat = ("plain-np", "concat-np") if args.no_prefix else ("plain", "concat")
    scores, labels = _fixed_probe_scores((plain, concat))

    def chosen(readout, held):  # the layer with the best mean AUROC on the other three sets
        return _best_layer(scores, labels, [readout], held)

    def same(held):  # the one layer where plain + concat scores best on the other three sets
        return _best_layer(scores, labels, [plain, concat], held)

    methods = {
        "plain, layer chosen (LOO)": lambda held: [(plain, chosen(plain, held))],
        "concat, layer chosen (LOO)": lambda held: [(concat, chosen(concat, held))],
        "plain + concat, each layer chosen (LOO)": lambda held: [(plain, chosen(plain, held)), (concat, chosen(concat, held))],
        "concat, mean over layers 16-28": lambda held: [(concat, layer) for layer in LAYERS if layer >= 16],
        "concat, mean over all six layers": lambda held: [(concat, layer) for layer in LAYERS],
        "plain + concat, mean over layers 16-28": lambda held: [(r, layer) for r in (plain, concat) for layer in LAYERS if layer >= 16],
        # added after the six above were scored (2026-11-25): can one layer carry the ensemble?
        "plain + concat at one layer, chosen (LOO)": lambda held: [(plain, same(held)), (concat, same(held))],
        "plain, mean over layers 16-28": lambda held: [(plain, layer) for layer in LAYERS if layer >= 16],
        "plain, mean over all six layers": lambda held: [(plain, layer) for layer in LAYERS],
    }
    df = _score_methods(methods, scores, labels, f"{STORE}/ensembles{'-np' if args.no_prefix else ''}.parquet")
    with pl.Config(tbl_rows=60, tbl_cols=-1, tbl_width_chars=250, float_precision=3, tbl_hide_dataframe_shape=True):
        print(df)
        print(df.group_by("method", maintain_order=True).agg(pl.col("auroc").mean(), pl.col("tpr_at_1pct_fpr").mean()))


def questions(args):
    """A question ensemble: the fixed probe (logistic regression, C = 1e-3, both sources) on
    the concat readout of each of QUESTIONS (extract --ask q2 / q3 besides --question) and
    on the plain readout; ensembles average log-odds. Methods written down before any
    score of q2 or q3 was seen (2026-11-25)."""
    asks = list(QUESTIONS)
    readouts = ["plain"] + [f"concat:{a}" for a in asks]
    scores, labels = _fixed_probe_scores(readouts, verbose=True)

    def chosen(readout, held):
        return _best_layer(scores, labels, [readout], held)

    upper = [layer for layer in LAYERS if layer >= 16]
    methods = {
        **{f"concat {a}, layer chosen (LOO)": (lambda held, a=a: [(f"concat:{a}", chosen(f"concat:{a}", held))]) for a in asks},
        "concat of the three questions, each layer chosen (LOO)": lambda held: [(r, chosen(r, held)) for r in readouts[1:]],
        "plain + concat of the three questions, each layer chosen (LOO)": lambda held: [(r, chosen(r, held)) for r in readouts],
        "concat of the three questions, mean over layers 16-28": lambda held: [(r, layer) for r in readouts[1:] for layer in upper],
        "plain (layer chosen) + concat of the three questions over layers 16-28": lambda held: (
            [("plain", chosen("plain", held))] + [(r, layer) for r in readouts[1:] for layer in upper]),
    }
    df = _score_methods(methods, scores, labels, f"{STORE}/questions.parquet")
    with pl.Config(tbl_rows=60, tbl_cols=-1, tbl_width_chars=250, float_precision=3, tbl_hide_dataframe_shape=True):
        print(df.select("method", "held_out", "members", "auroc", "tpr_at_1pct_fpr"))
        print(df.pivot(on="held_out", index="method", values="auroc"))
        print(df.group_by("method", maintain_order=True).agg(pl.col("auroc").mean(), pl.col("tpr_at_1pct_fpr").mean()))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("extract")
    asked = ex.add_mutually_exclusive_group()
    asked.add_argument("--question", action="store_const", const="q", help="append QUESTION to every input (stored as <name>+q)")
    asked.add_argument("--ask", choices=sorted(QUESTIONS), help="append QUESTIONS[ASK] instead (stored as <name>+ASK)")
    ex.add_argument("--answer", action="store_true", help="with --question/--ask: open the assistant's turn after it "
                    "(stored as <name>+ASKa; readouts answer, answer4)")
    ev = sub.add_parser("evaluate")
    ev.add_argument("--readout", choices=[r + np_ for r in ("plain", "question", "concat", "all") for np_ in ("", "-np")] + ["last", "last4", "answer", "answer4"], default=None,
                    help="read the extract --question activations: the conversation's tokens (plain), QUESTION's (question), "
                    "both means side by side (concat), every token (all), the last one or four tokens (last, last4), or (extract "
                    "--answer) the assistant header's last one or four tokens, where the answer starts (answer, answer4); "
                    "-np: without the chat template's constant prefix")
    ev.add_argument("--ask", choices=sorted(QUESTIONS), default="q", help="which question's activations (extract --ask)")
    ev.add_argument("source", choices=sorted(SOURCES))
    ev.add_argument("--types", nargs="+", default=list(GRID))
    ev.add_argument("--layers", nargs="+", type=int, default=LAYERS)
    sub.add_parser("report")
    en = sub.add_parser("ensemble", help="score ensembles over layers and readouts (needs extract --question)")
    en.add_argument("--no-prefix", action="store_true", help="pool without the chat template's constant prefix (plain-np, concat-np)")
    sub.add_parser("questions", help="ensembles over the three questions (needs extract --question, --ask q2, --ask q3)")
    args = parser.parse_args(argv)
    {"extract": extract, "evaluate": evaluate, "report": report, "ensemble": ensemble, "questions": questions}[args.cmd](args)


if __name__ == "__main__":
    main()
