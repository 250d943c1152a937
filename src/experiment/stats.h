// Small statistics for comparing runs (docs/experiments.md): exponential smoothing of a loss
// curve, linear interpolation in tokens, mean and standard deviation, Welch's t-test. No torch.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace gqe {

struct Point {
  double tokens = 0, value = 0;
};

// Bias-corrected exponential moving average (as TensorBoard's smoothing): weight `alpha` on the past.
std::vector<Point> ema(const std::vector<Point>& curve, double alpha);

// The curve's value at `tokens`, linear between its points; nothing outside its range.
std::optional<double> value_at(const std::vector<Point>& curve, double tokens);

// A count as configs write it: 1.5M, 30B, 250K (2 decimals at most).
std::string human_count(double n);

double mean(const std::vector<double>& xs);
double stddev(const std::vector<double>& xs);  // sample standard deviation (n - 1); 0 for n < 2

struct TTest {
  double t = 0, df = 0, p = 1;  // two-sided p-value
};
// Welch's unequal-variance t-test of mean(a) - mean(b); needs at least 2 values in each.
std::optional<TTest> welch_t_test(const std::vector<double>& a, const std::vector<double>& b);

// P(T <= t) for Student's t with df degrees of freedom.
double student_t_cdf(double t, double df);

}  // namespace gqe
