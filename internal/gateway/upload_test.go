package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/sessionlog"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// storingRelay answers event uploads on the relay's end of a mux as the
// server does when it stores them, and returns the gateway's end.
func storingRelay(t *testing.T) *tunnel.Mux {
	t.Helper()
	gwEnd, relayEnd := tcpPair(t)
	gwMux, _ := tunnel.MuxServer(gwEnd)
	relayMux, _ := tunnel.MuxClient(relayEnd)
	t.Cleanup(func() { gwMux.Close(); relayMux.Close() })
	go func() {
		for {
			st, err := relayMux.AcceptStream()
			if err != nil {
				return
			}
			var h tunnel.Header
			var batch json.RawMessage
			res := tunnel.Result{OK: true}
			if tunnel.ReadFrame(st, &h) != nil || h.Type != tunnel.TypeEvents {
				res = tunnel.Result{Code: tunnel.CodeInvalid, Message: "unexpected stream"}
			}
			_ = tunnel.ReadFrame(st, &batch) // the test's batch is empty, not JSON
			tunnel.WriteFrame(st, res)
			st.Close()
		}
	}()
	return gwMux
}

// TestUploadWaitsForTheConnection: an upload that finds the gateway not
// connected waits for the connection and goes as soon as it is back,
// rather than fail and leave the events to the spool's backoff (up to 10 s).
func TestUploadWaitsForTheConnection(t *testing.T) {
	a, _ := newTestAgent(t, newCA(t, "org1"))
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- a.Upload(context.Background(), sessionlog.Batch{}) }()
	time.Sleep(200 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("Upload returned %v before the gateway was connected", err)
	default:
	}
	a.setMux(storingRelay(t))
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Upload: %v", err)
		}
		t.Logf("uploaded %s after it was called, the connection came after 200 ms", time.Since(start).Round(time.Millisecond))
	case <-time.After(20 * time.Second):
		t.Fatal("Upload did not go once the gateway was connected")
	}

	// Without a connection it gives up when its context ends, or after
	// the wait, so that the spool can log and retry.
	a.setMux(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := a.Upload(ctx, sessionlog.Batch{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Upload with an ending context: %v", err)
	}
	if _, err := a.waitConnected(context.Background(), 50*time.Millisecond); !errors.Is(err, errNotConnected) {
		t.Errorf("waitConnected past its wait: %v", err)
	}
}
