"""Speculative decoding (npqwen/speculative.py): what checking k drafted tokens costs, and what prompt
lookup gains.

    python scripts/bench_speculative.py                   # the 0.5B shape (random bf16, cached) and the demo
    python scripts/bench_speculative.py --shape 7b --weights bf16 --skip-demo

1. The cost of one forward over the last token and k drafted tokens (k = 0 is a plain decode
   step), after a 128-token prompt, the cache cut back after each, as speculative decoding does:
   median of --repeats, each k in turn, as a multiple of k = 0.
2. On the demo model: a prompt that asks it to continue a text it has just seen: the seed's proverb,
   the demo's own 96-token greedy continuation of it, and the first 20 tokens of that again. Greedy, 96 new tokens,
   with and without --prompt-lookup N: forwards, how many drafts were kept, and the time, best of
   --repeats (the same tokens each way).
Prints the CPU and BLAS beside the figures.
"""

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
from bench import CACHE, machine  # noqa: E402
from make_random_checkpoint import write  # noqa: E402

SEED = "学习如逆水行舟,不进则"   # the seed documents' proverb


def verify_costs(model, ks, repeats, context=128):
    from npqwen.cache import KVCache
    V = model.config.vocab_size
    rng = np.random.default_rng(0)
    cache = KVCache(model.config, 1, context + max(ks) + 2)
    model.forward(rng.integers(0, V, (1, context)), cache=cache, logits_to_keep=1)
    base = cache.length
    times = {k: [] for k in ks}
    for _ in range(repeats):
        for k in ks:
            ids = rng.integers(0, V, (1, k + 1))
            t0 = time.perf_counter()
            model.forward(ids, cache=cache)          # every position's logits, as the check needs them
            times[k].append(time.perf_counter() - t0)
            cache.length = base
    return {k: float(np.median(v)) for k, v in times.items()}


def lookup_gain(folder, ns, repeats, new_tokens=96):
    from npqwen import Tokenizer, load_model
    from npqwen.generation import generate
    from npqwen.sampling import SamplingSettings
    from npqwen.speculative import PromptLookup
    model, tok = load_model(folder), Tokenizer(folder)
    greedy = SamplingSettings(temperature=0)
    seen = [t.id for t in generate(model, tok, SEED, new_tokens, greedy, eos_ids=[])]
    prompt = tok.encode(SEED) + seen + seen[:20]
    rows, want = [], None
    for n in [None] + ns:
        best, stats = float("inf"), {}
        for _ in range(repeats):
            stats = {}
            t0 = time.perf_counter()
            out = [t.id for t in generate(model, tok, prompt, new_tokens, greedy, eos_ids=[],
                                          draft=PromptLookup(n) if n else None, stats=stats)]
            best = min(best, time.perf_counter() - t0)
        want = want or out
        assert out == want, "speculative greedy output differs from plain greedy"
        rows.append((n, best, stats))
    return rows, tok.decode(want)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="0.5b")
    p.add_argument("--model", help="a checkpoint folder instead of --shape's random one")
    p.add_argument("--weights", default="bf16")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--skip-demo", action="store_true")
    a = p.parse_args()
    from npqwen import load_model
    folder = a.model
    if folder is None:
        folder = os.path.join(CACHE, f"qwen2-{a.shape}-random-bf16")
        if not os.path.isfile(os.path.join(folder, "model.safetensors")):
            write(folder, a.shape)
    print(f"machine: {machine()}")
    model = load_model(folder, weights=a.weights)
    ks = list(range(9))
    costs = verify_costs(model, ks, a.repeats)
    print(f"\n{folder} ({model.weights_mode} weights): one forward of the last token and k drafts after 128 tokens, "
          f"median of {a.repeats}")
    print("| k drafted | seconds | / a decode step |\n|---|---|---|")
    for k in ks:
        print(f"| {k} | {costs[k]:.4f} | {costs[k] / costs[0]:.2f} |")
    if a.skip_demo:
        return
    demo = os.path.join(HERE, "..", "golden", "checkpoints", "demo")
    rows, text = lookup_gain(demo, [2, 4, 8], a.repeats)
    print(f"\ndemo model, greedy, 96 new tokens after the proverb, its continuation and that continuation's first 20 tokens again: {text[:60]!r}...")
    print("| drafting | forwards | drafts kept | tokens per forward | seconds | speed-up |\n|---|---|---|---|---|---|")
    plain = rows[0][1]
    for n, t, st in rows:
        if n is None:
            print(f"| none | 96 | - | 1.00 | {t:.3f} | 1.00 |")
        else:
            print(f"| --prompt-lookup {n} | {st['rounds']} | {st['accepted']} of {st['drafted']} | "
                  f"{96 / st['rounds']:.2f} | {t:.3f} | {plain / t:.2f} |")


if __name__ == "__main__":
    main()
