"""What the server's prompt cache and batching buy, measured on loopback.

    python scripts/bench_serve.py [--model DIR_OR_ID] [--conversations 5] [--tokens 64]

1. Time to first token of the tenth turn of a chat, with the prompt cache (the shared prefix of the
   conversation so far is reused) and without it (--prompt-cache-mb 0: every turn prefilled whole):
   median over --conversations conversations, each turn streamed, greedy.
2. Aggregate decode speed with 1, 4 and 8 concurrent streaming clients, each generating --tokens
   tokens (the model's end-of-sequence ids are banned with logit_bias so every stream runs to
   length), with continuous batching (--max-batch 8) and with one request at a time (--max-batch 1).
Needs the test extra (openai). The figures depend on the machine's load: run it on a quiet one.
"""

import argparse
import os
import statistics
import sys
import threading
import time

from load_test import ROOT, start_server, stop_server

TURNS = ["Hello!", "What is a river?", "Where do rivers start?", "And where do they end?", "Tell me about the sea.",
         "Is the sea salty?", "Why?", "What lives in rivers?", "Tell me a short story.", "Thank you!"]


def ttft_of_turns(client, model, opening, max_tokens):
    """One conversation of len(TURNS) turns. -> [(seconds to the first content chunk, prompt tokens, cached)]."""
    messages, out = [{"role": "system", "content": opening}], []
    for user in TURNS:
        messages.append({"role": "user", "content": user})
        t0, first, text, usage = time.perf_counter(), None, [], None
        for c in client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, temperature=0,
                                                stream=True, stream_options={"include_usage": True}):
            if c.choices and c.choices[0].delta.content:
                first = first or time.perf_counter()
                text.append(c.choices[0].delta.content)
            if c.usage:
                usage = c.usage
        messages.append({"role": "assistant", "content": "".join(text)})
        out.append((first - t0, usage.prompt_tokens, usage.prompt_tokens_details.cached_tokens))
    return out


def aggregate(client, model, clients, tokens, ban):
    """`clients` threads each streaming one completion of `tokens` tokens at once. -> tokens/s."""
    counts = [0] * clients

    def one(k):
        for c in client.completions.create(model=model, prompt=f"Story {k}: Once upon a time", max_tokens=tokens,
                                           temperature=0, logit_bias=ban, stream=True,
                                           stream_options={"include_usage": True}):
            if c.usage:
                counts[k] = c.usage.completion_tokens
    threads = [threading.Thread(target=one, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0), sum(counts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "golden", "checkpoints", "demo"))
    ap.add_argument("--conversations", type=int, default=5)
    ap.add_argument("--turn-tokens", type=int, default=16, help="max_tokens of each chat turn")
    ap.add_argument("--tokens", type=int, default=64, help="tokens per stream in the concurrency test")
    args = ap.parse_args()
    import openai
    from npqwen.config import ModelConfig
    from npqwen.generation_config import eos_token_ids, read_generation_config
    from npqwen.hub import resolve_model

    folder = resolve_model(args.model)
    cfg = ModelConfig.from_file(folder)
    ban = {str(i): -100 for i in eos_token_ids(cfg, read_generation_config(folder, cfg.vocab_size))}

    print("time to first token of turn 10 (median of %d conversations):" % args.conversations)
    for label, options in (("prompt cache on ", []), ("prompt cache off", ["--prompt-cache-mb", "0"])):
        server, url = start_server(args.model, *options)
        try:
            client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
            model = client.models.list().data[0].id
            ttft_of_turns(client, model, "Warm-up.", 2)   # (first requests pay one-time costs)
            runs = [ttft_of_turns(client, model, f"You are assistant number {k}.", args.turn_tokens)
                    for k in range(args.conversations)]
        finally:
            stop_server(server)
        tenth = [r[-1] for r in runs]
        print(f"  {label}: {1000 * statistics.median(t for t, _, _ in tenth):7.1f} ms  (prompt "
              f"{statistics.median(p for _, p, _ in tenth):.0f} tokens, {statistics.median(c for _, _, c in tenth):.0f} "
              f"of them cached; turn 1: {1000 * statistics.median(r[0][0] for r in runs):.1f} ms)")

    print(f"aggregate decode, {args.tokens} tokens per streaming client:")
    for label, options in (("batched (--max-batch 8)", ["--max-batch", "8"]),
                           ("one at a time (--max-batch 1)", ["--max-batch", "1"])):
        server, url = start_server(args.model, *options)
        try:
            client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
            model = client.models.list().data[0].id
            aggregate(client, model, 1, 8, ban)   # warm-up
            figures = [(n, *aggregate(client, model, n, args.tokens, ban)) for n in (1, 4, 8)]
        finally:
            stop_server(server)
        print(f"  {label}: " + ", ".join(f"{n} client{'s' if n > 1 else ''} {rate:.0f} tokens/s" for n, rate, _ in
                                            figures))


if __name__ == "__main__":
    sys.exit(main())
