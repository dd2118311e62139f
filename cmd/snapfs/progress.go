package main

import (
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/snapfs/snapfs/chain"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"
)

// progressBar returns the progress callback for a long operation and a function to call when it
// ends. When stderr is not a terminal, or quiet is set (e.g. for --json), both do nothing.
func progressBar(cCtx *cli.Context, desc string, quiet bool) (chain.Progress, func()) {
	f, ok := cCtx.App.ErrWriter.(*os.File)
	if quiet || !ok || !term.IsTerminal(int(f.Fd())) {
		return func(int64, int64) {}, func() {}
	}
	var mu sync.Mutex
	var bar *progressbar.ProgressBar
	update := func(done, total int64) {
		mu.Lock()
		defer mu.Unlock()
		if bar == nil {
			bar = progressbar.NewOptions64(total,
				progressbar.OptionSetWriter(f),
				progressbar.OptionSetDescription(desc),
				progressbar.OptionShowBytes(true),
				progressbar.OptionUseIECUnits(true),
				progressbar.OptionShowCount(),
				progressbar.OptionSetPredictTime(true),
				progressbar.OptionThrottle(100*time.Millisecond),
				progressbar.OptionClearOnFinish(),
			)
		}
		if bar.GetMax64() != total {
			bar.ChangeMax64(total)
		}
		_ = bar.Set64(done)
	}
	finish := func() {
		mu.Lock()
		defer mu.Unlock()
		if bar != nil {
			_ = bar.Finish()
		}
	}
	return update, finish
}

// noProgress ignores progress.
func noProgress(int64, int64) {}
