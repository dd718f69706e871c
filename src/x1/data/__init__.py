"""Traces → training data: the blueprint's outcome-, process- and trace-based supervision.

Every extractor reads trace records (``x1.trace.read_traces``) and returns plain dataclasses
with ``to_dict()``; ``write_jsonl`` stores them in the JSONL layout that
``datasets.load_dataset("json", data_files=...)`` and the trainers in ``x1.training`` read.
"""

from __future__ import annotations

from x1.data.extract import preference_pairs, process_labels, rewarded_paths, sft_examples, value_targets
from x1.data.rows import PreferencePair, ProcessLabel, RewardedPath, SFTExample, ValueTarget, read_jsonl, write_jsonl
from x1.data.runs import load_records, outcome_rewards
from x1.data.trace_based import journey_chains, trace_samples
from x1.markers import EOIS

__all__ = [
    "EOIS",
    "PreferencePair",
    "ProcessLabel",
    "RewardedPath",
    "SFTExample",
    "ValueTarget",
    "journey_chains",
    "load_records",
    "outcome_rewards",
    "preference_pairs",
    "process_labels",
    "read_jsonl",
    "rewarded_paths",
    "sft_examples",
    "trace_samples",
    "value_targets",
    "write_jsonl",
]
