#!/usr/bin/env python3
"""Prints the scalars TensorBoard reads from a directory of event files, as JSON {tag: [[step, value], ...]}:
what the tests compare with metrics.jsonl. Usage: read_tensorboard.py DIR"""
import json
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

events = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})  # 0: keep every event
events.Reload()
print(json.dumps({tag: [[e.step, e.value] for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}))
