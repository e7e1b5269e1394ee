// Command demo shows cluster-backup at work on a local cluster: it starts a
// real kube-apiserver, etcd, kube-controller-manager and MinIO on 127.0.0.1,
// seeds a few realistic namespaces, runs `cluster-backup run` against them,
// makes changes while it runs, and prints the bucket and one stored file.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/testenv"
)

const (
	cluster = "demo"
	bucket  = "cluster-backups"
)

func main() {
	binary := flag.String("binary", "bin/cluster-backup", "cluster-backup binary to run")
	keep := flag.Bool("keep", false, "keep everything running until Ctrl-C, to explore")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *binary, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func say(format string, args ...any) { fmt.Printf("==> "+format+"\n", args...) }

func run(ctx context.Context, binary string, keep bool) error {
	work, err := os.MkdirTemp("", "cluster-backup-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	say("starting etcd, kube-apiserver and kube-controller-manager on 127.0.0.1")
	kube, err := testenv.StartKube(ctx, testenv.KubeOptions{ControllerManager: true})
	if err != nil {
		return err
	}
	defer kube.Stop()
	say("starting MinIO on 127.0.0.1")
	store, err := testenv.StartMinIO(ctx, work)
	if err != nil {
		return err
	}
	defer store.Stop()

	cs := kubernetes.NewForConfigOrDie(kube.Config)
	dyn := dynamic.NewForConfigOrDie(kube.Config)
	say("seeding namespaces shop and payments: Deployments, Services, ConfigMaps, Secrets and a custom resource")
	if err := seed(ctx, cs, dyn); err != nil {
		return err
	}

	logPath := filepath.Join(work, "cluster-backup.log")
	say("running %s run (JSON logs in %s)", binary, logPath)
	started := time.Now()
	passes, stop, err := startService(binary, kube, store, logPath)
	if err != nil {
		return err
	}
	defer stop()

	var first map[string]any
	select {
	case first = <-passes:
	case <-time.After(2 * time.Minute):
		return fmt.Errorf("no backup_complete within 2 minutes; see %s", logPath)
	case <-ctx.Done():
		return ctx.Err()
	}
	took := time.Since(started).Round(time.Millisecond)
	mc, err := minio.New(store.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(store.AccessKey, store.SecretKey, "")})
	if err != nil {
		return err
	}
	stored, err := countStored(ctx, mc)
	if err != nil {
		return err
	}
	// Objects written while their type's list streamed in count as
	// unchanged in the pass that follows.
	say("first full backup finished %s after start: %d objects in the bucket (the pass: %v)", took, stored, first["data"])
	say("making changes while it runs")
	if err := change(ctx, cs, mc); err != nil {
		return err
	}

	if err := showBucket(ctx, mc); err != nil {
		return err
	}
	if err := disaster(ctx, cs, binary, kube, store); err != nil {
		return err
	}

	if keep {
		say("still running. MinIO at http://%s (access key %s), kubeconfig %s. Ctrl-C to stop.", store.Endpoint, store.AccessKey, kube.Kubeconfig)
		<-ctx.Done()
	}
	return nil
}

// disaster deletes the payments namespace, restores it from the backup as
// it was just before (the running service records the deletes too), and
// shows with `cluster-backup diff` that the cluster equals that backup.
func disaster(ctx context.Context, cs kubernetes.Interface, binary string, kube *testenv.Kube, store *testenv.MinIO) error {
	before := time.Now().UTC().Format(time.RFC3339Nano)
	say("disaster: deleting namespace payments")
	if err := cs.CoreV1().Namespaces().Delete(ctx, "payments", metav1.DeleteOptions{}); err != nil {
		return err
	}
	for {
		if _, err := cs.CoreV1().Namespaces().Get(ctx, "payments", metav1.GetOptions{}); apierrors.IsNotFound(err) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	say("namespace payments is gone; restoring it as it was: %s restore -n payments --at %s", binary, before)
	start := time.Now()
	restore := cliCommand(binary, kube, store, "restore", "-n", "payments", "--at", before)
	var summary bytes.Buffer
	restore.Stderr = &summary
	if err := restore.Run(); err != nil {
		return fmt.Errorf("restore: %w\n%s", err, summary.String())
	}
	took := time.Since(start).Round(time.Millisecond)
	// The counts, then where the documents were read from.
	for _, line := range strings.Split(strings.TrimSpace(summary.String()), "\n") {
		if strings.HasPrefix(line, "restore: ") && strings.Contains(line, " created, ") {
			say("%s (%s end to end)", line, took)
		} else if strings.HasPrefix(line, "restore: ") && strings.Contains(line, "restore pack") {
			say("%s", line)
		}
	}
	diff := cliCommand(binary, kube, store, "diff", "-n", "payments", "--at", before)
	if out, err := diff.CombinedOutput(); err != nil {
		return fmt.Errorf("diff after the restore: %w\n%s", err, out)
	}
	say("%s diff -n payments --at %s: the cluster equals that backup (exit 0)", binary, before)
	return nil
}

// cliCommand is one browsing or restore command against the demo servers.
func cliCommand(binary string, kube *testenv.Kube, store *testenv.MinIO, args ...string) *exec.Cmd {
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), serviceEnv(kube, store)...)
	return cmd
}

// serviceEnv points the service and the commands at the demo servers.
func serviceEnv(kube *testenv.Kube, store *testenv.MinIO) []string {
	return []string{
		"CLUSTER_NAME=" + cluster,
		"KUBECONFIG=" + kube.Kubeconfig,
		"MINIO_ENDPOINT=" + store.Endpoint,
		"MINIO_ACCESS_KEY=" + store.AccessKey,
		"MINIO_SECRET_KEY=" + store.SecretKey,
		"MINIO_BUCKET=" + bucket,
		"MINIO_USE_SSL=false",
	}
}

// showBucket prints the bucket's tree and one stored file.
func showBucket(ctx context.Context, mc *minio.Client) error {
	say("bucket %s:", bucket)
	if err := printTree(ctx, mc); err != nil {
		return err
	}
	key := "clusterbackup/demo/shop/deployments/web.yaml"
	say("%s:", key)
	obj, err := mc.GetObject(ctx, bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return err
	}
	body, err := io.ReadAll(obj)
	if err != nil {
		return err
	}
	fmt.Print(string(body))
	return nil
}

// startService runs `cluster-backup run` against the local servers, its
// JSON log in logPath; passes reports each backup_complete line.
func startService(binary string, kube *testenv.Kube, store *testenv.MinIO, logPath string) (passes <-chan map[string]any, stop func(), err error) {
	cmd := exec.Command(binary, "run")
	cmd.Env = append(append(os.Environ(), serviceEnv(kube, store)...), "METRICS_ADDR=127.0.0.1:0")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		logFile.Close()
		return nil, nil, err
	}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, nil, err
	}
	ch := make(chan map[string]any, 16)
	go follow(io.TeeReader(out, logFile), ch)
	return ch, func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		logFile.Close()
	}, nil
}

// countStored counts the demo cluster's objects in the bucket.
func countStored(ctx context.Context, mc *minio.Client) (int, error) {
	layout := object.Layout{Prefix: "clusterbackup", Cluster: cluster}
	stored := 0
	for o := range mc.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: layout.Root(), Recursive: true}) {
		if o.Err != nil {
			return 0, o.Err
		}
		if _, ok := layout.Parse(o.Key); ok { // not the identity marker or the restore pack
			stored++
		}
	}
	return stored, nil
}

// follow copies the service's log lines and reports each backup_complete.
func follow(r io.Reader, passes chan<- map[string]any) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) == nil && line["operation"] == "backup_complete" {
			select {
			case passes <- line:
			default:
			}
		}
	}
}

var widgets = schema.GroupVersionResource{Group: "demo.example.com", Version: "v1", Resource: "widgets"}

func seed(ctx context.Context, cs kubernetes.Interface, dyn dynamic.Interface) error {
	for _, ns := range []string{"shop", "payments"} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"team": ns}}}, metav1.CreateOptions{}); err != nil {
			return err
		}
		for _, app := range []string{"web", "worker"} {
			if _, err := cs.AppsV1().Deployments(ns).Create(ctx, deployment(app), metav1.CreateOptions{}); err != nil {
				return err
			}
			if _, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: app, Labels: map[string]string{"app": app}},
				Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": app}, Ports: []corev1.ServicePort{{Port: 80}}},
			}, metav1.CreateOptions{}); err != nil {
				return err
			}
		}
		if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: "settings"},
			Data:       map[string]string{"LOG_LEVEL": "info", "FEATURE_X": "on", "RETRIES": "3"},
		}, metav1.CreateOptions{}); err != nil {
			return err
		}
		if _, err := cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "db-credentials"},
			StringData: map[string]string{"username": "app", "password": "demo-only"},
		}, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	crd := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1",
		"kind":       "CustomResourceDefinition",
		"metadata":   map[string]any{"name": "widgets.demo.example.com"},
		"spec": map[string]any{
			"group": "demo.example.com",
			"names": map[string]any{"plural": "widgets", "singular": "widget", "kind": "Widget"},
			"scope": "Namespaced",
			"versions": []any{map[string]any{
				"name": "v1", "served": true, "storage": true,
				"schema": map[string]any{"openAPIV3Schema": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
			}},
		},
	}}
	crdGVR := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	if _, err := dyn.Resource(crdGVR).Create(ctx, crd, metav1.CreateOptions{}); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		w := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "demo.example.com/v1", "kind": "Widget",
			"metadata": map[string]any{"name": "blue", "namespace": "shop"},
			"spec":     map[string]any{"color": "blue", "size": int64(3)},
		}}
		_, err := dyn.Resource(widgets).Namespace("shop").Create(ctx, w, metav1.CreateOptions{})
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("create widget: %w", err)
		}
		time.Sleep(200 * time.Millisecond) // the CRD is not Established yet
	}
}

func deployment(app string) *appsv1.Deployment {
	two := int32(2)
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: app, Labels: map[string]string{"app": app}},
		Spec: appsv1.DeploymentSpec{
			Replicas: &two,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: app, Image: "registry.example/" + app + ":1.0"}}},
			},
		},
	}
}

// change makes three changes and reports how long each took to land.
func change(ctx context.Context, cs kubernetes.Interface, mc *minio.Client) error {
	measure := func(what, key string, landed func(body string, found bool) bool) error {
		start := time.Now()
		for time.Since(start) < 30*time.Second {
			body, found := read(ctx, mc, key)
			if landed(body, found) {
				say("  %-45s in the bucket after %s", what, time.Since(start).Round(time.Millisecond))
				return nil
			}
			time.Sleep(20 * time.Millisecond)
		}
		return fmt.Errorf("%s did not reach the bucket within 30 s", what)
	}

	cm, err := cs.CoreV1().ConfigMaps("shop").Get(ctx, "settings", metav1.GetOptions{})
	if err != nil {
		return err
	}
	cm.Data["LOG_LEVEL"] = "debug"
	if _, err := cs.CoreV1().ConfigMaps("shop").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		return err
	}
	if err := measure("update of shop/settings", "clusterbackup/demo/shop/configmaps/settings.yaml", func(b string, _ bool) bool {
		return strings.Contains(b, "LOG_LEVEL: debug")
	}); err != nil {
		return err
	}

	if err := cs.CoreV1().Services("payments").Delete(ctx, "worker", metav1.DeleteOptions{}); err != nil {
		return err
	}
	if err := measure("delete of payments/worker service", "clusterbackup/demo/payments/services/worker.yaml", func(_ string, found bool) bool {
		return !found
	}); err != nil {
		return err
	}

	if _, err := cs.AppsV1().Deployments("payments").Create(ctx, deployment("ledger"), metav1.CreateOptions{}); err != nil {
		return err
	}
	return measure("create of payments/ledger deployment", "clusterbackup/demo/payments/deployments/ledger.yaml", func(_ string, found bool) bool {
		return found
	})
}

func read(ctx context.Context, mc *minio.Client, key string) (string, bool) {
	obj, err := mc.GetObject(ctx, bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return "", false
	}
	defer obj.Close()
	b, err := io.ReadAll(obj)
	if err != nil {
		return "", false
	}
	return string(b), true
}

// printTree prints the namespaced part of the bucket as a tree, and a count
// of the cluster-scoped objects.
func printTree(ctx context.Context, mc *minio.Client) error {
	var keys []string
	clusterScoped := map[string]int{}
	for o := range mc.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: "clusterbackup/demo/", Recursive: true}) {
		if o.Err != nil {
			return o.Err
		}
		parts := strings.Split(o.Key, "/")
		if len(parts) == 5 && parts[2] == "_cluster" {
			clusterScoped[parts[3]]++
			continue
		}
		if len(parts) == 5 && (parts[2] == "shop" || parts[2] == "payments") {
			keys = append(keys, o.Key)
		}
	}
	sort.Strings(keys)
	fmt.Println("clusterbackup/demo/")
	last := []string{"", ""}
	for _, k := range keys {
		parts := strings.Split(k, "/")
		if parts[2] != last[0] {
			fmt.Printf("├── %s/\n", parts[2])
			last = []string{parts[2], ""}
		}
		if parts[3] != last[1] {
			fmt.Printf("│   ├── %s/\n", parts[3])
			last[1] = parts[3]
		}
		fmt.Printf("│   │   ├── %s\n", parts[4])
	}
	var names []string
	total := 0
	for r, n := range clusterScoped {
		names = append(names, fmt.Sprintf("%s (%d)", r, n))
		total += n
	}
	sort.Strings(names)
	fmt.Printf("└── _cluster/   %d cluster-scoped objects: %s\n", total, strings.Join(names, ", "))
	fmt.Println("    (other namespaces, such as kube-system and default, are backed up too)")
	return nil
}
