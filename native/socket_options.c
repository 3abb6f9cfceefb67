/*
 * socket_options.c - thin socket calls for moving TCP connections in a migration:
 * socket options by integer or by byte buffer (TCP_REPAIR and its companions,
 * TCP_INFO), a bare TCP socket that is bound and connected in separate steps (a
 * socket in repair mode must be switched before it connects), the peer's address,
 * a receive with caller flags (MSG_PEEK of a repair queue), and a bounded wait for
 * readability (the reply of a TCP_REPAIR helper). No protocol logic: the TypeScript
 * side (src/net/tcp/repair.ts) decides what to set and when.
 *
 * Addresses are passed as raw bytes in network order: 4 bytes for IPv4, 16 for IPv6.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tpasst_helper.h"

/*
 * tp_setsockopt_int() - setsockopt() with an int value.
 * @fd, @level, @name: as setsockopt(2)
 * @value:             the int to set
 *
 * Return: 0, or -errno.
 */
int32_t tp_setsockopt_int(int32_t fd, int32_t level, int32_t name, int32_t value)
{
	int v = value;

	return setsockopt(fd, level, name, &v, sizeof(v)) < 0 ? -errno : 0;
}

/*
 * tp_getsockopt_int() - getsockopt() of an int value.
 * @fd, @level, @name: as getsockopt(2)
 * @value_out:         int32_t[1], the value
 *
 * Return: 0, or -errno.
 */
int32_t tp_getsockopt_int(int32_t fd, int32_t level, int32_t name, int32_t *value_out)
{
	int v = 0;
	socklen_t len = sizeof(v);

	if (getsockopt(fd, level, name, &v, &len) < 0)
		return -errno;
	*value_out = v;
	return 0;
}

/*
 * tp_setsockopt_bytes() - setsockopt() with a structure given as bytes.
 * @fd, @level, @name: as setsockopt(2)
 * @buf, @len:         the option value
 *
 * Return: 0, or -errno.
 */
int32_t tp_setsockopt_bytes(int32_t fd, int32_t level, int32_t name, const uint8_t *buf,
			    uint32_t len)
{
	return setsockopt(fd, level, name, buf, (socklen_t)len) < 0 ? -errno : 0;
}

/*
 * tp_getsockopt_bytes() - getsockopt() of a structure into bytes.
 * @fd, @level, @name: as getsockopt(2)
 * @buf, @len:         room for the value
 *
 * Return: the length the kernel wrote, or -errno.
 */
int32_t tp_getsockopt_bytes(int32_t fd, int32_t level, int32_t name, uint8_t *buf,
			    uint32_t len)
{
	socklen_t got = (socklen_t)len;

	if (getsockopt(fd, level, name, buf, &got) < 0)
		return -errno;
	return (int32_t)got;
}

/*
 * tp_tcp_socket() - a new, unbound TCP socket.
 * @family: 4 or 6
 *
 * Return: the socket (NONBLOCK, CLOEXEC), or -errno (-EINVAL for another family).
 */
int32_t tp_tcp_socket(int32_t family)
{
	int fd;

	if (family != 4 && family != 6)
		return -EINVAL;
	fd = socket(family == 4 ? AF_INET : AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
		    IPPROTO_TCP);
	return fd < 0 ? -errno : fd;
}

/*
 * tp_at_address() - call bind(2) or connect(2) on @fd with the address built from
 * @addr, @addr_len, @port and @scope_id.
 * @op: bind or connect
 *
 * Return: 0, or -errno (-EINVAL for bad lengths or a port above 65535).
 */
static int32_t tp_at_address(int (*op)(int, const struct sockaddr *, socklen_t), int32_t fd,
			     const uint8_t *addr, uint32_t addr_len, uint32_t port,
			     uint32_t scope_id)
{
	struct sockaddr_storage ss;
	socklen_t len = tp_fill_sockaddr(&ss, addr, addr_len, port, scope_id);

	if (len == 0 || port > 65535)
		return -EINVAL;
	return op(fd, (struct sockaddr *)&ss, len) < 0 ? -errno : 0;
}

/*
 * tp_socket_bind() - bind a socket to an address and port.
 * @fd:       the socket
 * @addr:     address bytes
 * @addr_len: 4 or 16
 * @port:     port
 * @scope_id: IPv6 scope, else 0
 *
 * Return: 0, or -errno (-EINVAL for bad lengths).
 */
int32_t tp_socket_bind(int32_t fd, const uint8_t *addr, uint32_t addr_len, uint32_t port,
		       uint32_t scope_id)
{
	return tp_at_address(bind, fd, addr, addr_len, port, scope_id);
}

/*
 * tp_socket_connect() - connect a socket (a socket in TCP repair mode connects at
 * once, without a handshake).
 * @fd:       the socket
 * @addr:     address bytes
 * @addr_len: 4 or 16
 * @port:     port
 * @scope_id: IPv6 scope, else 0
 *
 * Return: 0, or -errno (-EINPROGRESS for a nonblocking connect under way).
 */
int32_t tp_socket_connect(int32_t fd, const uint8_t *addr, uint32_t addr_len, uint32_t port,
			  uint32_t scope_id)
{
	return tp_at_address(connect, fd, addr, addr_len, port, scope_id);
}

/*
 * tp_socket_peer_address() - a connected socket's peer.
 * @fd:       the socket
 * @addr_out: 16 bytes: the address (4 used for IPv4)
 * @meta_out: uint32_t[2]: address length (4 or 16), port
 *
 * Return: 0, or -errno.
 */
int32_t tp_socket_peer_address(int32_t fd, uint8_t *addr_out, uint32_t *meta_out)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0)
		return -errno;
	meta_out[0] = 0;
	meta_out[1] = 0;
	if (ss.ss_family == AF_INET) {
		const struct sockaddr_in *v4 = (const struct sockaddr_in *)&ss;

		memcpy(addr_out, &v4->sin_addr, 4);
		meta_out[0] = 4;
		meta_out[1] = ntohs(v4->sin_port);
	} else if (ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)&ss;

		memcpy(addr_out, &v6->sin6_addr, 16);
		meta_out[0] = 16;
		meta_out[1] = ntohs(v6->sin6_port);
	}
	return 0;
}

/*
 * tp_recv_flags() - recv() without blocking, with the caller's flags added.
 * @fd:    the socket
 * @buf:   where the bytes go
 * @len:   room in @buf
 * @flags: recv(2) flags (MSG_PEEK...); MSG_DONTWAIT is always added
 *
 * Return: bytes stored, 0 at end of stream, -EAGAIN, or -errno.
 */
int32_t tp_recv_flags(int32_t fd, uint8_t *buf, uint32_t len, int32_t flags)
{
	ssize_t n;

	do {
		n = recv(fd, buf, len, flags | MSG_DONTWAIT);
	} while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : (int32_t)n;
}

/*
 * tp_wait_readable() - wait until @fd is readable or hung up, at most @timeout_ms.
 * @fd:         the descriptor
 * @timeout_ms: the bound (poll(2)'s timeout)
 *
 * Return: 1 when readable (or hung up, or in error), 0 on timeout, or -errno.
 */
int32_t tp_wait_readable(int32_t fd, int32_t timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int n;

	do {
		n = poll(&p, 1, timeout_ms);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return n > 0 ? 1 : 0;
}
