"""CLAIMS.md, the repository's table of claim ids, covers every id the ledger and the study write."""

import re

from rl_study.comparisons import COMPARISONS
from simulators import registry
from tests.conftest import ROOT

TEXT = (ROOT / "CLAIMS.md").read_text()
LISTED = set(re.findall(r"\b([VCR]\d{1,2})\b", TEXT[TEXT.index("## The claims") : TEXT.index("## Known slips")]))


def test_the_inventory_lists_the_papers_ids():
    expected = {f"V{i}" for i in range(1, 15)} | {f"C{i}" for i in range(1, 10)} | {f"R{i}" for i in range(1, 17)}
    assert LISTED == expected


def test_every_id_a_record_can_hold_is_listed():
    written = {claim for _, check in registry.checks_for() for claim in check.claims}
    written |= {spec["claim"] for spec in COMPARISONS.values()}
    assert written - LISTED == set()


def test_the_readme_points_inside_the_repository():
    readme = (ROOT / "README.md").read_text()
    assert "../shared" not in readme and "CLAIMS.md" in readme
