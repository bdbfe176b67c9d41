"""Can the smol backbone's vision tower, trained from scratch, see which object the hand takes?

A diagnostic for the reproduction's base model (docs/notes/gpu_studies_2026-11.md): the warmed-up smol model scores
the same with and without the interaction region (CSM's `context` view), so it never looks at the
hand. This probe removes the language model from the question: the smol vision tower (random
init, as in `ego3s build-model smol`) plus an attention-pooling head is trained to name the
grasped object of EgoSynth clips, and tested on held-out typical and atypical clips under the
`full` and `context` views. If it fails at a resolution, no warm-up at that resolution can make
the full model use the interaction; if it succeeds and the accuracy falls under `context`, the
tower reads the interaction region and the bottleneck is the coupling to the language model.

    python experiments/egosynth/vision_probe.py --side 112 --train 1500 --epochs 6 --out /tmp/probe112.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


def _one(args):
    """One clip: per view (pixels in bf16, grid), the object's name, the token box targets."""
    s, side, nframes, views, backend = args
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    from ego3s.data.video import ClipSpec, load_sample_clip
    from ego3s.data.views import make_view
    from ego3s.train.vision_pretrain import encode_clips, token_box_targets

    torch.set_num_threads(1)
    proc = Qwen2VLVideoProcessor(
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
        size={"shortest_edge": side * side, "longest_edge": side * side},
    )
    fs = ClipSpec(nframes=nframes, max_pixels=side * side, min_pixels=side * side, backend=backend)
    clip = load_sample_clip(s, **fs.sampling_kwargs())
    per_view = {}
    for v in views:
        pix, grid = encode_clips(proc, [make_view(clip, v, s.interaction)])
        # kept on the CPU in bf16 (10,000 clips of 8 x 224 px: about 24 GB), moved per batch
        per_view[v] = (pix.to(torch.bfloat16), grid)
    boxes = token_box_targets(s.interaction, clip.timestamps, per_view["full"][1][0].tolist(), 2)
    return per_view, s.interaction.objects[0].name, boxes


def clips(data_dir: Path, split: str, side: int, nframes: int, views: tuple[str, ...], backend: str, workers: int = 1):
    """Per view: the processor's patch tensors and grids for every clip of a split; the
    grasped-object labels; the token box targets of the full view. Decoded in `workers` processes."""
    from concurrent.futures import ProcessPoolExecutor

    from ego3s.data.io import read_jsonl

    jobs = [(s, side, nframes, views, backend) for s in read_jsonl(data_dir / f"{split}.jsonl")]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            done = list(pool.map(_one, jobs, chunksize=16))
    else:
        done = [_one(j) for j in jobs]
    out = {v: [d[0][v] for d in done] for v in views}
    return out, [d[1] for d in done], [d[2] for d in done]


class Probe(nn.Module):
    """The smol vision tower (random init, as `ego3s build-model smol` makes it) and the heads
    `ego3s.train.vision_pretrain` trains it with."""

    def __init__(self, n_classes: int):
        super().__init__()
        from transformers import Qwen2_5_VLConfig
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

        from ego3s.models.smol import VISION
        from ego3s.models.vision_attention import patch_vision_attention
        from ego3s.train.vision_pretrain import VisionHeads

        cfg = Qwen2_5_VLConfig(vision_config={**VISION, "out_hidden_size": 576}).vision_config
        self.visual = Qwen2_5_VisionTransformerPretrainedModel._from_config(cfg)
        patch_vision_attention(self.visual)  # windows batched: what ego3s.models.load_model does
        self.heads = VisionHeads(576, n_classes)

    def forward(self, batch):
        """(box logits of every token, class logits per clip) for a list of (pixels, grid)."""
        from ego3s.train.vision_pretrain import tower_tokens

        dev = self.heads.query.device
        pix = torch.cat([p for p, _ in batch]).to(dev, torch.float32)
        grid = torch.cat([g for _, g in batch]).to(dev)
        tok, counts = tower_tokens(self.visual, pix, grid)
        return self.heads(tok.float(), counts)


def accuracy(model, data, y, idx) -> float:
    if not idx:
        return float("nan")
    model.eval()
    with torch.no_grad(), _autocast():
        pred = torch.cat(
            [model([data[i] for i in idx[j : j + 32]])[1].argmax(-1).cpu() for j in range(0, len(idx), 32)]
        )
    model.train()
    return float((pred == torch.tensor([y[i] for i in idx])).float().mean())


def _autocast():
    """bf16 compute on a GPU (fp32 weights), nothing on the CPU."""
    import contextlib

    return torch.autocast("cuda", dtype=torch.bfloat16) if torch.cuda.is_available() else contextlib.nullcontext()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--side", type=int, default=112)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--train", type=int, default=1000)
    ap.add_argument("--test", type=int, default=150)
    ap.add_argument("--p-typical", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument(
        "--box-weight",
        type=float,
        default=0.0,
        help="add the dense interaction-box loss with this weight (0: the object label only)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=None, help="EgoSynth folder (generated when missing)")
    ap.add_argument("--backend", default=None, help="pyav, decord or opencv (default: pyav if installed)")
    ap.add_argument("--workers", type=int, default=None, help="processes for EgoSynth generation and decoding")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    from ego3s.data.egosynth import OBJECTS, EgoSynthConfig, generate

    torch.manual_seed(a.seed)
    data_dir = Path(a.data or f"/tmp/probe_data_{a.train}_{a.test}_{a.p_typical}")
    if not (data_dir / "train.jsonl").exists():
        generate(
            data_dir,
            EgoSynthConfig(
                seed=a.seed, train=a.train, test=a.test, probe=0, p_typical=a.p_typical, frames=8, size=224, fps=4.0
            ),
            workers=a.workers,
            audit=False,
            log=None,
        )
    import importlib.util

    backend = a.backend or ("pyav" if importlib.util.find_spec("av") else "opencv")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    t0 = time.time()
    names = sorted(OBJECTS)
    w = a.workers or 1
    tr, ytr, btr = clips(data_dir, "train", a.side, a.frames, ("full",), backend, w)
    te_id, y_id, _ = clips(data_dir, "test_id", a.side, a.frames, ("full", "context"), backend, w)
    te_at, y_at, _ = clips(data_dir, "test_atypical", a.side, a.frames, ("full", "context"), backend, w)
    ytr, y_id, y_at = ([names.index(n) for n in ys] for ys in (ytr, y_id, y_at))
    decode_s = time.time() - t0
    model = Probe(len(names)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
    n = len(ytr)
    steps = a.epochs * ((n + a.batch - 1) // a.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=steps, pct_start=0.1)
    rng = np.random.default_rng(a.seed)
    history, t1 = [], time.time()
    for epoch in range(a.epochs):
        order = rng.permutation(n)
        losses = []
        for j in range(0, n, a.batch):
            idx = order[j : j + a.batch]
            with _autocast():
                box_logit, logits = model([tr["full"][i] for i in idx])
            loss = nn.functional.cross_entropy(logits.float(), torch.tensor([ytr[i] for i in idx], device=device))
            if a.box_weight:  # the dense objective of ego3s.train.vision_pretrain
                target = torch.cat([btr[i] for i in idx]).to(device)
                loss = loss + a.box_weight * nn.functional.binary_cross_entropy_with_logits(box_logit.float(), target)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
        row = {
            "epoch": epoch + 1,
            "loss": float(np.mean(losses)),
            "train_acc": accuracy(model, tr["full"], ytr, list(range(min(n, 300)))),
            "id_full": accuracy(model, te_id["full"], y_id, list(range(len(y_id)))),
            "atypical_full": accuracy(model, te_at["full"], y_at, list(range(len(y_at)))),
        }
        history.append(row)
        print(json.dumps(row), flush=True)
    final = {
        "id_context": accuracy(model, te_id["context"], y_id, list(range(len(y_id)))),
        "atypical_context": accuracy(model, te_at["context"], y_at, list(range(len(y_at)))),
    }
    res = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "side": a.side,
        "frames": a.frames,
        "train": a.train,
        "test": a.test,
        "p_typical": a.p_typical,
        "epochs": a.epochs,
        "lr": a.lr,
        "box_weight": a.box_weight,
        "classes": len(names),
        "chance": 1 / len(names),
        "decode_s": round(decode_s, 1),
        "train_s": round(time.time() - t1, 1),
        "history": history,
        **history[-1],
        **final,
    }
    Path(a.out).write_text(json.dumps(res, indent=2))
    print(json.dumps({k: v for k, v in res.items() if k != "history"}), flush=True)


if __name__ == "__main__":
    main()
