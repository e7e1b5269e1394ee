package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cluster-backup/cluster-backup/restore"
)

// modifierRules are Velero's documented examples, as a Velero user
// brings them: change a storage class, rewrite an image registry, scale
// to zero, drop an annotation.
const modifierRules = `version: v1
resourceModifierRules:
- conditions:
    groupResource: persistentvolumeclaims
    resourceNameRegex: "^mysql.*$"
    matches:
    - path: /spec/storageClassName
      value: standard
  patches:
  - operation: replace
    path: /spec/storageClassName
    value: premium
- conditions:
    groupResource: deployments.apps
    labelSelector:
      matchLabels:
        app: web
  strategicPatches:
  - patchData: |
      spec:
        template:
          spec:
            containers:
            - name: nginx
              image: registry.internal/library/nginx:1.25
- conditions:
    groupResource: "*.apps"
    namespaces: [e2e-modifiers]
  patches:
  - operation: replace
    path: /spec/replicas
    value: "0"
- conditions:
    groupResource: configmaps
    resourceNameRegex: ^settings$
  mergePatches:
  - patchData: '{"metadata": {"annotations": {"note": null}}}'
`

// brokenRule cannot apply to the ConfigMap "broken": its path is missing.
const brokenRule = `- conditions:
    groupResource: configmaps
    resourceNameRegex: ^broken$
  patches:
  - operation: replace
    path: /data/missing/deeper
    value: x
`

// TestRestoreWithResourceModifiers restores a namespace through Velero's
// resource modifiers unchanged: every rule lands on the real API server, a
// rule that cannot apply fails its one object (reported, exit 3) and no
// other, and diff with the same file sees the live namespace equal to the
// modified backup.
func TestRestoreWithResourceModifiers(t *testing.T) {
	requireServers(t)
	ns, cluster := "e2e-modifiers", "modifiers"
	createNamespace(t, ns)
	createConfigMap(t, ns, "settings", map[string]string{"k": "v"}, nil, map[string]string{"note": "old", "keep": "kept"})
	createConfigMap(t, ns, "broken", map[string]string{"k": "v"}, nil, nil)
	standard := "standard"
	if _, err := e2e.cs.CoreV1().PersistentVolumeClaims(ns).Create(bg, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "mysql-data"},
		Spec: corev1.PersistentVolumeClaimSpec{StorageClassName: &standard, AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	replicas := int32(3)
	labels := map[string]string{"app": "web"}
	if _, err := e2e.cs.AppsV1().Deployments(ns).Create(bg, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: labels},
		Spec: appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: []corev1.Container{
				{Name: "nginx", Image: "docker.io/library/nginx:1.25"}, {Name: "sidecar", Image: "docker.io/library/busybox:1.36"},
			}}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	backUp(t, cluster, ns)
	deleteNamespace(t, ns)

	dir := t.TempDir()
	good, withBroken := filepath.Join(dir, "modifiers.yaml"), filepath.Join(dir, "with-broken.yaml")
	if err := os.WriteFile(good, []byte(modifierRules), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(withBroken, []byte(modifierRules+brokenRule), 0o600); err != nil {
		t.Fatal(err)
	}
	rep := restoreReport(t, cluster, exitPartial, "-n", ns, "--resource-modifiers", withBroken)
	var failed []string
	for _, r := range rep.Objects {
		if r.Outcome == restore.Failed {
			failed = append(failed, r.Resource+"/"+r.Name+": "+r.Reason)
		}
	}
	if len(failed) != 1 || !strings.HasPrefix(failed[0], "configmaps/broken: resource modifier rule 4") {
		t.Errorf("failed objects %q, want only configmaps/broken, by its rule", failed)
	}

	d, err := e2e.cs.AppsV1().Deployments(ns).Get(bg, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *d.Spec.Replicas != 0 {
		t.Errorf("replicas %d, want 0", *d.Spec.Replicas)
	}
	if cs := d.Spec.Template.Spec.Containers; len(cs) != 2 || cs[0].Image != "registry.internal/library/nginx:1.25" || cs[1].Image != "docker.io/library/busybox:1.36" {
		t.Errorf("containers %+v: want nginx from the internal registry and the sidecar as it was", cs)
	}
	pvc, err := e2e.cs.CoreV1().PersistentVolumeClaims(ns).Get(bg, "mysql-data", metav1.GetOptions{})
	if err != nil || pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != "premium" {
		t.Errorf("PVC class %v (%v), want premium", pvc.Spec.StorageClassName, err)
	}
	cm, err := e2e.cs.CoreV1().ConfigMaps(ns).Get(bg, "settings", metav1.GetOptions{})
	if err != nil || cm.Annotations["note"] != "" || cm.Annotations["keep"] != "kept" {
		t.Errorf("settings annotations %v (%v), want note dropped and keep kept", cm.Annotations, err)
	}
	if _, err := e2e.cs.CoreV1().ConfigMaps(ns).Get(bg, "broken", metav1.GetOptions{}); err == nil {
		t.Error("the object whose rule failed was restored")
	}

	// diff with the same rules sees what the modified restore did; without
	// them it sees the rules' changes.
	createConfigMap(t, ns, "broken", map[string]string{"k": "v"}, nil, nil)
	if out, stderr, code := cli(t, cluster, "diff", "-n", ns, "--resource-modifiers", good); code != 0 {
		t.Errorf("diff with the rules: exit %d\n%s%s", code, out, lastLines(stderr, 10))
	}
	out, _, code := cli(t, cluster, "diff", "-n", ns)
	if code == 0 || !strings.Contains(out, "web") || !strings.Contains(out, "mysql-data") || !strings.Contains(out, "settings") {
		t.Errorf("diff without the rules: exit %d, want web, mysql-data and settings to differ\n%s", code, out)
	}
}
