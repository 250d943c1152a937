// gqe bench encode: gqe-data encode against the Python a user would otherwise write
// (scripts/bench_encode_python.py: the PyPI sentencepiece in a process pool, and with its own
// threads), on the same inputs and cores, runs interleaved so that both see the same machine.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace gqe {

struct EncodeBenchOptions {
  std::vector<std::string> inputs;  // as gqe-data encode takes them
  std::string tokenizer;
  std::string text_field = "text";
  int threads = 1;  // gqe-data's threads and Python's processes / threads
  int repeats = 3;
};

struct EncodeRun {
  std::string tool;      // "gqe-data", "python-pool", "python-threads"
  std::string library;   // the sentencepiece it encoded with
  int repeat = 0;
  double seconds = 0;    // the whole command, start-up included
  uint64_t tokens = 0;   // EOS included, one per document
};

// Runs every tool `repeats` times in turn; throws UserError when a tool fails (one line: the
// command and the last line it printed).
std::vector<EncodeRun> bench_encode(const EncodeBenchOptions& options);

}  // namespace gqe
