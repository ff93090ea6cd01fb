"""``python -m simulators``: the claims ledger over every registered topic."""

from simulators.cli import main

raise SystemExit(main())
