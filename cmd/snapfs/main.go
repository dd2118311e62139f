// Command snapfs keeps incremental, deduplicated snapshot chains of disks (block devices or image
// files) and serves them through FUSE.
//
// This file wires the command tree together; each command group lives in its own file, and every
// command that changes the store goes through runWriterOp (ops.go).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"
)

// memoryLimit is the heap size past which the garbage collector works harder (unless GOMEMLIMIT
// says otherwise). Left to GOGC alone the heap of a full snapshot of the benchmark disk peaked at
// 250 MB (when each record was allocated on its own), with this at 165 MB and no slower. Live
// buffers must stay well under it: past it the collector runs all the time (a third 48 MiB batch
// arena made a full snapshot 40% slower).
const memoryLimit = 160 << 20

func main() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
	// SIGINT, SIGTERM, SIGHUP (a closed terminal or SSH session) and SIGQUIT cancel the context long
	// operations run under, so that they clean up (thaw a frozen filesystem, roll back a half-made
	// snapshot) before the process exits: killed by one outright, a --freeze left every writer to
	// the filesystem hanging until someone thawed it by hand.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	code := run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run runs one command line and returns the process's exit code: 0 on success, 1 on failure and 2 on
// a usage error. Errors are printed as a single "snapfs: <what>: <why>" line on stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	out := &outputWriter{w: stdout}
	app := newApp(out, stderr)
	for _, c := range app.Commands {
		checkOutput(c, out)
	}
	err := app.RunContext(ctx, reorderArgs(app, args))
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "snapfs: %s\n", oneLine(err.Error()))
	return exitCode(err)
}

// newApp builds the command tree. Output goes to stdout and stderr; nothing is printed or exits
// behind run's back.
func newApp(stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:  "snapfs",
		Usage: "incremental, deduplicated snapshot chains of disks",
		Flags: []cli.Flag{
			&cli.StringFlag{
				Name:    "store",
				Usage:   "store directory (default /var/lib/snapfs for root, else $XDG_DATA_HOME/snapfs)",
				EnvVars: []string{"SNAPFS_STORE"},
			},
		},
		Commands: append([]*cli.Command{
			initCommand(),
			volumeCommand(),
			snapshotCommand(),
			chainCommand(),
			restoreCommand(),
			cloneCommand(),
			verifyCommand(),
			gcCommand(),
		}, mountCommands()...),
		Action:         groupAction,
		OnUsageError:   onUsageError,
		ExitErrHandler: func(*cli.Context, error) {}, // run prints errors and picks the exit code
		HideVersion:    true,
		Writer:         stdout,
		ErrWriter:      stderr,
	}
	for _, c := range app.Commands {
		prepareCommand(c)
	}
	return app
}

// prepareCommand gives every command in the tree the same usage-error handling, every command
// group an action that rejects unknown subcommands, and every other command no "help" subcommand:
// urfave/cli adds one, alias "h", which took a volume named h or help for a request for help —
// `snapshot create h` printed help and exited 0 without a snapshot (--help still shows it).
func prepareCommand(c *cli.Command) {
	if c.OnUsageError == nil {
		c.OnUsageError = onUsageError
	}
	if len(c.Subcommands) > 0 && c.Action == nil {
		c.Action = groupAction
	}
	if len(c.Subcommands) == 0 {
		c.HideHelpCommand = true
	}
	for _, sub := range c.Subcommands {
		prepareCommand(sub)
	}
}

// exitCode maps an error to the process's exit code.
func exitCode(err error) int {
	var ue *usageError
	if errors.As(err, &ue) {
		return 2
	}
	// urfave/cli's own exit errors (e.g. "No help topic for 'x'") are all about the command line.
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		return 2
	}
	return 1
}

// oneLine folds a multi-line message onto one line.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	return strings.NewReplacer("\r\n", "; ", "\n", "; ", "\r", "; ").Replace(s)
}

// outputWriter is standard output, remembering the first write that failed: output that was lost
// (a full disk, a closed pipe) makes the command fail, even when it did its work.
type outputWriter struct {
	w   io.Writer
	err error
}

func (o *outputWriter) Write(p []byte) (int, error) {
	n, err := o.w.Write(p)
	if err != nil && o.err == nil {
		o.err = err
	}
	return n, err
}

// checkOutput makes every command in c's tree fail, naming itself, when its output could not be
// written, and say whether it did its work all the same.
func checkOutput(c *cli.Command, out *outputWriter) {
	if action := c.Action; action != nil && len(c.Subcommands) == 0 {
		c.Action = func(cCtx *cli.Context) error {
			err := action(cCtx)
			if out.err != nil && (err == nil || errors.Is(err, out.err)) {
				// Every command prints once its work is done. Said plainly: a script that
				// retries a snapshot create whose name was lost would make a second snapshot.
				return fmt.Errorf("%s: it was done, but its output was lost: write output: %w", commandPath(cCtx), out.err)
			}
			return err
		}
	}
	for _, sub := range c.Subcommands {
		checkOutput(sub, out)
	}
}
