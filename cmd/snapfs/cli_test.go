package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/snapfs/snapfs/chain"
)

const (
	imageSize = 4 << 20
	chunk64K  = 64 << 10
)

// TestLifecycle walks a volume through the whole command set: init, add, snapshots, listings, delete,
// restore, clone, verify, gc and volume rm.
func TestLifecycle(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	// A store that does not exist lists as empty.
	if got := e.ok("volume", "ls", "--json"); strings.TrimSpace(got) != "[]" {
		t.Fatalf("volume ls --json on no store: %q, want []", got)
	}
	if _, err := os.Stat(e.store); !os.IsNotExist(err) {
		t.Fatalf("a read-only command created the store: %v", err)
	}

	if out := e.ok("init"); !strings.Contains(out, "created") {
		t.Errorf("init: %q", out)
	}
	if out := e.ok("init"); !strings.Contains(out, "exists") {
		t.Errorf("init again: %q", out)
	}
	e.ok("init", "--region", "local")

	img := e.path("disk.img")
	makeImage(t, img, imageSize)
	e.ok("volume", "add", "v1", "--source", img, "--chunk-size", "64K")

	if out := e.ok("volume", "ls"); !strings.Contains(out, "v1") || !strings.Contains(out, "4.0 MiB") {
		t.Errorf("volume ls:\n%s", out)
	}
	vols := okJSON[[]chain.Volume](e, "volume", "ls", "--json")
	if len(vols) != 1 {
		t.Fatalf("volume ls --json: %+v", vols)
	}
	want := chain.Volume{Name: "v1", Source: img, Kind: "data", Size: imageSize, ChunkSize: chunk64K}
	if v := vols[0]; v.Name != want.Name || v.Source != want.Source || v.Kind != want.Kind || v.Size != want.Size ||
		v.ChunkSize != want.ChunkSize || v.Chain != "" {
		t.Errorf("volume ls --json: %+v, want %+v", v, want)
	}
	checkJSONKeys(t, e.ok("volume", "ls", "--json"), "name", "source", "kind", "instance", "size", "chunk_size", "chain")

	h1 := fileHash(t, img)
	first, second := twoDefaultSnapshots(t, e)
	e.ok("snapshot", "create", "v1", "--name", "base")

	snaps := okJSON[[]chain.Snapshot](e, "snapshot", "ls", "--json")
	if names := snapNames(snaps); strings.Join(names, " ") != first+" "+second+" base" {
		t.Fatalf("snapshot ls: %v", names)
	}
	checkJSONKeys(t, e.ok("snapshot", "ls", "v1", "--json"), "id", "chain", "name", "volume", "created", "size",
		"unique_bytes", "data_bytes", "status")
	base := okJSON[chain.Snapshot](e, "snapshot", "show", "v1/base", "--json")
	if base.Chain != "v1" || base.Name != "base" || base.Volume != "v1" || base.Size != imageSize ||
		base.Status != chain.StatusReady || base.ID == 0 || time.Since(base.Created) > time.Hour ||
		base.DataBytes != imageSize { // random bytes: every chunk holds data
		t.Errorf("snapshot show v1/base: %+v", base)
	}
	if byID := okJSON[chain.Snapshot](e, "snapshot", "show", strconv.FormatInt(base.ID, 10), "--json"); byID.Ref() != "v1/base" {
		t.Errorf("snapshot show %d: %+v", base.ID, byID)
	}
	if out := e.ok("snapshot", "show", "v1/base"); !strings.Contains(out, "v1/base") || !strings.Contains(out, "Data:        4.0 MiB\n") {
		t.Errorf("snapshot show:\n%s", out)
	}

	vols = okJSON[[]chain.Volume](e, "volume", "ls", "--json")
	if vols[0].Chain != "v1" {
		t.Errorf("volume ls after a snapshot: chain %q, want v1", vols[0].Chain)
	}
	chains := okJSON[[]chain.Chain](e, "chain", "ls", "--json")
	if len(chains) != 1 {
		t.Fatalf("chain ls: %+v", chains)
	}
	if c := chains[0]; c.Name != "v1" || c.Region != "local" || c.Volume != "v1" || c.Source != img || c.Size != imageSize ||
		c.Snapshots != 3 || c.StoredBytes <= 0 {
		t.Errorf("chain ls: %+v", c)
	}
	checkJSONKeys(t, e.ok("chain", "ls", "--json"), "name", "region", "volume", "source", "size", "snapshots", "stored_bytes")
	detail := okJSON[chainDetail](e, "chain", "show", "v1", "--json")
	if detail.Name != "v1" || detail.Snapshots != 3 || len(detail.SnapshotList) != 3 || detail.StoredBytes <= 0 {
		t.Errorf("chain show --json: %+v", detail)
	}
	if out := e.ok("chain", "show", "v1"); !strings.Contains(out, "base") || !strings.Contains(out, "4.0 MiB") {
		t.Errorf("chain show:\n%s", out)
	}
	if out := e.ok("chain", "ls"); !strings.Contains(out, "v1") {
		t.Errorf("chain ls:\n%s", out)
	}

	// Two more snapshots of a changing disk; then the middle one goes.
	h2 := scribble(t, img, 1<<20, 200<<10)
	e.ok("snapshot", "create", "v1", "--name", "mid")
	h3 := scribble(t, img, 3<<20, 300<<10)
	if out := strings.TrimSpace(e.ok("snapshot", "create", "v1", "--name", "last")); out != "v1/last" {
		t.Errorf("snapshot create --name last printed %q", out)
	}
	if h2 == h1 || h3 == h2 {
		t.Fatal("scribble did not change the image")
	}
	if out := e.ok("snapshot", "delete", "v1/mid"); !strings.Contains(out, "deleted v1/mid") {
		t.Errorf("snapshot delete: %q", out)
	}
	snaps = okJSON[[]chain.Snapshot](e, "snapshot", "ls", "v1", "--json")
	if names := strings.Join(snapNames(snaps), " "); names != first+" "+second+" base last" {
		t.Errorf("after delete: %s", names)
	}

	// Restores into new files, and into an existing one.
	for _, tc := range []struct{ ref, to, hash string }{
		{"v1/base", "r-base.img", h1},
		{"v1/" + first, "r-first.img", h1},
		{"v1/last", "r-last.img", h3},
		{strconv.FormatInt(base.ID, 10), "r-last.img", h1}, // over the restored last
	} {
		out := e.ok("restore", tc.ref, "--to", e.path(tc.to))
		if !strings.Contains(out, "wrote") {
			t.Errorf("restore %s: %q", tc.ref, out)
		}
		if got := fileHash(t, e.path(tc.to)); got != tc.hash {
			t.Errorf("restore %s --to %s: wrong contents", tc.ref, tc.to)
		}
	}

	// Clones.
	if out := strings.TrimSpace(e.ok("clone", "v1/last", "--to", e.path("c1.img"))); out != e.path("c1.img") {
		t.Errorf("clone printed %q", out)
	}
	if fileHash(t, e.path("c1.img")) != h3 {
		t.Error("clone v1/last: wrong contents")
	}
	out := e.ok("clone", "v1/base", "--to", e.path("c2.img"), "--volume", "v2")
	if !strings.Contains(out, e.path("c2.img")) || !strings.Contains(out, "v2") {
		t.Errorf("clone --volume printed %q", out)
	}
	if fileHash(t, e.path("c2.img")) != h1 {
		t.Error("clone v1/base: wrong contents")
	}
	vols = okJSON[[]chain.Volume](e, "volume", "ls", "--json")
	if len(vols) != 2 || vols[1].Name != "v2" || vols[1].Source != e.path("c2.img") {
		t.Errorf("volume ls after clone --volume: %+v", vols)
	}

	e.ok("verify")
	e.ok("verify", "v1/base", "v1/last")
	e.ok("gc")

	// restore with no --to writes the volume's source.
	e.ok("restore", "v1/base")
	if fileHash(t, img) != h1 {
		t.Error("restore v1/base to the source: wrong contents")
	}

	// Forgetting the volume keeps its chain and snapshots.
	e.ok("volume", "rm", "v1")
	vols = okJSON[[]chain.Volume](e, "volume", "ls", "--json")
	if len(vols) != 1 || vols[0].Name != "v2" {
		t.Errorf("volume ls after rm: %+v", vols)
	}
	chains = okJSON[[]chain.Chain](e, "chain", "ls", "--json")
	if len(chains) != 2 || chains[0].Name != "v1" || chains[0].Snapshots != 4 || chains[0].Volume != "" {
		t.Errorf("chain ls after volume rm: %+v", chains)
	}
	if n := len(okJSON[[]chain.Snapshot](e, "snapshot", "ls", "v1", "--json")); n != 4 {
		t.Errorf("snapshot ls v1 after volume rm: %d snapshots, want 4", n)
	}
	e.ok("restore", "v1/last", "--to", e.path("after-rm.img"))
	if fileHash(t, e.path("after-rm.img")) != h3 {
		t.Error("restore after volume rm: wrong contents")
	}
}

// twoDefaultSnapshots takes two snapshots with default names within one second and checks the names:
// VOL-YYYYMMDD-HHMMSS, then the same with -2.
func twoDefaultSnapshots(t *testing.T, e *env) (first, second string) {
	t.Helper()
	re := regexp.MustCompile(`^v1/(v1-\d{8}-\d{6})(-2)?$`)
	// Start just after a second begins, so that both fit in it on any reasonable machine.
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second + 10*time.Millisecond)))
	start := time.Now()
	out1 := strings.TrimSpace(e.ok("snapshot", "create", "v1"))
	out2 := strings.TrimSpace(e.ok("snapshot", "create", "v1"))
	sameSecond := time.Now().Truncate(time.Second).Equal(start.Truncate(time.Second))
	m1, m2 := re.FindStringSubmatch(out1), re.FindStringSubmatch(out2)
	if m1 == nil || m1[2] != "" || m2 == nil {
		t.Fatalf("default snapshot names: %q, %q", out1, out2)
	}
	if sameSecond && out2 != out1+"-2" {
		t.Errorf("second snapshot in the same second: %q, want %q", out2, out1+"-2")
	}
	return strings.TrimPrefix(out1, "v1/"), strings.TrimPrefix(out2, "v1/")
}

func snapNames(snaps []chain.Snapshot) []string {
	var names []string
	for _, s := range snaps {
		names = append(names, s.Name)
	}
	return names
}

// checkJSONKeys checks that the first element of a JSON array has every key.
func checkJSONKeys(t *testing.T, doc string, keys ...string) {
	t.Helper()
	var list []map[string]any
	if err := json.Unmarshal([]byte(doc), &list); err != nil || len(list) == 0 {
		t.Fatalf("decode %q: %v", doc, err)
	}
	for _, k := range keys {
		if _, ok := list[0][k]; !ok {
			t.Errorf("JSON lacks %q: %s", k, doc)
		}
	}
	if c, ok := list[0]["created"].(string); ok {
		if _, err := time.Parse(time.RFC3339, c); err != nil {
			t.Errorf("created %q is not RFC 3339: %v", c, err)
		}
	}
}

// fixture is a store with volume v1 (snapshots v1/a and v1/b) and an extra image for bad inputs.
type fixture struct {
	*env
	img string
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	e := newEnv(t)
	img := e.path("disk.img")
	makeImage(t, img, 1<<20)
	e.ok("init")
	e.ok("volume", "add", "v1", "--source", img)
	e.ok("snapshot", "create", "v1", "--name", "a")
	e.ok("snapshot", "create", "v1", "--name", "b")
	return fixture{env: e, img: img}
}

// TestUsageErrors checks that command-line mistakes exit 2 with one "snapfs: " line, and change nothing.
func TestUsageErrors(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	before := f.state()
	img := f.img
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{}, "missing command"},
		{[]string{"bogus"}, "unknown command bogus"},
		{[]string{"volume"}, "volume: missing command"},
		{[]string{"volume", "bogus"}, "volume: unknown command bogus"},
		{[]string{"--bogus", "volume", "ls"}, "flag provided but not defined"},
		{[]string{"volume", "ls", "--bogus"}, "volume ls: flag provided but not defined: -bogus"},
		{[]string{"volume", "ls", "extra"}, "volume ls: unexpected argument extra"},
		{[]string{"volume", "add"}, "volume add: missing argument"},
		{[]string{"volume", "add", "x"}, "missing --source"},
		{[]string{"volume", "add", "x", "y", "--source", img}, "unexpected argument y"},
		{[]string{"volume", "add", "x", "--source", img, "--kind", "weird"}, "--kind weird"},
		{[]string{"volume", "add", "x", "--source", img, "--chunk-size", "abc"}, "--chunk-size"},
		{[]string{"volume", "add", "x", "--source", img, "--chunk-size", "48K"}, "power of two"},
		{[]string{"volume", "add", "x", "--source", img, "--chunk-size", "8M"}, "power of two"},
		{[]string{"volume", "add", "x", "--source", img, "--chunk-size", "8K"}, "power of two"},
		{[]string{"volume", "add", "x", "--source"}, "flag needs an argument"},
		{[]string{"volume", "rm"}, "volume rm: missing argument"},
		{[]string{"volume", "rm", "v1", "v2"}, "unexpected argument v2"},
		{[]string{"snapshot", "create"}, "want VOLUME or --instance"},
		{[]string{"snapshot", "create", "v1", "--instance", "i1"}, "not both"},
		{[]string{"snapshot", "create", "v1", "v2"}, "unexpected argument v2"},
		{[]string{"snapshot", "create", "v1", "--name"}, "flag needs an argument"},
		{[]string{"snapshot", "ls", "v1", "v2"}, "unexpected argument v2"},
		{[]string{"snapshot", "show"}, "missing argument"},
		{[]string{"snapshot", "show", "v1/a", "v1/b"}, "unexpected argument v1/b"},
		{[]string{"snapshot", "delete"}, "missing argument"},
		{[]string{"chain", "show"}, "missing argument"},
		{[]string{"chain", "ls", "x"}, "unexpected argument x"},
		{[]string{"restore"}, "missing argument"},
		{[]string{"restore", "v1/a", "v1/b"}, "unexpected argument v1/b"},
		{[]string{"clone", "v1/a"}, "missing --to"},
		{[]string{"gc", "x"}, "gc: unexpected argument x"},
		{[]string{"init", "x"}, "init: unexpected argument x"},
		{[]string{"help", "bogus"}, "bogus"},
		{[]string{"volume", "ls", "--store"}, "flag needs an argument: -store"},
	} {
		t.Run(strings.Join(tc.args, "_"), func(t *testing.T) {
			f.fails(2, tc.want, tc.args...)
		})
	}
	if after := f.state(); after != before {
		t.Errorf("usage errors changed the store:\nbefore %s\nafter %s", before, after)
	}
	if _, err := os.Stat(f.path("x")); err == nil {
		t.Error("a usage error created a file")
	}
}

// TestBadInput checks that failures exit 1 with one "snapfs: " line that says what and why, and
// change nothing.
func TestBadInput(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	img2 := f.path("other.img")
	makeImage(t, img2, 1<<20)
	dirSource := f.path("adir")
	if err := os.Mkdir(dirSource, 0o700); err != nil {
		t.Fatal(err)
	}
	fifo := f.path("fifo")
	if err := mkfifo(fifo); err != nil {
		t.Fatal(err)
	}
	existing := f.path("existing.img")
	makeImage(t, existing, 1<<20)

	bad := []struct {
		name, why string
	}{
		{".hidden", "invalid argument"},
		{"a/b", "invalid argument"},
		{"..", "invalid argument"},
		{strings.Repeat("n", 129), "longer than 128"},
		{"", "empty name"},
		{"bad name", "invalid argument"},
		{"bad\xffname", "invalid argument"},
	}
	type tc struct {
		args []string
		want string
	}
	cases := []tc{
		{[]string{"snapshot", "create", "nope"}, "snapshot create nope: volume nope: not found"},
		{[]string{"snapshot", "create", "--instance", "nope"}, "instance nope"},
		{[]string{"volume", "rm", "nope"}, "volume rm nope: volume nope: not found"},
		{[]string{"snapshot", "ls", "nope"}, "snapshot ls nope: chain nope: not found"},
		{[]string{"chain", "show", "nope"}, "chain show nope: chain nope: not found"},
		{[]string{"snapshot", "show", "v1/nope"}, "snapshot show v1/nope: snapshot v1/nope: not found"},
		{[]string{"snapshot", "show", "nope/a"}, "not found"},
		{[]string{"snapshot", "show", "999"}, "snapshot 999: not found"},
		{[]string{"snapshot", "show", "0"}, "invalid argument"},
		{[]string{"snapshot", "delete", "v1/nope"}, "snapshot delete v1/nope: snapshot v1/nope: not found"},
		{[]string{"snapshot", "delete", "v1/a", "v1/nope"}, "snapshot delete v1/nope: snapshot v1/nope: not found"},
		{[]string{"snapshot", "delete", "v1/a", "v1/.x"}, "snapshot delete v1/.x: invalid argument"},
		{[]string{"restore", "v1/nope", "--to", f.path("x.img")}, "restore v1/nope: snapshot v1/nope: not found"},
		{[]string{"clone", "v1/nope", "--to", f.path("x.img")}, "clone v1/nope: snapshot v1/nope: not found"},
		{[]string{"clone", "v1/a", "--to", existing}, "exists"},
		{[]string{"clone", "v1/a", "--to", f.path("x.img"), "--volume", "v1"}, "volume v1: already exists"},
		{[]string{"verify", "v1/nope"}, "snapshot v1/nope: not found"},
		{[]string{"volume", "add", "v1", "--source", img2}, "volume add v1: volume v1: already exists"},
		{[]string{"snapshot", "create", "v1", "--name", "a"}, "already exists"},
		{[]string{"volume", "add", "x", "--source", f.path("nope")}, "volume add x: source " + f.path("nope") + ": no such file or directory"},
		{[]string{"volume", "add", "x", "--source", dirSource}, "is a directory"},
		{[]string{"volume", "add", "x", "--source", fifo}, "not a regular file or block device"},
		{[]string{"init", "--region", "elsewhere"}, "region local, not elsewhere"},
	}
	for _, b := range bad {
		cases = append(cases,
			tc{[]string{"volume", "add", b.name, "--source", img2}, b.why},
			tc{[]string{"snapshot", "create", "v1", "--name", b.name}, b.why},
			tc{[]string{"clone", "v1/a", "--to", f.path("x.img"), "--volume", b.name}, b.why},
		)
		if b.name != "" && !strings.Contains(b.name, "/") {
			cases = append(cases, tc{[]string{"snapshot", "show", "v1/" + b.name}, "invalid argument"})
		}
	}

	before := f.state()
	hashes := map[string]string{}
	for _, p := range []string{f.img, img2, existing} {
		hashes[p] = fileHash(t, p)
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, "_"), func(t *testing.T) {
			f.fails(1, c.want, c.args...)
		})
	}
	if after := f.state(); after != before {
		t.Errorf("failed commands changed the store:\nbefore %s\nafter %s", before, after)
	}
	for p, h := range hashes {
		if fileHash(t, p) != h {
			t.Errorf("failed commands changed %s", p)
		}
	}
	if _, err := os.Stat(f.path("x.img")); err == nil {
		t.Error("a failed clone or restore left x.img behind")
	}
}

// TestErrorMessageForms pins the exact error lines scripts may match.
func TestErrorMessageForms(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"volume", "add", "db1", "--source", "/nope"}, "snapfs: volume add db1: source /nope: no such file or directory\n"},
		{[]string{"snapshot", "delete", "v1/x"}, "snapfs: snapshot delete v1/x: snapshot v1/x: not found\n"},
	} {
		r := f.run(tc.args...)
		if r.code != 1 || r.stderr != tc.want {
			t.Errorf("snapfs %q: got %s\nwant stderr %q", tc.args, r, tc.want)
		}
	}
}

// TestUnreadableSource: root reads any file whatever its mode, so an unreadable source cannot be
// made here; a socket, which cannot be opened as a disk at all, stands in for it.
func TestUnreadableSource(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	sock := f.path("sock")
	l, err := listenUnix(sock)
	if err != nil {
		t.Skipf("cannot make a unix socket: %v", err)
	}
	defer l.Close()
	before := f.state()
	f.fails(1, "volume add s", "volume", "add", "s", "--source", sock)
	if os.Geteuid() != 0 {
		p := f.path("noread.img")
		makeImage(t, p, 1<<20)
		if err := os.Chmod(p, 0); err != nil {
			t.Fatal(err)
		}
		f.fails(1, "permission denied", "volume", "add", "u", "--source", p)
	}
	if f.state() != before {
		t.Error("failed volume add changed the store")
	}
}

// TestRestoreReadOnlyTarget: root may write any file whatever its mode, so the target is made
// immutable with chattr +i.
func TestRestoreReadOnlyTarget(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	target := f.path("ro.img")
	makeImage(t, target, 1<<20)
	h := fileHash(t, target)
	if os.Geteuid() == 0 {
		if out, err := runCmd("chattr", "+i", target); err != nil {
			t.Skipf("chattr +i %s: %v: %s", target, err, out)
		}
		t.Cleanup(func() { runCmd("chattr", "-i", target) })
	} else if err := os.Chmod(target, 0o400); err != nil {
		t.Fatal(err)
	}
	f.fails(1, "read-only", "restore", "v1/a", "--to", target)
	if fileHash(t, target) != h {
		t.Error("restore changed a read-only target")
	}
}

// TestRestoreTargetInUse: an image attached to a loop device is refused without --force.
func TestRestoreTargetInUse(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("attaching a loop device needs root")
	}
	f := newFixture(t)
	target := f.path("loop.img")
	makeImage(t, target, 1<<20)
	out, err := runCmd("losetup", "-f", "--show", target)
	if err != nil {
		t.Skipf("losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(out)
	t.Cleanup(func() { runCmd("losetup", "-d", dev) })
	h := fileHash(t, target)
	f.fails(1, "--force", "restore", "v1/a", "--to", target)
	if fileHash(t, target) != h {
		t.Error("restore changed an attached target")
	}
	f.ok("restore", "v1/a", "--to", target, "--force")
}

// TestDeleteAllOrNothing: one bad reference among several deletes nothing; good ones all go.
func TestDeleteAllOrNothing(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.ok("snapshot", "create", "v1", "--name", "c")
	before := f.state()
	f.fails(1, "snapshot delete v1/zzz", "snapshot", "delete", "v1/a", "v1/b", "v1/zzz")
	if f.state() != before {
		t.Fatal("a failed multi-delete changed the store")
	}
	snaps := okJSON[[]chain.Snapshot](f.env, "snapshot", "ls", "--json")
	id := strconv.FormatInt(snaps[0].ID, 10) // v1/a by id, named twice
	out := f.ok("snapshot", "delete", "v1/a", id, "v1/c")
	if strings.Count(out, "deleted") != 2 || !strings.Contains(out, "freed") {
		t.Errorf("delete printed %q", out)
	}
	if names := snapNames(okJSON[[]chain.Snapshot](f.env, "snapshot", "ls", "--json")); len(names) != 1 || names[0] != "b" {
		t.Errorf("after delete: %v", names)
	}
}

// TestLockedStore: while another process holds the writer lock, changes fail with a clear message and
// listings still work.
func TestLockedStore(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	before := f.state()
	m, err := chain.Open(t.Context(), f.store, chain.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	f.fails(1, "locked", "volume", "add", "v9", "--source", f.img)
	f.fails(1, "locked", "snapshot", "create", "v1")
	if out := f.ok("volume", "ls"); !strings.Contains(out, "v1") {
		t.Errorf("volume ls while locked:\n%s", out)
	}
	f.ok("snapshot", "ls")
	f.ok("chain", "show", "v1")
	if out := f.ok("init"); !strings.Contains(out, "exists") {
		t.Errorf("init while locked: %q", out)
	}
	if f.state() != before {
		t.Error("commands changed a locked store")
	}
}

// TestSystemVolume: snapshot create --instance snapshots the instance's system disk.
func TestSystemVolume(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	img := e.path("root.img")
	makeImage(t, img, 1<<20)
	e.ok("volume", "add", "root1", "--source", img, "--kind", "system", "--instance", "i-1", "--chunk-size", "1MiB")
	if out := strings.TrimSpace(e.ok("snapshot", "create", "--instance", "i-1", "--name", "s")); out != "root1/s" {
		t.Errorf("snapshot create --instance printed %q", out)
	}
	s := okJSON[chain.Snapshot](e, "snapshot", "create", "--instance", "i-1", "--json")
	if s.Chain != "root1" || s.Volume != "root1" || s.ChunkSize != 1<<20 {
		t.Errorf("snapshot create --json: %+v", s)
	}
	vols := okJSON[[]chain.Volume](e, "volume", "ls", "--json")
	if len(vols) != 1 || vols[0].Kind != "system" || vols[0].Instance != "i-1" {
		t.Errorf("volume ls: %+v", vols)
	}
}

// TestEmptyStoreListings: listings of a store that does not exist print empty results.
func TestEmptyStoreListings(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, args := range [][]string{
		{"volume", "ls", "--json"}, {"snapshot", "ls", "--json"}, {"chain", "ls", "--json"},
	} {
		if out := strings.TrimSpace(e.ok(args...)); out != "[]" {
			t.Errorf("%v: %q, want []", args, out)
		}
	}
	for _, args := range [][]string{{"volume", "ls"}, {"snapshot", "ls"}, {"chain", "ls"}} {
		if out := e.ok(args...); strings.Count(out, "\n") != 1 {
			t.Errorf("%v: want only a header, got %q", args, out)
		}
	}
	e.fails(1, "not found", "chain", "show", "x")
	e.fails(1, "not found", "snapshot", "show", "x/y")
	if _, err := os.Stat(e.store); !os.IsNotExist(err) {
		t.Errorf("listing created the store: %v", err)
	}
	// An initialized but empty store lists [] too.
	e.ok("init")
	if out := strings.TrimSpace(e.ok("snapshot", "ls", "--json")); out != "[]" {
		t.Errorf("snapshot ls --json on an empty store: %q", out)
	}
}

// TestStoreLocation: --store, then $SNAPFS_STORE.
func TestStoreLocation(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	storeA, storeB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	cmd := func(env string, args ...string) result {
		t.Helper()
		return runBinEnv(t, []string{env}, args...)
	}
	if r := cmd("SNAPFS_STORE="+storeA, "init", "--region", "ra"); r.code != 0 {
		t.Fatal(r)
	}
	if r := cmd("SNAPFS_STORE="+storeA, "--store", storeB, "init", "--region", "rb"); r.code != 0 {
		t.Fatal(r)
	}
	// The global flag may also follow the command.
	if r := cmd("SNAPFS_STORE=", "init", "--store", storeB); r.code != 0 || !strings.Contains(r.stdout, "region rb") {
		t.Errorf("init --store after the command: %s", r)
	}
	if r := cmd("SNAPFS_STORE="+storeA, "init"); r.code != 0 || !strings.Contains(r.stdout, "region ra") {
		t.Errorf("init on SNAPFS_STORE: %s", r)
	}
}

// TestArgsAfterDoubleDash: arguments after -- are positional even when they look like flags.
func TestArgsAfterDoubleDash(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	img := e.path("d.img")
	makeImage(t, img, 1<<20)
	e.ok("volume", "add", "--source", img, "--", "-x")
	if vols := okJSON[[]chain.Volume](e, "volume", "ls", "--json"); len(vols) != 1 || vols[0].Name != "-x" {
		t.Errorf("volume ls: %+v", vols)
	}
}

// TestReorderArgs checks how flags are moved in front of positional arguments.
func TestReorderArgs(t *testing.T) {
	app := newApp(os.Stdout, os.Stderr)
	for _, tc := range []struct{ in, want string }{
		{"snapfs", "snapfs"},
		{"snapfs volume ls --json", "snapfs volume ls --json"},
		{"snapfs volume add db1 --source /x --kind system", "snapfs volume add --source /x --kind system -- db1"},
		{"snapfs volume add db1 --source=/x", "snapfs volume add --source=/x -- db1"},
		{"snapfs --store /s snapshot create v1 --json --name n", "snapfs --store /s snapshot create --json --name n -- v1"},
		{"snapfs snapshot delete a/b c/d --store /s", "snapfs --store /s snapshot delete -- a/b c/d"},
		{"snapfs restore v1/a --force --to /t", "snapfs restore --force --to /t -- v1/a"},
		{"snapfs restore -- --weird", "snapfs restore -- --weird"},
		{"snapfs volume --help", "snapfs volume --help"},
		{"snapfs volume add --help", "snapfs volume add --help"},
		{"snapfs bogus x --y", "snapfs bogus x --y"},
		{"snapfs volume add x --bogus y", "snapfs volume add --bogus -- x y"},
		{"snapfs snapshot create v1 --name", "snapfs snapshot create --name"},
		{"snapfs snapshot create v1 --json --name", "snapfs snapshot create --json --name"},
		{"snapfs volume ls --store", "snapfs --store"},
		{"snapfs --store", "snapfs --store"},
		{"snapfs volume add x --source /s -- --kind y", "snapfs volume add --source /s -- x --kind y"},
	} {
		got := strings.Join(reorderArgs(app, strings.Fields(tc.in)), " ")
		if got != tc.want {
			t.Errorf("reorderArgs(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestParseChunkSize checks the --chunk-size forms.
func TestParseChunkSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64 // 0: an error
	}{
		{"65536", 65536}, {"64K", 65536}, {"64KiB", 65536}, {"64k", 65536}, {"64kib", 65536},
		{"1M", 1 << 20}, {"1MiB", 1 << 20}, {"4M", 4 << 20}, {"16K", 16 << 10}, {"16384", 16384},
		{"8K", 0}, {"8M", 0}, {"48K", 0}, {"65535", 0}, {"", 0}, {"K", 0}, {"64 K", 0}, {"-64K", 0},
		{"64KB", 0}, {"1.5M", 0}, {"99999999999999999999", 0}, {"1G", 0},
	} {
		got, err := parseChunkSize(tc.in)
		if tc.want == 0 && err == nil {
			t.Errorf("parseChunkSize(%q) = %d, want an error", tc.in, got)
		}
		if tc.want != 0 && (err != nil || got != tc.want) {
			t.Errorf("parseChunkSize(%q) = %d, %v, want %d", tc.in, got, err, tc.want)
		}
	}
}

// TestHumanSize checks the size format of tables.
func TestHumanSize(t *testing.T) {
	for in, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB",
		64 << 10: "64.0 KiB", 1 << 30: "1.0 GiB", 5 << 40: "5.0 TiB"} {
		if got := humanSize(in); got != want {
			t.Errorf("humanSize(%d) = %q, want %q", in, got, want)
		}
	}
}

// TestHelp: --help works at every level and exits 0.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"volume", "--help"}, {"volume", "add", "--help"}, {"help", "snapshot"}} {
		r := runBin(t, args...)
		if r.code != 0 || !strings.Contains(r.stdout, "USAGE") {
			t.Errorf("snapfs %v: %s", args, r)
		}
	}
}

// TestVerifyFindsDamage: verify exits 1 when stored data is damaged and names the snapshots hit.
func TestVerifyFindsDamage(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.ok("verify")
	packs, err := filepath.Glob(filepath.Join(f.store, "packs", "*.pack"))
	if err != nil || len(packs) == 0 {
		t.Skipf("no pack files to damage in %s (%v)", f.store, err)
	}
	fi, err := os.Stat(packs[0])
	if err != nil {
		t.Fatal(err)
	}
	scribble(t, packs[0], fi.Size()/2, 4096)
	for _, args := range [][]string{{"verify"}, {"verify", "v1/a"}} {
		r := f.run(args...)
		checkFailure(t, r, 1, "fault", args)
		if !strings.Contains(r.stdout, "v1/a") || !strings.Contains(r.stdout, "v1/b") {
			t.Errorf("snapfs %v does not name the damaged snapshots:\n%s", args, r.stdout)
		}
	}
}

// TestNoStore: commands other than init and volume add fail on a store that does not exist, and do
// not create it.
func TestNoStore(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, args := range [][]string{
		{"snapshot", "create", "v1"}, {"snapshot", "delete", "v1/a"}, {"volume", "rm", "v1"},
		{"restore", "v1/a", "--to", e.path("r.img")}, {"clone", "v1/a", "--to", e.path("c.img")},
		{"verify"}, {"gc"},
	} {
		e.fails(1, "no store here (run snapfs init)", args...)
	}
	if _, err := os.Stat(e.store); !os.IsNotExist(err) {
		t.Errorf("a failed command created the store: %v", err)
	}
	for _, p := range []string{"r.img", "c.img"} {
		if _, err := os.Stat(e.path(p)); !os.IsNotExist(err) {
			t.Errorf("a failed command created %s", p)
		}
	}
	// volume add is a first use: it creates the store.
	img := e.path("d.img")
	makeImage(t, img, 1<<20)
	e.ok("volume", "add", "v1", "--source", img)
	if r := okJSON[[]chain.Chain](e, "chain", "ls", "--json"); len(r) != 0 {
		t.Errorf("chain ls: %+v", r)
	}
}
