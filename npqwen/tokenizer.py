"""Text <-> token ids, streaming decoding and chat templates, from a checkpoint's own files.

The tokenizers library does the byte-level BPE and the streaming decode (a character split over
several byte-level tokens is only emitted once complete; what a stream still holds back when it
ends is flushed as `decode` renders it); Jinja's sandbox renders the chat template the way
transformers' `apply_chat_template` does.

Special-token text typed by a user (e.g. "<|im_end|>") is matched as the special token, as
transformers' Qwen2 tokenizer does by default (split_special_tokens=False).

tokenizer_config.json is checked for every field npqwen reads from it: `chat_template` (a string,
or a list of {"name", "template"} objects) and the special tokens `bos_token`, `eos_token`,
`pad_token` and `unk_token` (null, a string or {"content": string}; each a token of tokenizer.json).
"""

import json
import os
from datetime import datetime
from functools import cached_property

from .errors import NpqwenError
from .jsonfile import read_json_object, shown

# Qwen's ChatML, used when a checkpoint ships no chat template.
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "pad_token", "unk_token")


class Tokenizer:
    def __init__(self, folder: str):
        from tokenizers import Tokenizer as HFTokenizer

        self.folder = folder
        path = os.path.join(folder, "tokenizer.json")
        if not os.path.isfile(path):
            raise NpqwenError(f"{folder}: no tokenizer.json (run from token ids with the Python API instead)")
        try:
            self.tok = HFTokenizer.from_file(path)
        except Exception as e:  # the library raises a plain Exception for malformed files
            raise NpqwenError(f"{path}: cannot be read as a tokenizer ({str(e).splitlines()[0][:200]})") from None
        config_path = os.path.join(folder, "tokenizer_config.json")
        self.config = read_json_object(config_path, {})
        self.special_tokens = {k: self._special_token(self.config.get(k), config_path, k) for k in SPECIAL_TOKEN_KEYS}
        self.chat_template = _chat_template(folder, self.config, config_path)

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    @cached_property
    def max_id(self) -> int:
        """The largest id the tokenizer can produce, added and special tokens included."""
        return max(self.tok.get_vocab(with_added_tokens=True).values(), default=-1)

    def check_fits(self, vocab_size: int):
        """Refuse a tokenizer with ids the model has no embedding for: one from another model."""
        if self.max_id >= vocab_size:
            raise NpqwenError(f"{self.folder}: the tokenizer has {self.max_id + 1} ids (added and special tokens "
                              f"included) but the model's vocab_size is {vocab_size}: the tokenizer is from a "
                              f"different model")

    def token_id(self, text):
        return self.tok.token_to_id(text) if text else None

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise NpqwenError(f"the text to encode must be a string, found {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:  # a lone surrogate: how Python carries a byte that is not UTF-8
            raise NpqwenError(f"the text is not valid Unicode (a lone surrogate at character {e.start}: "
                              f"read from bytes that are not UTF-8?)") from None
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids, skip_special_tokens=False) -> str:
        return self.tok.decode(list(map(int, ids)), skip_special_tokens=skip_special_tokens)

    def stream(self, skip_special_tokens=True):
        """A decoder fed one id at a time: `feed(id)` returns the text completed by that id ("" while a
        multi-byte character is still incomplete); `flush()`, at the end, the text still held back."""
        return _Stream(self.tok, skip_special_tokens)

    def apply_chat_template(self, messages, tools=None, add_generation_prompt=True, **template_kwargs) -> str:
        """Render a conversation [{"role": ..., "content": ...}, ...] to the prompt text. Extra keyword
        arguments reach the template, as in transformers: Qwen3's takes enable_thinking=True/False."""
        from jinja2.exceptions import TemplateError

        if self.chat_template is None:
            names = ", ".join(repr(d["name"]) for d in self.config["chat_template"])
            raise NpqwenError(f"{os.path.join(self.folder, 'tokenizer_config.json')}: field 'chat_template' has "
                              f"templates named {names} but none named 'default', the one a chat uses")
        try:
            template = _compile(self.chat_template)
            return template.render(messages=messages, tools=tools, add_generation_prompt=add_generation_prompt,
                                   **{**self.special_tokens, **template_kwargs})
        except (TemplateError, TypeError, ValueError, KeyError, AttributeError) as e:
            raise NpqwenError(f"the chat template failed: {type(e).__name__}: {e}") from None

    def encode_chat(self, messages, tools=None, add_generation_prompt=True, **template_kwargs) -> list[int]:
        return self.encode(self.apply_chat_template(messages, tools, add_generation_prompt, **template_kwargs))

    @property
    def can_think(self) -> bool:
        """Does the chat template switch reasoning on and off (Qwen3's enable_thinking)?"""
        return self.chat_template is not None and "enable_thinking" in self.chat_template

    def _special_token(self, v, src, field):
        """tokenizer_config.json writes a special token as a string or as {"content": string}; chat
        templates render its text, so it must be a token of tokenizer.json."""
        if v is None:
            return None
        text = v.get("content") if isinstance(v, dict) else v
        if not isinstance(text, str):
            raise NpqwenError(f'{src}: field \'{field}\' must be null, a token\'s text or {{"content": text}}, '
                              f"found {shown(v)}")
        if self.tok.token_to_id(text) is None:
            raise NpqwenError(f"{src}: field '{field}' is {shown(text)}, which is not a token of tokenizer.json")
        return text


class HideThinking:
    """Drops a reasoning block, <think> ... </think> and the blank lines after it, from streamed
    tokens: Qwen3 thinks aloud before it answers. Feed it every Token; it returns the text to show."""

    def __init__(self, tokenizer):
        self.open, self.close = tokenizer.token_id("<think>"), tokenizer.token_id("</think>")
        if self.open is None or self.close is None:
            raise NpqwenError("this tokenizer has no <think> and </think> tokens: there is no reasoning to hide")
        self.inside, self.after = False, False

    def __call__(self, token) -> str:
        if token.id == self.open:
            self.inside = True
        elif token.id == self.close:
            self.inside, self.after = False, True
        elif not self.inside:
            text = token.text.lstrip("\n") if self.after else token.text
            self.after = self.after and not text
            return text
        return ""


class _Stream:
    """tokenizers' DecodeStream holds back the ids of a character whose bytes are incomplete. If the
    stream ends there, `flush` renders them as `decode` does (U+FFFD for incomplete bytes, as
    errors="replace"), as transformers' TextStreamer.end() and mlx-lm's finalize() do: all that
    `feed` and `flush` return, joined, is `decode(ids)`."""

    def __init__(self, tok, skip_special_tokens):
        self.tok, self.skip = tok, skip_special_tokens
        self._start()

    def _start(self):
        from tokenizers.decoders import DecodeStream

        self.ds = DecodeStream(skip_special_tokens=self.skip)
        self.ids, self.emitted = [], 0   # every id fed; characters returned so far

    def feed(self, token_id: int) -> str:
        self.ids.append(int(token_id))
        text = self.ds.step(self.tok, int(token_id)) or ""
        self.emitted += len(text)
        return text

    def flush(self) -> str:
        """What the ids fed so far decode to beyond the text already returned; the stream then starts afresh."""
        text = self.tok.decode(self.ids, skip_special_tokens=self.skip)[self.emitted:]
        self._start()
        return text


def _chat_template(folder, config, src):
    """transformers 5.x saves the template to chat_template.jinja; 4.x kept it in tokenizer_config.json,
    sometimes as a list of named templates. -> the template's text; None for named templates with none
    named "default" (an error when a chat needs one; plain prompts work without)."""
    jinja_path = os.path.join(folder, "chat_template.jinja")
    if os.path.isfile(jinja_path):
        with open(jinja_path, "rb") as f:
            raw = f.read()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise NpqwenError(f"{jinja_path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    # The vision-language checkpoints' processor template (Qwen2.5-VL, Qwen3-VL): chat_template.json
    processor = read_json_object(os.path.join(folder, "chat_template.json"), {})
    if isinstance(processor.get("chat_template"), str):
        return processor["chat_template"]
    t = config.get("chat_template")
    if t is None:
        return CHATML
    if isinstance(t, str):
        return t
    if not isinstance(t, list) or not t or not all(
            isinstance(d, dict) and isinstance(d.get("name"), str) and isinstance(d.get("template"), str) for d in t):
        raise NpqwenError(f"{src}: field 'chat_template' must be a template (a string) or a list of "
                          f'{{"name": ..., "template": ...}} objects, found {shown(t)}')
    return {d["name"]: d["template"] for d in t}.get("default")


_compiled = {}


def _compile(source):
    """A sandboxed Jinja environment configured as transformers configures it: templates cannot
    reach Python internals (no dunder attributes, no unsafe calls)."""
    if source not in _compiled:
        import jinja2.ext
        from jinja2.exceptions import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise TemplateError(message)

        def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
            return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=[jinja2.ext.loopcontrols])
        env.filters["tojson"] = tojson
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        _compiled[source] = env.from_string(source)
    return _compiled[source]


# ---------------------------------------------------------------------------------------------
# a token's bytes


def _byte_decoder():
    """GPT-2's byte-level alphabet inverted (stand-in character -> byte). Qwen's vocabulary spells
    every token in it, so a token holding half a character still has its bytes."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in bs]  # space, controls...: U+0100 onwards, in order
    return {**{chr(b): b for b in bs}, **{chr(256 + n): b for n, b in enumerate(others)}}


BYTE_DECODER = _byte_decoder()


def token_bytes(tok, token_id) -> bytes:
    """The bytes a token stands for (a multi-byte character may be split over several tokens)."""
    piece = tok.tok.id_to_token(int(token_id))
    if piece is not None and all(ch in BYTE_DECODER for ch in piece):
        return bytes(BYTE_DECODER[ch] for ch in piece)
    return tok.decode([int(token_id)]).encode("utf-8")  # an added token, stored as its text
