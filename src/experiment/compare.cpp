#include "experiment/compare.h"

#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <regex>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/files.h"
#include "common/process.h"
#include "config/config_loader.h"
#include "model/model_info.h"
#include "train/metrics.h"
#include "train/tensorboard.h"

namespace fs = std::filesystem;
using nlohmann::json;
using nlohmann::ordered_json;

namespace gqe {
namespace {

std::string number(const std::optional<double>& v, int digits = 4) { return v ? fmt::format("{:.{}f}", *v, digits) : "-"; }

std::string delta(const std::optional<double>& v, const std::optional<double>& base, int digits = 4) {
  return v && base ? fmt::format("{:+.{}f}", *v - *base, digits) : "-";
}

RunSummary read_run(const fs::path& dir, double alpha) {
  RunSummary r;
  r.dir = dir;
  r.name = dir.filename().string();
  if (r.name.empty()) r.name = dir.parent_path().filename().string();
  if (!fs::exists(dir / "config.yaml")) throw UserError(fmt::format("{}: not a run directory (no config.yaml)", dir.string()));
  r.config = load_config((dir / "config.yaml").string()).config;
  const ModelInfo info = describe_model(r.config);
  r.params = info.total;
  r.active_heads = info.active_query_heads;
  r.heads = info.query_heads;
  Config key = r.config;  // the group: everything but the seed (and the name)
  key.train.seed = 0;
  key.log.name.clear();
  r.group = to_yaml(key);

  std::vector<double> rates;
  if (fs::exists(dir / "metrics.jsonl")) {
    std::istringstream in(read_file(dir / "metrics.jsonl"));
    for (std::string line; std::getline(in, line);) {
      const json j = json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.contains("tokens")) continue;
      const double tokens = j["tokens"].get<double>();
      if (j.contains("loss") && j["loss"].is_number()) {
        r.train.push_back({tokens, j["loss"].get<double>()});
        if (j.contains("lr")) r.lr.push_back({tokens, j["lr"].get<double>()});
        if (j.contains("tokens_per_s")) rates.push_back(j["tokens_per_s"].get<double>());
        r.tokens = std::max<int64_t>(r.tokens, j["tokens"].get<int64_t>());
      }
      // An evaluation line; a later `gqe eval` of the same step repeats it.
      if (j.contains("val_loss") && (r.val.empty() || r.val.back().tokens < tokens)) r.val.push_back({tokens, j["val_loss"].get<double>()});
    }
  }
  r.train_ema = ema(r.train, alpha);
  if (!r.val.empty()) r.final_val = r.val.back().value;
  if (rates.size() > 3) rates.erase(rates.begin(), rates.begin() + 3);  // warm-up steps
  if (!rates.empty()) {
    std::nth_element(rates.begin(), rates.begin() + static_cast<long>(rates.size() / 2), rates.end());
    r.tokens_per_s = rates[rates.size() / 2];
  }
  if (fs::exists(dir / "eval.json")) {
    const json report = json::parse(read_file(dir / "eval.json"), nullptr, false);
    if (!report.is_discarded() && report.contains("tasks")) {
      double sum = 0;
      for (const auto& [task, s] : report["tasks"].items()) {
        r.tasks[task] = {s["acc"].get<double>(), s["acc_norm"].get<double>()};
        sum += task_score(task, s["acc"].get<double>(), s["acc_norm"].get<double>());
      }
      if (!r.tasks.empty()) r.score = sum / static_cast<double>(r.tasks.size());
    }
  }
  return r;
}

}  // namespace

namespace {

std::vector<std::string> all_tasks(const Comparison& c) {
  std::vector<std::string> tasks;
  for (const RunSummary& r : c.runs)
    for (const auto& [t, s] : r.tasks)
      if (std::find(tasks.begin(), tasks.end(), t) == tasks.end()) tasks.push_back(t);
  std::sort(tasks.begin(), tasks.end());
  return tasks;
}

}  // namespace

double task_score(const std::string& task, double acc, double acc_norm) { return task == "hellaswag" ? acc_norm : acc; }

Comparison compare(const std::vector<fs::path>& dirs, double alpha) {
  if (dirs.empty()) throw UserError("compare: give at least one run directory");
  Comparison c;
  for (const fs::path& dir : dirs) c.runs.push_back(read_run(dir, alpha));
  int64_t budget = c.runs.front().config.train.tokens;
  for (const RunSummary& r : c.runs) budget = std::min(budget, r.config.train.tokens);
  // 25, 50, 75 and 100% of the smallest budget, each moved to the baseline's nearest evaluation:
  // runs on the same evaluation schedule are then compared at exactly evaluated token counts.
  const std::vector<Point>& evaluations = c.runs.front().val;
  for (double f : {0.25, 0.5, 0.75, 1.0}) {
    double point = f * static_cast<double>(budget);
    if (!evaluations.empty())
      point = std::min_element(evaluations.begin(), evaluations.end(), [&](const Point& a, const Point& b) {
                return std::fabs(a.tokens - point) < std::fabs(b.tokens - point);
              })->tokens;
    if (c.points.empty() || point > c.points.back()) c.points.push_back(point);
  }
  for (RunSummary& r : c.runs)
    for (double p : c.points) {
      r.train_at.push_back(value_at(r.train_ema, p));
      r.val_at.push_back(value_at(r.val, p));
    }
  for (size_t i = 0; i < c.runs.size(); ++i) {
    auto it = std::find_if(c.groups.begin(), c.groups.end(), [&](const GroupSummary& g) { return c.runs[g.runs[0]].group == c.runs[i].group; });
    if (it == c.groups.end()) {
      GroupSummary g;
      g.name = std::regex_replace(c.runs[i].name, std::regex("-seed[0-9]+$"), "");
      c.groups.push_back(g);
      it = std::prev(c.groups.end());
    }
    it->runs.push_back(i);
  }
  auto values = [&](const GroupSummary& g, bool val) {
    std::vector<double> v;
    for (size_t i : g.runs) {
      const auto& x = val ? c.runs[i].final_val : c.runs[i].score;
      if (x) v.push_back(*x);
    }
    return v;
  };
  for (GroupSummary& g : c.groups) {
    const auto val = values(g, true), score = values(g, false);
    g.val_mean = mean(val), g.val_std = stddev(val), g.score_mean = mean(score), g.score_std = stddev(score);
    if (&g != &c.groups.front()) {
      g.val_test = welch_t_test(val, values(c.groups.front(), true));
      g.score_test = welch_t_test(score, values(c.groups.front(), false));
    }
  }
  return c;
}

std::string comparison_markdown(const Comparison& c) {
  const RunSummary& base = c.runs.front();
  const auto tasks = all_tasks(c);
  std::string s = fmt::format(
      "## Runs at matched token counts\n\nAt the evaluations of {0} nearest to 25, 50, 75 and 100% of the budget. Train "
      "loss: exponential moving average of the per-step loss; validation loss: as evaluated (linear between evaluations "
      "for runs on another schedule); Δ: against {0}. Task scores: HellaSwag acc_norm, ARC-Easy and PIQA acc; score = their "
      "mean.\n\n| run | params | q heads / token | tokens/s |",
      base.name);
  std::string rule = "|---|---:|---:|---:|";
  for (double p : c.points) s += fmt::format(" train @ {} |", human_count(p)), rule += "---:|";
  for (double p : c.points) s += fmt::format(" val @ {} |", human_count(p)), rule += "---:|";
  s += " Δ val |", rule += "---:|";
  for (const auto& t : tasks) s += fmt::format(" {} |", t), rule += "---:|";
  if (!tasks.empty()) s += " score | Δ score |", rule += "---:|---:|";
  s += "\n" + rule + "\n";
  for (const RunSummary& r : c.runs) {
    s += fmt::format("| {} | {} | {}/{} | {:.0f} |", r.name, human_count(static_cast<double>(r.params)), r.active_heads, r.heads,
                     r.tokens_per_s);
    for (const auto& v : r.train_at) s += " " + number(v) + " |";
    for (const auto& v : r.val_at) s += " " + number(v) + " |";
    s += " " + delta(r.val_at.back(), base.val_at.back()) + " |";
    for (const auto& t : tasks) {
      const auto it = r.tasks.find(t);
      s += " " + (it == r.tasks.end() ? std::string("-") : number(task_score(t, it->second.first, it->second.second))) + " |";
    }
    if (!tasks.empty()) s += " " + number(r.score) + " | " + delta(r.score, base.score) + " |";
    s += "\n";
  }
  if (std::any_of(c.groups.begin(), c.groups.end(), [](const GroupSummary& g) { return g.runs.size() > 1; })) {
    s += fmt::format("\n## Arms over seeds\n\nMean ± standard deviation; Welch's t-test against {} (two-sided p).\n\n"
                     "| arm | seeds | final val loss | t | p | score | t | p |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
                     c.groups.front().name);
    auto test = [](const std::optional<TTest>& t) {
      return t ? fmt::format("{:.2f} | {:.3g}", t->t, t->p) : std::string("- | -");
    };
    for (const GroupSummary& g : c.groups)
      s += fmt::format("| {} | {} | {:.4f} ± {:.4f} | {} | {} | {} |\n", g.name, g.runs.size(), g.val_mean, g.val_std,
                       test(g.val_test), std::isnan(g.score_mean) ? "-" : fmt::format("{:.4f} ± {:.4f}", g.score_mean, g.score_std),
                       test(g.score_test));
  }
  return s;
}

std::string comparison_csv(const Comparison& c) {
  const auto tasks = all_tasks(c);
  std::string s = "run,group,params,active_q_heads,q_heads,tokens,tokens_per_s";
  for (double p : c.points) s += fmt::format(",train_loss@{:.0f}", p);
  for (double p : c.points) s += fmt::format(",val_loss@{:.0f}", p);
  s += ",final_val_loss";
  for (const auto& t : tasks) s += fmt::format(",{0}_acc,{0}_acc_norm", t);
  s += ",score\n";
  auto cell = [](const std::optional<double>& v) { return v ? fmt::format("{}", *v) : std::string(); };
  for (const RunSummary& r : c.runs) {
    const auto group = std::find_if(c.groups.begin(), c.groups.end(), [&](const GroupSummary& g) {
      return std::find(g.runs.begin(), g.runs.end(), static_cast<size_t>(&r - c.runs.data())) != g.runs.end();
    });
    s += fmt::format("{},{},{},{},{},{},{}", r.name, group->name, r.params, r.active_heads, r.heads, r.tokens, r.tokens_per_s);
    for (const auto& v : r.train_at) s += "," + cell(v);
    for (const auto& v : r.val_at) s += "," + cell(v);
    s += "," + cell(r.final_val);
    for (const auto& t : tasks) {
      const auto it = r.tasks.find(t);
      s += it == r.tasks.end() ? std::string(",,") : fmt::format(",{},{}", it->second.first, it->second.second);
    }
    s += "," + cell(r.score) + "\n";
  }
  return s;
}

namespace {

// Series for scripts/plot_runs.py: everything it draws, already computed.
ordered_json plot_data(const Comparison& c, bool log_x) {
  auto points = [](const std::vector<Point>& v) {
    ordered_json a = ordered_json::array();
    for (const Point& p : v) a.push_back({p.tokens, p.value});
    return a;
  };
  ordered_json runs = ordered_json::array();
  for (const RunSummary& r : c.runs) {
    ordered_json run = {{"name", r.name}, {"train", points(r.train)}, {"train_ema", points(r.train_ema)},
                        {"val", points(r.val)}, {"lr", points(r.lr)}};
    if (r.config.model.attention.type == AttentionType::gqe) {
      // Per logging step: for each layer, each group's busiest expert's share of the tokens.
      ordered_json tokens = ordered_json::array(), busiest = ordered_json::array(), entropy = ordered_json::array();
      std::istringstream in(read_file(r.dir / "metrics.jsonl"));
      for (std::string line; std::getline(in, line);) {
        const json j = json::parse(line, nullptr, false);
        if (j.is_discarded() || !j.contains("router")) continue;
        tokens.push_back(j["tokens"].get<double>());
        busiest.push_back(busiest_expert_shares(j["router"]));
        entropy.push_back(j["router"]["entropy"].get<std::vector<double>>());
      }
      const double balanced = static_cast<double>(r.config.model.attention.top_k) / static_cast<double>(r.config.model.experts_per_group());
      run["router"] = {{"tokens", tokens}, {"busiest", busiest}, {"entropy", entropy}, {"balanced", balanced}};
    }
    runs.push_back(run);
  }
  return {{"baseline", c.runs.front().name}, {"log_x", log_x}, {"runs", runs}};
}


}  // namespace

// Every run's metrics.jsonl (and gqe eval's eval.json) as TensorBoard events in dir/RUN_NAME, at
// the times the run logged them (elapsed_s).
void write_tensorboard(const Comparison& c, const fs::path& dir) {
  std::map<std::string, int> seen;
  for (const RunSummary& r : c.runs) {
    const int n = seen[r.name]++;
    const fs::path out = dir / (n == 0 ? r.name : fmt::format("{}-{}", r.name, n + 1));
    if (fs::exists(out)) remove_tree(out);  // written again whole: no stale file to merge with
    EventWriter events(out, 0);
    std::istringstream in(read_file(r.dir / "metrics.jsonl"));
    double elapsed = 0;
    for (std::string line; std::getline(in, line);) {
      const auto j = json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (!j.is_object() || !j.contains("step")) continue;
      elapsed = j.value("elapsed_s", elapsed);
      events.scalars(j["step"].get<int64_t>(), elapsed, metrics_scalars(j));
    }
    if (fs::exists(r.dir / "eval.json")) {
      const auto report = json::parse(read_file(r.dir / "eval.json"), nullptr, false);
      if (report.is_object() && report.contains("step"))
        events.scalars(report["step"].get<int64_t>(), elapsed, metrics_scalars(report));
    }
    events.sync();
  }
  fmt::print("wrote TensorBoard event files of {} runs under {} (tensorboard --logdir {})\n", c.runs.size(), dir.string(),
             dir.string());
}

void compare_runs(const CompareOptions& o) {
  const Comparison c = compare(o.runs, o.ema);
  const std::string markdown = comparison_markdown(c);
  fmt::print("{}", markdown);
  if (!o.tensorboard.empty()) write_tensorboard(c, o.tensorboard);
  if (o.out.empty()) return;
  make_directories(o.out);
  write_file_atomic(o.out / "comparison.md", markdown);
  write_file_atomic(o.out / "comparison.csv", comparison_csv(c));
  write_file_atomic(o.out / "plot_data.json", plot_data(c, o.log_x).dump() + "\n");
  fmt::print("\nwrote {}, {}\n", (o.out / "comparison.md").string(), (o.out / "comparison.csv").string());
  if (!o.plots) return;
  run_plot_script("plot_runs.py", o.out / "plot_data.json", o.out);
}

void run_plot_script(const std::string& script, const fs::path& data, const fs::path& out) {
  const std::string command = fmt::format("{} {} {} {}", shell_quoted(python_executable()),
                                          shell_quoted((scripts_directory() / script).string()), shell_quoted(data.string()),
                                          shell_quoted(out.string()));
  const CommandOutput r = run_shell(command);
  if (r.status == 3)  // the script could not write a PNG
    throw std::runtime_error(r.output.substr(0, r.output.find('\n')));
  if (r.status != 0) {
    fmt::print(stderr, "gqe: plots skipped ({}): {}", command, r.output.empty() ? "could not run\n" : r.output);
    return;
  }
  fmt::print("{}", r.output);  // the script names the PNGs it wrote
}

}  // namespace gqe
