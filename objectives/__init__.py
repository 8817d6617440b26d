"""How a recipe becomes numbers: the task, training, each compression step, export, measurement.

One knob's build step lives in the module named like its search space in ``edgetune.spaces``.
"""
