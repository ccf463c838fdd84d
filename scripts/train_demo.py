"""Train npqwen's tiny demo model with transformers' own Qwen2ForCausalLM. Not used by the package.

The demo exists so that a new user's first run of npqwen shows real language. Everything is
rebuilt offline and deterministically (fixed seeds, 2 CPU threads):

1. the corpus of scripts/demo_corpus.py (hand-written Chinese/English text, proverbs, ChatML
   dialogues, the Zen of Python and standard-library docstrings), ~5% held out for validation;
2. a Qwen2-style byte-level BPE tokenizer trained with `tokenizers` on the training split:
   NFC normalizer, the Split regex of Qwen2's tokenizer.json followed by ByteLevel, ByteLevel
   decoder, and <|endoftext|>, <|im_start|>, <|im_end|> as special tokens right after the
   regular vocabulary. While learning merges (only then) every CJK character is its own piece,
   so no merge crosses a CJK character boundary and Chinese is tokenized one character at a
   time. Without this, BPE learns ",不进则退" as one token from the repeated proverb and the
   acceptance prompt "学习如逆水行舟,不进则" ends on a token the model has never seen there;
3. a tiny tied-embedding GQA Qwen2ForCausalLM trained with AdamW for a fixed number of steps
   (about 20 minutes on 2 CPU cores) on rows that each start at a document start, the corpus's
   own written documents repeated 4 times per epoch (they are ~11% of the tokens otherwise,
   the rest being docstrings), saved in bf16 under golden/checkpoints/demo/ with
   tokenizer.json and tokenizer_config.json (Qwen2-Instruct's ChatML template);
4. from the saved bf16 weights loaded back in float32 with eager attention: held-out per-token
   perplexity against an add-one unigram baseline, the acceptance check (greedy next token after
   "学习如逆水行舟,不进则" is 退) and a few greedy continuations, all written with the settings,
   wall time and versions to golden/references/demo_train.json;
5. golden references for three prompts with export_golden.run(): golden/references/demo.*.

generation_config.json asks for greedy decoding (do_sample false, no repetition penalty): the
demo's first run is then deterministic and equals the `generated` tokens of the references.
(A repetition_penalty there would silently change transformers' greedy output too.)

    /opt/goldenv/bin/python scripts/train_demo.py                    # everything, ~25 minutes
    /opt/goldenv/bin/python scripts/train_demo.py --references-only  # step 5 on the saved folder

The corpus's standard-library part depends on the Python version (3.11 here), so a rebuild on
another version trains on slightly different text; demo_train.json records the corpus sha256.
"""

import argparse
import hashlib
import json
import math
import os
import platform
import re
import sys
import time

import numpy as np
import safetensors
import tokenizers
import torch
import transformers
from safetensors.numpy import save_file
from safetensors.torch import load_file as load_torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import Qwen2Config, Qwen2ForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import demo_corpus  # noqa: E402
from export_golden import GENERATE_NEW_TOKENS, GOLDEN, load, run  # noqa: E402

CKPT, REF = os.path.join(GOLDEN, "checkpoints"), os.path.join(GOLDEN, "references")
FOLDER = os.path.join(CKPT, "demo")
QWEN2_TOKENIZER = os.path.join(HERE, "..", "..", "shared", "assets", "qwen2", "tokenizer.json")

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# The Split pattern of Qwen2's tokenizer.json (checked against it when ../shared is present).
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
CJK_CHAR = re.compile("([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff])")
# Qwen2-Instruct's tokenizer_config.json chat template, verbatim.
CHAT_TEMPLATE = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                 "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
                 "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
                 "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

VOCAB = 4000  # regular tokens; the three special tokens follow
MODEL = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=8,
             num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-6, tie_word_embeddings=True,
             rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, initializer_range=0.02)
TRAIN = dict(seed=0, threads=2, seq_len=512, batch_size=8, steps=1150, peak_lr=3e-3, warmup_steps=50,
             final_lr_fraction=0.1, weight_decay=0.1, betas=(0.9, 0.95), grad_clip=1.0, eval_every=250,
             written_repeat=4)  # documents written for the corpus are seen 4 times per epoch, docstrings once

PROVERB_PROMPT = "学习如逆水行舟,不进则"
ENGLISH_PROMPTS = ["Once upon a time, there was a", "Beautiful is better than", "Python is a"]
CHAT_MESSAGES = [{"role": "user", "content": "你好,请介绍一下你自己。"}]
CHECK_NEW_TOKENS = 40


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------- tokenizer
def build_tokenizer(train_texts):
    tok = Tokenizer(models.BPE(dropout=None, unk_token=None, continuing_subword_prefix="",
                               end_of_word_suffix="", fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, min_frequency=2, show_progress=False, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    # Learn merges on the text between special tokens, with every CJK character a piece of its own.
    specials = re.compile("|".join(map(re.escape, SPECIAL)))
    pieces = [q for t in train_texts for p in specials.split(t) for q in CJK_CHAR.split(p) if q]
    tok.train_from_iterator(pieces, trainer)
    assert tok.get_vocab_size() == VOCAB
    # Serialize these exactly as Qwen2's tokenizer.json does (the Python ByteLevel decoder drops its
    # arguments, BPE writes null for ""); neither changes how text is encoded or decoded.
    spec = json.loads(tok.to_str())
    spec["decoder"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    spec["model"]["continuing_subword_prefix"] = spec["model"]["end_of_word_suffix"] = ""
    tok = Tokenizer.from_str(json.dumps(spec))
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIAL])
    assert [tok.token_to_id(s) for s in SPECIAL] == [VOCAB, VOCAB + 1, VOCAB + 2]
    return tok


def check_tokenizer_structure(path):
    """Same pipeline as Qwen2's tokenizer.json: every section but the learned vocabulary."""
    if not os.path.exists(QWEN2_TOKENIZER):
        log(f"({QWEN2_TOKENIZER} not found: structure not compared)")
        return
    with open(QWEN2_TOKENIZER) as f:
        qwen = json.load(f)
    with open(path) as f:
        ours = json.load(f)
    for key in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
        assert ours[key] == qwen[key], key
    for key, value in qwen["model"].items():
        if key not in ("vocab", "merges"):
            assert ours["model"][key] == value, key
    strip = lambda toks: [{k: v for k, v in t.items() if k != "id"} for t in toks]  # noqa: E731
    assert strip(ours["added_tokens"]) == strip(qwen["added_tokens"][:3])


def tokenizer_config():
    decoder = {str(VOCAB + i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                                "single_word": False, "special": True} for i, s in enumerate(SPECIAL)}
    return {"add_prefix_space": False, "added_tokens_decoder": decoder,
            "additional_special_tokens": ["<|im_start|>", "<|im_end|>"], "bos_token": None,
            "chat_template": CHAT_TEMPLATE, "clean_up_tokenization_spaces": False, "eos_token": "<|im_end|>",
            "errors": "replace", "model_max_length": MODEL["max_position_embeddings"],
            "pad_token": "<|endoftext|>", "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer",
            "unk_token": None}


# ---------------------------------------------------------------------------------- training
def encode(tok, texts, eot):
    """One id list per document, each followed by <|endoftext|>."""
    return [e.ids + [eot] for e in tok.encode_batch(texts)]


def training_units(train_docs, written, seq_len, repeat=None):
    """The epoch's units: documents longer than a row cut into row-sized pieces, and the documents
    written for the corpus repeated `repeat` (default TRAIN["written_repeat"]) times."""
    repeat = TRAIN["written_repeat"] if repeat is None else repeat
    units = []
    for ids, w in zip(train_docs, written):
        pieces = [ids[i:i + seq_len] for i in range(0, len(ids), seq_len)]
        units += pieces * (repeat if w else 1)
    return units


def batches(units, seq_len, batch_size, rng):
    """Endless batches. Each epoch takes the units in a new seeded order; every row starts at the
    start of a unit (a prompt, too, starts at position 0 with nothing before it) and is filled with
    whole units; the unit that overflows the row is cut and the rest of it dropped this epoch."""
    rows, row = [], []
    while True:
        for i in rng.permutation(len(units)):
            row.extend(units[i])
            if len(row) >= seq_len:
                rows.append(row[:seq_len])
                row = []
            if len(rows) == batch_size:
                yield torch.tensor(rows, dtype=torch.long)
                rows = []


def windows(stream, seq_len):
    return [stream[i:i + seq_len] for i in range(0, len(stream) - 1, seq_len) if len(stream[i:i + seq_len]) > 1]


@torch.no_grad()
def mean_nll(model, stream, seq_len):
    """Per-token negative log-likelihood over non-overlapping windows (first token of each unscored)."""
    total, n = 0.0, 0
    for w in windows(stream, seq_len):
        ids = torch.tensor([w])
        logits = model(input_ids=ids).logits[0, :-1].float()
        total += torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
        n += len(w) - 1
    return total / n, n


def lr_at(step, t=TRAIN):
    if step < t["warmup_steps"]:
        return t["peak_lr"] * (step + 1) / t["warmup_steps"]
    progress = (step - t["warmup_steps"]) / max(1, t["steps"] - t["warmup_steps"])
    return t["peak_lr"] * (t["final_lr_fraction"] + (1 - t["final_lr_fraction"]) * 0.5 * (1 + math.cos(math.pi * progress)))


def special_ids(tok):
    """bos, eos and pad ids for the model's config, from the tokenizer."""
    ids = {s: tok.token_to_id(s) for s in SPECIAL}
    return dict(bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])


def train(tok, units, valid_stream, steps):
    torch.manual_seed(TRAIN["seed"])
    config = Qwen2Config(vocab_size=tok.get_vocab_size(), **special_ids(tok), **MODEL)
    model = Qwen2ForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params:,} parameters")
    curve, seconds = fit(model, units, valid_stream, steps)
    return model, n_params, curve, seconds


def fit(model, units, valid_stream, steps, t=TRAIN):
    """AdamW on `model` (weight decay on matrices only) for `steps` batches of `units`, the learning
    rate of lr_at, the validation NLL every t["eval_every"] steps. -> the curve, the seconds taken."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": t["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=t["peak_lr"], betas=t["betas"])
    data = batches(units, t["seq_len"], t["batch_size"], np.random.default_rng(t["seed"]))
    curve, start, smooth = [], time.time(), None
    for step in range(steps):
        model.train()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, t)
        x = next(data)
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t["grad_clip"])
        opt.step()
        smooth = loss.item() if smooth is None else 0.95 * smooth + 0.05 * loss.item()
        done = step + 1
        if done % 25 == 0 or done == steps:
            el = time.time() - start
            log(f"step {done}/{steps}  loss {loss.item():.3f} (avg {smooth:.3f})  lr {lr_at(step, t):.2e}  "
                f"{el:.0f}s  {done * x.numel() / el:.0f} tok/s  eta {el / done * (steps - done):.0f}s")
        if done % t["eval_every"] == 0 or done == steps:
            model.eval()
            nll, _ = mean_nll(model, valid_stream, t["seq_len"])
            curve.append({"step": done, "train_loss_avg": round(smooth, 4), "valid_nll": round(nll, 4),
                          "elapsed_s": round(time.time() - start, 1)})
            log(f"  valid: nll {nll:.3f}  ppl {math.exp(nll):.1f}")
    return curve, time.time() - start


def save(model, tok):
    save_folder(model, tok, FOLDER)
    check_tokenizer_structure(os.path.join(FOLDER, "tokenizer.json"))


def save_folder(model, tok, folder):
    """The model in bf16 with a greedy generation_config.json, tokenizer.json and tokenizer_config.json
    (the folder emptied first)."""
    ids = {s: tok.token_to_id(s) for s in SPECIAL}
    os.makedirs(folder, exist_ok=True)
    for f in os.listdir(folder):
        os.remove(os.path.join(folder, f))
    gc = model.generation_config
    gc.bos_token_id, gc.pad_token_id = ids["<|endoftext|>"], ids["<|endoftext|>"]
    gc.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    gc.do_sample = False
    model.to(torch.bfloat16).save_pretrained(folder)
    tok.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(tokenizer_config(), f, indent=2, ensure_ascii=False)
        f.write("\n")


# ---------------------------------------------------------------------------------- evaluation
def load_saved():
    model = Qwen2ForCausalLM.from_pretrained(FOLDER, dtype=torch.float32, attn_implementation="eager").eval()
    return model, Tokenizer.from_file(os.path.join(FOLDER, "tokenizer.json"))


def chat_prompt(folder=FOLDER):
    """The chat prompt as transformers renders it from tokenizer_config.json."""
    hf_tok = transformers.AutoTokenizer.from_pretrained(folder)
    return hf_tok.apply_chat_template(CHAT_MESSAGES, tokenize=False, add_generation_prompt=True), hf_tok


@torch.no_grad()
def greedy(model, tok, text, n=CHECK_NEW_TOKENS):
    ids = torch.tensor([tok.encode(text).ids])
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n)
    return out[0, ids.shape[1]:].tolist()


def evaluate(train_docs, valid_docs, saved=None, folder=FOLDER):
    """The measures of demo_train.json's "evaluation", on `saved` = (model, tokenizer) loaded from
    `folder` (default: the demo, load_saved())."""
    model, tok = saved if saved is not None else load_saved()
    seq_len = TRAIN["seq_len"]
    valid_stream = [t for d in valid_docs for t in d]
    nll, n_scored = mean_nll(model, valid_stream, seq_len)
    train_nll, _ = mean_nll(model, [t for d in train_docs for t in d], seq_len)
    # Add-one unigram over the whole vocabulary, from the training split, on the same scored tokens.
    V = model.config.vocab_size
    counts = np.bincount([t for d in train_docs for t in d], minlength=V).astype(np.float64)
    logp = np.log((counts + 1) / (counts.sum() + V))
    targets = [t for w in windows(valid_stream, seq_len) for t in w[1:]]
    assert len(targets) == n_scored
    uni_nll = float(-logp[targets].mean())

    new = greedy(model, tok, PROVERB_PROMPT)
    first = tok.decode(new[:1])
    logits = model(input_ids=torch.tensor([tok.encode(PROVERB_PROMPT).ids])).logits[0, -1]
    tui = tok.encode("退").ids
    assert len(tui) == 1, "退 is not a single token"
    p_tui = torch.softmax(logits, -1)[tui[0]].item()
    chat_text, _ = chat_prompt(folder)
    continuations = {p: tok.decode(greedy(model, tok, p)) for p in [PROVERB_PROMPT] + ENGLISH_PROMPTS}
    continuations[chat_text] = tok.decode(greedy(model, tok, chat_text))
    results = {
        "valid_tokens_scored": n_scored,
        "valid_perplexity": math.exp(nll), "valid_nll": nll,
        "unigram_add_one_valid_perplexity": math.exp(uni_nll), "unigram_add_one_valid_nll": uni_nll,
        "train_perplexity": math.exp(train_nll),
        "acceptance": {"prompt": PROVERB_PROMPT, "prompt_tokens": [tok.id_to_token(i) for i in tok.encode(PROVERB_PROMPT).ids],
                       "first_generated_id": new[0], "first_generated_text": first, "p_退": p_tui,
                       "passed": first == "退"},
        "greedy_continuations": continuations,
    }
    log(f"valid perplexity {results['valid_perplexity']:.2f}  (unigram add-one {results['unigram_add_one_valid_perplexity']:.2f}, "
        f"train {results['train_perplexity']:.2f})")
    for p, c in continuations.items():
        log(f"  {p!r} -> {c!r}")
    log(f"acceptance: next token after {PROVERB_PROMPT!r} is {first!r} (p={p_tui:.3f})")
    return results


# ---------------------------------------------------------------------------------- references
def export_references():
    """Golden references of the saved demo, written as export_golden.py writes them."""
    torch.set_num_threads(TRAIN["threads"])
    tok = Tokenizer.from_file(os.path.join(FOLDER, "tokenizer.json"))
    chat_text, hf_tok = chat_prompt()
    texts = [PROVERB_PROMPT, ENGLISH_PROMPTS[0], chat_text]
    saved = load_torch(os.path.join(FOLDER, "model.safetensors"))  # bf16: read through torch
    arrays, meta = {}, {"case": "demo", "dtype": "bfloat16", "sharded": False, "config_form": "5.x", "prompts": []}
    for k, text in enumerate(texts):
        enc = tok.encode(text).ids
        assert hf_tok(text)["input_ids"] == enc, "transformers and tokenizers disagree"
        ids = np.array([enc], np.int64)
        mask = np.ones_like(ids)
        loaded = load("qwen2", FOLDER)
        out, new_tokens = run(loaded, ids, mask)
        state = loaded.state_dict()
        for name, w in saved.items():  # the reloaded model holds exactly the saved bf16 weights
            assert w.dtype == torch.bfloat16 and torch.equal(w.float(), state[name]), name
        arrays[f"p{k}.input_ids"] = ids
        arrays[f"p{k}.attention_mask"] = mask
        arrays[f"p{k}.logits"] = out.logits.numpy().astype(np.float32)
        for i, h in enumerate(out.hidden_states):
            arrays[f"p{k}.hidden.{i}"] = h.numpy().astype(np.float32)
        arrays[f"p{k}.generated"] = new_tokens
        top2 = np.sort(out.logits.numpy(), axis=-1)[..., -2:]
        margin = float((top2[..., 1] - top2[..., 0])[mask == 1].min())
        meta["prompts"].append({"lengths": [len(enc)], "min_top2_margin": margin,
                                "hidden_states": len(out.hidden_states), "text": text,
                                "generated_text": tok.decode(new_tokens[0].tolist(), skip_special_tokens=False)})
        log(f"p{k}: {len(enc)} tokens, margin {margin:.4f}, {text!r} -> {meta['prompts'][-1]['generated_text']!r}")
    save_file(arrays, os.path.join(REF, "demo.safetensors"))
    meta["transformers"], meta["torch"] = transformers.__version__, torch.__version__
    meta["layer_types"] = loaded.config.layer_types
    meta["rope_parameters"] = loaded.config.rope_parameters
    meta["generate_new_tokens"] = GENERATE_NEW_TOKENS
    with open(os.path.join(REF, "demo.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")


# ---------------------------------------------------------------------------------- main
def folder_size(folder=FOLDER):
    return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))


def versions():
    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
            "safetensors": safetensors.__version__, "numpy": np.__version__,
            "platform": platform.platform()}


def corpus():
    """The split's texts, which training documents were written for the corpus, and the corpus's sha256."""
    train_split, valid_split = demo_corpus.load_split()
    train_texts, valid_texts = [t for _, t in train_split], [t for _, t in valid_split]
    written = [demo_corpus.is_written(g) for g, _ in train_split]
    corpus_sha = hashlib.sha256("\0".join(train_texts + ["\0"] + valid_texts).encode()).hexdigest()
    return train_texts, valid_texts, written, corpus_sha


def corpus_record(train_texts, valid_texts, written, corpus_sha, train_docs, valid_docs):
    return {"train_documents": len(train_texts), "valid_documents": len(valid_texts),
            "train_tokens": sum(map(len, train_docs)), "valid_tokens": sum(map(len, valid_docs)), "sha256": corpus_sha,
            "train_tokens_written_here": sum(len(d) for d, w in zip(train_docs, written) if w),
            "proverb_occurrences_in_train": sum(t.count(demo_corpus.PROVERB) for t in train_texts)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--references-only", action="store_true", help="only re-export golden/references/demo.*")
    ap.add_argument("--steps", type=int, default=TRAIN["steps"], help="training steps (default: the recorded budget)")
    args = ap.parse_args()
    torch.set_num_threads(TRAIN["threads"])
    torch.use_deterministic_algorithms(True)
    if args.references_only:
        export_references()
        return
    TRAIN["steps"] = args.steps
    t0 = time.time()
    train_texts, valid_texts, written, corpus_sha = corpus()
    tok = build_tokenizer(train_texts)
    eot = tok.token_to_id("<|endoftext|>")
    train_docs, valid_docs = encode(tok, train_texts, eot), encode(tok, valid_texts, eot)
    n_train, n_valid = sum(map(len, train_docs)), sum(map(len, valid_docs))
    log(f"corpus: {len(train_texts)} train documents ({n_train} tokens), {len(valid_texts)} validation "
        f"documents ({n_valid} tokens); tokenizer {tok.get_vocab_size()} tokens")
    units = training_units(train_docs, written, TRAIN["seq_len"])
    epoch_tokens = sum(map(len, units))
    log(f"epoch: {len(units)} units, {epoch_tokens} tokens ({TRAIN['written_repeat']}x the written documents)")
    model, n_params, curve, train_s = train(tok, units, [t for d in valid_docs for t in d], TRAIN["steps"])
    save(model, tok)
    results = evaluate(train_docs, valid_docs)
    tokens_seen = TRAIN["steps"] * TRAIN["seq_len"] * TRAIN["batch_size"]
    report = {
        "model": {**MODEL, "vocab_size": tok.get_vocab_size(), "parameters": n_params, "saved_dtype": "bfloat16",
                  "folder_bytes": folder_size()},
        "tokenizer": {"regular_vocab": VOCAB, "total_vocab": tok.get_vocab_size(),
                      "special_tokens": {s: tok.token_to_id(s) for s in SPECIAL},
                      "merges_never_cross_cjk_characters": True},
        "training": {**TRAIN, "optimizer": "AdamW", "schedule": "linear warmup, cosine decay",
                     "packing": "rows start at a document start; the overflowing document is cut",
                     "epoch_tokens": epoch_tokens, "tokens_seen": tokens_seen,
                     "epochs_approx": tokens_seen / epoch_tokens, "train_seconds": train_s,
                     "total_seconds": None, "curve": curve},
        "corpus": corpus_record(train_texts, valid_texts, written, corpus_sha, train_docs, valid_docs),
        "evaluation": results,
        "versions": versions(),
    }
    export_references()
    report["training"]["total_seconds"] = time.time() - t0
    with open(os.path.join(REF, "demo_train.json"), "w") as f:
        json.dump(report, f, indent=2, ensure_ascii=False)
        f.write("\n")
    log(f"done in {time.time() - t0:.0f}s (training {train_s:.0f}s); {FOLDER}: {folder_size() / 1e6:.2f} MB")
    if not results["acceptance"]["passed"]:
        sys.exit("acceptance check failed: the next token after the proverb prompt is not 退")


if __name__ == "__main__":
    main()
