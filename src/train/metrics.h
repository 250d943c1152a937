// metrics.jsonl: one JSON object per line (optimizer steps, evaluations), written as each happens,
// so that plots can follow a run live (and, with log.tensorboard, TensorBoard: the same numbers in
// an event file beside it). A line is appended whole or not at all (AppendFile). On
// resume, lines past the checkpoint are dropped first: the file then reads exactly as if the run
// had never stopped.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/files.h"
#include "train/tensorboard.h"

namespace gqe {

class MetricsLog {
 public:
  // resume_step: keep only lines whose "step" is at most this (nothing: start a new file). A line
  // that is not JSON (torn by a kill -9 mid-write) is dropped and reported to `warn`.
  // tensorboard: also write each line's scalars to a TensorBoard event file beside it.
  MetricsLog(const std::filesystem::path& file, std::optional<int64_t> resume_step,
             const std::function<void(const std::string&)>& warn = {}, bool tensorboard = false);
  ~MetricsLog();

  void write(const nlohmann::ordered_json& line);
  void sync();

 private:
  std::optional<AppendFile> file_;
  std::unique_ptr<EventWriter> events_;
};

// A metrics line's "router" entry as each layer's groups' busiest expert's share of the group's
// tokens (k/M is balanced, 1 a collapsed router).
std::vector<std::vector<double>> busiest_expert_shares(const nlohmann::json& router);

}  // namespace gqe
