"""How the KL's sequence log ratio l is clipped (``kl_clip``; RLHF-gen §6.1): one table,
:data:`KL_CLIPS`, name -> tau(|l| of the step's rollouts, config). numpy only, so that the
config's checks import no torch; the clipped penalty itself is trainer.losses.kl_penalty.
"""

from __future__ import annotations

from theory.bounds import optimal_tau


def _tau_star(abs_l, config):
    """Corollary 3: the (1 - 2 alpha)-quantile of |l| (theory.bounds.optimal_tau), n = prompts,
    K = floor(C / n)."""
    n = config.prompts_per_step
    return optimal_tau(abs_l, n, config.rollout_budget // n, config.kl_delta)


KL_CLIPS = {"none": lambda abs_l, config: None, "fixed": lambda abs_l, config: config.kl_tau, "tau_star": _tau_star}
