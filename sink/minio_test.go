package sink

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/testenv"
)

func startMinIO(t *testing.T) *testenv.MinIO {
	t.Helper()
	testenv.Require(t, "minio")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := testenv.StartMinIO(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return srv
}

func startSeaweedFS(t *testing.T) *testenv.SeaweedFS {
	t.Helper()
	testenv.Require(t, "weed")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv, err := testenv.StartSeaweedFS(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return srv
}

func TestMinIOStore(t *testing.T) {
	srv := startMinIO(t)
	ctx := context.Background()
	core, logs := observer.New(zapcore.InfoLevel)
	store, err := NewMinIO(ctx, MinIOOptions{
		Endpoint: srv.Endpoint, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Bucket: "backups",
	}, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	connect := logs.FilterField(zap.String("operation", "minio_connect")).All()
	if len(connect) != 1 || connect[0].ContextMap()["data"].(map[string]any)["versioning"] != "enabled" {
		t.Fatalf("minio_connect log: %+v", connect)
	}

	body := []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n")
	meta := object.Meta{ResourceVersion: "42", UID: "u-1", APIVersion: "v1", SHA256: object.Digest(body)}
	key := "clusterbackup/east/default/configmaps/a.yaml"
	if err := store.Put(ctx, key, body, meta); err != nil {
		t.Fatal(err)
	}
	if err := store.Put(ctx, "clusterbackup/west/default/configmaps/a.yaml", body, meta); err != nil {
		t.Fatal(err)
	}
	// The store checks the document's SHA-256: a body that does not match
	// its digest is refused.
	corrupt := meta
	corrupt.SHA256 = object.Digest([]byte("another document"))
	if err := store.Put(ctx, "clusterbackup/east/default/configmaps/corrupt.yaml", body, corrupt); err == nil {
		t.Error("a body that does not match its SHA-256 was stored")
	}

	// Read back with a plain minio-go client: bytes and user metadata.
	raw, err := minio.New(srv.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(srv.AccessKey, srv.SecretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	obj, err := raw.GetObject(ctx, "backups", key, minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(obj)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, body) {
		t.Errorf("stored %q, want %q", got, body)
	}
	st, err := obj.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if back := object.MetaFromMap(st.UserMetadata); back != meta {
		t.Errorf("user metadata %+v, want %+v", back, meta)
	}

	list, err := List(ctx, store, object.Layout{Prefix: "clusterbackup", Cluster: "east"}.Root())
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Key != key || list[0].Meta != meta {
		t.Fatalf("list = %+v", list)
	}

	if err := store.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	if err := store.Delete(ctx, key); err != nil {
		t.Errorf("second delete: %v", err)
	}
	list, err = List(ctx, store, "clusterbackup/east/")
	if err != nil || len(list) != 0 {
		t.Fatalf("after delete: %+v %v", list, err)
	}
	// Versioning keeps the deleted document's history.
	versions := 0
	for v := range raw.ListObjects(ctx, "backups", minio.ListObjectsOptions{Prefix: key, WithVersions: true}) {
		if v.Err != nil {
			t.Fatal(v.Err)
		}
		versions++
	}
	if versions < 2 { // the document and its delete marker
		t.Errorf("versions of deleted key: %d, want >= 2", versions)
	}
}

func TestMinIOConnectErrorsHideCredentials(t *testing.T) {
	srv := startMinIO(t)
	core, logs := observer.New(zapcore.InfoLevel)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := NewMinIO(ctx, MinIOOptions{
		Endpoint: srv.Endpoint, AccessKey: "wrong-access-key", SecretKey: "wrong-secret-key", Bucket: "backups", MaxRetries: 1,
	}, zap.New(core))
	if err == nil {
		t.Fatal("connect with bad credentials succeeded")
	}
	if !errors.Is(err, ErrPermanent) {
		t.Errorf("bad credentials should be permanent: %v", err)
	}
	entries := logs.FilterField(zap.String("operation", "minio_connect")).All()
	if len(entries) != 1 || entries[0].Level != zapcore.ErrorLevel {
		t.Fatalf("want one error line with operation minio_connect, got %+v", entries)
	}
	for _, s := range []string{err.Error(), entries[0].Message, entries[0].ContextMap()["error"].(string)} {
		if strings.Contains(s, "wrong-access-key") || strings.Contains(s, "wrong-secret-key") {
			t.Errorf("credential leaked: %q", s)
		}
	}
}
