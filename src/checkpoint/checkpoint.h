// Checkpoints (docs/training.md): run_dir/checkpoints/step_XXXXXXXX/ holds model.safetensors
// (Hugging Face Llama names), optimizer.safetensors (AdamW moments by parameter name) and
// state.json (the trainer state and every file's size and checksum), written into a temporary
// directory, fsynced, renamed into place; checkpoints/latest then names it. A directory whose
// state.json is missing or whose files do not match their checksums is never loaded.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <ATen/Tensor.h>
#include <torch/nn/module.h>

#include "checkpoint/trainer_state.h"

namespace gqe {

struct Checkpoint {
  std::filesystem::path dir;
  TrainerState state;
  std::map<std::string, at::Tensor> model, optimizer;  // on the CPU
};

// Saves atomically, then keeps only the newest `keep` checkpoints. Returns the directory.
std::filesystem::path save_checkpoint(const std::filesystem::path& run_dir, const TrainerState& state,
                                      const std::vector<std::pair<std::string, at::Tensor>>& model,
                                      const std::map<std::string, at::Tensor>& optimizer, int64_t keep);

// Loads and verifies one checkpoint directory; throws UserError naming what is wrong.
Checkpoint load_checkpoint(const std::filesystem::path& dir);
// Verifies one (state.json, every file's size and checksum) without loading it; throws as
// load_checkpoint does.
TrainerState verify_checkpoint(const std::filesystem::path& dir);

// The newest checkpoint of a run that verifies; each damaged one is reported to `warn` and
// skipped. Nothing if the run has no usable checkpoint.
std::optional<Checkpoint> load_latest_checkpoint(const std::filesystem::path& run_dir,
                                                 const std::function<void(const std::string&)>& warn);

// Copies checkpoint weights into the model, every parameter by its name; throws UserError naming a
// missing or misshapen one (`where`: the checkpoint).
void load_model_weights(torch::nn::Module& model, const std::map<std::string, at::Tensor>& weights, const std::string& where);

// The state of the newest checkpoint if it verifies; nothing if there is none or it is damaged
// (load_latest_checkpoint then says so and takes an older one).
std::optional<TrainerState> verified_latest_state(const std::filesystem::path& run_dir);

// The state of the run's newest checkpoint as `latest` names it, without verifying its files (for
// a quick look; training and evaluation load with load_latest_checkpoint).
std::optional<TrainerState> peek_latest_state(const std::filesystem::path& run_dir);

// "step_00000042"
std::string checkpoint_name(int64_t step);

// The state as state.json holds it (also how rank 0 hands a resumed state to the other ranks).
std::string trainer_state_json(const TrainerState& state);
TrainerState parse_trainer_state(const std::string& json);

}  // namespace gqe
