"""Named loggers under the ``jetquant`` namespace and a plain console setup."""

import logging
import sys
import time

ROOT = "jetquant"


def get_logger(stage):
    """Return the logger for one stage, e.g. ``jetquant.calibrate``."""
    return logging.getLogger(ROOT + "." + stage)


def setup(verbose=False):
    """Send jetquant's log lines to stderr: INFO by default, DEBUG with ``verbose``."""
    root = logging.getLogger(ROOT)
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


class Timer:
    """Context manager that measures wall time in seconds (``elapsed``)."""

    def __enter__(self):
        self.start = time.perf_counter()
        self.elapsed = 0.0
        return self

    def __exit__(self, *exc):
        self.elapsed = time.perf_counter() - self.start
        return False


class Quiet(object):
    """Silence a third-party library's prints and root-logger warnings for a block.

    ONNX Runtime's quantization tools print progress to stdout and log advice
    through the root logger; jetquant logs its own summary instead.
    """

    def __enter__(self):
        import io

        self.stdout = sys.stdout
        sys.stdout = io.StringIO()
        root = logging.getLogger()
        self.level = root.level
        self.handler = logging.NullHandler()
        root.addHandler(self.handler)
        root.setLevel(logging.ERROR)
        return self

    def __exit__(self, *exc):
        sys.stdout = self.stdout
        root = logging.getLogger()
        root.removeHandler(self.handler)
        root.setLevel(self.level)
        return False
