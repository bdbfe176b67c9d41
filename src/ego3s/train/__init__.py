"""Supervised training loops and the run plumbing every training loop shares.

- `warmup`: the supervised warm-up that makes a random vision tower read clips (the EgoSynth base)
- `vision_pretrain`: the vision tower alone on the interaction annotations, before the warm-up
- `sft`: `ego3s sft`, TRL's SFTTrainer on video (cold starts on reasoning traces)
- `merge`: `ego3s merge`, a LoRA adapter or sharded checkpoint -> one model folder
- `collator`: clips -> teacher-forced batches (warm-up and SFT)
- `plumbing`: LoRA config, checkpoints and resume guard, NaN stop, atomic final save, placement;
  also used by GRPO (`ego3s.rl.run`)
"""
