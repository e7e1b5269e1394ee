package main

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/restore"
)

// packReads parses the line a restore or diff prints about the pack.
var packReads = regexp.MustCompile(`(\d+) documents read from the restore pack of \S+, (\d+) from their own keys`)

func readCounts(t *testing.T, stderr string) (fromPack, fromKeys int) {
	t.Helper()
	m := packReads.FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("no line about the restore pack in:\n%s", lastLines(stderr, 8))
	}
	fromPack, _ = strconv.Atoi(m[1])
	fromKeys, _ = strconv.Atoi(m[2])
	return fromPack, fromKeys
}

// TestRestoreReadsThePack backs up a namespace, lets the service write its
// restore pack, then changes one object and alters another behind the
// service's back. A restore reads every unchanged document from the pack
// and only the changed and the altered one from their keys: the change is
// restored, the altered file refused. A restore to a time before the
// change takes the old version from the pack. A pack that is not one
// costs nothing but speed.
func TestRestoreReadsThePack(t *testing.T) {
	requireServers(t)
	ns, cluster := "e2e-pack", "pack"
	const configMaps = 40
	createNamespace(t, ns)
	for i := range configMaps {
		createConfigMap(t, ns, "cm-"+strconv.Itoa(i), map[string]string{"v": "1"}, nil, nil)
	}
	s := startService(t, cluster, serviceOptions{configMap: map[string]string{"include-namespaces": ns}})
	s.waitReady()
	s.waitPass(1)
	eventually(t, time.Minute, "the restore pack", func() bool {
		for _, l := range s.logs("object_write") {
			if l["message"] == "Restore pack written" {
				return true
			}
		}
		return false
	})
	written := 0
	for _, l := range s.logs("object_write") {
		if l["message"] == "Restore pack written" {
			data, _ := l["data"].(map[string]any)
			n, _ := data["documents"].(float64)
			written = int(n)
		}
	}
	if written < configMaps+1 {
		t.Fatalf("the pack holds %d documents, want at least the %d ConfigMaps and the Namespace", written, configMaps)
	}
	// --at takes whole seconds: the change comes after the next one.
	beforeChange := time.Now().Truncate(time.Second).Add(time.Second)
	time.Sleep(time.Until(beforeChange.Add(10 * time.Millisecond)))

	// One object changes (the service writes it; the pack is not due
	// again), another is altered in the bucket.
	setData(t, ns, "cm-1", "v", "2")
	eventually(t, 30*time.Second, "the change stored", func() bool {
		return strings.Contains(s.body(s.key(ns, "configmaps", "cm-1")), `v: "2"`)
	})
	s.stop()
	tamper(t, s.key(ns, "configmaps", "cm-2"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-2\n  namespace: "+ns+"\ndata:\n  v: injected\n")
	deleteNamespace(t, ns)

	_, stderr, code := cli(t, cluster, "restore", "-n", ns)
	if code != exitPartial {
		t.Fatalf("restore: exit %d, want %d (the altered object refused)\n%s", code, exitPartial, stderr)
	}
	fromPack, fromKeys := readCounts(t, stderr)
	t.Logf("restore: %d documents from the pack, %d from their keys", fromPack, fromKeys)
	if fromKeys != 2 || fromPack < configMaps-2+1 {
		t.Errorf("read %d from the pack and %d from keys, want the changed and the altered object (2) from keys and the rest from the pack", fromPack, fromKeys)
	}
	if !strings.Contains(stderr, s.key(ns, "configmaps", "cm-2")) || !strings.Contains(stderr, "altered") {
		t.Errorf("the altered object is not named:\n%s", lastLines(stderr, 8))
	}
	if cm, err := e2e.cs.CoreV1().ConfigMaps(ns).Get(bg, "cm-1", metav1.GetOptions{}); err != nil || cm.Data["v"] != "2" {
		t.Errorf("the changed ConfigMap after the restore: %v %v, want v=2", cm.Data, err)
	}
	if _, err := e2e.cs.CoreV1().ConfigMaps(ns).Get(bg, "cm-2", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the altered ConfigMap was restored: %v", err)
	}

	// Before the change and the alteration, every version is the pack's.
	at := beforeChange.UTC().Format(time.RFC3339)
	_, stderr, code = cli(t, cluster, "restore", "-n", ns, "--at", at, "--namespace-mapping", ns+":"+ns+"-then")
	if code != 0 {
		t.Fatalf("restore --at %s: exit %d\n%s", at, code, stderr)
	}
	if fromPack, fromKeys = readCounts(t, stderr); fromKeys != 0 {
		t.Errorf("restore --at before the change: %d from the pack, %d from keys; want all from the pack", fromPack, fromKeys)
	}
	for _, name := range []string{"cm-1", "cm-2"} {
		if cm, err := e2e.cs.CoreV1().ConfigMaps(ns+"-then").Get(bg, name, metav1.GetOptions{}); err != nil || cm.Data["v"] != "1" {
			t.Errorf("%s restored as of %s: %v %v, want v=1", name, at, cm.Data, err)
		}
	}

	// A pack that is not one: everything comes from its key.
	packKey := object.Layout{Prefix: "clusterbackup", Cluster: cluster}.PackKey()
	garbage := "PK\x03\x04 not a pack"
	if _, err := e2e.bucket.PutObject(context.Background(), bucketName, packKey, strings.NewReader(garbage), int64(len(garbage)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	deleteNamespace(t, ns)
	rep := restoreReport(t, cluster, exitPartial, "-n", ns)
	if rep.Counts[restore.Created] < configMaps || rep.Counts[restore.Failed] != 1 {
		t.Errorf("restore over a damaged pack: %v, want every ConfigMap but the altered one", rep.Counts)
	}
	_, stderr, code = cli(t, cluster, "diff", "-n", ns)
	if code <= 1 || !strings.Contains(stderr, "damaged") || !strings.Contains(stderr, "altered") {
		t.Errorf("diff over a damaged pack: exit %d, want an error for the altered object\n%s", code, lastLines(stderr, 8))
	}
	if fromPack, fromKeys = readCounts(t, stderr); fromPack != 0 || fromKeys < configMaps {
		t.Errorf("diff over a damaged pack: %d from the pack, %d from keys", fromPack, fromKeys)
	}
}
