"""What structured output costs per token: the grammar's mask (llguidance) against a decode step.

    python scripts/bench_structured.py                 # Qwen2-0.5B shape, random bf16 weights (cached), float32 mode
    python scripts/bench_structured.py --tokens 200 --schema schema.json

The genuine Qwen2.5 tokenizer (../shared/assets/qwen2/qwen2.5) with a random checkpoint of the
Qwen2-0.5B shape (scripts/make_random_checkpoint.py; the weights' values do not change the cost):
decode --tokens tokens, sampled at temperature 1 under a JSON grammar (any object, or --schema),
timing each step's forward and, apart, the mask (compute, and -inf on the forbidden logits) and
the grammar's advance. Prints the CPU and BLAS, the median of each per token, and the mask's share.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
from bench import CACHE, machine  # noqa: E402
from make_random_checkpoint import write  # noqa: E402

TOKENIZER = os.path.join(HERE, "..", "..", "shared", "assets", "qwen2", "qwen2.5")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--schema", help="a JSON schema file (default: any JSON object)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    from npqwen import Tokenizer, load_model
    from npqwen.cache import KVCache
    from npqwen.sampling import SamplingSettings, draw, processed_logits
    from npqwen.structured import Constraint, grammar_tokenizer, json_grammar

    folder = os.path.join(CACHE, "0.5b")
    if not os.path.isfile(os.path.join(folder, "model.safetensors")):
        write(folder, "0.5b")
    model, tok = load_model(folder, weights="float32"), Tokenizer(TOKENIZER)
    schema = json.load(open(args.schema)) if args.schema else None
    t0 = time.perf_counter()
    lltok = grammar_tokenizer(tok, model.config.vocab_size, [151643, 151645])
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    grammar = json_grammar(schema)
    constraint = Constraint(lltok, grammar)
    compile_s = time.perf_counter() - t0
    settings, rng = SamplingSettings(temperature=1.0).validate(), np.random.default_rng(args.seed)
    ids = np.asarray([tok.encode("Reply in JSON:")])
    cache = KVCache(model.config, 1, ids.shape[1] + args.tokens + 1)
    logits = model.forward(ids, cache=cache, logits_to_keep=1).logits[0, -1]
    step_s, mask_s, advance_s, out = [], [], [], []
    for _ in range(args.tokens):
        t0 = time.perf_counter()
        masked = constraint.allow(logits)
        mask_s.append(time.perf_counter() - t0)
        nxt = int(draw(processed_logits(masked[None], settings, None), settings, rng)[0])
        t0 = time.perf_counter()
        constraint.advance(nxt)
        advance_s.append(time.perf_counter() - t0)
        out.append(nxt)
        if nxt in (151643, 151645):
            break
        t0 = time.perf_counter()
        logits = model.forward(np.asarray([[nxt]]), cache=cache).logits[0, -1]
        step_s.append(time.perf_counter() - t0)
    med = lambda xs: float(np.median(xs)) * 1000
    print(f"machine: {machine()}")
    print(f"model: {folder} (vocab {model.config.vocab_size}); tokenizer: Qwen2.5; grammar: "
          f"{'--schema ' + args.schema if args.schema else 'any JSON object'}; {len(out)} tokens sampled")
    print(f"llguidance tokenizer built in {build:.2f} s, grammar compiled in {compile_s * 1000:.1f} ms")
    print(f"per token (median): decode step {med(step_s):.2f} ms, mask {med(mask_s):.3f} ms, advance "
          f"{med(advance_s):.3f} ms: the grammar costs {100 * (med(mask_s) + med(advance_s)) / med(step_s):.1f}% "
          f"of a decode step")
    print("reply:", tok.decode(out)[:200])


if __name__ == "__main__":
    main()
