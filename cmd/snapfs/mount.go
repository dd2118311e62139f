package main

import "github.com/urfave/cli/v2"

// mountCommands returns the commands that serve the FUSE tree (mount, umount).
func mountCommands() []*cli.Command { return nil }
