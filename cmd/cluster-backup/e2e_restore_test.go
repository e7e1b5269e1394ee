package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cluster-backup/cluster-backup/restore"
	"github.com/cluster-backup/cluster-backup/testenv"
)

// cli runs one command of the binary against the shared servers, as the
// backup of cluster.
func cli(t *testing.T, cluster string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return cliOn(t, e2e.kube.Kubeconfig, cluster, args...)
}

// cliOn runs one command against the cluster of kubeconfig.
func cliOn(t *testing.T, kubeconfig, cluster string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return cliWith(t, e2e.minio, map[string]string{"KUBECONFIG": kubeconfig, "CLUSTER_NAME": cluster}, args...)
}

// cliWith runs one command against the store srv, with env added to the
// defaults. Neither output may show the store's credentials.
func cliWith(t *testing.T, srv *testenv.MinIO, env map[string]string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return cliIn(t, cliVars(t, srv, env), []string{srv.AccessKey, srv.SecretKey}, args...)
}

// cliVars is the environment of one command against the store srv: the
// store, the shared cluster, a HOME of its own, and env on top.
func cliVars(t *testing.T, srv *testenv.MinIO, env map[string]string) map[string]string {
	vars := storeEnv(srv)
	vars["HOME"] = t.TempDir()
	maps.Copy(vars, env)
	return vars
}

// environ is vars as exec.Cmd.Env.
func environ(vars map[string]string) []string {
	out := make([]string, 0, len(vars))
	for k, v := range vars {
		out = append(out, k+"="+v)
	}
	return out
}

// cliIn runs one command with exactly the environment vars; neither
// output may show any of secrets.
func cliIn(t *testing.T, vars map[string]string, secrets []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(e2e.bin, args...)
	cmd.Env = environ(vars)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	for _, secret := range secrets {
		if strings.Contains(out.String()+errOut.String(), secret) {
			t.Errorf("%v: the output shows a credential", args)
		}
	}
	return out.String(), errOut.String(), code
}

// restoreReport runs restore with --report and returns the report.
func restoreReport(t *testing.T, cluster string, wantCode int, args ...string) report {
	t.Helper()
	path := filepath.Join(t.TempDir(), "report.json")
	_, stderr, code := cli(t, cluster, append([]string{"restore", "--report", path}, args...)...)
	if code != wantCode {
		t.Fatalf("restore %v: exit %d, want %d\n%s", args, code, wantCode, stderr)
	}
	return readReport(t, path)
}

// seedApp creates one namespace of everything a restore must bring back.
func seedApp(t *testing.T, ns string) {
	t.Helper()
	createNamespace(t, ns)
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	cs := e2e.cs
	labels := map[string]string{"app": "web"}
	one := int32(1)
	podSpec := corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx:1.27"}}}
	must(cs.AppsV1().Deployments(ns).Create(bg, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: podSpec}},
	}, metav1.CreateOptions{}))
	must(cs.CoreV1().Services(ns).Create(bg, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec:       corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{}))
	must(cs.CoreV1().Services(ns).Create(bg, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web-nodeport"},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: labels, Ports: []corev1.ServicePort{{Port: 80}}},
	}, metav1.CreateOptions{}))
	createConfigMap(t, ns, "settings", map[string]string{"mode": "fast", "debug": "yes", "legacy": "on", "empty": ""}, nil, nil)
	must(cs.CoreV1().Secrets(ns).Create(bg, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "creds"},
		StringData: map[string]string{"password": "s3cr3t", "flag": "yes", "blank": ""},
	}, metav1.CreateOptions{}))
	must(cs.CoreV1().ServiceAccounts(ns).Create(bg, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "robot"}}, metav1.CreateOptions{}))
	must(cs.RbacV1().Roles(ns).Create(bg, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "reader"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get"}}},
	}, metav1.CreateOptions{}))
	must(cs.RbacV1().RoleBindings(ns).Create(bg, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "robot-reads"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "reader"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "robot", Namespace: ns}},
	}, metav1.CreateOptions{}))
	must(cs.CoreV1().PersistentVolumeClaims(ns).Create(bg, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "data"},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}},
	}, metav1.CreateOptions{}))
	prefix := networkingv1.PathTypePrefix
	must(cs.NetworkingV1().Ingresses(ns).Create(bg, &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: networkingv1.IngressSpec{Rules: []networkingv1.IngressRule{{Host: "web.example.com", IngressRuleValue: networkingv1.IngressRuleValue{
			HTTP: &networkingv1.HTTPIngressRuleValue{Paths: []networkingv1.HTTPIngressPath{{Path: "/", PathType: &prefix,
				Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "web", Port: networkingv1.ServiceBackendPort{Number: 80}}}}}}}}}},
	}, metav1.CreateOptions{}))
	must(cs.AutoscalingV2().HorizontalPodAutoscalers(ns).Create(bg, &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{MaxReplicas: 3,
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "web"}},
	}, metav1.CreateOptions{}))
	must(cs.BatchV1().CronJobs(ns).Create(bg, &batchv1.CronJob{
		ObjectMeta: metav1.ObjectMeta{Name: "nightly"},
		Spec: batchv1.CronJobSpec{Schedule: "0 3 * * *", JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: podSpec.Containers}}}}},
	}, metav1.CreateOptions{}))
	gvr := installCRD(t, "restore.example.com", "widgets", "Widget")
	createCustom(t, gvr, "Widget", ns, "w1")
	createCustom(t, gvr, "Widget", ns, "w2")
}

// backUp runs the service until a pass has stored the namespace, then
// stops it.
func backUp(t *testing.T, cluster, ns string) {
	t.Helper()
	s := startService(t, cluster, serviceOptions{configMap: map[string]string{"include-namespaces": ns}})
	s.waitReady()
	s.waitPass(1)
	eventually(t, 30*time.Second, "an empty queue", func() bool { return s.metric("cluster_backup_queue_depth", nil) == 0 })
	s.stop()
}

func deleteNamespace(t *testing.T, ns string) {
	t.Helper()
	if err := e2e.cs.CoreV1().Namespaces().Delete(bg, ns, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, "namespace "+ns+" to be gone", func() bool {
		_, err := e2e.cs.CoreV1().Namespaces().Get(bg, ns, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
}

// TestNamespaceDisasterRestore backs up a namespace of every common kind,
// deletes it, and restores it: everything is back and equal to the backup
// (diff exits 0), a second restore writes nothing, an edit shows in diff,
// and a server dry run persists nothing.
func TestNamespaceDisasterRestore(t *testing.T) {
	requireServers(t)
	ns, cluster := "e2e-disaster", "disaster"
	seedApp(t, ns)
	backUp(t, cluster, ns)
	before, err := e2e.cs.CoreV1().Services(ns).Get(bg, "web-nodeport", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	deleteNamespace(t, ns)

	start := time.Now()
	rep := restoreReport(t, cluster, 0, "-n", ns)
	t.Logf("restored %v in %s", rep.Counts, time.Since(start).Round(time.Millisecond))
	if rep.Counts[restore.Failed] != 0 || rep.Counts[restore.Created] < 15 {
		t.Fatalf("counts %v", rep.Counts)
	}
	cm, err := e2e.cs.CoreV1().ConfigMaps(ns).Get(bg, "settings", metav1.GetOptions{})
	if err != nil || cm.Data["debug"] != "yes" || cm.Data["legacy"] != "on" || cm.Data["empty"] != "" || len(cm.Data) != 4 {
		t.Errorf("ConfigMap after restore: %v %v", cm.Data, err)
	}
	sec, err := e2e.cs.CoreV1().Secrets(ns).Get(bg, "creds", metav1.GetOptions{})
	if err != nil || string(sec.Data["password"]) != "s3cr3t" || string(sec.Data["flag"]) != "yes" {
		t.Errorf("Secret after restore: %v", err)
	}
	svc, err := e2e.cs.CoreV1().Services(ns).Get(bg, "web-nodeport", metav1.GetOptions{})
	if err != nil || svc.Spec.ClusterIP == "" || svc.Spec.Ports[0].NodePort == 0 {
		t.Errorf("NodePort Service after restore: %+v %v", svc.Spec, err)
	}
	t.Logf("node port %d before, %d after (not preserved by default)", before.Spec.Ports[0].NodePort, svc.Spec.Ports[0].NodePort)
	if _, stderr, code := cli(t, cluster, "diff", "-n", ns); code != 0 {
		t.Errorf("diff right after the restore: exit %d\n%s", code, stderr)
	}

	// Idempotence: nothing is written the second time.
	again := restoreReport(t, cluster, 0, "-n", ns)
	applied := rep.Counts[restore.Created] + rep.Counts[restore.Configured] + rep.Counts[restore.Unchanged]
	if again.Counts[restore.Created]+again.Counts[restore.Configured] != 0 || again.Counts[restore.Unchanged] != applied {
		t.Errorf("second restore: %v, want every object unchanged (%d)", again.Counts, applied)
	}

	// An edit shows in diff.
	patch := []byte(`{"data":{"mode":"slow"}}`)
	if _, err := e2e.cs.CoreV1().ConfigMaps(ns).Patch(bg, "settings", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	out, _, code := cli(t, cluster, "diff", "-n", ns, "--details")
	if code != 1 || !strings.Contains(out, "~ configmaps/"+ns+"/settings") || !strings.Contains(out, "-  mode: slow") {
		t.Errorf("diff after an edit: exit %d\n%s", code, out)
	}

	// A server dry run persists nothing.
	if err := e2e.cs.CoreV1().ConfigMaps(ns).Delete(bg, "settings", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	dry := restoreReport(t, cluster, 0, "-n", ns, "--dry-run", "server")
	if dry.Counts[restore.Created] != 1 {
		t.Errorf("dry run: %v, want the one deleted ConfigMap created", dry.Counts)
	}
	if _, err := e2e.cs.CoreV1().ConfigMaps(ns).Get(bg, "settings", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("a server dry run created the ConfigMap: %v", err)
	}
}

// TestRestoreIntoAnotherNamespace restores a namespace under a new name:
// the original is untouched, and the RoleBinding's subjects (service
// account, group and user) and the NetworkPolicy's namespace selectors
// follow.
func TestRestoreIntoAnotherNamespace(t *testing.T) {
	requireServers(t)
	ns, to, cluster := "e2e-mapping", "e2e-mapping-copy", "mapping"
	createNamespace(t, ns)
	createConfigMap(t, ns, "app", map[string]string{"k": "v"}, nil, nil)
	if _, err := e2e.cs.RbacV1().RoleBindings(ns).Create(bg, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "sa-view"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "view"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "default", Namespace: ns},
			{Kind: "Group", APIGroup: "rbac.authorization.k8s.io", Name: "system:serviceaccounts:" + ns},
			{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: "system:serviceaccount:" + ns + ":default"}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e2e.cs.NetworkingV1().NetworkPolicies(ns).Create(bg, &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "same-namespace"},
		Spec: networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
			{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}}},
			{NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpIn, Values: []string{ns, "monitoring"}}}}},
		}}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	backUp(t, cluster, ns)
	orig, err := e2e.cs.CoreV1().ConfigMaps(ns).Get(bg, "app", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rep := restoreReport(t, cluster, 0, "-n", ns, "--namespace-mapping", ns+":"+to)
	if rep.Counts[restore.Failed] != 0 {
		t.Fatalf("counts %v", rep.Counts)
	}
	if _, err := e2e.cs.CoreV1().ConfigMaps(to).Get(bg, "app", metav1.GetOptions{}); err != nil {
		t.Errorf("the ConfigMap in the new namespace: %v", err)
	}
	// Every reference to the namespace follows it: otherwise the old
	// namespace's accounts get rights in the new one, and its policies
	// open the new namespace to the old.
	rb, err := e2e.cs.RbacV1().RoleBindings(to).Get(bg, "sa-view", metav1.GetOptions{})
	if err != nil || rb.Subjects[0].Namespace != to || rb.Subjects[1].Name != "system:serviceaccounts:"+to || rb.Subjects[2].Name != "system:serviceaccount:"+to+":default" {
		t.Errorf("RoleBinding subjects after mapping: %+v %v", rb.Subjects, err)
	}
	np, err := e2e.cs.NetworkingV1().NetworkPolicies(to).Get(bg, "same-namespace", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	peers := np.Spec.Ingress[0].From
	if peers[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != to || peers[1].NamespaceSelector.MatchExpressions[0].Values[0] != to || peers[1].NamespaceSelector.MatchExpressions[0].Values[1] != "monitoring" {
		t.Errorf("NetworkPolicy namespace selectors after mapping: %+v", peers)
	}
	now, err := e2e.cs.CoreV1().ConfigMaps(ns).Get(bg, "app", metav1.GetOptions{})
	if err != nil || now.ResourceVersion != orig.ResourceVersion {
		t.Errorf("the original namespace was touched: %v", err)
	}
}

// TestPointInTimeRestore rolls a namespace back to T0: the image and a
// deleted ConfigMap come back; apply keeps a label added since, replace
// removes it; an object created since is deleted only with --prune.
func TestPointInTimeRestore(t *testing.T) {
	requireServers(t)
	ns, cluster := "e2e-pit", "pit"
	createNamespace(t, ns)
	createConfigMap(t, ns, "keep", map[string]string{"v": "1"}, nil, nil)
	createConfigMap(t, ns, "doomed", map[string]string{"v": "1"}, nil, nil)
	labels := map[string]string{"app": "api"}
	one := int32(1)
	if _, err := e2e.cs.AppsV1().Deployments(ns).Create(bg, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "api"},
		Spec: appsv1.DeploymentSpec{Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "api", Image: "api:1.0"}}}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	s := startService(t, cluster, serviceOptions{configMap: map[string]string{"include-namespaces": ns}})
	s.waitReady()
	s.waitPass(1)
	eventually(t, 30*time.Second, "an empty queue", func() bool { return s.metric("cluster_backup_queue_depth", nil) == 0 })
	// Every version so far was stored before T0; every change below
	// reaches the store at least one DEBOUNCE window after it.
	t0 := time.Now().UTC()

	patch := []byte(`{"metadata":{"labels":{"hotfix":"true"}},"spec":{"template":{"spec":{"containers":[{"name":"api","image":"api:2.0"}]}}}}`)
	if _, err := e2e.cs.AppsV1().Deployments(ns).Patch(bg, "api", types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := e2e.cs.CoreV1().ConfigMaps(ns).Delete(bg, "doomed", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	createConfigMap(t, ns, "newcomer", map[string]string{"v": "1"}, nil, nil)
	eventually(t, 30*time.Second, "the changes to be backed up", func() bool {
		_, hasDoomed := s.stored()[s.key(ns, "configmaps", "doomed")]
		return !hasDoomed && s.body(s.key(ns, "configmaps", "newcomer")) != "" && strings.Contains(s.body(s.key(ns, "deployments", "api")), "api:2.0")
	})
	s.stop()

	at := t0.Format(time.RFC3339Nano)
	rep := restoreReport(t, cluster, 0, "-n", ns, "--at", at)
	if rep.Counts[restore.Failed] != 0 {
		t.Fatalf("counts %v", rep.Counts)
	}
	d, err := e2e.cs.AppsV1().Deployments(ns).Get(bg, "api", metav1.GetOptions{})
	if err != nil || d.Spec.Template.Spec.Containers[0].Image != "api:1.0" {
		t.Errorf("image after restore --at T0: %v", err)
	}
	if d.Labels["hotfix"] != "true" {
		t.Error("--existing apply removed a label added after T0")
	}
	if _, err := e2e.cs.CoreV1().ConfigMaps(ns).Get(bg, "doomed", metav1.GetOptions{}); err != nil {
		t.Errorf("the ConfigMap deleted after T0 is not back: %v", err)
	}
	if _, err := e2e.cs.CoreV1().ConfigMaps(ns).Get(bg, "newcomer", metav1.GetOptions{}); err != nil {
		t.Errorf("an object created after T0 was deleted without --prune: %v", err)
	}

	restoreReport(t, cluster, 0, "-n", ns, "--at", at, "--existing", "replace")
	if d, err := e2e.cs.AppsV1().Deployments(ns).Get(bg, "api", metav1.GetOptions{}); err != nil || d.Labels["hotfix"] != "" {
		t.Errorf("--existing replace kept the label added after T0: %v %v", d.Labels, err)
	}
	pruned := restoreReport(t, cluster, 0, "-n", ns, "--at", at, "--prune", "--yes")
	if pruned.Counts[restore.Pruned] != 1 {
		t.Errorf("prune: %v, want the one object created after T0", pruned.Counts)
	}
	if _, err := e2e.cs.CoreV1().ConfigMaps(ns).Get(bg, "newcomer", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("--prune kept the object created after T0: %v", err)
	}
	if _, err := e2e.cs.CoreV1().ConfigMaps(ns).Get(bg, "keep", metav1.GetOptions{}); err != nil {
		t.Errorf("--prune deleted an object the backup holds: %v", err)
	}
}

// TestTamperedObjectIsRefused alters one stored document behind the
// service's back: show refuses it naming the key, and a restore restores
// the rest and exits 3.
func TestTamperedObjectIsRefused(t *testing.T) {
	requireServers(t)
	ns, cluster := "e2e-tamper", "tamper"
	createNamespace(t, ns)
	createConfigMap(t, ns, "good", map[string]string{"v": "1"}, nil, nil)
	createConfigMap(t, ns, "evil", map[string]string{"v": "1"}, nil, nil)
	backUp(t, cluster, ns)
	key := "clusterbackup/" + cluster + "/" + ns + "/configmaps/evil.yaml"
	tamper(t, key, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: evil\n  namespace: "+ns+"\ndata:\n  v: injected\n")
	if _, stderr, code := cli(t, cluster, "show", "configmaps/evil", "-n", ns); code == 0 || !strings.Contains(stderr, key) || !strings.Contains(stderr, "altered") {
		t.Errorf("show of a tampered object: exit %d\n%s", code, stderr)
	}
	deleteNamespace(t, ns)
	rep := restoreReport(t, cluster, exitPartial, "-n", ns)
	if rep.Counts[restore.Failed] != 1 || rep.Counts[restore.Created] < 2 {
		t.Errorf("restore with one tampered object: %v", rep.Counts)
	}
	if _, err := e2e.cs.CoreV1().ConfigMaps(ns).Get(bg, "evil", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the tampered object was restored: %v", err)
	}
	if _, err := e2e.cs.CoreV1().ConfigMaps(ns).Get(bg, "good", metav1.GetOptions{}); err != nil {
		t.Errorf("the good object was not restored: %v", err)
	}
	// The live object whose backup cannot be read is no extra for prune:
	// the backup holds it.
	createConfigMap(t, ns, "evil", map[string]string{"v": "live"}, nil, nil)
	restoreReport(t, cluster, exitPartial, "-n", ns, "--prune", "--yes")
	if _, err := e2e.cs.CoreV1().ConfigMaps(ns).Get(bg, "evil", metav1.GetOptions{}); err != nil {
		t.Errorf("a pruning restore deleted the live object whose backup was altered: %v", err)
	}
}

// tamper replaces a stored object's content and keeps its metadata, as
// whoever may write to the bucket could.
func tamper(t *testing.T, key, body string) {
	t.Helper()
	info, err := e2e.bucket.StatObject(bg, bucketName, key, minio.StatObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	md := map[string]string{}
	maps.Copy(md, info.UserMetadata)
	if _, err := e2e.bucket.PutObject(bg, bucketName, key, strings.NewReader(body), int64(len(body)), minio.PutObjectOptions{UserMetadata: md}); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyRepairsAlteredObjects(t *testing.T) {
	requireServers(t)
	ns, cluster := "e2e-verify", "verify"
	createNamespace(t, ns)
	for i := range 20 {
		createConfigMap(t, ns, fmt.Sprint("cm-", i), map[string]string{"v": fmt.Sprint(i)}, nil, nil)
	}
	backUp(t, cluster, ns)
	key := "clusterbackup/" + cluster + "/" + ns + "/configmaps/cm-7.yaml"
	tamper(t, key, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-7\n  namespace: "+ns+"\ndata:\n  v: injected\n")
	if _, _, code := cli(t, cluster, "show", "configmaps/cm-7", "-n", ns); code == 0 {
		t.Fatal("show accepted the altered object")
	}
	// Every object once per hour, a pass per hour: all of them in the
	// first pass.
	s := startService(t, cluster, serviceOptions{
		env:       map[string]string{"VERIFY_INTERVAL": "1h", "SNAPSHOT_INTERVAL": "1h"},
		configMap: map[string]string{"include-namespaces": ns},
	})
	s.waitPass(1)
	eventually(t, 10*time.Second, "the altered object written again", func() bool { return !strings.Contains(s.body(key), "injected") })
	if out, stderr, code := cli(t, cluster, "show", "configmaps/cm-7", "-n", ns); code != 0 || !strings.Contains(out, `v: "7"`) {
		t.Errorf("show after the repair: exit %d\n%s%s", code, out, stderr)
	}
	if got := s.metric("cluster_backup_verify_failures_total", nil); got != 1 {
		t.Errorf("verify_failures_total = %v, want 1", got)
	}
	if got := s.metric("cluster_backup_verified_total", nil); got < 21 {
		t.Errorf("verified_total = %v, want every stored object (21)", got)
	}
	if w := s.metric("cluster_backup_resources_total", map[string]string{"action": "written"}); w != 1 {
		t.Errorf("the verifying pass wrote %v objects, want the altered one", w)
	}
}

// TestBrowsing lists, shows and walks the history of an object changed
// three times.
func TestBrowsing(t *testing.T) {
	requireServers(t)
	ns, cluster := "e2e-browse", "browse"
	createNamespace(t, ns)
	createConfigMap(t, ns, "evolving", map[string]string{"step": "0"}, nil, nil)
	s := startService(t, cluster, serviceOptions{configMap: map[string]string{"include-namespaces": ns}})
	s.waitReady()
	s.waitPass(1)
	key := s.key(ns, "configmaps", "evolving")
	for step := 1; step <= 3; step++ {
		patch := []byte(fmt.Sprintf(`{"data":{"step":"%d"}}`, step))
		if _, err := e2e.cs.CoreV1().ConfigMaps(ns).Patch(bg, "evolving", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "the change to be backed up", func() bool {
			return strings.Contains(s.body(key), fmt.Sprintf("step: \"%d\"", step))
		})
	}
	s.stop()

	out, stderr, code := cli(t, cluster, "ls", "-n", ns, "-o", "name")
	if code != 0 || !strings.Contains(out, "configmaps/evolving") || !strings.Contains(out, "namespaces/"+ns) {
		t.Errorf("ls: exit %d\n%s%s", code, out, stderr)
	}
	out, _, code = cli(t, cluster, "show", "configmaps/evolving", "-n", ns)
	if code != 0 || !strings.Contains(out, `step: "3"`) {
		t.Errorf("show: exit %d\n%s", code, out)
	}
	out, stderr, code = cli(t, cluster, "history", "configmaps/evolving", "-n", ns, "-p")
	if code != 0 {
		t.Fatalf("history: exit %d\n%s", code, stderr)
	}
	var order []int
	for step := 3; step >= 1; step-- {
		i := strings.Index(out, fmt.Sprintf("+  step: \"%d\"", step))
		if i < 0 || !strings.Contains(out, fmt.Sprintf("-  step: \"%d\"", step-1)) {
			t.Errorf("history -p does not show the change to step %d:\n%s", step, out)
		}
		order = append(order, i)
	}
	if order[0] >= order[1] || order[1] >= order[2] {
		t.Errorf("history -p is not newest first: positions %v", order)
	}
	if n := strings.Count(out, "version "); n != 4 {
		t.Errorf("history lists %d versions, want 4", n)
	}
	if _, _, code := cli(t, cluster, "show", "configmaps/missing", "-n", ns); code != 1 {
		t.Errorf("show of a missing object: exit %d, want 1", code)
	}
	if _, _, code := cli(t, cluster, "restore"); code != 2 {
		t.Errorf("restore without a selection: exit %d, want 2", code)
	}
}

// TestRestoreIntoAFreshCluster restores a CRD and 1,000 of its custom
// resources, and a validating webhook (failurePolicy Fail) together with
// the Deployment and Service that would serve it, into an empty cluster in
// one run: the CRD is established before its resources are applied, and
// the webhook comes last, so it blocks nothing.
func TestRestoreIntoAFreshCluster(t *testing.T) {
	requireServers(t)
	ns, cluster := "e2e-fresh", "fresh"
	createNamespace(t, ns)
	gvr := installCRD(t, "example.org", "gadgets", "Gadget")
	// The shared cluster is backed up whole by later tests: take the
	// thousand objects away again.
	t.Cleanup(func() {
		_ = e2e.dyn.Resource(widgetCRD).Delete(bg, "gadgets.example.org", metav1.DeleteOptions{})
		_ = e2e.cs.CoreV1().Namespaces().Delete(bg, ns, metav1.DeleteOptions{})
	})
	for i := range 1000 {
		createCustom(t, gvr, "Gadget", ns, fmt.Sprintf("g-%04d", i))
	}
	createConfigMap(t, ns, "guarded", map[string]string{"v": "1"}, nil, nil)
	labels := map[string]string{"app": "hook"}
	one := int32(1)
	if _, err := e2e.cs.AppsV1().Deployments(ns).Create(bg, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "hook"},
		Spec: appsv1.DeploymentSpec{Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "hook", Image: "hook:1"}}}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e2e.cs.CoreV1().Services(ns).Create(bg, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "hook"},
		Spec:       corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Port: 443}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The webhook guards ConfigMaps of this namespace only, and nothing
	// serves it: every ConfigMap write there fails while it exists.
	const hook = "e2e-fresh-guard"
	createGuard(t, e2e.cs, ns, hook)
	t.Cleanup(func() {
		_ = e2e.cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Delete(bg, hook, metav1.DeleteOptions{})
	})
	s := startService(t, cluster, serviceOptions{configMap: map[string]string{"include-namespaces": ns}})
	s.waitReady()
	s.waitPass(1)
	eventually(t, 60*time.Second, "every gadget and the webhook stored", func() bool {
		n := 0
		for k := range s.stored() {
			if strings.Contains(k, "/gadgets.example.org/") {
				n++
			}
		}
		return n == 1000 && s.body(s.key("", "validatingwebhookconfigurations.admissionregistration.k8s.io", hook)) != ""
	})
	s.stop()

	fresh := privateCluster(t)
	start := time.Now()
	path2 := filepath.Join(t.TempDir(), "report.json")
	_, stderr, code := cliOn(t, fresh.kube.Kubeconfig, cluster, "restore", "-A", "--report", path2,
		"--exclude-namespace", "default", "--exclude-namespace", "kube-system", "--exclude-namespace", "kube-public", "--exclude-namespace", "kube-node-lease")
	took := time.Since(start)
	if code != 0 {
		t.Fatalf("restore into a fresh cluster: exit %d\n%s\n%s", code, failedLines(stderr), lastLines(stderr, 20))
	}
	if strings.Contains(stderr, "no matches for kind") {
		t.Error("a custom resource was applied before its CRD was known")
	}
	list, err := fresh.dyn.Resource(gvr).Namespace(ns).List(bg, metav1.ListOptions{})
	if err != nil || len(list.Items) != 1000 {
		t.Fatalf("gadgets in the fresh cluster: %d, %v", len(list.Items), err)
	}
	t.Logf("1,000 custom resources, their CRD and a webhook restored into a fresh cluster in %s", took.Round(time.Millisecond))
	if _, err := fresh.cs.CoreV1().ConfigMaps(ns).Get(bg, "guarded", metav1.GetOptions{}); err != nil {
		t.Errorf("the ConfigMap the webhook guards: %v", err)
	}
	if _, err := fresh.cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(bg, hook, metav1.GetOptions{}); err != nil {
		t.Errorf("the webhook was not restored: %v", err)
	}
}

// failedLines are the report's lines of the objects a restore failed.
func failedLines(s string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "failed ") {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// TestRestoredOwnersKeepTheirDependents restores an owner and a dependent
// custom resource: the dependent's reference points at the owner's new
// UID, so the garbage collector keeps it (it deletes, meanwhile, an object
// whose owner does not exist) and deleting the owner cascades.
func TestRestoredOwnersKeepTheirDependents(t *testing.T) {
	requireServers(t)
	ns, cluster := "e2e-restore-owners", "restore-owners"
	createNamespace(t, ns)
	gvr := installCRD(t, "example.net", "parts", "Part")
	createCustom(t, gvr, "Part", ns, "owner")
	owner, err := e2e.dyn.Resource(gvr).Namespace(ns).Get(bg, "owner", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dependent := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": gvr.GroupVersion().String(), "kind": "Part",
		"metadata": map[string]any{"name": "dependent", "namespace": ns, "ownerReferences": []any{map[string]any{
			"apiVersion": gvr.GroupVersion().String(), "kind": "Part", "name": "owner", "uid": string(owner.GetUID()),
		}}},
	}}
	if _, err := e2e.dyn.Resource(gvr).Namespace(ns).Create(bg, dependent, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	backUp(t, cluster, ns)
	deleteNamespace(t, ns)
	rep := restoreReport(t, cluster, 0, "-n", ns)
	if rep.Counts[restore.Failed] != 0 {
		t.Fatalf("counts %v", rep.Counts)
	}
	newOwner, err := e2e.dyn.Resource(gvr).Namespace(ns).Get(bg, "owner", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dep, err := e2e.dyn.Resource(gvr).Namespace(ns).Get(bg, "dependent", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if refs := dep.GetOwnerReferences(); len(refs) != 1 || refs[0].UID != newOwner.GetUID() || newOwner.GetUID() == owner.GetUID() {
		t.Fatalf("the dependent's owner reference %+v, want the new owner's UID %s", refs, newOwner.GetUID())
	}
	// A control object whose owner does not exist: once the garbage
	// collector has deleted it, it has had its chance at the dependent.
	control := dependent.DeepCopy()
	control.SetName("control")
	control.SetResourceVersion("")
	control.SetOwnerReferences([]metav1.OwnerReference{{APIVersion: gvr.GroupVersion().String(), Kind: "Part", Name: "owner", UID: owner.GetUID()}})
	if _, err := e2e.dyn.Resource(gvr).Namespace(ns).Create(bg, control, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the garbage collector to delete the control object", func() bool {
		_, err := e2e.dyn.Resource(gvr).Namespace(ns).Get(bg, "control", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	if _, err := e2e.dyn.Resource(gvr).Namespace(ns).Get(bg, "dependent", metav1.GetOptions{}); err != nil {
		t.Fatalf("the garbage collector deleted the restored dependent: %v", err)
	}
	if err := e2e.dyn.Resource(gvr).Namespace(ns).Delete(bg, "owner", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "deleting the owner to cascade", func() bool {
		_, err := e2e.dyn.Resource(gvr).Namespace(ns).Get(bg, "dependent", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
}

// TestRestoreBacksOffUnderLoad restores as an identity whose requests API
// Priority and Fairness holds to a few seats and rejects beyond them (429):
// the restore lowers the writes it keeps in flight and still restores
// every object.
func TestRestoreBacksOffUnderLoad(t *testing.T) {
	requireServers(t)
	ns, cluster := "e2e-backoff", "backoff"
	createNamespace(t, ns)
	t.Cleanup(func() { // later tests back the whole cluster up
		for _, n := range []string{ns, ns + "-copy"} {
			_ = e2e.cs.CoreV1().Namespaces().Delete(bg, n, metav1.DeleteOptions{})
		}
	})
	for i := range 200 {
		createConfigMap(t, ns, fmt.Sprintf("cm-%03d", i), map[string]string{"i": fmt.Sprint(i)}, nil, nil)
	}
	backUp(t, cluster, ns)

	// The identity may write ConfigMaps and Namespaces, and its requests
	// have one share of the server's concurrency, rejected beyond it.
	if _, err := e2e.cs.RbacV1().ClusterRoles().Create(bg, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-restorer"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps", "namespaces", "serviceaccounts"},
			Verbs: []string{"get", "list", "watch", "create", "patch", "update"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e2e.cs.RbacV1().ClusterRoleBindings().Create(bg, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-restorer"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "e2e-restorer"},
		Subjects:   []rbacv1.Subject{{Kind: "User", Name: "e2e-restorer"}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	one := int32(1)
	if _, err := e2e.cs.FlowcontrolV1().PriorityLevelConfigurations().Create(bg, &flowcontrolv1.PriorityLevelConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-restorer"},
		Spec: flowcontrolv1.PriorityLevelConfigurationSpec{Type: flowcontrolv1.PriorityLevelEnablementLimited,
			Limited: &flowcontrolv1.LimitedPriorityLevelConfiguration{NominalConcurrencyShares: &one,
				LimitResponse: flowcontrolv1.LimitResponse{Type: flowcontrolv1.LimitResponseTypeReject}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e2e.cs.FlowcontrolV1().FlowSchemas().Delete(bg, "e2e-restorer", metav1.DeleteOptions{})
		_ = e2e.cs.FlowcontrolV1().PriorityLevelConfigurations().Delete(bg, "e2e-restorer", metav1.DeleteOptions{})
	})
	if _, err := e2e.cs.FlowcontrolV1().FlowSchemas().Create(bg, &flowcontrolv1.FlowSchema{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-restorer"},
		Spec: flowcontrolv1.FlowSchemaSpec{
			PriorityLevelConfiguration: flowcontrolv1.PriorityLevelConfigurationReference{Name: "e2e-restorer"},
			MatchingPrecedence:         100,
			Rules: []flowcontrolv1.PolicyRulesWithSubjects{{
				Subjects: []flowcontrolv1.Subject{{Kind: flowcontrolv1.SubjectKindUser, User: &flowcontrolv1.UserSubject{Name: "e2e-restorer"}}},
				ResourceRules: []flowcontrolv1.ResourcePolicyRule{{Verbs: []string{"*"}, APIGroups: []string{"*"}, Resources: []string{"*"},
					Namespaces: []string{"*"}, ClusterScope: true}},
				NonResourceRules: []flowcontrolv1.NonResourcePolicyRule{{Verbs: []string{"*"}, NonResourceURLs: []string{"*"}}},
			}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kc, err := clientcmd.LoadFromFile(e2e.kube.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range kc.AuthInfos {
		a.Impersonate = "e2e-restorer"
	}
	limited := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, limited); err != nil {
		t.Fatal(err)
	}

	path := filepath.Join(t.TempDir(), "report.json")
	_, stderr, code := cliOn(t, limited, cluster, "restore", "-n", ns, "--namespace-mapping", ns+":"+ns+"-copy", "--parallel", "64", "--report", path)
	if code != 0 {
		t.Fatalf("restore under load: exit %d\n%s", code, lastLines(stderr, 20))
	}
	var rep report
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	t.Logf("restored %v in %.1fs; writes in flight went down to %d", rep.Counts, rep.Seconds, rep.LowestConcurrency)
	if rep.Counts[restore.Failed] != 0 || rep.Counts[restore.Created] < 200 {
		t.Errorf("counts %v", rep.Counts)
	}
	if rep.LowestConcurrency >= 64 {
		t.Errorf("the API server rejected requests and the restore kept %d writes in flight", rep.LowestConcurrency)
	}
	list, err := e2e.cs.CoreV1().ConfigMaps(ns+"-copy").List(bg, metav1.ListOptions{})
	if err != nil || len(list.Items) < 200 {
		t.Errorf("restored ConfigMaps: %d, %v", len(list.Items), err)
	}
}
