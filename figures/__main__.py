"""``python -m figures``: regenerate every figure from the newest records."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from figures import style
from figures.records import newest_check

FIGURE_MODULES = ("figures.variance", "figures.allocation", "figures.stats_tests", "figures.importance", "figures.predictor", "figures.bounds", "figures.rl_study")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m figures", description=__doc__)
    parser.add_argument("--records", default="records", help="directory of JSON records (default records/)")
    parser.add_argument("--out", default=None, help="output directory (default RECORDS/figures)")
    args = parser.parse_args(argv)
    records = Path(args.records)
    out = Path(args.out) if args.out else records / "figures"
    if not records.is_dir():
        parser.error(f"--records: {records} is not a directory; run `python -m simulators` first")
    style.apply()
    written, missing = [], []
    for module_name in FIGURE_MODULES:
        for name, check_names, draw in importlib.import_module(module_name).FIGURES:
            check_names = (check_names,) if isinstance(check_names, str) else check_names
            checks = [newest_check(records, check_name) for check_name in check_names]
            absent = [n for n, check in zip(check_names, checks) if check is None]
            if absent:
                missing.append(f"{name} (needs a record of check {', '.join(repr(n) for n in absent)})")
                continue
            written.extend(style.save(draw(*checks), out, name))
    for path in written:
        print(path)
    for item in missing:
        print(f"skipped: {item}", file=sys.stderr)
    if not written:
        print(f"no figure written: no usable record in {records}; run `python -m simulators` first", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
