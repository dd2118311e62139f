package main

import (
	"bytes"
	"errors"
	"log"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeMount is a mount whose unmounts fail a number of times before one succeeds and ends it.
type fakeMount struct {
	mu       sync.Mutex
	failures int // unmounts left to fail
	calls    int
	gone     chan struct{}
}

func (f *fakeMount) Wait()       { <-f.gone }
func (f *fakeMount) Dir() string { return "/mnt/x" }
func (f *fakeMount) Unmount() (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.failures > 0 {
		f.failures--
		return false, errors.New("device or resource unavailable")
	}
	close(f.gone)
	return false, nil
}

func TestWaitUnmountRetriesFailedUnmount(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		failures  int
		wantCalls int
		wantLog   string
		exits     bool // waitUnmount returns without a second signal
	}{
		{0, 1, "unmounting /mnt/x", true},
		{3, 4, "trying again", true},
		{unmountTries, unmountTries, "giving up", false},
	} {
		f := &fakeMount{failures: tc.failures, gone: make(chan struct{})}
		var out bytes.Buffer
		var mu sync.Mutex
		logger := log.New(writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return out.Write(p) }), "", 0)
		sigs := make(chan os.Signal, 2)
		sigs <- syscall.SIGTERM
		returned := make(chan struct{})
		go func() { waitUnmount(f, sigs, func() {}, logger); close(returned) }()
		logged := func() string { mu.Lock(); defer mu.Unlock(); return out.String() }
		// Timers run late on a loaded machine: wait for what must happen, however long it takes.
		if tc.exits {
			select {
			case <-returned:
			case <-time.After(time.Minute):
				t.Fatalf("%d failures: still waiting after a minute", tc.failures)
			}
		} else {
			for deadline := time.Now().Add(time.Minute); !strings.Contains(logged(), "giving up"); {
				if time.Now().After(deadline) {
					t.Fatalf("%d failures: not given up after a minute; log %q", tc.failures, logged())
				}
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(2 * unmountRetry) // time for a wrong further try or return to show
			select {
			case <-returned:
				t.Errorf("%d failures: returned with the mount still there", tc.failures)
			default:
				sigs <- syscall.SIGTERM // a second signal exits
				<-returned
			}
		}
		f.mu.Lock()
		calls := f.calls
		f.mu.Unlock()
		if calls != tc.wantCalls {
			t.Errorf("%d failures: %d unmounts, want %d", tc.failures, calls, tc.wantCalls)
		}
		if got := logged(); !strings.Contains(got, tc.wantLog) {
			t.Errorf("%d failures: log %q lacks %q", tc.failures, got, tc.wantLog)
		}
	}
}

type writerFunc func([]byte) (int, error)

func (w writerFunc) Write(p []byte) (int, error) { return w(p) }
