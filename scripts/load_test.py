"""Load test of `python -m npqwen.serve`, bounded and on loopback only.

    python scripts/load_test.py [--model DIR_OR_ID] [--clients 20] [--requests 200] [--time-limit 600]

Starts a server on a free 127.0.0.1 port (or uses --url, which must be a loopback address), runs
each kind of request alone to get its reference text, then lets --clients threads send --requests
requests between them: streamed and whole, chat and completion, greedy, with bad requests among
them (malformed JSON, unknown and out-of-range fields, n > 1, an empty messages list, a prompt
longer than the context). Every good answer must equal its reference exactly (nothing lost,
nothing mixed between clients), every bad one must be a 400 naming the field. Prints requests,
failures (must be 0) and latency percentiles; exits 1 on any failure. Needs the test extra (openai).
"""

import argparse
import http.client
import json
import os
import random
import subprocess
import sys
import threading
import time
from urllib.parse import urlparse

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_server(model, *options):
    """`python -m npqwen.serve` on a free loopback port. -> (process, base URL)."""
    p = subprocess.Popen([sys.executable, "-m", "npqwen.serve", "--model", model, "--port", "0", "--log-level",
                          "warning", *options], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    line = p.stderr.readline()
    if " at http://127.0.0.1:" not in line:
        p.kill()
        sys.exit(f"the server did not start: {line}{p.stderr.read()}")
    threading.Thread(target=lambda: [sys.stderr.write(x) for x in p.stderr], daemon=True).start()
    return p, line.split(" at ")[1].split("/v1")[0]


def stop_server(p):
    p.send_signal(2)   # Ctrl-C
    p.wait(30)


def loopback_only(url):
    host = urlparse(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1") and not (host or "").startswith("127."):
        sys.exit(f"--url {url}: the load test sends traffic to loopback addresses only")


GOOD = [  # (kind, prompt or user message, stream, max_tokens, stop)
    ("text", "Once upon a time", False, 40, None),
    ("text", "Once upon a time", True, 40, None),
    ("text", "The river", True, 30, None),
    ("text", "学习如逆水行舟,不进则", False, 17, None),        # ends inside a character
    ("text", "import os\n", True, 24, ["\n\n"]),
    ("chat", "Hello", False, 24, None),
    ("chat", "What is a river?", True, 32, None),
    ("chat", "Tell me a story.", True, 40, ["bird"]),
    ("chat", "你好", False, 20, None),
]
BAD = [  # (what, raw body or request fields, endpoint, the param the 400 must name)
    ("malformed JSON", b'{"prompt": "hi", "max_tokens": ', "completions", None),
    ("unknown field", {"prompt": "hi", "max_tokens": 4, "frobnicate": True}, "completions", "frobnicate"),
    ("n > 1", {"messages": [{"role": "user", "content": "hi"}], "n": 2}, "chat/completions", "n"),
    ("empty messages", {"messages": [], "max_tokens": 4}, "chat/completions", "messages"),
    ("temperature 9", {"prompt": "hi", "temperature": 9}, "completions", "temperature"),
    ("prompt past the context", {"prompt": "word " * 5000, "max_tokens": 4}, "completions", "prompt"),
]


def good_request(client, model, spec):
    kind, prompt, stream, max_tokens, stop = spec
    kw = dict(model=model, max_tokens=max_tokens, temperature=0, stop=stop)
    if kind == "chat":
        kw["messages"] = [{"role": "user", "content": prompt}]
        api = client.chat.completions
    else:
        kw["prompt"] = prompt
        api = client.completions
    if not stream:
        r = api.create(**kw)
        c = r.choices[0]
        return (c.message.content if kind == "chat" else c.text), c.finish_reason, r.usage.completion_tokens
    text, reason, usage = [], None, None
    for chunk in api.create(stream=True, stream_options={"include_usage": True}, **kw):
        if chunk.choices:
            c = chunk.choices[0]
            text.append((c.delta.content if kind == "chat" else c.text) or "")
            reason = c.finish_reason or reason
        if chunk.usage:
            usage = chunk.usage.completion_tokens
    return "".join(text), reason, usage


def bad_request(url, spec):
    """-> None if the server answered a 400 naming the right field, else what went wrong."""
    what, body, endpoint, param = spec
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    try:
        conn.request("POST", f"/v1/{endpoint}", body=raw, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        status, answer = r.status, r.read()
    finally:
        conn.close()
    try:
        error = json.loads(answer)["error"]
    except (ValueError, KeyError, TypeError):
        return f"{what}: status {status}, not an OpenAI error object: {answer[:200]!r}"
    if status != 400 or error.get("param") != param:
        return f"{what}: status {status}, param {error.get('param')!r} (expected 400, {param!r})"
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "golden", "checkpoints", "demo"))
    ap.add_argument("--url", help="a running server on a loopback address (default: start one)")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--bad-share", type=float, default=0.15, help="fraction of the requests that are bad")
    ap.add_argument("--time-limit", type=float, default=600, help="seconds; the clients stop sending after this")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import openai

    server = None
    if args.url:
        loopback_only(args.url)
        url = args.url.rstrip("/")
    else:
        server, url = start_server(args.model)
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
        model = client.models.list().data[0].id
        t0 = time.perf_counter()
        reference = [good_request(client, model, spec) for spec in GOOD]
        print(f"{len(GOOD)} kinds of request run alone in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

        rng = random.Random(args.seed)
        jobs = [("bad", rng.randrange(len(BAD))) if rng.random() < args.bad_share else ("good", rng.randrange(len(GOOD)))
                for _ in range(args.requests)]
        lock, results, deadline = threading.Lock(), [], time.monotonic() + args.time_limit

        def client_thread(mine):
            c = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
            for kind, i in mine:
                if time.monotonic() > deadline:
                    return
                t = time.perf_counter()
                try:
                    if kind == "good":
                        got = good_request(c, model, GOOD[i])
                        problem = None if got == reference[i] else f"{GOOD[i][:3]}: {got!r} != {reference[i]!r}"
                        tokens = got[2] or 0
                    else:
                        problem, tokens = bad_request(url, BAD[i]), 0
                except Exception as e:  # a connection error, a 5xx: counted, never retried
                    problem, tokens = f"{kind} {i}: {type(e).__name__}: {e}", 0
                with lock:
                    results.append((kind, time.perf_counter() - t, problem, tokens))

        threads = [threading.Thread(target=client_thread, args=(jobs[k::args.clients],)) for k in range(args.clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    finally:
        if server:
            stop_server(server)

    failures = [r[2] for r in results if r[2]]
    for f in failures[:10]:
        print("FAILURE:", f, file=sys.stderr)
    good = np.array([r[1] for r in results if r[0] == "good"])
    bad = np.array([r[1] for r in results if r[0] == "bad"])
    tokens = sum(r[3] for r in results)
    print(f"{len(results)} requests ({len(good)} good, {len(bad)} bad) from {args.clients} clients in {wall:.1f} s; "
          f"{len(failures)} failures; {len(jobs) - len(results)} not sent (time limit)")
    for name, lat in (("good", good), ("bad", bad)):
        if lat.size:
            p50, p90, p99 = np.percentile(lat, [50, 90, 99])
            print(f"latency of {name} requests: p50 {p50:.2f} s, p90 {p90:.2f} s, p99 {p99:.2f} s, max {lat.max():.2f} s")
    print(f"{tokens} completion tokens, {tokens / wall:.0f} tokens/s aggregate")
    return 1 if failures or len(results) < len(jobs) else 0


if __name__ == "__main__":
    sys.exit(main())
