package chain

import (
	"os"
	"path/filepath"
	"testing"
)

func TestSameIdent(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		same bool
	}{
		{"file ino 12 born 100.000000001", "file ino 12 born 100.000000001", true},
		{"file ino 12 born 100.000000001", "file ino 13 born 100.000000001", false},
		{"file ino 12 born 100.000000001", "file ino 12 born 100.000000002", false},
		{"file ino 12", "file ino 12 born 100.000000001", true}, // birth time began to be reported
		{"file ino 12", "file ino 13 born 100.000000001", false},
		{"loop file ino 12 born 1.5 offset 0", "loop file ino 12 offset 0", true},
		{"loop file ino 12 born 1.5 offset 0", "loop file ino 12 born 1.5 offset 512", false},
		{"disk SERIAL1", "disk SERIAL2", false},
	} {
		if got := sameIdent(tc.a, tc.b); got != tc.same {
			t.Errorf("sameIdent(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.same)
		}
	}
}

// fakeSys makes a /sys/dev/block-like directory for blockIdent from name → content.
func fakeSys(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestBlockIdent(t *testing.T) {
	for _, tc := range []struct {
		what  string
		files map[string]string
		dir   string // within the fake tree; "" for its root
		want  string
	}{
		{"LVM volume", map[string]string{"dm/uuid": "LVM-abcdef"}, "", "dm LVM-abcdef"},
		{"LUKS, opened under any name", map[string]string{"dm/uuid": "CRYPT-LUKS2-0123456789abcdef0123456789abcdef-luks-0123"}, "",
			"dm CRYPT-LUKS2-0123456789abcdef0123456789abcdef"},
		{"plain dm-crypt: its name is all there is", map[string]string{"dm/uuid": "CRYPT-PLAIN-crypt-home"}, "", "dm CRYPT-PLAIN-crypt-home"},
		{"disk with a WWID", map[string]string{"device/wwid": "naa.5000c500a1b2c3d4", "device/serial": "X"}, "", "disk naa.5000c500a1b2c3d4"},
		{"virtio disk with a serial", map[string]string{"serial": "vol-0abc"}, "", "disk vol-0abc"},
		{"partition of a disk with a serial", map[string]string{"serial": "vol-0abc", "vda1/partition": "1"}, "vda1", "disk vol-0abc partition 1"},
		{"partition of an unknown disk", map[string]string{"vda1/partition": "1"}, "vda1", ""},
		{"nothing known", map[string]string{"size": "2048"}, "", ""},
	} {
		dir := filepath.Join(fakeSys(t, tc.files), tc.dir)
		if got := blockIdent(dir); got != tc.want {
			t.Errorf("%s: blockIdent = %q, want %q", tc.what, got, tc.want)
		}
	}
}

// Device nodes are made anew at every boot: a file identity is never taken from one.
func TestFileIdentOfADeviceNode(t *testing.T) {
	if id := fileIdent("/dev/null"); id != "" {
		t.Errorf("fileIdent(/dev/null) = %q, want none", id)
	}
	path := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	before := fileIdent(path)
	if err := os.WriteFile(path, []byte("rewritten in place"), 0o600); err != nil {
		t.Fatal(err)
	}
	if after := fileIdent(path); after != before {
		t.Errorf("a file rewritten in place changed identity: %q, then %q", before, after)
	}
}
