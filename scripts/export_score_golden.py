"""Export golden data for scoring and --logprobs from transformers, once. Not used by the package or its tests.

Writes golden/references/scoring.safetensors and scoring.json (and the two texts, scoring_short.txt
and scoring_long.txt, which the README's commands score), all computed with transformers 5.23.0 in
float32 with eager attention on checkpoints already under golden/checkpoints/:

* demo, a few-hundred-token text in one window: every token's log-probability (torch.log_softmax of
  the logits), its rank and the 5 most likely tokens, and the perplexity;
* demo, a text longer than its 512-token context, by the strided recipe of transformers' docs
  ("Perplexity of fixed-length models": windows of 512 tokens, stride 256; the second one shorter,
  ending the text): the per-token values of
  each window's newly covered tokens, the exact perplexity over them, and the perplexity the docs'
  sample code prints (its loss-weighted mean, kept to check how the two relate);
* gqa3_bf16 (no tokenizer), documents of random ids, each scored alone and unpadded, and one of them
  by the recipe with a 64-token window and stride 24;
* demo, `generate(..., output_scores=True, output_logits=True)`: greedy with a repetition penalty
  (tokens, and each one's log-probability under the processed scores with the 5 most likely), and a
  sampled run (temperature, top-k, top-p, min-p and a penalty), whose raw logits and processed
  log-probabilities at every step let the tests check npqwen's processors on the very same inputs.

    /tmp/goldenv/bin/python scripts/export_score_golden.py      # torch 2.13.0 + transformers 5.23.0
"""

import json
import os

import numpy as np
import torch
import transformers
from safetensors.numpy import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKPOINTS = os.path.join(HERE, "..", "golden", "checkpoints")
REFERENCES = os.path.join(HERE, "..", "golden", "references")
TOP = 5

SHORT = """\
The river town wakes before the sun. The baker lights his oven, the ferryman checks his ropes, and
the children walk to school along the water. A boat moves slowly against the current, and the old
teacher on the bank watches it and says to the children: "Learning is like rowing upstream. If you
do not move forward, you fall back." The children laugh, because they have heard this many times,
but they remember it.

In the afternoon the wind turns, and the river is quiet. A little bird sits on the roof of the
school and sings. The teacher writes a proverb on the board: 学习如逆水行舟,不进则退. Then she
asks each child to explain it in their own words. One says that a day without practice is a day
lost. Another says that a small step every morning is better than a long run once a month. The
teacher nods and writes their answers under the proverb.

When the lesson ends, the children run down to the water to watch the boats come home. The
ferryman waves. The baker closes his shop. The town is quiet again, and the river keeps moving.
"""

LONG = SHORT + """
Many years later, one of those children became an engineer. She built a small program that could
read a sentence and guess the next word. At first the program was very bad at it. It guessed "the"
after every word, because "the" was the most common word it had seen. She gave it more text to
read, and slowly it learned that "once upon a" is usually followed by "time", that a question
often ends with a question mark, and that a list of numbers tends to go up.

The program could only look at a limited number of words at once. For a long book she moved a
window over the text. Each time, the window started a little further on, but it always kept some of
the words it had already seen, so that the first new word in the window still had context. She
counted every word exactly once, and she was careful not to count the words that only served as
context. Her friends, who used other programs, asked her how to compare their numbers with hers.
She told them to use the same text, the same window and the same stride, and to check the
probability of every single word, not only the average, because two different mistakes can give
the same average.

In spring the ice broke and the river moved again. The ferryman, who had a grey beard now, checked
his ropes. The baker's daughter lit the oven. The children walked to school along the water, and a
boat moved slowly against the current.
"""


def load(case):
    return AutoModelForCausalLM.from_pretrained(os.path.join(CHECKPOINTS, case), dtype=torch.float32,
                                                attn_implementation="eager").eval()


def windows(n, context, stride):
    """The docs' loop: (begin, end, number of new tokens trg_len) per window."""
    out, prev_end = [], 0
    for begin in range(0, n, stride):
        end = min(begin + context, n)
        out.append((begin, end, end - prev_end))
        prev_end = end
        if end == n:
            break
    return out


def score(model, ids, context, stride, arrays, name):
    """Per-token log-probabilities, ranks and top tokens of ids[1:], window by window as the recipe
    scores them, and the perplexity the recipe's sample code prints."""
    ids_t = torch.tensor([ids])
    lp, rank, top_ids, top_lp = [], [], [], []
    nll_sum, n_tokens = 0.0, 0
    for begin, end, trg_len in windows(len(ids), context, stride):
        input_ids = ids_t[:, begin:end]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            out = model(input_ids, labels=target_ids)
        # the recipe's accumulation, verbatim in substance
        num_loss_tokens = (target_ids != -100).sum().item() - target_ids.size(0)
        nll_sum += out.loss.item() * num_loss_tokens
        n_tokens += num_loss_tokens
        # every newly covered token but a window's (and the text's) first, from the position before it
        first = max(end - trg_len, begin + 1)
        logprobs = torch.log_softmax(out.logits[0].float(), dim=-1)[first - begin - 1:end - begin - 1]
        targets = input_ids[0, first - begin:end - begin]
        picked = logprobs.gather(-1, targets[:, None])[:, 0]
        lp.append(picked)
        rank.append(1 + (logprobs > picked[:, None]).sum(-1))
        t = logprobs.topk(TOP, dim=-1)
        top_ids.append(t.indices)
        top_lp.append(t.values)
    cat = lambda xs: torch.cat(xs).numpy()
    arrays[f"{name}.ids"] = np.array(ids, np.int64)
    arrays[f"{name}.logprobs"] = cat(lp)
    arrays[f"{name}.ranks"] = cat(rank).astype(np.int64)
    arrays[f"{name}.top_ids"] = cat(top_ids).astype(np.int64)
    arrays[f"{name}.top_logprobs"] = cat(top_lp)
    exact = -float(np.sum(arrays[f"{name}.logprobs"], dtype=np.float64)) / (len(ids) - 1)
    return {"tokens": len(ids), "scored": len(arrays[f"{name}.logprobs"]), "context": context, "stride": stride,
            "windows": len(windows(len(ids), context, stride)), "mean_nll": exact, "perplexity": float(np.exp(exact)),
            "recipe_perplexity": float(np.exp(nll_sum / n_tokens)), "recipe_n_tokens": n_tokens}


def generation(model, tok, arrays, meta):
    prompt = tok("The river", return_tensors="pt").input_ids
    model.generation_config.eos_token_id = None  # no stop and no eos suppression: every step is scored
    runs = {"greedy": dict(do_sample=False, repetition_penalty=1.3),
            "sampled": dict(do_sample=True, temperature=0.7, top_k=20, top_p=0.9, min_p=0.05,
                            repetition_penalty=1.1)}
    for name, kw in runs.items():
        torch.manual_seed(0)
        with torch.no_grad():
            out = model.generate(prompt, max_new_tokens=16, output_scores=True, output_logits=True,
                                 return_dict_in_generate=True, pad_token_id=0, **kw)
        new = out.sequences[0, prompt.shape[1]:]
        lp = torch.log_softmax(torch.stack(out.scores)[:, 0].float(), dim=-1)       # [n, V]
        arrays[f"gen_{name}.prompt"] = prompt[0].numpy().astype(np.int64)
        arrays[f"gen_{name}.ids"] = new.numpy().astype(np.int64)
        arrays[f"gen_{name}.logprob"] = lp.gather(-1, new[:, None])[:, 0].numpy()
        t = lp.topk(TOP, dim=-1)
        arrays[f"gen_{name}.top_ids"] = t.indices.numpy().astype(np.int64)
        arrays[f"gen_{name}.top_logprobs"] = t.values.numpy()
        if kw["do_sample"]:  # the inputs and outputs of the processors at every step
            arrays[f"gen_{name}.raw_logits"] = torch.stack(out.logits)[:, 0].float().numpy()
            arrays[f"gen_{name}.scores_logprobs"] = lp.numpy()
        meta[f"gen_{name}"] = {k: v for k, v in kw.items()}


def main():
    arrays, meta = {}, {"transformers": transformers.__version__, "torch": torch.__version__,
                        "dtype": "float32", "attn_implementation": "eager"}
    demo = load("demo")
    tok = AutoTokenizer.from_pretrained(os.path.join(CHECKPOINTS, "demo"))
    context = demo.config.max_position_embeddings
    for name, text in (("short", SHORT), ("long", LONG)):
        with open(os.path.join(REFERENCES, f"scoring_{name}.txt"), "w", encoding="utf-8") as f:
            f.write(text)
        ids = tok(text).input_ids
        meta[f"demo_{name}"] = score(demo, ids, context, context // 2, arrays, f"demo_{name}")
        meta[f"demo_{name}"]["file"] = f"scoring_{name}.txt"
    assert meta["demo_short"]["windows"] == 1 and meta["demo_long"]["windows"] == 2

    gqa = load("gqa3_bf16")
    gen = torch.Generator().manual_seed(16)
    meta["gqa3_docs"] = []
    for d, n in enumerate((37, 150, 81)):
        ids = torch.randint(0, gqa.config.vocab_size, (n,), generator=gen).tolist()
        meta["gqa3_docs"].append(score(gqa, ids, n, 1, arrays, f"gqa3_doc{d}"))
    meta["gqa3_strided"] = score(gqa, arrays["gqa3_doc1.ids"].tolist(), 64, 24, arrays, "gqa3_strided")

    generation(demo, tok, arrays, meta)
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, os.path.join(REFERENCES, "scoring.safetensors"))
    with open(os.path.join(REFERENCES, "scoring.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
    for k in ("demo_short", "demo_long", "gqa3_strided"):
        print(k, {x: meta[k][x] for x in ("tokens", "windows", "perplexity", "recipe_perplexity")})


if __name__ == "__main__":
    main()
