package session

// SetMaxLogScan sets the most events one filtered page of Logs reads, and
// returns a function that restores it.
func SetMaxLogScan(n int) (restore func()) {
	old := maxLogScan
	maxLogScan = n
	return func() { maxLogScan = old }
}
