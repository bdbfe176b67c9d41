"""`mini`: a 1.6 M-parameter Qwen2.5-VL trained from scratch, for CPU experiments.

The smol backbone (135 M, SmolLM2's language model) needs a GPU to learn to read EgoSynth clips
in minutes; on 2 CPU cores its warm-up sees a few hundred clips and the method's effects drown in
noise. `mini` keeps every real code path (`Qwen2_5_VLForConditionalGeneration`,
`Qwen2_5_VLProcessor`, `load_model`, the warm-up, the scorer and the GRPO trainer) and shrinks
the model about 90-fold, so that a warm-up of a few thousand clips costs CPU minutes:

- a byte-level BPE tokenizer trained locally, as `tiny`'s, on a corpus that also holds
  EgoSynth's words (object names and synonyms, places, scenes, activities, motions, question
  templates, the prompt instructions and warm-up rationales), so that a prompt is about 60 tokens
  and most object names are one or two tokens (their input embeddings are what the vision
  pretraining's `lm_align` pulls the tower's tokens towards);
- a Qwen2 text stack (3 layers, hidden 128, 4 heads / 2 KV heads, head dim 32, M-RoPE sections
  [4, 6, 6]) and a Qwen2.5-VL vision tower (2 blocks, hidden 128, full attention in block 1),
  both random from a fixed seed; Qwen's patch geometry (patch 14, merge 2, temporal patch 2), so
  an 84 px frame pair is 9 tokens.

It knows nothing until the warm-up trains it (vision pretraining, then the QA warm-up with the
language model trained too): language priors and hand-reading both come from EgoSynth. Measured
(docs/RESULTS.md): in about 2,000 clip passes of vision pretraining its tower learns the scene's
objects but not the grasped one, so it is not yet the demo's backbone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ego3s.models.tiny import (
    _CORPUS,
    QWEN_SPECIAL_TOKENS,
    _train_tokenizer,
    _vision_ids,
    _wrap_tokenizer,
    cached_build,
    make_processor,
    qwen_chat_template,
)

MINI_VERSION = 1
VOCAB = 2048
TEXT = dict(
    hidden_size=128,
    intermediate_size=384,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    mrope_section=[4, 6, 6],
)
VISION = dict(
    depth=2,
    hidden_size=128,
    intermediate_size=256,
    num_heads=4,
    hidden_act="silu",
    in_channels=3,
    patch_size=14,
    spatial_merge_size=2,
    temporal_patch_size=2,
    tokens_per_second=2,
    window_size=112,
    fullatt_block_indexes=[1],
)


def egosynth_corpus() -> str:
    """EgoSynth's words in the sentences the model will read and write (the tokenizer's corpus)."""
    from ego3s.data import egosynth as es
    from ego3s.models import prompts

    lines = [prompts.REASONING_CLOSED, prompts.REASONING_OPEN, prompts.DIRECT_CLOSED, prompts.DIRECT_OPEN]
    for o in es._O:
        for n in o.names():
            lines += [
                f"<think>I watch my left hand: it takes the {n} (put).</think><answer>{n}</answer>",
                f"What did I do with the {n} before putting it down? A. the {n} B. {n}",
            ]
        lines.append(
            f"I was {o.activity} in the {o.scene}. I am in the {o.scene} and think about what usually happens here."
        )
    for d in es.DESTINATIONS.values():
        lines.append(f"Where did I put it? {d.phrase}. What did I put {d.prep} the {d.name}?")
    lines += [f"I {v}. <answer>{v}</answer>" for v in es.VERBS.values()]
    lines += [f"<answer>{h}</answer> my {h}" for h in es.HAND_OPTIONS]
    lines += [text.replace("{", "").replace("}", "") for _, text, _ in es.TEMPLATES.values()]
    lines += [f"Options:\nA. {a}\nB. {b}\nC. {c}\nD. {d}" for a, b, c, d in ["ABCD", "DCBA"]]
    return "\n".join(lines) + "\n" + _CORPUS


def mini_config(tokenizer, *, initializer_range: float = 0.02):
    from transformers import Qwen2_5_VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    t = dict(TEXT)
    section = t.pop("mrope_section")
    head_dim = t["hidden_size"] // t["num_attention_heads"]
    if sum(section) * 2 != head_dim:
        raise ValueError(f"mrope_section {section} does not sum to head_dim / 2 = {head_dim // 2}")
    text = dict(
        vocab_size=len(tokenizer),
        **t,
        hidden_act="silu",
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        use_sliding_window=False,
        initializer_range=initializer_range,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": section},
        bos_token_id=None,
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    vision = {**VISION, "out_hidden_size": TEXT["hidden_size"], "initializer_range": initializer_range}
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **_vision_ids(tokenizer))


def build_mini(out_dir: str | os.PathLike, *, seed: int = 0, force: bool = False) -> Path:
    """Write the from-scratch `mini` Qwen2.5-VL (model + processor) to `out_dir`; return the path.

    Deterministic by `seed`; skips the work when `out_dir` already holds the same build."""
    want = {"builder": "mini", "version": MINI_VERSION, "seed": seed}

    def write(tmp: Path) -> dict[str, Any]:
        import torch
        import transformers
        from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

        template = qwen_chat_template()
        tokenizer = _wrap_tokenizer(_train_tokenizer(VOCAB, egosynth_corpus()), template)
        config = mini_config(tokenizer)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32).eval()
        eos = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")]
        model.generation_config = GenerationConfig(
            eos_token_id=eos, pad_token_id=tokenizer.pad_token_id, do_sample=False
        )
        model.save_pretrained(tmp)
        make_processor(tokenizer, template).save_pretrained(tmp)
        return {"transformers": transformers.__version__, "parameters": sum(p.numel() for p in model.parameters())}

    return cached_build(out_dir, want, force, write)
