// gqe-data encode: text -> token shards + manifest, on all cores. A reader thread cuts the input
// into chunks of documents, workers parse and tokenize chunks, and the writer takes the results in
// chunk order, so the output (and the first error reported) is the same for any thread count.
// Everything is written into DIR.partial and renamed to DIR at the end: a failed or interrupted
// run leaves no shard or manifest in DIR.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/text_input.h"

namespace gqe {

struct EncodeOptions {
  std::vector<std::string> inputs;  // files, directories, globs
  InputOptions input;
  std::string tokenizer;            // sentencepiece .model
  std::string out_dir;
  uint64_t shard_tokens = 100'000'000;  // a shard closes before the document that would pass this
  double val_fraction = 0.005;          // each document goes to val with this probability (seeded)
  uint64_t seed = 1234;
  int threads = 0;                      // 0: all cores
  bool overwrite = false;
  bool progress = true;                 // a progress line on stderr
  size_t chunk_documents = 4096;        // documents per work item (also cut at ~1 MB of text)
  std::string command;                  // recorded in the manifest
};

struct EncodeSummary {
  uint64_t input_bytes = 0, documents = 0, empty_documents = 0;
  uint64_t train_documents = 0, val_documents = 0, train_tokens = 0, val_tokens = 0;
  size_t train_shards = 0, val_shards = 0;
  double seconds = 0;
};

EncodeSummary encode_dataset(const EncodeOptions& options);

}  // namespace gqe
