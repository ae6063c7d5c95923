#!/usr/bin/env bash
# Refreshes the vendored axe-core that the console's browser test injects
# into each page. The version is pinned here; CI never runs npm: the test
# reads the committed axe.min.js. To move to a newer axe-core, change
# AXE_VERSION, run this script, run the browser test and commit both files.
set -euo pipefail
AXE_VERSION=4.14.1
here="$(cd "$(dirname "$0")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "axe-core@${AXE_VERSION}" >/dev/null)
tar -xzf "$tmp"/axe-core-"${AXE_VERSION}".tgz -C "$tmp" package/axe.min.js package/LICENSE
cp "$tmp/package/axe.min.js" "$here/axe.min.js"
cp "$tmp/package/LICENSE" "$here/axe.LICENSE"
echo "axe-core ${AXE_VERSION}: $(sha256sum "$here/axe.min.js" | cut -d' ' -f1)"
