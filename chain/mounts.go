package chain

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// MountEntry is one line of the mount table (/proc/self/mountinfo).
type MountEntry struct {
	Dev     string // major:minor of the mounted filesystem
	Dir     string // mount point
	Type    string // filesystem type, e.g. "ext4" or "fuse.snapfs"
	Source  string // mounted device; for snapfs, the store's directory
	Options string // the filesystem's own options, as the table writes them (escaped)
}

// OptionValues returns the values, unescaped, of the filesystem option key, in the order given.
func (e MountEntry) OptionValues(key string) []string {
	var out []string
	for _, o := range strings.Split(e.Options, ",") {
		if k, v, _ := strings.Cut(o, "="); k == key {
			out = append(out, unescapeMount(v))
		}
	}
	return out
}

// MountTable reads the mount table, in mount order.
func MountTable() ([]MountEntry, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	defer f.Close()
	var out []MountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if e, ok := ParseMountInfo(sc.Text()); ok {
			out = append(out, e)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	return out, nil
}

// ParseMountInfo parses a /proc/PID/mountinfo line:
// "36 35 98:0 /root /mnt rw,noatime master:1 - ext3 /dev/root rw".
func ParseMountInfo(line string) (MountEntry, bool) {
	left, right, ok := strings.Cut(line, " - ")
	if !ok {
		return MountEntry{}, false
	}
	lf, rf := strings.Fields(left), strings.Fields(right)
	if len(lf) < 5 || len(rf) < 2 {
		return MountEntry{}, false
	}
	e := MountEntry{Dev: lf[2], Dir: unescapeMount(lf[4]), Type: unescapeMount(rf[0]), Source: unescapeMount(rf[1])}
	if len(rf) > 2 {
		e.Options = rf[2]
	}
	return e, true
}

// unescapeMount undoes the octal escapes (\040 for a space) of the mount table.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
