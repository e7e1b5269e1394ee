package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"runtime"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/cluster-backup/cluster-backup/config"
	"github.com/cluster-backup/cluster-backup/encode"
	"github.com/cluster-backup/cluster-backup/journal"
	"github.com/cluster-backup/cluster-backup/logging"
	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/service"
	"github.com/cluster-backup/cluster-backup/sink"
	"github.com/cluster-backup/cluster-backup/ui"
)

// runUI serves the web view on UI_ADDR until the process is stopped; with
// open, the default browser is pointed at it.
func runUI(ctx context.Context, cfg config.Config, sel *selection, open bool, binary string, stdout, stderr io.Writer) error {
	store, err := openReadStore(ctx, cfg, readConnections)
	if err != nil {
		return err
	}
	lister, ok := store.(ui.Lister)
	if !ok {
		return fatalError{errors.New("this store cannot list its keys")}
	}
	folders, _ := store.(ui.Folders)
	var source journal.Source // the service writes the journal to S3 stores only
	if m, ok := store.(*sink.MinIO); ok {
		source = m
	}
	log := logging.New(stderr, cfg.LogLevel).With(logging.Component("ui"))
	opts := ui.Options{
		Reader: sel.signed(store, cfg, "ui", stderr), Lister: lister, Folders: folders,
		Journal: source, Signer: cfg.Signer, AcceptUnsigned: sel.acceptUnsigned,
		Prefix: cfg.BackupPrefix, Command: binary, Log: log,
	}
	if cfg.UIAuth == "kubernetes" {
		// Every request is checked with the cluster's RBAC; the view's
		// own identity reads nothing of the cluster for its users.
		kube, err := service.RestConfig(cfg, version)
		if err != nil {
			return fatalError{fmt.Errorf("UI_AUTH=kubernetes needs the cluster: %w", err)}
		}
		client, err := kubernetes.NewForConfig(kube)
		if err != nil {
			return fatalError{err}
		}
		opts.Auth = &ui.KubernetesAuth{Client: client}
	} else {
		opts.Live = liveReader(cfg)
	}
	srv, err := ui.New(opts)
	if err != nil {
		return fatalError{err}
	}
	ln, err := net.Listen("tcp", cfg.UIAddr)
	if err != nil {
		return fatalError{fmt.Errorf("listen on UI_ADDR %s: %w", cfg.UIAddr, err)}
	}
	url := "http://" + ln.Addr().String() + "/"
	if cfg.ClusterName != "" {
		url += "c/" + cfg.ClusterName + "/"
	}
	fmt.Fprintf(stdout, "Serving the web view of the backup (read-only) on %s\n", url)
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(shutdown)
	}()
	if open {
		if err := openURL(url); err != nil {
			fmt.Fprintf(stderr, "ui: cannot open a browser (%v); open %s\n", err, url)
		}
	}
	if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fatalError{err}
	}
	return nil
}

// openURL points the desktop's browser at url.
func openURL(url string) error {
	var cmd *exec.Cmd
	switch runtime.GOOS {
	case "darwin":
		cmd = exec.Command("open", url)
	case "windows":
		cmd = exec.Command("rundll32", "url.dll,FileProtocolHandler", url)
	default:
		cmd = exec.Command("xdg-open", url)
	}
	return cmd.Start()
}

// liveReader reads objects of the cluster the kubeconfig reaches, encoded
// as the service stores them, for the backed-up cluster of CLUSTER_NAME
// (--backup-cluster) only: the view cannot tell which other backed-up
// cluster, if any, the kubeconfig's is. nil when no cluster is reachable.
func liveReader(cfg config.Config) func(ctx context.Context, cluster string, k object.Key) ([]byte, bool, error) {
	if cfg.ClusterName == "" {
		return nil
	}
	kube, err := service.RestConfig(cfg, version)
	if err != nil {
		return nil
	}
	if cfg.Kube.Timeout == "" {
		kube.Timeout = 5 * time.Second
	}
	if _, err := discovery.NewDiscoveryClientForConfigOrDie(kube).ServerVersion(); err != nil {
		return nil
	}
	dyn, err := dynamic.NewForConfig(kube)
	if err != nil {
		return nil
	}
	res := newResolver(kube)
	return func(ctx context.Context, cluster string, k object.Key) ([]byte, bool, error) {
		if cluster != cfg.ClusterName {
			return nil, false, fmt.Errorf("the kubeconfig's cluster is taken for %s, not %s", cfg.ClusterName, cluster)
		}
		resource, group, _ := strings.Cut(k.Segment, ".")
		gvk, err := res.mapper.KindFor(schema.GroupVersionResource{Group: group, Resource: resource})
		if err != nil {
			return nil, false, err
		}
		m, err := res.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return nil, false, err
		}
		var client dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			client = dyn.Resource(m.Resource).Namespace(k.Namespace)
		}
		obj, err := client.Get(ctx, k.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, err
		}
		enc, err := encode.Options{}.Encode(obj)
		if err != nil {
			return nil, false, err
		}
		return enc.Body, true, nil
	}
}
