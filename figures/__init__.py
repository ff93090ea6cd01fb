"""Figures regenerated from the JSON records: ``python -m figures``.

Figures read records; they never re-simulate. Each figure module exposes
``FIGURES``: (name, check name, draw function) triples; the draw function takes
the check's record entry and returns a matplotlib Figure.
"""
