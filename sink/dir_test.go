package sink

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cluster-backup/cluster-backup/object"
)

func TestDirStore(t *testing.T) {
	root := t.TempDir()
	d, err := NewDir(root)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	key := "clusterbackup/east/default/configmaps/a.yaml"
	body := []byte("kind: ConfigMap\n")
	meta := object.Meta{ResourceVersion: "7", UID: "u", APIVersion: "v1", SHA256: object.Digest(body), HMAC: strings.Repeat("ab", 32)}
	if err := d.Put(ctx, key, body, meta); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(root, key))
	if err != nil || string(got) != string(body) {
		t.Fatalf("file %q %v", got, err)
	}
	// Only the service reads what it stores.
	for _, p := range []string{filepath.Join(root, key), metaPath(filepath.Join(root, key))} {
		if st, err := os.Stat(p); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v %v, want 0600", p, st.Mode(), err)
		}
	}
	for p := filepath.Dir(filepath.Join(root, key)); p != root; p = filepath.Dir(p) {
		if st, err := os.Stat(p); err != nil || st.Mode().Perm() != 0o700 {
			t.Errorf("%s: mode %v %v, want 0700", p, st.Mode(), err)
		}
	}
	list, err := List(ctx, d, "clusterbackup/east/")
	if err != nil || len(list) != 1 || list[0].Key != key || list[0].Meta != meta {
		t.Fatalf("list %+v %v", list, err)
	}
	// A file edited by hand reports its real digest.
	if err := os.WriteFile(filepath.Join(root, key), []byte("edited"), 0o644); err != nil {
		t.Fatal(err)
	}
	list, _ = List(ctx, d, "clusterbackup/east/")
	if list[0].Meta.SHA256 != object.Digest([]byte("edited")) || list[0].Meta.Fingerprint() == meta.Fingerprint() {
		t.Errorf("an edited file lists as %+v: its digest and fingerprint must change", list[0].Meta)
	}
	if other, _ := List(ctx, d, "clusterbackup/west/"); len(other) != 0 {
		t.Errorf("other prefix listed %v", other)
	}
	if err := d.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	if err := d.Delete(ctx, key); err != nil {
		t.Errorf("second delete: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "clusterbackup")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("empty directories left behind: %v", err)
	}
	if err := d.Put(ctx, "../escape.yaml", body, meta); !errors.Is(err, ErrPermanent) {
		t.Errorf("a key escaping the root was accepted: %v", err)
	}
}

func TestDirStoreListsWhatItWrites(t *testing.T) {
	d, err := NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	body := []byte("kind: ClusterRole\n")
	meta := object.Meta{UID: "u", SHA256: object.Digest(body)}
	for _, tc := range []struct {
		name          string
		unstorable    bool
		wantInListing bool
	}{
		{name: ".dotted", wantInListing: true},
		{name: strings.Repeat("a", 250), wantInListing: true}, // its file name is 255 bytes
		{name: strings.Repeat("b", 251), unstorable: true},
	} {
		key := "clusterbackup/east/_cluster/clusterroles.rbac.authorization.k8s.io/" + tc.name + ".yaml"
		err := d.Put(ctx, key, body, meta)
		if tc.unstorable {
			if !errors.Is(err, ErrUnstorable) {
				t.Errorf("%d-byte name: %v, want ErrUnstorable", len(tc.name), err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%d-byte name: %v", len(tc.name), err)
		}
		list, err := List(ctx, d, key)
		if err != nil || len(list) != 1 || list[0].Meta != meta {
			t.Errorf("%q not listed with its metadata: %+v %v", tc.name[:min(len(tc.name), 10)], list, err)
		}
	}
}

// TestDirReadsNoTornDocument: a read while Put replaces a document gets one
// version's body and that version's metadata, never one beside the other.
func TestDirReadsNoTornDocument(t *testing.T) {
	d, err := NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	key := "clusterbackup/east/.cluster-backup/identity.yaml"
	versions := [][]byte{[]byte("uid: uid-a\n"), []byte("uid: uid-b\nadopted:\n- uid-a\n")}
	put := func(i int) error {
		body := versions[i%2]
		return d.Put(ctx, key, body, object.Meta{UID: string(body[5:10]), SHA256: object.Digest(body)})
	}
	if err := put(0); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		for i := 1; ; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if err := put(i); err != nil {
				done <- err
				return
			}
		}
	}()
	torn := 0
	for range 3000 {
		body, meta, err := d.Get(ctx, key, "")
		if err != nil {
			t.Fatal(err)
		}
		if meta.SHA256 != object.Digest(body) || meta.UID != string(body[5:10]) {
			torn++
		}
	}
	walked := 0
	for range 300 {
		_ = d.Walk(ctx, "clusterbackup/east/.cluster-backup/", func(st object.Stored) error {
			walked++
			if want := object.Digest(versions[map[string]int{"uid-a": 0, "uid-b": 1}[st.Meta.UID]]); st.Meta.SHA256 != want {
				torn++
			}
			return nil
		})
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if torn > 0 {
		t.Errorf("%d reads found one version's body beside another's metadata", torn)
	}
	if walked != 300 {
		t.Errorf("the walks visited %d documents, want 300", walked)
	}
}
