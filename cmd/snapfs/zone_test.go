package main

import (
	"testing"
	"time"
)

// TestCommandZoneFollowsDaylightSaving checks that a default name is written by the command's zone
// rules at the moment the snapshot starts: a create sent in New York's summer and applied after the
// clocks went back is named in EST, not in the EDT offset the command saw.
func TestCommandZoneFollowsDaylightSaving(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatalf("tzdata: %v", err)
	}
	sent := time.Date(2026, 11, 1, 1, 59, 0, 0, ny) // EDT, a minute before the clocks go back
	rules := zoneRules("America/New_York", true, ny, sent)
	if rules == nil {
		t.Fatal("no rules read for TZ=America/New_York")
	}
	a := opArgs{Zone: "EDT", ZoneOffset: -4 * 3600, ZoneRules: rules}
	applied := sent.Add(time.Hour) // queued for an hour: 01:59 EST
	if got := applied.In(commandZone(a)).Format("15:04 MST"); got != "01:59 EST" {
		t.Errorf("applied an hour later: %s, want 01:59 EST", got)
	}
	a.ZoneRules = nil // an older client, or rules it could not read: its fixed offset
	if got := applied.In(commandZone(a)).Format("15:04 MST"); got != "02:59 EDT" {
		t.Errorf("without rules: %s, want 02:59 EDT", got)
	}
	a.ZoneRules = []byte("not TZif")
	if got := applied.In(commandZone(a)).Format("15:04"); got != "02:59" {
		t.Errorf("with unreadable rules: %s, want the fixed offset's 02:59", got)
	}
}

// TestZoneRulesOnlyWhenTheyAgree checks that rules are sent only when they are the ones the
// process's clock uses: a file that disagrees, a POSIX rule string or an empty $TZ sends none.
func TestZoneRulesOnlyWhenTheyAgree(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatalf("tzdata: %v", err)
	}
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		t.Fatalf("tzdata: %v", err)
	}
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		tz    string
		set   bool
		local *time.Location
		want  bool
	}{
		{"America/New_York", true, ny, true},
		{":America/New_York", true, ny, true},
		{"/usr/share/zoneinfo/America/New_York", true, ny, true},
		{"America/New_York", true, tokyo, false}, // not the rules this process uses
		{"Asia/Tokyo", true, tokyo, true},
		{"EST5EDT,M3.2.0,M11.1.0", true, ny, false},
		{"", true, time.UTC, false},
		{"../../etc/passwd", true, ny, false},
		{"No/Such_Zone", true, ny, false},
	} {
		if got := zoneRules(c.tz, c.set, c.local, now) != nil; got != c.want {
			t.Errorf("TZ=%q: rules sent %v, want %v", c.tz, got, c.want)
		}
	}
}
