"""Per-prompt success predictors for rollout allocation (VIP §5.1, App. D Algorithm 1, App. E.2).

:class:`GPSuccessPredictor` is Algorithm 1: a latent g over prompt embeddings with an RBF
kernel, p = sigmoid(g) (or v = softplus(g) for reward variances, App. E.2); each step the
batch's clipped empirical success rates are turned into latent observations, the prior
mean of every other prompt is conditioned on them, and the posterior mean becomes the
next prior (the prior covariance stays fixed). No Q x Q matrix is formed: the kernel
blocks K(X_Bc, X_B) and K(X_B, X_B) are computed from the embeddings at each step, so
memory is O(Q d + Q B).

GP_PRESETS names two settings of the GP: ``paper`` (the class defaults: Algorithm 1 with
the median-heuristic bandwidth of §5.1 and m_1 = 0) and ``released`` (the settings with which
VIP's released code trains; see GP_PRESETS). ``GPSuccessPredictor.preset(name, embeddings)``
builds one.

Baselines with the same interface (``predict(indices)``, ``update(indices, rewards)``):
:class:`MovingAveragePredictor`, :class:`RidgePredictor`, :class:`LastObservedPredictor`.

The GP also keeps the latent posterior variance of its last update (``latent_variance``) and
the posterior expectation E[p (1 - p)] it implies (``expected_success_variance``): the input of
the posterior allocation rule of theory.allocation (``vip_posterior``, ours).

Rewards passed to ``update`` are one array per prompt of the batch: +-1 or 0/1 rewards for
the success links (anything else raises), real-valued rewards for ``link="softplus"``;
``update_counts(indices, successes, trials)`` takes success counts instead.
"""

from __future__ import annotations

import numbers
from collections import deque

import numpy as np
from numpy.polynomial.hermite_e import hermegauss
from scipy import special

from theory import checks

LINKS = ("sigmoid", "softplus")
PRECISIONS = ("float32", "float64")
# Algorithm 1's clip of the observed rate; VIP does not give its value. 0.05 is about the
# add-half estimate's floor for n = 8 rollouts (1/(2n + 2)); with 1e-3 a group that is all
# right or all wrong becomes a latent observation of +-6.9, which the noiseless
# interpolation spreads to its neighbours (see the V9 rows of simulators.predictor).
EPS = 0.05
# An update is counted as ill-conditioned when it moves some prompt's latent mean by more than
# this many times the largest residual |g_obs - m_B| of its batch. With well-conditioned kernel
# weights each prompt moves by about a weighted average of the residuals (measured: at most 2.2
# over the noiseless updates of the V9 world, 1.0 with random 384-d embeddings, < 1 with binomial
# noise). A near-singular K_BB turns a disagreement between close prompts into large opposite
# weights whose small difference reaches every other prompt: one pair of random 384-d embeddings
# 0.03 apart with opposite outcomes in a batch of 16 gives 6.2 (condition number 4.7e4) and sends
# every other prompt's p_hat into [3e-8, 1 - 1e-8] (tests/test_theory_predictor.py).
AMPLIFICATION_LIMIT = 4.0

# Gauss-Hermite nodes of expected_success_variance. The integrand sigmoid(g)(1 - sigmoid(g)) is analytic in
# the strip |Im g| < pi (its poles are at g = +-i pi), so the rule converges geometrically in the number of
# nodes, the faster the smaller the latent sd (the strip is pi / sd wide in the standard normal variable;
# Trefethen & Weideman, SIAM Review 56(3), 2014, §5). Measured with 128 nodes against scipy.integrate.quad
# over means in [-12, 12]: relative error < 1e-14 for sd <= 1 (the unit kernel's largest posterior sd),
# < 1e-12 for sd <= 2, < 2e-6 for sd <= 4, < 4e-4 for sd <= 6 (a fitted variance_scale can reach these);
# tests/test_theory_posterior.py checks it against Monte Carlo.
QUADRATURE_NODES = 128
_NODES, _WEIGHTS = hermegauss(QUADRATURE_NODES)  # once: numpy finds them by an eigenvalue problem (~10 ms)
_WEIGHTS = _WEIGHTS / np.sqrt(2.0 * np.pi)  # hermegauss integrates against exp(-t^2/2): now E over N(0, 1)
_LOG_WEIGHTS = np.log(_WEIGHTS)
# variance_scale="fitted" (VarianceScaleFit): the scales c searched, 1/4 to 1024 in factors of 2, and how
# many of the most recent prompts' predictive likelihoods choose c (the window of Ridge and moving average).
SCALE_GRID = 2.0 ** np.arange(-2, 11)
SCALE_WINDOW = 1024

# Keyword arguments of GPSuccessPredictor for each named setting (GPSuccessPredictor.preset).
# ``released``: VIP's released GP (github.com/HieuNT91/VIP; the repository's head holds only a README,
# its earlier commits the code) as its trainer builds it. Read at
# src/vip/success_rate_prediction/gaussian_process.py@dc365c3af3f5ce24dbe9126c81e4fe52fe640b44 ("gp.py")
# and train/vip/vip_ray_trainer.py@87bedf7f874f1d61741268de28b4f48d39605b84 ("trainer"):
# - prior mean -5: trainer:458 passes prior_value=-5 (the same at commits bcc8a25 and d056478). The class
#   default -1 (gp.py:47) is what no training run uses; the prediction benchmarks pass -1 at d4b5732
#   (experiments/benchmark_prediction/run_benchmark.py:23) and d056478 (run_prediction.py:24), -5 at
#   5ab6aa1 (run_prediction.py:24) and 71d8029 (experiments/math/benchmark_prediction.py:24).
# - no reset of the mean: trainer:455 passes reuse_mean=True, so each fit starts from the last posterior
#   mean, as Algorithm 1 does; the class default reuse_mean=False (gp.py:44) resets it to the prior at
#   every fit (gp.py:69-70), our ``reset_mean=True``.
# - RBF kernel exp(-d^2 / (2 l^2)) on Euclidean distances (gp.py:8-9, 52; the distances are torch.cdist
#   with p=2 of unit-length all-MiniLM-L6-v2 embeddings, train/vip/cache_embeddings.py:59@bcc8a25) with a
#   fixed l = 0.27 (gp.py:48, the default the trainer keeps): our bandwidth h = l. Other commits fix
#   0.23 (d056478) or 0.5 (d4b5732, ebeec75); the median heuristic is commented out (gp.py:51).
# - jitter 1e-4 on K_BB (gp.py:74), clip eps = 1e-6 of the observed rate before the logit (gp.py:71).
# - noiseless observations: the batch's next prior is its observation (gp.py:84), our
#   ``observation_noise=None``; p_hat = sigmoid(mean), unclipped.
# The trainer fits on the per-prompt mean accuracy of the last step (trainer:48-55, 506-513).
GP_PRESETS = {
    "paper": {"bandwidth": "median", "eps": EPS, "jitter": 1e-6, "prior_mean": 0.0, "reset_mean": False},
    "released": {"bandwidth": 0.27, "eps": 1e-6, "jitter": 1e-4, "prior_mean": -5.0, "reset_mean": False},
}


# --- rewards -> observations ----------------------------------------------------------------


def _flat_rewards(rewards, min_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(all rewards concatenated, group start offsets, group sizes), each group checked."""
    arrays = [checks.real_array(f"rewards[{q}]", r) for q, r in enumerate(rewards)]
    for q, r in enumerate(arrays):
        if r.ndim != 1 or r.size < min_size:
            raise ValueError(f"rewards[{q}] must be a 1-D array of at least {min_size} reward(s); got shape {r.shape}")
    sizes = np.array([r.size for r in arrays])
    flat = np.concatenate(arrays)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    bad = ~np.isfinite(flat)
    if bad.any():
        raise ValueError(
            f"rewards[{int(np.flatnonzero(np.add.reduceat(bad, starts))[0])}] must be finite; "
            "got a NaN or infinite value"
        )
    return flat, starts, sizes


def success_rates(rewards) -> np.ndarray:
    """Mean success of each prompt's rewards: (R + 1)/2 for +-1 rewards, R for 0/1 rewards.

    Vectorised over the batch (one concatenation and segment sums), since it runs every step."""
    flat, starts, sizes = _flat_rewards(rewards, 1)
    minus, zero = np.add.reduceat(flat == -1.0, starts), np.add.reduceat(flat == 0.0, starts)
    bad = np.add.reduceat(~np.isin(flat, (-1.0, 0.0, 1.0)), starts) + ((minus > 0) & (zero > 0))
    if bad.any():
        q = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"rewards[{q}] must be all +-1 or all 0/1; "
            f"got values {sorted(set(flat[starts[q] : starts[q] + sizes[q]].tolist()))}"
        )
    total = np.add.reduceat(flat, starts)
    return np.where(minus > 0, (total + sizes) / (2 * sizes), total / sizes)


def sample_variances(rewards) -> np.ndarray:
    """Unbiased sample variance s_q^2 of each prompt's real-valued rewards (App. E.2); n_q >= 2."""
    flat, starts, sizes = _flat_rewards(rewards, 2)
    mean = np.add.reduceat(flat, starts) / sizes
    return np.add.reduceat((flat - np.repeat(mean, sizes)) ** 2, starts) / (sizes - 1)


def latent_observation(values, link: str, eps: float) -> np.ndarray:
    """Algorithm 1 line 4: logit(clip(p, eps, 1 - eps)); App. E.2: log(exp(s^2) - 1) with
    s^2 clipped below at eps (the inverse softplus is -inf at s^2 = 0, all rewards equal)."""
    values = np.asarray(values, dtype=float)
    if link == "sigmoid":
        return special.logit(np.clip(values, eps, 1.0 - eps))
    s2 = np.maximum(values, eps)
    return s2 + np.log(-np.expm1(-s2))  # log(expm1(s2)) without overflow for large s2


def link_function(g, link: str) -> np.ndarray:
    """sigmoid(g) (success probability) or softplus(g) = log(1 + e^g) (reward variance)."""
    g = np.asarray(g, dtype=float)
    return special.expit(g) if link == "sigmoid" else np.logaddexp(0.0, g)


# --- kernel ---------------------------------------------------------------------------------


def median_bandwidth(embeddings: np.ndarray, rng: np.random.Generator, pairs: int = 10_000) -> float:
    """Median heuristic: h = median ||x - x'|| over ``pairs`` random pairs of distinct prompts."""
    q = embeddings.shape[0]
    i = rng.integers(0, q, size=pairs)
    j = (i + rng.integers(1, q, size=pairs)) % q  # j != i
    h = float(np.median(np.linalg.norm(embeddings[i] - embeddings[j], axis=1)))
    if not h > 0:
        raise ValueError(
            "embeddings: the median pairwise distance is 0 (duplicate embeddings); pass bandwidth explicitly"
        )
    return h


def rbf_block(x: np.ndarray, y: np.ndarray, bandwidth: float) -> np.ndarray:
    """K(x, y) = exp(-||x - y||^2 / (2 h^2)) (§5.1), from squared norms and one matrix product,
    built in one buffer in place: a Q x Q block (the cached baseline) has no room for temporaries.
    (The GP's per-step Q x B block has its own reused-buffer path: ``_cross_kernel_times``.)"""
    scale = 1.0 / (2.0 * bandwidth**2)
    k = x @ (2.0 * scale * y.T)  # 2 s x.y, then minus s|x|^2 and s|y|^2
    k -= scale * np.einsum("ij,ij->i", x, x)[:, None]
    k -= scale * np.einsum("ij,ij->i", y, y)[None, :]
    np.minimum(k, 0.0, out=k)  # the exponent is <= 0 up to rounding
    return np.exp(k, out=k)


# --- predictors -----------------------------------------------------------------------------


class _Predictor:
    """Shared input checks: embeddings (Q, d) finite; indices unique, in range, non-empty."""

    def __init__(self, embeddings, link: str = "sigmoid", eps: float = EPS):
        x = checks.as_float_array("embeddings", embeddings)
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"embeddings must be a 2-D array (Q prompts x d) with Q >= 2; got shape {x.shape}")
        self.embeddings = x
        self.link = checks.choice("link", link, LINKS)
        if not 0.0 < eps < 0.5:
            raise ValueError(f"eps must lie in (0, 0.5); got {eps}")
        self.eps = float(eps)

    @property
    def n_prompts(self) -> int:
        return self.embeddings.shape[0]

    def _indices(self, indices) -> np.ndarray:
        idx = np.asarray(indices)
        if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"indices must be a non-empty 1-D integer array; got {idx!r}")
        if idx.min() < 0 or idx.max() >= self.n_prompts:
            raise ValueError(f"indices must lie in [0, {self.n_prompts - 1}]; got [{idx.min()}, {idx.max()}]")
        if np.unique(idx).size != idx.size:
            raise ValueError("indices must not repeat within a batch")
        return idx

    def update_counts(self, indices, successes, trials) -> None:
        """``update`` from per-prompt success counts (binary rewards): s_q of n_q rollouts correct."""
        if self.link != "sigmoid":
            raise ValueError(
                "update_counts needs link='sigmoid' (success counts); pass rewards to update() for softplus"
            )
        s, n = np.asarray(successes), np.asarray(trials)
        if (
            s.shape != n.shape
            or s.ndim != 1
            or not (np.issubdtype(s.dtype, np.integer) and np.issubdtype(n.dtype, np.integer))
        ):
            raise ValueError(
                f"successes and trials must be 1-D integer arrays of one shape; got {s.shape} and {n.shape}"
            )
        if np.any(n < 1) or np.any(s < 0) or np.any(s > n):
            raise ValueError("trials must be >= 1 and successes must lie in [0, trials]")
        self.update(indices, [np.repeat([1.0, 0.0], [k, m - k]) for k, m in zip(s.tolist(), n.tolist())])

    def _observed(self, indices, rewards) -> tuple[np.ndarray, np.ndarray]:
        """(indices, observed value per prompt: success rate or sample variance)."""
        idx = self._indices(indices)
        rewards = list(rewards)
        if len(rewards) != idx.size:
            raise ValueError(f"rewards must hold one array per index ({idx.size}); got {len(rewards)}")
        values = success_rates(rewards) if self.link == "sigmoid" else sample_variances(rewards)
        return idx, values


class GPSuccessPredictor(_Predictor):
    """Algorithm 1 (VIP App. D), recursive GP posterior mean over prompt embeddings.

    ``observation_noise=None`` is the paper: noiseless observations, so the batch's next
    prior is its own observation. ``observation_noise="binomial"`` (our option) adds the
    delta-method variance of logit(p_hat), 1/(n p(1 - p)) with p clipped like the
    observation, to K_BB: a proper posterior mean, which trusts prompts with few rollouts
    less and also moves the batch's own prior only part of the way to its observation.
    The prior covariance stays the fixed kernel matrix in both cases (Algorithm 1 line 9
    computes Sigma* but never uses it).

    Each update records ``condition_number`` (of the matrix it factorises, K_BB + noise) and
    ``amplification`` (the largest move of any prompt's latent mean over the largest residual
    of the batch), and counts in ``ill_conditioned_fits`` the updates whose amplification
    exceeds AMPLIFICATION_LIMIT: near-duplicate prompts with different outcomes, whose
    disagreement the noiseless update interpolates exactly, swinging every other prompt's p_hat.

    ``prior_mean`` is the constant latent prior m_1 (§5.1: 0, so p_hat = 1/2 before any update).
    ``reset_mean=True`` starts every update from that constant instead of the last posterior
    mean: each step then conditions on its own batch only (the released GP class's default,
    GP_PRESETS). ``bandwidth`` is a fixed kernel bandwidth or "median" (the median heuristic).

    ``latent_variance(indices)`` is the posterior variance of g that Algorithm 1's model gives
    after its last update on batch B: each update conditions the fixed prior covariance k on B
    alone, so k(x, x) - k_xB (K_BB + noise)^-1 k_Bx (the jitter alone for the paper's noiseless
    update), k(x, x) = 1 before any update. Only B's indices and the inverse of the Cholesky
    factor of K_BB + noise are kept (B x B). ``expected_success_variance(indices)`` is E[p (1 - p)] under
    g ~ N(mean, latent variance), p = sigmoid(g). ``variance_scale`` multiplies the latent
    variance: 1 is the model above; ``"fitted"`` (ours) chooses it from the rewards by
    VarianceScaleFit. For the noiseless update a scale c is the posterior variance of the GP with
    kernel amplitude c (jitter scaled alike), whose mean is Algorithm 1's; with binomial noise it
    calibrates the variance and leaves the mean as it is.
    """

    def __init__(
        self,
        embeddings,
        bandwidth="median",
        link: str = "sigmoid",
        eps: float = EPS,
        observation_noise=None,
        jitter: float = 1e-6,
        precision: str = "float32",
        rng=None,
        prior_mean: float = 0.0,
        reset_mean: bool = False,
        variance_scale=1.0,
    ):
        super().__init__(embeddings, link, eps)
        self._scale_fit = VarianceScaleFit() if isinstance(variance_scale, str) and variance_scale == "fitted" else None
        if self._scale_fit is None and not (_finite_real(variance_scale) and variance_scale > 0):
            raise ValueError(f"variance_scale must be a positive finite number or 'fitted'; got {variance_scale!r}")
        if self._scale_fit is not None and link != "sigmoid":
            raise ValueError("variance_scale='fitted' needs link='sigmoid' (it fits on success counts)")
        self._fixed_scale = 1.0 if self._scale_fit is not None else float(variance_scale)
        if not _finite_real(prior_mean):
            raise ValueError(f"prior_mean must be a finite real number (a latent value); got {prior_mean!r}")
        if not isinstance(reset_mean, bool):
            raise ValueError(f"reset_mean must be True or False; got {reset_mean!r}")
        self.prior_mean, self.reset_mean = float(prior_mean), reset_mean
        checks.choice("precision", precision, PRECISIONS)
        if observation_noise not in (None, "binomial"):
            raise ValueError(f"observation_noise must be None or 'binomial'; got {observation_noise!r}")
        if observation_noise == "binomial" and link != "sigmoid":
            raise ValueError("observation_noise='binomial' needs link='sigmoid' (binary rewards)")
        self.observation_noise = observation_noise
        self.jitter = float(checks.nonnegative("jitter", jitter))
        if isinstance(bandwidth, str) and bandwidth == "median":
            bandwidth = median_bandwidth(self.embeddings, rng if rng is not None else np.random.default_rng(0))
        if not (_finite_real(bandwidth) and bandwidth > 0):
            raise ValueError(f"bandwidth must be a positive finite number or 'median'; got {bandwidth!r}")
        self.bandwidth = float(bandwidth)
        self.mean = np.full(self.n_prompts, self.prior_mean)  # m_1 (§5.1 initialisation: 0)
        self.condition_number: float | None = None  # of the last update (see the class docstring)
        self.amplification: float | None = None
        self.ill_conditioned_fits = 0
        # the last update's batch, its noise diagonal and the lower Cholesky factor L of K_BB + noise;
        # L^-1 (latent_variance) is computed from L on first use, since most rules never ask for it
        self._last_batch, self._last_noise, self._last_factor = None, None, None
        self._last_whitener = None
        # The (Q x B) cross-kernel block is the step's whole cost; in float32 it is ~10x faster
        # (matrix product and exp) and its entries are accurate to ~1e-7 relative. Rows are
        # stored augmented, [x, -s|x|^2, 1] with s = 1/(2 h^2): see _cross_kernel_times.
        x = self.embeddings.astype(precision)
        self._sq = np.einsum("ij,ij->i", x, x)
        scale = 1.0 / (2.0 * self.bandwidth**2)
        self._rows = np.hstack(
            [x, (-scale * self._sq)[:, None].astype(precision), np.ones((len(x), 1), dtype=precision)]
        )
        self._buffer = None

    @classmethod
    def preset(cls, name: str, embeddings, **overrides) -> GPSuccessPredictor:
        """The GP with the settings GP_PRESETS[name] (``paper`` or ``released``); ``overrides``
        set any other keyword (precision, rng, observation_noise, ...)."""
        settings = GP_PRESETS[checks.choice("preset", name, tuple(GP_PRESETS))]
        return cls(embeddings, **(settings | overrides))

    def predict(self, indices) -> np.ndarray:
        """p_hat = sigmoid(m_t(x_q)) (or the softplus variance) for the given prompts."""
        return link_function(self.mean[self._indices(indices)], self.link)

    @property
    def variance_scale(self) -> float:
        """The factor of latent_variance: the fixed one, or VarianceScaleFit's current choice."""
        return self._fixed_scale if self._scale_fit is None else self._scale_fit.scale

    def update(self, indices, rewards, chunk: int = 16_384) -> None:
        """One step of Algorithm 1 with the batch's rewards (one array per prompt)."""
        idx, values = self._observed(indices, rewards)
        held_out = (self.mean[idx], self._unit_variance(idx)) if self._scale_fit is not None else None
        g_obs = latent_observation(values, self.link, self.eps)
        noise = np.full(idx.size, self.jitter)
        if self.observation_noise == "binomial":
            n = np.array([len(r) for r in rewards], dtype=float)
            p = np.clip(values, self.eps, 1 - self.eps)
            noise = noise + 1.0 / (n * p * (1 - p))
        x_b = self.embeddings[idx]
        k_bb = rbf_block(x_b, x_b, self.bandwidth)  # B x B in float64: it is factorised
        matrix = k_bb + np.diag(noise)
        whitener = _whitener(_cholesky(matrix))
        condition_number = _condition_number(whitener, matrix)
        if held_out is not None:  # the prediction the rewards test: the one made before conditioning on them
            trials = np.array([len(r) for r in rewards], dtype=float)
            self._scale_fit.observe(*held_out, np.rint(values * trials), trials)
        prior = np.full(self.n_prompts, self.prior_mean) if self.reset_mean else self.mean
        residual = g_obs - prior[idx]
        alpha = whitener.T @ (whitener @ residual)  # Sigma_BB^-1 (g_obs - m_B) = L^-T L^-1 (g_obs - m_B)
        new_mean = prior.copy()
        new_mean += self._cross_kernel_times(idx, alpha, chunk)
        # line 11: the batch's next prior is its observation (noiseless) or its posterior mean
        new_mean[idx] = g_obs if self.observation_noise is None else prior[idx] + k_bb @ alpha
        largest = float(np.abs(residual).max())
        self.condition_number = condition_number
        self.amplification = float(np.abs(new_mean - prior).max()) / largest if largest > 0 else 0.0
        self.ill_conditioned_fits += self.amplification > AMPLIFICATION_LIMIT
        self.mean = new_mean
        self._last_batch, self._last_noise, self._last_whitener = idx.copy(), noise, whitener

    def latent_variance(self, indices) -> np.ndarray:
        """Var(g(x_q)) after the last update: variance_scale x (k(x, x) - k_xB (K_BB + noise)^-1 k_Bx),
        with k(x, x) = 1 (the RBF kernel's amplitude); variance_scale before any update. One (m x B)
        kernel block and one product with the stored L^-1, O(m B (d + B)) for m prompts."""
        return self.variance_scale * self._unit_variance(self._indices(indices))

    def _unit_variance(self, idx: np.ndarray) -> np.ndarray:
        """latent_variance with variance_scale 1, for checked indices."""
        if self._last_whitener is None:
            return np.ones(idx.size)
        k_xb = rbf_block(self.embeddings[idx], self.embeddings[self._last_batch], self.bandwidth)
        half = self._last_whitener @ k_xb.T  # L^-1 k_Bx, so k_xB (K_BB + noise)^-1 k_Bx = |half|^2
        return np.maximum(1.0 - np.einsum("ij,ij->j", half, half), 0.0)  # >= 0 up to rounding

    def expected_success_variance(self, indices) -> np.ndarray:
        """E[p (1 - p)] with p = sigmoid(g), g ~ N(mean, latent_variance) for each prompt, by
        Gauss-Hermite quadrature with QUADRATURE_NODES nodes (numpy's hermegauss: weight exp(-t^2/2),
        so g = m + sd t); equal to p_hat (1 - p_hat) when the variance is 0."""
        if self.link != "sigmoid":
            raise ValueError(
                "expected_success_variance needs link='sigmoid' (p = sigmoid(g), binary rewards); "
                f"got link={self.link!r}, whose latent is a reward variance"
            )
        idx = self._indices(indices)
        g = _latent_nodes(self.mean[idx], self.latent_variance(idx))
        return (special.expit(g) * special.expit(-g)) @ _WEIGHTS

    def state_dict(self) -> dict:
        """What changes with updates: the prior mean (the kernel is fixed by the embeddings), the
        last update's batch and noise diagonal (its factor is recomputed from them on load) and
        the record of the fits; with variance_scale="fitted", the fit's window (a state without it
        loads as an empty window, scale 1)."""
        fits = {"condition_number": self.condition_number, "amplification": self.amplification}
        last = {
            "last_batch": None if self._last_batch is None else self._last_batch.copy(),
            "last_noise": None if self._last_noise is None else self._last_noise.copy(),
        }
        scale = {} if self._scale_fit is None else {"variance_scale_fit": self._scale_fit.state_dict()}
        return {"mean": self.mean.copy(), **last, **scale, **fits, "ill_conditioned_fits": self.ill_conditioned_fits}

    def load_state_dict(self, state: dict) -> None:
        mean = np.asarray(state["mean"], dtype=float)
        if mean.shape != self.mean.shape:
            raise ValueError(
                f"state['mean'] must have shape {self.mean.shape} (one entry per prompt); got {mean.shape}"
            )
        last = self._last_update(state.get("last_batch"), state.get("last_noise"))
        if self._scale_fit is not None:
            self._scale_fit.load_state_dict(state.get("variance_scale_fit", {"batches": []}))
        self.mean = mean.copy()
        self._last_batch, self._last_noise, self._last_whitener = last
        self.condition_number, self.amplification = state.get("condition_number"), state.get("amplification")
        self.ill_conditioned_fits = int(state.get("ill_conditioned_fits", 0))

    def _last_update(self, batch, noise) -> tuple:
        """(batch, noise, Cholesky factor of K_BB + noise) of a state's last update, checked; all
        None for a state without one (no update yet, or a state saved without it: the variance is
        then the prior's)."""
        if batch is None or noise is None:
            return None, None, None
        try:
            batch = self._indices(batch)
        except ValueError as exc:
            raise ValueError(f"state['last_batch']: {exc}") from None
        noise = np.asarray(noise, dtype=float)
        if noise.shape != batch.shape or not np.all(np.isfinite(noise) & (noise >= 0)):
            raise ValueError(
                f"state['last_noise'] must hold one finite value >= 0 per index of state['last_batch'] "
                f"({batch.size}); got shape {noise.shape}"
            )
        x_b = self.embeddings[batch]
        return batch.copy(), noise.copy(), _whitener(_cholesky(rbf_block(x_b, x_b, self.bandwidth) + np.diag(noise)))

    def _cross_kernel_times(self, idx: np.ndarray, alpha: np.ndarray, chunk: int) -> np.ndarray:
        """K(X, X_B) alpha for every prompt. The exponent -s ||x - y||^2 (s = 1/(2 h^2)) is one
        matrix product of augmented rows [x, -s|x|^2, 1] . [2 s y, 1, -s|y|^2], computed a
        slice of rows at a time into one reused buffer (fresh 35 MB blocks each step cost page
        faults comparable to the arithmetic)."""
        scale = 1.0 / (2.0 * self.bandwidth**2)
        dtype = self._rows.dtype
        cols = np.empty((self._rows.shape[1], idx.size), dtype=dtype)
        cols[:-2] = (2.0 * scale * self._rows[idx, :-2]).T
        cols[-2] = 1.0
        cols[-1] = -scale * self._sq[idx]
        alpha = alpha.astype(dtype)
        if self._buffer is None or self._buffer.shape != (chunk, idx.size):
            self._buffer = np.empty((chunk, idx.size), dtype=dtype)
        out = np.empty(self.n_prompts)
        for start in range(0, self.n_prompts, chunk):
            stop = min(start + chunk, self.n_prompts)
            k = np.matmul(self._rows[start:stop], cols, out=self._buffer[: stop - start])
            np.minimum(k, 0.0, out=k)  # the exponent is <= 0 up to rounding
            out[start:stop] = np.exp(k, out=k) @ alpha
        return out


def _latent_nodes(mean: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """The Gauss-Hermite nodes of g ~ N(mean, variance), one row per prompt: mean + sd t_i."""
    return mean[:, None] + np.sqrt(variance)[:, None] * _NODES[None, :]


class VarianceScaleFit:
    """The scale c of a GP's latent variance, by maximum one-step-ahead predictive likelihood (ours).

    Before an update the GP predicts each batch prompt's latent as g_q ~ N(m_q, c v_q); the rewards
    then give s_q successes of n_q, whose predictive probability is E[p^s (1 - p)^(n - s)] (times
    a binomial coefficient free of c), p = sigmoid(g), by the Gauss-Hermite rule of
    expected_success_variance. ``scale`` is the c of SCALE_GRID that maximises the summed log
    probability over the batches of the last ``window`` prompts (1 before any): an empirical-Bayes
    choice of the variance's scale on observations the GP had not yet conditioned on.
    """

    def __init__(self, window: int = SCALE_WINDOW):
        self.window = int(window)
        self._batches: deque = deque()  # (prompts, summed log-likelihood at each SCALE_GRID value)

    @property
    def scale(self) -> float:
        if not self._batches:
            return 1.0
        return float(SCALE_GRID[np.argmax(sum(ll for _, ll in self._batches))])

    def observe(self, mean, variance, successes, trials) -> None:
        """Add one batch: its predictive means and unit-scale variances, success and trial counts."""
        g = _latent_nodes(np.repeat(mean, SCALE_GRID.size), np.outer(variance, SCALE_GRID).ravel())
        k, n = (np.repeat(c, SCALE_GRID.size)[:, None] for c in (successes, trials))
        log_sigmoid = special.log_expit(g)
        log_prob = n * log_sigmoid - (n - k) * g  # log p^k (1 - p)^(n - k), log(1 - p) = log p - g
        ll = special.logsumexp(log_prob + _LOG_WEIGHTS, axis=1).reshape(len(mean), SCALE_GRID.size).sum(axis=0)
        self._batches.append((len(mean), ll))
        while sum(size for size, _ in self._batches) - self._batches[0][0] >= self.window:
            self._batches.popleft()

    def state_dict(self) -> dict:
        return {"batches": [(size, ll.copy()) for size, ll in self._batches]}

    def load_state_dict(self, state: dict) -> None:
        batches = [(int(size), np.asarray(ll, dtype=float)) for size, ll in state["batches"]]
        if any(ll.shape != SCALE_GRID.shape for _, ll in batches):
            raise ValueError(
                f"state['variance_scale_fit'] must hold one log-likelihood per SCALE_GRID value ({SCALE_GRID.size})"
            )
        self._batches = deque(batches)


def _finite_real(value) -> bool:
    """A finite real scalar (Python or numpy number), not a bool or a string."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and bool(np.isfinite(value))


def _cholesky(matrix: np.ndarray) -> np.ndarray:
    """The lower Cholesky factor L of K_BB + noise, or a ValueError naming the remedy.

    The B x B algebra of a step (this factor, :func:`_whitener`, :func:`_condition_number`) is
    numpy's, on the same OpenBLAS as the Q x B product. scipy.linalg loads another OpenBLAS whose
    threads spin for a while after each call; a scipy LAPACK call between numpy products (or the
    reverse) shared the 2 cores with the other library's spinning threads, which made a 512 x 512
    Cholesky or inverse take 7-61 ms and, in the V10 loop, the product ~25x slower (measured)."""
    try:
        return np.linalg.cholesky(matrix)
    except np.linalg.LinAlgError:
        raise ValueError(
            "K_BB + noise is singular (identical embeddings in one batch with jitter = 0?); "
            "use jitter > 0 or observation_noise='binomial'"
        ) from None


def _whitener(lower_factor: np.ndarray) -> np.ndarray:
    """L^-1 for the lower Cholesky factor L (:func:`_lower_inverse`), kept instead of L so that
    the step's solve (K_BB + noise)^-1 r = L^-T (L^-1 r) and latent_variance are matrix
    products. L's diagonal is positive, so the inverse exists."""
    return _lower_inverse(lower_factor)


def _lower_inverse(lower: np.ndarray, block: int = 64) -> np.ndarray:
    """The inverse of a lower-triangular matrix by halves, [[A, 0], [C, D]]^-1 =
    [[A^-1, 0], [-D^-1 C A^-1, D^-1]], down to blocks of ``block`` rows inverted by LAPACK
    (their rounding above the diagonal zeroed): LAPACK's trtri recursion, in matrix products.
    Written by hand because numpy has no triangular inverse or solve (trtri and trsm are
    scipy's, on the second OpenBLAS :func:`_cholesky` avoids); ``np.linalg.inv`` of the whole
    factor, an LU of a matrix already triangular, took 11 ms at B = 512 against 2.5 ms here."""
    n = lower.shape[0]
    if n <= block:
        return np.tril(np.linalg.inv(lower))
    h = n // 2
    head, tail = _lower_inverse(lower[:h, :h], block), _lower_inverse(lower[h:, h:], block)
    out = np.zeros_like(lower)
    out[:h, :h], out[h:, h:] = head, tail
    out[h:, :h] = -tail @ (lower[h:, :h] @ head)
    return out


def _condition_number(whitener: np.ndarray, matrix: np.ndarray) -> float:
    """The 1-norm condition number ||K||_1 ||K^-1||_1 of K = K_BB + noise, with K^-1 = L^-T L^-1
    from the whitener (one B x B product). Finite: a matrix with a Cholesky factor is invertible."""
    inverse = whitener.T @ whitener
    return float(np.abs(matrix).sum(axis=0).max() * np.abs(inverse).sum(axis=0).max())
