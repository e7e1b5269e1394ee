package gitsync

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// git runs the git binary in one working directory, never asking on a
// terminal, with the credentials of Options.
type git struct {
	dir string
	env []string
}

func newGit(dir string, opts Options) *git {
	env := append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_NOSYSTEM=1", "LC_ALL=C")
	if opts.SSHKeyFile != "" {
		env = append(env, "GIT_SSH_COMMAND=ssh -i "+opts.SSHKeyFile+" -o IdentitiesOnly=yes -o StrictHostKeyChecking=accept-new -o BatchMode=yes")
	}
	return &git{dir: dir, env: env}
}

// credentialArgs makes git read HTTPS credentials from a git-credentials
// file (https://user:token@host lines), never from the URL or the log.
func credentialArgs(opts Options) []string {
	if opts.CredentialsFile == "" {
		return nil
	}
	return []string{"-c", "credential.helper=", "-c", "credential.helper=store --file=" + opts.CredentialsFile}
}

// run runs git with args; at, when set, is the author and committer date.
func (g *git) run(ctx context.Context, at time.Time, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = g.dir
	cmd.Env = g.env
	if !at.IsZero() {
		date := at.UTC().Format(time.RFC3339)
		cmd.Env = append(cmd.Env, "GIT_AUTHOR_DATE="+date, "GIT_COMMITTER_DATE="+date)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("git %s: %w: %s", subcommand(args), err, strings.TrimSpace(errOut.String()))
	}
	return out.String(), nil
}

// subcommand is git's command among args, past the -c options.
func subcommand(args []string) string {
	for i := 0; i < len(args); i++ {
		switch {
		case args[i] == "-c":
			i++
		case !strings.HasPrefix(args[i], "-"):
			return args[i]
		}
	}
	return ""
}
