"""OpenAI's API as npqwen answers it: every request field of /v1/completions and
/v1/chat/completions, and the response, chunk and error objects.

Each field OpenAI's API defines is honoured, ignored where it cannot change the result (`user`,
`store`, `metadata`, a zero `presence_penalty`, `response_format: {"type": "text"}`, ...), or
refused with a 400 naming it where it would change the result and npqwen cannot do it (`n` > 1,
a JSON schema, tools, audio). npqwen's own sampling fields `top_k`, `min_p` and
`repetition_penalty` are accepted as mlx-lm and vLLM accept them; any other field is refused.
Errors are OpenAI's object: {"error": {"message", "type", "param", "code"}}.
"""

import base64
import binascii
import json
import math
import re
import time
import uuid
from dataclasses import dataclass, field

from .tokenizer import token_bytes

MAX_STOPS = 16          # stop strings per request (OpenAI allows 4)
MAX_STOP_CHARS = 256    # characters per stop string (each token's text is checked against every prefix of each)


class ApiError(Exception):
    """A request npqwen answers with an OpenAI error object."""

    def __init__(self, message, param=None, status=400, code=None, kind=None):
        super().__init__(message)
        self.message, self.param, self.status, self.code = message, param, status, code
        self.kind = kind or ("invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass
class Generation:
    """A request, validated: what to generate and how."""
    chat: bool                                  # /v1/chat/completions (else /v1/completions)
    messages: list | None = None                # chat: [{"role", "content"}], content as text
    prompt: str | list | None = None            # completions: text, or token ids
    max_tokens: int | None = None               # None: the checkpoint's default, else up to the context
    sampling: dict = field(default_factory=dict)  # the SamplingSettings fields given
    seed: int | None = None
    stop: tuple = ()
    logit_bias: dict | None = None
    stream: bool = False
    include_usage: bool = False                 # stream_options.include_usage
    echo: bool = False                          # completions: the prompt's text before the completion
    enable_thinking: bool | None = None         # chat: from reasoning_effort or chat_template_kwargs
    tools: list | None = None                   # chat: the tools as sent, for the chat template
    tool_choice: str | tuple = "auto"           # "auto", "none" (text), "required", ("function", name)
    response_format: tuple | None = None        # chat: ("json_object", None) or ("json_schema", schema)
    want_logprobs: bool = False                 # chat: logprobs true; completions: logprobs given
    top_logprobs: int = 0                       # alternatives per token (chat: top_logprobs; completions: logprobs)

    @property
    def logprobs(self):  # -> None (not asked), or how many alternatives per token
        return self.top_logprobs if self.want_logprobs else None


# ---------------------------------------------------------------------------------------------
# values


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    try:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    except OverflowError:
        return False


def _type(v):
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(v), "a number")


def _integer(v, name, lo=None, hi=None):
    if not _is_int(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = (f" from {lo} to {hi}" if hi is not None else f" >= {lo}") if lo is not None else ""
        raise ApiError(f"'{name}' must be an integer{rng}, found {_found(v)}", name)
    return v


def _number(v, name, lo, hi, lo_open=False, hi_open=False):
    ok = _is_number(v) and (v > lo if lo_open else v >= lo) and (hi is None or (v < hi if hi_open else v <= hi))
    if not ok:
        where = f"{'(' if lo_open else '['}{lo}, {hi if hi is not None else 'inf'}{')' if hi_open or hi is None else ']'}"
        raise ApiError(f"'{name}' must be a number in {where}, found {_found(v)}", name)
    return v


def _boolean(v, name):
    if not isinstance(v, bool):
        raise ApiError(f"'{name}' must be true or false, found {_found(v)}", name)
    return v


def _string(v, name):
    if not isinstance(v, str):
        raise ApiError(f"'{name}' must be a string, found {_found(v)}", name)
    return v


def _found(v):
    if isinstance(v, (dict, list)) or v is None or isinstance(v, bool):
        return _type(v)
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def _unsupported(name, what):
    return ApiError(f"'{name}': {what} is not supported by npqwen", name, code="unsupported_parameter")


# ---------------------------------------------------------------------------------------------
# fields: name -> check(value, generation, context); a value of null is the field left out


def _ignore(check=None):
    """A field that cannot change the text npqwen generates: checked for its type, then ignored."""
    return lambda v, g, ctx, name: check(v, name) if check else None


def _off_unless(is_off, what):
    """A field npqwen cannot honour: accepted only at the value that asks for nothing."""
    def f(v, g, ctx, name):
        if not is_off(v):
            raise _unsupported(name, what)
    return f


def _penalty(v, g, ctx, name):
    _number(v, name, -2, 2)
    if v != 0:
        raise _unsupported(name, f"a non-zero {name} (use repetition_penalty)")


def _max_tokens(v, g, ctx, name):
    g.max_tokens = _integer(v, name, 0)   # 0: only with echo (parse checks), to score the prompt alone


def _sampling(check):
    def f(v, g, ctx, name):
        g.sampling[name] = check(v, name)
    return f


def _temperature(v, name):
    return float(_number(v, name, 0, 2))


def _top_p(v, name):
    return float(_number(v, name, 0, 1, lo_open=True))


def _top_k(v, name):
    return max(0, _integer(v, name, -1))           # -1 (vLLM) and 0 (mlx-lm) both mean off


def _min_p(v, name):
    return float(_number(v, name, 0, 1))


def _repetition_penalty(v, name):
    return float(_number(v, name, 0, None, lo_open=True))


def _seed(v, g, ctx, name):
    g.seed = _integer(v, name, 0)


def _n(v, g, ctx, name):
    if _integer(v, name, 1) != 1:
        raise _unsupported(name, "more than one choice per request")


def _stop(v, g, ctx, name):
    stops = [v] if isinstance(v, str) else v
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise ApiError(f"'{name}' must be a string or an array of strings, found {_found(v)}", name)
    if len(stops) > MAX_STOPS or not all(0 < len(s) <= MAX_STOP_CHARS for s in stops):
        raise ApiError(f"'{name}' takes up to {MAX_STOPS} strings of 1 to {MAX_STOP_CHARS} characters, found "
                       f"{len(stops)} of {', '.join(str(len(s)) for s in stops[:MAX_STOPS + 1])}", name)
    g.stop = tuple(stops)


def _logit_bias(v, g, ctx, name):
    if not isinstance(v, dict):
        raise ApiError(f"'{name}' must be an object mapping token ids to numbers, found {_found(v)}", name)
    bias = {}
    for k, b in v.items():
        if not (k.isascii() and k.isdigit() and len(k) <= 12) or int(k) >= ctx["vocab_size"]:
            raise ApiError(f"'{name}': key {_found(k)} is not a token id of this model (0 to "
                           f"{ctx['vocab_size'] - 1})", name)
        bias[int(k)] = float(_number(b, f"{name}.{k}", -100, 100))
    g.logit_bias = bias or None


def _stream(v, g, ctx, name):
    g.stream = _boolean(v, name)


def _stream_options(v, g, ctx, name):
    if not isinstance(v, dict):
        raise ApiError(f"'{name}' must be an object, found {_found(v)}", name)
    for k, x in v.items():
        if k == "include_usage":
            g.include_usage = x is not None and _boolean(x, f"{name}.include_usage")
        elif k == "include_obfuscation":   # padding against side channels on OpenAI's network: nothing here
            x is None or _boolean(x, f"{name}.include_obfuscation")
        else:
            raise ApiError(f"unknown field '{name}.{k}'", f"{name}.{k}", code="unknown_parameter")


def _response_format(v, g, ctx, name):
    """text; json_object (any JSON object); json_schema {"name", "schema", "strict"?, "description"?}:
    both by constrained decoding (structured.py), so the reply parses (and validates)."""
    kind = v.get("type") if isinstance(v, dict) else None
    if kind not in ("text", "json_object", "json_schema"):
        raise ApiError(f"'{name}.type' must be 'text', 'json_object' or 'json_schema', found {_found(kind)}",
                       f"{name}.type")
    for k in v:
        if k not in ("type", "json_schema"):
            raise ApiError(f"unknown field '{name}.{k}'", f"{name}.{k}", code="unknown_parameter")
    if kind == "text":
        return
    if kind == "json_object":
        g.response_format = ("json_object", None)
        return
    js = v.get("json_schema")
    if not isinstance(js, dict):
        raise ApiError(f"'{name}.json_schema' must be an object with 'name' and 'schema', found {_found(js)}",
                       f"{name}.json_schema")
    for k in js:
        if k not in ("name", "schema", "strict", "description"):
            raise ApiError(f"unknown field '{name}.json_schema.{k}'", f"{name}.json_schema.{k}", code="unknown_parameter")
    _string(js.get("name"), f"{name}.json_schema.name")
    if js.get("strict") is not None:
        _boolean(js["strict"], f"{name}.json_schema.strict")
    schema = js.get("schema", {})
    if not isinstance(schema, dict):
        raise ApiError(f"'{name}.json_schema.schema' must be a JSON schema (an object), found {_found(schema)}",
                       f"{name}.json_schema.schema")
    g.response_format = ("json_schema", schema)


def _reasoning_effort(v, g, ctx, name):
    efforts = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
    if v not in efforts:
        raise ApiError(f"'{name}' must be one of {', '.join(efforts)}, found {_found(v)}", name)
    if ctx["can_think"]:   # Qwen3: the chat template's enable_thinking
        g.enable_thinking = v not in ("none", "minimal")
    elif v not in ("none", "minimal"):   # a model that does not reason cannot be asked to
        raise _unsupported(name, f"reasoning_effort '{v}' for a model whose chat template has no reasoning "
                                 f"switch (only 'none' or 'minimal')")


def _logprobs(v, g, ctx, name):
    if g.chat:  # chat: true or false; the count is top_logprobs
        g.want_logprobs = _boolean(v, name)
    else:       # completions: the count of alternatives itself
        g.want_logprobs, g.top_logprobs = True, _integer(v, name, 0, 5)


def _top_logprobs(v, g, ctx, name):
    g.top_logprobs = _integer(v, name, 0, 20)


def _echo(v, g, ctx, name):
    g.echo = _boolean(v, name)


def _model(v, g, ctx, name):
    if _string(v, name) not in ctx["model_ids"]:
        raise ApiError(f"The model '{v}' does not exist: this server serves '{ctx['model_ids'][0]}'", name,
                       status=404, code="model_not_found")


def _object_or_null(v, name):
    if not isinstance(v, dict):
        raise ApiError(f"'{name}' must be an object, found {_found(v)}", name)


def _no_tools(v, g, ctx, name):
    if not isinstance(v, list):
        raise ApiError(f"'{name}' must be an array, found {_found(v)}", name)
    if v:
        raise _unsupported(name, "the deprecated function calling (use 'tools')")


TOOL_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}\Z")


def _tools(v, g, ctx, name):
    """tools: [{"type": "function", "function": {"name", "description"?, "parameters"?: a JSON schema
    of an object, "strict"?}}], rendered by the chat template as sent."""
    if not isinstance(v, list):
        raise ApiError(f"'{name}' must be an array of tools, found {_found(v)}", name)
    if v and ctx.get("tool_format") is None:
        raise _unsupported(name, "tools for a model whose chat template shows no tool calls")
    names = set()
    for i, t in enumerate(v):
        at = f"{name}[{i}]"
        if not isinstance(t, dict) or t.get("type") != "function" or not isinstance(t.get("function"), dict):
            raise ApiError(f"'{at}' must be {{\"type\": \"function\", \"function\": {{...}}}}, found {_found(t)}", at)
        for k in t:
            if k not in ("type", "function"):
                raise ApiError(f"unknown field '{at}.{k}'", f"{at}.{k}", code="unknown_parameter")
        f = t["function"]
        for k in f:
            if k not in ("name", "description", "parameters", "strict"):
                raise ApiError(f"unknown field '{at}.function.{k}'", f"{at}.function.{k}", code="unknown_parameter")
        if not isinstance(f.get("name"), str) or not TOOL_NAME.match(f["name"]):
            raise ApiError(f"'{at}.function.name' must be 1 to 64 letters, digits, _ . : or -, found "
                           f"{_found(f.get('name'))}", f"{at}.function.name")
        if f["name"] in names:
            raise ApiError(f"'{at}.function.name': a second tool named {f['name']!r}", f"{at}.function.name")
        names.add(f["name"])
        if f.get("description") is not None:
            _string(f["description"], f"{at}.function.description")
        if f.get("strict") is not None:
            _boolean(f["strict"], f"{at}.function.strict")
        _schema(f.get("parameters", {}), f"{at}.function.parameters")
    g.tools = v or None


def _schema(p, at):
    """A function's parameters: a JSON schema of an object (what the templates and the XML form's typing read)."""
    if not isinstance(p, dict):
        raise ApiError(f"'{at}' must be a JSON schema object, found {_found(p)}", at)
    if p.get("type", "object") != "object":
        raise ApiError(f"'{at}.type' must be 'object' (a function takes named arguments), found {_found(p['type'])}",
                       f"{at}.type")
    props = p.get("properties", {})
    if not isinstance(props, dict) or not all(isinstance(k, str) and isinstance(x, dict) for k, x in props.items()):
        raise ApiError(f"'{at}.properties' must map each parameter's name to its schema (an object), found "
                       f"{_found(props)}", f"{at}.properties")
    required = p.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise ApiError(f"'{at}.required' must be a list of parameter names, found {_found(required)}", f"{at}.required")
    try:
        json.dumps(p)
    except (TypeError, ValueError, RecursionError):
        raise ApiError(f"'{at}' is not JSON", at) from None


def _tool_choice(v, g, ctx, name):
    """none (the reply is text), auto, required (one call or more) or {"type": "function", "function":
    {"name"}} (exactly that call): the last two by constrained decoding (structured.tool_call_grammar)."""
    if v in ("none", "auto", "required"):
        g.tool_choice = v
        return
    if isinstance(v, dict) and v.get("type") == "function" and isinstance(v.get("function"), dict) \
            and set(v) == {"type", "function"} and set(v["function"]) == {"name"}:
        g.tool_choice = ("function", _string(v["function"]["name"], f"{name}.function.name"))
        return
    raise ApiError(f"'{name}' must be 'none', 'auto', 'required' or {{\"type\": \"function\", \"function\": "
                   f"{{\"name\": ...}}}}, found {_found(v)}", name)


def _check_tool_choice(g, ctx):
    forced = g.tool_choice == "required" or isinstance(g.tool_choice, tuple)
    if not forced:
        return
    names = [t["function"]["name"] for t in g.tools or []]
    if not names:
        raise ApiError("'tool_choice' asks for a call but 'tools' is empty", "tool_choice")
    if isinstance(g.tool_choice, tuple) and g.tool_choice[1] not in names:
        raise ApiError(f"'tool_choice.function.name': no tool is named {g.tool_choice[1]!r} (tools: "
                       f"{', '.join(names)})", "tool_choice.function.name")
    if g.response_format is not None:
        raise ApiError("'tool_choice' forces a tool call and 'response_format' a JSON reply: give one of them",
                       "tool_choice")


def _chat_template_kwargs(v, g, ctx, name):
    """vLLM's extension: arguments for the chat template. npqwen passes the one Qwen's templates read."""
    if not isinstance(v, dict):
        raise ApiError(f"'{name}' must be an object, found {_found(v)}", name)
    for k, x in v.items():
        if k != "enable_thinking":
            raise _unsupported(f"{name}.{k}", f"chat template argument '{k}' (only enable_thinking)")
        if not ctx["can_think"]:
            raise _unsupported(f"{name}.{k}", "enable_thinking for a model whose chat template has no reasoning switch")
        g.enable_thinking = _boolean(x, f"{name}.{k}")


COMMON = {
    "model": _model,
    "frequency_penalty": _penalty,
    "presence_penalty": _penalty,
    "logit_bias": _logit_bias,
    "max_tokens": _max_tokens,
    "n": _n,
    "seed": _seed,
    "stop": _stop,
    "stream": _stream,
    "stream_options": _stream_options,
    "temperature": _sampling(_temperature),
    "top_p": _sampling(_top_p),
    "user": _ignore(_string),
    "logprobs": _logprobs,
    # npqwen's sampling fields, as mlx-lm and vLLM accept them
    "top_k": _sampling(_top_k),
    "min_p": _sampling(_min_p),
    "repetition_penalty": _sampling(_repetition_penalty),
}

CHAT_FIELDS = {
    **COMMON,
    "messages": lambda v, g, ctx, name: setattr(g, "messages", _messages(v)),
    "audio": _off_unless(lambda v: False, "audio output"),
    "function_call": _off_unless(lambda v: v in ("none", "auto"), "function calling"),
    "functions": _no_tools,
    "max_completion_tokens": _max_tokens,
    "metadata": _ignore(_object_or_null),
    "modalities": _off_unless(lambda v: isinstance(v, list) and all(x == "text" for x in v), "output other than text"),
    "moderation": _off_unless(lambda v: False, "moderation"),
    "parallel_tool_calls": _off_unless(lambda v: v is True, "parallel_tool_calls false (the model may call "
                                                          "several tools in one reply; npqwen returns every call)"),
    "chat_template_kwargs": _chat_template_kwargs,
    "prediction": _ignore(_object_or_null),      # predicted output only makes a reply faster, not different
    "prompt_cache_key": _ignore(_string),         # npqwen's prompt cache finds shared prefixes by itself
    "prompt_cache_options": _ignore(_object_or_null),
    "prompt_cache_retention": _ignore(_string),
    "reasoning_effort": _reasoning_effort,
    "response_format": _response_format,
    "safety_identifier": _ignore(_string),
    "service_tier": _ignore(_string),
    "store": _ignore(_boolean),
    "tool_choice": _tool_choice,
    "tools": _tools,
    "top_logprobs": _top_logprobs,
    "verbosity": _off_unless(lambda v: v == "medium", "verbosity other than 'medium'"),
    "web_search_options": _off_unless(lambda v: False, "web search"),
}

COMPLETION_FIELDS = {
    **COMMON,
    "prompt": lambda v, g, ctx, name: setattr(g, "prompt", _prompt(v, ctx["vocab_size"])),
    "best_of": lambda v, g, ctx, name: _n(v, g, ctx, name),
    "echo": _echo,
    "suffix": _off_unless(lambda v: v == "", "a suffix (text insertion)"),
}


def parse(body: dict, chat: bool, ctx: dict) -> Generation:
    """A request body (a JSON object) -> Generation, or ApiError naming the first bad field.
    ctx: model_ids (the names this server answers to), vocab_size, can_think."""
    fields = CHAT_FIELDS if chat else COMPLETION_FIELDS
    for name in body:
        if name not in fields:
            raise ApiError(f"unknown field '{name}': OpenAI's API does not define it and npqwen does not "
                           f"accept it", name, code="unknown_parameter")
    required = "messages" if chat else "prompt"
    if body.get(required) is None:
        raise ApiError(f"'{required}' is required", required, code="missing_required_parameter")
    g = Generation(chat=chat)
    for name, v in body.items():
        if v is not None:
            fields[name](v, g, ctx, name)
    if chat:
        _check_tool_choice(g, ctx)
    if chat and body.get("top_logprobs") is not None and not g.want_logprobs:
        raise ApiError("'top_logprobs' needs 'logprobs': true", "top_logprobs")
    if g.max_tokens == 0 and not g.echo:
        name = "max_tokens" if body.get("max_tokens") is not None else "max_completion_tokens"
        raise ApiError(f"'{name}' must be at least 1, found 0 (0 is accepted with 'echo': true, to score the "
                       f"prompt without generating)", name)
    return g


# ---------------------------------------------------------------------------------------------
# chat messages and prompts

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}
MESSAGE_KEYS = {"role", "content", "name", "tool_calls", "tool_call_id", "function_call", "refusal", "audio",
                "reasoning_content", "reasoning"}


def _messages(v):
    """OpenAI messages -> what a chat template renders: [{"role", "content": text}, ...]; an assistant's
    tool calls with their arguments parsed to an object (Qwen3.5's template iterates them, as vLLM
    passes them), a tool's result with its tool_call_id, an assistant's earlier reasoning as
    reasoning_content (Qwen3's template reads it)."""
    if not isinstance(v, list):
        raise ApiError(f"'messages' must be an array of messages, found {_found(v)}", "messages")
    if not v:
        raise ApiError("'messages' is empty: give at least one message", "messages")
    out = []
    for i, m in enumerate(v):
        at = f"messages[{i}]"
        if not isinstance(m, dict):
            raise ApiError(f"'{at}' must be an object, found {_found(m)}", at)
        for k in m:
            if k not in MESSAGE_KEYS:
                raise ApiError(f"unknown field '{at}.{k}'", f"{at}.{k}", code="unknown_parameter")
        role = m.get("role")
        if role == "function":
            raise _unsupported(f"{at}.role", "role 'function' (the deprecated function calling: use 'tool')")
        if role not in ROLES:
            raise ApiError(f"'{at}.role' must be one of {', '.join(ROLES)}, found {_found(role)}", f"{at}.role")
        for k in ("function_call", "audio"):
            if m.get(k):
                raise _unsupported(f"{at}.{k}", k.replace("_", " "))
        for k in ("tool_calls", "reasoning_content", "reasoning"):
            if m.get(k) is not None and role != "assistant":
                raise ApiError(f"'{at}.{k}': only assistant messages carry {k.replace('_', ' ')}", f"{at}.{k}")
        if m.get("name") is not None:
            _string(m["name"], f"{at}.name")
        content = m.get("content")
        if content is None and role != "assistant":
            raise ApiError(f"'{at}.content' is required", f"{at}.content")
        text = _text(content, f"{at}.content")
        if isinstance(text, list) and role != "user":
            raise ApiError(f"'{at}.content': only user messages may hold images", f"{at}.content")
        if m.get("refusal") is not None:   # what an assistant said when it declined: part of its reply
            text = "\n".join(t for t in (text, _string(m["refusal"], f"{at}.refusal")) if t)
        message = {"role": ROLES[role], "content": text}
        if m.get("name") is not None:
            message["name"] = m["name"]
        if role == "tool":
            message["tool_call_id"] = _string(m.get("tool_call_id"), f"{at}.tool_call_id")
        elif m.get("tool_call_id") is not None:
            raise ApiError(f"'{at}.tool_call_id': only tool messages answer a call", f"{at}.tool_call_id")
        if m.get("tool_calls"):
            message["tool_calls"] = _history_calls(m["tool_calls"], f"{at}.tool_calls")
        thought = m.get("reasoning_content", m.get("reasoning"))
        if thought is not None:
            message["reasoning_content"] = _string(thought, f"{at}.reasoning_content")
        out.append(message)
    return out


def _history_calls(v, at):
    if not isinstance(v, list):
        raise ApiError(f"'{at}' must be an array of tool calls, found {_found(v)}", at)
    calls = []
    for j, c in enumerate(v):
        where = f"{at}[{j}]"
        if not isinstance(c, dict) or not isinstance(c.get("function"), dict):
            raise ApiError(f"'{where}' must be {{\"id\", \"type\": \"function\", \"function\": {{\"name\", "
                           f"\"arguments\"}}}}, found {_found(c)}", where)
        f = c["function"]
        args = f.get("arguments", "{}")
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except (ValueError, RecursionError):
                raise ApiError(f"'{where}.function.arguments' is not JSON", f"{where}.function.arguments") from None
        if not isinstance(args, dict):
            raise ApiError(f"'{where}.function.arguments' must be a JSON object, found {_found(args)}",
                           f"{where}.function.arguments")
        call = {"type": "function", "function": {"name": _string(f.get("name"), f"{where}.function.name"),
                                                 "arguments": args}}
        if c.get("id") is not None:
            call["id"] = _string(c["id"], f"{where}.id")
        calls.append(call)
    return calls


def _text(content, at):
    """Message content: a string, or an array of text parts (joined by newlines, as vLLM does). With
    image parts (image_url, base64 data: URLs), the parts in order instead, as the chat template takes
    them: {"type": "text", "text"} and {"type": "image", "data": bytes}."""
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise ApiError(f"'{at}' must be a string or an array of content parts, found {_found(content)}", at)
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        key = {"text": "text", "refusal": "refusal"}.get(kind)
        if kind == "image_url":
            parts.append({"type": "image", "data": _image_url(part, f"{at}[{j}]")})
            continue
        if key is None:
            if isinstance(kind, str):
                raise _unsupported(f"{at}[{j}].type", f"content of type '{kind}' (npqwen reads text and images)")
            raise ApiError(f"'{at}[{j}]' must be a content part such as {{\"type\": \"text\", \"text\": ...}}",
                           f"{at}[{j}]")
        parts.append({"type": "text", "text": _string(part.get(key), f"{at}[{j}].{key}")})
    if any(p["type"] == "image" for p in parts):
        return parts
    return "\n".join(p["text"] for p in parts)


def _image_url(part, at):
    """An image_url content part -> the image's bytes. Only data: URLs: the server fetches nothing."""
    for k in part:
        if k not in ("type", "image_url"):
            raise ApiError(f"unknown field '{at}.{k}'", f"{at}.{k}", code="unknown_parameter")
    v = part.get("image_url")
    if not isinstance(v, dict) or not isinstance(v.get("url"), str):
        raise ApiError(f"'{at}.image_url' must be an object with a 'url', found {_found(v)}", f"{at}.image_url")
    for k in v:
        if k not in ("url", "detail"):
            raise ApiError(f"unknown field '{at}.image_url.{k}'", f"{at}.image_url.{k}", code="unknown_parameter")
    if v.get("detail", "auto") != "auto":
        raise _unsupported(f"{at}.image_url.detail", f"detail {_found(v['detail'])} (npqwen sizes images as the "
                                                      f"model's processor does: 'auto')")
    url = v["url"]
    where = f"{at}.image_url.url"
    if url.split(":", 1)[0].lower() in ("http", "https"):
        raise ApiError(f"'{where}': the server fetches nothing from the network; send the image itself as a "
                       f"base64 data: URL (data:image/png;base64,...)", where, code="unsupported_parameter")
    head, sep, data = url.partition(",")
    if not head.lower().startswith("data:") or not sep:
        raise ApiError(f"'{where}' must be a data: URL (data:image/png;base64,...), found {_found(url[:40])}", where)
    if not head.lower().endswith(";base64"):
        raise ApiError(f"'{where}': the data: URL must be base64 (data:image/...;base64,...)", where)
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(f"'{where}': the data: URL's base64 is malformed", where) from None


def several_prompts(v):
    """An array of several prompts (strings, or arrays of token ids), as lm-evaluation-harness batches
    them: each is answered as its own request would be, one choice each (index: its place). -> the
    list, or None for one prompt."""
    if isinstance(v, list) and len(v) > 1 and all(isinstance(p, (str, list)) for p in v) \
            and not all(_is_int(i) for i in v):
        return v
    return None


def _prompt(v, vocab_size):
    """A completion prompt: text, or token ids; an array holding one of either is that one."""
    if isinstance(v, list) and len(v) == 1 and isinstance(v[0], (str, list)):
        v = v[0]
    if isinstance(v, str):
        if not v:
            raise ApiError("'prompt' is empty", "prompt")
        return v
    if isinstance(v, list) and v and all(_is_int(i) for i in v):
        bad = [i for i in v if not 0 <= i < vocab_size]
        if bad:
            raise ApiError(f"'prompt' holds token id {_found(bad[0])}, outside the vocabulary [0, {vocab_size})",
                           "prompt")
        return list(v)
    raise ApiError(f"'prompt' must be a string, an array of token ids, or an array holding one of "
                   f"either, found {_found(v) if v != [] else 'an empty array'}", "prompt")


# ---------------------------------------------------------------------------------------------
# responses


def new_id(chat):
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]


def usage_object(u):
    return {"prompt_tokens": u["prompt_tokens"], "completion_tokens": u["completion_tokens"],
            "total_tokens": u["prompt_tokens"] + u["completion_tokens"],
            "prompt_tokens_details": {"cached_tokens": u["cached_tokens"]}}


def logprobs_object(g, tokens, tok=None, offset=0):
    """The choice's `logprobs` for these tokens (npqwen.generation.Token, carrying logprob and
    top_logprobs): null unless the request asked for them. Chat: {"content": [{"token",
    "logprob", "bytes", "top_logprobs": [{token, logprob, bytes}]}]}; completions: {"tokens",
    "token_logprobs", "top_logprobs": [{token: logprob}], "text_offset"}, where with echo the
    prompt's tokens come first, the first of them with null (nothing predicts it), as OpenAI's
    legacy completions and vLLM answer. text_offset: where each token's text starts in the choice's
    text (`offset`: the length of the text in earlier chunks). Each token's text is its own decoding
    (a piece of a character shows as U+FFFD; `bytes` holds its exact bytes)."""
    if g.logprobs is None:
        return None

    def text(i):
        return tok.decode([i]) if tok is not None else str(i)

    def raw(i):
        return list(token_bytes(tok, i)) if tok is not None else []

    if g.chat:
        return {"content": [{"token": text(t.id), "logprob": t.logprob, "bytes": raw(t.id),
                             "top_logprobs": [{"token": text(i), "logprob": lp, "bytes": raw(i)}
                                              for i, lp in (t.top_logprobs or [])]} for t in tokens]}
    offsets, at = [], offset
    for t in tokens:
        offsets.append(at)
        at += len(t.text)
    return {"tokens": [text(t.id) for t in tokens], "token_logprobs": [t.logprob for t in tokens],
            "top_logprobs": [None if t.top_logprobs is None else {text(i): lp for i, lp in t.top_logprobs}
                             for t in tokens],
            "text_offset": offsets}


def response(g, rid, model, created, text, finish_reason, usage, tokens=(), tok=None, message=None):
    """The whole answer of a request that was not streamed. message: a chat reply's fields (replies.join:
    content, reasoning, tool calls); else the text is the content."""
    if g.chat:
        choice = {"index": 0, "message": message or {"role": "assistant", "content": text},
                  "logprobs": logprobs_object(g, tokens, tok), "finish_reason": finish_reason}
    else:
        choice = {"index": 0, "text": text, "logprobs": logprobs_object(g, tokens, tok), "finish_reason": finish_reason}
    return {"id": rid, "object": "chat.completion" if g.chat else "text_completion", "created": created,
            "model": model, "choices": [choice], "usage": usage_object(usage)}


def chunk(g, rid, model, created, text=None, finish_reason=None, role=False, usage=None, last=False, tokens=(),
          tok=None, offset=0, delta=None):
    """One server-sent event of a streamed answer: a piece of text, the finish reason, or (last, with
    stream_options.include_usage) the usage with no choices. delta: a chat reply's fields instead of
    text (reasoning, tool calls: replies.py)."""
    c = {"id": rid, "object": "chat.completion.chunk" if g.chat else "text_completion", "created": created,
         "model": model}
    if last:
        c["choices"] = []
    elif g.chat:
        delta = ({"role": "assistant", "content": ""} if role else {}) | ({"content": text} if text else {}) | (delta or {})
        c["choices"] = [{"index": 0, "delta": delta, "logprobs": logprobs_object(g, tokens, tok),
                         "finish_reason": finish_reason}]
    else:
        c["choices"] = [{"index": 0, "text": text or "", "logprobs": logprobs_object(g, tokens, tok, offset),
                         "finish_reason": finish_reason}]
    if g.include_usage:
        c["usage"] = usage_object(usage) if last else None
    return c


def now():
    return int(time.time())
