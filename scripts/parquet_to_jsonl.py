#!/usr/bin/env python3
"""Turns Parquet files (FineWeb-Edu's release format) into gzipped JSON Lines that gqe-data encode reads.

Usage: parquet_to_jsonl.py OUT_DIR FILE.parquet...     (pip install pyarrow)
Writes OUT_DIR/<name>.jsonl.gz per input with one {"text": ...} per row; keeps the "text" column only.
"""
import gzip
import json
import pathlib
import sys

import pyarrow.parquet as pq


def main():
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name in sys.argv[2:]:
        path = pathlib.Path(name)
        target = out / (path.stem + ".jsonl.gz")
        if target.exists():
            continue
        partial = target.with_suffix(".part")
        rows = 0
        with gzip.open(partial, "wt", encoding="utf-8") as f:
            for batch in pq.ParquetFile(path).iter_batches(columns=["text"], batch_size=4096):
                for text in batch.column(0).to_pylist():
                    f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
                    rows += 1
        partial.rename(target)
        print(f"{target}: {rows} documents")


if __name__ == "__main__":
    main()
