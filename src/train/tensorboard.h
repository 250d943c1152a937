// TensorBoard event files, written by hand: TFRecord framing (length, masked CRC-32C, data, masked
// CRC-32C) of Event protocol buffers holding scalar summaries. No TensorFlow, no protobuf library;
// the tests read the files back with the tensorboard package. Appended through AppendFile, so a
// record is written whole or not at all, like a line of metrics.jsonl.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/files.h"

namespace gqe {

using Scalars = std::vector<std::pair<std::string, double>>;

class EventWriter {
 public:
  // A new event file in `dir` (events.out.tfevents.SECONDS.MICROS.HOST.gqe, so that files sort in
  // the order they were started) for the steps after `after_step`: TensorBoard drops what earlier
  // files of the directory hold from there on (a SessionLog START, as TensorFlow writes on a
  // restart), so a resumed run reads as one.
  EventWriter(const std::filesystem::path& dir, int64_t after_step);

  void scalars(int64_t step, double wall_time, const Scalars& values);
  void sync() { file_->sync(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  void record(const std::string& event);
  std::filesystem::path path_;
  std::optional<AppendFile> file_;
};

// What TensorBoard shows of a metrics.jsonl line: each number at the top level (not the step or
// elapsed_s, which TensorBoard has as the event's wall time),
// tasks/TASK/METRIC, tasks_average/METRIC, and per GQE layer the router's entropy and the share of
// tokens its busiest expert took (router/entropy/layer_L, router/busiest_expert/layer_L).
Scalars metrics_scalars(const nlohmann::json& line);

// CRC-32C (Castagnoli), as TFRecord frames use it (before masking).
uint32_t crc32c(const std::string& bytes);

}  // namespace gqe
