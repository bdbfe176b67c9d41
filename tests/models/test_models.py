"""ego3s.models: loading, prompts, encode, the tiny and smol builders. CPU, offline."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np
import pytest
import torch

from ego3s.data.schema import Sample
from ego3s.data.video import Clip
from ego3s.models import BUILDERS
from ego3s.models.inputs import encode
from ego3s.models.loading import load_model, model_fingerprint, patch_qwen25_rope_index, qwen25_rope_index
from ego3s.models.prompts import build_messages, option_letters, target_text
from ego3s.models.tiny import build_tiny, read_marker


def make_clip(t: int, h: int, w: int, fps: float, seed: int = 0) -> Clip:
    frames = np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)
    return Clip(frames=frames, timestamps=np.arange(t) / fps, fps=fps)


def user(kind: str | None, text: str) -> list[dict]:
    return [{"role": "user", "content": ([{"type": kind}] if kind else []) + [{"type": "text", "text": text}]}]


CLOSED = Sample(
    id="c1",
    question="What did I pick up?",
    answer="B",
    task="closeqa",
    options=["a cup", "a knife", "a towel"],
    video="v.mp4",
)
OPEN = Sample(id="o1", question="Where did I put the scissors?", answer="in the drawer", task="openqa", image="i.jpg")


# ----------------------------------------------------------------------------- tiny


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return build_tiny(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    return load_model(tiny_dir, device="cpu")


def test_tiny_builds_small_deterministic_and_cached(tiny_dir, tmp_path):
    marker = read_marker(tiny_dir)
    assert marker["builder"] == "tiny" and marker["parameters"] < 1_000_000
    before = (tiny_dir / "model.safetensors").stat().st_mtime_ns
    assert build_tiny(tiny_dir) == tiny_dir  # cached: nothing rewritten
    assert (tiny_dir / "model.safetensors").stat().st_mtime_ns == before
    again = build_tiny(tmp_path / "again")
    assert model_fingerprint(again) == model_fingerprint(tiny_dir)  # same seed, same bytes
    other = build_tiny(tmp_path / "other", seed=1)
    assert model_fingerprint(other) != model_fingerprint(tiny_dir)
    assert BUILDERS["tiny"] is build_tiny
    foreign = tmp_path / "someones_model"
    foreign.mkdir()
    (foreign / "config.json").write_text("{}")
    with pytest.raises(FileExistsError, match="refusing"):
        build_tiny(foreign)
    assert (foreign / "config.json").read_text() == "{}"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_tiny_reloads_offline_through_auto_classes(tiny_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(tiny_dir, local_files_only=True)
    processor = AutoProcessor.from_pretrained(tiny_dir, local_files_only=True)
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    tok = processor.tokenizer
    for t in [
        "<|im_start|>",
        "<|im_end|>",
        "<|endoftext|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|image_pad|>",
        "<|video_pad|>",
    ]:
        assert len(tok(t, add_special_tokens=False)["input_ids"]) == 1, t
    text = processor.apply_chat_template(user("video", "hi"), tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|video_pad|><|vision_end|>hi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_encode_video_grid_tokens_and_timing(tiny_dir):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_dir, local_files_only=True)
    # 56x56 is below the Qwen video processor's default min_pixels (128*28*28): with resizing on,
    # the frames would be scaled up; encode must keep them as they are.
    processor.video_processor.size = {"shortest_edge": 128 * 28 * 28, "longest_edge": 768 * 28 * 28}
    clips = [make_clip(8, 56, 84, fps=2.0), make_clip(4, 56, 56, fps=4.0, seed=1)]
    batch = encode(processor, [user("video", "What is in my hand?"), user("video", "Where?")], clips)
    grid = batch["video_grid_thw"]
    assert grid.tolist() == [[4, 4, 6], [2, 4, 4]]  # T = frames / 2, no resize
    merge = processor.video_processor.merge_size
    n_video = (batch["input_ids"] == processor.video_token_id).sum(1)
    assert n_video.tolist() == (grid.prod(-1) // merge**2).tolist()
    assert int(n_video.sum()) == int(grid.prod(-1).sum()) // merge**2
    assert torch.allclose(batch["second_per_grid_ts"], torch.tensor([2 / 2.0, 2 / 4.0]))
    assert batch["pixel_values_videos"].shape[0] == int(grid.prod(-1).sum())
    assert (batch["mm_token_type_ids"] == 2).sum() == n_video.sum()
    assert batch["attention_mask"][:, 0].tolist() == [1, 0]  # left padding
    # a clip that knows its source: 4 frames picked from a 60-frame window of a 30 fps video
    src = make_clip(4, 56, 56, fps=2.0)
    src.video_fps, src.indices, src.window_frames = 30.0, np.array([0, 15, 30, 45]), 60
    assert encode(processor, [user("video", "q")], [src])["second_per_grid_ts"].tolist() == [1.0]
    src.window_frames = 30  # metadata saying 4 fps while the clip says 2 fps
    with pytest.raises(ValueError, match="fps"):
        encode(processor, [user("video", "q")], [src])


def test_encode_rejects_bad_input(tiny):
    _, processor = tiny
    with pytest.raises(ValueError, match="multiples of 28"):
        encode(processor, [user("video", "q")], [make_clip(2, 50, 56, fps=1.0)])
    with pytest.raises(ValueError, match="1 visual entries"):
        encode(processor, [user("video", "q")], [None])
    with pytest.raises(ValueError, match="needs a Clip"):
        encode(processor, [user("video", "q")], [np.zeros((56, 56, 3), np.uint8)])


def test_tiny_forward_and_generate_on_image_video_and_text(tiny):
    model, processor = tiny
    image = np.random.default_rng(3).integers(0, 256, (56, 84, 3), dtype=np.uint8)
    cases = [
        (user("image", "What is it?"), image),
        (user("video", "What is it?"), make_clip(4, 56, 56, 2.0)),
        (user(None, "What is it?"), None),
    ]
    for messages, visual in cases:
        batch = encode(processor, [messages], [visual])
        with torch.no_grad():
            logits = model(**batch).logits
        assert logits.shape[:2] == batch["input_ids"].shape and torch.isfinite(logits).all()
        out = model.generate(**batch, max_new_tokens=4, do_sample=False)
        assert out.shape[1] > batch["input_ids"].shape[1]
    assert "pixel_values" in encode(processor, [cases[0][0]], [image])


def test_batched_left_padding_matches_one_at_a_time(tiny):
    model, processor = tiny
    messages = [
        user("video", "What did I pick up after I opened the fridge and took the milk?"),
        user("video", "What?"),
        user(None, "Where is the knife?"),
    ]
    clips = [make_clip(4, 56, 84, 2.0, seed=1), make_clip(6, 56, 56, 1.0, seed=2), None]
    batch = encode(processor, messages, clips)
    n = batch["input_ids"].shape[1]
    together = model.generate(**batch, max_new_tokens=8, do_sample=False)[:, n:]
    for i in range(len(messages)):
        one = encode(processor, [messages[i]], [clips[i]])
        alone = model.generate(**one, max_new_tokens=8, do_sample=False)[0, one["input_ids"].shape[1] :]
        assert together[i].tolist() == alone.tolist(), i
    assert len({tuple(r) for r in together.tolist()}) > 1  # the tiny model is not degenerate


def test_encode_answers_for_teacher_forcing(tiny):
    model, processor = tiny
    messages = [user("video", "Which one?"), user(None, "A longer question about the hands?")]
    clips = [make_clip(4, 56, 56, 2.0), None]
    answers = ["<answer>B</answer><|im_end|>", "in the drawer"]
    prompt = encode(processor, messages, clips)
    full = encode(processor, messages, clips, answers=answers)
    tok = processor.tokenizer
    for i, answer in enumerate(answers):
        ids = tok(answer, add_special_tokens=False)["input_ids"]
        labels = full["labels"][i]
        assert labels[labels != -100].tolist() == ids  # exactly the answer tokens, at the end
        assert labels[-len(ids) :].tolist() == ids
        n_prompt = int(prompt["attention_mask"][i].sum())
        row = full["input_ids"][i][full["attention_mask"][i].bool()]
        assert row[:n_prompt].tolist() == prompt["input_ids"][i][-n_prompt:].tolist()  # same prompt tokens
    assert full["mm_token_type_ids"].shape == full["input_ids"].shape
    with torch.no_grad():
        out = model(**full)
    assert torch.isfinite(out.loss)


def test_rope_index_is_the_reference_one(tiny):
    """transformers 5.x starts text after a video at max(h, w) / merge past the video's start
    (text positions overlap the temporal ones for long clips) and, up to 5.2x, truncates
    second_per_grid_ts to int; the installed index follows the reference implementation."""
    model, processor = tiny
    inner = model.model
    assert inner.get_rope_index.__func__ is qwen25_rope_index  # installed by load_model
    native = type(inner).get_rope_index
    tps = model.config.vision_config.tokens_per_second

    def args(b):
        return (
            b["input_ids"],
            b["mm_token_type_ids"],
            b.get("image_grid_thw"),
            b.get("video_grid_thw"),
            b.get("second_per_grid_ts"),
            b["attention_mask"],
        )

    # where transformers follows the reference (spatial extent >= temporal, integer seconds per grid)
    b = encode(
        processor,
        [user("video", "What?"), user("image", "Where is it?"), user(None, "hi")],
        [make_clip(4, 112, 84, 2.0), np.zeros((56, 84, 3), np.uint8), None],
    )
    ours, theirs = qwen25_rope_index(inner, *args(b)), native(inner, *args(b))
    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])
    # fractional seconds per grid (fps 4 -> 0.5 s): temporal index = long(t * 0.5 * tps)
    b = encode(processor, [user("video", "What?")], [make_clip(8, 56, 56, 4.0)])
    pos, _ = inner.get_rope_index(*args(b))
    video = (b["input_ids"][0] == processor.video_token_id).nonzero().flatten()
    start = int(pos[0, 0, video[0]])
    assert pos[0, 0, video].unique().tolist() == [start + int(t * 0.5 * tps) for t in range(4)]
    # a long clip: text resumes one past the largest video position
    b = encode(processor, [user("video", "What?")], [make_clip(16, 56, 56, 1.0)])
    pos, delta = inner.get_rope_index(*args(b))
    video = (b["input_ids"][0] == processor.video_token_id).nonzero().flatten()
    after = int(video.max()) + 1
    assert pos[:, 0, after].tolist() == [int(pos[:, 0, video].max()) + 1] * 3
    assert int(delta) == int(pos.max()) + 1 - b["input_ids"].shape[1]
    # generate and a teacher-forced forward pass see the same positions
    out = model.generate(**b, max_new_tokens=4, do_sample=False, output_logits=True, return_dict_in_generate=True)
    n = b["input_ids"].shape[1]
    seq = out.sequences
    forced = {
        **b,
        "input_ids": seq,
        "attention_mask": torch.ones_like(seq),
        "mm_token_type_ids": torch.nn.functional.pad(b["mm_token_type_ids"], (0, seq.shape[1] - n)),
    }
    with torch.no_grad():
        logits = model(**forced).logits[0, n - 1 : -1]
    assert torch.allclose(torch.stack(out.logits, 1)[0], logits, atol=1e-4)
    assert patch_qwen25_rope_index(torch.nn.Linear(2, 2)) is False


def test_fingerprint(tiny_dir, tmp_path):
    import shutil

    fp = model_fingerprint(tiny_dir)
    assert fp == model_fingerprint(str(tiny_dir)) and len(fp) == 20
    copy = tmp_path / "copy"
    shutil.copytree(tiny_dir, copy)
    assert model_fingerprint(copy) == fp  # content, not mtimes
    (copy / "training_args.bin").write_bytes(b"output_dir=/somewhere/else")  # saved by the Trainer
    assert model_fingerprint(copy) == fp  # the same weights saved from another folder
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-5] ^= 0xFF
    (copy / "model.safetensors").write_bytes(bytes(data))
    assert model_fingerprint(copy) != fp
    model, _ = load_model(tiny_dir, device="cpu")
    live = model_fingerprint(model)
    assert live == model_fingerprint(model) and live != fp
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert model_fingerprint(model) != live


def test_load_model_arguments(tmp_path, tiny_dir):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(tmp_path / "nothing")
    with pytest.raises(ValueError, match="dtype"):
        load_model(tiny_dir, dtype="int8")
    model, _ = load_model(tiny_dir, dtype="bfloat16", device="cpu", attn_implementation="eager")
    assert next(model.parameters()).dtype == torch.bfloat16 and not model.training


# ----------------------------------------------------------------------------- prompts


def test_prompts_formats_and_views():
    m = build_messages(CLOSED)  # reasoning, visual from the sample (video)
    assert m[0]["role"] == "user" and m[0]["content"][0] == {"type": "video"}
    text = m[0]["content"][1]["text"]
    assert "What did I pick up?\nOptions:\nA. a cup\nB. a knife\nC. a towel" in text
    assert "<think>" in text and "<answer>" in text and "letter" in text
    direct = build_messages(CLOSED, fmt="direct", visual=None)[0]["content"]
    assert direct == [{"type": "text", "text": direct[0]["text"]}] and "<think>" not in direct[0]["text"]
    assert build_messages(OPEN)[0]["content"][0] == {"type": "image"}
    assert "Options" not in build_messages(OPEN)[0]["content"][-1]["text"]
    assert build_messages(OPEN, visual="video")[0]["content"][0] == {"type": "video"}
    with_system = build_messages(OPEN, system="Be brief.")
    assert with_system[0] == {"role": "system", "content": [{"type": "text", "text": "Be brief."}]}
    assert option_letters(CLOSED) == ["A", "B", "C"] and option_letters(OPEN) == []
    assert target_text(CLOSED) == "B" and target_text(OPEN, fmt="reasoning") == "<answer>in the drawer</answer>"
    with pytest.raises(ValueError, match="c1"):
        build_messages(CLOSED, fmt="chain")


def test_closed_answer_targets_are_read_as_the_gold_option():
    """A base taught to answer a closed question with the option's text (or letter and text) is
    scored by the same parser as one that answers with the letter."""
    from ego3s.answers import extract_letter

    assert target_text(CLOSED, closed_answer="text") == "a knife"
    assert target_text(CLOSED, fmt="reasoning", closed_answer="letter_text") == "<answer>B. a knife</answer>"
    assert target_text(OPEN, closed_answer="text") == "in the drawer"  # open QA: the reference, always
    for style in ("letter", "text", "letter_text"):
        for fmt in ("direct", "reasoning"):
            assert extract_letter(target_text(CLOSED, fmt=fmt, closed_answer=style), CLOSED.options) == "B"
    with pytest.raises(ValueError, match="closed_answer"):
        target_text(CLOSED, closed_answer="word")


# ----------------------------------------------------------------------------- smol (SmolLM2-135M)

SMOL_TEXTS = ["The capital of France is", "Hello! In 2024, I bought 3 apples and a knife; don't ask why."]


@pytest.fixture(scope="session")
def smol_dir(tmp_path_factory):
    pytest.importorskip("gguf")
    from ego3s.models.smol import build_smol, find_gguf

    try:
        find_gguf()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    return build_smol(tmp_path_factory.mktemp("smol") / "model")


@pytest.fixture(scope="session")
def smol(smol_dir):
    return load_model(smol_dir, device="cpu", dtype="float32")


@pytest.mark.slow
def test_smol_text_logits_equal_the_gguf_llama(smol):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ego3s.models.smol import find_gguf

    model, processor = smol
    gguf = find_gguf()
    llama = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    reference_tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    n_vocab = llama.config.vocab_size
    for text in SMOL_TEXTS + ["<|im_start|>user\nWhat is 12 + 7?<|im_end|>\n<|im_start|>assistant\n"]:
        ids = processor.tokenizer(text, return_tensors="pt")
        assert ids["input_ids"][0].tolist() == reference_tok(text)["input_ids"]
        with torch.no_grad():
            ours = model(**ids).logits[..., :n_vocab]
            theirs = llama(**ids).logits
        assert (ours - theirs).abs().max().item() == 0.0, text


@pytest.mark.slow
def test_smol_knows_paris_and_reloads_offline(smol_dir, smol):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model, processor = smol
    ids = processor.tokenizer(["The capital of France is"], return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=6, do_sample=False)
    assert "Paris" in processor.tokenizer.decode(out[0, ids["input_ids"].shape[1] :])
    assert (
        type(AutoModelForImageTextToText.from_pretrained(smol_dir, local_files_only=True)).__name__
        == "Qwen2_5_VLForConditionalGeneration"
    )
    assert type(AutoProcessor.from_pretrained(smol_dir, local_files_only=True)).__name__ == "Qwen2_5_VLProcessor"
    marker = read_marker(smol_dir)
    assert marker["builder"] == "smol" and 130e6 < marker["parameters"] < 200e6


@pytest.mark.slow
def test_smol_video_forward_and_chat_template(smol_dir, smol):
    import time

    from ego3s.models.smol import build_smol

    model, processor = smol
    messages = build_messages(CLOSED, fmt="direct")
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>What did I pick up?" in text
    batch = encode(processor, [messages], [make_clip(4, 56, 84, 2.0)])
    assert int((batch["input_ids"] == model.config.video_token_id).sum()) == 2 * 2 * 3
    with torch.no_grad():
        logits = model(**batch).logits
    assert torch.isfinite(logits).all()
    start = time.time()
    assert build_smol(smol_dir) == smol_dir  # cached build: returns at once
    assert time.time() - start < 5


def test_mini_is_a_small_qwen25vl_with_egosynth_words_in_its_tokenizer(tmp_path):
    """The from-scratch CPU backbone: a few million parameters, the real Qwen2.5-VL classes, object names
    of EgoSynth as whole tokens (what lm_align pulls the tower towards), and a video forward."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    from ego3s.data.egosynth import OBJECTS
    from ego3s.models import BUILDERS
    from ego3s.models.loading import load_model

    path = BUILDERS["mini"](tmp_path / "mini")
    model, processor = load_model(str(path), dtype="float32", device="cpu")
    assert isinstance(model, Qwen2_5_VLForConditionalGeneration) and isinstance(processor, Qwen2_5_VLProcessor)
    n = sum(p.numel() for p in model.parameters())
    assert 5e5 < n < 1e7
    tok = processor.tokenizer
    lengths = [len(tok(" " + name, add_special_tokens=False)["input_ids"]) for name in OBJECTS]
    assert max(lengths) <= 3 and sum(x == 1 for x in lengths) > len(lengths) / 2
    assert len(tok("What did I pick up in the kitchen?")["input_ids"]) <= 10  # one token a word
    video = torch.rand(8, 3, 84, 84)
    msgs = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What did I pick up?"}]}]
    text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    enc = processor(
        text=[text], videos=[video], return_tensors="pt", do_rescale=False, videos_kwargs={"do_sample_frames": False}
    )
    assert enc["video_grid_thw"].tolist() == [[4, 6, 6]]  # 84 px = 6 x 6 patches of 14, 8 frames = 4 pairs
    with torch.no_grad():
        out = model(**enc)
    assert torch.isfinite(out.logits).all()
