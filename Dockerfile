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

# Run: no shell, no package manager, CA certificates only; UID 1001 and a
# read-only root filesystem (the service writes nothing locally unless
# BACKUP_DIR points at a mounted volume).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/cluster-backup /usr/local/bin/cluster-backup
USER 1001:1001
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/cluster-backup"]
CMD ["run"]
