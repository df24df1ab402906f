package gateway

import (
	"context"
	"errors"
	"time"

	"github.com/airlockpam/airlock/internal/sessionlog"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// errNotConnected makes the spool retry until the connection is back.
var errNotConnected = errors.New("not connected to the server")

// Upload sends one batch of session events to the server over the gateway's
// connection and waits for the server to store them. Any failure leaves the
// batch in the spool, which retries it.
func (a *Agent) Upload(ctx context.Context, batch sessionlog.Batch) error {
	a.mu.Lock()
	mux := a.mux
	a.mu.Unlock()
	if mux == nil || mux.IsClosed() {
		return errNotConnected
	}
	st, err := mux.OpenStream()
	if err != nil {
		return err
	}
	defer st.Close()
	deadline := time.Now().Add(60 * time.Second)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	st.SetDeadline(deadline)
	if err := tunnel.WriteFrame(st, tunnel.Header{Type: tunnel.TypeEvents}); err != nil {
		return err
	}
	if err := tunnel.WriteRawFrame(st, batch.JSON()); err != nil {
		return err
	}
	var res tunnel.Result
	if err := tunnel.ReadFrame(st, &res); err != nil {
		return err
	}
	if !res.OK {
		return errors.New("the server did not store the events: " + res.Message)
	}
	return nil
}
