/*
 * tcp_socket.c - nonblocking TCP sockets toward the host, for the TCP translator.
 *
 * Deno's own TCP API cannot bind before connecting (-o), bind to an interface
 * (--outbound-if4/6), close with a reset (SO_LINGER 0) or report a reset as such, and
 * every read or write through it is an asynchronous operation. These calls give the
 * translator plain nonblocking sockets whose readiness it follows with the event
 * loop's epoll, and the few calls its mirroring needs: peeking into a gather list from
 * a peek offset, dropping acknowledged bytes, and the queue levels behind the window.
 * Whether a destination is allowed is still Deno's --allow-net: the TypeScript side
 * queries Deno's permissions before calling tp_tcp_connect() or tp_tcp_listen().
 *
 * Addresses are passed as raw bytes in network order: 4 bytes for IPv4, 16 for IPv6.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <linux/sockios.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "tpasst_helper.h"

/* Writes the address of @ss to @addr_out (16 bytes of room) and @meta_out[0..1]. */
static void store_sockaddr(const struct sockaddr_storage *ss, uint8_t *addr_out,
			   uint32_t *meta_out)
{
	meta_out[0] = 0;
	meta_out[1] = 0;
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *v4 = (const struct sockaddr_in *)ss;

		memcpy(addr_out, &v4->sin_addr, 4);
		meta_out[0] = 4;
		meta_out[1] = ntohs(v4->sin_port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)ss;

		memcpy(addr_out, &v6->sin6_addr, 16);
		meta_out[0] = 16;
		meta_out[1] = ntohs(v6->sin6_port);
	}
}

/* Closes @fd keeping errno, and returns -@err. */
static int32_t fail_close(int fd, int err)
{
	close(fd);
	return -err;
}

/*
 * tp_tcp_connect() - start a nonblocking connect.
 * @addr:       destination address bytes
 * @addr_len:   4 or 16
 * @port:       destination port
 * @scope_id:   IPv6 scope (interface index) for link-local destinations, else 0
 * @source:     source address bytes to bind first, or any buffer when @source_len is 0
 * @source_len: 0 (kernel's choice), or the same as @addr_len
 * @ifname:     NUL-terminated interface name to bind to (SO_BINDTODEVICE), "" for none
 *
 * TCP_NODELAY is set: the guest's own TCP already decided when to send.
 *
 * Return: the socket (NONBLOCK, CLOEXEC) with the connect in progress or done
 * (writability, then tp_socket_error(), tells which), or -errno (-EINVAL for bad
 * lengths; -EPERM, -EADDRNOTAVAIL... from the bind steps; -ECONNREFUSED...).
 */
int32_t tp_tcp_connect(const uint8_t *addr, uint32_t addr_len, uint32_t port,
		       uint32_t scope_id, const uint8_t *source, uint32_t source_len,
		       const char *ifname)
{
	struct sockaddr_storage dst, src;
	socklen_t dst_len, src_len;
	int fd, one = 1;

	dst_len = tp_fill_sockaddr(&dst, addr, addr_len, port, scope_id);
	if (dst_len == 0 || port > 65535 || (source_len != 0 && source_len != addr_len))
		return -EINVAL;
	fd = socket(dst.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
	if (fd < 0)
		return -errno;
	if (ifname[0] != '\0' &&
	    setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, ifname, (socklen_t)strlen(ifname)) < 0)
		return fail_close(fd, errno);
	if (source_len != 0) {
		src_len = tp_fill_sockaddr(&src, source, source_len, 0, 0);
		if (bind(fd, (struct sockaddr *)&src, src_len) < 0)
			return fail_close(fd, errno);
	}
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&dst, dst_len) < 0 && errno != EINPROGRESS)
		return fail_close(fd, errno);
	return fd;
}

/*
 * tp_socket_error() - take a socket's pending error (SO_ERROR), e.g. a connect's outcome.
 * @fd: the socket
 *
 * Return: 0 when there is none, -errno for the pending error (or for getsockopt's).
 */
int32_t tp_socket_error(int32_t fd)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		return -errno;
	return -err;
}

/*
 * tp_send() - send without blocking and without SIGPIPE.
 * @fd:  connected stream socket
 * @buf: bytes to send
 * @len: how many
 *
 * Return: bytes accepted by the kernel (possibly fewer than @len), -EAGAIN when its
 * buffer is full, or -errno (-EPIPE, -ECONNRESET...).
 */
int32_t tp_send(int32_t fd, const uint8_t *buf, uint32_t len)
{
	ssize_t n;

	do {
		n = send(fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : (int32_t)n;
}

/*
 * tp_recv() - receive without blocking.
 * @fd:  connected stream socket
 * @buf: where to store the bytes
 * @len: room in @buf (> 0, or 0 is indistinguishable from end of stream)
 *
 * Return: bytes stored, 0 at end of stream, -EAGAIN when nothing is pending, or
 * -errno (-ECONNRESET when the peer reset the connection).
 */
int32_t tp_recv(int32_t fd, uint8_t *buf, uint32_t len)
{
	ssize_t n;

	do {
		n = recv(fd, buf, len, MSG_DONTWAIT);
	} while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : (int32_t)n;
}

/*
 * tp_tcp_close_reset() - close a TCP socket so that the peer gets a RST, not a FIN.
 * @fd: the socket (closed in any case)
 *
 * SO_LINGER with a zero timeout makes close() abort the connection (RFC 9293
 * §3.10.5 ABORT).
 *
 * Return: 0, or -errno from setsockopt (the socket is closed anyway).
 */
int32_t tp_tcp_close_reset(int32_t fd)
{
	struct linger abort_now = { .l_onoff = 1, .l_linger = 0 };
	int32_t rc = 0;

	if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort_now, sizeof(abort_now)) < 0)
		rc = -errno;
	close(fd);
	return rc;
}

/*
 * tp_tcp_listen() - a nonblocking listening socket.
 * @addr:     local address bytes (all zero for any)
 * @addr_len: 4 or 16; an IPv6 socket for "::" also takes IPv4 unless the host's
 *            net.ipv6.bindv6only says otherwise
 * @port:     local port
 * @scope_id: IPv6 scope for a link-local address, else 0
 * @ifname:   NUL-terminated interface to bind to (SO_BINDTODEVICE), "" for none
 * @backlog:  listen() backlog
 * @flags:    TP_LISTEN_FREEBIND: set IP_FREEBIND / IPV6_FREEBIND, so that an address
 *            not (yet) configured on the host can be bound (ip(7), ipv6(7))
 *
 * SO_REUSEADDR is set, as servers do, so that a restart finds the port free.
 *
 * Return: the socket (NONBLOCK, CLOEXEC), or -errno (-EADDRINUSE, -EACCES...).
 */
int32_t tp_tcp_listen(const uint8_t *addr, uint32_t addr_len, uint32_t port, uint32_t scope_id,
		      const char *ifname, int32_t backlog, uint32_t flags)
{
	struct sockaddr_storage ss;
	socklen_t ss_len;
	int fd, one = 1;

	ss_len = tp_fill_sockaddr(&ss, addr, addr_len, port, scope_id);
	if (ss_len == 0 || port > 65535)
		return -EINVAL;
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
	if (fd < 0)
		return -errno;
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if ((flags & TP_LISTEN_FREEBIND) &&
	    (ss.ss_family == AF_INET6
		     ? setsockopt(fd, IPPROTO_IPV6, IPV6_FREEBIND, &one, sizeof(one))
		     : setsockopt(fd, IPPROTO_IP, IP_FREEBIND, &one, sizeof(one))) < 0)
		return fail_close(fd, errno);
	if (ifname[0] != '\0' &&
	    setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, ifname, (socklen_t)strlen(ifname)) < 0)
		return fail_close(fd, errno);
	if (bind(fd, (struct sockaddr *)&ss, ss_len) < 0 || listen(fd, backlog) < 0)
		return fail_close(fd, errno);
	return fd;
}

/*
 * tp_tcp_accept() - accept one connection without blocking.
 * @listen_fd: socket from tp_tcp_listen()
 * @addr_out:  receives the peer's address bytes (16 bytes of room)
 * @meta_out:  uint32_t[2]: [0] address length written (4 or 16), [1] peer port
 *
 * An IPv4 peer of a dual-stack IPv6 listener is reported as the IPv4-mapped IPv6
 * address, as the kernel gives it. TCP_NODELAY is set on the new socket.
 *
 * Return: the connection (NONBLOCK, CLOEXEC), -EAGAIN when none is pending, or -errno.
 */
int32_t tp_tcp_accept(int32_t listen_fd, uint8_t *addr_out, uint32_t *meta_out)
{
	struct sockaddr_storage peer;
	socklen_t peer_len;
	int fd, one = 1;

	do {
		peer_len = sizeof(peer);
		fd = accept4(listen_fd, (struct sockaddr *)&peer, &peer_len,
			     SOCK_NONBLOCK | SOCK_CLOEXEC);
	} while (fd < 0 && errno == EINTR);
	if (fd < 0)
		return -errno;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	store_sockaddr(&peer, addr_out, meta_out);
	return fd;
}

/*
 * tp_socket_local_address() - the address a socket is bound to (getsockname).
 * @fd:       the socket
 * @addr_out: receives the address bytes (16 bytes of room)
 * @meta_out: uint32_t[2]: [0] address length written (4 or 16), [1] port
 *
 * Return: 0, or -errno.
 */
int32_t tp_socket_local_address(int32_t fd, uint8_t *addr_out, uint32_t *meta_out)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return -errno;
	store_sockaddr(&ss, addr_out, meta_out);
	return 0;
}

/*
 * tp_tcp_recvmsg() - receive (or peek at) bytes into a gather list, without blocking.
 * @fd:     connected stream socket
 * @iov:    struct iovec[@iovcnt]: where the bytes go, in order
 * @iovcnt: entries in @iov (1..IOV_MAX)
 * @flags:  extra recvmsg flags: MSG_PEEK leaves the bytes queued (from the socket's
 *          SO_PEEK_OFF when one is set); MSG_DONTWAIT is always added
 *
 * Return: bytes stored, 0 at end of stream, -EAGAIN when nothing (more) is pending,
 * or -errno (-ECONNRESET...).
 */
int32_t tp_tcp_recvmsg(int32_t fd, const struct iovec *iov, uint32_t iovcnt, int32_t flags)
{
	struct msghdr msg = { .msg_iov = (struct iovec *)iov, .msg_iovlen = iovcnt };
	ssize_t n;

	do {
		n = recvmsg(fd, &msg, flags | MSG_DONTWAIT);
	} while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : (int32_t)n;
}

/*
 * tp_tcp_sendmsg() - send bytes from a gather list, without blocking or SIGPIPE.
 * @fd:     connected stream socket
 * @iov:    struct iovec[@iovcnt]: the bytes, in order
 * @iovcnt: entries in @iov (1..IOV_MAX)
 * @flags:  extra sendmsg flags (MSG_MORE...); MSG_DONTWAIT | MSG_NOSIGNAL are added
 *
 * Return: bytes accepted by the kernel (possibly fewer), -EAGAIN when its buffer is
 * full, or -errno (-EPIPE, -ECONNRESET...).
 */
int32_t tp_tcp_sendmsg(int32_t fd, const struct iovec *iov, uint32_t iovcnt, int32_t flags)
{
	struct msghdr msg = { .msg_iov = (struct iovec *)iov, .msg_iovlen = iovcnt };
	ssize_t n;

	do {
		n = sendmsg(fd, &msg, flags | MSG_DONTWAIT | MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : (int32_t)n;
}

/*
 * tp_tcp_discard() - drop bytes from the front of the receive queue without copying.
 * @fd:  connected TCP socket
 * @len: how many (at most what is queued is dropped)
 *
 * recv() with MSG_TRUNC and no buffer: Linux's TCP discards instead of copying
 * (tcp(7), MSG_TRUNC). A peek offset (SO_PEEK_OFF) moves back by what was dropped.
 *
 * Return: bytes dropped, 0 at end of stream, -EAGAIN when nothing is queued, or -errno.
 */
int32_t tp_tcp_discard(int32_t fd, uint32_t len)
{
	ssize_t n;

	do {
		n = recv(fd, NULL, len, MSG_TRUNC | MSG_DONTWAIT);
	} while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : (int32_t)n;
}

/*
 * tp_tcp_set_peek_offset() - set SO_PEEK_OFF: where the next MSG_PEEK starts.
 * @fd:     connected TCP socket
 * @offset: bytes from the front of the receive queue, or -1 to peek from the front
 *          without moving (the default)
 *
 * Each MSG_PEEK then advances the offset by what it returned (Linux >= 6.9 for TCP).
 *
 * Return: 0, or -errno (-EOPNOTSUPP / -ENOPROTOOPT where TCP lacks it).
 */
int32_t tp_tcp_set_peek_offset(int32_t fd, int32_t offset)
{
	if (setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &offset, sizeof(offset)) < 0)
		return -errno;
	return 0;
}

/*
 * tp_tcp_queues() - how full the socket's queues are.
 * @fd:  connected TCP socket
 * @out: uint32_t[3]: [0] SIOCOUTQ, bytes sent but not yet acknowledged by the peer
 *       plus bytes not yet sent; [1] SIOCINQ, bytes received and not yet read;
 *       [2] SO_SNDBUF, the send buffer's size in bytes (as getsockopt reports it)
 *
 * Return: 0, or -errno.
 */
int32_t tp_tcp_queues(int32_t fd, uint32_t *out)
{
	int outq = 0, inq = 0, sndbuf = 0;
	socklen_t len = sizeof(sndbuf);

	if (ioctl(fd, SIOCOUTQ, &outq) < 0 || ioctl(fd, SIOCINQ, &inq) < 0 ||
	    getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, &len) < 0)
		return -errno;
	out[0] = (uint32_t)outq;
	out[1] = (uint32_t)inq;
	out[2] = (uint32_t)sndbuf;
	return 0;
}

/*
 * tp_tcp_send_queued() - bytes in the send queue: sent but not yet acknowledged by
 * the peer, plus not yet sent (SIOCOUTQ, tcp(7)).
 * @fd: connected TCP socket
 *
 * Return: the byte count, or -errno.
 */
int32_t tp_tcp_send_queued(int32_t fd)
{
	int outq = 0;

	if (ioctl(fd, SIOCOUTQ, &outq) < 0)
		return -errno;
	return outq;
}

/*
 * tp_buffer_address() - the address of a buffer, for building struct iovec tables.
 * @buf: any buffer (Deno passes a typed array's data pointer)
 * @out: uint32_t[2]: the address's low and high 32 bits
 *
 * Deno's Deno.UnsafePointer needs unrestricted --allow-ffi; this lets the iovec
 * tables of tp_tcp_recvmsg / tp_tcp_sendmsg be filled under a permission scoped to
 * this library.
 *
 * Return: 0.
 */
int32_t tp_buffer_address(const uint8_t *buf, uint32_t *out)
{
	uint64_t address = (uint64_t)(uintptr_t)buf;

	out[0] = (uint32_t)address;
	out[1] = (uint32_t)(address >> 32);
	return 0;
}

/*
 * tp_socket_set_buffers() - set a socket's receive and send buffer sizes.
 * @fd:     the socket
 * @rcvbuf: SO_RCVBUF in bytes, or 0 to leave it (and its autotuning) alone
 * @sndbuf: SO_SNDBUF in bytes, or 0 to leave it alone
 *
 * The kernel caps each at net.core.rmem_max / wmem_max and doubles it (socket(7)).
 *
 * Return: 0, or -errno of the first setsockopt that failed.
 */
int32_t tp_socket_set_buffers(int32_t fd, uint32_t rcvbuf, uint32_t sndbuf)
{
	int v;

	if (rcvbuf > 0) {
		v = rcvbuf > INT32_MAX ? INT32_MAX : (int)rcvbuf;
		if (setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v)) < 0)
			return -errno;
	}
	if (sndbuf > 0) {
		v = sndbuf > INT32_MAX ? INT32_MAX : (int)sndbuf;
		if (setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v)) < 0)
			return -errno;
	}
	return 0;
}
