"""The catalogue of bad inputs and what npqwen answers to each. tests/test_bad_inputs.py runs every
case (each must give one clear NpqwenError, or from the command line one `error:` line and exit
status 2) and checks that the README's table is this catalogue's current output;
`python tests/bad_inputs.py` prints the table to paste."""

import html
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
GOLDEN = os.path.join(ROOT, "golden", "checkpoints", "mha_f32_tied")   # float32: re-savable by safetensors
SHARDED = os.path.join(ROOT, "golden", "checkpoints", "mqa_bf16_sharded")
DEMO = os.path.join(ROOT, "golden", "checkpoints", "demo")
VISION = os.path.join(ROOT, "golden", "vision", "qwen3_5_vision")   # a vision-language checkpoint

from npqwen import NpqwenError, Tokenizer, generate, load_model  # noqa: E402


class CLIError(Exception):
    pass


def copy_ckpt(tmp, src=GOLDEN):
    d = os.path.join(tmp, "ckpt")
    shutil.copytree(src, d)
    return d


def edit_config(d, **changes):
    path = os.path.join(d, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    with open(path, "w") as f:
        json.dump(cfg, f)


def edit_tensors(d, fn):
    path = os.path.join(d, "model.safetensors")
    t = load_file(path)
    fn(t)
    save_file(t, path)


def write_header(d, header, data_len):
    raw = json.dumps(header).encode()
    with open(os.path.join(d, "model.safetensors"), "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw + b"\0" * data_len)


def cli(*args, stdin=None, module="npqwen.generate"):
    r = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, input=stdin,
                       capture_output=True, timeout=300)
    err = r.stderr.decode("utf-8", "replace")
    if r.returncode != 2 or not err.startswith("error: ") or err.count("\n") != 1 or r.stdout:
        raise AssertionError(f"expected one error line and status 2, got {r.returncode}: {err!r}")
    raise CLIError(err[len("error: "):].strip())


# ---------------------------------------------------------------------------------------------
# each case: (what, function(tmp) that must raise NpqwenError or CLIError, text the message must contain)

def only_pickle(tmp):
    d = os.path.join(tmp, "ckpt")
    os.makedirs(d)
    shutil.copy(os.path.join(GOLDEN, "config.json"), d)
    open(os.path.join(d, "pytorch_model.bin"), "wb").write(b"\x80\x04not really")
    load_model(d)


def no_weights(tmp):
    d = os.path.join(tmp, "ckpt")
    os.makedirs(d)
    shutil.copy(os.path.join(GOLDEN, "config.json"), d)
    load_model(d)


def truncated(tmp):
    d = copy_ckpt(tmp)
    path = os.path.join(d, "model.safetensors")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size - 1000)
    load_model(d)


def header_past_end(tmp):
    d = copy_ckpt(tmp)
    with open(os.path.join(d, "model.safetensors"), "r+b") as f:
        f.write((5 * 10**7).to_bytes(8, "little"))
    load_model(d)


def huge_header(tmp):
    d = copy_ckpt(tmp)
    with open(os.path.join(d, "model.safetensors"), "r+b") as f:
        f.write((2**62).to_bytes(8, "little"))
    load_model(d)


def header_not_json(tmp):
    d = copy_ckpt(tmp)
    with open(os.path.join(d, "model.safetensors"), "r+b") as f:
        f.seek(8)
        f.write(b"{garbage")
    load_model(d)


def unknown_dtype(tmp):
    d = copy_ckpt(tmp)
    write_header(d, {"model.norm.weight": {"dtype": "Q4_K", "shape": [64], "data_offsets": [0, 128]}}, 128)
    load_model(d)


def overlapping(tmp):
    d = copy_ckpt(tmp)
    write_header(d, {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                     "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}, 24)
    load_model(d)


def huge_shape(tmp):
    d = copy_ckpt(tmp)
    write_header(d, {"a": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 16]}}, 16)
    load_model(d)


def tensors_disagree(tmp):
    d = copy_ckpt(tmp)

    def change(t):
        del t["model.layers.0.mlp.up_proj.weight"]
        t["model.layers.1.self_attn.q_proj.bias"] = np.zeros(65, np.float32)
        t["model.layers.0.extra.weight"] = np.zeros(3, np.float32)
    edit_tensors(d, change)
    load_model(d)


def shard_missing(tmp):
    d = copy_ckpt(tmp, SHARDED)
    os.remove(os.path.join(d, "model-00003-of-00010.safetensors"))
    load_model(d)


def config_not_json(tmp):
    d = copy_ckpt(tmp)
    open(os.path.join(d, "config.json"), "w").write('{"model_type": "qwen2",')
    load_model(d)


def config_case(**changes):
    def case(tmp):
        d = copy_ckpt(tmp)
        edit_config(d, **changes)
        load_model(d)
    return case


def moe_config_case(**changes):
    def case(tmp):
        d = copy_ckpt(tmp, os.path.join(ROOT, "golden", "checkpoints", "qwen3_moe_step2"))
        edit_config(d, **changes)
        load_model(d)
    return case


def nan_weights(tmp):
    model = load_model(GOLDEN)
    model.layers[2].mlp.w_gate_up[0, 0] = np.nan
    list(generate(model, None, [1, 2, 3], 4, eos_ids=[]))


def tokenizer_missing(tmp):
    d = copy_ckpt(tmp)
    cli("--model", d, "hello")


def tokenizer_broken(tmp):
    d = copy_ckpt(tmp)
    open(os.path.join(d, "tokenizer.json"), "w").write("{not json")
    Tokenizer(d)


def template_raises(tmp):
    d = os.path.join(tmp, "tok")
    os.makedirs(d)
    shutil.copy(os.path.join(DEMO, "tokenizer.json"), d)
    json.dump({"chat_template": "{{ raise_exception('Conversation roles must alternate') }}"},
              open(os.path.join(d, "tokenizer_config.json"), "w"))
    Tokenizer(d).encode_chat([{"role": "user", "content": "hi"}])


def not_utf8_file(tmp):
    path = os.path.join(tmp, "prompt.txt")
    open(path, "wb").write(b"caf\xe9")
    cli("--file", path)


def edit_json(d, name, **changes):
    path = os.path.join(d, name)
    with open(path) as f:
        data = json.load(f)
    data.update(changes)
    with open(path, "w") as f:
        json.dump(data, f)


def demo_with(file, **changes):
    """The demo checkpoint with fields of one of its JSON files changed, run from the command line."""
    def case(tmp):
        d = copy_ckpt(tmp, DEMO)
        edit_json(d, file, **changes)
        cli("--model", d, "hi")
    return case


def config_eos_string(tmp):
    d = copy_ckpt(tmp)
    edit_config(d, eos_token_id="<|im_end|>")
    list(generate(load_model(d), None, [1, 2, 3], 4))


def template_file_not_utf8(tmp):
    d = copy_ckpt(tmp, DEMO)
    open(os.path.join(d, "chat_template.jinja"), "wb").write(b"{{ 'caf\xe9' }}")
    cli("--model", d, "--chat", "hi")


def tokenizer_of_another_model(tmp):
    d = copy_ckpt(tmp)   # a golden model: 320 embeddings
    shutil.copy(os.path.join(DEMO, "tokenizer.json"), d)
    cli("--model", d, "hi")


def tool(main, *args, stdin=b""):
    """Another command-line tool (score, compare), run in-process: one error line and status 2."""
    from cli_inprocess import run_cli
    status, out, err = run_cli(list(args), stdin, main=main)
    if status != 2 or not err.startswith("error: ") or err.count("\n") != 1 or out:
        raise AssertionError(f"expected one error line and status 2, got {status}: {err!r}")
    raise CLIError(err[len("error: "):].strip())


def score(*args, stdin=b""):
    from npqwen.score import main
    tool(main, *args, stdin=stdin)


def dump_with(**changes):
    """compare against a dump of the demo model's golden prompt with tensors changed (None: removed)."""
    def case(tmp):
        from npqwen.compare import main
        ref = load_file(os.path.join(ROOT, "golden", "references", "demo.safetensors"))
        dump = {"input_ids": ref["p0.input_ids"], "logits": ref["p0.logits"], "hidden_states.1": ref["p0.hidden.1"]}
        dump.update(changes)
        path = os.path.join(tmp, "dump.safetensors")
        save_file({k: v for k, v in dump.items() if v is not None}, path)
        tool(main, "--model", DEMO, "--reference", path)
    return case


def kv_cache_too_large(tmp):
    list(generate(load_model(GOLDEN), None, [1, 2, 3], max_new_tokens=10**13, eos_ids=[], max_context=10**13))


# Qwen3.8-Flash-Next (bf16: its files are rewritten byte for byte, without the safetensors package)
FLASH_NEXT = os.path.join(ROOT, "golden", "checkpoints", "qwen4_exp_text")
SHARD = "model.layers.1.ple.ple_embedding.ngram_embedding.shard_{}.weight"


def rewrite_safetensors(path, drop=(), rows=None, replace=None, dtypes=None):
    """Copy a safetensors file's tensors as stored, leaving out `drop`, keeping only the first
    rows[name] rows of a tensor, writing replace[name] (an array) instead of a tensor, and relabelling
    a tensor's bytes as dtypes[name]."""
    from npqwen.weights import read_header
    start, tensors, _ = read_header(path)
    with open(path, "rb") as f:
        data = f.read()[start:]
    header, parts, offset = {}, [], 0
    for name, (dtype, shape, begin, end) in sorted(tensors.items(), key=lambda kv: kv[1][2]):
        if name in drop:
            continue
        raw = data[begin:end]
        if replace and name in replace:
            a = np.ascontiguousarray(replace[name])
            raw, shape = a.tobytes(), a.shape
            dtype = {np.dtype(np.float32): "F32", np.dtype(np.int32): "I32", np.dtype(np.float16): "F16"}[a.dtype]
        if dtypes and name in dtypes:
            dtype = dtypes[name]
        if rows and name in rows:
            raw = raw[:len(raw) // shape[0] * rows[name]]
            shape = (rows[name],) + tuple(shape[1:])
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        parts.append(raw)
        offset += len(raw)
    head = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(len(head).to_bytes(8, "little") + head + b"".join(parts))


def flash_next_shard_missing(tmp):
    d = copy_ckpt(tmp, FLASH_NEXT)
    rewrite_safetensors(os.path.join(d, "model.safetensors"), drop=[SHARD.format(3)])
    load_model(d)


def flash_next_shard_short(tmp):
    d = copy_ckpt(tmp, FLASH_NEXT)
    rewrite_safetensors(os.path.join(d, "model.safetensors"), rows={SHARD.format(5): 20})
    load_model(d)


def flash_next_last_shard_cut(tmp):
    d = copy_ckpt(tmp, FLASH_NEXT)
    rewrite_safetensors(os.path.join(d, "model.safetensors"), rows={SHARD.format(27): 10})
    load_model(d)


def flash_next_config(**changes):
    def f(tmp):
        d = copy_ckpt(tmp, FLASH_NEXT)
        edit_config(d, **changes)
        load_model(d)
    return f


FP8 = os.path.join(ROOT, "golden", "checkpoints", "fp8_qwen3")
GPTQ = os.path.join(ROOT, "golden", "checkpoints", "gptq_qwen2")


def forward_cli(d):   # (the golden quantized checkpoints have no tokenizer: npqwen.forward runs from ids)
    cli("--model", d, "--ids", "1 2 3", module="npqwen.forward")


def quantized_case(src, **changes):
    """A copy of a quantized golden checkpoint with its tensors changed (rewrite_safetensors), run from the command line."""
    def case(tmp):
        d = copy_ckpt(tmp, src)
        rewrite_safetensors(os.path.join(d, "model.safetensors"), **changes)
        forward_cli(d)
    return case


def quant_config(src, **changes):
    def case(tmp):
        d = copy_ckpt(tmp, src)
        with open(os.path.join(d, "config.json")) as f:
            qc = json.load(f)["quantization_config"]
        edit_config(d, quantization_config={k: v for k, v in {**qc, **changes}.items() if v is not None})
        forward_cli(d)
    return case


def quantized_without_config(tmp):
    d = copy_ckpt(tmp, GPTQ)
    edit_config(d, quantization_config=None)
    forward_cli(d)


def image_file(tmp, data, name="x.png"):
    path = os.path.join(tmp, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def truncated_png(tmp):
    good = open(os.path.join(ROOT, "golden", "vision", "images", "big.png"), "rb").read()
    return image_file(tmp, good[:len(good) // 2])


def bomb_png(tmp):
    """A PNG header declaring 40000 x 40000 pixels, and nothing after it."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return image_file(tmp, b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0))
                      + chunk(b"IEND", b""))


def image_count_mismatch(tmp):
    """Two images given, the prompt holding one image's placeholders."""
    from npqwen.vision import load_image_processor
    pv, grid = load_image_processor(VISION)([np.zeros((64, 64, 3), np.uint8)] * 2)
    m = load_model(VISION)
    n = int(grid[0].prod()) // 4
    m.forward([[1] + [m.config.image_token_id] * n + [2]], pixel_values=pv, image_grid_thw=grid)


def image_run_too_short(tmp):
    from npqwen.vision import load_image_processor
    pv, grid = load_image_processor(VISION)([np.zeros((64, 64, 3), np.uint8)])
    m = load_model(VISION)
    m.forward([[1] + [m.config.image_token_id] * 3 + [2]], pixel_values=pv, image_grid_thw=grid)


CASES = [
    ("checkpoint: only `pytorch_model.bin` (a pickle)", only_pickle, "safetensors"),
    ("checkpoint: no weights file", no_weights, "no model.safetensors"),
    ("safetensors: truncated download", truncated, "truncated"),
    ("safetensors: header length past the end of the file", header_past_end, "past the end"),
    ("safetensors: header length of 2^62", huge_header, "exceeds"),
    ("safetensors: header is not JSON", header_not_json, "not valid JSON"),
    ("safetensors: unknown dtype", unknown_dtype, "unknown dtype 'Q4_K'"),
    ("safetensors: overlapping data offsets", overlapping, "overlap"),
    ("safetensors: shape of 2^80 elements", huge_shape, "needs"),
    ("checkpoint: missing, mis-shaped and unexpected tensors", tensors_disagree, "3 problems"),
    ("sharded checkpoint: a shard is missing", shard_missing, "model-00003-of-00010.safetensors"),
    ("config.json: not JSON", config_not_json, "not valid JSON"),
    ("config.json: model_type llama", config_case(model_type="llama"), "'llama'"),
    ("config.json: architecture Qwen2ForSequenceClassification",
     config_case(architectures=["Qwen2ForSequenceClassification"]), "Qwen2ForCausalLM"),
    ("config.json: architecture Qwen3ForCausalLM under model_type qwen2",
     config_case(architectures=["Qwen3ForCausalLM"]), "does not match"),
    ("config.json: hidden_size missing", config_case(hidden_size=None), "hidden_size"),
    ("config.json: hidden_size not divisible by the heads", config_case(hidden_size=66), "not divisible"),
    ("config.json: heads not divisible by kv heads", config_case(num_key_value_heads=3), "num_key_value_heads"),
    ("config.json: rope scaling type longrope", config_case(rope_parameters={"rope_type": "longrope", "factor": 2.0}), "longrope"),
    ("config.json: a string where a size belongs", config_case(num_hidden_layers="3"), "num_hidden_layers"),
    ("config.json (MoE): more experts per token than experts", moe_config_case(num_experts_per_tok=9),
     "num_experts_per_tok"),
    ("config.json (MoE): num_experts and num_local_experts disagree", moe_config_case(num_experts=16), "disagree"),
    ("config.json (Qwen3.5): a composite config without text_config",
     config_case(model_type="qwen3_5", architectures=["Qwen3_5ForConditionalGeneration"]), "text_config"),
    ("config.json (Qwen3.5): value heads not a multiple of key heads",
     config_case(model_type="qwen3_5_text", architectures=["Qwen3_5ForCausalLM"], linear_num_key_heads=4,
                 linear_num_value_heads=6), "divisible"),
    ("config.json (Qwen3.8-Flash-Next): indexer_kv_heads 2", flash_next_config(indexer_kv_heads=2), "must be 1"),
    ("config.json (Qwen3.8-Flash-Next): ple_layer_ids [9] in 4 layers", flash_next_config(ple_layer_ids=[9]),
     "out of range"),
    ("config.json (Qwen3.8-Flash-Next): indexer_budget 10, blocks of 4", flash_next_config(indexer_budget=10),
     "multiple"),
    ("checkpoint (Qwen3.8-Flash-Next): an n-gram shard missing", flash_next_shard_missing, "shard_3"),
    ("checkpoint (Qwen3.8-Flash-Next): an n-gram shard cut short", flash_next_shard_short, "shard_5"),
    ("checkpoint (Qwen3.8-Flash-Next): an n-gram table shorter than its heads' primes need (the last shard cut)",
     flash_next_last_shard_cut, "primes"),
    ("weights: a NaN in layer 2", nan_weights, "decoder layer 2"),
    ("generation: a KV cache larger than memory (10^13 new tokens in a 10^13-token context)", kv_cache_too_large,
     "KV cache"),
    ("config.json: eos_token_id a string", config_eos_string, "eos_token_id"),
    ("generation_config.json: eos_token_id a string", demo_with("generation_config.json", eos_token_id="<|im_end|>"),
     "eos_token_id"),
    ("generation_config.json: an eos id outside the vocabulary", demo_with("generation_config.json",
                                                                           eos_token_id=[4002, 151645]), "151645"),
    ("generation_config.json: top_p 1.5", demo_with("generation_config.json", do_sample=True, top_p=1.5), "top_p"),
    ("generation_config.json: temperature a string", demo_with("generation_config.json", temperature="0.7"),
     "temperature"),
    ("tokenizer.json: missing (text prompt from the command line)", tokenizer_missing, "tokenizer.json"),
    ("tokenizer.json: unreadable", tokenizer_broken, "tokenizer.json"),
    ("tokenizer.json: from another model (ids past the model's vocab_size)", tokenizer_of_another_model,
     "vocab_size is 320"),
    ("tokenizer_config.json: eos_token not a token of tokenizer.json", demo_with("tokenizer_config.json",
                                                                                 eos_token="</s>"), "eos_token"),
    ("tokenizer_config.json: chat_template a number", demo_with("tokenizer_config.json", chat_template=3),
     "chat_template"),
    ("chat_template.jinja: not UTF-8", template_file_not_utf8, "not UTF-8"),
    ("chat template: raises", template_raises, "roles must alternate"),
    ("prompt: empty", lambda tmp: cli(""), "empty"),
    ("prompt: longer than the context", lambda tmp: cli("--max-new-tokens", "4", "word " * 5000), "context"),
    ("prompt: --file not UTF-8", not_utf8_file, "UTF-8"),
    ("prompt: stdin not UTF-8", lambda tmp: cli("-", stdin=b"\xff\xfe"), "UTF-8"),
    ("prompt: argument not UTF-8", lambda tmp: cli(os.fsdecode(b"caf\xe9")), "UTF-8"),
    ("prompt: --file /dev/zero (endless)", lambda tmp: cli("--file", "/dev/zero"), "64 MB"),
    ("option: --temperature -1", lambda tmp: cli("--temperature", "-1", "hi"), "temperature"),
    ("option: --top-p 0", lambda tmp: cli("--top-p", "0", "hi"), "top-p"),
    ("option: --max-new-tokens 0", lambda tmp: cli("--max-new-tokens", "0", "hi"), "max-new-tokens"),
    ("option: --temperature nan", lambda tmp: cli("--temperature", "nan", "hi"), "temperature"),
    ("option: --seed -1", lambda tmp: cli("--seed", "-1", "hi"), "seed"),
    ("option: --top-p -inf (a value that reads as an option)", lambda tmp: cli("--top-p", "-inf", "hi"), "--top-p"),
    ("option: --no-think, a chat template without enable_thinking", lambda tmp: cli("--chat", "--no-think", "hi"),
     "enable_thinking"),
    ("option: --hide-thinking, a tokenizer without <think>", lambda tmp: cli("--hide-thinking", "hi"), "<think>"),
    ("option: --model that does not exist", lambda tmp: cli("--model", "/no/such/dir", "hi"), "no such folder"),
    ("option: --logprobs -1", lambda tmp: cli("--logprobs", "-1", "hi"), "--logprobs"),
    ("score: empty text", lambda tmp: score("-"), "empty"),
    ("score: a text of one token", lambda tmp: score("-", stdin=b"a"), "at least 2"),
    ("score: --jsonl, a line that is not JSON", lambda tmp: score("--jsonl", stdin=b'"fine"\n{"text": oops}\n'),
     "line 2"),
    ("score: --jsonl, a line that is neither a string nor {\"text\": ...}",
     lambda tmp: score("--jsonl", stdin=b'{"txt": "typo"}\n'), "line 1"),
    ("score: --stride not below --context", lambda tmp: score("--context", "64", "--stride", "64", stdin=b"hi there"),
     "--stride"),
    ("score: --context beyond the model's context", lambda tmp: score("--context", "4096", stdin=b"hi there"),
     "--context"),
    ("image: a text file named x.png",
     lambda tmp: cli("--model", VISION, "--chat", "--image", image_file(tmp, b"not a picture\n"), "hi"), "x.png"),
    ("image: a truncated PNG", lambda tmp: cli("--model", VISION, "--chat", "--image", truncated_png(tmp), "hi"),
     "broken image"),
    ("image: a decompression bomb (a PNG of 40000 x 40000 pixels)",
     lambda tmp: cli("--model", VISION, "--chat", "--image", bomb_png(tmp), "hi"), "decompression bomb"),
    ("image: a file that does not exist", lambda tmp: cli("--model", VISION, "--chat", "--image", "/no/such.png", "hi"),
     "no such image file"),
    ("image: --image on a text-only checkpoint",
     lambda tmp: cli("--chat", "--image", os.path.join(ROOT, "golden", "vision", "images", "big.png"), "hi"),
     "no vision tower"),
    ("image: --image without --chat",
     lambda tmp: cli("--model", VISION, "--image", os.path.join(ROOT, "golden", "vision", "images", "big.png"), "hi"),
     "--chat"),
    ("image: two images, placeholders for one", image_count_mismatch, "1 image"),
    ("image: an image's placeholders cut short", image_run_too_short, "<|image_pad|>"),
    ("FP8 checkpoint: a scale grid of the wrong shape",
     quantized_case(FP8, replace={"model.layers.0.mlp.down_proj.weight_scale_inv": np.ones((2, 2), np.float32)}),
     "needs [2, 3]"),
    ("FP8 checkpoint: an F8_E4M3 weight without its scales",
     quantized_case(FP8, drop=("model.layers.1.self_attn.o_proj.weight_scale_inv",)), "is missing"),
    ("GPTQ checkpoint: a missing qzeros", quantized_case(GPTQ, drop=("model.layers.0.mlp.up_proj.qzeros",)),
     "up_proj.qzeros is missing"),
    ("GPTQ checkpoint: g_idx out of range",
     quantized_case(GPTQ, replace={"model.layers.0.self_attn.q_proj.g_idx": np.arange(128, dtype=np.int32) * 1000}),
     "outside the"),
    ("GPTQ checkpoint: a qweight of dtype F32", quantized_case(GPTQ, dtypes={"model.layers.1.mlp.down_proj.qweight": "F32"}),
     "qweight is F32"),
    ("quantization_config: quant_method bitsandbytes", quant_config(GPTQ, quant_method="bitsandbytes"), "'bitsandbytes'"),
    ("quantization_config: 3 bits", quant_config(GPTQ, bits=3), "bits 3"),
    ("quantization_config: checkpoint_format marlin", quant_config(GPTQ, checkpoint_format="marlin"), "'marlin'"),
    ("quantized tensors but no quantization_config", quantized_without_config, "no quantization_config"),
    ("compare: a dump without input_ids", dump_with(input_ids=None), "no input_ids"),
    ("compare: input_ids as floats", dump_with(input_ids=np.zeros((1, 11), np.float32)), "integers"),
    ("compare: logits of another vocabulary", dump_with(logits=np.zeros((1, 11, 320), np.float32)), "vocab_size"),
    ("compare: a hidden state of the wrong shape", dump_with(**{"hidden_states.1": np.zeros((1, 12, 256), np.float32)}),
     "hidden_states.1"),
    ("compare: a hidden state past the last layer", dump_with(**{"hidden_states.9": np.zeros((1, 11, 256), np.float32)}),
     "4 layers"),
]


def outcome(fn):
    """Run one case. -> the error message, with temporary paths replaced by DIR."""
    tmp = tempfile.mkdtemp()
    try:
        fn(tmp)
    except (NpqwenError, CLIError) as e:
        return str(e).replace(tmp, "DIR").replace(ROOT + os.sep, "")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    raise AssertionError("no error was raised")


def table():
    rows = ["| bad input | what npqwen says |", "|---|---|"]
    for what, fn, _ in CASES:
        msg = html.escape(outcome(fn), quote=False).replace("\n", "<br>").replace("|", "\\|")
        rows.append(f"| {html.escape(what, quote=False)} | {msg} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
