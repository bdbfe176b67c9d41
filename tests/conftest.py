"""Shared fixtures: the tiny Qwen2.5-VL, built once per session (offline), and a generate-call counter.
Shared helpers that are not fixtures (small videos, tiny configs, the repository's folders) are in
helpers.py."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from ego3s.models import build_tiny

    return str(build_tiny(tmp_path_factory.mktemp("tiny") / "model", seed=0))


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    """The tiny model and processor, loaded once per module in float32 on the CPU."""
    from ego3s.models.loading import load_model

    return load_model(tiny_model_dir, device="cpu", dtype="float32")


@pytest.fixture
def generate_calls(tiny):
    """The batch size of every `generate` call the tiny model receives during the test (to prove
    what was regenerated and what was reused)."""
    model = tiny[0]
    original, calls = model.generate, []

    def generate(**kw):
        calls.append(int(kw["input_ids"].shape[0]))
        return original(**kw)

    model.generate = generate
    yield calls
    del model.generate
