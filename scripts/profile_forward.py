"""Where the time goes: cProfile of one npqwen prefill (or a run of decode steps), top functions.

    python scripts/profile_forward.py                   # 1024-token prefill, Qwen2-0.5B shape (bench.py's checkpoint)
    python scripts/profile_forward.py --length 128
    python scripts/profile_forward.py --decode 32       # 32 decode steps after a --length prompt
    python scripts/profile_forward.py --model DIR --weights stream

The forward runs --runs times untimed first (warm-up), then once under the profiler; the
unprofiled rate of the last warm-up run is printed too, since profiling adds a little overhead.
"""

import argparse
import cProfile
import os
import pstats
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=os.path.expanduser("~/.cache/npqwen-bench/qwen2-0.5b-random-bf16"),
                   help="checkpoint folder (default: the one scripts/bench.py builds)")
    p.add_argument("--weights", choices=("auto", "float32", "bf16", "stream"), default="float32")
    p.add_argument("--length", type=int, default=1024, help="prompt tokens")
    p.add_argument("--decode", type=int, default=0, help="profile this many decode steps instead of the prefill")
    p.add_argument("--runs", type=int, default=2, help="untimed warm-up runs")
    p.add_argument("--top", type=int, default=12)
    args = p.parse_args()
    if not os.path.isdir(args.model):
        raise SystemExit(f"error: {args.model} is not a folder (run scripts/bench.py once to build it, or pass --model)")

    from npqwen import load_model
    from npqwen.cache import KVCache
    model = load_model(args.model, weights=args.weights)
    ids = np.random.default_rng(0).integers(0, model.config.vocab_size, (1, args.length))

    def prefill():
        cache = KVCache(model.config, 1, args.length + args.decode)
        return cache, model.forward(ids, cache=cache, logits_to_keep=1).logits[:, -1].argmax(-1)

    def decode(cache, tok):
        for _ in range(args.decode):
            tok = model.forward(tok[:, None], cache=cache).logits[:, -1].argmax(-1)

    # the profiled work: the prefill, or the decode steps (after an unprofiled prefill)
    setup = prefill if args.decode else (lambda: ())
    work = decode if args.decode else prefill
    what, n = (f"decode after {args.length}", args.decode) if args.decode else (f"prefill {args.length}", args.length)
    for _ in range(args.runs):
        state = setup()
        t0 = time.perf_counter()
        work(*state)
        dt = time.perf_counter() - t0
    print(f"{what}: {n / dt:.1f} tokens/s unprofiled")
    state = setup()
    prof = cProfile.Profile()
    prof.enable()
    work(*state)
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
