package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// debPackage is one Debian package laid into an image.
type debPackage struct {
	Name, Version, Arch, Source string
}

// fetchDebian downloads the named packages and every package they depend
// on (no recommends) for arch into dir, from the host's apt sources and with
// apt's lists, cache and package status kept in dir: the host's own state is
// never read or changed, and no package is installed anywhere. It returns
// the .deb files.
func fetchDebian(dir, arch string, names []string) ([]string, error) {
	for _, d := range []string{"lists/partial", "archives/partial", "cache"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	status := filepath.Join(dir, "status")
	if err := os.WriteFile(status, nil, 0o644); err != nil {
		return nil, err
	}
	opts := []string{"-q",
		"-o", "Dir::State::Lists=" + filepath.Join(dir, "lists"),
		"-o", "Dir::State::status=" + status,
		"-o", "Dir::Cache=" + filepath.Join(dir, "cache"),
		"-o", "Dir::Cache::archives=" + filepath.Join(dir, "archives"),
		"-o", "APT::Architecture=" + arch,
		"-o", "APT::Architectures::=" + arch,
		"-o", "Debug::NoLocking=1",
	}
	if os.Geteuid() == 0 {
		// apt would hand the download to its _apt user, who cannot write
		// into a private temporary directory.
		opts = append(opts, "-o", "APT::Sandbox::User=root")
	}
	for _, args := range [][]string{
		{"update"},
		append([]string{"install", "-y", "--download-only", "--no-install-recommends"}, names...),
	} {
		cmd := exec.Command("apt-get", append(append([]string{}, opts...), args...)...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("apt-get %s (%s): %w\n%s", args[0], arch, err, out.String())
		}
	}
	debs, err := filepath.Glob(filepath.Join(dir, "archives", "*.deb"))
	if err == nil && len(debs) == 0 {
		err = fmt.Errorf("apt-get downloaded no package for %s", arch)
	}
	sort.Strings(debs)
	return debs, err
}

// debianLayer lays the packages' files into one layer, as dpkg would
// unpack them, without running their maintainer scripts: manuals, info
// pages, translations and documentation other than the copyright files
// are left out. Each package's control data goes to
// /var/lib/dpkg/status.d/NAME, where image scanners read what a
// distroless image holds.
func debianLayer(debs []string, mtime time.Time) ([]byte, []debPackage, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	seen := map[string]bool{}
	dir := func(name string) error {
		if seen[name] {
			return nil
		}
		seen[name] = true
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: 0o755, ModTime: mtime, Format: tar.FormatPAX})
	}
	var pkgs []debPackage
	var status [][2]string
	for _, deb := range debs {
		control, err := exec.Command("dpkg-deb", "-f", deb).Output()
		if err != nil {
			return nil, nil, fmt.Errorf("dpkg-deb -f %s: %w", deb, err)
		}
		fields := controlFields(control)
		p := debPackage{Name: fields["Package"], Version: fields["Version"], Arch: fields["Architecture"], Source: fields["Source"]}
		if p.Name == "" || p.Version == "" {
			return nil, nil, fmt.Errorf("%s: no Package or Version in its control data", deb)
		}
		pkgs = append(pkgs, p)
		status = append(status, [2]string{p.Name, "Package: " + p.Name + "\nStatus: install ok installed\n" +
			strings.TrimPrefix(string(control), "Package: "+p.Name+"\n")})
		if err := unpack(tw, deb, seen, mtime); err != nil {
			return nil, nil, err
		}
	}
	for _, d := range []string{"var", "var/lib", "var/lib/dpkg", "var/lib/dpkg/status.d"} {
		if err := dir(d); err != nil {
			return nil, nil, err
		}
	}
	for _, s := range status {
		body := []byte(s[1])
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "var/lib/dpkg/status.d/" + s[0], Mode: 0o644,
			Size: int64(len(body)), ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return nil, nil, err
		}
		if _, err := tw.Write(body); err != nil {
			return nil, nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, nil, err
	}
	return buf.Bytes(), pkgs, nil
}

// unpack copies one package's files into tw. A path two packages ship is
// taken from the first; directories are written once.
func unpack(tw *tar.Writer, deb string, seen map[string]bool, mtime time.Time) error {
	cmd := exec.Command("dpkg-deb", "--fsys-tarfile", deb)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	tr := tar.NewReader(stdout)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			_ = cmd.Wait()
			return fmt.Errorf("%s: %w", deb, err)
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "./"))
		if name == "." || name == "" || leftOut(name, h.Typeflag) || seen[name] {
			continue
		}
		seen[name] = true
		out := &tar.Header{Typeflag: h.Typeflag, Name: name, Linkname: h.Linkname, Mode: h.Mode, Size: h.Size,
			ModTime: mtime, Format: tar.FormatPAX}
		switch h.Typeflag {
		case tar.TypeDir:
			out.Name += "/"
		case tar.TypeLink:
			out.Linkname = path.Clean(strings.TrimPrefix(h.Linkname, "./"))
		}
		if err := tw.WriteHeader(out); err != nil {
			return err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := io.Copy(tw, tr); err != nil {
				return err
			}
		}
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("dpkg-deb --fsys-tarfile %s: %w: %s", deb, err, stderr.String())
	}
	return nil
}

// leftOut names what the image does without: manuals, info pages,
// translations, lintian overrides, and documentation but the copyright
// files (and the links that stand for them).
func leftOut(name string, typ byte) bool {
	for _, p := range []string{"usr/share/man/", "usr/share/info/", "usr/share/locale/", "usr/share/lintian/"} {
		if strings.HasPrefix(name+"/", p) {
			return true
		}
	}
	if rest, ok := strings.CutPrefix(name, "usr/share/doc/"); ok {
		parts := strings.Split(rest, "/")
		switch {
		case len(parts) == 1:
			return false // the package's directory, or a link to another's
		case len(parts) == 2 && parts[1] == "copyright":
			return typ != tar.TypeReg && typ != tar.TypeSymlink && typ != tar.TypeLink
		default:
			return true
		}
	}
	return false
}

// controlFields reads the top-level fields of a control file.
func controlFields(control []byte) map[string]string {
	fields := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(control))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == ' ' || line[0] == '\t' {
			continue
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = strings.TrimSpace(v)
		}
	}
	return fields
}
