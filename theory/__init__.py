"""Pure formulas of VIP, CTPO and RLHF-gen (numpy/scipy only).

The single source of truth for every closed form used by the simulators, the
statistical tests and the trainer. No I/O, no global random state, no imports
from the other rlvr-lab packages.
"""
