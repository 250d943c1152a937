// Scaling ladders (docs/scaling.md): the arms of an experiment trained at several model sizes
// (rungs), each with budgets that grow with its size and the hyperparameters that must change with
// size set by stated rules, so that each arm's loss can be fitted against compute and the gap
// between arms extrapolated. The file: a base config, arms (differing only in model.attention.*),
// seeds, a shape rule, rungs, budgets, rules; every run is a `gqe train` as in experiments.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "experiment/experiment.h"
#include "model/model_info.h"

namespace gqe {

// A model from one width, as the paper's 250M config is shaped (d_model 1024 = 16 layers x 64,
// 16 heads of 64, 8 KV heads, SwiGLU 3 x d_model): heads = width / head_dim, KV heads = heads /
// kv_group, n_layers = width / aspect (rounded, at least 1), ffn_hidden = ffn_ratio x width.
struct ShapeRule {
  int64_t head_dim = 64, aspect = 64, kv_group = 2;
  double ffn_ratio = 3;
  // The model overrides for `width`; throws UserError (naming `where`) when it does not divide.
  std::vector<std::string> overrides(int64_t width, const std::string& where) const;
  void apply(ModelConfig& model, int64_t width) const;
};

struct LadderRung {
  std::string name;                    // "d128-L4", from the resolved model
  std::optional<int64_t> width;        // given by the shape rule
  std::vector<std::string> overrides;  // model.* keys
  std::optional<double> lr;            // a per-rung learning rate (a documented table) instead of the rule
  ModelInfo first_arm;                 // the first arm's model at this size: its counts set the budgets
};

// tokens = value x the rung's non-embedding parameters (of the first arm; `chinchilla: m` is
// value 20 m, labelled "mxC"), or tokens = value
// FLOPs / the first arm's training FLOPs per token: every arm of a rung trains on the same tokens.
struct LadderBudget {
  enum class Kind { tokens_per_param, flops } kind = Kind::tokens_per_param;
  double value = 20;
  std::string label;  // "20x", "1e+15F"
};

// How hyperparameters follow size, from the base config as the tuned reference point.
struct LadderRules {
  double lr_exponent = -1.0 / 3;   // lr = base lr x (N / N_base)^e                  (OLMo's ladder)
  double batch_exponent = 0.3271;  // sequences = base's x (C / C_base)^e, power of 2 (DeepSeek LLM)
  std::optional<double> warmup_fraction;  // of the budget; default: the base's warmup / budget
  int64_t evaluations = 4;                // per run, evenly spaced (the last at the end)
};

// What a GPU-hour estimate assumes (`gqe ladder status`): sustained MFU on a GPU of this peak.
struct LadderCost {
  double mfu = 0.4;
  double peak_tflops = 989;  // H100 SXM, dense bf16
};

struct Ladder {
  std::string file, name, base;
  std::filesystem::path out;
  std::vector<int64_t> seeds{0};
  std::vector<ExperimentArm> arms;
  ShapeRule shape;
  std::vector<LadderRung> rungs;
  std::vector<LadderBudget> budgets;
  LadderRules rules;
  LadderCost cost;
  Config base_config;
};

struct LadderRun {
  ExperimentRun run;       // arm, seed, directory, overrides, resolved config
  size_t rung = 0, budget = 0;
  std::string point;       // the rung and budget: the directory above the arms
  ModelInfo info;          // of this arm's model
  double flops = 0;        // training FLOPs of the whole budget (gqe info's convention)
};

// Reads and checks the file and resolves every run (each one's config loads and validates).
// Throws UserError "FILE: KEY: what is wrong".
Ladder load_ladder(const std::string& file);
// world: the ranks the runs train on (each rank's share of a batch is cut into micro-batches of
// at most the base's micro_batch_size); throws UserError for a rung whose batch does not split.
std::vector<LadderRun> ladder_runs(const Ladder& ladder, int world = 1);

// Trains every run not finished, rung by rung (smallest first), each as `gqe train` on nproc
// local ranks (max_restarts: train_runs); writes out/ladder.yaml (the file with an absolute base) first, so that
// `gqe ladder fit out/` works from the directory alone.
void run_ladder(const Ladder& ladder, int nproc, int max_restarts = 0);

// The plan (rungs, budgets, hyperparameters, FLOPs, GPU-hours) and every run's state.
void print_ladder_status(const Ladder& ladder);

}  // namespace gqe
