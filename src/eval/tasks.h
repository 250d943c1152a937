// Zero-shot multiple-choice tasks (docs/evaluation.md): HellaSwag, ARC-Easy and PIQA read from
// their public JSON Lines formats with the prompts and clean-up of lm-evaluation-harness, then
// tokenized into an eval set file: per item a context, each choice's continuation tokens, the
// choice's length in bytes, and the gold label. No torch.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace gqe {

class Tokenizer;

enum class EvalTask { hellaswag, arc_easy, piqa };
std::optional<EvalTask> parse_eval_task(const std::string& name);
const char* eval_task_name(EvalTask task);

struct EvalItem {
  std::string context;               // e.g. "Question: ...\nAnswer:"
  std::vector<std::string> choices;  // continuations without the leading " "
  int32_t label = -1;
  uint64_t line = 0;                 // in the input file
};

// HellaSwag's clean-up of WikiHow artefacts (the harness's preprocess()).
std::string hellaswag_clean(std::string text);
// Python's str.strip() (Unicode whitespace, as str.isspace()), and the length in bytes of
// str.rstrip()'s result, on UTF-8 text.
std::string python_strip(const std::string& text);
size_t python_rstrip_length(const std::string& text);
// Python's str.capitalize() on UTF-8 text, from the build's Python's Unicode tables
// (scripts/unicode_case_tables.py): what the harness's HellaSwag does to ctx_b.
std::string python_capitalize(const std::string& text);

// Reads FILE in the task's format; PIQA's labels may come from a separate file (one per line).
// Throws UserError naming the file and line of a missing or malformed field.
std::vector<EvalItem> read_eval_items(EvalTask task, const std::string& file, const std::string& labels_file = "");

struct TokenizedItem {
  std::vector<int32_t> context;                    // EOS first: documents follow an EOS in training
  std::vector<std::vector<int32_t>> continuations; // tokens of " " + choice after the context
  std::vector<uint32_t> choice_bytes;              // UTF-8 length of each choice, for acc_bytes
  std::vector<uint32_t> choice_chars;              // characters (code points, Python's len), for acc_norm
  int32_t label = -1;
  std::string context_text;
  std::vector<std::string> choice_texts;
};

struct EvalSet {
  std::string task;
  uint64_t tokenizer_fingerprint = 0;
  uint32_t vocab_size = 0;
  std::vector<TokenizedItem> items;
};

// Tokenizes like the harness: continuation tokens are encode(context + " " + choice) after the
// first len(encode(context)) tokens.
EvalSet tokenize_eval_items(EvalTask task, const std::vector<EvalItem>& items, const Tokenizer& tokenizer);

// The tokenized eval set file (JSON Lines: a header line, then one line per item).
void write_eval_set(const std::filesystem::path& file, const EvalSet& set);
EvalSet read_eval_set(const std::filesystem::path& file);

}  // namespace gqe
