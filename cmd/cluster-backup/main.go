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
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

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
	code := runAs(ctx, binaryName(os.Args[0]), os.Args[1:], os.Stdout, os.Stderr, os.LookupEnv)
	stop()
	os.Exit(code)
}

// binaryName is how help and examples name the binary: installed as
// kubectl-backup on the PATH, it is the kubectl plugin "kubectl backup".
func binaryName(arg0 string) string {
	if strings.HasPrefix(filepath.Base(arg0), "kubectl-backup") {
		return "kubectl backup"
	}
	return "cluster-backup"
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, lookupEnv func(string) (string, bool)) int {
	return runAs(ctx, "cluster-backup", args, stdout, stderr, lookupEnv)
}

func runAs(ctx context.Context, binary string, args []string, stdout, stderr io.Writer, lookupEnv func(string) (string, bool)) int {
	e := &env{stdout: stdout, stderr: stderr, lookupEnv: lookupEnv, binary: binary}
	root := newRoot(ctx, e)
	switch {
	case len(args) == 0:
		root.SetOut(stderr)
		_ = root.Usage()
		return exitUsage
	case args[0] == "--version":
		args[0] = "version"
	}
	root.SetArgs(args)
	if _, err := root.ExecuteC(); err != nil {
		if strings.HasPrefix(err.Error(), "unknown command") || strings.HasPrefix(err.Error(), "unknown flag") {
			err = usagef("%v", err)
		}
		return exitCode(err, stderr)
	}
	return exitOK
}

// newRoot is the command tree.
func newRoot(ctx context.Context, e *env) *cobra.Command {
	root := &cobra.Command{
		Use:   "cluster-backup",
		Short: "cluster-backup keeps a bucket in step with a Kubernetes cluster, one YAML file per object.",
		Long: `cluster-backup keeps a bucket in step with a Kubernetes cluster, one YAML file per object.

The service runs as "run" (always on) or "snapshot" (one pass, for a CronJob); every other command
reads the bucket. The kubeconfig is found as kubectl finds it (--kubeconfig, KUBECONFIG, ~/.kube/config,
the in-cluster service account) with kubectl's --context, --cluster, --user and --as.
Run "` + e.binary + ` run --help" for every setting and its environment variable.`,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	if e.binary != "cluster-backup" {
		root.Annotations = map[string]string{cobra.CommandDisplayNameAnnotation: e.binary}
	}
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usagef("%v (see %s --help)", err, c.CommandPath())
	})
	root.AddCommand(
		newServiceCommand(ctx, "run", "always-on: watch every selected resource, write each change, reconcile periodically", e),
		newServiceCommand(ctx, "snapshot", "one full pass (list, write, prune), then exit", e),
		newServiceCommand(ctx, "git-sync", "the bucket's versions as Git commits, pushed to GIT_REPOSITORY (reads the bucket only)", e),
	)
	for _, c := range browsingCommands {
		root.AddCommand(newBrowsingCommand(ctx, c, e))
	}
	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "print version, commit and Go version",
		Args:  cobra.NoArgs,
		Run: func(*cobra.Command, []string) {
			fmt.Fprintf(e.stdout, "cluster-backup %s (commit %s, %s %s/%s)\n", version, buildCommit(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
		},
	})
	return root
}

// serviceFailure is a run or a pass that could not complete: exit code 1.
type serviceFailure struct{ err error }

func (e serviceFailure) Error() string { return e.err.Error() }
func (e serviceFailure) Unwrap() error { return e.err }

// newServiceCommand is run or snapshot: every setting as a flag and its
// environment variable; --help prints the settings table.
func newServiceCommand(ctx context.Context, name, short string, e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   name + " [flags]",
		Short: short,
		Args:  cobra.NoArgs,
	}
	settings := config.AddFlags(cmd.Flags())
	cmd.SetHelpFunc(func(c *cobra.Command, _ []string) { config.PrintUsage(c.OutOrStdout(), name) })
	cmd.RunE = func(*cobra.Command, []string) error {
		cfg, err := settings.Config(e.lookupEnv, nil)
		if err != nil {
			return err
		}
		if name == "git-sync" {
			return runGitSync(ctx, cfg, e)
		}
		svc, err := service.New(ctx, cfg, service.Options{Version: version, Stdout: e.stdout, Stderr: e.stderr, Progress: isTerminal(e.stderr)})
		if err != nil {
			return serviceFailure{err}
		}
		if name == "snapshot" {
			err = svc.Snapshot(ctx)
		} else {
			err = svc.Run(ctx)
		}
		if err != nil {
			return serviceFailure{err}
		}
		return nil
	}
	return cmd
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
