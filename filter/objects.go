package filter

import (
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
)

// maxOwnerDepth bounds the owner chain walk; real chains are 2-3 long
// (Deployment -> ReplicaSet -> Pod), and a cycle must not loop forever.
const maxOwnerDepth = 10

// Owners finds the owner an ownerReference points at, in the owned object's
// namespace ("" for cluster-scoped owners). The second result is false when
// the owner is not known. selected says whether the owner's type is backed
// up, so that the owner itself can be judged.
type Owners interface {
	Owner(namespace string, ref metav1.OwnerReference) (owner metav1.Object, selected, ok bool)
}

// KeepObject decides whether an object of a resource type is backed up.
// typeSelected says whether its type passed SelectResources; with
// follow-owner-references, an object of an unselected type, or one that the
// selectors drop, is kept when its owner chain reaches a kept object. The
// reason is empty when the object is kept.
//
// A Secret of type kubernetes.io/service-account-token is never kept
// without include-service-account-tokens, whatever its owners: obj tells
// its type through SecretType (the watcher's cache objects), or is the
// Secret itself.
func (r Rules) KeepObject(res Resource, obj metav1.Object, typeSelected bool, owners Owners) (bool, string) {
	if res.Group == "" && res.Resource == "secrets" && !r.IncludeServiceAccountTokens && SecretType(obj) == ServiceAccountTokenType {
		return false, ReasonServiceAccountToken
	}
	return r.keep(res.Group == "" && res.Resource == "namespaces", obj, typeSelected, owners, 0)
}

// ServiceAccountTokenType is the type of a Secret holding a service
// account's token.
const ServiceAccountTokenType = "kubernetes.io/service-account-token"

// SecretType is the type of a Secret: what obj's SecretType method says,
// or its type field.
func SecretType(obj metav1.Object) string {
	switch o := obj.(type) {
	case interface{ SecretType() string }:
		return o.SecretType()
	case *unstructured.Unstructured:
		t, _, _ := unstructured.NestedString(o.Object, "type")
		return t
	}
	return ""
}

func (r Rules) keep(isNamespace bool, obj metav1.Object, typeSelected bool, owners Owners, depth int) (bool, string) {
	ns := obj.GetNamespace()
	if isNamespace {
		ns = obj.GetName()
	}
	if ns != "" {
		if slices.Contains(r.ExcludeNamespaces, ns) {
			return false, ReasonNamespaceExcluded
		}
		if len(r.IncludeNamespaces) > 0 && !slices.Contains(r.IncludeNamespaces, ns) {
			return false, ReasonNamespaceNotListed
		}
	}
	reason := ""
	switch {
	case !typeSelected:
		reason = ReasonNotInWhitelist
	case r.LabelSelector != nil && !r.LabelSelector.Matches(labels.Set(obj.GetLabels())):
		reason = ReasonLabelSelector
	case r.AnnotationSelector != nil && !r.AnnotationSelector.Matches(labels.Set(obj.GetAnnotations())):
		reason = ReasonAnnotationSelector
	}
	if reason == "" {
		return true, ""
	}
	if r.FollowOwnerReferences && owners != nil && depth < maxOwnerDepth {
		for _, ref := range obj.GetOwnerReferences() {
			owner, selected, ok := owners.Owner(obj.GetNamespace(), ref)
			if !ok || owner.GetUID() != ref.UID {
				continue
			}
			if kept, _ := r.keep(false, owner, selected, owners, depth+1); kept {
				return true, ""
			}
		}
	}
	return false, reason
}

// SelectsLabels reports whether the label selector selects anything less
// than everything, so that objects' labels must be kept for it.
func (r Rules) SelectsLabels() bool {
	return r.LabelSelector != nil && !r.LabelSelector.Empty()
}

// AnnotationKeys are the annotation keys the rules look at: those of the
// annotation selector. A cache that keeps only these holds no large
// annotations (such as kubectl's last-applied-configuration) twice.
func (r Rules) AnnotationKeys() []string {
	if r.AnnotationSelector == nil {
		return nil
	}
	reqs, _ := r.AnnotationSelector.Requirements()
	keys := make([]string, 0, len(reqs))
	for _, req := range reqs {
		keys = append(keys, req.Key())
	}
	return keys
}
