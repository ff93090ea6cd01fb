"""C8 and C9: CTPO's objectives (§3.3) and its released loss, by enumeration of one token MDP.

The ``importance_objectives`` check of :mod:`simulators.importance` runs :func:`run_objectives`.

- C8 (§3.3 objectives): theory.importance's gradients chained to the logits against finite
  differences; the direction of each objective's expected gradient against grad J.
- C9 (CTPO's released loss, theory.importance.ctpo_released_objective), on C8's MDP: exact bias,
  variance and cosine of its gradient against grad J beside the paper's surrogate, on- and
  off-policy; unbiased on-policy, exactly and by Monte Carlo (control: the paper's surrogate);
  off-policy, it departs from Prop 1's form exactly where its dual clip binds (control: the
  paper's surrogate).
"""

from __future__ import annotations

import itertools

import numpy as np

from simulators.ledger import ClaimResult, claim, control, report
from simulators.mc import mean_se, z_score
from simulators.registry import RunConfig
from simulators.token_enumeration import EXACT, Enumerated, exact_row, projected_samples, relative_error
from simulators.token_mdp import TabularTokenMDP
from theory.importance import (
    ctpo_objective,
    dual_clip_threshold,
    grpo_objective,
    gspo_objective,
    objective_gradient,
)

VARIANTS = (
    ("GRPO", "grpo", False),
    ("GSPO", "gspo", False),
    ("CTPO", "ctpo", False),
    ("CTPO, detached prefix", "ctpo", True),
)
OBJECTIVES = {"grpo": grpo_objective, "gspo": gspo_objective, "ctpo": ctpo_objective}
NO_CLIP = {
    "eps_low": 1e3,
    "eps_high": 1e3,
}  # bounds [1 - 1e3, 1 + 1e3] (GRPO/GSPO), e^(-+1e3 sqrt t) (CTPO): nothing binds


def _logit_gradient(e: Enumerated, idx, dlogp: np.ndarray) -> np.ndarray:
    return e.mdp.score_sum(dlogp, e.seqs[idx], e.states[idx], e.mdp.logits_theta)


def _batch_objective(e: Enumerated, idx, logits_theta, name: str, adv) -> float:
    lp_new = e.mdp.token_logp(logits_theta, e.seqs[idx], e.states[idx])
    return OBJECTIVES[name](lp_new, e.lp_b[idx], np.ones_like(lp_new, dtype=bool), adv)


def _sequence_weights(e: Enumerated, name: str, detach: bool = False, **clip) -> np.ndarray:
    """(N, H): d/d logp_t of one sequence's objective times |o| (the objectives average over
    tokens), for every sequence of ``e`` with the outcome advantage A = R - E_b[R]; one
    sequence's gradient is sum_t weights_t grad log pi(a_t | s_t), Prop 1's form."""
    mask = np.ones_like(e.lp_t, dtype=bool)
    d = objective_gradient(name, e.lp_t, e.lp_b, mask, e.reward - e.p_b @ e.reward, detach_prefix=detach, **clip)
    return d * mask.size  # the weights 1 / (N H) of the batch objective over all N sequences


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def _regimes(mdp: TabularTokenMDP) -> dict:
    """theta = theta_old (on-policy) and the MDP's target policy (off-policy), enumerated."""
    return {"on-policy": Enumerated(mdp.with_theta(mdp.logits_b)), "off-policy": Enumerated(mdp)}


def run_objectives(config: RunConfig, rng: np.random.Generator) -> list[ClaimResult]:
    """C8 and C9 on one token MDP (V = 3, H = 6, logit perturbation 0.2)."""
    mdp = TabularTokenMDP.random(rng, vocab=3, horizon=6, delta=0.2)
    regimes = _regimes(mdp)
    return _objective_rows(regimes, rng) + _released_rows(config, regimes, rng)


def _objective_rows(regimes: dict, rng: np.random.Generator) -> list[ClaimResult]:
    """C8: the three objectives' gradients (chain rule vs finite differences), and the
    direction of their expected gradients against grad J, on-policy and off-policy."""
    e = regimes["off-policy"]
    mdp, horizon = e.mdp, e.mdp.horizon
    idx = rng.choice(len(e.p_b), size=64, p=e.p_b / e.p_b.sum())
    adv = e.reward[idx] - e.p_b @ e.reward
    fd_err = {}
    mask = np.ones((idx.size, horizon), dtype=bool)
    directions = rng.standard_normal((3,) + mdp.logits_theta.shape)
    for label, name, detach in (
        ("grpo", "grpo", False),
        ("gspo", "gspo", False),
        ("ctpo", "ctpo", False),
        ("ctpo detached", "ctpo", True),
    ):
        analytic = _logit_gradient(
            e, idx, objective_gradient(name, e.lp_t[idx], e.lp_b[idx], mask, adv, detach_prefix=detach)
        )
        errs = []
        for u in directions:
            h = 1e-6
            fd = (
                _batch_objective(e, idx, mdp.logits_theta + h * u, name, adv)
                - _batch_objective(e, idx, mdp.logits_theta - h * u, name, adv)
            ) / (2 * h)
            errs.append(abs(fd - np.sum(analytic * u)) / max(abs(fd), 1e-12))
        fd_err[label] = float(max(errs))
    detached_err = fd_err.pop("ctpo detached")
    cosines = {}
    for regime, ee in regimes.items():
        grad = ee.true_gradient()
        for (label, name, detach), clip in itertools.product(VARIANTS, (True, False)):
            if regime == "on-policy" and not clip:
                continue  # on-policy every ratio is 1: nothing is clipped
            weights = _sequence_weights(ee, name, detach, **({} if clip else NO_CLIP))
            key = f"{regime}{'' if clip else ', no clip'}: {label}"
            cosines[key] = _cosine(ee.score_sum(ee.p_b[:, None] * weights), grad)
    worst = max(fd_err.values())
    return [
        exact_row(
            "C8",
            "claim",
            "objective gradients (theory.importance, chained to logits) = finite differences "
            f"({', '.join(f'{k} {v:.1e}' for k, v in fd_err.items())})",
            worst,
            1e-5,
            True,
            {"fd": fd_err},
        ),
        exact_row(
            "C8",
            "control",
            f"Prop 1's estimator (prefix detached) as the CTPO objective's gradient (rel {detached_err:.2f})",
            detached_err,
            1e-5,
            True,
            {"fd": fd_err},
        ),
        report(
            "C8",
            "cos(E_b[grad objective], grad J): " + "; ".join(f"{k} {v:.3f}" for k, v in cosines.items()),
            details={"cosines": cosines},
            estimate=cosines["off-policy: CTPO"],
            theory=1.0,
        ),
    ]


def _gradient_moments(e: Enumerated, weights: np.ndarray) -> dict:
    """Bias, variance and cosine of one sequence's gradient sum_t weights_t grad log pi against
    grad J, exactly over every sequence: relative bias |E_b g - grad J| / |grad J|, variance
    E_b|g - E_b g|^2 / |grad J|^2 (divide by B for a batch of B sequences), cosine."""
    grad = e.true_gradient()
    mean = e.score_sum(e.p_b[:, None] * weights)
    scale = np.sum(grad**2)
    return {
        "bias": float(np.linalg.norm(mean - grad) / np.sqrt(scale)),
        "variance": float((e.p_b @ e.score_norm2(weights) - np.sum(mean**2)) / scale),
        "cosine": _cosine(mean, grad),
    }


RELEASED_ESTIMATORS = {  # label -> (objective_gradient's objective, detach_prefix)
    "released": ("ctpo_released", False),
    "paper surrogate": ("ctpo", False),
    "Prop 1 form": ("ctpo", True),  # the paper's clip on the prefix-detached ratio
}


def _on_policy_z(config: RunConfig, on: Enumerated, weights: dict, rng: np.random.Generator) -> tuple[dict, int]:
    """z of the Monte-Carlo mean of each estimator's gradient (6 random projections, sequences from
    pi_b = pi_theta) against grad J's projections; and the number of sequences."""
    n_mc = 200_000 if config.full else 40_000
    idx = rng.choice(len(on.p_b), size=n_mc, p=on.p_b / on.p_b.sum())
    directions = rng.standard_normal((6,) + on.mdp.logits_theta.shape)
    truth = np.einsum("ksa,sa->k", directions, on.true_gradient())
    z = {}
    for label in ("released", "paper surrogate"):
        mean, se = mean_se(projected_samples(on, idx, weights[label], directions))
        z[label] = np.asarray(z_score(mean, se, truth))
    return z, n_mc


def _dual_clip_mismatch(off: Enumerated, weights: dict) -> tuple[dict, float]:
    """The prediction that an estimator's per-token gradient differs from Prop 1's form exactly at the
    tokens of the release's dual clip (A < 0 and rho_t^cum > e^(0.05 sqrt t)): for "released" and
    "paper surrogate", the P_b-weighted share of tokens where it fails; and the dual clip's share."""
    log_rho = np.cumsum(off.log_r, axis=1)
    adv = (off.reward - off.p_b @ off.reward)[:, None]
    dual = (adv < 0) & (log_rho > np.log(dual_clip_threshold(np.arange(1, off.mdp.horizon + 1))))
    mismatch = {}
    for label in ("released", "paper surrogate"):
        differs = ~np.isclose(weights[label], weights["Prop 1 form"], rtol=EXACT, atol=0.0)
        mismatch[label] = float(off.p_b @ np.mean(differs != dual, axis=1))
    return mismatch, float(off.p_b @ dual.mean(axis=1))


def _mismatch_row(row, what: str, mismatch: float, cells: dict) -> ClaimResult:
    """A ``claim`` or ``control`` (``row``) that an estimator departs from Prop 1's form exactly at
    the dual-clip tokens: holds when the share of tokens that break the rule (``mismatch``) is 0."""
    return row("C9", what, at_most=0.0, statistic=mismatch, stat_name="share mismatched", details=cells)


def _moments_text(moments: dict, regime: str) -> str:
    """Each estimator's bias / variance / cosine in one regime, as text."""
    parts = []
    for label in RELEASED_ESTIMATORS:
        m = moments[f"{regime}: {label}"]
        parts.append(f"{label} {m['bias']:.3f} / {m['variance']:.0f} / {m['cosine']:.3f}")
    return "; ".join(parts)


def _released_rows(config: RunConfig, regimes: dict, rng: np.random.Generator) -> list[ClaimResult]:
    """C9: the gradient CTPO's released code backpropagates (theory.importance.ctpo_released_objective)
    against grad J and beside the paper's surrogate, on-policy and off-policy: exact moments, a
    Monte-Carlo test of its mean on-policy, and the tokens where it departs from Prop 1's form."""
    weights = {
        regime: {label: _sequence_weights(e, *spec) for label, spec in RELEASED_ESTIMATORS.items()}
        for regime, e in regimes.items()
    }
    moments = {
        f"{regime}: {label}": _gradient_moments(regimes[regime], w)
        for regime, by_label in weights.items()
        for label, w in by_label.items()
    }
    on, off = regimes["on-policy"], regimes["off-policy"]
    exact = relative_error(on.score_sum(on.p_b[:, None] * weights["on-policy"]["released"]), on.true_gradient())
    z, n_mc = _on_policy_z(config, on, weights["on-policy"], rng)
    mismatch, dual_share = _dual_clip_mismatch(off, weights["off-policy"])
    log_rho = np.cumsum(off.log_r, axis=1)
    cells = {
        "moments": moments,
        "z": {label: v.tolist() for label, v in z.items()},
        "n_mc": n_mc,
        "mismatch": mismatch,
        "dual_clip_token_share": dual_share,
        "max_abs_token_log_ratio": float(np.abs(off.log_r).max()),
        "max_log_cumulative_ratio": float(log_rho.max()),
    }
    return [
        exact_row(
            "C9",
            "claim",
            f"on-policy, E_b[released gradient] = grad J with A = R - E_b[R] (exact, rel {exact:.1e})",
            exact,
            EXACT,
            True,
            cells,
        ),
        claim(
            "C9",
            f"... by Monte Carlo: 6 random projections, {n_mc} sequences",
            max_abs_z=float(np.max(np.abs(z["released"]))),
            details=cells,
        ),
        control(
            "C9",
            "the paper's surrogate's gradient (through the prefix ratios) in the same Monte-Carlo test",
            max_abs_z=float(np.max(np.abs(z["paper surrogate"]))),
            details=cells,
        ),
        _mismatch_row(
            claim,
            "off-policy, the released gradient departs from Prop 1's form (paper's clip) exactly at the "
            f"tokens of its dual clip (A < 0, rho_t^cum > e^(0.05 sqrt t): {dual_share:.1%} of tokens)",
            mismatch["released"],
            cells,
        ),
        _mismatch_row(
            control,
            f"the paper's surrogate's gradient, same rule (mismatch {mismatch['paper surrogate']:.1%} of tokens)",
            mismatch["paper surrogate"],
            cells,
        ),
        report(
            "C9",
            "relative bias / variance / cosine of one sequence's gradient against grad J; on-policy: "
            f"{_moments_text(moments, 'on-policy')}; off-policy: {_moments_text(moments, 'off-policy')} "
            f"(max |log r_t| {cells['max_abs_token_log_ratio']:.2f}, max log rho_t^cum "
            f"{cells['max_log_cumulative_ratio']:.2f}: the +-20 clamp and the cap at 10 do not bind)",
            details=cells,
            estimate=moments["off-policy: released"]["cosine"],
            theory=1.0,
        ),
    ]
