package tunnel

// OnOwnStack runs f on a goroutine of its own and waits for it to return.
//
// A proxied connection's goroutines live as long as the connection, and Go
// keeps a goroutine's stack at the largest size it ever needed until the
// garbage collector shrinks it, one halving per cycle (and an idle gateway
// rarely collects). The setup of a connection, a TLS handshake or a database
// login, needs a deep stack once; run on a goroutine that then ends, its
// stack goes back to the runtime, and the long-lived goroutine's stays small.
func OnOwnStack(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	<-done
}
