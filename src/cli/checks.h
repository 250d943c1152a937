// Option checks for CLI11 with one-line messages (CLI11 puts the option's name in front and the
// command exits with status 2). CLI11's own Range lets NaN through and wraps -1 into an unsigned
// option; these do not.
#pragma once

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>

namespace gqe {

// A whole number >= min (and <= max).
inline CLI::Validator whole_at_least(int64_t min, int64_t max = std::numeric_limits<int64_t>::max()) {
  return CLI::Validator(
      [min, max](std::string& text) -> std::string {
        int64_t v = 0;
        const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
        if (ec != std::errc() || end != text.data() + text.size()) return fmt::format("expected a whole number, got '{}'", text);
        if (v < min) return fmt::format("must be at least {}, got {}", min, text);
        if (v > max) return fmt::format("must be at most {}, got {}", max, text);
        return "";
      },
      fmt::format("INT >= {}", min));
}

// A finite number in [min, max], or (min, max] with min_open, or [min, max) with max_open.
inline CLI::Validator number_in(double min, double max, bool min_open = false, bool max_open = false) {
  const std::string range = fmt::format("{}{}, {}{}", min_open ? "(" : "[", min, max, max_open ? ")" : "]");
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        char* stop = nullptr;
        const double v = std::strtod(text.c_str(), &stop);
        if (text.empty() || stop != text.c_str() + text.size() || !std::isfinite(v))
          return fmt::format("expected a number, got '{}'", text);
        if (v < min || (min_open && v == min) || v > max || (max_open && v == max))
          return fmt::format("must be in {}, got {}", range, text);
        return "";
      },
      "NUMBER in " + range);
}

}  // namespace gqe
