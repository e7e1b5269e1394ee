package object

import (
	"reflect"
	"testing"
)

func TestIdentityRoundTrip(t *testing.T) {
	for _, id := range []Identity{
		{Cluster: "prod", UID: "new"},
		{Cluster: "prod", UID: "new", Adopted: []string{"old", "older"}},
	} {
		if got := ParseIdentity(id.Marshal()); !reflect.DeepEqual(got, id) {
			t.Errorf("round trip of %+v: %+v\n%s", id, got, id.Marshal())
		}
	}
	// The marker as versions before adoption wrote it.
	old := ParseIdentity([]byte("# Written by cluster-backup: the cluster that owns this prefix.\ncluster: prod\nkubeSystemUID: u1\n"))
	if old.UID != "u1" || old.Cluster != "prod" || old.Adopted != nil {
		t.Errorf("old marker: %+v", old)
	}
}

func TestAdoptAndOwns(t *testing.T) {
	first := Identity{Cluster: "prod", UID: "a"}
	second := first.Adopt("prod", "b")
	third := second.Adopt("prod", "c")
	if !reflect.DeepEqual(third.Adopted, []string{"a", "b"}) || third.UID != "c" {
		t.Fatalf("after two rebuilds: %+v", third)
	}
	for uid, want := range map[string]bool{"a": true, "b": true, "c": true, "": true, "other": false} {
		if third.Owns(uid) != want {
			t.Errorf("Owns(%q) = %v", uid, !want)
		}
	}
	if again := third.Adopt("prod", "c"); !reflect.DeepEqual(again, third) {
		t.Errorf("adopting twice: %+v", again)
	}
}
