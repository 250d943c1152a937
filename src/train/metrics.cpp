#include "train/metrics.h"

#include <cerrno>
#include <sstream>
#include <system_error>

#include "common/files.h"

namespace gqe {

MetricsLog::MetricsLog(const std::filesystem::path& file, std::optional<int64_t> resume_step) {
  if (resume_step && std::filesystem::exists(file)) {
    std::istringstream in(read_file(file));
    std::string kept;
    for (std::string line; std::getline(in, line);) {
      if (line.empty()) continue;
      const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded()) break;  // a line torn by a kill: nothing after it is trusted
      if (j.contains("step") && j["step"].get<int64_t>() <= *resume_step) kept += line + "\n";
    }
    write_file_atomic(file, kept);
  }
  file_ = std::fopen(file.c_str(), resume_step ? "a" : "w");
  if (!file_) throw std::system_error(errno, std::generic_category(), "cannot write " + file.string());
}

MetricsLog::~MetricsLog() {
  if (file_) std::fclose(file_);
}

void MetricsLog::write(const nlohmann::ordered_json& line) {
  const std::string text = line.dump() + "\n";
  std::fwrite(text.data(), 1, text.size(), file_);
  std::fflush(file_);
}

}  // namespace gqe
