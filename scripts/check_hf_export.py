#!/usr/bin/env python3
"""Checks a GQA export with Hugging Face transformers.

Loads EXPORT_DIR (from `gqe export`) as a transformers causal LM, recomputes the run's validation loss
over the same windows gqe uses (docs/data-format.md, "Validation"), and compares it with the
val_loss that gqe logged in RUN_DIR/metrics.jsonl at the exported step. Also checks that the
exported tokenizer gives sentencepiece's ids. Needs `pip install transformers sentencepiece protobuf`
(into the project's .venv, for instance).

Usage: check_hf_export.py EXPORT_DIR RUN_DIR
"""
import json
import pathlib
import sys

import numpy as np
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer


def val_stream(dataset):
    manifest = json.loads((dataset / "manifest.json").read_text())
    parts = []
    for shard in manifest["val"]["shards"]:
        path = dataset / shard["file"]
        header = np.fromfile(path, dtype=np.uint8, count=256)
        width = int(header[12:16].view(np.uint32)[0])
        parts.append(np.fromfile(path, dtype=np.uint16 if width == 2 else np.uint32, offset=256).astype(np.int64))
    return np.concatenate(parts), manifest


def main():
    export_dir, run_dir = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    seq_len, batch = config["data"]["seq_len"], config["eval"]["batch_size"]
    stream, manifest = val_stream(pathlib.Path(config["data"]["dataset"]))
    windows = min(config["eval"]["val_tokens"] // seq_len, (len(stream) - 1) // seq_len)

    model = AutoModelForCausalLM.from_pretrained(export_dir, dtype=torch.float32).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, windows, batch):
            rows = np.stack([stream[w * seq_len: w * seq_len + seq_len + 1] for w in range(start, min(windows, start + batch))])
            tokens = torch.from_numpy(rows)
            logits = model(tokens[:, :-1]).logits.float()
            total += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1),
                                                       reduction="sum").item()
            count += tokens[:, 1:].numel()
    hf = total / count

    step = json.loads((export_dir / "config.json").read_text())["gqe_checkpoint"]["step"]
    logged = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [l for l in logged if "val_loss" in l and l["step"] == step]
    if not logged:
        sys.exit(f"{run_dir}/metrics.jsonl has no val_loss at step {step}: export a checkpoint taken at an evaluation")
    gqe_loss = logged[-1]["val_loss"]
    print(f"validation loss over {windows} windows of {seq_len}: transformers {hf:.6f}, gqe {gqe_loss:.6f}, "
          f"difference {abs(hf - gqe_loss):.2e}")

    import sentencepiece as spm
    text = "The keeper counted 112 steps, twice — and wrote it down."
    sp = spm.SentencePieceProcessor(model_file=str(export_dir / "tokenizer.model"))
    hf_ids = AutoTokenizer.from_pretrained(export_dir, use_fast=False)(text, add_special_tokens=False)["input_ids"]
    print(f"tokenizer: transformers ids {'==' if hf_ids == sp.encode(text) else '!='} sentencepiece ids")
    ok = abs(hf - gqe_loss) < 1e-4 and hf_ids == sp.encode(text)
    print("OK" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
