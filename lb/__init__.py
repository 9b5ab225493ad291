"""dans lb: the application load balancer in front of entry services, and the L4 relay.

Public surface: the names below (its error, the routing table model), the synchronous admin
client (`lb.client.AdminClient`, with `Transport` the seam for other ways to reach the LB)
and the `dans lb` command group (`lb.cli`). Everything else (the data plane: `balancer`,
`http_*`, `upstream`, `tcp_relay`, `transparent`, `backends`; the admin server: `admin*`,
`server`, `workers`, `settings`) is internal; `tests/test_structure.py` keeps other packages
to the public part. `lb` imports no other dans package: its image carries `lb` alone.

Kept import-light: importing `lb` loads neither aiohttp nor the Docker SDK.
"""

from __future__ import annotations

from lb.errors import LBError
from lb.table import Frontend, Group, RoutingTable

__all__ = ["Frontend", "Group", "LBError", "RoutingTable"]
