"""What can be tried: each knob declares its parameters beside their search defaults.

A knob module holds a ``...Space`` (the config section: ranges and choices, validated by pydantic),
the ``...Recipe`` it samples into (plain, JSON-serialisable data), and ``sample(trial)``. Its build
step lives in the module of the same name in ``edgetune.objectives``.
"""
