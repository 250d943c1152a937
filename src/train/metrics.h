// metrics.jsonl: one JSON object per line (optimizer steps, evaluations), written as each happens,
// so that plots can follow a run live. A line is appended whole or not at all (AppendFile). On
// resume, lines past the checkpoint are dropped first: the file then reads exactly as if the run
// had never stopped.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "common/files.h"

namespace gqe {

class MetricsLog {
 public:
  // resume_step: keep only lines whose "step" is at most this (nothing: start a new file). A line
  // that is not JSON (torn by a kill -9 mid-write) is dropped and reported to `warn`.
  MetricsLog(const std::filesystem::path& file, std::optional<int64_t> resume_step,
             const std::function<void(const std::string&)>& warn = {});

  void write(const nlohmann::ordered_json& line);
  void sync() { file_->sync(); }

 private:
  std::optional<AppendFile> file_;
};

}  // namespace gqe
