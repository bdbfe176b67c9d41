"""Pretrain a from-scratch vision tower on the interaction before the question-answering warm-up.

The smol backbone's tower starts random. Trained only through the language model on QA pairs it
learns the scene and never the object in the hand (docs/notes/gpu_studies_2026-11.md: CSM's `context` view scores
exactly like `full`, and the vision probe names the grasped object of atypical clips at 0-1%).
Real LVLMs bring a tower pretrained on grounding data; this is the synthetic analogue, from the
annotations every interaction sample carries:

- dense: for every merged visual token, whether its cell overlaps an interaction box (object or
  hand) in either frame of its temporal pair (binary cross-entropy; teaches *where*);
- per clip: the grasped object's name, through attention pooling (cross-entropy; teaches *what*);
- optionally (`lm_align`), per merged token on the object's box: the object's name again, as the
  nearest of the names' input embeddings in the language model (cosine, cross-entropy). The QA
  warm-up then finds the object where a language model reads best, a token that looks like its
  name, instead of having to learn a readout of the tower's features first: the 2026-11-26 complete-table study's base had a
  tower that named the object of 83% of atypical clips and a language model that still answered
  from the scene (docs/notes/gpu_studies_2026-11.md). The language model is not trained here;
- optionally (`scene_align`), per merged token on the box of an object lying in the scene
  (EgoSynth's `meta.gt.scene_objects`; not on the interaction's boxes): that object's name, as
  `lm_align` does for the grasped one, so that the scene's objects too reach the language model
  as tokens that look like their names;
- optionally (`context_share`), a share of the typical clips is shown with the interaction masked
  (CSM's context view) and trained on the object loss alone: the object must then be found among
  the scene's copies of it. The 2026-11-26 scene-fallback study's base misread small copies, and CSM's fine filter kept
  those typical clips as if they needed the hand (docs/notes/gpu_studies_2026-11.md).

`pretrain_vision` trains `model.model.visual` in place; `VisionHeads` is also what the vision
probe (experiments/egosynth/vision_probe.py) trains.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ego3s.data.video import ClipSpec
from ego3s.train.plumbing import decode_workers
from ego3s.train.vision_pretrain_config import VisionPretrainConfig


def token_box_targets(
    interaction,
    timestamps: Sequence[float],
    grid_thw: Sequence[int],
    merge: int,
    temporal_patch: int = 2,
    objects_only: bool = False,
) -> torch.Tensor:
    """(tokens,) 0/1: does the cell of each merged token (raster order t, h, w, as the tower
    outputs them) overlap an interaction box (only the objects' with `objects_only`, not the
    hands') in any frame of its temporal patch?"""
    from ego3s.data.views import boxes_at

    t_n, h_n, w_n = (int(x) for x in grid_thw)
    hh, ww = h_n // merge, w_n // merge
    out = np.zeros((t_n, hh, ww), dtype=np.float32)
    for ti in range(t_n):
        for f in range(ti * temporal_patch, min((ti + 1) * temporal_patch, len(timestamps))):
            for label, (x1, y1, x2, y2) in boxes_at(interaction.boxes, float(timestamps[f])):
                if objects_only and label in HAND_LABELS:
                    continue
                r0, r1 = math.floor(y1 * hh), math.ceil(y2 * hh)
                c0, c1 = math.floor(x1 * ww), math.ceil(x2 * ww)
                out[ti, max(r0, 0) : min(r1, hh), max(c0, 0) : min(c1, ww)] = 1.0
    return torch.from_numpy(out.reshape(-1))


def scene_token_labels(
    scene_objects,
    timestamps: Sequence[float],
    grid_thw: Sequence[int],
    merge: int,
    temporal_patch: int,
    names: Sequence[str],
    exclude: torch.Tensor,
) -> torch.Tensor:
    """(tokens,) int64: the index in `names` of the scene object whose box each merged token's cell
    overlaps, or -1 where none does, where two different objects do, where the name is not in
    `names`, or where `exclude` (the interaction's cells) is set. `scene_objects`: EgoSynth's
    `meta.gt.scene_objects` ([{"name", "boxes": [[t, x1, y1, x2, y2], ...]}])."""
    from ego3s.data.schema import Interaction, TimedBox

    out = torch.full(exclude.shape, -1, dtype=torch.long)
    clash = torch.zeros(exclude.shape, dtype=torch.bool)
    for k, obj in enumerate(scene_objects or []):
        if obj["name"] not in names:
            continue
        boxes = [TimedBox(float(b[0]), f"scene{k}", [float(v) for v in b[1:5]]) for b in obj["boxes"]]
        cells = token_box_targets(
            Interaction(objects=[], boxes=boxes), timestamps, grid_thw, merge, temporal_patch
        ).bool()
        idx = names.index(obj["name"])
        clash |= cells & (out >= 0) & (out != idx)
        out[cells] = idx
    out[clash | exclude.bool()] = -1
    return out


HAND_LABELS = ("left_hand", "right_hand")
ALIGN_SCALE = 20.0  # cosine logits of the name alignment: a 0.25 cosine margin is a 5-nat margin


def name_prototypes(model, tokenizer, names: Sequence[str]) -> torch.Tensor:
    """(classes, hidden) unit vectors: the mean input embedding of each name's tokens as it
    appears inside a sentence (" cutting board"), from the language model the tower feeds."""
    emb = model.get_input_embeddings().weight.detach()
    rows = []
    for name in names:
        ids = tokenizer(" " + name, add_special_tokens=False)["input_ids"]
        rows.append(emb[torch.tensor(ids, device=emb.device)].float().mean(0))
    return nn.functional.normalize(torch.stack(rows), dim=-1)


def align_logits(tokens: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    return ALIGN_SCALE * nn.functional.normalize(tokens.float(), dim=-1) @ prototypes.T


class VisionHeads(nn.Module):
    """A per-token box logit and an attention-pooled clip classifier over a tower's merged tokens."""

    def __init__(self, dim: int, n_classes: int):
        super().__init__()
        self.box = nn.Linear(dim, 1)
        self.query = nn.Parameter(torch.randn(dim) * 0.02)
        self.cls = nn.Linear(dim, n_classes)
        self.scale = dim**0.5

    def forward(self, tokens: torch.Tensor, counts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(box logits over all tokens, class logits per clip)."""
        if len(set(counts)) == 1:  # clips of one size (the usual batch): one batched pooling
            t = tokens.view(len(counts), counts[0], -1)
            w = torch.softmax(t @ self.query / self.scale, 1)
            pooled = (w[..., None] * t).sum(1)
        else:
            pooled = []
            for t in tokens.split(counts):
                w = torch.softmax(t @ self.query / self.scale, 0)
                pooled.append((w[:, None] * t).sum(0))
            pooled = torch.stack(pooled)
        return self.box(tokens).squeeze(-1), self.cls(pooled)


def tower_tokens(tower, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """The merged tokens of several clips in one tower call, and each clip's token count."""
    out = tower(pixel_values, grid_thw=grid_thw)
    tok = out.pooler_output if hasattr(out, "pooler_output") else out
    if isinstance(tok, (list, tuple)):
        tok = torch.cat(list(tok), 0)
    merge = tower.spatial_merge_size**2
    return tok, (grid_thw.prod(-1) // merge).tolist()


def encode_clips(video_processor, clips) -> tuple[torch.Tensor, torch.Tensor]:
    from ego3s.models.inputs import no_cap_kwargs

    enc = video_processor(
        videos=[c.frames for c in clips],
        return_tensors="pt",
        do_resize=False,
        do_sample_frames=False,
        **no_cap_kwargs(video_processor),
    )
    return enc["pixel_values_videos"], enc["video_grid_thw"]


MAX_SKIPS_IN_A_ROW = 20


class _Encoded(torch.utils.data.Dataset):
    """One sample -> its clip in the tower's input form (decoded in a DataLoader worker), or None
    when the video cannot be read."""

    def __init__(
        self,
        samples,
        video_processor,
        sampling: ClipSpec,
        names: list[str],
        views: tuple[str, ...],
        merge: int,
        temporal: int,
        context_share: float = 0.0,
    ):
        self.samples, self.proc, self.kw = samples, video_processor, sampling.sampling_kwargs()
        self.names, self.views, self.merge, self.temporal = names, views, merge, temporal
        self.context_share = context_share

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        from ego3s.data.video import VideoError, load_sample_clip
        from ego3s.data.views import make_view
        from ego3s.train.collator import sample_view_name

        s = self.samples[i]
        try:
            clip = load_sample_clip(s, **self.kw)
        except (VideoError, OSError, ValueError):
            return None
        shown = sample_view_name(s, self.context_share)  # what the "input" view is: full, or context
        item = {
            "label": self.names.index(s.interaction.objects[0].name),
            "typical": bool((s.meta or {}).get("typical", True)),
            "masked": shown == "context",
        }
        for v in self.views:
            pix, grid = encode_clips(self.proc, [make_view(clip, shown if v == "input" else v, s.interaction)])
            item[v] = (pix.to(torch.bfloat16), grid)  # bf16 on the CPU: 0.6 MB per 8-frame 112 px clip
        grid = item[self.views[0]][1][0].tolist()
        item["boxes"] = token_box_targets(s.interaction, clip.timestamps, grid, self.merge, self.temporal)
        item["object_cells"] = token_box_targets(
            s.interaction, clip.timestamps, grid, self.merge, self.temporal, objects_only=True
        ).bool()
        item["scene_cells"] = scene_token_labels(
            ((s.meta or {}).get("gt") or {}).get("scene_objects"),
            clip.timestamps,
            grid,
            self.merge,
            self.temporal,
            self.names,
            item["boxes"],
        )
        return item


def _first(batch):
    return batch[0]


def _one_thread(_):
    torch.set_num_threads(1)  # one decoding process per core, not a thread pool in each


def _own(item):
    """Copies of a worker's tensors: keeping thousands of shared-memory tensors alive exhausts file
    descriptors (torch shares them by descriptor)."""
    if item is None:
        return None
    return {
        k: (tuple(t.clone() for t in v) if isinstance(v, tuple) else v.clone() if torch.is_tensor(v) else v)
        for k, v in item.items()
    }


def _encode_all(
    samples,
    processor,
    sampling,
    names,
    views,
    merge,
    temporal,
    workers: int,
    desc: str,
    progress: bool,
    context_share: float = 0.0,
):
    from tqdm.auto import tqdm

    ds = _Encoded(samples, processor.video_processor, sampling, names, views, merge, temporal, context_share)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=1, num_workers=workers, collate_fn=_first, worker_init_fn=_one_thread if workers else None
    )
    items = [_own(x) for x in tqdm(loader, total=len(ds), desc=desc, disable=not progress)]
    return [x for x in items if x is not None], sum(x is None for x in items)


def _to_device_if_it_fits(items, dev) -> bool:
    """Move the encoded pool to the GPU when it takes under a quarter of the free memory: the steps
    then never copy pixels from the host (64 clips of 8 x 112 px are 38 MB a step)."""
    if dev.type != "cuda":
        return False
    size = sum(
        t.numel() * t.element_size()
        for x in items
        for v in x.values()
        if isinstance(v, tuple)
        for t in v
        if torch.is_tensor(t)
    )
    if size > torch.cuda.mem_get_info(dev)[0] / 4:
        return False
    for x in items:
        for k, v in x.items():
            if isinstance(v, tuple):
                x[k] = tuple(t.to(dev) for t in v)
            elif torch.is_tensor(v):
                x[k] = v.to(dev)
    return True


def _batch(items, view: str, dev, dtype):
    pix = torch.cat([x[view][0] for x in items]).to(dev, dtype)
    grid = torch.cat([x[view][1] for x in items]).to(dev)
    return pix, grid


def _shares(hits: dict) -> dict:
    return {
        "typical": float(np.mean(hits[True])) if hits[True] else None,
        "atypical": float(np.mean(hits[False])) if hits[False] else None,
        "all": float(np.mean(hits[True] + hits[False])) if hits[True] + hits[False] else None,
    }


@torch.no_grad()
def _held_out_accuracy(tower, heads, items, batch_size: int, dev, amp, prototypes=None) -> dict:
    """Object accuracy on held-out clips under `full` and `context` (interaction masked), per
    typical/atypical: the tower reads the hand-object interaction when `context` costs accuracy,
    above all on atypical clips, whose object the scene never predicts. With `prototypes`, also
    `as_name`: how often the mean token on the object's box lies nearest the object's name in the
    language model's embeddings (what the QA warm-up can read without learning a readout)."""
    was = tower.training
    tower.eval()
    dtype = next(tower.parameters()).dtype
    out = {}
    for view in ("full", "context"):
        hits, named, scene_named = {True: [], False: []}, {True: [], False: []}, {True: [], False: []}
        for i in range(0, len(items), batch_size):
            chunk = items[i : i + batch_size]
            with amp:
                tok, counts = tower_tokens(tower, *_batch(chunk, view, dev, dtype))
                _, logits = heads(tok.float(), counts)
            for x, pred in zip(chunk, logits.argmax(-1).tolist()):
                hits[x["typical"]].append(pred == x["label"])
            if prototypes is not None:
                for x, t in zip(chunk, tok.split(counts)):
                    cells = x["object_cells"].to(t.device)
                    if cells.any():
                        mean = nn.functional.normalize(t[cells].float(), dim=-1).mean(0, keepdim=True)
                        named[x["typical"]].append(int(align_logits(mean, prototypes).argmax()) == x["label"])
                    scene = x["scene_cells"].to(t.device)
                    if (scene >= 0).any():
                        pred = align_logits(t[scene >= 0].float(), prototypes).argmax(-1)
                        scene_named[x["typical"]].append(float((pred == scene[scene >= 0]).float().mean()))
        out[view] = _shares(hits)
        if prototypes is not None:
            out[view]["as_name"] = _shares(named)
            out[view]["scene_as_name"] = _shares(scene_named)
    tower.train(was)
    return out


def pretrain_vision(
    model,
    processor,
    samples: Sequence,
    cfg: VisionPretrainConfig,
    sampling: ClipSpec,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Train the vision tower of `model` in place on clips sampled as `sampling` says (the
    warm-up's); `seed` fixes the held-out split, the clip order and the heads. Returns counts, the
    last training losses/accuracy and the held-out accuracy under `full` and `context` during
    training (`curve`) and at the end (`held_out`).

    Every usable clip is decoded and encoded once, in `cfg.workers` processes, and kept in memory
    in bf16 (about 0.6 MB per 8-frame 112 px clip): the steps then cycle over the pool without
    decoding again. Samples without a video, an object or boxes are skipped (counted); an unreadable
    clip is skipped and counted, never fatal."""
    from tqdm.auto import tqdm

    usable = [s for s in samples if s.video and s.interaction and s.interaction.objects and s.interaction.boxes]
    names = sorted({s.interaction.objects[0].name for s in usable})
    stats = {"samples": len(samples), "usable": len(usable), "classes": len(names), "unreadable": 0}
    if cfg.steps <= 0 or not usable:
        return stats
    tower = model.model.visual if hasattr(model, "model") and hasattr(model.model, "visual") else model.visual
    dev = next(tower.parameters()).device
    merge, temporal = tower.spatial_merge_size, tower.config.temporal_patch_size
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(usable))
    n_held = min(cfg.held_out, len(usable) // 2)
    held = [usable[i] for i in order[:n_held]]
    train = [usable[i] for i in order[n_held:]]
    enc = dict(
        processor=processor,
        sampling=sampling,
        names=names,
        merge=merge,
        temporal=temporal,
        workers=decode_workers(cfg.workers, "warmup.vision_pretrain.workers"),
        progress=progress,
    )
    train_items, bad = _encode_all(
        train, views=("input",), desc="vision pretraining: decoding", context_share=cfg.context_share, **enc
    )
    held_items, bad_held = _encode_all(held, views=("full", "context"), desc="vision pretraining: held-out", **enc)
    stats.update(
        unreadable=bad + bad_held,
        train_clips=len(train_items),
        held_out_clips=len(held_items),
        masked_clips=sum(x["masked"] for x in train_items),
    )
    if not train_items:
        raise RuntimeError(f"vision pretraining: none of the {len(train)} training clips could be read")
    stats["pool_on_device"] = _to_device_if_it_fits(train_items + held_items, dev)

    torch.manual_seed(seed)
    heads = VisionHeads(tower.config.out_hidden_size, len(names)).to(dev)
    aligned = cfg.lm_align > 0 or cfg.scene_align > 0
    prototypes = name_prototypes(model, processor.tokenizer, names).to(dev) if aligned else None
    was_training, flags = tower.training, [p.requires_grad for p in tower.parameters()]
    tower.train()
    params = list(tower.parameters()) + list(heads.parameters())
    for p in tower.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.learning_rate, total_steps=cfg.steps, pct_start=0.1)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)
    dtype = next(tower.parameters()).dtype
    checkpoints = {round(cfg.steps * k / 4) for k in (1, 2, 3)} if held_items else set()
    order, pos, recent, curve = rng.permutation(len(train_items)), 0, [], []
    skipped, run_of_skips = 0, 0
    bar = tqdm(range(1, cfg.steps + 1), desc="vision pretraining", disable=not progress)
    for step in bar:
        batch = []
        while len(batch) < min(cfg.batch_size, len(train_items)):
            if pos == len(order):
                order, pos = rng.permutation(len(train_items)), 0
            batch.append(train_items[order[pos]])
            pos += 1
        boxes = torch.cat([x["boxes"] for x in batch]).to(dev)
        labels = torch.tensor([x["label"] for x in batch], device=dev)
        with amp:
            tok, counts = tower_tokens(tower, *_batch(batch, "input", dev, dtype))
            box_logit, cls_logit = heads(tok.float(), counts)
        unmasked = torch.repeat_interleave(
            torch.tensor([not x["masked"] for x in batch], device=dev), torch.tensor(counts, device=dev)
        )
        box_loss = (
            nn.functional.binary_cross_entropy_with_logits(box_logit[unmasked].float(), boxes[unmasked])
            if unmasked.any()
            else torch.zeros((), device=dev)
        )  # a masked clip shows no interaction
        cls_loss = nn.functional.cross_entropy(cls_logit.float(), labels)
        loss = cls_loss + cfg.box_weight * box_loss
        align_loss = scene_loss = torch.zeros((), device=dev)
        if cfg.lm_align > 0:
            # the object's cells of a masked clip hold the fill colour, not the object: not aligned
            cells = torch.cat([x["object_cells"] & (not x["masked"]) for x in batch]).to(dev)
            if cells.any():
                per_token = torch.repeat_interleave(labels, torch.tensor(counts, device=dev))
                align_loss = nn.functional.cross_entropy(align_logits(tok[cells], prototypes), per_token[cells])
                loss = loss + cfg.lm_align * align_loss
        if cfg.scene_align > 0:
            scene = torch.cat([x["scene_cells"] for x in batch]).to(dev)
            if (scene >= 0).any():
                scene_loss = nn.functional.cross_entropy(align_logits(tok[scene >= 0], prototypes), scene[scene >= 0])
                loss = loss + cfg.scene_align * scene_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        if not (torch.isfinite(loss) and torch.isfinite(norm)):
            # one non-finite gradient would make every weight NaN (clipping scales by it): skip the
            # step; a tower whose forward keeps overflowing has diverged, and the run stops here
            # instead of training the warm-up on NaN (H200, lr 1e-3: NaN at step ~810 of 4,000)
            skipped, run_of_skips = skipped + 1, run_of_skips + 1
            sched.step()
            if run_of_skips >= MAX_SKIPS_IN_A_ROW:
                raise FloatingPointError(
                    f"vision pretraining diverged: {run_of_skips} non-finite steps in a row "
                    f"(up to step {step}); lower warmup.vision_pretrain.learning_rate"
                )
            continue
        run_of_skips = 0
        opt.step()
        sched.step()
        acc = float((cls_logit.argmax(-1) == labels).float().mean())
        recent = (recent + [(cls_loss.item(), box_loss.item(), acc, align_loss.item(), scene_loss.item())])[-20:]
        bar.set_postfix(
            obj=f"{np.mean([r[0] for r in recent]):.3f}",
            box=f"{np.mean([r[1] for r in recent]):.3f}",
            acc=f"{np.mean([r[2] for r in recent]):.2f}",
            name=f"{np.mean([r[3] for r in recent]):.3f}",
        )
        if step in checkpoints:
            curve.append(
                {
                    "step": step,
                    "train_acc": float(np.mean([r[2] for r in recent])),
                    **_held_out_accuracy(tower, heads, held_items, cfg.batch_size, dev, amp, prototypes),
                }
            )
    tower.train(was_training)
    for p, flag in zip(tower.parameters(), flags):
        p.requires_grad_(flag)
    stats.update(
        steps=cfg.steps,
        skipped_steps=skipped,
        object_loss=float(np.mean([r[0] for r in recent])),
        box_loss=float(np.mean([r[1] for r in recent])),
        object_acc=float(np.mean([r[2] for r in recent])),
    )
    if cfg.lm_align > 0:
        stats["name_loss"] = float(np.mean([r[3] for r in recent]))
    if cfg.scene_align > 0:
        stats["scene_name_loss"] = float(np.mean([r[4] for r in recent]))
    if held_items:
        stats["held_out"] = _held_out_accuracy(tower, heads, held_items, cfg.batch_size, dev, amp, prototypes)
        curve.append({"step": cfg.steps, "train_acc": stats["object_acc"], **stats["held_out"]})
    stats["curve"] = curve
    return stats
