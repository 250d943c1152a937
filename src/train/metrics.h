// metrics.jsonl: one JSON object per line (optimizer steps, evaluations), flushed as written, so
// that plots can follow a run live. On resume, lines past the checkpoint are dropped first: the
// file then reads exactly as if the run had never stopped.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <optional>

#include <nlohmann/json.hpp>

namespace gqe {

class MetricsLog {
 public:
  // resume_step: keep only lines whose "step" is at most this (nothing: start a new file).
  MetricsLog(const std::filesystem::path& file, std::optional<int64_t> resume_step);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;

  void write(const nlohmann::ordered_json& line);

 private:
  std::FILE* file_ = nullptr;
};

}  // namespace gqe
