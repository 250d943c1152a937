#include "data/dataset.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/checksum.h"
#include "common/error.h"
#include "common/files.h"

namespace gqe {

using nlohmann::json;

const char* split_name(Split split) { return split == Split::train ? "train" : "val"; }

namespace {

// Reads manifest fields, naming the file and the field's path in every error.
class ManifestReader {
 public:
  explicit ManifestReader(std::string file) : file_(std::move(file)) {}

  template <class T> T get(const json& obj, const std::string& key, const std::string& path) const {
    const std::string where = path.empty() ? key : path + "." + key;
    if (!obj.is_object() || !obj.contains(key)) fail(where, "missing");
    const json& v = obj.at(key);
    if constexpr (std::is_same_v<T, std::string>) {
      if (!v.is_string()) fail(where, "expected a string");
    } else if constexpr (std::is_floating_point_v<T>) {
      if (!v.is_number()) fail(where, "expected a number");
    } else if constexpr (std::is_unsigned_v<T>) {
      if (!v.is_number_unsigned()) fail(where, "expected a non-negative integer");
    } else {
      if (!v.is_number_integer()) fail(where, "expected an integer");
    }
    return v.get<T>();
  }

  uint64_t hex(const json& obj, const std::string& key, const std::string& path) const {
    const auto value = parse_hex64(get<std::string>(obj, key, path));
    if (!value) fail(path + "." + key, "expected 16 hex digits");
    return *value;
  }

  SplitEntry split(const json& root, const std::string& name) const {
    SplitEntry s;
    if (!root.contains(name) || !root.at(name).is_object()) fail(name, "missing");
    const json& j = root.at(name);
    s.tokens = get<uint64_t>(j, "tokens", name);
    s.documents = get<uint64_t>(j, "documents", name);
    if (!j.contains("shards") || !j.at("shards").is_array()) fail(name + ".shards", "expected a list");
    size_t i = 0;
    for (const json& e : j.at("shards")) {
      const std::string path = fmt::format("{}.shards[{}]", name, i++);
      s.shards.push_back({get<std::string>(e, "file", path), get<uint64_t>(e, "tokens", path),
                          get<uint64_t>(e, "documents", path), hex(e, "checksum", path)});
    }
    return s;
  }

  [[noreturn]] void fail(const std::string& field, const std::string& what) const {
    throw UserError(fmt::format("{}: {}: {}", file_, field, what));
  }

 private:
  std::string file_;
};

nlohmann::ordered_json split_json(const SplitEntry& s) {
  auto shards = nlohmann::ordered_json::array();
  for (const auto& e : s.shards)
    shards.push_back({{"file", e.file}, {"tokens", e.tokens}, {"documents", e.documents}, {"checksum", hex64(e.checksum)}});
  return {{"tokens", s.tokens}, {"documents", s.documents}, {"shards", shards}};
}

}  // namespace

std::string manifest_json(const Manifest& m) {
  const TokenizerEntry& t = m.tokenizer;
  const nlohmann::ordered_json j = {
      {"format", "gqe-dataset"},
      {"version", kManifestVersion},
      {"tokenizer",
       {{"file", t.file}, {"fingerprint", hex64(t.fingerprint)}, {"vocab_size", t.vocab_size}, {"unk_id", t.unk_id},
        {"bos_id", t.bos_id}, {"eos_id", t.eos_id}, {"pad_id", t.pad_id}}},
      {"bytes_per_token", m.bytes_per_token},
      {"split", {{"seed", m.split_seed}, {"val_fraction", m.val_fraction}}},
      {"train", split_json(m.train)},
      {"val", split_json(m.val)},
      {"sources", m.sources},
      {"command", m.command},
  };
  return j.dump(2) + "\n";
}

std::filesystem::path tokenizer_path(const std::filesystem::path& dataset_dir, const Manifest& manifest) {
  return dataset_dir / manifest.tokenizer.file;
}

std::filesystem::path verified_tokenizer(const std::filesystem::path& dataset_dir, const Manifest& manifest) {
  const std::filesystem::path file = tokenizer_path(dataset_dir, manifest);
  if (!std::filesystem::is_regular_file(file))
    throw UserError(fmt::format("{}: the dataset's tokenizer is missing (or not a file)", file.string()));
  const uint64_t found = file_checksum(file);
  if (found != manifest.tokenizer.fingerprint)
    throw UserError(fmt::format("{}: not the tokenizer the dataset was made with (fingerprint {}, the manifest records {})",
                                file.string(), hex64(found), hex64(manifest.tokenizer.fingerprint)));
  return file;
}

Manifest read_manifest(const std::filesystem::path& dir) {
  const std::string file = (dir / "manifest.json").string();
  if (!std::filesystem::is_directory(dir)) throw UserError(fmt::format("{}: dataset directory not found", dir.string()));
  if (!std::filesystem::exists(file))
    throw UserError(fmt::format("{}: no manifest.json (not a dataset made by gqe-data encode?)", dir.string()));
  if (!std::filesystem::is_regular_file(file)) throw UserError(fmt::format("{}: not a file", file));
  json root;
  try {
    root = json::parse(read_file(file));
  } catch (const json::parse_error& e) {
    throw UserError(fmt::format("{}: invalid JSON at byte {}", file, e.byte));
  }
  const ManifestReader r(file);
  if (!root.is_object() || root.value("format", "") != "gqe-dataset")
    r.fail("format", "not a gqe dataset manifest");
  const int version = r.get<int>(root, "version", "");
  if (version != kManifestVersion)
    r.fail("version", fmt::format("{} is not supported (this gqe reads version {})", version, kManifestVersion));
  Manifest m;
  if (!root.contains("tokenizer")) r.fail("tokenizer", "missing");
  const json& t = root.at("tokenizer");
  m.tokenizer.file = r.get<std::string>(t, "file", "tokenizer");
  m.tokenizer.fingerprint = r.hex(t, "fingerprint", "tokenizer");
  m.tokenizer.vocab_size = r.get<uint32_t>(t, "vocab_size", "tokenizer");
  m.tokenizer.unk_id = r.get<int32_t>(t, "unk_id", "tokenizer");
  m.tokenizer.bos_id = r.get<int32_t>(t, "bos_id", "tokenizer");
  m.tokenizer.eos_id = r.get<int32_t>(t, "eos_id", "tokenizer");
  m.tokenizer.pad_id = r.get<int32_t>(t, "pad_id", "tokenizer");
  m.bytes_per_token = r.get<uint32_t>(root, "bytes_per_token", "");
  if (!root.contains("split")) r.fail("split", "missing");
  m.split_seed = r.get<uint64_t>(root.at("split"), "seed", "split");
  m.val_fraction = r.get<double>(root.at("split"), "val_fraction", "split");
  m.train = r.split(root, "train");
  m.val = r.split(root, "val");
  if (root.contains("sources") && root.at("sources").is_array())
    for (const json& s : root.at("sources"))
      if (s.is_string()) m.sources.push_back(s.get<std::string>());
  if (root.contains("command") && root.at("command").is_string()) m.command = root.at("command").get<std::string>();
  return m;
}

TokenStream::TokenStream(const std::filesystem::path& dir, const Manifest& m, Split split) {
  const SplitEntry& entry = split == Split::train ? m.train : m.val;
  // A shard of this split that the manifest does not list: another dataset's, or one half
  // overwritten; the data would not be what the manifest says.
  const std::string prefix = split == Split::train ? "train_" : "val_";
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) != 0 || !name.ends_with(".bin")) continue;
    if (std::none_of(entry.shards.begin(), entry.shards.end(), [&](const ShardEntry& s) { return s.file == name; }))
      throw UserError(fmt::format("{}: a shard the manifest does not list (a dataset holds the shards its manifest names, "
                                  "and only those)", (dir / name).string()));
  }
  for (const ShardEntry& e : entry.shards) {
    auto shard = std::make_unique<MappedShard>((dir / e.file).string());
    const ShardHeader& h = shard->header();
    auto mismatch = [&](const char* what, const std::string& in_shard, const std::string& in_manifest) {
      throw UserError(fmt::format("{}: {} {} does not match the manifest's {}", shard->path(), what, in_shard,
                                  in_manifest));
    };
    if (h.tokenizer_fingerprint != m.tokenizer.fingerprint)
      mismatch("made with another tokenizer: fingerprint", hex64(h.tokenizer_fingerprint), hex64(m.tokenizer.fingerprint));
    if (h.vocab_size != m.tokenizer.vocab_size)
      mismatch("vocab size", std::to_string(h.vocab_size), std::to_string(m.tokenizer.vocab_size));
    if (static_cast<int64_t>(h.eos_id) != m.tokenizer.eos_id)
      mismatch("EOS id", std::to_string(h.eos_id), std::to_string(m.tokenizer.eos_id));
    if (h.bytes_per_token != m.bytes_per_token)
      mismatch("bytes per token", std::to_string(h.bytes_per_token), std::to_string(m.bytes_per_token));
    if (h.token_count != e.tokens) mismatch("token count", std::to_string(h.token_count), std::to_string(e.tokens));
    if (h.payload_checksum != e.checksum) mismatch("checksum", hex64(h.payload_checksum), hex64(e.checksum));
    starts_.push_back(total_);
    total_ += h.token_count;
    shards_.push_back(std::move(shard));
  }
}

void TokenStream::copy(uint64_t start, uint64_t count, int64_t* out) const {
  // The shard holding `start`: the last one that starts at or before it.
  size_t s = static_cast<size_t>(std::upper_bound(starts_.begin(), starts_.end(), start) - starts_.begin()) - 1;
  while (count > 0) {
    const uint64_t offset = start - starts_[s];
    const uint64_t n = std::min(count, shards_[s]->size() - offset);
    shards_[s]->copy(offset, n, out);
    out += n, start += n, count -= n, ++s;
  }
}

void TokenStream::verify(int threads, size_t part, size_t parts) const {
  std::atomic<size_t> next{part};
  std::exception_ptr first_error;
  size_t first_index = shards_.size();
  std::mutex mutex;
  auto work = [&] {
    for (size_t i; (i = next.fetch_add(parts)) < shards_.size();) {
      try {
        shards_[i]->verify();
      } catch (...) {
        std::lock_guard lock(mutex);
        if (i < first_index) first_index = i, first_error = std::current_exception();  // report the first shard
      }
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < std::max(1, threads); ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  if (first_error) std::rethrow_exception(first_error);
}

}  // namespace gqe
