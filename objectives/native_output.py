"""What native libraries write straight to the process's stderr (fd 2, from C++), sorted: the
lines that only narrate are dropped, the rest written back.

LiteRT's interpreter announces its XNNPACK delegate on every model it opens, and importing
litert-torch logs TensorFlow's setup: Python's ``sys.stderr`` never sees either, so only the file
descriptor can be captured.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

# The prefixes of the lines the native libraries write that only narrate.
CHATTER = ("INFO: ", "I0000 ")


@contextlib.contextmanager
def native_stderr_quiet(chatter: tuple[str, ...] = CHATTER) -> Iterator[None]:
    """Capture what native code writes to stderr (fd 2) in the block; write back the lines that
    do not start with one of ``chatter``'s prefixes, and every line if the block raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            kept = [line for line in lines if failed or not line.startswith(chatter)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
