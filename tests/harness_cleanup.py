#!/usr/bin/env python3
"""Reads a JSON list of strings on stdin and prints, for each, what lm-evaluation-harness's HellaSwag
clean-up (its own preprocess()) and Python's str.capitalize() make of it: the references of
gqe's C++ versions (tests/eval_cli_test.cpp)."""
import json
import sys

from lm_eval.tasks.hellaswag.utils import preprocess

print(json.dumps([[preprocess(s), s.capitalize()] for s in json.load(sys.stdin)], ensure_ascii=False))
