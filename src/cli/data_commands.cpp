// gqe-data's subcommands: train-tokenizer, encode, inspect, decode. No torch.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <iostream>
#include <iterator>
#include <memory>
#include <sstream>
#include <thread>

#include "cli/checks.h"
#include "cli/commands.h"
#include "common/error.h"
#include "common/files.h"
#include "config/config_loader.h"
#include "data/dataset.h"
#include "data/encode.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "eval/tasks.h"

namespace fs = std::filesystem;

namespace gqe {
namespace {

int all_cores() { return static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

std::string command_line(int argc, char** argv) {
  std::string s;
  for (int i = 0; i < argc; ++i) s += (i ? " " : "") + std::string(argv[i]);
  return s;
}

uint64_t count_option(const std::string& name, const std::string& text) {
  const auto v = parse_integer(text);
  if (!v || *v <= 0) throw UserError(fmt::format("{}: expected a positive whole number (e.g. 100M), got '{}'", name, text));
  return static_cast<uint64_t>(*v);
}

struct InputFlags {
  std::string format = "auto", boundary = "file";
  InputOptions options() const {
    InputOptions o;
    o.format = format == "text"      ? InputFormat::text
               : format == "jsonl"   ? InputFormat::jsonl
               : format == "parquet" ? InputFormat::parquet
                                     : InputFormat::auto_;
    o.boundary = boundary == "blank-line" ? DocBoundary::blank_line : DocBoundary::file;
    o.text_field = text_field;
    return o;
  }
  std::string text_field = "text";
};

void add_input_flags(CLI::App* cmd, InputFlags& f) {
  cmd->add_option("--format", f.format,
                  "Input format; auto: .jsonl/.ndjson/.json (.gz, .zst) are JSON Lines, .parquet Parquet, the rest text")
      ->check(CLI::IsMember({"auto", "text", "jsonl", "parquet"}))
      ->capture_default_str();
  cmd->add_option("--doc-boundary", f.boundary, "Plain text: one document per file, or per blank-line-separated block")
      ->check(CLI::IsMember({"file", "blank-line"}))
      ->capture_default_str();
  cmd->add_option("--text-field", f.text_field, "JSON Lines' field or Parquet's column holding the text")->capture_default_str();
}

constexpr const char* kInputsHelp = "Text, JSON Lines (optionally .gz or .zst) or Parquet files, directories, glob patterns";

void add_train_tokenizer(CLI::App& app) {
  struct Options {
    std::vector<std::string> inputs;
    InputFlags input;
    std::string out, config, max_sentences = "2M";
    uint32_t vocab_size = 0;
    uint64_t seed = 1234;
    int threads = all_cores();
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("train-tokenizer", "Train a sentencepiece BPE tokenizer (byte fallback) on text");
  cmd->add_option("inputs", o->inputs, kInputsHelp)->required();
  cmd->add_option("--out", o->out, "Output prefix: writes PREFIX.model and PREFIX.vocab")->required();
  auto* vocab = cmd->add_option("--vocab-size", o->vocab_size, "Vocabulary size");
  auto* config = cmd->add_option("--config", o->config, "Take the vocabulary size from this config's model.vocab_size");
  vocab->excludes(config);
  cmd->add_option("--max-sentences", o->max_sentences, "Lines sampled for training when the input has more")
      ->capture_default_str();
  cmd->add_option("--seed", o->seed, "Seed of the sampling")->check(whole_at_least(0))->capture_default_str();
  cmd->add_option("--threads", o->threads, "Training threads")->check(whole_at_least(1, 4096))->capture_default_str();
  add_input_flags(cmd, o->input);
  cmd->footer(
      "Examples:\n"
      "  gqe-data train-tokenizer data/sample/*.jsonl --vocab-size 4096 --out data/sample/tokenizer\n"
      "  gqe-data train-tokenizer corpus/ --config configs/gqa-250m.yaml --out data/tok50k");
  cmd->callback([o] {
    check_output_path(o->out + ".model", "--out", /*directory=*/false);  // before the training, not after it
    TokenizerTraining t;
    t.files = expand_inputs(o->inputs);
    t.input = o->input.options();
    if (!o->config.empty()) t.vocab_size = static_cast<uint32_t>(load_config(o->config).config.model.vocab_size);
    else if (o->vocab_size > 0) t.vocab_size = o->vocab_size;
    else throw UserError("train-tokenizer: give --vocab-size N or --config CONFIG");
    t.out_prefix = o->out;
    t.max_sentences = count_option("--max-sentences", o->max_sentences);
    t.seed = o->seed;
    t.threads = o->threads;
    const auto s = train_tokenizer(t);
    fmt::print("wrote {0}.model and {0}.vocab: vocabulary {1}, trained on {2} of {3} lines ({4} documents){5}\n",
               o->out, t.vocab_size, s.sampled_lines, s.lines, s.documents,
               s.skipped_long_lines ? fmt::format("; {} lines over 16 KB skipped", s.skipped_long_lines) : "");
  });
}

void add_encode(CLI::App& app, int argc, char** argv) {
  struct Options {
    EncodeOptions encode;
    InputFlags input;
    std::string shard_tokens = "100M";
    bool quiet = false;
  };
  auto o = std::make_shared<Options>();
  o->encode.command = command_line(argc, argv);
  CLI::App* cmd = app.add_subcommand("encode", "Tokenize text into train/val token shards and a manifest");
  cmd->add_option("inputs", o->encode.inputs, kInputsHelp)
      ->required();
  cmd->add_option("--tokenizer", o->encode.tokenizer, "sentencepiece .model file")->required();
  cmd->add_option("--out", o->encode.out_dir, "Dataset directory to create")->required();
  cmd->add_option("--shard-tokens", o->shard_tokens, "Tokens per shard (a shard closes at a document boundary)")
      ->capture_default_str();
  cmd->add_option("--val-fraction", o->encode.val_fraction, "Fraction of documents held out for validation (seeded)")
      ->check(number_in(0, 1, false, /*max_open=*/true))
      ->capture_default_str();
  cmd->add_option("--seed", o->encode.seed, "Seed of the train/val split")->check(whole_at_least(0))->capture_default_str();
  cmd->add_option("--threads", o->encode.threads, "Encoding threads (0: all cores)")
      ->check(whole_at_least(0, 4096))
      ->capture_default_str();
  cmd->add_flag("--overwrite", o->encode.overwrite, "Replace an existing dataset directory (after success only)");
  cmd->add_flag("--quiet", o->quiet, "Print nothing but errors and warnings (no progress line, no summary)");
  add_input_flags(cmd, o->input);
  cmd->footer(
      "Examples:\n"
      "  gqe-data encode data/sample/*.jsonl --tokenizer data/sample/tokenizer.model --out data/sample/shards\n"
      "  gqe-data encode books/ --doc-boundary blank-line --tokenizer tok.model --out data/books --val-fraction 0.01\n"
      "  gqe-data encode fineweb-edu/sample/100BT/ --tokenizer tok.model --out data/fineweb-edu   # Parquet, column text");
  cmd->callback([o] {
    o->encode.input = o->input.options();
    o->encode.shard_tokens = count_option("--shard-tokens", o->shard_tokens);
    o->encode.progress = !o->quiet;
    const EncodeSummary s = encode_dataset(o->encode);
    // Legitimate but surprising: a validation split with nothing in it (one document per file).
    if (s.val_documents == 0 && o->encode.val_fraction > 0)
      fmt::print(stderr, "gqe-data: warning: the val split is empty ({} document(s) in all{}): training's evaluations "
                 "will have nothing to score\n", s.train_documents,
                 o->encode.input.format != InputFormat::jsonl && o->encode.input.format != InputFormat::parquet &&
                         o->encode.input.boundary == DocBoundary::file
                     ? "; plain text is one document per file unless --doc-boundary blank-line"
                     : "");
    if (o->quiet) return;  // nothing but errors (and warnings)
    fmt::print("wrote {}: train {} shard(s), {} docs, {} tokens; val {} shard(s), {} docs, {} tokens; {} empty docs "
               "skipped\n{:.1f} MB of input in {:.1f} s: {:.2f} MB/s, {:.2f}M tokens/s\n",
               o->encode.out_dir, s.train_shards, s.train_documents, s.train_tokens, s.val_shards, s.val_documents,
               s.val_tokens, s.empty_documents, static_cast<double>(s.input_bytes) / 1e6, s.seconds,
               static_cast<double>(s.input_bytes) / 1e6 / std::max(s.seconds, 1e-9),
               static_cast<double>(s.train_tokens + s.val_tokens) / 1e6 / std::max(s.seconds, 1e-9));
  });
}

// --tokenizer MODEL, or else the tokenizer of --dataset DIR.
std::string tokenizer_model(const char* command, const std::string& tokenizer, const std::string& dataset) {
  if (!tokenizer.empty()) return tokenizer;
  if (dataset.empty()) throw UserError(fmt::format("{}: give --tokenizer MODEL or --dataset DIR", command));
  return tokenizer_path(dataset, read_manifest(dataset)).string();
}

nlohmann::ordered_json header_json(const MappedShard& shard) {
  const ShardHeader& h = shard.header();
  return {{"file", shard.path()},
          {"magic", std::string(kShardMagic, sizeof(kShardMagic))},
          {"version", h.version},
          {"bytes_per_token", h.bytes_per_token},
          {"vocab_size", h.vocab_size},
          {"eos_id", h.eos_id},
          {"tokens", h.token_count},
          {"documents", h.document_count},
          {"payload_checksum", hex64(h.payload_checksum)},
          {"tokenizer_fingerprint", hex64(h.tokenizer_fingerprint)}};
}

void add_inspect(CLI::App& app) {
  struct Options {
    std::string path;
    bool verify = false;
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("inspect", "Print a shard's header or a dataset's manifest as JSON");
  cmd->add_option("path", o->path, "A shard (.bin) or a dataset directory")->required();
  cmd->add_flag("--verify", o->verify, "Also re-check payload checksums, token ids and the tokenizer file");
  cmd->footer(
      "Examples:\n"
      "  gqe-data inspect data/sample/shards/train_000000.bin\n"
      "  gqe-data inspect data/sample/shards --verify");
  cmd->callback([o] {
    nlohmann::ordered_json out;
    if (fs::is_directory(o->path)) {
      const Manifest m = read_manifest(o->path);
      out = nlohmann::ordered_json::parse(manifest_json(m));
      for (Split split : {Split::train, Split::val}) {
        const TokenStream stream(o->path, m, split);  // checks every shard header against the manifest
        if (o->verify) stream.verify(all_cores());
      }
      if (o->verify) verified_tokenizer(o->path, m);
    } else {
      const MappedShard shard(o->path);
      if (o->verify) shard.verify();
      out = header_json(shard);
    }
    if (o->verify) out["verified"] = true;
    fmt::print("{}\n", out.dump(2));
  });
}

void add_decode(CLI::App& app) {
  struct Options {
    std::string tokenizer, dataset, shard;
    std::vector<std::string> ids;
    uint64_t start = 0, count = 0;
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("decode", "Turn token ids (arguments, stdin, or a slice of a shard) back into text");
  cmd->add_option("ids", o->ids, "Token ids (none: read them from stdin, or use --shard)");
  auto* tok = cmd->add_option("--tokenizer", o->tokenizer, "sentencepiece .model file");
  auto* ds = cmd->add_option("--dataset", o->dataset, "Use the tokenizer of this dataset");
  tok->excludes(ds);
  cmd->add_option("--shard", o->shard, "Decode tokens of this shard (its dataset's tokenizer unless given)");
  cmd->add_option("--start", o->start, "First token of the shard slice")->check(whole_at_least(0))->capture_default_str();
  cmd->add_option("--count", o->count, "Tokens of the shard slice (0: to the end)")->check(whole_at_least(0))->capture_default_str();
  cmd->footer(
      "Examples:\n"
      "  gqe-data decode --dataset data/sample/shards 464 1022 2\n"
      "  gqe-data decode --shard data/sample/shards/val_000000.bin --count 200");
  cmd->callback([o] {
    std::vector<int32_t> ids;
    if (!o->shard.empty()) {
      const MappedShard shard(o->shard);
      if (o->start > shard.size()) throw UserError(fmt::format("--start {} is past the {} tokens of {}", o->start, shard.size(), o->shard));
      const uint64_t n = o->count ? std::min(o->count, shard.size() - o->start) : shard.size() - o->start;
      for (uint64_t i = 0; i < n; ++i) ids.push_back(static_cast<int32_t>(shard.token(o->start + i)));
      if (o->tokenizer.empty() && o->dataset.empty()) o->dataset = fs::path(o->shard).parent_path().string();
    } else {
      std::vector<std::string> words = o->ids;
      if (words.empty()) {
        std::string text((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
        for (char& c : text) c = c == ',' ? ' ' : c;
        std::istringstream in(text);
        for (std::string w; in >> w;) words.push_back(w);
      }
      for (const auto& w : words) {
        const auto v = parse_integer(w);
        if (!v || *v < 0 || *v > INT32_MAX) throw UserError(fmt::format("decode: '{}' is not a token id", w));
        ids.push_back(static_cast<int32_t>(*v));
      }
    }
    const std::string model = tokenizer_model("decode", o->tokenizer, o->dataset);
    // A shard slice may hold several documents: show where each ends.
    const Tokenizer tokenizer(model);
    std::string text;
    size_t begin = 0;
    for (size_t i = 0; i <= ids.size(); ++i) {
      if (i < ids.size() && (o->shard.empty() || ids[i] != tokenizer.eos_id())) continue;
      text += tokenizer.decode(std::span(ids).subspan(begin, i - begin));
      if (i < ids.size()) text += "\n</s>\n";
      begin = i + 1;
    }
    fmt::print("{}\n", text);
  });
}

void add_encode_eval(CLI::App& app) {
  struct Options {
    std::string task, input, labels, tokenizer, dataset, out;
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("encode-eval", "Tokenize a zero-shot task (HellaSwag, ARC-Easy, PIQA) into an eval set");
  cmd->add_option("--task", o->task, "hellaswag, arc_easy or piqa")->required()->check(CLI::IsMember({"hellaswag", "arc_easy", "piqa"}));
  cmd->add_option("--input", o->input, "The task's JSON Lines file (optionally .gz)")->required();
  cmd->add_option("--labels", o->labels, "PIQA: the separate labels file (one 0/1 per line)");
  auto* tok = cmd->add_option("--tokenizer", o->tokenizer, "sentencepiece .model file");
  auto* ds = cmd->add_option("--dataset", o->dataset, "Use the tokenizer of this dataset (the run's data.dataset)");
  tok->excludes(ds);
  cmd->add_option("--out", o->out, "Eval set file to write")->required();
  cmd->footer(
      "Examples:\n"
      "  gqe-data encode-eval --task hellaswag --input hellaswag_val.jsonl --dataset data/sample/shards --out data/eval/hellaswag.jsonl\n"
      "  gqe-data encode-eval --task piqa --input valid.jsonl --labels valid-labels.lst --dataset data/sample/shards --out data/eval/piqa.jsonl");
  cmd->callback([o] {
    check_output_path(o->out, "--out", /*directory=*/false);
    const std::string model = tokenizer_model("encode-eval", o->tokenizer, o->dataset);
    const EvalTask task = *parse_eval_task(o->task);
    const auto items = read_eval_items(task, o->input, o->labels);
    const EvalSet set = tokenize_eval_items(task, items, Tokenizer(model));
    write_eval_set(o->out, set);
    size_t context = 0, continuation = 0, choices = 0;
    for (const auto& item : set.items) {
      context += item.context.size();
      for (const auto& c : item.continuations) continuation += c.size(), ++choices;
    }
    fmt::print("wrote {}: {} {} items, {:.1f} context tokens and {:.1f} tokens per choice on average\n", o->out,
               set.items.size(), o->task, static_cast<double>(context) / static_cast<double>(set.items.size()),
               static_cast<double>(continuation) / static_cast<double>(choices));
  });
}

}  // namespace

void add_data_commands(CLI::App& app, int argc, char** argv) {
  add_train_tokenizer(app);
  add_encode(app, argc, argv);
  add_encode_eval(app);
  add_inspect(app);
  add_decode(app);
}

}  // namespace gqe
