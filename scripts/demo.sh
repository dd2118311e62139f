#!/usr/bin/env bash
# The snapfs story end to end on a sample disk: an ext4 image with real files, incremental snapshots,
# delete in the middle of the chain, verify, restore and clone, each command printed with its output.
# Run through `make demo` (which builds bin/snapfs and installs what is missing). Needs root for the
# loop mounts. DEMO_DIR (default /tmp/snapfs-demo) holds everything; it is wiped at the start.
set -euo pipefail
cd "$(dirname "$0")/.."
SNAPFS=${SNAPFS:-$PWD/bin/snapfs}
DEMO_DIR=${DEMO_DIR:-/tmp/snapfs-demo}
export SNAPFS_STORE=$DEMO_DIR/store
DISK=$DEMO_DIR/disk.img
MNT=$DEMO_DIR/mnt
LOOPMNT=$DEMO_DIR/loop

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '\033[36m$ %s\033[0m\n' "$*"; "$@"; }
snapfs() { "$SNAPFS" "$@"; }
store_kib() { du -sk "$SNAPFS_STORE" | cut -f1; }
sha() { sha256sum <"$1" | cut -d' ' -f1; }
# same FILE SHA WHAT: the demo fails unless FILE's contents are SHA.
same() {
	if [ "$(sha "$1")" != "$2" ]; then
		echo "snapfs demo: $3 is NOT bit-exact" >&2
		exit 1
	fi
	echo "$3 is bit-exact"
}

cleanup() {
	mountpoint -q "$LOOPMNT" 2>/dev/null && umount "$LOOPMNT" || true
	mountpoint -q "$MNT" 2>/dev/null && { "$SNAPFS" umount "$MNT" 2>/dev/null || umount -l "$MNT" || true; }
	true
}
trap cleanup EXIT

if [ "$(id -u)" -ne 0 ]; then
	echo "snapfs demo: run as root (it loop-mounts the sample disk)" >&2
	exit 1
fi
cleanup
rm -rf "$DEMO_DIR"
mkdir -p "$DEMO_DIR" "$LOOPMNT"

bold "A 1 GiB sample disk: ext4 with ~150 MiB of real files and 64 MiB of random data"
mkdir -p "$DEMO_DIR/seed"
cp -r /usr/share/doc "$DEMO_DIR/seed/doc" 2>/dev/null || true
cp -r /usr/lib/x86_64-linux-gnu/perl* "$DEMO_DIR/seed/" 2>/dev/null || true
head -c 64M /dev/urandom >"$DEMO_DIR/seed/random.bin"
echo "hello from the first state of the disk" >"$DEMO_DIR/seed/hello.txt"
run truncate -s 1G "$DISK"
run mkfs.ext4 -q -F -d "$DEMO_DIR/seed" "$DISK"
rm -rf "$DEMO_DIR/seed"
run du -h --apparent-size "$DISK"
run du -h "$DISK"

bold "Register the disk and take the first (full) snapshot"
run snapfs init --region demo-1
run snapfs volume add web1 --source "$DISK" --kind data
run snapfs volume ls
before=$(store_kib)
run snapfs snapshot create web1 --name monday
sha_monday=$(sha "$DISK")
echo "store: $(( ($(store_kib) - before) / 1024 )) MiB after the first snapshot"

change_disk() { # $1: label — edits ~2% of the disk through the filesystem
	mount -o loop "$DISK" "$LOOPMNT"
	local files
	mapfile -t files < <(find "$LOOPMNT/doc" -type f -name 'copyright' | head -200)
	for f in "${files[@]}"; do
		echo "edited on $1" >>"$f"
	done
	head -c 16M /dev/urandom >"$LOOPMNT/new-$1.bin"
	echo "hello from $1" >"$LOOPMNT/hello.txt"
	umount "$LOOPMNT"
}

bold "Change about 2% of the disk (200 small files edited, a 16 MiB file written) and snapshot again"
change_disk tuesday
before=$(store_kib)
run snapfs snapshot create web1 --name tuesday
sha_tuesday=$(sha "$DISK")
echo "store grew by $(( ($(store_kib) - before) / 1024 )) MiB for this incremental snapshot (disk: 1024 MiB)"

bold "Change it again; this snapshot gets the default name (volume + date)"
change_disk wednesday
run snapfs snapshot create web1
sha_wednesday=$(sha "$DISK")
last=$("$SNAPFS" snapshot ls web1 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["name"])')

bold "The chain: capacity, snapshot count, source disk, and the data unique to each snapshot"
run snapfs chain ls
run snapfs chain show web1

bold "Delete the middle snapshot: only data unique to it is freed"
before=$(store_kib)
run snapfs snapshot delete web1/tuesday
echo "store shrank by $(( (before - $(store_kib)) / 1024 )) MiB"
run snapfs snapshot ls web1
run snapfs verify

bold "Roll the disk back to monday: only the chunks that differ are written"
run snapfs restore web1/monday
echo "disk sha256 now:   $(sha "$DISK")"
echo "monday's sha256:   $sha_monday"
same "$DISK" "$sha_monday" "the restore"

bold "Clone the newest snapshot into a new disk, registered as its own volume"
run snapfs clone "web1/$last" --to "$DEMO_DIR/web2.img" --volume web2
same "$DEMO_DIR/web2.img" "$sha_wednesday" "the clone"
before=$(store_kib)
run snapfs snapshot create web2 --name first-own
echo "the clone's first own snapshot stored $(( ($(store_kib) - before) )) KiB: it shares the source's chunks"
run snapfs chain ls

bold "Mine the clone: loop-mount it read-only"
run mount -o ro,loop,noload "$DEMO_DIR/web2.img" "$LOOPMNT"
run cat "$LOOPMNT/hello.txt"
run umount "$LOOPMNT"

bold "The FUSE tree: every snapshot is a read-only disk image"
mkdir -p "$MNT"
run snapfs mount "$MNT"
run ls -l "$MNT/chains/web1"
run du -h "$MNT/chains/web1/monday.img"
run getfattr -d "$MNT/chains/web1/monday.img"
run cat "$MNT/chains/web1/info"
bold "Snapshot through the control file"
run sh -c "echo 'snapshot via-ctl' > '$MNT/volumes/web1/ctl'"
for _ in $(seq 300); do
	grep -q '^done\|^failed' "$MNT/volumes/web1/status" && break
	sleep 0.2
done
run cat "$MNT/volumes/web1/status"
if [ "$(cat "$MNT/volumes/web1/status")" != "done via-ctl" ]; then
	echo "snapfs demo: the snapshot through ctl did not finish" >&2
	exit 1
fi
run ls -l "$MNT/chains/web1"
bold "Loop-mount the first snapshot's image read-only and read a file from it"
run mount -o ro,loop,noload "$MNT/chains/web1/monday.img" "$LOOPMNT"
run cat "$LOOPMNT/hello.txt"
run umount "$LOOPMNT"
bold "dd-restore an image to a file, cp-clone one keeping its holes"
run dd if="$MNT/chains/web1/$last.img" of="$DEMO_DIR/restored.img" bs=1M
same "$DEMO_DIR/restored.img" "$sha_wednesday" "the dd restore"
run cp --sparse=always "$MNT/chains/web1/monday.img" "$DEMO_DIR/copy.img"
same "$DEMO_DIR/copy.img" "$sha_monday" "the cp clone"
run du -h "$DEMO_DIR/copy.img"
bold "Commands go through the daemon while mounted"
run snapfs snapshot show web1/via-ctl
run snapfs gc
run snapfs umount "$MNT"

bold "Done. Everything is in $DEMO_DIR"
