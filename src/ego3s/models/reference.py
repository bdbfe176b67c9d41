"""The published Qwen2.5-VL-7B/3B-Instruct architectures with random weights, for true-to-scale
benchmarks on machines without the checkpoints. The outputs are meaningless; the compute and
memory are real. The tokenizer and processor come from the tiny build (its special-token ids are
written into the config), since only token ids < vocab size matter for timing."""

from __future__ import annotations

import os
from pathlib import Path

# From the published config.json files of Qwen/Qwen2.5-VL-{7B,3B}-Instruct.
ARCHS = {
    "7b": dict(
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        vocab_size=152064,
        tie_word_embeddings=False,
        out_hidden_size=3584,
    ),
    "3b": dict(
        hidden_size=2048,
        intermediate_size=11008,
        num_hidden_layers=36,
        num_attention_heads=16,
        num_key_value_heads=2,
        vocab_size=151936,
        tie_word_embeddings=True,
        out_hidden_size=2048,
    ),
}
VISION = dict(
    depth=32,
    hidden_size=1280,
    intermediate_size=3420,
    num_heads=16,
    hidden_act="silu",
    in_channels=3,
    patch_size=14,
    spatial_merge_size=2,
    temporal_patch_size=2,
    tokens_per_second=2,
    window_size=112,
    fullatt_block_indexes=[7, 15, 23, 31],
)


def reference_config(arch: str, tokenizer):
    from transformers import Qwen2_5_VLConfig

    from ego3s.models.tiny import QWEN_SPECIAL_TOKENS

    a = dict(ARCHS[arch])
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    text = dict(
        vocab_size=a["vocab_size"],
        hidden_size=a["hidden_size"],
        intermediate_size=a["intermediate_size"],
        num_hidden_layers=a["num_hidden_layers"],
        num_attention_heads=a["num_attention_heads"],
        num_key_value_heads=a["num_key_value_heads"],
        hidden_act="silu",
        max_position_embeddings=128000,
        rms_norm_eps=1e-6,
        use_sliding_window=False,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config={**VISION, "out_hidden_size": a["out_hidden_size"]},
        tie_word_embeddings=a["tie_word_embeddings"],
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )


def build_reference(out_dir: str | os.PathLike, arch: str = "7b", *, seed: int = 0, device: str = "cuda") -> Path:
    """Save a random bf16 Qwen2.5-VL-{7b,3b} with the tiny processor to `out_dir`."""
    import torch
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from ego3s.models.tiny import build_tiny

    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {sorted(ARCHS)}, got {arch!r}")
    out = Path(out_dir)
    tiny = build_tiny(out.parent / f".{out.name}.tiny")
    processor = AutoProcessor.from_pretrained(tiny, local_files_only=True)
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(
            reference_config(arch, processor.tokenizer), dtype=torch.bfloat16
        )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    del model
    return out
