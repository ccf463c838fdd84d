"""Write what transformers computes for some tokens as a dump for `python -m npqwen.compare`: an
example of the format, which any engine can write (safetensors has writers for NumPy, PyTorch and
others, and a C and Rust reader/writer).

    /tmp/goldenv/bin/python scripts/dump_transformers.py --model golden/checkpoints/demo \\
        --text "学习如逆水行舟,不进则" --out dump.safetensors
    python -m npqwen.compare --model golden/checkpoints/demo --reference dump.safetensors

The dump is one safetensors file holding
    input_ids          [batch, seq] integers (required)
    attention_mask     [batch, seq] 0/1, 0 for left padding (optional)
    hidden_states.{i}  [batch, seq, hidden_size] floats, transformers' output_hidden_states: 0 the
                       embeddings, i the output of decoder layer i-1, the last after the final norm
    logits             [batch, seq, vocab_size] floats
each optional but input_ids. `--dtype bfloat16` runs transformers in bfloat16, an engine that is not
npqwen's float32, to see a divergence reported.
"""

import argparse

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="checkpoint folder")
    p.add_argument("--text", help="text to run (needs the checkpoint's tokenizer)")
    p.add_argument("--ids", help="token ids to run instead, e.g. '1 2 3'")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--out", required=True, help="the dump to write (.safetensors)")
    args = p.parse_args()

    if args.text is not None:
        ids = AutoTokenizer.from_pretrained(args.model)(args.text, return_tensors="pt").input_ids
    else:
        ids = torch.tensor([[int(t) for t in args.ids.split()]])
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=getattr(torch, args.dtype),
                                                 attn_implementation="eager").eval()
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    dump = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "logits": out.logits.float()}
    for i, h in enumerate(out.hidden_states):
        dump[f"hidden_states.{i}"] = h.float()
    save_file({k: v.contiguous() for k, v in dump.items()}, args.out)
    print(f"{args.out}: {ids.shape[1]} tokens, {len(out.hidden_states)} hidden states and the logits "
          f"({args.dtype})")


if __name__ == "__main__":
    main()
