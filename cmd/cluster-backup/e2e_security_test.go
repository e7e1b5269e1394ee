package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/minio/minio-go/v7"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cluster-backup/cluster-backup/encrypt"
	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/testenv"
)

// ageKey is a fresh age identity in a key file.
func ageKey(t *testing.T) (*age.X25519Identity, string) {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "key.txt")
	if err := os.WriteFile(path, []byte(id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return id, path
}

// seedSecrets creates Secrets whose every value is distinctive, one of
// them with the annotation kubectl apply leaves, and returns the values.
func seedSecrets(t *testing.T, ns string) map[string]string {
	t.Helper()
	values := map[string]string{
		"db/password":  "pw-Xq81vTz-" + ns,
		"db/username":  "admin-Kd27-" + ns,
		"tls/tls.key":  "-----BEGIN KEY----- k3y-Mv55-" + ns,
		"tls/tls.crt":  "-----BEGIN CERT----- c3rt-Pp09-" + ns,
		"token/token":  "tok-Ww42-" + ns,
		"token/traps":  "yes",
		"applied/conf": "applied-Rr73-" + ns,
	}
	lastApplied := fmt.Sprintf(`{"apiVersion":"v1","kind":"Secret","metadata":{"name":"applied","namespace":%q},"stringData":{"conf":%q}}`, ns, values["applied/conf"])
	secrets := []*corev1.Secret{
		{ObjectMeta: metav1.ObjectMeta{Name: "db", Labels: map[string]string{"app": "db"}},
			StringData: map[string]string{"password": values["db/password"], "username": values["db/username"]}},
		{ObjectMeta: metav1.ObjectMeta{Name: "tls"}, Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{"tls.key": []byte(values["tls/tls.key"]), "tls.crt": []byte(values["tls/tls.crt"])}},
		{ObjectMeta: metav1.ObjectMeta{Name: "token"}, StringData: map[string]string{"token": values["token/token"], "traps": values["token/traps"]}},
		{ObjectMeta: metav1.ObjectMeta{Name: "applied", Annotations: map[string]string{encrypt.LastApplied: lastApplied}},
			StringData: map[string]string{"conf": values["applied/conf"]}},
	}
	// The store's credentials, as the chart keeps them in the cluster.
	secrets = append(secrets, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "minio-credentials"},
		StringData: map[string]string{"access-key": e2e.minio.AccessKey, "secret-key": e2e.minio.SecretKey}})
	values["minio-credentials/access-key"], values["minio-credentials/secret-key"] = e2e.minio.AccessKey, e2e.minio.SecretKey
	for _, s := range secrets {
		if _, err := e2e.cs.CoreV1().Secrets(ns).Create(bg, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	createConfigMap(t, ns, "settings", map[string]string{"mode": "fast"}, nil, nil)
	return values
}

// secretValue reads a live Secret's value.
func secretValue(t *testing.T, ns, name, key string) string {
	t.Helper()
	s, err := e2e.cs.CoreV1().Secrets(ns).Get(bg, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return string(s.Data[key])
}

// mcCat reads a stored object with the stock MinIO client.
func mcCat(t *testing.T, key string) string {
	t.Helper()
	mc := testenv.Require(t, "mc")[0]
	cmd := exec.Command(mc, "--config-dir", t.TempDir(), "cat", "store/"+bucketName+"/"+key)
	cmd.Env = append(os.Environ(), fmt.Sprintf("MC_HOST_store=http://%s:%s@%s", e2e.minio.AccessKey, e2e.minio.SecretKey, e2e.minio.Endpoint))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("mc cat %s: %v", key, err)
	}
	return string(out)
}

func TestSecretEncryption(t *testing.T) {
	requireServers(t)
	ns, cluster := "e2e-encrypted", "encrypted"
	createNamespace(t, ns)
	values := seedSecrets(t, ns)
	id, keyFile := ageKey(t)
	hmacKey := "hmac-key-Zt61-not-for-production"
	env := map[string]string{
		"SECRET_ENCRYPTION": id.Recipient().String(),
		"SECRET_HMAC_KEY":   hmacKey,
		"SNAPSHOT_INTERVAL": "2s",
		"ENABLE_PPROF":      "true",
	}
	opts := serviceOptions{env: env, configMap: map[string]string{"include-namespaces": ns}, secrets: []string{hmacKey}}
	s := startService(t, cluster, opts)
	s.waitReady()
	s.waitPass(1)
	eventually(t, 30*time.Second, "an empty queue", func() bool { return s.metric("cluster_backup_queue_depth", nil) == 0 })
	if got := s.metric("cluster_backup_secrets_encrypted", nil); got != 1 {
		t.Errorf("cluster_backup_secrets_encrypted = %v, want 1", got)
	}
	if code := s.get("/debug/pprof/"); code != 404 {
		t.Errorf("the metrics port serves the profiles: GET /debug/pprof/ = %d", code)
	}

	// What a reader of the bucket sees: no value, in any spelling, and no
	// metadata that is a plain hash of one.
	forbidden := map[string]string{}
	for k, v := range values {
		if v == "yes" {
			continue // too short to be told apart from YAML; it is encrypted with the rest
		}
		forbidden[v] = k
		forbidden[base64.StdEncoding.EncodeToString([]byte(v))] = k + " (base64)"
	}
	for _, name := range []string{"db", "tls", "token", "applied", "minio-credentials"} {
		key := s.key(ns, "secrets", name)
		stored := mcCat(t, key)
		for v, what := range forbidden {
			if strings.Contains(stored, v) {
				t.Errorf("%s: %s is readable in the bucket:\n%s", key, what, stored)
			}
		}
		if !strings.Contains(stored, encrypt.Annotation) {
			t.Errorf("%s does not say how it is encrypted:\n%s", key, stored)
		}
		info, err := e2e.bucket.StatObject(bg, bucketName, key, minio.StatObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range values {
			sum := sha256.Sum256([]byte(v))
			for mk, mv := range info.UserMetadata {
				if strings.EqualFold(mv, hex.EncodeToString(sum[:])) {
					t.Errorf("%s: metadata %s is the SHA-256 of %s", key, mk, k)
				}
			}
		}
	}
	if !strings.Contains(mcCat(t, s.key(ns, "configmaps", "settings")), "fast") {
		t.Error("a ConfigMap is no longer stored in the clear")
	}
	decryptsWithTheAgeTool(t, s.key(ns, "secrets", "db"), keyFile, values["db/password"])

	// Three passes over unchanged Secrets add no version.
	s.waitPass(4)
	for _, name := range []string{"db", "tls", "token", "applied"} {
		if n := s.versions(s.key(ns, "secrets", name)); n != 1 {
			t.Errorf("secret %s: %d versions after 4 passes, want 1", name, n)
		}
	}
	s.stop()
	restart := startService(t, cluster, opts)
	restart.waitPass(1)
	eventually(t, 30*time.Second, "an empty queue", func() bool { return restart.metric("cluster_backup_queue_depth", nil) == 0 })
	if w := restart.metric("cluster_backup_resources_total", map[string]string{"action": "written"}); w != 0 {
		t.Errorf("a restart over unchanged encrypted Secrets wrote %v objects", w)
	}
	restart.stop()

	// Adding a recipient re-encrypts every Secret on the next pass, and
	// rewrites nothing else.
	second, secondKey := ageKey(t)
	env["SECRET_ENCRYPTION"] = id.Recipient().String() + "," + second.Recipient().String()
	rotated := startService(t, cluster, opts)
	rotated.waitPass(1)
	eventually(t, 30*time.Second, "every Secret re-encrypted", func() bool {
		for _, name := range []string{"db", "tls", "token", "applied"} {
			if rotated.versions(s.key(ns, "secrets", name)) != 2 {
				return false
			}
		}
		return true
	})
	decryptsWithTheAgeTool(t, s.key(ns, "secrets", "db"), secondKey, values["db/password"])
	if n := rotated.versions(s.key(ns, "configmaps", "settings")); n != 1 {
		t.Errorf("a new recipient rewrote a ConfigMap: %d versions", n)
	}
	rotated.stop()

	browseEncrypted(t, cluster, ns, keyFile, values)
	restoreEncrypted(t, cluster, ns, keyFile, values)
}

// decryptsWithTheAgeTool decrypts one value of a stored Secret as the README
// shows: base64 -d | age -d -i KEY | tail -n +2.
func decryptsWithTheAgeTool(t *testing.T, key, keyFile, want string) {
	t.Helper()
	ageBin := testenv.Require(t, "age")[0]
	doc := mcCat(t, key)
	var value string
	for _, line := range strings.Split(doc, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "password: "); ok {
			value = v
		}
	}
	sealed, err := base64.StdEncoding.DecodeString(value)
	if err != nil {
		t.Fatalf("data.password of %s is not base64: %v\n%s", key, err, doc)
	}
	cmd := exec.Command("sh", "-c", `"$0" -d -i "$1" | tail -n +2`, ageBin, keyFile)
	cmd.Stdin = strings.NewReader(string(sealed))
	out, err := cmd.Output()
	if err != nil || string(out) != want {
		t.Errorf("age -d of data.password: %q, %v; want the original value", out, err)
	}
}

// browseEncrypted: show decrypts with the identity and refuses without it.
func browseEncrypted(t *testing.T, cluster, ns, keyFile string, values map[string]string) {
	t.Helper()
	out, stderr, code := cli(t, cluster, "show", "secrets/db", "-n", ns, "--identity", keyFile)
	if code != 0 || !strings.Contains(out, base64.StdEncoding.EncodeToString([]byte(values["db/password"]))) || strings.Contains(out, encrypt.Annotation) {
		t.Errorf("show --identity: exit %d\n%s\n%s", code, out, stderr)
	}
	out, stderr, code = cli(t, cluster, "show", "secrets/db", "-n", ns)
	if code != 2 || !strings.Contains(stderr, "--identity") || strings.Contains(out, "password") {
		t.Errorf("show without an identity: exit %d, want 2 and a message naming --identity\n%s\n%s", code, out, stderr)
	}
	if out, _, code := cli(t, cluster, "show", "configmaps/settings", "-n", ns); code != 0 || !strings.Contains(out, "fast") {
		t.Errorf("show of a ConfigMap without an identity: exit %d\n%s", code, out)
	}
}

// restoreEncrypted: without the identity a restore brings back everything
// but the Secrets and says why; with it, the Secrets come back as they were.
func restoreEncrypted(t *testing.T, cluster, ns, keyFile string, values map[string]string) {
	t.Helper()
	deleteNamespace(t, ns)
	rep := restoreReport(t, cluster, exitPartial, "-n", ns)
	failed := 0
	for _, r := range rep.Objects {
		if r.Outcome == "failed" {
			failed++
			if r.Resource != "secrets" || !strings.Contains(r.Reason, "--identity") {
				t.Errorf("failed %s/%s: %s", r.Resource, r.Name, r.Reason)
			}
		}
	}
	if failed != 5 {
		t.Errorf("%d objects failed without the identity, want the 5 Secrets", failed)
	}
	if _, err := e2e.cs.CoreV1().ConfigMaps(ns).Get(bg, "settings", metav1.GetOptions{}); err != nil {
		t.Errorf("the ConfigMap was not restored without the identity: %v", err)
	}
	restoreReport(t, cluster, 0, "-n", ns, "--identity", keyFile)
	for k, want := range values {
		name, key, _ := strings.Cut(k, "/")
		if name == "applied" {
			continue
		}
		if got := secretValue(t, ns, name, key); got != want {
			t.Errorf("restored %s = %q, want %q", k, got, want)
		}
	}
	applied, err := e2e.cs.CoreV1().Secrets(ns).Get(context.Background(), "applied", metav1.GetOptions{})
	if err != nil || string(applied.Data["conf"]) != values["applied/conf"] || !strings.Contains(applied.Annotations[encrypt.LastApplied], values["applied/conf"]) {
		t.Errorf("restored Secret applied: %v %v", applied, err)
	}
	if _, stderr, code := cli(t, cluster, "diff", "-n", ns, "--identity", keyFile); code != 0 {
		t.Errorf("diff after the restore: exit %d\n%s", code, stderr)
	}
	// A pruning restore that cannot decrypt the Secrets must not take them
	// for extras: the backup holds them.
	restoreReport(t, cluster, exitPartial, "-n", ns, "--prune", "--yes")
	for _, name := range []string{"db", "tls", "token", "applied", "minio-credentials"} {
		if _, err := e2e.cs.CoreV1().Secrets(ns).Get(bg, name, metav1.GetOptions{}); err != nil {
			t.Errorf("secret %s after a pruning restore without the identity: %v", name, err)
		}
	}
}

func TestServerSideEncryption(t *testing.T) {
	requireServers(t)
	kmsKey := make([]byte, 32)
	if _, err := rand.Read(kmsKey); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := testenv.StartMinIOWith(ctx, t.TempDir(), testenv.MinIOOptions{
		Env: []string{"MINIO_KMS_SECRET_KEY=backup-key:" + base64.StdEncoding.EncodeToString(kmsKey)},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	client, err := minioClient(srv)
	if err != nil {
		t.Fatal(err)
	}
	ns := "e2e-sse"
	createNamespace(t, ns)
	createConfigMap(t, ns, "at-rest", map[string]string{"sealed": "by-the-store"}, nil, nil)

	for _, tc := range []struct{ cluster, sse, header string }{
		// The first creates the bucket, with KMS as its default encryption.
		{cluster: "sse-kms", sse: "kms:backup-key", header: "aws:kms"},
		{cluster: "sse-s3", sse: "s3", header: "AES256"},
	} {
		opts := serviceOptions{minio: srv, env: map[string]string{"MINIO_SSE": tc.sse}, configMap: map[string]string{"include-namespaces": ns}}
		s := startService(t, tc.cluster, opts)
		s.waitPass(1)
		key := s.key(ns, "configmaps", "at-rest")
		eventually(t, 10*time.Second, "the object stored", func() bool { return s.body(key) != "" })
		info, err := client.StatObject(ctx, bucketName, key, minio.StatObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := info.Metadata.Get("X-Amz-Server-Side-Encryption"); got != tc.header {
			t.Errorf("%s: the store reports encryption %q, want %q", tc.sse, got, tc.header)
		}
		s.stop()
		// Read back: a restart's pass over the encrypted objects writes
		// nothing, and show reads and verifies the document.
		again := startService(t, tc.cluster, opts)
		again.waitPass(1)
		if w := again.metric("cluster_backup_resources_total", map[string]string{"action": "written"}); w != 0 {
			t.Errorf("%s: a restart wrote %v objects", tc.sse, w)
		}
		again.stop()
		out, stderr, code := cliWith(t, srv, map[string]string{"CLUSTER_NAME": tc.cluster}, "show", "configmaps/at-rest", "-n", ns)
		if code != 0 || !strings.Contains(out, "by-the-store") {
			t.Errorf("%s: show: exit %d\n%s%s", tc.sse, code, out, stderr)
		}
	}
	cfg, err := client.GetBucketEncryption(ctx, bucketName)
	if err != nil || len(cfg.Rules) != 1 || cfg.Rules[0].Apply.SSEAlgorithm != "aws:kms" {
		t.Errorf("the bucket's default encryption: %+v %v", cfg, err)
	}
}

func TestMutualTLS(t *testing.T) {
	requireServers(t)
	ca := newTestCA(t)
	dir := t.TempDir()
	caFile, serverCert, clientCert := filepath.Join(dir, "ca.crt"), ca.issue(t, "127.0.0.1", true), ca.issue(t, "cluster-backup", false)
	if err := os.WriteFile(caFile, ca.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	// A TLS front that admits only clients with a certificate of the CA,
	// before the real MinIO.
	front := httptest.NewUnstartedServer(httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: e2e.minio.Endpoint}))
	front.TLS = &tls.Config{Certificates: []tls.Certificate{serverCert.pair}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.pool, MinVersion: tls.VersionTLS12}
	front.StartTLS()
	defer front.Close()
	ns := "e2e-mtls"
	createNamespace(t, ns)
	createConfigMap(t, ns, "over-mtls", map[string]string{"a": "b"}, nil, nil)
	env := map[string]string{
		"CLUSTER_NAME":   "mtls",
		"MINIO_ENDPOINT": strings.TrimPrefix(front.URL, "https://"),
		"MINIO_USE_SSL":  "true",
		"MINIO_CA_FILE":  caFile,
	}
	if _, stderr, code := cliWith(t, e2e.minio, env, "ls", "-A"); code != exitFatal {
		t.Errorf("ls without a client certificate: exit %d, want %d\n%s", code, exitFatal, stderr)
	}
	env["MINIO_CLIENT_CERT"], env["MINIO_CLIENT_KEY"] = clientCert.files(t)
	s := startService(t, "mtls", serviceOptions{env: env, configMap: map[string]string{"include-namespaces": ns}})
	s.waitPass(1)
	key := s.key(ns, "configmaps", "over-mtls")
	eventually(t, 10*time.Second, "the object stored through mutual TLS", func() bool { return s.body(key) != "" })
	if out, stderr, code := cliWith(t, e2e.minio, env, "ls", "-n", ns); code != 0 || !strings.Contains(out, "over-mtls") {
		t.Errorf("ls with a client certificate: exit %d\n%s%s", code, out, stderr)
	}
}

// testCA is a certificate authority of a test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
	pool *x509.CertPool
}

type testCert struct {
	pair            tls.Certificate
	certPEM, keyPEM []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue signs a server certificate for an IP, or a client certificate.
func (ca *testCA) issue(t *testing.T, name string, server bool) testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP(name)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	c := testCert{
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
	if c.pair, err = tls.X509KeyPair(c.certPEM, c.keyPEM); err != nil {
		t.Fatal(err)
	}
	return c
}

// files writes the certificate and its key and returns their paths.
func (c testCert) files(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, c.certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, c.keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestLeastPrivilegeRBAC(t *testing.T) {
	requireServers(t)
	kubectl, helmBin := testenv.Require(t, "kubectl")[0], testenv.Require(t, "helm")[0]
	ns, release, home := "e2e-least-privilege", "least-privilege", "e2e-backup-system"
	createNamespace(t, ns)
	createNamespace(t, home)
	createConfigMap(t, ns, "plain", map[string]string{"a": "b"}, nil, nil)
	if _, err := e2e.cs.CoreV1().Secrets(ns).Create(bg, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "creds"}, StringData: map[string]string{"k": "v"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	gadgets := installCRD(t, "rbac.example.com", "gadgets", "Gadget")
	createCustom(t, gadgets, "Gadget", ns, "g1")

	// The chart's RBAC as Helm renders it against this cluster (its CRDs
	// looked up), applied for real.
	cmd := exec.Command(helmBin, "template", release, "../../charts/cluster-backup", "--namespace", home,
		"--set", "clusterName=least-privilege", "--dry-run=server", "--kubeconfig", e2e.kube.Kubeconfig)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	manifests, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	var sa string
	objs, err := testenv.DecodeManifests(string(manifests))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		switch o.GetKind() {
		case "ServiceAccount", "ClusterRole", "ClusterRoleBinding":
			applyObject(t, o, home)
			if o.GetKind() == "ServiceAccount" {
				sa = "system:serviceaccount:" + home + ":" + o.GetName()
			}
		}
	}
	// A CRD added after the install: not covered until the next upgrade.
	latecomers := installCRD(t, "rbac.example.com", "latecomers", "Latecomer")
	createCustom(t, latecomers, "Latecomer", ns, "l1")

	canI := func(verb, resource string) bool {
		// kubectl reads TYPE/NAME: a subresource is a flag of its own.
		res, sub, _ := strings.Cut(resource, "/")
		args := []string{"--kubeconfig", e2e.kube.Kubeconfig, "auth", "can-i", verb, res, "--as", sa, "-n", ns}
		if sub != "" {
			args = append(args, "--subresource", sub)
		}
		out, _ := exec.Command(kubectl, args...).Output()
		return strings.TrimSpace(string(out)) == "yes"
	}
	for _, denied := range [][2]string{
		{"get", "nodes/proxy"}, {"get", "pods/log"}, {"get", "pods/exec"}, {"create", "pods/exec"}, {"get", "services/proxy"},
		{"get", "pods/proxy"}, {"get", "pods/attach"}, {"get", "pods/portforward"}, {"create", "serviceaccounts/token"},
		{"update", "configmaps"}, {"delete", "secrets"}, {"list", "latecomers.rbac.example.com"},
	} {
		if canI(denied[0], denied[1]) {
			t.Errorf("the service account can %s %s", denied[0], denied[1])
		}
	}
	for _, allowed := range []string{"deployments.apps", "secrets", "gadgets.rbac.example.com", "customresourcedefinitions.apiextensions.k8s.io", "nodes"} {
		if !canI("list", allowed) || !canI("watch", allowed) {
			t.Errorf("the service account cannot list and watch %s", allowed)
		}
	}

	// A full backup as that service account.
	kc, err := clientcmd.LoadFromFile(e2e.kube.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range kc.AuthInfos {
		a.Impersonate = sa
	}
	asSA := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, asSA); err != nil {
		t.Fatal(err)
	}
	s := startService(t, "least-privilege", serviceOptions{env: map[string]string{"KUBECONFIG": asSA}, args: []string{"snapshot"}})
	if code := s.waitExit(3*time.Minute, "snapshot as the chart's service account"); code != 0 {
		t.Errorf("snapshot as the chart's service account: exit %d, want 0 (a type the role does not cover is no failure)", code)
	}
	for _, key := range []string{s.key(ns, "configmaps", "plain"), s.key(ns, "secrets", "creds"), s.key(ns, "gadgets.rbac.example.com", "g1"), s.key("", "namespaces", ns)} {
		if s.body(key) == "" {
			t.Errorf("%s was not backed up", key)
		}
	}
	if s.body(s.key(ns, "latecomers.rbac.example.com", "l1")) != "" {
		t.Error("a type the role does not cover was backed up")
	}
	denied := 0
	for _, l := range s.logs("resource_list") {
		if l["resource"] == "latecomers.rbac.example.com" {
			denied++
		}
	}
	if denied != 1 {
		t.Errorf("the uncovered type was logged %d times, want once", denied)
	}
}

// applyObject creates a rendered object (in ns when it is namespaced) and
// deletes it when the test ends.
func applyObject(t *testing.T, o *unstructured.Unstructured, ns string) {
	t.Helper()
	gvr := map[string]schema.GroupVersionResource{
		"ServiceAccount":     {Version: "v1", Resource: "serviceaccounts"},
		"ClusterRole":        {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"},
		"ClusterRoleBinding": {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"},
	}[o.GetKind()]
	var ri dynamic.ResourceInterface = e2e.dyn.Resource(gvr)
	if o.GetKind() == "ServiceAccount" {
		ri = e2e.dyn.Resource(gvr).Namespace(ns)
	}
	if _, err := ri.Create(bg, o, metav1.CreateOptions{}); err != nil {
		t.Fatalf("%s %s: %v", o.GetKind(), o.GetName(), err)
	}
	t.Cleanup(func() { _ = ri.Delete(bg, o.GetName(), metav1.DeleteOptions{}) })
}

// TestPurgePlaintextSecrets: after SECRET_ENCRYPTION is turned on, the
// versions of Secrets written before it, and the restore packs holding
// them, stay readable until purge deletes them: a dry run lists them and
// deletes nothing, --yes deletes exactly them, and the current encrypted
// versions stay.
func TestPurgePlaintextSecrets(t *testing.T) {
	requireServers(t)
	ns, cluster := "e2e-purge", "purge"
	const password = "correct-horse-purge-battery"
	createNamespace(t, ns)
	if _, err := e2e.cs.CoreV1().Secrets(ns).Create(bg, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "db"}, StringData: map[string]string{"password": password},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"RESTORE_PACK_INTERVAL": "1s"}
	opts := serviceOptions{env: env, configMap: map[string]string{"include-namespaces": ns}}
	s := startService(t, cluster, opts)
	s.waitPass(1)
	layout := object.Layout{Prefix: "clusterbackup", Cluster: cluster}
	eventually(t, 30*time.Second, "the restore pack", func() bool { return s.versions(layout.PackKey()) == 1 })
	s.stop()

	id, keyFile := ageKey(t)
	env["SECRET_ENCRYPTION"], env["SECRET_HMAC_KEY"] = id.Recipient().String(), "hmac-key-purge-0123456789"
	s = startService(t, cluster, opts)
	s.waitPass(1)
	key := s.key(ns, "secrets", "db")
	eventually(t, 30*time.Second, "the Secret rewritten encrypted, and a new pack", func() bool {
		return s.versions(key) == 2 && s.versions(layout.PackKey()) == 2
	})
	s.stop()
	readable := func() (clear, versions int) {
		for v := range e2e.bucket.ListObjects(bg, bucketName, minio.ListObjectsOptions{Prefix: "clusterbackup/" + cluster + "/", Recursive: true, WithVersions: true}) {
			o, err := e2e.bucket.GetObject(bg, bucketName, v.Key, minio.GetObjectOptions{VersionID: v.VersionID})
			if err != nil || v.IsDeleteMarker {
				continue
			}
			b, _ := io.ReadAll(o)
			o.Close()
			versions++
			if strings.Contains(string(b), base64.StdEncoding.EncodeToString([]byte(password))) || bytes.Contains(b, []byte(password)) {
				clear++
			}
		}
		return clear, versions
	}
	clearBefore, versionsBefore := readable()
	if clearBefore == 0 {
		t.Fatal("no version holds the Secret in the clear: nothing to purge")
	}

	out, stderr, code := cli(t, cluster, "purge", "--plaintext-secrets")
	if code != exitOK || !strings.Contains(out, "plaintext  "+key) || !strings.Contains(out, "plaintext  "+layout.PackKey()) || !strings.Contains(stderr, "dry run") {
		t.Errorf("purge dry run: exit %d\n%s%s", code, out, stderr)
	}
	if clear, versions := readable(); clear != clearBefore || versions != versionsBefore {
		t.Errorf("the dry run deleted: %d versions in the clear, %d in all; %d and %d before", clear, versions, clearBefore, versionsBefore)
	}
	if out, stderr, code = cli(t, cluster, "purge", "--plaintext-secrets", "--yes"); code != exitOK {
		t.Fatalf("purge --yes: exit %d\n%s%s", code, out, stderr)
	}
	if clear, versions := readable(); clear != 0 || versions != versionsBefore-clearBefore {
		t.Errorf("after purge: %d versions in the clear, %d in all; want 0 and %d", clear, versions, versionsBefore-clearBefore)
	}
	if out, stderr, code := cli(t, cluster, "show", "secrets/db", "-n", ns, "--identity", keyFile); code != exitOK || !strings.Contains(out, base64.StdEncoding.EncodeToString([]byte(password))) {
		t.Errorf("show of the encrypted Secret after purge: exit %d\n%s%s", code, out, stderr)
	}
}
