#include "ladder/ladder.h"

#include <yaml-cpp/yaml.h>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "common/error.h"
#include "common/files.h"
#include "dist/environment.h"
#include "experiment/stats.h"

namespace fs = std::filesystem;

namespace gqe {
namespace {

template <class T> T scalar(const YAML::Node& node, const std::string& file, const std::string& key) {
  try {
    return node.as<T>();
  } catch (const YAML::Exception&) {
    throw UserError(fmt::format("{}: {}: expected {}, got '{}'", file, key, std::is_integral_v<T> ? "a whole number" : "a number",
                                node.IsScalar() ? node.Scalar() : "a list or mapping"));
  }
}

// A scalar or a list of them.
std::vector<double> numbers(const YAML::Node& node, const std::string& file, const std::string& key) {
  std::vector<double> out;
  if (node.IsSequence()) {
    for (size_t i = 0; i < node.size(); ++i) out.push_back(scalar<double>(node[i], file, fmt::format("{}[{}]", key, i)));
  } else {
    out.push_back(scalar<double>(node, file, key));
  }
  if (out.empty()) throw UserError(fmt::format("{}: {}: give at least one value", file, key));
  for (double v : out)
    if (!(v > 0) || !std::isfinite(v)) throw UserError(fmt::format("{}: {}: {} is not a positive number", file, key, v));
  return out;
}

int64_t round_to_power_of_two(double x) { return int64_t{1} << std::clamp<int64_t>(std::llround(std::log2(std::max(x, 1.0))), 0, 40); }

std::string model_name(const ModelConfig& m) { return fmt::format("d{}-L{}", m.d_model, m.n_layers); }

// What every run of a rung at a budget shares: the model, the budget, and the hyperparameters
// the rules derive from them.
struct RungPoint {
  std::vector<std::string> overrides;
  int64_t tokens = 0;
};

RungPoint resolve_point(const Ladder& l, const LadderRung& rung, const LadderBudget& budget, int world) {
  const ModelInfo& info = rung.first_arm;
  const ModelInfo base_info = describe_model(l.base_config);
  const double n = static_cast<double>(info.non_embedding), fpt = info.train_flops_per_token();
  const double tokens = budget.kind == LadderBudget::Kind::tokens_per_param ? budget.value * n : budget.value / fpt;
  const double flops = tokens * fpt;
  const Config& b = l.base_config;
  const double base_flops = base_info.train_flops_per_token() * static_cast<double>(b.train.tokens);
  const int64_t base_seqs = b.train.global_batch_tokens / b.data.seq_len;
  const int64_t seqs = round_to_power_of_two(static_cast<double>(base_seqs) * std::pow(flops / base_flops, l.rules.batch_exponent));
  const int64_t batch_tokens = seqs * b.data.seq_len;
  if (tokens < static_cast<double>(batch_tokens))
    throw UserError(fmt::format("{}: budgets: {} at rung {} ({} non-embedding parameters) is {} tokens, less than one batch ({} "
                                "tokens = {} x {})", l.file, budget.label, rung.name, human_count(n),
                                human_count(tokens), batch_tokens, seqs, b.data.seq_len));
  // Each rank's share of the batch in micro-batches: the largest size that divides it, up to the base's.
  if (seqs % world != 0)
    throw UserError(fmt::format("{}: rung {}: its batch of {} sequences (the batch rule's power of 2) does not split over {} ranks: "
                                "train the ladder on fewer ranks, or on a power of 2 of them", l.file, rung.name, seqs, world));
  int64_t micro = std::min(b.train.micro_batch_size, seqs / world);
  while ((seqs / world) % micro != 0) --micro;
  const int64_t steps = static_cast<int64_t>(std::ceil(tokens / static_cast<double>(batch_tokens)));
  RungPoint p;
  p.tokens = steps * batch_tokens;
  const double lr = rung.lr ? *rung.lr : b.train.optimizer.lr * std::pow(n / static_cast<double>(base_info.non_embedding), l.rules.lr_exponent);
  const double warmup = l.rules.warmup_fraction ? *l.rules.warmup_fraction
                                                : static_cast<double>(b.train.schedule.warmup_tokens) / static_cast<double>(b.train.tokens);
  const int64_t every = std::max<int64_t>(1, (steps + l.rules.evaluations - 1) / l.rules.evaluations) * batch_tokens;
  p.overrides = rung.overrides;
  for (const std::string& o : {fmt::format("train.tokens={}", p.tokens), fmt::format("train.global_batch_tokens={}", batch_tokens),
                               fmt::format("train.micro_batch_size={}", micro),
                               fmt::format("train.optimizer.lr={}", lr),
                               fmt::format("train.schedule.warmup_tokens={}", std::llround(warmup * static_cast<double>(p.tokens))),
                               fmt::format("eval.every_tokens={}", every), fmt::format("train.checkpoint.every_tokens={}", every)})
    p.overrides.push_back(o);
  return p;
}

// The training FLOPs of the runs, in all and not yet trained (`statuses`: each run's), in GPU-hours.
std::string cost_line(const Ladder& l, const std::vector<LadderRun>& runs, const std::vector<RunStatus>& statuses) {
  double total = 0, left = 0;
  for (size_t i = 0; i < runs.size(); ++i) {
    total += runs[i].flops;
    if (statuses[i].state != RunState::finished)
      left += runs[i].flops * (1 - static_cast<double>(statuses[i].tokens) / static_cast<double>(runs[i].run.config.config.train.tokens));
  }
  const double rate = l.cost.mfu * l.cost.peak_tflops * 1e12;
  return fmt::format("cost: {:.3g} training FLOPs in all ({:.3g} left) = {:.3g} GPU-hours ({:.3g} left) at {:g}% MFU of {:g} TFLOP/s "
                     "(cost.mfu, cost.peak_tflops; evaluation not counted)",
                     total, left, total / rate / 3600, left / rate / 3600, 100 * l.cost.mfu, l.cost.peak_tflops);
}

}  // namespace

std::vector<std::string> ShapeRule::overrides(int64_t width, const std::string& where) const {
  if (width <= 0 || width % head_dim != 0)
    throw UserError(fmt::format("{}: width {} is not a positive multiple of shape.head_dim ({})", where, width, head_dim));
  const int64_t heads = width / head_dim;
  if (heads % kv_group != 0)
    throw UserError(fmt::format("{}: width {} gives {} heads of {}, which do not divide into KV groups of shape.kv_group = {}", where,
                                width, heads, head_dim, kv_group));
  ModelConfig m;
  apply(m, width);
  return {fmt::format("model.d_model={}", m.d_model), fmt::format("model.n_layers={}", m.n_layers),
          fmt::format("model.n_heads={}", m.n_heads), fmt::format("model.n_kv_heads={}", m.n_kv_heads),
          fmt::format("model.head_dim={}", m.head_dim), fmt::format("model.ffn_hidden={}", m.ffn_hidden)};
}

void ShapeRule::apply(ModelConfig& m, int64_t width) const {
  m.d_model = width;
  m.head_dim = head_dim;
  m.n_heads = width / head_dim;
  m.n_kv_heads = m.n_heads / kv_group;
  m.n_layers = std::max<int64_t>(1, std::llround(static_cast<double>(width) / static_cast<double>(aspect)));
  m.ffn_hidden = std::llround(ffn_ratio * static_cast<double>(width));
}

Ladder load_ladder(const std::string& file) {
  Ladder l;
  l.file = file;
  if (!fs::exists(file)) throw UserError(fmt::format("{}: cannot open ladder file (no such file)", file));
  YAML::Node root;
  try {
    root = YAML::Load(read_file(file));
  } catch (const YAML::Exception& ex) {
    throw UserError(fmt::format("{}:{}: invalid YAML: {}", file, ex.mark.line + 1, ex.msg));
  }
  if (!root.IsMap()) throw UserError(fmt::format("{}: a ladder is a mapping (name, base, out, arms, rungs, budgets, ...)", file));
  only_keys(root, file, "", {"name", "base", "out", "seeds", "arms", "shape", "rungs", "budgets", "rules", "cost"});
  for (const char* key : {"name", "base", "out", "arms", "rungs", "budgets"})
    if (!root[key]) throw UserError(fmt::format("{}: '{}' is missing", file, key));
  l.name = root["name"].Scalar();
  const fs::path base = root["base"].Scalar();
  l.base = (base.is_absolute() ? base : (fs::path(file).parent_path() / base)).lexically_normal().string();
  l.out = root["out"].Scalar();
  if (l.name.empty() || l.out.empty()) throw UserError(fmt::format("{}: name and out must not be empty", file));
  if (root["seeds"]) {
    l.seeds.clear();
    if (!root["seeds"].IsSequence() || root["seeds"].size() == 0) throw UserError(fmt::format("{}: seeds: a list of at least one seed", file));
    for (size_t i = 0; i < root["seeds"].size(); ++i) l.seeds.push_back(scalar<int64_t>(root["seeds"][i], file, fmt::format("seeds[{}]", i)));
  }
  try {
    l.base_config = load_config(l.base).config;
  } catch (const UserError& ex) {
    throw UserError(fmt::format("{}: base: {}", file, ex.what()));
  }
  l.arms = parse_arms(root["arms"], file);
  check_arms(file, l.base, l.arms);

  if (root["shape"]) {
    const YAML::Node s = root["shape"];
    only_keys(s, file, "shape", {"head_dim", "aspect", "kv_group", "ffn_ratio"});
    if (s["head_dim"]) l.shape.head_dim = scalar<int64_t>(s["head_dim"], file, "shape.head_dim");
    if (s["aspect"]) l.shape.aspect = scalar<int64_t>(s["aspect"], file, "shape.aspect");
    if (s["kv_group"]) l.shape.kv_group = scalar<int64_t>(s["kv_group"], file, "shape.kv_group");
    if (s["ffn_ratio"]) l.shape.ffn_ratio = scalar<double>(s["ffn_ratio"], file, "shape.ffn_ratio");
    if (l.shape.head_dim < 1 || l.shape.aspect < 1 || l.shape.kv_group < 1 || !(l.shape.ffn_ratio > 0))
      throw UserError(fmt::format("{}: shape: head_dim, aspect, kv_group and ffn_ratio must be positive", file));
  }
  if (root["rules"]) {
    const YAML::Node r = root["rules"];
    only_keys(r, file, "rules", {"lr_exponent", "batch_exponent", "warmup_fraction", "evaluations"});
    if (r["lr_exponent"]) l.rules.lr_exponent = scalar<double>(r["lr_exponent"], file, "rules.lr_exponent");
    if (r["batch_exponent"]) l.rules.batch_exponent = scalar<double>(r["batch_exponent"], file, "rules.batch_exponent");
    if (r["warmup_fraction"]) {
      l.rules.warmup_fraction = scalar<double>(r["warmup_fraction"], file, "rules.warmup_fraction");
      if (!(*l.rules.warmup_fraction >= 0 && *l.rules.warmup_fraction < 1))
        throw UserError(fmt::format("{}: rules.warmup_fraction: {} is not in [0, 1)", file, *l.rules.warmup_fraction));
    }
    if (r["evaluations"]) l.rules.evaluations = scalar<int64_t>(r["evaluations"], file, "rules.evaluations");
    if (l.rules.evaluations < 1 || l.rules.evaluations > 1000)
      throw UserError(fmt::format("{}: rules.evaluations: {} is not in 1..1000", file, l.rules.evaluations));
    for (double e : {l.rules.lr_exponent, l.rules.batch_exponent})
      if (!(std::fabs(e) <= 4)) throw UserError(fmt::format("{}: rules: exponent {} is not in [-4, 4]", file, e));
  }
  if (root["cost"]) {
    const YAML::Node c = root["cost"];
    only_keys(c, file, "cost", {"mfu", "peak_tflops"});
    if (c["mfu"]) l.cost.mfu = scalar<double>(c["mfu"], file, "cost.mfu");
    if (c["peak_tflops"]) l.cost.peak_tflops = scalar<double>(c["peak_tflops"], file, "cost.peak_tflops");
    if (!(l.cost.mfu > 0 && l.cost.mfu <= 1)) throw UserError(fmt::format("{}: cost.mfu: {} is not in (0, 1]", file, l.cost.mfu));
    if (!(l.cost.peak_tflops > 0)) throw UserError(fmt::format("{}: cost.peak_tflops: must be positive", file));
  }

  const YAML::Node budgets = root["budgets"];
  only_keys(budgets, file, "budgets", {"tokens_per_param", "chinchilla", "flops"});
  if (budgets.size() == 0) throw UserError(fmt::format("{}: budgets: give tokens_per_param, chinchilla or flops", file));
  if (budgets["tokens_per_param"])
    for (double r : numbers(budgets["tokens_per_param"], file, "budgets.tokens_per_param"))
      l.budgets.push_back({LadderBudget::Kind::tokens_per_param, r, fmt::format("{:g}x", r)});
  if (budgets["chinchilla"])  // multiples of Chinchilla's 20 tokens per parameter, as OLMo's ladder writes its budgets
    for (double m : numbers(budgets["chinchilla"], file, "budgets.chinchilla"))
      l.budgets.push_back({LadderBudget::Kind::tokens_per_param, 20 * m, fmt::format("{:g}xC", m)});
  if (budgets["flops"])
    for (double f : numbers(budgets["flops"], file, "budgets.flops"))
      l.budgets.push_back({LadderBudget::Kind::flops, f, fmt::format("{:.3g}F", f)});

  const YAML::Node rungs = root["rungs"];
  if (!rungs.IsSequence() || rungs.size() == 0)
    throw UserError(fmt::format("{}: rungs: a list of model sizes ({{width: 256}} or {{model: {{d_model: ..., ...}}}})", file));
  for (size_t i = 0; i < rungs.size(); ++i) {
    const std::string where = fmt::format("rungs[{}]", i);
    const YAML::Node r = rungs[i];
    LadderRung rung;
    if (r.IsScalar()) {
      rung.width = scalar<int64_t>(r, file, where);
    } else {
      only_keys(r, file, where, {"width", "model", "lr"});
      if (!r["width"] == !r["model"]) throw UserError(fmt::format("{}: {}: give either width (the shape rule) or model (explicit sizes)", file, where));
      if (r["width"]) rung.width = scalar<int64_t>(r["width"], file, where + ".width");
      if (r["lr"]) {
        rung.lr = scalar<double>(r["lr"], file, where + ".lr");
        if (!(*rung.lr > 0 && *rung.lr < 10)) throw UserError(fmt::format("{}: {}.lr: {} is not in (0, 10)", file, where, *rung.lr));
      }
      if (r["model"]) {
        if (!r["model"].IsMap()) throw UserError(fmt::format("{}: {}.model: a mapping of model keys (d_model, n_layers, ...)", file, where));
        flatten_overrides(r["model"], "model", rung.overrides);
        for (const std::string& o : rung.overrides)
          if (o.rfind("model.attention.", 0) == 0)
            throw UserError(fmt::format("{}: {}.model: {} -- a rung sets the size; the attention belongs to the arms", file, where,
                                        o.substr(0, o.find('='))));
      }
    }
    if (rung.width) rung.overrides = l.shape.overrides(*rung.width, fmt::format("{}: {}", file, where));
    std::vector<std::string> first = l.arms.front().overrides;
    first.insert(first.end(), rung.overrides.begin(), rung.overrides.end());
    try {
      const Config c = load_config(l.base, first).config;
      rung.name = model_name(c.model);
      rung.first_arm = describe_model(c);
    } catch (const UserError& ex) {
      throw UserError(fmt::format("{}: {}: {}", file, where, ex.what()));
    }
    for (const LadderRung& other : l.rungs)
      if (other.name == rung.name) throw UserError(fmt::format("{}: {}: {} is already a rung", file, where, rung.name));
    l.rungs.push_back(std::move(rung));
  }
  // Smallest first: the order they train in and are reported.
  std::stable_sort(l.rungs.begin(), l.rungs.end(),
                   [](const LadderRung& a, const LadderRung& b) { return a.first_arm.non_embedding < b.first_arm.non_embedding; });
  ladder_runs(l);  // every run's config must load
  return l;
}

std::vector<LadderRun> ladder_runs(const Ladder& l, int world) {
  std::vector<LadderRun> runs;
  for (size_t ri = 0; ri < l.rungs.size(); ++ri)
    for (size_t bi = 0; bi < l.budgets.size(); ++bi) {
      const LadderRung& rung = l.rungs[ri];
      const std::string point = l.budgets.size() == 1 ? rung.name : rung.name + "-" + l.budgets[bi].label;
      const std::string where = fmt::format("rung {} at budget {}", rung.name, l.budgets[bi].label);
      const RungPoint p = resolve_point(l, rung, l.budgets[bi], world);
      for (const ExperimentArm& arm : l.arms)
        for (int64_t seed : l.seeds) {
          LadderRun lr;
          lr.rung = ri;
          lr.budget = bi;
          lr.point = point;
          ExperimentRun& run = lr.run;
          run.arm = arm.name;
          run.seed = seed;
          const std::string name = l.seeds.size() == 1 ? arm.name : fmt::format("{}-seed{}", arm.name, seed);
          run.run_dir = l.out / point / name;
          run.label = fmt::format("{} {}", point, l.seeds.size() == 1 ? arm.name : fmt::format("{} (seed {})", arm.name, seed));
          run.overrides = arm.overrides;
          run.overrides.insert(run.overrides.end(), p.overrides.begin(), p.overrides.end());
          run.overrides.push_back(fmt::format("train.seed={}", seed));
          run.overrides.push_back(fmt::format("log.name={}", name));
          try {
            run.config = load_config(l.base, run.overrides);
          } catch (const UserError& ex) {
            throw UserError(fmt::format("{}: {}, arm {}: {}", l.file, where, arm.name, ex.what()));
          }
          lr.info = describe_model(run.config.config);
          lr.flops = lr.info.train_flops_per_token() * static_cast<double>(run.config.config.train.tokens);
          runs.push_back(std::move(lr));
        }
    }
  return runs;
}

void run_ladder(const Ladder& l, int nproc, int max_restarts) {
  // On several nodes, node 0 holds the run directories (docs/scaling.md).
  const NodeLayout node = read_node_layout();
  const bool node0 = node.node_rank == 0;
  const std::vector<LadderRun> runs = ladder_runs(l, node.nnodes * nproc);
  if (node0) {
    make_directories(l.out);
    // The file as run, with absolute paths: `gqe ladder fit OUT` reads it.
    YAML::Node copy = YAML::Load(read_file(l.file));
    copy["base"] = fs::absolute(l.base).lexically_normal().string();
    copy["out"] = fs::absolute(l.out).lexically_normal().string();
    YAML::Emitter emitter;
    emitter << copy;
    write_file_atomic(l.out / "ladder.yaml", fmt::format("# {} as `gqe ladder run` read it\n{}\n", l.file, emitter.c_str()));
    std::vector<RunStatus> statuses;
    for (const LadderRun& r : runs) statuses.push_back(run_status(r.run));
    fmt::print("[ladder] {}: {} runs; {}\n", l.name, runs.size(), cost_line(l, runs, statuses));
  } else {
    fmt::print("[ladder] {}: {} runs; node 0 holds their run directories\n", l.name, runs.size());
  }
  std::vector<ExperimentRun> plain;
  for (const LadderRun& r : runs) plain.push_back(r.run);
  if (!train_runs(l.base, plain, nproc, max_restarts, "ladder", l.file)) return;
  fmt::print("[ladder] every run is trained; fit it{} with: gqe ladder fit {} --predict PARAMS@TOKENS (non-embedding "
             "parameters, e.g. 201M@30B: the paper's model)\n", node0 ? "" : " on node 0", l.file);
}

void print_ladder_status(const Ladder& l) {
  const std::vector<LadderRun> runs = ladder_runs(l);
  const Config& b = l.base_config;
  const ModelInfo base_info = describe_model(b);
  fmt::print("ladder {} ({}): {} rungs x {} budgets x {} arms x {} seeds = {} runs in {}\n", l.name, l.file, l.rungs.size(),
             l.budgets.size(), l.arms.size(), l.seeds.size(), runs.size(), l.out.string());
  fmt::print("rules (from the base, {}: {} non-embedding parameters, {} tokens, lr {:g}, {} sequences of {}):\n", l.base,
             human_count(static_cast<double>(base_info.non_embedding)), human_count(static_cast<double>(b.train.tokens)),
             b.train.optimizer.lr, b.train.global_batch_tokens / b.data.seq_len, b.data.seq_len);
  fmt::print("  lr = base lr x (N / N_base)^{:.4g}; sequences per batch = base's x (C / C_base)^{:.4g}, to a power of 2;\n",
             l.rules.lr_exponent, l.rules.batch_exponent);
  fmt::print("  warmup {:.3g}% of the budget; decay as the base ({}); {} evaluations per run\n",
             100 * (l.rules.warmup_fraction ? *l.rules.warmup_fraction
                                            : static_cast<double>(b.train.schedule.warmup_tokens) / static_cast<double>(b.train.tokens)),
             b.train.schedule.kind == ScheduleKind::wsd ? fmt::format("wsd, last {:g}%", 100 * b.train.schedule.decay_fraction) : "cosine",
             l.rules.evaluations);
  fmt::print("\n  {:<16}{:>10}{:>10}{:>10}{:>7}{:>10}{:>10}{:>11}\n", "rung", "params", "non-emb", "tokens", "batch", "lr", "tok/param",
             "FLOPs/run");
  for (const LadderRun& r : runs) {
    if (r.run.arm != l.arms.front().name || r.run.seed != l.seeds.front()) continue;
    const Config& c = r.run.config.config;
    fmt::print("  {:<16}{:>10}{:>10}{:>10}{:>7}{:>10.3g}{:>10.3g}{:>11.3g}\n", r.point, human_count(static_cast<double>(r.info.total)),
               human_count(static_cast<double>(r.info.non_embedding)), human_count(static_cast<double>(c.train.tokens)),
               c.train.global_batch_tokens / c.data.seq_len, c.train.optimizer.lr,
               static_cast<double>(c.train.tokens) / static_cast<double>(r.info.non_embedding), r.flops);
  }
  fmt::print("\n  {:<34}{:<13}{:>20}{:>8}{:>11}\n", "run", "state", "tokens", "step", "val loss");
  std::vector<RunStatus> statuses;
  for (const LadderRun& r : runs) {
    const RunStatus& s = statuses.emplace_back(run_status(r.run));
    std::string val = "-";
    if (s.state != RunState::not_started)
      if (const auto v = final_validation_loss(r.run.run_dir)) val = fmt::format("{:.4f}", *v);
    fmt::print("  {:<34}{:<13}{:>20}{:>8}{:>11}\n", (fs::path(r.point) / r.run.run_dir.filename()).string(), run_state_name(s.state),
               fmt::format("{}/{}", human_count(static_cast<double>(s.tokens)), human_count(static_cast<double>(r.run.config.config.train.tokens))),
               s.step, val);
  }
  fmt::print("\n{}\n", cost_line(l, runs, statuses));
}

}  // namespace gqe
