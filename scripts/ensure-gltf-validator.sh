#!/usr/bin/env bash
# Installs the Khronos glTF validator (npm, pinned by package-lock.json) that the tests run on every GLB.
set -euo pipefail
cd "$(dirname "$0")/../tools/gltf-validator"
if [ ! -d node_modules/gltf-validator ]; then
    npm ci --silent --no-audit --no-fund
fi
