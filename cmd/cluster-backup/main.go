// Command cluster-backup keeps an S3-compatible bucket (or a directory) in
// step with a Kubernetes cluster: one clean YAML file per object, written
// within seconds of every change, with a periodic reconcile pass.
//
// It owns the command line: flags and settings validated into a
// config.Config, the commands that read the bucket (ls, show, history,
// diff, restore, verify, purge, adopt) and the exit codes. The service
// itself (run and snapshot) lives in package service, the pipeline stages
// in their own packages.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"

	"github.com/cluster-backup/cluster-backup/config"
	"github.com/cluster-backup/cluster-backup/service"
)

// Set at link time: -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = ""
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1 // a run or pass that could not complete
	exitUsage  = 2 // bad configuration or arguments
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.LookupEnv)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, lookupEnv func(string) (string, bool)) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "version", "--version":
		fmt.Fprintf(stdout, "cluster-backup %s (commit %s, %s %s/%s)\n", version, buildCommit(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return exitOK
	case "help", "-h", "--help":
		usage(stdout)
		return exitOK
	case "run", "snapshot":
	case "ls", "show", "history", "restore", "diff", "adopt", "verify", "purge":
		return runCommand(ctx, cmd, rest, stdout, stderr, lookupEnv)
	default:
		fmt.Fprintf(stderr, "error: unknown command %q\n", cmd)
		usage(stderr)
		return exitUsage
	}

	cfg, err := config.Load(cmd, rest, lookupEnv, stdout)
	if errors.Is(err, config.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return exitUsage
	}

	svc, err := service.New(ctx, cfg, service.Options{Version: version, Stdout: stdout, Stderr: stderr, Progress: isTerminal(stderr)})
	if err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return exitFailed
	}
	if cmd == "snapshot" {
		err = svc.Snapshot(ctx)
	} else {
		err = svc.Run(ctx)
	}
	if err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return exitFailed
	}
	return exitOK
}

func usage(w io.Writer) {
	fmt.Fprint(w, `cluster-backup keeps a bucket in step with a Kubernetes cluster, one YAML file per object.

Usage:
  cluster-backup run        always-on: watch every selected resource, write each change, reconcile periodically
  cluster-backup snapshot   one full pass (list, write, prune), then exit
  cluster-backup ls         what the backup holds (at --at)
  cluster-backup show       one stored object, verified
  cluster-backup history    every version of one object (-p: what each changed)
  cluster-backup diff       the backup against the live cluster, or against itself at another time
  cluster-backup restore    bring objects back as they were (at --at)
  cluster-backup verify     read back every document (at --at): digest and integrity tag
  cluster-backup purge      delete the stored versions of Secrets written in the clear (--plaintext-secrets)
  cluster-backup adopt      a rebuilt cluster takes its backup prefix over from the one it replaces
  cluster-backup version    print version, commit and Go version

Run "cluster-backup run --help" for every setting.
`)
}

func buildCommit() string {
	if commit != "" {
		return commit
	}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}
