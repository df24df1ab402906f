package relay

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"net"
	"time"

	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/sessionlog"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// EventSink stores session events (the server's session log store).
type EventSink interface {
	Ingest(ctx context.Context, batch []sessionlog.Event) (int, error)
}

// SetEventSink wires the session log store in.
func (s *Service) SetEventSink(sink EventSink) { s.events = sink }

// acceptGatewayStreams serves the streams a gateway opens: event uploads
// and certificate renewals.
func (s *Service) acceptGatewayStreams(gc *gatewayConn) {
	for {
		st, err := gc.mux.AcceptStream()
		if err != nil {
			return
		}
		go s.serveGatewayStream(gc, st)
	}
}

func (s *Service) serveGatewayStream(gc *gatewayConn, st net.Conn) {
	defer st.Close()
	st.SetReadDeadline(time.Now().Add(60 * time.Second))
	var h tunnel.Header
	if err := tunnel.ReadFrame(st, &h); err != nil {
		return
	}
	if h.Type == tunnel.TypeRenew {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		res := tunnel.Result{OK: true}
		cert, err := s.RenewGateway(ctx, gc.id, h.CSR)
		if err != nil {
			slog.Warn("renewing a gateway's certificate failed", "gateway", gc.id, "err", err)
			res = tunnel.Result{Code: tunnel.CodeInternal, Message: "the server could not renew the certificate; retry"}
			if errs.Is(err, errs.Invalid) {
				res = tunnel.Result{Code: tunnel.CodeInvalid, Message: "the certificate request was refused: " + errMessage(err)}
			}
		} else {
			res.Certificate = cert
		}
		st.SetWriteDeadline(time.Now().Add(10 * time.Second))
		tunnel.WriteFrame(st, res)
		return
	}
	if h.Type != tunnel.TypeEvents || s.events == nil {
		tunnel.WriteFrame(st, tunnel.Result{Code: tunnel.CodeInvalid, Message: "unexpected stream " + h.Type})
		return
	}
	var batch []sessionlog.Event
	if err := tunnel.ReadFrame(st, &batch); err != nil {
		slog.Warn("reading a session event batch failed", "gateway", gc.id, "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res := tunnel.Result{OK: true}
	own, err := s.ownEvents(ctx, gc.id, batch)
	if err == nil && len(own) > 0 {
		_, err = s.events.Ingest(ctx, own)
		var rejected *sessionlog.RejectedError
		if errors.As(err, &rejected) {
			// The rest of the batch is stored; these can never be.
			for _, r := range rejected.Rejected {
				slog.Warn("dropping a session event the store cannot take", "gateway", gc.id, "event", r.ID, "session", r.SessionID, "reason", r.Reason)
			}
			err = nil
		}
	}
	if err != nil {
		slog.Warn("storing session events failed; the gateway keeps them and retries", "gateway", gc.id, "events", len(batch), "err", err)
		res = tunnel.Result{Code: tunnel.CodeInternal, Message: "the server could not store the events; retry"}
	}
	st.SetWriteDeadline(time.Now().Add(10 * time.Second))
	tunnel.WriteFrame(st, res)
}

// ownEvents keeps the events of sessions served by this gateway. A gateway
// may only report its own sessions; others are dropped (and logged), not
// refused, so that one bad event cannot hold back the gateway's spool.
func (s *Service) ownEvents(ctx context.Context, gatewayID string, batch []sessionlog.Event) ([]sessionlog.Event, error) {
	owner := map[string]bool{}
	out := batch[:0:0]
	for _, ev := range batch {
		mine, seen := owner[ev.SessionID]
		if !seen {
			var gw string
			err := s.db.QueryRowContext(ctx, `SELECT gateway_id FROM sessions WHERE id = $1`, ev.SessionID).Scan(&gw)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return nil, err
			}
			mine = gw == gatewayID
			owner[ev.SessionID] = mine
			if !mine {
				slog.Warn("dropping session events of a session this gateway does not serve", "gateway", gatewayID, "session", ev.SessionID)
			}
		}
		if mine {
			out = append(out, ev)
		}
	}
	return out, nil
}

// errMessage is the message of the outermost coded error in err.
func errMessage(err error) string {
	var e *errs.Error
	if errors.As(err, &e) {
		return e.Msg
	}
	return "unknown error"
}
