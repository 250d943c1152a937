#include "train/metrics.h"

#include <algorithm>
#include <chrono>
#include <sstream>

#include <fmt/format.h>

namespace gqe {

MetricsLog::MetricsLog(const std::filesystem::path& file, std::optional<int64_t> resume_step,
                       const std::function<void(const std::string&)>& warn, bool tensorboard) {
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
  if (tensorboard) events_ = std::make_unique<EventWriter>(file.parent_path(), resume_step.value_or(0));
}

MetricsLog::~MetricsLog() = default;

void MetricsLog::sync() {
  file_->sync();
  if (events_) events_->sync();
}

std::vector<std::vector<double>> busiest_expert_shares(const nlohmann::json& router) {
  std::vector<std::vector<double>> layers;
  for (const auto& layer : router["load"]) {
    layers.emplace_back();
    for (const auto& g : layer) {
      const auto load = g.get<std::vector<double>>();
      layers.back().push_back(*std::max_element(load.begin(), load.end()));
    }
  }
  return layers;
}

void MetricsLog::write(const nlohmann::ordered_json& line) {
  file_->append(line.dump() + "\n");
  if (events_) {
    const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    events_->scalars(line["step"].get<int64_t>(), now, metrics_scalars(line));
  }
}

}  // namespace gqe
