package restore

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"

	"github.com/cluster-backup/cluster-backup/encode"
)

// Decode reads a stored document back as an object.
func Decode(body []byte) (*unstructured.Unstructured, error) {
	j, err := yaml.YAMLToJSON(body)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(j); err != nil {
		return nil, err
	}
	return u, nil
}

// Sanitize makes obj fit to be created anew in a cluster, as the best
// peers do: what the API server assigns (uid, resourceVersion, generation,
// creationTimestamp, selfLink, managedFields, status, generateName) is
// dropped, and so is what a controller or the scheduler fills in for this
// cluster only: a Service's cluster IPs and, unless preserveNodePorts, its
// node ports; a Pod's nodeName; a Job's controller-uid selector and labels;
// a PVC's binding to a volume; a Deployment's revision.
func Sanitize(obj *unstructured.Unstructured, preserveNodePorts bool) {
	for _, f := range []string{"uid", "resourceVersion", "generation", "creationTimestamp", "selfLink", "managedFields", "generateName", "deletionTimestamp", "deletionGracePeriodSeconds"} {
		unstructured.RemoveNestedField(obj.Object, "metadata", f)
	}
	unstructured.RemoveNestedField(obj.Object, "status")
	removeAnnotations(obj, "deployment.kubernetes.io/revision", "deployment.kubernetes.io/desired-replicas", "deployment.kubernetes.io/max-replicas")
	gk := obj.GroupVersionKind().GroupKind()
	switch gk {
	case schema.GroupKind{Kind: "Service"}:
		if ip, _, _ := unstructured.NestedString(obj.Object, "spec", "clusterIP"); ip != "None" {
			unstructured.RemoveNestedField(obj.Object, "spec", "clusterIP")
			unstructured.RemoveNestedField(obj.Object, "spec", "clusterIPs")
		}
		if !preserveNodePorts {
			unstructured.RemoveNestedField(obj.Object, "spec", "healthCheckNodePort")
			if ports, ok, _ := unstructured.NestedSlice(obj.Object, "spec", "ports"); ok {
				for _, p := range ports {
					if m, ok := p.(map[string]any); ok {
						delete(m, "nodePort")
					}
				}
				_ = unstructured.SetNestedSlice(obj.Object, ports, "spec", "ports")
			}
		}
	case schema.GroupKind{Kind: "Pod"}:
		unstructured.RemoveNestedField(obj.Object, "spec", "nodeName")
	case schema.GroupKind{Group: "batch", Kind: "Job"}:
		for _, l := range []string{"controller-uid", "batch.kubernetes.io/controller-uid"} {
			unstructured.RemoveNestedField(obj.Object, "spec", "selector", "matchLabels", l)
			unstructured.RemoveNestedField(obj.Object, "spec", "template", "metadata", "labels", l)
		}
		if labels, _, _ := unstructured.NestedMap(obj.Object, "spec", "selector", "matchLabels"); len(labels) == 0 {
			unstructured.RemoveNestedField(obj.Object, "spec", "selector")
		}
	case schema.GroupKind{Kind: "PersistentVolumeClaim"}:
		unstructured.RemoveNestedField(obj.Object, "spec", "volumeName")
		removeAnnotations(obj, "pv.kubernetes.io/bind-completed", "pv.kubernetes.io/bound-by-controller",
			"volume.beta.kubernetes.io/storage-provisioner", "volume.kubernetes.io/storage-provisioner", "volume.kubernetes.io/selected-node")
	case schema.GroupKind{Kind: "PersistentVolume"}:
		unstructured.RemoveNestedField(obj.Object, "spec", "claimRef", "uid")
		unstructured.RemoveNestedField(obj.Object, "spec", "claimRef", "resourceVersion")
	}
}

func removeAnnotations(obj *unstructured.Unstructured, keys ...string) {
	a := obj.GetAnnotations()
	if len(a) == 0 {
		return
	}
	for _, k := range keys {
		delete(a, k)
	}
	if len(a) == 0 {
		a = nil
	}
	obj.SetAnnotations(a)
}

// controllerCreates are, for each workload kind, the kinds of objects its
// controller creates from its spec: an object of one of them controlled by
// a restored workload is not restored, the controller makes it anew. Any
// other object a workload controls (a ConfigMap or Secret a Deployment
// controls, a StatefulSet's claim under the WhenDeleted: Delete policy,
// which holds the data) nobody recreates, and is restored.
var controllerCreates = map[schema.GroupKind][]schema.GroupKind{
	{Group: "apps", Kind: "Deployment"}:  {{Group: "apps", Kind: "ReplicaSet"}},
	{Group: "apps", Kind: "ReplicaSet"}:  {{Kind: "Pod"}},
	{Group: "apps", Kind: "StatefulSet"}: {{Kind: "Pod"}},
	{Group: "apps", Kind: "DaemonSet"}:   {{Kind: "Pod"}},
	{Group: "batch", Kind: "Job"}:        {{Kind: "Pod"}},
	{Group: "batch", Kind: "CronJob"}:    {{Group: "batch", Kind: "Job"}},
	{Kind: "ReplicationController"}:      {{Kind: "Pod"}},
}

// ownerKey identifies an owner within a namespace by kind and name.
type ownerKey struct {
	group, kind, namespace, name string
}

func ownerKeyOf(obj *unstructured.Unstructured) ownerKey {
	gvk := obj.GroupVersionKind()
	return ownerKey{group: gvk.Group, kind: gvk.Kind, namespace: obj.GetNamespace(), name: obj.GetName()}
}

// refKey is the ownerKey an owner reference of obj points at.
func refKey(obj *unstructured.Unstructured, apiVersion, kind, name string) ownerKey {
	gv, _ := schema.ParseGroupVersion(apiVersion)
	return ownerKey{group: gv.Group, kind: kind, namespace: obj.GetNamespace(), name: name}
}

// SkipReason says why obj is not restored, or "" when it is: the control
// plane makes and maintains it (see ControlPlaneRules; includeControlPlane
// lifts those that are not a cluster's own by nature), or a controller
// recreates it from an owner that is restored too.
func SkipReason(obj *unstructured.Unstructured, restored func(ownerKey) bool, includeControlPlane bool) string {
	if rule, ok := controlPlaneRule(obj); ok && (rule.Always || !includeControlPlane) && !rule.AbsentOnly {
		return rule.Reason
	}
	gk := obj.GroupVersionKind().GroupKind()
	for _, ref := range obj.GetOwnerReferences() {
		if ref.Controller == nil || !*ref.Controller {
			continue
		}
		gv, _ := schema.ParseGroupVersion(ref.APIVersion)
		owner := schema.GroupKind{Group: gv.Group, Kind: ref.Kind}
		if slices.Contains(controllerCreates[owner], gk) && restored(refKey(obj, ref.APIVersion, ref.Kind, ref.Name)) {
			return "created by its controller from " + ref.Kind + "/" + ref.Name + ", which is restored"
		}
	}
	return ""
}

func typeOf(obj *unstructured.Unstructured) string {
	t, _, _ := unstructured.NestedString(obj.Object, "type")
	return t
}

// MapNamespaces moves obj to the namespaces mapping names, wherever an
// object names a namespace: its own namespace (or its name, for a
// Namespace, with its kubernetes.io/metadata.name label); the subjects of a
// RoleBinding or ClusterRoleBinding (a subject's namespace, the group
// system:serviceaccounts:NS and the user system:serviceaccount:NS:NAME); a
// NetworkPolicy's namespace selectors on kubernetes.io/metadata.name; and
// a PersistentVolume's claimRef.
func MapNamespaces(obj *unstructured.Unstructured, mapping map[string]string) {
	if len(mapping) == 0 {
		return
	}
	if to, ok := mapping[obj.GetNamespace()]; ok && obj.GetNamespace() != "" {
		obj.SetNamespace(to)
	}
	gk := obj.GroupVersionKind().GroupKind()
	switch gk {
	case schema.GroupKind{Kind: "Namespace"}:
		if to, ok := mapping[obj.GetName()]; ok {
			obj.SetName(to)
			if labels := obj.GetLabels(); labels[namespaceNameLabel] != "" {
				labels[namespaceNameLabel] = to
				obj.SetLabels(labels)
			}
		}
	case schema.GroupKind{Group: "rbac.authorization.k8s.io", Kind: "RoleBinding"}, schema.GroupKind{Group: "rbac.authorization.k8s.io", Kind: "ClusterRoleBinding"}:
		subjects, _, _ := unstructured.NestedSlice(obj.Object, "subjects")
		for _, s := range subjects {
			if m, ok := s.(map[string]any); ok {
				mapSubject(m, mapping)
			}
		}
		if subjects != nil {
			_ = unstructured.SetNestedSlice(obj.Object, subjects, "subjects")
		}
	case schema.GroupKind{Group: "networking.k8s.io", Kind: "NetworkPolicy"}:
		for _, dir := range []struct{ rules, peers string }{{"ingress", "from"}, {"egress", "to"}} {
			rules, _, _ := unstructured.NestedSlice(obj.Object, "spec", dir.rules)
			for _, rule := range rules {
				peers, _ := rule.(map[string]any)[dir.peers].([]any)
				for _, peer := range peers {
					if sel, ok := peer.(map[string]any)["namespaceSelector"].(map[string]any); ok {
						mapNamespaceSelector(sel, mapping)
					}
				}
			}
			if rules != nil {
				_ = unstructured.SetNestedSlice(obj.Object, rules, "spec", dir.rules)
			}
		}
	case schema.GroupKind{Kind: "PersistentVolume"}:
		if ns, _, _ := unstructured.NestedString(obj.Object, "spec", "claimRef", "namespace"); ns != "" {
			if to, ok := mapping[ns]; ok {
				_ = unstructured.SetNestedField(obj.Object, to, "spec", "claimRef", "namespace")
			}
		}
	}
}

// namespaceNameLabel is the label every Namespace carries with its name.
const namespaceNameLabel = "kubernetes.io/metadata.name"

// The RBAC names of a namespace's service accounts.
const (
	serviceAccountsGroup = "system:serviceaccounts:"
	serviceAccountUser   = "system:serviceaccount:"
)

// mapSubject moves one RBAC subject to the mapped namespace.
func mapSubject(m map[string]any, mapping map[string]string) {
	if ns, _ := m["namespace"].(string); ns != "" {
		if to, ok := mapping[ns]; ok {
			m["namespace"] = to
		}
	}
	name, _ := m["name"].(string)
	switch m["kind"] {
	case "Group":
		if ns, ok := strings.CutPrefix(name, serviceAccountsGroup); ok {
			if to, ok := mapping[ns]; ok {
				m["name"] = serviceAccountsGroup + to
			}
		}
	case "User":
		if rest, ok := strings.CutPrefix(name, serviceAccountUser); ok {
			if ns, account, ok := strings.Cut(rest, ":"); ok {
				if to, ok := mapping[ns]; ok {
					m["name"] = serviceAccountUser + to + ":" + account
				}
			}
		}
	}
}

// mapNamespaceSelector moves a label selector's terms on
// kubernetes.io/metadata.name to the mapped namespaces.
func mapNamespaceSelector(sel map[string]any, mapping map[string]string) {
	if labels, ok := sel["matchLabels"].(map[string]any); ok {
		if ns, _ := labels[namespaceNameLabel].(string); ns != "" {
			if to, ok := mapping[ns]; ok {
				labels[namespaceNameLabel] = to
			}
		}
	}
	exprs, _ := sel["matchExpressions"].([]any)
	for _, e := range exprs {
		expr, _ := e.(map[string]any)
		if expr["key"] != namespaceNameLabel {
			continue
		}
		values, _ := expr["values"].([]any)
		for i, v := range values {
			if ns, _ := v.(string); ns != "" {
				if to, ok := mapping[ns]; ok {
					values[i] = to
				}
			}
		}
	}
}

// Wave is the step of a restore in which an object is applied: each wave
// only after the one before has been applied.
type Wave int

// The waves of a restore, in order.
const (
	WaveCRDs          Wave = iota // CustomResourceDefinitions, then wait until Established
	WaveCluster                   // Namespaces and cluster-wide prerequisites
	WaveConfiguration             // what workloads read: accounts, secrets, config, RBAC, quotas, claims, Services
	WaveWorkloads                 // Deployments, StatefulSets, DaemonSets, Jobs, CronJobs, Pods
	WaveRest                      // custom resources, Ingresses, HPAs, PDBs, NetworkPolicies, ...
	WaveAdmission                 // webhooks and APIServices last: they must not block their own backends
	waves
)

var waveOfKind = map[schema.GroupKind]Wave{
	{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition"}: WaveCRDs,
	{Kind: "Namespace"}: WaveCluster,
	{Group: "scheduling.k8s.io", Kind: "PriorityClass"}:              WaveCluster,
	{Group: "storage.k8s.io", Kind: "StorageClass"}:                  WaveCluster,
	{Group: "rbac.authorization.k8s.io", Kind: "ClusterRole"}:        WaveCluster,
	{Group: "rbac.authorization.k8s.io", Kind: "ClusterRoleBinding"}: WaveCluster,
	{Kind: "PersistentVolume"}:                                       WaveCluster,
	{Kind: "ServiceAccount"}:                                         WaveConfiguration,
	{Kind: "Secret"}:                                                 WaveConfiguration,
	{Kind: "ConfigMap"}:                                              WaveConfiguration,
	{Group: "rbac.authorization.k8s.io", Kind: "Role"}:               WaveConfiguration,
	{Group: "rbac.authorization.k8s.io", Kind: "RoleBinding"}:        WaveConfiguration,
	{Kind: "LimitRange"}:                                             WaveConfiguration,
	{Kind: "ResourceQuota"}:                                          WaveConfiguration,
	{Kind: "PersistentVolumeClaim"}:                                  WaveConfiguration,
	{Kind: "Service"}:                                                WaveConfiguration,
	{Group: "apps", Kind: "Deployment"}:                              WaveWorkloads,
	{Group: "apps", Kind: "StatefulSet"}:                             WaveWorkloads,
	{Group: "apps", Kind: "DaemonSet"}:                               WaveWorkloads,
	{Group: "apps", Kind: "ReplicaSet"}:                              WaveWorkloads,
	{Group: "batch", Kind: "Job"}:                                    WaveWorkloads,
	{Group: "batch", Kind: "CronJob"}:                                WaveWorkloads,
	{Kind: "Pod"}:                                                    WaveWorkloads,
	{Kind: "ReplicationController"}:                                  WaveWorkloads,
	{Group: "admissionregistration.k8s.io", Kind: "ValidatingWebhookConfiguration"}:   WaveAdmission,
	{Group: "admissionregistration.k8s.io", Kind: "MutatingWebhookConfiguration"}:     WaveAdmission,
	{Group: "admissionregistration.k8s.io", Kind: "ValidatingAdmissionPolicy"}:        WaveAdmission,
	{Group: "admissionregistration.k8s.io", Kind: "ValidatingAdmissionPolicyBinding"}: WaveAdmission,
	{Group: "apiregistration.k8s.io", Kind: "APIService"}:                             WaveAdmission,
}

// waveNames are the waves as --priorities names them.
var waveNames = []string{"crds", "cluster", "configuration", "workloads", "rest", "admission"}

// ParseWave reads a wave's name (crds, cluster, configuration, workloads,
// rest, admission).
func ParseWave(name string) (Wave, error) {
	for i, n := range waveNames {
		if n == name {
			return Wave(i), nil
		}
	}
	return 0, fmt.Errorf("unknown wave %q: want one of %s", name, strings.Join(waveNames, ", "))
}

// Comparable is obj as a restore compares it with the live object: cleaned
// by the backup's own cleaner and sanitised, with owner references compared
// by kind and name (their UIDs differ by cluster), as canonical JSON.
func Comparable(obj *unstructured.Unstructured, preserveNodePorts bool) ([]byte, error) {
	c := encode.Options{}.Clean(obj)
	Sanitize(c, preserveNodePorts)
	if refs := c.GetOwnerReferences(); len(refs) > 0 {
		for i := range refs {
			refs[i].UID = ""
		}
		c.SetOwnerReferences(refs)
	}
	b, err := json.Marshal(c.Object)
	if err != nil {
		return nil, fmt.Errorf("%s/%s: %w", c.GetNamespace(), c.GetName(), err)
	}
	return b, nil
}
