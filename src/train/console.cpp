#include "train/console.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <mutex>
#include <stdexcept>

#include <spdlog/sinks/base_sink.h>

#include "common/files.h"

namespace gqe {

// stdout sink that redraws the progress line under each message on a terminal.
class ProgressSink : public spdlog::sinks::base_sink<std::mutex> {
 public:
  ProgressSink() : tty_(::isatty(1)) {}

  void set_status(std::string line) {
    std::lock_guard lock(this->mutex_);
    status_ = std::move(line);
    redraw();
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t formatted;
    this->formatter_->format(msg, formatted);
    if (tty_ && !status_.empty()) std::fputs("\r\033[K", stdout);
    std::fwrite(formatted.data(), 1, formatted.size(), stdout);
    redraw();
  }
  void flush_() override { std::fflush(stdout); }

 private:
  void redraw() {
    if (!tty_ || status_.empty()) return;
    std::fputs("\r\033[K", stdout);
    std::fputs(status_.c_str(), stdout);
    std::fflush(stdout);
  }
  bool tty_;
  std::string status_;
};

// train.log: each message appended whole (AppendFile); a failed write throws IoError.
class LogFileSink : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit LogFileSink(const std::filesystem::path& file) : file_(file, /*truncate=*/false) {}
  void sync() {
    std::lock_guard lock(this->mutex_);
    file_.sync();
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t formatted;
    this->formatter_->format(msg, formatted);
    file_.append(std::string_view(formatted.data(), formatted.size()));
  }
  void flush_() override {}  // appends go straight to the file; sync() makes them durable

 private:
  AppendFile file_;
};

Console::Console(LogLevel level) : console_(std::make_shared<ProgressSink>()) {
  logger_ = std::make_shared<spdlog::logger>("gqe", console_);
  // spdlog reports a sink's exception to this handler from inside its catch block: rethrowing it
  // makes a log line that cannot be written stop the command (the default only prints a warning).
  logger_->set_error_handler([](const std::string& message) {
    if (std::current_exception()) std::rethrow_exception(std::current_exception());
    throw std::runtime_error(message);
  });
  logger_->set_pattern("[%Y-%m-%d %H:%M:%S] [%l] %v");
  logger_->set_level(level == LogLevel::debug  ? spdlog::level::debug
                     : level == LogLevel::info ? spdlog::level::info
                     : level == LogLevel::warn ? spdlog::level::warn
                                               : spdlog::level::err);
  logger_->flush_on(spdlog::level::info);
}

Console::~Console() { clear_progress(); }

void Console::add_log_file(const std::filesystem::path& file) {
  file_ = std::make_shared<LogFileSink>(file);
  file_->set_pattern("[%Y-%m-%d %H:%M:%S] [%l] %v");
  logger_->sinks().push_back(file_);
}

void Console::sync_log_file() {
  if (file_) file_->sync();
}

void Console::progress(double fraction, const std::string& status) {
  constexpr int kWidth = 30;
  const auto filled = static_cast<size_t>(std::clamp(static_cast<int>(fraction * kWidth + 0.5), 0, kWidth));
  std::string bar = "[";
  bar.append(filled, '#').append(kWidth - filled, '.').append("] ").append(status);
  console_->set_status(bar);
}

void Console::clear_progress() {
  console_->set_status("");
  if (::isatty(1)) {
    std::fputs("\r\033[K", stdout);
    std::fflush(stdout);
  }
}

}  // namespace gqe
