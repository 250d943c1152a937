#include "train/metrics.h"

#include <sstream>

#include <fmt/format.h>

namespace gqe {

MetricsLog::MetricsLog(const std::filesystem::path& file, std::optional<int64_t> resume_step,
                       const std::function<void(const std::string&)>& warn) {
  if (resume_step && std::filesystem::exists(file)) {
    std::istringstream in(read_file(file));
    std::string kept;
    int64_t number = 0;
    for (std::string line; std::getline(in, line);) {
      ++number;
      if (line.empty()) continue;
      const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded() || !j.is_object() || !j.contains("step") || !j["step"].is_number_integer()) {
        if (warn) warn(fmt::format("{}:{}: dropped a line that is not a whole metrics record", file.string(), number));
        continue;
      }
      if (j["step"].get<int64_t>() <= *resume_step) kept += line + "\n";
    }
    write_file_atomic(file, kept);
  }
  file_.emplace(file, /*truncate=*/!resume_step);
}

void MetricsLog::write(const nlohmann::ordered_json& line) { file_->append(line.dump() + "\n"); }

}  // namespace gqe
