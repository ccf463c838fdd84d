"""lm-evaluation-harness against npqwen's server, and against transformers on the same checkpoint.

    python3 -m venv /tmp/evalenv && /tmp/evalenv/bin/pip install torch==2.13.0 && \\
    /tmp/evalenv/bin/pip install -c <(echo torch==2.13.0) "lm_eval[api]" accelerate -e ".[serve]"
    /tmp/evalenv/bin/python scripts/check_lm_eval.py [--model DIR]

Writes two small local tasks (no download: a JSON-lines file of proverbs and their continuations),
one scored by log-likelihood (multiple choice: each choice's log-probability, and whether it is the
greedy continuation) and one by generation (greedy until "。" or a newline). It runs lm-eval's `hf`
backend (transformers, float32) and its `local-completions` backend against `python -m npqwen.serve`
(several prompts per request, the remote tokenizer endpoints), and the generation task again through
the chat template (`local-chat-completions` against `hf`, both with --apply_chat_template), then
compares every sample: the log-likelihoods to 1e-4 relative, is_greedy and the generated texts exactly. Not a test of the suite
(it needs torch); the README quotes its output.
"""

import argparse
import glob
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ITEMS = [("学习如逆水行舟,不进则", ["退", "进", "水", "舟"]), ("千里之行,始于", ["足下", "天上", "明日", "水中"]),
         ("书山有路勤为径,学海无涯", ["苦作舟", "乐为家", "水长流", "路漫漫"]),
         ("The river flows", [" to the sea", " up the hill", " into the sky", " under stones"]),
         ("Not to advance is to", [" drop back", " fly", " sing loudly", " be red"]),
         ("少壮不努力,", ["老大徒伤悲", "明天再说吧", "水中捞月亮", "舟行万里远"]),
         ("Learning is like rowing", [" upstream", " a cake", " the moon", " seventeen"]),
         ("三人行,必有", ["我师焉", "水与舟", "退与进", "天上星"])]
TASK = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
doc_to_text: "{{{{question}}}}"
"""
MC = """output_type: multiple_choice
doc_to_choice: "{{choices}}"
doc_to_target: "{{answer}}"
metric_list:
  - metric: acc
"""
GEN = """output_type: generate_until
doc_to_target: "{{target}}"
generation_kwargs:
  until: ["。", "\\\\n"]
  max_gen_toks: 16
  do_sample: false
metric_list:
  - metric: exact_match
"""


def tasks(folder):
    data = os.path.join(folder, "proverbs.jsonl")
    with open(data, "w", encoding="utf-8") as f:
        for q, c in ITEMS:
            f.write(json.dumps({"question": q, "choices": c, "answer": 0, "target": c[0]}, ensure_ascii=False) + "\n")
    for name, rest in (("npqwen_proverbs", MC), ("npqwen_proverbs_gen", GEN)):
        with open(os.path.join(folder, name + ".yaml"), "w") as f:
            f.write(TASK.format(name=name, data=data) + rest)


def lm_eval(folder, out, model, model_args, batch, tasks="npqwen_proverbs,npqwen_proverbs_gen", chat=False):
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "lm_eval", "--model", model, "--model_args", model_args, "--batch_size", str(batch),
           "--tasks", tasks, "--include_path", folder, "--log_samples", "--output_path", out] + \
        (["--apply_chat_template"] if chat else [])
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{model} failed:\n{r.stderr[-3000:]}")
    return [line for line in r.stdout.splitlines() if line.startswith("|")]


def samples(out, task):
    path = sorted(glob.glob(f"{out}/*/samples_{task}_20*.jsonl"))[-1]
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=os.path.join(HERE, "..", "golden", "checkpoints", "demo"))
    p.add_argument("--max-length", type=int, default=512)
    args = p.parse_args()
    model = os.path.abspath(args.model)
    folder = tempfile.mkdtemp(prefix="npqwen-lm-eval-")
    tasks(folder)
    print("transformers (lm-eval hf):")
    print("\n".join(lm_eval(folder, f"{folder}/hf", "hf", f"pretrained={model},dtype=float32", 1)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "npqwen.serve", "--model", model, "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(120):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        print("npqwen (lm-eval local-completions, 4 prompts a request):")
        print("\n".join(lm_eval(folder, f"{folder}/np", "local-completions",
                                f"base_url=http://127.0.0.1:{port}/v1/completions,model={model},"
                                f"max_length={args.max_length},num_concurrent=1,max_retries=1", 4)))
        print("npqwen (lm-eval local-chat-completions, the chat template applied):")
        print("\n".join(lm_eval(folder, f"{folder}/np_chat", "local-chat-completions",
                                f"base_url=http://127.0.0.1:{port}/v1/chat/completions,model={model},"
                                f"max_length={args.max_length},num_concurrent=1,max_retries=1", 1,
                                "npqwen_proverbs_gen", chat=True)))
    finally:
        server.terminate()
    print("transformers (lm-eval hf, the chat template applied):")
    print("\n".join(lm_eval(folder, f"{folder}/hf_chat", "hf", f"pretrained={model},dtype=float32", 1,
                            "npqwen_proverbs_gen", chat=True)))
    worst, n = 0.0, 0
    for a, b in zip(samples(f"{folder}/hf", "npqwen_proverbs"), samples(f"{folder}/np", "npqwen_proverbs"), strict=True):
        for x, y in zip(a["resps"], b["resps"], strict=True):
            worst = max(worst, abs(float(x[0][0]) - float(y[0][0])) / max(1.0, abs(float(x[0][0]))))
            assert x[0][1] == y[0][1], "is_greedy differs"
            n += 1
    same = all(a["resps"] == b["resps"] for a, b in zip(samples(f"{folder}/hf", "npqwen_proverbs_gen"),
                                                        samples(f"{folder}/np", "npqwen_proverbs_gen"), strict=True))
    chat_same = all(a["resps"] == b["resps"] for a, b in zip(samples(f"{folder}/hf_chat", "npqwen_proverbs_gen"),
                                                             samples(f"{folder}/np_chat", "npqwen_proverbs_gen"),
                                                             strict=True))
    print(f"{n} log-likelihoods: worst relative difference {worst:.2e} (is_greedy equal); "
          f"generations equal: {same}; chat generations equal: {chat_same}")
    if worst > 1e-4 or not same or not chat_same:
        raise SystemExit("npqwen's server and transformers disagree")


if __name__ == "__main__":
    main()
