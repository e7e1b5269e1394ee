package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"debug/elf"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"go.uber.org/zap"
	"golang.org/x/crypto/ssh"

	"github.com/cluster-backup/cluster-backup/journal"
	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/sink"
	"github.com/cluster-backup/cluster-backup/testenv"
)

// TestGitSyncImage builds git-sync's image for both platforms with Debian's
// packages and runs it: each platform's git and ssh are built for it, the
// image holds what scanners read (status.d, os-release) and no manual; the
// SBOM lists the Debian packages. Then this machine's image, unpacked,
// runs git-sync as a container runtime would, as UID 1001 on a read-only
// root with a writable /tmp: it reads a bucket on a real MinIO and pushes
// its history over HTTP with basic auth to a real git server (git
// http-backend), through the image's own git, credential helper and shell.
func TestGitSyncImage(t *testing.T) {
	testenv.Require(t, "minio")
	for _, tool := range []string{"apt-get", "dpkg-deb", "git", "unshare", "chroot"} {
		if _, err := exec.LookPath(tool); err != nil {
			if testenv.InCI() {
				t.Fatalf("CI=true and %s is missing: %v", tool, err)
			}
			t.Skipf("skipping: %v", err)
		}
	}
	out := t.TempDir()
	t.Chdir("../..")
	ref, err := chartRef("charts/cluster-backup", gitSyncImage)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ref, "ghcr.io/cluster-backup/cluster-backup-git:") {
		t.Errorf("the chart's git-sync image %q", ref)
	}
	buildImage(t, out, ref, "-git-sync")
	images := imagesOf(t, filepath.Join(out, "oci"), ref)
	for arch, img := range images {
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.Config.User != "1001:1001" || strings.Join(cf.Config.Cmd, " ") != "git-sync" ||
			cf.Config.Labels["org.opencontainers.image.title"] != "cluster-backup-git" {
			t.Errorf("%s: user %q, cmd %q, labels %v", arch, cf.Config.User, cf.Config.Cmd, cf.Config.Labels)
		}
		root := filepath.Join(out, "rootfs-"+arch)
		unpackImage(t, out, img, root)
		for _, name := range []string{"usr/bin/git", "usr/bin/ssh", "bin/dash", "etc/os-release", "var/lib/dpkg/status.d/git",
			"usr/share/doc/git/copyright", "usr/local/bin/cluster-backup", "etc/passwd"} {
			if _, err := os.Lstat(filepath.Join(root, name)); err != nil {
				t.Errorf("%s: %v", arch, err)
			}
		}
		for _, dir := range []string{"usr/share/man", "usr/share/locale"} {
			if _, err := os.Stat(filepath.Join(root, dir)); err == nil {
				t.Errorf("%s: the image holds %s", arch, dir)
			}
		}
		if status, _ := os.ReadFile(filepath.Join(root, "var/lib/dpkg/status.d/git")); !strings.Contains(string(status), "Status: install ok installed") {
			t.Errorf("%s: status.d/git: %q", arch, status)
		}
		want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[arch]
		for _, name := range []string{"usr/bin/git", "usr/bin/ssh", "usr/local/bin/cluster-backup"} {
			f, err := elf.Open(filepath.Join(root, name))
			if err != nil {
				t.Errorf("%s: %s: %v", arch, name, err)
				continue
			}
			if f.Machine != want {
				t.Errorf("%s: %s is built for %v", arch, name, f.Machine)
			}
			_ = f.Close()
		}
	}
	var sbom struct {
		Packages []struct {
			Name string `json:"name"`
			Refs []struct {
				Locator string `json:"referenceLocator"`
			} `json:"externalRefs"`
		} `json:"packages"`
	}
	raw, err := os.ReadFile(filepath.Join(out, "sbom.spdx.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &sbom); err != nil {
		t.Fatal(err)
	}
	purls := map[string]string{}
	for _, p := range sbom.Packages {
		if len(p.Refs) > 0 {
			purls[p.Name] = p.Refs[0].Locator
		}
	}
	for _, name := range []string{"git", "openssh-client", "libc6", "k8s.io/client-go"} {
		if purls[name] == "" {
			t.Errorf("the SBOM does not list %s", name)
		}
	}
	if !strings.HasPrefix(purls["git"], "pkg:deb/debian/git@") {
		t.Errorf("git's package URL %q", purls["git"])
	}

	img := images[runtime.GOARCH]
	if img == nil {
		t.Fatalf("no image for %s", runtime.GOARCH)
	}
	if os.Geteuid() != 0 {
		if testenv.InCI() {
			t.Fatal("CI=true: running the image's root filesystem needs root (a mount namespace and chroot)")
		}
		t.Skip("skipping the run: it needs root (a mount namespace and chroot)")
	}
	root := filepath.Join(out, "rootfs-"+runtime.GOARCH)
	for _, d := range []string{"tmp", "dev", "proc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The container's writable /tmp; everything else is the image, read-only.
	tmp := t.TempDir()
	if err := os.Chmod(tmp, 0o1777); err != nil {
		t.Fatal(err)
	}
	for _, probe := range [][]string{{"/usr/bin/git", "--version"}, {"/usr/bin/ssh", "-V"}, {"/bin/sh", "-c", "touch /etc/x 2>/dev/null || echo read-only"}} {
		got, err := inContainer(root, tmp, probe...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v in the image: %v: %s", probe, err, got)
		}
		t.Logf("%v: %s", probe, strings.TrimSpace(string(got)))
		if probe[0] == "/bin/sh" && strings.TrimSpace(string(got)) != "read-only" {
			t.Errorf("the image's root is writable: %q", got)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, err := testenv.StartMinIO(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	store, err := sink.NewMinIO(ctx, sink.MinIOOptions{Endpoint: srv.Endpoint, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey,
		Bucket: "cluster-backups", Region: "us-east-1"}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	// A write as the service makes it: the document, then its entry in
	// the change journal, which git-sync follows.
	layout := object.Layout{Prefix: "clusterbackup", Cluster: "demo"}
	changes := journal.NewRecorder(store, layout, nil, zap.NewNop(), nil)
	body := []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n  namespace: shop\ndata:\n  v: \"1\"\n")
	write := changes.Begin()
	if err := store.Put(ctx, layout.Root()+"shop/configmaps/app.yaml", body, object.Meta{SHA256: object.Digest(body)}); err != nil {
		t.Fatal(err)
	}
	changes.End(write, &journal.Entry{Time: time.Now(), Op: journal.Put, Key: "shop/configmaps/app.yaml", ResourceVersion: "1"})
	if err := changes.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	// Two git servers on loopback: smart HTTP (git http-backend) behind
	// basic auth, read from a git-credentials file through the image's
	// credential helper and shell; and SSH, with a key that is, as the
	// chart mounts it, root's and readable by the group 1001 only.
	repos := t.TempDir()
	for _, repo := range []string{"http.git", "ssh.git"} {
		git(t, repos, "init", "-q", "--bare", "-b", "main", repo)
	}
	const user, token = "ops", "t0ken-in-the-image"
	gitServer := testenv.StartGitHTTP(repos, user, token)
	defer gitServer.Close()
	creds := strings.Replace(gitServer.URL, "http://", "http://"+user+":"+token+"@", 1) + "\n"
	if err := os.WriteFile(filepath.Join(tmp, "credentials"), []byte(creds), 0o644); err != nil {
		t.Fatal(err)
	}
	clientKey := writeSSHKey(t, filepath.Join(tmp, "ssh-key"))
	sshAddr := sshGitServer(t, repos, clientKey)

	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	start := func(repository string, env ...string) *syncBuffer {
		port, err := testenv.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		cmd := inContainer(root, tmp, append(cf.Config.Entrypoint, cf.Config.Cmd...)...)
		cmd.Env = append(append(cf.Config.Env, "HOME=/tmp",
			"CLUSTER_NAME=demo", "MINIO_ENDPOINT="+srv.Endpoint, "MINIO_ACCESS_KEY="+srv.AccessKey, "MINIO_SECRET_KEY="+srv.SecretKey,
			"MINIO_USE_SSL=false", "GIT_REPOSITORY="+repository, "GIT_WORKDIR=/tmp/"+filepath.Base(repository),
			"GIT_COMMIT_WINDOW=1s", fmt.Sprintf("METRICS_ADDR=127.0.0.1:%d", port)), env...)
		logs := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = logs, logs
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var waitErr error
		exited := make(chan struct{})
		go func() { waitErr = cmd.Wait(); close(exited) }()
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-exited
			if t.Failed() {
				t.Logf("git-sync in the image, pushing to %s:\n%s", repository, logs.String())
			}
		})
		repo := filepath.Join(repos, filepath.Base(repository))
		began := time.Now()
		deadline := began.Add(90 * time.Second)
		for {
			got, err := exec.Command("git", "--git-dir", repo, "show", "main:shop/configmaps/app.yaml").Output()
			if err == nil && string(got) == string(body) {
				t.Logf("git-sync in the image pushed to %s %.1f s after it started", repository, time.Since(began).Seconds())
				break
			}
			select {
			case <-exited:
				t.Fatalf("git-sync in the image, pushing to %s, exited: %v", repository, waitErr)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("the document is not in %s after 90 s: %v %q", repository, err, got)
			}
			time.Sleep(200 * time.Millisecond)
		}
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(status), "\nUid:\t1001\t1001\t1001\t1001\n") {
			t.Errorf("git-sync in the image does not run as 1001:\n%s", status)
		}
		return logs
	}
	for _, logs := range []*syncBuffer{
		start(gitServer.URL+"/http.git", "GIT_CREDENTIALS_FILE=/tmp/credentials"),
		start("ssh://git@"+sshAddr+"/ssh.git", "GIT_SSH_KEY_FILE=/tmp/ssh-key"),
	} {
		if strings.Contains(logs.String(), token) || strings.Contains(logs.String(), srv.SecretKey) || strings.Contains(logs.String(), "PRIVATE KEY") {
			t.Error("a credential is in git-sync's log")
		}
	}
}

// syncBuffer collects a process's output while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// writeSSHKey writes a new ed25519 private key in OpenSSH's format to
// file, owned by root and readable by the group 1001 alone (a Secret
// mounted with defaultMode 0400 under the chart's fsGroup), and returns
// its public key.
func writeSSHKey(t *testing.T, file string) ssh.PublicKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "git-sync")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o440); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(file, 0, 1001); err != nil {
		t.Fatal(err)
	}
	key, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// sshGitServer serves the bare repositories under dir over SSH on
// loopback (golang.org/x/crypto/ssh): a client with the authorized key
// runs git-upload-pack or git-receive-pack, and nothing else. It returns
// host:port.
func sshGitServer(t *testing.T, dir string, authorized ssh.PublicKey) string {
	t.Helper()
	_, hostKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(hostKey)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
		if !bytes.Equal(key.Marshal(), authorized.Marshal()) {
			return nil, errors.New("key not authorized")
		}
		return &ssh.Permissions{}, nil
	}}
	cfg.AddHostKey(signer)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go serveSSH(conn, cfg, dir)
		}
	}()
	return l.Addr().String()
}

// serveSSH runs one connection's git commands.
func serveSSH(conn net.Conn, cfg *ssh.ServerConfig, dir string) {
	defer func() { _ = conn.Close() }()
	_, chans, reqs, err := ssh.NewServerConn(conn, cfg)
	if err != nil {
		return
	}
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			_ = nc.Reject(ssh.UnknownChannelType, "sessions only")
			continue
		}
		ch, requests, err := nc.Accept()
		if err != nil {
			return
		}
		go func() {
			defer func() { _ = ch.Close() }()
			for req := range requests {
				if req.Type != "exec" {
					_ = req.Reply(false, nil)
					continue
				}
				var payload struct{ Command string }
				if err := ssh.Unmarshal(req.Payload, &payload); err != nil {
					_ = req.Reply(false, nil)
					return
				}
				service, repo, _ := strings.Cut(payload.Command, " ")
				repo = strings.Trim(repo, "'")
				if service != "git-upload-pack" && service != "git-receive-pack" || strings.Contains(repo, "..") {
					_ = req.Reply(false, nil)
					return
				}
				_ = req.Reply(true, nil)
				cmd := exec.Command("git", strings.TrimPrefix(service, "git-"), filepath.Join(dir, filepath.Clean("/"+repo)))
				cmd.Stdin, cmd.Stdout, cmd.Stderr = ch, ch, ch.Stderr()
				code := uint32(0)
				if err := cmd.Run(); err != nil {
					code = 1
				}
				_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{code}))
				return
			}
		}()
	}
}

// inContainer runs args in the file system at root as a container runtime
// would: in a mount namespace of its own, on a read-only root, with tmp
// as its writable /tmp, the host's /dev and /proc, as UID 1001.
func inContainer(root, tmp string, args ...string) *exec.Cmd {
	const script = `set -e
chroot=$1 root=$2 tmp=$3
shift 3
mount --bind "$root" "$root"
mount --bind "$tmp" "$root/tmp"
mount --rbind /dev "$root/dev"
mount --rbind /proc "$root/proc"
mount -o remount,bind,ro "$root"
exec "$chroot" --userspec=1001:1001 "$root" "$@"`
	chroot, _ := exec.LookPath("chroot")
	return exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "/bin/sh", "-c", script, "sh", chroot, root, tmp}, args...)...)
}

// imagesOf reads an OCI layout's one index, named ref, per architecture.
func imagesOf(t *testing.T, dir, ref string) map[string]v1.Image {
	t.Helper()
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	top, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	root, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(root.Manifests) != 1 || root.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != ref {
		t.Fatalf("the layout names %+v, want the chart's default image %s", root.Manifests, ref)
	}
	idx, err := top.ImageIndex(root.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	images := map[string]v1.Image{}
	for _, d := range im.Manifests {
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		images[d.Platform.Architecture] = img
	}
	return images
}

// unpackImage applies an image's layers, from the OCI layout in out, under
// root, as a container runtime would (the layers hold no whiteouts).
func unpackImage(t *testing.T, out string, img v1.Image, root string) {
	t.Helper()
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		blob := filepath.Join(out, "oci", "blobs", d.Algorithm, d.Hex)
		if got, err := exec.Command("tar", "-xzf", blob, "-C", root).CombinedOutput(); err != nil {
			t.Fatalf("unpacking layer %s: %v\n%s", d, err, got)
		}
	}
}

// git runs git in dir.
func git(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git %v: %v: %s", args, err, out)
	}
}
