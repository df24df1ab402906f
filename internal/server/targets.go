package server

import (
	"context"

	"github.com/airlockpam/airlock/internal/session"
)

// targets resolves a session's resource account through the PAM service.
func (s *Server) targets(ctx context.Context, projectID, resource, account string) (*session.Target, error) {
	r, a, t, err := s.PAM.TargetFor(ctx, projectID, resource, account)
	if err != nil {
		return nil, err
	}
	return &session.Target{ResourceID: r.ID, ResourceName: r.Name, Kind: r.Kind, GatewayID: r.GatewayID,
		AccountID: a.ID, AccountName: a.Name, Username: a.Username, Database: r.Database, Wire: t, RequireMFA: a.RequireMFA}, nil
}

// currentTarget resolves a session's account as it is now, for a new
// connection of the session: the session service has checked the owner.
func (s *Server) currentTarget(ctx context.Context, projectID, resourceID, accountID string) (*session.Target, error) {
	r, a, t, err := s.PAM.SessionTarget(ctx, projectID, resourceID, accountID)
	if err != nil {
		return nil, err
	}
	return &session.Target{ResourceID: r.ID, ResourceName: r.Name, Kind: r.Kind, GatewayID: r.GatewayID,
		AccountID: a.ID, AccountName: a.Name, Username: a.Username, Database: r.Database, Wire: t}, nil
}
