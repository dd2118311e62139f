#!/usr/bin/env bash
# snapfs benchmark: makes its own data (a sparse ext4 disk image holding copies of /usr/lib and
# /usr/share plus random data), then measures full and incremental snapshots, restore and delete, and
# prints one table. Every figure is measured in this run. Run as root (loop mounts) via `make bench`.
# BENCH_DIR (default /tmp/snapfs-bench) holds the data; BENCH_SIZE the disk size (default 2G).
set -euo pipefail
[ -n "${BENCH_TRACE:-}" ] && set -x
cd "$(dirname "$0")/.."
SNAPFS=${SNAPFS:-$PWD/bin/snapfs}
DIR=${BENCH_DIR:-/tmp/snapfs-bench}
SIZE=${BENCH_SIZE:-2G}
export SNAPFS_STORE=$DIR/store
DISK=$DIR/disk.img
MNT=$DIR/mnt

[ "$(id -u)" -eq 0 ] || { echo "snapfs bench: run as root" >&2; exit 1; }
mountpoint -q "$MNT" 2>/dev/null && umount "$MNT"
rm -rf "$DIR"
mkdir -p "$DIR/seed" "$MNT"

echo "making the data set in $DIR ..."
# ~1.2 GiB of real files: /usr/share, then /usr/lib's entries in name order until ~600 MiB more.
cp -r /usr/share "$DIR/seed/share" 2>/dev/null || true
mkdir -p "$DIR/seed/lib"
total=0
for e in $(ls /usr/lib | sort); do
	[ "$total" -ge 600000 ] && break
	kib=$(du -sk "/usr/lib/$e" 2>/dev/null | cut -f1)
	[ $((total + kib)) -gt 900000 ] && continue
	cp -r "/usr/lib/$e" "$DIR/seed/lib/" 2>/dev/null || true
	total=$((total + kib))
done
# Deterministic "random" data: a keyed stream, the same every run.
stream() { openssl enc -aes-128-ctr -K "$1" -iv 0 -nosalt </dev/zero 2>/dev/null; }
head -c 300M < <(stream 00112233445566778899aabbccddeeff) >"$DIR/seed/random.bin"
truncate -s "$SIZE" "$DISK"
mkfs.ext4 -q -F -d "$DIR/seed" "$DISK"
rm -rf "$DIR/seed"
cp --sparse=always "$DISK" "$DIR/state1.img"

rows=()
row() { rows+=("$(printf '%-44s %s' "$1" "$2")"); }
mib() { echo "scale=1; $1 / 1048576" | bc; }
store_bytes() { du -sB1 "$SNAPFS_STORE" | cut -f1; }
timed() { # timed OUT CMD...: runs CMD, leaves "seconds maxrss_kib user sys" in OUT
	local out=$1; shift
	/usr/bin/time -f "%e %M %U %S" -o "$out" "$@" >/dev/null
}

data_bytes=$(du -B1 "$DISK" | cut -f1)
disk_bytes=$(stat -c %s "$DISK")
"$SNAPFS" volume add bench --source "$DISK" >/dev/null
sync; echo 3 >/proc/sys/vm/drop_caches
timed "$DIR/t" "$SNAPFS" snapshot create bench --name full
read -r secs rss user sys <"$DIR/t"
row "disk size / allocated data" "$(mib "$disk_bytes") MiB / $(mib "$data_bytes") MiB"
row "full snapshot: seconds" "$secs"
row "full snapshot: disk MB/s" "$(echo "scale=0; $disk_bytes / $secs / 1000000" | bc)"
row "full snapshot: CPU seconds (user+sys)" "$(echo "$user + $sys" | bc)"
row "full snapshot: peak RSS MiB" "$(echo "scale=1; $rss / 1024" | bc)"
row "store after full snapshot MiB" "$(mib "$(store_bytes)")"

# About 2% of the disk changed through the filesystem: 200 small files edited, a 30 MiB file written.
mount -o loop "$DISK" "$MNT"
mapfile -t files < <(find "$MNT/share" -type f -size -64k | head -200)
for f in "${files[@]}"; do echo "changed" >>"$f"; done
head -c 30M < <(stream ffeeddccbbaa99887766554433221100) >"$MNT/new.bin"
umount "$MNT"
changed_bytes=$(python3 - "$DIR/state1.img" "$DISK" <<'PY'
import sys
n = 0
with open(sys.argv[1], 'rb') as a, open(sys.argv[2], 'rb') as b:
    while True:
        x, y = a.read(1 << 20), b.read(1 << 20)
        if not x and not y:
            break
        for i in range(0, max(len(x), len(y)), 4096):
            if x[i:i + 4096] != y[i:i + 4096]:
                n += 4096
print(n)
PY
)

before=$(store_bytes)
timed "$DIR/t" "$SNAPFS" snapshot create bench --name incr
read -r secs rss user sys <"$DIR/t"
growth=$(( $(store_bytes) - before ))
row "changed data at 4 KiB granularity MiB" "$(mib "$changed_bytes")"
row "incremental snapshot: seconds" "$secs"
row "incremental snapshot: store growth MiB" "$(mib "$growth")"
row "incremental growth / changed data" "$(echo "scale=2; $growth / $changed_bytes" | bc)"

timed "$DIR/t" "$SNAPFS" restore bench/full --to "$DIR/restored.img"
read -r secs _ _ _ <"$DIR/t"
row "restore to a new file: seconds" "$secs"
cp --sparse=always "$DISK" "$DIR/changed.img"
timed "$DIR/t" "$SNAPFS" restore bench/full --to "$DIR/changed.img" --force
read -r secs _ _ _ <"$DIR/t"
row "restore onto the changed disk: seconds" "$secs"
cmp -s "$DIR/restored.img" "$DIR/state1.img" && cmp -s "$DIR/changed.img" "$DIR/state1.img" ||
	{ echo "snapfs bench: restored image differs" >&2; exit 1; }

"$SNAPFS" snapshot create bench --name third >/dev/null
before=$(store_bytes)
timed "$DIR/t" "$SNAPFS" snapshot delete bench/incr
read -r secs _ _ _ <"$DIR/t"
row "delete of the middle snapshot: seconds" "$secs"
row "delete of the middle snapshot: MiB freed" "$(mib $((before - $(store_bytes))))"

echo
echo "snapfs bench, $(date -u +%F), $(nproc) cores, $(uname -r)"
printf '%s\n' "${rows[@]}"
