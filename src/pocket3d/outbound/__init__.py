"""Every request pocket3d makes to the outside: the address guard, the bounded client, webhook delivery."""

from pocket3d.outbound.client import OutboundClient, OutboundResponse
from pocket3d.outbound.guard import (
    AddressGuard,
    ForbiddenTarget,
    InvalidTarget,
    OutboundError,
    Resolver,
    SystemResolver,
    Unresolvable,
    refusal,
)

__all__ = ["AddressGuard", "ForbiddenTarget", "InvalidTarget", "OutboundClient", "OutboundError", "OutboundResponse",
           "Resolver", "SystemResolver", "Unresolvable", "refusal"]
