"""Hyper-parameter search on Optuna: ``lightning-seg tune`` / ``make tune EXP=NAME``.

``space.py`` reads the search space (``experiments/search/NAME.yaml``), ``study.py`` runs
trials (each one a normal ``fit``, pruned by Optuna's Lightning callback, in a SQLite or shared
database storage), ``report.py`` prints the best trial and writes ``experiments/NAME_tuned.yaml``
and the plots, and ``command.py`` is the command line.
"""
