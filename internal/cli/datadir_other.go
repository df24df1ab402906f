//go:build !unix

package cli

// lockDataDir does nothing on this platform (it has no flock): keeping two
// processes off one data directory is left to the user.
func lockDataDir(dir, command string) (func(), error) { return func() {}, nil }
