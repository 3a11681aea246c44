"""What the console keeps of the native lines Ray's C++ client writes while joining a cluster."""

from __future__ import annotations

import os

import pytest

from faceproc.core import console

REFUSED = ("[2026-12-07 13:52:16,667 W 10136 10136] gcs_client.cc:210: Failed to get cluster ID from GCS server: "
           "Unauthenticated: RPC error: InvalidAuthToken: Authentication token is missing or incorrect\n")
OTHER = "[2026-12-07 13:52:16,700 E 10136 10136] core_worker.cc:99: something else went wrong\n"
# the same retry for another cause (a GCS that went away): not a refusal, so it stays visible
UNAVAILABLE = ("[2026-12-07 13:52:17,667 W 10136 10136] gcs_client.cc:210: Failed to get cluster ID from GCS server: "
               "Unavailable: failed to connect to all addresses\n")


@pytest.mark.parametrize("verbose", ["0", "1"])
def test_refused_join_attempts_become_reasons_and_other_native_lines_stay(monkeypatch, capfd, verbose):
    monkeypatch.setenv(console.VERBOSE_ENV, verbose)
    with console.gcs_refusals() as reasons:
        for line in (REFUSED, OTHER, UNAVAILABLE, REFUSED):
            os.write(2, line.encode())  # file descriptor 2, as C++ writes it
    written = capfd.readouterr().err
    assert OTHER in written and UNAVAILABLE in written
    if verbose == "1":
        assert reasons == [] and written.count("gcs_client.cc") == 3
    else:
        assert reasons == ["Unauthenticated: RPC error: InvalidAuthToken: Authentication token is missing or "
                           "incorrect"] * 2
        assert written.count("gcs_client.cc") == 1


def test_the_reasons_are_there_when_the_block_raises(monkeypatch, capfd):
    monkeypatch.setenv(console.VERBOSE_ENV, "0")
    with pytest.raises(ConnectionError), console.gcs_refusals() as reasons:
        os.write(2, REFUSED.encode())
        raise ConnectionError("Failed to connect to Ray cluster")
    assert len(reasons) == 1 and capfd.readouterr().err == ""
