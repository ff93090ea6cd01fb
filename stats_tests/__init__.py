"""Assumption tests of VIP Appendix B on rollout logs (issue: stats_tests; not yet built)."""
