"""What people read: a study as one self-contained HTML page (README.md, "The report").

``data`` turns a study into tidy frames, ``analysis`` adds Optuna's importances and hypervolume,
``context`` says where and how it was measured, ``figures`` draws one Plotly figure per function,
and ``html`` writes the page (``write_report``).
"""
