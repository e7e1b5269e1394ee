package sink

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/encrypt"
	"github.com/minio/minio-go/v7/pkg/lifecycle"
	"github.com/minio/minio-go/v7/pkg/sse"
	"go.uber.org/zap"

	"github.com/cluster-backup/cluster-backup/logging"
	"github.com/cluster-backup/cluster-backup/object"
)

// MinIOOptions say how to reach the bucket.
type MinIOOptions struct {
	Endpoint  string
	AccessKey string
	SecretKey string
	Bucket    string
	UseSSL    bool
	CAFile    string
	Region    string
	// ClientCert and ClientKey authenticate to a store that requires
	// mutual TLS.
	ClientCert string
	ClientKey  string
	// SSE is server-side encryption: "s3" (SSE-S3) or "kms:KEY_ID"
	// (SSE-KMS), applied to every PUT and as the default encryption of a
	// bucket the service creates; "" leaves it to the bucket.
	SSE string
	// MaxRetries is minio-go's own retry count for transport errors and
	// 5xx answers (0 keeps its default of 10).
	MaxRetries int
	// Connections is how many calls the caller makes at once (BATCH_SIZE).
	// That many connections stay open between calls, so that each call
	// reuses one rather than dialing (and, with TLS, handshaking) again.
	Connections int
	// NoncurrentDays and NoncurrentNewer make the lifecycle rule set on a
	// bucket the service creates: noncurrent versions expire after
	// NoncurrentDays, keeping the NoncurrentNewer newest (NONCURRENT_RETENTION).
	NoncurrentDays  int
	NoncurrentNewer int
	// JournalPrefix, when set, gets a rule of its own in that lifecycle:
	// the change journal's objects expire after NoncurrentDays (30 when
	// the retention is a count), as the versions they point at do.
	JournalPrefix string
	// ReadOnly opens an existing bucket and never creates one (the
	// browsing and restore commands).
	ReadOnly bool
	// ObjectLock ("governance" or "compliance") and ObjectLockDays give a
	// bucket the service creates S3 Object Lock with that default
	// retention (OBJECT_LOCK, OBJECT_LOCK_RETENTION).
	ObjectLock     string
	ObjectLockDays int
}

// Lock is a bucket's default Object Lock, as read at start.
type Lock struct {
	Mode string // "", "governance" or "compliance"
	Days int    // default retention; 0 when none or not in days
}

// MinIO stores objects in an S3-compatible bucket.
type MinIO struct {
	client     *minio.Client
	bucket     string
	redact     *strings.Replacer
	versioning string // enabled, suspended, off, unsupported or unknown
	lifecycle  string // the retention rule on a bucket made at start: set, unsupported or ""
	lock       Lock
	sse        encrypt.ServerSide
}

// maxKeyBytes is S3's limit on the length of a key.
const maxKeyBytes = 1024

// Versioning reports whether the bucket keeps versions, as read at start.
func (m *MinIO) Versioning() bool { return m.versioning == "enabled" }

// NewMinIO connects to the endpoint, makes sure the bucket exists (creating
// it with versioning on when missing and permitted) and logs the outcome with
// operation minio_connect. Errors never contain the credentials.
func NewMinIO(ctx context.Context, opts MinIOOptions, log *zap.Logger) (*MinIO, error) {
	log = log.With(logging.Op(logging.OpMinIOConnect))
	m, versioning, err := connect(ctx, opts)
	if err != nil {
		log.Error("Failed to connect to MinIO", zap.Error(err),
			logging.Data(map[string]any{"endpoint": opts.Endpoint, "bucket": opts.Bucket, "ssl": opts.UseSSL}))
		return nil, err
	}
	log.Info("Connected to MinIO", logging.Data(map[string]any{
		"endpoint": opts.Endpoint, "bucket": opts.Bucket, "ssl": opts.UseSSL, "versioning": versioning,
	}))
	if m.lifecycle == "unsupported" {
		log.Warn("The store cannot set the retention rule (NoncurrentVersionExpiration): old versions are kept until removed by hand",
			logging.Data(map[string]any{"bucket": opts.Bucket}))
	}
	return m, nil
}

func connect(ctx context.Context, opts MinIOOptions) (*MinIO, string, error) {
	m := &MinIO{bucket: opts.Bucket, redact: redactor(opts.AccessKey, opts.SecretKey)}
	transport, err := minio.DefaultTransport(opts.UseSSL)
	if err != nil {
		return nil, "", fmt.Errorf("minio transport: %w", err)
	}
	transport.MaxIdleConnsPerHost = max(transport.MaxIdleConnsPerHost, opts.Connections)
	transport.MaxIdleConns = max(transport.MaxIdleConns, opts.Connections)
	if err := configureTLS(transport, opts); err != nil {
		return nil, "", err
	}
	if m.sse, err = serverSide(opts.SSE); err != nil {
		return nil, "", err
	}
	m.client, err = minio.New(opts.Endpoint, &minio.Options{
		Creds:      credentials.NewStaticV4(opts.AccessKey, opts.SecretKey, ""),
		Secure:     opts.UseSSL,
		Transport:  transport,
		Region:     opts.Region,
		MaxRetries: opts.MaxRetries,
		// Lets PutOptions send the document's checksum (as a header:
		// nothing trails the body).
		TrailingHeaders: true,
	})
	if err != nil {
		return nil, "", m.wrap("connect", err)
	}

	exists, err := m.client.BucketExists(ctx, m.bucket)
	if err != nil {
		return nil, "", m.wrap("check bucket "+m.bucket, err)
	}
	if !exists && opts.ReadOnly {
		return nil, "", fmt.Errorf("bucket %s does not exist: %w", m.bucket, ErrPermanent)
	}
	if !exists {
		// Object Lock can only be turned on when a bucket is created (it
		// turns versioning on with it).
		if err := m.client.MakeBucket(ctx, m.bucket, minio.MakeBucketOptions{Region: opts.Region, ObjectLocking: opts.ObjectLock != ""}); err != nil {
			return nil, "", m.wrap("create bucket "+m.bucket, err)
		}
		if opts.ObjectLock != "" {
			mode, validity, unit := minio.RetentionMode(strings.ToUpper(opts.ObjectLock)), uint(opts.ObjectLockDays), minio.Days
			if err := m.client.SetObjectLockConfig(ctx, m.bucket, &mode, &validity, &unit); err != nil {
				return nil, "", m.wrap("set the object lock of "+m.bucket, err)
			}
		}
		// A store without the versioning API (some S3 gateways) says so
		// with NotImplemented: the bucket then keeps no versions, which the
		// caller reports and guards against (REQUIRE_VERSIONING).
		if err := m.client.EnableVersioning(ctx, m.bucket); err != nil && !notImplemented(err) {
			return nil, "", m.wrap("enable versioning on "+m.bucket, err)
		}
		if cfg := bucketEncryption(opts.SSE); cfg != nil {
			if err := m.client.SetBucketEncryption(ctx, m.bucket, cfg); err != nil {
				return nil, "", m.wrap("set the default encryption of "+m.bucket, err)
			}
		}
		if opts.NoncurrentDays > 0 || opts.NoncurrentNewer > 0 {
			switch err := m.client.SetBucketLifecycle(ctx, m.bucket, retention(opts.NoncurrentDays, opts.NoncurrentNewer, opts.JournalPrefix)); {
			case notImplemented(err):
				m.lifecycle = "unsupported"
			case err != nil:
				return nil, "", m.wrap("set the lifecycle rule on "+m.bucket, err)
			default:
				m.lifecycle = "set"
			}
		}
	}
	versioning := "unknown"
	switch vc, err := m.client.GetBucketVersioning(ctx, m.bucket); {
	case err == nil:
		versioning = strings.ToLower(vc.Status)
		if versioning == "" {
			versioning = "off"
		}
	case notImplemented(err):
		versioning = "unsupported"
	}
	m.versioning = versioning
	m.lock = m.readLock(ctx)
	return m, versioning, nil
}

// readLock reads the bucket's default Object Lock; a bucket without one,
// or a store without the API, has none.
func (m *MinIO) readLock(ctx context.Context) Lock {
	enabled, mode, validity, unit, err := m.client.GetObjectLockConfig(ctx, m.bucket)
	if err != nil || enabled != "Enabled" {
		return Lock{}
	}
	l := Lock{}
	if mode != nil {
		l.Mode = strings.ToLower(string(*mode))
	}
	if validity != nil && unit != nil {
		switch *unit {
		case minio.Days:
			l.Days = int(*validity)
		case minio.Years:
			l.Days = 365 * int(*validity)
		}
	}
	return l
}

// ObjectLock is the bucket's default Object Lock, as read at start.
func (m *MinIO) ObjectLock() Lock { return m.lock }

// configureTLS adds MINIO_CA_FILE to the trusted roots and the client
// certificate of mutual TLS.
func configureTLS(transport *http.Transport, opts MinIOOptions) error {
	if opts.CAFile == "" && opts.ClientCert == "" {
		return nil
	}
	if transport.TLSClientConfig == nil {
		transport.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if opts.CAFile != "" {
		pem, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return fmt.Errorf("read MINIO_CA_FILE: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("MINIO_CA_FILE %s holds no PEM certificate", opts.CAFile)
		}
		transport.TLSClientConfig.RootCAs = pool
	}
	if opts.ClientCert != "" {
		cert, err := tls.LoadX509KeyPair(opts.ClientCert, opts.ClientKey)
		if err != nil {
			return fmt.Errorf("load MINIO_CLIENT_CERT and MINIO_CLIENT_KEY: %w", err)
		}
		transport.TLSClientConfig.Certificates = []tls.Certificate{cert}
	}
	return nil
}

// serverSide is the encryption of MINIO_SSE for each PUT.
func serverSide(spec string) (encrypt.ServerSide, error) {
	switch {
	case spec == "":
		return nil, nil
	case spec == "s3":
		return encrypt.NewSSE(), nil
	case strings.HasPrefix(spec, "kms:"):
		sse, err := encrypt.NewSSEKMS(strings.TrimPrefix(spec, "kms:"), nil)
		if err != nil {
			return nil, fmt.Errorf("MINIO_SSE %s: %w", spec, err)
		}
		return sse, nil
	}
	return nil, fmt.Errorf("MINIO_SSE %q: want s3 or kms:KEY_ID", spec)
}

// bucketEncryption is the default encryption of MINIO_SSE for a bucket the
// service creates.
func bucketEncryption(spec string) *sse.Configuration {
	switch {
	case spec == "s3":
		return sse.NewConfigurationSSES3()
	case strings.HasPrefix(spec, "kms:"):
		return sse.NewConfigurationSSEKMS(strings.TrimPrefix(spec, "kms:"))
	}
	return nil
}

// retention is the lifecycle rule of NONCURRENT_RETENTION: history does not
// grow without bound (MinIO refuses writes past 10,000 versions of a key).
// S3 needs a number of days; a count alone expires the older versions after
// one day.
func retention(days, newer int, journal string) *lifecycle.Configuration {
	journalDays := days
	if journalDays == 0 {
		journalDays = 30
	}
	if days == 0 {
		days = 1
	}
	cfg := lifecycle.NewConfiguration()
	cfg.Rules = []lifecycle.Rule{{
		ID:     "cluster-backup-noncurrent-retention",
		Status: "Enabled",
		NoncurrentVersionExpiration: lifecycle.NoncurrentVersionExpiration{
			NoncurrentDays:          lifecycle.ExpirationDays(days),
			NewerNoncurrentVersions: newer,
		},
	}}
	if journal != "" {
		cfg.Rules = append(cfg.Rules, lifecycle.Rule{
			ID:         "cluster-backup-journal-retention",
			Status:     "Enabled",
			RuleFilter: lifecycle.Filter{Prefix: journal},
			Expiration: lifecycle.Expiration{Days: lifecycle.ExpirationDays(journalDays)},
		})
	}
	return cfg
}

// PutOptions are the options of every upload: body and metadata in one
// plain request (no multipart), carrying the document's SHA-256, which the
// store checks against what it received. The digest is computed anyway, so
// minio-go need not hash and sign the body in chunks (over HTTP) nor add a
// CRC trailer (over HTTPS): the check runs end to end, from the encoder to
// the store, at no cost.
func PutOptions(meta object.Meta) minio.PutObjectOptions {
	opts := minio.PutObjectOptions{
		ContentType:      "application/yaml",
		UserMetadata:     meta.Map(),
		DisableMultipart: true,
	}
	if sum, err := hex.DecodeString(meta.SHA256); err == nil && len(sum) == sha256.Size {
		opts.UserMetadata["x-amz-checksum-sha256"] = base64.StdEncoding.EncodeToString(sum)
		opts.DisableContentSha256 = true
	}
	return opts
}

// Put uploads body with meta as user metadata.
func (m *MinIO) Put(ctx context.Context, key string, body []byte, meta object.Meta) error {
	if len(key) > maxKeyBytes {
		return fmt.Errorf("put %s: key of %d bytes exceeds S3's %d: %w", key, len(key), maxKeyBytes, ErrUnstorable)
	}
	opts := PutOptions(meta)
	opts.ServerSideEncryption = m.sse
	_, err := m.client.PutObject(ctx, m.bucket, key, bytes.NewReader(body), int64(len(body)), opts)
	if err != nil {
		return m.wrap("put "+key, err)
	}
	return nil
}

// PutStream writes what r yields under key without holding it in memory:
// a multipart upload of 5 MiB parts (the restore pack).
func (m *MinIO) PutStream(ctx context.Context, key string, r io.Reader) error {
	opts := minio.PutObjectOptions{ContentType: "application/octet-stream", PartSize: 5 << 20, ServerSideEncryption: m.sse}
	if _, err := m.client.PutObject(ctx, m.bucket, key, r, -1, opts); err != nil {
		return m.wrap("put "+key, err)
	}
	return nil
}

// Open streams one version of key ("" for the current one).
func (m *MinIO) Open(ctx context.Context, key, id string) (io.ReadCloser, error) {
	rc, _, err := m.open(ctx, key, id)
	return rc, err
}

// open sends one GET, its metadata from the answer's headers: the Client's
// GetObject adds a goroutine and channels per object for seeking, which a
// whole-object read does not need.
func (m *MinIO) open(ctx context.Context, key, id string) (io.ReadCloser, minio.ObjectInfo, error) {
	rc, info, _, err := minio.Core{Client: m.client}.GetObject(ctx, m.bucket, key, minio.GetObjectOptions{VersionID: id})
	if err != nil {
		if code := minio.ToErrorResponse(err).Code; code == "NoSuchKey" || code == "NoSuchVersion" {
			return nil, info, fmt.Errorf("get %s: %w", key, ErrNotFound)
		}
		return nil, info, m.wrap("get "+key, err)
	}
	return rc, info, nil
}

// Delete removes the current version of key; history stays in the bucket's
// versions when versioning is on.
func (m *MinIO) Delete(ctx context.Context, key string) error {
	if err := m.client.RemoveObject(ctx, m.bucket, key, minio.RemoveObjectOptions{}); err != nil {
		switch {
		case minio.ToErrorResponse(err).Code == "NoSuchKey":
			return nil
		case locked(err):
			return fmt.Errorf("delete %s: %w: %s", key, ErrLocked, minio.ToErrorResponse(err).Message)
		}
		return m.wrap("delete "+key, err)
	}
	return nil
}

// ErrLocked marks a version that S3 Object Lock (or a legal hold) keeps
// from being deleted.
var ErrLocked = errors.New("the version is locked")

// DeleteVersion deletes one version of key for good (never a delete
// marker); a version the bucket's lock retains is ErrLocked.
func (m *MinIO) DeleteVersion(ctx context.Context, key, id string) error {
	err := m.client.RemoveObject(ctx, m.bucket, key, minio.RemoveObjectOptions{VersionID: id})
	if err == nil {
		return nil
	}
	if locked(err) {
		return fmt.Errorf("delete %s version %s: %w: %s", key, id, ErrLocked, minio.ToErrorResponse(err).Message)
	}
	return m.wrap("delete "+key+" version "+id, err)
}

// locked says whether err is a store refusing a write or delete because
// of Object Lock or a legal hold: AWS answers AccessDenied naming the
// retention, MinIO "Object is WORM protected".
func locked(err error) bool {
	resp := minio.ToErrorResponse(err)
	msg := strings.ToLower(resp.Message)
	return resp.Code == "ObjectLocked" || strings.Contains(msg, "worm") || strings.Contains(msg, "retention") || strings.Contains(msg, "legal hold")
}

// Walk visits the keys under prefix with their user metadata, a page of
// 1,000 at a time, without downloading any object.
func (m *MinIO) Walk(ctx context.Context, prefix string, visit func(object.Stored) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the listing when visit fails
	for info := range m.client.ListObjects(ctx, m.bucket, minio.ListObjectsOptions{
		Prefix:       prefix,
		Recursive:    true,
		WithMetadata: true,
	}) {
		if info.Err != nil {
			return m.wrap("list "+prefix, info.Err)
		}
		s := object.Stored{Key: info.Key, Meta: object.MetaFromMap(info.UserMetadata), ETag: strings.Trim(info.ETag, `"`), Size: info.Size}
		if err := visit(s); err != nil {
			return err
		}
	}
	return nil
}

// WalkAfter visits the keys under prefix that sort after after, in key
// order, without their metadata: a listing that starts where the caller
// stopped (the change journal).
func (m *MinIO) WalkAfter(ctx context.Context, prefix, after string, visit func(object.Stored) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for info := range m.client.ListObjects(ctx, m.bucket, minio.ListObjectsOptions{
		Prefix:     prefix,
		Recursive:  true,
		StartAfter: after,
	}) {
		if info.Err != nil {
			return m.wrap("list "+prefix, info.Err)
		}
		if err := visit(object.Stored{Key: info.Key, ETag: strings.Trim(info.ETag, `"`), Size: info.Size}); err != nil {
			return err
		}
	}
	return nil
}

// Folders lists the folders directly under prefix (a listing with a
// delimiter: one request, whatever they hold), without the trailing slash.
func (m *MinIO) Folders(ctx context.Context, prefix string) ([]string, error) {
	var out []string
	for info := range m.client.ListObjects(ctx, m.bucket, minio.ListObjectsOptions{Prefix: prefix}) {
		if info.Err != nil {
			return nil, m.wrap("list "+prefix, info.Err)
		}
		if name, ok := strings.CutSuffix(strings.TrimPrefix(info.Key, prefix), "/"); ok && name != "" {
			out = append(out, name)
		}
	}
	return out, nil
}

// Versions lists every version of every key under prefix, each key's
// newest first: one request per 1,000 versions.
func (m *MinIO) Versions(ctx context.Context, prefix string) ([]object.Version, error) {
	var out []object.Version
	for info := range m.client.ListObjects(ctx, m.bucket, minio.ListObjectsOptions{
		Prefix:       prefix,
		Recursive:    true,
		WithVersions: true,
	}) {
		if info.Err != nil {
			return nil, m.wrap("list versions of "+prefix, info.Err)
		}
		out = append(out, object.Version{
			Key: info.Key, ID: info.VersionID, Time: info.LastModified, DeleteMarker: info.IsDeleteMarker, Size: info.Size, ETag: strings.Trim(info.ETag, `"`),
		})
	}
	return out, nil
}

// Get reads one version of key ("" for the current one) and the metadata
// stored with it.
func (m *MinIO) Get(ctx context.Context, key, id string) ([]byte, object.Meta, error) {
	rc, info, err := m.open(ctx, key, id)
	if err != nil {
		return nil, object.Meta{}, err
	}
	defer rc.Close()
	// Sized by the answer's length, with room for ReadFrom to see the end
	// without growing the buffer.
	var body bytes.Buffer
	body.Grow(int(max(info.Size, 0)) + bytes.MinRead)
	if _, err := body.ReadFrom(rc); err != nil {
		return nil, object.Meta{}, m.wrap("get "+key, err)
	}
	return body.Bytes(), object.MetaFromMap(info.UserMetadata), nil
}

// wrap classifies err and removes any trace of the credentials from it.
func (m *MinIO) wrap(op string, err error) error {
	msg := m.redact.Replace(err.Error())
	resp := minio.ToErrorResponse(err)
	switch resp.Code {
	case "KeyTooLongError", "XMinioInvalidObjectName":
		return fmt.Errorf("%s: %s: %w", op, msg, ErrUnstorable)
	case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket", "InvalidBucketName", "InvalidArgument":
		return fmt.Errorf("%s: %s: %w", op, msg, ErrPermanent)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", op, err)
	}
	if resp.StatusCode == http.StatusForbidden {
		return fmt.Errorf("%s: %s: %w", op, msg, ErrPermanent)
	}
	return fmt.Errorf("%s: %s", op, msg)
}

func redactor(secrets ...string) *strings.Replacer {
	var pairs []string
	for _, s := range secrets {
		if s != "" {
			pairs = append(pairs, s, "[redacted]")
		}
	}
	return strings.NewReplacer(pairs...)
}

// notImplemented reports whether the store answered that it does not have
// the API asked for.
func notImplemented(err error) bool {
	resp := minio.ToErrorResponse(err)
	return resp.Code == "NotImplemented" || resp.StatusCode == http.StatusNotImplemented
}
