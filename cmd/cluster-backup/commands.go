package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/cluster-backup/cluster-backup/config"
	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/restore"
)

// commandUsage is the first line of each browsing command's --help.
var commandUsage = map[string]string{
	"ls":      "Usage: cluster-backup ls [RESOURCE[/NAME]] [-n NS | -A] [--at TIME] [-o table|yaml|json|name]",
	"show":    "Usage: cluster-backup show RESOURCE/NAME [-n NS] [--at TIME | --version ID]",
	"history": "Usage: cluster-backup history RESOURCE/NAME [-n NS] [--since TIME] [--until TIME] [-p]",
	"restore": "Usage: cluster-backup restore (-n NS | -A) [--at TIME] [--namespace-mapping OLD:NEW] [--existing apply|skip|replace] [--prune] [--dry-run client|server] [--parallel N] [--qps Q] [--report FILE] [--yes] [--include-control-plane] [--keep-reclaim-policy] [--priorities FILE] [--resource-modifiers FILE]",
	"diff":    "Usage: cluster-backup diff (-n NS | -A) [--at TIME] [--against live | --against-time T2] [--details] [--resource-modifiers FILE]",
	"adopt":   "Usage: cluster-backup adopt [--yes]   (a rebuilt cluster takes its backup prefix over from the cluster it replaces)",
	"purge":   "Usage: cluster-backup purge --plaintext-secrets [--yes]   (delete the stored versions of Secrets written in the clear; a dry run without --yes)",
	"verify":  "Usage: cluster-backup verify [-n NS | -A] [--at TIME] [--accept-unsigned]   (read back every document: its sha256 and its integrity tag; exit 3 when any fails)",
}

// commandFlags are the flags of one command beyond the selection.
type commandFlags struct {
	version      string
	since, until string
	patch        bool
	yes          bool
	plaintext    bool
	restore      restoreFlags
}

// runCommand runs ls, show, history, diff or restore and maps its outcome
// to an exit code.
func runCommand(ctx context.Context, name string, args []string, stdout, stderr io.Writer, lookupEnv func(string) (string, bool)) int {
	sel := &selection{}
	fl := &commandFlags{}
	cfg, rest, err := config.LoadCommand(name, args, lookupEnv, stdout, &config.Command{
		Register: func(fs *flag.FlagSet) {
			sel.register(fs)
			switch name {
			case "show":
				fs.StringVar(&fl.version, "version", "", "a version ID (history lists them)")
			case "history":
				fs.StringVar(&fl.since, "since", "", "only versions taken at or after this time")
				fs.StringVar(&fl.until, "until", "", "only versions taken at or before this time")
				fs.BoolVar(&fl.patch, "p", false, "show what each version changed")
			case "restore", "diff":
				fl.restore.register(fs, name)
			case "adopt":
				fs.BoolVar(&fl.yes, "yes", false, "do not ask before taking the prefix over")
			case "purge":
				fs.BoolVar(&fl.plaintext, "plaintext-secrets", false, "the versions of Secrets stored in the clear, and the restore packs holding one")
				fs.BoolVar(&fl.yes, "yes", false, "delete them (without it, only list them)")
			}
		},
		Overrides: sel.overrides,
		Usage:     commandUsage[name],
	})
	if errors.Is(err, config.ErrHelp) {
		return exitOK
	}
	if err == nil {
		err = runParsed(ctx, name, cfg, sel, fl, rest, stdout, stderr)
	}
	return exitCode(err, stderr)
}

func runParsed(ctx context.Context, name string, cfg config.Config, sel *selection, fl *commandFlags, args []string, stdout, stderr io.Writer) error {
	now := time.Now()
	var err error
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
	switch {
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
