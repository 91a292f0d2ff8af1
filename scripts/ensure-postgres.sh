#!/usr/bin/env bash
# Installs Debian's PostgreSQL server binaries if they are missing; the tests start their own throw-away
# server on loopback (tests/support/postgres.py) and stop it afterwards. Nothing is left running.
set -euo pipefail
if compgen -G "/usr/lib/postgresql/*/bin/initdb" > /dev/null; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "PostgreSQL server binaries are missing; install them (apt-get install postgresql) or run as root" >&2
    exit 1
fi
echo "installing PostgreSQL server binaries (Debian packages) for the store tests"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql > /dev/null
# The package's own cluster is not needed: the tests create their own.
service postgresql stop > /dev/null 2>&1 || true
