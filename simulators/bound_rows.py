"""What RLHF-gen's checks share: the confidence delta, the world's KL weight and clip, and the
violation-rate row that judges a high-probability bound."""

from __future__ import annotations

import numpy as np

from simulators.ledger import ClaimResult, decided

EXACT = 1e-9
DELTA = 0.1
BETA, TAU = 1.0, 2.0


def violation_row(claim_id: str, kind: str, what: str, errors: np.ndarray, bound, details: dict) -> ClaimResult:
    """Rate of errors > bound (a number, or one per draw) against delta; a claim passes (a control
    is rejected) by the ledger's one-sided z < 4 (>= 4). Tightness: the (median) bound over the
    (1 - delta)-quantile of the error."""
    N = errors.size
    rate = float(np.mean(errors > bound))
    se = float(np.sqrt(DELTA * (1 - DELTA) / N))
    z = (rate - DELTA) / se
    quantile = float(np.quantile(errors, 1 - DELTA))
    bound = float(np.median(bound))
    details = {
        **details,
        "bound": bound,
        "error_quantile": quantile,
        "tightness": bound / quantile if quantile > 0 else np.inf,
        "replications": N,
    }
    return decided(kind, claim_id, what, z=z, z_test="not greater", estimate=rate, se=se, theory=DELTA, details=details)
