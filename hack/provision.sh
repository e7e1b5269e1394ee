#!/usr/bin/env bash
# Builds the real servers and tools the tests run against, from the Go module
# proxy, and caches them outside the clone keyed by version, Go version and
# platform. A second run finds everything cached and returns in milliseconds.
#
# Usage: hack/provision.sh [--print-dir] [tool...]
#   tools: etcd kube-apiserver kube-controller-manager kubectl minio mc age
#          weed helm staticcheck golangci-lint govulncheck vulndb dockerfilelint
#          chromium (Debian's package, for the web view's browser tests)
#          (default: the test servers
#          and mc)
#   --print-dir  print the directory holding the binaries and exit
#
# The binaries end up in one directory (printed on the last line), which the
# Makefile exports as CLUSTER_BACKUP_ASSETS for the integration tests.
set -euo pipefail

K8S_VERSION=v1.37.2
K8S_STAGING_VERSION=v0.37.2
ETCD_VERSION=v3.7.3
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
MC_VERSION=v0.0.0-20250313080218-cf909e1063a9
AGE_VERSION=v1.3.2
# SeaweedFS, a second S3 implementation (weed server -s3).
SEAWEEDFS_VERSION=v0.0.0-20261109003541-7506e5f91cd6
HELM_VERSION=v3.22.0
STATICCHECK_VERSION=v0.8.2
GOLANGCI_LINT_VERSION=v2.15.0
GOVULNCHECK_VERSION=v1.9.0
# The Go vulnerability database, from the golang.org/x/vulndb module's OSV
# files (the module proxy serves it; vuln.go.dev need not be reachable).
VULNDB_VERSION=v0.0.0-20261105234957-e22db6528018
DOCKERFILELINT_VERSION=1.8.0
# The browser tests drive Debian's Chromium, installed with apt.
CHROMIUM_VERSION=debian

cache_root=${CLUSTER_BACKUP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cluster-backup}
platform="$(go env GOVERSION)-$(go env GOOS)-$(go env GOARCH)"
assets="$cache_root/assets-$platform"

print_dir=false
tools=()
for arg in "$@"; do
	case "$arg" in
	--print-dir) print_dir=true ;;
	-h | --help)
		sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*) tools+=("$arg") ;;
	esac
done
if $print_dir; then
	echo "$assets"
	exit 0
fi
if [ ${#tools[@]} -eq 0 ]; then
	tools=(etcd kube-apiserver kube-controller-manager kubectl minio mc)
fi

mkdir -p "$assets"
log() { echo "provision: $*" >&2; }

# version_of prints the cache key of a tool.
version_of() {
	case "$1" in
	etcd) echo "$ETCD_VERSION" ;;
	kube-apiserver | kube-controller-manager | kubectl) echo "$K8S_VERSION" ;;
	minio) echo "$MINIO_VERSION" ;;
	mc) echo "$MC_VERSION" ;;
	age) echo "$AGE_VERSION" ;;
	weed) echo "$SEAWEEDFS_VERSION" ;;
	helm) echo "$HELM_VERSION" ;;
	staticcheck) echo "$STATICCHECK_VERSION" ;;
	golangci-lint) echo "$GOLANGCI_LINT_VERSION" ;;
	govulncheck) echo "$GOVULNCHECK_VERSION" ;;
	vulndb) echo "$VULNDB_VERSION" ;;
	dockerfilelint) echo "$DOCKERFILELINT_VERSION" ;;
	chromium) echo "$CHROMIUM_VERSION" ;;
	*)
		log "unknown tool $1"
		exit 2
		;;
	esac
}

# install_built moves a freshly built binary into the cache under its
# versioned name and points the unversioned name in the assets dir at it.
# Building into a temporary name and renaming keeps an interrupted build from
# leaving a truncated binary that later runs would trust.
install_built() {
	local tool=$1 built=$2 version
	version=$(version_of "$tool")
	mv -f "$built" "$assets/$tool-$version.tmp"
	mv -f "$assets/$tool-$version.tmp" "$assets/$tool-$version"
	ln -sfn "$tool-$version" "$assets/$tool"
}

cached() {
	local tool=$1
	[ -x "$assets/$tool-$(version_of "$tool")" ] && ln -sfn "$tool-$(version_of "$tool")" "$assets/$tool"
}

workdir=$(mktemp -d)
trap 'chmod -R u+w "$workdir" 2>/dev/null; rm -rf "$workdir"' EXIT
export GOFLAGS=-mod=mod
export CGO_ENABLED=0

build_etcd() {
	local m="$workdir/etcd"
	mkdir -p "$m"
	(
		cd "$m"
		go mod init provision/etcd >/dev/null 2>&1
		printf 'package tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >tools.go
		go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1
		go build -trimpath -ldflags='-s -w' -o etcd go.etcd.io/etcd/server/v3
	)
	install_built etcd "$m/etcd"
}

# k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them
# with local paths; a wrapper module pins each of them to the matching tag.
kube_module() {
	local m="$workdir/kube"
	if [ -f "$m/go.mod" ]; then
		echo "$m"
		return
	fi
	mkdir -p "$m"
	(
		cd "$m"
		go mod init provision/kube >/dev/null 2>&1
		local gomod
		gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')
		local args=()
		while read -r mod; do
			args+=("-replace=$mod=$mod@$K8S_STAGING_VERSION")
		done < <(awk '$2 == "v0.0.0" && $1 ~ /^k8s\.io\// {print $1}' "$gomod" | sort -u)
		go mod edit -require="k8s.io/kubernetes@$K8S_VERSION" "${args[@]}"
	) >&2
	echo "$m"
}

build_kube() {
	local tool=$1 m
	m=$(kube_module)
	local minor=${K8S_VERSION#v1.}
	minor=${minor%%.*}
	local ldflags="-s -w"
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
	done
	(cd "$m" && go build -trimpath -ldflags="$ldflags" -o "$tool" "k8s.io/kubernetes/cmd/$tool")
	install_built "$tool" "$m/$tool"
}

build_go_install() {
	local tool=$1 pkg=$2
	GOBIN="$workdir/bin" go install -trimpath -ldflags='-s -w' "$pkg"
	install_built "$tool" "$workdir/bin/$tool"
}

# build_seaweedfs builds SeaweedFS's single binary in its own module (its
# go.mod has a replace directive, which go install pkg@version refuses).
build_seaweedfs() {
	local src
	src=$(cd "$workdir" && go mod download -json "github.com/seaweedfs/seaweedfs@$SEAWEEDFS_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
	(cd "$src" && go build -trimpath -ldflags='-s -w' -o "$workdir/bin/weed" ./weed)
	install_built weed "$workdir/bin/weed"
}

# build_vulndb indexes the OSV files of golang.org/x/vulndb into the
# database layout govulncheck reads with -db file://DIR.
build_vulndb() {
	local src out="$workdir/vulndb"
	GOBIN="$workdir/bin" go install "golang.org/x/vulndb/cmd/indexdb@$VULNDB_VERSION"
	src=$(cd "$workdir" && go mod download -json "golang.org/x/vulndb@$VULNDB_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
	"$workdir/bin/indexdb" -vulns "$src/data/osv" -out "$out"
	rm -rf "$assets/vulndb-$VULNDB_VERSION.tmp"
	mv "$out" "$assets/vulndb-$VULNDB_VERSION.tmp"
	mv "$assets/vulndb-$VULNDB_VERSION.tmp" "$assets/vulndb-$VULNDB_VERSION"
	ln -sfn "vulndb-$VULNDB_VERSION" "$assets/vulndb"
}

for tool in "${tools[@]}"; do
	if cached "$tool"; then
		continue
	fi
	log "building $tool $(version_of "$tool") (cached after the first time in $assets)"
	start=$(date +%s)
	case "$tool" in
	etcd) build_etcd ;;
	kube-apiserver | kube-controller-manager | kubectl) build_kube "$tool" ;;
	minio) build_go_install minio "github.com/minio/minio@$MINIO_VERSION" ;;
	mc) build_go_install mc "github.com/minio/mc@$MC_VERSION" ;;
	age) build_go_install age "filippo.io/age/cmd/age@$AGE_VERSION" ;;
	weed) build_seaweedfs ;;
	helm) build_go_install helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" ;;
	staticcheck) build_go_install staticcheck "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION" ;;
	golangci-lint)
		CGO_ENABLED=1 build_go_install golangci-lint "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$GOLANGCI_LINT_VERSION"
		;;
	govulncheck) build_go_install govulncheck "golang.org/x/vuln/cmd/govulncheck@$GOVULNCHECK_VERSION" ;;
	vulndb) build_vulndb ;;
	dockerfilelint)
		# From the npm registry, into a prefix of its own in the cache.
		prefix="$assets/npm-dockerfilelint-$DOCKERFILELINT_VERSION"
		npm install --silent --no-audit --no-fund --prefix "$prefix" "dockerfilelint@$DOCKERFILELINT_VERSION" >&2
		ln -sfn "npm-dockerfilelint-$DOCKERFILELINT_VERSION/node_modules/.bin/dockerfilelint" "$assets/dockerfilelint-$DOCKERFILELINT_VERSION"
		ln -sfn "dockerfilelint-$DOCKERFILELINT_VERSION" "$assets/dockerfilelint"
		;;
	chromium)
		# Debian's package; apt needs root (CI runs as root).
		if ! command -v chromium >/dev/null; then
			export DEBIAN_FRONTEND=noninteractive
			apt-get install -y --no-install-recommends chromium >&2 ||
				{ apt-get update >&2 && apt-get install -y --no-install-recommends chromium >&2; }
		fi
		ln -sfn "$(command -v chromium)" "$assets/chromium-$CHROMIUM_VERSION"
		ln -sfn "chromium-$CHROMIUM_VERSION" "$assets/chromium"
		;;
	*) version_of "$tool" >/dev/null ;;
	esac
	log "built $tool in $(($(date +%s) - start))s"
done
echo "$assets"
