/*
 * udp_socket.c - nonblocking UDP sockets toward the host, for the UDP translator.
 *
 * Deno's UDP API (and node:dgram over it) binds 0.0.0.0:0 first, which a narrowed
 * --allow-net refuses, cannot bind to an interface (--outbound-if4/6, %IF), and costs
 * an asynchronous operation per datagram. These calls give the translator plain
 * nonblocking sockets whose readiness it follows with the event loop's epoll, and
 * move datagrams in batches: recvmmsg() and sendmmsg(), one system call per batch.
 * Whether a destination is allowed is still Deno's --allow-net: the TypeScript side
 * queries Deno's permissions before sending to a destination or binding a listener.
 *
 * Addresses are raw bytes in network order: 4 bytes for IPv4, 16 for IPv6. Batches
 * describe their messages with records (layout: TP_UDP_RECORD_* in tpasst_helper.h,
 * 32-bit words in host byte order) over one flat payload buffer. A sent record may
 * carry several datagrams of one size as one message (UDP_SEGMENT, UDP GSO).
 */

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103 /* include/uapi/linux/udp.h, Linux >= 4.18 */
#endif

/* Room for one UDP_SEGMENT control message (a uint16_t segment size). */
#define SEGMENT_CONTROL_SPACE CMSG_SPACE(sizeof(uint16_t))
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tpasst_helper.h"

/* Reads the 32-bit word at byte @offset of @record (records may be unaligned). */
static uint32_t record_word(const uint8_t *record, uint32_t offset)
{
	uint32_t word;

	memcpy(&word, record + offset, sizeof(word));
	return word;
}

/* Writes @word at byte @offset of @record. */
static void record_set_word(uint8_t *record, uint32_t offset, uint32_t word)
{
	memcpy(record + offset, &word, sizeof(word));
}

/* Stores the address of @ss (a datagram's source) in @record. */
static void record_set_address(uint8_t *record, const struct sockaddr_storage *ss)
{
	uint32_t addr_len = 0, port = 0, scope_id = 0;

	memset(record + TP_UDP_RECORD_ADDR, 0, 16);
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *v4 = (const struct sockaddr_in *)ss;

		memcpy(record + TP_UDP_RECORD_ADDR, &v4->sin_addr, 4);
		addr_len = 4;
		port = ntohs(v4->sin_port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)ss;

		memcpy(record + TP_UDP_RECORD_ADDR, &v6->sin6_addr, 16);
		addr_len = 16;
		port = ntohs(v6->sin6_port);
		scope_id = v6->sin6_scope_id;
	}
	record_set_word(record, TP_UDP_RECORD_ADDR_LEN, addr_len);
	record_set_word(record, TP_UDP_RECORD_PORT, port);
	record_set_word(record, TP_UDP_RECORD_SCOPE, scope_id);
}

/* Closes @fd and returns -@err. */
static int32_t udp_fail_close(int fd, int err)
{
	close(fd);
	return -err;
}

/*
 * tp_udp_open() - a nonblocking UDP socket, optionally bound.
 * @family:   4 or 6
 * @addr:     local address bytes to bind to (all zero for any), or any buffer when
 *            @addr_len is 0
 * @addr_len: 0 (not bound: the kernel picks an ephemeral port at the first send), or
 *            4 / 16 matching @family
 * @port:     local port to bind (0: the kernel's choice)
 * @scope_id: IPv6 scope for a link-local @addr, else 0
 * @ifname:   NUL-terminated interface to bind to (SO_BINDTODEVICE), "" for none
 * @flags:    TP_UDP_V6ONLY (family 6 only: IPV6_V6ONLY on; without it the host's
 *            net.ipv6.bindv6only decides, as for TCP), TP_UDP_REUSEADDR
 *            (SO_REUSEADDR before binding)
 *
 * Return: the socket (NONBLOCK, CLOEXEC), or -errno (-EINVAL for bad arguments,
 * -EADDRINUSE, -EACCES, -ENODEV for an unknown interface, -EPERM...).
 */
int32_t tp_udp_open(int32_t family, const uint8_t *addr, uint32_t addr_len, uint32_t port,
		    uint32_t scope_id, const char *ifname, uint32_t flags)
{
	struct sockaddr_storage ss;
	socklen_t ss_len = 0;
	int fd, one = 1;

	if ((family != 4 && family != 6) || port > 65535 ||
	    (flags & ~(uint32_t)(TP_UDP_V6ONLY | TP_UDP_REUSEADDR)) != 0 ||
	    ((flags & TP_UDP_V6ONLY) != 0 && family != 6))
		return -EINVAL;
	if (addr_len != 0) {
		if (addr_len != (family == 4 ? 4u : 16u))
			return -EINVAL;
		ss_len = tp_fill_sockaddr(&ss, addr, addr_len, port, scope_id);
	}
	fd = socket(family == 4 ? AF_INET : AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
		    IPPROTO_UDP);
	if (fd < 0)
		return -errno;
	if ((flags & TP_UDP_V6ONLY) != 0 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)
		return udp_fail_close(fd, errno);
	if ((flags & TP_UDP_REUSEADDR) != 0 &&
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		return udp_fail_close(fd, errno);
	if (ifname[0] != '\0' &&
	    setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, ifname, (socklen_t)strlen(ifname)) < 0)
		return udp_fail_close(fd, errno);
	if (ss_len != 0 && bind(fd, (struct sockaddr *)&ss, ss_len) < 0)
		return udp_fail_close(fd, errno);
	return fd;
}

/*
 * tp_udp_recv_batch() - receive up to @slots datagrams without blocking (recvmmsg).
 * @fd:        UDP socket
 * @buf:       @slots slots of @slot_size bytes; datagram i is stored at i * @slot_size
 * @slot_size: room per datagram (> 0); a longer datagram is cut to it and flagged
 * @slots:     1..TP_UDP_MAX_BATCH
 * @records:   @slots records of TP_UDP_RECORD_SIZE bytes; for each datagram received,
 *             OFFSET (its slot's offset), LENGTH (bytes stored), FLAGS
 *             (TP_UDP_TRUNCATED), and its source in ADDR_LEN, PORT, SCOPE, ADDR
 *
 * The caller guarantees that @buf holds @slots * @slot_size bytes.
 *
 * Return: the number of datagrams received (>= 1), -EAGAIN when none is pending,
 * -EINVAL for bad sizes, or -errno.
 */
int32_t tp_udp_recv_batch(int32_t fd, uint8_t *buf, uint32_t slot_size, uint32_t slots,
			  uint8_t *records)
{
	struct mmsghdr msgs[TP_UDP_MAX_BATCH];
	struct iovec iov[TP_UDP_MAX_BATCH];
	struct sockaddr_storage from[TP_UDP_MAX_BATCH];
	uint32_t i;
	int n;

	if (slots == 0 || slots > TP_UDP_MAX_BATCH || slot_size == 0 ||
	    (uint64_t)slot_size * slots > INT32_MAX)
		return -EINVAL;
	memset(msgs, 0, sizeof(msgs[0]) * slots);
	for (i = 0; i < slots; i++) {
		iov[i].iov_base = buf + (size_t)i * slot_size;
		iov[i].iov_len = slot_size;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
		msgs[i].msg_hdr.msg_name = &from[i];
		msgs[i].msg_hdr.msg_namelen = sizeof(from[i]);
	}
	do {
		n = recvmmsg(fd, msgs, slots, MSG_DONTWAIT, NULL);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	for (i = 0; i < (uint32_t)n; i++) {
		uint8_t *record = records + (size_t)i * TP_UDP_RECORD_SIZE;

		record_set_word(record, TP_UDP_RECORD_OFFSET, i * slot_size);
		record_set_word(record, TP_UDP_RECORD_LENGTH, msgs[i].msg_len);
		record_set_word(record, TP_UDP_RECORD_FLAGS,
				(msgs[i].msg_hdr.msg_flags & MSG_TRUNC) ? TP_UDP_TRUNCATED : 0);
		record_set_address(record, &from[i]);
	}
	return n;
}

/*
 * tp_udp_send_batch() - send datagrams without blocking (sendmmsg).
 * @fd:      UDP socket
 * @buf:     payloads
 * @buf_len: bytes in @buf (every message must lie within it)
 * @records: @count records of TP_UDP_RECORD_SIZE bytes: OFFSET and LENGTH of the
 *           payload in @buf, destination in ADDR_LEN (4 or 16), PORT, SCOPE, ADDR;
 *           ADDR_LEN 0 sends without an address, to a connected socket's peer (the
 *           kernel then reuses the route it cached at connect() instead of looking
 *           one up per datagram); SEGMENT > 0 sends the payload as one message with
 *           a UDP_SEGMENT control message of that size (the kernel cuts it into
 *           datagrams of SEGMENT bytes, the last possibly shorter)
 * @count:   1..TP_UDP_MAX_BATCH
 *
 * The messages go in order; the first one the kernel refuses ends the batch.
 *
 * Return: the number of messages (records) sent (>= 1, possibly fewer than @count:
 * the next one's error is returned by the next call), or, when the first one fails,
 * -EAGAIN (socket buffer full) or -errno (-EINVAL for a bad record, or from the
 * kernel, as -EIO and -ENOPROTOOPT, for a segmented message it cannot send so,
 * -EMSGSIZE, -ENETUNREACH, -EPERM...).
 */
int32_t tp_udp_send_batch(int32_t fd, const uint8_t *buf, uint32_t buf_len,
			  const uint8_t *records, uint32_t count)
{
	struct mmsghdr msgs[TP_UDP_MAX_BATCH];
	struct iovec iov[TP_UDP_MAX_BATCH];
	struct sockaddr_storage to[TP_UDP_MAX_BATCH];
	union {
		char buf[SEGMENT_CONTROL_SPACE];
		struct cmsghdr align;
	} control[TP_UDP_MAX_BATCH];
	uint32_t i;
	int n;

	if (count == 0 || count > TP_UDP_MAX_BATCH)
		return -EINVAL;
	memset(msgs, 0, sizeof(msgs[0]) * count);
	for (i = 0; i < count; i++) {
		const uint8_t *record = records + (size_t)i * TP_UDP_RECORD_SIZE;
		uint32_t offset = record_word(record, TP_UDP_RECORD_OFFSET);
		uint32_t length = record_word(record, TP_UDP_RECORD_LENGTH);
		uint32_t port = record_word(record, TP_UDP_RECORD_PORT);
		uint32_t segment = record_word(record, TP_UDP_RECORD_SEGMENT);
		uint32_t addr_len;
		socklen_t to_len;

		if ((uint64_t)offset + length > buf_len || port > 65535 || segment > UINT16_MAX)
			return -EINVAL;
		iov[i].iov_base = (void *)(buf + offset);
		iov[i].iov_len = length;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
		if (segment != 0) {
			struct cmsghdr *cmsg;
			uint16_t segment_size = (uint16_t)segment;

			msgs[i].msg_hdr.msg_control = control[i].buf;
			msgs[i].msg_hdr.msg_controllen = sizeof(control[i].buf);
			cmsg = CMSG_FIRSTHDR(&msgs[i].msg_hdr);
			cmsg->cmsg_level = SOL_UDP;
			cmsg->cmsg_type = UDP_SEGMENT;
			cmsg->cmsg_len = CMSG_LEN(sizeof(segment_size));
			memcpy(CMSG_DATA(cmsg), &segment_size, sizeof(segment_size));
		}
		addr_len = record_word(record, TP_UDP_RECORD_ADDR_LEN);
		if (addr_len == 0)
			continue; /* to the connected peer: no address, no route lookup */
		to_len = tp_fill_sockaddr(&to[i], record + TP_UDP_RECORD_ADDR, addr_len, port,
					   record_word(record, TP_UDP_RECORD_SCOPE));
		if (to_len == 0)
			return -EINVAL;
		msgs[i].msg_hdr.msg_name = &to[i];
		msgs[i].msg_hdr.msg_namelen = to_len;
	}
	do {
		n = sendmmsg(fd, msgs, count, MSG_DONTWAIT | MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : n;
}
