// The name a user probably meant (a mistyped config key, command or option): "did you mean".
#pragma once

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

namespace gqe {

// Levenshtein distance: insertions, deletions and substitutions.
inline size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// The candidate fewest edits from `typed`, if it is within about a third of its length (at least 2).
inline std::optional<std::string> nearest_name(const std::string& typed, const std::vector<std::string>& candidates) {
  std::optional<std::string> best;
  size_t best_d = std::max<size_t>(2, typed.size() / 3) + 1;
  for (const std::string& c : candidates)
    if (const size_t d = edit_distance(typed, c); d < best_d) best_d = d, best = c;
  return best;
}

}  // namespace gqe
