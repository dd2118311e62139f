package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snapfs/snapfs/chain"
)

// TestConcurrencyRace: snapshots (by command and by ctl write), deletes, image reads, listings and
// verify, all at once from several processes against a mounted daemon, with the daemon and the
// commands built with -race (GORACE halts at the first race). Nothing may deadlock (every command has
// a deadline), every command succeeds, every listing is whole and every image reads bit-exact.
func TestConcurrencyRace(t *testing.T) {
	needFUSE(t)
	if testing.Short() {
		t.Skip("builds snapfs with -race")
	}
	t.Parallel()
	e := newEnv(t)
	bin := e.path("snapfs-race")
	build := exec.Command("go", "build", "-race", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build -race: %v\n%s", err, out)
	}
	// run runs the race-built snapfs with a deadline; a command still running then is a deadlock.
	run := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, append([]string{"--store", e.store}, args...)...)
		cmd.Env = append(os.Environ(), "SNAPFS_STORE=", "GORACE=halt_on_error=1 exitcode=66")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if ctx.Err() != nil {
			return "", fmt.Errorf("snapfs %q still running after 2 minutes (deadlock?)", args)
		}
		if err != nil {
			return "", fmt.Errorf("snapfs %q: %v\n%s", args, err, stderr.String())
		}
		return stdout.String(), nil
	}
	must := func(args ...string) string {
		t.Helper()
		out, err := run(args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}

	const vols, rounds = 4, 2
	imgs := make([]string, vols)
	for i := range vols {
		imgs[i] = e.path(fmt.Sprintf("d%d.img", i))
		makeImage(t, imgs[i], imageSize)
		must("volume", "add", volName(i), "--source", imgs[i], "--chunk-size", "64K")
	}
	mnt := e.path("mnt")
	os.Mkdir(mnt, 0o755)
	must("mount", mnt)
	t.Cleanup(func() {
		if isMounted(mnt) {
			run("umount", mnt)
			if isMounted(mnt) {
				e.unmount(mnt)
			}
		}
		if log := e.daemonLog(); strings.Contains(log, "DATA RACE") {
			t.Errorf("the daemon hit a data race:\n%s", log)
		}
	})

	var mu sync.Mutex
	want := map[string]string{} // CHAIN/NAME -> sha256 of every snapshot that must be there
	for i := range vols {
		must("snapshot", "create", volName(i), "--name", "r0")
		want[volName(i)+"/r0"] = fileHash(t, imgs[i])
	}
	readImage := func(ref, sum string) error {
		b, err := os.ReadFile(filepath.Join(mnt, "chains", ref+".img"))
		if err != nil {
			return fmt.Errorf("read %s: %w", ref, err)
		}
		if got := sha256Hex(b); got != sum {
			return fmt.Errorf("read %s: sha256 %s, want %s", ref, got, sum)
		}
		return nil
	}
	for r := 1; r <= rounds; r++ {
		name, old := fmt.Sprintf("r%d", r), fmt.Sprintf("r%d", r-1)
		sums := make([]string, vols)
		for i := range vols {
			sums[i] = scribble(t, imgs[i], int64(r*chunk64K*3), chunk64K*2)
		}
		stable := map[string]string{} // snapshots no one deletes this round
		mu.Lock()
		for ref, sum := range want {
			if !strings.HasSuffix(ref, "/"+old) || r == 1 {
				stable[ref] = sum
			}
		}
		mu.Unlock()
		var wg sync.WaitGroup
		errs := make(chan error, 100)
		for i := range vols {
			vol := volName(i)
			wg.Go(func() { // a snapshot: by command, or by a ctl write for odd volumes
				var err error
				if i%2 == 0 {
					_, err = run("snapshot", "create", vol, "--name", name)
				} else {
					err = ctlSnapshot(mnt, vol, name)
				}
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				want[vol+"/"+name] = sums[i]
				mu.Unlock()
			})
			if r > 1 {
				wg.Go(func() { // delete the snapshot before last (its rows merge into the last)
					if _, err := run("snapshot", "delete", vol+"/"+old); err != nil {
						errs <- err
						return
					}
					mu.Lock()
					delete(want, vol+"/"+old)
					mu.Unlock()
				})
			}
		}
		for ref, sum := range stable {
			wg.Go(func() {
				if err := readImage(ref, sum); err != nil {
					errs <- err
				}
			})
		}
		for _, args := range [][]string{{"snapshot", "ls", "--json"}, {"chain", "ls", "--json"}, {"verify"}, {"volume", "ls"}} {
			wg.Go(func() {
				out, err := run(args...)
				if err == nil && strings.HasSuffix(args[len(args)-1], "json") && !json.Valid([]byte(out)) {
					err = fmt.Errorf("snapfs %q: torn output %q", args, out)
				}
				if err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("round %d: %v", r, err)
		}
		if t.Failed() {
			t.Fatalf("daemon log:\n%s", e.daemonLog())
		}
		// Every snapshot is listed, reads bit-exact through FUSE, and no other is there.
		var got []string
		var snaps []chain.Snapshot
		json.Unmarshal([]byte(must("snapshot", "ls", "--json")), &snaps)
		for _, s := range snaps {
			got = append(got, s.Ref())
			if sum, ok := want[s.Ref()]; !ok {
				t.Errorf("round %d: unexpected snapshot %s", r, s.Ref())
			} else if err := readImage(s.Ref(), sum); err != nil {
				t.Errorf("round %d: %v", r, err)
			}
		}
		if len(got) != len(want) {
			t.Errorf("round %d: snapshots %v, want %d of them", r, got, len(want))
		}
	}
	must("verify")
	must("umount", mnt)
}

// ctlSnapshot starts a snapshot by writing to volume's ctl file and waits until its status says it
// is done.
func ctlSnapshot(mnt, vol, name string) error {
	ctl := filepath.Join(mnt, "volumes", vol, "ctl")
	if err := os.WriteFile(ctl, []byte("snapshot "+name+"\n"), 0o600); err != nil {
		return fmt.Errorf("ctl %s: %w", vol, err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(filepath.Join(mnt, "volumes", vol, "status"))
		if err != nil {
			return err
		}
		switch st := strings.TrimSpace(string(b)); {
		case st == "done "+name:
			return nil
		case strings.HasPrefix(st, "failed"):
			return errors.New("ctl snapshot: " + st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("ctl snapshot %s/%s not done after 2 minutes (deadlock?)", vol, name)
}
