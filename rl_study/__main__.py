"""``python -m rl_study``: the small-scale RL study (rl_study.cli)."""

import sys

from rl_study.cli import main

if __name__ == "__main__":
    sys.exit(main())
