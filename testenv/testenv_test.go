package testenv

import (
	"context"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

// TestControlPlaneIsReal proves the servers are the real thing: a version
// stamped v1.37.2, objects that round-trip through etcd, and a controller
// manager that turns a Deployment into a ReplicaSet.
func TestControlPlaneIsReal(t *testing.T) {
	Require(t, "etcd", "kube-apiserver", "kube-controller-manager")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	k, err := StartKube(ctx, KubeOptions{ControllerManager: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Stop)

	disc := discovery.NewDiscoveryClientForConfigOrDie(k.Config)
	v, err := disc.ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if v.GitVersion != "v1.37.2" {
		t.Errorf("server version %s, want v1.37.2", v.GitVersion)
	}
	t.Logf("kube-apiserver %s at %s", v.GitVersion, k.Config.Host)

	cs := kubernetes.NewForConfigOrDie(k.Config)
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "settings", Namespace: "team-a"}, Data: map[string]string{"mode": "on"}}
	if _, err := cs.CoreV1().ConfigMaps("team-a").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	dyn := dynamic.NewForConfigOrDie(k.Config)
	nss, err := dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ns := range nss.Items {
		found = found || ns.GetName() == "team-a"
	}
	if !found {
		t.Error("namespace team-a not listed by the dynamic client")
	}
	cms, err := dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}).Namespace("team-a").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var settings *unstructured.Unstructured
	for i := range cms.Items {
		if cms.Items[i].GetName() == "settings" {
			settings = &cms.Items[i]
		}
	}
	if settings == nil {
		t.Fatalf("ConfigMap settings not listed in team-a (%d items)", len(cms.Items))
	}
	if got, _, _ := unstructured.NestedString(settings.Object, "data", "mode"); got != "on" {
		t.Errorf("data.mode = %q", got)
	}

	one := int32(1)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "team-a"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx"}}},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments("team-a").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		rs, err := cs.AppsV1().ReplicaSets("team-a").List(ctx, metav1.ListOptions{})
		return err == nil && len(rs.Items) == 1, nil
	})
	if err != nil {
		t.Fatalf("kube-controller-manager did not create a ReplicaSet: %v", err)
	}
}

// TestSeaweedPortsNeverOverlap: no port weed is given is another's gRPC
// twin (port+10000), the collision that made weed exit at start-up.
func TestSeaweedPortsNeverOverlap(t *testing.T) {
	for range 200 {
		ports, err := seaweedPorts(4)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[int]bool{}
		for _, p := range ports {
			if seen[p] || seen[p+10000] {
				t.Fatalf("ports %v overlap", ports)
			}
			seen[p], seen[p+10000] = true, true
		}
	}
}
