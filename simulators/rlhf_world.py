"""A finite RLHF world in which every population quantity of RLHF-gen (003) is exact.

Prompts x in {0..P-1} with an evaluation law rho and a labelling law rho_label; responses
y in {0..Y-1} per prompt; pi_ref and pi_theta softmax policies (pi_theta = pi_ref plus a
Student-t perturbation of the logits, so log ratios are heavy-tailed at large distance);
a target reward r* = sigmoid(s*) in [0, 1]; and a reward model r_hat = sigmoid(s_hat)
whose scores s_hat are fitted by Bradley-Terry maximum likelihood on preference pairs
drawn from D_train = rho_label x pi_ref. L_train and chi2(D_theta || D_train) are
therefore computed, not chosen.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import optimize
from scipy.special import expit, log_softmax

from theory.bounds import clipping_excess, coverage_coefficient

BT_RIDGE = 1e-2  # L2 penalty of the Bradley-Terry fit: pins each prompt's free score shift near 0


@dataclasses.dataclass(frozen=True)
class RLHFWorld:
    rho: np.ndarray  # (P,) evaluation prompts
    rho_label: np.ndarray  # (P,) labelling prompts
    log_pi_ref: np.ndarray  # (P, Y)
    log_pi_theta: np.ndarray  # (P, Y)
    r_star: np.ndarray  # (P, Y) in [0, 1]
    r_hat: np.ndarray  # (P, Y) in [0, 1], fitted

    @property
    def pi_theta(self) -> np.ndarray:
        return np.exp(self.log_pi_theta)

    @property
    def log_ratio(self) -> np.ndarray:
        """l_theta(x, y) = log pi_theta - log pi_ref."""
        return self.log_pi_theta - self.log_pi_ref

    @property
    def d_theta(self) -> np.ndarray:
        """D_theta(x, y) = rho(x) pi_theta(y | x)."""
        return self.rho[:, None] * self.pi_theta

    @property
    def d_train(self) -> np.ndarray:
        """D_train(x, y) = rho_label(x) pi_ref(y | x)."""
        return self.rho_label[:, None] * np.exp(self.log_pi_ref)

    def objective(self, reward: np.ndarray, beta: float, tau: float | None) -> float:
        """J^{r,tau}(theta) of eq. (2) (tau=None: the unclipped J^r) exactly."""
        return float(np.sum(self.d_theta * self.per_rollout(reward, beta, tau)))

    def per_rollout(self, reward: np.ndarray, beta: float, tau: float | None) -> np.ndarray:
        """r(x, y) - beta l^tau(x, y) on every (prompt, response)."""
        ell = self.log_ratio if tau is None else np.clip(self.log_ratio, -tau, tau)
        return reward - beta * ell

    def conditional_mean(self, values: np.ndarray) -> np.ndarray:
        """E_{y ~ pi_theta(. | x)}[values(x, y)] per prompt x."""
        return np.sum(self.pi_theta * values, axis=1)

    def clip_error(self, tau: float) -> float:
        """E_{D_theta}|l - l^tau| (Lemma 7), by theory.bounds.clipping_excess."""
        return clipping_excess(self.log_ratio.ravel(), tau, self.d_theta.ravel())

    def coverage(self) -> float:
        """C(theta) = sqrt(1 + chi2(D_theta || D_train)) (Definition 1), by theory.bounds."""
        return coverage_coefficient(self.d_theta.ravel(), self.d_train.ravel())

    def responses(self, prompts: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Responses pi_theta(. | prompts) by inverse CDF from uniforms u of shape prompts.shape + (K,)."""
        return inverse_cdf(self.pi_theta[prompts], u)

    def l_train(self) -> float:
        """L_train^(2)(phi) = E_{D_train}[(r_hat - r*)^2]."""
        return float(np.sum(self.d_train * (self.r_hat - self.r_star) ** 2))

    def sample(self, n: int, K: int, replications: int, rng: np.random.Generator):
        """Prompts (R, n) from rho and responses (R, n, K) from pi_theta(. | x_i)."""
        prompts = rng.choice(self.rho.size, size=(replications, n), p=self.rho)
        return prompts, self.responses(prompts, rng.random((replications, n, K)))


def inverse_cdf(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Indices drawn from the last-axis distributions ``probs`` (..., Y) with uniforms u (..., K).

    Written out because numpy's Generator.choice takes one distribution per call; the min
    guards against a cumulative sum that rounds below 1."""
    cdf = np.cumsum(probs, axis=-1)
    return np.minimum((u[..., None] > cdf[..., None, :]).sum(axis=-1), probs.shape[-1] - 1)


def make_world(
    rng: np.random.Generator, prompts: int = 20, responses: int = 6, distance: float = 1.0, pairs: int = 400
) -> RLHFWorld:
    """A random world; ``distance`` scales the t(2)-distributed logit perturbation of pi_theta."""
    rho = rng.dirichlet(np.full(prompts, 2.0))
    rho_label = rng.dirichlet(np.full(prompts, 2.0))
    ref_logits = rng.normal(size=(prompts, responses))
    log_pi_ref = log_softmax(ref_logits, axis=1)
    log_pi_theta = log_softmax(ref_logits + distance * rng.standard_t(2.0, size=(prompts, responses)), axis=1)
    s_star = rng.normal(scale=1.5, size=(prompts, responses))
    s_star -= s_star.mean(axis=1, keepdims=True)
    s_hat = fit_bradley_terry(s_star, rho_label, np.exp(log_pi_ref), pairs, rng)
    return RLHFWorld(rho, rho_label, log_pi_ref, log_pi_theta, expit(s_star), expit(s_hat))


def fit_bradley_terry(s_star, rho_label, pi_ref, pairs, rng) -> np.ndarray:
    """Scores s_hat maximising the Bradley-Terry likelihood of ``pairs`` labelled comparisons.

    Each pair: x ~ rho_label, y1, y2 ~ pi_ref(. | x) independently, label y1 > y2 with
    probability sigmoid(s*(x, y1) - s*(x, y2)). Tabular scores with a small ridge, fitted
    by L-BFGS (a convex problem; written out because it is three lines of numpy).
    """
    P, Y = s_star.shape
    x = rng.choice(P, size=pairs, p=rho_label)
    first, second = rng.random(pairs), rng.random(pairs)
    y1, y2 = inverse_cdf(pi_ref[x], np.stack([first, second], axis=1)).T
    won = rng.random(pairs) < expit(s_star[x, y1] - s_star[x, y2])
    sign = np.where(won, 1.0, -1.0)

    def loss_and_grad(flat):
        s = flat.reshape(P, Y)
        margin = sign * (s[x, y1] - s[x, y2])
        loss = np.sum(np.logaddexp(0.0, -margin)) + BT_RIDGE * np.sum(s**2)
        g_margin = -expit(-margin) * sign
        grad = 2.0 * BT_RIDGE * s
        np.add.at(grad, (x, y1), g_margin)
        np.add.at(grad, (x, y2), -g_margin)
        return loss, grad.ravel()

    fit = optimize.minimize(loss_and_grad, np.zeros(P * Y), jac=True, method="L-BFGS-B")
    return fit.x.reshape(P, Y)
