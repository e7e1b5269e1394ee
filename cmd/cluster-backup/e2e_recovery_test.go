package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"

	"github.com/minio/minio-go/v7"

	"github.com/cluster-backup/cluster-backup/restore"
	"github.com/cluster-backup/cluster-backup/testenv"
)

// TestDisasterRecoveryIntoANewControlPlane backs up a whole cluster that
// runs a multi-part application, throws the cluster away and restores it
// with restore -A into a new control plane (new etcd, new PKI): exit 0,
// the application back spec-equal (diff -A exits 0), owner references
// kept across waves, the new control plane's own objects untouched, a
// second run writes nothing; then the new cluster adopts the prefix and a
// service pass converges.
func TestDisasterRecoveryIntoANewControlPlane(t *testing.T) {
	requireServers(t)
	const cluster, ns = "recovery", "shop"
	old := privateCluster(t, testenv.KubeOptions{ControllerManager: true})
	installShop(t, old, ns)

	s := startService(t, cluster, serviceOptions{env: map[string]string{"KUBECONFIG": old.kube.Kubeconfig}})
	s.waitPass(1)
	eventually(t, 30*time.Second, "an empty queue", func() bool { return s.metric("cluster_backup_queue_depth", nil) == 0 })
	for _, key := range []string{s.key(ns, "persistentvolumeclaims", "data-db-0"), s.key(ns, "bigs.example.io", "big-0"), s.key("", "apiservices.apiregistration.k8s.io", "v1alpha1.metrics.example.io")} {
		if s.body(key) == "" {
			t.Fatalf("%s was not backed up", key)
		}
	}
	s.stop()

	// The old cluster is gone; a new control plane takes its place.
	old.kube.Stop()
	fresh := privateCluster(t)
	before := resourceVersions(t, fresh)

	restoreOn := func(wantCode int, args ...string) report {
		t.Helper()
		path := filepath.Join(t.TempDir(), "report.json")
		_, stderr, code := cliOn(t, fresh.kube.Kubeconfig, cluster, append([]string{"restore", "-A", "--report", path}, args...)...)
		if code != wantCode {
			t.Fatalf("restore -A: exit %d, want %d\n%s\n%s", code, wantCode, failedLines(stderr), lastLines(stderr, 20))
		}
		return readReport(t, path)
	}
	start := time.Now()
	rep := restoreOn(0)
	t.Logf("restore -A into a new control plane: %v in %s", rep.Counts, time.Since(start).Round(time.Millisecond))

	// What the old control plane made for itself is skipped, with reasons.
	for _, want := range []struct{ resource, namespace, name, reason string }{
		{"configmaps", "kube-system", "extension-apiserver-authentication", "aggregation layer"},
		{"configmaps", ns, "kube-root-ca.crt", "publishes its own"},
		{"services", "default", "kubernetes", "API server's own"},
		{"ipaddresses.networking.k8s.io", "", "", "Service IP allocation"},
		{"flowschemas.flowcontrol.apiserver.k8s.io", "", "exempt", "bootstrap configuration"},
		{"clusterroles.rbac.authorization.k8s.io", "", "cluster-admin", "reconciles at each start"},
		{"priorityclasses.scheduling.k8s.io", "", "system-node-critical", "refuses changes"},
	} {
		if !slices.ContainsFunc(rep.Objects, func(r restore.Result) bool {
			return r.Resource == want.resource && r.Namespace == want.namespace && (want.name == "" || r.Name == want.name) &&
				r.Outcome == restore.Skipped && strings.Contains(r.Reason, want.reason)
		}) {
			t.Errorf("%s %s/%s: not skipped as the control plane's own (%q)", want.resource, want.namespace, want.name, want.reason)
		}
	}
	after := resourceVersions(t, fresh)
	for k, rv := range before {
		if after[k] != rv {
			t.Errorf("the new control plane's %s was changed by the restore (resourceVersion %s, now %q)", k, rv, after[k])
		}
	}

	// The application is back as it was.
	if _, stderr, code := cliOn(t, fresh.kube.Kubeconfig, cluster, "diff", "-A"); code != 0 {
		out, _, _ := cliOn(t, fresh.kube.Kubeconfig, cluster, "diff", "-A", "--details")
		t.Errorf("diff -A after the restore: exit %d\n%s\n%s", code, stderr, lastLines(out, 60))
	}
	web, err := fresh.cs.AppsV1().Deployments(ns).Get(bg, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	store, err := fresh.dyn.Resource(schema.GroupVersionResource{Group: "example.io", Version: "v1", Resource: "stores"}).Namespace(ns).Get(bg, "main", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for name, owner := range map[string]metav1.Object{"web-config": web, "store-config": store} {
		cm, err := fresh.cs.CoreV1().ConfigMaps(ns).Get(bg, name, metav1.GetOptions{})
		if err != nil {
			t.Errorf("ConfigMap %s, controlled by a %T, was not restored: %v", name, owner, err)
			continue
		}
		if refs := cm.OwnerReferences; len(refs) != 1 || refs[0].UID != owner.GetUID() {
			t.Errorf("ConfigMap %s: owner references %+v, want its owner's new UID %s", name, refs, owner.GetUID())
		}
	}
	claim, err := fresh.cs.CoreV1().PersistentVolumeClaims(ns).Get(bg, "data-db-0", metav1.GetOptions{})
	if err != nil || len(claim.OwnerReferences) != 1 || claim.OwnerReferences[0].Kind != "StatefulSet" {
		t.Errorf("the StatefulSet's claim (retention policy WhenDeleted: Delete): %v %v", claim.OwnerReferences, err)
	}
	pv, err := fresh.cs.CoreV1().PersistentVolumes().Get(bg, "pv-db-0", metav1.GetOptions{})
	if err != nil || pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimRetain {
		t.Errorf("the old cluster's volume in the new cluster: reclaim policy %v, want Retain (%v)", pv.Spec.PersistentVolumeReclaimPolicy, err)
	}
	big, err := fresh.dyn.Resource(widgetCRD).Get(bg, "bigs.example.io", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := big.MarshalJSON(); len(b) < 256<<10 {
		t.Errorf("the large CRD came back with %d bytes", len(b))
	}

	// A second run writes nothing.
	again := restoreOn(0)
	if again.Counts[restore.Created]+again.Counts[restore.Configured] != 0 {
		var written []string
		for _, r := range again.Objects {
			if r.Outcome == restore.Created || r.Outcome == restore.Configured {
				written = append(written, r.Outcome+" "+r.Resource+"/"+r.Namespace+"/"+r.Name)
			}
		}
		t.Errorf("a second restore -A wrote %v", written)
	}

	// The new cluster's service is held off the old cluster's prefix
	// until the cluster adopts it; then a pass converges.
	env := map[string]string{"KUBECONFIG": fresh.kube.Kubeconfig}
	stored := s.stored()
	held := startService(t, cluster, serviceOptions{env: env, args: []string{"snapshot"}})
	if code := held.waitExit(2*time.Minute, "snapshot before adopt"); code == 0 {
		t.Error("a one-shot pass held off the old cluster's prefix exited 0")
	}
	if after := held.stored(); !sameVersions(stored, after) {
		t.Errorf("a pass held off the old cluster's prefix changed the store: %d keys before, %d after", len(stored), len(after))
	}
	out, stderr, code := cliOn(t, fresh.kube.Kubeconfig, cluster, "adopt", "--yes")
	if code != 0 || !strings.Contains(out, "now owns") {
		t.Fatalf("adopt: exit %d\n%s%s", code, out, stderr)
	}
	cm := map[string]string{"max-prune-fraction": "1"}
	first := startService(t, cluster, serviceOptions{env: env, configMap: cm, args: []string{"snapshot"}})
	first.waitExit(2*time.Minute, "snapshot after adopt")
	d := passData(t, first)
	if d["deleted"] == 0.0 {
		t.Errorf("after adopt, the pass deleted none of the old cluster's keys of objects the new cluster lacks: %v", d)
	}
	if first.body(first.key(ns, "pods", "db-0")) != "" {
		t.Error("the old cluster's Pod is still in the backup after adopt and a pass")
	}
	second := startService(t, cluster, serviceOptions{env: env, configMap: cm, args: []string{"snapshot"}})
	second.waitExit(2*time.Minute, "second snapshot after adopt")
	if d := passData(t, second); d["deleted"] != 0.0 || d["backed_up"] != 0.0 {
		t.Errorf("a second pass after adopt is not a no-op: %v", d)
	}
}

// sameVersions reports whether two listings hold the same keys at the
// same contents.
func sameVersions(a, b map[string]minio.ObjectInfo) bool {
	if len(a) != len(b) {
		return false
	}
	for k, o := range a {
		if p, ok := b[k]; !ok || p.ETag != o.ETag {
			return false
		}
	}
	return true
}

// passData is the data of the last backup_complete line of s.
func passData(t *testing.T, s *process) map[string]any {
	t.Helper()
	lines := s.logs("backup_complete")
	if len(lines) == 0 {
		s.dumpLogs(30)
		t.Fatal("no backup_complete line")
	}
	d, _ := lines[len(lines)-1]["data"].(map[string]any)
	return d
}

func readReport(t *testing.T, path string) report {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rep report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	return rep
}

// resourceVersions lists every object of every listable type of c, but
// Leases and Events (heartbeats), by type, namespace and name.
func resourceVersions(t *testing.T, c *cluster) map[string]string {
	t.Helper()
	lists, err := discovery.NewDiscoveryClientForConfigOrDie(c.kube.Config).ServerPreferredResources()
	if err != nil && !discovery.IsGroupDiscoveryFailedError(err) { // the APIService without a backend
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, list := range lists {
		gv, _ := schema.ParseGroupVersion(list.GroupVersion)
		for _, r := range list.APIResources {
			if strings.Contains(r.Name, "/") || !slices.Contains(r.Verbs, "list") || r.Name == "leases" || r.Name == "events" {
				continue
			}
			items, err := c.dyn.Resource(gv.WithResource(r.Name)).List(bg, metav1.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range items.Items {
				out[r.Name+"."+gv.Group+"/"+o.GetNamespace()+"/"+o.GetName()] = o.GetResourceVersion()
			}
		}
	}
	return out
}

// installShop installs, in c, an application of many parts: a CRD whose
// schema is over 256 KiB and its resources, a custom resource that owns a
// ConfigMap, a Deployment that owns another, a Service, a Secret, RBAC with
// service-account, group and user subjects, a NetworkPolicy, a PDB, a
// StatefulSet whose claim (retention policy WhenDeleted: Delete) is bound
// to a volume, an APIService whose backend does not exist and, last, an
// admission webhook that nothing serves, guarding the namespace's
// ConfigMaps.
func installShop(t *testing.T, c *cluster, ns string) {
	t.Helper()
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.cs.CoreV1().Namespaces().Create(bg, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"team": "shop"}}}, metav1.CreateOptions{}))

	// A CRD with a large schema, and a small one whose resource owns a
	// ConfigMap.
	props := map[string]any{}
	for i := range 2500 {
		props[fmt.Sprintf("field%04d", i)] = map[string]any{"type": "string", "description": strings.Repeat("a documented field of a large schema, ", 3)}
	}
	bigCRD := crd("example.io", "bigs", "Big")
	versions := bigCRD.Object["spec"].(map[string]any)["versions"].([]any)
	versions[0].(map[string]any)["schema"] = map[string]any{"openAPIV3Schema": map[string]any{"type": "object", "properties": map[string]any{
		"spec": map[string]any{"type": "object", "properties": props},
	}}}
	for _, def := range []*unstructured.Unstructured{bigCRD, crd("example.io", "stores", "Store")} {
		must(c.dyn.Resource(widgetCRD).Create(bg, def, metav1.CreateOptions{}))
	}
	bigs := schema.GroupVersionResource{Group: "example.io", Version: "v1", Resource: "bigs"}
	stores := schema.GroupVersionResource{Group: "example.io", Version: "v1", Resource: "stores"}
	eventually(t, 30*time.Second, "the CRDs established", func() bool {
		_, err1 := c.dyn.Resource(bigs).Namespace(ns).List(bg, metav1.ListOptions{})
		_, err2 := c.dyn.Resource(stores).Namespace(ns).List(bg, metav1.ListOptions{})
		return err1 == nil && err2 == nil
	})
	for i := range 3 {
		must(c.dyn.Resource(bigs).Namespace(ns).Create(bg, &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "example.io/v1", "kind": "Big", "metadata": map[string]any{"name": fmt.Sprintf("big-%d", i)},
			"spec": map[string]any{"field0001": "one", "field2000": "two"},
		}}, metav1.CreateOptions{}))
	}
	store, err := c.dyn.Resource(stores).Namespace(ns).Create(bg, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "example.io/v1", "kind": "Store", "metadata": map[string]any{"name": "main"}, "spec": map[string]any{"size": int64(2)},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	yes := true
	must(c.cs.CoreV1().ConfigMaps(ns).Create(bg, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "store-config", OwnerReferences: []metav1.OwnerReference{{APIVersion: "example.io/v1", Kind: "Store", Name: "main", UID: store.GetUID(), Controller: &yes}}},
		Data:       map[string]string{"mode": "fast"},
	}, metav1.CreateOptions{}))

	// A web front end.
	labels := map[string]string{"app": "web"}
	one := int32(1)
	web, err := c.cs.AppsV1().Deployments(ns).Create(bg, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
				ServiceAccountName: "robot", Containers: []corev1.Container{{Name: "web", Image: "nginx:1.27"}}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	must(c.cs.CoreV1().ConfigMaps(ns).Create(bg, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "web-config", Labels: labels, OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "web", UID: web.UID, Controller: &yes}}},
		Data:       map[string]string{"greeting": "hello"},
	}, metav1.CreateOptions{}))
	must(c.cs.CoreV1().Services(ns).Create(bg, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec:       corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{}))
	must(c.cs.CoreV1().Secrets(ns).Create(bg, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "creds"}, StringData: map[string]string{"password": "s3cr3t"}}, metav1.CreateOptions{}))
	must(c.cs.PolicyV1().PodDisruptionBudgets(ns).Create(bg, &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec:       policyv1.PodDisruptionBudgetSpec{MinAvailable: &intstr.IntOrString{IntVal: 1}, Selector: &metav1.LabelSelector{MatchLabels: labels}},
	}, metav1.CreateOptions{}))

	// RBAC with every kind of subject that names a namespace.
	must(c.cs.CoreV1().ServiceAccounts(ns).Create(bg, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "robot"}}, metav1.CreateOptions{}))
	must(c.cs.RbacV1().Roles(ns).Create(bg, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "reader"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list"}}},
	}, metav1.CreateOptions{}))
	must(c.cs.RbacV1().RoleBindings(ns).Create(bg, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "readers"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "reader"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "robot", Namespace: ns},
			{Kind: "Group", APIGroup: "rbac.authorization.k8s.io", Name: "system:serviceaccounts:" + ns}},
	}, metav1.CreateOptions{}))
	must(c.cs.RbacV1().ClusterRoles().Create(bg, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "shop-reader"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{"example.io"}, Resources: []string{"stores"}, Verbs: []string{"get"}}},
	}, metav1.CreateOptions{}))
	must(c.cs.RbacV1().ClusterRoleBindings().Create(bg, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "shop-readers"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "shop-reader"},
		Subjects:   []rbacv1.Subject{{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: "system:serviceaccount:" + ns + ":robot"}},
	}, metav1.CreateOptions{}))
	must(c.cs.NetworkingV1().NetworkPolicies(ns).Create(bg, &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "from-shop"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: labels}, Ingress: []networkingv1.NetworkPolicyIngressRule{{
			From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}}}},
		}}},
	}, metav1.CreateOptions{}))

	// A database: its claim, made by the StatefulSet controller, binds to
	// a volume whose reclaim policy is Delete.
	immediate := storagev1.VolumeBindingImmediate
	must(c.cs.StorageV1().StorageClasses().Create(bg, &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{Name: "manual"}, Provisioner: "kubernetes.io/no-provisioner", VolumeBindingMode: &immediate,
	}, metav1.CreateOptions{}))
	must(c.cs.CoreV1().PersistentVolumes().Create(bg, &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "pv-db-0"},
		Spec: corev1.PersistentVolumeSpec{
			Capacity: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}, AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: "manual", PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/lib/shop-db-0"}},
		},
	}, metav1.CreateOptions{}))
	dbLabels := map[string]string{"app": "db"}
	manual := "manual"
	must(c.cs.AppsV1().StatefulSets(ns).Create(bg, &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "db"},
		Spec: appsv1.StatefulSetSpec{Replicas: &one, ServiceName: "db", Selector: &metav1.LabelSelector{MatchLabels: dbLabels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: dbLabels}, Spec: corev1.PodSpec{Containers: []corev1.Container{{
				Name: "db", Image: "postgres:17", VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/var/lib/postgresql"}}}}}},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{ObjectMeta: metav1.ObjectMeta{Name: "data"}, Spec: corev1.PersistentVolumeClaimSpec{
				AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, StorageClassName: &manual,
				Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}},
			PersistentVolumeClaimRetentionPolicy: &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{
				WhenDeleted: appsv1.DeletePersistentVolumeClaimRetentionPolicyType, WhenScaled: appsv1.RetainPersistentVolumeClaimRetentionPolicyType},
		},
	}, metav1.CreateOptions{}))
	eventually(t, 90*time.Second, "the StatefulSet's claim bound, owned by the StatefulSet", func() bool {
		pvc, err := c.cs.CoreV1().PersistentVolumeClaims(ns).Get(bg, "data-db-0", metav1.GetOptions{})
		return err == nil && pvc.Status.Phase == corev1.ClaimBound && len(pvc.OwnerReferences) == 1
	})

	// An aggregated API whose backend does not exist.
	must(c.dyn.Resource(schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}).Create(bg, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
		"metadata": map[string]any{"name": "v1alpha1.metrics.example.io"},
		"spec": map[string]any{
			"group": "metrics.example.io", "version": "v1alpha1", "groupPriorityMinimum": int64(100), "versionPriority": int64(100),
			"insecureSkipTLSVerify": true, "service": map[string]any{"name": "metrics", "namespace": ns, "port": int64(443)},
		},
	}}, metav1.CreateOptions{}))

	// Last, a webhook nothing serves: every ConfigMap write in the
	// namespace fails from now on, in this cluster and in any cluster it
	// is restored into.
	createGuard(t, c.cs, ns, "shop-guard")
}

// createGuard installs a validating webhook that nothing serves, with
// failurePolicy Fail, over the ConfigMaps of namespace ns.
func createGuard(t *testing.T, cs kubernetes.Interface, ns, name string) {
	t.Helper()
	fail := admissionregistrationv1.Fail
	none := admissionregistrationv1.SideEffectClassNone
	path := "/validate"
	hook := &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name:         "guard.example.io",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{Namespace: ns, Name: "hook", Path: &path}},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"configmaps"}},
			}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}},
			FailurePolicy:           &fail,
			SideEffects:             &none,
			AdmissionReviewVersions: []string{"v1"},
		}},
	}
	if _, err := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(bg, hook, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}
