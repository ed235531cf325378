"""Parity of the port with the official PyTorch code, on the golden fixtures.

``python -m src.tools.parity --golden DIR`` compares every fixture in DIR (options, output and
comparison rules: ``__main__``). The modules:

- ``report``: the report rows, their error measure, the tolerances, the not-compared accounting;
- ``golden``: the fixture library (the port's model with a fixture's weights, its inputs);
- ``runs``: the model run on a fixture (eval, training forward + criterion, gradient);
- ``model``: the eval and training comparisons, tables of (fixture key, port value, kind, tolerance);
- ``grad``: the gradient comparison;
- ``ops``: the sampling cores and the converter's key lists.
"""
