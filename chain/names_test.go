package chain

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestValidateName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"vol", true},
		{"Vol-1_2.3", true},
		{"0", true},
		{"_x", true},
		{"-x", true},
		{"a..b", true},
		{"a.", true},
		{"web-20240102-030405-2", true},
		{strings.Repeat("a", 128), true},
		{strings.Repeat("a", 129), false},
		{strings.Repeat("é", 64), false}, // 128 bytes but not ASCII
		{"", false},
		{".", false},
		{"..", false},
		{".hidden", false},
		{"a/b", false},
		{"/", false},
		{"../x", false},
		{"a\x00b", false},
		{"\x00", false},
		{"a b", false},
		{"a\n", false},
		{"\na", false},
		{"a\tb", false},
		{"ä", false},
		{"a\xffb", false}, // not UTF-8
		{"\xc3", false},
		{"a:b", false},
		{"a*", false},
		{"a\\b", false},
		{"ａ", false}, // fullwidth letter
	} {
		err := ValidateName(tc.name)
		if tc.ok && err != nil {
			t.Errorf("ValidateName(%q) = %v, want ok", tc.name, err)
		}
		if !tc.ok && !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateName(%q) = %v, want ErrInvalid", tc.name, err)
		}
	}
}

func TestParseRef(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Ref
		ok   bool
	}{
		{"vol/snap", Ref{Chain: "vol", Name: "snap"}, true},
		{"vol-2/vol-20240102-030405-3", Ref{Chain: "vol-2", Name: "vol-20240102-030405-3"}, true},
		{"1", Ref{ID: 1}, true},
		{"42", Ref{ID: 42}, true},
		{"9223372036854775807", Ref{ID: 9223372036854775807}, true},
		{strings.Repeat("c", 128) + "/" + strings.Repeat("s", 128), Ref{Chain: strings.Repeat("c", 128), Name: strings.Repeat("s", 128)}, true},
		{"9223372036854775808", Ref{}, false}, // overflows
		{"0", Ref{}, false},
		{"-1", Ref{}, false},
		{"+1", Ref{}, false},
		{"01", Ref{}, false},
		{" 1", Ref{}, false},
		{"1 ", Ref{}, false},
		{"0x10", Ref{}, false},
		{"", Ref{}, false},
		{"/", Ref{}, false},
		{"vol/", Ref{}, false},
		{"/snap", Ref{}, false},
		{"vol/a/b", Ref{}, false},
		{"vol//snap", Ref{}, false},
		{"../snap", Ref{}, false},
		{"vol/..", Ref{}, false},
		{"vol/.", Ref{}, false},
		{"./snap", Ref{}, false},
		{"vol/.snap", Ref{}, false},
		{"vol/sn\x00ap", Ref{}, false},
		{"vol\x00/snap", Ref{}, false},
		{"vol/\xff", Ref{}, false},
		{"vol/" + strings.Repeat("s", 129), Ref{}, false},
		{strings.Repeat("c", 129) + "/snap", Ref{}, false},
		{"snap", Ref{}, false}, // a bare name is not a reference
		{"vol/snap\n", Ref{}, false},
	} {
		got, err := ParseRef(tc.in)
		if tc.ok {
			if err != nil || got != tc.want {
				t.Errorf("ParseRef(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			} else if got.String() != tc.in {
				t.Errorf("ParseRef(%q).String() = %q", tc.in, got.String())
			}
		} else if !errors.Is(err, ErrInvalid) || got != (Ref{}) {
			t.Errorf("ParseRef(%q) = %+v, %v; want ErrInvalid", tc.in, got, err)
		}
	}
}

// validNameChar is the character set names are made of, written out independently of the regexp.
func validNameChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"a", "vol-1", ".x", "..", "a/b", "a\x00", strings.Repeat("x", 128), strings.Repeat("x", 129), "é", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := ValidateName(name)
		want := len(name) >= 1 && len(name) <= 128 && name[0] != '.'
		for i := 0; want && i < len(name); i++ {
			want = validNameChar(name[i])
		}
		if (err == nil) != want {
			t.Fatalf("ValidateName(%q) = %v, want ok=%v", name, err, want)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("ValidateName(%q) = %v, not ErrInvalid", name, err)
		}
		if err == nil {
			// A valid name is safe as a path element and as both halves of a reference.
			if strings.ContainsAny(name, "/\x00") || name == "." || name == ".." || !utf8.ValidString(name) {
				t.Fatalf("ValidateName accepted %q", name)
			}
			if r, err := ParseRef(name + "/" + name); err != nil || r.Chain != name || r.Name != name {
				t.Fatalf("ParseRef(%q/%q) = %+v, %v", name, name, r, err)
			}
		}
	})
}

func FuzzParseRef(f *testing.F) {
	for _, s := range []string{"vol/snap", "1", "0", "-1", "01", "a/b/c", "/", "vol/..", "9223372036854775808", "x/\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRef(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) || r != (Ref{}) {
				t.Fatalf("ParseRef(%q) = %+v, %v", s, r, err)
			}
			return
		}
		if r.String() != s {
			t.Fatalf("ParseRef(%q).String() = %q", s, r.String())
		}
		if r.ID != 0 {
			if r.ID < 0 || r.Chain != "" || r.Name != "" {
				t.Fatalf("ParseRef(%q) = %+v", s, r)
			}
			return
		}
		if ValidateName(r.Chain) != nil || ValidateName(r.Name) != nil {
			t.Fatalf("ParseRef(%q) = %+v with an invalid name", s, r)
		}
	})
}
