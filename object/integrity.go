package object

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strings"
	"sync"
)

// Errors of Signer.Check.
var (
	// ErrUnsigned marks a document stored without an integrity tag: written
	// before the installation had an integrity key, or by someone else.
	ErrUnsigned = errors.New("the document carries no integrity tag")
	// ErrForged marks a document whose tag is not the one its key, its
	// metadata and its bytes call for under any key the reader holds.
	ErrForged = errors.New("the document's integrity tag does not match")
)

// Signer authenticates what the service stores with the installation's
// integrity key (INTEGRITY_KEY), which is never stored in the bucket:
// anyone who can write the bucket can write a document and a matching
// sha256, but not its tag. A document's tag is the HMAC-SHA256 of its key
// and its stored metadata, the SHA-256 of its bytes included, so it is
// computed without a second pass over the bytes; a reader checks the bytes
// against the SHA-256 (restore.Read) and the tag against the key.
//
// A tag is "ID.HEX": ID names the key that made it (the first 8 hex digits
// of a digest of the key), so that a reader holding the current key and
// those it replaced (INTEGRITY_KEYS_OLD) checks with the right one. A nil
// Signer signs nothing and checks nothing.
type Signer struct {
	keys []signingKey // the first signs
}

type signingKey struct {
	id   string
	macs *sync.Pool // of hash.Hash: HMAC-SHA256 under the key, reset before use
}

// NewSigner signs with key and checks with key and old.
func NewSigner(key []byte, old ...[]byte) *Signer {
	s := &Signer{}
	for _, k := range append([][]byte{key}, old...) {
		id := sha256.Sum256(append([]byte("cluster-backup integrity key\n"), k...))
		key := append([]byte(nil), k...)
		s.keys = append(s.keys, signingKey{id: hex.EncodeToString(id[:4]), macs: &sync.Pool{New: func() any { return hmac.New(sha256.New, key) }}})
	}
	return s
}

// KeyID names the signing key, as tags carry it ("" for a nil Signer).
func (s *Signer) KeyID() string {
	if s == nil {
		return ""
	}
	return s.keys[0].id
}

// Sign is the tag of the document stored under key with m (m.Integrity
// aside).
func (s *Signer) Sign(key string, m Meta) string {
	if s == nil {
		return ""
	}
	return s.keys[0].tag(documentMessage(key, m))
}

// Check says whether m.Integrity is the tag of the document under key:
// nil, or an error wrapping ErrUnsigned or ErrForged.
func (s *Signer) Check(key string, m Meta) error {
	if s == nil {
		return nil
	}
	return s.check(m.Integrity, documentMessage(key, m))
}

// SignBytes is the tag of a side object (the change index) of name.
func (s *Signer) SignBytes(name string, body []byte) string {
	if s == nil {
		return ""
	}
	return s.keys[0].tag(bytesMessage(name, body))
}

// CheckBytes says whether tag is the tag of body as the side object name.
func (s *Signer) CheckBytes(name string, body []byte, tag string) error {
	if s == nil {
		return nil
	}
	return s.check(tag, bytesMessage(name, body))
}

func (s *Signer) check(tag string, msg []byte) error {
	if tag == "" {
		return ErrUnsigned
	}
	id, _, _ := strings.Cut(tag, ".")
	for _, k := range s.keys {
		if k.id != id {
			continue
		}
		if hmac.Equal([]byte(k.tag(msg)), []byte(tag)) {
			return nil
		}
		return ErrForged
	}
	return fmt.Errorf("%w: made with key %q, which is neither INTEGRITY_KEY nor one of INTEGRITY_KEYS_OLD", ErrForged, id)
}

func (k signingKey) tag(msg []byte) string {
	mac := k.macs.Get().(hash.Hash)
	defer k.macs.Put(mac)
	mac.Reset()
	mac.Write(msg)
	var sum [sha256.Size]byte
	return k.id + "." + hex.EncodeToString(mac.Sum(sum[:0]))
}

// documentMessage is what a document's tag authenticates: its key and
// every stored metadata field, each length-prefixed. A document that
// records its field manager is of the second form, so that the tags of
// documents written before it was recorded still check.
func documentMessage(key string, m Meta) []byte {
	if m.Manager != "" {
		return fields("cluster-backup document 2", key, m.ResourceVersion, m.UID, m.APIVersion, m.SHA256, m.HMAC, m.ClusterUID, m.Manager)
	}
	return fields("cluster-backup document 1", key, m.ResourceVersion, m.UID, m.APIVersion, m.SHA256, m.HMAC, m.ClusterUID)
}

// bytesMessage is what a side object's tag authenticates: its name and
// the SHA-256 of its bytes.
func bytesMessage(name string, body []byte) []byte {
	sum := sha256.Sum256(body)
	return fields("cluster-backup side object 1", name, hex.EncodeToString(sum[:]))
}

func fields(fs ...string) []byte {
	var out []byte
	for _, f := range fs {
		out = binary.AppendUvarint(out, uint64(len(f)))
		out = append(out, f...)
	}
	return out
}
