"""The RL trainer (issues: trainer core, trainer at scale; not yet built)."""
