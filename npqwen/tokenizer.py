"""Text <-> token ids, streaming decoding and chat templates, from a checkpoint's own files.

The tokenizers library does the byte-level BPE and the streaming decode (a character split over
several byte-level tokens is only emitted once complete); Jinja's sandbox renders the chat
template the way transformers' `apply_chat_template` does.

Special-token text typed by a user (e.g. "<|im_end|>") is matched as the special token, as
transformers' Qwen2 tokenizer does by default (split_special_tokens=False).
"""

import json
import os
from datetime import datetime

from .errors import NpqwenError

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

        path = os.path.join(folder, "tokenizer.json")
        if not os.path.isfile(path):
            raise NpqwenError(f"{folder}: no tokenizer.json (run from token ids with the Python API instead)")
        try:
            self.tok = HFTokenizer.from_file(path)
        except Exception as e:  # the library raises a plain Exception for malformed files
            raise NpqwenError(f"{path}: cannot be read as a tokenizer ({str(e).splitlines()[0][:200]})") from None
        self.config = _read_json(os.path.join(folder, "tokenizer_config.json"), {})
        self.chat_template = _chat_template(folder, self.config)
        self.special_tokens = {k: _token_text(self.config.get(k)) for k in SPECIAL_TOKEN_KEYS}

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    def token_id(self, text):
        return self.tok.token_to_id(text) if text else None

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids, skip_special_tokens=False) -> str:
        return self.tok.decode(list(map(int, ids)), skip_special_tokens=skip_special_tokens)

    def stream(self, skip_special_tokens=True):
        """A decoder fed one id at a time: `feed(id)` returns the text completed by that id ("" while a
        multi-byte character is still incomplete)."""
        return _Stream(self.tok, skip_special_tokens)

    def apply_chat_template(self, messages, tools=None, add_generation_prompt=True) -> str:
        """Render a conversation [{"role": ..., "content": ...}, ...] to the prompt text."""
        from jinja2.exceptions import TemplateError

        try:
            template = _compile(self.chat_template)
            return template.render(messages=messages, tools=tools, add_generation_prompt=add_generation_prompt,
                                   **self.special_tokens)
        except (TemplateError, TypeError, ValueError, KeyError, AttributeError) as e:
            raise NpqwenError(f"the chat template failed: {type(e).__name__}: {e}") from None

    def encode_chat(self, messages, tools=None, add_generation_prompt=True) -> list[int]:
        return self.encode(self.apply_chat_template(messages, tools, add_generation_prompt))


class _Stream:
    def __init__(self, tok, skip_special_tokens):
        from tokenizers.decoders import DecodeStream

        self.tok, self.ds = tok, DecodeStream(skip_special_tokens=skip_special_tokens)

    def feed(self, token_id: int) -> str:
        return self.ds.step(self.tok, int(token_id)) or ""


def _read_json(path, default):
    if not os.path.isfile(path):
        return default
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise NpqwenError(f"{path}: not valid UTF-8 JSON ({e})") from None


def _token_text(v):
    """tokenizer_config.json writes special tokens as strings or as {"content": ...} objects."""
    return v.get("content") if isinstance(v, dict) else v


def _chat_template(folder, config):
    """transformers 5.x saves the template to chat_template.jinja; 4.x kept it in tokenizer_config.json,
    sometimes as a list of named templates."""
    jinja_path = os.path.join(folder, "chat_template.jinja")
    if os.path.isfile(jinja_path):
        with open(jinja_path, encoding="utf-8") as f:
            return f.read()
    t = config.get("chat_template")
    if isinstance(t, list):
        named = {d.get("name"): d.get("template") for d in t if isinstance(d, dict)}
        t = named.get("default")
    return t if isinstance(t, str) else CHATML


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
