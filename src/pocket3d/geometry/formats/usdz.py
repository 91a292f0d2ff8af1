"""USDZ (Apple AR Quick Look). Needs the USD libraries (usd-core); not wired up yet, so it is refused up front."""

UNAVAILABLE = "USDZ export is not available yet"
