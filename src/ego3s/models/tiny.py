"""A tiny random Qwen2.5-VL (well under a million parameters) for unit tests, and its Qwen2-VL twin.

Everything is built locally: the config, a byte-level BPE tokenizer trained with the `tokenizers`
library on a small built-in corpus (with Qwen's special tokens and chat template), the image and
video processors, and random weights drawn from a fixed seed. The result is an ordinary
`save_pretrained` folder that the Auto classes reload without network:

    path = build_tiny("/tmp/tiny")
    model, processor = load_model(path)

`build_tiny_qwen2vl` writes the same thing as a Qwen2-VL (`Qwen2VLForConditionalGeneration`,
`Qwen2VLProcessor`; no window attention, no absolute time in M-RoPE), to check that training,
scoring and evaluation carry across architectures.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Bump when the output of a builder changes, so that cached builds are redone.
TINY_VERSION = 2
MARKER = "ego3s_build.json"

# Qwen's special tokens, in Qwen's order. <|endoftext|> is the pad token, <|im_end|> ends a turn.
QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]

# The pre-tokenizer regex of Qwen2's tokenizer (GPT-4 style, one digit per token).
QWEN_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def qwen_chat_template(default_system: str = "You are a helpful assistant.") -> str:
    """Qwen2.5-VL's chat template (content lists with text / image / video entries), with the
    given default system prompt. Images and videos become
    `<|vision_start|><|image_pad|><|vision_end|>` / `<|vision_start|><|video_pad|><|vision_end|>`;
    the processor then expands the single pad token to one per merged visual patch."""
    system = default_system.replace("'", "\\'")
    return (
        "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
        "{% for message in messages %}"
        "{% if loop.first and message['role'] != 'system' %}"
        "<|im_start|>system\n" + system + "<|im_end|>\n"
        "{% endif %}"
        "<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
        "{% else %}{% for content in message['content'] %}"
        "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
        "{% set image_count.value = image_count.value + 1 %}"
        "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
        "<|vision_start|><|image_pad|><|vision_end|>"
        "{% elif content['type'] == 'video' or 'video' in content %}"
        "{% set video_count.value = video_count.value + 1 %}"
        "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
        "<|vision_start|><|video_pad|><|vision_end|>"
        "{% elif 'text' in content %}{{ content['text'] }}"
        "{% endif %}{% endfor %}<|im_end|>\n"
        "{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


# A small English + egocentric-QA corpus: enough for BPE merges that make prompts short.
_CORPUS = """\
You are a helpful assistant. Answer the question about the video.
Watch the video and answer the question. Think about what the hands are doing.
Select the best option. Answer with the option's letter from the given choices directly.
First think about the question step by step inside <think> </think> tags,
then give the final answer inside <answer> </answer> tags.
<think>The person picks up the knife with the right hand and cuts the tomato on the board.</think><answer>A</answer>
<think>The left hand holds the cup while the right hand pours water from the bottle.</think><answer>B</answer>
<think>I see a hand opening the drawer and taking out a spoon.</think><answer>C</answer>
<think>The camera wearer puts the phone on the table next to the keys.</think><answer>D</answer>
Question: What did I pick up after I opened the fridge? Options: A. a bottle B. an apple C. a knife D. a cup
Question: Where did I put the scissors? Answer: in the drawer
Question: What is the person holding in the left hand? Answer: a red cup
Question: What did I cut with the knife? Answer: a tomato
Question: How many times did I open the door? Answer: two times
Question: Which object did the person touch first? A. the bowl B. the pan C. the sponge D. the towel
The person is washing the plate in the sink. The person dries the plate with a towel.
The camera wearer walks into the kitchen, opens the cabinet and takes a bowl.
I hold the hammer in my right hand and a nail in my left hand.
The man stirs the soup in the pot with a wooden spoon. The woman reads a book on the sofa.
She picks up the bag, puts the laptop inside and closes the zipper.
He turns on the tap, rinses the brush and paints the wall.
What is in my hand? What am I doing? Where is the remote? Who gave me the box?
The answer is yes. The answer is no. The capital of France is Paris.
Hands, objects, actions: cut, pour, open, close, take, put, hold, wash, stir, turn, move, grasp.
Objects: knife, cup, bottle, apple, tomato, board, drawer, spoon, phone, table, keys, fridge,
scissors, door, bowl, pan, sponge, towel, plate, sink, cabinet, hammer, nail, pot, book, sofa,
bag, laptop, zipper, tap, brush, wall, box, remote, glass, fork, bread, egg, milk, lid, jar.
The quick brown fox jumps over the lazy dog. A small model for tests learns nothing useful.
Colours: red, green, blue, yellow, black, white. Numbers: 0 1 2 3 4 5 6 7 8 9 10 100.
"""


def _train_tokenizer(vocab_size: int, corpus: str = _CORPUS):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus.splitlines() * 4, trainer=trainer)
    return tok


def _wrap_tokenizer(raw, chat_template: str):
    """A transformers fast tokenizer with Qwen's special tokens, pad = <|endoftext|>."""
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    raw.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        model_max_length=32768,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = chat_template
    return tok


def make_processor(
    tokenizer, chat_template: str, *, min_pixels: int = 28 * 28, max_pixels: int = 28 * 28 * 1280, processor_class=None
):
    """A Qwen2.5-VL processor (image processor + video processor + tokenizer) with Qwen's
    patch geometry: patch 14, merge 2, temporal patch 2. `processor_class` (default
    `Qwen2_5_VLProcessor`) may be another Qwen-family processor taking the same parts
    (`Qwen2VLProcessor`)."""
    from transformers import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    geometry = dict(patch_size=14, temporal_patch_size=2, merge_size=2)
    # Fresh `size` dicts: Qwen2VL processors write min/max pixels into the class-level dict otherwise.
    image_processor = Qwen2VLImageProcessor(size={"shortest_edge": min_pixels, "longest_edge": max_pixels}, **geometry)
    video_processor = Qwen2VLVideoProcessor(
        size={"shortest_edge": min_pixels, "longest_edge": max_pixels}, do_sample_frames=False, **geometry
    )
    cls = processor_class or Qwen2_5_VLProcessor
    return cls(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=chat_template,
    )


def _tiny_text(tokenizer, initializer_range: float) -> dict:
    """The text stack both tiny families share."""
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        hidden_act="silu",
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        use_sliding_window=False,
        initializer_range=initializer_range,
        # head_dim 16: M-RoPE sections (temporal, height, width) sum to head_dim / 2
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        bos_token_id=None,
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )


def _vision_ids(tokenizer) -> dict:
    """The vision placeholder token ids a Qwen-VL config carries."""
    tid = tokenizer.convert_tokens_to_ids
    return dict(
        image_token_id=tid("<|image_pad|>"),
        video_token_id=tid("<|video_pad|>"),
        vision_start_token_id=tid("<|vision_start|>"),
        vision_end_token_id=tid("<|vision_end|>"),
    )


def tiny_config(tokenizer, *, initializer_range: float = 0.2):
    from transformers import Qwen2_5_VLConfig

    text = _tiny_text(tokenizer, initializer_range)
    vision = dict(
        depth=2,
        hidden_size=64,
        intermediate_size=128,
        num_heads=4,
        hidden_act="silu",
        in_channels=3,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        tokens_per_second=2,
        # window 112 px = 4 x 4 merged patches; the last block attends globally as in Qwen2.5-VL
        window_size=112,
        out_hidden_size=64,
        fullatt_block_indexes=[1],
        initializer_range=initializer_range,
    )
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **_vision_ids(tokenizer))


def tiny_qwen2vl_config(tokenizer, *, initializer_range: float = 0.2):
    """The Qwen2-VL counterpart of `tiny_config`: same text stack and patch geometry; Qwen2-VL's
    vision tower (full attention in every block, `embed_dim` inside, `hidden_size` out to the
    language model) and M-RoPE without absolute time (temporal position = temporal patch index)."""
    from transformers import Qwen2VLConfig

    text = _tiny_text(tokenizer, initializer_range)
    vision = dict(
        depth=2,
        embed_dim=64,
        hidden_size=64,
        mlp_ratio=2,
        num_heads=4,
        hidden_act="quick_gelu",
        in_channels=3,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        initializer_range=initializer_range,
    )
    return Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **_vision_ids(tokenizer))


def read_marker(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    p = Path(out_dir) / MARKER
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def write_marker(out_dir: str | os.PathLike, info: dict[str, Any]) -> None:
    from ego3s.files import write_json

    write_json(Path(out_dir) / MARKER, info)


def _matches(have: dict[str, Any] | None, want: dict[str, Any]) -> bool:
    return have is not None and all(have.get(k) == v for k, v in want.items())


def cached_build(
    out_dir: str | os.PathLike, want: dict[str, Any], force: bool, write: Callable[[Path], dict[str, Any]]
) -> Path:
    """Run `write(tmp_dir)` and publish the result as `out_dir`, unless `out_dir` already holds a
    complete build matching `want` (its marker file, written last, says so).

    The build happens in a temporary sibling folder renamed into place at the end, so an
    interrupted build leaves nothing half-written at `out_dir` and concurrent builders (e.g. all
    ranks of a torchrun job) end with one complete copy. An existing `out_dir` is replaced only
    when it is empty or an earlier ego3s build: never someone's model folder.
    """
    import tempfile

    out = Path(out_dir)
    if not force and _matches(read_marker(out), want):
        return out
    if out.exists() and not (out.is_dir() and (read_marker(out) is not None or not any(out.iterdir()))):
        raise FileExistsError(f"{out}: exists and is not an ego3s model build; refusing to overwrite it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".building", dir=out.parent))
    try:
        write_marker(tmp, {**want, **write(tmp)})
        mask = os.umask(0)
        os.umask(mask)
        for p in tmp.iterdir():  # temp files are private; a shared model folder should not be
            p.chmod(0o666 & ~mask)
        tmp.chmod(0o777 & ~mask)
        if not force and _matches(read_marker(out), want):  # another process finished first
            shutil.rmtree(tmp)
            return out
        if out.exists():
            shutil.rmtree(out)
        try:
            os.rename(tmp, out)
        except OSError:
            if force or not _matches(read_marker(out), want):
                raise
            shutil.rmtree(tmp)  # lost the race to an identical build
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _build_tiny_family(out_dir, name: str, family: str, seed: int, force: bool) -> Path:
    """Shared by the tiny builders: local tokenizer, a tiny config of `family`, random weights."""
    want = {"builder": name, "version": TINY_VERSION, "seed": seed}

    def write(tmp: Path) -> dict[str, Any]:
        import torch
        import transformers
        from transformers import (
            GenerationConfig,
            Qwen2_5_VLForConditionalGeneration,
            Qwen2VLForConditionalGeneration,
            Qwen2VLProcessor,
        )

        template = qwen_chat_template()
        tokenizer = _wrap_tokenizer(_train_tokenizer(vocab_size=768), template)
        if family == "qwen2_5_vl":
            config, model_class, processor_class = tiny_config(tokenizer), Qwen2_5_VLForConditionalGeneration, None
        else:
            config, model_class, processor_class = (
                tiny_qwen2vl_config(tokenizer),
                Qwen2VLForConditionalGeneration,
                Qwen2VLProcessor,
            )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = model_class(config).to(torch.float32).eval()
        eos = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")]
        model.generation_config = GenerationConfig(
            eos_token_id=eos, pad_token_id=tokenizer.pad_token_id, do_sample=False
        )
        model.save_pretrained(tmp)
        make_processor(tokenizer, template, processor_class=processor_class).save_pretrained(tmp)
        return {"transformers": transformers.__version__, "parameters": sum(p.numel() for p in model.parameters())}

    return cached_build(out_dir, want, force, write)


def build_tiny(out_dir: str | os.PathLike, *, seed: int = 0, force: bool = False) -> Path:
    """Write a tiny random Qwen2.5-VL (model + processor) to `out_dir` and return the path.

    Deterministic by `seed`. Skips the work when `out_dir` already holds the same build
    (`force=True` rebuilds).
    """
    return _build_tiny_family(out_dir, "tiny", "qwen2_5_vl", seed, force)


def build_tiny_qwen2vl(out_dir: str | os.PathLike, *, seed: int = 0, force: bool = False) -> Path:
    """Write a tiny random Qwen2-VL (model + `Qwen2VLProcessor`) to `out_dir` and return the path.

    Same tokenizer, chat template, patch geometry and caching as `build_tiny`; deterministic by
    `seed`. For checking that the pipeline carries across VLM architectures."""
    return _build_tiny_family(out_dir, "tiny-qwen2vl", "qwen2_vl", seed, force)
