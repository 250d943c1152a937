#include "config/config_loader.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <set>
#include <sstream>

#include <fmt/format.h>

#include "common/error.h"
#include "common/nearest.h"
#include "model/model_info.h"

namespace fs = std::filesystem;

namespace gqe {
namespace {

std::string join(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : prefix + "." + key;
}

std::string leaf_of(const std::string& path) {
  auto dot = path.rfind('.');
  return dot == std::string::npos ? path : path.substr(dot + 1);
}

// Where `s` stops being UTF-8 (npos: it is UTF-8 throughout).
size_t utf8_error(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (n == 0 || i + n > s.size()) return i;
    uint32_t cp = n == 1 ? c : c & (0x7F >> n);
    for (size_t k = 1; k < n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc >> 6) != 0x2) return i;
      cp = (cp << 6) | (cc & 0x3F);
    }
    // Overlong forms, UTF-16 surrogates and code points past U+10FFFF are not UTF-8.
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return i;
    i += n;
  }
  return std::string::npos;
}

// --- YAML tree: reading files, inheritance, overrides ------------------------------------------

// "file:line" of a YAML node, for errors about what the file wrote.
std::string where(const std::string& file, const YAML::Mark& mark) {
  if (mark.is_null()) return file;
  return fmt::format("{}:{}", file, mark.line + 1);
}

void check_tree(const YAML::Node& node, const std::string& file, const std::string& prefix) {
  if (!node.IsMap()) return;
  std::set<std::string> keys;
  for (const auto& kv : node) {
    if (!kv.first.IsScalar())
      throw UserError(fmt::format("{}: key under '{}' is not a plain name", where(file, kv.first.Mark()),
                                  prefix.empty() ? "(top level)" : prefix));
    std::string key = kv.first.Scalar();
    if (!keys.insert(key).second)
      throw UserError(fmt::format("{}: duplicate key '{}'", where(file, kv.first.Mark()), join(prefix, key)));
    check_tree(kv.second, file, join(prefix, key));
  }
}

YAML::Node parse_file(const std::string& file) {
  if (fs::is_directory(file)) throw UserError(fmt::format("{}: is a directory, not a config file", file));
  std::ifstream in(file);
  if (!in) throw UserError(fmt::format("{}: cannot open config file ({})", file,
                                       fs::exists(file) ? "permission denied" : "no such file"));
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  // yaml-cpp would replace stray bytes with U+FFFD: a file name or run name would quietly change.
  if (const size_t bad = utf8_error(text); bad != std::string::npos)
    throw UserError(fmt::format("{}:{}: not UTF-8 text", file,
                                1 + std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(bad), '\n')));
  YAML::Node root;
  try {
    const std::vector<YAML::Node> documents = YAML::LoadAll(text);
    if (documents.size() > 1)
      throw UserError(fmt::format("{}:{}: a second YAML document ('---'): a config is one document", file,
                                  documents[1].Mark().is_null() ? 1 : documents[1].Mark().line + 1));
    if (!documents.empty()) root = documents.front();
  } catch (const YAML::Exception& e) {
    throw UserError(fmt::format("{}:{}:{}: invalid YAML: {}", file, e.mark.line + 1, e.mark.column + 1, e.msg));
  }
  if (root.IsNull()) return YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) throw UserError(fmt::format("{}: a config must be a mapping of sections (model:, train:, ...)", file));
  check_tree(root, file, "");
  return root;
}

using Origins = std::map<std::string, std::string>;

void erase_under(Origins& origins, const std::string& path) {
  origins.erase(path);
  const std::string prefix = path + ".";
  for (auto it = origins.lower_bound(prefix); it != origins.end() && it->first.rfind(prefix, 0) == 0;)
    it = origins.erase(it);
}

void record_leaves(const YAML::Node& node, const std::string& path, const std::string& origin, Origins& origins) {
  if (node.IsMap() && node.size() > 0) {
    for (const auto& kv : node) record_leaves(kv.second, join(path, kv.first.Scalar()), origin, origins);
  } else {
    origins[path] = origin;
  }
}

// Deep merge: mappings merge key by key, anything else replaces.
void merge_into(YAML::Node dst, const YAML::Node& src, const std::string& prefix, const std::string& origin,
                Origins& origins) {
  for (const auto& kv : src) {
    const std::string key = kv.first.Scalar();
    const std::string path = join(prefix, key);
    YAML::Node existing = dst[key];
    if (existing.IsMap() && kv.second.IsNull()) continue;  // "eval:" with nothing below changes nothing
    if (kv.second.IsMap() && existing.IsMap()) {
      merge_into(existing, kv.second, path, origin, origins);
    } else {
      erase_under(origins, path);
      dst[key] = YAML::Clone(kv.second);
      record_leaves(kv.second, path, origin, origins);
    }
  }
}

YAML::Node load_tree(const std::string& file, std::vector<std::string>& chain, Origins& origins) {
  const std::string canonical = fs::weakly_canonical(fs::path(file)).string();
  if (std::find(chain.begin(), chain.end(), canonical) != chain.end())
    throw UserError(fmt::format("{}: inherit: cycle through '{}'", chain.back(), file));
  chain.push_back(canonical);
  YAML::Node own = parse_file(file);
  YAML::Node tree(YAML::NodeType::Map);
  if (const YAML::Node parent = own["inherit"]) {
    if (!parent.IsScalar() || parent.Scalar().empty())
      throw UserError(fmt::format("{}: inherit: expected a file name", where(file, parent.Mark())));
    fs::path parent_path = fs::path(parent.Scalar());
    if (parent_path.is_relative()) parent_path = fs::path(file).parent_path() / parent_path;
    if (!fs::exists(parent_path))
      throw UserError(fmt::format("{}: inherit: no such file '{}'", where(file, parent.Mark()), parent_path.string()));
    tree.reset(load_tree(parent_path.lexically_normal().string(), chain, origins));
    own.remove("inherit");
  }
  merge_into(tree, own, "", file, origins);
  chain.pop_back();
  return tree;
}

void apply_override(YAML::Node tree, const std::string& assignment, Origins& origins) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw UserError(fmt::format("--set: expected key.path=value, got '{}'", assignment));
  const std::string path = assignment.substr(0, eq);
  const std::string text = assignment.substr(eq + 1);
  if (utf8_error(path) != std::string::npos) throw UserError("--set: a key that is not UTF-8 text");
  if (utf8_error(text) != std::string::npos) throw UserError(fmt::format("--set {}: the value is not UTF-8 text", path));
  YAML::Node value;
  try {
    value = YAML::Load(text);
  } catch (const YAML::Exception&) {
    value = YAML::Node(text);  // not YAML: take it as a plain string
  }
  std::vector<std::string> parts;
  for (size_t start = 0;;) {
    const auto dot = path.find('.', start);
    parts.push_back(path.substr(start, dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  for (const auto& part : parts)
    if (part.empty()) throw UserError(fmt::format("--set: empty key in '{}'", path));
  // A value on the way down cannot take sub-keys. (reset() rebinds a Node; operator= would
  // overwrite the node it refers to.)
  std::string walked;
  YAML::Node at;
  at.reset(tree);
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    walked = join(walked, parts[i]);
    const YAML::Node& parent = at;
    const YAML::Node next = parent[parts[i]];
    if (!next.IsDefined()) break;
    if (!next.IsNull() && !next.IsMap())
      throw UserError(fmt::format("--set {}: '{}' is a value, not a section", path, walked));
    at.reset(next);
  }
  YAML::Node wrapped = value;
  for (auto part = parts.rbegin(); part != parts.rend(); ++part) {
    YAML::Node level(YAML::NodeType::Map);
    level[*part] = wrapped;
    wrapped.reset(level);
  }
  merge_into(tree, wrapped, "", "--set", origins);
}

// --- typed reading -----------------------------------------------------------------------------

std::string describe(const YAML::Node& node) {
  if (node.IsMap()) return "a mapping";
  if (node.IsSequence()) return "a list";
  if (node.IsNull()) return "nothing";
  return fmt::format("'{}'", node.Scalar());
}

std::optional<double> parse_double(const std::string& s) {
  if (s.empty()) return std::nullopt;
  char* stop = nullptr;
  const double d = std::strtod(s.c_str(), &stop);
  if (stop != s.c_str() + s.size() || !std::isfinite(d)) return std::nullopt;
  return d;
}

class Reader {
 public:
  Reader(const YAML::Node& node, std::string prefix, const LoadedConfig& ctx)
      : node_(node), prefix_(std::move(prefix)), ctx_(ctx) {}

  template <class T> void operator()(const char* key, T& value) {
    known_.push_back(key);
    const YAML::Node child = node_[key];
    if (child.IsDefined()) read(join(prefix_, key), child, value);
  }

  void reject_unknown() const {
    for (const auto& kv : node_) {
      const std::string key = kv.first.Scalar();
      if (std::find(known_.begin(), known_.end(), key) != known_.end()) continue;
      const std::string path = join(prefix_, key);
      throw UserError(fmt::format("{}: unknown key '{}'{}", ctx_.origin(path), path, suggestion(key)));
    }
  }

 private:
  [[noreturn]] void fail(const std::string& path, const std::string& msg) const {
    throw UserError(fmt::format("{}: {}: {}", ctx_.origin(path), path, msg));
  }

  std::string scalar(const std::string& path, const YAML::Node& n, const char* expected) const {
    if (!n.IsScalar()) fail(path, fmt::format("expected {}, got {}", expected, describe(n)));
    return n.Scalar();
  }

  void read(const std::string& path, const YAML::Node& n, int64_t& v) const {
    auto parsed = parse_integer(scalar(path, n, "an integer"));
    if (!parsed) fail(path, fmt::format("expected an integer, got '{}'", n.Scalar()));
    v = *parsed;
  }
  void read(const std::string& path, const YAML::Node& n, double& v) const {
    auto parsed = parse_double(scalar(path, n, "a number"));
    if (!parsed) fail(path, fmt::format("expected a number, got '{}'", n.Scalar()));
    v = *parsed;
  }
  void read(const std::string& path, const YAML::Node& n, bool& v) const {
    const std::string s = scalar(path, n, "true or false");
    if (s == "true" || s == "True") v = true;
    else if (s == "false" || s == "False") v = false;
    else fail(path, fmt::format("expected true or false, got '{}'", s));
  }
  void read(const std::string& path, const YAML::Node& n, std::string& v) const {
    v = n.IsNull() ? std::string() : text(path, n);
  }
  void read(const std::string& path, const YAML::Node& n, std::map<std::string, std::string>& v) const {
    v.clear();
    if (n.IsNull()) return;
    if (!n.IsMap()) fail(path, fmt::format("expected a mapping of name: value, got {}", describe(n)));
    for (const auto& kv : n) v[text(path, kv.first)] = text(join(path, kv.first.Scalar()), kv.second);
  }
  // A string value (the file was checked to be UTF-8): it can name files and appear in logs and JSON.
  std::string text(const std::string& path, const YAML::Node& n) const {
    const std::string s = scalar(path, n, "a string");
    if (s.find('\0') != std::string::npos) fail(path, "holds a NUL character");
    return s;
  }
  template <class E>
    requires std::is_enum_v<E>
  void read(const std::string& path, const YAML::Node& n, E& v) const {
    const std::string s = scalar(path, n, "a name");
    std::string allowed;
    for (const auto& [value, name] : EnumNames<E>::values) {
      if (s == name) {
        v = value;
        return;
      }
      allowed += allowed.empty() ? name : fmt::format(", {}", name);
    }
    fail(path, fmt::format("'{}' is not one of: {}", s, allowed));
  }
  template <class S>
    requires requires(S& s, Reader& r) { s.fields(r); }
  void read(const std::string& path, const YAML::Node& n, S& section) const {
    if (n.IsNull()) return;  // an empty section keeps its defaults
    if (!n.IsMap()) fail(path, fmt::format("expected a section (a mapping), got {}", describe(n)));
    Reader sub(n, path, ctx_);
    section.fields(sub);
    sub.reject_unknown();
  }

  std::string suggestion(const std::string& key) const {
    const std::optional<std::string> best = nearest_name(key, known_);
    if (!best) {  // the right name in the wrong section?
      for (const auto& path : config_keys())
        if (leaf_of(path) == key) return fmt::format(" (did you mean '{}'?)", path);
      std::string list;
      for (const auto& k : known_) list += list.empty() ? k : ", " + k;
      return fmt::format("; valid keys{}: {}", prefix_.empty() ? "" : " in " + prefix_, list);
    }
    return fmt::format(" (did you mean '{}'?)", join(prefix_, *best));
  }

  const YAML::Node node_;
  const std::string prefix_;
  const LoadedConfig& ctx_;
  std::vector<std::string> known_;
};

// --- writing -----------------------------------------------------------------------------------

class Writer {
 public:
  explicit Writer(YAML::Emitter& out) : out_(out) {}
  template <class T> void operator()(const char* key, T& value) {
    out_ << YAML::Key << key << YAML::Value;
    write(value);
  }

 private:
  void write(int64_t v) { out_ << v; }
  void write(double v) { out_ << fmt::format("{}", v); }  // shortest text that reads back exactly
  void write(bool v) { out_ << (v ? "true" : "false"); }
  void write(const std::string& v) { out_ << YAML::DoubleQuoted << v; }
  void write(const std::map<std::string, std::string>& m) {
    out_ << YAML::BeginMap;
    for (const auto& [k, v] : m) out_ << YAML::Key << k << YAML::Value << YAML::DoubleQuoted << v;
    out_ << YAML::EndMap;
  }
  template <class E>
    requires std::is_enum_v<E>
  void write(E v) { out_ << enum_name(v); }
  template <class S>
    requires requires(S& s, Writer& w) { s.fields(w); }
  void write(S& section) {
    out_ << YAML::BeginMap;
    section.fields(*this);
    out_ << YAML::EndMap;
  }
  YAML::Emitter& out_;
};

class KeyCollector {
 public:
  explicit KeyCollector(std::vector<std::string>& keys, std::string prefix = "")
      : keys_(keys), prefix_(std::move(prefix)) {}
  template <class T> void operator()(const char* key, T& value) {
    const std::string path = join(prefix_, key);
    keys_.push_back(path);
    if constexpr (requires(KeyCollector& c) { value.fields(c); }) {
      KeyCollector sub(keys_, path);
      value.fields(sub);
    }
  }

 private:
  std::vector<std::string>& keys_;
  std::string prefix_;
};

// --- validation --------------------------------------------------------------------------------

class Checker {
 public:
  explicit Checker(const LoadedConfig& ctx) : ctx_(ctx) {}
  void require(bool ok, const std::string& key, const std::string& msg) const {
    if (!ok) throw UserError(fmt::format("{}: {}: {}", ctx_.origin(key), key, msg));
  }
  void positive(int64_t v, const std::string& key) const {
    require(v > 0, key, fmt::format("must be > 0, got {}", v));
  }
  void positive(double v, const std::string& key) const {
    require(v > 0, key, fmt::format("must be > 0, got {}", v));
  }
  void non_negative(int64_t v, const std::string& key) const {
    require(v >= 0, key, fmt::format("must be >= 0, got {}", v));
  }
  void non_negative(double v, const std::string& key) const {
    require(v >= 0, key, fmt::format("must be >= 0, got {}", v));
  }
  void fraction(double v, const std::string& key, bool one_allowed) const {
    require(v >= 0 && (one_allowed ? v <= 1 : v < 1), key,
            fmt::format("must be in [0, 1{}, got {}", one_allowed ? "]" : ")", v));
  }

 private:
  const LoadedConfig& ctx_;
};

}  // namespace

std::optional<int64_t> parse_integer(std::string s) {
  std::erase(s, '_');
  if (s.empty()) return std::nullopt;
  double scale = 1;
  switch (s.back()) {  // decimal size suffixes: 30B tokens, 512K, ...
    case 'K': case 'k': scale = 1e3; break;
    case 'M': scale = 1e6; break;
    case 'B': case 'G': scale = 1e9; break;
    case 'T': scale = 1e12; break;
    default: break;
  }
  if (scale != 1) s.pop_back();
  int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec == std::errc() && end == s.data() + s.size() && scale == 1) return v;
  // 3e9, 1.5M: accepted when the value is a whole number
  char* stop = nullptr;
  const double d = std::strtod(s.c_str(), &stop) * scale;
  if (stop != s.c_str() + s.size() || !std::isfinite(d) || d != std::floor(d) ||
      std::fabs(d) > 9.0e18)
    return std::nullopt;
  return static_cast<int64_t>(d);
}

const std::string& LoadedConfig::origin(const std::string& key) const {
  if (auto it = origins.find(key); it != origins.end()) return it->second;
  // A section: the last file that set anything inside it.
  const std::string prefix = key + ".";
  const std::string* found = nullptr;
  for (auto it = origins.lower_bound(prefix); it != origins.end() && it->first.rfind(prefix, 0) == 0; ++it)
    found = &it->second;
  return found ? *found : file;
}

namespace {

// Every node's value as flow YAML, by dotted path (sections included).
void flatten(const YAML::Node& node, const std::string& path, std::map<std::string, std::string>& out) {
  YAML::Emitter e;
  e << YAML::Flow << node;
  out[path] = e.c_str();
  if (node.IsMap())
    for (const auto& kv : node) flatten(kv.second, join(path, kv.first.Scalar()), out);
}

}  // namespace

std::vector<std::string> config_differences(const Config& before, const Config& after) {
  return config_differences(to_yaml(before), to_yaml(after));
}

std::vector<std::string> config_differences(const std::string& before_yaml, const std::string& after_yaml) {
  std::map<std::string, std::string> a, b;
  flatten(YAML::Load(before_yaml), "", a);
  flatten(YAML::Load(after_yaml), "", b);
  const std::vector<std::string> keys = config_keys();
  std::vector<std::string> out;
  for (const auto& key : keys) {
    const bool section = std::any_of(keys.begin(), keys.end(), [&](const std::string& k) { return k.rfind(key + ".", 0) == 0; });
    if (!section && a[key] != b[key]) out.push_back(fmt::format("{}: {} -> {}", key, a[key], b[key]));
  }
  return out;
}

std::vector<std::string> config_keys() {
  std::vector<std::string> keys;
  Config config;
  KeyCollector collector(keys);
  config.fields(collector);
  return keys;
}

void validate(const LoadedConfig& loaded) {
  const Config& c = loaded.config;
  const Checker check(loaded);
  const ModelConfig& m = c.model;
  check.positive(m.vocab_size, "model.vocab_size");
  check.positive(m.d_model, "model.d_model");
  check.positive(m.n_layers, "model.n_layers");
  check.positive(m.n_heads, "model.n_heads");
  check.positive(m.n_kv_heads, "model.n_kv_heads");
  check.require(m.n_heads % m.n_kv_heads == 0, "model.n_heads",
                fmt::format("{} query heads cannot be split into {} KV groups (model.n_heads must be divisible "
                            "by model.n_kv_heads)", m.n_heads, m.n_kv_heads));
  check.positive(m.head_dim, "model.head_dim");
  check.require(m.head_dim % 2 == 0, "model.head_dim", fmt::format("must be even for RoPE, got {}", m.head_dim));
  check.positive(m.ffn_hidden, "model.ffn_hidden");
  check.positive(m.norm_eps, "model.norm_eps");
  check.positive(m.rope_theta, "model.rope_theta");
  check.positive(m.init_std, "model.init_std");
  if (m.attention.type == AttentionType::gqe) {
    const int64_t experts = m.experts_per_group();
    check.require(m.attention.top_k >= 1 && m.attention.top_k <= experts, "model.attention.top_k",
                  fmt::format("must be between 1 and the {} experts per group (n_heads / n_kv_heads = {} / {}), "
                              "got {}", experts, m.n_heads, m.n_kv_heads, m.attention.top_k));
    check.non_negative(m.attention.aux_coef, "model.attention.aux_coef");
  }

  const DataConfig& d = c.data;
  check.positive(d.seq_len, "data.seq_len");
  check.non_negative(d.seed, "data.seed");

  const TrainConfig& t = c.train;
  check.positive(t.tokens, "train.tokens");
  check.positive(t.global_batch_tokens, "train.global_batch_tokens");
  check.require(t.global_batch_tokens % d.seq_len == 0, "train.global_batch_tokens",
                fmt::format("{} is not a whole number of sequences of data.seq_len = {}", t.global_batch_tokens,
                            d.seq_len));
  check.positive(t.micro_batch_size, "train.micro_batch_size");
  const int64_t batch_seqs = t.global_batch_tokens / d.seq_len;
  check.require(batch_seqs % t.micro_batch_size == 0, "train.micro_batch_size",
                fmt::format("{} does not divide the {} sequences of a global batch (train.global_batch_tokens / "
                            "data.seq_len)", t.micro_batch_size, batch_seqs));
  check.require(t.tokens >= t.global_batch_tokens, "train.tokens",
                fmt::format("the budget of {} tokens is smaller than one global batch (train.global_batch_tokens "
                            "= {})", t.tokens, t.global_batch_tokens));
  check.non_negative(t.seed, "train.seed");
  check.non_negative(t.threads, "train.threads");
  check.require(t.threads <= 4096, "train.threads", fmt::format("must be at most 4096, got {}", t.threads));
  check.positive(t.max_skipped_steps, "train.max_skipped_steps");

  const OptimizerConfig& o = t.optimizer;
  check.positive(o.lr, "train.optimizer.lr");
  check.fraction(o.beta1, "train.optimizer.beta1", false);
  check.fraction(o.beta2, "train.optimizer.beta2", false);
  check.positive(o.eps, "train.optimizer.eps");
  check.non_negative(o.weight_decay, "train.optimizer.weight_decay");

  const ScheduleConfig& s = t.schedule;
  check.non_negative(s.warmup_tokens, "train.schedule.warmup_tokens");
  check.require(s.warmup_tokens <= t.tokens, "train.schedule.warmup_tokens",
                fmt::format("warmup of {} tokens is longer than the budget train.tokens = {}", s.warmup_tokens,
                            t.tokens));
  check.non_negative(s.min_lr, "train.schedule.min_lr");
  check.require(s.min_lr <= o.lr, "train.schedule.min_lr",
                fmt::format("{} is above the peak train.optimizer.lr = {}", s.min_lr, o.lr));
  if (s.kind == ScheduleKind::wsd) {
    check.fraction(s.decay_fraction, "train.schedule.decay_fraction", true);
    const double decay_tokens = s.decay_fraction * static_cast<double>(t.tokens);
    check.require(static_cast<double>(s.warmup_tokens) + decay_tokens <= static_cast<double>(t.tokens),
                  "train.schedule.decay_fraction",
                  fmt::format("warmup ({} tokens) and decay ({} of {} tokens) overlap", s.warmup_tokens,
                              s.decay_fraction, t.tokens));
  }

  const ClipConfig& k = t.clip;
  check.positive(k.max_norm, "train.clip.max_norm");
  check.require(k.alpha > 0 && k.alpha < 1, "train.clip.alpha", fmt::format("must be in (0, 1), got {}", k.alpha));
  check.positive(k.z_threshold, "train.clip.z_threshold");
  check.non_negative(k.warmup_steps, "train.clip.warmup_steps");

  check.non_negative(t.checkpoint.every_tokens, "train.checkpoint.every_tokens");
  check.positive(t.checkpoint.keep, "train.checkpoint.keep");

  check.non_negative(c.eval.every_tokens, "eval.every_tokens");
  check.non_negative(c.eval.val_tokens, "eval.val_tokens");
  check.positive(c.eval.batch_size, "eval.batch_size");

  check.positive(c.dist.timeout_s, "dist.timeout_s");
  // c10d adds the timeout to a clock in nanoseconds: past ~292 years that overflows, and a job
  // that waits a day for one of its ranks is hung anyway.
  check.require(c.dist.timeout_s <= kMaxTimeoutSeconds, "dist.timeout_s",
                fmt::format("must be at most {} (a day), got {}", kMaxTimeoutSeconds, c.dist.timeout_s));
  check.positive(c.dist.bucket_mb, "dist.bucket_mb");
  check.require(c.dist.bucket_mb <= (1 << 20), "dist.bucket_mb", fmt::format("must be at most 1048576 (1 TiB), got {}", c.dist.bucket_mb));
  check.non_negative(c.dist.check_replicas_every_steps, "dist.check_replicas_every_steps");

  check.positive(c.log.every_steps, "log.every_steps");
  check.require(c.log.name.find('/') == std::string::npos, "log.name",
                fmt::format("'{}' must be a plain name without '/' (use log.dir for the parent folder)", c.log.name));
  check.require(!c.log.name.empty() && c.log.name != "." && c.log.name != "..", "log.name",
                fmt::format("'{}' is not a name for a run directory inside log.dir", c.log.name));

  // Last, when every size is positive: the counts of the model must fit 64 bits.
  check.require(m.vocab_size <= std::numeric_limits<int32_t>::max(), "model.vocab_size",
                fmt::format("must be at most {} (token ids are 32-bit), got {}", std::numeric_limits<int32_t>::max(),
                            m.vocab_size));
  try {
    describe_model(c);
  } catch (const SizeOverflow& e) {
    check.require(false, e.key, e.what());
  }
  check.require(c.eval.val_tokens == 0 || c.eval.val_tokens >= c.data.seq_len, "eval.val_tokens",
                fmt::format("{} is less than one window of data.seq_len = {} (0: no validation loss)", c.eval.val_tokens,
                            c.data.seq_len));
}

LoadedConfig load_config(const std::string& path, const std::vector<std::string>& overrides) {
  LoadedConfig loaded;
  loaded.file = path;
  std::vector<std::string> chain;
  YAML::Node tree = load_tree(path, chain, loaded.origins);
  for (const auto& assignment : overrides) apply_override(tree, assignment, loaded.origins);

  Reader reader(tree, "", loaded);
  loaded.config.fields(reader);
  reader.reject_unknown();
  if (loaded.config.log.name.empty()) loaded.config.log.name = fs::path(path).stem().string();
  validate(loaded);
  return loaded;
}

std::string to_yaml(const Config& config) {
  YAML::Emitter out;
  Writer writer(out);
  Config copy = config;  // fields() takes a mutable struct; writing only reads it
  out << YAML::BeginMap;
  copy.fields(writer);
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace gqe
