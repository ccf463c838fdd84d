"""Export, once, the ids transformers' apply_chat_template(..., add_generation_prompt=True) gives
for the genuine Qwen2, Qwen2.5 and Qwen3 tokenizers in ../shared/assets/qwen2 (read from there, never
copied), into golden/references/chat_templates.json. Qwen3's template is exported with
enable_thinking true and false. Needs transformers (see export_golden.py).

    /tmp/goldenv/bin/python scripts/export_chat_golden.py [--out DIR]   # DIR/references/chat_templates.json
"""

import argparse
import json
import os

import transformers
from transformers import AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ASSETS = os.path.join(HERE, "..", "..", "shared", "assets", "qwen2")
GOLDEN = os.path.join(HERE, "..", "golden")

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "城市 / city"}},
                   "required": ["city"]}}}

CONVERSATIONS = {
    "multi_turn": dict(messages=[
        {"role": "user", "content": "学习如逆水行舟,不进则?"},
        {"role": "assistant", "content": "退。"},
        {"role": "user", "content": "And in English? 😀"}]),
    "multi_turn_system": dict(messages=[
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Hello!"},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "Name a prime number."}]),
    "tool_calling": dict(tools=[WEATHER_TOOL], messages=[
        {"role": "user", "content": "What's the weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "name": "get_weather", "content": "{\"temperature\": 21, \"sky\": \"clear\"}"},
        {"role": "user", "content": "Thanks. And in 北京?"}]),
    # Qwen3's template drops the <think> part of earlier assistant turns, and keeps it after the last query.
    "thinking_history": dict(messages=[
        {"role": "user", "content": "2 + 3?"},
        {"role": "assistant", "content": "<think>\nTwo plus three is five.\n</think>\n\n5"},
        {"role": "user", "content": "Times 4?"},
        {"role": "assistant", "content": "<think>\n5 × 4 = 20.\n</think>\n\n20"},
        {"role": "user", "content": "Use the tool for Paris."},
        {"role": "assistant", "content": "<think>\nCall get_weather.\n</think>\n\n", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "name": "get_weather", "content": "{\"temperature\": 21}"}], tools=[WEATHER_TOOL]),
}
TOKENIZERS = {"qwen2": ASSETS, "qwen2.5": os.path.join(ASSETS, "qwen2.5"), "qwen3": os.path.join(ASSETS, "qwen3")}


def cases():
    """(tokenizer, conversation, template options): Qwen2 has no tools, only Qwen3 thinks."""
    for tok_name in TOKENIZERS:
        for conv_name in CONVERSATIONS:
            if conv_name == "tool_calling" and tok_name == "qwen2":
                continue  # Qwen2's template has no tool support
            if conv_name == "thinking_history" and tok_name != "qwen3":
                continue
            if tok_name == "qwen3":
                for thinking in (True, False):
                    yield tok_name, conv_name, {"enable_thinking": thinking}
            else:
                yield tok_name, conv_name, {}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=GOLDEN, help="writes OUT/references/chat_templates.json (default: golden/)")
    out_path = os.path.join(parser.parse_args().out, "references", "chat_templates.json")
    out, tokenizers = {"transformers": transformers.__version__, "cases": []}, {}
    for tok_name, conv_name, options in cases():
        tok = tokenizers.setdefault(tok_name, AutoTokenizer.from_pretrained(TOKENIZERS[tok_name]))
        conv = CONVERSATIONS[conv_name]
        ids = tok.apply_chat_template(conv["messages"], tools=conv.get("tools"), add_generation_prompt=True,
                                      tokenize=True, return_dict=False, **options)
        text = tok.apply_chat_template(conv["messages"], tools=conv.get("tools"), add_generation_prompt=True,
                                       tokenize=False, **options)
        out["cases"].append({"tokenizer": tok_name, "conversation": conv_name, **options, **conv,
                             "text": text, "ids": [int(i) for i in ids]})
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
    print(f"wrote {len(out['cases'])} cases to {out_path}")


if __name__ == "__main__":
    main()
