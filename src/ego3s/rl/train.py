"""The old path of `ego3s.rl.run` (the `train` stage), which the docs once named; import from there."""

from ego3s.rl.run import TrainingConfig, run_training

__all__ = ["TrainingConfig", "run_training"]
