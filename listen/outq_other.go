//go:build !linux

package listen

import "net"

// sendQueued cannot tell the send queue's length on this system.
func sendQueued(net.Conn) (int, bool) { return 0, false }

const isLinux = false
