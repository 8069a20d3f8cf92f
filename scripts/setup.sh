#!/usr/bin/env bash
# Makes this machine ready for pgup's demo, tests and benchmark: installs debootstrap and wget (image
# builds), minisign (signing test bundles) and xfsprogs (the benchmark's reflink filesystem)
# and Compose (its tests) if missing, checks Docker, builds pgup and the images from Debian packages
# unless they are current, and pgup/upgrade:latest with that pgup.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v minisign >/dev/null || missing+=(minisign)
command -v mkfs.xfs >/dev/null || missing+=(xfsprogs)
# images/build.sh asks the mirror for its Release files before it decides what to build.
command -v wget >/dev/null || missing+=(wget)
# The Compose tests use v2's plugin when it answers, else v1.
docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null || missing+=(docker-compose)
if [ ${#missing[@]} -gt 0 ]; then
	echo "setup: installing ${missing[*]}" >&2
	apt-get update -q >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
	echo "setup: the Docker daemon is not reachable; start it (and run as root or in the docker group)" >&2
	exit 1
fi
# pgup and its tests compile while the images build (one waits on the CPU, the other mostly
# on the mirror and the disk); pgup then assembles the upgrade image with the very binary the
# tests run.
build_log=$(mktemp)
cargo test --locked --no-run >"$build_log" 2>&1 &
cargo_pid=$!
bash images/build.sh
wait "$cargo_pid" || { cat "$build_log" >&2; rm -f "$build_log"; exit 1; }
rm -f "$build_log"
PGUP_BIN=target/debug/pgup bash images/build.sh --upgrade-image
