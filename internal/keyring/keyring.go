// Package keyring encrypts secrets at rest with envelope encryption.
//
// A root key (32 bytes, from AIRLOCK_ROOT_KEY or a key file) wraps one random
// data key per project. Data keys seal every stored secret with AES-256-GCM;
// the caller passes the row's identity (for example "secret:<id>") as
// additional data, so a ciphertext moved to another row, or another project,
// fails to open. A check value sealed with the root key at first start lets a
// later start with a different root key fail with a clear message instead of
// returning garbage.
//
// rootkey.go loads and generates root keys; keyring.go holds the data keys.
package keyring

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/store"
)

const (
	formatV1  = 0x01
	nonceSize = 12
	checkText = "airlock root key check v1"
)

// Keyring seals and opens secrets with per-project data keys.
type Keyring struct {
	db   *store.DB
	root *RootKey

	mu   sync.RWMutex
	keys map[string]cipher.AEAD // project id -> unwrapped data key
}

// New returns a keyring for db. It verifies that root is the key the store
// was first written with (recording it if the store is new).
func New(ctx context.Context, db *store.DB, root *RootKey) (*Keyring, error) {
	const op = "keyring.New"
	k := &Keyring{db: db, root: root, keys: map[string]cipher.AEAD{}}
	var storedID string
	var sealed []byte
	err := db.QueryRowContext(ctx, `SELECT root_key_id, sealed FROM root_key_check WHERE id = 1`).Scan(&storedID, &sealed)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		sealed, err := seal(root.aead, []byte(checkText), []byte("airlock/root-key-check"))
		if err != nil {
			return nil, errs.Wrap(op, errs.Internal, "sealing the root key check failed", err)
		}
		_, err = db.ExecContext(ctx,
			`INSERT INTO root_key_check (id, root_key_id, sealed, created_at) VALUES (1, $1, $2, $3) ON CONFLICT (id) DO NOTHING`,
			root.ID(), sealed, store.Micros(time.Now()))
		if err != nil {
			return nil, errs.Wrap(op, errs.Unavailable, "recording the root key check failed", err)
		}
		// Another replica may have won the insert: verify against what is stored.
		return New(ctx, db, root)
	case err != nil:
		return nil, errs.Wrap(op, errs.Unavailable, "reading the root key check failed", err)
	}
	if pt, err := open(root.aead, sealed, []byte("airlock/root-key-check")); err != nil || string(pt) != checkText {
		return nil, errs.E(op, errs.Invalid, fmt.Sprintf(
			"the root key (id %s) is not the one this store was created with (id %s): start the server with the original key "+
				"(AIRLOCK_ROOT_KEY or --root-key-file); without it the stored secrets cannot be read", root.ID(), storedID))
	}
	return k, nil
}

// RootKeyID identifies the root key in use (not secret: a hash prefix).
func (k *Keyring) RootKeyID() string { return k.root.ID() }

// CreateProjectKey generates and stores the data key of a new project. Call it
// in the transaction that creates the project.
func (k *Keyring) CreateProjectKey(ctx context.Context, q store.Querier, projectID string) error {
	const op = "keyring.(*Keyring).CreateProjectKey"
	dk := make([]byte, 32)
	if _, err := rand.Read(dk); err != nil {
		return errs.Wrap(op, errs.Internal, "generating a data key failed", err)
	}
	wrapped, err := seal(k.root.aead, dk, wrapAAD(projectID))
	if err != nil {
		return errs.Wrap(op, errs.Internal, "wrapping the data key failed", err)
	}
	_, err = q.ExecContext(ctx,
		`INSERT INTO project_keys (project_id, root_key_id, wrapped_key, created_at) VALUES ($1, $2, $3, $4)`,
		projectID, k.root.ID(), wrapped, store.Micros(time.Now()))
	if err != nil {
		return errs.Wrap(op, errs.Unavailable, "storing the data key failed", err)
	}
	return nil
}

// Seal encrypts plaintext for a row of a project. aad must name the row
// (kind and id) and is required again to open it.
func (k *Keyring) Seal(ctx context.Context, projectID, aad string, plaintext []byte) ([]byte, error) {
	const op = "keyring.(*Keyring).Seal"
	a, err := k.dataKey(ctx, projectID)
	if err != nil {
		return nil, errs.Wrap(op, errs.Internal, "loading the project data key failed", err)
	}
	return seal(a, plaintext, rowAAD(projectID, aad))
}

// Open decrypts what Seal returned for the same project and aad.
func (k *Keyring) Open(ctx context.Context, projectID, aad string, ciphertext []byte) ([]byte, error) {
	const op = "keyring.(*Keyring).Open"
	a, err := k.dataKey(ctx, projectID)
	if err != nil {
		return nil, errs.Wrap(op, errs.Internal, "loading the project data key failed", err)
	}
	pt, err := open(a, ciphertext, rowAAD(projectID, aad))
	if err != nil {
		return nil, &errs.Error{Op: op, Code: errs.DataLoss, Err: err,
			Msg: "a stored secret failed its integrity check: it was altered or copied from another row; restore it from a backup or write it again"}
	}
	return pt, nil
}

func (k *Keyring) dataKey(ctx context.Context, projectID string) (cipher.AEAD, error) {
	k.mu.RLock()
	a, ok := k.keys[projectID]
	k.mu.RUnlock()
	if ok {
		return a, nil
	}
	var rootID string
	var wrapped []byte
	err := k.db.QueryRowContext(ctx, `SELECT root_key_id, wrapped_key FROM project_keys WHERE project_id = $1`, projectID).Scan(&rootID, &wrapped)
	if err != nil {
		return nil, fmt.Errorf("project %s has no data key: %w", projectID, err)
	}
	if rootID != k.root.ID() {
		return nil, fmt.Errorf("the data key of project %s is wrapped by root key %s, not %s", projectID, rootID, k.root.ID())
	}
	dk, err := open(k.root.aead, wrapped, wrapAAD(projectID))
	if err != nil {
		return nil, fmt.Errorf("unwrapping the data key of project %s: %w", projectID, err)
	}
	a, err = newAEAD(dk)
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	k.keys[projectID] = a
	k.mu.Unlock()
	return a, nil
}

func wrapAAD(projectID string) []byte { return []byte("airlock/project-key|" + projectID) }

func rowAAD(projectID, aad string) []byte { return []byte("airlock/v1|" + projectID + "|" + aad) }

func newAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("key is %d bytes, want 32", len(key))
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// seal returns formatV1 || nonce || ciphertext+tag.
func seal(a cipher.AEAD, plaintext, aad []byte) ([]byte, error) {
	out := make([]byte, 1+nonceSize, 1+nonceSize+len(plaintext)+a.Overhead())
	out[0] = formatV1
	if _, err := rand.Read(out[1 : 1+nonceSize]); err != nil {
		return nil, err
	}
	return a.Seal(out, out[1:1+nonceSize], plaintext, aad), nil
}

func open(a cipher.AEAD, sealed, aad []byte) ([]byte, error) {
	if len(sealed) < 1+nonceSize+a.Overhead() || sealed[0] != formatV1 {
		return nil, errors.New("ciphertext is truncated or of an unknown format")
	}
	return a.Open(nil, sealed[1:1+nonceSize], sealed[1+nonceSize:], aad)
}

// SealSystem encrypts an installation-wide secret (such as the CA's private
// key) directly with the root key. aad names what it is.
func (k *Keyring) SealSystem(aad string, plaintext []byte) ([]byte, error) {
	return seal(k.root.aead, plaintext, []byte("airlock/system|"+aad))
}

// OpenSystem decrypts what SealSystem returned for the same aad.
func (k *Keyring) OpenSystem(aad string, sealed []byte) ([]byte, error) {
	pt, err := open(k.root.aead, sealed, []byte("airlock/system|"+aad))
	if err != nil {
		return nil, &errs.Error{Op: "keyring.(*Keyring).OpenSystem", Code: errs.DataLoss, Err: err,
			Msg: "a stored system secret (" + aad + ") failed its integrity check"}
	}
	return pt, nil
}

// Labels of the keys DeriveKey makes. Each names one use; a key is never
// used for two.
const (
	LabelSessionLogMAC = "airlock/v1/session-log-mac"
	LabelAuditLogMAC   = "airlock/v1/audit-log-mac"
)

// DeriveKey returns a 32-byte key for one use, named by label, derived from
// the root key with HKDF-SHA256 (RFC 5869, no salt, label as info). Nothing
// in the store can produce it: it authenticates what the store holds (a
// session log's chain head, the audit log) against someone who can write
// the store but does not hold the root key.
func (k *Keyring) DeriveKey(label string) ([]byte, error) {
	if label == "" {
		return nil, errs.E("keyring.(*Keyring).DeriveKey", errs.Internal, "a derived key needs a label")
	}
	key, err := hkdf.Key(sha256.New, k.root.raw, nil, label, 32)
	if err != nil {
		return nil, errs.Wrap("keyring.(*Keyring).DeriveKey", errs.Internal, "deriving a key from the root key failed", err)
	}
	return key, nil
}

// NewPassword returns 32 random letters and digits (about 190 bits) from
// crypto/rand, without modulo bias: a password for a database user that
// needs no quoting in PostgreSQL or MongoDB.
func NewPassword() (string, error) {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 32)
	for i := range b {
		for {
			var one [1]byte
			if _, err := rand.Read(one[:]); err != nil {
				return "", err
			}
			if one[0] < 248 { // 248 = 4 × 62
				b[i] = alphabet[int(one[0])%len(alphabet)]
				break
			}
		}
	}
	return string(b), nil
}
