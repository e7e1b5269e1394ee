package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/cluster-backup/cluster-backup/encrypt"
	"github.com/cluster-backup/cluster-backup/restore"
)

// TestRestoreStaysInItsSelection: a restore with -l into an emptied
// namespace creates the Namespace though its labels do not match; a
// pruning restore with -l deletes only what the selector takes and what
// the service's rules would have stored, and says why.
func TestRestoreStaysInItsSelection(t *testing.T) {
	requireServers(t)
	ns, cluster := "e2e-selection", "selection"
	createNamespace(t, ns)
	for _, app := range []string{"web", "api"} {
		labels := map[string]string{"app": app}
		one := int32(1)
		if _, err := e2e.cs.AppsV1().Deployments(ns).Create(bg, &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: app, Labels: labels},
			Spec: appsv1.DeploymentSpec{Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: app, Image: app + ":1"}}}}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		createConfigMap(t, ns, app+"-settings", map[string]string{"v": "1"}, labels, nil)
	}
	backUp(t, cluster, ns)
	deleteNamespace(t, ns)

	rep := restoreReport(t, cluster, 0, "-n", ns, "-l", "app=web")
	if rep.Counts[restore.Failed] != 0 {
		t.Fatalf("restore -l app=web into an emptied namespace: %v", rep.Counts)
	}
	if _, err := e2e.cs.AppsV1().Deployments(ns).Get(bg, "web", metav1.GetOptions{}); err != nil {
		t.Errorf("the selected Deployment: %v", err)
	}
	if _, err := e2e.cs.AppsV1().Deployments(ns).Get(bg, "api", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("a Deployment outside -l was restored: %v", err)
	}

	// Everything back, then objects the backup does not hold.
	restoreReport(t, cluster, 0, "-n", ns)
	createConfigMap(t, ns, "extra-web", map[string]string{"v": "1"}, map[string]string{"app": "web"}, nil)
	createConfigMap(t, ns, "extra-api", map[string]string{"v": "1"}, map[string]string{"app": "api"}, nil)
	createConfigMap(t, ns, "huge-web", map[string]string{"v": strings.Repeat("x", 4096)}, map[string]string{"app": "web"}, nil)
	// The rules the service runs with: a document over 2 KiB is not
	// stored, so the backup not holding huge-web says nothing about it.
	rules := t.TempDir()
	if err := os.WriteFile(filepath.Join(rules, "max-resource-size"), []byte("2Ki"), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "report.json")
	_, stderr, code := cliWith(t, e2e.minio, map[string]string{"CLUSTER_NAME": cluster, "BACKUP_CONFIG_DIR": rules},
		"restore", "-n", ns, "-l", "app=web", "--prune", "--yes", "--report", path)
	if code != 0 {
		t.Fatalf("restore -l app=web --prune: exit %d\n%s", code, stderr)
	}
	rep = readReport(t, path)
	var pruned []string
	for _, r := range rep.Objects {
		if r.Outcome == restore.Pruned {
			pruned = append(pruned, r.Resource+"/"+r.Name)
			if !strings.Contains(r.Reason, "-l app=web") || !strings.Contains(r.Reason, "rules would have stored it") {
				t.Errorf("%s/%s pruned with reason %q, which does not say why it was eligible", r.Resource, r.Name, r.Reason)
			}
		}
	}
	if !slices.Equal(pruned, []string{"configmaps/extra-web"}) {
		t.Errorf("pruned %v, want configmaps/extra-web alone", pruned)
	}
	for _, name := range []string{"extra-api", "huge-web", "api-settings"} {
		if _, err := e2e.cs.CoreV1().ConfigMaps(ns).Get(bg, name, metav1.GetOptions{}); err != nil {
			t.Errorf("ConfigMap %s, outside the selection or the service's rules, is gone: %v", name, err)
		}
	}
	if _, err := e2e.cs.AppsV1().Deployments(ns).Get(bg, "api", metav1.GetOptions{}); err != nil {
		t.Errorf("Deployment api, outside -l, is gone: %v", err)
	}
}

// TestReplaceOverABoundVolume: restore --existing replace over a volume
// bound to a claim keeps the binding (its claimRef with the claim's uid),
// so the claim stays Bound instead of going Lost.
func TestReplaceOverABoundVolume(t *testing.T) {
	requireServers(t)
	ns, cluster := "e2e-bound", "bound-volume"
	createNamespace(t, ns)
	immediate := storagev1.VolumeBindingImmediate
	if _, err := e2e.cs.StorageV1().StorageClasses().Create(bg, &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-bound"}, Provisioner: "kubernetes.io/no-provisioner", VolumeBindingMode: &immediate,
	}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if _, err := e2e.cs.CoreV1().PersistentVolumes().Create(bg, &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-bound-pv"},
		Spec: corev1.PersistentVolumeSpec{
			Capacity: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}, AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: "e2e-bound", PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/lib/e2e-bound"}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // later tests back the whole cluster up
		_ = e2e.cs.CoreV1().Namespaces().Delete(bg, ns, metav1.DeleteOptions{})
		_ = e2e.cs.CoreV1().PersistentVolumes().Delete(bg, "e2e-bound-pv", metav1.DeleteOptions{})
	})
	class := "e2e-bound"
	if _, err := e2e.cs.CoreV1().PersistentVolumeClaims(ns).Create(bg, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "data"},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, StorageClassName: &class,
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the claim bound", func() bool {
		pvc, err := e2e.cs.CoreV1().PersistentVolumeClaims(ns).Get(bg, "data", metav1.GetOptions{})
		return err == nil && pvc.Status.Phase == corev1.ClaimBound
	})
	backUp(t, cluster, ns)
	// An edit a replace takes back.
	if _, err := e2e.cs.CoreV1().PersistentVolumes().Patch(bg, "e2e-bound-pv", types.MergePatchType, []byte(`{"metadata":{"labels":{"edited":"yes"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	rep := restoreReport(t, cluster, 0, "-A", "--include-resources", "persistentvolumes", "--existing", "replace")
	if rep.Counts[restore.Configured] != 1 {
		t.Fatalf("replace over the edited volume: %v", rep.Counts)
	}
	pv, err := e2e.cs.CoreV1().PersistentVolumes().Get(bg, "e2e-bound-pv", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pvc, err := e2e.cs.CoreV1().PersistentVolumeClaims(ns).Get(bg, "data", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pv.Labels["edited"] != "" {
		t.Error("the replace did not take the edit back")
	}
	if pv.Spec.ClaimRef == nil || pv.Spec.ClaimRef.UID != pvc.UID {
		t.Fatalf("the volume's claimRef after the replace: %+v, want the bound claim's uid %s", pv.Spec.ClaimRef, pvc.UID)
	}
	// The volume controller syncs the volume it was told of: its claim
	// stays bound.
	eventually(t, 30*time.Second, "the volume controller to see the replaced volume", func() bool {
		ev, err := e2e.cs.CoreV1().PersistentVolumes().Get(bg, "e2e-bound-pv", metav1.GetOptions{})
		return err == nil && ev.Status.Phase == corev1.VolumeBound
	})
	if pvc, err := e2e.cs.CoreV1().PersistentVolumeClaims(ns).Get(bg, "data", metav1.GetOptions{}); err != nil || pvc.Status.Phase != corev1.ClaimBound {
		t.Errorf("the claim after a replace of its volume: %v %v", pvc.Status.Phase, err)
	}
}

// TestRestoreBelievesOnlyWhatTheServiceWrote forges, as anyone who can
// write the bucket could, a ClusterRoleBinding of cluster-admin stored at
// a ConfigMap's key, a ConfigMap holding a Secret's ciphertext and a Secret
// holding another Secret's, each with a matching sha256: the restore
// refuses all three by name and exits 3, and restores the rest; show and
// history refuse the forged document too.
func TestRestoreBelievesOnlyWhatTheServiceWrote(t *testing.T) {
	requireServers(t)
	ns, cluster := "e2e-forged", "forged"
	createNamespace(t, ns)
	createConfigMap(t, ns, "settings", map[string]string{"mode": "fast"}, nil, nil)
	if _, err := e2e.cs.CoreV1().Secrets(ns).Create(bg, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "db"}, StringData: map[string]string{"password": "correct horse battery staple"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	id, keyFile := ageKey(t)
	s := startService(t, cluster, serviceOptions{
		env:       map[string]string{"SECRET_ENCRYPTION": id.Recipient().String(), "SECRET_HMAC_KEY": "hmac-key-forged-0123456789"},
		configMap: map[string]string{"include-namespaces": ns},
	})
	s.waitPass(1)
	eventually(t, 30*time.Second, "an empty queue", func() bool { return s.metric("cluster_backup_queue_depth", nil) == 0 })
	s.stop()
	sealed := mcCat(t, s.key(ns, "secrets", "db"))
	if !strings.Contains(sealed, encrypt.Annotation) {
		t.Fatalf("the Secret is not stored encrypted:\n%s", sealed)
	}
	forge := func(key, body string) {
		t.Helper()
		forgeVersion(t, key, body, nil)
	}
	forge(s.key(ns, "configmaps", "settings"), "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: e2e-forged-admin\n"+
		"roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: cluster-admin\nsubjects:\n- apiGroup: rbac.authorization.k8s.io\n  kind: Group\n  name: system:authenticated\n")
	loot := strings.Replace(strings.Replace(sealed, "kind: Secret", "kind: ConfigMap", 1), "name: db", "name: loot", 1)
	forge(s.key(ns, "configmaps", "loot"), loot)
	forge(s.key(ns, "secrets", "stolen"), strings.Replace(sealed, "name: db", "name: stolen", 1))

	// Browsing believes no more than restore does.
	if out, stderr, code := cli(t, cluster, "show", "configmaps/settings", "-n", ns); code != exitFailed || !strings.Contains(stderr, "ClusterRoleBinding") || strings.Contains(out, "cluster-admin") {
		t.Errorf("show of the forged document: exit %d\n%s%s", code, out, stderr)
	}
	if out, _, _ := cli(t, cluster, "history", "configmaps/settings", "-n", ns, "-p"); !strings.Contains(out, "refused") || strings.Contains(out, "cluster-admin") {
		t.Errorf("history -p of the forged document:\n%s", out)
	}
	deleteNamespace(t, ns)
	path := filepath.Join(t.TempDir(), "report.json")
	_, stderr, code := cli(t, cluster, "restore", "-n", ns, "--identity", keyFile, "--report", path)
	if code != exitPartial {
		t.Fatalf("restore over forged documents: exit %d, want %d\n%s", code, exitPartial, stderr)
	}
	rep := readReport(t, path)
	for _, want := range []struct{ resource, name, reason string }{
		{"configmaps", "settings", "ClusterRoleBinding"},
		{"configmaps", "loot", "only Secrets"},
		{"secrets", "stolen", "another object"},
	} {
		if !slices.ContainsFunc(rep.Objects, func(r restore.Result) bool {
			return r.Resource == want.resource && r.Name == want.name && r.Outcome == restore.Failed && strings.Contains(r.Reason, want.reason)
		}) {
			t.Errorf("%s/%s: not refused (%q); report %+v", want.resource, want.name, want.reason, rep.Objects)
		}
	}
	if _, err := e2e.cs.RbacV1().ClusterRoleBindings().Get(bg, "e2e-forged-admin", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the forged ClusterRoleBinding was created: %v", err)
	}
	for _, name := range []string{"loot", "settings"} {
		if _, err := e2e.cs.CoreV1().ConfigMaps(ns).Get(bg, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("ConfigMap %s was created from a forged document: %v", name, err)
		}
	}
	if _, err := e2e.cs.CoreV1().Secrets(ns).Get(bg, "stolen", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the Secret holding a copied ciphertext was created: %v", err)
	}
	if sec, err := e2e.cs.CoreV1().Secrets(ns).Get(bg, "db", metav1.GetOptions{}); err != nil || string(sec.Data["password"]) != "correct horse battery staple" {
		t.Errorf("the genuine Secret was not restored: %v", err)
	}
}

// TestPointInTimeOnAStoreOfOneVersion restores --at T from the directory
// store, which keeps one version per key: an object modified after T is
// unknown (neither restored nor pruned, exit 3, with a warning), one
// created after T did not exist then (pruned), one unchanged since is
// known.
func TestPointInTimeOnAStoreOfOneVersion(t *testing.T) {
	requireServers(t)
	ns, cluster := "e2e-one-version", "one-version"
	createNamespace(t, ns)
	createConfigMap(t, ns, "kept", map[string]string{"v": "1"}, nil, nil)
	createConfigMap(t, ns, "edited", map[string]string{"v": "1"}, nil, nil)
	env := map[string]string{"MINIO_ENDPOINT": "", "BACKUP_DIR": t.TempDir(), "REQUIRE_VERSIONING": "false"}
	s := startService(t, cluster, serviceOptions{env: env, configMap: map[string]string{"include-namespaces": ns}})
	s.waitPass(1)
	// T on a whole second, as --at takes it; what changes after T changes
	// a second later, so that creation times (whole seconds) tell.
	at := time.Now().Truncate(time.Second).Add(time.Second)
	eventually(t, 5*time.Second, "the clock a second past T", func() bool { return time.Now().After(at.Add(time.Second)) })
	if _, err := e2e.cs.CoreV1().ConfigMaps(ns).Patch(bg, "edited", types.MergePatchType, []byte(`{"data":{"v":"2"}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	createConfigMap(t, ns, "created", map[string]string{"v": "1"}, nil, nil)
	dir := env["BACKUP_DIR"]
	eventually(t, 30*time.Second, "both changes in the directory", func() bool {
		b, err := os.ReadFile(filepath.Join(dir, "clusterbackup", cluster, ns, "configmaps", "edited.yaml"))
		_, err2 := os.Stat(filepath.Join(dir, "clusterbackup", cluster, ns, "configmaps", "created.yaml"))
		return err == nil && strings.Contains(string(b), "v: \"2\"") && err2 == nil
	})
	s.stop()

	path := filepath.Join(t.TempDir(), "report.json")
	_, stderr, code := cliWith(t, e2e.minio, map[string]string{"CLUSTER_NAME": cluster, "MINIO_ENDPOINT": "", "BACKUP_DIR": dir},
		"restore", "-n", ns, "--at", at.UTC().Format(time.RFC3339), "--prune", "--yes", "--report", path)
	if code != exitPartial || !strings.Contains(stderr, "cannot say what 1 objects were at") {
		t.Fatalf("restore --at on one version per key: exit %d, want %d and a warning\n%s", code, exitPartial, stderr)
	}
	outcomes := map[string]string{}
	for _, r := range readReport(t, path).Objects {
		if r.Resource == "configmaps" {
			outcomes[r.Name] = r.Outcome
		}
	}
	if outcomes["edited"] != restore.Unknown || outcomes["created"] != restore.Pruned || outcomes["kept"] != restore.Unchanged {
		t.Errorf("outcomes %v, want edited unknown, created pruned, kept unchanged", outcomes)
	}
	cm, err := e2e.cs.CoreV1().ConfigMaps(ns).Get(bg, "edited", metav1.GetOptions{})
	if err != nil || cm.Data["v"] != "2" {
		t.Errorf("the object the store cannot answer for was touched: %v %v", cm.Data, err)
	}
}
