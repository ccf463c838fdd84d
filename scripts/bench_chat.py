"""What the prompt cache buys a hybrid model's chat: time to first token of its tenth turn, with the
cache and without it, on the server's batching engine driven with token ids (no tokenizer needed).

    python scripts/bench_chat.py                 # the Qwen3.5-0.8B shape, random bf16 weights (built once, cached)
    python scripts/bench_chat.py --model DIR [--weights bf16] [--turns 10] [--new 100] [--reply 32] [--repeats 3]

Turn 1's prompt is --new random ids. Each later turn's prompt is the one before, its reply (--reply
tokens, greedy, no end-of-sequence id) as a chat template renders it back, and --new more ids. The
reply comes back with its first token changed, as when Qwen3.5's template drops a reply's
reasoning: only the snapshot at the end of the previous prompt can then be reused, not the one at
the end of the generated sequence. In each round, interleaved: a fresh engine with the prompt
cache runs turns 1 to --turns, and an engine without it (prompt_cache_bytes 0) runs the last
turn's prompt alone; each last turn's time from submitting to its first token counts, the best
round of each. The two must answer the last turn with the same tokens. Run it on a quiet machine.
"""

import argparse
import os
import sys
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
from bench import CACHE, machine  # noqa: E402
from make_random_checkpoint import SHAPES, write  # noqa: E402


class NoText:
    """The engine's stand-in tokenizer: its streams decode nothing (the bench reads the ids)."""

    def stream(self, skip_special_tokens=True):
        return type("S", (), dict(feed=lambda self, i: "", flush=lambda self: ""))()


def turn(engine, ids, n):
    """One greedy request of n tokens. -> (seconds from submitting to the first token, the ids, usage)."""
    from npqwen.batching import Request
    from npqwen.sampling import SamplingSettings
    got, first, errors, done = [], [], [], threading.Event()

    def on_event(e):
        if e.error:
            errors.append(e.error)
            done.set()
        if e.token is not None:
            first.append(first[0] if first else time.perf_counter())
            got.append(e.token.id)
        if e.finish_reason:
            got.append(e.usage)
            done.set()
    t0 = time.perf_counter()
    engine.submit(Request(list(ids), n, SamplingSettings(), on_event))
    done.wait()
    if errors:
        raise SystemExit(errors[0])
    usage = got.pop()
    return first[0] - t0, got, usage


def chat(model, args, rng_seed):
    """The whole chat through a fresh engine with the prompt cache. -> [(ttft, prompt, reply, usage)] per turn."""
    from npqwen.batching import Engine
    rng, vocab = np.random.default_rng(rng_seed), model.config.vocab_size
    new = lambda: rng.integers(0, vocab, args.new).tolist()
    engine, prompt, out = Engine(model, NoText(), [], max_batch=1), new(), []
    try:
        for _ in range(args.turns):
            ttft, reply, usage = turn(engine, prompt, args.reply)
            out.append((ttft, prompt, reply, usage))
            prompt = prompt + [(reply[0] + 1) % vocab] + reply[1:] + new()
    finally:
        engine.close()
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="checkpoint folder (default: a random checkpoint of --shape, cached)")
    p.add_argument("--shape", choices=SHAPES, default="qwen3.5-0.8b")
    p.add_argument("--weights", choices=("auto", "float32", "bf16"), default="auto")
    p.add_argument("--turns", type=int, default=10)
    p.add_argument("--new", type=int, default=100, help="new ids each turn (the user's message)")
    p.add_argument("--reply", type=int, default=32, help="tokens generated each turn")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    if args.model is None:
        args.model = os.path.join(CACHE, f"{args.shape}-random-bf16")
        if not os.path.isfile(os.path.join(args.model, "model.safetensors")):
            print(f"building {args.model} (once)", file=sys.stderr)
            write(args.model, args.shape)

    from npqwen import load_model
    from npqwen.batching import SNAPSHOT_EVERY, Engine
    model = load_model(args.model, weights=args.weights)
    print(machine())
    print(f"load average at the start: {os.getloadavg()[0]:.2f}; {args.model} ({model.weights_mode} weights); "
          f"snapshots every {SNAPSHOT_EVERY} positions")
    cached, uncached = [], []
    for r in range(args.repeats):
        turns = chat(model, args, rng_seed=r)
        *_, (ttft, prompt, reply, usage) = turns
        cached.append(ttft)
        plain = Engine(model, NoText(), [], max_batch=1, prompt_cache_bytes=0)
        try:
            ttft_plain, reply_plain, _ = turn(plain, prompt, args.reply)
        finally:
            plain.close()
        uncached.append(ttft_plain)
        print(f"round {r + 1}: turn {args.turns} ({len(prompt)} prompt tokens, {usage['cached_tokens']} cached): "
              f"first token after {ttft:.3f} s with the prompt cache, {ttft_plain:.3f} s without; the same tokens: "
              f"{reply == reply_plain}; cached tokens by turn: {[u['cached_tokens'] for *_, u in turns]}", flush=True)
    print(f"turn {args.turns}, best of {args.repeats}: {min(cached):.3f} s with the prompt cache, "
          f"{min(uncached):.3f} s without: {min(uncached) / min(cached):.1f}x; load average at the end: "
          f"{os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
