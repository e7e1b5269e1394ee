package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/creack/pty"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/cluster-backup/cluster-backup/testenv"
)

// contextOf is the kubeconfig at path with its one cluster, user and
// context all renamed to name, the context's namespace set to ns.
func contextOf(t *testing.T, path, name, ns string) *clientcmdapi.Config {
	t.Helper()
	src, err := clientcmd.LoadFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := src.Contexts[src.CurrentContext]
	out := clientcmdapi.NewConfig()
	out.Clusters[name] = src.Clusters[ctx.Cluster]
	out.AuthInfos[name] = src.AuthInfos[ctx.AuthInfo]
	out.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name, Namespace: ns}
	out.CurrentContext = name
	return out
}

func writeKubeconfig(t *testing.T, cfg *clientcmdapi.Config, path string) string {
	t.Helper()
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestKubectlConventions runs the command line as a kubectl user does,
// against two real API servers: one kubeconfig with two contexts and
// --context choosing, KUBECONFIG listing two files, the context's
// namespace as the default, --as impersonation refused by RBAC, the old
// --cluster meaning, ls of the bucket's clusters, kubectl's printers,
// completion from the backup, and the binary run by kubectl itself as the
// plugin "kubectl backup".
func TestKubectlConventions(t *testing.T) {
	requireServers(t)
	ns, cluster := "e2e-kubectl", "kubectl"
	createNamespace(t, ns)
	createConfigMap(t, ns, "settings", map[string]string{"k": "v"}, nil, nil)
	backUp(t, cluster, ns)
	dr := privateCluster(t)

	dir := t.TempDir()
	prod := contextOf(t, e2e.kube.Kubeconfig, "prod", ns)
	second := contextOf(t, dr.kube.Kubeconfig, "dr", "")
	both := clientcmdapi.NewConfig()
	for _, c := range []*clientcmdapi.Config{prod, second} {
		for k, v := range c.Clusters {
			both.Clusters[k] = v
		}
		for k, v := range c.AuthInfos {
			both.AuthInfos[k] = v
		}
		for k, v := range c.Contexts {
			both.Contexts[k] = v
		}
	}
	both.CurrentContext = "prod"
	merged := writeKubeconfig(t, both, filepath.Join(dir, "config"))
	// The first file names the current context; the second defines it.
	prod.CurrentContext = "dr"
	list := writeKubeconfig(t, prod, filepath.Join(dir, "prod")) + string(os.PathListSeparator) + writeKubeconfig(t, second, filepath.Join(dir, "dr"))

	as := func(kubeconfig string, args ...string) (string, string, int) {
		t.Helper()
		return cliWith(t, e2e.minio, map[string]string{"KUBECONFIG": kubeconfig, "CLUSTER_NAME": cluster}, args...)
	}

	// One kubeconfig, two contexts: --context chooses where diff and
	// restore go. prod holds the namespace (equal: exit 0), dr does not.
	if _, stderr, code := as(merged, "diff", "-n", ns, "--context", "prod"); code != exitOK {
		t.Errorf("diff --context prod: exit %d, want 0 (equal)\n%s", code, stderr)
	}
	if _, stderr, code := as(merged, "diff", "-n", ns, "--context", "dr"); code != exitDifferent {
		t.Errorf("diff --context dr: exit %d, want %d (missing there)\n%s", code, exitDifferent, stderr)
	}
	// --cluster and --user are the kubeconfig's: prod's cluster with dr's
	// credentials is refused by prod's API server.
	if _, stderr, code := as(merged, "diff", "-n", ns, "--cluster", "prod", "--user", "dr"); code == exitOK || code == exitDifferent {
		t.Errorf("diff --cluster prod --user dr: exit %d, want a failure (prod does not know dr's user)\n%s", code, stderr)
	}
	if _, stderr, code := as(merged, "diff", "-n", ns, "--cluster", "dr", "--user", "dr"); code != exitDifferent {
		t.Errorf("diff --cluster dr --user dr: exit %d, want %d\n%s", code, exitDifferent, stderr)
	}

	if _, stderr, code := as(merged, "restore", "-n", ns, "--context", "dr"); code != exitOK {
		t.Fatalf("restore --context dr: exit %d\n%s", code, stderr)
	}
	if _, err := dr.cs.CoreV1().ConfigMaps(ns).Get(bg, "settings", metav1.GetOptions{}); err != nil {
		t.Errorf("restore --context dr: the ConfigMap is not in dr: %v", err)
	}
	// KUBECONFIG lists two files, merged as kubectl merges them: the
	// first names dr current, the second defines it.
	if _, stderr, code := as(list, "restore", "-n", ns, "--namespace-mapping", ns+":"+ns+"-list"); code != exitOK {
		t.Fatalf("restore with KUBECONFIG=%s: exit %d\n%s", list, code, stderr)
	}
	if _, err := dr.cs.CoreV1().ConfigMaps(ns+"-list").Get(bg, "settings", metav1.GetOptions{}); err != nil {
		t.Errorf("restore with a KUBECONFIG list: the ConfigMap is not in dr (the current context): %v", err)
	}
	if _, err := e2e.cs.CoreV1().Namespaces().Get(bg, ns+"-list", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("restore with a KUBECONFIG list wrote into prod: %v", err)
	}
	if _, stderr, code := as(list, "diff", "-n", ns, "--context", "prod"); code != exitOK {
		t.Errorf("diff --context prod with a KUBECONFIG list: exit %d\n%s", code, stderr)
	}

	// --request-timeout bounds each API request, as kubectl's does.
	if _, stderr, code := as(merged, "diff", "-n", ns, "--context", "prod", "--request-timeout", "1ns"); code == exitOK || code == exitDifferent {
		t.Errorf("diff --request-timeout 1ns: exit %d, want a failure of the requests\n%s", code, stderr)
	}

	// The context's namespace is show's default, as it is kubectl get's.
	if out, stderr, code := as(merged, "show", "configmaps/settings", "--context", "prod"); code != exitOK || !strings.Contains(out, "namespace: "+ns) {
		t.Errorf("show without -n in a context of namespace %s: exit %d\n%s%s", ns, code, out, stderr)
	}

	// --as: impersonation is sent, and RBAC refuses a user without rights.
	if _, stderr, code := as(merged, "diff", "-n", ns, "--context", "prod", "--as", "nobody"); code == exitOK || !strings.Contains(stderr, "nobody") {
		t.Errorf("diff --as nobody: exit %d, want a refusal naming the user\n%s", code, stderr)
	}

	// The old --cluster (the backed-up cluster) still works with a
	// warning when it names no kubeconfig cluster.
	out, stderr, code := cliWith(t, e2e.minio, map[string]string{"KUBECONFIG": merged}, "ls", "-n", ns, "--cluster", cluster, "-o", "name")
	if code != exitOK || !strings.Contains(out, "configmaps/settings") || !strings.Contains(stderr, "--backup-cluster") {
		t.Errorf("ls --cluster %s (old meaning): exit %d\n%s%s", cluster, code, out, stderr)
	}
	out, _, code = cliWith(t, e2e.minio, map[string]string{"KUBECONFIG": merged}, "ls", "-n", ns, "--backup-cluster", cluster,
		"-o", "jsonpath={.items[*].name}")
	if code != exitOK || !strings.Contains(out, "settings") {
		t.Errorf("ls -o jsonpath: exit %d %q", code, out)
	}
	out, _, _ = cliWith(t, e2e.minio, map[string]string{"KUBECONFIG": merged}, "ls", "-n", ns, "--backup-cluster", cluster,
		"-o", "custom-columns=RESOURCE:.resource,NAME:.name")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) < 2 || !strings.HasPrefix(lines[0], "RESOURCE") || !strings.Contains(out, "configmaps") {
		t.Errorf("ls -o custom-columns:\n%s", out)
	}

	// ls without a cluster lists the bucket's clusters.
	out, stderr, code = cliWith(t, e2e.minio, map[string]string{"KUBECONFIG": merged}, "ls")
	if code != exitOK || !strings.Contains(out, "CLUSTER") || !strings.Contains(out, "\n"+cluster+" ") {
		t.Errorf("ls without a cluster: exit %d\n%s%s", code, out, stderr)
	}

	// Completion comes from the backup.
	out, _, _ = as(merged, "__complete", "show", "-n", ns, "configmaps/")
	if !strings.Contains(out, "configmaps/settings") {
		t.Errorf("completion of configmaps/: %q", out)
	}
	out, _, _ = as(merged, "__complete", "ls", "-n", "")
	if !strings.Contains(out, ns+"\n") {
		t.Errorf("completion of -n: %q", out)
	}
	out, _, _ = as(merged, "completion", "bash")
	if !strings.Contains(out, "__start_cluster-backup") {
		t.Errorf("completion bash: no completion function in %.200q", out)
	}

	// A progress bar on a terminal, none on a pipe or under --quiet.
	env := map[string]string{"KUBECONFIG": merged, "CLUSTER_NAME": cluster}
	for _, args := range [][]string{{"verify", "-n", ns}, {"diff", "-n", ns, "--context", "prod"}, {"restore", "-n", ns, "--context", "prod"}, {"ls", "-A"}} {
		if out := onTerminal(t, env, args...); !strings.Contains(out, args[0]) || !strings.Contains(out, "objects/") {
			t.Errorf("%s on a terminal shows no progress bar:\n%q", args[0], out)
		}
		if out := onTerminal(t, env, append(args, "--quiet")...); strings.Contains(out, "objects/") {
			t.Errorf("%s --quiet on a terminal shows a progress bar:\n%q", args[0], out)
		}
		if _, stderr, _ := cliWith(t, e2e.minio, env, args...); strings.Contains(stderr, "objects/") || strings.Contains(stderr, "\r") {
			t.Errorf("%s on a pipe shows a progress bar:\n%q", args[0], stderr)
		}
	}

	// The plugin: kubectl finds kubectl-backup on the PATH and runs it.
	kubectl, err := testenv.Binary("kubectl")
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	if err := os.Symlink(e2e.bin, filepath.Join(bin, "kubectl-backup")); err != nil {
		t.Fatal(err)
	}
	plugin := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(kubectl, args...)
		cmd.Env = environ(cliVars(t, e2e.minio, map[string]string{"PATH": bin, "KUBECONFIG": merged}))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if out := plugin("plugin", "list"); !strings.Contains(out, filepath.Join(bin, "kubectl-backup")) {
		t.Errorf("kubectl plugin list does not list kubectl-backup:\n%s", out)
	}
	if out := plugin("backup", "ls", "-n", ns, "--backup-cluster", cluster, "-o", "name"); !strings.Contains(out, "configmaps/settings") {
		t.Errorf("kubectl backup ls: %q", out)
	}
	if out := plugin("backup", "ls", "--help"); !strings.Contains(out, "kubectl backup ls") {
		t.Errorf("kubectl backup ls --help does not say kubectl backup:\n%s", out)
	}
}

// onTerminal runs one command with its standard streams on a
// pseudo-terminal and returns what the terminal showed.
func onTerminal(t *testing.T, env map[string]string, args ...string) string {
	t.Helper()
	cmd := exec.Command(e2e.bin, args...)
	cmd.Env = environ(cliVars(t, e2e.minio, env))
	tty, err := pty.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	var out bytes.Buffer
	_, _ = io.Copy(&out, tty) // ends with EIO once the command exits
	_ = cmd.Wait()
	return out.String()
}
