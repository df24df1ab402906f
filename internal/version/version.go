// Package version holds the build's version, set with
// -ldflags "-X github.com/airlockpam/airlock/internal/version.Version=v1.2.3".
package version

// Version is the release version, or "dev".
var Version = "dev"
