import subprocess
import sys
import time

import pytest

from faceproc.core.lock import LockedError, output_lock


def test_second_holder_is_refused_with_a_clear_message(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time, sys; from faceproc.core.lock import output_lock\n"
        f"with output_lock({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(30)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match=r"another faceproc run is using .*pid \d+.*after --wait 1 s: wait longer"):
            with output_lock(str(tmp_path), wait_seconds=1):
                pass
        with pytest.raises(LockedError, match=r"wait for it or pass --wait SECONDS$"):
            with output_lock(str(tmp_path)):
                pass
    finally:
        holder.kill()
        holder.wait()
    with output_lock(str(tmp_path)):  # released when the holder died
        pass


def test_waits_for_the_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from faceproc.core.lock import output_lock\n"
        f"with output_lock({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(2)")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    started = time.monotonic()
    with output_lock(str(tmp_path), wait_seconds=30):
        waited = time.monotonic() - started
    assert 0.5 < waited < 30  # blocked until the holder let go, then got the lock
    holder.wait()


def test_an_output_that_cannot_be_created_is_one_line_and_exit_1(tmp_path, capsys):
    from faceproc.cli import main

    (tmp_path / "photos").mkdir()
    (tmp_path / "a_file").write_text("not a folder")
    out = tmp_path / "a_file" / "out"  # its parent is a file: the lock's makedirs fails
    assert main(["preprocess", "--input", str(tmp_path / "photos"), "--output", str(out)]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"faceproc: error: cannot write to {out}: ") and "\n" not in error, error
    assert (tmp_path / "a_file").read_text() == "not a folder"
