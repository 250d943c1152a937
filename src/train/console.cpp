#include "train/console.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <mutex>

#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/basic_file_sink.h>

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

Console::Console(LogLevel level) : console_(std::make_shared<ProgressSink>()) {
  logger_ = std::make_shared<spdlog::logger>("gqe", console_);
  logger_->set_pattern("[%Y-%m-%d %H:%M:%S] [%l] %v");
  logger_->set_level(level == LogLevel::debug  ? spdlog::level::debug
                     : level == LogLevel::info ? spdlog::level::info
                     : level == LogLevel::warn ? spdlog::level::warn
                                               : spdlog::level::err);
  logger_->flush_on(spdlog::level::info);
}

Console::~Console() { clear_progress(); }

void Console::add_log_file(const std::filesystem::path& file) {
  auto sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(file.string());
  sink->set_pattern("[%Y-%m-%d %H:%M:%S] [%l] %v");
  logger_->sinks().push_back(sink);
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
