"""Library output while ``edgetune run`` works: into ``<run-dir>/edgetune.log``, off the terminal.

Libraries write to the terminal four ways, and each is sent to the log file:

- logging through handlers of their own: NNCF (``INFO:nncf:`` lines, dozens per quantization) on
  stdout, transformers, datasets, torch and Optuna on stderr. Those handlers are set aside and
  the records go to one ``logging.FileHandler`` on the root logger;
- Python warnings, captured into logging (``py.warnings``);
- prints on stdout (ONNX Runtime's calibrators), rich progress bars on stdout (NNCF's, drawn on
  rich's global console, which writes wherever ``sys.stdout`` points: no switch turns them off)
  and tqdm bars on stderr: ``sys.stdout`` and ``sys.stderr`` point at the log file.

edgetune's own console keeps the stream it was made with, so it alone reaches the terminal.
Everything is put back on exit.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

# NNCF adds its stdout handler when imported: imported first, so that it is set aside too, never
# added mid-run (it would then write to this log's stream after the log is closed).
import nncf  # noqa: F401
import optuna

LOG_FILE = "edgetune.log"
FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"


@contextlib.contextmanager
def library_output_to(path: Path) -> Iterator[None]:
    """Send library logging, warnings, prints and progress bars to ``path`` (appended) for the
    block; Optuna logs each trial there too."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO)  # first: it may add Optuna's own handler
    set_aside = {logger: (logger.handlers, logger.propagate) for logger in _streaming_loggers()}
    for logger in set_aside:
        logger.handlers, logger.propagate = [], True
    root.addHandler(handler)
    logging.captureWarnings(True)
    try:
        with contextlib.redirect_stdout(handler.stream), contextlib.redirect_stderr(handler.stream):
            yield
    finally:
        logging.captureWarnings(False)
        root.removeHandler(handler)
        handler.close()
        optuna.logging.set_verbosity(verbosity)
        for logger, (handlers, propagate) in set_aside.items():
            logger.handlers, logger.propagate = handlers, propagate


def _streaming_loggers() -> list[logging.Logger]:
    """Loggers (the root aside) with a handler writing to a stream, a terminal's in practice."""
    loggers = logging.Logger.manager.loggerDict.values()
    return [logger for logger in loggers if isinstance(logger, logging.Logger)
            and any(_writes_to_a_stream(handler) for handler in logger.handlers)]


def _writes_to_a_stream(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(
        handler, logging.FileHandler)
