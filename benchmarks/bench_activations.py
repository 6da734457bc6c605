"""`make bench`: activation extraction against a bare forward pass, on the same tokens.

Prints three figures (see docs/PERFORMANCE.md):
1. extraction throughput (tokens/s) vs a bare ``model(**batch)`` forward pass;
2. useful tokens / computed tokens (padding efficiency) of our length bucketing;
3. bytes stored vs a padded fp32 layout of the same layers.
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mup_core.activations import extract_activations, length_batches, save_activations, tokenize_inputs
from mup_core.activations.extract import pad_right
from mup_core.corpus import load_embedded_corpus
from mup_core.models import get_spec, load_model


def _bare_forward(lm, token_ids, batches):
    pad = lm.tokenizer.pad_token_id
    computed = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            ids, mask = pad_right([token_ids[i] for i in batch], pad)
            width = ids.shape[1]
            lm.model(input_ids=ids, attention_mask=mask)
            computed += len(batch) * width
    return time.perf_counter() - start, computed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch-tokens", type=int, default=4096)
    parser.add_argument("--naive-batch-size", type=int, default=16)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    spec = get_spec(args.model)
    layers = list(spec.default_layers)
    lm = load_model(args.model, device="cpu")
    ds = load_embedded_corpus()
    inputs = ds.inputs
    token_ids, _ = tokenize_inputs(lm, inputs)
    lengths = [len(t) for t in token_ids]
    useful = sum(lengths)
    bucketed = length_batches(lengths, args.batch_tokens)
    naive = [list(range(i, min(i + args.naive_batch_size, len(lengths)))) for i in range(0, len(lengths), args.naive_batch_size)]
    naive_computed = sum(len(b) * max(lengths[i] for i in b) for b in naive)

    print(f"model {args.model} ({lm.dtype}, {torch.get_num_threads()} threads), corpus {len(ds)} prompts, "
          f"{useful} tokens, layers {layers}")
    _bare_forward(lm, token_ids, bucketed[-3:])  # warm-up
    ours, bare, bare_naive = [], [], []
    for rep in range(args.reps):
        result = extract_activations(lm, inputs, layers, batch_tokens=args.batch_tokens, progress=False)
        ours.append(useful / result.stats["seconds"])
        seconds, _ = _bare_forward(lm, token_ids, bucketed)
        bare.append(useful / seconds)
        seconds, _ = _bare_forward(lm, token_ids, naive)
        bare_naive.append(useful / seconds)
        print(f"  rep {rep + 1}: extract {ours[-1]:.0f} tok/s, bare forward (same batches) {bare[-1]:.0f} tok/s, "
              f"bare forward (naive batches) {bare_naive[-1]:.0f} tok/s", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        save_activations(result, Path(tmp) / "acts", {"model": args.model})
        stored = sum(p.stat().st_size for p in (Path(tmp) / "acts").iterdir())
    padded_fp32 = len(lengths) * max(lengths) * spec.hidden_size * 4 * len(layers)
    padded_fp32_batches = naive_computed * spec.hidden_size * 4 * len(layers)

    med = statistics.median
    print("\nresults (median of reps)")
    print(f"1. extraction throughput     {med(ours):8.0f} tokens/s  vs bare model(**batch) {med(bare):.0f} tokens/s "
          f"on the same batches -> {med(ours) / med(bare):.2f}x  (naive fixed batches of {args.naive_batch_size}: "
          f"{med(bare_naive):.0f} tokens/s -> {med(ours) / med(bare_naive):.2f}x)")
    print(f"2. padding efficiency        {useful / result.stats['computed_tokens']:.3f} useful/computed tokens "
          f"({result.stats['batches']} batches; naive batches of {args.naive_batch_size}: {useful / naive_computed:.3f})")
    print(f"3. stored bytes              {stored / 1e6:.1f} MB ({str(result.layer(layers[0]).values.dtype)[6:]}, unpadded) vs "
          f"{padded_fp32 / 1e6:.1f} MB padded fp32 [n, max_len, hidden] -> {stored / padded_fp32:.3f}x "
          f"({stored / padded_fp32_batches:.3f}x of fp32 padded per naive batch)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
