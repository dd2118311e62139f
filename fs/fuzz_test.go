package fs

import (
	"errors"
	"strings"
	"testing"
	"unicode"

	"github.com/snapfs/snapfs/chain"
)

// FuzzParseCommand feeds the ctl parser anything a write can carry. It must never panic; it accepts
// only one "snapshot [NAME]" line; the name it returns (which the status file shows, even for a
// refused command) never holds white space, so it cannot forge a status line; and a name that gets
// past the engine's validation is a safe path element.
func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{"snapshot\n", "snapshot a\n", "snapshot ..\n", "snapshot a/b\n", "snapshot a\x00b",
		"snapshot \xff\n", "snapshot a\nsnapshot b\n", "x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cmd string) {
		name, err := parseCommand(cmd)
		if strings.IndexFunc(name, unicode.IsSpace) >= 0 || strings.ContainsAny(name, "\r\n") {
			t.Fatalf("parseCommand(%q) returned name %q with white space", cmd, name)
		}
		if err != nil {
			if !errors.Is(err, errBadCommand) {
				t.Fatalf("parseCommand(%q): %v is not errBadCommand", cmd, err)
			}
			return
		}
		line := strings.TrimRight(cmd, "\r\n")
		fields := strings.Fields(line)
		if strings.ContainsAny(line, "\r\n") || len(fields) == 0 || fields[0] != "snapshot" || len(fields) > 2 {
			t.Fatalf("parseCommand(%q) accepted it (name %q)", cmd, name)
		}
		if (name == "") != (len(fields) == 1) || (name != "" && name != fields[1]) {
			t.Fatalf("parseCommand(%q) = %q", cmd, name)
		}
		if name != "" && chain.ValidateName(name) == nil {
			if name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || len(name) > 128 {
				t.Fatalf("parseCommand(%q) = %q, which validation accepts", cmd, name)
			}
		}
	})
}

// FuzzCommandPrefix checks that a line refused before its newline could not have become a command:
// whatever is written after it, parsing and validating the whole line fails too.
func FuzzCommandPrefix(f *testing.F) {
	for _, s := range [][2]string{{"snap", "shot a"}, {"snapshot", " a"}, {"snapshot a", "b"}, {"snapshot .", "a"},
		{"snapshot a/", "b"}, {"snapshot a ", "b"}, {"x", "y"}, {"", "snapshot"},
		// A space that is not ASCII, cut in two by the writes.
		{"snapshot\xc2", "\xa0a"}, {"snapshot a\xc2", "\xa0"}, {"snapshot\xe2\x80", "\x80a"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, line, more string) {
		if strings.ContainsAny(line+more, "\n") {
			return
		}
		if _, err := commandPrefix(line); err == nil {
			return
		}
		name, err := parseCommand(line + more + "\n")
		if err == nil && (name == "" || chain.ValidateName(name) == nil) {
			t.Fatalf("%q was refused as no command's start, but %q is the command %q", line, line+more, name)
		}
	})
}
