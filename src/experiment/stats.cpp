#include "experiment/stats.h"

#include <cmath>
#include <limits>

#include <fmt/format.h>

namespace gqe {

std::vector<Point> ema(const std::vector<Point>& curve, double alpha) {
  std::vector<Point> out;
  double average = 0, weight = 0;
  for (const Point& p : curve) {
    average = alpha * average + (1 - alpha) * p.value;
    weight = alpha * weight + (1 - alpha);
    out.push_back({p.tokens, average / weight});
  }
  return out;
}

std::optional<double> value_at(const std::vector<Point>& curve, double tokens) {
  if (curve.empty() || tokens < curve.front().tokens || tokens > curve.back().tokens) return std::nullopt;
  for (size_t i = 1; i < curve.size(); ++i) {
    if (tokens > curve[i].tokens) continue;
    const Point &a = curve[i - 1], &b = curve[i];
    if (b.tokens == a.tokens) return b.value;
    return a.value + (b.value - a.value) * (tokens - a.tokens) / (b.tokens - a.tokens);
  }
  return curve.front().value;  // a single point
}

std::string human_count(double n) {
  if (n >= 1e12) return fmt::format("{:g}T", std::round(n / 1e10) / 100);
  if (n >= 1e9) return fmt::format("{:g}B", std::round(n / 1e7) / 100);
  if (n >= 1e6) return fmt::format("{:g}M", std::round(n / 1e4) / 100);
  if (n >= 1e3) return fmt::format("{:g}K", std::round(n / 10) / 100);
  return fmt::format("{:g}", n);
}

double mean(const std::vector<double>& xs) {
  double s = 0;
  for (double x : xs) s += x;
  return xs.empty() ? std::numeric_limits<double>::quiet_NaN() : s / static_cast<double>(xs.size());
}

double stddev(const std::vector<double>& xs) {
  if (xs.size() < 2) return 0;
  const double m = mean(xs);
  double s = 0;
  for (double x : xs) s += (x - m) * (x - m);
  return std::sqrt(s / static_cast<double>(xs.size() - 1));
}

namespace {

// Continued fraction of the regularised incomplete beta function (modified Lentz).
double beta_fraction(double a, double b, double x) {
  constexpr double kTiny = 1e-300, kEps = 1e-15;
  double c = 1, d = 1 - (a + b) * x / (a + 1);
  d = std::fabs(d) < kTiny ? kTiny : d;
  d = 1 / d;
  double h = d;
  for (int m = 1; m <= 500; ++m) {
    const double m2 = 2.0 * m;
    for (const double num : {m * (b - m) * x / ((a + m2 - 1) * (a + m2)), -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))}) {
      d = 1 + num * d;
      d = std::fabs(d) < kTiny ? kTiny : d;
      c = 1 + num / c;
      c = std::fabs(c) < kTiny ? kTiny : c;
      d = 1 / d;
      h *= d * c;
    }
    if (std::fabs(d * c - 1) < kEps) break;
  }
  return h;
}

// I_x(a, b).
double incomplete_beta(double a, double b, double x) {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const double front = std::exp(std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) + a * std::log(x) + b * std::log1p(-x));
  if (x < (a + 1) / (a + b + 2)) return front * beta_fraction(a, b, x) / a;
  return 1 - front * beta_fraction(b, a, 1 - x) / b;
}

}  // namespace

double student_t_cdf(double t, double df) {
  const double tail = 0.5 * incomplete_beta(df / 2, 0.5, df / (df + t * t));  // P(T > |t|)
  return t >= 0 ? 1 - tail : tail;
}

std::optional<TTest> welch_t_test(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() < 2 || b.size() < 2) return std::nullopt;
  const double na = static_cast<double>(a.size()), nb = static_cast<double>(b.size());
  const double va = stddev(a) * stddev(a) / na, vb = stddev(b) * stddev(b) / nb;
  TTest r;
  if (va + vb == 0) {
    r.t = mean(a) == mean(b) ? 0 : std::copysign(std::numeric_limits<double>::infinity(), mean(a) - mean(b));
    r.df = na + nb - 2;
    r.p = mean(a) == mean(b) ? 1 : 0;
    return r;
  }
  r.t = (mean(a) - mean(b)) / std::sqrt(va + vb);
  r.df = (va + vb) * (va + vb) / (va * va / (na - 1) + vb * vb / (nb - 1));
  r.p = 2 * (1 - student_t_cdf(std::fabs(r.t), r.df));
  return r;
}

}  // namespace gqe
