"""Calibration of the App. B assumption tests (claim V11): size under the null and power
under alternatives, at the paper's setting (Q = 600 questions, n = 16 rollouts) and others.

``python -m simulators.stats_calibration [--full]``.

Size is the rejection rate at alpha = 0.05 over independent replications, compared with
alpha by z = (rate - alpha) / sqrt(alpha (1 - alpha) / reps), |z| < 4, with a 95 % Wilson
interval in the record. Claims are made where each test's null distribution should hold:

- Fisher (B.1), Edgington (B.2): rewards R ~ N(0, 1) independent of Z, so each Pearson t
  test is exact; at (Q, n) = (600, 16), (50, 8) and (50, 64);
- O'Brien (B.4): normal Z, identical across questions; same settings;
- Levene with median centring (B.3): normal Z with large groups (Q, n) = (50, 64). Its F
  approximation is a large-n one: the median makes the deviations of a group dependent,
  E[W] falls below 1 (about 0.90 at n = 16) and with Q - 1 numerator degrees of freedom
  the test stops rejecting. The paper's setting is therefore a report row.

Reports: Levene at the paper's setting; Levene and O'Brien on log-normal (skewed) Z, the
shape of real gradient norms; the correlation tests with binary +-1 rewards, moderate p
(the paper's setting) and very unequal p (0.02 / 0.98), where most questions have constant
rewards and are excluded and the rest hang on one or two rollouts.
Power: Corr(R, log Z) = rho for the correlation tests; Var(Z_q) spread by exp(tau u_q),
u_q ~ N(0, 1), for the variance tests.
Negative controls: Fisher's statistic referred to chi2(Q) instead of chi2(2Q), and
Bartlett's normal-theory test on log-normal Z; the size check must reject both.
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from statsmodels.stats.proportion import proportion_confint
from tqdm import tqdm

from simulators.ledger import ClaimResult, decided, report
from simulators.mc import z_score
from simulators.registry import Check, RunConfig
from stats_tests import edgington_correlation_test, fisher_correlation_test, levene_test, obrien_test

ALPHA = 0.05
LOG_SD = 0.5  # log-normal norms Z = exp(LOG_SD * N(0, 1))
PAPER, SMALL, LARGE_GROUPS = (600, 16), (50, 8), (50, 64)
TESTS = ("fisher", "edgington", "levene", "obrien")
NAMES = {
    "fisher": "Fisher (B.1)",
    "edgington": "Edgington exact (B.2)",
    "levene": "Levene median (B.3)",
    "obrien": "O'Brien (B.4)",
}
RHOS = (0.05, 0.1, 0.2)
TAUS = (0.05, 0.1, 0.2)


def draw(rng: np.random.Generator, rewards: str, norms: str, q: int, n: int, rho: float = 0.0, tau: float = 0.0):
    """Rewards and norms (q x n) of one replication.

    rewards ``normal``: (R, W) standard bivariate normal with correlation rho, where W drives
    Z; ``binary``: R = +-1 with p_q ~ Beta(2, 2); ``unequal``: p_q alternating 0.02 / 0.98.
    norms ``normal``: Z = 1 + W / 4; ``lognormal``: Z = exp(LOG_SD W). Either is scaled by
    exp(tau u_q) per question (tau > 0: unequal variances).
    """
    x = rng.standard_normal((q, n))
    w = rho * x + np.sqrt(1 - rho**2) * rng.standard_normal((q, n))
    z = 1.0 + w / 4 if norms == "normal" else np.exp(LOG_SD * w)
    z = z * np.exp(tau * rng.standard_normal((q, 1)))
    if rewards == "normal":
        return x, z
    p = rng.beta(2.0, 2.0, size=(q, 1)) if rewards == "binary" else np.where(np.arange(q) % 2 == 0, 0.02, 0.98)[:, None]
    return np.where(rng.random((q, n)) < p, 1.0, -1.0), z


def run_tests(rewards: np.ndarray, norms: np.ndarray, which) -> dict:
    """p-values of the chosen tests (and of the controls), statistics W of the variance tests."""
    out = {}
    if "fisher" in which:
        fisher = fisher_correlation_test(rewards, norms)
        out["fisher"] = fisher.pvalue
        out["fisher_wrong_dof"] = float(stats.chi2.sf(fisher.statistic, fisher.n_groups))
        out["excluded"] = fisher.excluded.total
    if "edgington" in which:
        out["edgington"] = edgington_correlation_test(rewards, norms).pvalue
    for name, test in (("levene", levene_test), ("obrien", obrien_test)):
        if name in which:
            res = test(norms)
            out[name], out[f"{name}_W"] = res.pvalue, res.statistic
    if "bartlett" in which:
        out["bartlett"] = float(stats.bartlett(*norms).pvalue)
    return out


def null_se(reps: int) -> float:
    """SE of a rejection rate over ``reps`` replications when the test holds its level ALPHA."""
    return float(np.sqrt(ALPHA * (1 - ALPHA) / reps))


def rejection_rates(rng, rewards, norms, setting, reps, which, bar=None, **alt) -> dict:
    """Rejection rate at ALPHA of each test over ``reps`` replications, with z and CI;
    the mean of W for the variance tests and of the excluded groups."""
    q, n = setting
    runs = []
    for _ in range(reps):
        runs.append(run_tests(*draw(rng, rewards, norms, q, n, **alt), which=which))
        if bar is not None:
            bar.update()
    out = {}
    for key in runs[0]:
        values = np.array([r[key] for r in runs], dtype=float)
        if key == "excluded" or key.endswith("_W"):
            out[f"mean_{key}"] = float(values.mean())
            continue
        hits = int(np.sum(values < ALPHA))
        low, high = proportion_confint(hits, reps, alpha=0.05, method="wilson")
        out[key] = {"rate": hits / reps, "z": z_score(hits / reps, null_se(reps), ALPHA), "ci95": [low, high]}
    return {"rewards": rewards, "norms": norms, "Q": q, "n": n, "reps": reps, **alt, "rates": out}


def size_row(kind: str, what: str, cells: list[dict], key: str) -> ClaimResult:
    """Worst |z| of the rejection rate of ``key`` over ``cells`` (shown with its sign). A claim passes
    and a control is rejected by the ledger's rule on max|z|: a claim needs every |z| < 4, a
    control some |z| >= 4."""
    zs = [c["rates"][key]["z"] for c in cells]
    worst = cells[int(np.argmax(np.abs(zs)))]
    rate = worst["rates"][key]
    extra = f" mean W {worst['rates'][f'mean_{key}_W']:.3f}" if f"mean_{key}_W" in worst["rates"] else ""
    label = (
        f"{what} [worst Q = {worst['Q']}, n = {worst['n']}: {rate['rate']:.3f}, "
        f"95% CI {rate['ci95'][0]:.3f}-{rate['ci95'][1]:.3f}{extra}]"
    )
    measured = {
        "estimate": rate["rate"],
        "se": null_se(worst["reps"]),
        "theory": ALPHA,
        "details": {"cells": cells, "key": key},
    }
    if kind == "report":
        return report("V11", label, statistic=float(max(zs, key=abs)), stat_name="max|z|", **measured)
    return decided(kind, "V11", label, max_abs_z=float(max(zs, key=abs)), **measured)


def run_calibration(config: RunConfig, rng: np.random.Generator) -> list[ClaimResult]:
    """V11: size, power and controls of the four App. B tests (module docstring)."""
    reps, power_reps = (2000, 1000) if config.full else (300, 200)
    plan = {  # name: (rewards, norms, settings, tests)
        "exact": ("normal", "normal", (PAPER, SMALL, LARGE_GROUPS), TESTS),
        "skewed": ("normal", "lognormal", (PAPER,), ("levene", "obrien")),
        "skewed_large": ("normal", "lognormal", (LARGE_GROUPS,), ("levene", "obrien", "bartlett")),
        "binary": ("binary", "lognormal", (PAPER,), TESTS),
        "unequal": ("unequal", "lognormal", (PAPER,), ("fisher", "edgington")),
    }
    power_settings = (PAPER, SMALL)
    total = reps * sum(len(p[2]) for p in plan.values()) + power_reps * len(power_settings) * (len(RHOS) + len(TAUS))
    bar = tqdm(total=total, desc="V11 calibration", disable=None if config.progress else True, leave=False)
    null = {
        name: [rejection_rates(rng, r, z, s, reps, which, bar=bar) for s in settings]
        for name, (r, z, settings, which) in plan.items()
    }
    power = [
        rejection_rates(rng, "normal", "lognormal", s, power_reps, ("fisher", "edgington"), bar=bar, rho=rho)
        for s in power_settings
        for rho in RHOS
    ]
    power += [
        rejection_rates(rng, "normal", "lognormal", s, power_reps, ("levene", "obrien"), bar=bar, tau=tau)
        for s in power_settings
        for tau in TAUS
    ]
    bar.close()
    exact = null["exact"]
    large = [c for c in exact if (c["Q"], c["n"]) == LARGE_GROUPS]
    paper = [c for c in exact if (c["Q"], c["n"]) == PAPER]
    rows = [
        size_row("claim", f"size of {NAMES[t]}, R normal (exact Pearson t), all settings", exact, t)
        for t in ("fisher", "edgington")
    ]
    rows.append(size_row("claim", f"size of {NAMES['obrien']}, Z normal, all settings", exact, "obrien"))
    rows.append(size_row("claim", f"size of {NAMES['levene']}, Z normal, large groups", large, "levene"))
    rows.append(size_row("report", f"size of {NAMES['levene']}, Z normal, the paper's setting", paper, "levene"))
    for t in ("levene", "obrien"):
        rows.append(
            size_row(
                "report", f"size of {NAMES[t]}, Z log-normal (sd {LOG_SD})", null["skewed"] + null["skewed_large"], t
            )
        )
    for t in TESTS:
        rows.append(size_row("report", f"size of {NAMES[t]}, binary R, p ~ Beta(2,2), Z log-normal", null["binary"], t))
    excluded = null["unequal"][0]["rates"]["mean_excluded"]
    for t in ("fisher", "edgington"):
        rows.append(
            size_row(
                "report",
                f"size of {NAMES[t]}, binary R, p = 0.02/0.98 ({excluded:.0f}/600 groups excluded)",
                null["unequal"],
                t,
            )
        )
    rows.append(
        size_row("control", "Fisher's statistic referred to chi2(Q) instead of chi2(2Q)", exact, "fisher_wrong_dof")
    )
    rows.append(size_row("control", "Bartlett's normal-theory test on log-normal Z", null["skewed_large"], "bartlett"))
    for q, n in power_settings:
        mine = [c for c in power if (c["Q"], c["n"]) == (q, n)]
        corr = ", ".join(
            f"rho {c['rho']}: F {c['rates']['fisher']['rate']:.2f} E {c['rates']['edgington']['rate']:.2f}"
            for c in mine
            if "rho" in c
        )
        var = ", ".join(
            f"tau {c['tau']}: L {c['rates']['levene']['rate']:.2f} O {c['rates']['obrien']['rate']:.2f}"
            for c in mine
            if "tau" in c
        )
        rows.append(report("V11", f"power, Q = {q}, n = {n}: {corr}; {var}", details={"cells": mine}))
    return rows


CHECKS = [
    Check(
        "stats_calibration", ("V11",), run_calibration, "size and power of the App. B tests, with broken-test controls"
    )
]


if __name__ == "__main__":
    from simulators.cli import main

    raise SystemExit(main(topics=("stats_calibration",), prog="python -m simulators.stats_calibration"))
