package restore

import (
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// ControlPlaneRule is one kind of object that a cluster makes and maintains
// for itself. Restored into a new control plane, the old cluster's copy
// fights the new one's controllers, or trusts the old cluster's keys: a
// restore leaves such objects alone unless --include-control-plane.
type ControlPlaneRule struct {
	Match   string // what it matches, as docs/restore.md says it
	Reason  string // why, as the report says it
	Example string // an object it matches, as kind namespace/name
	// Always: not even --include-control-plane writes it; it belongs to
	// the cluster it was read from (a Node, an Event, a leader lock).
	Always bool
	// AbsentOnly: created where the cluster lacks it, never written over
	// a live object.
	AbsentOnly bool
	matches    func(obj *unstructured.Unstructured) bool
}

// ControlPlaneRules are the rules, in the order they are tried; the first
// that matches applies.
var ControlPlaneRules = []ControlPlaneRule{
	{Match: "Nodes, Events, CSINodes, VolumeAttachments, ControllerRevisions, ComponentStatuses", Example: "Node worker-1", Always: true,
		Reason:  "never restored: it belongs to the cluster it was read from",
		matches: kinds(gk("", "Node"), gk("", "Event"), gk("events.k8s.io", "Event"), gk("storage.k8s.io", "CSINode"), gk("storage.k8s.io", "VolumeAttachment"), gk("apps", "ControllerRevision"), gk("", "ComponentStatus"))},
	{Match: "Leases and LeaseCandidates", Example: "Lease kube-node-lease/worker-1", Always: true,
		Reason:  "never restored: a lease is a live lock or heartbeat, and an old one unseats a leader",
		matches: kinds(gk("coordination.k8s.io", "Lease"), gk("coordination.k8s.io", "LeaseCandidate"))},
	{Match: "mirror Pods (annotation kubernetes.io/config.mirror)", Example: "Pod kube-system/etcd-node-1", Always: true,
		Reason: "a mirror Pod of a static Pod: its kubelet makes it",
		matches: func(o *unstructured.Unstructured) bool {
			return is(o, "", "Pod") && o.GetAnnotations()["kubernetes.io/config.mirror"] != ""
		}},
	{Match: "Secrets of type kubernetes.io/service-account-token", Example: "Secret shop/robot-token", Always: true,
		Reason: "a service-account token: the cluster issues its own, signed by its own key",
		matches: func(o *unstructured.Unstructured) bool {
			return is(o, "", "Secret") && strings.EqualFold(typeOf(o), "kubernetes.io/service-account-token")
		}},
	{Match: "Secrets of type bootstrap.kubernetes.io/token", Example: "Secret kube-system/bootstrap-token-abcdef",
		Reason: "a bootstrap token: the old cluster's join token would become a credential of this one",
		matches: func(o *unstructured.Unstructured) bool {
			return is(o, "", "Secret") && typeOf(o) == "bootstrap.kubernetes.io/token"
		}},
	{Match: "ConfigMaps kube-root-ca.crt (every namespace)", Example: "ConfigMap shop/kube-root-ca.crt",
		Reason: "kube-root-ca.crt: the cluster publishes its own CA",
		matches: func(o *unstructured.Unstructured) bool {
			return is(o, "", "ConfigMap") && o.GetName() == "kube-root-ca.crt"
		}},
	{Match: "ConfigMaps kube-system/extension-apiserver-authentication and kube-system/kube-apiserver-legacy-service-account-token-tracking", Example: "ConfigMap kube-system/extension-apiserver-authentication",
		Reason:  "the API server's own: an old client CA written here stays trusted by the aggregation layer",
		matches: named(gk("", "ConfigMap"), "kube-system/extension-apiserver-authentication", "kube-system/kube-apiserver-legacy-service-account-token-tracking")},
	{Match: "kubeadm state: ConfigMaps kube-public/cluster-info, kube-system/kubeadm-config, kubelet-config, kube-proxy; Secret kube-system/kubeadm-certs", Example: "ConfigMap kube-public/cluster-info",
		Reason: "kubeadm's record of this cluster's CA, endpoint and component settings",
		matches: func(o *unstructured.Unstructured) bool {
			return named(gk("", "ConfigMap"), "kube-public/cluster-info", "kube-system/kubeadm-config", "kube-system/kubelet-config", "kube-system/kube-proxy")(o) ||
				named(gk("", "Secret"), "kube-system/kubeadm-certs")(o)
		}},
	{Match: "the API server's Service, Endpoints and EndpointSlice default/kubernetes", Example: "Endpoints default/kubernetes",
		Reason: "the API server's own: its addresses are the live API servers",
		matches: func(o *unstructured.Unstructured) bool {
			return o.GetNamespace() == "default" && o.GetName() == "kubernetes" &&
				(is(o, "", "Service") || is(o, "", "Endpoints") || is(o, "discovery.k8s.io", "EndpointSlice"))
		}},
	{Match: "EndpointSlices and Endpoints with a managed-by label", Example: "EndpointSlice shop/web-x7k2p",
		Reason: "its controller computes it from the Pods",
		matches: func(o *unstructured.Unstructured) bool {
			return (is(o, "discovery.k8s.io", "EndpointSlice") && o.GetLabels()["endpointslice.kubernetes.io/managed-by"] != "") ||
				(is(o, "", "Endpoints") && o.GetLabels()["endpoints.kubernetes.io/managed-by"] != "")
		}},
	{Match: "APIServices labelled kube-aggregator.kubernetes.io/automanaged", Example: "APIService v1.apps",
		Reason: "an APIService the API server manages",
		matches: func(o *unstructured.Unstructured) bool {
			return is(o, "apiregistration.k8s.io", "APIService") && o.GetLabels()["kube-aggregator.kubernetes.io/automanaged"] != ""
		}},
	{Match: "ClusterTrustBundles whose signerName starts with kubernetes.io/", Example: "ClusterTrustBundle kubernetes.io:kube-apiserver-serving:abc",
		Reason: "a bundle the control plane publishes: an old one trusts the old cluster's signer",
		matches: func(o *unstructured.Unstructured) bool {
			signer, _, _ := unstructured.NestedString(o.Object, "spec", "signerName")
			return is(o, "certificates.k8s.io", "ClusterTrustBundle") && strings.HasPrefix(signer, "kubernetes.io/")
		}},
	{Match: "CertificateSigningRequests", Example: "CertificateSigningRequest csr-8x2lq",
		Reason:  "a request of one node or client of the old cluster; recreated, it may be approved again",
		matches: kinds(gk("certificates.k8s.io", "CertificateSigningRequest"))},
	{Match: "IPAddresses labelled ipaddress.kubernetes.io/managed-by: ipallocator.k8s.io", Example: "IPAddress 10.96.0.10",
		Reason: "a Service IP allocation: the API server allocates its own and deletes what no Service holds",
		matches: func(o *unstructured.Unstructured) bool {
			return is(o, "networking.k8s.io", "IPAddress") && o.GetLabels()["ipaddress.kubernetes.io/managed-by"] == "ipallocator.k8s.io"
		}},
	{Match: "the ServiceCIDR kubernetes", Example: "ServiceCIDR kubernetes",
		Reason:  "built from the API server's flags",
		matches: named(gk("networking.k8s.io", "ServiceCIDR"), "kubernetes")},
	{Match: "FlowSchemas and PriorityLevelConfigurations annotated apf.kubernetes.io/autoupdate-spec: \"true\", and exempt and catch-all", Example: "FlowSchema system-leader-election",
		Reason: "the API server keeps its bootstrap configuration up to date itself",
		matches: func(o *unstructured.Unstructured) bool {
			if !is(o, "flowcontrol.apiserver.k8s.io", "FlowSchema") && !is(o, "flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration") {
				return false
			}
			return o.GetAnnotations()["apf.kubernetes.io/autoupdate-spec"] == "true" || o.GetName() == "exempt" || o.GetName() == "catch-all"
		}},
	{Match: "RBAC objects annotated rbac.authorization.kubernetes.io/autoupdate: \"true\"", Example: "ClusterRole system:controller:job-controller",
		Reason: "a default role or binding the API server reconciles at each start: an older copy removes rules a newer version added",
		matches: func(o *unstructured.Unstructured) bool {
			return o.GroupVersionKind().Group == "rbac.authorization.k8s.io" && o.GetAnnotations()["rbac.authorization.kubernetes.io/autoupdate"] == "true"
		}},
	{Match: "PriorityClasses named system-*", Example: "PriorityClass system-node-critical",
		Reason: "the API server creates it and refuses changes to it",
		matches: func(o *unstructured.Unstructured) bool {
			return is(o, "scheduling.k8s.io", "PriorityClass") && strings.HasPrefix(o.GetName(), "system-")
		}},
	{Match: "Namespaces default, kube-system, kube-public, kube-node-lease", Example: "Namespace kube-system", AbsentOnly: true,
		Reason:  "exists: the control plane made its own",
		matches: named(gk("", "Namespace"), systemNamespaces...)},
	{Match: "everything else in kube-system, kube-public, kube-node-lease", Example: "Deployment kube-system/coredns", AbsentOnly: true,
		Reason: "exists: the new control plane set up its own system namespaces",
		matches: func(o *unstructured.Unstructured) bool {
			return o.GetNamespace() != "default" && slices.Contains(systemNamespaces, o.GetNamespace())
		}},
	{Match: "ClusterRoles and ClusterRoleBindings named kubeadm:*", Example: "ClusterRoleBinding kubeadm:kubelet-bootstrap", AbsentOnly: true,
		Reason: "exists: kubeadm set up the new cluster's own",
		matches: func(o *unstructured.Unstructured) bool {
			return o.GroupVersionKind().Group == "rbac.authorization.k8s.io" && o.GetNamespace() == "" && strings.HasPrefix(o.GetName(), "kubeadm:")
		}},
}

// systemNamespaces are the namespaces a control plane makes for itself.
var systemNamespaces = []string{"default", "kube-system", "kube-public", "kube-node-lease"}

// controlPlaneRule is the first rule that matches obj.
func controlPlaneRule(obj *unstructured.Unstructured) (ControlPlaneRule, bool) {
	for _, r := range ControlPlaneRules {
		if r.matches(obj) {
			return r, true
		}
	}
	return ControlPlaneRule{}, false
}

func gk(group, kind string) schema.GroupKind { return schema.GroupKind{Group: group, Kind: kind} }

func is(o *unstructured.Unstructured, group, kind string) bool {
	return o.GroupVersionKind().GroupKind() == gk(group, kind)
}

func kinds(gks ...schema.GroupKind) func(*unstructured.Unstructured) bool {
	return func(o *unstructured.Unstructured) bool {
		for _, k := range gks {
			if o.GroupVersionKind().GroupKind() == k {
				return true
			}
		}
		return false
	}
}

// named matches objects of one kind by name, or by namespace/name.
func named(kind schema.GroupKind, names ...string) func(*unstructured.Unstructured) bool {
	return func(o *unstructured.Unstructured) bool {
		if o.GroupVersionKind().GroupKind() != kind {
			return false
		}
		id := o.GetName()
		if o.GetNamespace() != "" {
			id = o.GetNamespace() + "/" + id
		}
		return slices.Contains(names, id)
	}
}
