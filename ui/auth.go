package ui

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Path is the non-resource URL a user needs get on to see the view with
// UI_AUTH=kubernetes:
//
//	rules: [{nonResourceURLs: ["/cluster-backup/ui"], verbs: ["get"]}]
const Path = "/cluster-backup/ui"

// Errors of an Authorizer.
var (
	ErrUnauthenticated = errors.New("the token is not valid")
	ErrForbidden       = errors.New("not allowed to see the backup's web view")
)

// Authorizer decides who may see the view.
type Authorizer interface {
	// Allowed returns the user a bearer token belongs to, or an error
	// wrapping ErrUnauthenticated or ErrForbidden.
	Allowed(ctx context.Context, token string) (user string, err error)
}

// KubernetesAuth authenticates a bearer token with the API server's
// TokenReview and authorizes its user with a SubjectAccessReview of get on
// Path, as kube-rbac-proxy does; answers are kept for TTL (by the token's
// SHA-256), so the API server is asked once a minute per user, not per
// page.
type KubernetesAuth struct {
	Client kubernetes.Interface
	TTL    time.Duration // 0: a minute

	mu      sync.Mutex
	answers map[[sha256.Size]byte]answer
}

type answer struct {
	user string
	err  error
	at   time.Time
}

// maxAnswers bounds the answers kept: beyond it they are all dropped.
const maxAnswers = 10000

// Allowed implements Authorizer.
func (a *KubernetesAuth) Allowed(ctx context.Context, token string) (string, error) {
	ttl := a.TTL
	if ttl <= 0 {
		ttl = time.Minute
	}
	sum := sha256.Sum256([]byte(token))
	a.mu.Lock()
	if ans, ok := a.answers[sum]; ok && time.Since(ans.at) < ttl {
		a.mu.Unlock()
		return ans.user, ans.err
	}
	a.mu.Unlock()
	user, err := a.review(ctx, token)
	var transient *transientError
	if errors.As(err, &transient) {
		return "", err // the API server did not answer: not kept
	}
	a.mu.Lock()
	if a.answers == nil || len(a.answers) >= maxAnswers {
		a.answers = map[[sha256.Size]byte]answer{}
	}
	a.answers[sum] = answer{user, err, time.Now()}
	a.mu.Unlock()
	return user, err
}

// transientError is an API server that could not be asked.
type transientError struct{ err error }

func (e *transientError) Error() string { return "cannot check the token: " + e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

func (a *KubernetesAuth) review(ctx context.Context, token string) (string, error) {
	tr, err := a.Client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", &transientError{err}
	}
	if !tr.Status.Authenticated {
		return "", ErrUnauthenticated
	}
	u := tr.Status.User
	extra := map[string]authorizationv1.ExtraValue{}
	for k, v := range u.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	sar, err := a.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{
			User: u.Username, UID: u.UID, Groups: u.Groups, Extra: extra,
			NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: Path, Verb: "get"},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", &transientError{err}
	}
	if !sar.Status.Allowed {
		return u.Username, fmt.Errorf("%s: %w (it needs get on the non-resource URL %s)", u.Username, ErrForbidden, Path)
	}
	return u.Username, nil
}

// tokenCookie holds the token the sign-in page took.
const tokenCookie = "cluster-backup-ui-token"

// tokenOf is the request's bearer token: its Authorization header, else
// the sign-in cookie.
func tokenOf(r *http.Request) string {
	if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Bearer ") {
		return strings.TrimSpace(strings.TrimPrefix(h, "Bearer "))
	}
	if c, err := r.Cookie(tokenCookie); err == nil {
		return c.Value
	}
	return ""
}

// authenticate lets through the requests whose token the Authorizer
// allows; the others get the sign-in page (no token, or one not valid,
// 401) or a refusal (403). The stylesheet, the health check and the
// sign-in page itself need no token.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/login" || r.URL.Path == "/healthz" || strings.HasPrefix(r.URL.Path, "/static/") {
			next.ServeHTTP(w, r)
			return
		}
		token := tokenOf(r)
		if token == "" {
			s.signIn(w, r, http.StatusUnauthorized, "")
			return
		}
		_, err := s.opts.Auth.Allowed(r.Context(), token)
		switch {
		case errors.Is(err, ErrForbidden):
			s.fail(w, http.StatusForbidden, err)
		case err != nil:
			s.signIn(w, r, http.StatusUnauthorized, err.Error())
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// signIn serves the sign-in page: a token to paste (kubectl create token
// NAME), kept in a cookie the page's script cannot read.
func (s *Server) signIn(w http.ResponseWriter, r *http.Request, status int, problem string) {
	next := r.URL.RequestURI()
	if r.URL.Path == "/login" {
		next = r.URL.Query().Get("next")
	}
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") {
		next = "/"
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	s.renderBody(w, "login", page{Title: "Sign in", Data: map[string]string{"Problem": problem, "Next": next, "Path": Path}})
}

// login takes a pasted token (POST, from this origin only), checks it and
// keeps it in an HttpOnly, SameSite=Strict cookie.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		s.signIn(w, r, http.StatusOK, "")
		return
	}
	if origin := r.Header.Get("Origin"); origin != "" {
		if u, err := url.Parse(origin); err != nil || u.Host != r.Host {
			s.fail(w, http.StatusForbidden, errors.New("a sign-in from another origin"))
			return
		}
	}
	token := strings.TrimSpace(r.PostFormValue("token"))
	if _, err := s.opts.Auth.Allowed(r.Context(), token); err != nil || token == "" {
		if err == nil {
			err = ErrUnauthenticated
		}
		s.signIn(w, r, http.StatusUnauthorized, err.Error())
		return
	}
	http.SetCookie(w, &http.Cookie{Name: tokenCookie, Value: token, Path: "/", HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode, MaxAge: 8 * 3600})
	next := r.PostFormValue("next")
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") {
		next = "/"
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}
