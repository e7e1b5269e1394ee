// Package encrypt keeps a Secret's values out of reach of whoever reads the
// bucket. Before a Secret's document leaves the process, the values of its
// data and stringData and its last-applied-configuration annotation are
// encrypted with age (age-encryption.org/v1) to the configured recipients,
// one value at a time: names, labels, type and keys stay readable, so the
// bucket stays browsable and diffable, and one value decrypts with the stock
// age tool:
//
//	yq -r '.data.password' secret.yaml | base64 -d | age -d -i key.txt | tail -n +2
//
// Each ciphertext is bound to its place: the plaintext starts with one line
// that names the Secret's namespace and name and the value's field and key
// (the line tail drops above), and decryption refuses a value whose line
// names another place. A ciphertext copied into another object therefore
// decrypts nowhere else, and only Secrets are ever decrypted: a restore is
// no oracle for whoever can write the bucket and create an object.
//
// Encryption is randomised, so the stored bytes of an unchanged Secret
// differ on every encryption. Change detection therefore compares a keyed
// digest of the plaintext document (HMAC-SHA256 under a key only the
// installation holds, never a plain hash that a dictionary would reverse),
// which also covers the recipients: adding one re-encrypts every Secret on
// the next pass.
package encrypt

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"filippo.io/age"
)

// Annotation marks a stored document whose values are encrypted. Its value
// starts with Scheme and says, for a reader of the file, what is encrypted
// and how one value decrypts.
const Annotation = "cluster-backup.io/encryption"

// Scheme names the envelope: every encrypted value is the standard base64
// of one age file holding the value's bytes (for data, the decoded bytes).
const Scheme = "age/v1"

// BoundScheme is Scheme with each plaintext preceded by its binding line.
// Documents marked with Scheme alone were written before values were bound,
// and decrypt unchecked.
const BoundScheme = Scheme + "+bound"

// envelope is Annotation's value.
const envelope = BoundScheme + ": each value of data and stringData and the " + LastApplied +
	" annotation is base64(age ciphertext) of one line naming the value's place, then the value; decrypt one with: base64 -d | age -d -i IDENTITY_FILE | tail -n +2"

// bindingPrefix starts the first line of every bound plaintext.
const bindingPrefix = "cluster-backup.io/bound-to: "

// binding is the first line of a bound plaintext: the object and the value
// it belongs to.
func binding(namespace, name, field, key string) string {
	return bindingPrefix + namespace + "/" + name + " " + field + "/" + key + "\n"
}

// LastApplied is the annotation kubectl apply leaves on an object, a second
// copy of everything the object held when it was applied.
const LastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// MinKeyBytes is the shortest digest key accepted.
const MinKeyBytes = 16

// Encrypter encrypts Secrets to a fixed set of recipients.
type Encrypter struct {
	recipients []age.Recipient
	// context is what the keyed digest covers besides the document: the
	// scheme and the sorted recipients.
	context []byte
	key     []byte
}

// Applies reports whether objects of this apiVersion and kind have values
// to encrypt: core Secrets.
func Applies(apiVersion, kind string) bool { return apiVersion == "v1" && kind == "Secret" }

// Recipients parses SECRET_ENCRYPTION: age recipients separated by commas
// or newlines, or "@FILE" for a recipients file (one per line, # comments).
// It returns the recipients and their canonical, sorted spelling.
func Recipients(spec string) ([]age.Recipient, []string, error) {
	text := spec
	if path, ok := strings.CutPrefix(strings.TrimSpace(spec), "@"); ok {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, nil, fmt.Errorf("read the recipients file: %w", err)
		}
		text = string(b)
	}
	var lines []string
	for _, line := range strings.FieldsFunc(text, func(r rune) bool { return r == ',' || r == '\n' || r == '\r' }) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		lines = append(lines, line)
	}
	if len(lines) == 0 {
		return nil, nil, errors.New("no age recipient given")
	}
	slices.Sort(lines)
	lines = slices.Compact(lines)
	recipients, err := age.ParseRecipients(strings.NewReader(strings.Join(lines, "\n")))
	if err != nil {
		return nil, nil, err
	}
	return recipients, lines, nil
}

// Key reads SECRET_HMAC_KEY: the key itself, or "@FILE" for a file that
// holds it (a trailing newline is not part of it).
func Key(spec string) ([]byte, error) {
	key := []byte(spec)
	if path, ok := strings.CutPrefix(spec, "@"); ok {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read the key file: %w", err)
		}
		key = bytes.TrimRight(b, "\r\n")
	}
	if len(key) < MinKeyBytes {
		return nil, fmt.Errorf("a key of %d bytes is too short: at least %d", len(key), MinKeyBytes)
	}
	return key, nil
}

// New returns an Encrypter for the recipients of spec (see Recipients) that
// digests with key.
func New(spec string, key []byte) (*Encrypter, error) {
	recipients, names, err := Recipients(spec)
	if err != nil {
		return nil, err
	}
	if len(key) < MinKeyBytes {
		return nil, fmt.Errorf("a key of %d bytes is too short: at least %d", len(key), MinKeyBytes)
	}
	ctx := BoundScheme + "\n" + strings.Join(names, "\n") + "\n\n"
	return &Encrypter{recipients: recipients, context: []byte(ctx), key: bytes.Clone(key)}, nil
}

// Digest is the keyed digest of a plaintext document: what change
// detection compares for an encrypted document.
func (e *Encrypter) Digest(plain []byte) [sha256.Size]byte {
	mac := hmac.New(sha256.New, e.key)
	mac.Write(e.context)
	mac.Write(plain)
	var out [sha256.Size]byte
	mac.Sum(out[:0])
	return out
}

// Encrypt replaces, in place, the values of obj's data and stringData and
// its last-applied-configuration annotation with their ciphertexts, each
// bound to obj's namespace and name and to its own field and key, and
// marks obj with Annotation.
func (e *Encrypter) Encrypt(obj map[string]any) error {
	namespace, name := placeOf(obj)
	err := eachValue(obj, func(field, k, v string) (string, error) {
		plain := []byte(v)
		if field == "data" {
			var err error
			if plain, err = base64.StdEncoding.DecodeString(v); err != nil {
				return "", fmt.Errorf("data.%s is not base64: %w", k, err)
			}
		}
		var buf bytes.Buffer
		w, err := age.Encrypt(&buf, e.recipients...)
		if err != nil {
			return "", err
		}
		if _, err := io.WriteString(w, binding(namespace, name, field, k)); err != nil {
			return "", err
		}
		if _, err := w.Write(plain); err != nil {
			return "", err
		}
		if err := w.Close(); err != nil {
			return "", err
		}
		return base64.StdEncoding.EncodeToString(buf.Bytes()), nil
	})
	if err != nil {
		return err
	}
	meta, _ := obj["metadata"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
		obj["metadata"] = meta
	}
	annotations, _ := meta["annotations"].(map[string]any)
	if annotations == nil {
		annotations = map[string]any{}
		meta["annotations"] = annotations
	}
	annotations[Annotation] = envelope
	return nil
}

// Encrypted reports whether obj was stored with its values encrypted.
func Encrypted(obj map[string]any) bool {
	meta, _ := obj["metadata"].(map[string]any)
	annotations, _ := meta["annotations"].(map[string]any)
	_, ok := annotations[Annotation]
	return ok
}

// ErrNoIdentity is returned for an encrypted document when no identity was
// given to decrypt it with.
var ErrNoIdentity = errors.New("its values are encrypted: give the age identity with --identity FILE or AGE_IDENTITY_FILE")

// Decrypter decrypts with the identities of an age identity file.
type Decrypter struct {
	identities []age.Identity
}

// LoadIdentities reads an age identity file (as age-keygen writes it).
func LoadIdentities(path string) (*Decrypter, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ids, err := age.ParseIdentities(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &Decrypter{identities: ids}, nil
}

// ErrNotEncryptable is an object other than a Secret that claims to hold
// encrypted values: the service never writes one, so it is refused rather
// than decrypted.
var ErrNotEncryptable = errors.New("it carries the " + Annotation + " annotation, which only Secrets are stored with: refused, not decrypted")

// ErrMisplaced is a ciphertext bound to another object or value than the
// one it was found in.
var ErrMisplaced = errors.New("the ciphertext belongs to another object or value")

// Decrypt restores, in place, the values Encrypt replaced and removes
// Annotation. A document without Annotation is left as it is. Only Secrets
// are decrypted (ErrNotEncryptable), and a value bound to another place
// than where it was found is ErrMisplaced. With a nil Decrypter, an
// encrypted document is ErrNoIdentity.
func (d *Decrypter) Decrypt(obj map[string]any) error {
	if !Encrypted(obj) {
		return nil
	}
	if apiVersion, _ := obj["apiVersion"].(string); !Applies(apiVersion, stringOf(obj, "kind")) {
		return ErrNotEncryptable
	}
	meta, _ := obj["metadata"].(map[string]any)
	annotations, _ := meta["annotations"].(map[string]any)
	scheme, _ := annotations[Annotation].(string)
	if !strings.HasPrefix(scheme, Scheme) {
		return fmt.Errorf("unknown encryption %q", scheme)
	}
	// Only documents written before values were bound may hold unbound
	// ones; a bound line is checked whatever the envelope says, so that
	// relabelling a document as older unlocks nothing.
	mustBind := strings.HasPrefix(scheme, BoundScheme)
	if d == nil {
		return ErrNoIdentity
	}
	namespace, name := placeOf(obj)
	err := eachValue(obj, func(field, k, v string) (string, error) {
		sealed, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			return "", fmt.Errorf("%s: not base64: %w", valueName(field, k), err)
		}
		r, err := age.Decrypt(bytes.NewReader(sealed), d.identities...)
		if err != nil {
			return "", fmt.Errorf("%s: %w", valueName(field, k), err)
		}
		plain, err := io.ReadAll(r)
		if err != nil {
			return "", fmt.Errorf("%s: %w", valueName(field, k), err)
		}
		if bytes.HasPrefix(plain, []byte(bindingPrefix)) {
			want := binding(namespace, name, field, k)
			if !bytes.HasPrefix(plain, []byte(want)) {
				return "", fmt.Errorf("%s: %w", valueName(field, k), ErrMisplaced)
			}
			plain = plain[len(want):]
		} else if mustBind {
			return "", fmt.Errorf("%s: not bound to its object: %w", valueName(field, k), ErrMisplaced)
		}
		if field == "data" {
			return base64.StdEncoding.EncodeToString(plain), nil
		}
		return string(plain), nil
	})
	if err != nil {
		return err
	}
	delete(annotations, Annotation)
	if len(annotations) == 0 {
		delete(meta, "annotations")
	}
	return nil
}

func valueName(field, key string) string {
	if field == "annotation" {
		return "the " + key + " annotation"
	}
	return field + "." + key
}

// eachValue replaces every encryptable string value of obj with what f
// returns for it: each value of data and stringData (field "data" or
// "stringData") and the last-applied annotation (field "annotation").
func eachValue(obj map[string]any, f func(field, key, value string) (string, error)) error {
	for _, field := range []string{"data", "stringData"} {
		m, _ := obj[field].(map[string]any)
		for _, k := range sortedKeys(m) {
			v, ok := m[k].(string)
			if !ok {
				continue
			}
			out, err := f(field, k, v)
			if err != nil {
				return err
			}
			m[k] = out
		}
	}
	meta, _ := obj["metadata"].(map[string]any)
	annotations, _ := meta["annotations"].(map[string]any)
	if v, ok := annotations[LastApplied].(string); ok {
		out, err := f("annotation", LastApplied, v)
		if err != nil {
			return err
		}
		annotations[LastApplied] = out
	}
	return nil
}

// placeOf is obj's namespace and name.
func placeOf(obj map[string]any) (namespace, name string) {
	meta, _ := obj["metadata"].(map[string]any)
	return stringOf(meta, "namespace"), stringOf(meta, "name")
}

func stringOf(m map[string]any, key string) string {
	s, _ := m[key].(string)
	return s
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
