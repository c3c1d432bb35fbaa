package main

import (
	"runtime"
	"runtime/debug"
)

// version is the release this binary was built from, set at link time:
// go build -ldflags "-X main.version=v1.2.3" (make build sets it from git
// describe). Empty: the main module's version in the build info, as go
// install …@v1.2.3 records it.
var version string

// buildVersion is this binary's version (--version, /version and the
// startup log).
func buildVersion() string {
	info, _ := debug.ReadBuildInfo()
	return resolveVersion(version, info)
}

// resolveVersion picks the version: the linked one, else the module's,
// else the VCS revision the go command stamped, else "devel".
func resolveVersion(linked string, info *debug.BuildInfo) string {
	if linked != "" {
		return linked
	}
	if info == nil {
		return "devel"
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev == "" {
		return "devel"
	}
	v := "devel-" + rev[:min(len(rev), 12)]
	if modified == "true" {
		v += "-dirty"
	}
	return v
}

// versionLine is what --version prints.
func versionLine() string {
	return "meshcast " + buildVersion() + " (" + runtime.Version() + ", " + runtime.GOOS + "/" + runtime.GOARCH + ")"
}
