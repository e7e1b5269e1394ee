package main

import (
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/testenv"
)

// TestWebViewAuth runs the web view with UI_AUTH=kubernetes against the
// real API server: without a token, with a token that is not one, and
// with the token of a service account the cluster's RBAC does not allow,
// nothing of the backup is served; a service account bound to the
// documented role sees it, by its Authorization header or through the
// sign-in page's cookie.
func TestWebViewAuth(t *testing.T) {
	requireServers(t)
	ns, cluster := "e2e-ui-auth", "webview-auth"
	createNamespace(t, ns)
	createConfigMap(t, ns, "app", map[string]string{"v": "1"}, nil, nil)
	svc := startService(t, cluster, serviceOptions{configMap: map[string]string{"include-namespaces": ns}})
	svc.waitReady()
	svc.waitPass(1)

	// The role the docs tell operators to grant, bound to one of two
	// service accounts.
	rbac := e2e.cs.RbacV1()
	if _, err := rbac.ClusterRoles().Create(bg, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "e2e-cluster-backup-ui-viewer"},
		Rules: []rbacv1.PolicyRule{{NonResourceURLs: []string{"/cluster-backup/ui"}, Verbs: []string{"get"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := rbac.ClusterRoleBindings().Create(bg, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "e2e-cluster-backup-ui-viewer"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "e2e-cluster-backup-ui-viewer"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "viewer", Namespace: ns}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	token := func(name string) string {
		t.Helper()
		if _, err := e2e.cs.CoreV1().ServiceAccounts(ns).Create(bg, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		tr, err := e2e.cs.CoreV1().ServiceAccounts(ns).CreateToken(bg, name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tr.Status.Token
	}
	viewer, stranger := token("viewer"), token("stranger")

	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	startService(t, cluster, serviceOptions{args: []string{"ui"}, secrets: []string{viewer, stranger},
		env: map[string]string{"UI_ADDR": fmt.Sprintf("127.0.0.1:%d", port), "UI_AUTH": "kubernetes"}})
	eventually(t, 30*time.Second, "the web view serving", func() bool {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == http.StatusOK
	})
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	// do makes one request; it returns the status, the body, the headers
	// and the cookies set.
	do := func(method, path, bearer, cookie string, form url.Values, header map[string]string) (int, string, http.Header, []*http.Cookie) {
		t.Helper()
		var body io.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		}
		req, err := http.NewRequest(method, base+path, body)
		if err != nil {
			t.Fatal(err)
		}
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header, resp.Cookies()
	}
	page := "/c/" + cluster + "/ns/" + ns + "/"
	object := `href="/c/` + cluster + `/o/` + ns + `/configmaps/app"`
	for name, tc := range map[string]struct {
		bearer string
		code   int
		want   string
	}{
		"no token":            {"", http.StatusUnauthorized, `<form method="post" action="/login">`},
		"not a token":         {"not-a-token", http.StatusUnauthorized, "not valid"},
		"a token RBAC denies": {stranger, http.StatusForbidden, "system:serviceaccount:" + ns + ":stranger"},
		"the viewer's token":  {viewer, http.StatusOK, object},
	} {
		code, body, _, _ := do(http.MethodGet, page, tc.bearer, "", nil, nil)
		if code != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %d, want %d and %q:\n%s", name, code, tc.code, tc.want, body)
		}
		if tc.code != http.StatusOK && strings.Contains(body, object) {
			t.Errorf("%s: the backup is shown", name)
		}
	}
	// The sign-in page: the viewer's token becomes an HttpOnly, SameSite
	// cookie; from another origin it is refused.
	code, _, header, cookies := do(http.MethodPost, "/login", "", "", url.Values{"token": {viewer}, "next": {page}}, nil)
	var cookie *http.Cookie
	for _, c := range cookies {
		cookie = c
	}
	if code != http.StatusSeeOther || header.Get("Location") != page || cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode {
		t.Fatalf("sign-in: %d to %q, cookie %+v", code, header.Get("Location"), cookie)
	}
	if code, body, _, _ := do(http.MethodGet, page, "", cookie.Name+"="+cookie.Value, nil, nil); code != http.StatusOK || !strings.Contains(body, object) {
		t.Errorf("with the sign-in cookie: %d\n%s", code, body)
	}
	if code, _, _, _ := do(http.MethodPost, "/login", "", "", url.Values{"token": {viewer}}, map[string]string{"Origin": "https://elsewhere.example"}); code != http.StatusForbidden {
		t.Errorf("a sign-in from another origin: %d, want 403", code)
	}
	if code, _, _, _ := do(http.MethodPost, "/login", "", "", url.Values{"token": {stranger}}, nil); code != http.StatusUnauthorized {
		t.Errorf("a sign-in with a token RBAC denies: %d, want 401", code)
	}
	if code, _, _, _ := do(http.MethodPost, page, viewer, "", url.Values{"x": {"y"}}, nil); code != http.StatusMethodNotAllowed {
		t.Errorf("a POST to a page: %d, want 405", code)
	}
}

// TestWebViewForgedDocuments: with INTEGRITY_KEY, a version written into
// the bucket by someone other than the service (a replayed tag, or none)
// is shown as failing its check: none of its content reaches the page,
// and the page offers no command to restore it; the genuine version
// before it is shown as it was stored, with its restore command.
func TestWebViewForgedDocuments(t *testing.T) {
	requireServers(t)
	ns, cluster := "e2e-ui-forged", "webview-forged"
	const key = "web-view-integrity-key-0123456789"
	createNamespace(t, ns)
	createConfigMap(t, ns, "settings", map[string]string{"mode": "genuine-4711"}, nil, nil)
	createConfigMap(t, ns, "plain", map[string]string{"a": "genuine-4712"}, nil, nil)
	svc := startService(t, cluster, serviceOptions{secrets: []string{key},
		env: map[string]string{"INTEGRITY_KEY": key}, configMap: map[string]string{"include-namespaces": ns}})
	svc.waitPass(1)
	settingsKey, plainKey := svc.key(ns, "configmaps", "settings"), svc.key(ns, "configmaps", "plain")
	eventually(t, 30*time.Second, "both stored", func() bool { return svc.versions(settingsKey) == 1 && svc.versions(plainKey) == 1 })
	genuine, err := e2e.bucket.StatObject(bg, bucketName, settingsKey, minio.StatObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc.stop() // so that no pass rewrites the forgeries
	forge := func(key, body string, meta map[string]string) {
		t.Helper()
		md := map[string]string{object.MetaAPIVersion: "v1"}
		maps.Copy(md, meta)
		forgeVersion(t, key, body, md)
	}
	gm := object.MetaFromMap(genuine.UserMetadata)
	forge(settingsKey, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: "+ns+"\ndata:\n  mode: forged-0666\n",
		map[string]string{object.MetaIntegrity: gm.Integrity, object.MetaClusterUID: gm.ClusterUID})
	forge(plainKey, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: plain\n  namespace: "+ns+"\ndata:\n  a: forged-0667\n", nil)

	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	startService(t, cluster, serviceOptions{args: []string{"ui"}, secrets: []string{key},
		env: map[string]string{"UI_ADDR": fmt.Sprintf("127.0.0.1:%d", port), "INTEGRITY_KEY": key}})
	get := func(path string) string {
		t.Helper()
		var body []byte
		eventually(t, 30*time.Second, "the web view answering "+path, func() bool {
			resp, err := http.Get(base + path)
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			body, err = io.ReadAll(resp.Body)
			return err == nil && resp.StatusCode == http.StatusOK
		})
		return string(body)
	}
	for name, forged := range map[string]string{"settings": "forged-0666", "plain": "forged-0667"} {
		page := get("/c/" + cluster + "/o/" + ns + "/configmaps/" + name)
		if strings.Contains(page, forged) {
			t.Errorf("%s: the forged content is on the page", name)
		}
		if !strings.Contains(page, "integrity") || !strings.Contains(page, `role="alert"`) {
			t.Errorf("%s: the page does not say the version fails its integrity check:\n%s", name, page)
		}
		if strings.Contains(page, "restore-command") || strings.Contains(page, " restore configmaps/"+name) {
			t.Errorf("%s: the page offers to restore the forged version", name)
		}
	}
	// The genuine version, by its ID: shown, with its restore command.
	page := get("/c/" + cluster + "/o/" + ns + "/configmaps/settings?b=" + genuine.VersionID)
	if !strings.Contains(page, "genuine-4711") || !strings.Contains(page, "restore configmaps/settings -n "+ns) {
		t.Errorf("the genuine version is not shown with its restore command:\n%s", page)
	}
}
