#!/usr/bin/env bash
# Fetches the zero-shot evaluation sets from their public sources and tokenizes them for a dataset:
#   HellaSwag validation (10,042 items), ARC-Easy test (2,376), PIQA validation (1,838),
# the splits lm-evaluation-harness scores. Needs internet access to github.com, yonatanbisk.com and
# AWS S3 (the ARC archive is 680 MB; only ARC-Easy-Test.jsonl is kept), and a built gqe-data.
#
#   scripts/download_eval_data.sh DATASET_DIR [OUT_DIR]    # OUT_DIR defaults to data/eval
#   then: build/gqe eval runs/NAME --tasks hellaswag=OUT_DIR/hellaswag.jsonl,arc_easy=...,piqa=...
# or set eval.tasks in a config to score them during training.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dataset=${1:?usage: download_eval_data.sh DATASET_DIR [OUT_DIR]}
out=${2:-$root/data/eval}
tool=${GQE_BUILD_DIR:-$root/build}/gqe-data
raw=$out/raw
mkdir -p "$raw"

fetch() {  # url file
  [[ -s $2 ]] && return 0
  echo "[eval] downloading $1"
  curl -fL --retry 3 -o "$2.part" "$1" && mv "$2.part" "$2"
}

fetch https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl "$raw/hellaswag_val.jsonl"
fetch https://yonatanbisk.com/piqa/data/valid.jsonl "$raw/piqa_valid.jsonl"
fetch https://yonatanbisk.com/piqa/data/valid-labels.lst "$raw/piqa_valid-labels.lst"
if [[ ! -s $raw/ARC-Easy-Test.jsonl ]]; then
  zip=$raw/ARC-V1-Feb2018.zip
  fetch https://ai2-public-datasets.s3-us-west-2.amazonaws.com/arc/ARC-V1-Feb2018.zip "$zip"
  echo "6d2d5ab50b2ceec6ba5f79c921be77cf2de712ea25a2b3f4fff3acc101cecfa0  $zip" | sha256sum -c --quiet
  unzip -p "$zip" ARC-V1-Feb2018-2/ARC-Easy/ARC-Easy-Test.jsonl > "$raw/ARC-Easy-Test.jsonl"
  rm -f "$zip"
fi

"$tool" encode-eval --task hellaswag --input "$raw/hellaswag_val.jsonl" --dataset "$dataset" --out "$out/hellaswag.jsonl"
"$tool" encode-eval --task arc_easy --input "$raw/ARC-Easy-Test.jsonl" --dataset "$dataset" --out "$out/arc_easy.jsonl"
"$tool" encode-eval --task piqa --input "$raw/piqa_valid.jsonl" --labels "$raw/piqa_valid-labels.lst" --dataset "$dataset" \
  --out "$out/piqa.jsonl"
echo "[eval] --tasks hellaswag=$out/hellaswag.jsonl,arc_easy=$out/arc_easy.jsonl,piqa=$out/piqa.jsonl"
