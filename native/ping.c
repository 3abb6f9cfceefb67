/*
 * ping.c - unprivileged ICMP / ICMPv6 echo ("ping") sockets.
 *
 * The kernel allows them only to groups listed in net.ipv4.ping_group_range; when
 * the caller's group is outside it, socket() fails with EACCES, reported as -EACCES.
 * The kernel owns the echo identifier (it rewrites it to the socket's "port").
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "tpasst_helper.h"

/*
 * tp_ping_open() - open a nonblocking ping socket.
 * @family: 4 for ICMP over IPv4, 6 for ICMPv6
 *
 * Return: the socket (NONBLOCK, CLOEXEC), -EACCES if ping_group_range forbids it,
 * -EAFNOSUPPORT for another family value, or another -errno.
 */
int32_t tp_ping_open(int32_t family)
{
	int fd;

	if (family == 4)
		fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_ICMP);
	else if (family == 6)
		fd = socket(AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_ICMPV6);
	else
		return -EAFNOSUPPORT;
	return fd < 0 ? -errno : fd;
}

/*
 * tp_ping_sendto() - send one ICMP message (header included) to an address.
 * @fd:       ping socket from tp_ping_open()
 * @buf:      ICMP echo request: type, code, checksum, id, sequence, payload
 * @len:      its length
 * @addr:     destination address bytes, network order
 * @addr_len: 4 (IPv4 socket) or 16 (IPv6 socket)
 * @scope_id: IPv6 scope (interface index) for link-local destinations, else 0
 *
 * Return: bytes sent, -EAGAIN if the socket buffer is full, or -errno.
 */
int32_t tp_ping_sendto(int32_t fd, const uint8_t *buf, uint32_t len, const uint8_t *addr,
		       uint32_t addr_len, uint32_t scope_id)
{
	struct sockaddr_in v4;
	struct sockaddr_in6 v6;
	struct sockaddr *sa;
	socklen_t sa_len;
	ssize_t n;

	if (addr_len == 4) {
		memset(&v4, 0, sizeof(v4));
		v4.sin_family = AF_INET;
		memcpy(&v4.sin_addr, addr, 4);
		sa = (struct sockaddr *)&v4;
		sa_len = sizeof(v4);
	} else if (addr_len == 16) {
		memset(&v6, 0, sizeof(v6));
		v6.sin6_family = AF_INET6;
		memcpy(&v6.sin6_addr, addr, 16);
		v6.sin6_scope_id = scope_id;
		sa = (struct sockaddr *)&v6;
		sa_len = sizeof(v6);
	} else {
		return -EINVAL;
	}
	do {
		n = sendto(fd, buf, len, MSG_NOSIGNAL, sa, sa_len);
	} while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : (int32_t)n;
}

/*
 * tp_ping_recvfrom() - receive one ICMP message (header included) and its source.
 * @fd:       ping socket from tp_ping_open()
 * @buf:      destination for the ICMP message (echo reply)
 * @len:      capacity of @buf; a longer message is truncated
 * @addr_out: receives the source address bytes (16 bytes of room)
 * @meta_out: uint32_t[2]: [0] address length written (4 or 16), [1] IPv6 scope id
 *
 * Return: bytes stored, -EAGAIN if nothing is pending, or -errno.
 */
int32_t tp_ping_recvfrom(int32_t fd, uint8_t *buf, uint32_t len, uint8_t *addr_out,
			 uint32_t *meta_out)
{
	struct sockaddr_storage from;
	socklen_t from_len;
	ssize_t n;

	meta_out[0] = 0;
	meta_out[1] = 0;
	do {
		from_len = sizeof(from);
		n = recvfrom(fd, buf, len, 0, (struct sockaddr *)&from, &from_len);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	if (from.ss_family == AF_INET) {
		memcpy(addr_out, &((struct sockaddr_in *)&from)->sin_addr, 4);
		meta_out[0] = 4;
	} else if (from.ss_family == AF_INET6) {
		memcpy(addr_out, &((struct sockaddr_in6 *)&from)->sin6_addr, 16);
		meta_out[0] = 16;
		meta_out[1] = ((struct sockaddr_in6 *)&from)->sin6_scope_id;
	}
	return (int32_t)n;
}
