"""A small-scale RL study on the CPU: do the papers' effects appear in real (tiny) training runs?

    python -m rl_study                      # every comparison (about 45 minutes on 2 cores); or rlvr-study
    python -m rl_study allocation kl        # some of them
    python -m rl_study loss --seeds 5 --steps 150 --jobs 2 --out records

Setting: 1,200 problems of :mod:`rl_study.tasks`, 25 % held out: the five families mixed
(``PROBLEM_SETS["mixed"]``), or long reversals for ``loss_long``. A 2-layer
Qwen2-architecture model per seed, warmed up by 800 supervised steps of 64 on the training
problems (:mod:`rl_study.warmup`: Mean@8 on the training problems starts near 0.5 with
per-prompt success spread over [0, 1]; 500 steps start it near 0.2 with half the groups
all-wrong; RL at learning rate 1e-3 after a 300-step warm-up on 30 % of them collapses to
deterministic wrong answers); then every method of the comparison trains from that same
warmed-up model (paired by seed) for ``steps`` RL steps of 16 prompts, RLOO advantages,
learning rate 1e-4. The comparisons and the ledger claim each one speaks to are in
:mod:`rl_study.comparisons`.

Every finished piece is saved as it finishes, so a killed study resumes where it stopped: the
warmed-up model of each seed and its evaluation (``OUT/rl_study/warmup/``), and each (method,
seed) run (``OUT/rl_study/<comparison>/``). Runs go to ``--jobs`` worker processes of one torch
thread each; a run's result does not depend on the number of workers (:mod:`rl_study.runs`).
The end writes one ledger record per comparison (check ``rl_study_<comparison>``, ``report``
rows: the study has no pass/fail claim, effects may or may not appear) with, per method, the
learning curve (reward against rollouts consumed), the zero-variance-group fraction, the share
of tokens outside each loss's clip range (GRPO, GSPO: of sequences, CTPO), Pass@1/Pass@8/Mean@8/
Maj@8 on the held-out problems and on 300 training problems (the objective RL optimises) with
95 % t intervals over seeds, the paired gain over the warmed-up start, and a paired t-test of
method - baseline on Mean@8 (same seed = same warmed-up model) (:mod:`rl_study.summary`).

Layering: this package trains with :mod:`trainer` and writes records with
:mod:`simulators.ledger`; neither imports it.
"""
