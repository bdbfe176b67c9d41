"""The old path of `ego3s.eval.run` (the `eval` stage), which the docs once named; import from there."""

from ego3s.eval.run import EvalConfig, run_eval

__all__ = ["EvalConfig", "run_eval"]
