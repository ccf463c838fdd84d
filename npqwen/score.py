"""`python -m npqwen.score`: the log-probability of every token of a text (or of many), and its perplexity.

    text -> ids -> windows of at most --context tokens, --stride apart (transformers' recipe)
         -> per window: one forward, the LM head a block of positions at a time (logprobs.py)
         -> each token's log-probability, rank and top-k alternatives on stdout;
            tokens scored, mean negative log-likelihood and perplexity on stderr

A text longer than the window is scored as transformers' "Perplexity of fixed-length models"
recipe does: window k covers tokens [k*stride, k*stride + context) and scores only the tokens the
previous window did not reach, so every token but the first is scored exactly once, each with as
much left context as its window holds. The mean NLL is the exact mean over those tokens.

Many documents (--jsonl) are scored in left-padded batches of windows (--batch-size), each
document's first token unscored (Qwen's tokenizer adds no BOS to condition it on).
"""

import json
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from .hub import add_revision_option, resolve_model
from .cli import DEMO_MODEL, _Parser, _printable, _stdin, _utf8, model_folder, run_tool
from .config import ModelConfig
from .errors import NpqwenError
from .generation import context_limit
from .logprobs import Scores, score_rows
from .model import add_weights_option, load_model
from .progress import Progress
from .tokenizer import Tokenizer

MAX_INPUT_BYTES = 256 << 20   # far more text than a run can score (about 4 bytes a token): /dev/zero is a mistake
MAX_TOP_K = 1000
BATCH_CHUNK = 16              # windows are sorted by length within runs of BATCH_CHUNK x batch_size (less padding)


# ---------------------------------------------------------------------------------------------
# windows: transformers' strided recipe


def windows(n, context, stride):  # -> [(begin, end, first)]: forward ids[begin:end], score ids[first:end]
    """The recipe's windows over n tokens: begin = 0, stride, 2*stride, ... until one reaches the
    end; each scores the tokens after the previous window's end (the first window: all but token 0).
    stride < context, so every scored token has at least one token of context in its window."""
    out, prev_end = [], 0
    for begin in range(0, n, stride):
        end = min(begin + context, n)
        out.append((begin, end, max(prev_end, 1)))
        prev_end = end
        if end == n:
            break
    return out


def check_window(context, stride, batch_size, limit):
    """-> (context, stride) with the defaults filled in: the model's context, half of it."""
    if batch_size < 1:
        raise NpqwenError(f"--batch-size must be at least 1, found {batch_size}")
    context = limit if context is None else context
    if context < 2 or context > limit:
        raise NpqwenError(f"--context must be between 2 and the model's context of {limit} tokens, found {context}")
    stride = max(1, context // 2) if stride is None else stride
    if not 1 <= stride < context:
        raise NpqwenError(f"--stride must be at least 1 and less than --context ({context}), found {stride}: "
                          f"windows must overlap, or the first token of each would have no context and go unscored")
    return context, stride


# ---------------------------------------------------------------------------------------------
# scoring documents


@dataclass
class Window:
    doc: int
    begin: int
    end: int
    first: int


def score_documents(model, docs, context=None, stride=None, top_k=0, batch_size=8, progress=None):
    """Score documents (lists of ids, each at least 2 long). Yields (document index, Scores of its
    tokens 1..n-1), in order, as soon as each is done. progress(n), if given, is told after each
    batch how many tokens have been scored so far."""
    context, stride = check_window(context, stride, batch_size, context_limit(model.config))
    for d, ids in enumerate(docs):
        if len(ids) < 2:
            raise NpqwenError(f"document {d} has {len(ids)} token(s); scoring needs at least 2 "
                              f"(the first token has nothing before it to be predicted from)")
    all_windows = [Window(d, *w) for d, ids in enumerate(docs) for w in windows(len(ids), context, stride)]
    parts = {}                                  # document -> Scores of its windows scored so far
    left = {}                                   # document -> windows not yet scored
    for w in all_windows:
        left[w.doc] = left.get(w.doc, 0) + 1
    next_doc, scored = 0, 0
    chunk = batch_size * BATCH_CHUNK
    for c in range(0, len(all_windows), chunk):
        group = sorted(all_windows[c:c + chunk], key=lambda w: w.end - w.begin)
        for batch in _batches(group, batch_size, model.config.rope_parameters["rope_type"] == "dynamic"):
            for w, s in zip(batch, _score_windows(model, docs, batch, top_k)):
                parts.setdefault(w.doc, []).append((w.begin, s))
                left[w.doc] -= 1
            scored += sum(w.end - w.first for w in batch)
            if progress:
                progress(scored)
        while next_doc < len(docs) and left[next_doc] == 0:
            yield next_doc, Scores.concat([s for _, s in sorted(parts.pop(next_doc), key=lambda p: p[0])])
            next_doc += 1


def _batches(windows, size, one_length):
    """Consecutive runs of at most `size` windows. one_length: each run of windows of one length, for
    dynamic RoPE, which rescales by the longest row of a forward: a window scored beside a longer one
    would not get the frequencies it gets alone, in transformers' recipe."""
    batch = []
    for w in windows:
        if batch and (len(batch) == size or one_length and w.end - w.begin != batch[0].end - batch[0].begin):
            yield batch
            batch = []
        batch.append(w)
    if batch:
        yield batch


def _score_windows(model, docs, batch, top_k):
    """One forward over a batch of windows, left-padded to the longest."""
    T = max(w.end - w.begin for w in batch)
    ids = np.zeros((len(batch), T), np.int64)
    mask = np.zeros((len(batch), T), np.int64)
    first = np.empty(len(batch), np.int64)
    for r, w in enumerate(batch):
        n = w.end - w.begin
        ids[r, T - n:], mask[r, T - n:] = docs[w.doc][w.begin:w.end], 1
        first[r] = T - n + (w.first - w.begin)
    return score_rows(model, ids, None if mask.all() else mask, first, top_k)


def recipe_perplexity(logprobs, wins):
    """The perplexity the sample code of transformers' recipe prints for the same windows: it
    multiplies each window's mean loss by the number of targets less one ("the internal label
    shift"), which is right for the first window but one short for every later one, whose first
    target does have a position before it in the window. So it weights the tokens of later windows
    by (n - 1) / n and divides by one token per later window fewer than it scored.
    logprobs: [n - 1] of a document's tokens 1..n-1; wins: its windows()."""
    nll_sum, count = 0.0, 0
    for k, (begin, end, first) in enumerate(wins):
        lp = logprobs[first - 1:end - 1].astype(np.float64)
        n = len(lp) - (k > 0)
        nll_sum += -lp.mean() * n
        count += n
    return math.exp(nll_sum / count)


# ---------------------------------------------------------------------------------------------
# reading the input


def read_input(path):
    """The bytes of a file, or of standard input for None or "-"."""
    if path is None and _stdin().isatty():
        raise NpqwenError("give a text file to score, or pipe the text to standard input")
    if path is None or path == "-":
        raw, where = _stdin().buffer.read(MAX_INPUT_BYTES + 1), "standard input"
    else:
        where = _printable(path)
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_INPUT_BYTES + 1)
        except (OSError, ValueError) as e:  # ValueError: a path with a NUL byte
            raise NpqwenError(f"{where}: {getattr(e, 'strerror', None) or e}") from None
    if len(raw) > MAX_INPUT_BYTES:
        raise NpqwenError(f"{where}: more than {MAX_INPUT_BYTES >> 20} MB of text")
    return raw, where


def parse_jsonl(text, where):
    """JSON lines: each a string, or an object with "text" (a string) or "ids" (token ids). Blank
    lines are skipped. -> [(line number, text or list of ids)]"""
    docs = []
    for i, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise NpqwenError(f"{where} line {i}: not valid JSON ({e.msg} at column {e.colno})") from None
        except (ValueError, RecursionError) as e:  # an integer of thousands of digits, arrays nested 10^5 deep
            raise NpqwenError(f"{where} line {i}: not usable JSON ({str(e)[:80]})") from None
        if isinstance(d, dict) and isinstance(d.get("text"), str):
            d = d["text"]
        elif isinstance(d, dict) and isinstance(d.get("ids"), list) and all(
                isinstance(t, int) and not isinstance(t, bool) for t in d["ids"]):
            d = d["ids"]
        elif not isinstance(d, str):
            raise NpqwenError(f'{where} line {i}: expected a JSON string, {{"text": string}} or '
                              f'{{"ids": [token ids]}}, found {_printable(line.strip()[:60])}')
        docs.append((i, d))
    if not docs:
        raise NpqwenError(f"{where}: no documents (every line is blank)")
    return docs


def encode_documents(docs, tok, vocab_size, where):
    """-> lists of ids, each checked: not empty, at least 2 tokens, inside the vocabulary."""
    out = []
    for line, d in docs:
        at = f"{where}" + (f" line {line}" if line else "")
        if isinstance(d, str):
            if not d.strip():
                raise NpqwenError(f"{at}: the text is empty")
            if tok is None:
                raise NpqwenError(f"{at}: a text needs the model's tokenizer.json; give token ids "
                                  f'({{"ids": [...]}} lines with --jsonl) to score without one')
            d = tok.encode(d)
        if len(d) < 2:
            raise NpqwenError(f"{at}: {len(d)} token(s); scoring needs at least 2 (the first token has "
                              f"nothing before it to be predicted from)")
        bad = [t for t in d if not 0 <= t < vocab_size]
        if bad:
            raise NpqwenError(f"{at}: token id {bad[0]} is outside the model's vocabulary [0, {vocab_size})")
        out.append(d)
    return out


# ---------------------------------------------------------------------------------------------
# the command line


def _parser():
    p = _Parser(prog="python -m npqwen.score",
                description="Per-token log-probabilities and perplexity of a text, in NumPy, exact to transformers.")
    p.add_argument("file", nargs="?", help="a UTF-8 text file ('-' or none: standard input)")
    p.add_argument("--model", default=DEMO_MODEL, help="checkpoint folder or hub id (default: the shipped demo model)")
    add_revision_option(p)
    p.add_argument("--jsonl", action="store_true", help='the input is JSON lines, one document each: a string, '
                   '{"text": string} or {"ids": [token ids]}')
    p.add_argument("--context", type=int, help="window length in tokens (default: the model's context)")
    p.add_argument("--stride", type=int, help="how far each window starts after the previous one; must be less "
                   "than --context (default: half of it)")
    p.add_argument("--top-k", type=int, default=0, metavar="K", help="also list the K most likely tokens at each position")
    p.add_argument("--json", action="store_true", help="one JSON object per token instead of a table")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (left-padded)")
    add_weights_option(p)
    return p


def main(argv=None) -> int:
    return run_tool(_main, argv)


def _main(argv) -> int:
    args = _parser().parse_args(argv)
    if not 0 <= args.top_k <= MAX_TOP_K:  # K alternatives are kept for every position of a batch of windows
        raise NpqwenError(f"--top-k must be an integer from 0 to {MAX_TOP_K}, found {args.top_k}")
    args.model = model_folder(resolve_model(args.model, args.revision))

    t0 = time.perf_counter()  # every small file and the input are checked before the weights load
    cfg = ModelConfig.from_file(args.model)
    context, stride = check_window(args.context, args.stride, args.batch_size, context_limit(cfg))
    tok = _tokenizer(args.model, cfg)
    raw, where = read_input(args.file)
    text = _utf8(raw, where, "the text")
    docs = parse_jsonl(text, where) if args.jsonl else [(0, text)]
    docs = encode_documents(docs, tok, cfg.vocab_size, where)

    model = load_model(args.model, weights=args.weights)
    print(f"[{args.model}: {cfg.num_hidden_layers} layers, vocab {cfg.vocab_size}; weights {model.weights_mode}; "
          f"loaded in {time.perf_counter() - t0:.2f}s]", file=sys.stderr)
    wins = windows(len(docs[-1]), context, stride)
    n_windows = sum(len(windows(len(d), context, stride)) for d in docs)
    total = sum(len(d) - 1 for d in docs)
    bar = Progress("scoring: tokens", total)
    t0 = time.perf_counter()
    nll, pieces = 0.0, {}
    if not args.json:
        print("\t".join((["doc"] if args.jsonl else []) + ["pos", "id", "logprob", "rank", "token"]
                        + (["top"] if args.top_k else [])))
    for d, last in score_documents(model, docs, context, stride, args.top_k, args.batch_size, bar.update):
        nll -= float(np.sum(last.logprobs, dtype=np.float64))
        _write(d if args.jsonl else None, last, tok, args, pieces)
    bar.close()
    seconds = time.perf_counter() - t0
    mean = nll / total  # the exact mean over every token scored
    n_docs = f"{len(docs)} documents" if len(docs) > 1 else "1 document"
    print(f"[scored {total} tokens ({n_docs}, {n_windows} window{'s' if n_windows > 1 else ''} of at most "
          f"{context} tokens, stride {stride}) in {seconds:.2f}s, {total / seconds:.1f} tokens/s]", file=sys.stderr)
    print(f"mean NLL {mean:.8g} nats/token, perplexity {math.exp(mean):.8g}", file=sys.stderr)
    if len(docs) == 1 and n_windows > 1:
        print(f"(the sample code of transformers' recipe prints {recipe_perplexity(last.logprobs, wins):.8g} for "
              f"these windows: it counts one token fewer per window after the first)", file=sys.stderr)
    return 0


def _tokenizer(folder, cfg):
    """The checkpoint's tokenizer, or None when it has none (then only {"ids": ...} lines can be scored)."""
    if not os.path.isfile(os.path.join(folder, "tokenizer.json")):
        return None
    tok = Tokenizer(folder)
    tok.check_fits(cfg.vocab_size)
    return tok


def _piece(tok, i, pieces):
    """The text of one token on its own (a character split over tokens shows as U+FFFD); None without a tokenizer."""
    if tok is None:
        return None
    if i not in pieces:
        pieces[i] = tok.decode([i])
    return pieces[i]


def _write(doc, s: Scores, tok, args, pieces):
    out = []
    for j in range(len(s.ids)):
        i = int(s.ids[j])
        top = [(int(t), float(v)) for t, v in zip(s.top_ids[j], s.top_logprobs[j])]
        if args.json:
            d = {} if doc is None else {"doc": doc}
            d.update(pos=j + 1, id=i, token=_piece(tok, i, pieces), logprob=float(f"{s.logprobs[j]:.8g}"),
                     rank=int(s.ranks[j]))
            if args.top_k:
                d["top_logprobs"] = [{"id": t, "token": _piece(tok, t, pieces), "logprob": float(f"{v:.8g}")}
                                     for t, v in top]
            out.append(json.dumps(d, ensure_ascii=False))
        else:
            cols = ([str(doc)] if doc is not None else []) + [
                str(j + 1), str(i), f"{s.logprobs[j]:.6f}", str(int(s.ranks[j])),
                json.dumps(_piece(tok, i, pieces), ensure_ascii=False)]
            if args.top_k:
                cols.append(" ".join(f"{json.dumps(_piece(tok, t, pieces), ensure_ascii=False)}:{v:.4f}"
                                     for t, v in top))
            out.append("\t".join(cols))
    sys.stdout.write("\n".join(out) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
