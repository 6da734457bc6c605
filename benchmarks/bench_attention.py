"""`make bench`: mup's causal attention (``mup_core.models.attention``) against PyTorch's SDPA.

SmolLM2-135M's attention shape (9 query heads over 3 key-value heads, head size 64) at
batches of about 2,048 tokens, as extraction runs them; bf16 and float32. The two kernels
are timed alternately, best of ``--rounds`` rounds, so that a shared VM's drift hits both;
the error of each against SDPA computed in float64 is printed beside the times.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from mup_core.models.attention import chunked_causal

SHAPES = [(64, 32), (32, 64), (16, 128), (8, 256), (4, 512), (2, 1024), (1, 2048)]


def mean_ms(fn, reps: int = 5) -> float:
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps * 1e3


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    print(f"attention, 9 query / 3 key-value heads of 64, causal; {torch.get_num_threads()} threads, "
          f"capability {torch.backends.cpu.get_cpu_capability()}")
    for dtype in (torch.bfloat16, torch.float32):
        print(f"  {str(dtype).replace('torch.', ''):8s} {'batch x len':>12s} {'SDPA ms':>8s} {'mup ms':>8s} {'speed-up':>8s} "
              f"{'SDPA err':>9s} {'mup err':>9s}")
        for batch, n in SHAPES:
            q, k, v = (torch.randn(batch, h, n, 64, dtype=torch.float64).to(dtype) for h in (9, 3, 3))
            exact = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=True, enable_gqa=True)
            sdpa = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)  # noqa: E731
            ours = lambda: chunked_causal(q, k, v)  # noqa: E731
            sdpa(), ours()  # warm-up
            times = {"sdpa": float("inf"), "ours": float("inf")}
            for _ in range(args.rounds):  # alternate, so that drift hits both; keep each one's best round
                times["sdpa"] = min(times["sdpa"], mean_ms(sdpa))
                times["ours"] = min(times["ours"], mean_ms(ours))
            errors = [(f().double() - exact).abs().mean().item() for f in (sdpa, ours)]
            print(f"  {'':8s} {f'{batch} x {n}':>12s} {times['sdpa']:8.2f} {times['ours']:8.2f} "
                  f"{times['sdpa'] / times['ours']:7.2f}x {errors[0]:9.2e} {errors[1]:9.2e}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
