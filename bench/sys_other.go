//go:build !unix

package bench

import "time"

// raiseNoFile reports no limit where RLIMIT_NOFILE does not exist.
func raiseNoFile() (uint64, error) { return 0, nil }

// selfCPU is unknown where getrusage does not exist.
func selfCPU() time.Duration { return 0 }
