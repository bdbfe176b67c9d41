"""`ego3s merge`: turn what training leaves behind into a Hugging Face folder `ego3s eval` loads.

Three inputs, detected from the files present:
- a LoRA adapter (`adapter_config.json`, e.g. `out/final` of a `lora: true` run): folded into the
  base model (`merge_and_unload`);
- a DeepSpeed ZeRO checkpoint (`checkpoint-N` with `latest` and `global_stepN/*_model_states.pt`
  and `*_optim_states.pt`): the fp32 master weights gathered from every rank's shard with
  deepspeed's `get_fp32_state_dict_from_zero_checkpoint` (`pip install 'ego3s[deepspeed]'`);
- an FSDP sharded checkpoint (torch.distributed.checkpoint: a folder with `.metadata`, which
  accelerate writes as `checkpoint-N/pytorch_model_fsdp_0/`): read with `dcp_to_torch_save`.

State dicts go into the model through `from_pretrained`, which knows transformers 5's key
renaming for Qwen2.5-VL (`model.layers.*` / `visual.*` on disk, `model.language_model.*` /
`model.visual.*` in the module), and any missing, unexpected or mis-shaped key is an error: a merge
that silently drops weights is the worst outcome. The folder written is reloaded and compared
tensor by tensor with what was meant to be saved.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import torch

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


class MergeError(ValueError):
    pass


def detect(path: str | Path) -> tuple[str, Path]:
    """(kind, folder) of a checkpoint: kind is lora, deepspeed, fsdp or hf; folder is what that
    kind's reader takes (the checkpoint-N holding `latest` for DeepSpeed, the DCP folder for FSDP)."""
    p = Path(path)
    if not p.is_dir():
        raise MergeError(f"{p}: not a folder")
    if (p / "adapter_config.json").is_file():
        return "lora", p
    if p.name.startswith("global_step") and any(p.glob("*_model_states.pt")):
        return "deepspeed", p.parent
    if (p / "latest").is_file() or any(p.glob("global_step*/*_model_states.pt")):
        return "deepspeed", p
    if (p / ".metadata").is_file():
        return "fsdp", p
    dcp = sorted(d for d in p.glob("pytorch_model_fsdp_*") if (d / ".metadata").is_file())
    if len(dcp) > 1:
        raise MergeError(f"{p}: several FSDP model folders {[d.name for d in dcp]}; pass one of them")
    if dcp:
        return "fsdp", dcp[0]
    if (p / "config.json").is_file() and (any(p.glob("*.safetensors")) or any(p.glob("pytorch_model*.bin"))):
        return "hf", p
    raise MergeError(
        f"{p}: found neither a LoRA adapter (adapter_config.json), a DeepSpeed ZeRO checkpoint "
        "(latest, global_step*/*_model_states.pt), an FSDP checkpoint (.metadata, "
        "pytorch_model_fsdp_*/) nor a Hugging Face model (config.json + weights)"
    )


def merge(
    path: str | Path,
    out: str | Path,
    *,
    base: str | Path | None = None,
    dtype: str = "bfloat16",
    verify: bool = True,
    echo: Callable[[str], None] = print,
) -> dict:
    """Write the merged model and its processor to `out`; returns a summary of what was done.

    `base`: the model the run started from. A LoRA merge needs it unless the adapter names an
    existing folder; sharded checkpoints take their config and processor from it when the
    checkpoint folder lacks them."""
    if dtype not in DTYPES:
        raise MergeError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    out = Path(out)
    if out.exists():
        raise MergeError(f"{out}: exists; remove it or choose another --out")
    kind, folder = detect(path)
    if base is not None and not Path(base).is_dir():
        base = _hub_base(base, f"--base {base}")  # a Hub id in the Hugging Face cache
    report = {"input": str(path), "kind": kind, "out": str(out), "dtype": dtype}
    if kind == "hf":
        raise MergeError(f"{path}: already a Hugging Face model folder (config.json and weights); nothing to merge")
    sources = [folder, folder.parent] + ([Path(base)] if base else [])
    if kind == "lora":
        model, base_dir = _merge_lora(folder, base, echo)
        sources = [folder, Path(base_dir)]
        report["base"] = str(base_dir)
    else:
        if kind == "deepspeed":
            state = _zero_state_dict(folder, echo)
        else:
            state = _dcp_state_dict(folder, echo)
        config_dir = _first_with(sources, "config.json", folder, base)
        model = _model_from_state_dict(config_dir, state, str(folder))
        report["config"] = str(config_dir)
        report["tensors"] = len(state)
        del state
    processor = _processor(sources, folder)
    model = model.to(DTYPES[dtype])
    _save(model, processor, out)
    if verify:
        _verify(model, out, DTYPES[dtype])
        report["verified"] = True
    report["parameters"] = sum(p.numel() for p in model.parameters())
    echo(f"wrote {out} ({report['parameters']:,} parameters, {dtype}{', verified' if verify else ''})")
    return report


def _hub_base(name, what: str) -> Path:
    """A base model named by a Hub id: its snapshot in the Hugging Face cache (see
    `ego3s.models.loading.resolve_model_path`; nothing is downloaded under HF_HUB_OFFLINE=1)."""
    from ego3s.models.loading import resolve_model_path

    try:
        return resolve_model_path(name)
    except FileNotFoundError as e:
        raise MergeError(f"{what}: {e}; pass --base MODEL_DIR") from None


def _merge_lora(folder: Path, base: str | Path | None, echo):
    """The base model with the adapter folded in. The adapter's tensors are loaded strictly: every
    one must land on a LoRA parameter, and every LoRA parameter must get one."""
    from peft import PeftConfig, get_peft_model, set_peft_model_state_dict
    from peft.utils import load_peft_weights
    from transformers import AutoModelForImageTextToText

    cfg = PeftConfig.from_pretrained(str(folder))
    base_dir = Path(base) if base else Path(cfg.base_model_name_or_path or "")
    if not base and cfg.base_model_name_or_path and not base_dir.is_dir():  # adapters usually name a Hub id
        base_dir = _hub_base(
            cfg.base_model_name_or_path, f"{folder}: LoRA adapter over {cfg.base_model_name_or_path!r}"
        )
    if not (base_dir / "config.json").is_file():
        raise MergeError(
            f"{folder}: LoRA adapter over {str(base_dir)!r}, which is not a local model folder; pass --base MODEL_DIR"
        )
    echo(f"found: LoRA adapter ({cfg.peft_type}, r={getattr(cfg, 'r', '?')}) in {folder}, base model {base_dir}")
    model = AutoModelForImageTextToText.from_pretrained(base_dir, dtype=torch.float32, local_files_only=True)
    cfg.inference_mode = True
    peft_model = get_peft_model(model, cfg)
    weights = load_peft_weights(str(folder), device="cpu")
    result = set_peft_model_state_dict(peft_model, weights)
    lora_names = [n for n, _ in peft_model.named_parameters() if "lora_" in n]
    missing = [k for k in result.missing_keys if "lora_" in k]
    if result.unexpected_keys or missing or not lora_names:
        raise MergeError(
            f"{folder}: adapter does not match the base model {base_dir} (unexpected "
            f"{list(result.unexpected_keys)[:3]}, LoRA parameters without weights {missing[:3]})"
        )
    echo(f"loaded {len(weights)} adapter tensors onto {len(lora_names)} LoRA parameters; folding them in")
    return peft_model.merge_and_unload(), base_dir


def _zero_state_dict(folder: Path, echo) -> dict:
    try:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    except ImportError:
        raise MergeError(
            f"{folder}: a DeepSpeed ZeRO checkpoint; reading it needs deepspeed (pip install 'ego3s[deepspeed]')"
        ) from None
    tag = (folder / "latest").read_text().strip() if (folder / "latest").is_file() else None
    if tag is None:
        steps = sorted(folder.glob("global_step*"), key=lambda d: int(d.name[len("global_step") :] or 0))
        tag = steps[-1].name
    echo(f"found: DeepSpeed ZeRO checkpoint {folder / tag}; gathering the fp32 weights from its shards")
    return get_fp32_state_dict_from_zero_checkpoint(str(folder), tag=tag)


def _dcp_state_dict(folder: Path, echo) -> dict:
    """One state dict from a torch.distributed.checkpoint folder (written by any number of ranks)."""
    import tempfile

    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    echo(f"found: FSDP sharded checkpoint (torch.distributed.checkpoint) {folder}; consolidating it")
    with tempfile.TemporaryDirectory() as tmp:
        dcp_to_torch_save(str(folder), f"{tmp}/state.pt")
        state = torch.load(f"{tmp}/state.pt", map_location="cpu", weights_only=True)
    if set(state) == {"model"} and isinstance(state["model"], dict):
        state = state["model"]  # accelerate saves {"model": model.state_dict()}
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _model_from_state_dict(config_dir: Path, state: dict, where: str):
    """Build the model from `config_dir`'s config and `state`, through `from_pretrained` (key
    renaming included), strictly."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING

    config = AutoConfig.from_pretrained(config_dir, local_files_only=True)
    cls = MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING[type(config)]  # the Auto class takes no state_dict alone
    model, info = cls.from_pretrained(
        None, config=config, state_dict=state, dtype=torch.float32, output_loading_info=True
    )
    bad = {k: sorted(map(str, v))[:3] for k, v in info.items() if v}
    if bad:
        hint = (
            " (LoRA keys: this is a LoRA run; merge its adapter folder instead)"
            if any("lora_" in k for k in state)
            else ""
        )
        raise MergeError(f"{where}: the checkpoint does not match the model of {config_dir}: {bad}{hint}")
    return model


def _first_with(folders: list[Path], name: str, folder: Path, base) -> Path:
    for d in folders:
        if (d / name).is_file():
            return d
    raise MergeError(f"{folder}: no {name} beside the checkpoint{'' if base else '; pass --base MODEL_DIR'}")


def _processor(folders: list[Path], folder: Path):
    from transformers import AutoProcessor

    for d in folders:
        if (d / "tokenizer_config.json").is_file():
            try:
                return AutoProcessor.from_pretrained(d, local_files_only=True)
            except (OSError, ValueError):
                continue
    raise MergeError(f"{folder}: no processor found in {[str(d) for d in folders]}; pass --base MODEL_DIR")


def _save(model, processor, out: Path) -> None:
    """Into `<out>.partial`, then renamed: an interrupted merge never leaves a folder that looks done."""
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    tmp.rename(out)


def _verify(model, out: Path, dtype: torch.dtype) -> None:
    """Reload `out` as `ego3s eval` will and require the same tensors under the same names."""
    reloaded = type(model).from_pretrained(out, dtype=dtype, local_files_only=True)
    want, got = model.state_dict(), reloaded.state_dict()
    if set(want) != set(got):
        raise MergeError(
            f"{out}: reloaded model has other keys (missing {sorted(set(want) - set(got))[:3]}, "
            f"extra {sorted(set(got) - set(want))[:3]})"
        )
    diff = [k for k in want if not torch.equal(want[k], got[k])]
    if diff:
        raise MergeError(f"{out}: {len(diff)} tensors differ after reloading, e.g. {diff[:3]}")
