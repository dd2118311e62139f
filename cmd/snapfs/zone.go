package main

import (
	"os"
	"path/filepath"
	"strings"
	"time"
)

// zoneDirs are where Go's time package looks up a $TZ name on Linux.
var zoneDirs = []string{"/usr/share/zoneinfo/", "/usr/share/lib/zoneinfo/", "/usr/lib/locale/TZ/", "/etc/zoneinfo/"}

// localZoneRules returns the TZif rules of this process's time zone, so that a daemon applying a
// snapshot.create later (queued behind other work, perhaps across a daylight-saving change) names it
// by this zone's clock at that moment, not by the offset the command saw when it started. It finds
// the file the way Go's time package does ($TZ, else /etc/localtime) and returns nil unless the rules
// read agree with time.Local now and over the coming year: a fixed offset is then the fallback.
func localZoneRules(now time.Time) []byte {
	tz, set := os.LookupEnv("TZ")
	return zoneRules(tz, set, time.Local, now)
}

// zoneRules is localZoneRules for a given $TZ (set or not) and the location the process uses.
func zoneRules(tz string, set bool, local *time.Location, now time.Time) []byte {
	data := readZoneFile(tz, set)
	if data == nil {
		return nil
	}
	loc, err := time.LoadLocationFromTZData("", data)
	if err != nil {
		return nil
	}
	for month := 0; month <= 12; month++ {
		t := now.AddDate(0, month, 0)
		_, want := t.In(local).Zone()
		if _, got := t.In(loc).Zone(); got != want {
			return nil
		}
	}
	return data
}

// readZoneFile reads the TZif file a $TZ value names, or /etc/localtime when $TZ is unset; nil when
// there is none (an empty $TZ means UTC, a POSIX rule string names no file).
func readZoneFile(tz string, set bool) []byte {
	if !set {
		data, _ := os.ReadFile("/etc/localtime")
		return data
	}
	tz = strings.TrimPrefix(tz, ":")
	if tz == "" {
		return nil
	}
	if filepath.IsAbs(tz) {
		data, _ := os.ReadFile(tz)
		return data
	}
	if strings.Contains(tz, "..") {
		return nil
	}
	dirs := zoneDirs
	if dir := os.Getenv("ZONEINFO"); dir != "" {
		dirs = append([]string{dir + "/"}, dirs...)
	}
	for _, dir := range dirs {
		if data, err := os.ReadFile(dir + tz); err == nil {
			return data
		}
	}
	return nil
}

// commandZone is the time zone a snapshot.create's default name is written in: the command's
// rules when it sent them, else the offset it had when it started.
func commandZone(a opArgs) *time.Location {
	if len(a.ZoneRules) > 0 {
		if loc, err := time.LoadLocationFromTZData(a.Zone, a.ZoneRules); err == nil {
			return loc
		}
	}
	return time.FixedZone(a.Zone, a.ZoneOffset)
}
