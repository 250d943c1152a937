#include "eval/tasks.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <regex>
#include <sstream>

#include "common/checksum.h"
#include "common/error.h"
#include "common/files.h"
#include "data/text_input.h"
#include "data/tokenizer.h"

namespace gqe {

using nlohmann::json;

std::optional<EvalTask> parse_eval_task(const std::string& name) {
  if (name == "hellaswag") return EvalTask::hellaswag;
  if (name == "arc_easy") return EvalTask::arc_easy;
  if (name == "piqa") return EvalTask::piqa;
  return std::nullopt;
}

const char* eval_task_name(EvalTask task) {
  switch (task) {
    case EvalTask::hellaswag: return "hellaswag";
    case EvalTask::arc_easy: return "arc_easy";
    case EvalTask::piqa: return "piqa";
  }
  return "?";
}

std::string hellaswag_clean(std::string text) {
  // strip; " [title]" -> ". "; drop "[...]" (shortest); "  " -> " " once over the string.
  const auto first = text.find_first_not_of(" \t\n\r\f\v");
  const auto last = text.find_last_not_of(" \t\n\r\f\v");
  text = first == std::string::npos ? "" : text.substr(first, last - first + 1);
  for (size_t at; (at = text.find(" [title]")) != std::string::npos;) text.replace(at, 8, ". ");
  text = std::regex_replace(text, std::regex(R"(\[.*?\])"), "");
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    out += text[i];
    if (text[i] == ' ' && i + 1 < text.size() && text[i + 1] == ' ') ++i;  // non-overlapping, like str.replace
  }
  return out;
}

namespace {

// Python's str.capitalize() for ASCII: first letter upper, the rest lower.
std::string capitalize(std::string s) {
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) s[i] = static_cast<char>(i == 0 ? std::toupper(c) : std::tolower(c));
  }
  return s;
}

class Record {
 public:
  Record(const json& j, std::string where) : j_(j), where_(std::move(where)) {}
  [[noreturn]] void fail(const std::string& what) const { throw UserError(fmt::format("{}: {}", where_, what)); }
  bool has(const char* key) const { return j_.contains(key); }
  std::string text(const json& j, const std::string& key) const {
    if (!j.contains(key)) fail(fmt::format("no \"{}\" field", key));
    if (!j.at(key).is_string()) fail(fmt::format("\"{}\" is not a string", key));
    return j.at(key).get<std::string>();
  }
  std::string text(const char* key) const { return text(j_, key); }
  int32_t integer(const char* key) const {
    if (!j_.contains(key)) fail(fmt::format("no \"{}\" field", key));
    const json& v = j_.at(key);
    if (v.is_number_integer()) return v.get<int32_t>();
    if (v.is_string() && !v.get<std::string>().empty() && v.get<std::string>().find_first_not_of("0123456789") == std::string::npos)
      return std::stoi(v.get<std::string>());
    fail(fmt::format("\"{}\" is not an integer", key));
  }
  const json& at(const char* key) const {
    if (!j_.contains(key)) fail(fmt::format("no \"{}\" field", key));
    return j_.at(key);
  }

 private:
  const json& j_;
  std::string where_;
};

EvalItem hellaswag_item(const Record& r) {
  EvalItem item;
  const std::string ctx = r.has("ctx_a") ? r.text("ctx_a") + " " + capitalize(r.text("ctx_b")) : r.text("ctx");
  item.context = hellaswag_clean(r.text("activity_label") + ": " + ctx);
  const json& endings = r.at("endings");
  if (!endings.is_array() || endings.size() < 2) r.fail("\"endings\" is not a list of at least two strings");
  for (const auto& e : endings) {
    if (!e.is_string()) r.fail("\"endings\" holds something else than strings");
    item.choices.push_back(hellaswag_clean(e.get<std::string>()));
  }
  item.label = r.integer("label");
  return item;
}

EvalItem arc_item(const Record& r) {
  // The original release nests question.stem and question.choices[{text, label}]; the Hugging Face
  // copy has question (a string) and choices {text: [...], label: [...]}.
  EvalItem item;
  const json& q = r.at("question");
  std::vector<std::string> labels;
  if (q.is_object()) {
    item.context = "Question: " + r.text(q, "stem") + "\nAnswer:";
    if (!q.contains("choices") || !q.at("choices").is_array()) r.fail("no \"question.choices\" list");
    for (const auto& c : q.at("choices")) {
      item.choices.push_back(r.text(c, "text"));
      labels.push_back(r.text(c, "label"));
    }
  } else {
    item.context = "Question: " + r.text("question") + "\nAnswer:";
    const json& c = r.at("choices");
    if (!c.is_object() || !c.contains("text") || !c.contains("label") || !c.at("text").is_array() ||
        c.at("text").size() != c.at("label").size())
      r.fail("\"choices\" must hold equally long \"text\" and \"label\" lists");
    for (size_t i = 0; i < c.at("text").size(); ++i) {
      item.choices.push_back(c.at("text")[i].get<std::string>());
      labels.push_back(c.at("label")[i].get<std::string>());
    }
  }
  const std::string key = r.text("answerKey");
  const auto it = std::find(labels.begin(), labels.end(), key);
  if (it == labels.end())
    r.fail(fmt::format("answerKey '{}' is not one of the choice labels {}", key, fmt::join(labels, ", ")));
  item.label = static_cast<int32_t>(it - labels.begin());
  return item;
}

EvalItem piqa_item(const Record& r, std::optional<int32_t> label) {
  EvalItem item;
  item.context = "Question: " + r.text("goal") + "\nAnswer:";
  item.choices = {r.text("sol1"), r.text("sol2")};
  item.label = label ? *label : r.integer("label");
  return item;
}

}  // namespace

std::vector<EvalItem> read_eval_items(EvalTask task, const std::string& file, const std::string& labels_file) {
  std::vector<int32_t> labels;
  if (!labels_file.empty()) {
    std::istringstream in(read_file(labels_file));
    uint64_t n = 0;
    for (std::string line; std::getline(in, line);) {
      ++n;
      if (line.empty()) continue;
      if (line != "0" && line != "1") throw UserError(fmt::format("{}:{}: expected a label 0 or 1, got '{}'", labels_file, n, line));
      labels.push_back(line[0] - '0');
    }
  }
  InputOptions options;
  options.format = InputFormat::jsonl;
  DocumentReader reader({file}, options);
  std::vector<EvalItem> items;
  while (auto doc = reader.next()) {
    const std::string where = fmt::format("{}:{}", file, doc->line);
    if (auto bad = invalid_utf8_at(doc->data)) throw UserError(fmt::format("{}: invalid UTF-8 at byte {}", where, *bad + 1));
    json j;
    try {
      j = json::parse(doc->data);
    } catch (const json::parse_error& e) {
      throw UserError(fmt::format("{}: invalid JSON at byte {}", where, e.byte));
    }
    if (!j.is_object()) throw UserError(fmt::format("{}: expected a JSON object", where));
    const Record r(j, where);
    EvalItem item;
    switch (task) {
      case EvalTask::hellaswag: item = hellaswag_item(r); break;
      case EvalTask::arc_easy: item = arc_item(r); break;
      case EvalTask::piqa: {
        std::optional<int32_t> label;
        if (!labels_file.empty()) {
          if (items.size() >= labels.size())
            throw UserError(fmt::format("{}: {} has only {} labels for more items", where, labels_file, labels.size()));
          label = labels[items.size()];
        }
        item = piqa_item(r, label);
        break;
      }
    }
    if (item.label < 0 || item.label >= static_cast<int32_t>(item.choices.size()))
      r.fail(fmt::format("label {} is not the index of one of the {} choices", item.label, item.choices.size()));
    item.line = doc->line;
    items.push_back(std::move(item));
  }
  if (!labels_file.empty() && labels.size() != items.size())
    throw UserError(fmt::format("{}: {} labels for the {} items of {}", labels_file, labels.size(), items.size(), file));
  if (items.empty()) throw UserError(fmt::format("{}: no items", file));
  return items;
}

EvalSet tokenize_eval_items(EvalTask task, const std::vector<EvalItem>& items, const Tokenizer& tokenizer) {
  EvalSet set;
  set.task = eval_task_name(task);
  set.tokenizer_fingerprint = tokenizer.fingerprint();
  set.vocab_size = tokenizer.vocab_size();
  for (const EvalItem& item : items) {
    TokenizedItem t;
    t.label = item.label;
    t.context_text = item.context;
    t.choice_texts = item.choices;
    const std::vector<int32_t> context = tokenizer.encode(item.context);
    t.context.push_back(tokenizer.eos_id());
    t.context.insert(t.context.end(), context.begin(), context.end());
    for (const std::string& choice : item.choices) {
      const std::vector<int32_t> whole = tokenizer.encode(item.context + " " + choice);
      t.continuations.emplace_back(whole.begin() + static_cast<long>(std::min(context.size(), whole.size())), whole.end());
      t.choice_bytes.push_back(static_cast<uint32_t>(choice.size()));
    }
    set.items.push_back(std::move(t));
  }
  return set;
}

void write_eval_set(const std::filesystem::path& file, const EvalSet& set) {
  std::string out = nlohmann::ordered_json{{"format", "gqe-eval"},
                                           {"version", 1},
                                           {"task", set.task},
                                           {"tokenizer_fingerprint", hex64(set.tokenizer_fingerprint)},
                                           {"vocab_size", set.vocab_size},
                                           {"items", set.items.size()}}
                        .dump() +
                    "\n";
  for (const TokenizedItem& t : set.items)
    out += nlohmann::ordered_json{{"label", t.label},
                                  {"context", t.context},
                                  {"continuations", t.continuations},
                                  {"choice_bytes", t.choice_bytes},
                                  {"text", {{"context", t.context_text}, {"choices", t.choice_texts}}}}
               .dump() +
           "\n";
  write_file_atomic(file, out);
}

EvalSet read_eval_set(const std::filesystem::path& file) {
  std::istringstream in(read_file(file));
  EvalSet set;
  std::string line;
  uint64_t n = 0, expected = 0;
  auto fail = [&](const std::string& what) { throw UserError(fmt::format("{}:{}: {}", file.string(), n, what)); };
  try {
    if (!std::getline(in, line)) fail("empty file");
    ++n;
    const json head = json::parse(line);
    if (head.value("format", "") != "gqe-eval" || head.value("version", 0) != 1)
      fail("not a gqe eval set (make one with gqe-data encode-eval)");
    set.task = head.at("task").get<std::string>();
    const auto fingerprint = parse_hex64(head.at("tokenizer_fingerprint").get<std::string>());
    if (!fingerprint) fail("bad tokenizer_fingerprint");
    set.tokenizer_fingerprint = *fingerprint;
    set.vocab_size = head.at("vocab_size").get<uint32_t>();
    expected = head.at("items").get<uint64_t>();
    while (std::getline(in, line)) {
      ++n;
      const json j = json::parse(line);
      TokenizedItem t;
      t.label = j.at("label").get<int32_t>();
      t.context = j.at("context").get<std::vector<int32_t>>();
      t.continuations = j.at("continuations").get<std::vector<std::vector<int32_t>>>();
      t.choice_bytes = j.at("choice_bytes").get<std::vector<uint32_t>>();
      if (t.continuations.size() != t.choice_bytes.size() || t.label < 0 ||
          t.label >= static_cast<int32_t>(t.continuations.size()) || t.context.empty())
        fail("inconsistent item");
      for (const auto& c : t.continuations)
        for (int32_t id : c)
          if (id < 0 || static_cast<uint32_t>(id) >= set.vocab_size) fail(fmt::format("token id {} outside the vocabulary", id));
      set.items.push_back(std::move(t));
    }
  } catch (const json::exception& e) {
    fail(fmt::format("malformed line ({})", e.what()));
  }
  if (set.items.size() != expected)
    throw UserError(fmt::format("{}: {} items, the header says {} (truncated?)", file.string(), set.items.size(), expected));
  return set;
}

}  // namespace gqe
