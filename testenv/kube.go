package testenv

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// KubeOptions choose what runs beside etcd and kube-apiserver.
type KubeOptions struct {
	// ControllerManager starts kube-controller-manager, for garbage
	// collection, namespace deletion and workload controllers.
	ControllerManager bool
}

// Kube is a real control plane on 127.0.0.1.
type Kube struct {
	Config     *rest.Config // cluster-admin
	Kubeconfig string       // path of a kubeconfig file for Config

	env     *envtest.Environment
	kcm     *process
	dir     string
	pidFile string
}

// StartKube starts etcd and kube-apiserver, and kube-controller-manager when
// asked, and returns once the API server answers /readyz.
func StartKube(ctx context.Context, opts KubeOptions) (*Kube, error) {
	for _, name := range []string{"etcd", "kube-apiserver"} {
		if _, err := Binary(name); err != nil {
			return nil, err
		}
	}
	reapOrphans()
	dir, err := os.MkdirTemp("", "cluster-backup-kube-")
	if err != nil {
		return nil, err
	}
	k := &Kube{dir: dir}
	apiLog, err := os.Create(filepath.Join(dir, "kube-apiserver.log"))
	if err != nil {
		return nil, err
	}
	etcdLog, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		return nil, err
	}
	// envtest logs through controller-runtime's logger; without one set it
	// prints a stack trace to say so.
	ctrllog.SetLogger(logr.Discard())
	k.env = &envtest.Environment{
		BinaryAssetsDirectory:    Assets(),
		ControlPlaneStartTimeout: 90 * time.Second,
		ControlPlaneStopTimeout:  30 * time.Second,
		ControlPlane: envtest.ControlPlane{
			APIServer: &envtest.APIServer{Out: apiLog, Err: apiLog},
			Etcd:      &envtest.Etcd{Out: etcdLog, Err: etcdLog},
		},
	}
	k.Config, err = k.env.Start()
	if err != nil {
		k.Stop()
		return nil, fmt.Errorf("start control plane (logs in %s): %w", dir, err)
	}
	if k.pidFile, err = recordChildren("etcd", "kube-apiserver"); err != nil {
		k.Stop()
		return nil, err
	}
	k.Config.QPS, k.Config.Burst = 200, 400
	k.Kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(k.Kubeconfig, k.env.KubeConfig, 0o600); err != nil {
		k.Stop()
		return nil, err
	}
	if opts.ControllerManager {
		if err := k.startControllerManager(ctx); err != nil {
			k.Stop()
			return nil, err
		}
	}
	return k, nil
}

func (k *Kube) startControllerManager(ctx context.Context) error {
	bin, err := Binary("kube-controller-manager")
	if err != nil {
		return err
	}
	port, err := FreePort()
	if err != nil {
		return err
	}
	certDir := k.env.ControlPlane.GetAPIServer().CertDir
	k.kcm, err = startProcess("kube-controller-manager", filepath.Join(k.dir, "kube-controller-manager.log"), nil, bin,
		"--kubeconfig="+k.Kubeconfig,
		"--authentication-kubeconfig="+k.Kubeconfig,
		"--authorization-kubeconfig="+k.Kubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(port),
		"--leader-elect=false",
		"--controllers=*",
		"--service-account-private-key-file="+filepath.Join(certDir, "sa-signer.key"),
		"--use-service-account-credentials=false",
		"--concurrent-gc-syncs=5",
	)
	if err != nil {
		return err
	}
	// The controller manager serves /healthz without authentication, on a
	// self-signed certificate.
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // loopback test server
	}}
	return k.kcm.waitHTTP(ctx, client, fmt.Sprintf("https://127.0.0.1:%d/healthz", port), 60*time.Second)
}

// Dir holds the servers' logs.
func (k *Kube) Dir() string { return k.dir }

// Stop ends every server and removes their data.
func (k *Kube) Stop() {
	k.kcm.stop(5 * time.Second)
	if k.env != nil {
		_ = k.env.Stop()
	}
	if k.pidFile != "" {
		_ = os.Remove(k.pidFile)
	}
	if os.Getenv("KEEP_TESTENV_LOGS") == "" {
		_ = os.RemoveAll(k.dir)
	}
}

// AddUser creates a client-certificate user in the given groups and writes
// a kubeconfig for it, for tests of what a restricted service account sees.
func (k *Kube) AddUser(name string, groups ...string) (string, error) {
	u, err := k.env.AddUser(envtest.User{Name: name, Groups: groups}, k.Config)
	if err != nil {
		return "", err
	}
	kc, err := u.KubeConfig()
	if err != nil {
		return "", err
	}
	path := filepath.Join(k.dir, "kubeconfig-"+name)
	return path, os.WriteFile(path, kc, 0o600)
}
