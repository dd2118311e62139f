package main

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/urfave/cli/v2"
)

// usageError is a mistake on the command line: an unknown command or flag, a missing or extra
// argument, or a flag value that cannot be used. It makes snapfs exit with status 2.
type usageError struct {
	what string // the command, e.g. "volume add"
	msg  string
}

func (e *usageError) Error() string {
	if e.what == "" {
		return fmt.Sprintf("%s (see snapfs --help)", e.msg)
	}
	return fmt.Sprintf("%s: %s (see snapfs %s --help)", e.what, e.msg, e.what)
}

// usagef returns a usage error for the command cCtx runs.
func usagef(cCtx *cli.Context, format string, args ...any) error {
	return &usageError{what: commandPath(cCtx), msg: fmt.Sprintf(format, args...)}
}

// onUsageError turns urfave/cli's flag parsing errors into usage errors, instead of printing help.
func onUsageError(cCtx *cli.Context, err error, _ bool) error {
	return usagef(cCtx, "%s", err.Error())
}

// groupAction runs when a command group (or snapfs itself) is given no known subcommand.
func groupAction(cCtx *cli.Context) error {
	if cCtx.Args().Present() {
		return usagef(cCtx, "unknown command %s", argText(cCtx.Args().First()))
	}
	return usagef(cCtx, "missing command")
}

// commandPath is the path of the command cCtx runs, without the program name: "snapshot create".
func commandPath(cCtx *cli.Context) string {
	var names []string
	for _, c := range cCtx.Lineage() {
		if c.Command != nil && c.Command.Name != "" {
			names = append(names, c.Command.Name)
		}
	}
	// Lineage runs from the command up to the root, which is named after the program.
	if n := len(names); n > 0 && names[n-1] == cCtx.App.Name {
		names = names[:n-1]
	}
	for i, j := 0, len(names)-1; i < j; i, j = i+1, j-1 {
		names[i], names[j] = names[j], names[i]
	}
	return strings.Join(names, " ")
}

// checkArgs returns a usage error unless the command has between min and max positional arguments
// (max < 0: no limit). usage names them, e.g. "REF...".
func checkArgs(cCtx *cli.Context, min, max int, usage string) ([]string, error) {
	args := cCtx.Args().Slice()
	switch {
	case len(args) < min:
		return nil, usagef(cCtx, "missing argument: want %s", usage)
	case max >= 0 && len(args) > max:
		extra := args[max:]
		if max == 0 {
			return nil, usagef(cCtx, "unexpected argument %s", argText(extra[0]))
		}
		return nil, usagef(cCtx, "unexpected argument %s: want %s", argText(extra[0]), usage)
	}
	return args, nil
}

// argText shows a user-supplied string in a message: as is when it is plain, quoted when it is
// empty or holds spaces, control characters or bytes that are not UTF-8.
func argText(s string) string {
	if s == "" || !utf8.ValidString(s) || strings.IndexFunc(s, func(r rune) bool {
		return unicode.IsSpace(r) || !unicode.IsPrint(r)
	}) >= 0 {
		return strconv.Quote(s)
	}
	return s
}

// reorderArgs moves each flag of the command a command line runs in front of its positional
// arguments, and the global flags in front of the command: urfave/cli v2, like package flag, stops
// parsing flags at the first positional argument, and snapfs's usage puts flags after them
// ("volume add NAME --source PATH"). Arguments after "--" stay positional. A command line that
// names no known command is left alone for urfave/cli to report.
func reorderArgs(app *cli.App, argv []string) []string {
	if len(argv) < 2 {
		return argv
	}
	w := words{global: argv[:1:1]}
	leaf, rest := w.command(app, argv[1:])
	if leaf == nil {
		return w.join(rest)
	}
	if !w.leafArgs(app.Flags, leaf.Flags, rest) {
		// A flag lacks its value: it comes last, with nothing after it to take as the value, for
		// parsing to report.
		return w.join(nil)
	}
	if len(w.positional) > 0 {
		w.positional = append([]string{"--"}, w.positional...)
	}
	return w.join(w.positional)
}

// words sorts the words of a command line for reorderArgs.
type words struct {
	global     []string // the program and global flags
	path       []string // command names, with the flags of groups
	flags      []string // the flags of the command run
	positional []string // its positional arguments
}

func (w *words) join(tail []string) []string {
	out := append(append(w.global, w.path...), w.flags...)
	return append(out, tail...)
}

// command reads words up to the name of the command to run and returns it, nil when they do not name
// one, and the words after it.
func (w *words) command(app *cli.App, rest []string) (*cli.Command, []string) {
	cmds := app.Commands
	for len(rest) > 0 {
		a := rest[0]
		if isFlagArg(a) {
			// Global flags go in front; a group's own flags (--help) stay where they are.
			n := flagTokens(a, rest, app.Flags)
			if len(w.path) == 0 || findFlag(app.Flags, flagName(a)) != nil {
				w.global = append(w.global, rest[:n]...)
			} else {
				w.path = append(w.path, rest[:n]...)
			}
			rest = rest[n:]
			continue
		}
		c := findCommand(cmds, a)
		if c == nil {
			break
		}
		w.path = append(w.path, a)
		rest = rest[1:]
		if len(c.Subcommands) == 0 {
			return c, rest
		}
		cmds = c.Subcommands
	}
	return nil, rest
}

// leafArgs sorts the words after the command's name into global flags, its flags and positional
// arguments. It returns false, with the offending flag last, when a flag lacks its value.
func (w *words) leafArgs(globalFlags, leafFlags []cli.Flag, rest []string) bool {
	for len(rest) > 0 {
		a := rest[0]
		if a == "--" {
			w.positional = append(w.positional, rest[1:]...)
			return true
		}
		if !isFlagArg(a) {
			w.positional = append(w.positional, a)
			rest = rest[1:]
			continue
		}
		dst, flags := &w.flags, leafFlags
		if findFlag(leafFlags, flagName(a)) == nil && findFlag(globalFlags, flagName(a)) != nil {
			dst, flags = &w.global, globalFlags
		}
		if len(rest) == 1 && takesValue(flags, a) {
			*dst = append(*dst, a)
			if dst == &w.global {
				w.path, w.flags = nil, nil
			}
			return false
		}
		n := flagTokens(a, rest, flags)
		*dst = append(*dst, rest[:n]...)
		rest = rest[n:]
	}
	return true
}

// isFlagArg reports whether a command-line word is a flag ("-x", "--xy", "--xy=v").
func isFlagArg(a string) bool { return len(a) > 1 && a[0] == '-' && a != "--" }

// flagName is the name a flag word sets: "--chunk-size=64K" → "chunk-size".
func flagName(a string) string {
	name := strings.TrimLeft(a, "-")
	name, _, _ = strings.Cut(name, "=")
	return name
}

// flagTokens is how many words, from rest[0], a flag takes: 2 when it takes a value given as the
// next word, else 1. Unknown flags take 1 word; parsing reports them.
func flagTokens(a string, rest []string, flags []cli.Flag) int {
	if len(rest) >= 2 && takesValue(flags, a) {
		return 2
	}
	return 1
}

// takesValue reports whether the flag word a is one of flags that takes a value, without giving it
// ("--to", not "--to=x").
func takesValue(flags []cli.Flag, a string) bool {
	if strings.Contains(a, "=") {
		return false
	}
	v, ok := findFlag(flags, flagName(a)).(cli.DocGenerationFlag)
	return ok && v.TakesValue()
}

// findFlag finds a flag by any of its names.
func findFlag(flags []cli.Flag, name string) cli.Flag {
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	return nil
}

// findCommand finds a command by name or alias.
func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}
