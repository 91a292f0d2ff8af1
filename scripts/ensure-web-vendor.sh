#!/usr/bin/env bash
# Puts the web app's browser libraries (three.js, pinned by tools/web-vendor/package-lock.json) into the package,
# under src/pocket3d/web/static/app/vendor/: npm ci, then a copy of the files the app imports. Not committed; the
# wheel carries them. Nothing is fetched when they are there already at the locked version.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/tools/web-vendor"
dest="$root/src/pocket3d/web/static/app/vendor/three"
version="$(node -p "require('$tools/package-lock.json').packages['node_modules/three'].version")"
# The stamp names the version and this script, so a changed list of files is copied again.
stamp="three $version, $(sha256sum "$0" | cut -c1-16)"
if [ -f "$dest/STAMP" ] && [ "$(cat "$dest/STAMP")" = "$stamp" ]; then
    exit 0
fi
cd "$tools"
if [ ! -f node_modules/three/package.json ] || [ "$(node -p "require('./node_modules/three/package.json').version")" != "$version" ]; then
    npm ci --silent --no-audit --no-fund
fi
src="$tools/node_modules/three"
rm -rf "$dest"
mkdir -p "$dest/build" "$dest/addons"
cp "$src/LICENSE" "$dest/"
cp "$src/build/three.module.js" "$src/build/three.core.js" "$dest/build/"
# The add-ons the viewer imports, and what they import in turn (relative paths kept).
for f in loaders/GLTFLoader.js loaders/OBJLoader.js loaders/PLYLoader.js loaders/STLLoader.js \
         controls/OrbitControls.js environments/RoomEnvironment.js \
         utils/BufferGeometryUtils.js utils/SkeletonUtils.js; do
    mkdir -p "$dest/addons/$(dirname "$f")"
    cp "$src/examples/jsm/$f" "$dest/addons/$f"
done
echo "$stamp" > "$dest/STAMP"
