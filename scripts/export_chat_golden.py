"""Export, once, the ids transformers' apply_chat_template(..., add_generation_prompt=True) gives
for the genuine Qwen2 and Qwen2.5 tokenizers in ../shared/assets/qwen2 (read from there, never
copied), into golden/references/chat_templates.json. Needs transformers (see export_golden.py).

    /tmp/goldenv/bin/python scripts/export_chat_golden.py
"""

import json
import os

import transformers
from transformers import AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ASSETS = os.path.join(HERE, "..", "..", "shared", "assets", "qwen2")
OUT = os.path.join(HERE, "..", "golden", "references", "chat_templates.json")

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
}
TOKENIZERS = {"qwen2": ASSETS, "qwen2.5": os.path.join(ASSETS, "qwen2.5")}


def main():
    out = {"transformers": transformers.__version__, "cases": []}
    for tok_name, folder in TOKENIZERS.items():
        tok = AutoTokenizer.from_pretrained(folder)
        for conv_name, conv in CONVERSATIONS.items():
            if conv_name == "tool_calling" and tok_name != "qwen2.5":
                continue  # Qwen2's template has no tool support
            ids = tok.apply_chat_template(conv["messages"], tools=conv.get("tools"), add_generation_prompt=True,
                                          tokenize=True, return_dict=False)
            text = tok.apply_chat_template(conv["messages"], tools=conv.get("tools"), add_generation_prompt=True,
                                           tokenize=False)
            out["cases"].append({"tokenizer": tok_name, "conversation": conv_name, **conv,
                                 "text": text, "ids": [int(i) for i in ids]})
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
    print(f"wrote {len(out['cases'])} cases to {OUT}")


if __name__ == "__main__":
    main()
