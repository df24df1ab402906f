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

// Waiting for the connection to the server before an upload.
const (
	// uploadConnectWait is how long Upload waits for the connection to
	// the server to come back before it gives up (and the spool retries
	// after its backoff, logging a warning).
	uploadConnectWait = time.Minute
	// uploadConnectPoll is how often it looks while it waits.
	uploadConnectPoll = 20 * time.Millisecond
)

// Upload sends one batch of session events to the server over the gateway's
// connection and waits for the server to store them. Any failure leaves the
// batch in the spool, which retries it.
//
// While the gateway is not connected, Upload waits for the connection (up
// to uploadConnectWait) rather than fail at once: the spool backs off
// after each failed upload (up to 10 s), so failing at once made the
// events of an outage, such as the disconnects it caused, reach the server
// up to 10 s after the gateway was back. Waiting sends them as soon as it
// is.
func (a *Agent) Upload(ctx context.Context, batch sessionlog.Batch) error {
	mux, err := a.waitConnected(ctx, uploadConnectWait)
	if err != nil {
		return err
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

// waitConnected returns the connection to the server, waiting up to wait
// for one; errNotConnected if none came, ctx's error if it ended first.
func (a *Agent) waitConnected(ctx context.Context, wait time.Duration) (*tunnel.Mux, error) {
	var deadline <-chan time.Time
	var tick *time.Ticker
	for {
		a.mu.Lock()
		mux := a.mux
		a.mu.Unlock()
		if mux != nil && !mux.IsClosed() {
			return mux, nil
		}
		if tick == nil {
			tick = time.NewTicker(uploadConnectPoll)
			defer tick.Stop()
			t := time.NewTimer(wait)
			defer t.Stop()
			deadline = t.C
		}
		select {
		case <-tick.C:
		case <-deadline:
			return nil, errNotConnected
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
