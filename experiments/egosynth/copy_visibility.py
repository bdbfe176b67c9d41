"""Are the typical samples that CSM keeps ones whose scene does not show the answer? For each
typical sample of the RL pool, the pixels of the two copies of the grasped object that lie in
the scene, visible in the context view (interaction boxes masked), against whether CSM's fine
filter passed it. Renders the pool from its generator config on the CPU (about 25 s for 1,000).

    python experiments/egosynth/copy_visibility.py SCORES_CSV [--config experiments/egosynth/table.yaml]
"""

import argparse
import dataclasses
import sys

import numpy as np
import pandas as pd
import yaml

from ego3s.data import egosynth as E
from ego3s.data.egosynth_render import to_rgb
from ego3s.data.views import box_to_pixels, boxes_at


def copy_pixels(cfg: E.EgoSynthConfig, index: int, sample) -> tuple[int, int]:
    """(copy pixels in the full view, copy pixels left in the context view) over the clip's frames."""
    pl, _ = E._plan(cfg, "train", index, cfg.p_of("train"))
    with_copies = to_rgb(E._render(pl, cfg))
    without = to_rgb(E._render(dataclasses.replace(pl, distractors=[d for d in pl.distractors if d[0] != pl.obj]), cfg))
    shown = (with_copies != without).any(-1)
    boxed = np.zeros_like(shown)  # what CSM's context view masks
    for f in range(cfg.frames):
        for _, box in boxes_at(sample.interaction.boxes, f / cfg.fps):
            y0, y1, x0, x1 = box_to_pixels(box, cfg.size, cfg.size)
            boxed[f, y0:y1, x0:x1] = True
    return int(shown.sum()), int((shown & ~boxed).sum())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("scores", help="select/csm/scores.csv of a run on the pool of --config")
    ap.add_argument("--config", default="experiments/egosynth/table.yaml")
    a = ap.parse_args(argv)
    data = yaml.safe_load(open(a.config))["data"]
    cfg = E.EgoSynthConfig(**data)
    scores = pd.read_csv(a.scores)
    samples = E.generate_samples("train", cfg.train, cfg)
    rows = []
    for i, s in enumerate(samples):
        if s.meta["typical"]:
            full, ctx = copy_pixels(cfg, i, s)
            rows.append({"id": s.id, "copy_px_full": full, "copy_px_context": ctx})
    d = scores.merge(pd.DataFrame(rows), on="id")
    d = d[d.pass_coarse.astype(bool)]
    print(f"typical samples past the coarse filter: {len(d)}; frame area {cfg.size**2 * cfg.frames} px per clip")
    print(
        d.groupby("pass_fine")[["copy_px_full", "copy_px_context", "s_full", "s_context"]]
        .agg(["mean", "min", "median"])
        .round(3)
        .to_string()
    )
    d["copy_bin"] = pd.qcut(d.copy_px_context, 5)
    print(
        d.groupby("copy_bin", observed=True)
        .agg(n=("id", "size"), fine_mean=("fine", "mean"), pass_fine=("pass_fine", "mean"))
        .round(3)
        .to_string()
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
