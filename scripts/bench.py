"""Side-by-side benchmark: npqwen against transformers on the same weights, threads and machine.

    python scripts/bench.py                      # Qwen2-0.5B shape, random bf16 weights (built once, cached)
    python scripts/bench.py --model DIR          # any checkpoint folder
    python scripts/bench.py --weights float32 bf16        # both weights modes and transformers, one run
    python scripts/bench.py --lengths 128 8192 --new-tokens 64 --prefills 1 --repeats 1   # a long prompt
    python scripts/bench.py --shape 7b --weights bf16 --no-transformers --lengths 16 --new-tokens 8
    python scripts/bench.py --shape qwen3-30b-a3b --layers 2   # a mixture of experts, its first 2 layers
    python scripts/bench.py --score --lengths 512 2048   # scoring: every position's log-probability
    python scripts/bench.py --weights bf16 --quant fp8 gptq awq   # quantized copies of the same weights

Every measurement runs in its own process (so each one's peak resident memory is its own), the
two implementations interleaved over --repeats rounds so machine drift cancels; the best round of
each counts. Inside each process an untimed warm-up forward comes first, and each prompt is
prefilled --prefills times (the best counts), the same for every implementation; decode follows
the shortest prompt and, if longer, the longest. Several --weights modes are each measured as an
implementation of their own. In the same run it measures the machine's ceilings: NumPy's float32
matrix-multiply rate, and the memory read bandwidth of --threads threads each summing its share of
a 2 GB array (the machine's, not NumPy's matrix-vector product, which it prints beside it; each
the median of 7 runs, the best round counting), and reports npqwen's prefill as counted FLOPs/s
over the matmul rate and its decode as weight bytes read per token (4 per parameter in float32
mode, 2 in bf16) x tokens/s over the bandwidth, and decode after the longest prompt as a share of
decode after the shortest. It prints the CPU model and the BLAS library,
version, kernel and threads (threadpoolctl) with every table. transformers is measured only if
torch and transformers are importable.
Prints a table and writes it as JSON (--json).

--quant fp8|gptq|awq also measures npqwen on copies of the same weights quantized into those
formats (scripts/quantize_checkpoint.py, round to nearest: FP8 with 128 x 128 tiles and bf16 scales
as Qwen3's releases, GPTQ and AWQ int4 in groups of 128), kept quantized as stored (--weights bf16);
each is compared with "npqwen bf16" when that is measured too, and its decode is reported as the
bytes it reads per token (the quantized layers as stored, the LM head in bf16) over the bandwidth.

--score measures scoring instead (python -m npqwen.score): one forward over a window of each length
that keeps every position's next-token log-probability, npqwen with its LM head and log-softmax a
block of positions at a time, transformers as its perplexity recipe does (all the logits, then
torch.log_softmax and a gather). Both score the same random ids, and the table shows the mean
log-probability each computed, which must agree.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
from make_random_checkpoint import SHAPES, write  # noqa: E402

CACHE = os.path.expanduser(os.environ.get("NPQWEN_BENCH_CACHE", "~/.cache/npqwen-bench"))


# ---------------------------------------------------------------------------------------------
# workers: one implementation, one process, JSON on stdout

# Each worker first runs an untimed forward over this many tokens, so that the first timed prefill
# does not also pay for starting BLAS threads and first-touch page faults.
WARMUP = 32


def status_mb(field):
    """A /proc/self/status memory field in MB (e.g. RssAnon: memory that is not a mapped file)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb():
    """This process's peak resident memory. VmHWM starts afresh at exec; ru_maxrss would include
    the parent's memory at fork."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def decode_key(args, n):
    """decode_tok_s after the shortest prompt; decode_after_N_tok_s after the longest, if longer."""
    return "decode_tok_s" if n == args.lengths[0] else f"decode_after_{n}_tok_s"


def best_rate(res, key, rate):
    res[key] = max(rate, res.get(key, 0.0))


def worker_npqwen(args):
    from npqwen import load_model
    from npqwen.cache import KVCache

    t0 = time.perf_counter()
    model = load_model(args.model, weights=args.weights)
    res = {"load_s": time.perf_counter() - t0, "weights": model.weights_mode + (
        f" ({model.config.quant.label})" if model.config.quant else ""), "stored_bytes": int(np.dtype(model.embed.dtype).itemsize)}
    V = model.config.vocab_size
    rng = np.random.default_rng(0)
    model.forward(rng.integers(0, V, (1, WARMUP)), logits_to_keep=1)  # untimed
    anon = [status_mb("RssAnon")]
    for n in args.lengths:
        ids = rng.integers(0, V, (1, n))
        for _ in range(args.prefills):  # best of these; the cache of the last one is decoded from
            cache = KVCache(model.config, 1, n + args.new_tokens)
            t0 = time.perf_counter()
            logits = model.forward(ids, cache=cache, logits_to_keep=1).logits
            best_rate(res, f"prefill_{n}_tok_s", n / (time.perf_counter() - t0))
            anon.append(status_mb("RssAnon"))
        if n in (args.lengths[0], args.lengths[-1]):  # decode after the shortest prompt, and the longest
            tok = logits[:, -1].argmax(-1)
            t0 = time.perf_counter()
            for _ in range(args.new_tokens):
                tok = model.forward(tok[:, None], cache=cache).logits[:, -1].argmax(-1)
            res[decode_key(args, n)] = args.new_tokens / (time.perf_counter() - t0)
    from npqwen.stored import BLOCK, UPCAST   # bf16 mode: the upcast and block size this machine chose, and their rates
    if UPCAST["choice"]:
        res["bf16_upcast"] = UPCAST["choice"] + " (" + ", ".join(f"{k} {v / 1e9:.1f} G/s" for k, v in UPCAST["rates"].items()) + ")"
    if UPCAST["choice"]:
        res["bf16_block"] = f"{BLOCK['bytes'] >> 10} KB (twice the {BLOCK['l2'] >> 10} KB L2 the machine reports)"
    res["peak_rss_mb"] = peak_rss_mb()
    # bf16 weights map the file: its pages count in RSS but are the page cache's, reclaimable;
    # anonymous memory (float32 weights, buffers, KV cache) is what must fit. Sampled after each
    # prefill and at the end (the kernel keeps no peak of it).
    res["peak_anon_mb"] = max(anon + [status_mb("RssAnon")])
    return res


def worker_npqwen_score(args):
    from npqwen import load_model
    from npqwen.logprobs import score_rows

    t0 = time.perf_counter()
    model = load_model(args.model, weights=args.weights)
    res = {"load_s": time.perf_counter() - t0, "weights": model.weights_mode}
    rng = np.random.default_rng(0)
    score_rows(model, rng.integers(0, model.config.vocab_size, (1, WARMUP)))  # untimed
    for n in args.lengths:
        ids = rng.integers(0, model.config.vocab_size, (1, n))
        for _ in range(args.prefills):
            t0 = time.perf_counter()
            s, = score_rows(model, ids)
            best_rate(res, f"score_{n}_tok_s", n / (time.perf_counter() - t0))
        res[f"score_{n}_mean_logprob"] = float(np.mean(s.logprobs, dtype=np.float64))
    res["peak_rss_mb"] = peak_rss_mb()
    return res


def load_transformers(args):
    """-> (torch, transformers' model in float32, the results so far): its load time."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    return torch, model, {"load_s": time.perf_counter() - t0, "weights": "float32",
                          "attn": model.config._attn_implementation}


def worker_transformers_score(args):
    torch, model, res = load_transformers(args)
    V = model.config.vocab_size
    rng = np.random.default_rng(0)

    def score(ids):  # the log-probability of each token after the first, as the perplexity recipe's loss sees it
        logprobs = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
        return logprobs.gather(-1, ids[0, 1:, None])[:, 0]

    with torch.inference_mode():
        score(torch.from_numpy(rng.integers(0, V, (1, WARMUP))))  # untimed
        for n in args.lengths:
            ids = torch.from_numpy(rng.integers(0, V, (1, n)))
            for _ in range(args.prefills):
                t0 = time.perf_counter()
                lp = score(ids)
                best_rate(res, f"score_{n}_tok_s", n / (time.perf_counter() - t0))
            res[f"score_{n}_mean_logprob"] = float(lp.double().mean())
    res["peak_rss_mb"] = peak_rss_mb()
    return res


def worker_transformers(args):
    torch, model, res = load_transformers(args)
    V = model.config.vocab_size
    rng = np.random.default_rng(0)
    with torch.inference_mode():
        model(torch.from_numpy(rng.integers(0, V, (1, WARMUP))), logits_to_keep=1)  # untimed
        for n in args.lengths:
            ids = torch.from_numpy(rng.integers(0, V, (1, n)))
            for _ in range(args.prefills):
                t0 = time.perf_counter()
                out = model(ids, use_cache=True, logits_to_keep=1)
                best_rate(res, f"prefill_{n}_tok_s", n / (time.perf_counter() - t0))
            if n in (args.lengths[0], args.lengths[-1]):
                past, tok = out.past_key_values, out.logits[:, -1].argmax(-1)
                t0 = time.perf_counter()
                for _ in range(args.new_tokens):
                    out = model(tok[:, None], past_key_values=past, use_cache=True)
                    past, tok = out.past_key_values, out.logits[:, -1].argmax(-1)
                res[decode_key(args, n)] = args.new_tokens / (time.perf_counter() - t0)
    res["peak_rss_mb"] = peak_rss_mb()
    return res


# ---------------------------------------------------------------------------------------------
# the machine's ceilings


def median_rate(fn, work, repeats):
    """work / seconds of fn(), the median over repeats: a stray fast or slow run does not set it."""
    fn()
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        rates.append(work / (time.perf_counter() - t0))
    return float(np.median(rates))


def matmul_rate(n=3072, repeats=7):
    """float32 GFLOP/s of NumPy's BLAS on large square matrices."""
    a = np.random.rand(n, n).astype(np.float32)
    b = np.random.rand(n, n).astype(np.float32)
    return median_rate(lambda: a @ b, 2 * n ** 3 / 1e9, repeats)


def bandwidth(threads, gb=2.0, repeats=7):
    """Memory read GB/s, the machine's: `threads` threads each summing its share of a float32 array
    far larger than the caches (a reduction releases the GIL, so the threads read at once)."""
    from concurrent.futures import ThreadPoolExecutor
    a = np.ones(int(gb * 1e9 / 4), np.float32)
    shares = np.array_split(a, threads)
    with ThreadPoolExecutor(threads) as pool:
        return median_rate(lambda: list(pool.map(np.sum, shares)), a.nbytes / 1e9, repeats)


def matvec_rate(gb=1.0, repeats=7):
    """NumPy's own float32 matrix-vector product over a matrix far larger than the caches, GB/s read."""
    cols = 8192
    w = np.random.rand(int(gb * 1e9 / 4 / cols), cols).astype(np.float32)
    x = np.random.rand(cols).astype(np.float32)
    return median_rate(lambda: w @ x, w.nbytes / 1e9, repeats)


def machine():
    """The CPU model and the BLAS NumPy uses (library, version, kernel, threads), for every table."""
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            have = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
        flags = " ".join(x for x in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if x in have)
    except OSError:
        pass
    try:
        from threadpoolctl import threadpool_info
        blas = "; ".join(f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture', '?')} kernel, "
                         f"{i.get('num_threads')} threads)" for i in threadpool_info() if i.get("user_api") == "blas")
    except ImportError:
        blas = "threadpoolctl not installed"
    return f"{cpu} [{flags}], {os.cpu_count()} cores; NumPy {np.__version__} BLAS: {blas or 'none found'}"


def quantized_bytes(cfg) -> int:
    """Bytes a decode step reads from a quantized checkpoint's layers as stored, and its LM head (bf16)."""
    from npqwen.quant import released_quantized, stored_bytes
    from npqwen.weights import expected_shapes
    total = 0
    for name, shape in expected_shapes(cfg).items():
        if released_quantized(name, shape):
            total += stored_bytes(cfg.quant, shape)
        elif ".layers." in name or name == "lm_head.weight" or (cfg.tie_word_embeddings and "embed_tokens" in name):
            total += 2 * int(np.prod(shape))
    return int(total)


QUANT_OPTIONS = {"fp8": dict(scale_dtype="BF16"), "gptq": dict(group=128), "awq": dict(group=128)}


def work_per_token(cfg, prompt_len, weight_bytes=4):
    """-> (prefill FLOPs per prompt token, decode bytes of weights (weight_bytes per parameter: 4 in
    float32 mode, 2 for bf16 kept as stored) + float32 KV cache read per token)."""
    from npqwen.info import flash_next_summary, summary
    if cfg.hyper_connections:   # Qwen3.8-Flash-Next: the layers' active weights (and 16 n-gram rows)
        layer_params = flash_next_summary(cfg)["active"]
    else:
        s = summary(cfg)
        layer_params = s["active"] - s["embedding"] - s["lm_head"]  # a mixture of experts: only the k used
    d, hd, H, K = cfg.hidden_size, cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads
    L, V = cfg.num_hidden_layers, cfg.vocab_size
    # matmuls: 2 FLOPs per weight; attention: q.k and p.v over on average half the prompt
    prefill = 2 * layer_params + L * 2 * 2 * H * hd * prompt_len / 2
    decode_bytes = weight_bytes * (layer_params + V * d) + L * 2 * K * hd * 4 * prompt_len
    return prefill, decode_bytes


# ---------------------------------------------------------------------------------------------


def run_worker(impl, args):
    """impl: "transformers", or "npqwen <weights mode>"."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads))
    name, _, mode = impl.partition(" ")
    model = args.model
    if mode in QUANT_OPTIONS:   # a quantized copy, kept as stored
        model, mode = args.quantized[mode], "bf16"
    cmd = [sys.executable, __file__, "--worker", name, "--model", model, "--threads", str(args.threads),
           "--weights", mode or "auto", "--new-tokens", str(args.new_tokens), "--prefills", str(args.prefills),
           "--lengths", *map(str, args.lengths)] + (["--score"] if args.score else [])
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{impl} worker failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def have_transformers():
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
        return True
    except ImportError:
        return False


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="checkpoint folder (default: a random checkpoint of --shape, cached)")
    p.add_argument("--shape", choices=SHAPES, default="0.5b")
    p.add_argument("--layers", type=int, help="with --shape: only the first N layers (a smaller model)")
    p.add_argument("--weights", choices=("auto", "float32", "bf16", "stream"), nargs="+", default=["auto"],
                   help="npqwen's weights mode; several: each is measured, in the same rounds")
    p.add_argument("--lengths", type=int, nargs="+", default=[128, 1024], help="prompt lengths to prefill")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--prefills", type=int, default=2, help="prefills of each prompt per process (best counts)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--no-transformers", action="store_true")
    p.add_argument("--delete", action="store_true", help="delete the generated checkpoint afterwards")
    p.add_argument("--score", action="store_true", help="measure scoring (every position's log-probability) instead")
    p.add_argument("--quant", nargs="+", choices=list(QUANT_OPTIONS), default=[],
                   help="also measure quantized copies of the weights (built once, cached beside the checkpoint)")
    p.add_argument("--json", default="bench.json")
    p.add_argument("--worker", choices=("npqwen", "transformers"), help=argparse.SUPPRESS)
    args = p.parse_args()
    args.lengths = sorted(args.lengths)

    if args.worker:
        args.weights = args.weights[0]
        fn = {("npqwen", False): worker_npqwen, ("transformers", False): worker_transformers,
              ("npqwen", True): worker_npqwen_score, ("transformers", True): worker_transformers_score}[
            args.worker, args.score]
        print(json.dumps(fn(args)))
        return

    generated = args.model is None
    if generated:
        name = args.shape if "qwen" in args.shape else f"qwen2-{args.shape}"
        args.model = os.path.join(CACHE, f"{name}{f'-{args.layers}l' if args.layers else ''}-random-bf16")
        if not os.path.isfile(os.path.join(args.model, "model.safetensors")):
            print(f"building {args.model} (once)", file=sys.stderr)
            write(args.model, args.shape, args.layers)

    from npqwen.config import ModelConfig
    cfg = ModelConfig.from_file(args.model)
    args.quantized = {}
    for method in args.quant:
        folder = os.path.join(CACHE, os.path.basename(os.path.normpath(args.model)) + f"-{method}")
        if not os.path.isfile(os.path.join(folder, "model.safetensors")):
            print(f"quantizing {args.model} into {folder} (once)", file=sys.stderr)
            from quantize_checkpoint import quantize_folder
            quantize_folder(args.model, folder, method, **QUANT_OPTIONS[method])
        args.quantized[method] = folder
    others = [] if args.no_transformers or not have_transformers() else ["transformers"]
    if args.score:
        return score_table(args, cfg, [f"npqwen {args.weights[0]}"] + others, generated)
    ours = [f"npqwen {w}" for w in dict.fromkeys(args.weights)] + [f"npqwen {m}" for m in args.quant]
    impls = ours + others
    best = {impl: {} for impl in impls}
    samples = {"matmul_gflops": [], "bandwidth_gbs": [], "numpy_matvec_gbs": []}
    for r in range(args.repeats):
        samples["matmul_gflops"].append(matmul_rate())
        samples["bandwidth_gbs"].append(bandwidth(args.threads))
        samples["numpy_matvec_gbs"].append(matvec_rate())
        for impl in impls:
            res = run_worker(impl, args)
            print(f"round {r + 1} {impl}: {res}", file=sys.stderr)
            for k, v in res.items():
                if isinstance(v, str):
                    best[impl][k] = v
                elif k in ("load_s", "peak_rss_mb", "peak_anon_mb"):
                    best[impl][k] = min(v, best[impl].get(k, v))
                else:
                    best[impl][k] = max(v, best[impl].get(k, v))

    # fractions of the machine's ceilings: the best rate seen (the spread is printed too)
    ceilings = {k: max(v) for k, v in samples.items()}
    n0 = args.lengths[0]
    frac = {impl: {} for impl in ours}
    for impl in ours:
        res = best[impl]
        for n in args.lengths:
            flops, _ = work_per_token(cfg, n)
            frac[impl][f"prefill_{n}_tok_s"] = f"{res[f'prefill_{n}_tok_s'] * flops / 1e9 / ceilings['matmul_gflops']:.0%} of matmul rate"
        _, bytes_tok = work_per_token(cfg, n0, 4 if res["weights"] == "float32" else res["stored_bytes"])
        method = impl.partition(" ")[2]
        if method in args.quantized:   # the layers as stored, not 2 bytes a parameter
            qcfg = ModelConfig.from_file(args.quantized[method])
            bytes_tok += quantized_bytes(qcfg) - work_per_token(cfg, n0, 2)[1] + work_per_token(cfg, n0, 0)[1]
        frac[impl]["decode_tok_s"] = (f"{res['decode_tok_s'] * bytes_tok / 1e9 / ceilings['bandwidth_gbs']:.0%} of "
                                      f"read bandwidth ({bytes_tok / 1e9:.2f} GB/token)")
        after = decode_key(args, args.lengths[-1])
        if len(args.lengths) > 1 and res.get(after):  # a long context should cost what its KV cache's bytes cost
            frac[impl][after] = f"{res[after] / res['decode_tok_s']:.0%} of its decode after {n0} tokens"

    metrics = [f"prefill_{n}_tok_s" for n in args.lengths] + ["decode_tok_s"] + \
              ([f"decode_after_{args.lengths[-1]}_tok_s"] if len(args.lengths) > 1 else []) + \
              ["load_s", "peak_rss_mb", "peak_anon_mb"]
    ratios = [(a, b) for a in ours for b in others] + \
             ([("npqwen bf16", "npqwen float32")] if {"npqwen bf16", "npqwen float32"} <= set(ours) else []) + \
             ([(f"npqwen {m}", "npqwen bf16") for m in args.quant] if "npqwen bf16" in ours else [])
    lines = [f"model: {args.model} ({cfg.model_type}, {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, "
             f"vocab {cfg.vocab_size}); threads {args.threads}; "
             + ", ".join(f"{impl}: weights {best[impl]['weights']}" for impl in ours),
             f"machine: {machine()}",
             f"ceilings: float32 matmul {ceilings['matmul_gflops']:.0f} GFLOP/s (rounds: "
             f"{', '.join(f'{x:.0f}' for x in samples['matmul_gflops'])}); memory read {ceilings['bandwidth_gbs']:.1f} GB/s, "
             f"{args.threads} threads summing a 2 GB array (rounds: {', '.join(f'{x:.1f}' for x in samples['bandwidth_gbs'])}); "
             f"NumPy's own float32 matrix-vector product reads {ceilings['numpy_matvec_gbs']:.1f} GB/s",
             "",
             "| " + " | ".join(["metric"] + impls + [f"{a} / {b}" for a, b in ratios]
                               + [f"{impl} vs machine ceiling" for impl in ours]) + " |",
             "|---" * (1 + len(impls) + len(ratios) + len(ours)) + "|"]
    for m in metrics:
        vals = [best[impl].get(m) for impl in impls]
        cells = [f"{v:.3g}" if v is not None else "-" for v in vals]
        cells += [f"{best[a][m] / best[b][m]:.2f}" if best[a].get(m) and best[b].get(m) else "-" for a, b in ratios]
        cells += [frac[impl].get(m, "") for impl in ours]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    with open(args.json, "w") as f:
        json.dump({"command": " ".join(sys.argv), "model": args.model, "threads": args.threads, "machine": machine(),
                   "ceilings": ceilings, "ceiling_rounds": samples, "results": best, "fractions": frac}, f, indent=2)
    if generated and args.delete:
        import shutil
        shutil.rmtree(args.model)


def score_table(args, cfg, impls, generated):
    """--score: scoring rate of each implementation per window length, interleaved rounds, best round."""
    best = {impl: {} for impl in impls}
    for r in range(args.repeats):
        for impl in impls:
            res = run_worker(impl, args)
            print(f"round {r + 1} {impl} (score): {res}", file=sys.stderr)
            for k, v in res.items():
                if isinstance(v, str) or "mean_logprob" in k:
                    best[impl][k] = v
                elif k in ("load_s", "peak_rss_mb"):
                    best[impl][k] = min(v, best[impl].get(k, v))
                else:
                    best[impl][k] = max(v, best[impl].get(k, v))
    lines = [f"model: {args.model} ({cfg.model_type}, {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, "
             f"vocab {cfg.vocab_size}); threads {args.threads}; scoring one window of each length", "",
             "| metric | npqwen | transformers | npqwen / transformers |", "|---|---|---|---|"]
    for m in [f"score_{n}_{x}" for n in args.lengths for x in ("tok_s", "mean_logprob")] + ["peak_rss_mb"]:
        a, b = best[impls[0]].get(m), best.get("transformers", {}).get(m)
        ratio = f"{a / b:.2f}" if b and "mean_logprob" not in m else "-"
        fmt = (lambda x: f"{x:.6f}") if "mean_logprob" in m else (lambda x: f"{x:.3g}")
        lines.append(f"| {m} | {fmt(a)} | {fmt(b) if b is not None else '-'} | {ratio} |")
    print("\n".join(lines))
    with open(args.json, "w") as f:
        json.dump({"command": " ".join(sys.argv), "model": args.model, "threads": args.threads, "score": True,
                   "results": best}, f, indent=2)
    if generated and args.delete:
        import shutil
        shutil.rmtree(args.model)


if __name__ == "__main__":
    main()
