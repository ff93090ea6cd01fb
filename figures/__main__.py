"""``python -m figures``: regenerate every figure from the newest records."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path

import figures
import write_guard
from figures import style
from figures.records import claims_of, load_records, newest_check


def figure_modules() -> list:
    """Every module of this package that defines ``FIGURES``, in alphabetical order: a new figure
    module is found without being listed."""
    names = sorted(info.name for info in pkgutil.iter_modules(figures.__path__) if not info.name.startswith("_"))
    modules = [importlib.import_module(f"figures.{name}") for name in names]
    return [module for module in modules if hasattr(module, "FIGURES")]


def how_to_record(module, check_names, records, records_dir: Path) -> str:
    """The command that writes complete entries of ``check_names``: the figure module's own
    ``how_to_record`` where it has one (the RL study's), else ``python -m simulators --only``
    with the claim ids that the records list for those checks. Figures read records only: they
    do not import the simulators to look the ids up."""
    if hasattr(module, "how_to_record"):
        return module.how_to_record(check_names, records_dir)
    claims = list(dict.fromkeys(claim for name in check_names for claim in claims_of(records, name)))
    if claims:
        return f"run `python -m simulators --only {','.join(claims)} --out {records_dir}`"
    return (
        f"run `python -m simulators --out {records_dir}` (or `--only` with the claim ids that "
        f"`python -m simulators --list` shows for {', '.join(check_names)})"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m figures", description=__doc__)
    parser.add_argument("--records", default="records", help="directory of JSON records (default records/)")
    parser.add_argument("--out", default=None, help="output directory (default RECORDS/figures)")
    args = parser.parse_args(argv)
    records_dir = Path(args.records)
    out = Path(args.out) if args.out else records_dir / "figures"
    if not records_dir.is_dir():
        parser.error(f"--records: {records_dir} is not a directory; run `python -m simulators` first")
    try:  # figures replace only their own <figure>.png/.pdf there (README, "What the commands write")
        write_guard.check_records_folder(out, "--out")
    except write_guard.OutputError as exc:
        parser.error(str(exc))
    records, warnings = load_records(records_dir)
    style.apply()
    written, missing = [], []
    for module in figure_modules():
        for name, check_names, draw in module.FIGURES:
            check_names = (check_names,) if isinstance(check_names, str) else check_names
            checks = [newest_check(records, check_name) for check_name in check_names]
            absent = [n for n, check in zip(check_names, checks) if check is None]
            if absent:
                checks_named = ", ".join(repr(n) for n in absent)
                missing.append(
                    f"{name}: no record in {records_dir} holds the complete results of check {checks_named}; "
                    + how_to_record(module, absent, records, records_dir)
                )
                continue
            written.extend(style.save(draw(*checks), out, name))
    for path in written:
        print(path)
    for item in warnings + [f"skipped figure {item}" for item in missing]:
        print(item, file=sys.stderr)
    if not written:
        print(
            f"no figure written: no usable record in {records_dir}; run `python -m simulators` first", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
