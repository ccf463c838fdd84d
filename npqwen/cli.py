"""The command line: `python -m npqwen.generate [--model DIR] [options] [PROMPT]`.

stdout carries only the generated text, streamed as it arrives (so it can be piped), ending with
whatever the stream still held back when generation stopped; the model summary, prompt length,
speed and stop reason go to stderr. Bad input gets one `error:` line on stderr and exit status 2:
every option and every file (tokenizer, config, generation config, and that they fit each other)
is checked before the weights are loaded.
"""

import argparse
import json
import os
import sys
import time

from .config import Qwen2Config
from .errors import NpqwenError
from .generation import context_limit, generate
from .generation_config import default_settings, eos_token_ids, read_generation_config
from .hub import add_revision_option, resolve_model
from .model import add_weights_option, load_model
from .sampling import SamplingSettings
from .tokenizer import HideThinking, Tokenizer
from .vision.multimodal import expand_image_pads, user_message

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_MODEL = os.path.join(ROOT, "golden", "checkpoints", "demo")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump
        if message.endswith("expected one argument"):  # e.g. --temperature -inf: "-inf" reads as an option
            message += " (write a value that starts with '-' as --option=-value)"
        raise NpqwenError(_printable(message))


def _printable(text):
    """Text typed by a user, as it may appear in a one-line message: control characters (a newline),
    and the lone surrogates that stand for bytes that are not UTF-8, written as escapes."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
                   for c in text)


def _parser():
    p = _Parser(prog="python -m npqwen.generate",
                description="Generate text with a Qwen2 / Qwen2.5 checkpoint, in NumPy.")
    p.add_argument("prompt", nargs="?", help="the prompt text; '-' reads it from standard input")
    p.add_argument("--model", default=DEMO_MODEL, help="checkpoint folder or hub id (default: the shipped demo model)")
    add_revision_option(p)
    p.add_argument("--file", help="read the prompt from this UTF-8 file")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: generation_config.json's, else 256")
    p.add_argument("--temperature", type=float, help="0 = greedy (default: from generation_config.json)")
    p.add_argument("--top-k", type=int, help="keep the k most likely tokens (0 = off)")
    p.add_argument("--top-p", type=float, help="nucleus sampling, in (0, 1]")
    p.add_argument("--min-p", type=float, help="drop tokens below min-p x the top probability, in [0, 1]")
    p.add_argument("--repetition-penalty", type=float, help="> 0; 1 = off")
    add_weights_option(p)
    p.add_argument("--seed", type=int, default=None, help="an integer >= 0, any size: same seed, same output")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the checkpoint's chat template; "
                   "without a prompt, an interactive multi-turn chat")
    p.add_argument("--system", help="system message for --chat")
    p.add_argument("--image", action="append", metavar="PATH",
                   help="with --chat: an image the user message shows the model before the text (repeat for "
                        "several); needs a vision-language checkpoint and Pillow (pip install \"npqwen[vision]\")")
    think = p.add_mutually_exclusive_group()
    think.add_argument("--think", dest="think", action="store_const", const=True,
                       help="with --chat: ask a model that can reason first (Qwen3) to do so (its template's default)")
    think.add_argument("--no-think", dest="think", action="store_const", const=False,
                       help="with --chat: ask it to answer without reasoning (enable_thinking=False)")
    p.add_argument("--hide-thinking", action="store_true",
                   help="do not print the <think>...</think> block, only the answer")
    p.add_argument("--json-schema", metavar="FILE",
                   help="the reply is JSON valid against this JSON schema (a file), by constrained decoding "
                        "(needs llguidance: pip install \"npqwen[structured]\")")
    p.add_argument("--json-object", action="store_true",
                   help="the reply is a JSON object, by constrained decoding (as response_format json_object)")
    p.add_argument("--json", action="store_true",
                   help="write one JSON object per generated token (id, text, token, finish_reason) instead of text")
    add_speculative_options(p)
    p.add_argument("--logprobs", type=int, metavar="K",
                   help="(implies --json) each token's log-probability under the distribution it was drawn from "
                        "(after the sampling processors, as transformers' output_scores) and the K most likely "
                        "alternatives")
    return p


def _validate(args):
    """Every option checked before anything is loaded. Whatever --max-new-tokens asks, generation
    stops at the context limit and nothing is sized past it; --top-k above the vocabulary keeps
    every token (as transformers clamps it); a negative --seed is refused rather than mapped to
    another seed (some tools read -1 as "random"; here that is leaving --seed out)."""
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise NpqwenError(f"--max-new-tokens must be at least 1, found {args.max_new_tokens}")
    if args.logprobs is not None and args.logprobs < 0:
        raise NpqwenError(f"--logprobs must be an integer >= 0 (how many alternatives to list), found {args.logprobs}")
    if args.seed is not None and args.seed < 0:
        raise NpqwenError(f"--seed must be an integer >= 0 (leave it out for a random seed), found {args.seed}")
    check_speculative_options(args)
    if (args.prompt_lookup is not None or args.draft_model) and (args.logprobs is not None or args.image
                                                                 or args.json_schema or args.json_object):
        raise NpqwenError("--prompt-lookup and --draft-model do not combine with --logprobs, --image or JSON mode")
    given = {k: getattr(args, k) for k in ("temperature", "top_k", "top_p", "min_p", "repetition_penalty")
             if getattr(args, k) is not None}
    SamplingSettings(**given).validate()
    if args.system is not None and not args.chat:
        raise NpqwenError("--system needs --chat")
    if args.json_schema is not None and args.json_object:
        raise NpqwenError("give --json-schema or --json-object, not both")
    if args.image and not args.chat:
        raise NpqwenError("--image needs --chat (the chat template places the image in the user message)")
    if args.think is not None and not args.chat:
        raise NpqwenError(f"--{'' if args.think else 'no-'}think needs --chat (it is an argument of the chat template)")
    if args.prompt is not None and args.file is not None:
        raise NpqwenError("give the prompt as an argument or with --file, not both")
    for value, where, what in ((args.prompt, "the command line", "the prompt"), (args.system, "--system", "the text")):
        if value is not None:  # an argument that was not UTF-8 arrives with lone surrogates
            try:
                raw = os.fsencode(value)
            except UnicodeEncodeError as e:  # a surrogate no byte maps to (from Python, not a shell)
                raise NpqwenError(f"{where}: {what} is not valid Unicode (a lone surrogate at character "
                                  f"{e.start})") from None
            _utf8(raw, where, what)
    args.model = resolve_model(args.model, args.revision)
    if not os.path.isdir(args.model):
        raise NpqwenError(f"--model {_printable(args.model)}: no such folder")
    return given


# Far more text than the longest Qwen2 context holds (about 4 bytes a token): a prompt file or
# input this large is a mistake (--file /dev/zero), not a prompt to read into memory.
MAX_PROMPT_BYTES = 64 << 20


def _read_prompt(args):
    if args.file is not None:
        try:
            with open(args.file, "rb") as f:
                raw = f.read(MAX_PROMPT_BYTES + 1)
        except (OSError, ValueError) as e:  # ValueError: a path with a NUL byte
            raise NpqwenError(f"--file {_printable(args.file)}: {getattr(e, 'strerror', None) or e}") from None
        return _utf8(_limited(raw, _printable(args.file)), _printable(args.file))
    if args.prompt == "-" or (args.prompt is None and not args.chat and not _stdin().isatty()):
        return _utf8(_limited(_stdin().buffer.read(MAX_PROMPT_BYTES + 1), "standard input"), "standard input")
    return args.prompt


def _limited(raw, where):
    if len(raw) > MAX_PROMPT_BYTES:
        raise NpqwenError(f"{where}: more than {MAX_PROMPT_BYTES >> 20} MB of prompt, far more than a context holds")
    return raw


def _stdin():
    if sys.stdin is None:  # started with standard input closed
        raise NpqwenError("no standard input to read the prompt from")
    return sys.stdin


def _utf8(raw, where, what="the prompt"):
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise NpqwenError(f"{where}: {what} is not valid UTF-8 (byte {e.start})") from None


def _settings(given, gen_cfg):
    """The options given over the checkpoint's defaults. A --temperature above 0 on a greedy-by-default
    checkpoint asks for sampling: the file's (or transformers') top-k, top-p and min-p then apply."""
    sampling = given.get("temperature", 0) > 0 or None
    s = default_settings(gen_cfg, do_sample=sampling)
    for k, v in given.items():
        setattr(s, k, v)
    return s.validate()


def _run(model, tok, ids, args, settings, eos, max_new, images=None):
    """Stream one continuation to stdout. -> the generated text (for chat history, reasoning included:
    Qwen3's template itself drops earlier turns' reasoning)."""
    t0 = time.perf_counter()
    t_first, n, pieces, last = None, 0, [], None
    shown = HideThinking(tok) if args.hide_thinking else (lambda token: token.text)
    constraint = None
    if getattr(args, "grammar", None) is not None:   # a fresh grammar state for each reply
        from .structured import Constraint
        constraint = Constraint(*args.grammar)
    stats = {}
    for last in generate(model, tok, ids, max_new, settings, args.seed, eos, logprobs=args.logprobs, images=images,
                         constraint=constraint, draft=args.drafter and args.drafter(), stats=stats):
        if t_first is None:
            t_first = time.perf_counter()
        n += 1
        pieces.append(last.text)
        text = shown(last)
        if args.json or args.logprobs is not None:
            sys.stdout.write(json.dumps(_token_json(tok, last, text), ensure_ascii=False) + "\n")
            sys.stdout.flush()
        elif text:
            sys.stdout.write(text)
            sys.stdout.flush()
    t_end = time.perf_counter()
    if sys.stdout.isatty():
        sys.stdout.write("\n")
    decode = f", decode {(n - 1) / (t_end - t_first):.1f} tok/s" if n > 1 else ""
    reason = {"eos": "end of sequence", "length": f"--max-new-tokens {max_new}",
              "context": f"the context limit of {context_limit(model.config)} tokens"}.get(last.finish_reason, "?")
    spec = ""
    if stats.get("rounds"):   # speculative decoding: how many drafts the model kept
        spec = (f"; {stats['accepted']} of {stats['drafted']} drafted tokens kept, {n} tokens in {stats['rounds']} "
                f"forwards")
    print(f"[{len(ids)} prompt tokens, prefill {len(ids) / (t_first - t0):.1f} tok/s; {n} new tokens{decode}{spec}; "
          f"stopped at {reason}]", file=sys.stderr)
    return "".join(pieces)


def _token_json(tok, token, text):
    """One generated token as --json writes it. text: what the plain output prints for it ("" mid-character;
    joined, the whole output); token: this id decoded alone, special tokens included."""
    d = {"id": token.id, "text": text, "token": tok.decode([token.id])}
    if token.logprob is not None:
        d["logprob"] = _short_float(token.logprob)
        d["top_logprobs"] = [{"id": i, "token": tok.decode([i]), "logprob": _short_float(v)}
                             for i, v in token.top_logprobs]
    d["finish_reason"] = token.finish_reason
    return d


def _short_float(x):
    """A float32 value with the digits float32 holds (8 significant), not float64's 17."""
    return float(f"{x:.8g}")


def model_folder(path):
    """--model of score and compare: a checkpoint folder that exists."""
    if not os.path.isdir(path):
        raise NpqwenError(f"--model {_printable(path)}: no such folder")
    return path


def run_tool(main, argv) -> int:
    """npqwen's command-line convention around main(argv) -> exit status: bad input (any NpqwenError)
    is one `error:` line on stderr and status 2; Ctrl-C is 130; a closed pipe (`| head`) ends quietly."""
    if getattr(sys.stdout, "errors", None) == "strict" and hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")  # an ASCII or Latin-1 terminal gets "?", not a traceback
    try:
        return main(argv)
    except NpqwenError as e:  # (a message's later lines, such as a list of problems, are indented)
        print("error: " + "\n".join(_printable(line) for line in str(e).split("\n")), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stderr.close()
        return 0
    except SystemExit as e:  # --help
        return e.code or 0


def generate_main(argv=None) -> int:
    def main(argv):
        args = _parser().parse_args(argv)
        given = _validate(args)
        prompt = _read_prompt(args)
        if prompt is not None and not prompt.strip():
            raise NpqwenError("the prompt is empty")

        t0 = time.perf_counter()
        # Every small file first: a bad one should not wait for a big model to load.
        tok = Tokenizer(args.model)
        cfg = Qwen2Config.from_file(args.model)
        tok.check_fits(cfg.vocab_size)
        if args.think is not None and not tok.can_think:
            raise NpqwenError(f"--{'' if args.think else 'no-'}think: the chat template of {_printable(args.model)} "
                              f"has no enable_thinking switch")
        if args.hide_thinking:
            HideThinking(tok)  # refused now if the tokenizer has no <think> tokens
        gen_cfg = read_generation_config(args.model, cfg.vocab_size)
        settings = _settings(given, gen_cfg)
        eos = eos_token_ids(cfg, gen_cfg)
        max_new = args.max_new_tokens or gen_cfg.max_new_tokens or 256
        messages = [{"role": "system", "content": args.system}] if args.system else []
        images = _images(args, cfg)
        args.grammar = _grammar(args, tok, cfg, eos)
        args.drafter = speculative_drafter(args, tok, cfg)
        if prompt is not None:  # encode and check the length before anything is printed
            ids = _encode(tok, messages + [user_message(prompt, len(args.image or ()))] if args.chat else prompt,
                          args.think, images, cfg)
            if len(ids) >= context_limit(cfg):
                raise NpqwenError(f"the prompt is {len(ids)} tokens long; the model's context is "
                                  f"{context_limit(cfg)} tokens, leaving no room to generate")
        model = load_model(args.model, weights=args.weights)
        mode = "greedy" if settings.temperature == 0 else (
            f"temperature {settings.temperature}, top-k {settings.top_k}, top-p {settings.top_p}, "
            f"min-p {settings.min_p}")
        print(f"[{args.model}: {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, "
              f"{cfg.num_attention_heads}/{cfg.num_key_value_heads} q/kv heads, vocab {cfg.vocab_size}; "
              f"weights {model.weights_mode} ({model.weights_reason}); loaded in {time.perf_counter() - t0:.2f}s; {mode}, repetition penalty "
              f"{settings.repetition_penalty}]", file=sys.stderr)

        if prompt is not None:
            _run(model, tok, ids, args, settings, eos, max_new, images)
        else:
            _interactive(model, tok, messages, args, settings, eos, max_new, images, cfg)
        return 0
    return run_tool(main, argv)


# ---------------------------------------------------------------------------------------------
# speculative decoding: the options generate and serve share


def add_speculative_options(p):
    spec = p.add_mutually_exclusive_group()
    spec.add_argument("--prompt-lookup", type=int, metavar="N",
                      help="speculative decoding: draft up to N tokens a round from the context (what followed the "
                           "last tokens where they occurred before) and check them in one forward; the same output")
    spec.add_argument("--draft-model", metavar="DIR",
                      help="speculative decoding: a smaller checkpoint with the same tokenizer drafts tokens, the model "
                           "checks them in one forward; the same output (greedy) or distribution (sampling)")
    p.add_argument("--draft-tokens", type=int, default=5, metavar="N",
                   help="with --draft-model: tokens it drafts a round (default 5)")


def check_speculative_options(args):
    if args.prompt_lookup is not None and not 1 <= args.prompt_lookup <= 64:
        raise NpqwenError(f"--prompt-lookup must be 1 to 64 (tokens drafted a round), found {args.prompt_lookup}")
    if not 1 <= args.draft_tokens <= 64:
        raise NpqwenError(f"--draft-tokens must be 1 to 64, found {args.draft_tokens}")


def speculative_drafter(args, tok, cfg):
    """--prompt-lookup / --draft-model -> a function making a fresh drafter (one for each reply), or None.
    The draft model is loaded once, checked to share the model's tokenizer; both models are checked to
    have caches that can be cut back."""
    from .speculative import DraftModel, PromptLookup, check_rewindable
    if args.prompt_lookup is None and not args.draft_model:
        return None
    check_rewindable(cfg, "the model")
    if args.prompt_lookup is not None:
        n = args.prompt_lookup
        return lambda: PromptLookup(n)
    folder = model_folder(resolve_model(args.draft_model, None))
    check_rewindable(Qwen2Config.from_file(folder), "the draft model")
    if Tokenizer(folder).tok.get_vocab(with_added_tokens=True) != tok.tok.get_vocab(with_added_tokens=True):
        raise NpqwenError(f"--draft-model {_printable(args.draft_model)}: its tokenizer is not the model's "
                          f"(its ids would mean other text)")
    draft, n = load_model(folder, weights=args.weights), args.draft_tokens
    return lambda: DraftModel(draft, n)


def _grammar(args, tok, cfg, eos):
    """--json-schema FILE / --json-object -> (llguidance's tokenizer, the grammar), or None."""
    if args.json_schema is None and not args.json_object:
        return None
    from .jsonfile import read_json_object
    from .structured import grammar_tokenizer, json_grammar
    schema = None
    if args.json_schema is not None:
        if not os.path.isfile(args.json_schema):
            raise NpqwenError(f"--json-schema {_printable(args.json_schema)}: no such file")
        schema = read_json_object(args.json_schema)
    try:
        grammar = json_grammar(schema)
    except NpqwenError as e:
        raise NpqwenError(f"--json-schema {_printable(args.json_schema)}: {e}" if schema is not None else str(e)) from None
    return grammar_tokenizer(tok, cfg.vocab_size, eos), grammar


def _images(args, cfg):
    """--image files -> (pixel_values, image_grid_thw), read before the model loads (a bad file fails fast)."""
    if not args.image:
        return None
    if cfg.vision is None:
        raise NpqwenError(f"--image: {_printable(args.model)} has no vision tower (its config.json has no "
                          f"vision_config): it reads text only")
    from .vision import load_image_processor
    return load_image_processor(args.model)(args.image)


def _encode(tok, prompt_or_messages, think=None, images=None, cfg=None):
    if isinstance(prompt_or_messages, list):
        ids = tok.encode_chat(prompt_or_messages, **({} if think is None else {"enable_thinking": think}))
    else:
        ids = tok.encode(prompt_or_messages)
    if not ids:
        raise NpqwenError("the prompt is empty")
    if images is not None:   # each image's placeholder, one per token of it (as transformers' processor)
        ids = expand_image_pads(ids, images[1], cfg.image_token_id, cfg.vision.spatial_merge_size)
    return ids


def _interactive(model, tok, messages, args, settings, eos, max_new, images=None, cfg=None):
    print("[interactive chat: an empty line or Ctrl-D ends it]", file=sys.stderr)
    while True:
        if _stdin().isatty():  # (piped, a prompt would only clutter stderr)
            print("> ", end="", file=sys.stderr, flush=True)
        line = _utf8(_limited(_stdin().buffer.readline(MAX_PROMPT_BYTES + 1), "standard input"), "standard input")
        if not line.strip():
            return
        first = not any(m["role"] == "user" for m in messages)   # --image goes with the first message
        messages.append(user_message(line.rstrip("\n"), len(args.image or ()) if first else 0))
        reply = _run(model, tok, _encode(tok, messages, args.think, images, cfg), args, settings, eos, max_new, images)
        if not sys.stdout.isatty():
            sys.stdout.write("\n")
        messages.append({"role": "assistant", "content": reply})
