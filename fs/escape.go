package fs

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Text that comes from outside — a name a ctl command gave, a source path, an error naming either —
// is shown escaped in status, the info files and the log. Raw, a newline would forge a line of its
// own (a "key: value" of an info file), and an escape sequence would reach the terminal of whoever
// reads the file.

// shown is how a value shows: as it is when it is plain, else quoted as a Go string ("a\nb"). A
// quote or a backslash, or white space at either end, is quoted too, so that a value starting
// with a quote is always a quoted one, and strconv.Unquote reads it back.
func shown(s string) string {
	if plain(s) {
		return s
	}
	return strconv.Quote(s)
}

// plain reports whether s is valid UTF-8 of printable characters, with neither quotes nor
// backslashes, and no white space at its ends.
func plain(s string) bool {
	if strings.TrimSpace(s) != s {
		return false
	}
	for _, r := range s {
		if r == utf8.RuneError || r == '"' || r == '\\' || !unicode.IsPrint(r) {
			return false // RuneError also stands for each byte that is not UTF-8
		}
	}
	return true
}

// oneLine is a message on one line, newlines folded into spaces, with its other control characters
// and bytes that are not UTF-8 escaped as in a Go string. The rest stays as it is: a message quotes
// what it names already, and is read by people.
func oneLine(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == '\n' || r == '\r':
			b.WriteByte(' ')
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case !unicode.IsPrint(r):
			q := strconv.QuoteRune(r) // '\x1b', '\u2028': the escape between quotes
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}
