/*
 * tcp_socket.c - nonblocking TCP sockets toward the host, for the TCP translator.
 *
 * Deno's own TCP API cannot bind before connecting (-o), bind to an interface
 * (--outbound-if4/6), close with a reset (SO_LINGER 0) or report a reset as such, and
 * every read or write through it is an asynchronous operation. These calls give the
 * translator plain nonblocking sockets whose readiness it follows with the event
 * loop's epoll. Whether a destination is allowed is still Deno's --allow-net: the
 * TypeScript side queries Deno's permissions before calling tp_tcp_connect() or
 * tp_tcp_listen().
 *
 * Addresses are passed as raw bytes in network order: 4 bytes for IPv4, 16 for IPv6.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tpasst_helper.h"

/* Fills @ss from raw address bytes; returns the sockaddr length, or 0 for a bad length. */
static socklen_t fill_sockaddr(struct sockaddr_storage *ss, const uint8_t *addr,
			       uint32_t addr_len, uint32_t port, uint32_t scope_id)
{
	memset(ss, 0, sizeof(*ss));
	if (addr_len == 4) {
		struct sockaddr_in *v4 = (struct sockaddr_in *)ss;

		v4->sin_family = AF_INET;
		v4->sin_port = htons((uint16_t)port);
		memcpy(&v4->sin_addr, addr, 4);
		return sizeof(*v4);
	}
	if (addr_len == 16) {
		struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;

		v6->sin6_family = AF_INET6;
		v6->sin6_port = htons((uint16_t)port);
		memcpy(&v6->sin6_addr, addr, 16);
		v6->sin6_scope_id = scope_id;
		return sizeof(*v6);
	}
	return 0;
}

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

	dst_len = fill_sockaddr(&dst, addr, addr_len, port, scope_id);
	if (dst_len == 0 || port > 65535 || (source_len != 0 && source_len != addr_len))
		return -EINVAL;
	fd = socket(dst.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
	if (fd < 0)
		return -errno;
	if (ifname[0] != '\0' &&
	    setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, ifname, (socklen_t)strlen(ifname)) < 0)
		return fail_close(fd, errno);
	if (source_len != 0) {
		src_len = fill_sockaddr(&src, source, source_len, 0, 0);
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

	ss_len = fill_sockaddr(&ss, addr, addr_len, port, scope_id);
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
