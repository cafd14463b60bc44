"""shards.cluster: the local Dask cluster listens on the loopback interface only."""

from __future__ import annotations

import socket

import psutil

from shards.cluster import ClusterOptions, dask_client


def _listening(port: int) -> set[str]:
    """The addresses this process listens on at ``port`` (the scheduler runs in it)."""
    return {
        c.laddr.ip
        for c in psutil.Process().net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    }


def _outward_address() -> str | None:
    """This machine's address on its first non-loopback interface, if it has one."""
    for addresses in psutil.net_if_addrs().values():
        for a in addresses:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                return a.address
    return None


def test_the_dashboard_and_the_scheduler_listen_on_127_0_0_1_only():
    with dask_client(ClusterOptions(workers=1)) as client:
        services = client.scheduler_info()["services"]
        port = services["dashboard"]
        assert _listening(port) == {"127.0.0.1"}  # the dashboard's HTTP server, bokeh or not
        scheduler_port = int(client.scheduler.address.rsplit(":", 1)[1])
        assert _listening(scheduler_port) == {"127.0.0.1"}
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # it answers there
        outward = _outward_address()
        if outward is not None:  # and not on the machine's other interfaces
            probe = socket.socket()
            probe.settimeout(5)
            try:
                assert probe.connect_ex((outward, port)) != 0
            finally:
                probe.close()
