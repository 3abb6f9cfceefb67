/*
 * fd_io.c - plain reads and writes on file descriptors, closing them, and unix
 * socket messages carrying file descriptors (SCM_RIGHTS).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "tpasst_helper.h"

/* Longest transfer one call does, so that the byte count fits the int32 result. */
#define MAX_TRANSFER ((uint32_t)INT32_MAX)

/*
 * tp_close() - close a file descriptor.
 * @fd: descriptor to close
 *
 * EINTR is not retried: on Linux the descriptor is released even then.
 *
 * Return: 0, or -errno (-EBADF if @fd was not open).
 */
int32_t tp_close(int32_t fd)
{
	if (close(fd) < 0 && errno != EINTR)
		return -errno;
	return 0;
}

/*
 * tp_read() - read up to @len bytes from @fd.
 * @fd:  descriptor (blocking or not)
 * @buf: destination
 * @len: capacity of @buf
 *
 * Return: bytes read (0 at end of file), -EAGAIN if a nonblocking fd has nothing,
 * or another -errno.
 */
int32_t tp_read(int32_t fd, uint8_t *buf, uint32_t len)
{
	ssize_t n;

	if (len > MAX_TRANSFER)
		len = MAX_TRANSFER;
	do {
		n = read(fd, buf, len);
	} while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : (int32_t)n;
}

/*
 * tp_write() - write up to @len bytes to @fd with write(2).
 * @fd:  descriptor (files, pipes; for sockets use tp_send_fds, which never raises
 *       SIGPIPE)
 * @buf: source
 * @len: number of bytes
 *
 * Return: bytes written (possibly fewer than @len), -EAGAIN if a nonblocking fd is
 * full, or another -errno.
 */
int32_t tp_write(int32_t fd, const uint8_t *buf, uint32_t len)
{
	ssize_t n;

	if (len > MAX_TRANSFER)
		len = MAX_TRANSFER;
	do {
		n = write(fd, buf, len);
	} while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : (int32_t)n;
}

/*
 * tp_recv_fds() - receive bytes and any file descriptors sent with them.
 * @fd:       unix socket
 * @buf:      destination for the bytes
 * @len:      capacity of @buf
 * @fds_out:  receives up to @max_fds descriptors (int32_t[max_fds]); may be NULL
 *            when @max_fds is 0
 * @max_fds:  how many descriptors the caller accepts
 * @info_out: uint32_t[2]: [0] number of descriptors stored in @fds_out,
 *            [1] TP_RECV_FDS_DROPPED | TP_RECV_CTRUNC flags
 *
 * The control buffer has room for TP_SCM_MAX_FD descriptors, the most the kernel
 * puts in one message, so every descriptor sent arrives here; those beyond @max_fds
 * are closed at once (all of them when @max_fds is 0) and TP_RECV_FDS_DROPPED is
 * set. If the kernel still truncated the control data (MSG_CTRUNC, e.g. credentials
 * took room, or the fd limit was hit), the lost descriptors were never installed;
 * TP_RECV_CTRUNC reports it. Received descriptors carry FD_CLOEXEC.
 *
 * Return: bytes received (0 = orderly shutdown by the peer), -EAGAIN if a
 * nonblocking socket has nothing, or another -errno (no descriptor is kept then).
 */
int32_t tp_recv_fds(int32_t fd, uint8_t *buf, uint32_t len, int32_t *fds_out,
		    uint32_t max_fds, uint32_t *info_out)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * TP_SCM_MAX_FD)];
	} control;
	struct iovec iov = { .iov_base = buf, .iov_len = len > MAX_TRANSFER ? MAX_TRANSFER : len };
	struct msghdr msg = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = control.buf,
		.msg_controllen = sizeof(control.buf),
	};
	struct cmsghdr *cmsg;
	uint32_t kept = 0, flags = 0;
	ssize_t n;

	info_out[0] = 0;
	info_out[1] = 0;
	do {
		n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;

	for (cmsg = CMSG_FIRSTHDR(&msg); cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
		size_t count, i;

		if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS)
			continue;
		count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (i = 0; i < count; i++) {
			int received;

			memcpy(&received, CMSG_DATA(cmsg) + i * sizeof(int), sizeof(int));
			if (kept < max_fds) {
				fds_out[kept++] = received;
			} else {
				close(received);
				flags |= TP_RECV_FDS_DROPPED;
			}
		}
	}
	if (msg.msg_flags & MSG_CTRUNC)
		flags |= TP_RECV_CTRUNC;

	info_out[0] = kept;
	info_out[1] = flags;
	return (int32_t)n;
}

/*
 * tp_send_fds() - send bytes, with file descriptors attached if @nfds > 0.
 * @fd:   unix socket (for @nfds == 0, any connected stream socket)
 * @buf:  bytes to send (at least one byte is needed to carry descriptors)
 * @len:  number of bytes
 * @fds:  descriptors to pass (duplicated into the receiver); may be NULL if @nfds is 0
 * @nfds: number of descriptors, at most TP_SCM_MAX_FD
 *
 * Uses MSG_NOSIGNAL: a closed peer gives -EPIPE, never SIGPIPE.
 *
 * Return: bytes sent (possibly fewer than @len on a nonblocking socket; the
 * descriptors go with the first byte), -EAGAIN if the socket is full, or -errno.
 */
int32_t tp_send_fds(int32_t fd, const uint8_t *buf, uint32_t len, const int32_t *fds,
		    uint32_t nfds)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * TP_SCM_MAX_FD)];
	} control;
	struct iovec iov = { .iov_base = (void *)buf,
			     .iov_len = len > MAX_TRANSFER ? MAX_TRANSFER : len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t n;

	if (nfds > TP_SCM_MAX_FD)
		return -EINVAL;
	if (nfds > 0) {
		struct cmsghdr *cmsg;

		if (len == 0)
			return -EINVAL;
		memset(&control, 0, sizeof(control));
		msg.msg_control = control.buf;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		cmsg = CMSG_FIRSTHDR(&msg);
		cmsg->cmsg_level = SOL_SOCKET;
		cmsg->cmsg_type = SCM_RIGHTS;
		cmsg->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * nfds);
	}
	do {
		n = sendmsg(fd, &msg, MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : (int32_t)n;
}
