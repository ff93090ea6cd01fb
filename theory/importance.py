"""Importance ratios and clipped surrogate objectives of CTPO (§2-3, App. A), GRPO and GSPO, and
the loss of CTPO's released code (:func:`ctpo_released_objective`).

Inputs are per-token log-probabilities of a batch of B sequences padded to length T:
``logp_new`` (pi_theta), ``logp_old`` (pi_b) and a boolean ``mask`` of real tokens, which
must be a prefix of each row (no holes) with at least one real token. Log-probabilities at
padded positions are ignored (they may be -inf or NaN). Every ratio is formed in log space;
padded entries of the per-token arrays are 1 (ratio) or 0 (log ratio).

Positions t are 1-based as in the paper: column j of a (B, T) array is position t = j + 1.
"""

from __future__ import annotations

import numpy as np

from theory import checks

# Defaults: CTPO §4.1 (eps_low = 0.025, eps_high = 0.05, p = 0.5); GRPO/PPO's symmetric 0.2;
# GSPO's published ranges (3e-4, 4e-4), which its sequence-level ratio needs.
CTPO_CLIP = (0.025, 0.05, 0.5)
GRPO_CLIP = (0.2, 0.2)
GSPO_CLIP = (3e-4, 4e-4)
# The cap on log rho_t^cum before exponentiating in CTPO's objective (see ctpo_objective):
# e^30 ~ 1.1e13, so a term rho A, its gradient and their squares (a gradient norm) stay finite in
# float32 (max 3.4e38) for |A| up to 1e5; CTPO's default upper bound e^(0.05 sqrt(t)) stays below
# e^30 for t < 360,000 tokens.
CTPO_LOG_RATIO_CAP = 30.0

# CTPO's released loss: github.com/horizon-llm/CTPO at commit acc40211, the loss mode
# cum-token-cumprod-la that ctpo.sh:75-76 selects, verl/trainer/ppo/core_algos.py:1532-1630
# (_compute_policy_loss_cum_token_la_impl). Its clip bounds are CTPO_CLIP (ctpo.sh:59-60 and 63).
RELEASED_TOKEN_LOG_RATIO_CLAMP = 20.0  # each token's log ratio, clamped to [-20, 20] (core_algos.py:1570)
RELEASED_LOG_RATIO_CAP = 10.0  # log rho_t^cum capped at 10 after the stop-gradient split (core_algos.py:1583-1584)
RELEASED_DUAL_CLIP = 0.05  # la_clip_c (ctpo.sh:61, verl/trainer/config/actor/actor.yaml:97)


def _log_ratios(logp_new, logp_old, mask) -> tuple[np.ndarray, np.ndarray]:
    """Validated (log r_t with 0 at padding, mask as bool)."""
    new, old = np.asarray(logp_new, dtype=float), np.asarray(logp_old, dtype=float)
    mask = np.asarray(mask)
    if new.ndim != 2 or new.shape != old.shape or mask.shape != new.shape:
        raise ValueError(
            "logp_new, logp_old and mask must be 2-D arrays of one shape (B, T); "
            f"got {new.shape}, {old.shape}, {mask.shape}"
        )
    if mask.dtype != bool:
        if not np.isin(mask, (0, 1)).all():
            raise ValueError("mask must be boolean (or 0/1)")
        mask = mask.astype(bool)
    if np.any(mask[:, 1:] & ~mask[:, :-1]):
        raise ValueError("mask must mark a prefix of each row (no holes: a real token after padding)")
    if not mask[:, 0].all():
        raise ValueError("mask must hold at least one real token per sequence")
    log_r = np.zeros_like(new)
    log_r[mask] = new[mask] - old[mask]  # padding may hold -inf log-probs: never subtract there
    if not np.all(np.isfinite(log_r)):
        raise ValueError("logp_new and logp_old must be finite at real tokens (mask = True)")
    return log_r, mask


def lengths(mask) -> np.ndarray:
    """|o_i|: the number of real tokens of each sequence."""
    return np.asarray(mask, dtype=bool).sum(axis=1)


def token_ratio(logp_new, logp_old, mask) -> np.ndarray:
    """r_t = pi_theta(a_t | s_t) / pi_b(a_t | s_t) (§2.1, GRPO's ratio); 1 at padding."""
    log_r, _ = _log_ratios(logp_new, logp_old, mask)
    return np.exp(log_r)


def log_cumulative_ratio(logp_new, logp_old, mask) -> np.ndarray:
    """log rho_t^cum = sum_{t' <= t} log r_t' (§3.1); 0 at padding."""
    log_r, mask = _log_ratios(logp_new, logp_old, mask)
    return np.where(mask, np.cumsum(log_r, axis=1), 0.0)


def cumulative_ratio(logp_new, logp_old, mask) -> np.ndarray:
    """rho_t^cum = prod_{t' <= t} r_t' = pi_theta(a_1:t | x) / pi_b(a_1:t | x) (§3.1); 1 at padding."""
    return np.exp(log_cumulative_ratio(logp_new, logp_old, mask))


def sequence_ratio(logp_new, logp_old, mask) -> np.ndarray:
    """rho^seq = prod_t r_t over the whole response (§2.2), one per sequence."""
    log_r, _ = _log_ratios(logp_new, logp_old, mask)
    return np.exp(log_r.sum(axis=1))


def gspo_ratio(logp_new, logp_old, mask) -> np.ndarray:
    """rho^GSPO = (rho^seq)^(1/|o|), the geometric mean of the token ratios (§2.2)."""
    log_r, mask = _log_ratios(logp_new, logp_old, mask)
    return np.exp(log_r.sum(axis=1) / mask.sum(axis=1))


def adaptive_clip_bounds(t, eps_low: float = CTPO_CLIP[0], eps_high: float = CTPO_CLIP[1], power: float = CTPO_CLIP[2]):
    """(e^(-eps_low t^p), e^(eps_high t^p)): CTPO's position-adaptive trust region for rho_t^cum (§3.3).

    ``power = 0`` gives a fixed range; t >= 1 (1-based positions).
    """
    t = checks.at_least("t", t, 1.0)
    eps_low = float(checks.nonnegative("eps_low", eps_low))
    eps_high = float(checks.nonnegative("eps_high", eps_high))
    power = float(checks.nonnegative("power", power))
    with np.errstate(over="ignore"):  # an infinite upper bound means "no upper clip"
        return np.exp(-eps_low * t**power), np.exp(eps_high * t**power)


def chi2_divergence(p, q, axis: int = -1) -> np.ndarray:
    """chi2(p || q) = sum p^2 / q - 1 along ``axis`` (the local divergence of Prop 2(ii),
    E_q[(p/q)^2] - 1); inf where p puts mass outside the support of q."""
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(q > 0, p**2 / np.where(q > 0, q, 1.0), np.where(p > 0, np.inf, 0.0))
    return np.sum(terms, axis=axis) - 1.0


def cumulative_ratio_variance(chi2_per_position) -> np.ndarray:
    """Var(rho_t^cum) = prod_{t' <= t} (1 + chi2_t') - 1 for t = 1..H (Prop 2(ii), independent positions).

    The last entry is Var(rho^seq); Var(rho^seq) / Var(rho_t^cum) is the ratio of Prop 2(ii).
    Computed as expm1(cumsum(log1p(chi2))) so that tiny chi2 (the delta -> 0 limit) keep
    their relative accuracy.
    """
    chi2 = checks.nonnegative("chi2_per_position", chi2_per_position)
    if chi2.ndim != 1 or chi2.size == 0:
        raise ValueError(f"chi2_per_position must be a non-empty 1-D array; got shape {chi2.shape}")
    return np.expm1(np.cumsum(np.log1p(chi2)))


def cumulative_log_ratio_variance(log_ratio_var_per_position) -> np.ndarray:
    """Var(log rho_t^cum) = sum_{t' <= t} Var(log r_t'), = t sigma^2 for equal variances (§3.3)."""
    var = checks.nonnegative("log_ratio_var_per_position", log_ratio_var_per_position)
    if var.ndim != 1 or var.size == 0:
        raise ValueError(f"log_ratio_var_per_position must be a non-empty 1-D array; got shape {var.shape}")
    return np.cumsum(var)


# --- clipped surrogate objectives -----------------------------------------------------------


def _advantages(advantages, b: int) -> np.ndarray:
    adv = checks.as_float_array("advantages", advantages)
    if adv.shape != (b,):
        raise ValueError(f"advantages must have shape (B,) = ({b},), one per sequence; got {adv.shape}")
    return adv


def _sequence_mean_weights(mask):
    """1 / (B |o_i|) at real tokens: the papers' 1/G sum_i 1/|o_i| sum_t."""
    return mask / mask.sum(axis=1, keepdims=True) / mask.shape[0]


def _token_mean_weights(mask):
    """1 / (number of real tokens): every token of the batch weighs the same."""
    return mask / mask.sum()


# how token terms are averaged: name -> weights(mask)
AGGREGATIONS = {"sequence_mean": _sequence_mean_weights, "token_mean": _token_mean_weights}


def _surrogate(ratio, adv, low, high):
    """min(ratio A, clip(ratio, low, high) A) and whether the unclipped term is the active one
    (its gradient flows): False exactly where the clip binds on the side that the min keeps."""
    unclipped = ratio * adv
    clipped = np.clip(ratio, low, high) * adv
    return np.minimum(unclipped, clipped), unclipped <= clipped


def grpo_objective(
    logp_new, logp_old, mask, advantages, eps_low: float = GRPO_CLIP[0], eps_high: float = GRPO_CLIP[1]
) -> float:
    """J_GRPO = mean_i 1/|o_i| sum_t min(r_it A_i, clip(r_it, 1 - eps_low, 1 + eps_high) A_i) (§2.1)."""
    return float(_grpo_terms(logp_new, logp_old, mask, advantages, eps_low, eps_high)[0])


def _grpo_terms(logp_new, logp_old, mask, advantages, eps_low=GRPO_CLIP[0], eps_high=GRPO_CLIP[1]):
    log_r, mask = _log_ratios(logp_new, logp_old, mask)
    adv = _advantages(advantages, log_r.shape[0])[:, None]
    value, active = _surrogate(np.exp(log_r), adv, 1.0 - eps_low, 1.0 + eps_high)
    weight = _sequence_mean_weights(mask)
    return np.sum(value * weight), np.exp(log_r) * adv * active * weight


def gspo_objective(
    logp_new, logp_old, mask, advantages, eps_low: float = GSPO_CLIP[0], eps_high: float = GSPO_CLIP[1]
) -> float:
    """J_GSPO = mean_i min(rho_i^GSPO A_i, clip(rho_i^GSPO, 1 - eps_low, 1 + eps_high) A_i) (§2.2)."""
    return float(_gspo_terms(logp_new, logp_old, mask, advantages, eps_low, eps_high)[0])


def _gspo_terms(logp_new, logp_old, mask, advantages, eps_low=GSPO_CLIP[0], eps_high=GSPO_CLIP[1]):
    log_r, mask = _log_ratios(logp_new, logp_old, mask)
    adv = _advantages(advantages, log_r.shape[0])
    n = mask.sum(axis=1)
    rho = np.exp(log_r.sum(axis=1) / n)
    value, active = _surrogate(rho, adv, 1.0 - eps_low, 1.0 + eps_high)
    b = mask.shape[0]
    return np.sum(value) / b, mask * (rho * adv * active / n / b)[:, None]


def ctpo_objective(
    logp_new,
    logp_old,
    mask,
    advantages,
    eps_low: float = CTPO_CLIP[0],
    eps_high: float = CTPO_CLIP[1],
    power: float = CTPO_CLIP[2],
    log_ratio_cap: float = CTPO_LOG_RATIO_CAP,
) -> float:
    """J_CTPO = mean_i 1/|o_i| sum_t min(rho_it^cum A_i, clip(rho_it^cum, e^(-eps_low t^p), e^(eps_high t^p)) A_i)
    (§3.3).

    rho_t^cum is e^(min(log rho_t^cum, log_ratio_cap)): log rho_t^cum sums thousands of token
    log ratios on long responses, and its exponential overflows (float64 past 709, float32 past
    88), which turns the value into inf or NaN and the gradient into NaN (inf times a zero
    derivative of the clip). The cap leaves the objective and its gradient exactly unchanged
    wherever log rho_t^cum <= cap, and wherever the clip binds from above (A > 0 and
    rho_t^cum > e^(eps_high t^p), with that bound below e^cap: the term is the constant bound
    times A, and the capped ratio still exceeds the bound). It acts only on the un-clipped side
    beyond e^cap, where the term is held at e^cap A with zero gradient: a negative advantage on a
    prefix made more than e^cap times likelier, or a bound above e^cap. Small ratios need no
    cap: e^(log rho) underflows to 0 with a zero gradient. ``log_ratio_cap = inf`` is the
    uncapped form.
    """
    return float(_ctpo_terms(logp_new, logp_old, mask, advantages, eps_low, eps_high, power, log_ratio_cap)[0])


def _ctpo_terms(
    logp_new,
    logp_old,
    mask,
    advantages,
    eps_low=CTPO_CLIP[0],
    eps_high=CTPO_CLIP[1],
    power=CTPO_CLIP[2],
    log_ratio_cap=CTPO_LOG_RATIO_CAP,
):
    log_rho = log_cumulative_ratio(logp_new, logp_old, mask)
    adv = _advantages(advantages, log_rho.shape[0])[:, None]
    value, own = _cumulative_terms(log_rho, adv, eps_low, eps_high, power, log_ratio_cap)
    weight = _sequence_mean_weights(np.asarray(mask, dtype=bool))
    return np.sum(value * weight), own * weight


def _cumulative_terms(log_rho, adv, eps_low, eps_high, power, log_ratio_cap, dual_clip=None):
    """Per-token terms min(rho A, clip(rho, e^(-eps_low t^p), e^(eps_high t^p)) A) with
    rho = e^(min(log rho, log_ratio_cap)), and each term's derivative with respect to its own
    token's log-prob: rho A where the kept side is the unclipped one and log rho <= cap (a clamp
    passes no gradient above it), else 0. With ``dual_clip`` (CTPO's released code), a term
    with A < 0 is max(term, A e^(dual_clip t^p)), a constant where that binds."""
    if not log_ratio_cap >= 0:
        raise ValueError(f"log_ratio_cap must be >= 0 (inf: no cap); got {log_ratio_cap}")
    t = np.arange(1, log_rho.shape[1] + 1)
    low, high = adaptive_clip_bounds(t, eps_low, eps_high, power)
    rho = np.exp(np.minimum(log_rho, log_ratio_cap))
    value, active = _surrogate(rho, adv, low[None, :], high[None, :])
    active &= log_rho <= log_ratio_cap
    if dual_clip is not None:
        floor = adv * dual_clip_threshold(t, dual_clip, power)[None, :]
        dual = (adv < 0) & (value < floor)
        value, active = np.where(dual, floor, value), active & ~dual
    return value, rho * adv * active


def dual_clip_threshold(t, dual_clip: float = RELEASED_DUAL_CLIP, power: float = CTPO_CLIP[2]):
    """e^(dual_clip t^p): the ratio above which CTPO's released code holds a negative-advantage term
    at A e^(dual_clip t^p) (core_algos.py:1597 and 1608-1610); t >= 1 (1-based positions)."""
    dual_clip = float(checks.nonnegative("dual_clip", dual_clip))
    return adaptive_clip_bounds(t, 0.0, dual_clip, power)[1]


def ctpo_released_objective(
    logp_new,
    logp_old,
    mask,
    advantages,
    eps_low: float = CTPO_CLIP[0],
    eps_high: float = CTPO_CLIP[1],
    power: float = CTPO_CLIP[2],
    dual_clip: float = RELEASED_DUAL_CLIP,
    token_log_ratio_clamp: float = RELEASED_TOKEN_LOG_RATIO_CLAMP,
    log_ratio_cap: float = RELEASED_LOG_RATIO_CAP,
    aggregation: str = "token_mean",
) -> float:
    """Minus the policy loss of CTPO's released code (cum-token-cumprod-la; constants above):
    the aggregate of the per-token terms

        A >= 0:  min(rho_t A, clip(rho_t, e^(-eps_low t^p), e^(eps_high t^p)) A)   (§3.3's J_CTPO term)
        A < 0:   max(that, A e^(dual_clip t^p))                                    (the dual clip)

    with rho_t = e^(min(log rho_t, log_ratio_cap)) and log rho_t = sum_{t' <= t} clip(log r_t', -c, c),
    c = ``token_log_ratio_clamp`` (core_algos.py:1569-1585, 1604-1624). ``aggregation``:
    ``token_mean`` (sum over the batch's real tokens / their number: agg_loss "token-mean",
    core_algos.py:1056-1063, the loss_agg_mode of actor.yaml:100 that ctpo.sh keeps) or
    ``sequence_mean`` (the paper's 1/G sum_i 1/|o_i| sum_t).

    The code differentiates log rho_t = sg(log rho_t) + logp_t - sg(logp_t) (core_algos.py:1583):
    the value is the cumulative log ratio, the gradient that of the current token alone, so
    the prefix ratio rho_{t-1}^cum is a constant, as in Prop 1's estimator
    sum_t rho_t^cum A grad log pi(a_t | s_t). That gradient, ``objective_gradient("ctpo_released",
    ...)``, is therefore not the derivative of this value, which depends on every earlier token.
    ``eps_low = -log(1 - e_low)``, ``eps_high = log(1 + e_high)``, ``dual_clip = log(c)``, ``power
    = 0`` give the fixed-clip mode cum-token-cumprod (core_algos.py:1343-1411: ratio-space clip
    [1 - e_low, 1 + e_high] with e_low = e_high = 0.2 and dual-clip constant c = 3, actor.yaml:36-42, 79).
    """
    return float(
        _ctpo_released_terms(
            logp_new,
            logp_old,
            mask,
            advantages,
            eps_low,
            eps_high,
            power,
            dual_clip,
            token_log_ratio_clamp,
            log_ratio_cap,
            aggregation,
        )[0]
    )


def _ctpo_released_terms(
    logp_new,
    logp_old,
    mask,
    advantages,
    eps_low=CTPO_CLIP[0],
    eps_high=CTPO_CLIP[1],
    power=CTPO_CLIP[2],
    dual_clip=RELEASED_DUAL_CLIP,
    token_log_ratio_clamp=RELEASED_TOKEN_LOG_RATIO_CLAMP,
    log_ratio_cap=RELEASED_LOG_RATIO_CAP,
    aggregation="token_mean",
):
    if not token_log_ratio_clamp > 0:
        raise ValueError(f"token_log_ratio_clamp must be > 0 (inf: no clamp); got {token_log_ratio_clamp}")
    checks.choice("aggregation", aggregation, tuple(AGGREGATIONS))
    log_r, mask = _log_ratios(logp_new, logp_old, mask)
    adv = _advantages(advantages, log_r.shape[0])[:, None]
    clamped = np.clip(log_r, -token_log_ratio_clamp, token_log_ratio_clamp)
    log_rho = np.where(mask, np.cumsum(clamped, axis=1), 0.0)
    # the code's gradient reaches logp_t through the current token only: d term_t / d logp_t
    value, own = _cumulative_terms(log_rho, adv, eps_low, eps_high, power, log_ratio_cap, dual_clip)
    weight = AGGREGATIONS[aggregation](mask)
    return np.sum(value * weight), own * weight


def objective_gradient(
    objective: str, logp_new, logp_old, mask, advantages, *, detach_prefix: bool = False, **clip
) -> np.ndarray:
    """dJ/d logp_new (B, T) of ``objective`` in {"grpo", "gspo", "ctpo", "ctpo_released"}: what
    autograd gives for the surrogate, and the reference the trainer's torch losses must match.

    GRPO: r_t A / (B |o|) where the clip does not bind. GSPO: every token of sequence i gets
    rho_i A_i / (B |o_i|) (d rho^GSPO / d logp_t = rho / |o|). CTPO: rho_t^cum depends on every
    earlier token, so token t' collects sum_{t >= t'} of the active terms rho_t A / (B |o|) —
    a reverse cumulative sum that weights early tokens more. With ``detach_prefix=True``
    the prefix ratio rho_{t-1}^cum is treated as a constant, and token t gets only its own
    term rho_t A / (B |o|): the estimator of Prop 1, sum_t rho_t^cum A grad log pi(a_t | s_t).
    ctpo_released: the gradient CTPO's released code backpropagates (:func:`ctpo_released_objective`),
    always of the detached form: rho_t A w_t where neither the clip, the dual clip nor the cap
    binds, w_t the aggregation weight (1 / number of tokens by default).
    """
    checks.choice("objective", objective, ("grpo", "gspo", "ctpo", "ctpo_released"))
    terms = {"grpo": _grpo_terms, "gspo": _gspo_terms, "ctpo": _ctpo_terms, "ctpo_released": _ctpo_released_terms}[
        objective
    ]
    own = terms(logp_new, logp_old, mask, advantages, **clip)[1]  # the objective's clip keywords
    if objective != "ctpo" or detach_prefix:
        return own
    return np.where(np.asarray(mask, dtype=bool), np.cumsum(own[:, ::-1], axis=1)[:, ::-1], 0.0)
