# syntax=docker/dockerfile:1
# Build: a static binary, stamped with its version.
FROM golang:1.26.10 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /out/cluster-backup ./cmd/cluster-backup

# git-sync (docker build --target git-sync): the same binary beside Debian's
# git and ssh client, which git-sync runs; UID 1001, read-only root
# filesystem (the chart mounts the clone's and git's writable paths).
FROM debian:12-slim AS git-sync
RUN apt-get update \
 && apt-get install -y --no-install-recommends git openssh-client ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/cluster-backup /usr/local/bin/cluster-backup
USER 1001:1001
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/cluster-backup"]
CMD ["git-sync"]

# Run: no shell, no package manager, CA certificates only; UID 1001 and a
# read-only root filesystem (the service writes nothing locally unless
# BACKUP_DIR points at a mounted volume).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/cluster-backup /usr/local/bin/cluster-backup
USER 1001:1001
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/cluster-backup"]
CMD ["run"]
