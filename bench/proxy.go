package main

import (
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// proxy sits between the service and MinIO and counts what the service asks
// of the store, so write amplification is measured from outside the service.
// It also reports each successful object PUT with the resource version the
// service stored, for the change-latency scenario.
type proxy struct {
	srv     *http.Server
	addr    string
	puts    atomic.Int64
	deletes atomic.Int64
	lists   atomic.Int64
	gets    atomic.Int64 // object reads

	mu     sync.Mutex
	onPut  func(put landedPut)
	bucket string
}

func startProxy(target, bucket string) (*proxy, error) {
	u, err := url.Parse("http://" + target)
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proxy{addr: l.Addr().String(), bucket: bucket}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 256}
	p.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		began := time.Now()
		rp.ServeHTTP(rec, r)
		p.count(r, rec.code, began)
	})}
	go func() { _ = p.srv.Serve(l) }()
	return p, nil
}

// objectKey returns the key of an object request (/bucket/key), or "" for
// bucket-level requests.
func (p *proxy) objectKey(r *http.Request) string {
	rest, ok := strings.CutPrefix(r.URL.Path, "/"+p.bucket+"/")
	if !ok {
		return ""
	}
	return rest
}

// landedPut is a PUT the store accepted: when the service sent it and when
// the store answered.
type landedPut struct {
	key, resourceVersion string
	began, at            time.Time
}

func (p *proxy) count(r *http.Request, code int, began time.Time) {
	key := p.objectKey(r)
	switch {
	case r.Method == http.MethodPut && key != "" && !r.URL.Query().Has("uploadId"):
		// Parts of a multipart upload (the restore pack) are not
		// documents written.
		p.puts.Add(1)
		if code/100 == 2 {
			p.mu.Lock()
			f := p.onPut
			p.mu.Unlock()
			if f != nil {
				f(landedPut{key: key, resourceVersion: r.Header.Get("X-Amz-Meta-Resource-Version"), began: began, at: time.Now()})
			}
		}
	case r.Method == http.MethodDelete && key != "":
		p.deletes.Add(1)
	case r.Method == http.MethodPost && r.URL.Query().Has("delete"):
		p.deletes.Add(1)
	case r.Method == http.MethodGet && key == "" && (r.URL.Query().Has("list-type") || r.URL.Query().Has("prefix") || r.URL.Query().Has("versions")):
		p.lists.Add(1)
	case r.Method == http.MethodGet && key != "":
		p.gets.Add(1)
	}
}

// watchPuts sets the callback for successful PUTs (nil to stop).
func (p *proxy) watchPuts(f func(landedPut)) {
	p.mu.Lock()
	p.onPut = f
	p.mu.Unlock()
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
