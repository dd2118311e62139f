package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/urfave/cli/v2"
)

// printJSON writes v as one indented JSON document.
func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// nonNil makes an empty list print as [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// table writes aligned columns.
type table struct{ tw *tabwriter.Writer }

// newTable starts a table with a header row.
func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cells ...string) {
	shown := make([]string, len(cells))
	for i, c := range cells {
		shown[i] = cell(c)
	}
	fmt.Fprintln(t.tw, strings.Join(shown, "\t"))
}

// cell is how a value shows in a table: quoted as a Go string when it holds control characters or
// bytes that are not UTF-8 (a newline or tab in a source path broke the table's rows and columns,
// an escape sequence reached the terminal), else as it is.
func cell(s string) string {
	if utf8.ValidString(s) && strings.IndexFunc(s, unicode.IsControl) < 0 {
		return s
	}
	return strconv.Quote(s)
}

func (t *table) flush() error { return t.tw.Flush() }

// humanSize formats a byte count with binary units: "512 B", "64.0 KiB", "1.0 GiB".
func humanSize(n int64) string {
	const units = "KMGTPE"
	if n < 1024 && n > -1024 {
		return fmt.Sprintf("%d B", n)
	}
	v := float64(n)
	i := -1
	for (v >= 1024 || v <= -1024) && i < len(units)-1 {
		v /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, units[i])
}

// localTime formats a time in the local time zone for tables.
func localTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

// orDash shows an empty table cell as "-".
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// warn tells of what went wrong beside a command's success, on stderr as "snapfs: WHAT: WARNING";
// an empty warning says nothing.
func warn(cCtx *cli.Context, what, warning string) {
	if warning != "" {
		fmt.Fprintf(cCtx.App.ErrWriter, "snapfs: %s: %s\n", what, warning)
	}
}
