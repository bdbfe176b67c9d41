"""configs/accelerate/*.yaml load with accelerate's own loader and launch-argument merge, and say
what the example scripts rely on (ZeRO stage, bf16, 8 processes, clipping, FSDP2 wrap classes)."""

import pytest

from helpers import REPO

ROOT = REPO / "configs" / "accelerate"


def _launch_args(path):
    """What `accelerate launch --config_file PATH -m ego3s.cli train` ends up with."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(["--config_file", str(path), "-m", "ego3s.cli", "train"])
    return _validate_launch_command(args)[0]


@pytest.mark.parametrize("name,stage,init", [("zero2", 2, False), ("zero3", 3, True)])
def test_deepspeed_configs(name, stage, init):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    cfg = load_config_from_file(str(ROOT / f"{name}.yaml"))
    assert cfg.distributed_type == DistributedType.DEEPSPEED
    assert cfg.mixed_precision == "bf16" and cfg.num_processes == 8 and cfg.num_machines == 1
    ds = cfg.deepspeed_config
    assert ds["zero_stage"] == stage and ds["zero3_init_flag"] is init
    assert ds["offload_optimizer_device"] == ds["offload_param_device"] == "none"
    assert ds["gradient_clipping"] == 1.0
    assert "gradient_accumulation_steps" not in ds  # "auto": the trainer's value
    args = _launch_args(ROOT / f"{name}.yaml")
    assert args.use_deepspeed and not args.use_fsdp
    assert args.zero_stage == stage and args.gradient_clipping == 1.0 and args.num_processes == 8


def test_fsdp2_config():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType
    from accelerate.utils.launch import prepare_multi_gpu_env
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl

    cfg = load_config_from_file(str(ROOT / "fsdp.yaml"))
    assert cfg.distributed_type == DistributedType.FSDP
    assert cfg.mixed_precision == "bf16" and cfg.num_processes == 8
    f = cfg.fsdp_config
    assert f["fsdp_version"] == 2 and f["fsdp_reshard_after_forward"] is True
    assert f["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    wrap = f["fsdp_transformer_layer_cls_to_wrap"].split(",")
    assert wrap == ["Qwen2_5_VLDecoderLayer", "Qwen2_5_VLVisionBlock"]
    assert all(hasattr(modeling_qwen2_5_vl, c) for c in wrap)  # the class names exist in this transformers
    env = prepare_multi_gpu_env(_launch_args(ROOT / "fsdp.yaml"))
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2"
    assert env["FSDP_SHARDING_STRATEGY"] == "FULL_SHARD" and env["ACCELERATE_MIXED_PRECISION"] == "bf16"
    assert env["FSDP_TRANSFORMER_CLS_TO_WRAP"] == "Qwen2_5_VLDecoderLayer,Qwen2_5_VLVisionBlock"
