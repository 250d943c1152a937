#!/usr/bin/env python3
"""Checks a `gqe export` (GQA or GQE) with Hugging Face transformers.

Loads EXPORT_DIR as a transformers causal LM (GQE through the export's modeling_gqe.py, with
trust_remote_code), recomputes the run's validation loss over the same windows gqe uses
(docs/data-format.md, "Validation") and compares it with the val_loss gqe logged in
RUN_DIR/metrics.jsonl at the exported step. With --greedy, also continues the ids of
`gqe sample --ids` greedily and compares them with gqe's. With tokenizer.json in the export, checks
that the fast tokenizer gives gqe's ids (--texts: a JSON file of [text, ids] pairs, from the
tokenizer gqe trained). The project's venv has what it needs (scripts/setup.sh installs it).

Usage: check_hf_export.py EXPORT_DIR RUN_DIR [--greedy SAMPLE_JSON] [--texts PAIRS_JSON] [--json]
"""
import argparse
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
    return np.concatenate(parts)


def validation_loss(model, run_dir):
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    seq_len, batch = config["data"]["seq_len"], config["eval"]["batch_size"]
    stream = val_stream(pathlib.Path(config["data"]["dataset"]))
    windows = min(config["eval"]["val_tokens"] // seq_len, (len(stream) - 1) // seq_len)
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, windows, batch):
            rows = np.stack([stream[w * seq_len: w * seq_len + seq_len + 1] for w in range(start, min(windows, start + batch))])
            tokens = torch.from_numpy(rows)
            logits = model(tokens[:, :-1]).logits.float()
            total += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1),
                                                       reduction="sum").item()
            count += tokens[:, 1:].numel()
    return total / count, windows, seq_len


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("export_dir", type=pathlib.Path)
    parser.add_argument("run_dir", type=pathlib.Path)
    parser.add_argument("--greedy", type=pathlib.Path, help="a line of `gqe sample --temperature 0 --ids`")
    parser.add_argument("--texts", type=pathlib.Path, help="JSON [[text, ids], ...] from gqe's tokenizer")
    parser.add_argument("--json", action="store_true", help="print the numbers as one JSON object")
    args = parser.parse_args()

    model = AutoModelForCausalLM.from_pretrained(args.export_dir, dtype=torch.float32, trust_remote_code=True).eval()
    hf, windows, seq_len = validation_loss(model, args.run_dir)
    step = json.loads((args.export_dir / "config.json").read_text())["gqe_checkpoint"]["step"]
    logged = [json.loads(l) for l in (args.run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [l for l in logged if "val_loss" in l and l["step"] == step]
    if not logged:
        sys.exit(f"{args.run_dir}/metrics.jsonl has no val_loss at step {step}: export a checkpoint taken at an evaluation")
    gqe_loss = logged[-1]["val_loss"]
    report = {"model": type(model).__name__, "windows": windows, "val_loss_transformers": hf, "val_loss_gqe": gqe_loss}
    ok = abs(hf - gqe_loss) <= 1e-5 * abs(gqe_loss)

    if args.greedy:
        sample = json.loads(args.greedy.read_text())
        prompt = torch.tensor([sample["prompt"]])
        with torch.no_grad():
            out = model.generate(prompt, max_new_tokens=len(sample["generated"]), do_sample=False)
        report["generated_transformers"] = out[0, prompt.shape[1]:].tolist()
        report["generated_gqe"] = sample["generated"]
        ok = ok and report["generated_transformers"] == sample["generated"]

    if args.texts:
        tokenizer = AutoTokenizer.from_pretrained(args.export_dir, trust_remote_code=True)
        report["tokenizer"] = type(tokenizer).__name__
        report["tokenizer_mismatches"] = [text for text, ids in json.loads(args.texts.read_text())
                                          if tokenizer(text)["input_ids"] != [tokenizer.bos_token_id] + ids]
        ok = ok and not report["tokenizer_mismatches"]

    if args.json:
        print(json.dumps(report))
    else:
        print(f"{report['model']}: validation loss over {windows} windows of {seq_len}: transformers {hf:.6f}, "
              f"gqe {gqe_loss:.6f}, difference {abs(hf - gqe_loss):.2e}")
        if args.greedy:
            same = report["generated_transformers"] == sample["generated"]
            print(f"greedy continuation: transformers {'==' if same else '!='} gqe sample")
        if args.texts:
            print(f"tokenizer ({report['tokenizer']}): {len(report['tokenizer_mismatches'])} texts with other ids than gqe's")
        print("OK" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
