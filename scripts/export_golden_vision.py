"""Export golden reference data for image input (vision-language models) from transformers, once. Not used by npqwen.

The vision companion of export_golden.py and export_golden_qwen4.py (whose helpers it imports and whose conventions it
follows). Everything goes under golden/vision/:

- images/: eight small images drawn here, deterministically, with numpy + Pillow: rgb.png (45 x 61, noise + gradient),
  rgba.png (alpha from 0 to 255), palette.png (mode P with a `transparency` index), gray.png (mode L), exif.jpg (40 x
  24 stored, EXIF Orientation 6: load_image turns it upright to 24 x 40), tiny.png (5 x 3), wide.png (300 x 12,
  aspect 25) and big.png (400 x 300, larger than longest_edge: smart_resize scales it down).
- preprocess.safetensors + preprocess.json: transformers' PIL image processor (Qwen2VLImageProcessorPil) on each image
  under two preprocessor configs, "patch14" (Qwen2.5-VL: patch 14, CLIP mean / std) and "patch16" (Qwen3-VL / Qwen3.5
  / Qwen3.8-Flash-Next: patch 16, mean = std = 0.5): pixel_values and image_grid_thw for the image given as a file path,
  and for rgba / palette / exif also as the unconverted PIL.Image.open object, for rgb also as a uint8 array.
- <case>/: a tiny checkpoint folder (config.json, safetensors, generation_config.json, tokenizer.json,
  tokenizer_config.json with the chat template, chat_template.jinja, preprocessor_config.json), and <case>.safetensors
  + <case>.json: for three chats (text only; one image; two images of different sizes with text between them) the
  processor's input_ids / mm_token_type_ids / pixel_values / image_grid_thw, the M-RoPE position ids and rope deltas,
  the vision tower's hidden states (patch + position embedding, then each block), its merged output (and the deepstack
  features), the text model's hidden states, its logits at a few positions (all of them are the last hidden state
  times the tied embedding: full logits would be 16 KB a position) and the greedy tokens of generate() with their
  decoded text. README.md describes it all, written from the jsons.

Every model is tiny (text hidden 64, vision hidden 32, depth 3, vocab 4008: the 4000-token demo BPE, <|endoftext|>,
<|im_start|>, <|im_end|> and <|vision_start|> <|vision_end|> <|image_pad|> <|video_pad|> = 4003..4006), every
parameter randomised as export_golden.py does (with the patch embedding scaled by its fan-in and the learned position
grid at unit scale, so that the position grid's interpolation shows in the output), saved in bf16 (qwen3_vl: float32),
reloaded from its folder in float32 with eager attention (and eager experts) and the references come from that reload,
with the folder's own processor (AutoProcessor.from_pretrained(folder, backend="pil")). MoE routers (and the
Flash-Next QSA indexer) are re-drawn, lowest layer first, until no choice of the prompts and of their greedy
continuations hangs on a near tie (export_golden_qwen4's re-draw machinery, fed the processor's inputs); the greedy
tokens must clear a top-2 logit margin and the three chats must continue differently, else the whole model is re-drawn
from the next seed. On the same weights each of these must move the logits of the two-image chat by more than 1e-2
(the json's "moves"): every image token given plain 1-D text positions; M-RoPE sections read interleaved instead of
contiguous (or the reverse); the learned position grid interpolated with align_corners=False; deepstack dropped;
window attention replaced by full attention. To make them move, rope_theta is far below the released values and the
hybrids' full-attention q/k norms are scaled up (DENSE_THETA, HYBRID_THETA, QK_GAIN below).

Without torchvision transformers 5.23 cannot build these processors (they insist on a video processor, which only has
a torchvision backend): images_only below stands None in for the video processor. The folder is larger than the ~8 MB
aimed at (the README gives the sizes and why).

Written with transformers 5.23.0 / torch 2.13.0 (CPU) and Pillow 13; about 15 s on 2 cores.

    /tmp/goldenv/bin/python scripts/export_golden_vision.py [cases...] [--out DIR]
"""

import argparse
import contextlib
import copy
import json
import math
import os
import shutil
import sys
import tempfile
import types

import numpy as np
import PIL
import torch
import transformers
from PIL import Image
from safetensors.numpy import save_file
from safetensors.torch import save_file as save_torch_file
from transformers import (AutoImageProcessor, AutoProcessor, AutoTokenizer, ProcessorMixin, Qwen2_5_VLConfig,
                          Qwen2_5_VLForConditionalGeneration, Qwen3_5Config, Qwen3_5ForConditionalGeneration,
                          Qwen3_5MoeConfig, Qwen3_5MoeForConditionalGeneration, Qwen3VLConfig,
                          Qwen3VLForConditionalGeneration, Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration,
                          Qwen4ExpConfig, Qwen4ExpForConditionalGeneration)
from transformers.models.auto.video_processing_auto import AutoVideoProcessor
from transformers.utils import is_torchvision_available
from transformers.vision_utils import get_vision_window_index

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_golden as eg  # noqa: E402  the conventions and helpers of the text cases
import export_golden_qwen4 as eg4  # noqa: E402  the re-draw machinery of the Flash-Next cases

OUT = os.path.join(eg.GOLDEN, "vision")
DEMO = os.path.join(eg.GOLDEN, "checkpoints", "demo")

# ----------------------------------------------------------------------------------------------
# Tokenizer, chat template, preprocessor configs
# ----------------------------------------------------------------------------------------------

VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]  # ids 4003..4006
TOKEN_IDS = dict(vision_start_token_id=4003, vision_end_token_id=4004, image_token_id=4005, video_token_id=4006)
VOCAB = 4008
# rope_theta far below the released 1e6 / 1e7: the images hold a handful of merged tokens, so T / H / W positions differ
# by 0..5 and only fast frequencies tell the M-RoPE layouts apart (see "moves"); the hybrids (8 rotating dims, one
# attention layer in four) need the fastest
DENSE_THETA, HYBRID_THETA = 100.0, 10.0
BOS, PAD, EOS = 4000, 4000, 4002  # as released: bos = pad = <|endoftext|>, eos = <|im_end|>
# Qwen2-VL / Qwen2.5-VL's released chat template, verbatim
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == "
    "'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video "
    "{{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}"
    "{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}")
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
# preprocessor_config.json as released (Qwen2.5-VL: min_pixels / max_pixels, no size; Qwen3-VL / Qwen3.5: size), with
# small pixel limits: 28*28 .. 84*84 and 32*32 .. 96*96 (both forms written for patch14, kept equal)
PREPROCESSORS = {
    "patch14": {"min_pixels": 28 * 28, "max_pixels": 84 * 84,
                "size": {"shortest_edge": 28 * 28, "longest_edge": 84 * 84},
                "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
                "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
                "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor"},
    "patch16": {"size": {"shortest_edge": 32 * 32, "longest_edge": 96 * 96},
                "patch_size": 16, "temporal_patch_size": 2, "merge_size": 2,
                "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
                "image_processor_type": "Qwen2VLImageProcessorFast", "processor_class": "Qwen3VLProcessor"},
}


def write_tokenizer(folder):
    """tokenizer.json and tokenizer_config.json: the demo tokenizer's plus the four vision tokens (special, 4003..4006),
    the chat template inside tokenizer_config.json AND in chat_template.jinja."""
    with open(os.path.join(DEMO, "tokenizer.json"), encoding="utf-8") as f:
        tok = json.load(f)
    with open(os.path.join(DEMO, "tokenizer_config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    assert [t["id"] for t in tok["added_tokens"]] == [4000, 4001, 4002] and len(tok["model"]["vocab"]) == 4000
    for i, content in enumerate(VISION_TOKENS):
        tok["added_tokens"].append(dict(tok["added_tokens"][0], id=4003 + i, content=content))
        cfg["added_tokens_decoder"][str(4003 + i)] = dict(cfg["added_tokens_decoder"]["4000"], content=content)
    cfg["additional_special_tokens"] = ["<|im_start|>", "<|im_end|>"] + VISION_TOKENS
    cfg["chat_template"] = CHAT_TEMPLATE
    with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False, separators=(",", ":"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, ensure_ascii=False, indent=2)
    with open(os.path.join(folder, "chat_template.jinja"), "w", encoding="utf-8") as f:
        f.write(CHAT_TEMPLATE)


def write_preprocessor(folder, name):
    with open(os.path.join(folder, "preprocessor_config.json"), "w") as f:
        json.dump(PREPROCESSORS[name], f, indent=2)


@contextlib.contextmanager
def images_only():
    """transformers 5.23's Qwen VL processors (Qwen2_5_VLProcessor, Qwen3VLProcessor) always load a video processor,
    and video processors exist only for the torchvision backend: without torchvision AutoProcessor.from_pretrained
    fails ("Could not load any video processor class ... with pil backend") and the processor cannot even be built
    with video_processor=None (its class check looks the video base class up in a mapping torchvision provides).
    Without torchvision this context stands None in for the video processor; the image path (image processor, token
    expansion, chat template) is transformers' own, untouched."""
    if is_torchvision_available():
        yield
        return
    saved_load = AutoVideoProcessor.__dict__["from_pretrained"]
    saved_check = ProcessorMixin.check_argument_for_proper_class

    def check(self, name, arg):
        return None if name == "video_processor" and arg is None else saved_check(self, name, arg)

    AutoVideoProcessor.from_pretrained = classmethod(lambda cls, *args, **kwargs: None)
    ProcessorMixin.check_argument_for_proper_class = check
    try:
        yield
    finally:
        AutoVideoProcessor.from_pretrained = saved_load
        ProcessorMixin.check_argument_for_proper_class = saved_check


def load_processor(folder):
    with images_only():
        processor = AutoProcessor.from_pretrained(folder, backend="pil")
    assert type(processor.image_processor).__name__ == "Qwen2VLImageProcessorPil", type(processor.image_processor)
    assert processor.chat_template == CHAT_TEMPLATE
    return processor


# ----------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------

IMAGES = ["rgb.png", "rgba.png", "palette.png", "gray.png", "exif.jpg", "tiny.png", "wide.png", "big.png"]
PIL_MODE_IMAGES = ["rgba.png", "palette.png", "exif.jpg"]  # also given as the unconverted PIL.Image.open object
ARRAY_MODE_IMAGES = ["rgb.png"]  # also given as np.asarray(PIL.Image.open(path)), uint8 [H, W, 3]


def gradient(h, w):
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.stack([255 * x / max(w - 1, 1), 255 * y / max(h - 1, 1),
                     127.5 + 100 * np.sin(x / 3.0 + y / 5.0)], axis=-1)


def blocky(h, w, rs, cell, amplitude):
    """Noise constant on cell x cell blocks: PNG keeps it small."""
    coarse = rs.uniform(-amplitude, amplitude, (h // cell + 1, w // cell + 1, 3))
    return np.repeat(np.repeat(coarse, cell, 0), cell, 1)[:h, :w]


def u8(a):
    return np.clip(np.round(a), 0, 255).astype(np.uint8)


def make_images(folder):
    """Draw the eight images (numpy RandomState(2024), Pillow): each a few KB."""
    os.makedirs(folder, exist_ok=True)
    rs = np.random.RandomState(2024)
    path = lambda name: os.path.join(folder, name)  # noqa: E731
    Image.fromarray(u8(gradient(61, 45) + rs.uniform(-60, 60, (61, 45, 3))), "RGB").save(path("rgb.png"))
    # RGBA: colours far from white under every alpha; alpha 0 on the left columns, 255 on the right ones, a ramp between
    h, w = 30, 40
    rgb = u8(0.6 * gradient(h, w) + rs.uniform(-40, 40, (h, w, 3)))
    alpha = u8(np.broadcast_to(np.linspace(-40, 295, w), (h, w)) + rs.uniform(-20, 20, (h, w)))
    Image.fromarray(np.concatenate([rgb, alpha[..., None]], -1), "RGBA").save(path("rgba.png"))
    # palette: 16 random colours, index 5 transparent
    idx = (blocky(28, 36, rs, 3, 1)[..., 0] * 8 + 8).astype(np.uint8).clip(0, 15)
    pal = Image.fromarray(idx, "P")
    pal.putpalette(rs.randint(0, 256, 16 * 3).astype(np.uint8).tolist())
    pal.save(path("palette.png"), transparency=5)
    Image.fromarray(u8(gradient(33, 50)[..., 1] * 0.8 + rs.uniform(-30, 30, (33, 50))), "L").save(path("gray.png"))
    # JPEG stored 40 x 24 with EXIF Orientation 6 (rotate 90 clockwise to display): upright it is 24 x 40
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(u8(gradient(24, 40) + blocky(24, 40, rs, 4, 30)), "RGB").save(path("exif.jpg"), quality=90,
                                                                                  exif=exif.tobytes())
    Image.fromarray(rs.randint(0, 256, (3, 5, 3)).astype(np.uint8), "RGB").save(path("tiny.png"))
    Image.fromarray(u8(gradient(12, 300) + blocky(12, 300, rs, 4, 40)), "RGB").save(path("wide.png"))
    # big: constant 10 x 10 blocks (a coarse gradient plus noise), so that the PNG stays small
    coarse = u8(gradient(30, 40) + rs.uniform(-50, 50, (30, 40, 3)))
    Image.fromarray(np.repeat(np.repeat(coarse, 10, 0), 10, 1), "RGB").save(path("big.png"))
    for name in IMAGES:
        os.chmod(path(name), 0o644)


def image_inputs(folder, name):
    """[(mode, the image as given to the processor)]"""
    p = os.path.join(folder, name)
    out = [("path", p)]
    if name in PIL_MODE_IMAGES:
        out.append(("pil", Image.open(p)))
    if name in ARRAY_MODE_IMAGES:
        out.append(("array", np.asarray(Image.open(p))))
    return out


def export_preprocess(out_dir):
    images = os.path.join(out_dir, "images")
    arrays, entries, processors = {}, [], {}
    for name, cfg in PREPROCESSORS.items():
        with tempfile.TemporaryDirectory() as d:
            write_preprocessor(d, name)
            processors[name] = ip = AutoImageProcessor.from_pretrained(d, backend="pil")
        assert type(ip).__name__ == "Qwen2VLImageProcessorPil", type(ip)
        for image in IMAGES:
            stem = image.split(".")[0]
            by_mode = {}
            for mode, value in image_inputs(images, image):
                out = ip(images=value, return_tensors="np")
                key = f"{name}.{stem}.{mode}"
                pv, grid = out["pixel_values"], out["image_grid_thw"]
                assert pv.dtype == np.float32 and grid.dtype == np.int64
                arrays[f"{key}.pixel_values"], arrays[f"{key}.image_grid_thw"] = pv, grid
                by_mode[mode] = pv
                with Image.open(os.path.join(images, image)) as im:
                    stored = {"size_wh": list(im.size), "pil_mode": im.mode,
                              "transparency": im.info.get("transparency"),
                              "exif_orientation": im.getexif().get(0x0112)}
                t, gh, gw = (int(v) for v in grid[0])
                entry = {"key": key, "image": f"images/{image}", "mode": mode, "preprocessor": name, "stored": stored,
                         "image_grid_thw": [t, gh, gw], "resized_hw": [gh * cfg["patch_size"], gw * cfg["patch_size"]],
                         "pixel_values_shape": list(pv.shape)}
                if mode != "path":
                    entry["max_abs_difference_from_path_mode"] = (
                        float(np.abs(pv - by_mode["path"]).max()) if pv.shape == by_mode["path"].shape
                        else "different shape")
                entries.append(entry)
    meta = {
        "transformers": transformers.__version__, "torch": torch.__version__, "pillow": PIL.__version__,
        "image_processor_class": "Qwen2VLImageProcessorPil",
        "loaded_with": "AutoImageProcessor.from_pretrained(folder holding preprocessor_config.json, backend='pil'), "
                       "called as image_processor(images=<image>, return_tensors='np')",
        "preprocessor_configs": PREPROCESSORS,
        "modes": {"path": "the file path (str): transformers' load_image opens it, applies the EXIF orientation "
                          "(ImageOps.exif_transpose) and converts with PIL's .convert('RGB'), which DROPS an alpha "
                          "channel (rgba: no compositing); a palette image's transparent index survives as "
                          "info['transparency'] = that index's RGB colour, and the processor's convert_to_rgb then "
                          "composites every pixel of that colour onto white (palette: path == pil)",
                  "pil": "PIL.Image.open(path), neither rotated nor converted: the image processor's convert_to_rgb "
                         "composites any alpha or palette transparency onto WHITE; no EXIF rotation",
                  "array": "np.asarray(PIL.Image.open(path)), uint8 [H, W, 3], channels last"},
        "keys": "<preprocessor>.<image stem>.<mode>.pixel_values (float32 [patches, 3*2*p*p]) and .image_grid_thw "
                "(int64 [1, 3] = t, h, w in patches)",
        "entries": entries,
    }
    if is_torchvision_available():  # not the case where this was written: measured only when present
        with tempfile.TemporaryDirectory() as d:
            write_preprocessor(d, "patch16")
            tv = AutoImageProcessor.from_pretrained(d, backend="torchvision")
        pv = tv(images=os.path.join(images, "big.png"), return_tensors="np")["pixel_values"]
        ref = arrays["patch16.big.path.pixel_values"]
        levels = np.abs(pv - ref) * np.repeat(PREPROCESSORS["patch16"]["image_std"], pv.shape[1] // 3) * 255
        meta["torchvision"] = {"image": "images/big.png", "preprocessor": "patch16", "class": type(tv).__name__,
                               "max_abs_difference_in_8bit_levels": float(levels.max())}
    else:
        meta["torchvision"] = ("not installed: the torchvision backend's difference from the PIL backend was not "
                               "measured")
    save_file(arrays, os.path.join(out_dir, "preprocess.safetensors"))
    with open(os.path.join(out_dir, "preprocess.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True, ensure_ascii=False)
    os.chmod(os.path.join(out_dir, "preprocess.safetensors"), 0o644)
    print(f"preprocess: {len(entries)} entries", file=sys.stderr)
    return arrays


# ----------------------------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------------------------

VISION16 = dict(depth=3, hidden_size=32, num_heads=2, intermediate_size=64, in_channels=3, patch_size=16,
                spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=64, hidden_act="gelu_pytorch_tanh",
                num_position_embeddings=16)  # a 4 x 4 learned position grid, bilinearly resampled to each image
VISION14 = dict(depth=3, hidden_size=32, num_heads=2, intermediate_size=64, in_channels=3, patch_size=14,
                spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=64, hidden_act="silu",
                window_size=56, fullatt_block_indexes=[2], tokens_per_second=2)  # windows of 2 x 2 merged tokens
TEXT = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-6, max_position_embeddings=512,
            tie_word_embeddings=True, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)
MOE = dict(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=16)
HYBRID = dict(eg.HYBRID_BASE, vocab_size=VOCAB, intermediate_size=64, tie_word_embeddings=True,
              rope_parameters=dict(eg.MROPE, rope_theta=HYBRID_THETA), bos_token_id=BOS, eos_token_id=EOS,
              pad_token_id=PAD)

# name: family, config class, model class, preprocessor, checkpoint dtype, text and vision config overrides, layout
# Each case's seed is 3000 + its position here (+ 10000 per re-draw of the whole model).
CASES = {
    # Qwen3.5: 3 Gated DeltaNet + 1 gated full-attention layers, 8 of head_dim 32 rotate, mrope_section [2, 1, 1]
    # interleaved; ViT without deepstack. Files as released: two `model.safetensors-0000i-of-00002` shards, mtp.*,
    # A_log and the DeltaNet norm float32 in a bf16 checkpoint (export_golden's layout).
    "qwen3_5_vision": dict(family="qwen3_5", config=Qwen3_5Config, model=Qwen3_5ForConditionalGeneration,
                           pre="patch16", dtype=torch.bfloat16, text=HYBRID, vision=VISION16,
                           layout=dict(float32=True, released=True)),
    # Qwen3.5-MoE: every layer sparse, top-2 of 8 renormalised, sigmoid-gated shared expert; experts fused as released
    "qwen3_5_moe_vision": dict(family="qwen3_5_moe", config=Qwen3_5MoeConfig,
                               model=Qwen3_5MoeForConditionalGeneration, pre="patch16", dtype=torch.bfloat16,
                               text=dict(HYBRID, **eg.HYBRID_MOE),
                               vision=VISION16, layout=dict(float32=True, released=True, fused_experts=True)),
    # Qwen3-VL: dense, q/k norm, head_dim 16 all rotating, mrope_section [4, 2, 2] interleaved; deepstack from ViT
    # blocks 0 and 1 added after text layers 0 and 1; a float32 checkpoint as save_pretrained writes it.
    "qwen3_vl": dict(family="qwen3_vl", config=Qwen3VLConfig, model=Qwen3VLForConditionalGeneration, pre="patch16",
                     dtype=torch.float32,
                     text=dict(TEXT, rope_parameters={"rope_type": "default", "rope_theta": DENSE_THETA,
                                                      "mrope_section": [4, 2, 2], "mrope_interleaved": True}),
                     vision=dict(VISION16, deepstack_visual_indexes=[0, 1]), layout=None),
    # Qwen3-VL-MoE: every layer sparse, top-2 of 8 (always renormalised, no shared expert); deepstack from ViT blocks
    # 1 and 2 (not 0 and 1: the k-th feature goes after text layer k whatever its block); bf16, experts transposed as
    # released (gate_up_proj [E, H, 2I], down_proj [E, I, H]).
    "qwen3_vl_moe": dict(family="qwen3_vl_moe", config=Qwen3VLMoeConfig, model=Qwen3VLMoeForConditionalGeneration,
                         pre="patch16", dtype=torch.bfloat16,
                         text=dict(TEXT, **MOE, rope_parameters={"rope_type": "default", "rope_theta": DENSE_THETA,
                                                                 "mrope_section": [4, 2, 2],
                                                                 "mrope_interleaved": True}),
                         vision=dict(VISION16, deepstack_visual_indexes=[1, 2]),
                         layout=dict(transposed_experts=True)),
    # Qwen2.5-VL as Qwen released it: flat config.json (text fields at the top, rope_scaling {"type": "mrope"},
    # vision_config with in_chans), weights named visual.* / model.* (lm_head tied, absent as in Qwen2.5-VL-3B);
    # mrope_section [2, 3, 3] contiguous; ViT of RMSNorm / SwiGLU blocks, window attention (window 56 = 2 x 2 merged
    # tokens) in blocks 0 and 1, full attention in block 2.
    "qwen2_5_vl": dict(family="qwen2_5_vl", config=Qwen2_5_VLConfig, model=Qwen2_5_VLForConditionalGeneration,
                       pre="patch14", dtype=torch.bfloat16,
                       text=dict({k: v for k, v in TEXT.items() if k != "head_dim"}, use_sliding_window=False,
                                 rope_parameters={"rope_type": "default", "rope_theta": DENSE_THETA,
                                                  "mrope_section": [2, 3, 3]}),
                       vision=VISION14, layout=dict(flat=True)),
    # Qwen3.8-Flash-Next (qwen4_exp): export_golden_qwen4's tiny text model (3 DeltaNet + 1 QSA layer, 4
    # hyper-connection streams, PLE n-grams on layer 2, top-2 of 8 experts + shared) with a Qwen3.5-style ViT (no
    # deepstack), released layout (fused experts, mtp.*, two shards, released config keys).
    "qwen4_exp_vision": dict(family="qwen4_exp", config=Qwen4ExpConfig, model=Qwen4ExpForConditionalGeneration,
                             pre="patch16", dtype=torch.bfloat16,
                             text=dict(eg4.TEXT, vocab_size=VOCAB, split_ngram_parts=12, bos_token_id=BOS,
                                       eos_token_id=EOS, pad_token_id=PAD, tie_word_embeddings=True,
                                       rope_parameters=dict(eg.MROPE, rope_theta=HYBRID_THETA)),
                             vision=VISION16, layout=dict(released=True)),
}
MOE_FAMILIES = {"qwen3_5_moe", "qwen3_vl_moe", "qwen4_exp"}
HYBRID_FAMILIES = {"qwen3_5", "qwen3_5_moe", "qwen4_exp"}
DEEPSTACK_FAMILIES = {"qwen3_vl", "qwen3_vl_moe"}
INTERLEAVED_FAMILIES = {"qwen3_5", "qwen3_5_moe", "qwen3_vl", "qwen3_vl_moe", "qwen4_exp"}

PROMPTS = [
    [{"role": "user", "content": "学习如逆水行舟,不进则"}],
    [{"role": "user", "content": [{"type": "image", "path": "images/rgb.png"},
                                  {"type": "text", "text": "Describe this."}]}],
    [{"role": "user", "content": [{"type": "text", "text": "First"}, {"type": "image", "path": "images/big.png"},
                                  {"type": "text", "text": "and second"},
                                  {"type": "image", "path": "images/wide.png"}]}],
]
PROMPT_IMAGES = [[], ["rgb"], ["big", "wide"]]
NEW_TOKENS = 8
POS_EMBED_SCALE = 1.0   # the learned position grid at unit scale (the matrix rule would give 1/sqrt(32))
QK_GAIN = 3.0           # hybrids: q_norm / k_norm of the (few) full-attention layers scale by ~3 (sharper attention)
MIN_GAP = 1e-3          # greedy top-2 logit margins, router probabilities, QSA block scores: no choice closer
MIN_SENSITIVITY = 1e-2
MAX_ATTEMPTS = 20       # whole-model re-draws (next seed)
MAX_ROUNDS = 10         # re-draw rounds over the prompts and their greedy continuations


def text_model(model):
    return model.model.language_model


def build(spec, gen):
    """The randomised model in its checkpoint dtype."""
    family = spec["family"]
    config = spec["config"](text_config=dict(spec["text"]), vision_config=dict(spec["vision"]),
                            tie_word_embeddings=True, **TOKEN_IDS)
    model = spec["model"](config)
    eg.randomize(model, gen, hybrid=family in HYBRID_FAMILIES)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("visual.patch_embed.proj.weight"):  # Conv3d [out, 3, 2, p, p]: fan-in 3*2*p*p
                p.copy_(torch.randn(p.shape, generator=gen) / math.prod(p.shape[1:]) ** 0.5)
            elif name.endswith("visual.pos_embed.weight"):
                p.copy_(POS_EMBED_SCALE * torch.randn(p.shape, generator=gen))
        if family in HYBRID_FAMILIES:
            for name, p in model.named_parameters():
                if name.endswith(("self_attn.q_norm.weight", "self_attn.k_norm.weight")):  # zero-centred: x (1 + w)
                    p.copy_((1.0 + p) * QK_GAIN - 1.0)
        if family == "qwen4_exp":  # routers as export_golden_qwen4.build; its lm_head gain is left out: the lm_head
            for layer in eg.decoder_layers(model):  # is the tied embedding here
                layer.mlp.gate.weight.mul_(eg4.ROUTER_SCALE / eg.ROUTER_SCALE)
    keep = {n: p.detach().clone() for n, p in model.named_parameters()
            if (spec["layout"] or {}).get("float32") and n.endswith(eg.F32_KEEP)}
    model = model.to(spec["dtype"]).eval()
    for n, p in model.named_parameters():
        if n in keep:
            p.data = keep[n]
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr(), "not tied"
    return config, model


def router_scale(spec):
    return eg4.ROUTER_SCALE if spec["family"] == "qwen4_exp" else eg.ROUTER_SCALE


def load(spec, folder, **overrides):
    """A fresh float32 eager model from the folder (eager experts for MoE); missing keys are an error."""
    if spec["family"] in MOE_FAMILIES:
        overrides = {"experts_implementation": "eager", **overrides}
    model, info = spec["model"].from_pretrained(folder, dtype=torch.float32, attn_implementation="eager",
                                                output_loading_info=True, **overrides)
    assert not info["missing_keys"] and not info["mismatched_keys"], info
    assert model.config.vision_config._attn_implementation == "eager"
    return model.eval()


def float_copy(model, spec):
    """The in-memory (bf16 / f32) model as a float32 eager model, as a reload computes (fresh RoPE buffers)."""
    probe = type(model)(model.config).eval()
    probe.load_state_dict(model.state_dict())
    probe.set_attn_implementation("eager")
    if spec["family"] in MOE_FAMILIES:
        probe.set_experts_implementation("eager")
    assert all(p.dtype == torch.float32 for p in probe.parameters())
    return probe


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------

def to_flat_qwen2_5_vl(folder):
    """Rewrite save_pretrained's Qwen2.5-VL folder in the form Qwen released: weights visual.* / model.layers.* /
    model.embed_tokens.* / model.norm.* (lm_head.* when untied) in one model.safetensors, and config.json flat: the text
    fields at the top level, rope_theta + rope_scaling {"type": "mrope", "mrope_section": [...]}, torch_dtype, and the
    vision_config of Qwen2.5-VL-3B-Instruct (in_chans, spatial_patch_size, no model_type). transformers 5.23 renames
    the weights on load (Qwen2VLForConditionalGeneration's conversion: ^visual -> model.visual, ^model -> 
    model.language_model) and Qwen2_5_VLConfig moves the top-level text fields into text_config."""
    tensors = eg.read_tensors(folder)
    renamed = {}
    for k, t in tensors.items():  # transformers 5.23's save_pretrained already writes these names (it reverses
        for new, old in (("visual.", "model.visual."), ("model.", "model.language_model.")):  # the load renaming)
            if k.startswith(old):
                k = new + k[len(old):]
                break
        assert k.startswith(("visual.", "model.embed_tokens.", "model.layers.", "model.norm.", "lm_head.")), k
        renamed[k] = t
    for name in os.listdir(folder):
        if name.endswith(".safetensors") or name.endswith(".safetensors.index.json"):
            os.remove(os.path.join(folder, name))
    save_torch_file({k: renamed[k].contiguous() for k in sorted(renamed)}, os.path.join(folder, "model.safetensors"),
                    metadata={"format": "pt"})
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    text, vision = cfg["text_config"], cfg["vision_config"]
    rp = text["rope_parameters"]
    flat = {
        "architectures": ["Qwen2_5_VLForConditionalGeneration"], "attention_dropout": 0.0,
        "bos_token_id": text["bos_token_id"], "eos_token_id": text["eos_token_id"],
        "pad_token_id": text["pad_token_id"],
        "vision_start_token_id": cfg["vision_start_token_id"], "vision_end_token_id": cfg["vision_end_token_id"],
        "image_token_id": cfg["image_token_id"],
        "video_token_id": cfg["video_token_id"], "hidden_act": text["hidden_act"], "hidden_size": text["hidden_size"],
        "initializer_range": 0.02, "intermediate_size": text["intermediate_size"],
        "max_position_embeddings": text["max_position_embeddings"], "max_window_layers": text["num_hidden_layers"],
        "model_type": "qwen2_5_vl", "num_attention_heads": text["num_attention_heads"],
        "num_hidden_layers": text["num_hidden_layers"], "num_key_value_heads": text["num_key_value_heads"],
        "rms_norm_eps": text["rms_norm_eps"], "rope_theta": rp["rope_theta"], "sliding_window": 32768,
        "tie_word_embeddings": cfg["tie_word_embeddings"], "torch_dtype": "bfloat16", "transformers_version": "4.41.2",
        "use_cache": True, "use_sliding_window": False,
        "vision_config": {"depth": vision["depth"], "hidden_act": vision["hidden_act"],
                          "hidden_size": vision["hidden_size"], "intermediate_size": vision["intermediate_size"],
                          "num_heads": vision["num_heads"], "in_chans": vision["in_channels"],
                          "out_hidden_size": vision["out_hidden_size"], "patch_size": vision["patch_size"],
                          "spatial_merge_size": vision["spatial_merge_size"],
                          "spatial_patch_size": vision["patch_size"],
                          "window_size": vision["window_size"],
                          "fullatt_block_indexes": vision["fullatt_block_indexes"],
                          "tokens_per_second": vision["tokens_per_second"],
                          "temporal_patch_size": vision["temporal_patch_size"]},
        "rope_scaling": {"type": "mrope", "mrope_section": rp["mrope_section"]},
        "vocab_size": text["vocab_size"],
    }
    with open(path, "w") as f:
        json.dump(flat, f, indent=2)


def transpose_experts(folder):
    """Qwen3-VL-MoE's experts as Qwen released them (Qwen3-VL-30B-A3B): gate_up_proj [E, H, 2I] and down_proj
    [E, I, H], the transposes of the model's [E, 2I, H] / [E, H, I] that save_pretrained writes. transformers 5.23
    transposes them back on load (Transpose(1, 2, check_dims=True): only when the shape differs from the model's)."""
    tensors = eg.read_tensors(folder)
    for k in list(tensors):
        if k.endswith((".mlp.experts.gate_up_proj", ".mlp.experts.down_proj")):
            tensors[k] = tensors[k].transpose(1, 2)
    names = [n for n in os.listdir(folder) if n.endswith(".safetensors")]
    assert names == ["model.safetensors"], names
    save_torch_file({k: tensors[k].contiguous() for k in sorted(tensors)}, os.path.join(folder, "model.safetensors"),
                    metadata={"format": "pt"})


def save(spec, model, folder, gen):
    shutil.rmtree(folder, ignore_errors=True)
    layout = spec["layout"] or {}
    if spec["family"] == "qwen4_exp":
        eg4.save({"released": True}, model, folder, gen)  # fused experts, n-gram shards, mtp.*, released config keys
    else:
        model.save_pretrained(folder)
        if layout.get("released"):
            eg.save_layout(folder, spec["family"], model.config, layout, gen)
        if layout.get("flat"):
            to_flat_qwen2_5_vl(folder)
        if layout.get("transposed_experts"):
            transpose_experts(folder)
    write_tokenizer(folder)
    write_preprocessor(folder, spec["pre"])
    for name in os.listdir(folder):
        os.chmod(os.path.join(folder, name), 0o644)  # safetensors writes 0600


# ----------------------------------------------------------------------------------------------
# Choices clear of ties: export_golden_qwen4's draw_clear / settle, fed the processor's inputs
# ----------------------------------------------------------------------------------------------

def forward(model, inputs, **kwargs):
    with torch.no_grad():
        return model(**inputs, use_cache=False, **kwargs)


def extended(inputs, sequence):
    """The processor's inputs with the generated tokens appended (text tokens, type 0)."""
    out = dict(inputs)
    n = sequence.shape[1] - inputs["input_ids"].shape[1]
    out["input_ids"] = sequence
    out["attention_mask"] = torch.ones_like(sequence)
    out["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"],
                                          torch.zeros((1, n), dtype=inputs["mm_token_type_ids"].dtype)], 1)
    return out


def draw_clear(spec, model, seqs, gen):
    """Lowest layer first: the QSA indexer (qwen4_exp), then the router, re-drawn (eg4.redraws: the first keeps them)
    until every token of seqs (processor inputs, batch 1) chooses clear of ties and every expert serves >= 2% of the
    rows. A choice depends only on the weights below it. Returns {component: draws} or None."""
    tc = model.config.get_text_config()
    H = tc.hidden_size
    probe = float_copy(model, spec)
    draws = {}

    def sync(src, dst):
        with torch.no_grad():
            for p1, p2 in zip(src.parameters(), dst.parameters()):
                p2.copy_(p1.float())

    def run(module):
        with eg4.captured(module) as calls:
            for inputs in seqs:
                forward(probe, inputs)
        return calls

    for i, (layer, player) in enumerate(zip(eg.decoder_layers(model), eg.decoder_layers(probe))):
        if hasattr(layer, "self_attn") and hasattr(layer.self_attn, "indexer"):
            ix, pix = layer.self_attn.indexer, player.self_attn.indexer
            calls = run(pix)
            rule = [(ix.index_qk_proj.weight, H ** -0.5), (ix.q_layernorm.weight, 0.3), (ix.k_layernorm.weight, 0.3)]
            for draw in eg4.redraws(rule, gen):
                sync(ix, pix)
                rows = [r for args in calls for r in eg4.qsa_rows(pix, *args, real=np.ones(args[0].shape[:2], bool))]
                if eg4.qsa_ok(eg4.qsa_summary(rows)):
                    draws[f"layers.{i}.self_attn.indexer"] = draw
                    break
            else:
                return None
        if hasattr(layer.mlp, "experts"):
            gate, pgate = layer.mlp.gate, player.mlp.gate
            calls = run(pgate)
            for draw in eg4.redraws([(gate.weight, router_scale(spec) * H ** -0.5)], gen):
                sync(gate, pgate)
                taken = []
                for (x,) in calls:
                    with torch.no_grad():
                        probs = torch.softmax(x.reshape(-1, H).float() @ pgate.weight.T, dim=-1)
                    taken.append({i: (probs, probs.topk(tc.num_experts_per_tok, dim=-1).indices)})
                if eg.routing_ok(eg.routing_facts(taken, tc.num_experts_per_tok, tc.num_experts), tc.num_experts):
                    draws[f"layers.{i}.mlp.gate"] = draw
                    break
            else:
                return None
    return draws


def settle(spec, model, prompts, gen):
    """draw_clear over the prompts and their greedy continuations until the continuations stop changing.
    Returns ({component: total re-draws}, rounds) or None."""
    seqs, total = prompts, {}
    for rnd in range(MAX_ROUNDS):
        draws = draw_clear(spec, model, seqs, gen)
        if draws is None:
            return None
        for what, n in draws.items():
            total[what] = total.get(what, 0) + n
        probe = float_copy(model, spec)
        new = []
        for inputs in prompts:
            with torch.no_grad():
                g = probe.generate(**inputs, do_sample=False, max_new_tokens=NEW_TOKENS)
            new.append(extended(inputs, g))
        if all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(new, seqs)):
            return total, rnd
        seqs = new
    return None


# ----------------------------------------------------------------------------------------------
# References
# ----------------------------------------------------------------------------------------------

def chat(k, out_dir):
    """Prompt k's messages with absolute image paths (the json keeps them relative to golden/vision/)."""
    msgs = copy.deepcopy(PROMPTS[k])
    for m in msgs:
        if isinstance(m["content"], list):
            for part in m["content"]:
                if part["type"] == "image":
                    part["path"] = os.path.join(out_dir, part["path"])
    return msgs


def processor_inputs(processor, k, out_dir):
    return processor.apply_chat_template(chat(k, out_dir), add_generation_prompt=True, tokenize=True,
                                         return_dict=True, return_tensors="pt")


class Hooks:
    """What the forward computes on the way: the vision blocks' input and outputs, the tower's merged output and
    deepstack features, each decoder layer's input and output, the positions the text RoPE gets."""

    def __init__(self, model):
        visual, text = model.model.visual, text_model(model)
        self.vision_in, self.vision_out, self.visual, self.layer_in, self.layer_out, self.rope = [], [], [], [], [], []
        first = lambda x: x[0] if isinstance(x, tuple) else x  # noqa: E731
        self.handles = [
            visual.blocks[0].register_forward_pre_hook(lambda m, a: self.vision_in.append(a[0].detach().clone())),
            visual.register_forward_hook(lambda m, a, o: self.visual.append(o)),
            text.rotary_emb.register_forward_pre_hook(lambda m, a: self.rope.append(a[1].detach().clone())),
        ]
        self.handles += [b.register_forward_hook(lambda m, a, o: self.vision_out.append(first(o).detach().clone()))
                         for b in visual.blocks]
        for layer in text.layers:
            self.handles.append(layer.register_forward_pre_hook(
                lambda m, a, kw: self.layer_in.append((a[0] if a else kw["hidden_states"]).detach().clone()),
                with_kwargs=True))
            self.handles.append(layer.register_forward_hook(
                lambda m, a, o: self.layer_out.append(first(o).detach().clone())))

    def close(self):
        for h in self.handles:
            h.remove()


@contextlib.contextmanager
def first_text_calls(model):
    """position_ids given to the text model by each call (generate: prefill, then decode steps)."""
    calls = []
    handle = text_model(model).register_forward_pre_hook(
        lambda m, a, kw: calls.append(kw.get("position_ids")), with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


def window_order(grid_thw, vision_config):
    """Qwen2.5-VL: window_index (merged-token order the blocks see) and cu_window_seqlens, from transformers."""
    return get_vision_window_index(grid_thw, spatial_merge_size=vision_config.spatial_merge_size,
                                   window_size=vision_config.window_size, patch_size=vision_config.patch_size)


def reference(spec, model, folder, processor, k, out_dir):
    """Arrays and facts of prompt k from a fresh float32 eager reload."""
    family = spec["family"]
    loaded = load(spec, folder)
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n1 == n2 and torch.equal(p1.to(p2.dtype), p2), n1  # exactly the saved weights
    tc, vc = loaded.config.get_text_config(), loaded.config.vision_config
    inputs = processor_inputs(processor, k, out_dir)
    ids = inputs["input_ids"]
    L_ = ids.shape[1]
    has_image = "pixel_values" in inputs
    image_mask = (ids[0] == TOKEN_IDS["image_token_id"]).numpy()
    arrays = {"input_ids": ids.numpy(), "mm_token_type_ids": inputs["mm_token_type_ids"].numpy().astype(np.int64)}
    assert np.array_equal(arrays["mm_token_type_ids"][0] == 1, image_mask)
    if has_image:  # pixel_values are also the preprocess references' rows, image after image
        ip = processor.image_processor
        parts = [ip(images=os.path.join(out_dir, "images", f"{stem}.png"), return_tensors="np")
                 for stem in PROMPT_IMAGES[k]]
        assert np.array_equal(np.concatenate([p["pixel_values"] for p in parts]), inputs["pixel_values"].numpy())
        assert np.array_equal(np.concatenate([p["image_grid_thw"] for p in parts]), inputs["image_grid_thw"].numpy())
        arrays["pixel_values"] = inputs["pixel_values"].numpy()
        arrays["image_grid_thw"] = inputs["image_grid_thw"].numpy()
    facts = {"messages": PROMPTS[k], "images": [f"images/{s}.png" for s in PROMPT_IMAGES[k]],
             "prompt_text": processor.apply_chat_template(chat(k, out_dir), add_generation_prompt=True, tokenize=False),
             "length": L_, "image_tokens": int(image_mask.sum())}
    if has_image:
        facts["pixel_values"] = {
            "shape": list(inputs["pixel_values"].shape),
            "equals": "np.concatenate of these preprocess.safetensors arrays, in order (the file-path mode); "
                      "asserted",
            "preprocess_keys": [f"{spec['pre']}.{stem}.path.pixel_values" for stem in PROMPT_IMAGES[k]]}
    # the plain tokenizer renders the same text with one <|image_pad|> per image
    tok = AutoTokenizer.from_pretrained(folder)
    plain = tok.apply_chat_template(PROMPTS[k], add_generation_prompt=True, tokenize=False)
    facts["tokenizer_prompt_text"] = plain
    assert facts["prompt_text"].replace("<|image_pad|>", "") == plain.replace("<|image_pad|>", "")

    # M-RoPE positions as transformers computes them (get_rope_index; text-only prompts: positions 0..L-1)
    pos, deltas = loaded.model.get_rope_index(ids, mm_token_type_ids=inputs["mm_token_type_ids"],
                                              image_grid_thw=inputs.get("image_grid_thw"),
                                              attention_mask=inputs["attention_mask"])
    arrays["position_ids"], arrays["rope_deltas"] = pos.numpy(), deltas.numpy().astype(np.int64)

    hooks = Hooks(loaded)
    out = forward(loaded, inputs, output_hidden_states=True)
    hooks.close()
    assert len(hooks.rope) == 1 and torch.equal(hooks.rope[0], pos), "forward used other positions"
    # logits at a few positions: the last image token of each image and the last position (the full logits are
    # lm_head(hidden_states[-1]) = hidden_states[-1] @ embed_tokens.T, the embedding being tied: asserted below)
    runs_end = [i for i in range(L_) if image_mask[i] and (i + 1 == L_ or not image_mask[i + 1])]
    rows = sorted(set(runs_end) | {L_ - 1})
    arrays["logits_positions"] = np.array(rows, np.int64)
    arrays["logits"] = out.logits[:, rows].numpy().astype(np.float32)
    n_layers = tc.num_hidden_layers
    checks = {}
    if family == "qwen4_exp":  # hyper-connection streams [1, T, hc*H]; transformers' last entry is the mixer output
        streams = [hooks.layer_in[0]] + hooks.layer_out
        assert len(out.hidden_states) == n_layers + 1
        for i in range(n_layers):
            assert torch.equal(out.hidden_states[i], streams[i]), i
        arrays["hidden_states"] = torch.stack(streams).numpy().astype(np.float32)
        arrays["mixer"] = out.hidden_states[n_layers].numpy().astype(np.float32)
        assert torch.equal(loaded.lm_head(out.hidden_states[n_layers]), out.logits)
        assert torch.equal(out.hidden_states[n_layers] @ loaded.get_input_embeddings().weight.T, out.logits)
    else:
        hs = torch.stack(out.hidden_states)
        assert hs.shape == (n_layers + 1, 1, L_, tc.hidden_size), hs.shape
        arrays["hidden_states"] = hs.numpy().astype(np.float32)
        for i in range(n_layers - 1):  # hidden_states[i + 1] is decoder layer i's output
            assert torch.equal(out.hidden_states[i + 1], hooks.layer_out[i]), i
        checks["hidden_states_last_is_final_norm_output"] = bool(
            torch.equal(out.hidden_states[-1], text_model(loaded).norm(hooks.layer_out[-1])))
        assert checks["hidden_states_last_is_final_norm_output"]
        assert torch.equal(loaded.lm_head(out.hidden_states[-1]), out.logits)
        assert torch.equal(out.hidden_states[-1] @ loaded.get_input_embeddings().weight.T, out.logits)
    embeds0 = hooks.layer_in[0][..., :tc.hidden_size]  # qwen4_exp: the embeddings repeated over the hc streams
    if has_image:
        vo = hooks.visual[0]
        image_embeds = vo.pooler_output if isinstance(vo.pooler_output, torch.Tensor) else torch.cat(vo.pooler_output)
        assert vo.last_hidden_state.shape[0] == inputs["pixel_values"].shape[0]
        assert image_embeds.shape == (image_mask.sum(), tc.hidden_size)
        arrays["image_embeds"] = image_embeds.detach().numpy().astype(np.float32)
        # the merged output replaces the <|image_pad|> embeddings, in order
        assert torch.equal(embeds0[0, torch.from_numpy(image_mask)], image_embeds)
        vh = torch.stack([hooks.vision_in[0]] + hooks.vision_out)  # [depth + 1, patches, vision hidden]
        if family == "qwen2_5_vl":  # the blocks see merged-token groups in window order: back to pixel_values order
            window_index, cu_window = window_order(inputs["image_grid_thw"], vc)
            unit = vc.spatial_merge_size ** 2
            inverse = torch.argsort(window_index)
            vh = vh.reshape(vh.shape[0], -1, unit, vh.shape[-1])[:, inverse].reshape(vh.shape)
            facts["window_index"] = window_index.tolist()
            facts["cu_window_seqlens"] = cu_window.tolist()
            facts["windows"] = len(cu_window) - 1
        assert vh.shape == (vc.depth + 1, inputs["pixel_values"].shape[0], vc.hidden_size)
        arrays["vision_hidden"] = vh.numpy().astype(np.float32)
        with torch.no_grad():  # the rows' order: the merger on the last entry gives image_embeds
            assert torch.equal(loaded.model.visual.merger(vh[-1]), image_embeds)
        if family in DEEPSTACK_FAMILIES:
            # get_image_features splits the tower's outputs per image (in place): joined back here
            ds = torch.stack([f if isinstance(f, torch.Tensor) else torch.cat(f) for f in vo.deepstack_features])
            arrays["deepstack"] = ds.detach().numpy().astype(np.float32)
            with torch.no_grad():
                for j, block in enumerate(vc.deepstack_visual_indexes):
                    assert torch.equal(loaded.model.visual.deepstack_merger_list[j](vh[block + 1]), ds[j])
            # transformers' hidden_states[k + 1] is decoder layer k's output BEFORE the deepstack addition; the next
            # layer's input has deepstack[k] added at the image tokens (k < number of deepstack features)
            mask_t = torch.from_numpy(image_mask)
            for j in range(len(ds)):
                expect = hooks.layer_out[j].clone()
                expect[0, mask_t] += ds[j]
                assert torch.equal(out.hidden_states[j + 1], hooks.layer_out[j])
                assert torch.equal(hooks.layer_in[j + 1], expect), j
                assert not torch.equal(hooks.layer_in[j + 1], out.hidden_states[j + 1])
            checks["hidden_states_exclude_deepstack_verified_by_hooks"] = True
    else:
        assert not hooks.visual

    # greedy generate (as the brief: generate(**inputs, do_sample=False, max_new_tokens=8)), the text positions the
    # text model gets at prefill and at the first decode step
    with first_text_calls(loaded) as calls, torch.no_grad():
        gen = loaded.generate(**inputs, do_sample=False, max_new_tokens=NEW_TOKENS, output_logits=True,
                              return_dict_in_generate=True)
    new = gen.sequences[:, L_:]
    step_logits = torch.stack(gen.logits, dim=1)
    arrays["generated"] = np.ascontiguousarray(new.numpy())
    arrays["generate_position_ids"] = calls[0].numpy()
    facts["generate_position_ids_shape"] = list(calls[0].shape)
    if len(calls) > 1:
        facts["first_decode_step_position_ids"] = calls[1].reshape(calls[1].shape[0], -1).tolist()
    full = forward(load(spec, folder), extended(inputs, gen.sequences)).logits[:, L_ - 1:-1]
    assert torch.equal(full.argmax(-1), new), "generate differs from argmax over one forward of prompt + tokens"
    facts["relative_difference_generate_steps_vs_forward"] = float((step_logits - full).norm() / full.norm())
    assert facts["relative_difference_generate_steps_vs_forward"] < 1e-4, facts
    top2 = step_logits.topk(2, dim=-1).values
    facts["min_top2_margin_generated"] = float((top2[..., 0] - top2[..., 1]).min())
    facts["generated"] = new[0].tolist()
    facts["generated_text"] = processor.decode(new[0], skip_special_tokens=True)
    facts["stopped_on_eos"] = bool(EOS in facts["generated"])
    facts.update(checks)
    return arrays, facts, loaded, inputs, out.logits


# ----------------------------------------------------------------------------------------------
# Sensitivity: one detail changed on the same weights must move the logits of the two-image chat
# ----------------------------------------------------------------------------------------------

def contiguous_sections(self, freq):
    """M-RoPE as Qwen2-VL / Qwen2.5-VL lay it out: contiguous T | H | W sections of the frequencies."""
    freq = torch.cat([m[i % 3] for i, m in enumerate(freq.split(self.mrope_section, dim=-1))], dim=-1)
    return torch.cat((freq, freq), dim=-1)


def interleaved_sections(self, freq):
    """M-RoPE as Qwen3-VL / Qwen3.5 lay it out: frequency j from T, H, W in turn (j % 3), T filling the tail."""
    freqs_thw = freq[0].clone()
    for dim, offset in enumerate((1, 2), start=1):
        idx = slice(offset, self.mrope_section[dim] * 3, 3)
        freqs_thw[..., idx] = freq[dim, ..., idx]
    return torch.cat((freqs_thw, freqs_thw), dim=-1)


def moves(spec, folder, inputs, ref_logits):
    """{what: relative logit change} on the same weights, each detail changed alone."""
    family = spec["family"]
    L_ = inputs["input_ids"].shape[1]
    ones = np.ones((1, L_), np.int64)
    out = {}

    def measure(name, change=None, **kwargs):
        m = load(spec, folder)
        with torch.no_grad():
            (change or (lambda m: None))(m)
        out[name] = eg.relative_change(forward(m, inputs, **kwargs).logits, ref_logits, ones)

    measure("image_tokens_with_1d_text_positions", position_ids=torch.arange(L_).view(1, 1, L_).expand(3, 1, L_))

    def swap_sections(m):
        rot = text_model(m).rotary_emb
        layout = contiguous_sections if family in INTERLEAVED_FAMILIES else interleaved_sections
        rot.recomposition_frequencies = types.MethodType(layout, rot)
    measure("mrope_contiguous_instead_of_interleaved" if family in INTERLEAVED_FAMILIES
            else "mrope_interleaved_instead_of_contiguous", swap_sections)
    if family != "qwen2_5_vl":
        def align_corners_false(m):
            m.model.visual.interpolation_align_corners = False
        measure("position_grid_align_corners_false", align_corners_false)
    if family in DEEPSTACK_FAMILIES:
        def no_deepstack(m):
            text_model(m)._deepstack_process = lambda hidden_states, masks, embeds: hidden_states
        measure("deepstack_dropped", no_deepstack)
    if family == "qwen2_5_vl":
        def full_attention(m):
            m.model.visual.fullatt_block_indexes = list(range(m.config.vision_config.depth))
        measure("window_attention_replaced_by_full", full_attention)
    return out


# ----------------------------------------------------------------------------------------------
# One case
# ----------------------------------------------------------------------------------------------

def export_case(name, spec, *, seed, out_dir):
    folder = os.path.join(out_dir, name)
    family = spec["family"]
    moe = family in MOE_FAMILIES
    for attempt in range(MAX_ATTEMPTS):
        case_seed = seed + 10000 * attempt
        gen = torch.Generator().manual_seed(case_seed)
        config, model = build(spec, gen)
        save(spec, model, folder, gen)  # the processor comes from the folder (re-saved below after re-draws)
        processor = load_processor(folder)
        prompts = [processor_inputs(processor, k, out_dir) for k in range(len(PROMPTS))]
        draws, rounds = {}, 0
        if moe:
            settled = settle(spec, model, prompts, gen)
            if settled is None:
                print(f"{name}: seed {case_seed}: no clean draw", file=sys.stderr)
                continue
            draws, rounds = settled
            save(spec, model, folder, gen)
        arrays, facts = {}, []
        routing = qsa = None
        for k in range(len(PROMPTS)):
            a, f, loaded, inputs, full_logits = reference(spec, model, folder, processor, k, out_dir)
            arrays.update({f"p{k}.{key}": v for key, v in a.items()})
            facts.append(f)
        if moe:  # every router / indexer call: forward, generate, forward over prompt + generated tokens
            loaded = load(spec, folder)
            rlog = eg.RouterLog(loaded)
            qlog = eg4.QSALog(loaded) if family == "qwen4_exp" else None
            taken = []
            for k in range(len(PROMPTS)):
                inputs = prompts[k]
                T = inputs["input_ids"].shape[1]
                if qlog:
                    qlog.mask = np.ones((1, T), np.int64)
                forward(loaded, inputs)
                with torch.no_grad():
                    g = loaded.generate(**inputs, do_sample=False, max_new_tokens=NEW_TOKENS)
                taken.append(rlog.take(1, np.ones((1, T), np.int64)))
                if qlog:
                    qlog.mask = np.ones((1, g.shape[1]), np.int64)
                forward(loaded, extended(inputs, g))
                taken.append(rlog.take(1, np.ones((1, g.shape[1]), np.int64)))
            tc = loaded.config.get_text_config()
            routing = eg.routing_facts(taken, tc.num_experts_per_tok, tc.num_experts)
            qsa = eg4.qsa_summary(qlog.take()) if qlog else None
            rlog.close()
            if qlog:
                qlog.close()
        ok = (min(f["min_top2_margin_generated"] for f in facts) >= MIN_GAP
              and any(f["generated"][0] != EOS for f in facts)
              and len({tuple(f["generated"]) for f in facts}) == len(facts)  # each chat continues its own way
              and (routing is None or eg.routing_ok(routing, tc.num_experts))
              and (qsa is None or eg4.qsa_ok(qsa)))
        if ok:
            break
        print(f"{name}: seed {case_seed}: near a tie or alike: top2 {[f['min_top2_margin_generated'] for f in facts]}, "
              f"generated {[f['generated'] for f in facts]}, routing "
              f"{routing and [r['min_gap_kth_vs_next_prob'] for r in routing]}, qsa "
              f"{qsa and qsa['min_gap_kth_vs_next_score']}", file=sys.stderr)
    else:
        raise SystemExit(f"{name}: no seed in {MAX_ATTEMPTS} attempts clears every margin")

    # sensitivity on the same weights, two-image chat
    p2 = processor_inputs(processor, 2, out_dir)
    measured = moves(spec, folder, p2, full_logits)
    print(f"{name}: moves {measured}", file=sys.stderr)
    for what, change in measured.items():
        assert change > MIN_SENSITIVITY, (name, what, change)
    extra = {}
    if family == "qwen2_5_vl":  # the flat released form reloads to the in-memory model's logits
        mem = forward(float_copy(model, spec), p2).logits
        extra["flat_form_reload_max_abs_logit_difference_vs_in_memory"] = float((mem - full_logits).abs().max())
        assert extra["flat_form_reload_max_abs_logit_difference_vs_in_memory"] < 1e-5, extra
    meta = {"case": name, "architecture": spec["model"].__name__, "model_type": config.model_type,
            "dtype": str(spec["dtype"]).replace("torch.", ""), "seed": case_seed, "attempts": attempt + 1,
            "transformers": transformers.__version__, "torch": torch.__version__,
            "attn_implementation": "eager", "experts_implementation": "eager" if moe else None,
            "preprocessor": spec["pre"], "prompts": facts, "moves": measured, "min_move_required": MIN_SENSITIVITY}
    meta.update(extra)
    meta.update(case_meta(spec, loaded, folder, arrays))
    if moe:
        meta["redraws"], meta["redraw_rounds"] = draws, rounds
        meta["routing"] = {"top_k": tc.num_experts_per_tok, "num_experts": tc.num_experts,
                           "router_probability": "softmax over all experts, float32",
                           "checked": "every router call of the forward, generate (prefill and each decode step) and "
                                      "a forward over prompt + generated tokens",
                           "min_gap_required": MIN_GAP, "layers": routing}
        if qsa is not None:
            meta["qsa"] = qsa
    save_file(arrays, os.path.join(out_dir, f"{name}.safetensors"))
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True, ensure_ascii=False)
    os.chmod(os.path.join(out_dir, f"{name}.safetensors"), 0o644)
    print(f"{name}: seed {case_seed}, lengths {[f['length'] for f in facts]}, moves "
          f"{ {k: round(v, 4) for k, v in measured.items()} }", file=sys.stderr)
    return meta


CONVENTIONS = {
    "p<k>": "chat k of PROMPTS (the json's prompts[k].messages, image paths relative to golden/vision/), rendered with "
            "the folder's processor: apply_chat_template(messages, add_generation_prompt=True, tokenize=True, "
            "return_dict=True, return_tensors='pt'); batch 1, no padding",
    "input_ids": "[1, L] int64; each image is <|vision_start|> + t*h*w/4 <|image_pad|> + <|vision_end|> (h, w in "
                 "patches: image_grid_thw)",
    "mm_token_type_ids": "[1, L] int64: 1 at <|image_pad|>, 0 elsewhere (the processor's output)",
    "image_grid_thw": "[n_images, 3] int64 (t, h, w) in patches, the processor's output",
    "pixel_values": "[n_patches, 3*2*p*p] float32, the processor's output: the concatenation, image after image, of "
                    "preprocess.safetensors' <preprocessor>.<image>.path.pixel_values "
                    "(prompts[k].pixel_values.preprocess_keys; asserted equal)",
    "position_ids": "[3, 1, L] int64 (T, H, W) = model.model.get_rope_index(...), exactly what the text RoPE receives "
                    "in forward (asserted by a hook); text tokens: t = h = w = running position; an image with "
                    "merged grid (gh, gw) = (h/2, w/2) starting at position s: T = s, H = s + row, W = s + col "
                    "(row-major over the merged grid), and the text after it continues at s + max(gh, gw); text-only "
                    "chats: 0..L-1",
    "rope_deltas": "[1, 1] int64 = max(position_ids) + 1 - L; decode step i (0-based) uses position L + i + "
                   "rope_deltas on all three axes (prompts[k].first_decode_step_position_ids)",
    "generate_position_ids": "[4, 1, L] int64: what generate's prefill hands the text model: row 0 = 0..L-1 (plain "
                             "text positions, used only for the attention mask), rows 1..3 = position_ids. A plain "
                             "forward without position_ids hands it position_ids [3, 1, L] (text-only: [4, 1, L] or "
                             "[3, 1, L] of 0..L-1)",
    "image_embeds": "[n_image_tokens, text hidden]: the vision tower's merged output (merger), concatenated over the "
                    "images in prompt order; it replaces the <|image_pad|> embeddings (asserted)",
    "vision_hidden": "[depth + 1, n_patches, vision hidden]: entry 0 = the blocks' input (patch embedding, plus the "
                     "learned position grid bilinearly resampled where the tower has one), entry j = block j-1's "
                     "output; rows in pixel_values order (merge-block order: each 2 x 2 group of patches "
                     "consecutive); Qwen2.5-VL's blocks see the rows in window order: stored back in pixel_values "
                     "order (prompts[k].window_index is transformers' window order of the merged tokens)",
    "deepstack": "[n_deepstack, n_image_tokens, text hidden]: deepstack_merger_list[j] applied to the output of ViT "
                 "block deepstack_visual_indexes[j]; added to the image tokens' hidden state after text decoder "
                 "layer j",
    "hidden_states": "[layers + 1, 1, L, hidden] = transformers' output_hidden_states: entry 0 = input embeddings "
                     "(image_embeds scattered in), entry i = decoder layer i-1's output, the last entry = the final "
                     "norm's output. Qwen3-VL / Qwen3-VL-MoE: entry j + 1 (j < n_deepstack) is layer j's output "
                     "BEFORE deepstack[j] is added (layer j+1's input = entry j+1 + deepstack[j] at the image tokens; "
                     "verified by hooks). qwen4_exp: [layers + 1, 1, L, hc*hidden] hyper-connection streams (entry 0 "
                     "= embeddings repeated over the hc streams, entry i = streams leaving layer i-1, stream j in "
                     "columns j*H:(j+1)*H) and p<k>.mixer [1, L, hidden] = the final mixer's output (transformers' "
                     "last entry)",
    "logits": "[1, n, vocab] float32 at logits_positions [n] (the last <|image_pad|> of each image and the last "
              "position); the full logits are hidden_states[-1] (qwen4_exp: mixer) @ embed_tokens.T, the embedding "
              "being tied (asserted exact in torch)",
    "generated": "[1, <= 8] int64: generate(**inputs, do_sample=False, max_new_tokens=8) after the prompt; "
                 "prompts[k].generated_text = processor.decode(them, skip_special_tokens=True); equal to the argmax "
                 "of one forward over prompt + generated tokens (asserted)",
}


def case_meta(spec, loaded, folder, arrays):
    """What the case's files and model hold, for the record."""
    cfg, tc, vc = loaded.config, loaded.config.get_text_config(), loaded.config.vision_config
    saved = eg.read_tensors(folder)
    rot = text_model(loaded).rotary_emb
    meta = {
        "files": sorted(os.listdir(folder)),
        "tensors_in_files": len(saved),
        "float32_tensors": (sorted(k for k, t in saved.items() if t.dtype == torch.float32)
                            if any(t.dtype != torch.float32 for t in saved.values()) else "all"),
        "weight_name_prefixes": sorted({".".join(k.split(".")[:2]) for k in saved}),
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "lm_head_tied": loaded.lm_head.weight.data_ptr() == loaded.get_input_embeddings().weight.data_ptr(),
        "token_ids": dict(TOKEN_IDS, bos=BOS, pad=PAD, eos=EOS), "vocab_size": tc.vocab_size,
        "text": {"num_hidden_layers": tc.num_hidden_layers, "hidden_size": tc.hidden_size,
                 "head_dim": getattr(tc, "head_dim", tc.hidden_size // tc.num_attention_heads),
                 "layer_types": getattr(tc, "layer_types", None), "rope_parameters": tc.rope_parameters,
                 "rotary_dims": 2 * len(rot.inv_freq), "mrope_section": rot.mrope_section,
                 "mrope_layout": "interleaved" if spec["family"] in INTERLEAVED_FAMILIES else "contiguous"},
        "vision": {k: getattr(vc, k) for k in ("depth", "hidden_size", "num_heads", "intermediate_size", "patch_size",
                                               "spatial_merge_size", "temporal_patch_size", "out_hidden_size",
                                               "hidden_act") if hasattr(vc, k)},
        "keys": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in sorted(arrays.items())},
        "conventions": CONVENTIONS,
    }
    visual = loaded.model.visual
    if hasattr(visual, "pos_embed"):
        meta["vision"].update(num_position_embeddings=vc.num_position_embeddings,
                              position_grid=f"{visual.num_grid_per_side} x {visual.num_grid_per_side}",
                              interpolation=f"{visual.interpolation_mode}, align_corners="
                                            f"{visual.interpolation_align_corners}")
    meta["vision"]["deepstack_visual_indexes"] = getattr(vc, "deepstack_visual_indexes", None)
    meta["vision"]["deepstack_mergers"] = len(getattr(visual, "deepstack_merger_list", []))
    if spec["family"] == "qwen2_5_vl":
        meta["vision"].update(window_size=vc.window_size, fullatt_block_indexes=vc.fullatt_block_indexes,
                              vit_merger_window_size=vc.window_size // vc.spatial_merge_size // vc.patch_size)
    with open(os.path.join(folder, "config.json")) as f:
        meta["config_json_top_level_keys"] = sorted(json.load(f))
    if spec["family"] == "qwen4_exp":
        meta["vision_tower"] = qwen4_vision_facts(loaded, folder)
    if spec["family"] == "qwen3_vl_moe":
        meta["experts_on_disk"] = {k: list(t.shape) for k, t in saved.items() if "layers.0.mlp.experts" in k}
        meta["experts_in_model"] = {n: list(p.shape) for n, p in loaded.named_parameters()
                                    if "layers.0.mlp.experts" in n}
    return meta


def qwen4_vision_facts(loaded, folder):
    """Qwen4ExpVisionModel is Qwen3.5's ViT: the same weights in a Qwen3_5VisionModel give the same output. The
    released config's deepstack_visual_indexes is not read (no deepstack mergers). The n-gram PLE sees the
    <|image_pad|> ids like any other token (ple_input_ids = input_ids)."""
    from transformers.models.qwen3_5.configuration_qwen3_5 import Qwen3_5VisionConfig
    from transformers.models.qwen3_5.modeling_qwen3_5 import Qwen3_5VisionModel
    vc = loaded.config.vision_config
    fields = ("depth", "hidden_size", "hidden_act", "intermediate_size", "num_heads", "in_channels", "patch_size",
              "spatial_merge_size", "temporal_patch_size", "out_hidden_size", "num_position_embeddings")
    twin = Qwen3_5VisionModel(Qwen3_5VisionConfig(**{k: getattr(vc, k) for k in fields})).eval()
    twin.load_state_dict(loaded.model.visual.state_dict())
    twin.set_attn_implementation("eager")
    processor = load_processor(folder)
    inputs = processor_inputs(processor, 2, os.path.dirname(folder))
    with torch.no_grad():
        a = loaded.model.visual(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"]).pooler_output
        b = twin(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"]).pooler_output
    seen = []
    ple_layer = next(layer for layer in eg.decoder_layers(loaded) if getattr(layer, "ple", None) is not None)
    handle = ple_layer.register_forward_pre_hook(lambda m, a, kw: seen.append(kw.get("ple_input_ids")),
                                                 with_kwargs=True)
    forward(loaded, inputs)
    handle.remove()
    assert seen and torch.equal(seen[0], inputs["input_ids"])
    return {"class": type(loaded.model.visual).__name__,
            "same_as": "Qwen3_5VisionModel (Qwen3-VL's ViT without deepstack): patch Conv3d with bias, learned "
                       "position grid resampled bilinearly (align_corners=True), LayerNorm blocks with fused qkv, "
                       "2-D RoPE, gelu_pytorch_tanh MLP, merger LayerNorm -> fc1 -> GELU -> fc2",
            "max_abs_difference_vs_qwen3_5_vision_model_same_weights": float((a - b).abs().max()),
            "deepstack_visual_indexes_in_config_json": getattr(vc, "deepstack_visual_indexes", None),
            "deepstack_mergers": len(getattr(loaded.model.visual, "deepstack_merger_list", [])),
            "ple_input_ids": "input_ids, <|image_pad|> ids included (checked by a hook on the PLE layer)"}


def write_readme(out_dir):
    """README.md from what the folder holds (every <case>.json, preprocess.json, file sizes)."""
    cases = {}
    for name in CASES:
        path = os.path.join(out_dir, f"{name}.json")
        if os.path.exists(path):
            with open(path) as f:
                cases[name] = json.load(f)
    sizes = {}
    for root, _, files in os.walk(out_dir):
        for fn in files:
            rel = os.path.relpath(os.path.join(root, fn), out_dir)
            if rel != "README.md":
                sizes[rel] = os.path.getsize(os.path.join(root, fn))
    groups = {}
    for rel, n in sizes.items():
        top = rel.split(os.sep)[0]
        key = top + "/" if os.sep in rel else rel
        groups[key] = groups.get(key, 0) + n
    kb = lambda n: f"{n / 1024:.0f} KB" if n < 1 << 20 else f"{n / (1 << 20):.2f} MB"  # noqa: E731
    total = sum(sizes.values())
    lines = [
        "# golden/vision: image input, from transformers " + transformers.__version__,
        "",
        "Golden data for the vision-language models, exported once by `scripts/export_golden_vision.py` with "
        f"transformers {transformers.__version__}, torch {torch.__version__} (CPU), Pillow {PIL.__version__}; "
        "torchvision not installed. Rerun (deterministic: fixed seeds, images drawn by the script; about 15 s on 2 "
        "cores):",
        "",
        "    /tmp/goldenv/bin/python scripts/export_golden_vision.py",
        "",
        "Every model is tiny and random (every parameter drawn, export_golden.py's rule), saved as a checkpoint "
        "folder, reloaded from that folder in float32 with eager attention (and eager experts), and the references "
        "come from the reload with the folder's own processor: "
        "`AutoProcessor.from_pretrained(folder, backend=\"pil\")` (image processor `Qwen2VLImageProcessorPil`). "
        "Each folder holds its tokenizer (the 4000-token demo BPE + "
        "<|endoftext|> 4000, <|im_start|> 4001, <|im_end|> 4002, <|vision_start|> 4003, <|vision_end|> 4004, "
        "<|image_pad|> 4005, <|video_pad|> 4006; vocab_size 4008; eos 4002, pad = bos = 4000), Qwen2-VL's released "
        "chat template (in `chat_template.jinja` and in `tokenizer_config.json`) and a released-style "
        "`preprocessor_config.json` with small pixel limits.",
        "",
        "## Files",
        "",
        "| file | size | what |",
        "|---|---|---|",
        f"| images/ | {kb(groups.get('images/', 0))} | rgb.png (45 x 61), rgba.png (alpha 0..255), palette.png "
        "(mode P, transparency index 5), gray.png (mode L), exif.jpg (40 x 24 stored, EXIF Orientation 6), tiny.png "
        "(5 x 3), wide.png (300 x 12), big.png (400 x 300) |",
        f"| preprocess.safetensors | {kb(sizes.get('preprocess.safetensors', 0))} | pixel_values / image_grid_thw "
        "of the PIL image processor, configs patch14 and patch16, each image as a path (rgba / palette / exif also "
        "as an unconverted PIL image, rgb also as a uint8 array) |",
        f"| preprocess.json | {kb(sizes.get('preprocess.json', 0))} | every entry (image, mode, config, grid, "
        "resized size), both configs, what each mode does |",
    ]
    for name, m in cases.items():
        lines.append(f"| {name}/ | {kb(groups.get(name + '/', 0))} | checkpoint: {m['architecture']}, "
                     f"{m['dtype']}, {', '.join(f for f in m['files'] if f.endswith('safetensors'))} |")
        lines.append(f"| {name}.safetensors | {kb(sizes.get(name + '.safetensors', 0))} | references of the "
                     "three chats |")
        lines.append(f"| {name}.json | {kb(sizes.get(name + '.json', 0))} | messages, prompt text, generated "
                     "text, checks, moves, keys and shapes, conventions |")
    lines += [f"| **total** | **{kb(total)}** | |", ""]
    lines += [
        "The folder is over the ~8 MB aimed at: six checkpoints cost about "
        f"{kb(sum(groups.get(n + '/', 0) for n in cases))} by themselves (a 4008 x 64 embedding is 0.5 MB in bf16 "
        "and 1 MB in the float32 case, the 16 x 16 patch embedding 0.1 MB, each folder carries its 100 KB "
        "tokenizer.json) and the preprocess references "
        f"{kb(sizes.get('preprocess.safetensors', 0))}. The logits are therefore stored at a few positions only "
        "(`p<k>.logits_positions`): full logits cost 16 KB a position (about 9 MB for the six cases), and they are "
        "hidden_states[-1] @ embed_tokens.T exactly, the embedding being tied, so the stored hidden states pin them "
        "at every position. The chats' pixel_values (about 0.3 MB a case) repeat rows of preprocess.safetensors "
        "and are kept so that each case file holds its inputs. Qwen2-VL "
        "(Qwen2VLForConditionalGeneration) is left out for the same reason: its text model is Qwen2.5-VL's and its "
        "ViT is Qwen2.5-VL's minus windows and SwiGLU.",
        "",
        "## Cases",
        "",
        "| case | model | text | vision | files |",
        "|---|---|---|---|---|",
    ]
    for name, m in cases.items():
        t, v = m["text"], m["vision"]
        kinds = t["layer_types"] if "linear_attention" in str(t["layer_types"]) else None
        text = (f"{t['num_hidden_layers']} layers{' ' + str(kinds) if kinds else ''}, "
                f"head_dim {t['head_dim']}, {t['rotary_dims']} rotary dims, mrope_section {t['mrope_section']} "
                f"{t['mrope_layout']}, rope_theta {t['rope_parameters']['rope_theta']:g}")
        vis = f"patch {v['patch_size']}, depth {v['depth']}, {v['hidden_act']}"
        if v.get("position_grid"):
            vis += f", {v['position_grid']} learned position grid ({v['interpolation']})"
        if v.get("deepstack_mergers"):
            vis += f", deepstack from blocks {v['deepstack_visual_indexes']}"
        if v.get("window_size"):
            vis += (f", window {v['window_size']} ({v['vit_merger_window_size']} x {v['vit_merger_window_size']} "
                    f"merged tokens), full attention in blocks {v['fullatt_block_indexes']}")
        files = ", ".join(f for f in m["files"] if f.endswith(".safetensors"))
        lines.append(f"| {name} | {m['architecture']}, {m['dtype']} | {text} | {vis} | {files}; weights "
                     f"{', '.join(m['weight_name_prefixes'])} |")
    lines += [
        "",
        "Case notes: qwen3_5_vision and qwen3_5_moe_vision are written as Qwen released Qwen3.5 (two "
        "`model.safetensors-0000i-of-00002` shards, random `mtp.*`, A_log and the DeltaNet norm float32 in a bf16 "
        "file, experts fused); qwen4_exp_vision as export_golden_qwen4.py's released layout; qwen3_vl (float32) as "
        "save_pretrained writes it; qwen3_vl_moe with the experts transposed as released (gate_up_proj [E, H, 2I], "
        "down_proj [E, I, H]); qwen2_5_vl in the hub's flat form (top-level text fields, `rope_scaling: {type: "
        "mrope}`, `vision_config.in_chans`, weights `visual.*` / `model.*`, lm_head tied and absent as in "
        "Qwen2.5-VL-3B). rope_theta is far below the released values and the hybrids' full-attention q/k norms "
        "are scaled up (x3): on images of a handful of merged tokens only fast frequencies and sharp attention tell "
        "the M-RoPE layouts apart (see moves). MoE routers (and the QSA indexer) are re-drawn until no choice of the "
        "prompts and their greedy continuations lies within 1e-3 of a tie (json: routing, qsa, redraws); the greedy "
        "tokens clear a top-2 logit margin of 1e-3, at least one chat does not start with eos, and the three chats "
        "continue differently.",
        "",
        "## The three chats (p0, p1, p2)",
        "",
        "- p0: `[{\"role\": \"user\", \"content\": \"学习如逆水行舟,不进则\"}]`",
        "- p1: one image then text: `[{\"type\": \"image\", \"path\": \"images/rgb.png\"}, {\"type\": "
        "\"text\", \"text\": \"Describe this.\"}]`",
        "- p2: `[{\"type\": \"text\", \"text\": \"First\"}, {\"type\": \"image\", \"path\": "
        "\"images/big.png\"}, {\"type\": \"text\", \"text\": \"and second\"}, {\"type\": \"image\", "
        "\"path\": \"images/wide.png\"}]`",
        "",
        "with `add_generation_prompt=True`; the json holds for each the messages, the rendered prompt text, the "
        "image paths (relative to this folder), the generated ids and `processor.decode(ids, "
        "skip_special_tokens=True)`.",
        "",
        "## Reference keys (per chat k)",
        "",
    ]
    lines += [f"- `p<k>.{k}`: {v}" if k != "p<k>" else f"- `p<k>`: {v}" for k, v in CONVENTIONS.items()]
    lines += ["- `p<k>.logits_positions`: [n] int64, the positions of `p<k>.logits`", ""]
    if cases:
        name, m = next(iter(cases.items()))
        lines += [f"Shapes in {name}.safetensors:", ""]
        lines += [f"- `{k}` {v['dtype']} {v['shape']}" for k, v in m["keys"].items()]
        lines.append("")
    lines += ["## Moves: the same weights with one detail changed (relative change of the p2 logits)", "",
              "Each must exceed 1e-2, so the golden data catches the mistake. a: every image token given plain 1-D "
              "text positions (0..L-1 on all three axes); b: the M-RoPE sections laid out the other way "
              "(interleaved <-> contiguous); c: the learned position grid resampled with align_corners=False; d: "
              "deepstack dropped; e: window attention replaced by full attention in every ViT block.", "",
              "| case | a: 1-D positions | b: M-RoPE layout | c: align_corners | d: deepstack | e: windows |",
              "|---|---|---|---|---|---|"]
    for name, m in cases.items():
        mv = m["moves"]
        cell = lambda *keys: next((f"{mv[k]:.4f}" for k in keys if k in mv), "n/a")  # noqa: E731
        lines.append(f"| {name} | {cell('image_tokens_with_1d_text_positions')} | "
                     f"{cell('mrope_contiguous_instead_of_interleaved', 'mrope_interleaved_instead_of_contiguous')} | "
                     f"{cell('position_grid_align_corners_false')} | {cell('deepstack_dropped')} | "
                     f"{cell('window_attention_replaced_by_full')} |")
    lines += [
        "",
        "## transformers 5.23 behaviours worth knowing",
        "",
        "- No torchvision, no processor: Qwen2_5_VLProcessor and Qwen3VLProcessor always load a video processor, "
        "which exists only for the torchvision backend, so `AutoProcessor.from_pretrained(folder, backend=\"pil\")` "
        "raises without torchvision (and the processor cannot even be built with video_processor=None). The script "
        "stands None in for the video processor (`images_only`); the image path is transformers' own.",
        "- A file path and a PIL image differ: load_image (paths) applies the EXIF orientation and "
        "`.convert(\"RGB\")`, "
        "dropping an alpha channel; a PIL image passed directly is not rotated and its alpha is composited onto "
        "white. A palette's transparent index survives load_image as an RGB `transparency` colour and is composited "
        "onto white either way (see preprocess.json).",
        "- Positions after an image continue at start + max(h, w) / 2 (not start + number of image tokens): T is "
        "constant over an image, H and W count rows and columns of merged tokens from the image's start; rope_deltas "
        "= max + 1 - L shifts every decode step. A plain forward gives the text model [3, 1, L] positions; "
        "generate's prefill gives [4, 1, L], the first row being 0..L-1 for the attention mask only (Qwen2.5-VL, "
        "Qwen3-VL, Qwen3.5 and qwen4_exp alike).",
        "- Qwen3-VL's output_hidden_states entry j + 1 is decoder layer j's output before deepstack[j] is added; "
        "the next layer gets the sum.",
        "- Qwen3.5 / Qwen3-VL / qwen4_exp always interleave the M-RoPE sections (no flag is read); Qwen2.5-VL always "
        "lays them out contiguously.",
        "- Qwen2.5-VL's flat hub form: save_pretrained in 5.23 already writes the hub's weight names (visual.*, "
        "model.layers.*; it reverses the load renaming ^visual -> model.visual, ^model -> model.language_model), "
        "only config.json is nested; Qwen2_5_VLConfig moves flat text fields into text_config and reads "
        "rope_scaling {type: mrope} as rope_type default with mrope_section. The reload's logits equal the "
        "in-memory model's (json: flat_form_reload_max_abs_logit_difference_vs_in_memory).",
        "- Qwen3-VL-MoE: save_pretrained writes the experts as the model holds them ([E, 2I, H], [E, H, I]); the "
        "released files hold them transposed and the loader transposes only when the shape differs from the "
        "model's (square expert matrices would be ambiguous).",
        "- qwen4_exp (Qwen3.8-Flash-Next) takes images: its ViT is Qwen3.5's (same weights in a Qwen3_5VisionModel "
        "give the same output; no deepstack, the released config's deepstack_visual_indexes is not read), image "
        "tokens get M-RoPE positions like Qwen3.5's, and the PLE n-gram hash reads the <|image_pad|> ids like any "
        "other token.",
        "",
    ]
    with open(os.path.join(out_dir, "README.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cases", nargs="*", help=f"cases to export (default: all, and the images and preprocess "
                                                 f"references): {', '.join(CASES)}")
    parser.add_argument("--out", default=OUT, help="output folder (default: golden/vision/)")
    args = parser.parse_args()
    unknown = set(args.cases) - set(CASES)
    if unknown:
        parser.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    torch.set_num_threads(2)
    os.makedirs(args.out, exist_ok=True)
    make_images(os.path.join(args.out, "images"))  # deterministic, cheap: always redrawn
    if not args.cases:
        export_preprocess(args.out)
    for seed, (name, spec) in enumerate(CASES.items(), start=3000):
        if not args.cases or name in args.cases:
            export_case(name, spec, seed=seed, out_dir=args.out)
    write_readme(args.out)


if __name__ == "__main__":
    main()
