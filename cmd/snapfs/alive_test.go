package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestAliveZombieLeader: a process whose leader thread has exited while another thread still runs
// (as a daemon killed with SIGKILL may look for a moment, its files still open) is alive; once that
// thread is gone too, the zombie left for its parent to reap is not.
func TestAliveZombieLeader(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "leader_exits")
	if out, err := exec.Command("gcc", "-pthread", "-o", bin, "testdata/leader_exits.c").CombinedOutput(); err != nil {
		t.Fatalf("build the helper: %v\n%s", err, out)
	}
	cmd := exec.Command(bin)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	pid := cmd.Process.Pid
	for deadline := time.Now().Add(10 * time.Second); !leaderZombie(pid); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the helper's leader thread did not exit")
		}
	}
	if n := tasks(pid); n < 2 {
		t.Fatalf("the helper has %d tasks once its leader exited, want its second thread too", n)
	}
	if !alive(pid) {
		t.Error("a process with a zombie leader and a running thread is not alive")
	}
	if !waitExit(pid, 10*time.Second) {
		t.Fatal("the helper is alive after its last thread ended")
	}
	if n := tasks(pid); n != 1 {
		t.Errorf("waitExit returned with %d tasks, want the zombie leader alone", n)
	}
}

func leaderZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	i := bytes.LastIndexByte(b, ')')
	return err == nil && i > 0 && i+2 < len(b) && b[i+2] == 'Z'
}

func tasks(pid int) int {
	ts, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	return len(ts)
}
