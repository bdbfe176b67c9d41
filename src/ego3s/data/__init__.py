"""Samples, their I/O, video decoding and the data sources (EgoSynth, Ego4D)."""

from ego3s.data.io import from_dataset, read_jsonl, to_dataset, write_jsonl
from ego3s.data.schema import Interaction, InteractionObject, Sample, SampleError, TimedBox

__all__ = [
    "Interaction",
    "InteractionObject",
    "Sample",
    "SampleError",
    "TimedBox",
    "read_jsonl",
    "write_jsonl",
    "to_dataset",
    "from_dataset",
]
