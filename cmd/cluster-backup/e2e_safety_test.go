package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/cluster-backup/cluster-backup/testenv"
)

// cluster is a control plane of a test's own, for tests that stop its API
// server or break it in ways the shared one must not see.
type cluster struct {
	kube *testenv.Kube
	cs   kubernetes.Interface
	dyn  dynamic.Interface
}

// privateCluster starts a control plane of the test's own (new etcd, new
// PKI), with the options given, if any.
func privateCluster(t *testing.T, opts ...testenv.KubeOptions) *cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(bg, 2*time.Minute)
	defer cancel()
	k, err := testenv.StartKube(ctx, append(opts, testenv.KubeOptions{})[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Stop)
	return &cluster{kube: k, cs: kubernetes.NewForConfigOrDie(k.Config), dyn: dynamic.NewForConfigOrDie(k.Config)}
}

func (c *cluster) configMaps(t *testing.T, ns string, n int, labels map[string]string, prefix string) {
	t.Helper()
	if _, err := c.cs.CoreV1().Namespaces().Create(bg, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	for i := range n {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", prefix, i), Labels: labels}, Data: map[string]string{"i": fmt.Sprint(i)}}
		if _, err := c.cs.CoreV1().ConfigMaps(ns).Create(bg, cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// putKey stores a document under key as a service would have.
func putKey(t *testing.T, key, body string) {
	t.Helper()
	if ok, err := e2e.bucket.BucketExists(bg, bucketName); err == nil && !ok {
		if err := e2e.bucket.MakeBucket(bg, bucketName, minio.MakeBucketOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := e2e.bucket.EnableVersioning(bg, bucketName); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e2e.bucket.PutObject(bg, bucketName, key, strings.NewReader(body), int64(len(body)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
}

// lastPass returns the data of the newest backup_complete line.
func (s *process) lastPass() map[string]any {
	lines := s.logs("backup_complete")
	if len(lines) == 0 {
		return nil
	}
	d, _ := lines[len(lines)-1]["data"].(map[string]any)
	return d
}

func TestReloadDuringAPIOutageDeletesNothing(t *testing.T) {
	requireServers(t)
	c := privateCluster(t)
	ns := "reload-outage"
	c.configMaps(t, ns, 5, map[string]string{"app": "a"}, "labelled")
	c.configMaps(t, ns, 3, nil, "plain")
	dir := t.TempDir()
	base := map[string]string{"filtering-mode": "whitelist", "include-resources": "configmaps", "include-namespaces": ns, "max-prune-fraction": "1"}
	writeConfigDir(t, dir, base)
	s := startService(t, "reload-outage", serviceOptions{env: map[string]string{"KUBECONFIG": c.kube.Kubeconfig, "BACKUP_CONFIG_DIR": dir}})
	s.waitReady()
	s.waitPass(1)
	before := s.stored()
	if len(before) < 8 {
		t.Fatalf("%d keys stored, want 8 ConfigMaps", len(before))
	}

	if err := c.kube.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	// Rules that rebuild every informer and would leave the plain
	// ConfigMaps out.
	changed := map[string]string{"label-selector": "app=a", "include-status": "true"}
	for k, v := range base {
		changed[k] = v
	}
	writeConfigDir(t, dir, changed)
	// The reload cannot be applied; the pass it triggers runs on the
	// caches and rules in force.
	s.waitPass(2)
	if d := s.lastPass(); d["deleted"] != 0.0 {
		t.Errorf("pass during the outage: %v", d)
	}
	after := s.stored()
	for k := range before {
		if _, ok := after[k]; !ok {
			t.Errorf("%s deleted during the API outage", k)
		}
	}

	if err := c.kube.StartAPIServer(bg); err != nil {
		t.Fatal(err)
	}
	plain := s.key(ns, "configmaps", "plain-0")
	eventually(t, 90*time.Second, "the new rules to apply once the API server is back", func() bool {
		_, stillThere := s.stored()[plain]
		return !stillThere
	})
	if s.body(s.key(ns, "configmaps", "labelled-0")) == "" {
		t.Error("a selected ConfigMap left the bucket")
	}
}

// conversionCRD serves v1 (storage) and v2 (preferred), converted by a
// webhook that does not answer: every list at v2 fails.
func conversionCRD() *unstructured.Unstructured {
	schemaOf := map[string]any{"openAPIV3Schema": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1",
		"kind":       "CustomResourceDefinition",
		"metadata":   map[string]any{"name": "gadgets.convert.example.com"},
		"spec": map[string]any{
			"group": "convert.example.com",
			"names": map[string]any{"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
			"scope": "Namespaced",
			"versions": []any{
				map[string]any{"name": "v1", "served": true, "storage": true, "schema": schemaOf},
				map[string]any{"name": "v2", "served": true, "storage": false, "schema": schemaOf},
			},
			"conversion": map[string]any{
				"strategy": "Webhook",
				"webhook": map[string]any{
					"conversionReviewVersions": []any{"v1"},
					"clientConfig":             map[string]any{"url": "https://127.0.0.1:1/convert"},
				},
			},
		},
	}}
}

func TestFailingTypeDoesNotStallTheRest(t *testing.T) {
	requireServers(t)
	c := privateCluster(t)
	ns := "conversion-down"
	c.configMaps(t, ns, 3, nil, "cm")
	crdGVR := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	if _, err := c.dyn.Resource(crdGVR).Create(bg, conversionCRD(), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	v1 := schema.GroupVersionResource{Group: "convert.example.com", Version: "v1", Resource: "gadgets"}
	eventually(t, 30*time.Second, "CRD established", func() bool {
		_, err := c.dyn.Resource(v1).Namespace(ns).List(bg, metav1.ListOptions{})
		return err == nil
	})
	gadget := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "convert.example.com/v1", "kind": "Gadget", "metadata": map[string]any{"name": "g", "namespace": ns},
	}}
	if _, err := c.dyn.Resource(v1).Namespace(ns).Create(bg, gadget, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	v2 := v1
	v2.Version = "v2"
	if _, err := c.dyn.Resource(v2).Namespace(ns).List(bg, metav1.ListOptions{}); err == nil {
		t.Fatal("listing at v2 works: the conversion webhook is not down")
	}
	env := map[string]string{"KUBECONFIG": c.kube.Kubeconfig, "SYNC_TIMEOUT": "5s"}
	cm := map[string]string{"include-namespaces": ns}

	// The gadget was backed up while its webhook worked: it must stay.
	const cluster = "conversion-down"
	gadgetKey := "clusterbackup/" + cluster + "/" + ns + "/gadgets.convert.example.com/g.yaml"
	putKey(t, gadgetKey, "apiVersion: convert.example.com/v2\nkind: Gadget\n")

	t.Run("snapshot exits 1 naming the type and writes the rest", func(t *testing.T) {
		start := time.Now()
		s := startService(t, cluster, serviceOptions{env: env, configMap: cm, args: []string{"snapshot"}})
		if code := s.waitExit(60*time.Second, "snapshot with SYNC_TIMEOUT=5s"); code != 1 {
			t.Fatalf("exit %d, want 1", code)
		}
		t.Logf("snapshot ended in %s", time.Since(start).Round(time.Millisecond))
		if d := s.lastPass(); !strings.Contains(fmt.Sprint(d["incomplete"]), "gadgets.convert.example.com") {
			t.Errorf("pass line does not name the failing type: %v", d)
		}
		if s.body(s.key(ns, "configmaps", "cm-0")) == "" {
			t.Error("other types not backed up")
		}
		if s.body(gadgetKey) == "" {
			t.Error("the failing type's stored object was deleted")
		}
	})

	t.Run("run keeps going, ready and honest", func(t *testing.T) {
		s := startService(t, cluster, serviceOptions{env: env, configMap: cm})
		s.waitReady()
		s.waitPass(1)
		if got := s.metric("cluster_backup_incomplete_resources", nil); got != 1 {
			t.Errorf("incomplete resources %v, want 1", got)
		}
		if s.metric("cluster_backup_errors_total", map[string]string{"operation": "resource_list"}) < 1 {
			t.Errorf("list failures not counted: %v", s.logs("resource_list"))
		}
		if s.metric("cluster_backup_last_success_timestamp_seconds", nil) != 0 {
			t.Error("a pass without the failing type counted as a success")
		}
		createConfigMapIn(t, c.cs, ns, "after-start")
		eventually(t, 10*time.Second, "a change of another type", func() bool { return s.body(s.key(ns, "configmaps", "after-start")) != "" })
		if s.body(gadgetKey) == "" {
			t.Error("the failing type's stored object was deleted")
		}
	})
}

func createConfigMapIn(t *testing.T, cs kubernetes.Interface, ns, name string) {
	t.Helper()
	if _, err := cs.CoreV1().ConfigMaps(ns).Create(bg, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"a": "b"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestUnavailableGroupKeepsItsBackups(t *testing.T) {
	requireServers(t)
	c := privateCluster(t)
	ns := "flaky"
	c.configMaps(t, ns, 1, nil, "cm")
	crdGVR := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	if _, err := c.dyn.Resource(crdGVR).Create(bg, crd("flaky.example.com", "things", "Thing"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	things := schema.GroupVersionResource{Group: "flaky.example.com", Version: "v1", Resource: "things"}
	eventually(t, 30*time.Second, "CRD established", func() bool {
		_, err := c.dyn.Resource(things).Namespace(ns).List(bg, metav1.ListOptions{})
		return err == nil
	})
	for _, name := range []string{"a", "b"} {
		obj := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "flaky.example.com/v1", "kind": "Thing", "metadata": map[string]any{"name": name, "namespace": ns}}}
		if _, err := c.dyn.Resource(things).Namespace(ns).Create(bg, obj, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	const clusterName = "flaky-group"
	env := map[string]string{"KUBECONFIG": c.kube.Kubeconfig, "SNAPSHOT_INTERVAL": "2s"}
	cm := map[string]string{"include-namespaces": ns}
	first := startService(t, clusterName, serviceOptions{env: env, configMap: cm})
	first.waitPass(1)
	thingKey := first.key(ns, "things.flaky.example.com", "a")
	if first.body(thingKey) == "" {
		t.Fatal("the custom resource was not backed up while its API worked")
	}
	first.stop()

	// Route the group to an aggregated API server that does not exist, as
	// when an APIService's backend is down: discovery of the group fails.
	apiservices := schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}
	down := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
		"metadata": map[string]any{"name": "v1.flaky.example.com"},
		"spec": map[string]any{
			"group": "flaky.example.com", "version": "v1", "groupPriorityMinimum": int64(1000), "versionPriority": int64(100),
			"insecureSkipTLSVerify": true, "service": map[string]any{"name": "nowhere", "namespace": ns, "port": int64(443)},
		},
	}}
	eventually(t, 30*time.Second, "the APIService to point nowhere", func() bool {
		cur, err := c.dyn.Resource(apiservices).Get(bg, "v1.flaky.example.com", metav1.GetOptions{})
		if err != nil {
			return false
		}
		down.SetResourceVersion(cur.GetResourceVersion())
		_, err = c.dyn.Resource(apiservices).Update(bg, down, metav1.UpdateOptions{})
		return err == nil
	})
	eventually(t, 30*time.Second, "discovery of the group to fail", func() bool {
		_, err := c.cs.Discovery().ServerResourcesForGroupVersion("flaky.example.com/v1")
		return err != nil
	})

	second := startService(t, clusterName, serviceOptions{env: env, configMap: cm})
	second.waitPass(3) // the first pass and later ones
	for _, l := range second.logs("backup_complete") {
		d, _ := l["data"].(map[string]any)
		if d["deleted"] != 0.0 {
			t.Errorf("a pass deleted objects while their group was down: %v", d)
		}
	}
	for _, name := range []string{"a", "b"} {
		if second.body(second.key(ns, "things.flaky.example.com", name)) == "" {
			t.Errorf("%s deleted while its group failed discovery", name)
		}
	}
	if second.metric("cluster_backup_incomplete_resources", nil) < 1 {
		t.Error("the failing group is not reported incomplete")
	}

	// Recovery: the local APIService comes back (the CRD's own).
	if err := c.dyn.Resource(apiservices).Delete(bg, "v1.flaky.example.com", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the group to be served again", func() bool {
		_, err := c.dyn.Resource(things).Namespace(ns).List(bg, metav1.ListOptions{})
		return err == nil
	})
	obj := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "flaky.example.com/v1", "kind": "Thing", "metadata": map[string]any{"name": "after", "namespace": ns}}}
	if _, err := c.dyn.Resource(things).Namespace(ns).Create(bg, obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 90*time.Second, "the group to be backed up again", func() bool {
		return second.body(second.key(ns, "things.flaky.example.com", "after")) != ""
	})
	if second.body(thingKey) == "" {
		t.Error("an object of the recovered group left the bucket")
	}
}

func TestWhitelistTypoTripsThePruneGuard(t *testing.T) {
	requireServers(t)
	ns := "e2e-typo"
	createNamespace(t, ns)
	for i := range 5 {
		createConfigMap(t, ns, fmt.Sprintf("cm-%d", i), map[string]string{"i": fmt.Sprint(i)}, nil, nil)
	}
	dir := t.TempDir()
	good := map[string]string{"filtering-mode": "whitelist", "include-resources": "configmaps", "include-namespaces": ns}
	writeConfigDir(t, dir, good)
	s := startService(t, "typo", serviceOptions{env: map[string]string{"BACKUP_CONFIG_DIR": dir}})
	s.waitPass(1)
	before := s.stored()
	if len(before) < 5 {
		t.Fatalf("%d keys stored", len(before))
	}
	typo := map[string]string{"filtering-mode": "whitelist", "include-resources": "confgmaps", "include-namespaces": ns}
	writeConfigDir(t, dir, typo)
	eventually(t, 30*time.Second, "the prune guard to trip", func() bool {
		return s.metric("cluster_backup_prune_guard_tripped", nil) == 1
	})
	if lines := s.logs("prune_guard"); len(lines) == 0 {
		t.Error("no prune_guard log line")
	} else if d, _ := lines[0]["data"].(map[string]any); d["would_delete"] == 0.0 {
		t.Errorf("prune_guard line lacks the counts: %v", lines[0])
	}
	if s.metric("cluster_backup_errors_total", map[string]string{"operation": "prune_guard"}) < 1 {
		t.Error("the guard is not counted as an error")
	}
	after := s.stored()
	for k := range before {
		if _, ok := after[k]; !ok {
			t.Errorf("%s deleted by a mistyped whitelist", k)
		}
	}

	// The operator accepts the deletes with a one-shot pass.
	s.stop()
	accept := startService(t, "typo", serviceOptions{env: map[string]string{"BACKUP_CONFIG_DIR": dir}, args: []string{"snapshot", "--allow-mass-prune"}})
	if code := accept.waitExit(60*time.Second, "snapshot --allow-mass-prune"); code != 0 {
		t.Fatalf("snapshot --allow-mass-prune exited %d", code)
	}
	if _, ok := accept.stored()[s.key(ns, "configmaps", "cm-0")]; ok {
		t.Error("--allow-mass-prune did not delete")
	}
}

// TestSameClusterNameOnTwoClusters: a second cluster given the same
// CLUSTER_NAME writes nothing into the first's prefix, on MinIO and on a
// store whose listings carry no metadata (SeaweedFS), even for the objects
// both clusters hold under the same keys; it keeps running, live and
// reporting cluster_backup_prefix_held, and starts writing once the
// prefix is adopted.
func TestSameClusterNameOnTwoClusters(t *testing.T) {
	requireServers(t)
	other := privateCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	weed, weedClient := seaweedFS(ctx, t)
	for _, store := range []struct {
		name   string
		env    map[string]string
		client *minio.Client
	}{
		{"minio", map[string]string{}, e2e.bucket},
		{"seaweedfs", weedEnv(weed, nil), weedClient},
	} {
		t.Run(store.name, func(t *testing.T) {
			ns, cluster := "twins-"+store.name, "twins-"+store.name
			createNamespace(t, ns)
			createConfigMap(t, ns, "shared", map[string]string{"from": "first"}, nil, nil)
			createConfigMap(t, ns, "from-first", map[string]string{"a": "b"}, nil, nil)
			other.configMaps(t, ns, 1, nil, "from-other")
			if _, err := other.cs.CoreV1().ConfigMaps(ns).Create(bg, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "shared"}, Data: map[string]string{"from": "other"}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			cm := map[string]string{"filtering-mode": "whitelist", "include-resources": "configmaps", "include-namespaces": ns, "max-prune-fraction": "1"}
			env := maps.Clone(store.env)
			env["SNAPSHOT_INTERVAL"] = "2s"
			first := startService(t, cluster, serviceOptions{configMap: cm, env: env})
			first.waitPass(1)
			eventually(t, 30*time.Second, "an empty queue", func() bool { return first.metric("cluster_backup_queue_depth", nil) == 0 })
			shared, fromOther := first.key(ns, "configmaps", "shared"), first.key(ns, "configmaps", "from-other-0")
			versions := func(key string) int {
				n := 0
				for v := range store.client.ListObjects(bg, bucketName, minio.ListObjectsOptions{Prefix: key, WithVersions: true}) {
					if v.Err == nil && v.Key == key && !v.IsDeleteMarker {
						n++
					}
				}
				return n
			}
			before := versions(shared)

			otherEnv := maps.Clone(env)
			otherEnv["KUBECONFIG"] = other.kube.Kubeconfig
			second := startService(t, cluster, serviceOptions{configMap: cm, env: otherEnv})
			eventually(t, 30*time.Second, "the second service held", func() bool {
				return strings.Contains(second.scrape(), "\ncluster_backup_prefix_held 1\n")
			})
			if !slices.ContainsFunc(second.logs("cluster_identity"), func(l map[string]any) bool {
				return l["level"] == "error" && strings.Contains(fmt.Sprint(l["message"]), "writes nothing")
			}) {
				t.Error("the second service did not report the CLUSTER_NAME collision")
			}
			// Two more passes of the first: time for the second to misbehave.
			first.waitPass(len(first.logs("backup_complete")) + 2)
			if v := versions(shared); v != before {
				t.Errorf("%s: %d versions, %d before the second service started", shared, v, before)
			}
			if v := versions(fromOther); v != 0 {
				t.Errorf("the held service wrote %s", fromOther)
			}
			if code := second.get("/healthz"); code != 200 {
				t.Errorf("/healthz of the held service: %d, want 200", code)
			}
			if _, ok := storedUnder(t, store.client, "clusterbackup/"+cluster+"/")[first.key(ns, "configmaps", "from-first")]; !ok {
				t.Error("the owner's own object was deleted")
			}

			// The second cluster adopts the prefix and starts writing; the
			// first, still running, stops writing into it.
			adoptEnv := maps.Clone(store.env)
			adoptEnv["KUBECONFIG"], adoptEnv["CLUSTER_NAME"] = other.kube.Kubeconfig, cluster
			if out, stderr, code := cliWith(t, e2e.minio, adoptEnv, "adopt", "--yes"); code != 0 {
				t.Fatalf("adopt: exit %d\n%s%s", code, out, stderr)
			}
			eventually(t, time.Minute, "the second service writing after adopt", func() bool {
				return second.metric("cluster_backup_prefix_held", nil) == 0 && versions(fromOther) == 1
			})
			eventually(t, 30*time.Second, "the shared object as the second cluster holds it", func() bool {
				return strings.Contains(readObject(bg, store.client, shared), "from: other")
			})
			eventually(t, 30*time.Second, "the first service held", func() bool { return first.metric("cluster_backup_prefix_held", nil) == 1 })
			settled := versions(shared)
			if _, err := e2e.cs.CoreV1().ConfigMaps(ns).Update(bg, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "shared"}, Data: map[string]string{"from": "first-again"}}, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			second.waitPass(len(second.logs("backup_complete")) + 2)
			if v := versions(shared); v != settled || !strings.Contains(readObject(bg, store.client, shared), "from: other") {
				t.Errorf("after the adopt, a change in the first cluster reached %s: %d versions, %d before\n%s", shared, v, settled, readObject(bg, store.client, shared))
			}
		})
	}
}

func TestInformerRestartUnderLoadDeletesNothing(t *testing.T) {
	requireServers(t)
	ns := "e2e-swap"
	createNamespace(t, ns)
	const n = 40
	for i := range n {
		createConfigMap(t, ns, fmt.Sprintf("cm-%d", i), map[string]string{"v": "0"}, nil, nil)
	}
	dir := t.TempDir()
	base := map[string]string{"filtering-mode": "whitelist", "include-resources": "configmaps", "include-namespaces": ns}
	writeConfigDir(t, dir, base)
	s := startService(t, "swap", serviceOptions{env: map[string]string{"BACKUP_CONFIG_DIR": dir}})
	s.waitPass(1)
	want := map[string]bool{}
	for i := range n {
		want[s.key(ns, "configmaps", fmt.Sprintf("cm-%d", i))] = true
	}
	eventually(t, 10*time.Second, "all stored", func() bool {
		st := s.stored()
		for k := range want {
			if _, ok := st[k]; !ok {
				return false
			}
		}
		return true
	})

	// Updates keep coming while every informer is rebuilt.
	ctx, cancel := context.WithCancel(bg)
	var wg sync.WaitGroup
	var updates atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			name := fmt.Sprintf("cm-%d", i%n)
			cm, err := e2e.cs.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				continue
			}
			cm.Data["v"] = fmt.Sprint(i)
			if _, err := e2e.cs.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{}); err == nil {
				updates.Add(1)
			}
		}
	}()
	defer func() { cancel(); wg.Wait() }()

	restart := map[string]string{"include-status": "true"}
	for k, v := range base {
		restart[k] = v
	}
	passes := len(s.logs("backup_complete"))
	writeConfigDir(t, dir, restart)
	polls := 0
	deadline := time.Now().Add(60 * time.Second)
	// The pass the reload triggers waits for the rebuilt informers' lists.
	for len(s.logs("backup_complete")) < passes+1 || polls < 20 {
		if time.Now().After(deadline) {
			t.Fatal("no pass after the informers were rebuilt")
		}
		st := s.stored()
		if st == nil {
			continue
		}
		polls++
		for k := range want {
			if _, ok := st[k]; !ok {
				t.Fatalf("%s missing from the bucket while the informers were rebuilt", k)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	t.Logf("%d polls of the bucket during %d updates: no key missing", polls, updates.Load())
	if s.metric("cluster_backup_resources_total", map[string]string{"action": "deleted"}) != 0 {
		t.Error("objects were deleted")
	}
}

func TestUnstorableKeysAreCountedOnce(t *testing.T) {
	requireServers(t)
	ns := "e2e-long"
	createNamespace(t, ns)
	t.Cleanup(func() { _ = e2e.cs.CoreV1().Namespaces().Delete(bg, ns, metav1.DeleteOptions{}) })
	long := strings.Repeat("l", 250)
	createConfigMap(t, ns, long, map[string]string{"a": "b"}, nil, nil)
	createConfigMap(t, ns, "short", map[string]string{"a": "b"}, nil, nil)

	t.Run("directory store", func(t *testing.T) {
		dir := t.TempDir()
		s := startService(t, "long-dir", serviceOptions{
			env:       map[string]string{"MINIO_ENDPOINT": "", "BACKUP_DIR": dir, "SNAPSHOT_INTERVAL": "2s"},
			configMap: map[string]string{"filtering-mode": "whitelist", "include-resources": "configmaps", "include-namespaces": ns},
		})
		s.waitPass(3)
		if d := s.lastPass(); d["errors"] != 0.0 {
			t.Errorf("pass with a 250-character name: %v", d)
		}
		if d := s.lastPass(); d["backed_up"] != 0.0 {
			t.Errorf("the third pass rewrote objects (a stored name not listed back): %v", d)
		}
		if s.get("/readyz") != 200 {
			t.Error("not ready")
		}
		if _, err := os.Stat(filepath.Join(dir, "clusterbackup", "long-dir", ns, "configmaps", long+".yaml")); err != nil {
			t.Errorf("the 250-character name is not stored: %v", err)
		}
	})

	t.Run("S3 key over 1,024 bytes", func(t *testing.T) {
		// A RoleBinding's name may be any path segment, of any length.
		name := strings.Repeat("r", 1100)
		rb := map[string]any{
			"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
			"metadata": map[string]any{"name": name, "namespace": ns},
			"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
		}
		gvr := schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"}
		if _, err := e2e.dyn.Resource(gvr).Namespace(ns).Create(bg, &unstructured.Unstructured{Object: rb}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create a RoleBinding with a long name: %v", err)
		}
		s := startService(t, "long-s3", serviceOptions{
			env:       map[string]string{"SNAPSHOT_INTERVAL": "2s"},
			configMap: map[string]string{"filtering-mode": "whitelist", "include-resources": "rolebindings\nconfigmaps", "include-namespaces": ns},
		})
		s.waitPass(3)
		if got := s.metric("cluster_backup_errors_total", map[string]string{"operation": "object_write"}); got != 1 {
			t.Errorf("object_write errors %v after three passes, want 1", got)
		}
		for _, l := range s.logs("backup_complete") {
			if d, _ := l["data"].(map[string]any); d["errors"] != 0.0 {
				t.Errorf("pass failed on an unstorable key: %v", d)
			}
		}
		if s.get("/readyz") != 200 {
			t.Error("not ready")
		}
		if s.body(s.key(ns, "configmaps", "short")) == "" {
			t.Error("the other objects are not backed up")
		}
	})
}

// TestRecreatedDuringPassIsKept: a Deployment deleted while the service was
// down is an orphan for the first pass; recreated under the same name while
// that pass runs, its fresh backup must survive the pass's delete, which is
// keyed by the same identity (apps/deployments) as its watch event.
func TestRecreatedDuringPassIsKept(t *testing.T) {
	requireServers(t)
	c := privateCluster(t)
	ns := "recreate"
	c.configMaps(t, ns, 0, nil, "")
	const n = 30
	deploy := func(name string) *appsv1.Deployment {
		labels := map[string]string{"app": name}
		return &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: appsv1.DeploymentSpec{
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "registry.example/app:1"}}},
				},
			},
		}
	}
	names := make([]string, n)
	for i := range n {
		names[i] = fmt.Sprintf("d-%02d", i)
		if _, err := c.cs.AppsV1().Deployments(ns).Create(bg, deploy(names[i]), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	env := map[string]string{"KUBECONFIG": c.kube.Kubeconfig}
	cm := map[string]string{"filtering-mode": "whitelist", "include-resources": "deployments", "include-namespaces": ns, "max-prune-fraction": "1"}
	first := startService(t, "recreate", serviceOptions{env: env, configMap: cm})
	first.waitPass(1)
	last := first.key(ns, "deployments", names[n-1])
	eventually(t, 10*time.Second, "all stored", func() bool { return first.body(last) != "" })
	first.stop()
	for _, name := range names {
		if err := c.cs.AppsV1().Deployments(ns).Delete(bg, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	// One store call at a time, four a second: the pass deletes the n
	// orphans in order, the last one seconds after it starts.
	env["STORE_QPS"], env["BATCH_SIZE"] = "4", "1"
	second := startService(t, "recreate", serviceOptions{env: env, configMap: cm})
	eventually(t, 60*time.Second, "the first pass to start", func() bool { return len(second.logs("snapshot_start")) > 0 })
	if _, err := c.cs.AppsV1().Deployments(ns).Create(bg, deploy(names[n-1]), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pass := second.waitPass(1)
	if d, _ := pass["data"].(map[string]any); d["deleted"] != float64(n-1) {
		t.Logf("first pass: %v", d)
	}
	eventually(t, 10*time.Second, "an empty queue", func() bool { return second.metric("cluster_backup_queue_depth", nil) == 0 })
	if second.body(last) == "" {
		t.Errorf("the Deployment recreated during the pass lost its backup")
	}
	if second.body(first.key(ns, "deployments", names[0])) != "" {
		t.Errorf("a deleted Deployment's key was not pruned")
	}
}

func TestUnversionedBucketDeletesNothing(t *testing.T) {
	requireServers(t)
	srv, err := testenvMinIO(t)
	if err != nil {
		t.Fatal(err)
	}
	client, err := minioClient(srv)
	if err != nil {
		t.Fatal(err)
	}
	// An existing bucket without versioning.
	if err := client.MakeBucket(bg, bucketName, minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	ns := "e2e-unversioned"
	createNamespace(t, ns)
	createConfigMap(t, ns, "doomed", map[string]string{"a": "b"}, nil, nil)
	cm := map[string]string{"filtering-mode": "whitelist", "include-resources": "configmaps", "include-namespaces": ns}
	s := startService(t, "unversioned", serviceOptions{minio: srv, configMap: cm})
	s.waitPass(1)
	if s.metric("cluster_backup_bucket_versioning", nil) != 0 {
		t.Error("versioning gauge is not 0 on an unversioned bucket")
	}
	key := s.key(ns, "configmaps", "doomed")
	eventually(t, 10*time.Second, "the object stored", func() bool { return s.body(key) != "" })
	if err := e2e.cs.CoreV1().ConfigMaps(ns).Delete(bg, "doomed", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the delete to be handled", func() bool {
		for _, l := range s.logs("object_delete") {
			if strings.Contains(fmt.Sprint(l["message"]), "held back") {
				return true
			}
		}
		return false
	})
	if s.body(key) == "" {
		t.Error("an object was deleted from a bucket without versioning")
	}
}

func TestNewBucketGetsVersioningAndRetention(t *testing.T) {
	requireServers(t)
	srv, err := testenvMinIO(t)
	if err != nil {
		t.Fatal(err)
	}
	s := startService(t, "retention", serviceOptions{minio: srv, env: map[string]string{"NONCURRENT_RETENTION": "30d,10"},
		configMap: map[string]string{"filtering-mode": "whitelist", "include-resources": "namespaces"}})
	s.waitPass(1)
	if s.metric("cluster_backup_bucket_versioning", nil) != 1 {
		t.Error("versioning gauge is not 1 on the bucket the service created")
	}
	client, err := minioClient(srv)
	if err != nil {
		t.Fatal(err)
	}
	lc, err := client.GetBucketLifecycle(bg, bucketName)
	if err != nil {
		t.Fatal(err)
	}
	if len(lc.Rules) != 2 {
		t.Fatalf("lifecycle rules %+v", lc.Rules)
	}
	exp := lc.Rules[0].NoncurrentVersionExpiration
	if exp.NoncurrentDays != 30 || exp.NewerNoncurrentVersions != 10 {
		t.Errorf("noncurrent expiration %+v, want 30 days keeping 10", exp)
	}
	// The change journal expires with the versions it points at.
	if j := lc.Rules[1]; j.RuleFilter.Prefix != "clusterbackup/_journal/" || j.Expiration.Days != 30 {
		t.Errorf("journal rule %+v, want objects under clusterbackup/_journal/ expiring after 30 days", j)
	}
}
