package fs

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// noteFor is how long the reason a command was refused shows in status over a running snapshot's
// progress.
const noteFor = 2 * time.Second

// jobs tracks, per volume, the snapshot being created through ctl and the outcome of the last
// command, which is what status shows.
type jobs struct {
	mu   sync.Mutex
	vols map[string]*volumeJobs
}

// volumeJobs is one volume's state.
type volumeJobs struct {
	run       *job      // the snapshot being created; nil when none
	last      string    // "done NAME" or "failed NAME: reason"; "" before any command
	noteUntil time.Time // last shows over run's progress until then
}

// job is one snapshot being created.
type job struct {
	name  string
	start time.Time
	done  atomic.Int64
	total atomic.Int64
}

func newJobs() *jobs { return &jobs{vols: map[string]*volumeJobs{}} }

func (js *jobs) volume(name string) *volumeJobs {
	v := js.vols[name]
	if v == nil {
		v = &volumeJobs{}
		js.vols[name] = v
	}
	return v
}

// begin records that a snapshot of volume called name starts, unless one is already running.
func (js *jobs) begin(volume, name string, total int64, now time.Time) (*job, error) {
	js.mu.Lock()
	defer js.mu.Unlock()
	v := js.volume(volume)
	if v.run != nil {
		return nil, fmt.Errorf("snapshot %s of volume %s is still being created", v.run.name, volume)
	}
	j := &job{name: name, start: now}
	j.total.Store(total)
	v.run, v.noteUntil = j, time.Time{}
	return j, nil
}

// progress records how far a job got.
func (j *job) progress(done, total int64) {
	j.done.Store(done)
	j.total.Store(total)
}

// finish records how a job ended. A job of a volume forgotten since it began (removed, and maybe
// added again under its name) is no longer the volume's: its outcome is only logged.
func (js *jobs) finish(volume string, j *job, err error) {
	js.mu.Lock()
	defer js.mu.Unlock()
	v := js.vols[volume]
	if v == nil || v.run != j {
		return
	}
	v.run, v.noteUntil = nil, time.Time{}
	if err != nil {
		v.last = failedLine(j.name, err)
		return
	}
	v.last = "done " + j.name
}

// refuse records why a command for volume was refused.
func (js *jobs) refuse(volume, name string, err error, now time.Time) {
	js.mu.Lock()
	defer js.mu.Unlock()
	v := js.volume(volume)
	v.last = failedLine(name, err)
	v.noteUntil = now.Add(noteFor)
}

// forget drops what is known of a removed volume, so that a volume added again under its name starts
// "idle" rather than with the old one's last outcome.
func (js *jobs) forget(volume string) {
	js.mu.Lock()
	defer js.mu.Unlock()
	delete(js.vols, volume)
}

// status is volume's status line: "idle", "creating NAME 37% 380/1024 MiB 910 MiB/s", "done NAME" or
// "failed NAME: reason".
func (js *jobs) status(volume string, now time.Time) string {
	js.mu.Lock()
	defer js.mu.Unlock()
	v := js.vols[volume]
	switch {
	case v == nil:
		return "idle"
	case v.run != nil && !now.Before(v.noteUntil):
		return progressLine(v.run.name, v.run.done.Load(), v.run.total.Load(), now.Sub(v.run.start))
	case v.last != "":
		return v.last
	}
	return "idle"
}

// progressLine formats a running snapshot's progress.
func progressLine(name string, done, total int64, elapsed time.Duration) string {
	pct := int64(0)
	if total > 0 {
		pct = done * 100 / total
	}
	rate := 0.0
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(done) / s / (1 << 20)
	}
	return fmt.Sprintf("creating %s %d%% %d/%d MiB %.0f MiB/s", name, pct, done>>20, total>>20, rate)
}

// failedLine formats a failure on one line.
func failedLine(name string, err error) string {
	if name == "" {
		name = "-"
	}
	return "failed " + shown(name) + ": " + oneLine(err.Error())
}

// running is the name of the snapshot of volume being created, or "".
func (js *jobs) running(volume string) string {
	js.mu.Lock()
	defer js.mu.Unlock()
	if v := js.vols[volume]; v != nil && v.run != nil {
		return v.run.name
	}
	return ""
}
