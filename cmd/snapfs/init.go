package main

import (
	"fmt"

	"github.com/snapfs/snapfs/chain"
	"github.com/snapfs/snapfs/store"
	"github.com/urfave/cli/v2"
)

func initCommand() *cli.Command {
	return &cli.Command{
		Name:  "init",
		Usage: "create the store",
		Description: "Creates the store directory and records its region. Running it again on the same store\n" +
			"is harmless; asking for a different region than the store has is an error.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "region", Value: store.DefaultRegion, Usage: "the region recorded in the store"},
		},
		Action: initStore,
	}
}

// initStore creates the store, or reports that it exists. Without --region any existing store is
// accepted.
func initStore(cCtx *cli.Context) error {
	if _, err := checkArgs(cCtx, 0, 0, ""); err != nil {
		return err
	}
	region := cCtx.String("region")
	what := "init"
	if err := chain.ValidateName(region); err != nil {
		return fmt.Errorf("%s: region: %w", what, err)
	}
	want := region
	if !cCtx.IsSet("region") {
		want = ""
	}
	dir, err := storeDir(cCtx)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	w := cCtx.App.Writer
	m, err := openReader(cCtx.Context, cCtx)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if m != nil {
		have, err := applyInit(cCtx.Context, m, want)
		m.Close()
		if err != nil {
			return fmt.Errorf("%s %s: %w", what, dir, err)
		}
		fmt.Fprintf(w, "store %s exists (region %s)\n", dir, have)
		return nil
	}
	have, err := runOp[string](cCtx.Context, dir, op{Kind: opInit, Args: opArgs{Region: region}}, noProgress)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, dir, err)
	}
	fmt.Fprintf(w, "created store %s (region %s)\n", dir, have)
	return nil
}
