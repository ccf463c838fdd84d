"""`python -m npqwen.compare`: the first layer where another engine's numbers leave npqwen's.

The other engine runs some token ids and saves what it computed in a safetensors file:

    input_ids          [b, t] integers                          required
    attention_mask     [b, t] 0/1 (0 = left padding)            optional
    hidden_states.{i}  [b, t, hidden_size] floats, i = 0..L     any of them, in transformers' output_hidden_states
                       convention: 0 the embeddings, i the output of decoder layer i-1, L that output after
                       the final norm. Qwen3.8-Flash-Next: [b, t, hc_count * hidden_size], the streams side by
                       side; 0 the embedding in every stream, L the last layer's output before the final
                       mixer (transformers' tie_last_hidden_states=False; flash_next.py)
    logits             [b, t, vocab_size] floats                optional

npqwen runs the same ids and reports, over the real (unpadded) positions, each hidden state's relative
error ||theirs - npqwen|| / ||npqwen|| and largest absolute difference, marking the first over the
tolerance; for the logits also how often the most likely next token agrees and the KL divergence
KL(npqwen || theirs) of each position's next-token distribution: mean, median, 99th percentile and
maximum, as llama-perplexity --kl-divergence reports them (npqwen plays the base model).
Exit status 0 when every state is within the tolerance, 1 when one is not, 2 for bad input.
"""

import os
import re
import sys
import time
from dataclasses import dataclass, field

import ml_dtypes
import numpy as np

from .hub import add_revision_option, resolve_model
from .cli import _Parser, _printable, model_folder, run_tool
from .config import ModelConfig
from .errors import NpqwenError
from .logprobs import BLOCK_FLOATS, log_softmax, logit_blocks
from .model import add_weights_option, load_model
from .tokenizer import Tokenizer
from .weights import open_safetensors

FLOATS = {np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64), np.dtype(ml_dtypes.bfloat16)}
SHOWN_DIFFERENCES = 10   # positions where the top token differs, listed one by one


# ---------------------------------------------------------------------------------------------
# reading and checking a dump


def read_dump(path, cfg) -> dict:
    """The tensors of a dump, memory-mapped, each checked against the model's config. -> {name: array}"""
    if not os.path.isfile(path):
        raise NpqwenError(f"--reference {_printable(path)}: no such file")
    t = open_safetensors(path)
    L = cfg.num_hidden_layers
    known = {"input_ids", "attention_mask", "logits"} | {f"hidden_states.{i}" for i in range(L + 1)}
    unknown = sorted(set(t) - known)
    if unknown:
        extra = (f" (the model has {L} layers: hidden states 0 to {L})"
                 if re.fullmatch(r"hidden_states\.\d+", unknown[0]) else "")
        raise NpqwenError(f"{path}: unexpected tensor {unknown[0]!r}{extra}; a dump holds input_ids, "
                          f"attention_mask, logits and hidden_states.0 to hidden_states.{L}")
    if "input_ids" not in t:
        raise NpqwenError(f"{path}: no input_ids (the token ids the other engine ran, shape [batch, seq])")
    ids = t["input_ids"]
    if ids.dtype.kind not in "iu" or ids.ndim != 2 or 0 in ids.shape:
        raise NpqwenError(f"{path}: input_ids must be integers of shape [batch, seq], found {_desc(ids)}")
    bad = ids[(ids < 0) | (ids >= cfg.vocab_size)]
    if bad.size:
        raise NpqwenError(f"{path}: input_ids holds token id {int(bad[0])}, outside the model's vocabulary "
                          f"[0, {cfg.vocab_size})")
    b, T = ids.shape
    if "attention_mask" in t:
        mask = t["attention_mask"]
        if mask.dtype.kind not in "iub" or mask.shape != ids.shape or not np.isin(mask, (0, 1)).all():
            raise NpqwenError(f"{path}: attention_mask must hold 0 and 1 in the shape of input_ids {list(ids.shape)}, "
                              f"found {_desc(mask)}")
        if not mask.any(axis=1).all():
            raise NpqwenError(f"{path}: attention_mask row {int(np.flatnonzero(~mask.any(axis=1))[0])} is all zeros")
    if "logits" not in t and not any(k.startswith("hidden_states.") for k in t):
        raise NpqwenError(f"{path}: nothing to compare: no logits and no hidden_states.{{i}}")
    for name, a in t.items():
        if name in ("input_ids", "attention_mask"):
            continue
        width, what = (cfg.vocab_size, "vocab_size") if name == "logits" else (cfg.hidden_size, "hidden_size") \
            if not cfg.hyper_connections else (cfg.hc_count * cfg.hidden_size, "hc_count * hidden_size: the streams")
        if a.dtype not in FLOATS:
            raise NpqwenError(f"{path}: {name} must be floats (F16, BF16, F32 or F64), found {_desc(a)}")
        if a.ndim != 3 or a.shape[:2] != (b, T):
            raise NpqwenError(f"{path}: {name} must have shape [{b}, {T}, {width}] (input_ids' [batch, seq] and the "
                              f"model's {what}), found {_desc(a)}")
        if a.shape[2] != width:
            from_where = "another model, or logits cut to the tokenizer's vocabulary" if name == "logits" else \
                "another model"
            raise NpqwenError(f"{path}: {name} has {a.shape[2]} {'entries' if name == 'logits' else 'features'} per "
                              f"position but the model's {what} is {width} (a dump from {from_where}?)")
    return t


def _desc(a):
    return f"{a.dtype.name} of shape {list(a.shape)}"


# ---------------------------------------------------------------------------------------------
# comparing


@dataclass
class Row:
    name: str           # hidden_states.{i} or logits
    what: str           # what that state is
    rel: float          # ||theirs - npqwen|| / ||npqwen|| over real positions
    max_abs: float


@dataclass
class LogitStats:
    agree: int                     # positions whose most likely next token is the same
    positions: int                 # real positions compared
    kl: np.ndarray                 # [positions] KL(npqwen || theirs) of each next-token distribution
    differ: list = field(default_factory=list)   # (row, position, npqwen's top id, its p, theirs, its p)


@dataclass
class Comparison:
    rows: list
    logits: LogitStats | None
    tol: float

    @property
    def first_over(self):
        """The first state (in forward order) whose relative error is over the tolerance (or NaN), else None."""
        return next((r for r in self.rows if not r.rel <= self.tol), None)


def state_name(i, L, streams=False):
    if i == 0:
        return "embeddings" + (" in every stream" if streams else "")
    return f"output of layer {i - 1}" + ((", before the final mixer" if streams else ", after the final norm")
                                         if i == L else "")


def compare(model, dump, tol=1e-4) -> Comparison:
    """Run npqwen on the dump's input_ids and compare every state the dump holds."""
    ids = np.asarray(dump["input_ids"], np.int64)
    mask = np.asarray(dump["attention_mask"], np.int64) if "attention_mask" in dump else None
    valid = np.ones(ids.shape, bool) if mask is None else mask == 1
    L = model.config.num_hidden_layers
    hidden = model.forward(ids, mask, lm_head=False, output_hidden_states=True).hidden_states
    rows = []
    for i in range(L + 1):
        if f"hidden_states.{i}" in dump:
            ours, theirs = hidden[i][valid], np.asarray(dump[f"hidden_states.{i}"], np.float32)[valid]
            rows.append(Row(f"hidden_states.{i}", state_name(i, L, model.config.hyper_connections), *_errors(theirs - ours, ours)))
    stats = None
    if "logits" in dump:
        stats, row = _compare_logits(model, hidden[-1], dump["logits"], valid)
        rows.append(row)
    return Comparison(rows, stats, tol)


def _errors(diff, ours):  # -> (relative error, max abs error)
    sq = float(np.sum(np.square(diff, dtype=np.float64)))
    return _rel(sq, float(np.sum(np.square(ours, dtype=np.float64)))), float(np.abs(diff).max(initial=0))


def _rel(diff_sq, ours_sq):
    return float(np.sqrt(diff_sq) / np.sqrt(ours_sq)) if ours_sq > 0 else (0.0 if diff_sq == 0 else np.inf)


def _compare_logits(model, normed, theirs_all, valid):
    """The logits a block of positions at a time (theirs stay memory-mapped), in float64 for the KL."""
    diff_sq = ours_sq = max_abs = 0.0
    kl, agree, differ = [], 0, []
    for a, ours in logit_blocks(model, normed, 0, normed.shape[1], BLOCK_FLOATS // 4):
        P = ours.shape[1]
        v = valid[:, a:a + P]
        ours = ours[v].astype(np.float64)                                   # [n, V] real positions only
        theirs = np.asarray(theirs_all[:, a:a + P], np.float64)[v]
        d = theirs - ours
        diff_sq += float(np.sum(d * d))
        ours_sq += float(np.sum(ours * ours))
        max_abs = max(max_abs, float(np.abs(d).max(initial=0)))
        lp, lq = log_softmax(ours), log_softmax(theirs)
        with np.errstate(invalid="ignore"):  # a NaN in theirs: a NaN KL, reported as such
            kl.append(np.sum(np.exp(lp) * (lp - lq), axis=-1))
        top_p, top_q = lp.argmax(-1), lq.argmax(-1)
        agree += int(np.sum(top_p == top_q))
        rows, pos = np.nonzero(v)
        for j in np.flatnonzero(top_p != top_q):
            differ.append((int(rows[j]), int(a + pos[j]), int(top_p[j]), float(np.exp(lp[j, top_p[j]])),
                           int(top_q[j]), float(np.exp(lq[j, top_q[j]]))))
    kl = np.concatenate(kl)
    row = Row("logits", "LM head", _rel(diff_sq, ours_sq), max_abs)
    return LogitStats(agree, len(kl), kl, sorted(differ)), row


# ---------------------------------------------------------------------------------------------
# the command line


def report(c: Comparison, tok=None) -> str:
    first = c.first_over
    lines = [f"{'state':<18}{'what':<39}{'relative error':>15}{'max abs error':>15}"]
    for r in c.rows:
        mark = f"   <- first over --tol {c.tol:g}" if r is first else ""
        lines.append(f"{r.name:<18}{r.what:<39}{r.rel:>15.3e}{r.max_abs:>15.3e}{mark}")
    s = c.logits
    if s is not None:
        q = np.percentile(s.kl, [50, 99]) if s.positions else (np.nan, np.nan)
        lines.append(f"logits: top-1 agreement {s.agree}/{s.positions} ({100 * s.agree / s.positions:.2f}%); "
                     f"KL(npqwen || dump) mean {np.mean(s.kl):.3e}, median {q[0]:.3e}, 99% {q[1]:.3e}, "
                     f"max {np.max(s.kl):.3e}")
        if s.differ:
            lines.append(f"top token differs at {len(s.differ)} position{'s' if len(s.differ) > 1 else ''}:")
            for row, pos, i, p, j, q_ in s.differ[:SHOWN_DIFFERENCES]:
                lines.append(f"  row {row} position {pos}: npqwen {_token(tok, i)} (p {p:.4f}), "
                             f"dump {_token(tok, j)} (p {q_:.4f})")
            if len(s.differ) > SHOWN_DIFFERENCES:
                lines.append(f"  ... and {len(s.differ) - SHOWN_DIFFERENCES} more")
    if first is None:
        lines.append(f"PASS: every state within a relative error of {c.tol:g}")
    else:
        lines.append(f"FAIL: {first.name} ({first.what}) is the first over the tolerance: relative error "
                     f"{first.rel:.3e} > {c.tol:g}")
    return "\n".join(lines)


def _token(tok, i):
    return str(i) if tok is None else f"{i} {_printable(repr(tok.decode([i])))}"


def _parser():
    p = _Parser(prog="python -m npqwen.compare",
                description="Compare another engine's hidden states and logits with npqwen's, layer by layer.")
    p.add_argument("--model", required=True, help="the checkpoint folder (or hub id) the other engine ran")
    add_revision_option(p)
    p.add_argument("--reference", required=True, metavar="DUMP", help="the other engine's safetensors dump")
    p.add_argument("--tol", type=float, default=1e-4, help="largest relative error that passes (default 1e-4)")
    add_weights_option(p)
    return p


def main(argv=None) -> int:
    return run_tool(_main, argv)


def _main(argv) -> int:
    args = _parser().parse_args(argv)
    if not (np.isfinite(args.tol) and args.tol > 0):
        raise NpqwenError(f"--tol must be a finite number > 0, found {args.tol}")
    args.model = model_folder(resolve_model(args.model, args.revision))
    cfg = ModelConfig.from_file(args.model)
    dump = read_dump(args.reference, cfg)
    tok = None
    if os.path.isfile(os.path.join(args.model, "tokenizer.json")):
        tok = Tokenizer(args.model)
    t0 = time.perf_counter()
    model = load_model(args.model, weights=args.weights)
    c = compare(model, dump, args.tol)
    b, T = dump["input_ids"].shape
    n = int(np.sum(dump["attention_mask"])) if "attention_mask" in dump else b * T
    print(f"npqwen ({args.model}) against {args.reference}: {b} sequence{'s' if b > 1 else ''} of {T} positions, "
          f"{n} real; loaded and compared in {time.perf_counter() - t0:.2f}s")
    print(report(c, tok))
    return 0 if c.first_over is None else 1


if __name__ == "__main__":
    sys.exit(main())
