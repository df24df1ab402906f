package pam

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/store"
)

// Limits of an account's fields.
const (
	// MaxMetadataPairs bounds the metadata of an account.
	MaxMetadataPairs = 32
	// MaxMetadataValue bounds a metadata value, in characters.
	MaxMetadataValue = 256
	// MaxPasswordBytes bounds a stored password.
	MaxPasswordBytes = 1024
	// MaxUsernameBytes bounds a database username.
	MaxUsernameBytes = 128
)

var metadataKeyRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,63}$`)

// Account is a database user of a resource whose password Airlock keeps. It
// never carries the password.
type Account struct {
	ID           string            `json:"id"`
	Name         string            `json:"name" doc:"a slug, unique on the resource"`
	ResourceID   string            `json:"resourceId"`
	ResourceName string            `json:"resourceName"`
	Username     string            `json:"username" doc:"the database user"`
	Description  string            `json:"description"`
	Metadata     map[string]string `json:"metadata" doc:"labels to filter accounts by"`
	RequireMFA   bool              `json:"requireMfa" doc:"access needs a second factor"`
	Rotation     AccountRotation   `json:"rotation" doc:"scheduled password rotation"`
	CreatedAt    time.Time         `json:"createdAt"`
	UpdatedAt    time.Time         `json:"updatedAt"`
}

// AccountRotation is an account's scheduled password rotation, as shown.
type AccountRotation struct {
	Enabled  bool   `json:"enabled"`
	Interval string `json:"interval,omitempty" doc:"1d, 3d, 7d or 30d"`
	// Status is off, scheduled (never rotated yet), ok, rotating, waiting
	// (the resource's gateway is offline; tried again every few seconds)
	// or failed.
	Status        string     `json:"status"`
	LastRotatedAt *time.Time `json:"lastRotatedAt,omitempty"`
	NextDueAt     *time.Time `json:"nextDueAt,omitempty"`
	LastError     string     `json:"lastError,omitempty" doc:"why the last attempt failed or waits; it is retried"`
}

// Rotation statuses (AccountRotation.Status).
const (
	RotationOff       = "off"
	RotationScheduled = "scheduled"
	RotationOK        = "ok"
	RotationRunning   = "rotating"
	RotationFailed    = "failed"
	RotationWaiting   = "waiting"
)

// WaitRetry is how often a rotation waiting for its gateway is tried again.
const WaitRetry = 10 * time.Second

// RotationIntervals are the intervals an account may rotate at, by name.
var RotationIntervals = map[string]int{"1d": 1, "3d": 3, "7d": 7, "30d": 30}

// accountRow is a stored account with its sealed password.
type accountRow struct {
	Account
	projectID      string
	passwordSealed []byte
	storedSealed   []byte // password_enc as read: an update writes only over it
	rotationDays   int
	rotationStatus string // as stored: '', ok, rotating, failed, waiting
	rotationError  string
	lastRotated    int64
	pendingSealed  []byte // the new password of an attempt in progress
	pendingAttempt string
}

// showRotation fills a.Rotation from the stored fields and the job's next
// run (zero when unknown).
func (a *accountRow) showRotation(next time.Time) {
	r := AccountRotation{Status: RotationOff}
	if a.rotationDays > 0 {
		r.Enabled = true
		r.Interval = strconv.Itoa(a.rotationDays) + "d"
		r.Status = a.rotationStatus
		if r.Status == "" {
			r.Status = RotationScheduled
		}
		if !next.IsZero() {
			r.NextDueAt = &next
		}
	} else if a.rotationStatus == RotationWaiting || a.rotationStatus == RotationRunning {
		r.Status = a.rotationStatus // a one-off rotation (Rotate now) in progress
	}
	if a.lastRotated > 0 {
		t := store.Time(a.lastRotated)
		r.LastRotatedAt = &t
	}
	if a.rotationStatus == RotationFailed || a.rotationStatus == RotationWaiting {
		r.LastError = a.rotationError
	}
	a.Rotation = r
}

// AccountInput creates an account.
type AccountInput struct {
	Resource    string            `json:"resource" maxLength:"64" doc:"the resource's name or id"`
	Name        string            `json:"name" maxLength:"63" doc:"a slug, unique on the resource"`
	Username    string            `json:"username" maxLength:"128" doc:"the database user"`
	Password    string            `json:"password" maxLength:"1024" doc:"write-only: checked by logging in through the gateway, then sealed"`
	Description string            `json:"description,omitempty" maxLength:"1000"`
	Metadata    map[string]string `json:"metadata,omitempty" doc:"up to 32 labels: keys of 1-63 letters, digits, _ . -; values up to 256 characters"`
	RequireMFA  bool              `json:"requireMfa,omitempty"`
	// RotationInterval turns on scheduled password rotation (the resource
	// needs a rotation account).
	RotationInterval string `json:"rotationInterval,omitempty" enum:"1d,3d,7d,30d" doc:"rotate the password every 1, 3, 7 or 30 days, as the resource's rotation account"`
}

// AccountUpdate changes an account; nil fields stay as they are. Metadata,
// when present, replaces the whole map ({} removes every label: omitzero,
// not omitempty, so that a client sends an empty map). A new
// username or password is checked through the gateway before it is saved.
type AccountUpdate struct {
	Username    *string           `json:"username,omitempty" maxLength:"128"`
	Password    *string           `json:"password,omitempty" maxLength:"1024" doc:"write-only"`
	Description *string           `json:"description,omitempty" maxLength:"1000"`
	Metadata    map[string]string `json:"metadata,omitzero" doc:"replaces the whole map; {} removes every label"`
	RequireMFA  *bool             `json:"requireMfa,omitempty"`
	// RotationInterval changes the rotation interval; "off" stops rotating.
	RotationInterval *string `json:"rotationInterval,omitempty" enum:"1d,3d,7d,30d,off" doc:"1d, 3d, 7d or 30d; off stops rotating"`
}

// MetadataFilter selects accounts whose metadata holds Key with Value.
type MetadataFilter struct {
	Key, Value string
}

// AccountFilter selects accounts of a project. Every filter must match.
type AccountFilter struct {
	// Resource is a resource name or id; empty for all resources.
	Resource string
	Metadata []MetadataFilter
}

// ParseMetadataFilters parses "key=value" filters, as given in the metadata
// query parameter.
func ParseMetadataFilters(op string, raw []string) ([]MetadataFilter, error) {
	const field = "query.metadata"
	if len(raw) > MaxMetadataPairs {
		return nil, errs.InvalidField(op, field, fmt.Sprintf("give at most %d metadata filters", MaxMetadataPairs))
	}
	out := make([]MetadataFilter, 0, len(raw))
	for i, s := range raw {
		k, v, ok := strings.Cut(s, "=")
		if !ok {
			return nil, errs.InvalidField(op, field, fmt.Sprintf("metadata filter %d must look like key=value", i+1))
		}
		if !metadataKeyRE.MatchString(k) {
			return nil, errs.InvalidField(op, field, fmt.Sprintf("metadata filter %d has an invalid key: use 1-63 letters, digits, _ . or -", i+1))
		}
		if utf8.RuneCountInString(v) > MaxMetadataValue {
			return nil, errs.InvalidField(op, field, fmt.Sprintf("the value of metadata filter %d is longer than %d characters", i+1, MaxMetadataValue))
		}
		out = append(out, MetadataFilter{Key: k, Value: v})
	}
	return out, nil
}

// checkMetadata validates an account's labels.
func checkMetadata(op string, m map[string]string) error {
	const field = "body.metadata"
	if len(m) > MaxMetadataPairs {
		return errs.InvalidField(op, field, fmt.Sprintf("an account has at most %d metadata pairs, not %d", MaxMetadataPairs, len(m)))
	}
	for _, k := range sortedKeys(m) {
		if !metadataKeyRE.MatchString(k) {
			return errs.InvalidField(op, field, "a metadata key is invalid: use 1-63 letters, digits, _ . or -")
		}
		v := m[k]
		if utf8.RuneCountInString(v) > MaxMetadataValue || !utf8.ValidString(v) || hasControl(v) {
			return errs.InvalidField(op, field, fmt.Sprintf("a metadata value must be at most %d characters without control characters", MaxMetadataValue))
		}
	}
	return nil
}

func checkUsername(op, field, username string) error {
	if username == "" || len(username) > MaxUsernameBytes || hasControl(username) || strings.TrimSpace(username) != username {
		return errs.InvalidField(op, field,
			fmt.Sprintf("the username must be 1-%d bytes without control characters or leading or trailing spaces", MaxUsernameBytes))
	}
	return nil
}

// checkPassword never quotes the password.
func checkPassword(op, field, password string) error {
	if password == "" || len(password) > MaxPasswordBytes || strings.ContainsRune(password, 0) {
		return errs.InvalidField(op, field, fmt.Sprintf("the password must be 1-%d bytes without NUL characters", MaxPasswordBytes))
	}
	return nil
}

func checkDescription(op, d string) error {
	if len(d) > 1000 || !utf8.ValidString(d) {
		return errs.InvalidField(op, "body.description", "the description must be at most 1000 bytes of text")
	}
	return nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func passwordAAD(accountID string) string { return "account:" + accountID + ":password" }

func rotationAAD(resourceID string) string { return "resource:" + resourceID + ":rotation-password" }

// pendingAAD binds the new password of a rotation attempt to its account
// and attempt.
func pendingAAD(accountID, attempt string) string {
	return "account:" + accountID + ":pending-password:" + attempt
}
