// Package relay is the server side of the gateway connection and of the
// CLI's tunnel.
//
// gateways.go registers gateways, enrolls them (a one-time token and the
// gateway's own CSR) and renews their certificates; gateway_projects.go
// keeps which projects an organization admin allows to use each gateway;
// registry.go keeps the live, multiplexed connection of each gateway (mutual
// TLS inside an HTTP upgrade, heartbeats) and sends it validation, data and
// termination streams; events.go serves the streams a gateway opens (event
// uploads, certificate renewals); sessions.go joins each stream a
// CLI opens to a new stream to the session's gateway, copying bytes it
// cannot read (the CLI and the gateway speak mTLS end to end inside).
package relay

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"database/sql"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/audit"
	"github.com/airlockpam/airlock/internal/auth"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/pki"
	"github.com/airlockpam/airlock/internal/store"
)

// EnrollmentTTL is how long an enrollment token stays valid.
const EnrollmentTTL = 24 * time.Hour

// GatewayCertTTL is the default lifetime of a gateway certificate
// (Config.GatewayCertTTL).
const GatewayCertTTL = 365 * 24 * time.Hour

// OnlineWindow: a gateway whose last heartbeat is older is offline.
const OnlineWindow = 30 * time.Second

// Gateway is a registered gateway.
type Gateway struct {
	ID              string     `json:"id"`
	Name            string     `json:"name"`
	Online          bool       `json:"online"`
	Enrolled        bool       `json:"enrolled"`
	LastHeartbeatAt *time.Time `json:"lastHeartbeatAt,omitempty"`
	RemoteAddr      string     `json:"remoteAddr,omitempty"`
	Version         string     `json:"version,omitempty"`
	CreatedAt       time.Time  `json:"createdAt"`
}

// NewGateway is returned at creation with the enrollment token.
type NewGateway struct {
	Gateway
	EnrollmentToken     string    `json:"enrollmentToken" doc:"one-time token for airlock gateway --token; shown only now"`
	EnrollmentExpiresAt time.Time `json:"enrollmentExpiresAt"`
}

// Enrollment is what an enrolling gateway receives.
type Enrollment struct {
	GatewayID     string `json:"gatewayId"`
	Name          string `json:"name"`
	OrgID         string `json:"orgId"`
	Certificate   string `json:"certificate" doc:"PEM certificate for the gateway's key"`
	CACertificate string `json:"caCertificate" doc:"PEM certificate of the organization's CA"`
}

// GatewayInput is the body of POST /api/v1/gateways.
type GatewayInput struct {
	Name string `json:"name" maxLength:"63"`
}

// EnrollmentRequest is the body of POST /api/v1/gateways/enroll.
type EnrollmentRequest struct {
	Token string `json:"token" maxLength:"200"`
	CSR   string `json:"csr" maxLength:"8192" doc:"PEM certificate request for the gateway's own key"`
}

func hashToken(t string) []byte { h := sha256.Sum256([]byte(t)); return h[:] }

func newEnrollmentToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return "alkg_" + base64.RawURLEncoding.EncodeToString(b)
}

// gatewayFromRow builds a Gateway; it is online when connected to a server
// and heard from within OnlineWindow (a crashed server cannot clear the flag).
func (s *Service) gatewayFromRow(id, name string, enrolled, heartbeat int64, online bool, addr, version string, created int64) Gateway {
	g := Gateway{ID: id, Name: name, Enrolled: enrolled != 0, RemoteAddr: addr, Version: version, CreatedAt: store.Time(created)}
	if heartbeat != 0 {
		t := store.Time(heartbeat)
		g.LastHeartbeatAt = &t
		g.Online = online && s.now().Sub(t) < OnlineWindow
	}
	return g
}

// CreateGateway registers a gateway and returns its enrollment token.
func (s *Service) CreateGateway(ctx context.Context, name string) (*NewGateway, error) {
	const op = "relay.(*Service).CreateGateway"
	p, err := api.MustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	if !p.OrgAdmin {
		return nil, errs.E(op, errs.Forbidden, "only organization admins may register gateways")
	}
	if !auth.ValidSlug(name) {
		return nil, errs.InvalidField(op, "body.name", "invalid gateway name: "+auth.SlugRule)
	}
	return s.createGateway(ctx, p.OrgID, name, audit.By(ctx, audit.Entry{}))
}

func (s *Service) createGateway(ctx context.Context, orgID, name string, actor audit.Entry) (*NewGateway, error) {
	const op = "relay.(*Service).createGateway"
	now := s.now()
	token := newEnrollmentToken()
	g := &NewGateway{Gateway: Gateway{ID: uuid.Must(uuid.NewV7()).String(), Name: name, CreatedAt: store.Time(store.Micros(now))},
		EnrollmentToken: token, EnrollmentExpiresAt: store.Time(store.Micros(now.Add(EnrollmentTTL)))}
	err := s.db.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO gateways (id, org_id, name, enrollment_token_hash, enrollment_expires_at, created_at)
			VALUES ($1, $2, $3, $4, $5, $6)`, g.ID, orgID, name, hashToken(token), store.Micros(now.Add(EnrollmentTTL)), store.Micros(now)); err != nil {
			return err
		}
		ev := actor
		ev.OrgID, ev.Action, ev.TargetKind, ev.TargetID, ev.Details = orgID, "gateway.create", "gateway", g.ID, map[string]any{"name": name}
		return audit.Record(ctx, tx, ev)
	})
	if store.IsUniqueViolation(err) {
		return nil, &errs.Error{Op: op, Code: errs.Conflict, Field: "body.name", Msg: "a gateway named " + name + " already exists"}
	}
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "registering the gateway failed", err)
	}
	return g, nil
}

// NewEnrollmentToken replaces a gateway's enrollment token (to re-enroll it,
// for example on a new machine). Its current certificate stays valid until
// the new enrollment replaces it.
func (s *Service) NewEnrollmentToken(ctx context.Context, id string) (*NewGateway, error) {
	const op = "relay.(*Service).NewEnrollmentToken"
	p, err := api.MustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	if !p.OrgAdmin {
		return nil, errs.E(op, errs.Forbidden, "only organization admins may enroll gateways")
	}
	g, err := s.gateway(ctx, p.OrgID, id)
	if err != nil {
		return nil, err
	}
	return s.issueToken(ctx, g, audit.By(ctx, audit.Entry{}))
}

func (s *Service) issueToken(ctx context.Context, g *Gateway, actor audit.Entry) (*NewGateway, error) {
	now := s.now()
	token := newEnrollmentToken()
	err := s.db.InTx(ctx, func(tx *sql.Tx) error {
		var orgID string
		if err := tx.QueryRowContext(ctx, `UPDATE gateways SET enrollment_token_hash = $1, enrollment_expires_at = $2 WHERE id = $3 RETURNING org_id`,
			hashToken(token), store.Micros(now.Add(EnrollmentTTL)), g.ID).Scan(&orgID); err != nil {
			return err
		}
		ev := actor
		ev.OrgID, ev.Action, ev.TargetKind, ev.TargetID = orgID, "gateway.enrollment_token", "gateway", g.ID
		return audit.Record(ctx, tx, ev)
	})
	if err != nil {
		return nil, errs.Wrap("relay.issueToken", errs.Unavailable, "creating the token failed", err)
	}
	return &NewGateway{Gateway: *g, EnrollmentToken: token, EnrollmentExpiresAt: store.Time(store.Micros(now.Add(EnrollmentTTL)))}, nil
}

// Enroll exchanges a one-time token and a CSR for the gateway's certificate.
func (s *Service) Enroll(ctx context.Context, token string, csrPEM string) (*Enrollment, error) {
	const op = "relay.(*Service).Enroll"
	csr, err := pki.ParseCSR([]byte(csrPEM))
	if err != nil {
		return nil, errs.InvalidField(op, "body.csr", err.Error())
	}
	refused := errs.E(op, errs.Unauthenticated, "the enrollment token is not valid (already used, replaced, expired or mistyped): "+
		"ask an admin for a new one with `airlock gateways enrollment-token GATEWAY`")
	var orgID string
	err = s.db.QueryRowContext(ctx, `SELECT org_id FROM gateways WHERE enrollment_token_hash = $1`, hashToken(token)).Scan(&orgID)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, refused
	}
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "enrolling the gateway failed", err)
	}
	// Load (or create) the CA before the transaction: on SQLite a second
	// writer inside it would wait for the transaction's own lock.
	ca, err := s.pki.ForOrg(ctx, orgID)
	if err != nil {
		return nil, err
	}
	var out *Enrollment
	err = s.db.InTx(ctx, func(tx *sql.Tx) error {
		out = nil
		// Claim the token: one statement, so it is spent exactly once.
		var id, name string
		err := tx.QueryRowContext(ctx, `UPDATE gateways SET enrollment_token_hash = NULL, enrollment_expires_at = 0
			WHERE enrollment_token_hash = $1 AND enrollment_expires_at > $2 RETURNING id, name`,
			hashToken(token), store.Micros(s.now())).Scan(&id, &name)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		certPEM, serial, err := ca.SignGateway(csr, id, s.now().Add(s.certTTL))
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE gateways SET enrolled_at = $1, cert_serial = $2, cert_not_after = $3 WHERE id = $4`,
			store.Micros(s.now()), serial, store.Micros(s.now().Add(s.certTTL)), id); err != nil {
			return err
		}
		out = &Enrollment{GatewayID: id, Name: name, OrgID: orgID, Certificate: string(certPEM), CACertificate: string(ca.CertPEM())}
		return audit.Record(ctx, tx, audit.Entry{OrgID: orgID, ActorKind: "gateway", ActorID: id, ActorName: name,
			ClientAddr: api.ClientAddr(ctx), Action: "gateway.enroll", Outcome: audit.Success, TargetKind: "gateway", TargetID: id,
			Details: map[string]any{"certSerial": serial}})
	})
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "enrolling the gateway failed", err)
	}
	if out == nil {
		return nil, refused
	}
	return out, nil
}

// RenewGateway issues a new certificate for a connected gateway from its CSR
// (a renew stream), signed by the organization's CA with the lifetime of an
// enrollment (Config.GatewayCertTTL, capped by the CA's own end). From then on the
// new certificate is the only one the relay accepts from the gateway: its
// serial and end are recorded and the renewal is audited (gateway.renew).
// The connection the request came on stays up.
func (s *Service) RenewGateway(ctx context.Context, gatewayID, csrPEM string) (string, error) {
	const op = "relay.(*Service).RenewGateway"
	if gatewayID == "" {
		return "", errs.E(op, errs.Invalid, "no gateway")
	}
	csr, err := pki.ParseCSR([]byte(csrPEM))
	if err != nil {
		return "", errs.E(op, errs.Invalid, err.Error())
	}
	var orgID, name, oldSerial string
	err = s.db.QueryRowContext(ctx, `SELECT org_id, name, cert_serial FROM gateways WHERE id = $1`, gatewayID).Scan(&orgID, &name, &oldSerial)
	if errors.Is(err, sql.ErrNoRows) {
		return "", errs.E(op, errs.NotFound, "the gateway is no longer registered")
	}
	if err != nil {
		return "", errs.Wrap(op, errs.Unavailable, "reading the gateway failed", err)
	}
	// Load (or create) the CA before the transaction (see Enroll).
	ca, err := s.pki.ForOrg(ctx, orgID)
	if err != nil {
		return "", err
	}
	var certPEM []byte
	err = s.db.InTx(ctx, func(tx *sql.Tx) error {
		now := s.now()
		notAfter := now.Add(s.certTTL)
		var serial string
		var err error
		if certPEM, serial, err = ca.SignGateway(csr, gatewayID, notAfter); err != nil {
			return err
		}
		if block, _ := pem.Decode(certPEM); block != nil {
			if c, err := x509.ParseCertificate(block.Bytes); err == nil {
				notAfter = c.NotAfter // capped by the CA's own end
			}
		}
		res, err := tx.ExecContext(ctx, `UPDATE gateways SET cert_serial = $1, cert_not_after = $2 WHERE id = $3 AND cert_serial = $4`,
			serial, store.Micros(notAfter), gatewayID, oldSerial)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errs.E(op, errs.Conflict, "the gateway's certificate changed meanwhile (re-enrolled or renewed); retry")
		}
		return audit.Record(ctx, tx, audit.Entry{OrgID: orgID, ActorKind: "gateway", ActorID: gatewayID, ActorName: name,
			Action: "gateway.renew", Outcome: audit.Success, TargetKind: "gateway", TargetID: gatewayID,
			Details: map[string]any{"certSerial": serial, "previousCertSerial": oldSerial, "notAfter": notAfter.UTC().Format(time.RFC3339)}})
	})
	if err != nil {
		return "", errs.Wrap(op, errs.Unavailable, "renewing the gateway's certificate failed", err)
	}
	return string(certPEM), nil
}

func (s *Service) gateway(ctx context.Context, orgID, nameOrID string) (*Gateway, error) {
	var id, name, addr, version string
	var enrolled, hb, created int64
	var online bool
	err := s.db.QueryRowContext(ctx, `SELECT id, name, enrolled_at, last_heartbeat_at, online, remote_addr, version, created_at FROM gateways
		WHERE org_id = $1 AND (id = $2 OR name = $2)`, orgID, nameOrID).Scan(&id, &name, &enrolled, &hb, &online, &addr, &version, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errs.E("relay.gateway", errs.NotFound, "no gateway of that name or id: list them with `airlock gateways list`")
	}
	if err != nil {
		return nil, errs.Wrap("relay.gateway", errs.Unavailable, "reading the gateway failed", err)
	}
	g := s.gatewayFromRow(id, name, enrolled, hb, online, addr, version, created)
	return &g, nil
}

// ResolveGateway returns the id and name of a gateway given by name or id.
func (s *Service) ResolveGateway(ctx context.Context, orgID, nameOrID string) (string, string, error) {
	g, err := s.gateway(ctx, orgID, nameOrID)
	if err != nil {
		return "", "", err
	}
	return g.ID, g.Name, nil
}

// ListGateways lists the organization's gateways (organization admins:
// the list names every network the organization reaches and where its
// gateways connect from; a project's members see the name of their
// resources' gateway with each resource).
func (s *Service) ListGateways(ctx context.Context) ([]Gateway, error) {
	const op = "relay.(*Service).ListGateways"
	p, err := s.orgAdmin(ctx, op, "list gateways; the gateway of each of your resources is shown with the resource (`airlock resources list`)")
	if err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id, name, enrolled_at, last_heartbeat_at, online, remote_addr, version, created_at
		FROM gateways WHERE org_id = $1 ORDER BY name`, p.OrgID)
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "listing gateways failed", err)
	}
	defer rows.Close()
	out := []Gateway{}
	for rows.Next() {
		var id, name, addr, version string
		var enrolled, hb, created int64
		var online bool
		if err := rows.Scan(&id, &name, &enrolled, &hb, &online, &addr, &version, &created); err != nil {
			return nil, errs.Wrap(op, errs.Unavailable, "listing gateways failed", err)
		}
		out = append(out, s.gatewayFromRow(id, name, enrolled, hb, online, addr, version, created))
	}
	return out, rows.Err()
}

// DeleteGateway removes a gateway; its live sessions end and its connection
// is closed.
func (s *Service) DeleteGateway(ctx context.Context, nameOrID string) error {
	const op = "relay.(*Service).DeleteGateway"
	p, err := api.MustPrincipal(ctx)
	if err != nil {
		return err
	}
	if !p.OrgAdmin {
		return errs.E(op, errs.Forbidden, "only organization admins may delete gateways")
	}
	g, err := s.gateway(ctx, p.OrgID, nameOrID)
	if err != nil {
		return err
	}
	err = s.db.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM gateways WHERE id = $1`, g.ID); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "gateway.delete", TargetKind: "gateway", TargetID: g.ID,
			Details: map[string]any{"name": g.Name}}))
	})
	if err != nil {
		return errs.Wrap(op, errs.Unavailable, "deleting the gateway failed", err)
	}
	// Its sessions end at once (gateway_lost, "the gateway was deleted"),
	// while the gateway is still connected to cancel what they run.
	if s.sessions != nil {
		s.sessions.EnforceAccess(ctx)
	}
	s.disconnect(g.ID)
	return nil
}

// EnsureGateway returns a gateway named name with a fresh enrollment token,
// creating the gateway when it does not exist. `airlock dev` uses it for its
// built-in gateway when that has no identity on disk yet.
func (s *Service) EnsureGateway(ctx context.Context, orgID, name string) (*NewGateway, error) {
	actor := audit.Entry{ActorKind: "system", ActorID: "dev", ActorName: "airlock dev", Outcome: audit.Success}
	g, err := s.gateway(ctx, orgID, name)
	if err == nil {
		return s.issueToken(ctx, g, actor)
	}
	if !errs.Is(err, errs.NotFound) {
		return nil, err
	}
	return s.createGateway(ctx, orgID, name, actor)
}

func (s *Service) registerGatewayAPI(a huma.API) {
	tags := []string{"Gateways"}
	huma.Register(a, huma.Operation{
		OperationID: "create-gateway", Method: http.MethodPost, Path: "/api/v1/gateways", Tags: tags,
		Summary: "Register a gateway and get its one-time enrollment token (organization admins)", Security: api.Secured,
		DefaultStatus: http.StatusCreated, Errors: []int{403, 409, 422},
	}, func(ctx context.Context, in *struct{ Body GatewayInput }) (*struct{ Body *NewGateway }, error) {
		g, err := s.CreateGateway(ctx, in.Body.Name)
		return &struct{ Body *NewGateway }{g}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "list-gateways", Method: http.MethodGet, Path: "/api/v1/gateways", Tags: tags,
		Summary: "List gateways with their online status (organization admins)", Security: api.Secured, Errors: []int{403},
	}, func(ctx context.Context, _ *struct{}) (*struct{ Body []Gateway }, error) {
		gs, err := s.ListGateways(ctx)
		return &struct{ Body []Gateway }{gs}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "delete-gateway", Method: http.MethodDelete, Path: "/api/v1/gateways/{gateway}", Tags: tags,
		Summary: "Delete a gateway (organization admins)", Security: api.Secured, DefaultStatus: http.StatusNoContent, Errors: []int{403, 404},
	}, func(ctx context.Context, in *struct {
		Gateway string `path:"gateway" maxLength:"64"`
	}) (*struct{}, error) {
		return nil, api.Err(ctx, s.DeleteGateway(ctx, in.Gateway))
	})
	huma.Register(a, huma.Operation{
		OperationID: "new-gateway-enrollment-token", Method: http.MethodPost, Path: "/api/v1/gateways/{gateway}/enrollment-token", Tags: tags,
		Summary: "Issue a new enrollment token for a gateway (organization admins)", Security: api.Secured, Errors: []int{403, 404},
	}, func(ctx context.Context, in *struct {
		Gateway string `path:"gateway" maxLength:"64"`
	}) (*struct{ Body *NewGateway }, error) {
		g, err := s.NewEnrollmentToken(ctx, in.Gateway)
		return &struct{ Body *NewGateway }{g}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "enroll-gateway", Method: http.MethodPost, Path: "/api/v1/gateways/enroll", Tags: tags,
		Summary: "Enroll a gateway: exchange its one-time token and CSR for a certificate", Errors: []int{401, 422},
	}, func(ctx context.Context, in *struct{ Body EnrollmentRequest }) (*struct{ Body *Enrollment }, error) {
		e, err := s.Enroll(ctx, in.Body.Token, in.Body.CSR)
		return &struct{ Body *Enrollment }{e}, api.Err(ctx, err)
	})
}
