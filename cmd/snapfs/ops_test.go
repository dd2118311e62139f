package main

import (
	"encoding/json"
	"reflect"
	"testing"
)

// TestOpJSON: ops survive a round trip through JSON, so that they can be forwarded to a daemon.
func TestOpJSON(t *testing.T) {
	for _, o := range []op{
		{Kind: opInit, Args: opArgs{Region: "eu"}},
		{Kind: opVolumeAdd, Args: opArgs{Volume: "db1", Source: "/dev/vdb", VolumeKind: "system", Instance: "i-1", ChunkSize: 1 << 20}},
		{Kind: opVolumeRemove, Args: opArgs{Volume: "db1"}},
		{Kind: opSnapshotCreate, Args: opArgs{Volume: "db1", Name: "n", Freeze: "/mnt"}},
		{Kind: opSnapshotCreate, Args: opArgs{Instance: "i-1"}},
		{Kind: opSnapshotDelete, Args: opArgs{Refs: []string{"db1/a", "7"}}},
		{Kind: opRestore, Args: opArgs{Refs: []string{"db1/a"}, To: "/tmp/x", Force: true}},
		{Kind: opClone, Args: opArgs{Refs: []string{"db1/a"}, To: "/tmp/y", Volume: "db2"}},
		{Kind: opVerify},
		{Kind: opGC},
	} {
		b, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		var back op
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back, o) {
			t.Errorf("%s: round trip gave %+v, want %+v", b, back, o)
		}
	}
}
