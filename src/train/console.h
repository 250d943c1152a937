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
class LogFileSink;

class Console {
 public:
  explicit Console(LogLevel level);
  // From now on, also append to this file (a line that cannot be written throws IoError from the
  // logging call).
  void add_log_file(const std::filesystem::path& file);
  // Makes the log file's lines durable (with each checkpoint).
  void sync_log_file();
  ~Console();
  spdlog::logger& log() { return *logger_; }
  // The bar: fraction done and a short status; no-op unless stdout is a terminal.
  void progress(double fraction, const std::string& status);
  void clear_progress();

 private:
  std::shared_ptr<ProgressSink> console_;
  std::shared_ptr<LogFileSink> file_;
  std::shared_ptr<spdlog::logger> logger_;
};

}  // namespace gqe
