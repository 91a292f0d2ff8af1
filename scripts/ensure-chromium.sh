#!/usr/bin/env bash
# Installs Debian's Chromium if it is missing: the browser tests drive it headless through Playwright for Python
# (tests/support/browser.py), on loopback only. Playwright's own browser download is not used.
set -euo pipefail
if command -v chromium > /dev/null || command -v chromium-browser > /dev/null || [ -n "${POCKET3D_CHROMIUM:-}" ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "Chromium is missing; install it (apt-get install chromium) or run as root" >&2
    exit 1
fi
echo "installing Chromium (Debian package) for the browser tests"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium > /dev/null
