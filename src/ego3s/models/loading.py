"""Load any Hugging Face image-text-to-text model from a local folder or a Hub id, and fingerprint it.

    model, processor = load_model("/models/Qwen2.5-VL-7B-Instruct", dtype="bfloat16")
    model, processor = load_model("Qwen/Qwen2.5-VL-7B-Instruct")   # from the Hugging Face cache

A name that is not a local folder is a Hub id, resolved to its snapshot folder in the Hugging Face
cache (`HF_HUB_CACHE`, else `HF_HOME/hub`, read when called); with `HF_HUB_OFFLINE=1` only the cache
is used (a clear error when the id is not there), otherwise a missing snapshot is downloaded, as
transformers does. Everything after that reads the snapshot folder with `local_files_only=True`. For
Qwen2.5-VL models the 3-D RoPE position index is replaced by the reference one (see
`patch_qwen25_rope_index`).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import types
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

DTYPES = ("auto", "bfloat16", "float32", "float16")
DEVICES = ("auto", "cpu", "cuda")
ATTENTION = (None, "sdpa", "eager", "flash_attention_2")


def resolve_device(device: str = "auto") -> torch.device:
    """ "auto": this process's GPU (LOCAL_RANK under torchrun) when CUDA is available, else CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device='cuda' but CUDA is not available")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device())))
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """ "auto": bfloat16 on a GPU that supports it, float32 otherwise (CPU kernels and exact tests)."""
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}[dtype]


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it (1/ON/YES/TRUE), at call time."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def resolve_model_path(name: str | os.PathLike, revision: str | None = None) -> Path:
    """A local model folder (one with config.json) as it is; otherwise `name` as a Hub id (`org/name`),
    resolved to its snapshot folder in the Hugging Face cache (`revision`: a branch, tag or commit;
    default the cached `main`). Offline (HF_HUB_OFFLINE=1) nothing is downloaded."""
    p = Path(name)
    if (p / "config.json").is_file():
        return p
    if p.exists():
        raise FileNotFoundError(
            f"{p}: no config.json; expected a model folder (build a test model with `ego3s build-model tiny --out DIR`)"
        )
    repo_id = str(name)
    if repo_id.count("/") > 1 or repo_id.startswith((".", "/", "~")) or not repo_id.strip():
        raise FileNotFoundError(f"{p}: no such model folder (and not a Hub id like org/name)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache, offline = hub_cache_dir(), hub_offline()
    try:
        snap = Path(snapshot_download(repo_id, revision=revision, cache_dir=str(cache), local_files_only=offline))
    except LocalEntryNotFoundError as e:
        raise FileNotFoundError(
            f"{repo_id}: not a local folder, and no snapshot of it in the Hugging Face cache {cache}"
            + (
                " (HF_HUB_OFFLINE=1: nothing is downloaded; download it where the Hub is reachable, e.g. "
                f"`hf download {repo_id}`, or pass a folder)"
                if offline
                else f" ({e})"
            )
        ) from None
    if not (snap / "config.json").is_file():
        raise FileNotFoundError(f"{repo_id}: snapshot {snap} has no config.json (not a transformers model)")
    return snap


def load_model(
    path: str | os.PathLike,
    *,
    dtype: str = "auto",
    device: str = "auto",
    attn_implementation: str | None = None,
    grouped_vision_attention: bool = True,
) -> tuple[Any, Any]:
    """(model, processor) from a local folder or a Hub id (`resolve_model_path`) through
    `AutoModelForImageTextToText` / `AutoProcessor`. The model is in eval mode on `device`.

    dtype: "auto" (bfloat16 on GPU, float32 on CPU), "bfloat16", "float32" or "float16".
    device: "auto" (GPU of this rank if any, else CPU), "cpu" or "cuda".
    attn_implementation: None (transformers' default, SDPA), "sdpa", "eager", "flash_attention_2".
    grouped_vision_attention: Qwen2.5-VL with SDPA: the vision tower's window attention in a few
        batched calls instead of one per window (ego3s.models.vision_attention; same math).
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if attn_implementation not in ATTENTION:
        raise ValueError(f"attn_implementation must be one of {ATTENTION}, got {attn_implementation!r}")
    from ego3s.models.folder import ModelFolderError, check_model_folder

    if Path(path).is_dir() or str(path).startswith(("/", ".", "~")):  # a local folder, not a Hub id: name
        check_model_folder(Path(path).expanduser())  # every missing part, not only config.json
    p = check_model_folder(resolve_model_path(path))  # before transformers fails on a missing part
    dev = resolve_device(device)
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(dtype, dev), "local_files_only": True}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if dev.type == "cuda":
        kwargs["device_map"] = {"": dev.index}  # load straight onto the GPU
    try:
        model = AutoModelForImageTextToText.from_pretrained(p, **kwargs)
    except (OSError, ValueError, KeyError) as e:  # e.g. an unknown model type or a torn pytorch_model.bin
        raise ModelFolderError(f"{p}: cannot load the model: {str(e).strip().splitlines()[0][:300]}") from e
    if dev.type != "cuda":
        model = model.to(dev)
    model.eval()
    patch_qwen25_rope_index(model)
    if grouped_vision_attention:
        from ego3s.models.vision_attention import patch_vision_attention

        patch_vision_attention(model)
    try:
        processor = AutoProcessor.from_pretrained(p, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise ModelFolderError(f"{p}: cannot load the processor: {str(e).strip().splitlines()[0][:300]}") from e
    return model, processor


# ---------------------------------------------------------------------------------------------
# Qwen2.5-VL 3-D RoPE index: the reference algorithm.
#
# transformers 5.x (checked: 5.17 and 5.24) departs from the reference implementation
# (Qwen's own code, transformers <= 5.2, vLLM):
#   1. text after a video starts at `start + max(grid_h, grid_w) / merge` instead of one past the
#      largest position used by the video, so when the video's temporal positions reach further
#      than its spatial ones (long clips, low fps) the text reuses the video's positions, and the
#      decode positions (`rope_deltas`, from the max) jump away from the prefill ones, so that
#      `generate` and a teacher-forced forward pass see different positions;
#   2. up to 5.2x, `second_per_grid_ts` is cast to int before scaling (fps > 2 -> all frames at
#      the same temporal position; fixed upstream by PR #48669).
# The reference: temporal index = long(t * second_per_grid_t * tokens_per_second), images have
# temporal index 0, and each segment starts one past the previous segment's maximum.


def qwen25_rope_index(
    self,
    input_ids: torch.Tensor,
    mm_token_type_ids: torch.Tensor | None = None,
    image_grid_thw: torch.Tensor | None = None,
    video_grid_thw: torch.Tensor | None = None,
    second_per_grid_ts: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference Qwen2.5-VL position ids `(3, batch, seq)` and `rope_deltas` `(batch, 1)`.

    Same signature as transformers' `Qwen2_5_VLModel.get_rope_index` (5.17+); `self` is the
    `Qwen2_5_VLModel`. Videos and images are taken in order across the batch; padding
    (attention_mask == 0) gets position 0.
    """
    cfg = self.config
    merge = cfg.vision_config.spatial_merge_size
    tps = cfg.vision_config.tokens_per_second
    device = input_ids.device
    batch, length = input_ids.shape
    if mm_token_type_ids is None:
        mm_token_type_ids = (input_ids == cfg.image_token_id).long() + 2 * (input_ids == cfg.video_token_id).long()
    grids = {
        1: iter(image_grid_thw.tolist() if image_grid_thw is not None else []),
        2: iter(video_grid_thw.tolist() if video_grid_thw is not None else []),
    }
    seconds = iter(
        torch.as_tensor(second_per_grid_ts, dtype=torch.float32).reshape(-1).cpu()
        if second_per_grid_ts is not None
        else []
    )
    position_ids = torch.zeros(3, batch, length, dtype=torch.long, device=device)
    deltas = []
    for b in range(batch):
        keep = (
            attention_mask[b].bool()
            if attention_mask is not None
            else torch.ones(length, dtype=torch.bool, device=device)
        )
        kinds = mm_token_type_ids[b][keep].tolist()
        n = len(kinds)
        pos = torch.empty(3, n, dtype=torch.long)
        i, start = 0, 0
        while i < n:
            kind = kinds[i]
            if kind == 0:
                j = i
                while j < n and kinds[j] == 0:
                    j += 1
                pos[:, i:j] = torch.arange(start, start + j - i)
                start += j - i
                i = j
                continue
            try:
                gt, gh, gw = next(grids[kind])
            except StopIteration:
                raise ValueError(f"row {b}: more {'image' if kind == 1 else 'video'} tokens than grids") from None
            gh, gw = gh // merge, gw // merge
            count = gt * gh * gw
            if kind == 2:
                s = next(seconds, torch.tensor(1.0))
                t_index = (torch.arange(gt).view(-1, 1).expand(-1, gh * gw) * s * tps).long().flatten()
            else:
                t_index = torch.zeros(gt * gh * gw, dtype=torch.long)
            h_index = torch.arange(gh).view(1, -1, 1).expand(gt, -1, gw).flatten()
            w_index = torch.arange(gw).view(1, 1, -1).expand(gt, gh, -1).flatten()
            block = torch.stack([t_index, h_index, w_index]) + start
            if i + count > n or any(k != kind for k in kinds[i : i + count]):
                raise ValueError(
                    f"row {b}: {count} placeholder tokens expected for grid {[gt, gh * merge, gw * merge]} at token {i}"
                )
            pos[:, i : i + count] = block
            start = int(block.max()) + 1
            i += count
        position_ids[:, b, keep] = pos.to(device)
        deltas.append(start - n)
    return position_ids, torch.tensor(deltas, device=device).unsqueeze(1)


def patch_qwen25_rope_index(model) -> bool:
    """Install `qwen25_rope_index` on every `Qwen2_5_VLModel` inside `model` (instance-level, so
    the forward pass, `generate` and trainers all use it). True when something was patched.
    Leaves transformers versions whose `get_rope_index` has another signature alone (warning)."""
    patched = False
    for module in model.modules():
        if type(module).__name__ != "Qwen2_5_VLModel" or not hasattr(module, "get_rope_index"):
            continue
        params = inspect.signature(type(module).get_rope_index).parameters
        if "mm_token_type_ids" not in params or "second_per_grid_ts" not in params:
            log.warning(
                "transformers' Qwen2_5_VLModel.get_rope_index has an unexpected signature %s; not replacing it",
                list(params),
            )
            continue
        module.get_rope_index = types.MethodType(qwen25_rope_index, module)
        patched = True
    return patched


# ---------------------------------------------------------------------------------------------
# Fingerprints: keys for score caches.

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
# Left out of a folder's fingerprint: ego3s's build marker, and the Trainer's pickled arguments,
# which hold the output folder and logging paths (the same weights saved into two folders would
# otherwise get two fingerprints).
_PROVENANCE_FILES = ("ego3s_build.json", "training_args.bin")
_SMALL_FILE = 64 << 20  # config / tokenizer / processor files are hashed whole below this size
_SAMPLES, _BLOCK = 16, 64 << 10


def _sampled_file_hash(path: Path, h) -> None:
    """Size plus 16 blocks of 64 KiB spread over the file (first and last included): cheap
    (1 MiB read per file), stable across copies (no mtimes), and any retrained checkpoint differs."""
    size = path.stat().st_size
    h.update(f"{path.name}:{size}".encode())
    with open(path, "rb") as f:
        span = max(size - _BLOCK, 0)
        for k in range(_SAMPLES):
            f.seek(span * k // (_SAMPLES - 1) if _SAMPLES > 1 else 0)
            h.update(f.read(_BLOCK))


def model_fingerprint(path_or_model: Any) -> str:
    """A stable hex key (20 chars) of a model.

    For a folder: every config / tokenizer / processor / chat-template file in full, plus each
    weight file's name, size and 16 sampled 64 KiB blocks (not the Trainer's `training_args.bin`) (content, not mtimes: a copied folder
    keeps its fingerprint, a retrained checkpoint does not). For a live model (e.g. the policy
    during RL): its config and, per parameter, name, shape, dtype and 64 evenly spaced values.
    The two kinds are different keys ("dir:" / "live:" prefixes inside the hash): a model loaded
    from a folder does not share the folder's fingerprint.
    """
    h = hashlib.sha256()
    if isinstance(path_or_model, (str, os.PathLike)):
        root = Path(path_or_model)
        if not root.is_dir():
            root = resolve_model_path(path_or_model)  # a Hub id: its cached snapshot
        h.update(b"dir:")
        files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
        for p in files:
            rel = p.relative_to(root).as_posix()
            if p.name in _PROVENANCE_FILES:
                continue  # how the folder was made, not what the model is
            if p.suffix in _WEIGHT_SUFFIXES:
                h.update(rel.encode())
                _sampled_file_hash(p, h)
            elif p.stat().st_size <= _SMALL_FILE:
                h.update(f"{rel}:".encode())
                h.update(p.read_bytes())
        return h.hexdigest()[:20]
    model = path_or_model
    h.update(b"live:")
    config = getattr(model, "config", None)
    if config is not None:
        d = config.to_dict()
        for k in ("_name_or_path", "transformers_version", "dtype", "torch_dtype", "_commit_hash"):
            d.pop(k, None)
        h.update(json.dumps(d, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, p in model.named_parameters():
            flat = p.detach().reshape(-1)
            k = min(64, flat.numel())  # integer spacing: float linspace overshoots on large tensors
            idx = torch.arange(k, device=flat.device) * (flat.numel() - 1) // max(k - 1, 1)
            vals = flat[idx].float().cpu().numpy()
            h.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
            h.update(vals.tobytes())
    return h.hexdigest()[:20]


def load_checkpoint_weights(model, checkpoint: str | os.PathLike) -> None:
    """Load a Trainer checkpoint's weights into `model`, strictly.

    transformers 5 saves Qwen2.5-VL under its legacy key names (`model.layers.*`, `visual.*`) and
    the Trainer's resume loads them non-strictly into the current names
    (`model.language_model.*`, `model.visual.*`): nothing matches, only a warning is printed, and
    a resumed run silently continues from the *initial* weights (huggingface/transformers#43701).
    `from_pretrained` knows the key mapping, so we load through it and copy the tensors over."""
    import torch

    dtypes = {p.dtype for p in model.parameters()}
    dtype = torch.float32 if torch.float32 in dtypes else next(model.parameters()).dtype  # fp32 master weights
    loaded = type(model).from_pretrained(checkpoint, dtype=dtype, local_files_only=True)
    state = loaded.state_dict()
    with torch.no_grad():
        missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(
            f"{checkpoint}: checkpoint does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    del loaded


MASTER_WEIGHTS = ("float32", "bfloat16")


def upcast_trainable(model, master_weights: str = "float32") -> torch.dtype | None:
    """Keep the trainable parameters in float32 while the compute runs in bf16 (autocast).

    A bf16 weight holds 8 significant bits: an AdamW step of size lr changes a weight w only when
    lr > |w| / 256, so at RL learning rates (1e-6 to 1e-5) almost every update of a pure-bf16 model
    rounds away (at 1e-5, 6% of a 0.05-scale layer's weights move in 5 steps; tests/train/test_master_weights.py)
    and training silently does nothing. DeepSpeed and FSDP keep fp32 masters themselves and PEFT
    upcasts LoRA adapters; the plain one-GPU path (TRL, HF Trainer) does not. Returns the dtype the
    trainable weights had (to save the final model in it), or None when nothing was cast."""
    if master_weights not in MASTER_WEIGHTS:
        raise ValueError(f"master_weights must be one of {MASTER_WEIGHTS}, got {master_weights!r}")
    if (
        master_weights != "float32"
        or os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true"
        or os.environ.get("ACCELERATE_USE_FSDP") == "true"
    ):
        return None
    low = None
    for p in model.parameters():
        if p.requires_grad and p.dtype in (torch.bfloat16, torch.float16):
            low = p.dtype
            p.data = p.data.float()
    return low


def downcast(model, dtype: torch.dtype | None) -> None:
    """Undo `upcast_trainable` once training is over, so the final model is saved in the dtype it
    was loaded in (a 7B model in fp32 would be twice the size for no gain at inference)."""
    if dtype is None:
        return
    for p in model.parameters():
        if p.dtype == torch.float32:
            p.data = p.data.to(dtype)
