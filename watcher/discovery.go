// Package watcher finds every resource type the cluster serves and keeps one
// dynamic informer running per selected type, so that every add, update and
// delete reaches the sink within seconds. It re-discovers when CRDs change and
// periodically for aggregated APIs, starting and stopping informers without a
// restart. Its caches are also the snapshot pass's view of the cluster.
package watcher

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"

	"github.com/cluster-backup/cluster-backup/filter"
)

// openShiftGroupVersions are the APIs whose presence means OpenShift.
var openShiftGroupVersions = []string{
	"route.openshift.io/v1",
	"build.openshift.io/v1",
	"image.openshift.io/v1",
	"apps.openshift.io/v1",
}

// discovered is one discovery round.
type discovered struct {
	resources []filter.Resource
	// failedGroups could not be discovered this round (an aggregated API
	// that is down); their informers are left as they are.
	failedGroups map[string]error
	openshift    bool
}

// preferred is the part of the discovery client that discover needs.
type preferred interface {
	ServerPreferredResources() ([]*metav1.APIResourceList, error)
}

// discover lists the preferred version of every group and keeps the
// resource types that can be listed and watched. A partial failure is
// reported in failedGroups, not as an error.
func discover(client preferred) (discovered, error) {
	lists, err := client.ServerPreferredResources()
	d := discovered{failedGroups: map[string]error{}}
	if err != nil {
		var gdf *discovery.ErrGroupDiscoveryFailed
		if !errors.As(err, &gdf) {
			return d, fmt.Errorf("discovery: %w", err)
		}
		for gv, gerr := range gdf.Groups {
			d.failedGroups[gv.Group] = gerr
		}
	}
	for _, list := range lists {
		gv, err := schema.ParseGroupVersion(list.GroupVersion)
		if err != nil {
			continue
		}
		if slices.Contains(openShiftGroupVersions, list.GroupVersion) {
			d.openshift = true
		}
		for _, r := range list.APIResources {
			if strings.Contains(r.Name, "/") || !slices.Contains(r.Verbs, "list") || !slices.Contains(r.Verbs, "watch") {
				continue
			}
			d.resources = append(d.resources, filter.Resource{
				Group:      gv.Group,
				Version:    gv.Version,
				Resource:   r.Name,
				Singular:   r.SingularName,
				Kind:       r.Kind,
				ShortNames: r.ShortNames,
				Namespaced: r.Namespaced,
			})
		}
	}
	sort.Slice(d.resources, func(i, j int) bool { return d.resources[i].GroupResource() < d.resources[j].GroupResource() })
	return d, nil
}

// Resources are the resource types the cluster serves that can be listed
// and watched, at their preferred versions, as the service discovers them,
// and whether the cluster looks like OpenShift. Groups that fail discovery
// are left out.
func Resources(client discovery.DiscoveryInterface) ([]filter.Resource, bool, error) {
	d, err := discover(client)
	return d.resources, d.openshift, err
}

// openShiftGroupFailed reports whether an API group that OpenShift
// detection looks at failed discovery this round.
func (d discovered) openShiftGroupFailed() bool {
	for _, gv := range openShiftGroupVersions {
		group, _, _ := strings.Cut(gv, "/")
		if _, failed := d.failedGroups[group]; failed {
			return true
		}
	}
	return false
}

// openShiftDetected is what detection concludes from a round, given the
// previous decision: an OpenShift API that fails discovery (as aggregated
// APIs do during upgrades) is not evidence that OpenShift is gone, so it
// does not switch OpenShift handling off and drop every *.openshift.io type.
func openShiftDetected(before *bool, d discovered) bool {
	return d.openshift || (before != nil && *before && d.openShiftGroupFailed())
}

// OpenShift decides whether OpenShift handling is on.
func OpenShift(mode filter.OpenShiftMode, detected bool) bool {
	switch mode {
	case filter.OpenShiftEnabled:
		return true
	case filter.OpenShiftDisabled:
		return false
	}
	return detected
}
