"""How many clip passes does the `mini` tower need to name the grasped object, per world?

The CPU demo needs a base that reads the hand on some clips. This trains the mini backbone's
vision tower alone (vision pretraining: object, box and name losses) on an EgoSynth world and
reports the held-out object accuracy under the full and context views, typical vs atypical,
at four points of the run, with the wall time. Run it on a GPU to sweep worlds fast, then on
the CPU to time the chosen one:

    python experiments/demo_world/tower_study.py --out /tmp/tower.json scenes=3 objects_per_scene=3 \
        object_scale=1.6 max_distractors=2 --pool 2000 --steps 400 --batch 32
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("world", nargs="*", help="EgoSynthConfig key=value (size, frames, scenes, object_scale, ...)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--pool", type=int, default=2000, help="clips, held-out included")
    ap.add_argument("--p-typical", type=float, default=0.5, help="share of typical clips in the pool")
    ap.add_argument("--held-out", type=int, default=300)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--lm-align", type=float, default=1.0)
    ap.add_argument("--scene-align", type=float, default=0.0)
    ap.add_argument("--context-share", type=float, default=0.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--backend", default=None, help="video decoder (FrameSampling.backend; opencv where PyAV is missing)"
    )
    ap.add_argument("--data", default=None, help="dataset folder to reuse/generate (default: a temp folder)")
    ap.add_argument("--device", default="cuda" if __import__("torch").cuda.is_available() else "cpu")
    a = ap.parse_args()

    import torch

    from ego3s.data.egosynth import EgoSynthConfig, generate
    from ego3s.data.io import read_jsonl
    from ego3s.data.video import FrameSampling
    from ego3s.models import load_model
    from ego3s.models.mini import build_mini
    from ego3s.train.vision_pretrain import VisionPretrainConfig, pretrain_vision

    defaults = EgoSynthConfig()
    world = {}
    for kv in a.world:
        k, v = kv.split("=", 1)
        world[k] = type(getattr(defaults, k))(v)  # raises AttributeError on an unknown key
    world.setdefault("size", 84)
    world.setdefault("frames", 8)
    cfg = EgoSynthConfig(seed=a.seed + 1, train=a.pool, test=0, probe=0, p_typical=a.p_typical, **world)
    data = Path(a.data or tempfile.mkdtemp(prefix="tower_study_"))
    t0 = time.time()
    generate(data, cfg, workers=a.workers)
    t_data = time.time() - t0
    samples = read_jsonl(data / "train.jsonl")
    model_dir = build_mini(Path(tempfile.mkdtemp(prefix="mini_")) / "mini", seed=a.seed)
    model, processor = load_model(str(model_dir), device=a.device)
    side = cfg.size
    sampling = FrameSampling(
        nframes=cfg.frames,
        max_pixels=side * side,
        min_pixels=side * side,
        **({"backend": a.backend} if a.backend else {}),
    )
    vcfg = VisionPretrainConfig(
        steps=a.steps,
        batch_size=a.batch,
        learning_rate=a.lr,
        held_out=a.held_out,
        workers=a.workers,
        lm_align=a.lm_align,
        scene_align=a.scene_align,
        context_share=a.context_share,
    )
    torch.manual_seed(a.seed)
    t1 = time.time()
    stats = pretrain_vision(model, processor, samples, vcfg, sampling, seed=a.seed, progress=False)
    t_train = time.time() - t1
    res = {
        "world": world,
        "pool": a.pool,
        "p_typical": a.p_typical,
        "steps": a.steps,
        "batch": a.batch,
        "lr": a.lr,
        "lm_align": a.lm_align,
        "scene_align": a.scene_align,
        "context_share": a.context_share,
        "device": a.device,
        "threads": torch.get_num_threads(),
        "seconds_data": round(t_data, 1),
        "seconds_pretrain": round(t_train, 1),
        "clip_passes": a.steps * a.batch,
        **stats,
    }
    Path(a.out).write_text(json.dumps(res, indent=1))
    for c in stats.get("curve", []):
        print(json.dumps(c))
    print(f"data {t_data:.0f}s pretrain {t_train:.0f}s")


if __name__ == "__main__":
    main()
