// Package deps lets a package's tests check what its production code
// imports (STYLE.md §1: features are leaves; the broker wires them).
package deps

import (
	"os/exec"
	"strings"
	"testing"
)

// Of returns the import paths the package in the current directory depends
// on, directly or not (`go list -deps .`), production code only. It fails
// the test if the go command cannot tell.
func Of(t testing.TB) []string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go command not found: %v", err)
	}
	out, err := exec.Command(goBin, "list", "-deps", ".").Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("go list -deps: %v: %s", err, ee.Stderr)
		}
		t.Fatalf("go list -deps: %v", err)
	}
	return strings.Fields(string(out))
}

// Forbid fails the test for each dependency of the current package that
// banned names, with the reason it gives; "testing" is always banned from
// production code.
func Forbid(t testing.TB, pkg string, banned map[string]string) {
	t.Helper()
	for _, p := range Of(t) {
		why, bad := banned[p]
		if p == "testing" {
			why, bad = "test code in production", true
		}
		if bad {
			t.Errorf("%s depends on %s: %s", pkg, p, why)
		}
	}
}
