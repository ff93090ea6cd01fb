"""Claim V14: every allocation rule a user might pick, at equal rollout budget, in one loop.

``python -m simulators --only V14``. The loop is V10's (simulators.predictor): a drifting
world of Q prompts, batches of B prompts from reshuffled passes, C = 8B rollouts per step,
+-1 rewards, RLOO. Each arm pairs a predictor with a rule of theory.allocation_rules.ALLOCATION_RULES
or a prompt selection of theory.selection; every arm sees the same world and batches (common
random numbers). Per step it records:

- the realised total gradient variance sum_q Var(G_q) at the true p of the prompts trained on
  (Prop 4.3), relative to uniform's on the same seed;
- the share of generated rollouts in all-equal groups (no gradient: every RLOO advantage is 0);
- the useful rollouts (those in groups that are not all-equal) per rollout generated;
- the rollouts generated relative to the budget C (DAPO and GRESO draw more prompts until B
  informative groups are kept; the others spend exactly C).

Choices: VIP as released runs its objective solved exactly (``vip_released`` with the released
GP settings): V13 shows that SLSQP's literal solution changes the variance by a median factor of
1.000 and would cost seconds per step here. Knapsack RL estimates p as its code does, by the
mean of each prompt's last 16 rewards, unclipped (theory.predictor_baselines.RewardBufferPredictor).
DAPO and GRESO draw refill prompts from the same reshuffled passes and allocate uniformly,
8 rollouts each, as their papers' runs do; DAPO's draw limit is 10 rounds (the DAPO 32B
script), after which the step trains on what it kept.

The overhead rows time one step's allocation (and, for the selections, the filter) at B = 512
with random p_hat; they exclude the predictor, whose cost is V12's.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from tqdm import tqdm

from simulators.ledger import ClaimResult, claim, control, report
from simulators.predictor import DriftingWorld, loop_predictor
from simulators.registry import Check, RunConfig
from simulators.timing import median_seconds
from theory.allocation_rules import ALLOCATION_RULES
from theory.predictors import allocate_step
from theory.selection import GresoSkipper, informative
from theory.variance import gradient_variance

LOWER, UPPER, PER_PROMPT = 3, 32, 8
MAX_ROUNDS = 10  # DAPO's max_num_gen_batches in its 32B script; GRESO's refill uses the same cap
# (seeds, Q, B, steps) as V10's loop, with 8 seeds in quick mode: the paired claim's SE at 4
# seeds (about 0.017) is a third of its effect
QUICK, FULL = (8, 1500, 64, 40), (10, 4000, 128, 60)
GOAL = 0.92  # the uncertainty-aware rule's target: realised variance <= 0.92 x uniform's


@dataclasses.dataclass(frozen=True)
class Arm:
    """A predictor (None, "oracle" or a name of theory.predictors.PREDICTORS), an allocation rule of
    ALLOCATION_RULES and a prompt selection ("none", "dapo", "greso")."""

    predictor: str | None
    rule: str
    selection: str = "none"
    lower: int = LOWER


ARMS = {
    "uniform": Arm(None, "uniform"),
    "VIP (paper GP)": Arm("gp", "vip"),
    "VIP released": Arm("gp_released_rescaled", "vip_released", lower=4),
    "inverse accuracy": Arm("gp", "inverse_accuracy"),
    "inverse variance": Arm("gp", "inverse_variance"),
    "Knapsack RL": Arm("reward_buffer", "knapsack", lower=2),
    "DAPO": Arm(None, "uniform", "dapo"),
    "GRESO": Arm(None, "uniform", "greso"),
    "VIP, noisy GP": Arm("gp_binomial", "vip"),
    "VIP posterior, noisy GP (ours)": Arm("gp_binomial", "vip_posterior"),
    "VIP posterior, GP fitted scale (ours)": Arm("gp_fitted", "vip_posterior"),
    "oracle p + VIP": Arm("oracle", "vip"),
}


class _Step:
    """One step of one arm: draws prompts, allocates, rolls out and applies the selection."""

    def __init__(self, arm: Arm, world: DriftingWorld, model, skipper: GresoSkipper | None, rng):
        self.arm, self.world, self.model, self.skipper, self.rng = arm, world, model, skipper, rng

    def counts(self, idx: np.ndarray, budget: int) -> np.ndarray:
        counts, _ = allocate_step(self.arm.rule, self.model, idx, budget, self.arm.lower, UPPER, "rloo", rng=self.rng)
        return counts

    def run(self, draw, batch: int) -> dict:
        """Trained prompts, their counts, and the rollouts generated in all (kept or not)."""
        idx = draw(batch)
        if self.skipper is not None:
            idx = self._unskipped(idx, draw, batch)
        n = self.counts(idx, PER_PROMPT * idx.size)
        rewards = self.world.rollouts(self.rng, idx, n)
        seen = [(idx, rewards)]
        if self.arm.selection != "none":
            idx, n, rewards, seen = self._refill(idx, n, rewards, draw, batch)
        return {"idx": idx, "n": n, "rewards": rewards, "seen": seen}

    def _unskipped(self, idx, draw, batch):
        kept = idx[~self.skipper.skip(idx, self.rng)]
        for _ in range(MAX_ROUNDS - 1):
            if kept.size >= batch:
                break
            fresh = draw(batch)
            kept = np.concatenate([kept, fresh[~self.skipper.skip(fresh, self.rng)]])
        return kept[:batch]

    def _refill(self, idx, n, rewards, draw, batch):
        """DAPO's loop: keep informative groups; draw, allocate uniformly and roll out more
        prompts until B are kept or MAX_ROUNDS rounds have run; the first B kept are trained."""
        seen = [(idx, rewards)]
        keep = informative(rewards)
        kept = [(q, k, r) for q, k, r, good in zip(idx, n, rewards, keep) if good]
        for _ in range(MAX_ROUNDS - 1):
            if len(kept) >= batch:
                break
            fresh = draw(batch)
            if self.skipper is not None:
                fresh = fresh[~self.skipper.skip(fresh, self.rng)]
            more = self.world.rollouts(self.rng, fresh, np.full(fresh.size, PER_PROMPT))
            seen.append((fresh, more))
            kept += [(q, PER_PROMPT, r) for q, r, good in zip(fresh, more, informative(more)) if good]
        kept = kept[:batch]
        return (
            np.array([q for q, _, _ in kept], dtype=int),
            np.array([k for _, k, _ in kept], dtype=int),
            [r for _, _, r in kept],
            seen,
        )


class _Passes:
    """Prompts in passes over a shuffled dataset, reshuffled at the end of each pass (as
    simulators.predictor.batches), drawn ``k`` at a time: the first draw of every step is a
    V10 batch; DAPO and GRESO draw their refills from the same passes."""

    def __init__(self, rng: np.random.Generator, n_prompts: int):
        self.rng, self.n_prompts = rng, n_prompts
        self.order, self.pos = rng.permutation(n_prompts), 0

    def draw(self, k: int) -> np.ndarray:
        if self.pos + k > self.n_prompts:
            self.order, self.pos = self.rng.permutation(self.n_prompts), 0
        self.pos += k
        return self.order[self.pos - k : self.pos]


def _adapt(skipper: GresoSkipper, seen) -> None:
    """GRESO's once-per-step adaptation from the step's groups (all correct: easy, all wrong:
    hard), from the first step in which a drawn prompt has a history (its second epoch)."""
    idx = np.concatenate([i for i, _ in seen])
    if not skipper.seen(idx).any():
        return
    groups = [r for _, rs in seen for r in rs]
    skipper.adapt(np.mean([np.all(r > 0) for r in groups]), np.mean([np.all(r < 0) for r in groups]))


def arm_run(seed_seq, arm: Arm, q: int, batch: int, steps: int) -> dict:
    """One arm over ``steps`` steps of a world seeded by ``seed_seq`` (the same for every arm)."""
    rng = np.random.default_rng(seed_seq)
    world = DriftingWorld.random(rng, q, steps=steps)
    model = loop_predictor(arm.predictor, world)
    skipper = GresoSkipper(q) if arm.selection == "greso" else None
    step = _Step(arm, world, model, skipper, rng)
    draw = _Passes(rng, q).draw
    variance, wasted, useful, generated, trained_equal = [], [], [], [], []
    for _ in range(steps):
        out = step.run(draw, batch)
        truth = world.p(out["idx"])
        variance.append(float(np.sum(gradient_variance("rloo", out["n"], p=truth))))
        trained_equal.append(float(np.mean([np.ptp(r) == 0 for r in out["rewards"]])))
        made = [r for _, rs in out["seen"] for r in rs]
        total = sum(len(r) for r in made)
        wasted.append(sum(len(r) for r in made if np.ptp(r) == 0) / total)
        useful.append(sum(len(r) for r in made if np.ptp(r) > 0) / total)
        generated.append(total / (PER_PROMPT * batch))
        if skipper is not None:
            _adapt(skipper, out["seen"])
        for seen_idx, seen_rewards in out["seen"]:
            if model is not None:
                model.update(seen_idx, seen_rewards)
            if skipper is not None:
                skipper.observe(seen_idx, [float(np.mean(r > 0)) for r in seen_rewards])
        world.advance()
    return {
        "variance": float(np.mean(variance)),
        "wasted": float(np.mean(wasted)),
        "useful": float(np.mean(useful)),
        "generated": float(np.mean(generated)),
        "trained_all_equal": float(np.mean(trained_equal)),
    }


def _summary(runs: list[dict]) -> dict:
    """Per arm: variance / uniform (mean over seeds, SE), the useful share's difference to
    uniform's on the same seeds (paired, SE), and the other metrics' means and SEs."""
    out = {}
    for name in ARMS:
        ratio = np.array([r[name]["variance"] / r["uniform"]["variance"] for r in runs])
        gain = np.array([r[name]["useful"] - r["uniform"]["useful"] for r in runs])
        out[name] = {
            "variance_vs_uniform": float(ratio.mean()),
            "se": float(ratio.std(ddof=1) / np.sqrt(ratio.size)),
            "useful_vs_uniform": float(gain.mean()),
            "useful_vs_uniform_se": float(gain.std(ddof=1) / np.sqrt(gain.size)),
        }
        for key in ("wasted", "useful", "generated", "trained_all_equal"):
            values = np.array([r[name][key] for r in runs])
            out[name][key], out[name][f"{key}_se"] = (
                float(values.mean()),
                float(values.std(ddof=1) / np.sqrt(values.size)),
            )
    return out


def _paired_claim(runs: list[dict], ours: str, theirs: str, kind, details: dict) -> ClaimResult:
    """``ours`` realises less variance (relative to uniform) than ``theirs``, paired over seeds
    (same worlds and batches): z = mean difference / its SE, judged "greater" (z >= 4)."""
    diff = np.array([(r[theirs]["variance"] - r[ours]["variance"]) / r["uniform"]["variance"] for r in runs])
    se = float(diff.std(ddof=1) / np.sqrt(diff.size))
    return kind(
        "V14",
        f"{ours} below {theirs} in realised variance / uniform, paired over {diff.size} seeds: {diff.mean():+.3f}",
        z=float(diff.mean() / se),
        z_test="greater",
        estimate=float(diff.mean()),
        se=se,
        theory=0.0,
        details=details,
    )


def overhead(rng: np.random.Generator, repeats: int) -> dict:
    """Seconds per step of each arm's allocation (and the selection's filter) at B = 512."""
    b = 512
    p_hat = rng.uniform(size=b)
    rewards = [np.where(rng.random(PER_PROMPT) < p, 1.0, -1.0) for p in p_hat]
    spread = p_hat * (1 - p_hat)
    seconds = {}
    for name, arm in ARMS.items():
        rule = ALLOCATION_RULES[arm.rule]
        extra = {"success_variance": spread} if rule.uses_posterior else {}

        def step(rule=rule, arm=arm, extra=extra):
            rule.allocate(p_hat, PER_PROMPT * b, arm.lower, UPPER, "rloo", rng=rng, **extra)
            if arm.selection != "none":
                informative(rewards)

        seconds[name] = median_seconds(step, repeats)
    return seconds


def run_peers(config: RunConfig, rng: np.random.Generator) -> list[ClaimResult]:
    """V14: the loop with every arm (module docstring), then the overhead at B = 512."""
    seeds, q, batch, steps = FULL if config.full else QUICK
    runs = []
    for _ in tqdm(range(seeds), desc="V14 loop", disable=None if config.progress else True, leave=False):
        seed = rng.integers(2**63)
        runs.append({name: arm_run(seed, arm, q, batch, steps) for name, arm in ARMS.items()})
    summary = _summary(runs)
    seconds = overhead(rng, 20 if config.full else 5)
    details = {"summary": summary, "seconds": seconds, "seeds": seeds, "Q": q, "B": batch, "steps": steps}
    best = min((n for n in summary if n.endswith("(ours)")), key=lambda n: summary[n]["variance_vs_uniform"])
    selected = [r[name]["trained_all_equal"] for r in runs for name, arm in ARMS.items() if arm.selection != "none"]
    rows = [
        _paired_claim(runs, "VIP posterior, GP fitted scale (ours)", "VIP (paper GP)", claim, details),
        _paired_claim(runs, "VIP posterior, noisy GP (ours)", "VIP, noisy GP", control, details),
        claim(
            "V14",
            f"DAPO and GRESO train on no all-equal group [{len(selected)} runs]",
            at_most=0.0,
            statistic=max(selected),
            stat_name="max share",
            details=details,
        ),
        control(
            "V14",
            "uniform allocation trains on no all-equal group",
            at_most=0.0,
            statistic=max(r["uniform"]["trained_all_equal"] for r in runs),
            stat_name="max share",
            details=details,
        ),
        report(
            "V14",
            f"goal <= {GOAL} x uniform: the best rule of ours, {best}, reaches "
            f"{summary[best]['variance_vs_uniform']:.3f} +- {summary[best]['se']:.3f}",
            details=details,
            estimate=summary[best]["variance_vs_uniform"],
            se=summary[best]["se"],
            theory=GOAL,
        ),
    ]
    for name, s in summary.items():
        what = (
            f"{name}: variance / uniform {s['variance_vs_uniform']:.3f} +- {s['se']:.3f}, rollouts in all-equal "
            f"groups {100 * s['wasted']:.0f}%, useful / generated {s['useful']:.2f}, generated / C "
            f"{s['generated']:.2f}, {1e3 * seconds[name]:.2f} ms per step at B = 512"
        )
        rows.append(report("V14", what, details=details, estimate=s["variance_vs_uniform"], se=s["se"], theory=1.0))
    return rows


CHECKS = [
    Check(
        "allocation_peers",
        ("V14",),
        run_peers,
        "every allocation rule and prompt selection at equal budget in V10's drifting loop",
    )
]


if __name__ == "__main__":
    from simulators.cli import main

    raise SystemExit(main(topics=("allocation_peers",), prog="python -m simulators.allocation_peers"))
