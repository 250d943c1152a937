// gqe eval and gqe sample.
#include <CLI/CLI.hpp>

#include <memory>
#include <sstream>
#include <string>

#include "cli/checks.h"
#include "cli/commands.h"
#include "cli/nproc.h"
#include "common/error.h"
#include "common/files.h"
#include "eval/evaluate.h"
#include "eval/tasks.h"

namespace gqe {
namespace {

// "hellaswag=a.jsonl,piqa=b.jsonl" (the option may also repeat).
std::vector<std::pair<std::string, std::string>> parse_tasks(const std::vector<std::string>& specs) {
  std::vector<std::pair<std::string, std::string>> tasks;
  for (const auto& spec : specs) {
    std::stringstream in(spec);
    for (std::string item; std::getline(in, item, ',');) {
      const auto eq = item.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == item.size())
        throw UserError("--tasks: expected NAME=FILE[,NAME=FILE...], got '" + item + "'");
      const std::string name = item.substr(0, eq);
      if (!parse_eval_task(name)) throw UserError("--tasks: unknown task '" + name + "' (hellaswag, arc_easy, piqa)");
      tasks.emplace_back(name, item.substr(eq + 1));
    }
  }
  return tasks;
}

}  // namespace

void add_eval_commands(CLI::App& app, int argc, char** argv) {
  struct EvalArgs {
    std::string target;
    std::vector<std::string> tasks;
    bool val = false;
    int64_t batch_size = 0;
    int nproc = 1;
    std::string log_samples;
  };
  auto e = std::make_shared<EvalArgs>();
  CLI::App* eval = app.add_subcommand("eval", "Validation loss and zero-shot tasks of a run's newest (or a given) checkpoint");
  eval->add_option("target", e->target, "Run directory, or a checkpoint directory")->required();
  eval->add_option("--tasks", e->tasks, "Eval sets from gqe-data encode-eval: hellaswag=FILE,arc_easy=FILE,piqa=FILE")
      ->type_name("NAME=FILE,...");
  eval->add_flag("--val", e->val, "Validation loss and perplexity over the run's val split");
  eval->add_option("--batch-size", e->batch_size, "Sequences per forward pass (default: eval.batch_size)")
      ->check(whole_at_least(1));
  eval->add_option("--log-samples", e->log_samples, "Write each item's log-likelihoods and picks here (JSON Lines)");
  add_nproc_option(eval, e->nproc);
  eval->footer(
      "Examples:\n"
      "  gqe eval runs/gqe --val\n"
      "  gqe eval runs/gqe --tasks hellaswag=data/eval/hellaswag.jsonl,piqa=data/eval/piqa.jsonl --nproc 2\n"
      "Writes RUN_DIR/eval.json and appends it to RUN_DIR/evals.jsonl (the training's metrics.jsonl is left alone).");
  eval->callback([e, argc, argv] {
    job_command(e->nproc, [&] {
      EvalOptions o;
      o.target = e->target;
      o.tasks = parse_tasks(e->tasks);
      o.val = e->val;
      o.batch_size = e->batch_size;
      o.log_samples = e->log_samples;
      if (!o.log_samples.empty() && hosts_rank0(e->nproc)) check_output_path(o.log_samples, "--log-samples", /*directory=*/false);
      if (const std::optional<DistEnvironment> last = last_launched_rank(e->nproc)) check_eval_input(o, *last);
      if (!launch_if_requested(e->nproc, argc, argv)) evaluate(o);
    });
  });

  auto s = std::make_shared<SampleCommand>();
  CLI::App* sample_cmd = app.add_subcommand("sample", "Generate text from a run's newest (or a given) checkpoint");
  sample_cmd->add_option("target", s->target, "Run directory, or a checkpoint directory")->required();
  sample_cmd->add_option("--prompt", s->prompt, "Text to continue")->required();
  sample_cmd->add_option("--max-tokens", s->sampling.max_tokens, "Tokens to generate")
      ->check(whole_at_least(1, int64_t{1} << 31))
      ->capture_default_str();
  sample_cmd->add_option("--temperature", s->sampling.temperature, "0: greedy")
      ->check(number_in(0, 1e6))
      ->capture_default_str();
  sample_cmd->add_option("--top-k", s->sampling.top_k, "Sample among the k most likely tokens (0: all)")
      ->check(whole_at_least(0))
      ->capture_default_str();
  sample_cmd->add_option("--top-p", s->sampling.top_p, "Sample among the most likely tokens up to this probability")
      ->check(number_in(0, 1, /*min_open=*/true))
      ->capture_default_str();
  sample_cmd->add_option("--seed", s->sampling.seed, "Seed of the sampling")->check(whole_at_least(0))->capture_default_str();
  sample_cmd->add_flag("--ids", s->ids, "Print token ids as JSON (the prompt with its EOS, and what was generated)");
  sample_cmd->add_option("--num-samples", s->num_samples, "Independent samples")
      ->check(whole_at_least(1, 1 << 20))
      ->capture_default_str();
  sample_cmd->footer(
      "Examples:\n"
      "  gqe sample runs/gqe --prompt \"Now the serpent was\" --temperature 0\n"
      "  gqe sample runs/gqe --prompt \"ROMEO:\" --top-k 50 --num-samples 3");
  sample_cmd->callback([s] { sample(*s); });
}

}  // namespace gqe
