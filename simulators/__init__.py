"""Monte-Carlo and exact checks of the papers' claims; ``python -m simulators`` runs the ledger."""
