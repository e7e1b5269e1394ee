package filter

import (
	"sort"
	"strings"

	"github.com/cluster-backup/cluster-backup/object"
)

// Resource describes one discovered resource type at its preferred version.
type Resource struct {
	Group      string
	Version    string
	Resource   string // plural
	Singular   string
	Kind       string
	ShortNames []string
	Namespaced bool
}

// GroupResource is "plural.group", or the bare plural for the core group.
func (r Resource) GroupResource() string {
	if r.Group == "" {
		return r.Resource
	}
	return r.Resource + "." + r.Group
}

// Segment is the {resource} path segment of the storage layout.
func (r Resource) Segment() string { return object.Segment(r.Group, r.Resource) }

// Reasons a resource type or an object is not backed up, as logged in
// data.reason of resource_filter lines.
const (
	ReasonExcludedByBlacklist = "excluded_by_blacklist"
	ReasonNotInWhitelist      = "not_in_whitelist"
	ReasonOpenShiftExcluded   = "openshift_excluded"
	ReasonDuplicate           = "duplicate_of_core_group"
	ReasonNamespaceExcluded   = "namespace_excluded"
	ReasonNamespaceNotListed  = "namespace_not_included"
	ReasonLabelSelector       = "label_selector"
	ReasonAnnotationSelector  = "annotation_selector"
	ReasonServiceAccountToken = "service_account_token"
)

// Dropped is a resource type that the rules leave out, and why.
type Dropped struct {
	Resource Resource
	Reason   string
}

// duplicates maps a group/resource to the core resource that serves the same
// objects; only one of them is backed up.
var duplicates = map[string]string{
	"events.events.k8s.io": "events",
}

// IsOpenShift reports whether r belongs to an OpenShift API group.
func IsOpenShift(r Resource) bool {
	return r.Group == "openshift.io" || strings.HasSuffix(r.Group, ".openshift.io")
}

// SelectResources applies the mode, the include and exclude lists and the
// OpenShift switch to the discovered types. openshift is the outcome of
// openshift-mode (forced, or detected).
//
// A bare name (no dot) matches the core group first: "events" names the core
// resource even though events.k8s.io serves one of the same name, as kubectl
// resolves it. A dotted name is plural.group and matches exactly.
func (r Rules) SelectResources(all []Resource, openshift bool) (selected []Resource, dropped []Dropped) {
	include := newMatcher(r.IncludeResources, all)
	exclude := newMatcher(r.ExcludeResources, all)
	crds := newMatcher(r.IncludeCRDs, all)
	chosen := map[string]bool{}
	for _, res := range all {
		reason := ""
		switch {
		case exclude.matches(res):
			reason = ReasonExcludedByBlacklist
		case IsOpenShift(res) && (!openshift || !r.IncludeOpenShiftResources):
			reason = ReasonOpenShiftExcluded
		case r.Mode == Whitelist && !include.matches(res) && !crds.matches(res):
			reason = ReasonNotInWhitelist
		case r.Mode == Hybrid && len(r.IncludeResources) > 0 && !include.matches(res) && !crds.matches(res):
			reason = ReasonNotInWhitelist
		}
		if reason != "" {
			dropped = append(dropped, Dropped{res, reason})
			continue
		}
		selected = append(selected, res)
		chosen[res.GroupResource()] = true
	}
	out := selected[:0]
	for _, res := range selected {
		if core, ok := duplicates[res.GroupResource()]; ok && chosen[core] {
			dropped = append(dropped, Dropped{res, ReasonDuplicate})
			continue
		}
		out = append(out, res)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GroupResource() < out[j].GroupResource() })
	return out, dropped
}

// matcher resolves list entries against the discovered resources.
type matcher struct {
	dotted map[string]bool // plural.group entries
	bare   map[string]bool // plural, singular, kind or short name entries
	// coreNames are the bare names that a core resource answers to: such a
	// name never matches another group's resource.
	coreNames map[string]bool
}

func newMatcher(entries []string, all []Resource) matcher {
	m := matcher{dotted: map[string]bool{}, bare: map[string]bool{}, coreNames: map[string]bool{}}
	for _, e := range entries {
		e = strings.ToLower(strings.TrimSpace(e))
		if e == "" {
			continue
		}
		if strings.Contains(e, ".") {
			m.dotted[e] = true
		} else {
			m.bare[e] = true
		}
	}
	for _, res := range all {
		if res.Group == "" {
			for _, n := range names(res) {
				m.coreNames[n] = true
			}
		}
	}
	return m
}

func (m matcher) matches(res Resource) bool {
	if m.dotted[strings.ToLower(res.Resource+"."+res.Group)] {
		return true
	}
	for _, n := range names(res) {
		if m.bare[n] && (res.Group == "" || !m.coreNames[n]) {
			return true
		}
	}
	return false
}

// names are the lower-case bare names a resource answers to.
func names(res Resource) []string {
	out := []string{strings.ToLower(res.Resource), strings.ToLower(res.Kind)}
	if res.Singular != "" {
		out = append(out, strings.ToLower(res.Singular))
	}
	for _, s := range res.ShortNames {
		out = append(out, strings.ToLower(s))
	}
	return out
}
