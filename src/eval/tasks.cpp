#include "eval/tasks.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <regex>
#include <sstream>

#include "common/checksum.h"
#include "common/error.h"
#include "common/utf8.h"
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

namespace {

// Python's str.isspace() for one code point (what strip() and rstrip() remove).
bool python_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

// The code points of a UTF-8 string, each with its byte offset.
std::vector<std::pair<size_t, char32_t>> decode_utf8(const std::string& s) {
  std::vector<std::pair<size_t, char32_t>> out;
  for (size_t at = 0; at < s.size();) {
    const auto lead = static_cast<unsigned char>(s[at]);
    const size_t n = std::min(utf8_length(lead), s.size() - at);
    char32_t c = n == 1 ? lead : lead & (0x7f >> n);
    for (size_t k = 1; k < n; ++k) c = c << 6 | (static_cast<unsigned char>(s[at + k]) & 0x3f);
    out.emplace_back(at, c);
    at += n;
  }
  return out;
}

}  // namespace

size_t python_rstrip_length(const std::string& text) {
  const auto chars = decode_utf8(text);
  size_t end = chars.size();
  while (end > 0 && python_space(chars[end - 1].second)) --end;
  return end == chars.size() ? text.size() : chars[end].first;
}

std::string python_strip(const std::string& text) {
  const auto chars = decode_utf8(text);
  size_t begin = 0;
  while (begin < chars.size() && python_space(chars[begin].second)) ++begin;
  if (begin == chars.size()) return "";
  return text.substr(chars[begin].first, python_rstrip_length(text) - chars[begin].first);
}

std::string hellaswag_clean(std::string text) {
  // lm-evaluation-harness's hellaswag preprocess: strip(); " [title]" -> ". "; re.sub("\[.*?\]", "")
  // (Python's "." is anything but "\n"); "  " -> " " once over the string.
  text = python_strip(text);
  for (size_t at; (at = text.find(" [title]")) != std::string::npos;) text.replace(at, 8, ". ");
  std::string kept;
  for (size_t i = 0; i < text.size(); ++i) {
    const size_t close = text[i] == '[' ? text.find_first_of("]\n", i + 1) : std::string::npos;
    if (close != std::string::npos && text[close] == ']') {
      i = close;  // the shortest bracketed span, dropped
      continue;
    }
    kept += text[i];
  }
  std::string out;
  for (size_t i = 0; i < kept.size(); ++i) {
    out += kept[i];
    if (kept[i] == ' ' && i + 1 < kept.size() && kept[i + 1] == ' ') ++i;  // non-overlapping, like str.replace
  }
  return out;
}

namespace {

// Python's len() of a UTF-8 string: its code points (the bytes that do not continue a character).
uint32_t code_points(const std::string& s) {
  uint32_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xc0) != 0x80;
  return n;
}

struct CaseMapping {
  char32_t from;
  char32_t to[3];
  int n;
};
struct CodePointRange {
  char32_t lo, hi;
};
#include "unicode_case.inc"  // generated at build time from Python's Unicode database

template <size_t N> const CaseMapping* find_mapping(const CaseMapping (&table)[N], char32_t c) {
  const auto it = std::lower_bound(std::begin(table), std::end(table), c, [](const CaseMapping& m, char32_t v) { return m.from < v; });
  return it != std::end(table) && it->from == c ? it : nullptr;
}
template <size_t N> bool in_ranges(const CodePointRange (&table)[N], char32_t c) {
  const auto it = std::upper_bound(std::begin(table), std::end(table), c, [](char32_t v, const CodePointRange& r) { return v < r.lo; });
  return it != std::begin(table) && c <= std::prev(it)->hi;
}

}  // namespace

std::string python_capitalize(const std::string& text) {
  // CPython's do_capitalize: the first character's full title-case mapping, the others' full
  // lower-case mappings, and a capital sigma lowered to a final sigma where it ends a word
  // (a cased letter before it and none after it, case-ignorable characters skipped).
  const auto chars = decode_utf8(text);
  std::string out;
  for (size_t i = 0; i < chars.size(); ++i) {
    const char32_t c = chars[i].second;
    if (i > 0 && c == 0x3a3) {
      size_t j = i;
      while (j > 0 && in_ranges(kCaseIgnorable, chars[j - 1].second)) --j;
      bool final_sigma = j > 0 && in_ranges(kCased, chars[j - 1].second);
      if (final_sigma) {
        size_t k = i + 1;
        while (k < chars.size() && in_ranges(kCaseIgnorable, chars[k].second)) ++k;
        final_sigma = k == chars.size() || !in_ranges(kCased, chars[k].second);
      }
      append_utf8(out, final_sigma ? 0x3c2 : 0x3c3);
      continue;
    }
    const CaseMapping* m = i == 0 ? find_mapping(kTitleCase, c) : find_mapping(kLowerCase, c);
    if (!m) append_utf8(out, c);
    else for (int k = 0; k < m->n; ++k) append_utf8(out, m->to[k]);
  }
  return out;
}

namespace {

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
  const std::string ctx = r.has("ctx_a") ? r.text("ctx_a") + " " + python_capitalize(r.text("ctx_b")) : r.text("ctx");
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
    // As the harness's _encode_pair: whitespace at the end of the context moves to the front of
    // the continuation (" " + choice), and the continuation is what encoding both adds.
    const std::string head = item.context.substr(0, python_rstrip_length(item.context)), tail = item.context.substr(head.size());
    const std::vector<int32_t> context = tokenizer.encode(head);
    t.context.push_back(tokenizer.eos_id());
    t.context.insert(t.context.end(), context.begin(), context.end());
    for (const std::string& choice : item.choices) {
      const std::vector<int32_t> whole = tokenizer.encode(head + tail + " " + choice);
      t.continuations.emplace_back(whole.begin() + static_cast<long>(std::min(context.size(), whole.size())), whole.end());
      t.choice_bytes.push_back(static_cast<uint32_t>(choice.size()));
      t.choice_chars.push_back(code_points(choice));
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
      t.context_text = j.at("text").at("context").get<std::string>();
      t.choice_texts = j.at("text").at("choices").get<std::vector<std::string>>();
      if (t.choice_texts.size() != t.choice_bytes.size()) fail("inconsistent item");
      for (const std::string& choice : t.choice_texts) t.choice_chars.push_back(code_points(choice));
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
