#include "experiment/experiment.h"

#include <yaml-cpp/yaml.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <csignal>
#include <cstdlib>
#include <sstream>

#include "common/error.h"
#include "common/files.h"
#include "common/process.h"
#include "common/run_lock.h"
#include "dist/launcher.h"
#include "dist/rendezvous.h"
#include "experiment/compare.h"
#include "checkpoint/checkpoint.h"

namespace fs = std::filesystem;

namespace gqe {

// Nested mappings become dotted keys: {model: {attention: {type: gqe}}} -> model.attention.type=gqe.
void flatten_overrides(const YAML::Node& node, const std::string& prefix, std::vector<std::string>& out) {
  for (const auto& kv : node) {
    const std::string key = prefix.empty() ? kv.first.Scalar() : prefix + "." + kv.first.Scalar();
    if (kv.second.IsMap()) flatten_overrides(kv.second, key, out);
    else if (kv.second.IsScalar()) out.push_back(key + "=" + kv.second.Scalar());
    else throw UserError("arms: " + key + ": expected a value");
  }
}

void only_keys(const YAML::Node& node, const std::string& file, const std::string& where, const std::vector<std::string>& keys) {
  if (!node.IsMap()) throw UserError(fmt::format("{}: {}: expected a mapping (keys {})", file, where, fmt::join(keys, ", ")));
  for (const auto& kv : node) {
    const std::string key = kv.first.Scalar();
    if (std::find(keys.begin(), keys.end(), key) == keys.end())
      throw UserError(fmt::format("{}: unknown key '{}{}'; valid keys{}: {}", file, where.empty() ? "" : where + ".", key,
                                  where.empty() ? "" : " in " + where, fmt::join(keys, ", ")));
  }
}

std::vector<ExperimentArm> parse_arms(const YAML::Node& node, const std::string& file) {
  if (!node.IsMap() || node.size() == 0) throw UserError(fmt::format("{}: arms: a mapping of arm name to overrides", file));
  std::vector<ExperimentArm> arms;
  for (const auto& kv : node) {
    ExperimentArm arm{kv.first.Scalar(), {}};
    if (!kv.second.IsNull()) {
      if (!kv.second.IsMap()) throw UserError(fmt::format("{}: arms.{}: a mapping of config keys to values", file, arm.name));
      try {
        flatten_overrides(kv.second, "", arm.overrides);
      } catch (const UserError& ex) {
        throw UserError(fmt::format("{}: arms.{}: {}", file, arm.name, ex.what()));
      }
    }
    arms.push_back(std::move(arm));
  }
  return arms;
}

void check_arms(const std::string& file, const std::string& base, const std::vector<ExperimentArm>& arms,
                const std::vector<std::string>& common) {
  // Every arm's config must load, and differ from the first only in the attention.
  std::optional<Config> first;
  for (const ExperimentArm& arm : arms) {
    std::vector<std::string> overrides = common;
    overrides.insert(overrides.end(), arm.overrides.begin(), arm.overrides.end());
    LoadedConfig loaded;
    try {
      loaded = load_config(base, overrides);
    } catch (const UserError& ex) {
      throw UserError(fmt::format("{}: arms.{}: {}", file, arm.name, ex.what()));
    }
    if (!first) {
      first = loaded.config;
      continue;
    }
    for (const std::string& d : config_differences(*first, loaded.config))
      if (d.rfind("model.attention.", 0) != 0)
        throw UserError(fmt::format("{}: arms.{} changes {} -- arms may differ only in model.attention.* (same data, order, "
                                    "budget and everything else)", file, arm.name, d));
  }
}

const char* run_state_name(RunState state) {
  switch (state) {
    case RunState::not_started: return "not started";
    case RunState::running: return "running";
    case RunState::interrupted: return "interrupted";
    case RunState::finished: return "finished";
  }
  return "?";
}

Experiment load_experiment(const std::string& file) {
  Experiment e;
  e.file = file;
  YAML::Node root;
  if (!fs::exists(file)) throw UserError(fmt::format("{}: cannot open experiment file (no such file)", file));
  const std::string text = read_file(file);
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& ex) {
    throw UserError(fmt::format("{}:{}: invalid YAML: {}", file, ex.mark.line + 1, ex.msg));
  }
  if (!root.IsMap()) throw UserError(fmt::format("{}: an experiment is a mapping (name, base, out, arms, ...)", file));
  only_keys(root, file, "", {"name", "base", "out", "seeds", "arms", "eval"});
  for (const char* key : {"name", "base", "out", "arms"})
    if (!root[key]) throw UserError(fmt::format("{}: '{}' is missing", file, key));
  try {
    e.name = root["name"].as<std::string>();
    e.base = (fs::path(file).parent_path() / root["base"].as<std::string>()).lexically_normal().string();
    e.out = root["out"].as<std::string>();
    if (root["seeds"]) e.seeds = root["seeds"].as<std::vector<int64_t>>();
    if (root["eval"]) {
      only_keys(root["eval"], file, "eval", {"val", "tasks"});
      if (root["eval"]["val"]) e.eval_val = root["eval"]["val"].as<bool>();
      if (root["eval"]["tasks"] && !root["eval"]["tasks"].IsNull())
        e.eval_tasks = root["eval"]["tasks"].as<std::map<std::string, std::string>>();
    }
  } catch (const YAML::Exception& ex) {
    throw UserError(fmt::format("{}:{}: {}", file, ex.mark.line + 1, ex.msg));
  }
  if (e.seeds.empty()) throw UserError(fmt::format("{}: seeds: give at least one", file));
  e.arms = parse_arms(root["arms"], file);
  check_arms(file, e.base, e.arms);
  return e;
}

std::vector<ExperimentRun> experiment_runs(const Experiment& e) {
  std::vector<ExperimentRun> runs;
  for (const ExperimentArm& arm : e.arms)
    for (int64_t seed : e.seeds) {
      ExperimentRun run;
      run.arm = arm.name;
      run.seed = seed;
      const std::string name = e.seeds.size() == 1 ? arm.name : fmt::format("{}-seed{}", arm.name, seed);
      run.run_dir = e.out / name;
      run.label = e.seeds.size() == 1 ? arm.name : fmt::format("{} (seed {})", arm.name, seed);
      run.overrides = arm.overrides;
      run.overrides.push_back(fmt::format("train.seed={}", seed));
      run.overrides.push_back("log.name=" + name);
      run.config = load_config(e.base, run.overrides);
      runs.push_back(std::move(run));
    }
  return runs;
}

RunStatus run_status(const ExperimentRun& run) {
  RunStatus s;
  const auto state = peek_latest_state(run.run_dir);
  if (state) {
    s.step = state->step;
    s.tokens = state->tokens;
    s.state = state->tokens >= run.config.config.train.tokens ? RunState::finished : RunState::interrupted;
    const fs::path report = run.run_dir / "eval.json";
    if (fs::exists(report)) {
      const auto j = nlohmann::json::parse(read_file(report), nullptr, false);
      s.evaluated = !j.is_discarded() && j.value("step", int64_t{-1}) == state->step;
    }
  }
  if (RunLock::held(run.run_dir)) s.state = RunState::running;
  return s;
}

std::optional<double> final_validation_loss(const fs::path& run_dir) {
  if (!fs::exists(run_dir / "metrics.jsonl")) return std::nullopt;
  std::optional<double> val;
  std::istringstream in(read_file(run_dir / "metrics.jsonl"));
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.contains("val_loss") && j["val_loss"].is_number()) val = j["val_loss"].get<double>();
  }
  return val;
}

// A launch ended by the user's Ctrl-C or SIGTERM (a second one for training): a stop, not a failure.
bool stopped_by_user(int code) { return code == 128 + SIGINT || code == 128 + SIGTERM; }

bool train_runs(const std::string& base, const std::vector<ExperimentRun>& runs, int nproc, int max_restarts,
                const std::string& tag, const std::string& file) {
  const NodeLayout node = read_node_layout();
  const bool several = node.nnodes > 1, node0 = node.node_rank == 0;
  // What a run that stops says to continue with (the runs' ranks inherit it): this command, not the
  // run's own gqe train, which would continue that run alone.
  ::setenv("GQE_CONTINUE_WITH",
           fmt::format("gqe {} run {}{}{}", tag, shell_quoted(file), nproc > 1 || several ? fmt::format(" --nproc {}", nproc) : "",
                       max_restarts > 0 ? fmt::format(" --max-restarts {}", max_restarts) : "").c_str(), 1);
  for (size_t i = 0; i < runs.size(); ++i) {
    const ExperimentRun& run = runs[i];
    const std::string label = run.label;
    // Consecutive jobs over several nodes take MASTER_PORT and the port above it in turn: a node
    // quick to start the next run's ranks must not find the last job's store, still closing, where
    // the next one's will be.
    NodeLayout job = node;
    if (several && i % 2 == 1) job.master_port += node.master_port < 65535 ? 1 : -1;
    if (node0) {
      const RunStatus status = run_status(run);
      if (status.state == RunState::running) {
        const std::string line = fmt::format("{}: is being trained by another process", run.run_dir.string());
        // The other nodes start this run's job: told, they stop at once rather than wait for it.
        // (Before the first job, job_command tells it.)
        if (several && i > 0) tell_job_stopped(launched_rank(job, nproc, 0), nproc, "node 0", 2, line, true);
        throw UserError(line);
      }
      const bool finished = status.state == RunState::finished;
      if (finished && several) {
        // Started anyway: its job verifies the checkpoint (gqe train's trained_already) and ends.
        fmt::print("[{}] {}: finished at step {} ({} tokens), started on every node all the same (the other nodes cannot "
                   "tell): its job ends without a step\n", tag, label, status.step, status.tokens);
      } else if (finished && verified_latest_state(run.run_dir)) {
        fmt::print("[{}] {}: finished at step {} ({} tokens), skipped\n", tag, label, status.step, status.tokens);
        continue;
      } else if (finished) {  // as `latest` says, but its checkpoint damaged: gqe train takes the one before
        fmt::print("[{}] {}: its newest checkpoint (step {}) does not verify: training again from the one before -> {}\n", tag,
                   label, status.step, run.run_dir.string());
      } else {
        fmt::print("[{}] {}: {} -> {}\n", tag, label,
                   status.state == RunState::interrupted ? fmt::format("continuing from step {}", status.step) : "training",
                   run.run_dir.string());
      }
    } else {
      fmt::print("[{}] {}: ranks {}..{} of {} on this node; node 0 trains it or finds it finished\n", tag, label,
                 node.node_rank * nproc, node.node_rank * nproc + nproc - 1, node.nnodes * nproc);
    }
    std::fflush(stdout);
    std::vector<std::string> args{"gqe", "train", base, "--run-dir", run.run_dir.string()};
    for (const auto& o : run.overrides) args.insert(args.end(), {"--set", o});
    const LaunchedJob launched = launch_local_ranks(nproc, args, job, Restarts{max_restarts, {}});
    if (launched.status == 2) {  // bad input, which the job has said in one line (on node 0's console)
      if (!node0) fmt::print("[{}] {}: its job stopped on bad input, which node 0's console names\n", tag, label);
      throw AlreadyReported(fmt::format("{}: bad input", label));
    }
    if (launched.status != 0 && !stopped_by_user(launched.status))
      throw std::runtime_error(fmt::format("{} failed (exit status {}); once fixed, the same command continues it", label, launched.status));
    // Node 0 reads the run directory; the other nodes hear from their ranks whether the run was
    // trained or stopped (a Ctrl-C on any node stops the job: its ranks vote).
    const bool stopped = node0 ? run_status(run).state != RunState::finished : !launched.finished;
    if (stopped) {
      fmt::print("[{}] stopped during {}{}; run the same command{} to continue\n", tag, label,
                 several && launched.stop_signal == 0 ? " (by a signal to another node)" : "", several ? " on every node" : "");
      return false;
    }
  }
  return true;
}

void run_experiment(const Experiment& e, int nproc, int max_restarts) {
  const std::vector<ExperimentRun> runs = experiment_runs(e);
  const bool node0 = read_node_layout().node_rank == 0;  // on several nodes, node 0 holds the runs
  if (node0) make_directories(e.out);
  if (!train_runs(e.base, runs, nproc, max_restarts, "experiment", e.file)) return;
  if (!node0) {
    fmt::print("[experiment] every run is trained; node 0 evaluates and compares them\n");
    return;
  }
  for (const ExperimentRun& run : runs) {
    if (run_status(run).evaluated) continue;
    std::vector<std::string> args{"gqe", "eval", run.run_dir.string()};
    if (e.eval_val) args.push_back("--val");
    std::string tasks;
    for (const auto& [name, path] : e.eval_tasks) tasks += (tasks.empty() ? "" : ",") + name + "=" + path;
    if (!tasks.empty()) args.insert(args.end(), {"--tasks", tasks});
    if (!e.eval_val && tasks.empty()) continue;
    const int code = launch_local_ranks(nproc, args).status;  // on node 0 alone
    if (stopped_by_user(code)) {
      fmt::print("[experiment] stopped while evaluating {}; run the same command to continue\n", run.label);
      return;
    }
    if (code == 2) throw AlreadyReported(fmt::format("evaluating {}: bad input", run.run_dir.string()));  // said by gqe eval
    if (code != 0) throw std::runtime_error(fmt::format("evaluating {} failed (exit status {})", run.run_dir.string(), code));
  }
  CompareOptions compare;
  for (const ExperimentRun& run : runs) compare.runs.push_back(run.run_dir);
  compare.out = e.out / "comparison";
  compare_runs(compare);
}

void print_experiment_status(const Experiment& e) {
  fmt::print("experiment {} ({}), runs in {}\n", e.name, e.file, e.out.string());
  fmt::print("  {:<22}{:<13}{:>16}{:>11}{:>11}{:>11}\n", "run", "state", "tokens", "step", "loss", "val loss");
  for (const ExperimentRun& run : experiment_runs(e)) {
    const RunStatus s = run_status(run);
    std::string loss = "-", val = "-";
    if (fs::exists(run.run_dir / "metrics.jsonl")) {
      std::istringstream in(read_file(run.run_dir / "metrics.jsonl"));
      for (std::string line; std::getline(in, line);) {
        const auto j = nlohmann::json::parse(line, nullptr, false);
        if (j.is_discarded()) continue;
        if (j.contains("loss") && j["loss"].is_number()) loss = fmt::format("{:.4f}", j["loss"].get<double>());
        if (j.contains("val_loss")) val = fmt::format("{:.4f}", j["val_loss"].get<double>());
      }
    }
    fmt::print("  {:<22}{:<13}{:>16}{:>11}{:>11}{:>11}{}\n", run.run_dir.filename().string(), run_state_name(s.state),
               fmt::format("{}/{}", s.tokens, run.config.config.train.tokens), s.step, loss, val,
               s.evaluated ? "  evaluated" : "");
  }
}

}  // namespace gqe
