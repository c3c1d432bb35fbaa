// Package netpoll tells which sockets have bytes to read, so that a server
// can hold many idle connections without a goroutine blocked in read for
// each: the cost of an idle WebSocket is then its socket and a few hundred
// bytes of state, not a goroutine stack and a read buffer.
//
// A Poller is an epoll instance (Linux; elsewhere New reports
// errors.ErrUnsupported and the caller keeps a goroutine per connection).
// Sockets are added with a key, and interest is one-shot: a socket is
// reported readable once, then not again until Rearm, so that exactly one
// reader handles a connection at a time, and a reader that stops early
// (fairness) is reported again at once by Rearm because epoll then checks
// the socket's state anew. The epoll descriptor itself waits in Go's
// runtime poller, so Wait parks its goroutine rather than an OS thread,
// and Close wakes it.
//
// # Why not a library
//
// github.com/mailru/easygo/netpoll (used with gobwas/ws) takes a
// connection's descriptor through net.TCPConn.File, which duplicates it:
// two descriptors per connection, against a per-process limit, and an
// os.File each. cloudwego/netpoll, lesismal/nbio and gnet are whole network
// engines: they accept and own their connections, read into their own
// buffers and write through their own queues, where meshcast keeps
// net/http's upgrade, gobwas/ws's frame codec and its own write pool. What
// is needed here is epoll_create1, epoll_ctl and epoll_wait on
// golang.org/x/sys/unix, which the edge already uses for its writes: this
// package is that, with the descriptor handling that makes it safe.
//
// # Descriptor safety
//
// Sockets are passed as syscall.RawConn, never as bare numbers: epoll_ctl
// runs inside RawConn.Control, which holds the descriptor open, so a
// socket closed concurrently is refused (the error wraps os.ErrClosed) instead of reaching a new socket that reused its number.
// A closed socket leaves the epoll set by itself; the kernel can still
// report it from before, so a caller must ignore keys it no longer knows.
package netpoll
