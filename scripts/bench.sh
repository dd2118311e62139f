#!/usr/bin/env bash
# snapfs benchmark: makes its own deterministic data (a sparse 2 GiB ext4 disk image holding copies of
# /usr/share and part of /usr/lib plus 300 MiB of keyed-stream random data, then a second state of
# it with ~2% changed through the filesystem), measures snapshots, FUSE reads, restore, delete, a
# chunk-size sweep and the daemon's memory, and prints one table. Every figure is measured in this
# run. Run as root (loop mounts, drop_caches) via `make bench`.
#
# BENCH_DIR (default /tmp/snapfs-bench) holds the data; BENCH_SIZE the disk size (default 2G).
# BENCH_REUSE=1 keeps the two disk states of an earlier run instead of making them again.
# BENCH_SWEEP=0 skips the chunk-size sweep.
set -euo pipefail
[ -n "${BENCH_TRACE:-}" ] && set -x
cd "$(dirname "$0")/.."
SNAPFS=${SNAPFS:-$PWD/bin/snapfs}
DIR=${BENCH_DIR:-/tmp/snapfs-bench}
SIZE=${BENCH_SIZE:-2G}
export SNAPFS_STORE=$DIR/store
DISK=$DIR/disk.img
MNT=$DIR/mnt
FMNT=$DIR/fuse

[ "$(id -u)" -eq 0 ] || { echo "snapfs bench: run as root" >&2; exit 1; }
cleanup() {
	mountpoint -q "$MNT" 2>/dev/null && umount "$MNT" || true
	if mountpoint -q "$FMNT" 2>/dev/null; then "$SNAPFS" umount "$FMNT" 2>/dev/null || umount -l "$FMNT" || true; fi
}
trap cleanup EXIT
cleanup
mkdir -p "$DIR"
rm -rf "$DIR/store" "$DIR/sweep" "$DIR"/*.out "$DIR/restored.img" "$DIR/changed.img"
mkdir -p "$MNT" "$FMNT"

# Deterministic "random" data: a keyed stream, the same every run.
stream() { openssl enc -aes-128-ctr -K "$1" -iv 0 -nosalt </dev/zero 2>/dev/null; }
dropcaches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

if [ "${BENCH_REUSE:-}" != 1 ] || [ ! -f "$DIR/state2.img" ] || [ ! -f "$DIR/changed_bytes" ]; then
	echo "making the data set in $DIR ..."
	rm -rf "$DIR/seed" "$DIR"/state*.img
	mkdir -p "$DIR/seed/lib"
	# ~1.2 GiB of real files: /usr/share, then /usr/lib's entries in name order until ~600 MiB more.
	cp -r /usr/share "$DIR/seed/share" 2>/dev/null || true
	total=0
	for e in $(LC_ALL=C ls /usr/lib | LC_ALL=C sort); do
		[ "$total" -ge 600000 ] && break
		kib=$(du -sk "/usr/lib/$e" 2>/dev/null | cut -f1)
		[ $((total + kib)) -gt 900000 ] && continue
		cp -r "/usr/lib/$e" "$DIR/seed/lib/" 2>/dev/null || true
		total=$((total + kib))
	done
	head -c 300M < <(stream 00112233445566778899aabbccddeeff) >"$DIR/seed/random.bin"
	truncate -s "$SIZE" "$DIR/state1.img"
	E2FSPROGS_FAKE_TIME=1700000000 mkfs.ext4 -q -F -U 5e1f5e1f-0000-4000-8000-000000000001 \
		-E hash_seed=5e1f5e1f-0000-4000-8000-000000000002 -d "$DIR/seed" "$DIR/state1.img"
	rm -rf "$DIR/seed"
	# The second state: 200 small files edited and one 30 MiB file written through the filesystem.
	cp --sparse=always "$DIR/state1.img" "$DIR/state2.img"
	mount -o loop "$DIR/state2.img" "$MNT"
	# Spread over the whole filesystem, as edits of a disk in use are: every n-th small file.
	mapfile -t small < <(find "$MNT/share" "$MNT/lib" -type f -size -64k | LC_ALL=C sort)
	files=()
	for ((i = 0; i < 200; i++)); do files+=("${small[i * ${#small[@]} / 200]}"); done
	for f in "${files[@]}"; do echo "changed" >>"$f"; done
	head -c 30M < <(stream ffeeddccbbaa99887766554433221100) >"$MNT/new.bin"
	umount "$MNT"
	# What really changed, at 4 KiB granularity.
	python3 - "$DIR/state1.img" "$DIR/state2.img" >"$DIR/changed_bytes" <<'PY'
import sys
n = 0
with open(sys.argv[1], 'rb') as a, open(sys.argv[2], 'rb') as b:
    while True:
        x, y = a.read(1 << 20), b.read(1 << 20)
        if not x and not y:
            break
        if x == y:
            continue
        for i in range(0, max(len(x), len(y)), 4096):
            if x[i:i + 4096] != y[i:i + 4096]:
                n += 4096
print(n)
PY
fi
changed_bytes=$(cat "$DIR/changed_bytes")

rows=()
row() { rows+=("$(printf '%-52s %s' "$1" "$2")"); echo "  $1: $2"; }
mib() { echo "scale=1; $1 / 1048576" | bc; }
mbps() { echo "scale=0; $1 / $2 / 1000000" | bc; } # mbps BYTES SECONDS
store_bytes() { du -sB1 "${1:-$SNAPFS_STORE}" | cut -f1; }
timed() { # timed CMD...: runs CMD (its output in $DIR/cmd.out); sets secs rss_kib user sys
	/usr/bin/time -f "%e %M %U %S" -o "$DIR/t" "$@" >"$DIR/cmd.out"
	read -r secs rss_kib user sys <"$DIR/t"
}
dd_mbps() { # dd_mbps FILE [DD-ARG...]: reads FILE with dd bs=1M (or as told), prints MB/s
	local t0 t1 bytes f=$1
	shift
	bytes=$(stat -Lc %s "$f")
	t0=$(date +%s.%N)
	dd if="$f" of=/dev/null bs=1M status=none "$@"
	t1=$(date +%s.%N)
	echo "scale=0; $bytes / ($t1 - $t0) / 1000000" | bc
}
best_of_3() { # best_of_3 FILE: the best of three dd_mbps of FILE
	local best=0 r
	for _ in 1 2 3; do
		r=$(dd_mbps "$1")
		[ "$r" -gt "$best" ] && best=$r
	done
	echo "$best"
}

disk_bytes=$(stat -c %s "$DIR/state1.img")
data_bytes=$(du -B1 "$DIR/state1.img" | cut -f1)
row "disk size / allocated data MiB" "$(mib "$disk_bytes") / $(mib "$data_bytes")"

# --- full and incremental snapshots ---
cp --sparse=always "$DIR/state1.img" "$DISK"
"$SNAPFS" volume add bench --source "$DISK" >/dev/null
dropcaches
timed "$SNAPFS" snapshot create bench --name full
row "full snapshot (cold cache): seconds" "$secs"
row "full snapshot: disk MB/s" "$(mbps "$disk_bytes" "$secs")"
row "full snapshot: CPU seconds user / sys" "$user / $sys"
row "full snapshot: peak RSS MiB" "$(echo "scale=1; $rss_kib / 1024" | bc)"
row "store after full snapshot MiB" "$(mib "$(store_bytes)")"
# What the machine's disk does with the same bytes: read the image (direct, 1 MiB, four streams;
# the filesystem serves its holes without the disk) while writing as many bytes as the snapshot
# stored in its packs (direct, 8 MiB, three streams, synced), as a snapshot does, four reads and
# three writes in flight. No full snapshot can beat it.
stored=$(du -sB1 "$SNAPFS_STORE/packs" | cut -f1)
dropcaches
t0=$(date +%s.%N)
quarter=$(((disk_bytes + 4 * 1048576 - 1) / (4 * 1048576)))
third=$(((stored + 3 * 8388608 - 1) / (3 * 8388608)))
for q in 0 1 2 3; do
	dd if="$DIR/state1.img" of=/dev/null bs=1M skip=$((q * quarter)) count=$quarter iflag=direct status=none &
done
for w in 0 1 2; do
	dd if=/dev/zero of="$DIR/floor$w.tmp" bs=8M count=$third oflag=direct conv=fsync status=none &
done
wait
t1=$(date +%s.%N)
rm -f "$DIR"/floor?.tmp
row "device floor: read the image, write what was stored: s" "$(echo "scale=2; ($t1 - $t0) / 1" | bc)"

# The first snapshot of a second disk holding the same data (a copy of a disk, as disks made from
# one golden image are): hashed and found in the store, nothing compressed or stored.
"$SNAPFS" volume add copy --source "$DIR/state1.img" >/dev/null
before=$(store_bytes)
dropcaches
timed "$SNAPFS" snapshot create copy --name full
row "full snapshot of a copy, data already stored (cold): s" "$secs"
row "… its CPU seconds user / sys; store growth MiB" "$user / $sys; $(mib $(($(store_bytes) - before)))"
"$SNAPFS" snapshot delete copy/full >/dev/null
"$SNAPFS" volume rm copy >/dev/null

cp --sparse=always "$DIR/state2.img" "$DISK"
sync
before=$(store_bytes)
timed "$SNAPFS" snapshot create bench --name incr
growth=$(($(store_bytes) - before))
row "changed data at 4 KiB granularity MiB" "$(mib "$changed_bytes")"
row "incremental snapshot (warm cache): seconds" "$secs"
row "incremental snapshot: peak RSS MiB" "$(echo "scale=1; $rss_kib / 1024" | bc)"
row "incremental snapshot: store growth MiB" "$(mib "$growth")"
row "incremental growth / changed data" "$(echo "scale=2; $growth / $changed_bytes" | bc)"
# The disk back as it was: a snapshot that again differs from its predecessor by the change, read cold.
cp --sparse=always "$DIR/state1.img" "$DISK"
dropcaches
timed "$SNAPFS" snapshot create bench --name reverted
row "incremental snapshot (cold cache): seconds" "$secs"
# What the machine's disk does: read the image directly (4 MiB, the filesystem serves its holes
# without the disk), as a snapshot reads what the page cache does not hold.
dropcaches
t0=$(date +%s.%N)
dd if="$DIR/state1.img" of=/dev/null bs=4M iflag=direct status=none
t1=$(date +%s.%N)
row "device floor: read the image directly: s" "$(echo "scale=2; ($t1 - $t0) / 1" | bc)"

# --- restore ---
dropcaches
timed "$SNAPFS" restore bench/full --to "$DIR/restored.img"
row "restore to a new file: seconds" "$secs"
row "restore to a new file: disk MB/s" "$(mbps "$disk_bytes" "$secs")"
# What the machine's disk does with the same bytes: read the packs (direct, 4 MiB, four streams)
# while writing as much as the image holds to a new file of the image's size (direct, 4 MiB, four
# streams, synced), as a restore does with its four span workers. No restore can beat it: the floor to compare with.
packs=("$SNAPFS_STORE"/packs/*.pack)
quarter=$(((data_bytes + 4 * 4194304 - 1) / (4 * 4194304)))
truncate -s "$disk_bytes" "$DIR/ddcopy.img" # as a restore sizes its target first
dropcaches
t0=$(date +%s.%N)
for q in 0 1 2 3; do
	(for ((k = q; k < ${#packs[@]}; k += 4)); do dd if="${packs[k]}" of=/dev/null bs=4M iflag=direct status=none; done) &
	dd if=/dev/zero of="$DIR/ddcopy.img" bs=4M seek=$((q * quarter)) count=$quarter oflag=direct conv=notrunc status=none &
done
wait
sync "$DIR/ddcopy.img"
t1=$(date +%s.%N)
row "device floor: read the packs, write the image's data: s" "$(echo "scale=2; ($t1 - $t0) / 1" | bc)"
rm -f "$DIR/ddcopy.img"
cp --sparse=always "$DIR/state2.img" "$DIR/changed.img"
sync
timed "$SNAPFS" restore bench/full --to "$DIR/changed.img" --force
row "restore onto the changed disk: seconds" "$secs"
row "restore onto the changed disk: written" "$(tr '\n' ' ' <"$DIR/cmd.out" | grep -oE '[0-9.]+ [KMG]i?B written|wrote [^,;]*' | head -1)"
cmp -s "$DIR/restored.img" "$DIR/state1.img" && cmp -s "$DIR/changed.img" "$DIR/state1.img" ||
	{ echo "snapfs bench: restored image differs" >&2; exit 1; }
rm -f "$DIR/restored.img" "$DIR/changed.img"
sync # so that the delete below does not wait on the journal freeing those 2 GiB files

# --- delete of the middle snapshot of three: full, incr, reverted; it frees incr's own changes ---
before=$(store_bytes)
timed "$SNAPFS" snapshot delete bench/incr
row "delete of the middle snapshot: seconds" "$secs"
row "delete of the middle snapshot: MiB freed" "$(mib $((before - $(store_bytes))))"

# --- a sparse 1 TiB disk holding 32 MiB: costs in proportion to its data, memory bounded ---
SPARSE=$DIR/sparse.img
rm -f "$SPARSE" "$DIR/sparse-restored.img" "$DIR/sparse-copy.img"
truncate -s 1T "$SPARSE"
for k in $(seq 0 31); do # 1 MiB of keyed-stream data every 32 GiB
	head -c 1M < <(stream "$(printf '%032x' "$k")") | dd of="$SPARSE" bs=1M seek=$((k * 32768)) conv=notrunc status=none
done
"$SNAPFS" volume add sparse --source "$SPARSE" >/dev/null
timed "$SNAPFS" snapshot create sparse --name full
row "sparse 1 TiB disk, 32 MiB of data: full snapshot s / peak RSS MiB" "$secs / $(echo "scale=1; $rss_kib / 1024" | bc)"
timed "$SNAPFS" restore sparse/full --to "$DIR/sparse-restored.img"
row "… restore to a new file s / peak RSS MiB" "$secs / $(echo "scale=1; $rss_kib / 1024" | bc)"
rm -f "$DIR/sparse-restored.img"

# --- FUSE reads and the daemon's memory ---
for i in $(seq 3 10); do # 10 images in all
	echo "v$i" | dd of="$DISK" bs=1 seek=$((i * 7919 * 65536)) conv=notrunc status=none
	"$SNAPFS" snapshot create bench --name "s$i" >/dev/null
done
"$SNAPFS" mount "$FMNT"
pid=$(cut -d" " -f1 <"$SNAPFS_STORE/daemon.pid") # "PID START DIR"
img=$FMNT/chains/bench/full.img
# Cold: best of two, each after dropping the caches. Warm: best of three, FUSE and source in turn.
cold() { local a b; dropcaches; a=$(dd_mbps "$1"); dropcaches; b=$(dd_mbps "$1"); echo $((a > b ? a : b)); }
fuse_cold=$(cold "$img")
# Past the page cache (O_DIRECT: the kernel sends each read to the daemon, and fills no cache): what
# the daemon itself serves, apart from the kernel's cost of filling the image's page cache.
fuse_direct=$(dropcaches; dd_mbps "$img" iflag=direct)
src_cold=$(cold "$DIR/state1.img")
dd_mbps "$img" >/dev/null
fuse_warm=$(best_of_3 "$img")
src_warm=$(best_of_3 "$DIR/state1.img")
row "FUSE dd bs=1M of an image, cold: MB/s" "$fuse_cold"
row "FUSE dd bs=1M of an image, warm: MB/s" "$fuse_warm"
row "FUSE dd bs=1M iflag=direct of an image, cold: MB/s" "$fuse_direct"
row "dd bs=1M of the source image, cold: MB/s" "$src_cold"
row "dd bs=1M of the source image, warm: MB/s" "$src_warm"
row "FUSE warm / source warm" "$(echo "scale=2; $fuse_warm / $src_warm" | bc)"
dropcaches
t0=$(date +%s.%N)
for f in "$FMNT"/chains/bench/*.img; do dd if="$f" of=/dev/null bs=1M count=512 status=none & done
wait
t1=$(date +%s.%N)
n=$(ls "$FMNT"/chains/bench/*.img | wc -l)
row "FUSE: $n images, first 512 MiB read in parallel, cold: MB/s" "$(echo "scale=0; $n * 536870912 / ($t1 - $t0) / 1000000" | bc)"
row "daemon peak RSS MiB (VmHWM)" "$(awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$pid/status")"
t0=$(date +%s.%N)
cp "$FMNT/chains/sparse/full.img" "$DIR/sparse-copy.img"
t1=$(date +%s.%N)
for k in $(seq 0 31); do
	off=$((k * 32768 * 1048576))
	cmp -s -i "$off:$off" -n 1048576 "$DIR/sparse-copy.img" "$SPARSE" || { echo "snapfs bench: sparse copy differs" >&2; exit 1; }
done
row "sparse 1 TiB disk: cp of its image out of the mount s / MiB written" \
	"$(echo "scale=2; ($t1 - $t0) / 1" | bc) / $(mib "$(du -B1 "$DIR/sparse-copy.img" | cut -f1)")"
rm -f "$DIR/sparse-copy.img" "$SPARSE"
"$SNAPFS" umount "$FMNT"

# --- chunk-size sweep: full snapshot time (warm cache) and incremental growth ---
sweep=()
if [ "${BENCH_SWEEP:-1}" != 0 ]; then
	for cs in 32K 64K 128K 256K 512K 1M; do
		export SNAPFS_STORE=$DIR/sweep
		rm -rf "$SNAPFS_STORE"
		cp --sparse=always "$DIR/state1.img" "$DISK"
		"$SNAPFS" volume add bench --source "$DISK" --chunk-size "$cs" >/dev/null
		sync
		timed "$SNAPFS" snapshot create bench --name full
		full=$secs
		cp --sparse=always "$DIR/state2.img" "$DISK"
		sync
		before=$(store_bytes)
		timed "$SNAPFS" snapshot create bench --name incr
		growth=$(($(store_bytes) - before))
		sweep+=("$(printf '%-8s %10s %14s %14s %10s' "$cs" "$full" "$secs" "$(mib "$growth")" \
			"$(echo "scale=2; $growth / $changed_bytes" | bc)")")
		echo "  chunk size $cs: full ${full}s, incremental ${secs}s, growth $(mib "$growth") MiB"
	done
	rm -rf "$DIR/sweep"
fi

echo
echo "snapfs bench, $(date -u +%F), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))," \
	"$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(uname -r)"
printf '%s\n' "${rows[@]}"
if [ ${#sweep[@]} -gt 0 ]; then
	echo
	echo "chunk-size sweep (warm cache): full snapshot s, incremental s, growth MiB, growth / changed"
	printf '%-8s %10s %14s %14s %10s\n' "chunk" "full s" "incremental s" "growth MiB" "ratio"
	printf '%s\n' "${sweep[@]}"
fi
