package testenv

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
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
	api     *process // the API server after a restart
	apiArgs []string // its command line, for restarts
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

// StopAPIServer ends the API server (SIGTERM, then SIGKILL after 10 s),
// keeping etcd, the certificates and every other server, for outage tests.
// StartAPIServer brings it back on the same port.
func (k *Kube) StopAPIServer() error {
	if k.api != nil {
		k.api.stop(10 * time.Second)
		k.api = nil
		return nil
	}
	pid, args, err := k.apiServerProcess()
	if err != nil {
		return err
	}
	k.apiArgs = args
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for processRuns(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// StartAPIServer restarts the API server stopped by StopAPIServer with the
// same command line, and returns once it answers /readyz.
func (k *Kube) StartAPIServer(ctx context.Context) error {
	if len(k.apiArgs) == 0 {
		return errors.New("the API server was not stopped")
	}
	var err error
	k.api, err = startProcess("kube-apiserver", filepath.Join(k.dir, "kube-apiserver-restarted.log"), nil, k.apiArgs[0], k.apiArgs[1:]...)
	if err != nil {
		return err
	}
	client, err := rest.HTTPClientFor(k.Config)
	if err != nil {
		return err
	}
	return k.api.waitHTTP(ctx, client, strings.TrimSuffix(k.Config.Host, "/")+"/readyz", 90*time.Second)
}

// apiServerProcess finds this control plane's kube-apiserver among the
// test binary's children by its secure port.
func (k *Kube) apiServerProcess() (int, []string, error) {
	u, err := url.Parse(k.Config.Host)
	if err != nil {
		return 0, nil, err
	}
	want := "--secure-port=" + u.Port()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, nil, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if len(args) > 0 && filepath.Base(args[0]) == "kube-apiserver" && slices.Contains(args, want) {
			return pid, args, nil
		}
	}
	return 0, nil, fmt.Errorf("no kube-apiserver with %s", want)
}

// processRuns reports whether pid is alive (not gone, not a zombie).
func processRuns(pid int) bool {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && !strings.HasPrefix(strings.TrimSpace(s[i+1:]), "Z")
}

// Dir holds the servers' logs.
func (k *Kube) Dir() string { return k.dir }

// Stop ends every server and removes their data.
func (k *Kube) Stop() {
	k.kcm.stop(5 * time.Second)
	k.api.stop(10 * time.Second)
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
