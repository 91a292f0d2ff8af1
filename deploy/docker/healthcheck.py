"""The images' HEALTHCHECK: GET /api/v1/system/health on this container's port (POCKET3D_SERVER__PORT, 8000 by
default); exit 0 when it answers 200. Standard library only, so it costs no import of pocket3d."""

import os
import sys
import urllib.request

port = os.environ.get("POCKET3D_SERVER__PORT", "8000")
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/system/health", timeout=4) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception as e:  # refused, timed out, 5xx: unhealthy either way
    print(f"unhealthy: {e}", file=sys.stderr)
    sys.exit(1)
