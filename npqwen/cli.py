"""The command line: `python -m npqwen.generate [--model DIR] [options] [PROMPT]`.

stdout carries only the generated text, streamed as it arrives (so it can be piped); the model
summary, prompt length, speed and stop reason go to stderr. Bad input gets one `error:` line on
stderr and exit status 2, checked before the model is loaded where possible.
"""

import argparse
import os
import sys
import time

from .errors import NpqwenError
from .generation import context_limit, default_settings, eos_token_ids, generate, read_generation_config
from .model import load_model
from .sampling import SamplingSettings
from .tokenizer import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_MODEL = os.path.join(ROOT, "golden", "checkpoints", "demo")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump
        raise NpqwenError(message)


def _parser():
    p = _Parser(prog="python -m npqwen.generate",
                description="Generate text with a Qwen2 / Qwen2.5 checkpoint, in NumPy.")
    p.add_argument("prompt", nargs="?", help="the prompt text; '-' reads it from standard input")
    p.add_argument("--model", default=DEMO_MODEL, help="checkpoint folder (default: the shipped demo model)")
    p.add_argument("--file", help="read the prompt from this UTF-8 file")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: generation_config.json's, else 256")
    p.add_argument("--temperature", type=float, help="0 = greedy (default: from generation_config.json)")
    p.add_argument("--top-k", type=int, help="keep the k most likely tokens (0 = off)")
    p.add_argument("--top-p", type=float, help="nucleus sampling, in (0, 1]")
    p.add_argument("--min-p", type=float, help="drop tokens below min-p x the top probability, in [0, 1]")
    p.add_argument("--repetition-penalty", type=float, help="> 0; 1 = off")
    p.add_argument("--weights", choices=("auto", "float32", "stream"), default="auto",
                   help="float32: upcast all weights once (fastest); stream: keep bf16 memory-mapped and upcast "
                        "one layer at a time (least memory); auto: float32 if it fits in memory")
    p.add_argument("--seed", type=int, default=None, help="same seed, same output")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the checkpoint's chat template; "
                   "without a prompt, an interactive multi-turn chat")
    p.add_argument("--system", help="system message for --chat")
    return p


def _validate(args):
    """Every option checked before anything is loaded."""
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise NpqwenError(f"--max-new-tokens must be at least 1, found {args.max_new_tokens}")
    given = {k: getattr(args, k) for k in ("temperature", "top_k", "top_p", "min_p", "repetition_penalty")
             if getattr(args, k) is not None}
    SamplingSettings(**given).validate()
    if args.system is not None and not args.chat:
        raise NpqwenError("--system needs --chat")
    if args.prompt is not None and args.file is not None:
        raise NpqwenError("give the prompt as an argument or with --file, not both")
    if not os.path.isdir(args.model):
        raise NpqwenError(f"--model {args.model}: no such folder")
    return given


def _read_prompt(args):
    if args.file is not None:
        try:
            with open(args.file, "rb") as f:
                raw = f.read()
        except OSError as e:
            raise NpqwenError(f"--file {args.file}: {e.strerror}") from None
        return _utf8(raw, args.file)
    if args.prompt == "-" or (args.prompt is None and not args.chat and not sys.stdin.isatty()):
        return _utf8(sys.stdin.buffer.read(), "standard input")
    return args.prompt


def _utf8(raw, where):
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise NpqwenError(f"{where}: the prompt is not valid UTF-8 (byte {e.start})") from None


def _settings(args, given, gen_cfg):
    s = default_settings(gen_cfg)
    for k, v in given.items():
        setattr(s, k, v)
    if "temperature" in given and given["temperature"] > 0 and not gen_cfg.get("do_sample"):
        # Sampling asked for on a greedy-by-default checkpoint: transformers' defaults apply.
        s.top_k = given.get("top_k", gen_cfg.get("top_k", 50))
        s.top_p = given.get("top_p", gen_cfg.get("top_p", 1.0))
        s.min_p = given.get("min_p", gen_cfg.get("min_p") or 0.0)
    return s.validate()


def _run(model, tok, ids, args, settings, eos, max_new):
    """Stream one continuation to stdout. -> the generated text (for chat history)."""
    t0 = time.perf_counter()
    t_first, n, pieces, last = None, 0, [], None
    for last in generate(model, tok, ids, max_new, settings, args.seed, eos):
        if t_first is None:
            t_first = time.perf_counter()
        n += 1
        if last.text:
            pieces.append(last.text)
            sys.stdout.write(last.text)
            sys.stdout.flush()
    t_end = time.perf_counter()
    if sys.stdout.isatty():
        sys.stdout.write("\n")
    decode = f", decode {(n - 1) / (t_end - t_first):.1f} tok/s" if n > 1 else ""
    reason = {"eos": "end of sequence", "length": f"--max-new-tokens {max_new}",
              "context": f"the context limit of {context_limit(model.config)} tokens"}.get(last.finish_reason, "?")
    print(f"[{len(ids)} prompt tokens, prefill {len(ids) / (t_first - t0):.1f} tok/s; {n} new tokens{decode}; "
          f"stopped at {reason}]", file=sys.stderr)
    return "".join(pieces)


def generate_main(argv=None) -> int:
    try:
        args = _parser().parse_args(argv)
        given = _validate(args)
        prompt = _read_prompt(args)
        if prompt is not None and not prompt.strip():
            raise NpqwenError("the prompt is empty")

        t0 = time.perf_counter()
        tok = Tokenizer(args.model)  # first: a missing tokenizer should not wait for a big model to load
        model = load_model(args.model, weights=args.weights)
        gen_cfg = read_generation_config(args.model)
        settings = _settings(args, given, gen_cfg)
        eos = eos_token_ids(model.config, gen_cfg)
        max_new = args.max_new_tokens or gen_cfg.get("max_new_tokens") or 256
        cfg = model.config
        messages = [{"role": "system", "content": args.system}] if args.system else []
        if prompt is not None:  # encode and check the length before anything is printed
            ids = _encode(tok, messages + [{"role": "user", "content": prompt}] if args.chat else prompt)
            if len(ids) >= context_limit(cfg):
                raise NpqwenError(f"the prompt is {len(ids)} tokens long; the model's context is "
                                  f"{context_limit(cfg)} tokens, leaving no room to generate")
        mode = "greedy" if settings.temperature == 0 else (
            f"temperature {settings.temperature}, top-k {settings.top_k}, top-p {settings.top_p}, "
            f"min-p {settings.min_p}")
        print(f"[{args.model}: {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, "
              f"{cfg.num_attention_heads}/{cfg.num_key_value_heads} q/kv heads, vocab {cfg.vocab_size}; "
              f"weights {model.weights_mode}; loaded in {time.perf_counter() - t0:.2f}s; {mode}, repetition penalty "
              f"{settings.repetition_penalty}]", file=sys.stderr)

        if prompt is not None:
            _run(model, tok, ids, args, settings, eos, max_new)
        else:
            _interactive(model, tok, messages, args, settings, eos, max_new)
        return 0
    except NpqwenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stderr.close()
        return 0


def _encode(tok, prompt_or_messages):
    if isinstance(prompt_or_messages, list):
        ids = tok.encode_chat(prompt_or_messages)
    else:
        ids = tok.encode(prompt_or_messages)
    if not ids:
        raise NpqwenError("the prompt is empty")
    return ids


def _interactive(model, tok, messages, args, settings, eos, max_new):
    print("[interactive chat: an empty line or Ctrl-D ends it]", file=sys.stderr)
    while True:
        print("> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line.strip():
            return
        messages.append({"role": "user", "content": line.rstrip("\n")})
        reply = _run(model, tok, _encode(tok, messages), args, settings, eos, max_new)
        if not sys.stdout.isatty():
            sys.stdout.write("\n")
        messages.append({"role": "assistant", "content": reply})
