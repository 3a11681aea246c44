"""Which cluster a command joins, and the one-line refusals of an address nothing answers at."""

from __future__ import annotations

import socket

import pytest

from faceproc.core.ray_address import RayUnreachable, check_address, cluster_address
from tests.conftest import closed_port


@pytest.mark.parametrize("given, env, joins", [(None, None, "local"), ("local", "10.0.0.1:6379", "local"),
                                               (None, "10.0.0.1:6379", "10.0.0.1:6379"), ("auto", None, "auto"),
                                               (None, "local", "local")])
def test_the_cluster_is_the_address_given_then_ray_address_then_a_new_local_one(given, env, joins, monkeypatch):
    if env is None:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    else:
        monkeypatch.setenv("RAY_ADDRESS", env)
    assert cluster_address(given) == joins


def test_a_port_nothing_listens_on_is_refused_at_once(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    address = f"127.0.0.1:{closed_port()}"
    with pytest.raises(RayUnreachable, match=rf"no Ray cluster answers at {address} \(.*refused"):
        check_address(address)


def test_a_listening_port_passes():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        check_address(f"127.0.0.1:{server.getsockname()[1]}")


@pytest.mark.parametrize("address, says", [("http://127.0.0.1:8265", "is an HTTP address .*ray job submit"),
                                           ("head-node", "is not host:port")])
def test_a_dashboard_url_or_a_bare_name_is_named_for_what_it_is(address, says):
    with pytest.raises(RayUnreachable, match=says):
        check_address(address)


@pytest.mark.parametrize("address", ["local", "auto", "ray://10.0.0.1:10001"])
def test_addresses_ray_resolves_itself_are_left_to_it(address):
    check_address(address)
