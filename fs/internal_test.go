package fs

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/snapfs/snapfs/chain"
)

func TestParseCommand(t *testing.T) {
	for _, c := range []struct {
		in, name string
		bad      bool
	}{
		{"snapshot\n", "", false},
		{"snapshot", "", false},
		{"snapshot nightly\n", "nightly", false},
		{"snapshot  nightly \r\n", "nightly", false},
		{"\n", "", true},
		{"", "", true},
		{"delete x\n", "delete", true},
		{"snapshot a b\n", "a", true},
		{"snapshot a\nsnapshot b\n", "", true},
	} {
		name, err := parseCommand(c.in)
		if name != c.name || (err != nil) != c.bad {
			t.Errorf("parseCommand(%q) = %q, %v; want %q, error %v", c.in, name, err, c.name, c.bad)
		}
		if err != nil && !errors.Is(err, errBadCommand) {
			t.Errorf("parseCommand(%q): %v is not errBadCommand", c.in, err)
		}
	}
}

func TestProgressLine(t *testing.T) {
	got := progressLine("s1", 380<<20, 1024<<20, time.Second*380/910)
	if want := "creating s1 37% 380/1024 MiB 910 MiB/s"; got != want {
		t.Errorf("progressLine = %q, want %q", got, want)
	}
	if got, want := progressLine("s1", 0, 0, 0), "creating s1 0% 0/0 MiB 0 MiB/s"; got != want {
		t.Errorf("progressLine = %q, want %q", got, want)
	}
}

func TestJobsStatus(t *testing.T) {
	js := newJobs()
	now := time.Now()
	if got := js.status("v", now); got != "idle" {
		t.Errorf("new: %q", got)
	}
	j, err := js.begin("v", "a", 2<<20, now)
	if err != nil {
		t.Fatal(err)
	}
	j.progress(1<<20, 2<<20)
	if got := js.status("v", now.Add(time.Second)); got != "creating a 50% 1/2 MiB 1 MiB/s" {
		t.Errorf("running: %q", got)
	}
	if _, err := js.begin("v", "b", 0, now); err == nil {
		t.Error("a second job on one volume started")
	}
	js.refuse("v", "b", errors.New("busy\nreally"), now)
	if got := js.status("v", now); got != "failed b: busy really" {
		t.Errorf("refused while running: %q", got)
	}
	if got := js.status("v", now.Add(noteFor)); !strings.HasPrefix(got, "creating a ") {
		t.Errorf("after the note: %q", got)
	}
	js.finish("v", j, nil)
	if got := js.status("v", now); got != "done a" {
		t.Errorf("done: %q", got)
	}
	j, _ = js.begin("v", "c", 0, now)
	js.finish("v", j, errors.New("disk gone"))
	if got := js.status("v", now); got != "failed c: disk gone" {
		t.Errorf("failed: %q", got)
	}
	if got := js.status("w", now); got != "idle" {
		t.Errorf("other volume: %q", got)
	}
}

func TestCopyOut(t *testing.T) {
	if n, errno := copyOut(nil, "abc"); n != 3 || errno != 0 {
		t.Errorf("size query: %d, %v", n, errno)
	}
	if _, errno := copyOut(make([]byte, 2), "abc"); errno == 0 {
		t.Error("short buffer accepted")
	}
	buf := make([]byte, 8)
	if n, errno := copyOut(buf, "abc"); n != 3 || errno != 0 || string(buf[:3]) != "abc" {
		t.Errorf("copy: %d, %v, %q", n, errno, buf)
	}
}

// TestImageBlocks: an image shows the blocks of its data, as a sparse file does, and all of its
// size where its snapshot predates the recording of its data.
func TestImageBlocks(t *testing.T) {
	for _, c := range []struct {
		data, want int64
	}{
		{0, 0},
		{1, 1},
		{5 << 20, 10240},
		{-1, (1<<30 + 100 + 511) / 512}, // not recorded: the whole size
	} {
		n := &imageNode{fsys: &FS{}, snap: chain.Snapshot{Size: 1<<30 + 100, DataBytes: c.data}}
		var out fuse.Attr
		if errno := n.fill(context.Background(), &out); errno != 0 {
			t.Fatal(errno)
		}
		if int64(out.Blocks) != c.want || out.Size != 1<<30+100 {
			t.Errorf("data bytes %d: %d blocks, size %d; want %d blocks", c.data, out.Blocks, out.Size, c.want)
		}
	}
}

// TestJobsForget: a removed volume's status is forgotten, and a snapshot of it still running then
// does not give its outcome to a volume added again under the name.
func TestJobsForget(t *testing.T) {
	js := newJobs()
	now := time.Now()
	j, err := js.begin("v", "a", 0, now)
	if err != nil {
		t.Fatal(err)
	}
	js.forget("v")
	if got := js.status("v", now); got != "idle" {
		t.Errorf("forgotten while running: %q", got)
	}
	js.finish("v", j, nil)
	if got := js.status("v", now); got != "idle" {
		t.Errorf("after the forgotten job finished: %q", got)
	}
	j, _ = js.begin("v", "b", 0, now)
	js.finish("v", j, nil)
	js.forget("v")
	if got := js.status("v", now); got != "idle" {
		t.Errorf("forgotten after done: %q", got)
	}
}
