"""dans lb: the application load balancer in front of entry services, and the L4 relay.

Public surface: the routing table model (`lb.table`), the synchronous admin client
(`lb.client.AdminClient`), the image helper (`lb.image.ensure_lb_image`) and the `dans lb`
command (`lb.cli`). The data plane (`balancer`, `http_engine`, `tcp_relay`, `backends`) and the
admin server (`admin`, `server`, `workers`) are internal.

Kept import-light: importing `lb` loads neither aiohttp nor the Docker SDK.
"""

from __future__ import annotations

__all__: list[str] = []
