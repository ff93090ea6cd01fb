"""A cvxpy oracle for the relaxed allocation problems (6) and (8) of VIP §5.2.

RLOO (8): sum_q a_q / (n_q - 1) is DCP as ``a @ inv_pos(n - 1)``; one conic solve.

Dr. GRPO (6): a (n - 1)/n^2 is convex for n >= 3 but not DCP as written (it is
1/n - 1/n^2, a difference of convex functions). We use Kelley's cutting-plane
outer approximation: t_q >= g(m) + g'(m)(n_q - m) for tangent points m, minimise
sum_q a_q t_q (an LP), add the tangents at the LP solution, repeat. Every LP value
is a certified lower bound on the optimum of (6); the true objective at the LP
solution is an upper bound; we stop when the certified gap is below ``rel_gap``.
"""

from __future__ import annotations

import dataclasses

import cvxpy as cp
import numpy as np

from theory.allocation import check_problem, total_objective


@dataclasses.dataclass(frozen=True)
class OracleResult:
    n: np.ndarray
    lower_bound: float
    upper_bound: float
    rounds: int

    @property
    def certified_gap(self) -> float:
        """(upper - lower) / upper: how far the oracle itself may be from the optimum."""
        return (self.upper_bound - self.lower_bound) / max(abs(self.upper_bound), 1e-300)


def _g(n):
    return (n - 1.0) / n**2


def _dg(n):
    return (2.0 - n) / n**3


def cvxpy_relaxed(
    a, budget, lower, upper, estimator: str, rel_gap: float = 1e-9, max_rounds: int = 200
) -> OracleResult:
    """Solve (6) or (8) with cvxpy (CLARABEL); see the module docstring."""
    a, budget, lower, upper = check_problem(a, budget, lower, upper)
    n = cp.Variable(a.size)
    box = [cp.sum(n) == budget, n >= lower, n <= upper]
    if estimator == "rloo":
        problem = cp.Problem(cp.Minimize(a @ cp.inv_pos(n - 1)), box)
        problem.solve(solver=cp.CLARABEL)
        value = total_objective(a, n.value, "rloo")
        return OracleResult(n.value, float(problem.value), value, 1)
    t = cp.Variable(a.size)
    points = np.linspace(lower, upper, 4)
    cuts = [t >= _g(m) + _dg(m) * (n - m) for m in points]
    for rounds in range(1, max_rounds + 1):
        problem = cp.Problem(cp.Minimize(a @ t), box + cuts)
        problem.solve(solver=cp.CLARABEL)
        n_val = np.clip(n.value, lower, upper)
        lower_bound, upper_bound = float(problem.value), total_objective(a, n_val, "dr_grpo")
        if upper_bound - lower_bound <= rel_gap * abs(upper_bound):
            break
        cuts.append(t >= _g(n_val) + cp.multiply(_dg(n_val), n - n_val))
    return OracleResult(n_val, lower_bound, upper_bound, rounds)
