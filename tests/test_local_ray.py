"""Local means local: a Ray instance started without --address listens on loopback only.

Checked on the shared session instance, which `orchestrate.init_ray` starts exactly as
`adaptive-bkg run` does: every process Ray started (GCS, raylet with its object manager,
agents, workers and actors) and the driver itself, by pid, through their listening sockets.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

import psutil


def _is_loopback(host: str) -> bool:
    address = ipaddress.ip_address(host.split("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def listening_sockets(pids: list[int]) -> list[tuple[int, str, str, int]]:
    """(pid, process name, address, port) of every TCP listener and unconnected UDP socket."""
    found = []
    for pid in pids:
        try:
            process = psutil.Process(pid)
            name = process.name()
            connections = process.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        for conn in connections:
            listening = conn.status == psutil.CONN_LISTEN or (
                conn.type == 2 and not conn.raddr  # SOCK_DGRAM bound to a local address
            )
            if listening and conn.laddr:
                found.append((pid, name, conn.laddr.ip, conn.laddr.port))
    return found


def test_local_ray_listens_on_loopback_only(ray_session: Any) -> None:
    ray = ray_session

    @ray.remote(num_cpus=0)
    class Probe:
        def pid(self) -> int:
            return os.getpid()

    probe = Probe.remote()  # type: ignore[attr-defined]
    actor_pid = ray.get(probe.pid.remote())
    me = psutil.Process()
    pids = sorted({me.pid, actor_pid, *(p.pid for p in me.children(recursive=True))})
    sockets = listening_sockets(pids)
    ray.kill(probe)

    names = {name for _, name, _, _ in sockets}
    # Not vacuous: the core services and the actor itself were seen listening.
    assert {"gcs_server", "raylet"} <= names, sockets
    assert any(pid == actor_pid for pid, _, _, _ in sockets), sockets
    exposed = [s for s in sockets if not _is_loopback(s[2])]
    assert exposed == [], f"listening beyond loopback: {exposed}"
