package mfa

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/airlockpam/airlock/internal/errs"
)

// softKey is a software authenticator: one ES256 passkey, answering
// navigator.credentials.create and .get the way a browser hands their
// results to a page (JSON, binary fields base64url), with "none"
// attestation.
type softKey struct {
	key    *ecdsa.PrivateKey
	id     []byte
	count  uint32
	origin string // the origin the "browser" reports
	rpID   string
}

var b64 = base64.RawURLEncoding

func newSoftKey(t *testing.T, origin, rpID string) *softKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	return &softKey{key: k, id: id, origin: origin, rpID: rpID}
}

func (k *softKey) authData(flags byte, attested []byte) []byte {
	h := sha256.Sum256([]byte(k.rpID))
	out := append([]byte{}, h[:]...)
	out = append(out, flags)
	out = binary.BigEndian.AppendUint32(out, k.count)
	return append(out, attested...)
}

func challengeOfOptions(t *testing.T, opts json.RawMessage) string {
	t.Helper()
	var o struct {
		PublicKey struct {
			Challenge string `json:"challenge"`
		} `json:"publicKey"`
	}
	if err := json.Unmarshal(opts, &o); err != nil || o.PublicKey.Challenge == "" {
		t.Fatalf("options %s: %v", opts, err)
	}
	return o.PublicKey.Challenge
}

func (k *softKey) clientData(typ, challenge string) []byte {
	b, _ := json.Marshal(map[string]any{"type": typ, "challenge": challenge, "origin": k.origin, "crossOrigin": false})
	return b
}

// create answers registration options.
func (k *softKey) create(t *testing.T, opts json.RawMessage) json.RawMessage {
	t.Helper()
	x, y := make([]byte, 32), make([]byte, 32)
	k.key.X.FillBytes(x)
	k.key.Y.FillBytes(y)
	cose, err := cbor.Marshal(map[int]any{1: 2, 3: -7, -1: 1, -2: x, -3: y})
	if err != nil {
		t.Fatal(err)
	}
	att := make([]byte, 16) // AAGUID
	att = binary.BigEndian.AppendUint16(att, uint16(len(k.id)))
	att = append(att, k.id...)
	att = append(att, cose...)
	obj, err := cbor.Marshal(map[string]any{"fmt": "none", "attStmt": map[string]any{}, "authData": k.authData(0x45, att)})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]any{"id": b64.EncodeToString(k.id), "rawId": b64.EncodeToString(k.id), "type": "public-key",
		"response": map[string]any{"attestationObject": b64.EncodeToString(obj),
			"clientDataJSON": b64.EncodeToString(k.clientData("webauthn.create", challengeOfOptions(t, opts)))},
		"clientExtensionResults": map[string]any{}})
	return b
}

// get answers assertion options.
func (k *softKey) get(t *testing.T, opts json.RawMessage, userID string) json.RawMessage {
	t.Helper()
	k.count++
	ad := k.authData(0x05, nil)
	cd := k.clientData("webauthn.get", challengeOfOptions(t, opts))
	h := sha256.Sum256(cd)
	d := sha256.Sum256(append(append([]byte{}, ad...), h[:]...))
	sig, err := ecdsa.SignASN1(rand.Reader, k.key, d[:])
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]any{"id": b64.EncodeToString(k.id), "rawId": b64.EncodeToString(k.id), "type": "public-key",
		"response": map[string]any{"authenticatorData": b64.EncodeToString(ad), "clientDataJSON": b64.EncodeToString(cd),
			"signature": b64.EncodeToString(sig), "userHandle": b64.EncodeToString([]byte(userID))},
		"clientExtensionResults": map[string]any{}})
	return b
}

func newPasskeyEnv(t *testing.T) *env {
	t.Helper()
	e := newEnv(t)
	if err := e.s.SetPublicURL("https://airlock.example.com"); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) registerPasskey(t *testing.T, ctx context.Context, k *softKey, name string) *PasskeyRegistered {
	t.Helper()
	c, err := e.s.BeginPasskeyRegistration(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r, err := e.s.FinishPasskeyRegistration(ctx, c.ID, name, k.create(t, c.Options))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestPublicOrigin(t *testing.T) {
	for _, c := range []struct{ in, origin, rpID, err string }{
		{"https://airlock.example.com", "https://airlock.example.com", "airlock.example.com", ""},
		{"https://airlock.example.com:8443/", "https://airlock.example.com:8443", "airlock.example.com", ""},
		{"http://127.0.0.1:8720", "http://localhost:8720", "localhost", ""},
		{"http://[::1]:8720", "http://localhost:8720", "localhost", ""},
		{"https://10.0.0.5", "", "", "passkeys need a domain name"},
		{"airlock.example.com", "", "", "not a URL like"},
		{"https://airlock.example.com/x", "", "", "no path"},
	} {
		origin, rpID, err := PublicOrigin(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: err %v; want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || origin != c.origin || rpID != c.rpID {
			t.Errorf("%s = %q %q %v; want %q %q", c.in, origin, rpID, err, c.origin, c.rpID)
		}
	}
}

func TestPasskeyRegistration(t *testing.T) {
	e := newPasskeyEnv(t)
	ctx := as("alice", "f1")
	k := newSoftKey(t, "https://airlock.example.com", "airlock.example.com")
	r := e.registerPasskey(t, ctx, k, "laptop")
	if len(r.RecoveryCodes) != 10 || r.Passkey.Name != "laptop" {
		t.Fatalf("first passkey: %+v", r)
	}
	st, err := e.s.Status(ctx)
	if err != nil || len(st.Methods) != 1 || st.Methods[0].Kind != MethodWebAuthn {
		t.Fatalf("status %+v %v", st, err)
	}
	// A second passkey makes no new recovery codes; the same one again is refused.
	r2 := e.registerPasskey(t, ctx, newSoftKey(t, "https://airlock.example.com", "airlock.example.com"), "")
	if len(r2.RecoveryCodes) != 0 || r2.Passkey.Name != "Passkey" {
		t.Fatalf("second passkey: %+v", r2)
	}
	c, _ := e.s.BeginPasskeyRegistration(ctx)
	_, err = e.s.FinishPasskeyRegistration(ctx, c.ID, "again", k.create(t, c.Options))
	wantCode(t, err, errs.Conflict, "already registered")
	// Another site's answer, a used ceremony, someone else's ceremony, junk.
	c, _ = e.s.BeginPasskeyRegistration(ctx)
	evil := newSoftKey(t, "https://evil.example.com", "airlock.example.com")
	_, err = e.s.FinishPasskeyRegistration(ctx, c.ID, "x", evil.create(t, c.Options))
	wantCode(t, err, errs.Invalid, "not accepted")
	_, err = e.s.FinishPasskeyRegistration(ctx, c.ID, "x", newSoftKey(t, "https://airlock.example.com", "airlock.example.com").create(t, c.Options))
	wantCode(t, err, errs.NotFound, "start again")
	c, _ = e.s.BeginPasskeyRegistration(ctx)
	_, err = e.s.FinishPasskeyRegistration(as("bob", "fb"), c.ID, "x", newSoftKey(t, "https://airlock.example.com", "airlock.example.com").create(t, c.Options))
	wantCode(t, err, errs.NotFound, "someone else's")
	_, err = e.s.FinishPasskeyRegistration(ctx, c.ID, "x", json.RawMessage(`{"id":1}`))
	wantCode(t, err, errs.Invalid, "navigator.credentials.create")
	if l, err := e.s.ListPasskeys(ctx); err != nil || len(l) != 2 {
		t.Fatalf("list %v %v", l, err)
	}
	if e.audit(t, "mfa.enroll", "success") != 2 {
		t.Fatal("the registrations are not audited")
	}
	// Without a public URL there are no passkeys.
	e2 := newEnv(t)
	_, err = e2.s.BeginPasskeyRegistration(ctx)
	wantCode(t, err, errs.Unavailable, "--public-url")
}

func TestPasskeyChallenge(t *testing.T) {
	e := newPasskeyEnv(t)
	cli, browser := as("alice", "cli"), as("alice", "web")
	k := newSoftKey(t, "https://airlock.example.com", "airlock.example.com")
	rec := e.registerPasskey(t, cli, k, "laptop").RecoveryCodes
	m := "webauthn"
	if _, err := e.s.UpdateOrg(cli, &m, nil); err != nil {
		t.Fatal(err)
	}
	re := e.challenge(t, cli, "A")
	if re.Method != MethodWebAuthn || re.ApprovalURL != "https://airlock.example.com/mfa/approve/"+re.ChallengeID ||
		!strings.Contains(re.Detail, re.ApprovalURL) {
		t.Fatalf("problem %+v", re)
	}
	st, err := e.s.ChallengeStatusOf(cli, re.ChallengeID)
	if err != nil || st.Status != "pending" || st.ApprovalURL != re.ApprovalURL {
		t.Fatalf("status %+v %v", st, err)
	}
	// A TOTP-looking code does not answer a passkey challenge.
	_, err = e.s.VerifyChallenge(cli, re.ChallengeID, "123456")
	wantCode(t, err, errs.Invalid, "passkey")
	// Bob can neither see nor approve it.
	_, err = e.s.ChallengeStatusOf(as("bob", "b"), re.ChallengeID)
	wantCode(t, err, errs.NotFound, "no such MFA challenge")
	_, err = e.s.BeginChallengePasskey(as("bob", "b"), re.ChallengeID)
	wantCode(t, err, errs.NotFound, "no such MFA challenge")
	// A passkey answer for another site is refused.
	c, err := e.s.BeginChallengePasskey(browser, re.ChallengeID)
	if err != nil {
		t.Fatal(err)
	}
	k.origin = "https://evil.example.com"
	_, err = e.s.VerifyChallengePasskey(browser, re.ChallengeID, c.ID, k.get(t, c.Options, "alice"))
	wantCode(t, err, errs.Invalid, "did not prove")
	k.origin = "https://airlock.example.com"
	// The browser (another login of alice) approves it with the passkey.
	c, err = e.s.BeginChallengePasskey(browser, re.ChallengeID)
	if err != nil {
		t.Fatal(err)
	}
	answer := k.get(t, c.Options, "alice")
	v, err := e.s.VerifyChallengePasskey(browser, re.ChallengeID, c.ID, answer)
	if err != nil || v.Method != MethodWebAuthn {
		t.Fatalf("approve: %+v %v", v, err)
	}
	// The same answer again is refused (the ceremony is used up).
	_, err = e.s.VerifyChallengePasskey(browser, re.ChallengeID, c.ID, answer)
	wantCode(t, err, errs.Conflict, "approved")
	if st, _ := e.s.ChallengeStatusOf(cli, re.ChallengeID); st.Status != "approved" {
		t.Fatalf("status %+v", st)
	}
	// The approval opens account A for the CLI's login only, once.
	var again *RequiredError
	if _, err := e.s.Gate(browser, "A", "A", re.ChallengeID); !errors.As(err, &again) {
		t.Fatalf("another login used the approval: %v", err)
	}
	if _, err := e.s.Gate(cli, "B", "B", re.ChallengeID); !errors.As(err, &again) {
		t.Fatalf("account B used A's approval: %v", err)
	}
	if method, err := e.s.Gate(cli, "A", "A", re.ChallengeID); err != nil || method != MethodWebAuthn {
		t.Fatalf("Gate = %q %v", method, err)
	}
	if _, err := e.s.Gate(cli, "A", "A", re.ChallengeID); !errors.As(err, &again) {
		t.Fatalf("the approval was used twice: %v", err)
	}
	if st, _ := e.s.ChallengeStatusOf(cli, re.ChallengeID); st.Status != "used" {
		t.Fatalf("status %+v", st)
	}
	// A recovery code still answers a passkey challenge.
	re = e.challenge(t, cli, "A")
	if v, err := e.s.VerifyChallenge(cli, re.ChallengeID, rec[0]); err != nil || v.Method != MethodRecovery {
		t.Fatalf("recovery: %+v %v", v, err)
	}
	// After 5 minutes a challenge cannot be approved.
	re = e.challenge(t, cli, "A")
	c, _ = e.s.BeginChallengePasskey(browser, re.ChallengeID)
	e.clock.Advance(6 * 60e9)
	_, err = e.s.VerifyChallengePasskey(browser, re.ChallengeID, c.ID, k.get(t, c.Options, "alice"))
	wantCode(t, err, errs.Conflict, "expired")
	// Bob, with no passkey, under an org that enforces them, is told how to add one.
	_, err = e.s.Gate(as("bob", "b"), "A", "A", "")
	wantCode(t, err, errs.Forbidden, "https://airlock.example.com/mfa")
}

func TestPasskeyRemoval(t *testing.T) {
	e := newPasskeyEnv(t)
	ctx := as("alice", "f1")
	k := newSoftKey(t, "https://airlock.example.com", "airlock.example.com")
	r := e.registerPasskey(t, ctx, k, "laptop")
	m := "webauthn"
	if _, err := e.s.UpdateOrg(ctx, &m, nil); err != nil {
		t.Fatal(err)
	}
	err := e.s.RemovePasskey(ctx, r.Passkey.ID, r.RecoveryCodes[0], "", nil)
	wantCode(t, err, errs.Conflict, "last one")
	m = "none"
	if _, err := e.s.UpdateOrg(ctx, &m, nil); err != nil {
		t.Fatal(err)
	}
	err = e.s.RemovePasskey(ctx, r.Passkey.ID, "", "", nil)
	wantCode(t, err, errs.Invalid, "second factor")
	err = e.s.RemovePasskey(ctx, r.Passkey.ID, "aaaaa-aaaaa", "", nil)
	wantCode(t, err, errs.Invalid, "does not match")
	err = e.s.RemovePasskey(as("bob", "b"), r.Passkey.ID, r.RecoveryCodes[0], "", nil)
	wantCode(t, err, errs.NotFound, "no such passkey")
	// Proved with the passkey itself.
	c, err := e.s.BeginPasskeyAssertion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.s.RemovePasskey(ctx, r.Passkey.ID, "", c.ID, k.get(t, c.Options, "alice")); err != nil {
		t.Fatal(err)
	}
	st, _ := e.s.Status(ctx)
	if len(st.Methods) != 0 || st.RecoveryCodesLeft != 0 {
		t.Fatalf("after removing the last passkey: %+v", st)
	}
	if e.audit(t, "mfa.disable", "success") != 1 {
		t.Fatal("the removal is not audited")
	}
	// An admin's reset removes passkeys too; disabling webauthn removes all.
	e.registerPasskey(t, ctx, newSoftKey(t, "https://airlock.example.com", "airlock.example.com"), "a")
	if err := e.s.Reset(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if l, _ := e.s.ListPasskeys(ctx); len(l) != 0 {
		t.Fatalf("after a reset: %v", l)
	}
	rec := e.registerPasskey(t, ctx, newSoftKey(t, "https://airlock.example.com", "airlock.example.com"), "b").RecoveryCodes
	e.registerPasskey(t, ctx, newSoftKey(t, "https://airlock.example.com", "airlock.example.com"), "c")
	if err := e.s.Disable(ctx, MethodWebAuthn, rec[0]); err != nil {
		t.Fatal(err)
	}
	if l, _ := e.s.ListPasskeys(ctx); len(l) != 0 {
		t.Fatalf("after disabling webauthn: %v", l)
	}
	if st, _ := e.s.Status(ctx); len(st.Methods) != 0 {
		t.Fatalf("after disabling webauthn: %+v", st)
	}
}

// TestPasskeyLogin: a login's own challenge approved with a passkey (the
// web sign-in) is used up by the login repeated with its id and no code;
// an access challenge cannot be approved through the login's endpoints.
func TestPasskeyLogin(t *testing.T) {
	e := newPasskeyEnv(t)
	alice := as("alice", "f1")
	k := newSoftKey(t, "https://airlock.example.com", "airlock.example.com")
	e.registerPasskey(t, alice, k, "laptop")
	if _, err := e.s.UpdateOrg(alice, nil, ptr(true)); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, err := e.s.LoginGate(ctx, "org", "alice", "alice@example.com", "", "", true)
	var re *RequiredError
	if !errors.As(err, &re) || re.Method != MethodWebAuthn || re.ApprovalURL == "" {
		t.Fatalf("login: %v", err)
	}
	// Not approved yet: the login with no code is refused, the challenge stays.
	_, err = e.s.LoginGate(ctx, "org", "alice", "alice@example.com", re.ChallengeID, "", true)
	wantCode(t, err, errs.Invalid, "approve with your passkey first")
	c, err := e.s.BeginLoginPasskey(ctx, re.ChallengeID)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.s.VerifyLoginPasskey(ctx, re.ChallengeID, c.ID, k.get(t, c.Options, "alice")); err != nil {
		t.Fatal(err)
	}
	if m, err := e.s.LoginGate(ctx, "org", "alice", "alice@example.com", re.ChallengeID, "", true); err != nil || m != MethodWebAuthn {
		t.Fatalf("the approved login: %q %v", m, err)
	}
	if _, err := e.s.LoginGate(ctx, "org", "alice", "alice@example.com", re.ChallengeID, "", true); err == nil {
		t.Fatal("a login challenge was used twice")
	}
	// An access challenge is not a login's.
	acc := e.challenge(t, alice, "A")
	_, err = e.s.BeginLoginPasskey(ctx, acc.ChallengeID)
	wantCode(t, err, errs.NotFound, "sign in again")
}
