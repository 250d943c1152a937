// gqe: the user's entry point.
#include <CLI/CLI.hpp>

#include "cli/commands.h"
#include "cli/run.h"
#include "common/host_memory.h"
#include "common/version.h"
#include "dist/communicator.h"

int main(int argc, char** argv) {
  gqe::keep_freed_host_memory();  // before the first training step's activations
  gqe::quiet_torch_warnings();
  CLI::App app{"gqe: train and compare small language models with GQA or Grouped Query Experts attention"};
  app.footer(
      "Examples:\n"
      "  gqe train configs/tiny/gqe.yaml\n"
      "  gqe eval runs/gqe --val --tasks hellaswag=data/eval/hellaswag.jsonl\n"
      "  gqe sample runs/gqe --prompt \"It was\" --temperature 0\n"
      "  gqe experiment run configs/experiments/tiny.yaml\n"
      "  gqe compare runs/tiny/gqa runs/tiny/gqe --out runs/tiny/comparison\n"
      "  gqe info configs/gqe-250m.yaml\n"
      "  gqe info configs/tiny/gqe.yaml --set model.attention.top_k=2\n"
      "  gqe data encode data/sample/*.jsonl --tokenizer data/sample/tokenizer.model --out data/sample/shards\n"
      "  gqe bench train configs/gqe-250m.yaml          # GQA vs GQE tokens/s and MFU (GPU)\n"
      "  gqe bench prefill configs/bench/prefill-cpu.yaml --seq-lens 2048,4096,8192\n"
      "Run 'gqe COMMAND --help' for a command's options.");
  app.set_version_flag("--version", std::string("gqe ") + gqe::gqe_version());
  app.require_subcommand(1);
  gqe::add_train_command(app, argc, argv);
  gqe::add_eval_commands(app, argc, argv);
  gqe::add_experiment_commands(app);
  gqe::add_ladder_commands(app);
  gqe::add_info_command(app);
  gqe::add_export_command(app);
  gqe::add_data_forwarding(app);
  gqe::add_bench_command(app, argc, argv);
  return gqe::run_cli(app, "gqe", argc, argv);
}
