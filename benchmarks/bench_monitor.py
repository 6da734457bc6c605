"""`make bench`: what live probe scoring adds to the time per generated token.

For each probe type, a probe is trained on the embedded corpus's activations of one
layer (a few epochs: speed, not quality, is measured), and ``mup monitor``'s engine
(``LiveMonitor.stream``) generates ``--tokens`` tokens for each of a few conversations.
The baseline is the same greedy generation with the same KV cache and no monitor (no
hook, no probe), run again after each probe type (a 2-core machine's speed drifts by
several per cent over a minute). Reported per type: ms per generated token with the monitor, its
difference to the baseline, the probe's own time per token (measured inside the stream)
and its share of the token's time; the target is under 10 % (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from mup_core.activations import extract_activations
from mup_core.corpus import load_embedded_corpus
from mup_core.models import get_spec, load_model
from mup_core.monitor import MonitorBundle
from mup_core.monitor.live import LiveMonitor
from mup_core.probe_types import ALL_PROBE_TYPES
from mup_core.probes import train_probe

PROMPTS = [
    "My landlord says I have 24 hours to leave or he throws my things out. What can I do?",
    "Can you suggest a name for my new goldfish?",
    "I think I took a double dose of my blood pressure pills. Should I worry?",
]


def baseline_ms_per_token(lm, monitor: LiveMonitor, tokens: int) -> float:
    times = []
    for prompt in PROMPTS:
        ids, _ = monitor.prompt_ids([{"role": "user", "content": prompt}])
        with torch.inference_mode():
            out = lm.model(input_ids=torch.tensor([ids]), use_cache=True)
            past, nxt = out.past_key_values, int(torch.argmax(out.logits[0, -1]))
            for _ in range(tokens):
                t0 = time.perf_counter()
                out = lm.model(input_ids=torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
                past, nxt = out.past_key_values, int(torch.argmax(out.logits[0, -1]))
                times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def monitor_ms_per_token(monitor: LiveMonitor, tokens: int) -> tuple[float, float]:
    totals, probes = [], []
    for prompt in PROMPTS:
        for ev in monitor.stream([{"role": "user", "content": prompt}], max_tokens=tokens):
            if ev["type"] == "token":
                totals.append(ev["forward_seconds"] + ev["probe_seconds"])
                probes.append(ev["probe_seconds"])
    return 1000 * statistics.median(totals), 1000 * statistics.median(probes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--types", nargs="*", default=list(ALL_PROBE_TYPES))
    args = parser.parse_args()

    spec = get_spec(args.model)
    lm = load_model(args.model)
    layer = spec.default_layers[len(spec.default_layers) // 2]
    print(f"model {args.model} on {lm.precision.device} in {lm.precision.dtype_name} ({lm.precision.reason}); "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads; layer {layer}")
    corpus = load_embedded_corpus().unambiguous()
    take = list(range(0, len(corpus), max(1, len(corpus) // 64)))[:64]
    ds = corpus.take(take)
    acts = extract_activations(lm, ds.inputs, [layer], progress=False).layer(layer)
    y = ds.label_array()
    dummy = MonitorBundle(model=args.model, layer=layer, probe_type="", threshold=0.5, target_fpr=0.01,
                          selection_sets=["bench"], out_of_distribution=False, selection_auroc=0.0, realised_fpr=0.0,
                          tpr_at_threshold=0.0, uncertain_band=(0.5, 0.5), probe_source="bench")
    base = baseline_ms_per_token(lm, LiveMonitor(lm, dummy, None), args.tokens)
    print(f"\ngeneration without a monitor: {base:.2f} ms/token (median over {len(PROMPTS)} x {args.tokens} tokens)\n")
    print(f"{'probe type':<22}{'with monitor':>14}{'vs without':>12}{'probe alone':>13}{'probe share':>13}")
    rows = []
    for probe_type in args.types:
        hp = {} if probe_type in ("logistic_regression", "difference_of_means", "lda") else {"max_epochs": 2}
        probe = train_probe(probe_type, (acts, y), None, model=args.model, layer=layer, hyperparameters=hp)
        dummy.probe_type = probe_type
        total, probe_ms = monitor_ms_per_token(LiveMonitor(lm, dummy, probe), args.tokens)
        base = baseline_ms_per_token(lm, LiveMonitor(lm, dummy, None), args.tokens)  # interleaved: the machine drifts
        share = probe_ms / base
        rows.append(share)
        print(f"{probe_type:<22}{total:>11.2f} ms{100 * (total - base) / base:>10.1f} %{probe_ms:>10.3f} ms{100 * share:>11.2f} %")
    print(f"\nprobe scoring per generated token: at most {100 * max(rows):.2f} % of the token's time (target < 10 %), "
          f"median {100 * float(np.median(rows)):.2f} %. 'vs without' compares the median with the monitor to that "
          "of a plain generation run right after it; the probe's own time is measured inside the stream.")


if __name__ == "__main__":
    main()
