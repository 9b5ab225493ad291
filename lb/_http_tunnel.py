"""The tunnel side of a client connection: after a backend's 101, bytes pass both ways.

A mixin of `lb._http_conn.ClientConnection` (kept apart to keep that module short): the
connection is in state TUNNEL, each side's half-close is passed on, and both end it.
"""

from __future__ import annotations

import asyncio
from time import monotonic
from typing import TYPE_CHECKING

from lb._http_states import TUNNEL

if TYPE_CHECKING:
    from lb._http_cycle import Cycle
    from lb.table import FrontendTimeouts

__all__ = ["TunnelSide"]


class TunnelSide:
    """The TUNNEL state's methods of `lb._http_conn.ClientConnection`."""

    # Set by ClientConnection (which also defines the methods below that raise).
    transport: asyncio.Transport | None
    cycle: Cycle | None
    timeouts: FrontendTimeouts
    deadline: float
    up_deadline: float
    hold: bytearray | None
    pending: int
    tunnel_eofs: int

    def _to(self, state: int) -> None:
        raise NotImplementedError

    def flow(self) -> None:
        """Pause or resume reading from the client (ClientConnection's)."""
        raise NotImplementedError

    def send(self, data: bytes) -> None:
        """Bytes for the client (ClientConnection's)."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the client connection (ClientConnection's)."""
        raise NotImplementedError

    def tunnel_open(self, cycle: Cycle) -> None:
        """The backend answered 101: the held bytes go to it, and bytes pass both ways."""
        self._to(TUNNEL)
        self.deadline = self.up_deadline = 0.0
        self._touch_tunnel()
        hold = self.hold or b""
        self.hold = None
        self.pending = 0
        if hold:
            self._tunnel_to_backend(bytes(hold))
        self.flow()

    def _touch_tunnel(self) -> None:
        self.deadline = monotonic() + self.timeouts.tunnel

    def _tunnel_to_backend(self, data: bytes) -> None:
        cycle = self.cycle
        if cycle is not None and cycle.up is not None and cycle.up.transport is not None:
            self._touch_tunnel()
            cycle.up.transport.write(data)
            self.flow()

    def tunnel_data_from_backend(self, data: bytes) -> None:
        """Tunnelled bytes for the client."""
        self._touch_tunnel()
        self.send(data)

    def _tunnel_eof_to_backend(self) -> bool:
        cycle = self.cycle
        self.tunnel_eofs += 1
        if self.tunnel_eofs == 2:
            self.close()  # both sides are done
            return True
        if cycle is not None and cycle.up is not None and cycle.up.transport is not None \
                and cycle.up.transport.can_write_eof():
            cycle.up.transport.write_eof()
            return True
        self.close()
        return True

    def tunnel_eof(self) -> bool:
        """The backend half-closed the tunnel: half-close towards the client too."""
        self.tunnel_eofs += 1
        if self.tunnel_eofs == 2:
            self.close()
            return False
        if self.transport is not None and self.transport.can_write_eof():
            self.transport.write_eof()
            return True
        self.close()
        return False
