package listen

import (
	"net"
	"syscall"
	"unsafe"
)

// sendQueued returns the bytes in the socket's send queue (not yet
// acknowledged by the peer) under c's TLS and WebSocket layers, and
// whether it could tell.
func sendQueued(c net.Conn) (int, bool) {
	for range 4 {
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = u.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var n int32
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCOUTQ, uintptr(unsafe.Pointer(&n)))
	}); err != nil || errno != 0 {
		return 0, false
	}
	return int(n), true
}

const isLinux = true
