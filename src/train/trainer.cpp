#include "train/trainer.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <mutex>
#include <optional>
#include <thread>

#include <ATen/ATen.h>
#include <c10/core/Event.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/utils.h>

#include "common/checksum.h"
#include "common/error.h"
#include "common/files.h"
#include "common/process.h"
#include "common/run_lock.h"
#include "common/stop_signals.h"
#include "common/version.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "dist/communicator.h"
#include "dist/device_info.h"
#include "dist/environment.h"
#include "dist/gradient_reducer.h"
#include "dist/launcher.h"
#include "eval/scoring.h"
#include "model/fused_kernels.h"
#include "eval/tasks.h"
#include "model/autocast.h"
#include "model/cross_entropy.h"
#include "model/decoder.h"
#include "model/model_info.h"
#include "train/adamw.h"
#include "checkpoint/checkpoint.h"
#include "train/clipping.h"
#include "train/console.h"
#include "train/metrics.h"
#include "train/schedule.h"
#include "train/update.h"

namespace fs = std::filesystem;
using nlohmann::ordered_json;

namespace gqe {
namespace {

// What stopped the job, as a stop line says it: this rank's signal, or another's (the ranks vote).
const char* stop_cause() { return stop_signal() != 0 ? stop_signal_name(stop_signal()) : "a signal to another rank"; }

// The shards are memory-mapped: one truncated or removed under a running trainer makes the next
// read of a lost page a SIGBUS. Say what happened in one line instead of dying of the signal;
// everything written before (checkpoints, metrics lines) is whole.
extern "C" void on_bus_error(int) {
  static const char message[] =
      "gqe: error: a memory-mapped shard of the dataset was truncated or replaced while training read it (SIGBUS); the "
      "run stopped, its checkpoints are intact: restore the dataset (gqe-data inspect DIR --verify) and resume\n";
  const ssize_t written = ::write(STDERR_FILENO, message, sizeof(message) - 1);
  (void)written;
  ::_exit(1);
}

class BusErrorMessage {
 public:
  BusErrorMessage() { previous_ = std::signal(SIGBUS, on_bus_error); }
  ~BusErrorMessage() { std::signal(SIGBUS, previous_); }

 private:
  void (*previous_)(int);
};

// A torch generator's state as hex, and back (the generator handle shares its implementation).
std::string generator_state(at::Device device) {
  at::Generator gen = at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  const at::Tensor bytes = gen.get_state().contiguous();
  std::string s;
  s.reserve(static_cast<size_t>(bytes.numel()) * 2);
  for (int64_t i = 0; i < bytes.numel(); ++i) s += fmt::format("{:02x}", bytes.data_ptr<uint8_t>()[i]);
  return s;
}

void set_generator_state(at::Device device, const std::string& hex) {
  at::Tensor bytes = at::empty({static_cast<int64_t>(hex.size() / 2)}, at::kByte);
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    bytes.data_ptr<uint8_t>()[i / 2] = static_cast<uint8_t>(std::stoi(hex.substr(i, 2), nullptr, 16));
  at::Generator gen = at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(bytes);
}

// Each rank's generators come back when the world size is unchanged (nothing in training draws
// random numbers today, but a resumed run must not depend on that).
void restore_generators(const TrainerState& state, int rank, at::Device device) {
  const auto r = static_cast<size_t>(rank);
  if (r < state.cpu_rng.size()) set_generator_state(at::kCPU, state.cpu_rng[r]);
  if (device.is_cuda() && r < state.cuda_rng.size()) set_generator_state(device, state.cuda_rng[r]);
}

std::string human(double n) {
  if (n >= 1e9) return fmt::format("{:.2f}B", n / 1e9);
  if (n >= 1e6) return fmt::format("{:.2f}M", n / 1e6);
  if (n >= 1e3) return fmt::format("{:.1f}K", n / 1e3);
  return fmt::format("{:.0f}", n);
}

std::string duration(double seconds) {
  const auto s = static_cast<int64_t>(seconds);
  if (s >= 3600) return fmt::format("{}h{:02d}m", s / 3600, (s % 3600) / 60);
  if (s >= 60) return fmt::format("{}m{:02d}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

// Identifies the train data a loader position refers to.
std::string dataset_id(const Manifest& m) {
  std::string all = hex64(m.tokenizer.fingerprint);
  for (const ShardEntry& e : m.train.shards) all += hex64(e.checksum);
  return hex64(checksum64(all.data(), all.size()));
}

// Every rank must train what rank 0 trains. The nodes of a job are started one by one, and one
// with another config (a --set left out, a stale file) would train something else without a word,
// or hang in a collective; one with another copy of the data would train on other tokens. Paths
// may differ from machine to machine: the data is compared by its content.
void check_same_as_rank0(Communicator& comm, const Config& config, const Manifest& manifest) {
  std::string data = dataset_id(manifest);
  for (const ShardEntry& e : manifest.val.shards) data += hex64(e.checksum);
  const std::string mine = to_yaml(config);
  if (comm.main()) {
    comm.publish("rank0-config", mine);
    comm.publish("rank0-data", data);
    return;
  }
  std::vector<std::string> differences;
  for (const std::string& d : config_differences(comm.receive("rank0-config"), mine))
    if (d.rfind("data.dataset:", 0) != 0 && d.rfind("log.dir:", 0) != 0) differences.push_back(d);
  if (!differences.empty()) {
    const size_t shown = std::min<size_t>(differences.size(), 3);
    throw UserError(fmt::format("its config differs from rank 0's (rank 0's -> this rank's): {}{}: start every node with the "
                                "same command and config files",
                                fmt::join(differences.begin(), differences.begin() + static_cast<std::ptrdiff_t>(shown), "; "),
                                differences.size() > shown ? fmt::format(" (and {} more)", differences.size() - shown) : ""));
  }
  if (comm.receive("rank0-data") != data)
    throw UserError(fmt::format("data.dataset {} holds other data here than on rank 0 (another tokenizer or other shards): "
                                "every node needs the same copy",
                                config.data.dataset));
}

// A rank built from another commit than rank 0 (nodes with builds of their own) may compute
// differently: said, not refused, since an edited README makes a build "dirty" too.
std::string another_build_than_rank0(Communicator& comm) {
  if (comm.main()) {
    comm.publish("rank0-version", gqe_version());
    return "";
  }
  const std::string theirs = comm.receive("rank0-version");
  if (theirs == gqe_version()) return "";
  return fmt::format("runs gqe {}, rank 0 gqe {}: the ranks may compute differently; build the same commit on every node",
                     gqe_version(), theirs);
}

// Keys whose change makes a run something else than what its checkpoints hold.
bool breaks_the_run(const std::string& difference) {
  return difference.rfind("model.", 0) == 0 || difference.rfind("data.", 0) == 0 ||
         difference.rfind("train.global_batch_tokens:", 0) == 0;
}

class Trainer {
 public:
  Trainer(const LoadedConfig& loaded, const TrainOptions& options);
  void run();

 private:
  // A step queued on the device whose numbers the host has not read yet. The host launches the
  // next step before it reads them, so that it never waits for the device mid-run (on a CPU the
  // work is done when launch() returns).
  struct LaunchedStep {
    int64_t step = 0, tokens = 0;
    double lr = 0;
    bool log = false;                  // a log step: it carries the router statistics
    at::Tensor numbers;                // fp64: ce, aux, stop, norm, clip scale, skipped, then per layer load, entropy
    std::optional<c10::Event> copied;  // CUDA: `numbers` has arrived in host memory
    std::vector<int64_t> load_shape;   // the router load's [G, M]
    std::chrono::steady_clock::time_point done_at;  // when the device finished it (as the host saw it)
  };
  struct StepResult {
    double loss = 0, ce = 0, aux = 0, grad_norm = 0, clip_scale = 1;
    bool skipped = false;
    bool stop = false;  // some rank was asked to stop (the votes travel with the step's statistics)
    std::optional<ordered_json> router;
  };

  std::optional<Checkpoint> prepare_run_dir();
  void restore(const Checkpoint& checkpoint);
  void synchronize_start(const std::optional<Checkpoint>& checkpoint);
  LaunchedStep launch(double lr, bool want_router_stats, bool stop_requested);
  // Each micro-batch's loss is divided by the micro-batches of the whole world, so that the summed
  // all-reduce leaves the mean gradient (with 2 ranks this is bitwise the one-process gradient).
  double micro_batches() const {
    return static_cast<double>(loader_->accumulation_steps()) * static_cast<double>(comm_->world());
  }
  double aux_weight() const {
    return config_.model.attention.type == AttentionType::gqe ? config_.model.attention.aux_coef : 0.0;
  }
  StepResult read(LaunchedStep& launched);
  void evaluate();
  std::optional<fs::path> save();
  void check_replicas();
  // The newest checkpoint's state, on every rank, if it verifies and has reached the budget with
  // the config the run last started with (rank 0 reads the run directory): the job can end before
  // the data is verified and the model built. An experiment or ladder over several nodes starts
  // every run's job, finished or not, since only node 0 can tell.
  std::optional<TrainerState> trained_already();
  void train_to_budget();
  std::string continue_command() const;  // the command line that resumes this run
  void log_start(bool resumed);

  LoadedConfig loaded_;
  const Config& config_;
  TrainOptions options_;
  fs::path run_dir_;
  std::unique_ptr<Console> console_;
  std::unique_ptr<RunLock> lock_;
  DistEnvironment env_;
  std::unique_ptr<Communicator> comm_;
  at::Device device_{at::kCPU};
  bool bf16_ = false;

  Manifest manifest_;
  std::shared_ptr<const TokenStream> train_stream_, val_stream_;
  std::unique_ptr<TrainLoader> loader_;
  Decoder model_{nullptr};
  std::unique_ptr<GradientReducer> reducer_;
  std::unique_ptr<AdamW> optimizer_;
  std::vector<at::Tensor> grads_;  // the optimizer's gradients, each where reduce() leaves it
  std::map<std::string, at::Tensor> restored_moments_;  // rank 0, sharded resume: until scattered
  int64_t moments_bytes_ = 0;  // this rank's AdamW moments, as the allocator counted them
  std::vector<EvalSet> eval_sets_;  // eval.tasks, scored with each evaluation
  std::optional<GradClipper> clipper_;  // on the device, made once it is known
  std::optional<MetricsLog> metrics_;   // rank 0's
  TrainerState state_;
  int64_t total_steps_ = 0, global_batch_ = 0;
  // MFU: training FLOPs per token (gqe info's formula) over the world's dense bf16 peak; no peak
  // (CPU, unknown GPU, fp32) means no MFU is reported.
  double flops_per_token_ = 0;
  std::optional<double> world_peak_flops_;
  std::optional<double> mfu(double tokens_per_second) const {
    if (!world_peak_flops_) return std::nullopt;
    return tokens_per_second * flops_per_token_ / *world_peak_flops_;
  }
};

Trainer::Trainer(const LoadedConfig& loaded, const TrainOptions& options)
    : loaded_(loaded), config_(loaded_.config), options_(options) {
  run_dir_ = options.run_dir.empty() ? fs::path(config_.log.dir) / config_.log.name : options.run_dir;
  env_ = read_dist_environment();
  // Rank 0 speaks for the job; the others only report problems.
  console_ = std::make_unique<Console>(env_.rank == 0 ? config_.log.level : LogLevel::warn);
  if (env_.rank != 0) console_->log().set_pattern(fmt::format("[%Y-%m-%d %H:%M:%S] [%l] [rank {}] %v", env_.rank));
}

std::optional<Checkpoint> Trainer::prepare_run_dir() {
  const bool exists = fs::exists(run_dir_) && !fs::is_empty(run_dir_);
  if (options_.resume == "never" && exists)
    throw UserError(fmt::format("{}: already holds a run (use --resume auto to continue it, or another --run-dir)",
                                run_dir_.string()));
  make_directories(run_dir_);
  lock_ = std::make_unique<RunLock>(run_dir_);  // one trainer per run directory
  console_->add_log_file(run_dir_ / "train.log");

  std::optional<Checkpoint> checkpoint;
  if (options_.resume != "auto" && options_.resume != "never") {
    checkpoint = load_checkpoint(options_.resume);
  } else if (options_.resume == "auto") {
    checkpoint = load_latest_checkpoint(run_dir_, [&](const std::string& w) { console_->log().warn("{}", w); });
  }
  const fs::path stored = run_dir_ / "config.yaml";
  if (checkpoint && fs::exists(stored)) {
    std::vector<std::string> breaking, other;
    for (const auto& d : config_differences(load_config(stored.string()).config, config_))
      (breaks_the_run(d) ? breaking : other).push_back(d);
    if (!breaking.empty())
      throw UserError(fmt::format("{}: the config changed in ways the run cannot continue with: {} (start a new run "
                                  "with another --run-dir, or --resume never)",
                                  run_dir_.string(), fmt::join(breaking, "; ")));
    for (const auto& d : other) console_->log().warn("changed since the run's last start: {}", d);
  }
  write_file_atomic(stored, to_yaml(config_));
  return checkpoint;
}

void Trainer::log_start(bool resumed) {
  auto& log = console_->log();
  const TrainConfig& t = config_.train;
  const ModelInfo info = describe_model(config_);
  log.info("run {} ({} {}), gqe {}{}", run_dir_.string(), loaded_.file, resumed ? "resumed" : "new", gqe_version(),
           env_.restart > 0 ? fmt::format(", started again after a failure (restart {} of {})", env_.restart, env_.max_restarts) : "");
  log.info("model: {} attention{}, {} parameters ({} non-embedding), {} of {} query heads active per token",
           enum_name(config_.model.attention.type),
           config_.model.attention.type == AttentionType::gqe
               ? fmt::format(" (variant {}, top_k {})", enum_name(config_.model.attention.variant), config_.model.attention.top_k)
               : "",
           human(static_cast<double>(info.total)), human(static_cast<double>(info.non_embedding)), info.active_query_heads,
           info.query_heads);
  log.info("data: {} ({} train tokens = {} samples of {} per epoch, {} val tokens)", config_.data.dataset,
           human(static_cast<double>(train_stream_->size())), state_.samples_per_epoch, config_.data.seq_len,
           human(static_cast<double>(val_stream_->size())));
  log.info("plan: {} steps of {} tokens ({} sequences = {} micro-steps of {}), {} tokens for a budget of {} "
           "({:.2f} epochs); {} on {}, {} thread(s){}",
           total_steps_, global_batch_, global_batch_ / config_.data.seq_len, loader_->accumulation_steps(),
           t.micro_batch_size, total_steps_ * global_batch_, t.tokens,
           static_cast<double>(total_steps_ * global_batch_) / static_cast<double>(train_stream_->size()),
           enum_name(t.precision), device_.str(), at::get_num_threads(),
           t.activation_checkpointing ? ", activation checkpointing" : "");
  if (comm_->world() > 1)
    log.info("data parallel: {} ranks ({} local) over {}, from {}; rank r takes samples [r*B/W, (r+1)*B/W) of each "
             "global batch", comm_->world(), env_.local_world, comm_->backend_name(), env_.source);
  log.info("optimizer: AdamW moments {:.2f} MiB ({} bytes) on each rank{}; gradients reduced in {} bucket(s) of up to "
           "{} MiB{}{}{}", static_cast<double>(moments_bytes_) / (1 << 20), moments_bytes_,
           reducer_->sharded() ? fmt::format(", sharded over {} ranks", comm_->world()) : "",
           reducer_->layout().buckets.size(), config_.dist.bucket_mb,
           config_.dist.overlap_grad_reduce ? ", overlapped with the backward pass" : "",
           config_.dist.reduce_dtype == Precision::bf16 ? ", in bf16" : "",
           !reducer_->sharded()                 ? ""
           : config_.dist.overlap_param_gather ? "; parameters all-gathered during the next forward pass"
                                               : "; parameters all-gathered after the update");
  log.debug("resolved config:\n{}", to_yaml(config_));
  log.debug("weight decay on: {}", fmt::join(optimizer_->decayed(), ", "));
  log.debug("no weight decay on: {}", fmt::join(optimizer_->not_decayed(), ", "));
}

void Trainer::restore(const Checkpoint& c) {
  if (c.state.dataset_id != state_.dataset_id || c.state.samples_per_epoch != state_.samples_per_epoch)
    throw UserError(fmt::format("{}: made on other data than {} (its data position would not mean the same samples)",
                                c.dir.string(), config_.data.dataset));
  load_model_weights(*model_, c.model, c.dir.string());
  std::vector<std::pair<std::string, at::Tensor>> params;
  for (const auto& p : model_->named_parameters()) params.emplace_back(p.key(), p.value());
  check_moments(c.optimizer, params, c.dir.string());
  if (reducer_->sharded()) restored_moments_ = c.optimizer;  // each rank's slices: synchronize_start
  else optimizer_->load_state(c.optimizer, c.state.step - c.state.skipped_steps);
  state_ = c.state;
  clipper_->restore(state_.clip);
  restore_generators(state_, env_.rank, device_);
}

Trainer::LaunchedStep Trainer::launch(double lr, bool want_router_stats, bool stop_requested) {
  const int64_t L = config_.data.seq_len;
  const double parts = micro_batches(), aux_coef = aux_weight();
  reducer_->zero_grad();
  const auto scalar = at::TensorOptions().device(device_).dtype(at::kFloat);
  at::Tensor ce_sum = at::zeros({}, scalar), aux_sum = at::zeros({}, scalar);
  std::vector<at::Tensor> router_sums;  // per layer: load [G, M], then entropy
  for (uint64_t m = 0; m < loader_->accumulation_steps(); ++m) {
    if (m + 1 == loader_->accumulation_steps()) reducer_->arm();  // the reduction starts in this backward
    MicroBatch batch = loader_->next();
    const int64_t rows = static_cast<int64_t>(batch.samples.size());
    const at::Tensor host = at::from_blob(batch.tokens.data(), {rows, L + 1}, at::kLong);
    // On CUDA through pinned memory, without waiting: a pageable copy would stall the host until the
    // GPU drained the previous micro-step's queue, and the GPU would then idle while the next
    // kernels are launched. (The pinned block is not reused before the copy has run.)
    const at::Tensor tokens = device_.is_cuda() ? host.pin_memory().to(device_, /*non_blocking=*/true) : host.clone();
    at::Tensor loss;
    {
      AutocastScope autocast(device_.type(), bf16_);
      const DecoderOutput out = model_->forward(tokens.slice(1, 0, L));
      const at::Tensor ce = token_cross_entropy(out.logits, tokens.slice(1, 1));
      loss = (ce + aux_coef * out.aux_loss) / parts;
      ce_sum += ce.detach();
      aux_sum += out.aux_loss.detach();
      if (want_router_stats) {
        if (router_sums.empty())
          for (const RouterStats& r : out.router) router_sums.push_back(at::zeros_like(r.load)), router_sums.push_back(at::zeros({}, scalar));
        for (size_t l = 0; l < out.router.size(); ++l) {
          router_sums[2 * l] += out.router[l].load;
          router_sums[2 * l + 1] += out.router[l].entropy;
        }
      }
    }
    loss.backward();
  }

  reducer_->reduce();
  // Every rank must take the same decision to stop (a signal may reach only some): they vote here.
  // Sharded, each rank holds part of the gradient: the squares of its part are summed too.
  const at::Tensor stop = at::full({}, stop_requested ? 1.0 : 0.0, scalar);
  std::vector<at::Tensor> stats{ce_sum, aux_sum, stop};
  if (reducer_->sharded()) stats.push_back(gradient_norm(grads_).square().to(device_));
  stats.insert(stats.end(), router_sums.begin(), router_sums.end());
  comm_->all_reduce_sum(stats);

  // The decisions that need the step's numbers are made on the device: a non-finite loss or
  // gradient norm skips the update (the data is consumed), and the clipping factor goes into
  // the optimizer's kernel. Nothing here waits for the device.
  const at::Tensor loss = ce_sum.to(at::kDouble) / parts + aux_coef * (aux_sum.to(at::kDouble) / parts);
  const at::Tensor norm = reducer_->sharded() ? stats[3].sqrt() : gradient_norm(grads_);
  const Update update = clip_and_step(*optimizer_, *clipper_, grads_, norm, loss, lr);
  reducer_->gather_parameters();  // sharded: every rank's updated slices to all

  LaunchedStep launched;
  launched.lr = lr;
  std::vector<at::Tensor> numbers{ce_sum.to(at::kDouble).reshape(1), aux_sum.to(at::kDouble).reshape(1),
                                  stop.to(at::kDouble).reshape(1), update.norm.reshape(1), update.scale.reshape(1),
                                  update.skip.to(at::kDouble).reshape(1)};
  for (const at::Tensor& r : router_sums) numbers.push_back(r.to(at::kDouble).flatten());
  if (!router_sums.empty()) launched.load_shape = router_sums[0].sizes().vec();
  const at::Tensor all = at::cat(numbers);
  if (device_.is_cuda()) {
    // Into pinned memory without waiting; read() waits for this event, a step later.
    launched.numbers = at::empty(all.sizes(), all.options().device(at::kCPU).pinned_memory(true));
    launched.numbers.copy_(all, /*non_blocking=*/true);
    launched.copied.emplace(device_.type());
    launched.copied->record(c10::impl::VirtualGuardImpl(device_.type()).getStream(device_));
  } else {
    launched.numbers = all;
    launched.done_at = std::chrono::steady_clock::now();
  }
  return launched;
}

Trainer::StepResult Trainer::read(LaunchedStep& launched) {
  if (launched.copied) {
    launched.copied->synchronize();
    launched.done_at = std::chrono::steady_clock::now();
  }
  const double parts = micro_batches(), aux_coef = aux_weight();
  const double* values = launched.numbers.data_ptr<double>();
  StepResult r;
  r.ce = values[0] / parts;
  r.aux = values[1] / parts;
  r.loss = r.ce + aux_coef * r.aux;
  r.stop = values[2] > 0;
  r.grad_norm = values[3];  // the same on every rank: the gradients are
  r.skipped = values[5] > 0;
  r.clip_scale = r.skipped ? 1.0 : values[4];
  if (!launched.load_shape.empty()) {
    const int64_t groups = launched.load_shape[0], experts = launched.load_shape[1];
    const auto layers = (launched.numbers.numel() - 6) / (groups * experts + 1);
    ordered_json load = ordered_json::array(), entropy = ordered_json::array();
    const double* layer = values + 6;
    for (int64_t l = 0; l < layers; ++l, layer += groups * experts + 1) {
      std::vector<std::vector<double>> rows;
      for (int64_t g = 0; g < groups; ++g) {
        rows.emplace_back();
        for (int64_t e = 0; e < experts; ++e) rows.back().push_back(layer[g * experts + e] / parts);
      }
      load.push_back(rows);
      entropy.push_back(layer[groups * experts] / parts);
    }
    r.router = ordered_json{{"load", load}, {"entropy", entropy}};
  }
  return r;
}

void Trainer::evaluate() {
  const std::optional<double> val =
      validation_loss(*model_, val_stream_, config_.data.seq_len, static_cast<uint64_t>(config_.eval.val_tokens / config_.data.seq_len),
                      config_.eval.batch_size, bf16_, *comm_);
  std::vector<TaskScore> scores;
  for (const EvalSet& set : eval_sets_)
    scores.push_back(score_eval_set(*model_, set, config_.eval.batch_size, config_.data.seq_len, bf16_, *comm_));
  if (!val && scores.empty()) {
    if (config_.eval.val_tokens == 0)
      console_->log().warn("nothing to evaluate: eval.val_tokens is 0 and eval.tasks is empty");
    else
      console_->log().warn("no validation windows: the val split of {} is shorter than seq_len + 1", config_.data.dataset);
    return;
  }
  std::string summary;
  if (val) summary = fmt::format("val loss {:.4f} (perplexity {:.2f})", *val, std::exp(*val));
  for (const TaskScore& t : scores)
    summary += fmt::format("{}{} acc {:.4f} acc_norm {:.4f}", summary.empty() ? "" : "; ", t.task, t.acc, t.acc_norm);
  console_->log().info("step {}: {}", state_.step, summary);
  if (metrics_) {
    ordered_json line = {{"step", state_.step}, {"tokens", state_.tokens}};
    line.update(evaluation_json(val, scores));
    metrics_->write(line);
  }
}

std::optional<fs::path> Trainer::save() {
  reducer_->finish_gather();
  state_.clip = clipper_->state();
  state_.cpu_rng = comm_->all_gather(generator_state(at::kCPU));
  state_.cuda_rng = device_.is_cuda() ? comm_->all_gather(generator_state(device_)) : std::vector<std::string>{};
  // Whole moments by parameter name either way: a checkpoint resumes on any number of ranks.
  const std::map<std::string, at::Tensor> moments =
      reducer_->sharded() ? reducer_->gather(optimizer_->state(), {".exp_avg", ".exp_avg_sq"}) : optimizer_->state();
  if (!comm_->main()) return std::nullopt;  // the replicas are identical: rank 0 writes
  // The logs first: what a checkpoint covers is on disk before the checkpoint is.
  metrics_->sync();
  console_->sync_log_file();
  std::vector<std::pair<std::string, at::Tensor>> weights;
  for (const auto& p : model_->named_parameters()) weights.emplace_back(p.key(), p.value());
  return save_checkpoint(run_dir_, state_, weights, moments, config_.train.checkpoint.keep);
}

std::optional<TrainerState> Trainer::trained_already() {
  std::string verdict = "no";
  if (comm_->main() && options_.resume == "auto") {
    // The cheap reads first: the checkpoint's files are hashed here only for a run that looks
    // finished (one that goes on hashes its checkpoint once, as it loads it).
    const fs::path stored = run_dir_ / "config.yaml";
    const std::optional<TrainerState> latest = peek_latest_state(run_dir_);
    if (latest && latest->tokens >= config_.train.tokens && fs::exists(stored) && read_file(stored) == to_yaml(config_))
      if (const std::optional<TrainerState> last = verified_latest_state(run_dir_); last && last->tokens >= config_.train.tokens)
        verdict = trainer_state_json(*last);
  }
  if (comm_->main()) comm_->publish("trained-already", verdict);
  else verdict = comm_->receive("trained-already");
  if (verdict == "no") return std::nullopt;
  return parse_trainer_state(verdict);
}

void Trainer::check_replicas() {
  reducer_->finish_gather();
  std::string all;
  for (const auto& p : model_->parameters()) {
    const at::Tensor t = p.detach().to(at::kCPU).contiguous();
    all += hex64(checksum64(t.data_ptr(), t.nbytes()));
  }
  const auto hashes = comm_->all_gather(hex64(checksum64(all.data(), all.size())));
  for (size_t r = 1; r < hashes.size(); ++r)
    if (hashes[r] != hashes[0])
      throw std::runtime_error(fmt::format("step {}: the parameters of rank {} differ from rank 0's (hash {} vs {})",
                                           state_.step, r, hashes[r], hashes[0]));
  console_->log().debug("step {}: parameters identical on {} ranks ({})", state_.step, hashes.size(), hashes[0]);
}

// Rank 0 owns the run directory: it decides how the run starts (fresh, or from which checkpoint)
// and hands the decision to the others through the store, followed by its parameters and
// optimizer moments, so every replica starts identical and only rank 0 needs the run directory.
void Trainer::synchronize_start(const std::optional<Checkpoint>& checkpoint) {
  bool resumed = checkpoint.has_value();
  if (comm_->main()) {
    comm_->publish("start", checkpoint ? trainer_state_json(state_) : std::string("fresh"));
  } else {
    const std::string start = comm_->receive("start");
    resumed = start != "fresh";
    if (resumed) {
      state_ = parse_trainer_state(start);
      clipper_->restore(state_.clip);
      restore_generators(state_, env_.rank, device_);
    }
  }
  std::vector<at::Tensor> tensors;
  for (const auto& p : model_->parameters()) tensors.push_back(p.detach());
  if (!reducer_->sharded())
    for (const auto& [name, t] : optimizer_->state()) tensors.push_back(t);
  comm_->broadcast(tensors);
  if (reducer_->sharded() && resumed) reducer_->scatter(restored_moments_, optimizer_->state(), {".exp_avg", ".exp_avg_sq"});
  restored_moments_.clear();
  optimizer_->set_steps(state_.step - state_.skipped_steps);  // skipped steps made no update
}

std::string Trainer::continue_command() const {
  // A command to paste into a shell.
  const bool several = env_.nproc > 0 && env_.world > env_.nproc;  // nodes, each started by hand
  if (!env_.continue_with.empty()) return env_.continue_with + (several ? " (on every node, as before)" : "");
  std::string command = "gqe train " + shell_quoted(options_.config_file);
  for (const std::string& o : options_.overrides) command += " --set " + shell_quoted(o);
  command += " --run-dir " + shell_quoted(run_dir_.string());
  // Launched by gqe --nproc: the same again (it may resume on any number of ranks, but the user's
  // choice was this one).
  if (env_.nproc > 0 && env_.world > 1) command += fmt::format(" --nproc {}", env_.nproc);
  if (env_.nproc > 0 && env_.max_restarts > 0) command += fmt::format(" --max-restarts {}", env_.max_restarts);
  // Started by torchrun or srun: alone, this command would continue on one process.
  if (env_.nproc == 0 && env_.world > 1)
    return fmt::format("the same {} command, its ranks running {}", env_.source == "SLURM" ? "srun" : "torchrun", command);
  return command + (several ? " (on every node, as before)" : "");
}

void Trainer::run() {
  try {
    train_to_budget();
  } catch (const IoError& e) {
    // A full disk or an I/O error: what was written before stays valid (every file is whole), so
    // the user needs to know where the run will pick up once there is room again.
    if (!lock_) throw;  // not rank 0, or before it took the run directory
    const std::optional<TrainerState> last = peek_latest_state(run_dir_);
    throw IoError(fmt::format("{}; the run stopped: once the file system takes writes again, {} continues from {}",
                              e.what(), continue_command(),
                              last ? fmt::format("step {} (its newest checkpoint)", last->step) : std::string("the start")),
                  e.error);
  }
}

void Trainer::train_to_budget() {
  const TrainConfig& t = config_.train;
  const StopSignals stop_signals;  // from here, SIGINT/SIGTERM stop the job at the next safe point
  BusErrorMessage bus_error;
  auto& log = console_->log();

  // Everything that can be wrong with the input is checked before the run directory is touched.
  device_ = job_device(loaded_, env_);
  std::vector<std::string> warnings;  // said once for the job, below
  prepare_fused_kernels(t.fused_kernels, device_, [&](const std::string& line) { warnings.push_back(line); });
  bf16_ = t.precision == Precision::bf16;
  // 0 threads: this rank's share of the machine's cores.
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  at::set_num_threads(t.threads > 0 ? static_cast<int>(t.threads) : std::max(1, cores / env_.local_world));

  // The ranks check the input in the job, so that bad input is one line for it
  // (Communicator::check_input): --nproc's launcher on one machine has checked it already, but
  // not on several, nor torchrun or srun.
  comm_ = std::make_unique<Communicator>(env_, config_.dist.backend, device_, std::chrono::seconds(config_.dist.timeout_s),
                                         config_.dist.bucket_mb << 20);
  if (const std::string build = another_build_than_rank0(*comm_); !build.empty()) warnings.push_back(build);
  for (const std::string& line : comm_->gather_warnings(warnings)) log.warn("{}", line);
  TrainingInput input;
  comm_->check_input([&] { input = check_training_input(loaded_, env_.world, device_, ranks_sharing_memory(device_, env_.local_world)); });
  manifest_ = std::move(input.manifest);
  eval_sets_ = std::move(input.eval_sets);
  comm_->check_input([&] { check_same_as_rank0(*comm_, config_, manifest_); });
  if (const std::optional<TrainerState> done = trained_already()) {
    log.info("{}: trained to its budget already (step {}, {} tokens), with this config: nothing to do", run_dir_.string(), done->step,
             done->tokens);
    comm_->finish();
    tell_launcher_finished();
    return;
  }
  if (!input.memory.estimate_fits && env_.rank == 0) log.warn("{}", input.memory.text);
  train_stream_ = std::make_shared<const TokenStream>(config_.data.dataset, manifest_, Split::train);
  val_stream_ = std::make_shared<const TokenStream>(config_.data.dataset, manifest_, Split::val);
  // eval.val_tokens past the val split: the evaluation takes what there is; say so once.
  if (const auto windows = (val_stream_->size() > 0 ? (val_stream_->size() - 1) : 0) / static_cast<uint64_t>(config_.data.seq_len);
      env_.rank == 0 && windows * static_cast<uint64_t>(config_.data.seq_len) < static_cast<uint64_t>(config_.eval.val_tokens))
    log.warn("eval.val_tokens is {}, but the val split of {} holds {} windows of {} ({} tokens): each evaluation takes "
             "those", config_.eval.val_tokens, config_.data.dataset, windows, config_.data.seq_len,
             windows * static_cast<uint64_t>(config_.data.seq_len));
  global_batch_ = t.global_batch_tokens;
  total_steps_ = t.tokens / global_batch_ + (t.tokens % global_batch_ != 0);  // rounded up, without overflow
  flops_per_token_ = describe_model(config_).train_flops_per_token();
  if (const auto peak = peak_bf16_flops(device_name(device_)); peak && bf16_) world_peak_flops_ = *peak * env_.world;
  LoaderOptions lo;
  lo.seq_len = static_cast<uint64_t>(config_.data.seq_len);
  lo.global_batch = static_cast<uint64_t>(global_batch_ / config_.data.seq_len);
  lo.micro_batch = static_cast<uint64_t>(t.micro_batch_size);
  lo.rank = env_.rank;
  lo.world = env_.world;
  lo.seed = static_cast<uint64_t>(config_.data.seed);
  loader_ = std::make_unique<TrainLoader>(train_stream_, lo);  // checks the batch shape against data and ranks

  log.info("verifying {} ({} shards)", config_.data.dataset, manifest_.train.shards.size() + manifest_.val.shards.size());
  const auto part = static_cast<size_t>(env_.rank), parts = static_cast<size_t>(env_.world);  // ranks share the reading
  comm_->check_input([&] {
    train_stream_->verify(at::get_num_threads(), part, parts);
    val_stream_->verify(at::get_num_threads(), part, parts);
  });
  state_.dataset_id = dataset_id(manifest_);
  state_.samples_per_epoch = samples_per_epoch(train_stream_->size(), static_cast<uint64_t>(config_.data.seq_len));

  // Model and optimizer: initialised from train.seed, or from the checkpoint; rank 0's state wins.
  torch::manual_seed(static_cast<uint64_t>(t.seed));
  model_ = Decoder(config_.model);
  model_->to(device_);
  model_->set_activation_checkpointing(t.activation_checkpointing);
  clipper_.emplace(t.clip, device_);
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (const auto& p : model_->named_parameters()) named.emplace_back(p.key(), p.value());
  reducer_ = std::make_unique<GradientReducer>(*comm_, named, reducer_options(config_.dist));
  if (reducer_->sharded())
    model_->set_parameter_wait([reducer = reducer_.get()](const std::vector<at::Tensor>& p) { reducer->wait_for(p); });
  std::vector<OptimizedTensor> optimized;
  for (const GradientReducer::Slice& s : reducer_->slices()) optimized.push_back({s.name, s.value, s.dims}), grads_.push_back(s.grad);
  {
    PeakMemory allocated(device_);
    optimizer_ = std::make_unique<AdamW>(optimized, t.optimizer);
    // The CPU counter sees only what is allocated meanwhile; the CUDA peak includes the model.
    moments_bytes_ = device_.is_cpu() ? static_cast<int64_t>(allocated.bytes()) : optimizer_->state_bytes();
  }
  // A stop asked for while the job started (verifying a large dataset takes a while) ends it here,
  // before the run directory is touched, rather than after a first step and its checkpoint (a run
  // stopped to fix its config could then not start again with the fix). The ranks vote: a signal
  // may reach only some of them.
  at::Tensor stop_vote = at::full({}, stop_signal() != 0 ? 1.0 : 0.0, at::TensorOptions().device(device_).dtype(at::kFloat));
  comm_->all_reduce_sum({stop_vote});
  if (stop_vote.item<double>() > 0) {
    comm_->finish();
    log.info("stopped by {} before the first step: nothing was written; the same command starts the job again", stop_cause());
    return;
  }

  // Rank 0 takes the run directory and reads the checkpoint; what is wrong there stops every rank.
  std::optional<Checkpoint> checkpoint;
  comm_->check_input([&] {
    if (!comm_->main()) return;
    checkpoint = prepare_run_dir();
    if (checkpoint) restore(*checkpoint);
  });
  if (checkpoint) log.info("resuming from {} (step {}, {} tokens)", checkpoint->dir.string(), state_.step, state_.tokens);
  synchronize_start(checkpoint);
  if (state_.step > 0) loader_ = std::make_unique<TrainLoader>(train_stream_, lo, state_.loader);
  if (comm_->main())
    metrics_.emplace(run_dir_ / "metrics.jsonl", checkpoint ? std::optional<int64_t>(state_.step) : std::nullopt,
                     [&](const std::string& w) { log.warn("{}", w); }, config_.log.tensorboard);
  log_start(checkpoint.has_value());

  const auto started = std::chrono::steady_clock::now();
  const double elapsed_before = state_.elapsed_s;
  auto elapsed = [&] { return elapsed_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(); };
  auto crossed = [](int64_t before, int64_t after, int64_t every) { return every > 0 && before / every != after / every; };
  double interval_seconds = 0;  // of the steps since the last log line
  int64_t interval_tokens = 0;

  // A step's numbers are read after the next step is launched (see LaunchedStep); finish() does
  // what needs them: the skip count, the metrics and the log. A step's time runs from the previous
  // step's end, as the host saw it, to its own; evaluations and checkpoints are not step time.
  auto last_done = std::chrono::steady_clock::now();
  auto finish = [&](LaunchedStep& s) {
    const StepResult r = read(s);
    const double step_seconds = std::chrono::duration<double>(s.done_at - last_done).count();
    last_done = s.done_at;
    interval_seconds += step_seconds;
    interval_tokens += global_batch_;
    state_.elapsed_s = elapsed();
    if (r.skipped) {
      state_.skipped_steps += 1;
      state_.skipped_in_a_row += 1;
      if (comm_->main())
        log.warn("step {}: non-finite {} ({}); update skipped ({} in a row)", s.step,
                 std::isfinite(r.loss) ? "gradient norm" : "loss", std::isfinite(r.loss) ? r.grad_norm : r.loss,
                 state_.skipped_in_a_row);
    } else {
      state_.skipped_in_a_row = 0;
    }

    if (metrics_) {
      ordered_json line = {{"step", s.step},
                           {"tokens", s.tokens},
                           {"loss", r.loss},
                           {"ce_loss", r.ce},
                           {"aux_loss", r.aux},
                           {"lr", s.lr},
                           {"grad_norm", r.grad_norm},
                           {"clip_scale", r.clip_scale},
                           {"skipped", r.skipped},
                           {"tokens_per_s", static_cast<double>(global_batch_) / step_seconds},
                           {"elapsed_s", state_.elapsed_s}};
      if (const auto m = mfu(static_cast<double>(global_batch_) / step_seconds)) line["mfu"] = *m;
      if (r.router) line["router"] = *r.router;
      metrics_->write(line);
    }

    if (state_.skipped_in_a_row >= t.max_skipped_steps) {
      const auto last = comm_->main() ? load_latest_checkpoint(run_dir_, [](const std::string&) {}) : std::nullopt;
      throw std::runtime_error(fmt::format(
          "{} non-finite steps in a row (through step {}): training diverged; the last good checkpoint is {}",
          state_.skipped_in_a_row, s.step, last ? last->dir.string() : "none (no checkpoint was saved)"));
    }

    if (s.log) {
      const double rate = static_cast<double>(interval_tokens) / std::max(interval_seconds, 1e-9);
      const auto interval_mfu = mfu(rate);
      log.info("step {}/{} | tokens {}/{} | loss {:.4f} | aux {:.4f} | lr {:.2e} | grad {:.3f}{} | {} tok/s{} | ETA {}",
               s.step, total_steps_, human(static_cast<double>(s.tokens)), human(static_cast<double>(t.tokens)),
               r.loss, r.aux, s.lr, r.grad_norm, r.clip_scale < 1 ? fmt::format(" (clipped x{:.2f})", r.clip_scale) : "",
               human(rate), interval_mfu ? fmt::format(" | MFU {:.1f}%", *interval_mfu * 100) : "",
               // The run trains whole batches: to the end of the last one, not to the budget.
               duration(static_cast<double>(total_steps_ * global_batch_ - s.tokens) / std::max(rate, 1e-9)));
      interval_seconds = 0;
      interval_tokens = 0;
    }
    const double progress = static_cast<double>(s.tokens) / static_cast<double>(t.tokens);
    if (comm_->main()) console_->progress(progress, fmt::format("step {}/{}  loss {:.3f}", s.step, total_steps_, r.loss));
    return r.stop;
  };

  std::optional<LaunchedStep> in_flight;
  while (state_.tokens < t.tokens) {
    const int64_t tokens_before = state_.tokens;
    const int64_t tokens_after = tokens_before + global_batch_;
    const bool log_step = (state_.step + 1) % config_.log.every_steps == 0 || tokens_after >= t.tokens;
    const double lr = learning_rate(t, tokens_after);
    LaunchedStep launched = launch(lr, log_step, stop_signal() != 0);
    state_.step += 1;
    state_.tokens = tokens_after;
    state_.loader = loader_->position();
    launched.step = state_.step;
    launched.tokens = state_.tokens;
    launched.log = log_step;
    bool stopping = in_flight && finish(*in_flight);
    in_flight = std::move(launched);
    if (config_.dist.check_replicas_every_steps > 0 && state_.step % config_.dist.check_replicas_every_steps == 0)
      check_replicas();

    const bool done = state_.tokens >= t.tokens;
    const bool eval = crossed(tokens_before, state_.tokens, config_.eval.every_tokens) || done;
    const bool checkpoint_now = crossed(tokens_before, state_.tokens, t.checkpoint.every_tokens) || done;
    if (!(eval || checkpoint_now || stopping)) continue;
    // Evaluation and checkpoints see this step's state and come after its log line.
    stopping = finish(*in_flight) || stopping;
    in_flight.reset();
    if (eval) evaluate();
    if (checkpoint_now || stopping) {
      if (const auto saved = save()) log.info("saved {}", saved->string());
    }
    last_done = std::chrono::steady_clock::now();  // the evaluation and the save are not step time
    if (stopping && !done) {
      console_->clear_progress();
      comm_->finish();
      log.info("stopped by {} at step {}; continue with: {}", stop_cause(), state_.step, continue_command());
      return;
    }
  }
  console_->clear_progress();
  comm_->finish();
  tell_launcher_finished();  // rather than stopped: another node's experiment goes on to the next run
  log.info("done: {} steps, {} tokens (budget {}) in {}, {} skipped steps", state_.step, state_.tokens, t.tokens,
           duration(state_.elapsed_s), state_.skipped_steps);
}

}  // namespace

TrainingInput check_training_input(const LoadedConfig& loaded, int world, at::Device device, int ranks_on_device) {
  const Config& c = loaded.config;
  TrainingInput in;
  if (c.data.dataset.empty()) throw UserError(fmt::format("{}: data.dataset is not set", loaded.origin("data.dataset")));
  in.manifest = read_manifest(c.data.dataset);
  verified_tokenizer(c.data.dataset, in.manifest);
  if (in.manifest.tokenizer.vocab_size > static_cast<uint64_t>(c.model.vocab_size))
    throw UserError(fmt::format("{}: model.vocab_size is {}, but the tokenizer of {} has {} ids",
                                loaded.origin("model.vocab_size"), c.model.vocab_size, c.data.dataset,
                                in.manifest.tokenizer.vocab_size));
  for (const auto& [name, file] : c.eval.tasks) {
    EvalSet set = read_eval_set(file);
    if (set.task != name) throw UserError(fmt::format("{}: eval.tasks.{}: {} holds the task {}", loaded.origin("eval.tasks"), name, file, set.task));
    if (set.tokenizer_fingerprint != in.manifest.tokenizer.fingerprint)
      throw UserError(fmt::format("{}: eval.tasks.{}: {} was tokenized with another tokenizer than {}",
                                  loaded.origin("eval.tasks"), name, file, c.data.dataset));
    in.eval_sets.push_back(std::move(set));
  }
  try {
    check_batch_split(static_cast<uint64_t>(c.train.global_batch_tokens / c.data.seq_len), world,
                      static_cast<uint64_t>(c.train.micro_batch_size), static_cast<uint64_t>(c.data.seq_len));
  } catch (const UserError& e) {
    throw UserError(fmt::format("{}: {}", loaded.file, e.what()));
  }
  in.memory = memory_verdict(describe_model(c, world), device_name(device), available_memory(device), ranks_on_device);
  if (!in.memory.fits)
    throw UserError(fmt::format("{}: the model cannot train here: {}", loaded.file, in.memory.text));
  return in;
}

void train(const LoadedConfig& config, const TrainOptions& options) { Trainer(config, options).run(); }

}  // namespace gqe
