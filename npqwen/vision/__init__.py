"""Image input for the vision-language Qwens (Qwen2.5-VL, Qwen3-VL, Qwen3.5 / 3.6 / 3.8).

    images.py      files -> patches: transformers' image processor (needs Pillow: the `vision` extra)
    tower.py       patches -> image tokens: the ViT, its 2-D RoPE, windows, mergers, DeepStack
    multimodal.py  image tokens -> the language model: embeddings, M-RoPE positions, DeepStack
    config.py      vision_config, validated

    from npqwen import load_model
    from npqwen.vision import load_image_processor
    pixel_values, image_grid_thw = load_image_processor(folder)(["cat.png"])
    model.forward(input_ids, pixel_values=pixel_values, image_grid_thw=image_grid_thw)
"""

from .images import ImageProcessor, load_image_processor

__all__ = ["ImageProcessor", "load_image_processor"]
