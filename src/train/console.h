// What a user sees while training: log lines (spdlog, to the console and the run's train.log) and,
// when stdout is a terminal, a progress bar kept on the last line below them.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include <spdlog/logger.h>

#include "config/config.h"

namespace gqe {

class ProgressSink;

class Console {
 public:
  explicit Console(LogLevel level);
  // From now on, also append to this file.
  void add_log_file(const std::filesystem::path& file);
  ~Console();
  spdlog::logger& log() { return *logger_; }
  // The bar: fraction done and a short status; no-op unless stdout is a terminal.
  void progress(double fraction, const std::string& status);
  void clear_progress();

 private:
  std::shared_ptr<ProgressSink> console_;
  std::shared_ptr<spdlog::logger> logger_;
};

}  // namespace gqe
