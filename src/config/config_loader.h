// Loading a run configuration: YAML file -> `inherit:` chain -> `--set a.b=c` overrides -> typed
// Config -> validation. Every error is a UserError of one line naming the file (or "--set") and
// the key at fault, e.g.
//   configs/x.yaml: unknown key 'model.n_head' (did you mean 'model.n_heads'?)
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"

namespace gqe {

struct LoadedConfig {
  Config config;
  std::string file;                            // the file named on the command line
  std::map<std::string, std::string> origins;  // dotted key -> file (or "--set") that set it

  // Where the value of `key` (a dotted path) came from, for error messages: the file or "--set"
  // that set it, else the file named on the command line.
  const std::string& origin(const std::string& key) const;
};

// Reads, merges, overrides and validates. Throws UserError on any bad input.
LoadedConfig load_config(const std::string& path, const std::vector<std::string>& overrides = {});

// Checks ranges and consistency (n_heads divisible by n_kv_heads, top_k <= M, budget >= one batch,
// ...). load_config calls it; exposed for configs built in code.
void validate(const LoadedConfig& loaded);

// The fully resolved config as YAML, every key written; load_config of this text gives it back.
std::string to_yaml(const Config& config);

// An integer as configs and command lines write it: 30000000000, 30_000_000_000, 3e10, or with a
// decimal suffix K, M, B (or G), T: 30B, 1.5M. Nothing if it is not a whole number.
std::optional<int64_t> parse_integer(std::string text);

// Keys whose values differ, as "key: old -> new", in schema order.
std::vector<std::string> config_differences(const Config& before, const Config& after);
// The same, of two to_yaml texts (another process's config, as it sent it).
std::vector<std::string> config_differences(const std::string& before_yaml, const std::string& after_yaml);

// Every dotted key the schema knows (leaves and sections), in declaration order.
std::vector<std::string> config_keys();

}  // namespace gqe
