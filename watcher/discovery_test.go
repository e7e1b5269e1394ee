package watcher

import (
	"errors"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"

	"github.com/cluster-backup/cluster-backup/filter"
)

type fakeDiscovery struct {
	lists []*metav1.APIResourceList
	err   error
}

func (f fakeDiscovery) ServerPreferredResources() ([]*metav1.APIResourceList, error) {
	return f.lists, f.err
}

var rw = metav1.Verbs{"get", "list", "watch", "create"}

func TestDiscover(t *testing.T) {
	f := fakeDiscovery{
		lists: []*metav1.APIResourceList{
			{GroupVersion: "v1", APIResources: []metav1.APIResource{
				{Name: "configmaps", Kind: "ConfigMap", Namespaced: true, Verbs: rw, ShortNames: []string{"cm"}},
				{Name: "pods/log", Kind: "Pod", Namespaced: true, Verbs: metav1.Verbs{"get"}},
				{Name: "bindings", Kind: "Binding", Namespaced: true, Verbs: metav1.Verbs{"create"}},
			}},
			{GroupVersion: "route.openshift.io/v1", APIResources: []metav1.APIResource{
				{Name: "routes", Kind: "Route", Namespaced: true, Verbs: rw},
			}},
		},
		err: &discovery.ErrGroupDiscoveryFailed{Groups: map[schema.GroupVersion]error{
			{Group: "metrics.k8s.io", Version: "v1beta1"}: errors.New("service unavailable"),
		}},
	}
	d, err := discover(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.resources) != 2 || d.resources[0].Resource != "configmaps" || d.resources[1].GroupResource() != "routes.route.openshift.io" {
		t.Errorf("resources %+v", d.resources)
	}
	if !d.openshift {
		t.Error("route.openshift.io/v1 not detected as OpenShift")
	}
	if _, ok := d.failedGroups["metrics.k8s.io"]; !ok {
		t.Errorf("failed groups %v", d.failedGroups)
	}

	if _, err := discover(fakeDiscovery{err: errors.New("connection refused")}); err == nil {
		t.Error("a total discovery failure was not an error")
	}
}

func TestOpenShift(t *testing.T) {
	for _, tc := range []struct {
		mode     filter.OpenShiftMode
		detected bool
		want     bool
	}{
		{filter.OpenShiftAuto, true, true},
		{filter.OpenShiftAuto, false, false},
		{filter.OpenShiftEnabled, false, true},
		{filter.OpenShiftDisabled, true, false},
	} {
		if got := OpenShift(tc.mode, tc.detected); got != tc.want {
			t.Errorf("OpenShift(%s, %v) = %v", tc.mode, tc.detected, got)
		}
	}
}

func TestOpenShiftDetectionSurvivesFailingGroups(t *testing.T) {
	on, off := true, false
	failing := discovered{failedGroups: map[string]error{"route.openshift.io": errors.New("503")}}
	gone := discovered{failedGroups: map[string]error{}}
	for _, tc := range []struct {
		name   string
		before *bool
		d      discovered
		want   bool
	}{
		{"seen", nil, discovered{openshift: true}, true},
		{"never seen", nil, gone, false},
		{"seen before, its groups failing now", &on, failing, true},
		{"seen before, gone for good", &on, gone, false},
		{"not seen before, failing groups prove nothing", &off, failing, false},
	} {
		if got := openShiftDetected(tc.before, tc.d); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
