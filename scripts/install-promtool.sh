#!/usr/bin/env bash
# Puts Prometheus's promtool in target/test-tools/bin for the tests of deploy/prometheus (rules
# checked and unit-tested). Taken from Debian's prometheus package without installing it (no
# service is set up): the package is downloaded and only promtool is unpacked.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=target/test-tools/bin
if command -v promtool >/dev/null || [ -x "$dest/promtool" ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "install-promtool.sh: no apt-get here; install promtool (Prometheus) and put it on PATH" >&2
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "install-promtool.sh: fetching promtool from Debian's prometheus package" >&2
(cd "$work" && apt-get download -qq prometheus 2>/dev/null) || {
  [ "$(id -u)" = 0 ] && apt-get update -qq >/dev/null 2>&1 && (cd "$work" && apt-get download -qq prometheus 2>/dev/null)
} || { echo "install-promtool.sh: could not download the prometheus package; the rules tests will say so" >&2; exit 0; }
dpkg-deb -x "$work"/prometheus_*.deb "$work/x"
mkdir -p "$dest"
cp "$work/x/usr/bin/promtool" "$dest/promtool"
