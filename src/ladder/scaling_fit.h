// Scaling-law fits for ladders (docs/scaling.md), as Chinchilla's approach 3 fits them (Hoffmann
// et al. 2022): in log space, L = exp(e) + exp(a - alpha * log x), Huber loss (delta 1e-3) on the
// log of the loss, L-BFGS from a grid of starts, the best fit kept. Uncertainty by a residual
// bootstrap. No torch: a handful of points and parameters.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace gqe {

// L(C) = E + A * C^-alpha (Kaplan et al. 2020's form with an irreducible loss).
struct PowerLaw {
  double E = 0, A = 0, alpha = 0;
  double operator()(double C) const;
  // The C at which the law reaches `loss`; nothing when loss <= E (never reached).
  std::optional<double> inverse(double loss) const;
};

// L(N, D) = E + A / N^alpha + B / D^beta (Chinchilla).
struct ChinchillaLaw {
  double E = 0, A = 0, alpha = 0, B = 0, beta = 0;
  double operator()(double N, double D) const;
};

struct FitResult {
  std::vector<double> theta;  // the log-space parameters: (e, a, alpha) or (e, a, alpha, b, beta)
  double objective = 0;       // the summed Huber loss at theta
};

// Minimizes f (which also writes its gradient) by L-BFGS with a backtracking line search.
std::vector<double> minimize_lbfgs(const std::function<double(const std::vector<double>&, std::vector<double>&)>& f,
                                   std::vector<double> x, int max_iterations = 400);

// Fits from every start of the grid (or from `start` alone) and keeps the lowest objective.
// x and loss must be positive; at least 3 points for L(C), 5 for L(N, D).
FitResult fit_power_law(const std::vector<double>& x, const std::vector<double>& loss,
                        const std::optional<std::vector<double>>& start = std::nullopt);
FitResult fit_chinchilla(const std::vector<double>& N, const std::vector<double>& D, const std::vector<double>& loss,
                         const std::optional<std::vector<double>>& start = std::nullopt);
PowerLaw power_law(const FitResult& fit);
ChinchillaLaw chinchilla_law(const FitResult& fit);

// A 90% interval (5th and 95th percentiles) and the point estimate.
struct Interval {
  double value = 0, lo = 0, hi = 0;
};
// The q-quantile of xs (linear between order statistics); xs is reordered.
double quantile(std::vector<double>& xs, double q);
Interval interval(double value, std::vector<double> draws, double level = 0.9);

// The residual bootstrap that gives every interval: each arm's log-loss residuals around its fit
// (widened by n / (n - p) for the parameters the fit used up) are resampled with
// replacement, the same draws for every arm (arms of a rung and seed share the data order, so
// their noise is paired), added to the fitted values, and every arm refitted. `refit` gets the
// resampled losses of each arm; what it returns (any numbers: parameters, predictions, gaps) is
// collected per draw.
std::vector<std::vector<double>> residual_bootstrap(const std::vector<std::vector<double>>& fitted,
                                                    const std::vector<std::vector<double>>& observed, int params,
                                                    int draws, uint64_t seed,
                                                    const std::function<std::vector<double>(const std::vector<std::vector<double>>&)>& refit);

// Least-squares line y = b0 + b1 x with the slope's standard error and two-sided p (Student t,
// n - 2 degrees of freedom). Needs 3 or more points.
struct LineFit {
  double intercept = 0, slope = 0, slope_se = 0, p = 1;
  int n = 0;
};
std::optional<LineFit> fit_line(const std::vector<double>& x, const std::vector<double>& y);

}  // namespace gqe
