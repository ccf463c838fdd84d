"""What a chat model says, split the way clients read it: its reasoning, its answer, its tool calls.

A Qwen3 / Qwen3.5 reply is one text:

    <think>\\n ... the reasoning ... \\n</think>\\n\\n the answer <tool_call>\\n ... a call ... \\n</tool_call>

and the OpenAI API wants it in fields: `reasoning_content` (also sent as `reasoning`: clients read one
or the other), `content`, and `tool_calls`, each call {id, type "function", function {name, arguments:
a JSON string}}. `ReplySplitter` is one state machine over the text as it streams (`feed`, then
`finish`), so that the streamed deltas join to exactly the fields of the same reply not streamed:

  reasoning   starts when the output holds <think>, or when the prompt opened one and did not close it
              (Qwen3.5's template, and Qwen3's with thinking on... as mlx-lm decides); ends at </think>,
              or at a <tool_call> the model starts before closing it. The text is split at the tags,
              nothing trimmed (vLLM's qwen3 parser), the tags themselves left out.
  tool calls  each <tool_call>...</tool_call> block, in the format the chat template teaches (mlx-lm's
              rule: `<tool_call>\\n<function=` in the template is the XML form of Qwen3.5 / Qwen3-Coder,
              `<tool_call>` with `tool_call.name` the Hermes JSON of Qwen2.5 / Qwen3):
                Hermes  {"name": NAME, "arguments": {...}}
                XML     <function=NAME> <parameter=P> VALUE </parameter> ... </function>, each VALUE
                        stripped of one leading and one trailing newline and typed by the tool's schema
                        (vLLM's qwen3coder parser: an integer parameter becomes a number, an object JSON)
              A block that does not parse, or calls a function not in `tools`, stays text in the content.
  content     the rest, all of it; but a reply that is only calls (and whitespace around them) has content
              null. So whitespace is held back until more content follows or the reply ends.
"""

import json
import re
import secrets

THINK, END_THINK, CALL, END_CALL = "<think>", "</think>", "<tool_call>", "</tool_call>"


def tool_format(template) -> str | None:
    """The tool-call format a chat template teaches: "xml", "hermes", or None (no tool calls)."""
    if not isinstance(template, str):
        return None
    if "<tool_call>\n<function=" in template or "<tool_call>\\n<function=" in template:
        return "xml"
    if "<tool_call>" in template and "tool_call.name" in template:
        return "hermes"
    return None


def reasoning_open(prompt_text) -> bool:
    """Did the prompt open a <think> block and leave it open (the model's reply starts inside it)?"""
    return prompt_text.rfind(THINK) > prompt_text.rfind(END_THINK)


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


class ReplySplitter:
    """feed(text) -> [delta], finish() -> [delta]; a delta is ("reasoning", text), ("content", text)
    or ("tool_call", {"name", "arguments"}). reasoning: whether to look for <think> at all (a tokenizer
    with the tokens); open_: the prompt left one open. tools: {name: JSON schema of its parameters}, or
    None not to parse calls (no tools, or tool_choice "none"); fmt: tool_format(template)."""

    def __init__(self, reasoning=False, open_=False, tools=None, fmt=None):
        self.reasoning, self.tools, self.fmt = reasoning, tools if fmt else None, fmt
        self.state = "reasoning" if reasoning and open_ else "content"
        self.thought = self.state == "reasoning"      # a reply has at most one reasoning block
        self.pending, self.block, self.blank = "", "", ""
        self.calls, self.said = 0, False

    def _tags(self):
        tags = []
        if self.state == "reasoning":
            tags.append(END_THINK)
        elif self.reasoning and not self.thought:
            tags.append(THINK)
        if self.tools is not None:
            tags.append(CALL)
        return tags

    def feed(self, text):
        out = []
        self.pending += text
        while self.pending:
            if self.state == "tool":   # (the block so far holds what it has read: a tag may be cut in two)
                self.block, self.pending = self.block + self.pending, ""
                end = self.block.find(END_CALL)
                if end < 0:
                    break
                self.block, self.pending = self.block[:end], self.block[end + len(END_CALL):]
                call = parse_call(self.block, self.fmt, self.tools)
                self.state = "content"
                if call is None:
                    out += self._say("content", CALL + self.block + END_CALL)
                else:
                    self.calls += 1
                    out.append(("tool_call", call))
                self.block = ""
                continue
            tags = self._tags()
            found = [(self.pending.find(t), t) for t in tags if t in self.pending]
            if not found:   # hold back a tail that may be the start of a tag
                keep = max((k for t in tags for k in range(1, len(t)) if self.pending.endswith(t[:k])), default=0)
                text, self.pending = self.pending[:len(self.pending) - keep], self.pending[len(self.pending) - keep:]
                out += self._say(self.state, text)
                break
            at, tag = min(found)
            out += self._say(self.state, self.pending[:at])
            self.pending = self.pending[at + len(tag):]
            if tag == THINK:
                self.state, self.thought = "reasoning", True
            elif tag == END_THINK:
                self.state = "content"
            else:
                self.state, self.block = "tool", ""
        return out

    def finish(self):
        """The end of the reply: what was held back, an unclosed call as text."""
        out = []
        if self.state == "tool":
            out += self._say("content", CALL + self.block)
        else:
            out += self._say(self.state, self.pending)
        self.pending = self.block = ""
        if self.blank and (self.said or not self.calls):   # (whitespace around calls alone is no content)
            out.append(("content", self.blank))
        self.blank = ""
        return out

    def _say(self, channel, text):
        if not text:
            return []
        if channel != "content":
            return [(channel, text)]
        if not text.strip():   # whitespace alone: held until content follows
            self.blank += text
            return []
        text, self.blank, self.said = self.blank + text, "", True
        return [("content", text)]


def join(deltas, finish_reason):
    """The deltas of a whole reply -> the message fields and the finish reason (tool_calls when the
    reply made calls and was not cut short)."""
    reasoning = "".join(t for c, t in deltas if c == "reasoning")
    content = "".join(t for c, t in deltas if c == "content")
    calls = [t for c, t in deltas if c == "tool_call"]
    message = {"role": "assistant", "content": content if content or not calls else None}
    if any(c == "reasoning" for c, _ in deltas):
        message["reasoning_content"] = message["reasoning"] = reasoning
    if calls:
        message["tool_calls"] = [{"id": c["id"], "type": "function",
                                  "function": {"name": c["name"], "arguments": c["arguments"]}} for c in calls]
        if finish_reason == "stop":
            finish_reason = "tool_calls"
    return message, finish_reason


# ---------------------------------------------------------------------------------------------
# one call


def parse_call(block, fmt, tools):
    """The text between <tool_call> and </tool_call> -> {"id", "name", "arguments" (a JSON string)},
    or None if it is not a call of one of `tools`."""
    call = _hermes(block) if fmt == "hermes" else _xml(block, tools)
    if call is None or call[0] not in tools:
        return None
    return {"id": new_call_id(), "name": call[0], "arguments": json.dumps(call[1], ensure_ascii=False)}


def _hermes(block):
    try:
        d = json.loads(block)
    except (ValueError, RecursionError):
        return None
    if not isinstance(d, dict) or not isinstance(d.get("name"), str):
        return None
    args = d.get("arguments", d.get("parameters", {}))
    if isinstance(args, str):   # some models write the arguments as a JSON string
        try:
            args = json.loads(args)
        except (ValueError, RecursionError):
            return None
    return (d["name"], args) if isinstance(args, dict) else None


FUNCTION = re.compile(r"\s*<function=([^>\n]+)>(.*?)</function>\s*\Z", re.S)
PARAMETER = re.compile(r"<parameter=([^>\n]+)>(.*?)</parameter>", re.S)


def _xml(block, tools):
    m = FUNCTION.match(block)
    if m is None:
        return None
    name, body = m.group(1).strip(), m.group(2)
    if PARAMETER.sub("", body).strip():   # text outside the parameters: not this format
        return None
    props = (tools.get(name) or {}).get("properties") or {} if tools else {}
    args = {}
    for p, value in PARAMETER.findall(body):
        value = value[1:] if value.startswith("\n") else value
        value = value[:-1] if value.endswith("\n") else value
        p = p.strip()
        args[p] = typed(value, (props.get(p) or {}).get("type"))
    return name, args


def typed(value, kind):
    """A parameter's text as its schema's type says (vLLM's qwen3coder _convert_param_value)."""
    if isinstance(kind, list):   # ["integer", "null"]: the first that is not null
        kind = next((k for k in kind if k != "null"), None)
    if value.strip().lower() == "null":
        return None
    kind = str(kind).lower() if kind is not None else None
    if kind in ("string", "str", "text", "varchar", "char", "enum"):
        return value
    try:
        if kind in ("integer", "int"):
            return int(value.strip())
        if kind in ("number", "float", "double"):
            f = float(value.strip())
            return int(f) if f.is_integer() and "." not in value and "e" not in value.lower() else f
    except ValueError:
        return value
    if kind in ("boolean", "bool"):
        v = value.strip().lower()
        return v == "true" if v in ("true", "false") else value
    try:
        return json.loads(value)   # object, array, or an untyped parameter
    except (ValueError, RecursionError):
        return value
