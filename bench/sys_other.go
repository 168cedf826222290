//go:build !unix

package bench

// raiseNoFile reports no limit where RLIMIT_NOFILE does not exist.
func raiseNoFile() (uint64, error) { return 0, nil }
