// Package filter decides which resource types and which objects are backed
// up. It does no I/O: every decision is a pure function of the rules and the
// object, so that it can be tested exhaustively and explained in a log line.
// The rules also carry the ConfigMap keys that shape a stored document
// (include-status, max-resource-size, validate-yaml...); package encode acts
// on those.
package filter

import "k8s.io/apimachinery/pkg/labels"

// Mode is the filtering-mode of the ConfigMap.
type Mode string

// Filtering modes.
const (
	Whitelist Mode = "whitelist"
	Blacklist Mode = "blacklist"
	Hybrid    Mode = "hybrid"
)

// OpenShiftMode is the openshift-mode of the ConfigMap.
type OpenShiftMode string

// OpenShift modes.
const (
	OpenShiftAuto     OpenShiftMode = "auto"
	OpenShiftEnabled  OpenShiftMode = "enabled"
	OpenShiftDisabled OpenShiftMode = "disabled"
)

// Rules are the parsed filtering keys of the ConfigMap.
type Rules struct {
	Mode                      Mode
	IncludeResources          []string
	ExcludeResources          []string
	IncludeNamespaces         []string
	ExcludeNamespaces         []string
	IncludeCRDs               []string
	LabelSelector             labels.Selector
	AnnotationSelector        labels.Selector
	MaxResourceSize           int64 // bytes of encoded YAML; 0 means no limit
	FollowOwnerReferences     bool
	IncludeManagedFields      bool
	IncludeStatus             bool
	OpenShiftMode             OpenShiftMode
	IncludeOpenShiftResources bool
	ValidateYAML              bool
	SkipInvalidResources      bool
	// IncludeServiceAccountTokens stores Secrets of type
	// kubernetes.io/service-account-token: working credentials for whoever
	// reads the bucket, which a restore never needs (the control plane
	// issues new ones).
	IncludeServiceAccountTokens bool
}

// DefaultExcludeResources are excluded when the ConfigMap has no
// exclude-resources key: high-churn types that are rebuilt by the cluster.
var DefaultExcludeResources = []string{
	"events",
	"events.events.k8s.io",
	"leases",
	"endpoints",
	"endpointslices",
}

// DefaultRules are the rules in force when the ConfigMap sets nothing.
func DefaultRules() Rules {
	return Rules{
		Mode:                      Blacklist,
		ExcludeResources:          append([]string(nil), DefaultExcludeResources...),
		LabelSelector:             labels.Everything(),
		AnnotationSelector:        labels.Everything(),
		OpenShiftMode:             OpenShiftAuto,
		IncludeOpenShiftResources: true,
		ValidateYAML:              true,
		SkipInvalidResources:      true,
	}
}
