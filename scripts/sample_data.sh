#!/usr/bin/env bash
# The sample dataset of configs/tiny/*.yaml, made once and reused: the corpus
# (get_sample_corpus.sh), a 4096-token tokenizer, and train/val shards in data/sample/shards.
# Needs the built gqe-data (scripts/setup.sh).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tool=${GQE_BUILD_DIR:-$root/build}/gqe-data
sample=$root/data/sample
"$root/scripts/get_sample_corpus.sh"
if [[ ! -f $sample/tokenizer.model ]]; then
  "$tool" train-tokenizer "$sample"/*.jsonl --vocab-size 4096 --out "$sample/tokenizer"
fi
if [[ ! -f $sample/shards/manifest.json ]]; then
  "$tool" encode "$sample"/*.jsonl --tokenizer "$sample/tokenizer.model" --out "$sample/shards" --val-fraction 0.02 --quiet
fi
echo "[sample] data/sample/shards is ready"
