package testenv

import (
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
)

// StartGitHTTP serves the repositories under root over git's smart HTTP
// protocol (git http-backend) on 127.0.0.1, behind basic auth with user
// and password: what a Git host's HTTPS endpoint does, less the TLS. It
// needs Debian's git.
func StartGitHTTP(root, user, password string) *httptest.Server {
	backend := &cgi.Handler{Path: "/usr/lib/git-core/git-http-backend",
		Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1", "REMOTE_USER=" + user}}
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != user || p != password {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		backend.ServeHTTP(w, r)
	}))
}
