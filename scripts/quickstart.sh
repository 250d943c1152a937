#!/usr/bin/env bash
# From a fresh machine to a GQA-vs-GQE comparison on a CPU: installs what is missing and builds
# (the first time: a few minutes, mostly the torch wheel), assembles the sample corpus, trains a
# tokenizer and encodes shards (about a minute), then trains the tiny GQA and GQE arms on the same
# data and budget, evaluates and compares them (about 3 minutes on 2 cores). Re-running reuses
# everything already done; Ctrl-C stops cleanly and the next run continues.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
scripts/setup.sh
scripts/sample_data.sh
build/gqe experiment run configs/experiments/tiny.yaml
cat <<'TXT'

What you just saw: two ~1.3M-parameter decoders trained on the same 1M tokens in the same order,
one with grouped-query attention (4 query heads in 2 groups), one with Grouped Query Experts (a
router picks 1 of the 2 query heads per group and token, plus a shared head: 3 of 4 heads attend).
  table:  runs/tiny/comparison/comparison.md      (also .csv)
  plots:  runs/tiny/comparison/loss.png, loss_delta.png, lr.png, router_gqe.png
  runs:   runs/tiny/{gqa,gqe}/  (metrics.jsonl, train.log, checkpoints/, eval.json)
Next: build/gqe sample runs/tiny/gqe --prompt "And it came to pass" ;
      docs/reproducing-the-paper.md for the 250M runs on GPUs.
TXT
