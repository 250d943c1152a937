#include "checkpoint/checkpoint.h"

#include <algorithm>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/checksum.h"
#include "common/error.h"
#include "common/files.h"
#include "checkpoint/safetensors.h"

namespace fs = std::filesystem;
using nlohmann::ordered_json;

namespace gqe {
namespace {

constexpr int kStateVersion = 1;
const char* const kFiles[] = {"model.safetensors", "optimizer.safetensors"};

ordered_json state_json(const TrainerState& s) {
  return {{"format", "gqe-checkpoint"},
          {"version", kStateVersion},
          {"step", s.step},
          {"tokens", s.tokens},
          {"loader", {{"epoch", s.loader.epoch}, {"cursor", s.loader.cursor}, {"samples_per_epoch", s.samples_per_epoch}}},
          {"dataset_id", s.dataset_id},
          {"clip", {{"initialized", s.clip.initialized}, {"mean", s.clip.mean}, {"var", s.clip.var},
                    {"warmup_norms", s.clip.warmup_norms}}},
          {"skipped_steps", s.skipped_steps},
          {"skipped_in_a_row", s.skipped_in_a_row},
          {"elapsed_s", s.elapsed_s},
          {"rng", {{"cpu", s.cpu_rng}, {"cuda", s.cuda_rng}}}};
}

TrainerState parse_state(const nlohmann::json& j) {
  TrainerState s;
  s.step = j.at("step").get<int64_t>();
  s.tokens = j.at("tokens").get<int64_t>();
  s.loader.epoch = j.at("loader").at("epoch").get<uint64_t>();
  s.loader.cursor = j.at("loader").at("cursor").get<uint64_t>();
  s.samples_per_epoch = j.at("loader").at("samples_per_epoch").get<uint64_t>();
  s.dataset_id = j.at("dataset_id").get<std::string>();
  const auto& c = j.at("clip");
  s.clip.initialized = c.at("initialized").get<bool>();
  s.clip.mean = c.at("mean").get<double>();
  s.clip.var = c.at("var").get<double>();
  s.clip.warmup_norms = c.at("warmup_norms").get<std::vector<double>>();
  s.skipped_steps = j.at("skipped_steps").get<int64_t>();
  s.skipped_in_a_row = j.at("skipped_in_a_row").get<int64_t>();
  s.elapsed_s = j.at("elapsed_s").get<double>();
  // One generator state per rank; a single string is one rank's (as the first version wrote it).
  for (auto [key, out] : {std::pair{"cpu", &s.cpu_rng}, std::pair{"cuda", &s.cuda_rng}}) {
    const auto& v = j.at("rng").at(key);
    *out = v.is_string() ? (v.get<std::string>().empty() ? std::vector<std::string>{} : std::vector<std::string>{v.get<std::string>()})
                         : v.get<std::vector<std::string>>();
  }
  return s;
}

// Complete-looking checkpoint directories, newest first.
std::vector<std::pair<int64_t, fs::path>> checkpoint_dirs(const fs::path& run_dir) {
  std::vector<std::pair<int64_t, fs::path>> dirs;
  const fs::path root = run_dir / "checkpoints";
  if (!fs::is_directory(root)) return dirs;
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string name = e.path().filename().string();
    const std::string digits = name.rfind("step_", 0) == 0 ? name.substr(5) : "";
    if (!e.is_directory() || digits.empty() || digits.size() > 18 ||
        !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
      continue;  // not ours, or a save's leftover (.step_N.tmp, step_N.old)
    dirs.emplace_back(std::stoll(digits), e.path());
  }
  std::sort(dirs.begin(), dirs.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  return dirs;
}

}  // namespace

void load_model_weights(torch::nn::Module& model, const std::map<std::string, at::Tensor>& weights, const std::string& where) {
  at::NoGradGuard no_grad;
  for (auto& p : model.named_parameters()) {
    const auto it = weights.find(p.key());
    if (it == weights.end()) throw UserError(fmt::format("{}: model.safetensors lacks {}", where, p.key()));
    if (it->second.sizes() != p.value().sizes())
      throw UserError(fmt::format("{}: {} has another shape than the model of the config", where, p.key()));
    p.value().copy_(it->second);
  }
}

std::optional<TrainerState> peek_latest_state(const fs::path& run_dir) {
  const fs::path latest = run_dir / "checkpoints" / "latest";
  if (!fs::exists(latest)) return std::nullopt;
  std::string name = read_file(latest);
  name.erase(name.find_last_not_of(" \n") + 1);
  const fs::path state = run_dir / "checkpoints" / name / "state.json";
  if (!fs::exists(state)) return std::nullopt;
  try {
    return parse_state(nlohmann::json::parse(read_file(state)));
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
}

std::string trainer_state_json(const TrainerState& state) { return state_json(state).dump(); }
TrainerState parse_trainer_state(const std::string& json) { return parse_state(nlohmann::json::parse(json)); }

std::string checkpoint_name(int64_t step) { return fmt::format("step_{:08d}", step); }

fs::path save_checkpoint(const fs::path& run_dir, const TrainerState& state,
                         const std::vector<std::pair<std::string, at::Tensor>>& model,
                         const std::map<std::string, at::Tensor>& optimizer, int64_t keep) {
  const fs::path root = run_dir / "checkpoints";
  const fs::path final_dir = root / checkpoint_name(state.step);
  {
    // Built under .step_N.tmp, which a failure removes; state.json last: its presence marks completeness.
    StagedDir staged(final_dir, root / fmt::format(".{}.tmp", checkpoint_name(state.step)));
    const fs::path& tmp = staged.path();
    write_safetensors(tmp / kFiles[0], model, {{"format", "pt"}});
    write_safetensors(tmp / kFiles[1], {optimizer.begin(), optimizer.end()}, {{"format", "pt"}});
    ordered_json j = state_json(state);
    for (const char* name : kFiles)
      j["files"][name] = {{"bytes", fs::file_size(tmp / name)}, {"xxh3", hex64(file_checksum(tmp / name))}};
    write_file_atomic(tmp / "state.json", j.dump(2) + "\n");
    staged.commit();
  }
  try {
    write_file_atomic(root / "latest", checkpoint_name(state.step) + "\n");
  } catch (const IoError&) {
    // `latest` must name the newest checkpoint (gqe experiment reads it): without it, this one goes.
    remove_tree(final_dir);
    throw;
  }

  // Keep the newest `keep`; drop leftovers of interrupted saves.
  const auto dirs = checkpoint_dirs(run_dir);
  for (size_t i = static_cast<size_t>(std::max<int64_t>(keep, 1)); i < dirs.size(); ++i) remove_tree(dirs[i].second);
  for (const auto& e : fs::directory_iterator(root))
    if (e.path().filename().string().ends_with(".tmp") || e.path().filename().string().ends_with(".old")) remove_tree(e.path());
  return final_dir;
}

TrainerState verify_checkpoint(const fs::path& dir) {
  const std::string where = dir.string();
  if (!fs::is_directory(dir)) throw UserError(fmt::format("{}: no such checkpoint directory", where));
  if (!fs::exists(dir / "state.json"))
    throw UserError(fmt::format("{}: incomplete checkpoint (no state.json; the save was interrupted)", where));
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(dir / "state.json"));
  } catch (const nlohmann::json::exception&) {
    throw UserError(fmt::format("{}: state.json is not valid JSON", where));
  }
  TrainerState state;
  try {
    if (j.at("format") != "gqe-checkpoint" || j.at("version") != kStateVersion)
      throw UserError(fmt::format("{}: not a gqe checkpoint of version {}", where, kStateVersion));
    state = parse_state(j);
    for (const char* name : kFiles) {
      const auto& f = j.at("files").at(name);
      const fs::path file = dir / name;
      if (!fs::exists(file)) throw UserError(fmt::format("{}: {} is missing", where, name));
      if (fs::file_size(file) != f.at("bytes").get<uint64_t>())
        throw UserError(fmt::format("{}: {} has {} bytes, state.json says {} (truncated?)", where, name,
                                    fs::file_size(file), f.at("bytes").get<uint64_t>()));
      if (hex64(file_checksum(file)) != f.at("xxh3").get<std::string>())
        throw UserError(fmt::format("{}: {} does not match its checksum (damaged)", where, name));
    }
  } catch (const nlohmann::json::exception& e) {
    throw UserError(fmt::format("{}: state.json lacks a field ({})", where, e.what()));
  }
  return state;
}

Checkpoint load_checkpoint(const fs::path& dir) {
  Checkpoint c;
  c.dir = dir;
  c.state = verify_checkpoint(dir);
  c.model = read_safetensors(dir / kFiles[0]);
  c.optimizer = read_safetensors(dir / kFiles[1]);
  return c;
}

std::optional<TrainerState> verified_latest_state(const fs::path& run_dir) {
  const auto dirs = checkpoint_dirs(run_dir);
  if (dirs.empty()) return std::nullopt;
  try {
    return verify_checkpoint(dirs.front().second);
  } catch (const UserError&) {
    return std::nullopt;
  }
}

std::optional<Checkpoint> load_latest_checkpoint(const fs::path& run_dir,
                                                 const std::function<void(const std::string&)>& warn) {
  for (const auto& [step, dir] : checkpoint_dirs(run_dir)) {
    try {
      return load_checkpoint(dir);
    } catch (const UserError& e) {
      warn(fmt::format("skipping a damaged checkpoint: {}", e.what()));
    }
  }
  return std::nullopt;
}

}  // namespace gqe
