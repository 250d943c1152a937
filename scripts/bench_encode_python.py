#!/usr/bin/env python3
"""The Python baseline for `gqe bench encode`: the tokenizing script a user would otherwise write.

Reads documents from JSON Lines (the text field) or Parquet (the text column), encodes them with the
PyPI `sentencepiece` package in a multiprocessing.Pool of N processes (nanoGPT's and most data
scripts' pattern: chunks of documents to workers, the EOS after each document, uint32 ids written to
one file in input order), and prints one JSON line: documents, tokens, seconds, tokens_per_s.

`--mode threads` instead hands each chunk to sentencepiece's own C++ threads
(`encode(list, num_threads=N)`, one process): the other way a user may go about it.

Usage: bench_encode_python.py INPUT... --tokenizer MODEL [--processes N] [--text-field text]
                              [--out FILE] [--mode pool|threads]
"""
import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time

import numpy as np
import sentencepiece as spm

CHUNK = 1024  # documents per work item

_sp = None  # each pool worker's processor


def _load(model):
    global _sp
    _sp = spm.SentencePieceProcessor(model_file=model)


def encode(sp, texts, threads):
    """The ids of `texts`, the EOS after each document, as one uint32 array."""
    eos = sp.eos_id()
    ids = []
    for piece in sp.encode(texts, num_threads=threads):
        ids.extend(piece)
        ids.append(eos)
    return np.asarray(ids, dtype=np.uint32)


def _pool_encode(texts):
    # One thread per process: the pool is the parallelism.
    return encode(_sp, texts, 1), len(texts)


def documents(paths, field):
    """Chunks of document texts, in input order."""
    for path in paths:
        if path.endswith(".parquet"):
            import pyarrow.parquet as pq
            for batch in pq.ParquetFile(path).iter_batches(batch_size=CHUNK, columns=[field]):
                yield [t for t in batch.column(0).to_pylist() if t]
        else:
            chunk = []
            with open(path, encoding="utf-8") as f:
                for line in f:
                    text = json.loads(line)[field] if line.strip() else None
                    if text:  # empty documents are skipped, as gqe-data skips them
                        chunk.append(text)
                        if len(chunk) == CHUNK:
                            yield chunk
                            chunk = []
            if chunk:
                yield chunk


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--processes", type=int, default=os.cpu_count())
    ap.add_argument("--text-field", default="text")
    ap.add_argument("--out", help="where the ids go (default: a temporary file, removed)")
    ap.add_argument("--mode", choices=["pool", "threads"], default="pool")
    args = ap.parse_args()

    out = open(args.out, "wb") if args.out else tempfile.TemporaryFile()
    tokens = docs = 0
    start = time.perf_counter()
    if args.mode == "pool":
        pool = multiprocessing.Pool(args.processes, initializer=_load, initargs=(args.tokenizer,))
        results = pool.imap(_pool_encode, documents(args.inputs, args.text_field))
    else:
        _load(args.tokenizer)
        results = ((encode(_sp, chunk, args.processes), len(chunk)) for chunk in documents(args.inputs, args.text_field))
    for ids, n in results:
        out.write(ids.tobytes())
        tokens += len(ids)
        docs += n
    if args.mode == "pool":
        pool.close()
        pool.join()
    out.close()
    seconds = time.perf_counter() - start
    print(json.dumps({"documents": docs, "tokens": tokens, "seconds": round(seconds, 3),
                      "tokens_per_s": round(tokens / seconds), "processes": args.processes, "mode": args.mode,
                      "sentencepiece": spm.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
