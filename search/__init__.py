"""The user's entry: the config, the Optuna study a config describes, its trials, the Pareto
front, and the ``edgetune`` command line (``edgetune.search.cli``).
"""
