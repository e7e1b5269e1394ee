// Package charts holds the tests of the Helm chart: lint, rendering of each
// feature, and a server-side dry run of the rendered manifests against a real
// API server.
package charts

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/cluster-backup/cluster-backup/testenv"
)

const chart = "cluster-backup"

func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin := testenv.Require(t, "helm")[0]
	var out, stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return "", errors.New(stderr.String() + out.String())
	}
	return out.String(), nil
}

// render templates the chart with the given values files and --set flags.
func render(t *testing.T, files []string, set ...string) []*unstructured.Unstructured {
	t.Helper()
	args := []string{"template", "release", chart, "--namespace", "backup-system"}
	for _, f := range files {
		args = append(args, "-f", f)
	}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	out, err := helm(t, args...)
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	return decode(t, out)
}

func decode(t *testing.T, manifests string) []*unstructured.Unstructured {
	t.Helper()
	objs, err := testenv.DecodeManifests(manifests)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func find(objs []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// one is the service's one object of kind (git-sync's and the web view's,
// labelled with their component, aside).
func one(t *testing.T, objs []*unstructured.Unstructured, kind string) *unstructured.Unstructured {
	t.Helper()
	var found []*unstructured.Unstructured
	for _, o := range find(objs, kind) {
		if o.GetLabels()[gitSyncLabel] == "" {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one %s, got %d", kind, len(found))
	}
	return found[0]
}

var defaults = []string{chart + "/ci/default-values.yaml"}
var full = []string{chart + "/ci/full-values.yaml"}

func TestLintStrict(t *testing.T) {
	for _, f := range append(defaults, full...) {
		if out, err := helm(t, "lint", "--strict", chart, "-f", f); err != nil {
			t.Errorf("helm lint --strict -f %s: %v\n%s", f, err, out)
		}
	}
}

func podSpec(t *testing.T, o *unstructured.Unstructured) map[string]any {
	t.Helper()
	path := []string{"spec", "template", "spec"}
	if o.GetKind() == "CronJob" {
		path = []string{"spec", "jobTemplate", "spec", "template", "spec"}
	}
	spec, ok, err := unstructured.NestedMap(o.Object, path...)
	if !ok || err != nil {
		t.Fatalf("no pod spec in %s", o.GetKind())
	}
	return spec
}

func container(t *testing.T, spec map[string]any) map[string]any {
	t.Helper()
	cs, _, _ := unstructured.NestedSlice(spec, "containers")
	if len(cs) != 1 {
		t.Fatalf("%d containers", len(cs))
	}
	return cs[0].(map[string]any)
}

const gitSyncLabel = "app.kubernetes.io/component"

// TestGitSync renders git-sync's Deployment: it reads the bucket only (no
// service account token), runs as the service does (UID 1001, read-only
// root), writes only to its volumes, gets the store's and the integrity
// key's settings and the git credentials file, has labels no selector of
// the service takes for its own, and is alerted on.
func TestGitSync(t *testing.T) {
	objs := render(t, full)
	var deps []*unstructured.Unstructured
	for _, o := range find(objs, "Deployment") {
		if o.GetLabels()[gitSyncLabel] == "git-sync" {
			deps = append(deps, o)
		}
	}
	if len(deps) != 1 {
		t.Fatalf("%d git-sync Deployments, want 1", len(deps))
	}
	spec := podSpec(t, deps[0])
	c := container(t, spec)
	for path, want := range map[string]any{
		"automountServiceAccountToken":             false,
		"securityContext.runAsUser":                int64(1001),
		"c.securityContext.readOnlyRootFilesystem": true,
		"c.args.0":                     "git-sync",
		"c.image":                      "ghcr.io/cluster-backup/cluster-backup-git:0.1.0",
		"volumes.2.secret.secretName":  "git-credentials",
		"volumes.2.secret.defaultMode": int64(0o400),
	} {
		root, p := spec, path
		if strings.HasPrefix(path, "c.") {
			root, p = c, path[2:]
		}
		if got := walk(root, strings.Split(p, ".")); !equal(got, want) {
			t.Errorf("%s = %#v, want %#v", path, got, want)
		}
	}
	env := envOf(t, deps[0])
	for name, want := range map[string]string{
		"GIT_REPOSITORY": "https://git.example.com/ops/cluster-history.git", "GIT_BRANCH": "main", "GIT_COMMIT_WINDOW": "10s",
		"GIT_CREDENTIALS_FILE": "/etc/cluster-backup/git/credentials", "GIT_WORKDIR": "/var/lib/git-sync/clone",
		"CLUSTER_NAME": "production-east", "MINIO_ENDPOINT": "minio.backup-system.svc:9000", "MINIO_CA_FILE": "/etc/cluster-backup/ca/ca.crt",
	} {
		if got := env[name]["value"]; got != want {
			t.Errorf("%s = %v, want %q", name, got, want)
		}
	}
	for _, name := range []string{"MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", "INTEGRITY_KEY"} {
		if env[name]["valueFrom"] == nil {
			t.Errorf("%s is not read from a Secret: %v", name, env[name])
		}
	}
	// Every writable path is a volume.
	mounts := map[string]bool{}
	for _, m := range c["volumeMounts"].([]any) {
		mounts[m.(map[string]any)["mountPath"].(string)] = true
	}
	for _, p := range []string{"/var/lib/git-sync", "/tmp", "/etc/cluster-backup/git"} {
		if !mounts[p] {
			t.Errorf("no volume at %s: %v", p, mounts)
		}
	}
	// The service's selectors and ServiceMonitor never match git-sync's
	// objects.
	main := one(t, objs, "Deployment")
	selector, _, _ := unstructured.NestedStringMap(main.Object, "spec", "selector", "matchLabels")
	for _, o := range objs {
		if o.GetLabels()[gitSyncLabel] != "git-sync" {
			continue
		}
		matches := true
		for k, v := range selector {
			matches = matches && o.GetLabels()[k] == v
		}
		if matches {
			t.Errorf("%s %s carries the service's selector labels %v", o.GetKind(), o.GetName(), selector)
		}
	}
	pod, _, _ := unstructured.NestedStringMap(deps[0].Object, "spec", "template", "metadata", "labels")
	matches := true
	for k, v := range selector {
		matches = matches && pod[k] == v
	}
	if matches {
		t.Errorf("git-sync's pods %v are selected by the service's Deployment", pod)
	}
	rules, _ := json.Marshal(one(t, objs, "PrometheusRule").Object)
	if !strings.Contains(string(rules), "ClusterBackupGitSyncFailing") || !strings.Contains(string(rules), `cluster_backup_git_sync_errors_total{job=\"release-cluster-backup-git-sync\"}`) {
		t.Errorf("no ClusterBackupGitSyncFailing alert on git-sync's job:\n%s", rules)
	}
	// Off by default, and refused without a repository.
	for _, o := range render(t, defaults) {
		if o.GetLabels()[gitSyncLabel] == "git-sync" {
			t.Errorf("%s %s rendered by default", o.GetKind(), o.GetName())
		}
	}
	if out, err := helm(t, "template", "release", chart, "-f", defaults[0], "--set", "gitSync.enabled=true"); err == nil || !strings.Contains(out+err.Error(), "gitSync.repository is required") {
		t.Errorf("gitSync without a repository: %v\n%s", err, out)
	}
}

// TestWebView renders the web view's objects (ui.enabled): a Deployment
// that checks every request with the cluster's RBAC, an identity that may
// only ask who a token is and what it may do, the viewer role of the docs
// bound to the subjects given, and labels no selector of the service takes.
func TestWebView(t *testing.T) {
	objs := render(t, full)
	var mine []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetLabels()[gitSyncLabel] == "ui" {
			mine = append(mine, o)
		}
	}
	kinds := map[string]int{}
	for _, o := range mine {
		kinds[o.GetKind()]++
	}
	if kinds["Deployment"] != 1 || kinds["Service"] != 1 || kinds["ServiceAccount"] != 1 || kinds["ClusterRoleBinding"] != 2 || kinds["ClusterRole"] != 1 {
		t.Fatalf("web view objects %v", kinds)
	}
	for _, o := range mine {
		switch o.GetKind() {
		case "Deployment":
			spec := podSpec(t, o)
			env := envOf(t, o)
			if env["UI_AUTH"]["value"] != "kubernetes" || env["UI_ADDR"]["value"] != ":8081" || spec["serviceAccountName"] != "release-cluster-backup-ui" ||
				!equal(walk(spec, []string{"securityContext", "runAsUser"}), 1001) || !equal(walk(container(t, spec), []string{"securityContext", "readOnlyRootFilesystem"}), true) {
				t.Errorf("web view Deployment: env %v, spec %v", env, spec)
			}
		case "ClusterRole":
			rules, _, _ := unstructured.NestedSlice(o.Object, "rules")
			if !equal(rules, []any{map[string]any{"nonResourceURLs": []any{"/cluster-backup/ui"}, "verbs": []any{"get"}}}) {
				t.Errorf("viewer role rules %v", rules)
			}
		case "ClusterRoleBinding":
			role, _, _ := unstructured.NestedString(o.Object, "roleRef", "name")
			subjects, _, _ := unstructured.NestedSlice(o.Object, "subjects")
			switch role {
			case "system:auth-delegator":
				if !equal(subjects, []any{map[string]any{"kind": "ServiceAccount", "name": "release-cluster-backup-ui", "namespace": "backup-system"}}) {
					t.Errorf("auth-delegator bound to %v", subjects)
				}
			case "release-cluster-backup-ui-viewer":
				if !equal(subjects, []any{map[string]any{"kind": "Group", "name": "sre", "apiGroup": "rbac.authorization.k8s.io"}}) {
					t.Errorf("viewer role bound to %v", subjects)
				}
			default:
				t.Errorf("a binding to %s", role)
			}
		}
		if o.GetLabels()["app.kubernetes.io/name"] == "cluster-backup" {
			t.Errorf("%s %s carries the service's name label", o.GetKind(), o.GetName())
		}
	}
	for _, o := range render(t, defaults) {
		if o.GetLabels()[gitSyncLabel] == "ui" {
			t.Errorf("%s %s rendered by default", o.GetKind(), o.GetName())
		}
	}
}

func TestSecurityAndResources(t *testing.T) {
	spec := podSpec(t, one(t, render(t, defaults), "Deployment"))
	c := container(t, spec)
	for path, want := range map[string]any{
		"securityContext.runAsNonRoot":                   true,
		"securityContext.runAsUser":                      int64(1001),
		"securityContext.runAsGroup":                     int64(1001),
		"securityContext.seccompProfile.type":            "RuntimeDefault",
		"c.securityContext.readOnlyRootFilesystem":       true,
		"c.securityContext.allowPrivilegeEscalation":     false,
		"c.securityContext.runAsNonRoot":                 true,
		"c.resources.requests.cpu":                       "200m",
		"c.resources.requests.memory":                    "512Mi",
		"c.resources.limits.cpu":                         "1000m",
		"c.resources.limits.memory":                      "1Gi",
		"c.livenessProbe.httpGet.path":                   "/healthz",
		"c.readinessProbe.httpGet.path":                  "/readyz",
		"c.ports.0.containerPort":                        int64(8080),
		"c.securityContext.capabilities.drop.0":          "ALL",
		"serviceAccountName":                             "release-cluster-backup",
		"containers.0.env.0.value":                       "production-east",
		"containers.0.volumeMounts.0.mountPath":          "/etc/cluster-backup/config",
		"containers.0.args.0":                            "run",
		"containers.0.volumeMounts.1.mountPath":          "/var/lib/cluster-backup",
		"containers.0.securityContext.capabilities.drop": []any{"ALL"},
	} {
		root, p := spec, path
		if strings.HasPrefix(path, "c.") {
			root, p = c, path[2:]
		}
		if got := walk(root, strings.Split(p, ".")); !equal(got, want) {
			t.Errorf("%s = %#v, want %#v", path, got, want)
		}
	}
}

// walk follows a dotted path through maps and list indexes.
func walk(v any, path []string) any {
	for _, p := range path {
		switch x := v.(type) {
		case map[string]any:
			v = x[p]
		case []any:
			i := 0
			for _, ch := range p {
				i = i*10 + int(ch-'0')
			}
			if i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

func equal(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

func TestRBACIsReadOnly(t *testing.T) {
	read := []string{"get", "list", "watch"}
	for _, tc := range []struct {
		name      string
		files     []string
		wantLease bool
	}{{"one replica", defaults, false}, {"two replicas", full, true}} {
		t.Run(tc.name, func(t *testing.T) {
			objs := render(t, tc.files)
			rules, _, _ := unstructured.NestedSlice(one(t, objs, "ClusterRole").Object, "rules")
			for _, r := range rules {
				verbs, _, _ := unstructured.NestedStringSlice(r.(map[string]any), "verbs")
				for _, v := range verbs {
					if !slices.Contains(read, v) {
						t.Errorf("ClusterRole grants %q", v)
					}
				}
				resources, _, _ := unstructured.NestedStringSlice(r.(map[string]any), "resources")
				for _, res := range resources {
					if res == "*" || strings.Contains(res, "/") {
						t.Errorf("ClusterRole grants %q: it reaches subresources", res)
					}
				}
			}
			roles := find(objs, "Role")
			if (len(roles) == 1) != tc.wantLease {
				t.Fatalf("%d Roles, want lease role %v", len(roles), tc.wantLease)
			}
			if tc.wantLease {
				rules, _, _ := unstructured.NestedSlice(roles[0].Object, "rules")
				for _, r := range rules {
					res, _, _ := unstructured.NestedStringSlice(r.(map[string]any), "resources")
					groups, _, _ := unstructured.NestedStringSlice(r.(map[string]any), "apiGroups")
					if !slices.Equal(res, []string{"leases"}) || !slices.Equal(groups, []string{"coordination.k8s.io"}) {
						t.Errorf("the namespaced Role grants more than leases: %v", r)
					}
				}
				if one(t, objs, "RoleBinding").GetNamespace() != "" && one(t, objs, "RoleBinding").GetNamespace() != "backup-system" {
					t.Error("lease RoleBinding outside the release namespace")
				}
			}
		})
	}
}

func TestSecretsCanBeLeftOut(t *testing.T) {
	objs := render(t, defaults, "rbac.secrets=false")
	rules, _, _ := unstructured.NestedSlice(one(t, objs, "ClusterRole").Object, "rules")
	for _, r := range rules {
		resources, _, _ := unstructured.NestedStringSlice(r.(map[string]any), "resources")
		if slices.Contains(resources, "secrets") {
			t.Error("rbac.secrets=false still grants reading Secrets")
		}
	}
	exclude, _, _ := unstructured.NestedString(one(t, objs, "ConfigMap").Object, "data", "exclude-resources")
	if !slices.Contains(strings.Fields(exclude), "secrets") {
		t.Errorf("rbac.secrets=false leaves secrets out of exclude-resources: %q", exclude)
	}
	if _, err := helm(t, "template", "r", chart, "--set", "clusterName=x", "--set", "rbac.extraRules[0].apiGroups[0]=", "--set", "rbac.extraRules[0].resources[0]=pods/log"); err == nil {
		t.Error("an extra rule for a subresource was accepted")
	}
}

// generatedKey checks that the env variable name of a Deployment's env
// comes from a Secret the chart generates, keeps across upgrades and
// uninstalls, and fills with a long random key under dataKey.
func generatedKey(t *testing.T, objs []*unstructured.Unstructured, env map[string]map[string]any, name, dataKey string) {
	t.Helper()
	ref, _, _ := unstructured.NestedString(env[name], "valueFrom", "secretKeyRef", "name")
	var secret *unstructured.Unstructured
	for _, s := range find(objs, "Secret") {
		if s.GetName() == ref {
			secret = s
		}
	}
	if secret == nil {
		t.Fatalf("%s refers to %q, which the chart does not create", name, ref)
	}
	key, _, _ := unstructured.NestedString(secret.Object, "data", dataKey)
	if len(key) < 32 || secret.GetAnnotations()["helm.sh/resource-policy"] != "keep" {
		t.Errorf("the generated key Secret of %s: %d base64 bytes, annotations %v", name, len(key), secret.GetAnnotations())
	}
}

// TestIntegrityKeyValues: documents are signed by default with a key the
// chart generates and keeps; an existing Secret replaces it, old keys
// come from theirs, and integrity.enabled=false turns it off.
func TestIntegrityKeyValues(t *testing.T) {
	objs := render(t, defaults)
	generatedKey(t, objs, envOf(t, one(t, objs, "Deployment")), "INTEGRITY_KEY", "integrity-key")
	if cj := find(render(t, full), "CronJob"); len(cj) == 1 && envOf(t, cj[0])["INTEGRITY_KEY"] == nil {
		t.Error("the CronJob does not sign")
	}
	objs = render(t, defaults, "integrity.existingSecret=my-key", "integrity.oldKeysSecret=my-old-keys")
	env := envOf(t, one(t, objs, "Deployment"))
	if walk(env["INTEGRITY_KEY"], []string{"valueFrom", "secretKeyRef", "name"}) != "my-key" ||
		walk(env["INTEGRITY_KEYS_OLD"], []string{"valueFrom", "secretKeyRef", "name"}) != "my-old-keys" {
		t.Errorf("existing Secrets: %v %v", env["INTEGRITY_KEY"], env["INTEGRITY_KEYS_OLD"])
	}
	for _, s := range find(objs, "Secret") {
		if strings.HasSuffix(s.GetName(), "-integrity") {
			t.Errorf("a key Secret %s generated with existingSecret", s.GetName())
		}
	}
	objs = render(t, defaults, "integrity.enabled=false")
	if env := envOf(t, one(t, objs, "Deployment")); env["INTEGRITY_KEY"] != nil {
		t.Error("INTEGRITY_KEY set with integrity.enabled=false")
	}
}

func TestSecretEncryptionValues(t *testing.T) {
	objs := render(t, full)
	env := envOf(t, one(t, objs, "Deployment"))
	if v := env["SECRET_ENCRYPTION"]["value"]; v != "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p" {
		t.Errorf("SECRET_ENCRYPTION = %v", v)
	}
	generatedKey(t, objs, env, "SECRET_HMAC_KEY", "hmac-key")
	if env["MINIO_SSE"]["value"] != "kms:backup-key" || env["MINIO_CLIENT_CERT"] == nil || env["VERIFY_INTERVAL"]["value"] != "24h" {
		t.Errorf("store settings: %v %v %v", env["MINIO_SSE"], env["MINIO_CLIENT_CERT"], env["VERIFY_INTERVAL"])
	}
	if env["OBJECT_LOCK"]["value"] != "governance" || env["OBJECT_LOCK_RETENTION"]["value"] != "30d" {
		t.Errorf("object lock: %v %v", env["OBJECT_LOCK"], env["OBJECT_LOCK_RETENTION"])
	}
	if _, err := helm(t, "template", "r", chart, "--set", "clusterName=x", "--set", "objectLock.mode=strict"); err == nil {
		t.Error("objectLock.mode=strict rendered")
	}
	np := one(t, objs, "NetworkPolicy")
	ports, _, _ := unstructured.NestedSlice(np.Object, "spec", "ingress")
	if len(ports) != 1 {
		t.Errorf("NetworkPolicy ingress %v: want one rule, the scrapers to the metrics port", ports)
	}
	if len(find(render(t, defaults), "NetworkPolicy")) != 0 {
		t.Error("a NetworkPolicy by default")
	}
}

func envOf(t *testing.T, o *unstructured.Unstructured) map[string]map[string]any {
	t.Helper()
	env, _ := container(t, podSpec(t, o))["env"].([]any)
	out := map[string]map[string]any{}
	for _, e := range env {
		m := e.(map[string]any)
		out[m["name"].(string)] = m
	}
	return out
}

func TestCredentials(t *testing.T) {
	objs := render(t, full, "secretEncryption.recipients=null", "integrity.enabled=false")
	secret := one(t, objs, "Secret")
	env := envOf(t, one(t, objs, "Deployment"))
	if walk(env["MINIO_SECRET_KEY"], []string{"valueFrom", "secretKeyRef", "name"}) != secret.GetName() {
		t.Error("MINIO_SECRET_KEY does not come from the chart's Secret")
	}
	if _, literal := env["MINIO_SECRET_KEY"]["value"]; literal {
		t.Error("secret key set as a literal env value")
	}

	objs = render(t, full, "minio.existingSecret=my-minio", "minio.accessKey=", "minio.secretKey=", "secretEncryption.recipients=null", "integrity.enabled=false")
	if len(find(objs, "Secret")) != 0 {
		t.Error("a Secret was rendered with existingSecret")
	}
	env = envOf(t, one(t, objs, "Deployment"))
	for _, k := range []string{"MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"} {
		if walk(env[k], []string{"valueFrom", "secretKeyRef", "name"}) != "my-minio" {
			t.Errorf("%s does not come from the existing Secret", k)
		}
	}
	if _, err := helm(t, "template", "r", chart, "-f", full[0], "--set", "minio.secretKey="); err == nil {
		t.Error("a missing secret key without existingSecret rendered")
	}
}

func TestOpenShiftLeavesUIDToTheSCC(t *testing.T) {
	spec := podSpec(t, one(t, render(t, defaults, "openshift.enabled=true"), "Deployment"))
	for _, k := range []string{"runAsUser", "runAsGroup", "fsGroup"} {
		if walk(spec, []string{"securityContext", k}) != nil || walk(container(t, spec), []string{"securityContext", k}) != nil {
			t.Errorf("%s set with openshift.enabled", k)
		}
	}
	if walk(spec, []string{"securityContext", "runAsNonRoot"}) != true {
		t.Error("runAsNonRoot dropped with openshift.enabled")
	}
}

func TestOptionalObjects(t *testing.T) {
	objs := render(t, defaults)
	for _, k := range []string{"ServiceMonitor", "PrometheusRule", "Role", "CronJob"} {
		if len(find(objs, k)) != 0 {
			t.Errorf("%s rendered by default", k)
		}
	}
	objs = render(t, full)
	one(t, objs, "ServiceMonitor")
	rules := one(t, objs, "PrometheusRule")
	var alerts []string
	groups, _, _ := unstructured.NestedSlice(rules.Object, "spec", "groups")
	for _, g := range groups {
		rs, _, _ := unstructured.NestedSlice(g.(map[string]any), "rules")
		for _, r := range rs {
			alerts = append(alerts, r.(map[string]any)["alert"].(string))
		}
	}
	slices.Sort(alerts)
	if want := []string{"ClusterBackupChangeLatencyHigh", "ClusterBackupErrors", "ClusterBackupGitSyncFailing", "ClusterBackupPrefixHeld", "ClusterBackupPruneGuardTripped", "ClusterBackupSnapshotStale", "ClusterBackupStoreUnreachable", "ClusterBackupTypesIncomplete"}; !slices.Equal(alerts, want) {
		t.Errorf("alerts %v, want %v", alerts, want)
	}
	var dashboard *unstructured.Unstructured
	for _, cm := range find(objs, "ConfigMap") {
		if cm.GetLabels()["grafana_dashboard"] == "1" {
			dashboard = cm
		}
	}
	if dashboard == nil {
		t.Fatal("no dashboard ConfigMap with the sidecar label")
	}
	body, _, _ := unstructured.NestedString(dashboard.Object, "data", "cluster-backup.json")
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal([]byte(body), &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	var exprs []string
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, metric := range []string{
		"cluster_backup_duration_seconds", "cluster_backup_last_success_timestamp_seconds", "cluster_backup_resources_total",
		"cluster_backup_errors_total", "cluster_backup_queue_depth", "cluster_backup_change_latency_seconds",
	} {
		if !strings.Contains(strings.Join(exprs, "\n"), metric) {
			t.Errorf("dashboard shows nothing of %s", metric)
		}
	}
}

func TestCronJobMode(t *testing.T) {
	objs := render(t, defaults, "mode=cronjob")
	if len(find(objs, "Deployment")) != 0 || len(find(objs, "Service")) != 0 {
		t.Error("cronjob mode rendered a Deployment or Service")
	}
	cj := one(t, objs, "CronJob")
	c := container(t, podSpec(t, cj))
	if walk(c, []string{"args", "0"}) != "snapshot" {
		t.Errorf("CronJob runs %v", c["args"])
	}
	if walk(podSpec(t, cj), []string{"restartPolicy"}) != "Never" {
		t.Error("CronJob pods must not restart in place")
	}
	// A hung run must end, or Forbid skips every later one.
	if d := walk(cj.Object, []string{"spec", "jobTemplate", "spec", "activeDeadlineSeconds"}); d == nil {
		t.Error("CronJob jobs have no activeDeadlineSeconds")
	}
}

func TestSchemaRejectsBadValues(t *testing.T) {
	for _, set := range []string{
		"mode=weekly",
		"filtering.filteringMode=greylist",
		"filtering.openshiftMode=sometimes",
		"replicas=0",
		"debounce=soon",
		"minio.endpoint=http://minio:9000",
		"logLevel=loud",
		"clusterName=Prod_East",
		"filtering.maxPruneFraction=2",
		"unknownValue=1",
	} {
		if _, err := helm(t, "template", "r", chart, "-f", defaults[0], "--set", set); err == nil {
			t.Errorf("--set %s rendered", set)
		}
	}
	if _, err := helm(t, "template", "r", chart); err == nil || !strings.Contains(err.Error(), "clusterName") {
		t.Errorf("no clusterName: %v", err)
	}
}

// TestServerSideDryRun sends every rendered object to a real API server with
// dryRun=All and strict field validation.
func TestServerSideDryRun(t *testing.T) {
	testenv.Require(t, "etcd", "kube-apiserver")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	k, err := testenv.StartKube(ctx, testenv.KubeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Stop)
	dyn := dynamic.NewForConfigOrDie(k.Config)
	// The Prometheus operator's types, as a cluster with it has them.
	for _, plural := range []string{"servicemonitors", "prometheusrules"} {
		kind := map[string]string{"servicemonitors": "ServiceMonitor", "prometheusrules": "PrometheusRule"}[plural]
		crd := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
			"metadata": map[string]any{"name": plural + ".monitoring.coreos.com"},
			"spec": map[string]any{
				"group": "monitoring.coreos.com", "scope": "Namespaced",
				"names": map[string]any{"plural": plural, "kind": kind},
				"versions": []any{map[string]any{"name": "v1", "served": true, "storage": true,
					"schema": map[string]any{"openAPIV3Schema": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}},
			},
		}}
		if _, err := dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}).
			Create(ctx, crd, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	ns := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "backup-system"}}}
	if _, err := dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}).Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(discovery.NewDiscoveryClientForConfigOrDie(k.Config)))

	for name, objs := range map[string][]*unstructured.Unstructured{
		"default":   render(t, defaults),
		"full":      render(t, full),
		"cronjob":   render(t, defaults, "mode=cronjob"),
		"openshift": render(t, full, "openshift.enabled=true"),
	} {
		t.Run(name, func(t *testing.T) {
			for _, o := range objs {
				gvk := o.GroupVersionKind()
				var mapping *metav1.GroupVersionResource
				err := wait(ctx, func() error {
					mapper.Reset()
					m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
					if err == nil {
						mapping = &metav1.GroupVersionResource{Group: m.Resource.Group, Version: m.Resource.Version, Resource: m.Resource.Resource}
					}
					return err
				})
				if err != nil {
					t.Fatalf("%s: %v", gvk, err)
				}
				gvr := schema.GroupVersionResource{Group: mapping.Group, Version: mapping.Version, Resource: mapping.Resource}
				var ri dynamic.ResourceInterface = dyn.Resource(gvr)
				if o.GetNamespace() != "" || isNamespaced(o) {
					ri = dyn.Resource(gvr).Namespace("backup-system")
				}
				_, err = ri.Create(ctx, o, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"})
				if err != nil && !apierrors.IsAlreadyExists(err) {
					t.Errorf("%s %s: %v", o.GetKind(), o.GetName(), err)
				}
			}
		})
	}
}

func isNamespaced(o *unstructured.Unstructured) bool {
	switch o.GetKind() {
	case "ClusterRole", "ClusterRoleBinding", "Namespace", "CustomResourceDefinition":
		return false
	}
	return true
}

// wait retries f until it succeeds or ctx ends; new CRDs take a moment to
// appear in discovery.
func wait(ctx context.Context, f func() error) error {
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(200 * time.Millisecond):
		}
	}
}
