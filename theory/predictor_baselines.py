"""The predictors VIP's GP is compared with (V9, V10, V14, Table 3): a moving average and the
last observed success rate of each prompt, Knapsack RL's buffer of each prompt's last rewards,
and ridge regression on the features (Table 3's "Ridge + allocation"). Same interface as
:class:`theory.predictor.GPSuccessPredictor`.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from scipy import linalg

from theory import checks
from theory.predictor import EPS, _Predictor


class MovingAveragePredictor(_Predictor):
    """The mean of the last ``window`` observed per-prompt rates, the same for every prompt
    (VIP §6: "using 1024 most recent samples"); 0.5 before any observation."""

    def __init__(self, embeddings, window: int = 1024, link: str = "sigmoid", eps: float = EPS):
        super().__init__(embeddings, link, eps)
        self.history = deque(maxlen=int(window))

    def predict(self, indices) -> np.ndarray:
        idx = self._indices(indices)
        value = np.mean(self.history) if self.history else 0.5
        return np.full(idx.size, float(np.clip(value, self.eps, 1 - self.eps)))

    def update(self, indices, rewards) -> None:
        self.history.extend(self._observed(indices, rewards)[1])


class LastObservedPredictor(_Predictor):
    """Each prompt's last observed rate (clipped); the mean of all last rates for unseen prompts."""

    def __init__(self, embeddings, link: str = "sigmoid", eps: float = EPS):
        super().__init__(embeddings, link, eps)
        self.last = np.full(self.n_prompts, np.nan)

    def predict(self, indices) -> np.ndarray:
        idx = self._indices(indices)
        seen = self.last[~np.isnan(self.last)]
        fallback = np.mean(seen) if seen.size else 0.5
        return np.clip(np.where(np.isnan(self.last[idx]), fallback, self.last[idx]), self.eps, 1 - self.eps)

    def update(self, indices, rewards) -> None:
        idx, values = self._observed(indices, rewards)
        self.last[idx] = values


class RewardBufferPredictor(_Predictor):
    """Knapsack RL's success-rate estimate (liziniu/KnapsackRL @ca5d5f5,
    ``verl/utils/dataset/rl_dataset.py`` lines 180-195, its defaults): a prompt's rate at its
    last visit when that visit had at least ``buffer`` (16) rollouts, else the mean of its last
    ``buffer`` rewards across visits. Not clipped: exact 0s and 1s are what Knapsack RL's
    fallback acts on. A prompt never rolled out gets the mean of the seen prompts' estimates
    (0.5 before any), where the released code gives it 8 rollouts outside the knapsack."""

    def __init__(self, embeddings, buffer: int = 16):
        super().__init__(embeddings)
        if isinstance(buffer, bool) or not isinstance(buffer, (int, np.integer)) or buffer < 1:
            raise ValueError(f"buffer must be an integer >= 1; got {buffer!r}")
        self.buffer = int(buffer)
        self.recent = [deque(maxlen=self.buffer) for _ in range(self.n_prompts)]
        self.estimate = np.full(self.n_prompts, np.nan)

    def predict(self, indices) -> np.ndarray:
        idx = self._indices(indices)
        seen = self.estimate[~np.isnan(self.estimate)]
        return np.where(np.isnan(self.estimate[idx]), seen.mean() if seen.size else 0.5, self.estimate[idx])

    def update(self, indices, rewards) -> None:
        idx, rates = self._observed(indices, rewards)
        for q, rate, group in zip(idx.tolist(), rates, rewards):
            successes = np.asarray(group, dtype=float) > 0  # 0/1 and +-1 alike (success_rates checked them)
            self.recent[q].extend(successes.tolist())
            self.estimate[q] = rate if successes.size >= self.buffer else np.mean(self.recent[q])

    def state_dict(self) -> dict:
        return {"recent": [list(d) for d in self.recent], "estimate": self.estimate.copy()}

    def load_state_dict(self, state: dict) -> None:
        if len(state["recent"]) != self.n_prompts or len(state["estimate"]) != self.n_prompts:
            raise ValueError(f"the buffer's state holds another number of prompts than this run's {self.n_prompts}")
        self.recent = [deque(map(bool, r), maxlen=self.buffer) for r in state["recent"]]
        self.estimate = np.asarray(state["estimate"], dtype=float).copy()


class RidgePredictor(_Predictor):
    """Ridge regression of the observed rate on the embedding (with intercept), refitted on
    the last ``window`` observations (VIP's ablation, Table 3 / Fig. 3); predictions clipped
    to [eps, 1 - eps]. Solved in closed form on d + 1 normal equations (scikit-learn is not a
    dependency and this is one linear solve)."""

    def __init__(self, embeddings, alpha: float = 1.0, window: int = 1024, link: str = "sigmoid", eps: float = EPS):
        super().__init__(embeddings, link, eps)
        self.alpha = float(checks.nonnegative("alpha", alpha))
        self.rows: deque = deque(maxlen=int(window))
        self.coef = None

    def predict(self, indices) -> np.ndarray:
        idx = self._indices(indices)
        if self.coef is None:
            return np.full(idx.size, 0.5)
        pred = self.embeddings[idx] @ self.coef[1:] + self.coef[0]
        return np.clip(pred, self.eps, 1 - self.eps)

    def update(self, indices, rewards) -> None:
        idx, values = self._observed(indices, rewards)
        self.rows.extend(zip(idx.tolist(), values.tolist()))
        rows = np.array([r for r, _ in self.rows])
        y = np.array([v for _, v in self.rows])
        x = np.hstack([np.ones((rows.size, 1)), self.embeddings[rows]])
        penalty = self.alpha * np.eye(x.shape[1])
        penalty[0, 0] = 0.0  # the intercept is not shrunk
        self.coef = linalg.solve(x.T @ x + penalty, x.T @ y, assume_a="sym")

    def state_dict(self) -> dict:
        """The observation window (prompt index, observed rate) and the fitted coefficients."""
        return {"rows": [list(r) for r in self.rows], "coef": None if self.coef is None else self.coef.copy()}

    def load_state_dict(self, state: dict) -> None:
        self.rows.clear()
        self.rows.extend((int(q), float(v)) for q, v in state["rows"])
        coef = None if state["coef"] is None else np.asarray(state["coef"], dtype=float).copy()
        if coef is not None and coef.shape != (self.embeddings.shape[1] + 1,):
            raise ValueError(
                f"state['coef'] must have shape ({self.embeddings.shape[1] + 1},) (intercept and one per feature); "
                f"got {coef.shape}"
            )
        self.coef = coef
