"""Structured output: replies that are JSON (and valid against a JSON schema) by constrained decoding.

At each step the grammar says which tokens may come next, and the others' logits become -inf before
sampling; the chosen token then advances the grammar. So every prefix of the reply is a prefix of
some valid document, a reply cut by max_tokens is a valid beginning, and a finished one parses and
validates. Whitespace between JSON tokens is not allowed at all (compact JSON, "," and ":"
separators): free whitespace is where an unconstrained sampler wanders for hundreds of tokens.

The grammar engine is llguidance (the `structured` extra), chosen by evidence among the three that
vLLM and SGLang use:
  llguidance    no dependencies, one 3 MB wheel; reads the checkpoint's tokenizer.json itself, so its
                token masks are exact for Qwen's byte-level BPE (every token's bytes, special tokens
                included); writes a bitmask into a NumPy buffer; JSON schema with maxLength, maxItems,
                minimum / maximum, enum, and compile errors as exceptions.
  xgrammar      requires torch, triton and transformers at run time: ruled out (npqwen runs without torch).
  outlines-core no dependencies, but yields the allowed token ids per state as Python lists, to be turned
                into a mask by hand each step, and compiles a schema to one regex (no recursion).
The mask's cost per token is measured by scripts/bench_structured.py.
"""

import json

import numpy as np

from .errors import NpqwenError

MAX_SCHEMA_BYTES = 64 << 10       # a schema larger than this is not a response format but a mistake
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}


def _llguidance():
    try:
        import llguidance
    except ImportError:
        raise NpqwenError('structured output needs llguidance: pip install "npqwen[structured]" '
                          '(or pip install llguidance)') from None
    return llguidance


_tokenizers = {}


def grammar_tokenizer(tok, vocab_size, eos_ids):
    """llguidance's view of the tokenizer (built once per tokenizer: about a second)."""
    eos_ids = sorted(int(i) for i in eos_ids)
    key = (id(tok), vocab_size, tuple(eos_ids))
    if key not in _tokenizers:
        ll = _llguidance()
        _tokenizers[key] = ll.LLTokenizer(tok.tok.to_str(), n_vocab=vocab_size, eos_token=list(eos_ids))
    return _tokenizers[key]


def json_grammar(schema=None):
    """A JSON schema (a dict), or None for any JSON object -> llguidance's grammar text. NpqwenError for a
    schema that is not an object, too large, or does not compile."""
    ll = _llguidance()
    if schema is None:
        schema = {"type": "object"}
    if not isinstance(schema, dict):
        raise NpqwenError(f"a JSON schema must be an object, found {type(schema).__name__}")
    try:
        text = json.dumps(schema)
    except (TypeError, ValueError, RecursionError):
        raise NpqwenError("the JSON schema is not JSON") from None
    if len(text) > MAX_SCHEMA_BYTES:
        raise NpqwenError(f"the JSON schema is {len(text):,} bytes, more than npqwen takes ({MAX_SCHEMA_BYTES:,})")
    try:
        grammar = ll.LLMatcher.grammar_from_json_schema(text, overrides=JSON_OPTIONS)
    except ValueError as e:
        raise NpqwenError(f"the JSON schema cannot be compiled: {str(e)[:300]}") from None
    err = ll.LLMatcher.validate_grammar(grammar)
    if err:
        raise NpqwenError(f"the JSON schema cannot be compiled: {err[:300]}")
    return grammar


def tool_call_grammar(tok, tools, only=None, fmt="hermes"):
    """tool_choice "required" (one call or more, of any of `tools` {name: parameters schema}) or a named
    function (`only`: exactly one call of it), in the form the chat template teaches (replies.py):
      hermes  <tool_call>\\n{"name": NAME, "arguments": {...}}\\n</tool_call>, the arguments valid against
              the function's schema, compact JSON;
      xml     <tool_call>\\n<function=NAME>\\n<parameter=P>\\nVALUE\\n</parameter>\\n...</function>\\n</tool_call>,
              the parameters in the schema's order, the required ones always; a string VALUE is raw text
              without "<" (its enum, or up to maxLength characters), any other type compact JSON valid
              against its schema (which the reply's parser reads back by the same schema).
    The tags are the tokenizer's own tokens where it has them."""
    ll = _llguidance()

    def tag(text):
        i = tok.token_id(text)
        return f"<[{i}]>" if i is not None else json.dumps(text)

    lit = json.dumps
    compact = {"x-guidance": dict(JSON_OPTIONS)}
    names = [only] if only is not None else list(tools)
    rules, bodies = [], []
    for k, name in enumerate(names):
        params = tools[name] or {"type": "object"}
        if fmt == "hermes":
            schema = {"type": "object", "properties": {"name": {"const": name}, "arguments": params},
                      "required": ["name", "arguments"], "additionalProperties": False, **compact}
            bodies.append("%json " + json.dumps(schema))
            continue
        parts = []
        required = set(params.get("required") or [])
        for j, (p, ps) in enumerate((params.get("properties") or {}).items()):
            ps = ps if isinstance(ps, dict) else {}
            if ps.get("type") == "string" or (ps.get("enum") and all(isinstance(v, str) for v in ps["enum"])):
                if ps.get("enum"):
                    value = "(" + " | ".join(lit(v) for v in ps["enum"]) + ")"
                else:
                    lo, hi = int(ps.get("minLength", 0)), ps.get("maxLength")
                    value = f"/[^<]{{{lo},{int(hi)}}}/" if hi is not None else f"/[^<]{{{lo},}}/"
            else:
                value = "%json " + json.dumps(dict(ps, **compact))
            rules.append(f"p{k}_{j}: {lit('<parameter=' + p + '>' + chr(10))} {value} "
                         f"{lit(chr(10) + '</parameter>' + chr(10))}")
            parts.append(f"p{k}_{j}" + ("" if p in required else "?"))
        bodies.append(f"{lit(chr(10) + '<function=' + name + '>' + chr(10))} {' '.join(parts)} "
                      f"{lit('</function>' + chr(10))}")
    newline = lit(chr(10))
    if fmt == "hermes":
        call = f'{tag("<tool_call>")} {newline} ({" | ".join(bodies)}) {newline} {tag("</tool_call>")}'
    else:
        call = f'{tag("<tool_call>")} ({" | ".join(bodies)}) {tag("</tool_call>")}'
    more = "" if only is not None else f" ({newline} call)*"
    lark = "\n".join([f"start: call{more}", f"call: {call}"] + rules) + "\n"
    grammar = ll.LLMatcher.grammar_from_lark(lark)
    err = ll.LLMatcher.validate_grammar(grammar)
    if err:
        raise NpqwenError(f"the tools' schemas cannot be compiled: {err[:300]}")
    return grammar


class Constraint:
    """One reply's grammar state: `allow(logits)` masks the logits [V] of the next token (a copy),
    `advance(token)` moves past the token chosen."""

    def __init__(self, lltok, grammar):
        ll = _llguidance()
        self.matcher = ll.LLMatcher(lltok, grammar, log_level=0)
        if self.matcher.is_error():
            raise NpqwenError(f"the grammar cannot be used: {self.matcher.get_error()[:300]}")
        self.words = (lltok.vocab_size + 31) // 32
        self.bits = np.zeros(self.words, np.int32)

    def allow(self, logits):  # [V] -> [V]: the tokens the grammar forbids at -inf
        self.matcher.unsafe_compute_mask_ptr(self.bits.ctypes.data, self.bits.nbytes)
        allowed = np.unpackbits(self.bits.view(np.uint8), bitorder="little")[:logits.shape[-1]].astype(bool)
        out = np.where(allowed, logits, np.float32(-np.inf)).astype(np.float32)
        if not allowed.any():
            raise NpqwenError(f"the grammar allows no token: {self.matcher.get_error()[:300]}")
        return out

    def advance(self, token):
        if not self.matcher.consume_token(int(token)):
            raise NpqwenError(f"the grammar refused token {int(token)}: {self.matcher.get_error()[:300]}")
