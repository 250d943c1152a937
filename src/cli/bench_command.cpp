// gqe bench loader|prefill|train|comm|encode: throughput, reported as rates and ratios (docs/performance.md).
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <ATen/Parallel.h>

#include "bench/benchmarks.h"
#include "bench/encode_bench.h"
#include "cli/checks.h"
#include "cli/commands.h"
#include "cli/nproc.h"
#include "common/error.h"
#include "common/files.h"
#include "config/config_loader.h"
#include "data/dataset.h"
#include "dist/communicator.h"
#include "model/fused_kernels.h"
#include "model/model_info.h"
#include "dist/device_info.h"

namespace gqe {
namespace {

struct Common {
  std::string config;
  std::vector<std::string> overrides;
};

void add_common(CLI::App* cmd, Common& c) {
  cmd->add_option("config,--config", c.config, "YAML config (positional, or --config as well)")->required();
  cmd->add_option("--set", c.overrides, "Override a config key (repeatable)")->type_name("KEY=VALUE");
}

// The config's device and thread count, as training would use them on one process.
// warn: where the fused kernels' warnings go (for a job to say them once); by default, stderr.
at::Device setup_device(const LoadedConfig& loaded, const DistEnvironment& env = {},
                        const std::function<void(const std::string&)>& warn = {}) {
  const Config& c = loaded.config;
  // 0 threads: this rank's share of the machine's cores (as gqe train).
  at::set_num_threads(c.train.threads > 0 ? static_cast<int>(c.train.threads)
                                          : std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / env.local_world));
  const at::Device device = rank_device(c.train.device, env, loaded.origin("train.device"));
  prepare_fused_kernels(c.train.fused_kernels, device, warn);
  return device;
}

// The top of a profile: time per run (of `runs`), share of the busy time; on a GPU the host's too.
void print_kernels(const std::string& title, at::Device device, const Profile& profile, int runs, double run_seconds,
                   int top) {
  if (profile.device.empty())
    return void(fmt::print("\n{}: no profile ({} recorded nothing)\n", title, device.is_cuda() ? "CUPTI" : "the profiler"));
  auto list = [&](const std::vector<KernelTime>& items, const std::string& busy, const std::string& what, const char* column) {
    double total = 0;
    for (const KernelTime& k : items) total += k.seconds;
    fmt::print("\n{}: {} busy {:.1f} ms per run ({:.0f}% of it), top {}\n", title, busy, total / runs * 1e3,
               total / runs / run_seconds * 100, what);
    fmt::print("  {:>9} {:>6} {:>6}  {}\n", "ms/run", "share", "calls", column);
    for (size_t i = 0; i < items.size() && i < static_cast<size_t>(top); ++i)
      fmt::print("  {:>9.2f} {:>5.1f}% {:>6}  {}\n", items[i].seconds / runs * 1e3, items[i].seconds / total * 100,
                 items[i].calls / runs, items[i].name.substr(0, 110));
  };
  if (device.is_cpu()) return list(profile.device, "CPU", "ATen ops by self time", "op");
  list(profile.device, "GPU", "kernels", "kernel");
  // A run whose host is busy for most of it while the GPU is not is bound by launching kernels.
  if (!profile.host.empty()) list(profile.host, "host (CPU)", "ATen ops and CUDA calls by self time", "op or call");
}

std::string where(at::Device device) {
  return device.is_cpu() ? fmt::format("cpu, {} threads", at::get_num_threads()) : device_name(device);
}

// The benchmarks that can write JSON and profile: prefill and train.
struct Reported : Common {
  std::string json;
  int profile = 0;
};

void add_reporting(CLI::App* cmd, Reported& o, const std::string& profiled) {
  cmd->add_option("--json", o.json, "Also write the timings to this file");  // checked by the command, before it runs
  cmd->add_option("--profile", o.profile,
                  "Then list the GPU kernels (on a CPU: ATen ops, by self time) taking the most time (this many) " + profiled)
      ->check(whole_at_least(0, 100000));
}

void write_report(const Reported& o, at::Device device, const char* key, const nlohmann::ordered_json& rows) {
  if (!o.json.empty())
    write_file_atomic(o.json, nlohmann::ordered_json{{"device", where(device)}, {"config", o.config}, {"overrides", o.overrides},
                                                     {key, rows}}
                                  .dump(2) +
                                  "\n");
}

void add_bench_loader(CLI::App& bench) {
  auto o = std::make_shared<Common>();
  auto micro_batches = std::make_shared<uint64_t>(500);
  CLI::App* cmd = bench.add_subcommand("loader", "Tokens/s from the config's shards into micro-batches");
  add_common(cmd, *o);
  cmd->add_option("--micro-batches", *micro_batches, "Micro-batches timed")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 40))
      ->capture_default_str();
  cmd->footer("Example:\n  gqe bench loader configs/tiny/gqe.yaml --set train.micro_batch_size=32");
  cmd->callback([o, micro_batches] {
    const Config c = load_config(o->config, o->overrides).config;
    if (c.data.dataset.empty()) throw UserError(fmt::format("{}: data.dataset is not set", o->config));
    const Manifest m = read_manifest(c.data.dataset);
    auto stream = std::make_shared<const TokenStream>(c.data.dataset, m, Split::train);
    LoaderOptions opts;
    opts.seq_len = static_cast<uint64_t>(c.data.seq_len);
    opts.global_batch = static_cast<uint64_t>(c.train.global_batch_tokens / c.data.seq_len);
    opts.micro_batch = static_cast<uint64_t>(c.train.micro_batch_size);
    opts.seed = static_cast<uint64_t>(c.data.seed);
    const double tokens_per_batch = static_cast<double>(opts.micro_batch * opts.seq_len);
    fmt::print("loader: {} ({} train tokens), seq_len {}, micro-batch {}, {} micro-batches timed\n", c.data.dataset,
               stream->size(), opts.seq_len, opts.micro_batch, *micro_batches);
    opts.prefetch = 0;
    const double sync = bench_loader(stream, opts, *micro_batches);
    fmt::print("  assembling on the calling thread: {:8.1f}M tokens/s ({:.0f} micro-batches/s)\n",
               sync * tokens_per_batch / 1e6, sync);
    opts.prefetch = 8;
    const double ahead = bench_loader(stream, opts, *micro_batches);
    fmt::print("  with the prefetch thread:         {:8.1f}M tokens/s ({:.0f} micro-batches/s)\n",
               ahead * tokens_per_batch / 1e6, ahead);
  });
}

void add_bench_prefill(CLI::App& bench) {
  struct Options : Reported {
    std::string lengths = "2048,4096,8192";
    int repeats = 3;
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = bench.add_subcommand("prefill", "Forward over one long sequence, GQA against GQE: the speed-up by length");
  add_common(cmd, *o);
  cmd->add_option("--seq-lens", o->lengths, "Sequence lengths, comma-separated")->capture_default_str();
  cmd->add_option("--repeats", o->repeats, "Timed runs per length (after one warm-up); the median is reported")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  add_reporting(cmd, *o, "at the last length");
  cmd->footer(
      "Examples:\n"
      "  gqe bench prefill configs/bench/prefill-cpu.yaml --seq-lens 2048,4096,8192\n"
      "  gqe bench prefill configs/gqe-250m.yaml --seq-lens 2048,4096,8192,16384,32768,65536,131072");
  cmd->callback([o] {
    if (!o->json.empty()) check_output_path(o->json, "--json", /*directory=*/false);  // before the benchmark, not after it
    const LoadedConfig loaded = load_config(o->config, o->overrides);
    const at::Device device = setup_device(loaded);
    std::vector<int64_t> lengths;
    std::stringstream in(o->lengths);
    for (std::string item; std::getline(in, item, ',');) {
      const auto v = parse_integer(item);
      if (!v || *v < 2) throw UserError(fmt::format("--seq-lens: '{}' is not a length", item));
      lengths.push_back(*v);
    }
    if (lengths.empty()) throw UserError("--seq-lens: no length given");
    const int64_t longest = *std::max_element(lengths.begin(), lengths.end());
    require_memory(device, min_prefill_bytes(loaded.config, longest), fmt::format("--seq-lens {}: a prefill of {} tokens", longest, longest));
    const ModelConfig gqe = as_gqe(loaded.config.model);
    Config c = loaded.config;
    c.model = gqe;
    const ModelInfo info = describe_model(c);
    const bool bf16 = loaded.config.train.precision == Precision::bf16;
    fmt::print("prefill: {} as GQA ({} query heads) and GQE ({} of {} active: variant {}, top_k {}); one sequence, "
               "last-position logits, {}, {}, median of {}\n",
               o->config, gqe.n_heads, info.active_query_heads, gqe.n_heads, enum_name(gqe.attention.variant),
               gqe.attention.top_k, where(device), bf16 ? "bf16" : "fp32", o->repeats);
    fmt::print("  {:>8} {:>12} {:>12} {:>9} {:>16}\n", "tokens", "GQA (ms)", "GQE (ms)", "speed-up", "GQE tokens/s");
    nlohmann::ordered_json rows = nlohmann::ordered_json::array();
    const std::vector<PrefillTiming> timings = bench_prefill(loaded.config.model, lengths, o->repeats, device, bf16, o->profile > 0);
    for (const PrefillTiming& t : timings) {
      fmt::print("  {:>8} {:>12.1f} {:>12.1f} {:>8.2f}x {:>16.0f}\n", t.tokens, t.gqa_seconds * 1e3, t.gqe_seconds * 1e3,
                 t.gqa_seconds / t.gqe_seconds, static_cast<double>(t.tokens) / t.gqe_seconds);
      rows.push_back({{"tokens", t.tokens}, {"gqa_s", t.gqa_seconds}, {"gqe_s", t.gqe_seconds},
                      {"speedup", t.gqa_seconds / t.gqe_seconds}});
    }
    if (o->profile > 0 && !timings.empty()) {
      const PrefillTiming& t = timings.back();
      print_kernels(fmt::format("GQA prefill of {} tokens", t.tokens), device, t.gqa_profile, 1, t.gqa_seconds, o->profile);
      print_kernels(fmt::format("GQE prefill of {} tokens", t.tokens), device, t.gqe_profile, 1, t.gqe_seconds, o->profile);
    }
    write_report(*o, device, "prefill", rows);
  });
}

void add_bench_train(CLI::App& bench, int argc, char** argv) {
  struct Options : Reported {
    int steps = 10, warmup = 2, nproc = 1;
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = bench.add_subcommand("train", "Steady-state training throughput, MFU and memory of GQA and GQE");
  add_common(cmd, *o);
  cmd->add_option("--steps", o->steps, "Timed steps (after the warm-up); the median is reported")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  cmd->add_option("--warmup", o->warmup, "Untimed steps first")->check(CLI::Range(0, 100000))->capture_default_str();
  add_reporting(cmd, *o, "over 3 more steps");
  add_nproc_option(cmd, o->nproc);
  cmd->footer(
      "Examples:\n"
      "  gqe bench train configs/tiny/gqe.yaml\n"
      "  gqe bench train configs/gqe-250m.yaml --profile 25             # where the GPU time goes\n"
      "  gqe bench train configs/gqe-250m.yaml --set train.micro_batch_size=16   # on a GPU: MFU\n"
      "  gqe bench train configs/gqe-250m.yaml --nproc 8 --set dist.shard_optimizer=true  # data parallel: comm share");
  cmd->callback([o, argc, argv] {
    job_command(o->nproc, [&] {
      // Rank 0 writes the report: its path is checked where rank 0 runs, before the benchmark.
      if (!o->json.empty() && hosts_rank0(o->nproc)) check_output_path(o->json, "--json", /*directory=*/false);
      const LoadedConfig loaded = load_config(o->config, o->overrides);
      if (launch_if_requested(o->nproc, argc, argv)) return;
      const DistEnvironment env = read_dist_environment();
      std::vector<std::string> kernel_warnings;
      const at::Device device = setup_device(loaded, env, [&](const std::string& line) { kernel_warnings.push_back(line); });
      const Config& c = loaded.config;
      Communicator comm(env, c.dist.backend, device, std::chrono::seconds(c.dist.timeout_s));
      for (const std::string& line : comm.gather_warnings(kernel_warnings)) fmt::print(stderr, "gqe: warning: {}\n", line);
      comm.check_input([&] {  // before anything is allocated; one line for all ranks
        for (const ModelConfig& m : {as_gqa(c.model), as_gqe(c.model)}) {
          Config variant = c;
          variant.model = m;
          const MemoryVerdict memory = memory_verdict(describe_model(variant, env.world), device_name(device),
                                                      available_memory(device), device.is_cpu() ? env.local_world : 1);
          if (!memory.fits) throw UserError(fmt::format("{}: {} cannot train here: {}", o->config, enum_name(m.attention.type), memory.text));
        }
      });
      // Every rank runs the steps; rank 0 reports.
      std::vector<TrainTiming> timings;
      std::vector<Profile> profiles(2);
      for (const ModelConfig& m : {as_gqa(c.model), as_gqe(c.model)}) {
        Config variant = c;
        variant.model = m;
        Profile* profile = o->profile > 0 ? &profiles[timings.size()] : nullptr;
        timings.push_back(bench_train_step(variant, comm, o->steps, o->warmup, device, profile, 3));
      }
      comm.finish();
      if (!comm.main()) return;
      const auto peak = peak_bf16_flops(device_name(device));
      fmt::print("train step: {}, micro-batch {} x {} tokens, {}, {}, median of {} steps after {}\n", o->config,
                 c.train.micro_batch_size, c.data.seq_len, enum_name(c.train.precision), where(device), o->steps, o->warmup);
      fmt::print("  FLOPs per token: 6 x matmul params + 6 x layers x active heads x head_dim x seq_len (causal; see gqe info)\n");
      if (c.train.activation_checkpointing)
        fmt::print("  activation checkpointing: each layer recomputed in the backward pass (not counted in the FLOPs, as MFU does)\n");
      fmt::print("  peak memory: parameters, gradients, AdamW state and activations, tensors only\n");
      const bool bf16 = c.train.precision == Precision::bf16;
      fmt::print("  MFU: {}\n", !peak ? std::string("none (the peak of this device is not known)")
                                 : !bf16 ? std::string("none (the known peak is bf16's; this step is fp32)")
                                         : fmt::format("against {:.0f} TFLOP/s dense bf16 ({})", *peak / 1e12, device_name(device)));
      if (comm.world() > 1)
        fmt::print("  data parallel: {} ranks over {}{}; comm: the share of the step spent waiting on gradient "
                   "collectives after the backward pass{}\n", comm.world(), comm.backend_name(),
                   c.dist.shard_optimizer ? ", sharded optimizer" : "",
                   !c.dist.shard_optimizer ? ""
                   : c.dist.overlap_param_gather ? " and on the parameters' all-gather where the forward pass waits for it"
                                                 : " and on the parameters' all-gather after the update");
      fmt::print("  {:<18}{:>12}{:>14}{:>12}{:>10}{:>14}{:>8}\n", "attention", "step (ms)", "tokens/s", "GFLOP/token", "MFU",
                 "peak memory", "comm");
      nlohmann::ordered_json rows = nlohmann::ordered_json::array();
      for (const TrainTiming& t : timings) {
        fmt::print("  {:<18}{:>12.1f}{:>14.0f}{:>12.4g}{:>10}{:>11.2f} GiB{:>7.1f}%\n", t.name, t.step_seconds * 1e3,
                   t.tokens_per_second, t.flops_per_token / 1e9, t.mfu ? fmt::format("{:.1f}%", *t.mfu * 100) : "-",
                   t.peak_memory / (1024.0 * 1024 * 1024), t.comm_share * 100);
        rows.push_back({{"attention", t.name}, {"step_s", t.step_seconds}, {"tokens_per_s", t.tokens_per_second},
                        {"flops_per_token", t.flops_per_token}, {"mfu", t.mfu ? nlohmann::ordered_json(*t.mfu) : nullptr},
                        {"peak_memory_bytes", t.peak_memory}, {"comm_share", t.comm_share}, {"ranks", comm.world()}});
      }
      fmt::print("  GQE / GQA tokens/s: {:.3f}\n", timings[1].tokens_per_second / timings[0].tokens_per_second);
      for (size_t i = 0; i < timings.size() && o->profile > 0; ++i)
        print_kernels(timings[i].name + " training step", device, profiles[i], 3, timings[i].step_seconds, o->profile);
      write_report(*o, device, "train", rows);
    });
  });
}

void add_comm(CLI::App& bench, int argc, char** argv) {
  struct Options : Reported {
    std::string sizes;
    int repeats = 10, nproc = 1;
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = bench.add_subcommand("comm", "Bus bandwidth of all-reduce, reduce-scatter, all-gather at training's sizes");
  add_common(cmd, *o);
  cmd->add_option("--sizes", o->sizes, "Bytes per collective, comma-separated (default: dist.bucket_mb and the whole fp32 gradient)");
  cmd->add_option("--repeats", o->repeats, "Timed runs of each (the median is reported)")->check(CLI::Range(1, 10000))->capture_default_str();
  cmd->add_option("--json", o->json, "Also write the numbers to this JSON file");
  add_nproc_option(cmd, o->nproc);
  cmd->footer(
      "Examples:\n"
      "  gqe bench comm configs/gqe-250m.yaml --nproc 8          # one node's GPUs, NCCL\n"
      "  NNODES=2 NODE_RANK=$NODE MASTER_ADDR=node01 MASTER_PORT=29500 gqe bench comm configs/gqe-250m.yaml --nproc 8\n"
      "Bus bandwidth as nccl-tests reports it; check a cluster before a long run.");
  cmd->callback([o, argc, argv] {
    job_command(o->nproc, [&] {
      const LoadedConfig loaded = load_config(o->config, o->overrides);
      const Config& c = loaded.config;
      std::vector<int64_t> sizes;
      if (o->sizes.empty()) {
        sizes = {c.dist.bucket_mb << 20, 4 * describe_model(c).total};
      } else {
        std::istringstream in(o->sizes);
        for (std::string item; std::getline(in, item, ',');) {
          const auto v = parse_integer(item);
          if (!v || *v < 4 || *v > (int64_t{1} << 36))
            throw UserError(fmt::format("--sizes: '{}' is not a size in bytes from 4 to 64 GiB (e.g. 25M, 1G)", item));
          sizes.push_back(*v);
        }
      }
      if (!o->json.empty() && hosts_rank0(o->nproc)) check_output_path(o->json, "--json", /*directory=*/false);
      if (launch_if_requested(o->nproc, argc, argv)) return;
      const DistEnvironment env = read_dist_environment();
      const at::Device device = setup_device(loaded, env);
      Communicator comm(env, c.dist.backend, device, std::chrono::seconds(c.dist.timeout_s));
      const std::vector<CommTiming> timings = bench_comm(comm, device, sizes, o->repeats);
      comm.finish();
      if (!comm.main()) return;
      fmt::print("collectives: {} ranks ({} per node) over {}, fp32, {}, median of {} after a checked warm-up\n", comm.world(),
                 env.local_world, comm.backend_name(), where(device), o->repeats);
      fmt::print("  {:<16}{:>12}{:>12}{:>14}{:>14}\n", "collective", "size", "time (ms)", "algbw (GB/s)", "busbw (GB/s)");
      nlohmann::ordered_json rows = nlohmann::ordered_json::array();
      for (const CommTiming& t : timings) {
        fmt::print("  {:<16}{:>12}{:>12.3f}{:>14.2f}{:>14.2f}\n", t.op, fmt::format("{:.1f} MiB", static_cast<double>(t.bytes) / (1 << 20)), t.seconds * 1e3, t.algbw / 1e9, t.busbw / 1e9);
        rows.push_back({{"collective", t.op}, {"bytes", t.bytes}, {"seconds", t.seconds}, {"algbw", t.algbw}, {"busbw", t.busbw}});
      }
      write_report(*o, device, "comm", rows);
    });
  });
}

// gqe-data encode against the Python baseline, same inputs and cores (no config, no torch).
void add_bench_encode(CLI::App& bench) {
  auto o = std::make_shared<EncodeBenchOptions>();
  auto json = std::make_shared<std::string>();
  CLI::App* cmd = bench.add_subcommand(
      "encode", "Tokens/s of gqe-data encode against scripts/bench_encode_python.py (PyPI sentencepiece) on the same cores");
  cmd->add_option("inputs", o->inputs, "JSON Lines or Parquet files, as gqe-data encode takes them")->required();
  cmd->add_option("--tokenizer", o->tokenizer, "sentencepiece .model")->required()->check(CLI::ExistingFile);
  cmd->add_option("--text-field", o->text_field, "JSON Lines' field or Parquet's column holding the text")->capture_default_str();
  o->threads = 0;  // the flag's default: all cores, resolved when it runs
  cmd->add_option("--threads", o->threads, "gqe-data's threads and Python's processes (0: all cores)")
      ->check(whole_at_least(0, 4096));
  cmd->add_option("--repeats", o->repeats, "Runs of each, interleaved")->check(whole_at_least(1, 1000))->capture_default_str();
  cmd->add_option("--json", *json, "Also write the timings to this file")->each([](const std::string& file) {
    check_output_path(file, "--json", /*directory=*/false);
  });
  cmd->callback([o, json] {
    if (o->threads == 0) o->threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    const int threads = o->threads;
    fmt::print("bench encode: {} input(s), {} thread(s) / process(es), {} run(s) of each, interleaved; the whole command "
               "timed, start-up included\n",
               o->inputs.size(), threads, o->repeats);
    const std::vector<EncodeRun> runs = bench_encode(*o);
    fmt::print("  {:<16}{:>4}{:>10}{:>12}  {}\n", "tool", "run", "seconds", "tokens/s", "library");
    std::map<std::string, std::vector<double>> rates;
    nlohmann::ordered_json rows = nlohmann::ordered_json::array();
    for (const EncodeRun& r : runs) {
      const double rate = static_cast<double>(r.tokens) / r.seconds;
      rates[r.tool].push_back(rate);
      fmt::print("  {:<16}{:>4}{:>10.2f}{:>11.2f}M  {}\n", r.tool, r.repeat + 1, r.seconds, rate / 1e6, r.library);
      rows.push_back({{"tool", r.tool}, {"library", r.library}, {"run", r.repeat + 1}, {"seconds", r.seconds}, {"tokens", r.tokens}});
      if (r.tokens != runs.front().tokens)
        fmt::print(stderr, "gqe: warning: {} counted {} tokens, gqe-data {}: they did not encode the same documents\n", r.tool,
                   r.tokens, runs.front().tokens);
    }
    auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
    };
    const double ours = median(rates["gqe-data"]);
    fmt::print("median tokens/s: gqe-data {:.2f}M ({:.2f}M per thread); gqe-data / Python pool {:.2f}x, / Python threads {:.2f}x\n",
               ours / 1e6, ours / 1e6 / threads, ours / median(rates["python-pool"]), ours / median(rates["python-threads"]));
    if (!json->empty())
      write_file_atomic(*json, nlohmann::ordered_json{{"inputs", o->inputs}, {"tokenizer", o->tokenizer}, {"threads", threads},
                                                      {"runs", rows}}
                                       .dump(2) +
                                   "\n");
  });
}

}  // namespace

void add_bench_command(CLI::App& app, int argc, char** argv) {
  CLI::App* bench = app.add_subcommand("bench", "Throughput benchmarks: loader, prefill (GQA vs GQE), train, comm, encode");
  bench->require_subcommand(1);
  add_bench_loader(*bench);
  add_bench_prefill(*bench);
  add_bench_train(*bench, argc, argv);
  add_comm(*bench, argc, argv);
  add_bench_encode(*bench);
}

}  // namespace gqe
