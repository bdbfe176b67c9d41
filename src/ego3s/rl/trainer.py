"""GRPO on video: TRL's GRPOTrainer with every sample's visual inputs carried into every forward.

What TRL 1.16 gets wrong for video (and why this subclass exists): its rollout path hands
`{"type": "video"}` prompts to the processor and generates from the video, but the forward passes
that compute the old, reference and current log-probabilities (the loss) receive only
`input_ids`/`attention_mask` plus *image* tensors. The video placeholder tokens are then embedded
as text and the model falls back to 1-D positions: it trains on something it never generated
from, silently.

Here each training row carries its own visual tensors (`pixel_values_videos`, `video_grid_thw`,
`second_per_grid_ts`, or the image equivalents) in a per-row list that TRL's batch splitting and
shuffling keep aligned with the row. A forward pre-hook feeds the rows' tensors, plus
`mm_token_type_ids` rebuilt from the token ids (what Qwen2.5-VL needs for its 3-D M-RoPE
positions), into every forward pass TRL makes, in the order it makes them. Everything else
(accelerate, DeepSpeed/FSDP, PEFT, logging, the loss variants) is TRL's.

Prompts are encoded with ego3s's own frame sampler and views (`ego3s.models.inputs.encode`), so
selection, training and evaluation see the same frames.
"""

from __future__ import annotations

import json
import math
import random
import warnings
from typing import Any

import torch
from trl import GRPOTrainer

from ego3s.data.schema import Sample
from ego3s.files import append_jsonl
from ego3s.models.inputs import VISUAL_KEYS, encode
from ego3s.models.prompts import build_messages

# TRL's generation context reads `model.is_gradient_checkpointing`, which transformers 5.2x
# deprecates with a FutureWarning at every rollout: nothing a user can act on, so it is not shown.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def sample_from_row(row: dict) -> Sample:
    """The Sample a training row was made from (stored whole in its `sample` column)."""
    return Sample.from_dict(json.loads(row["sample"]))


def merge_visual(rows: list[dict]) -> dict[str, torch.Tensor]:
    """Concatenate the per-row visual tensors of consecutive rows, in row order (the order in
    which Qwen-style models consume them, matching the placeholder tokens)."""
    out: dict[str, list[torch.Tensor]] = {}
    for r in rows:
        for k in VISUAL_KEYS:
            if r.get(k) is not None:
                out.setdefault(k, []).append(r[k])
    return {k: torch.cat(v) for k, v in out.items()}


def mm_token_type_ids(input_ids: torch.Tensor, image_token_id: int | None, video_token_id: int | None) -> torch.Tensor:
    types = torch.zeros_like(input_ids)
    if image_token_id is not None:
        types[input_ids == image_token_id] = 1
    if video_token_id is not None:
        types[input_ids == video_token_id] = 2
    return types


_LEFT_PADDED = ("prompt_ids", "prompt_mask")


def replace_rows(out: dict, rows: list[int], new: dict, pad_id: int = 0) -> dict:
    """`out` with its rows `rows` replaced by the rows of `new`, in order, re-padding per-token
    tensors (prompts are left-padded, completions right-padded) to the wider of the two."""
    import torch.nn.functional as F

    merged = dict(out)
    for k, v in out.items():
        if k == "num_items_in_batch" or k not in new:
            continue
        w = new[k]
        if isinstance(v, list):
            v = list(v)
            for j, r in enumerate(rows):
                v[r] = w[j]
        elif isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == out["advantages"].shape[0]:
            if v.dim() == 2 and v.shape[1] != w.shape[1]:
                width = max(v.shape[1], w.shape[1])

                def pad(t, width=width, k=k):  # bound now: B023
                    extra = width - t.shape[1]
                    fill = pad_id if k.endswith("_ids") else 0
                    return F.pad(t, (extra, 0) if k in _LEFT_PADDED else (0, extra), value=fill)

                v, w = pad(v), pad(w)
            v = v.clone()
            v[rows] = w.to(v.device, v.dtype)
        merged[k] = v
    if "num_items_in_batch" in out:
        mask = (
            merged["completion_mask"] if "tool_mask" not in merged else merged["completion_mask"] * merged["tool_mask"]
        )
        merged["num_items_in_batch"] = mask.sum().to(out["num_items_in_batch"].device)
    return merged


def first_rows(out: dict, n: int) -> dict:
    """The first `n` rows of a scored batch (per-row lists and tensors; other entries as they are)."""
    rows = out["advantages"].shape[0]
    return {
        k: v[:n]
        if isinstance(v, list) and len(v) == rows or isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == rows
        else v
        for k, v in out.items()
    }


def uninformative_groups(out: dict, g: int) -> list[int]:
    """Indices of the groups (of `g` consecutive rows) that DAPO's dynamic sampling drops: all
    answers correct or all wrong by `out["correct"]` (NaN, an unscorable completion, counts as
    wrong); without that entry, groups whose advantages are all 0."""
    correct = out.get("correct")
    if correct is None:
        return (out["advantages"].view(-1, g) == 0).all(dim=1).nonzero().flatten().tolist()
    c = torch.nan_to_num(correct.float(), nan=0.0).view(-1, g)
    return (c == c[:, :1]).all(dim=1).nonzero().flatten().tolist()


def reward_name(func, i: int = 0) -> str:
    """`accuracy_reward` -> `accuracy`: the component names of the reward log."""
    name = getattr(func, "__name__", None) or f"reward_{i}"
    return name[: -len("_reward")] if name.endswith("_reward") else name


class _VisualFeeder:
    """Forward pre-hook: gives each forward call the visual tensors of the rows it is given.

    TRL computes log-probs in chunks of consecutive rows; the hook walks the row list with a
    cursor, so it needs no knowledge of TRL's chunking."""

    def __init__(self, rows: list[dict], image_token_id, video_token_id, vision_cache=None):
        self.rows, self.cursor = rows, 0
        self.image_token_id, self.video_token_id = image_token_id, video_token_id
        self.vision_cache = vision_cache

    def __call__(self, module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is None:
            return None
        n = ids.shape[0]
        chunk = self.rows[self.cursor : self.cursor + n]
        if len(chunk) != n:
            raise RuntimeError(
                f"visual feeder: forward over {n} rows but only {len(chunk)} visual rows remain "
                f"(cursor {self.cursor} of {len(self.rows)})"
            )
        self.cursor += n
        vis = merge_visual(chunk)
        device = ids.device
        for k, v in vis.items():
            kwargs[k] = v.to(device)
        if vis:
            kwargs["mm_token_type_ids"] = mm_token_type_ids(ids, self.image_token_id, self.video_token_id)
        if self.vision_cache is not None and "pixel_values_videos" in vis:
            keys = [r.get("video_key") for r in chunk if r.get("pixel_values_videos") is not None]
            self.vision_cache.keys = keys if all(keys) else None
        return args, kwargs


class VideoGRPOTrainer(GRPOTrainer):
    """GRPOTrainer for video/image VLMs whose training rows carry a `sample` column (the JSON of an
    ego3s Sample). Extra arguments:

    - `sampling`: frame sampling kwargs for `load_sample_clip` (nframes/fps/max_frames/...);
    - `view`: which counterfactual view the policy is trained on (`full`; others for ablations);
    - `reward_log`: path of the per-step, per-sample reward log (JSONL) that LIMR and the
      curriculum read;
    - `strategy`: `grpo`, `rloo`, `dapo` or `dr_grpo` (see `ego3s.rl.strategies`);
    - `curriculum`, `ecr_scorer`: ECR's pool and its CSM re-scorer (see `ego3s.curriculum.ecr`);
    - `dynamic_sampling_rounds`: DAPO's refills of groups whose answers are all right or all wrong;
    - `shared_prefix_rollouts`: without vLLM, encode and prefill each group's prompt once and decode
      its G completions from copies of the KV cache (`ego3s.models.generation`); falls back to TRL's path
      when the rows of a group differ or the model is not a patched Qwen2.5-VL;
    - `static_cache_rollouts`: with shared-prefix rollouts, decode against a static KV cache in
      ego3s's decode loop (`group_generate(static_cache=True)`; on CUDA the step is compiled on the
      first rollout and captured as one CUDA graph);
    - `vision_feature_cache`: with the vision tower frozen, encode each clip once per generation
      batch in the log-prob forwards instead of once per row (`ego3s.rl.vision_cache`).
    """

    def __init__(
        self,
        *args,
        sampling: dict | None = None,
        view: str = "full",
        reward_log: str | None = None,
        strategy: str = "grpo",
        prompt_format: str = "reasoning",
        curriculum=None,
        ecr_scorer=None,
        dynamic_sampling_rounds: int = 3,
        layout_invariant_sampling: bool = False,
        shared_prefix_rollouts: bool = True,
        static_cache_rollouts: bool = False,
        vision_feature_cache: bool = True,
        **kwargs,
    ):
        # set before TRL's __init__, which builds the sampler through _get_train_sampler
        self.curriculum, self.ecr_scorer = curriculum, ecr_scorer
        self.dynamic_sampling_rounds = dynamic_sampling_rounds
        super().__init__(*args, **kwargs)
        if self.args.reward_weights is None:  # a reward function may carry its own weight (correctness: 0)
            self.reward_weights = torch.tensor([float(getattr(f, "weight", 1.0)) for f in self.reward_funcs])
        from ego3s.models.loading import patch_qwen25_rope_index

        for m in (self.model, getattr(self, "ref_model", None)):
            if m is not None:  # TRL may load the reference model itself: give it the same positions
                patch_qwen25_rope_index(m)
        self.ego_sampling = dict(sampling or {})
        self.ego_view = view
        self.ego_reward_log = reward_log
        self.ego_strategy = strategy
        self.ego_prompt_format = prompt_format
        self.ego_shared_prefix = shared_prefix_rollouts
        self.ego_static_cache = static_cache_rollouts
        self._rows_visual: list[dict] | None = None
        self._rows_correct: torch.Tensor | None = None  # this process's rows' correctness, for dynamic sampling
        self._rows_prompt_ids: list[list[int]] | None = None
        self._rows_mm: list[list[int]] | None = None
        self._batch_ids: list[str] | None = None
        cfg = self.model.config
        self._image_token_id = getattr(cfg, "image_token_id", None)
        self._video_token_id = getattr(cfg, "video_token_id", None)
        self._rollout_keys: list[int] | None = None
        self._sampling_round = 0
        self._layout_invariant = layout_invariant_sampling
        if layout_invariant_sampling:
            self._use_layout_invariant_sampling()
        self._vision_cache = None
        if vision_feature_cache:
            from ego3s.rl.vision_cache import VisionCache

            cache = VisionCache()
            if cache.install(self.model):  # the reference model starts as the policy: same frozen tower
                if getattr(self, "ref_model", None) is not None:
                    cache.install(self.ref_model)
                self._vision_cache = cache

    # ------------------------------------------------------------------ layout-invariant rollouts
    def _use_layout_invariant_sampling(self) -> None:
        """Sample each rollout from its own key (`ego3s.rl.sampling`) instead of the process RNG,
        so 1 and N GPUs draw the same completions at the same global batch."""
        from transformers import LogitsProcessorList

        from ego3s.rl.sampling import GumbelSampler, check_supported

        if self.use_vllm:
            raise ValueError("layout_invariant_sampling needs transformers generation (not vLLM)")
        check_supported(self.top_p, self.top_k, self.min_p)
        greedy = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        for k, v in greedy.items():
            setattr(self.generation_config, k, v)
        self.generation_kwargs.update(greedy)
        model, generate = self.model, self.model.generate

        def keyed_generate(*args, **kwargs):
            if self._rollout_keys is not None:
                procs = LogitsProcessorList(kwargs.pop("logits_processor", None) or [])
                procs.append(GumbelSampler(self._rollout_keys, self.temperature))
                kwargs["logits_processor"] = procs
            return generate(*args, **kwargs)

        model.generate = keyed_generate

    def _set_rollout_keys(self, ids: list[str]) -> None:
        """One key per local row from its *global* row index, so a group split over ranks keeps
        its replica numbers. TRL gives every rank an equal, contiguous slice of the batch."""
        from ego3s.rl.sampling import row_key

        g = self.num_generations if self.model.training else self.num_generations_eval
        offset = self.accelerator.process_index * len(ids)
        step = f"{int(self.state.global_step)}.{self._sampling_round}"
        self._rollout_keys = [row_key(self.args.seed, step, sid, (offset + i) % g) for i, sid in enumerate(ids)]

    # ------------------------------------------------------------------ encoding prompts ourselves
    def _encode_rows(self, inputs: list[dict]) -> None:
        """Encode each row's prompt with its clip (one decode per distinct sample)."""
        from ego3s.data.video import ClipSpec, VideoError
        from ego3s.data.views import sample_view

        cfg = ClipSpec(**{k: v for k, v in self.ego_sampling.items() if k in ClipSpec.__dataclass_fields__})
        cache: dict[str, tuple] = {}
        visual, prompt_ids, mm = [], [], []
        for row in inputs:
            sample = sample_from_row(row)
            if sample.id not in cache:
                try:
                    kind, vis = sample_view(sample, self.ego_view, cfg)
                except (VideoError, OSError, ValueError) as e:
                    # One bad sample never kills a run: train on it without its video (counted).
                    self._metrics["train"]["visual/unreadable_samples"].append(1.0)
                    import logging

                    logging.getLogger(__name__).warning("sample %s: video unreadable, text only: %s", sample.id, e)
                    kind, vis = None, None
                msgs = build_messages(sample, fmt=self.ego_prompt_format, visual=kind)
                enc = encode(self.processing_class, [msgs], [vis])
                keep = enc["attention_mask"][0].bool()
                vis_t = {k: enc[k] for k in VISUAL_KEYS if k in enc}
                if "pixel_values_videos" in vis_t:  # names the clip for the vision feature cache
                    vis_t["video_key"] = f"{sample.id}|{self.ego_view}"
                cache[sample.id] = (
                    enc["input_ids"][0][keep].tolist(),
                    enc["mm_token_type_ids"][0][keep].tolist() if "mm_token_type_ids" in enc else None,
                    vis_t,
                )
            ids, types, vis_t = cache[sample.id]
            prompt_ids.append(ids)
            mm.append(types)
            visual.append(vis_t)
        self._rows_visual, self._rows_prompt_ids, self._rows_mm = visual, prompt_ids, mm

    def _tokenize_prompts(self, prompts: list):
        if self._rows_prompt_ids is None or len(prompts) != len(self._rows_prompt_ids):
            return super()._tokenize_prompts(prompts)
        fields: dict[str, Any] = merge_visual(self._rows_visual)
        if fields:
            fields["mm_token_type_ids"] = [
                t if t is not None else [0] * len(p) for t, p in zip(self._rows_mm, self._rows_prompt_ids)
            ]
        return [list(p) for p in self._rows_prompt_ids], None, fields

    # ------------------------------------------------------------------ shared-prefix rollouts
    def _shared_prefix_groups(self, prompt_ids: list, group: int) -> list[int] | None:
        """Start rows of the prompt groups when the shared-prefix path applies, else None."""
        from ego3s.models import generation
        from ego3s.rl import rollout

        if (
            not self.ego_shared_prefix
            or self.use_vllm
            or getattr(self, "use_transformers_continuous_batching", False)
            or self.tools
            or self._rows_visual is None
            or len(self._rows_visual) != len(prompt_ids)
            or not generation.supported(self.accelerator.unwrap_model(self.model))
        ):
            return None
        return rollout.groups_of(prompt_ids, self._rows_visual, group)

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        mode = "train" if self.model.training else "eval"
        starts = self._shared_prefix_groups(prompt_ids, num_generations)
        self._metrics[mode]["rollout/shared_prefix"].append(float(starts is not None))
        if starts is None:
            return super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, has_tool_images
            )
        return self._generate_shared_prefix(prompt_ids, starts, num_generations), None

    def _generate_shared_prefix(self, prompt_ids: list, starts: list[int], group: int) -> list[list[int]]:
        """TRL's regular generation path (same contexts, generation config and EOS masking) with
        one vision encoding and one prompt prefill per group (`ego3s.models.generation.group_generate`)."""
        from transformers import Trainer
        from trl.models import unwrap_model_for_generation
        from trl.trainer.utils import pad

        from ego3s.models.generation import group_generate

        pad_id = self._tokenizer.pad_token_id
        prompts = [torch.tensor(prompt_ids[s]) for s in starts]
        ids = pad(prompts, padding_value=pad_id, padding_side="left", pad_to_multiple_of=self.pad_to_multiple_of)
        mask = pad(
            [torch.ones_like(p) for p in prompts],
            padding_value=0,
            padding_side="left",
            pad_to_multiple_of=self.pad_to_multiple_of,
        )
        inputs = {
            "input_ids": ids,
            "attention_mask": mask,
            "mm_token_type_ids": mm_token_type_ids(ids, self._image_token_id, self._video_token_id) * mask,
            **merge_visual([self._rows_visual[s] for s in starts]),
        }
        inputs = Trainer._prepare_inputs(self, inputs)  # to the device (TRL calls the same base method)
        with (
            unwrap_model_for_generation(
                self.model_wrapped,
                self.accelerator,
                gather_deepspeed3_params=self.args.ds3_gather_for_generation,
                generation_kwargs=self.generation_kwargs,
                gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs,
            ) as unwrapped,
            torch.no_grad(),
            self._dist.summon_full_params(self.model_wrapped, recurse=False),
        ):
            # on CUDA the decode step is compiled once per run (about 35 s) before its CUDA graph is
            # captured: 5.5 against 7.3 ms per step for the 7B model (docs/PERFORMANCE.md)
            decoder = "graph-compiled" if inputs["input_ids"].device.type == "cuda" else "graph"
            out = group_generate(
                unwrapped, inputs, group, self.generation_config, static_cache=self.ego_static_cache, decoder=decoder
            )
        completions = out[:, ids.shape[1] :].cpu()
        # keep each completion up to and including its first EOS, as TRL does
        eos = torch.isin(completions, torch.tensor(self.eos_token_ids))
        result = []
        for row, hit in zip(completions, eos):
            end = int(hit.int().argmax()) + 1 if hit.any() else len(row)
            result.append(row[:end].tolist())
        return result

    # ------------------------------------------------------------------ carrying visuals to the loss
    def _get_per_token_logps_and_entropies(self, model, input_ids, *args, **kwargs):
        rows = self._rows_visual
        if not rows or not any(rows):
            return super()._get_per_token_logps_and_entropies(model, input_ids, *args, **kwargs)
        if len(rows) != input_ids.shape[0]:
            raise RuntimeError(f"{input_ids.shape[0]} rows in the forward batch but {len(rows)} visual rows")
        feeder = _VisualFeeder(rows, self._image_token_id, self._video_token_id, self._vision_cache)
        handle = model.register_forward_pre_hook(feeder, with_kwargs=True)
        try:
            return super()._get_per_token_logps_and_entropies(model, input_ids, *args, **kwargs)
        finally:
            handle.remove()
            if self._vision_cache is not None:
                self._vision_cache.keys = None

    def _generate_and_score_completions(self, inputs):
        # bf16 compute for the rollouts and old log-probs too: with fp32 master weights
        # (ego3s.models.loading.upcast_trainable) they would otherwise run in fp32, outside the
        # autocast that accelerate puts around the loss only
        with self.accelerator.autocast():
            out = self._score_rows(inputs)
            if self.ego_strategy == "dapo" and self.model.training and self.dynamic_sampling_rounds > 0:
                out = self._dynamic_sampling(inputs, out)
        return out

    def _score_rows(self, inputs):
        """TRL's generate-and-score with each row's visuals encoded by ego3s and carried along."""
        if self._vision_cache is not None:  # features of the last batch's clips: report, then drop
            c = self._vision_cache
            if c.encoded + c.reused:
                self._metrics["train"]["vision/reused_share"].append(c.reused / (c.encoded + c.reused))
            c.encoded = c.reused = 0
            c.clear()
        self._encode_rows(inputs)
        self._batch_ids = [sample_from_row(r).id for r in inputs]
        if self._layout_invariant:
            self._set_rollout_keys(self._batch_ids)
        try:
            out = super()._generate_and_score_completions(inputs)
        finally:
            visual = self._rows_visual
            self._rows_visual = self._rows_prompt_ids = self._rows_mm = self._rollout_keys = None
        out["visual"] = visual
        correct, self._rows_correct = self._rows_correct, None
        if correct is not None and len(correct) == len(visual):
            out["correct"] = correct.to(out["advantages"].device)
        if self.ego_strategy == "rloo":
            g = self.num_generations if self.model.training else self.num_generations_eval
            if g > 1:  # leave-one-out baseline = group-mean baseline scaled by G / (G - 1)
                out["advantages"] = out["advantages"] * (g / (g - 1))
        return out

    # ------------------------------------------------------------------ DAPO dynamic sampling
    def _dynamic_sampling(self, inputs, out):
        """DAPO's dynamic sampling, which TRL lacks: groups whose answers are all correct or all
        wrong (DAPO keeps 0 < #correct < G) are replaced by groups of freshly drawn prompts until
        every group has both or `dynamic_sampling_rounds` is spent. Correctness is the reward
        function named `correct_reward` (per-answer 0/1; `accuracy_reward` if there is none:
        all-equal accuracy), not the total reward, which the format and interaction terms keep
        varying in groups that carry no signal about the answer. Without either, groups whose
        advantages are all 0 are refilled. The batch keeps its shape, so TRL's accumulation and
        logging are unchanged.

        Under several processes each rank refills its own groups, which needs whole groups per
        rank (rows per rank a multiple of `num_generations`; else skipped, with a warning). Scoring
        gathers rewards over all ranks, so every rank scores the same number of fresh groups in a
        round (the most any rank needs) and drops the ones it does not need."""
        g = self.num_generations
        world = self.accelerator.num_processes
        if world > 1 and len(inputs) % g:
            if not getattr(self, "_warned_ds", False):
                import logging

                logging.getLogger(__name__).warning(
                    "DAPO dynamic sampling skipped: %d rows per process is not a multiple of num_generations %d, "
                    "so groups span processes",
                    len(inputs),
                    g,
                )
                self._warned_ds = True
            return out
        rng = random.Random(
            (self.args.seed * 7919 + int(self.state.global_step)) * 131 + self.accelerator.process_index
        )
        for round_ in range(1, self.dynamic_sampling_rounds + 1):
            self._sampling_round = round_  # fresh keys for refilled groups
            dead = uninformative_groups(out, g)
            self._metrics["train"]["dapo/uninformative_groups"].append(float(len(dead)))
            need = len(dead)
            if world > 1:
                from accelerate.utils import gather_object

                need = max(gather_object([need]))
            if not need:
                break
            pool = (
                [self.curriculum.index[i] for i in self.curriculum.active]
                if self.curriculum is not None
                else list(range(len(self.train_dataset)))
            )
            fresh = [self.train_dataset[rng.choice(pool)] for _ in range(need)]
            new = first_rows(self._score_rows([row for row in fresh for _ in range(g)]), len(dead) * g)
            rows = [r for d in dead for r in range(d * g, (d + 1) * g)]
            if rows:
                out = replace_rows(out, rows, new, pad_id=self._tokenizer.pad_token_id or 0)
        self._sampling_round = 0
        return out

    def _compute_loss(self, model, inputs):
        self._rows_visual = inputs.get("visual")
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._rows_visual = None

    # ------------------------------------------------------------------ curriculum
    def _get_train_sampler(self, dataset=None):
        if self.curriculum is None:
            return super()._get_train_sampler(dataset)
        from ego3s.curriculum.ecr import PoolSampler

        return PoolSampler(
            self.curriculum,
            self.num_generations,
            self.args.generation_batch_size // self.num_generations,
            self.num_iterations * self.args.steps_per_generation,
            seed=self.args.seed,
        )

    def _curriculum_step(self, records: list[dict]) -> None:
        from ego3s.curriculum.ecr import refresh_with_csm
        from ego3s.select.csm import closest_misses

        step = int(self.state.global_step)
        decision = self.curriculum.observe_step(step, records)
        from ego3s.tracking import ecr_metrics

        for k, v in ecr_metrics(self.curriculum, decision).items():  # to the trackers, as train/ecr/...
            self._metrics["train"][k].append(v)
        if not decision or not decision["stagnant"] or self.ecr_scorer is None:
            return
        dist = None
        if self.accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list, gather_object

            def broadcast(obj):
                box = [obj]
                broadcast_object_list(box, from_process=0)
                return box[0]

            dist = (
                self.accelerator.process_index,
                self.accelerator.num_processes,
                lambda part: gather_object([part]),
                broadcast,
            )
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        try:
            event = refresh_with_csm(
                self.curriculum, step, decision, lambda ids: self.ecr_scorer(model, ids), dist, closest_misses
            )
        finally:
            model.train(was_training)
        if self.accelerator.is_main_process:
            import logging

            logging.getLogger(__name__).warning(
                "ECR refresh at step %d: variance ratio %.3f < %.2f; pool %d -> %d (+%d, -%d); high-value %d of %d "
                "probed",
                step,
                event["ratio"],
                self.curriculum.cfg.lambda_s,
                event["pool_before"],
                event["pool_after"],
                len(event["added"]),
                len(event["removed"]),
                event["high_value"],
                event["probed"] or 0,
            )
        self._metrics["train"]["ecr/refreshes"].append(float(self.curriculum.refreshes))

    # ------------------------------------------------------------------ per-sample reward log
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = self._unscorable_if_not_finite(
            super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        )
        names = [getattr(f, "__name__", None) for f in self.reward_funcs]
        col = next((names.index(n) for n in ("correct_reward", "accuracy_reward") if n in names), None)
        if col is not None:  # this process's rows of the gathered rewards (TRL slices the advantages alike)
            start = self.accelerator.process_index * len(inputs)
            self._rows_correct = rewards_per_func[start : start + len(inputs), col].detach().clone()
        if self.model.training and (self.ego_reward_log or self.curriculum is not None):
            from accelerate.utils import gather_object

            ids = gather_object(list(self._batch_ids or []))
            records = self._group_records(ids, rewards_per_func.detach().float().cpu())
            if self.accelerator.is_main_process and self.ego_reward_log:
                for rec in records:
                    append_jsonl(self.ego_reward_log, rec)
            if self.curriculum is not None:
                self._curriculum_step(records)
        return rewards_per_func

    def _unscorable_if_not_finite(self, rewards: torch.Tensor) -> torch.Tensor:
        """A completion with a NaN or infinite reward part becomes unscorable (every part NaN): TRL
        leaves it out of its group's baseline and gives it a zero advantage. Left as it is, TRL's
        nansum reads a NaN part as 0 and an infinity turns its whole group's advantages into NaN,
        then 0: wrong numbers without a trace. ego3s's reward functions never return None, so any
        non-finite value is a fault; it is counted as `rewards/non_finite`."""
        bad = ~torch.isfinite(rewards).all(dim=1)
        if not bad.any():
            return rewards
        rewards = rewards.clone()
        rewards[bad] = torch.nan
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["rewards/non_finite"].append(float(bad.sum()))
        import logging

        logging.getLogger(__name__).warning(
            "%d completion(s) with a non-finite reward: unscorable, zero advantage", int(bad.sum())
        )
        return rewards

    def _group_records(self, ids: list[str], rewards: torch.Tensor) -> list[dict]:
        g = self.num_generations
        names = [reward_name(f, i) for i, f in enumerate(self.reward_funcs)]
        weights = self.reward_weights.cpu().tolist()
        records = []
        for start in range(0, len(ids), g):
            block = rewards[start : start + g]
            comp = {n: [None if math.isnan(x) else x for x in block[:, j].tolist()] for j, n in enumerate(names)}
            total = [
                None if any(math.isnan(x) for x in row) else sum(w * x for w, x in zip(weights, row))
                for row in block.tolist()
            ]  # unscorable: null, never a made-up 0
            comp["total"] = total
            records.append(
                {
                    "step": int(self.state.global_step),
                    "epoch": float(self.state.epoch or 0.0),
                    "sample_id": ids[start],
                    "rewards": comp,
                }
            )
        return records
