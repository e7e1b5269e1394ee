package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cluster-backup/cluster-backup/config"
	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/restore"
)

// commandFlags are the flags of one command beyond the selection.
type commandFlags struct {
	version      string
	since, until string
	patch        bool
	yes          bool
	plaintext    bool
	quiet        bool
	open         bool
	binary       string // how the commands the web view shows are spelled
	restore      restoreFlags
}

// registerQuiet adds --quiet to a command that shows a progress bar.
func registerQuiet(fs *pflag.FlagSet, fl *commandFlags) {
	fs.BoolVarP(&fl.quiet, "quiet", "q", false, "no progress bar (there is none on a pipe either)")
}

// env is what a command reads from outside its arguments.
type env struct {
	stdout, stderr io.Writer
	lookupEnv      func(string) (string, bool)
	binary         string // "cluster-backup", or "kubectl backup" for the plugin
}

// command describes one command reading the bucket: its usage, help and
// examples, the flags it adds, and what it does.
type command struct {
	name, use, short, example string
	flags                     func(fs *pflag.FlagSet, fl *commandFlags)
	complete                  bool // its arguments are RESOURCE[/NAME] of the backup
}

var browsingCommands = []command{
	{name: "ls", use: "ls [RESOURCE[/NAME]] [-n NS | -A] [--at TIME] [-o FORMAT]", complete: true,
		short: "what the backup holds (at --at)",
		example: `  # every object of namespace shop, as backed up now
  {bin} ls -n shop
  # the Deployments of every namespace as they were two hours ago
  {bin} ls deployments -A --at 2h
  # without CLUSTER_NAME or --backup-cluster: the clusters this bucket holds
  {bin} ls`,
		flags: registerQuiet},
	{name: "show", use: "show RESOURCE/NAME [-n NS] [--at TIME | --version ID]", complete: true,
		short: "one stored object, verified",
		example: `  {bin} show deployment/web -n shop
  {bin} show configmap/settings -n shop --at 2026-12-02T10:00:00Z`,
		flags: func(fs *pflag.FlagSet, fl *commandFlags) {
			fs.StringVar(&fl.version, "version", "", "a version ID (history lists them)")
		}},
	{name: "history", use: "history RESOURCE/NAME [-n NS] [--since TIME] [--until TIME] [-p]", complete: true,
		short:   "every version of one object (-p: what each changed)",
		example: `  {bin} history deployment/web -n shop -p --since 3d`,
		flags: func(fs *pflag.FlagSet, fl *commandFlags) {
			fs.StringVar(&fl.since, "since", "", "only versions taken at or after this time")
			fs.StringVar(&fl.until, "until", "", "only versions taken at or before this time")
			fs.BoolVarP(&fl.patch, "patch", "p", false, "show what each version changed")
		}},
	{name: "diff", use: "diff [RESOURCE/NAME...] (-n NS | -A) [--at TIME] [--against live | --against-time T2] [--details] [--resource-modifiers FILE]",
		short: "the backup against the live cluster, or against itself at another time",
		example: `  # what a restore of shop would change in the live cluster
  {bin} diff -n shop --details
  # what changed in the backup between yesterday and now
  {bin} diff -A --at 1d --against-time 0s`,
		flags: func(fs *pflag.FlagSet, fl *commandFlags) { fl.restore.register(fs, "diff"); registerQuiet(fs, fl) }},
	{name: "restore", use: "restore [RESOURCE/NAME...] (-n NS | -A) [--at TIME] [--namespace-mapping OLD:NEW] [--existing apply|skip|replace] [--prune] [--dry-run client|server]",
		short: "bring objects back as they were (at --at)",
		example: `  # namespace shop as it was an hour ago, into the current context
  {bin} restore -n shop --at 1h
  # one object as it was at a time
  {bin} restore configmap/settings -n shop --at 2026-12-07T10:00:00Z
  # a lost cluster into a new control plane
  {bin} restore -A --context new-cluster --report restore.json
  # shop as shop-copy, images from a mirror
  {bin} restore -n shop --namespace-mapping shop:shop-copy --resource-modifiers modifiers.yaml`,
		flags: func(fs *pflag.FlagSet, fl *commandFlags) { fl.restore.register(fs, "restore"); registerQuiet(fs, fl) }},
	{name: "verify", use: "verify [-n NS | -A] [--at TIME] [--accept-unsigned]",
		short:   "read back every document (at --at): digest and integrity tag; exit 3 when any fails",
		example: `  {bin} verify -A`,
		flags:   func(fs *pflag.FlagSet, fl *commandFlags) {}},
	{name: "purge", use: "purge --plaintext-secrets [--yes]",
		short: "delete the stored versions of Secrets written in the clear (a dry run without --yes)",
		example: `  {bin} purge --plaintext-secrets        # list them
  {bin} purge --plaintext-secrets --yes  # delete them`,
		flags: func(fs *pflag.FlagSet, fl *commandFlags) {
			fs.BoolVar(&fl.plaintext, "plaintext-secrets", false, "the versions of Secrets stored in the clear, and the restore packs holding one")
			fs.BoolVar(&fl.yes, "yes", false, "delete them (without it, only list them)")
		}},
	{name: "ui", use: "ui [--open]",
		short: "a read-only web view of the backup: timelines, versions, diffs, restore commands",
		example: `  # serve it on UI_ADDR (127.0.0.1:8081) and open it in the browser
  {bin} ui --open
  # in a cluster: the chart's release's store settings, through a port-forward
  {bin} ui --release backup-system/backup`,
		flags: func(fs *pflag.FlagSet, fl *commandFlags) {
			fs.BoolVar(&fl.open, "open", false, "open the view in the default browser")
		}},
	{name: "adopt", use: "adopt [--yes]",
		short:   "a rebuilt cluster takes its backup prefix over from the one it replaces",
		example: `  {bin} adopt --context rebuilt`,
		flags: func(fs *pflag.FlagSet, fl *commandFlags) {
			fs.BoolVar(&fl.yes, "yes", false, "do not ask before taking the prefix over")
		}},
}

// newBrowsingCommand builds one command that reads the bucket: the
// selection, kubectl's kubeconfig flags, its own flags and every setting
// (hidden from --help, listed by run --help).
func newBrowsingCommand(ctx context.Context, c command, e *env) *cobra.Command {
	sel := &selection{}
	fl := &commandFlags{binary: e.binary}
	kf := &kubeFlags{}
	cmd := &cobra.Command{
		Use:     c.use,
		Short:   c.short,
		Example: strings.ReplaceAll(c.example, "{bin}", e.binary),
	}
	fs := cmd.Flags()
	fs.SortFlags = false
	sel.register(fs)
	c.flags(fs, fl)
	kf.register(fs)
	settings := config.AddFlags(fs)
	fs.VisitAll(func(f *pflag.Flag) {
		if config.IsSetting(f.Name) && f.Name != "kubeconfig" {
			_ = fs.MarkHidden(f.Name)
		}
	})
	var store, release string
	fs.StringVar(&store, "store", "", "a store of the CLI config file (~/.config/cluster-backup/config.yaml; default: its default)")
	fs.StringVar(&release, "release", "", "the chart's release to read the store settings from, as NAMESPACE/NAME (default: the only one)")
	load := func() (config.Config, error) {
		path, _ := e.lookupEnv("KUBECONFIG")
		if f := fs.Lookup("kubeconfig"); f.Changed {
			path = f.Value.String()
		}
		kf.legacyCluster(path, sel, e.stderr)
		src, err := storeSettings(ctx, e, fs, kf, path, store, release)
		if err != nil {
			return config.Config{}, err
		}
		cfg, err := settings.Config(src.lookup, sel.overrides())
		if (c.name == "ls" || c.name == "ui") && config.IsNoCluster(err) {
			sel.clusters, err = true, nil // ls without a cluster lists the clusters; ui shows them
		}
		if err != nil {
			return cfg, err
		}
		return kf.apply(cfg, sel), nil
	}
	cmd.RunE = func(_ *cobra.Command, args []string) error {
		cfg, err := load()
		if err != nil {
			return err
		}
		return runParsed(ctx, c.name, cfg, sel, fl, args, e.stdout, e.stderr)
	}
	cmd.SetUsageTemplate(cmd.UsageTemplate() + "\nEvery setting of run is accepted too, as a flag or its environment variable\n(--minio-endpoint, $MINIO_ENDPOINT, ...): \"" + e.binary + " run --help\" lists them.\n")
	registerCompletions(ctx, cmd, c, sel, load)
	return cmd
}

func runParsed(ctx context.Context, name string, cfg config.Config, sel *selection, fl *commandFlags, args []string, stdout, stderr io.Writer) error {
	now := time.Now()
	var err error
	sel.quiet = fl.quiet
	if sel.atTime, err = parseTime(sel.at, now); err != nil {
		return err
	}
	switch name {
	case "restore", "diff":
		return runRestore(ctx, name, cfg, sel, &fl.restore, args, stdout, stderr)
	case "adopt":
		return runAdopt(ctx, cfg, fl.yes, args, stdout, stderr)
	case "verify":
		return runVerify(ctx, cfg, sel, args, stdout, stderr)
	case "purge":
		return runPurge(ctx, cfg, fl.plaintext, fl.yes, args, stdout, stderr)
	case "ui":
		if len(args) > 0 {
			return usagef("ui takes no arguments, got %q", strings.Join(args, " "))
		}
		return runUI(ctx, cfg, sel, fl.open, fl.binary, stdout, stderr)
	}
	if name == "ls" && sel.clusters {
		return listClusters(ctx, cfg, sel, args, stdout)
	}
	b, err := openBrowser(ctx, cfg, sel, name, stdout, stderr)
	if err != nil {
		return err
	}
	switch name {
	case "ls":
		return b.ls(ctx, sel, args)
	case "show":
		return b.show(ctx, sel, args, fl.version)
	default:
		var since, until time.Time
		if fl.since != "" {
			if since, err = parseTime(fl.since, now); err != nil {
				return err
			}
		}
		if fl.until != "" {
			if until, err = parseTime(fl.until, now); err != nil {
				return err
			}
		}
		return b.history(ctx, sel, args, since, until, fl.patch)
	}
}

// exitCode reports err on stderr and maps it to the command's exit code.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	var partial partialError
	if errors.As(err, &partial) {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return exitPartial
	}
	if errors.Is(err, errDifferent) {
		return exitDifferent
	}
	fmt.Fprintf(stderr, "error: %v\n", err)
	var usage usageError
	var cfgErr *config.Error
	var fatal fatalError
	var failure serviceFailure
	switch {
	case errors.As(err, &failure):
		return exitFailed
	case errors.As(err, &usage), errors.As(err, &cfgErr):
		return exitUsage
	case errors.As(err, &fatal):
		return exitFatal
	case errors.Is(err, errNotFound), errors.Is(err, restore.ErrAltered), errors.Is(err, restore.ErrMisfiled),
		errors.Is(err, object.ErrForged), errors.Is(err, object.ErrUnsigned):
		return exitFailed
	}
	return exitFatal
}

// storeSettings finds the store's settings after the flags: the
// environment, the CLI config file's store, and, when neither names a
// store, the chart's release in the cluster the kubeconfig reaches.
func storeSettings(ctx context.Context, e *env, fs *pflag.FlagSet, kf *kubeFlags, kubeconfig, store, release string) (storeSources, error) {
	file, err := storeFromFile(configFilePath(e.lookupEnv), store, e.stderr)
	if err != nil {
		return storeSources{}, err
	}
	src := storeSources{env: e.lookupEnv, file: file}
	_, endpoint := src.lookup("MINIO_ENDPOINT")
	_, dir := src.lookup("BACKUP_DIR")
	if endpoint || dir || fs.Lookup("backup-dir").Changed {
		return src, nil
	}
	ctx, cancel := context.WithTimeout(ctx, releaseTimeout)
	defer cancel()
	found, from, err := fromRelease(ctx, config.Config{Kubeconfig: kubeconfig, Kube: kf.overrides()}, release)
	var usage usageError
	switch {
	case found == nil && release == "" && fs.Lookup("minio-endpoint").Changed:
		return src, nil // the flag names the store; the release would only have added to it
	case errors.As(err, &usage):
		return src, err
	case err != nil:
		return src, usageError{errNoStore.Error() + "; reading the release: " + err.Error()}
	case found == nil:
		return src, errNoStore
	}
	fmt.Fprintf(e.stderr, "store settings from the chart's release %s\n", from)
	src.release = found
	return src, nil
}

// releaseTimeout bounds finding the chart's release.
const releaseTimeout = 30 * time.Second
