#!/usr/bin/env bash
# Assembles the runtime image without a Docker engine: buildah, FROM scratch,
# the static binary and CA certificates, UID 1001 (the runtime stage of the
# Dockerfile, whose distroless base cannot be pulled offline). Then starts the
# image's entrypoint as UID 1001 to prove it runs: `version` exits 0 and a
# missing CLUSTER_NAME exits 2.
#
# Needs buildah (Debian: apt-get install buildah) and root.
set -euo pipefail
cd "$(dirname "$0")/.."
export STORAGE_DRIVER=vfs
image=${IMAGE:-localhost/cluster-backup:dev}

make build >/dev/null
ctr=$(buildah from scratch)
trap 'buildah rm "$ctr" >/dev/null' EXIT
buildah copy --chown 1001:1001 "$ctr" bin/cluster-backup /usr/local/bin/cluster-backup >/dev/null
buildah copy "$ctr" /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt >/dev/null
buildah config --user 1001:1001 --port 8080 --entrypoint '["/usr/local/bin/cluster-backup"]' --cmd run "$ctr"
buildah commit --quiet "$ctr" "$image" >/dev/null
echo "image: built $image ($(buildah inspect --format '{{.OCIv1.Config.User}}' "$image") user)"

buildah run --isolation chroot --user 1001:1001 "$ctr" -- /usr/local/bin/cluster-backup version
set +e
buildah run --isolation chroot --user 1001:1001 "$ctr" -- /usr/local/bin/cluster-backup run 2>/tmp/image-stderr
code=$?
set -e
if [ "$code" -ne 2 ] || ! grep -q '^error: CLUSTER_NAME is required' /tmp/image-stderr; then
	echo "image: want exit 2 and a CLUSTER_NAME error, got $code: $(cat /tmp/image-stderr)" >&2
	exit 1
fi
echo "image: starts as UID 1001; a missing CLUSTER_NAME exits 2"
