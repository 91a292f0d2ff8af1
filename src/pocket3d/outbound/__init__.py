"""Every request pocket3d makes to the outside: the address guard, the bounded client, webhook delivery, image
inputs given as URLs."""

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
from pocket3d.outbound.inputs import FetchRefused, fetch_image

__all__ = ["AddressGuard", "FetchRefused", "ForbiddenTarget", "InvalidTarget", "OutboundClient", "OutboundError",
           "OutboundResponse", "Resolver", "SystemResolver", "Unresolvable", "fetch_image", "refusal"]
