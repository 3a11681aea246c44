"""What a default (quiet) faceproc console may print, checked on every CLI run the system tests make.

A default run prints faceproc's own lines only: stage headers, counts, the workers' epoch lines and
the accuracy table. Everything TensorFlow, absl, Keras and Ray print on their own, in the driver or
forwarded from a worker, is noise; `-v` brings it back (test_quiet_console.py).
"""

from __future__ import annotations

import re

NOISE = [
    r"cudart_stub", r"cuInit", r"Unable to register cu(DNN|FFT|BLAS) factory", r"oneDNN custom operations",
    r"TensorFlow binary is optimized", r"absl::InitializeLog", r"is deprecated",
    r"compiled metrics have yet to be built", r"No training configuration found",
    r"core_worker\.cc", r"max_restarts > 0", r"Truncating long operator name", r"Progress bars disabled",
    r"\bTip: ", r"Registered dataset logger", r"Starting execution of Dataset", r"Execution plan of Dataset",
    r"Running Dataset", r"execution finished in", r"Started a local Ray instance", r"View the dashboard at",
    r"Token authentication", r"Setting up process group", r"Requesting resources", r"training worker group",
    r"world_rank=", r"RAY_TRAIN_V2_ENABLED", r"Ray deduplicates logs", r"\(pid=",
    r"DeprecationWarning", r"FutureWarning", r"UserWarning", r"Traceback", r"Exception in thread",
]
# Lines a default run hides that `-v` shows: Ray's startup banner, TensorFlow's load-time lines.
INTERNALS = [r"Started a local Ray instance", r"oneDNN custom operations", r"cudart_stub"]


def found(patterns: list[str], text: str) -> list[str]:
    """The lines of `text` that match any of `patterns`."""
    return [line for line in text.splitlines() if any(re.search(pattern, line) for pattern in patterns)]


def assert_quiet_run(printed: str, models: list[str]) -> None:
    """`printed` (stdout and stderr of a `faceproc run` that succeeded) shows the four stages, an epoch
    line and an accuracy row of each of `models`, and none of the noise."""
    for stage in ("[1/4] fetch", "[2/4] preprocess", "[3/4] train", "[4/4] evaluate"):
        assert stage in printed, printed[-3000:]
    assert re.search(r"^model\s+status\s+n\s+accuracy", printed, re.MULTILINE), printed[-3000:]
    for model in models:
        assert re.search(rf"{model} epoch \d+/\d+: loss", printed), f"no {model} epoch line:\n{printed[-3000:]}"
        assert re.search(rf"^{model}\s+ok", printed, re.MULTILINE), printed[-3000:]
    assert_quiet(printed)


def assert_quiet(printed: str) -> None:
    """None of the lines in `printed` is noise."""
    noise = found(NOISE, printed)
    assert not noise, "a default run printed internals:\n" + "\n".join(noise)
