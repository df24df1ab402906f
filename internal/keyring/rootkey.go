package keyring

import (
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// EnvRootKey is the environment variable that holds a base64 root key.
const EnvRootKey = "AIRLOCK_ROOT_KEY"

// HowToMakeKey tells an operator how to create a root key.
const HowToMakeKey = "make one with `openssl rand -base64 32` (or `airlock keygen`) and pass it as " +
	EnvRootKey + " or write it to a file (mode 0600) given with --root-key-file"

// RootKey is the key that wraps every project's data key. It never leaves
// the server process.
type RootKey struct {
	aead cipher.AEAD
	id   string
	raw  []byte // for HKDF only (DeriveKey); never logged or stored
}

// ID is a short, non-secret identifier of the key (a hash prefix), safe to
// log and to store beside what the key wrapped.
func (k *RootKey) ID() string { return k.id }

// ParseRootKey decodes a base64 (standard or URL alphabet) 32-byte key.
func ParseRootKey(s string) (*RootKey, error) {
	s = strings.TrimSpace(s)
	var raw []byte
	var err error
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if raw, err = enc.DecodeString(s); err == nil {
			break
		}
	}
	if err != nil {
		return nil, errors.New("the root key is not valid base64; " + HowToMakeKey)
	}
	if len(raw) != 32 {
		return nil, fmt.Errorf("the root key decodes to %d bytes, it must be 32; %s", len(raw), HowToMakeKey)
	}
	a, err := newAEAD(raw)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(append([]byte("airlock root key id|"), raw...))
	return &RootKey{aead: a, id: hex.EncodeToString(sum[:6]), raw: raw}, nil
}

// LoadRootKey takes the key from the environment value when set, else from
// file. With neither it fails and says how to make one.
func LoadRootKey(envValue, file string) (*RootKey, error) {
	switch {
	case envValue != "" && file != "":
		return nil, fmt.Errorf("both %s and --root-key-file are set; give only one", EnvRootKey)
	case envValue != "":
		k, err := ParseRootKey(envValue)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", EnvRootKey, err)
		}
		return k, nil
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("reading the root key file: %w", err)
		}
		k, err := ParseRootKey(string(b))
		if err != nil {
			return nil, fmt.Errorf("root key file %s: %w", file, err)
		}
		return k, nil
	default:
		return nil, errors.New("no root key: the server needs one to encrypt secrets at rest; " + HowToMakeKey)
	}
}

// GenerateRootKey returns a new random key in base64.
func GenerateRootKey() string {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return base64.StdEncoding.EncodeToString(raw)
}

// LoadOrCreateRootKeyFile reads the key file at path, creating it (mode 0600)
// with a new key if it does not exist. Used by `airlock dev`.
func LoadOrCreateRootKeyFile(path string) (*RootKey, bool, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case errors.Is(err, fs.ErrExist):
		k, err := LoadRootKey("", path)
		return k, false, err
	case err != nil:
		return nil, false, fmt.Errorf("creating the root key file: %w", err)
	}
	key := GenerateRootKey()
	_, werr := f.WriteString(key + "\n")
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(path)
		return nil, false, fmt.Errorf("writing the root key file: %w", werr)
	}
	k, err := ParseRootKey(key)
	return k, true, err
}
