"""Image input, side by side: npqwen against transformers on the same weights, image, threads and machine.

    python scripts/bench_vision.py                  # Qwen3.5-0.8B with its tower, random bf16 weights (cached)
    python scripts/bench_vision.py --size 1024 --repeats 3 --weights float32 bf16

For one image of --size x --size pixels (random pixels; 1024 x 1024 is 4096 patches of 16), each
implementation in its own process (so each peak resident memory is its own), the two interleaved over
--repeats rounds so that machine drift cancels, the best round counting:
  encode   the vision tower alone: pixel_values -> the image's tokens (transformers: model.visual)
  ttft     time to first token of a one-image chat: the prompt (the image's tokens and a short text)
           through the tower and the language model, and the first token chosen
  peak     the process's peak resident memory (VmHWM), load included
The checkpoint is Qwen3.5-0.8B's text model (../shared/assets, its released config.json) with a vision
tower of 12 blocks 768 wide (the release's depth and width); its other numbers are assumptions, as the
shared config omits vision_config: 12 heads, MLP 3072, 2304 learned positions (48 x 48), patch 16, merge 2.
Prints the CPU and BLAS with the table. Benchmark on a quiet machine, OPENBLAS_CORETYPE unset.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
from bench import CACHE, machine, peak_rss_mb  # noqa: E402

VISION = dict(depth=12, hidden_size=768, intermediate_size=3072, num_heads=12, in_channels=3, patch_size=16,
              spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=1024, num_position_embeddings=2304,
              hidden_act="gelu_pytorch_tanh", model_type="qwen3_5")
PREPROCESSOR = {"patch_size": 16, "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5, 0.5, 0.5],
                "image_std": [0.5, 0.5, 0.5], "size": {"shortest_edge": 65536, "longest_edge": 16777216},
                "image_processor_type": "Qwen2VLImageProcessor"}
TEXT = "Describe this image."   # the chat's text, as ids after the image (the bench has no tokenizer)


def checkpoint():
    """Qwen3.5-0.8B with its tower, random bf16 weights (scripts/make_random_checkpoint.py), cached."""
    from make_random_checkpoint import write
    out = os.path.join(CACHE, "qwen3.5-0.8b-vision")
    if not os.path.isfile(os.path.join(out, "model.safetensors")):
        write(out, "qwen3.5-0.8b-vision")
        with open(os.path.join(out, "preprocessor_config.json"), "w") as f:
            json.dump(PREPROCESSOR, f, indent=2)
    return out


def inputs(model_dir, size):
    """-> pixel_values, image_grid_thw, input_ids [1, n] of a one-image chat (vision_start, the image's
    tokens, vision_end, a few text tokens)."""
    from npqwen.config import ModelConfig
    from npqwen.vision import load_image_processor
    cfg = ModelConfig.from_file(model_dir)
    img = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    pixel_values, grid = load_image_processor(model_dir)([img])
    n = int(grid.prod()) // 4
    ids = [cfg.vision_start_token_id] + [cfg.image_token_id] * n + [cfg.vision_end_token_id] + list(range(100, 110))
    return pixel_values, grid, np.asarray([ids], np.int64)


def worker_npqwen(args):
    from npqwen import load_model
    from npqwen.cache import KVCache
    from npqwen.vision.tower import encode
    pixel_values, grid, ids = inputs(args.model, args.size)
    t0 = time.perf_counter()
    model = load_model(args.model, weights=args.weights)
    res = {"load_s": time.perf_counter() - t0, "patches": int(grid.prod()), "weights": model.weights_mode}
    for _ in range(args.runs):
        t0 = time.perf_counter()
        encode(model.vision, pixel_values, grid)
        res["encode_s"] = min(res.get("encode_s", 1e9), time.perf_counter() - t0)
    for _ in range(args.runs):
        t0 = time.perf_counter()
        logits = model.forward(ids, cache=KVCache(model.config, 1, ids.shape[1] + 1), logits_to_keep=1,
                               pixel_values=pixel_values, image_grid_thw=grid).logits[0, -1]
        int(np.argmax(logits))
        res["ttft_s"] = min(res.get("ttft_s", 1e9), time.perf_counter() - t0)
    res["peak_mb"] = peak_rss_mb()
    return res


def worker_transformers(args):
    import torch
    from transformers import AutoModelForImageTextToText
    torch.set_num_threads(args.threads)
    pixel_values, grid, ids = inputs(args.model, args.size)
    pv, g, ids = torch.from_numpy(pixel_values), torch.from_numpy(grid), torch.from_numpy(ids)
    t0 = time.perf_counter()
    model = AutoModelForImageTextToText.from_pretrained(args.model, dtype=torch.float32).eval()
    res = {"load_s": time.perf_counter() - t0, "patches": int(grid.prod()), "weights": "float32",
           "attn": model.config._attn_implementation}
    mm = (ids == model.config.image_token_id).int()
    with torch.inference_mode():
        for _ in range(args.runs):
            t0 = time.perf_counter()
            model.model.visual(pv, grid_thw=g)
            res["encode_s"] = min(res.get("encode_s", 1e9), time.perf_counter() - t0)
        for _ in range(args.runs):
            t0 = time.perf_counter()
            out = model(input_ids=ids, pixel_values=pv, image_grid_thw=g, mm_token_type_ids=mm, use_cache=True,
                        logits_to_keep=1)
            int(out.logits[0, -1].argmax())
            res["ttft_s"] = min(res.get("ttft_s", 1e9), time.perf_counter() - t0)
    res["peak_mb"] = peak_rss_mb()
    return res


def run_worker(impl, args):
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    name, _, mode = impl.partition(" ")
    cmd = [sys.executable, __file__, "--worker", name, "--model", args.model, "--size", str(args.size),
           "--threads", str(args.threads), "--runs", str(args.runs), "--weights", mode or "float32"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{impl} worker failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="a vision-language checkpoint folder (default: the random Qwen3.5-0.8B one)")
    p.add_argument("--size", type=int, default=1024, help="the image's side in pixels")
    p.add_argument("--weights", nargs="+", default=["float32"], choices=("float32", "bf16"))
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--runs", type=int, default=2, help="timed runs of each measurement per process (best counts)")
    p.add_argument("--no-transformers", action="store_true")
    p.add_argument("--json", default="bench_vision.json")
    p.add_argument("--worker", choices=("npqwen", "transformers"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.weights = args.weights[0]
        print(json.dumps((worker_npqwen if args.worker == "npqwen" else worker_transformers)(args)))
        return
    args.model = args.model or checkpoint()
    impls = [f"npqwen {w}" for w in args.weights] + ([] if args.no_transformers else ["transformers"])
    best = {}
    for r in range(args.repeats):
        for impl in impls:
            res = run_worker(impl, args)
            for k, v in res.items():
                if k.endswith("_s"):
                    best.setdefault(impl, {})[k] = min(v, best.get(impl, {}).get(k, 1e9))
                elif k == "peak_mb":
                    best.setdefault(impl, {})[k] = min(v, best.get(impl, {}).get(k, 1e18))
                else:
                    best.setdefault(impl, {})[k] = v
    print(f"machine: {machine()}")
    print(f"model: {args.model}; image {args.size} x {args.size}: {best[impls[0]]['patches']} patches; "
          f"best of {args.repeats} rounds x {args.runs} runs, {args.threads} threads")
    print(f"{'':22} {'encode s':>9} {'ttft s':>8} {'peak MB':>8}" + ("   vs transformers: encode, ttft, peak"
                                                                      if "transformers" in best else ""))
    for impl in impls:
        b = best[impl]
        line = f"{impl:22} {b['encode_s']:9.3f} {b['ttft_s']:8.3f} {b['peak_mb']:8.0f}"
        if "transformers" in best and impl != "transformers":
            t = best["transformers"]
            line += f"   {t['encode_s'] / b['encode_s']:.2f}x {t['ttft_s'] / b['ttft_s']:.2f}x " \
                    f"{b['peak_mb'] / t['peak_mb']:.2f} of its memory"
        print(line)
    with open(args.json, "w") as f:
        json.dump({"machine": machine(), "size": args.size, "results": best}, f, indent=2)


if __name__ == "__main__":
    main()
