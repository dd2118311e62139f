package fs

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/snapfs/snapfs/chain"
)

// TestInfoEscapesValues: a value holding a newline or another control character (a source path may)
// shows quoted in volumes/V/info and chains/C/info, so that it cannot add lines of its own.
func TestInfoEscapesValues(t *testing.T) {
	ctx := context.Background()
	f, m := newTestFSWithDisk(t, "a\nname: forged\x1b[2J.img")
	if _, err := m.CreateSnapshot(ctx, "v", chain.CreateOptions{Name: "s1"}); err != nil {
		t.Fatal(err)
	}
	v, err := m.Volume(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	for what, c := range map[string]struct {
		gen  textGen
		keys []string
	}{
		"volumes/v/info": {f.volumeInfo("v"), []string{"name", "source", "kind", "instance", "size", "chunk_size", "chain"}},
		"chains/v/info":  {f.chainInfo("v"), []string{"name", "region", "capacity", "snapshots", "source", "stored_bytes"}},
	} {
		data, err := c.gen(ctx)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
		if len(lines) != len(c.keys) {
			t.Errorf("%s has %d lines, want %d:\n%s", what, len(lines), len(c.keys), data)
			continue
		}
		for i, line := range lines {
			key, value, _ := strings.Cut(line, ": ")
			if key != c.keys[i] {
				t.Errorf("%s line %d: %q, want key %s", what, i+1, line, c.keys[i])
			}
			if bad := unprintable(line); bad != "" {
				t.Errorf("%s line %d holds %s: %q", what, i+1, bad, line)
			}
			if key == "source" {
				if got, err := strconv.Unquote(value); err != nil || got != v.Source {
					t.Errorf("%s source %s: unquotes to %q, %v; want %q", what, value, got, err, v.Source)
				}
			}
		}
	}
}
