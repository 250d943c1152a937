#include "ladder/scaling_fit.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>
#include <stdexcept>

#include "experiment/stats.h"

namespace gqe {
namespace {

constexpr double kHuberDelta = 1e-3;  // Chinchilla's, on log loss

double huber(double r, double& slope) {
  if (std::fabs(r) <= kHuberDelta) {
    slope = r;
    return 0.5 * r * r;
  }
  slope = r > 0 ? kHuberDelta : -kHuberDelta;
  return kHuberDelta * (std::fabs(r) - 0.5 * kHuberDelta);
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

double log_geometric_mean(const std::vector<double>& xs) {
  double s = 0;
  for (double x : xs) s += std::log(x);
  return s / static_cast<double>(xs.size());
}

// sum_i huber(log(sum_k exp(t_k(i))) - log L_i), where term k of point i is
// theta[0] (k = 0, the constant) or theta[2k-1] - theta[2k] * u_k(i): every law here has this form.
double log_sum_objective(const std::vector<double>& theta, const std::vector<std::vector<double>>& u,
                         const std::vector<double>& log_loss, std::vector<double>& grad) {
  const size_t terms = u.size() + 1;
  std::fill(grad.begin(), grad.end(), 0.0);
  double total = 0;
  std::vector<double> t(terms);
  for (size_t i = 0; i < log_loss.size(); ++i) {
    t[0] = theta[0];
    for (size_t k = 1; k < terms; ++k) t[k] = theta[2 * k - 1] - theta[2 * k] * u[k - 1][i];
    const double m = *std::max_element(t.begin(), t.end());
    double z = 0;
    for (double tk : t) z += std::exp(tk - m);
    const double pred = m + std::log(z);
    double slope = 0;
    total += huber(pred - log_loss[i], slope);
    grad[0] += slope * std::exp(t[0] - pred);
    for (size_t k = 1; k < terms; ++k) {
      const double w = std::exp(t[k] - pred);
      grad[2 * k - 1] += slope * w;
      grad[2 * k] -= slope * w * u[k - 1][i];
    }
  }
  return total;
}

// Every combination of the per-parameter start values.
std::vector<std::vector<double>> grid(const std::vector<std::vector<double>>& values) {
  std::vector<std::vector<double>> out{{}};
  for (const auto& choices : values) {
    std::vector<std::vector<double>> next;
    for (const auto& prefix : out)
      for (double v : choices) {
        next.push_back(prefix);
        next.back().push_back(v);
      }
    out = std::move(next);
  }
  return out;
}

// Fits theta (log-space, each power term's coefficient relative to the geometric mean of its
// variable, which keeps the starts in a small range at any scale), then moves the coefficients
// back to the variables' own scale.
FitResult fit_log_sum(const std::vector<std::vector<double>>& vars, const std::vector<double>& loss,
                      const std::optional<std::vector<double>>& start, size_t min_points) {
  if (loss.size() < min_points)
    throw std::invalid_argument("a scaling-law fit needs at least " + std::to_string(min_points) + " points");
  std::vector<double> log_loss, centre;
  std::vector<std::vector<double>> u;
  for (double l : loss) {
    if (!(l > 0) || !std::isfinite(l)) throw std::invalid_argument("a scaling-law fit needs positive, finite losses");
    log_loss.push_back(std::log(l));
  }
  for (const auto& v : vars) {
    for (double x : v)
      if (!(x > 0) || !std::isfinite(x)) throw std::invalid_argument("a scaling-law fit needs positive, finite sizes");
    centre.push_back(log_geometric_mean(v));
    u.emplace_back();
    for (double x : v) u.back().push_back(std::log(x) - centre.back());
  }
  auto to_centred = [&](std::vector<double> theta) {
    for (size_t k = 0; k < vars.size(); ++k) theta[2 * k + 1] -= theta[2 * k + 2] * centre[k];
    return theta;
  };
  std::vector<std::vector<double>> starts;
  if (start) {
    starts.push_back(to_centred(*start));
  } else {
    std::vector<std::vector<double>> values{{-1, -0.5, 0, 0.5, 1, 1.5, 2}};
    const bool one = vars.size() == 1;  // two power terms: a coarser grid (its size multiplies)
    for (size_t k = 0; k < vars.size(); ++k) {
      values.push_back(one ? std::vector<double>{-3, -1.5, 0, 1} : std::vector<double>{-2, -0.5, 1});
      values.push_back(one ? std::vector<double>{0, 0.2, 0.5, 1, 2} : std::vector<double>{0.1, 0.4, 1});
    }
    starts = grid(values);
  }
  auto f = [&](const std::vector<double>& theta, std::vector<double>& grad) { return log_sum_objective(theta, u, log_loss, grad); };
  FitResult best;
  best.objective = std::numeric_limits<double>::infinity();
  std::vector<double> grad(starts.front().size());
  for (const auto& s : starts) {
    std::vector<double> theta = minimize_lbfgs(f, s);
    const double value = f(theta, grad);
    if (std::isfinite(value) && value < best.objective) best = {theta, value};
  }
  for (size_t k = 0; k < vars.size(); ++k) best.theta[2 * k + 1] += best.theta[2 * k + 2] * centre[k];
  return best;
}

}  // namespace

double PowerLaw::operator()(double C) const { return E + A * std::pow(C, -alpha); }

std::optional<double> PowerLaw::inverse(double loss) const {
  if (!(loss > E) || !(A > 0) || alpha == 0) return std::nullopt;
  return std::pow((loss - E) / A, -1.0 / alpha);
}

double ChinchillaLaw::operator()(double N, double D) const { return E + A * std::pow(N, -alpha) + B * std::pow(D, -beta); }

std::vector<double> minimize_lbfgs(const std::function<double(const std::vector<double>&, std::vector<double>&)>& f,
                                   std::vector<double> x, int max_iterations) {
  const size_t n = x.size();
  constexpr size_t kMemory = 10;
  std::deque<std::vector<double>> S, Y;
  std::vector<double> g(n), x_new(n), g_new(n), d(n);
  double fx = f(x, g);
  if (!std::isfinite(fx)) return x;
  for (int it = 0; it < max_iterations; ++it) {
    double gmax = 0;
    for (double gi : g) gmax = std::max(gmax, std::fabs(gi));
    if (gmax < 1e-14) break;
    // Two-loop recursion: d = -H g.
    d = g;
    std::vector<double> rho(S.size()), alpha(S.size());
    for (size_t i = S.size(); i-- > 0;) {
      rho[i] = 1.0 / dot(Y[i], S[i]);
      alpha[i] = rho[i] * dot(S[i], d);
      for (size_t j = 0; j < n; ++j) d[j] -= alpha[i] * Y[i][j];
    }
    const double scale = S.empty() ? 1.0 / std::max(1.0, std::sqrt(dot(g, g))) : dot(S.back(), Y.back()) / dot(Y.back(), Y.back());
    for (double& v : d) v *= scale;
    for (size_t i = 0; i < S.size(); ++i) {
      const double beta = rho[i] * dot(Y[i], d);
      for (size_t j = 0; j < n; ++j) d[j] += S[i][j] * (alpha[i] - beta);
    }
    for (double& v : d) v = -v;
    double slope = dot(g, d);
    if (!(slope < 0)) {  // not a descent direction: restart from steepest descent
      S.clear();
      Y.clear();
      for (size_t j = 0; j < n; ++j) d[j] = -g[j] / std::max(1.0, std::sqrt(dot(g, g)));
      slope = dot(g, d);
    }
    // Backtracking (Armijo).
    double step = 1.0, f_new = 0;
    bool accepted = false;
    for (int k = 0; k < 60; ++k, step *= 0.5) {
      for (size_t j = 0; j < n; ++j) x_new[j] = x[j] + step * d[j];
      f_new = f(x_new, g_new);
      if (std::isfinite(f_new) && f_new <= fx + 1e-4 * step * slope) {
        accepted = true;
        break;
      }
    }
    if (!accepted) break;
    std::vector<double> s(n), y(n);
    for (size_t j = 0; j < n; ++j) {
      s[j] = x_new[j] - x[j];
      y[j] = g_new[j] - g[j];
    }
    const bool converged = fx - f_new <= 1e-16 * std::max(1.0, std::fabs(fx)) && gmax < 1e-9;
    x = x_new;
    g = g_new;
    fx = f_new;
    if (dot(s, y) > 1e-300) {
      S.push_back(s);
      Y.push_back(y);
      if (S.size() > kMemory) {
        S.pop_front();
        Y.pop_front();
      }
    }
    if (converged) break;
  }
  return x;
}

FitResult fit_power_law(const std::vector<double>& x, const std::vector<double>& loss, const std::optional<std::vector<double>>& start) {
  return fit_log_sum({x}, loss, start, 3);
}

FitResult fit_chinchilla(const std::vector<double>& N, const std::vector<double>& D, const std::vector<double>& loss,
                         const std::optional<std::vector<double>>& start) {
  return fit_log_sum({N, D}, loss, start, 5);
}

PowerLaw power_law(const FitResult& fit) {
  return {std::exp(fit.theta[0]), std::exp(fit.theta[1]), fit.theta[2]};
}

ChinchillaLaw chinchilla_law(const FitResult& fit) {
  return {std::exp(fit.theta[0]), std::exp(fit.theta[1]), fit.theta[2], std::exp(fit.theta[3]), fit.theta[4]};
}

double quantile(std::vector<double>& xs, double q) {
  if (xs.empty()) return std::nan("");
  std::sort(xs.begin(), xs.end());
  const double pos = q * static_cast<double>(xs.size() - 1);
  const size_t i = static_cast<size_t>(pos);
  if (i + 1 >= xs.size()) return xs.back();
  return xs[i] + (pos - static_cast<double>(i)) * (xs[i + 1] - xs[i]);
}

Interval interval(double value, std::vector<double> draws, double level) {
  draws.erase(std::remove_if(draws.begin(), draws.end(), [](double v) { return !std::isfinite(v); }), draws.end());
  Interval out{value, std::nan(""), std::nan("")};
  if (draws.empty()) return out;
  out.lo = quantile(draws, (1 - level) / 2);
  out.hi = quantile(draws, (1 + level) / 2);
  return out;
}

std::vector<std::vector<double>> residual_bootstrap(const std::vector<std::vector<double>>& fitted,
                                                    const std::vector<std::vector<double>>& observed, int params,
                                                    int draws, uint64_t seed,
                                                    const std::function<std::vector<double>(const std::vector<std::vector<double>>&)>& refit) {
  std::vector<std::vector<double>> residuals(fitted.size());
  for (size_t a = 0; a < fitted.size(); ++a) {
    const double n = static_cast<double>(fitted[a].size());
    // n / (n - p), not least squares' sqrt(n / (n - p)): calibrated by the coverage test
    // (ScalingFit.NinetyPercent...: 75-81% coverage with the square root, 83-89% with this).
    const double widen = n > params ? n / (n - params) : 1.0;
    for (size_t i = 0; i < fitted[a].size(); ++i) residuals[a].push_back(widen * (std::log(observed[a][i]) - std::log(fitted[a][i])));
  }
  const bool paired = std::all_of(fitted.begin(), fitted.end(), [&](const auto& f) { return f.size() == fitted.front().size(); });
  std::mt19937_64 rng(seed);
  std::vector<std::vector<double>> out;
  for (int b = 0; b < draws; ++b) {
    std::vector<std::vector<double>> sample(fitted.size());
    std::vector<size_t> picks;
    for (size_t a = 0; a < fitted.size(); ++a) {
      const size_t n = fitted[a].size();
      if (!paired || a == 0) {
        picks.clear();
        std::uniform_int_distribution<size_t> pick(0, n - 1);
        for (size_t i = 0; i < n; ++i) picks.push_back(pick(rng));
      }
      for (size_t i = 0; i < n; ++i) sample[a].push_back(fitted[a][i] * std::exp(residuals[a][picks[i]]));
    }
    out.push_back(refit(sample));
  }
  return out;
}

std::optional<LineFit> fit_line(const std::vector<double>& x, const std::vector<double>& y) {
  const size_t n = x.size();
  if (n < 3) return std::nullopt;
  const double mx = mean(x), my = mean(y);
  double sxx = 0, sxy = 0;
  for (size_t i = 0; i < n; ++i) {
    sxx += (x[i] - mx) * (x[i] - mx);
    sxy += (x[i] - mx) * (y[i] - my);
  }
  if (sxx <= 0) return std::nullopt;
  LineFit f;
  f.n = static_cast<int>(n);
  f.slope = sxy / sxx;
  f.intercept = my - f.slope * mx;
  double sse = 0;
  for (size_t i = 0; i < n; ++i) sse += std::pow(y[i] - f.intercept - f.slope * x[i], 2);
  f.slope_se = std::sqrt(sse / static_cast<double>(n - 2) / sxx);
  const double df = static_cast<double>(n - 2);
  f.p = f.slope_se > 0 ? 2 * (1 - student_t_cdf(std::fabs(f.slope / f.slope_se), df)) : (f.slope == 0 ? 1.0 : 0.0);
  return f;
}

}  // namespace gqe
