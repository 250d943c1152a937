#include "bench/encode_bench.h"

#include <unistd.h>

#include <chrono>
#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/process.h"
#include "data/dataset.h"
#include "data/text_input.h"
#include "data/tokenizer.h"

namespace gqe {
namespace {

namespace fs = std::filesystem;

// One command's wall time, from start to exit; the output when it fails.
std::pair<double, std::string> timed(const std::string& command, const std::string& what) {
  const auto start = std::chrono::steady_clock::now();
  const CommandOutput r = run_shell(command);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (r.status != 0) {  // one line: the command and the last line it printed (Python's exception)
    std::string last = r.output.substr(0, r.output.find_last_not_of("\n") + 1);
    last = last.substr(last.rfind('\n') + 1);
    throw UserError(fmt::format("bench encode: {} failed: {} ({})", what, last.empty() ? "no output" : last, command));
  }
  return {seconds, r.output};
}

// A scratch directory for gqe-data's shards, removed however the benchmark ends.
struct Scratch {
  fs::path path = fs::temp_directory_path() / fmt::format("gqe-bench-encode-{}", ::getpid());
  Scratch() { fs::create_directories(path); }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

}  // namespace

std::vector<EncodeRun> bench_encode(const EncodeBenchOptions& o) {
  // Both get the files gqe-data would read (directories and globs expanded), in its order.
  std::string inputs;
  for (const std::string& in : expand_inputs(o.inputs)) inputs += " " + shell_quoted(in);
  const Scratch scratch;
  const fs::path out = scratch.path / "shards";
  const std::string gqe_data = fmt::format(
      "{} encode{} --tokenizer {} --text-field {} --threads {} --val-fraction 0 --overwrite --quiet --out {}",
      shell_quoted((executable_directory() / "gqe-data").string()), inputs, shell_quoted(o.tokenizer),
      shell_quoted(o.text_field), o.threads, shell_quoted(out.string()));
  auto python = [&](const char* mode) {
    return fmt::format("{} {}{} --tokenizer {} --text-field {} --processes {} --mode {}", shell_quoted(python_executable()),
                       shell_quoted((scripts_directory() / "bench_encode_python.py").string()), inputs,
                       shell_quoted(o.tokenizer), shell_quoted(o.text_field), o.threads, mode);
  };
  std::vector<EncodeRun> runs;
  for (int r = 0; r < o.repeats; ++r) {
    EncodeRun ours{"gqe-data", fmt::format("sentencepiece {} (sdist)", sentencepiece_version()), r};
    ours.seconds = timed(gqe_data, "gqe-data encode").first;
    const Manifest m = read_manifest(out);
    ours.tokens = m.train.tokens + m.val.tokens;
    runs.push_back(ours);
    for (const char* mode : {"pool", "threads"}) {
      const auto [seconds, output] = timed(python(mode), fmt::format("scripts/bench_encode_python.py --mode {}", mode));
      const auto report = nlohmann::json::parse(output.substr(output.rfind('{')));
      EncodeRun theirs{std::string("python-") + mode,
                       "sentencepiece " + report.at("sentencepiece").get<std::string>() + " (PyPI wheel)", r, seconds,
                       report.at("tokens").get<uint64_t>()};
      runs.push_back(theirs);
    }
  }
  return runs;
}

}  // namespace gqe
