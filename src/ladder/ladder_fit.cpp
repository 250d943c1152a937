#include "ladder/ladder_fit.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <set>
#include <sstream>

#include "common/error.h"
#include "train/metrics.h"
#include "common/files.h"
#include "config/config_loader.h"
#include "experiment/compare.h"
#include "experiment/stats.h"
#include "ladder/scaling_fit.h"

namespace fs = std::filesystem;
using nlohmann::json;
using nlohmann::ordered_json;

namespace gqe {
namespace {

// One finished run.
struct Observation {
  size_t run = 0;  // index into ladder_runs
  std::string point, arm;
  int64_t seed = 0;
  double params = 0, non_embedding = 0, tokens = 0, flops = 0, loss = 0;
  std::optional<double> busiest;  // router: mean over layers and groups of the busiest expert's share
};

// The mean over layers and groups of each group's busiest expert's share of its tokens, over the
// last quarter of the logged steps (k/M is balanced, 1 a collapsed router).
std::optional<double> router_busiest(const fs::path& run_dir) {
  std::vector<double> shares;
  std::istringstream in(read_file(run_dir / "metrics.jsonl"));
  for (std::string line; std::getline(in, line);) {
    const json j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("router")) continue;
    double sum = 0;
    int n = 0;
    for (const auto& layer : busiest_expert_shares(j["router"]))
      for (double share : layer) sum += share, ++n;
    if (n) shares.push_back(sum / n);
  }
  if (shares.empty()) return std::nullopt;
  const size_t from = shares.size() - std::max<size_t>(1, shares.size() / 4);
  return mean(std::vector<double>(shares.begin() + static_cast<long>(from), shares.end()));
}

// The model the shape rule makes nearest (in log) to `params` non-embedding parameters, with the
// first arm's attention (budgets are set by it), and each arm's FLOPs per token on it.
struct TargetModel {
  int64_t width = 0;
  ModelInfo first;
  std::vector<double> flops_per_token;  // per arm
  std::vector<double> non_embedding;    // per arm (GQE's output projection is smaller)
};

TargetModel instantiate(const Ladder& l, const std::vector<LoadedConfig>& arm_configs, double params) {
  TargetModel best;
  double best_distance = 1e300;
  const int64_t step = l.shape.head_dim * l.shape.kv_group;
  for (int64_t width = step; width <= 65536; width += step) {
    Config c = arm_configs.front().config;
    l.shape.apply(c.model, width);
    const ModelInfo info = describe_model(c);
    const double distance = std::fabs(std::log(static_cast<double>(info.non_embedding) / params));
    if (distance < best_distance) {
      best_distance = distance;
      best.width = width;
      best.first = info;
    }
    if (static_cast<double>(info.non_embedding) > 2 * params) break;
  }
  for (const LoadedConfig& arm : arm_configs) {
    Config c = arm.config;
    l.shape.apply(c.model, best.width);
    const ModelInfo info = describe_model(c);
    best.flops_per_token.push_back(info.train_flops_per_token());
    best.non_embedding.push_back(static_cast<double>(info.non_embedding));
  }
  return best;
}

std::string fmt_interval(const Interval& i, int digits = 4) {
  if (!std::isfinite(i.lo)) return fmt::format("{:.{}f}", i.value, digits);
  return fmt::format("{:.{}f} [{:.{}f}, {:.{}f}]", i.value, digits, i.lo, digits, i.hi, digits);
}
std::string fmt_interval_g(const Interval& i) {
  if (!std::isfinite(i.lo)) return fmt::format("{:.3g}", i.value);
  return fmt::format("{:.3g} [{:.3g}, {:.3g}]", i.value, i.lo, i.hi);
}
ordered_json interval_json(const Interval& i) {
  return {{"value", i.value}, {"lo", std::isfinite(i.lo) ? json(i.lo) : json()}, {"hi", std::isfinite(i.hi) ? json(i.hi) : json()}};
}

}  // namespace

std::vector<LadderTarget> parse_targets(const std::string& text) {
  std::vector<LadderTarget> out;
  std::istringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    const size_t at = item.find('@');
    const auto params = at == std::string::npos ? std::nullopt : parse_integer(item.substr(0, at));
    const auto tokens = at == std::string::npos ? std::nullopt : parse_integer(item.substr(at + 1));
    if (!params || !tokens || *params <= 0 || *tokens <= 0)
      throw UserError(fmt::format("--predict: '{}' is not PARAMS@TOKENS (non-embedding parameters at training tokens, e.g. 201M@30B, the paper's model)", item));
    out.push_back({item, static_cast<double>(*params), static_cast<double>(*tokens)});
  }
  if (out.empty()) throw UserError("--predict: give PARAMS@TOKENS targets, comma-separated (e.g. 201M@30B,1B@20B)");
  return out;
}

Ladder load_ladder_or_run_dir(const std::string& path) {
  if (!fs::is_directory(path)) return load_ladder(path);
  const fs::path file = fs::path(path) / "ladder.yaml";
  if (!fs::exists(file))
    throw UserError(fmt::format("{}: not a ladder's run directory (no ladder.yaml: `gqe ladder run` writes it)", path));
  Ladder l = load_ladder(file.string());
  l.out = path;
  return l;
}

LadderReport fit_ladder(const Ladder& l, const LadderFitOptions& o) {
  const std::vector<LadderRun> runs = ladder_runs(l);
  std::vector<Observation> obs;
  std::vector<std::string> missing;
  for (size_t i = 0; i < runs.size(); ++i) {
    const LadderRun& r = runs[i];
    const RunStatus s = run_status(r.run);
    const auto loss = s.state == RunState::finished ? final_validation_loss(r.run.run_dir) : std::nullopt;
    if (!loss) {
      missing.push_back(fmt::format("{}/{} ({})", r.point, r.run.run_dir.filename().string(), run_state_name(s.state)));
      continue;
    }
    Observation ob{i, r.point, r.run.arm, r.run.seed, static_cast<double>(r.info.total), static_cast<double>(r.info.non_embedding),
                   static_cast<double>(r.run.config.config.train.tokens), r.flops, *loss, router_busiest(r.run.run_dir)};
    obs.push_back(ob);
  }
  const size_t n_arms = l.arms.size();
  // Each arm's points, in the same (rung, budget, seed) order when all arms have all of them.
  std::vector<std::vector<Observation>> by_arm(n_arms);
  for (const Observation& ob : obs)
    for (size_t a = 0; a < n_arms; ++a)
      if (l.arms[a].name == ob.arm) by_arm[a].push_back(ob);

  std::vector<std::string> warnings;
  if (!missing.empty())
    warnings.push_back(fmt::format("{} of {} runs are not finished and are left out of the fit: {}", missing.size(), runs.size(),
                                   fmt::join(missing, ", ")));
  std::set<std::string> sizes;
  for (const Observation& ob : obs) sizes.insert(l.rungs[runs[ob.run].rung].name);
  if (sizes.size() < 3)
    warnings.push_back(fmt::format("only {} model size(s) finished: a law fitted to fewer than 3 sizes does not deserve trust", sizes.size()));
  else if (sizes.size() < 5)
    warnings.push_back(fmt::format("{} model sizes: with fewer than 5 the 90% intervals are too narrow (they covered the truth 71-83% "
                                   "of the time in synthetic ladders of 4 sizes x 2 seeds; docs/scaling.md)", sizes.size()));

  // The fits: L(C) per arm; L(N, D) when some size has several budgets.
  bool fit_ok = true;
  for (size_t a = 0; a < n_arms; ++a)
    if (by_arm[a].size() < 3) fit_ok = false;
  std::map<size_t, std::set<size_t>> budgets_per_rung;
  for (const Observation& ob : obs) budgets_per_rung[runs[ob.run].rung].insert(runs[ob.run].budget);
  bool grid = false;
  for (const auto& [rung, b] : budgets_per_rung) grid = grid || b.size() > 1;
  bool chin_ok = grid && sizes.size() >= 2;
  for (size_t a = 0; a < n_arms; ++a)
    if (by_arm[a].size() < 6) chin_ok = false;

  std::vector<LoadedConfig> arm_configs;
  for (const ExperimentArm& arm : l.arms) arm_configs.push_back(load_config(l.base, arm.overrides));
  std::vector<TargetModel> target_models;
  for (const LadderTarget& t : o.targets) target_models.push_back(instantiate(l, arm_configs, t.params));

  std::vector<std::vector<double>> C(n_arms), N(n_arms), D(n_arms), L(n_arms), fitted(n_arms), fitted_chin(n_arms);
  for (size_t a = 0; a < n_arms; ++a)
    for (const Observation& ob : by_arm[a]) {
      C[a].push_back(ob.flops);
      N[a].push_back(ob.non_embedding);
      D[a].push_back(ob.tokens);
      L[a].push_back(ob.loss);
    }
  std::vector<FitResult> fits(n_arms), chin(n_arms);
  std::vector<PowerLaw> laws(n_arms);
  if (fit_ok)
    for (size_t a = 0; a < n_arms; ++a) {
      fits[a] = fit_power_law(C[a], L[a]);
      laws[a] = power_law(fits[a]);
      for (double c : C[a]) fitted[a].push_back(laws[a](c));
      if (chin_ok) {
        chin[a] = fit_chinchilla(N[a], D[a], L[a]);
        const ChinchillaLaw law = chinchilla_law(chin[a]);
        for (size_t i = 0; i < N[a].size(); ++i) fitted_chin[a].push_back(law(N[a][i], D[a][i]));
      }
    }

  // The quantities every bootstrap draw recomputes: per arm (E, A, alpha); per target, per arm,
  // the predicted loss; per target, per other arm: the gap at matched tokens, at matched FLOPs,
  // and the compute multiplier; and the curves on the plot grid.
  const size_t T = o.targets.size();
  double c_min = 1e300, c_max = 0;
  for (const Observation& ob : obs) c_min = std::min(c_min, ob.flops), c_max = std::max(c_max, ob.flops);
  for (size_t t = 0; t < T; ++t)
    for (double fpt : target_models[t].flops_per_token) c_max = std::max(c_max, fpt * o.targets[t].tokens);
  std::vector<double> grid_c;
  if (!obs.empty())
    for (int i = 0; i <= 60; ++i) grid_c.push_back(std::exp(std::log(c_min / 2) + (std::log(c_max * 2) - std::log(c_min / 2)) * i / 60.0));

  auto quantities = [&](const std::vector<PowerLaw>& ls) {
    std::vector<double> q;
    for (const PowerLaw& law : ls) q.insert(q.end(), {law.E, law.A, law.alpha});
    for (size_t t = 0; t < T; ++t) {
      for (size_t a = 0; a < n_arms; ++a) q.push_back(ls[a](target_models[t].flops_per_token[a] * o.targets[t].tokens));
      const double c_base = target_models[t].flops_per_token[0] * o.targets[t].tokens;
      for (size_t a = 1; a < n_arms; ++a) {
        const double c_arm = target_models[t].flops_per_token[a] * o.targets[t].tokens;
        const double l_arm = ls[a](c_arm);
        q.push_back(l_arm - ls[0](c_base));                // matched tokens: the same model size and data
        q.push_back(ls[a](c_base) - ls[0](c_base));        // matched FLOPs: the baseline's compute
        const auto needed = ls[0].inverse(l_arm);          // the baseline's compute to reach the arm's loss
        q.push_back(needed ? *needed / c_arm : std::nan(""));
      }
    }
    for (size_t a = 0; a < n_arms; ++a)
      for (double c : grid_c) q.push_back(ls[a](c));
    return q;
  };
  std::vector<double> point_estimate;
  std::vector<std::vector<double>> draws;
  if (fit_ok) {
    point_estimate = quantities(laws);
    draws = residual_bootstrap(fitted, L, 3, o.bootstrap, o.seed, [&](const std::vector<std::vector<double>>& sample) {
      std::vector<PowerLaw> ls;
      for (size_t a = 0; a < n_arms; ++a) ls.push_back(power_law(fit_power_law(C[a], sample[a], fits[a].theta)));
      return quantities(ls);
    });
  }
  auto q_interval = [&](size_t k) {
    std::vector<double> v;
    for (const auto& d : draws) v.push_back(d[k]);
    return interval(point_estimate[k], v);
  };
  // L(N, D): per arm its 5 parameters; per target, per arm, the loss at the arm's N and the
  // target's tokens; per target, per other arm, the gap at matched tokens.
  std::vector<Interval> chin_q_intervals;
  if (chin_ok) {
    auto chin_q = [&](const std::vector<std::vector<double>>& sample, bool refit) {
      std::vector<double> q;
      std::vector<ChinchillaLaw> ls;
      for (size_t a = 0; a < n_arms; ++a) {
        ls.push_back(chinchilla_law(refit ? fit_chinchilla(N[a], D[a], sample[a], chin[a].theta) : chin[a]));
        q.insert(q.end(), {ls[a].E, ls[a].A, ls[a].alpha, ls[a].B, ls[a].beta});
      }
      for (size_t t = 0; t < T; ++t) {
        for (size_t a = 0; a < n_arms; ++a) q.push_back(ls[a](target_models[t].non_embedding[a], o.targets[t].tokens));
        for (size_t a = 1; a < n_arms; ++a)
          q.push_back(ls[a](target_models[t].non_embedding[a], o.targets[t].tokens) -
                      ls[0](target_models[t].non_embedding[0], o.targets[t].tokens));
      }
      return q;
    };
    const std::vector<double> est = chin_q(L, false);
    const auto chin_draws = residual_bootstrap(fitted_chin, L, 5, o.bootstrap, o.seed + 1,
                                               [&](const std::vector<std::vector<double>>& s) { return chin_q(s, true); });
    for (size_t k = 0; k < est.size(); ++k) {
      std::vector<double> v;
      for (const auto& d : chin_draws) v.push_back(d[k]);
      chin_q_intervals.push_back(interval(est[k], v));
    }
  }

  // Measured: per point, each arm's mean and spread over seeds, and the gap to the baseline (paired by seed).
  struct PointRow {
    std::string point;
    double non_embedding = 0, tokens = 0;
    std::vector<double> flops;                // per arm
    std::vector<std::vector<double>> losses;  // per arm, per seed
    std::vector<std::vector<double>> gaps;    // per other arm, per seed present in both
    std::vector<std::optional<double>> busiest;
  };
  std::vector<PointRow> points;
  for (const LadderRun& r : runs) {
    if (!points.empty() && points.back().point == r.point) continue;
    PointRow p;
    p.point = r.point;
    p.non_embedding = static_cast<double>(r.info.non_embedding);
    p.tokens = static_cast<double>(r.run.config.config.train.tokens);
    p.flops.resize(n_arms);
    for (const LadderRun& other : runs)
      for (size_t a = 0; a < n_arms; ++a)
        if (other.point == p.point && other.run.arm == l.arms[a].name) p.flops[a] = other.flops;
    p.losses.resize(n_arms);
    p.gaps.resize(n_arms);
    p.busiest.resize(n_arms);
    for (size_t a = 0; a < n_arms; ++a) {
      std::vector<double> shares;
      for (const Observation& ob : by_arm[a])
        if (ob.point == p.point) {
          p.losses[a].push_back(ob.loss);
          if (ob.busiest) shares.push_back(*ob.busiest);
          if (a > 0)
            for (const Observation& base : by_arm[0])
              if (base.point == p.point && base.seed == ob.seed) p.gaps[a].push_back(ob.loss - base.loss);
        }
      if (!shares.empty()) p.busiest[a] = mean(shares);
    }
    points.push_back(std::move(p));
  }
  // The trend of the measured gap with scale: a line in log10(C).
  std::vector<std::optional<LineFit>> trends(n_arms);
  for (size_t a = 1; a < n_arms; ++a) {
    std::vector<double> x, y;
    for (const PointRow& p : points)
      if (!p.gaps[a].empty()) {
        x.push_back(std::log10(p.flops[0]));
        y.push_back(mean(p.gaps[a]));
      }
    trends[a] = fit_line(x, y);
  }

  // --- the report -------------------------------------------------------------------------------
  const std::string& base_arm = l.arms.front().name;
  std::string md = fmt::format("# Ladder {}: {}\n\n", l.name, l.file);
  md += fmt::format("{} of {} runs finished; arms {} (the first is the baseline); seeds {}. Losses are final validation losses; C is "
                    "training FLOPs (`gqe info`'s convention: GQE's inactive heads are not counted). Intervals are 90%, from {} draws "
                    "of a paired residual bootstrap.\n\n",
                    obs.size(), runs.size(), fmt::join([&] { std::vector<std::string> v; for (auto& a : l.arms) v.push_back(a.name); return v; }(), ", "),
                    fmt::join(l.seeds, ", "), o.bootstrap);
  md += "## Measured\n\n| rung | non-emb params | tokens |";
  for (const ExperimentArm& arm : l.arms) md += fmt::format(" C {} | loss {} |", arm.name, arm.name);
  for (size_t a = 1; a < n_arms; ++a) md += fmt::format(" gap {} - {} |", l.arms[a].name, base_arm);
  for (size_t a = 0; a < n_arms; ++a)
    if (arm_configs[a].config.model.attention.type == AttentionType::gqe) md += fmt::format(" router {} |", l.arms[a].name);
  md += "\n|---|---:|---:|";
  for (size_t a = 0; a < n_arms; ++a) md += "---:|---:|";
  for (size_t a = 1; a < n_arms; ++a) md += "---:|";
  for (size_t a = 0; a < n_arms; ++a)
    if (arm_configs[a].config.model.attention.type == AttentionType::gqe) md += "---:|";
  md += "\n";
  auto mean_sd = [](const std::vector<double>& v, int digits) {
    if (v.empty()) return std::string("-");
    if (v.size() == 1) return fmt::format("{:.{}f}", v[0], digits);
    return fmt::format("{:.{}f} ± {:.{}f}", mean(v), digits, stddev(v), digits);
  };
  for (const PointRow& p : points) {
    md += fmt::format("| {} | {} | {} |", p.point, human_count(p.non_embedding), human_count(p.tokens));
    for (size_t a = 0; a < n_arms; ++a) md += fmt::format(" {:.3g} | {} |", p.flops[a], mean_sd(p.losses[a], 4));
    for (size_t a = 1; a < n_arms; ++a) md += fmt::format(" {} |", mean_sd(p.gaps[a], 4));
    for (size_t a = 0; a < n_arms; ++a)
      if (arm_configs[a].config.model.attention.type == AttentionType::gqe)
        md += p.busiest[a] ? fmt::format(" {:.3f} |", *p.busiest[a]) : " - |";
    md += "\n";
  }
  md += "\n";
  md += "Loss and gap: mean ± standard deviation over seeds (the gap is paired by seed: both arms saw the same tokens in the same "
        "order). Router: the busiest expert's share of its group's tokens over the last quarter of training, averaged over "
        "layers and groups (k/M is balanced, 1 a collapsed router).\n\n";

  md += "## Trend of the gap with scale\n\n";
  for (size_t a = 1; a < n_arms; ++a) {
    if (!trends[a]) {
      md += fmt::format("- {} - {}: fewer than 3 rungs measured; no trend can be estimated.\n", l.arms[a].name, base_arm);
      continue;
    }
    const LineFit& f = *trends[a];
    const double t90 = [&] {  // the two-sided 90% point of Student's t
      double lo = 0, hi = 100;
      for (int i = 0; i < 100; ++i) {
        const double mid = (lo + hi) / 2;
        (student_t_cdf(mid, f.n - 2) < 0.95 ? lo : hi) = mid;
      }
      return lo;
    }();
    md += fmt::format("- {} - {}: {:+.4f} per decade of compute [{:+.4f}, {:+.4f}] (least squares over {} rungs, p = {:.3g}): {}.\n",
                      l.arms[a].name, base_arm, f.slope, f.slope - t90 * f.slope_se, f.slope + t90 * f.slope_se, f.n, f.p,
                      f.p < 0.1 ? (f.slope > 0 ? "the gap grows with scale (distinguishable from zero at the 10% level)"
                                               : "the gap shrinks with scale (distinguishable from zero at the 10% level)")
                                : "not distinguishable from zero: these rungs cannot say whether the gap grows or shrinks with scale");
  }
  md += "\n";

  ordered_json j;
  j["ladder"] = l.name;
  j["file"] = l.file;
  j["runs_finished"] = obs.size();
  j["runs_total"] = runs.size();
  j["missing"] = missing;
  j["bootstrap"] = o.bootstrap;
  j["convention"] = "C = training FLOPs (gqe info); N = non-embedding parameters; D = training tokens; loss = final validation loss";
  if (!fit_ok) {
    md += "## Fits\n\nNot enough finished runs: each arm needs at least 3.\n\n";
  } else {
    md += "## Fitted laws: L(C) = E + A · C^-alpha\n\n| arm | E | A | alpha | points |\n|---|---:|---:|---:|---:|\n";
    for (size_t a = 0; a < n_arms; ++a) {
      md += fmt::format("| {} | {} | {} | {} | {} |\n", l.arms[a].name, fmt_interval_g(q_interval(3 * a)), fmt_interval_g(q_interval(3 * a + 1)),
                        fmt_interval(q_interval(3 * a + 2)), C[a].size());
      j["laws"][l.arms[a].name] = {{"E", interval_json(q_interval(3 * a))}, {"A", interval_json(q_interval(3 * a + 1))},
                                   {"alpha", interval_json(q_interval(3 * a + 2))}, {"points", C[a].size()}};
    }
    md += "\n";
    for (size_t a = 0; a < n_arms; ++a)
      if (laws[a].E < 0.01 * *std::min_element(L[a].begin(), L[a].end()))
        warnings.push_back(fmt::format("{}: the irreducible loss E is not identified (fitted at {:.3g}): the losses show no floor yet, "
                                       "so the law is a pure power law and its extrapolations assume the loss keeps falling as fast",
                                       l.arms[a].name, laws[a].E));
    if (chin_ok) {
      md += "## Fitted laws: L(N, D) = E + A / N^alpha + B / D^beta\n\n| arm | E | A | alpha | B | beta |\n|---|---:|---:|---:|---:|---:|\n";
      for (size_t a = 0; a < n_arms; ++a) {
        const Interval* p = &chin_q_intervals[5 * a];
        md += fmt::format("| {} | {} | {} | {} | {} | {} |\n", l.arms[a].name, fmt_interval(p[0]), fmt_interval_g(p[1]), fmt_interval(p[2]),
                          fmt_interval_g(p[3]), fmt_interval(p[4]));
        j["chinchilla"][l.arms[a].name] = {{"E", interval_json(p[0])}, {"A", interval_json(p[1])}, {"alpha", interval_json(p[2])},
                                           {"B", interval_json(p[3])}, {"beta", interval_json(p[4])}};
      }
      md += "\n";
      if (T > 0) {
        md += "Predicted by L(N, D), N each arm's non-embedding parameters on the target's model:\n\n"
              "| target | arm | loss | gap, matched tokens |\n|---|---|---:|---:|\n";
        size_t k = 5 * n_arms;
        for (size_t t = 0; t < T; ++t) {
          std::vector<Interval> loss;
          for (size_t a = 0; a < n_arms; ++a) loss.push_back(chin_q_intervals[k++]);
          md += fmt::format("| {} | {} | {} | |\n", o.targets[t].label, base_arm, fmt_interval(loss[0]));
          ordered_json tj = {{"target", o.targets[t].label}, {"arms", {{base_arm, {{"loss", interval_json(loss[0])}}}}}};
          for (size_t a = 1; a < n_arms; ++a) {
            const Interval gap = chin_q_intervals[k++];
            md += fmt::format("| {} | {} | {} | {} |\n", o.targets[t].label, l.arms[a].name, fmt_interval(loss[a]), fmt_interval(gap));
            tj["arms"][l.arms[a].name] = {{"loss", interval_json(loss[a])}, {"gap_matched_tokens", interval_json(gap)}};
          }
          j["chinchilla_predictions"].push_back(tj);
        }
        md += "\n";
      }
    }
    if (T > 0) {
      md += "## Predictions\n\nEach target PARAMS@TOKENS is the model the shape rule makes nearest PARAMS non-embedding parameters, "
            "trained on TOKENS tokens; each arm's law is read at that arm's compute.\n\n";
      md += "| target | model | arm | C | loss | gap, matched tokens | gap, matched FLOPs | compute multiplier |\n"
            "|---|---|---|---:|---:|---:|---:|---:|\n";
      size_t k = 3 * n_arms;
      for (size_t t = 0; t < T; ++t) {
        const TargetModel& m = target_models[t];
        const std::string model = fmt::format("d{}-L{}, {} non-emb ({} total)", m.width,
                                              std::max<int64_t>(1, std::llround(static_cast<double>(m.width) / static_cast<double>(l.shape.aspect))),
                                              human_count(static_cast<double>(m.first.non_embedding)), human_count(static_cast<double>(m.first.total)));
        ordered_json tj = {{"target", o.targets[t].label}, {"width", m.width}, {"non_embedding", m.first.non_embedding},
                           {"total", m.first.total}, {"tokens", o.targets[t].tokens}};
        std::vector<Interval> loss;
        for (size_t a = 0; a < n_arms; ++a) loss.push_back(q_interval(k++));
        md += fmt::format("| {} | {} | {} | {:.3g} | {} | | | |\n", o.targets[t].label, model, base_arm,
                          m.flops_per_token[0] * o.targets[t].tokens, fmt_interval(loss[0]));
        tj["arms"][base_arm] = {{"flops", m.flops_per_token[0] * o.targets[t].tokens}, {"loss", interval_json(loss[0])}};
        for (size_t a = 1; a < n_arms; ++a) {
          const Interval tokens_gap = q_interval(k++), flops_gap = q_interval(k++), multiplier = q_interval(k++);
          md += fmt::format("| {} | | {} | {:.3g} | {} | {} | {} | {} |\n", o.targets[t].label, l.arms[a].name,
                            m.flops_per_token[a] * o.targets[t].tokens, fmt_interval(loss[a]), fmt_interval(tokens_gap),
                            fmt_interval(flops_gap), std::isfinite(multiplier.value) ? fmt_interval_g(multiplier) : "never (below E)");
          tj["arms"][l.arms[a].name] = {{"flops", m.flops_per_token[a] * o.targets[t].tokens}, {"loss", interval_json(loss[a])},
                                        {"gap_matched_tokens", interval_json(tokens_gap)}, {"gap_matched_flops", interval_json(flops_gap)},
                                        {"compute_multiplier", interval_json(multiplier)}};
          for (const auto& [what, gap] : {std::pair{"matched tokens", tokens_gap}, std::pair{"matched FLOPs", flops_gap}})
            if (std::isfinite(gap.lo) && gap.lo < 0 && gap.hi > 0 && gap.hi - gap.lo > std::fabs(gap.value))
              warnings.push_back(fmt::format("at {} the 90% interval of the gap {} - {} at {} ([{:+.4f}, {:+.4f}]) is wider than the gap "
                                             "it predicts ({:+.4f}): not even its sign is determined",
                                             o.targets[t].label, l.arms[a].name, base_arm, what, gap.lo, gap.hi, gap.value));
        }
        const double extrapolation = m.flops_per_token[0] * o.targets[t].tokens / [&] {
          double most = 0;
          for (const Observation& ob : obs) most = std::max(most, ob.flops);
          return most;
        }();
        if (extrapolation > 100)
          warnings.push_back(fmt::format("{} lies {:.3g}x beyond the largest finished rung's compute: the law is extrapolated that far",
                                         o.targets[t].label, extrapolation));
        j["predictions"].push_back(tj);
      }
      md += "\nGap: the arm's loss minus the baseline's (below zero: the arm is better). Matched tokens: the same model size and "
            "tokens (the paper's comparison; the arm may spend less compute). Matched FLOPs: both at the baseline's compute. Compute "
            "multiplier: the compute the baseline needs to reach the arm's predicted loss, over the compute the arm spends (above "
            "1: the arm is more compute-efficient).\n\n";
    }
  }
  md += "## Warnings\n\n";
  if (warnings.empty()) md += "None.\n";
  for (const std::string& w : warnings) md += "- " + w + "\n";
  j["warnings"] = warnings;
  for (const PointRow& p : points) {
    ordered_json pj = {{"point", p.point}, {"non_embedding", p.non_embedding}, {"tokens", p.tokens}};
    for (size_t a = 0; a < n_arms; ++a) {
      pj["arms"][l.arms[a].name] = {{"losses", p.losses[a]}};
      if (a > 0) pj["arms"][l.arms[a].name]["gaps"] = p.gaps[a];
      if (p.busiest[a]) pj["arms"][l.arms[a].name]["router_busiest"] = *p.busiest[a];
    }
    j["measured"].push_back(pj);
  }
  for (size_t a = 1; a < n_arms; ++a)
    if (trends[a]) j["trend"][l.arms[a].name] = {{"slope_per_decade", trends[a]->slope}, {"se", trends[a]->slope_se}, {"p", trends[a]->p}};

  std::string csv = "rung,arm,seed,params,non_embedding,tokens,flops,val_loss,router_busiest\n";
  for (const Observation& ob : obs)
    csv += fmt::format("{},{},{},{:.0f},{:.0f},{:.0f},{:.6g},{:.6f},{}\n", ob.point, ob.arm, ob.seed, ob.params, ob.non_embedding, ob.tokens,
                       ob.flops, ob.loss, ob.busiest ? fmt::format("{:.4f}", *ob.busiest) : "");

  // What scripts/plot_ladder.py draws.
  ordered_json plot;
  plot["baseline"] = base_arm;
  plot["grid"] = grid_c;
  for (size_t a = 0; a < n_arms; ++a) {
    ordered_json arm = {{"name", l.arms[a].name}, {"gqe", arm_configs[a].config.model.attention.type == AttentionType::gqe}};
    for (const PointRow& p : points) {
      if (p.losses[a].empty()) continue;
      arm["points"].push_back({{"point", p.point}, {"flops", p.flops[a]}, {"mean", mean(p.losses[a])}, {"sd", stddev(p.losses[a])},
                               {"gap", p.gaps[a].empty() ? json() : json(mean(p.gaps[a]))},
                               {"gap_sd", p.gaps[a].size() > 1 ? json(stddev(p.gaps[a])) : json()},
                               {"busiest", p.busiest[a] ? json(*p.busiest[a]) : json()},
                               {"balanced", static_cast<double>(arm_configs[a].config.model.attention.top_k) /
                                                static_cast<double>(arm_configs[a].config.model.experts_per_group())}});
    }
    if (fit_ok) {
      const size_t first = point_estimate.size() - n_arms * grid_c.size() + a * grid_c.size();
      std::vector<double> curve, lo, hi, gap, gap_lo, gap_hi;
      for (size_t g = 0; g < grid_c.size(); ++g) {
        const Interval i = q_interval(first + g);
        curve.push_back(i.value), lo.push_back(i.lo), hi.push_back(i.hi);
        const size_t base_k = point_estimate.size() - n_arms * grid_c.size() + g;
        std::vector<double> d;
        for (const auto& draw : draws) d.push_back(draw[first + g] - draw[base_k]);
        const Interval gi = interval(point_estimate[first + g] - point_estimate[base_k], d);
        gap.push_back(gi.value), gap_lo.push_back(gi.lo), gap_hi.push_back(gi.hi);
      }
      arm["fit"] = {{"curve", curve}, {"lo", lo}, {"hi", hi}, {"gap", gap}, {"gap_lo", gap_lo}, {"gap_hi", gap_hi},
                    {"max_measured", *std::max_element(C[a].begin(), C[a].end())}};
    }
    for (size_t t = 0; t < T && fit_ok; ++t)
      arm["targets"].push_back({{"label", o.targets[t].label}, {"flops", target_models[t].flops_per_token[a] * o.targets[t].tokens}});
    plot["arms"].push_back(arm);
  }
  j["plot"] = plot;
  return {md, j.dump(2) + "\n", csv, obs.size()};
}

void fit_ladder_command(const Ladder& l, LadderFitOptions o) {
  if (o.out.empty()) o.out = l.out / "fit";
  const LadderReport report = fit_ladder(l, o);
  fmt::print("{}", report.markdown);
  make_directories(o.out);
  write_file_atomic(o.out / "ladder.md", report.markdown);
  write_file_atomic(o.out / "ladder.csv", report.csv);
  write_file_atomic(o.out / "ladder.json", report.json);
  fmt::print("\nwrote {}, {}, {}\n", (o.out / "ladder.md").string(), (o.out / "ladder.csv").string(), (o.out / "ladder.json").string());
  if (o.plots && report.finished > 0) run_plot_script("plot_ladder.py", o.out / "ladder.json", o.out);
}

}  // namespace gqe
