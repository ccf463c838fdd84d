"""`python -m npqwen.forward --model DIR [--ids "1 2 3"]`: one forward pass from token ids.

Prints the model's next-token distribution (top 5 ids with probabilities) for the given ids on
stdout; the model summary and timing go to stderr. Works on any Qwen2 checkpoint folder, tokenizer
or not, so it runs on the golden checkpoints shipped under golden/.
"""

import argparse
import os
import sys
import time

import numpy as np

from .errors import NpqwenError
from .hub import add_revision_option, resolve_model
from .model import load_model
from .primitives import softmax

DEFAULT_MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "golden", "checkpoints", "gqa3_bf16")


def parse_ids(text):
    try:
        ids = [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise NpqwenError(f"--ids must be whitespace- or comma-separated integers, found {text!r}") from None
    if not ids:
        raise NpqwenError("--ids is empty: give at least one token id")
    return ids


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m npqwen.forward", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=DEFAULT_MODEL, help="checkpoint folder or hub id (default: a golden checkpoint)")
    add_revision_option(p)
    p.add_argument("--ids", default="1 2 3 4 5", help="token ids of the prompt")
    p.add_argument("--top", type=int, default=5, help="how many next-token candidates to print")
    args = p.parse_args(argv)
    try:
        ids = parse_ids(args.ids)
        if args.top < 1:
            raise NpqwenError(f"--top must be at least 1, found {args.top}")
        t0 = time.perf_counter()
        args.model = resolve_model(args.model, args.revision)
        model = load_model(args.model)
        cfg = model.config
        print(f"{args.model}: {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, "
              f"{cfg.num_attention_heads} heads / {cfg.num_key_value_heads} kv heads, vocab {cfg.vocab_size}, "
              f"loaded in {time.perf_counter() - t0:.2f}s", file=sys.stderr)
        t0 = time.perf_counter()
        logits = model.forward(np.array([ids])).logits[0, -1]
        print(f"forward over {len(ids)} tokens in {time.perf_counter() - t0:.3f}s", file=sys.stderr)
    except NpqwenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    probs = softmax(logits)
    for tok in np.argsort(-probs, kind="stable")[:args.top]:
        print(f"{int(tok)}\t{probs[tok]:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
