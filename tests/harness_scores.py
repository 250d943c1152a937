#!/usr/bin/env python3
"""Scores a `gqe export` with lm-evaluation-harness, offline, on local files in the formats of its
hellaswag, arc_easy and piqa tasks (each task's own YAML, and so its own prompt and clean-up, with
the data files swapped in), and prints JSON: per task the harness's acc, acc_norm, acc_bytes, their
standard errors, and each item's log-likelihoods. The tests compare it with `gqe eval`.

Usage: harness_scores.py EXPORT_DIR WORK_DIR hellaswag=FILE arc_easy=FILE piqa=FILE
"""
import json
import os
import pathlib
import sys

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lm_eval  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

TASK_YAML = {"hellaswag": "hellaswag/hellaswag.yaml", "arc_easy": "arc/arc_easy.yaml", "piqa": "piqa/piqa.yaml"}


def main():
    export, work = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    tasks_dir = pathlib.Path(lm_eval.__file__).parent / "tasks"
    work.mkdir(parents=True, exist_ok=True)
    names = []
    for arg in sys.argv[3:]:
        task, data = arg.split("=", 1)
        name = f"gqe_local_{task}"
        (work / f"{name}.yaml").write_text(
            f"include: {tasks_dir / TASK_YAML[task]}\n"
            f"task: {name}\n"
            "tag: []\n"
            "dataset_path: json\n"
            "dataset_name: null\n"
            f"dataset_kwargs: {{data_files: {{validation: {data}}}}}\n"
            "training_split: null\n"
            "validation_split: validation\n"
            "test_split: null\n"
            "metric_list:\n"
            + "".join(f"  - metric: {m}\n    aggregation: mean\n    higher_is_better: true\n"
                      for m in ("acc", "acc_norm", "acc_bytes")))
        names.append((task, name))
    results = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={export},trust_remote_code=True,dtype=float32",
        tasks=[name for _, name in names], task_manager=TaskManager(include_path=str(work)),
        batch_size=1, device="cpu", log_samples=True, num_fewshot=0)
    out = {}
    for task, name in names:
        r = results["results"][name]
        samples = sorted(results["samples"][name], key=lambda s: s["doc_id"])
        out[task] = {m: r[f"{m},none"] for m in ("acc", "acc_norm", "acc_bytes", "acc_stderr", "acc_norm_stderr",
                                                  "acc_bytes_stderr")}
        out[task]["loglikelihoods"] = [[resp[0][0] for resp in s["resps"]] for s in samples]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
