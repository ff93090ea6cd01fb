"""The RL trainer: ``python trainer/run.py`` (training) and ``python trainer/evaluate.py``.

Single process on a CPU or one GPU with ``transformers`` rollouts; see README "The trainer".
Modules, in the order a step uses them: config, data, rewards, models, allocation, rollout,
advantages, losses, loop (with checkpoint and logs); metrics for evaluation.
"""
