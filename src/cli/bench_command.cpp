// gqe bench ...: throughput benchmarks, reported as rates.
//   loader: tokens/s from the shards of a config's dataset into training micro-batches.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "common/error.h"
#include "config/config_loader.h"
#include "data/dataset.h"
#include "data/loader.h"

namespace gqe {
namespace {

// Micro-batches per second through TrainLoader::next().
double micro_batches_per_second(std::shared_ptr<const TokenStream> stream, const LoaderOptions& opts, uint64_t count) {
  TrainLoader loader(std::move(stream), opts);
  for (uint64_t i = 0; i < std::max<uint64_t>(1, count / 10); ++i) loader.next();  // warm-up: page cache, permutation
  const auto start = std::chrono::steady_clock::now();
  uint64_t checksum = 0;
  for (uint64_t i = 0; i < count; ++i) checksum += static_cast<uint64_t>(loader.next().tokens.back());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (checksum == UINT64_MAX) fmt::print("");  // keep the batches from being optimised away
  return static_cast<double>(count) / seconds;
}

void add_bench_loader(CLI::App& bench) {
  struct Options {
    std::string config;
    std::vector<std::string> overrides;
    uint64_t micro_batches = 500;
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = bench.add_subcommand("loader", "Tokens/s from the config's shards into micro-batches");
  cmd->add_option("config", o->config, "YAML config (data.dataset, data.seq_len, train batch sizes)")->required();
  cmd->add_option("--set", o->overrides, "Override a config key (repeatable)")->type_name("KEY=VALUE");
  cmd->add_option("--micro-batches", o->micro_batches, "Micro-batches timed")->capture_default_str();
  cmd->footer("Example:\n  gqe bench loader configs/tiny/gqe.yaml --set train.micro_batch_size=32");
  cmd->callback([o] {
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
               stream->size(), opts.seq_len, opts.micro_batch, o->micro_batches);
    opts.prefetch = 0;
    const double sync = micro_batches_per_second(stream, opts, o->micro_batches);
    fmt::print("  assembling on the calling thread: {:8.1f}M tokens/s ({:.0f} micro-batches/s)\n",
               sync * tokens_per_batch / 1e6, sync);
    opts.prefetch = 8;
    const double ahead = micro_batches_per_second(stream, opts, o->micro_batches);
    fmt::print("  with the prefetch thread:         {:8.1f}M tokens/s ({:.0f} micro-batches/s)\n",
               ahead * tokens_per_batch / 1e6, ahead);
  });
}

}  // namespace

void add_bench_command(CLI::App& app) {
  CLI::App* bench = app.add_subcommand("bench", "Throughput benchmarks");
  bench->require_subcommand(1);
  add_bench_loader(*bench);
}

}  // namespace gqe
