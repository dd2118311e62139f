#!/usr/bin/env bash
# Installs what snapfs's build, tests and demo need on a fresh Debian machine: the Go modules, and the
# FUSE and filesystem tools (fuse3, e2fsprogs, util-linux) and liblz4-dev. Safe to run again: it installs only what
# is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
command -v mkfs.ext4 >/dev/null 2>&1 || need+=(e2fsprogs)
command -v losetup >/dev/null 2>&1 || need+=(mount)
command -v getfattr >/dev/null 2>&1 || need+=(attr)
command -v gcc >/dev/null 2>&1 || need+=(gcc)
# liblz4's static library: chunks are compressed with the reference LZ4 encoder (store/lz4.go).
[ -e /usr/include/lz4.h ] && [ -n "$(find /usr/lib -name liblz4.a 2>/dev/null | head -1)" ] || need+=(liblz4-dev)
# time zones: a test runs a daemon and its client in different ones
[ -e /usr/share/zoneinfo/Asia/Tokyo ] || need+=(tzdata)
# scripts/bench.sh's tools
command -v bc >/dev/null 2>&1 || need+=(bc)
[ -x /usr/bin/time ] || need+=(time)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v python3 >/dev/null 2>&1 || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "snapfs setup: missing ${need[*]}: install them (as root: apt-get install ${need[*]})" >&2
		exit 1
	fi
	echo "snapfs setup: installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null
	apt-get install -y -qq "${need[@]}" >/dev/null
fi
[ -e /dev/fuse ] || modprobe fuse 2>/dev/null || true
go mod download
