package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cluster-backup/cluster-backup/testenv"
)

// TestStoreSettingsFound runs the commands with no store variable
// exported: the CLI config file's named stores (the default, --store,
// an unknown name), then the store settings read from the chart's release
// installed with helm install into the real API server, and with neither
// an error that names the three ways. No credential is ever printed.
func TestStoreSettingsFound(t *testing.T) {
	requireServers(t)
	helmBin := testenv.Require(t, "helm")[0]
	ns, cluster := "e2e-store-settings", "store-settings"
	createNamespace(t, ns)
	createConfigMap(t, ns, "settings", map[string]string{"k": "v"}, nil, nil)
	backUp(t, cluster, ns)
	srv := e2e.minio

	home := t.TempDir()
	file := filepath.Join(home, ".config", "cluster-backup", "config.yaml")
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		t.Fatal(err)
	}
	wrongSecret := "not-the-secret-key-0123456789"
	if err := os.WriteFile(file, []byte(`default: lab
stores:
  lab:
    MINIO_ENDPOINT: `+srv.Endpoint+`
    MINIO_ACCESS_KEY: `+srv.AccessKey+`
    MINIO_SECRET_KEY: `+srv.SecretKey+`
    MINIO_BUCKET: `+bucketName+`
    MINIO_USE_SSL: "false"
    CLUSTER_NAME: `+cluster+`
  wrong:
    MINIO_ENDPOINT: `+srv.Endpoint+`
    MINIO_ACCESS_KEY: `+srv.AccessKey+`
    MINIO_SECRET_KEY: `+wrongSecret+`
    MINIO_BUCKET: `+bucketName+`
    MINIO_USE_SSL: "false"
    CLUSTER_NAME: `+cluster+`
`), 0o600); err != nil {
		t.Fatal(err)
	}
	// Nothing exported but HOME and the kubeconfig.
	bare := func(env map[string]string, args ...string) (string, string, int) {
		t.Helper()
		return cliIn(t, env, []string{srv.SecretKey, wrongSecret}, args...)
	}
	withFile := map[string]string{"HOME": home, "KUBECONFIG": e2e.kube.Kubeconfig}
	if out, stderr, code := bare(withFile, "ls", "-n", ns, "-o", "name"); code != exitOK || !strings.Contains(out, "configmaps/settings") {
		t.Errorf("ls with the config file's default store: exit %d\n%s%s", code, out, stderr)
	}
	if _, stderr, code := bare(withFile, "ls", "-n", ns, "--store", "wrong"); code != exitFatal {
		t.Errorf("ls --store wrong: exit %d, want %d (the store refuses the key)\n%s", code, exitFatal, stderr)
	}
	if _, stderr, code := bare(withFile, "ls", "--store", "missing"); code != exitUsage || !strings.Contains(stderr, `no store "missing"`) || !strings.Contains(stderr, "lab, wrong") {
		t.Errorf("ls --store missing: exit %d, want %d naming the stores there are\n%s", code, exitUsage, stderr)
	}

	// Neither a file nor a release: the error names the three ways.
	empty := privateCluster(t)
	noStore := map[string]string{"HOME": t.TempDir(), "KUBECONFIG": empty.kube.Kubeconfig}
	if _, stderr, code := bare(noStore, "ls", "-n", ns); code != exitUsage ||
		!strings.Contains(stderr, "MINIO_ENDPOINT") || !strings.Contains(stderr, "config.yaml") || !strings.Contains(stderr, "release") {
		t.Errorf("ls with no store anywhere: exit %d, want %d and the three ways\n%s", code, exitUsage, stderr)
	}

	// The chart installed for real; the commands read its settings.
	release, releaseNS := "backup", "e2e-store-settings-system"
	install := exec.Command(helmBin, "install", release, "../../charts/cluster-backup", "--namespace", releaseNS, "--create-namespace",
		"--kubeconfig", empty.kube.Kubeconfig, "--set", "clusterName="+cluster, "--set", "minio.endpoint="+srv.Endpoint,
		"--set", "minio.accessKey="+srv.AccessKey, "--set", "minio.secretKey="+srv.SecretKey, "--set", "minio.bucket="+bucketName,
		"--set", "minio.useSSL=false", "--set", "integrity.enabled=false")
	install.Env = append(os.Environ(), "HOME="+t.TempDir())
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("helm install: %v\n%s", err, out)
	}
	out, stderr, code := bare(noStore, "ls", "-n", ns, "-o", "name")
	if code != exitOK || !strings.Contains(out, "configmaps/settings") || !strings.Contains(stderr, releaseNS+"/") {
		t.Errorf("ls with the chart's release in the cluster: exit %d\n%s%s", code, out, stderr)
	}
	// --minio-endpoint (an in-cluster Service name is not reachable from a
	// laptop) wins over the release's, whose credentials still serve.
	out, stderr, code = bare(noStore, "ls", "-n", ns, "-o", "name", "--minio-endpoint", srv.Endpoint)
	if code != exitOK || !strings.Contains(out, "configmaps/settings") {
		t.Errorf("ls --minio-endpoint with the release's credentials: exit %d\n%s%s", code, out, stderr)
	}
	if _, stderr, code := bare(noStore, "ls", "-n", ns, "--release", releaseNS+"/other"); code != exitUsage {
		t.Errorf("ls --release of no release: exit %d, want %d\n%s", code, exitUsage, stderr)
	}
}
