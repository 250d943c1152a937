#include "eval/evaluate.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/utils.h>

#include <functional>
#include <thread>

#include "common/error.h"
#include "common/files.h"
#include "config/config_loader.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "data/tokenizer.h"
#include "dist/communicator.h"
#include "dist/device_info.h"
#include "eval/scoring.h"
#include "model/decoder.h"
#include "model/fused_kernels.h"
#include "model/model_info.h"
#include "checkpoint/checkpoint.h"

namespace fs = std::filesystem;

namespace gqe {
namespace {

// The checkpoint named, or the newest complete one of a run, with the run's config.
struct Target {
  Checkpoint checkpoint;
  fs::path run_dir;
  LoadedConfig config;
};

// warn: what to do with a warning (a damaged newer checkpoint skipped); by default, print it.
// several_machines: the job spans machines, and each of them reads the checkpoint.
Target open_target(const fs::path& path, const std::function<void(const std::string&)>& warn = {}, bool several_machines = false) {
  Target t;
  if (several_machines && !fs::exists(path))
    throw UserError(fmt::format("{}: not on this machine: every machine of an evaluation reads the checkpoint and its config.yaml "
                                "(keep the run on a file system they all see, or copy it to the same path on each)",
                                path.string()));
  if (fs::exists(path / "state.json")) {
    t.checkpoint = load_checkpoint(path);
    t.run_dir = fs::absolute(path).lexically_normal().parent_path().parent_path();
  } else if (fs::is_directory(path / "checkpoints")) {
    auto latest = load_latest_checkpoint(path, warn ? warn : [](const std::string& w) { fmt::print(stderr, "gqe: {}\n", w); });
    if (!latest) throw UserError(fmt::format("{}: the run has no complete checkpoint", path.string()));
    t.checkpoint = std::move(*latest);
    t.run_dir = path;
  } else {
    throw UserError(fmt::format("{}: neither a run directory (with checkpoints/) nor a checkpoint (with state.json)",
                                path.string()));
  }
  const fs::path config = t.run_dir / "config.yaml";
  if (!fs::exists(config)) throw UserError(fmt::format("{}: no config.yaml", t.run_dir.string()));
  t.config = load_config(config.string());
  return t;
}

Decoder load_model(const Target& t, at::Device device) {
  Decoder model(t.config.config.model);
  load_model_weights(*model, t.checkpoint.model, t.checkpoint.dir.string());
  model->to(device);
  model->eval();
  return model;
}

// The run's dataset, with its tokenizer checked, where it is still there (eval needs it for --val
// and the eval sets' fingerprints, sample for the tokenizer).
std::optional<Manifest> dataset_manifest(const Config& c) {
  if (c.data.dataset.empty() || !fs::exists(fs::path(c.data.dataset) / "manifest.json")) return std::nullopt;
  Manifest m = read_manifest(c.data.dataset);
  verified_tokenizer(c.data.dataset, m);
  return m;
}

struct EvalInput {
  std::optional<Manifest> manifest;
  std::shared_ptr<const TokenStream> val;  // with --val
  std::vector<EvalSet> sets;
};

// What an evaluation reads besides the checkpoint (the run's dataset, the eval sets), checked.
EvalInput open_eval_input(const EvalOptions& o, const Config& c) {
  EvalInput in;
  std::vector<std::pair<std::string, std::string>> tasks = o.tasks;
  if (tasks.empty()) tasks.assign(c.eval.tasks.begin(), c.eval.tasks.end());
  if (tasks.empty() && !o.val) throw UserError("eval: nothing to do: give --tasks NAME=FILE,... or --val (or set eval.tasks)");
  in.manifest = dataset_manifest(c);
  if (o.val) {
    if (!in.manifest) throw UserError(fmt::format("--val: the run's dataset {} is not there", c.data.dataset));
    if (c.eval.val_tokens == 0) throw UserError("--val: the run's eval.val_tokens is 0 (no validation loss)");
    in.val = std::make_shared<const TokenStream>(c.data.dataset, *in.manifest, Split::val);
    if (samples_per_epoch(in.val->size(), static_cast<uint64_t>(c.data.seq_len)) == 0)
      throw UserError(fmt::format("--val: the val split of {} is shorter than one window", c.data.dataset));
  }
  for (const auto& [name, file] : tasks) {
    EvalSet set = read_eval_set(file);
    if (set.task != name) throw UserError(fmt::format("{}: holds the task {}, not {}", file, set.task, name));
    if (in.manifest && set.tokenizer_fingerprint != in.manifest->tokenizer.fingerprint)
      throw UserError(fmt::format("{}: tokenized with another tokenizer ({}) than the run's dataset ({})", file,
                                  hex64(set.tokenizer_fingerprint), hex64(in.manifest->tokenizer.fingerprint)));
    if (set.vocab_size > static_cast<uint32_t>(c.model.vocab_size))
      throw UserError(fmt::format("{}: ids up to {}, the model has {}", file, set.vocab_size, c.model.vocab_size));
    in.sets.push_back(std::move(set));
  }
  return in;
}

}  // namespace

void check_eval_input(const EvalOptions& o, const DistEnvironment& last) {
  const Target t = open_target(o.target, [](const std::string&) {}, !last.one_machine());  // the ranks warn
  job_device(t.config, last);
  // On several machines the ranks check the rest in the job, which stops every node (as gqe train).
  if (last.one_machine()) open_eval_input(o, t.config.config);
}

void evaluate(const EvalOptions& o) {
  const DistEnvironment env = read_dist_environment();
  // The checkpoint and its config (what the job is made from) each rank checks alone, as gqe
  // train does its config; the rest in the job below.
  const Target t = open_target(o.target, [&](const std::string& w) {
    if (env.rank == 0) fmt::print(stderr, "gqe: {}\n", w);
  }, !env.one_machine());
  const Config& c = t.config.config;
  const at::Device device = job_device(t.config, env);
  std::vector<std::string> kernel_warnings;
  prepare_fused_kernels(c.train.fused_kernels, device, [&](const std::string& line) { kernel_warnings.push_back(line); });
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  at::set_num_threads(c.train.threads > 0 ? static_cast<int>(c.train.threads) : std::max(1, cores / env.local_world));
  Communicator comm(env, c.dist.backend, device, std::chrono::seconds(c.dist.timeout_s));
  for (const std::string& line : comm.gather_warnings(kernel_warnings)) fmt::print(stderr, "gqe: warning: {}\n", line);
  const bool bf16 = c.train.precision == Precision::bf16;
  const int64_t batch = o.batch_size > 0 ? o.batch_size : c.eval.batch_size;
  // The eval sets, the dataset and the memory, in the job: bad input is one line for it, whoever
  // started the ranks (--nproc's launcher on one machine has checked all but the memory already).
  EvalInput in;
  comm.check_input([&] {
    in = open_eval_input(o, c);
    // What an evaluation certainly holds: the weights and one batch's logits, on each rank that
    // draws on this device's memory.
    const double logits = static_cast<double>(batch) * static_cast<double>(c.data.seq_len) *
                          static_cast<double>(c.model.vocab_size) * (bf16 ? 2.0 : 4.0);
    const int sharing = ranks_sharing_memory(device, env.local_world);
    require_memory(device, sharing * (describe_model(c).weights_bytes + logits),
                   fmt::format("{} {}: the model and the logits of a batch{}", o.batch_size > 0 ? "--batch-size" : "eval.batch_size", batch,
                               sharing > 1 ? fmt::format(", for {} ranks", sharing) : ""));
  });
  const std::vector<EvalSet>& sets = in.sets;
  Decoder model = load_model(t, device);
  std::optional<double> val;
  if (o.val)
    val = validation_loss(*model, in.val, c.data.seq_len, static_cast<uint64_t>(c.eval.val_tokens / c.data.seq_len), batch,
                          bf16, comm);
  std::vector<TaskScore> scores;
  std::string samples;
  for (const EvalSet& set : sets) {
    std::vector<nlohmann::ordered_json> items;
    scores.push_back(score_eval_set(*model, set, batch, c.data.seq_len, bf16, comm, o.log_samples.empty() ? nullptr : &items));
    for (const auto& item : items) samples += item.dump() + "\n";
  }
  comm.finish();
  if (!comm.main()) return;
  if (!o.log_samples.empty()) write_file_atomic(o.log_samples, samples);

  fmt::print("{} (step {}, {} tokens)\n", t.checkpoint.dir.string(), t.checkpoint.state.step, t.checkpoint.state.tokens);
  if (val) fmt::print("  validation loss {:.4f}, perplexity {:.2f}\n", *val, std::exp(*val));
  if (!scores.empty()) {
    fmt::print("  {:<12}{:>8}{:>18}{:>18}{:>18}\n", "task", "items", "acc", "acc_norm", "acc_bytes");
    double acc = 0, norm = 0, bytes = 0;
    auto cell = [](double v, double se) { return fmt::format("{:.4f} ± {:.4f}", v, se); };
    for (const TaskScore& s : scores) {
      fmt::print("  {:<12}{:>8}{:>18}{:>18}{:>18}\n", s.task, s.items, cell(s.acc, s.acc_stderr), cell(s.acc_norm, s.acc_norm_stderr),
                 cell(s.acc_bytes, s.acc_bytes_stderr));
      acc += s.acc / static_cast<double>(scores.size());
      norm += s.acc_norm / static_cast<double>(scores.size());
      bytes += s.acc_bytes / static_cast<double>(scores.size());
    }
    fmt::print("  {:<12}{:>8}{:>18.4f}{:>18.4f}{:>18.4f}\n", "average", "", acc, norm, bytes);
    fmt::print("  (± the standard error, as lm-evaluation-harness reports it; acc_norm per character, acc_bytes per UTF-8 byte)\n");
  }
  nlohmann::ordered_json line = {{"step", t.checkpoint.state.step}, {"tokens", t.checkpoint.state.tokens}};
  line.update(evaluation_json(val, scores));
  nlohmann::ordered_json report = line;
  report["checkpoint"] = t.checkpoint.dir.string();
  write_file_atomic(t.run_dir / "eval.json", report.dump(2) + "\n");
  // The history of gqe eval, apart from the training's metrics.jsonl (whose lines the trainer owns:
  // a second val_loss line at a step would read as a second training evaluation).
  AppendFile(t.run_dir / "evals.jsonl", /*truncate=*/false).append(report.dump() + "\n");
}

void sample(const SampleCommand& command) {
  const Target t = open_target(command.target);
  const Config& c = t.config.config;
  const std::optional<Manifest> manifest = dataset_manifest(c);
  if (!manifest) throw UserError(fmt::format("sample: the run's dataset {} (for its tokenizer) is not there", c.data.dataset));
  const Tokenizer tokenizer(verified_tokenizer(c.data.dataset, *manifest).string());
  const DistEnvironment single;
  const at::Device device = rank_device(c.train.device, single, t.config.origin("train.device"));
  prepare_fused_kernels(c.train.fused_kernels, device);
  std::vector<int32_t> prompt{tokenizer.eos_id()};  // a document starts after an EOS
  const auto ids = tokenizer.encode(command.prompt);
  prompt.insert(prompt.end(), ids.begin(), ids.end());
  const int64_t positions = static_cast<int64_t>(prompt.size()) + command.sampling.max_tokens;
  const ModelInfo info = describe_model(c);
  require_memory(device, info.weights_bytes + 4.0 * static_cast<double>(info.kv_cache_values_per_token) * static_cast<double>(positions),
                 fmt::format("--max-tokens {}: the model and a KV cache of {} positions", command.sampling.max_tokens, positions));
  if (positions > c.data.seq_len)
    fmt::print(stderr, "gqe: warning: the prompt ({} tokens) and --max-tokens {} reach {} positions, past the {} the model was "
               "trained on (data.seq_len): what it writes beyond them is extrapolation\n",
               prompt.size(), command.sampling.max_tokens, positions, c.data.seq_len);
  Decoder model = load_model(t, device);
  for (int i = 0; i < command.num_samples; ++i) {
    SampleOptions options = command.sampling;
    options.seed += static_cast<uint64_t>(i);
    options.stop_token = tokenizer.eos_id();
    std::vector<int32_t> out = generate(*model, prompt, options);
    if (command.ids) {
      fmt::print("{}\n", nlohmann::ordered_json{{"prompt", prompt}, {"generated", out}}.dump());
      continue;
    }
    if (!out.empty() && out.back() == tokenizer.eos_id()) out.pop_back();
    if (command.num_samples > 1) fmt::print("--- sample {} ---\n", i + 1);
    fmt::print("{}{}\n", command.prompt, tokenizer.decode(out));
  }
}

}  // namespace gqe
