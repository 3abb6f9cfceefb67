/*
 * unix_socket.c - AF_UNIX SOCK_STREAM sockets: listen, accept, connect, probe,
 * socketpair and a few socket options; AF_UNIX SOCK_DGRAM sockets for the system
 * logger (/dev/log). Paths are NUL-terminated C strings.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "tpasst_helper.h"

/*
 * fill_unix_address() - build a sockaddr_un for @path.
 * @path:    NUL-terminated filesystem path
 * @addr:    address to fill
 * @len_out: receives the address length to pass to bind()/connect()
 *
 * Return: 0, or -ENAMETOOLONG if the path does not fit sun_path, -EINVAL if empty.
 */
static int fill_unix_address(const char *path, struct sockaddr_un *addr, socklen_t *len_out)
{
	size_t n = strlen(path);

	if (n == 0)
		return -EINVAL;
	if (n >= sizeof(addr->sun_path))
		return -ENAMETOOLONG;
	memset(addr, 0, sizeof(*addr));
	addr->sun_family = AF_UNIX;
	memcpy(addr->sun_path, path, n + 1);
	*len_out = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
	return 0;
}

/*
 * temporary_name_beside() - a name for binding in @path's directory before the socket
 * is moved to @path: "<dir>/.tpasst-<pid>-<fd>.tmp" (the fd makes it unique in this
 * process while the socket is open).
 * @path: the final path
 * @fd:   the socket's fd
 * @out:  receives the name
 * @size: room in @out
 *
 * Return: 0, or -ENAMETOOLONG if the name does not fit @size.
 */
static int temporary_name_beside(const char *path, int fd, char *out, size_t size)
{
	const char *slash = strrchr(path, '/');
	int dir_len = slash ? (int)(slash - path + 1) : 0;
	int n = snprintf(out, size, "%.*s.tpasst-%d-%d.tmp", dir_len, path, (int)getpid(), fd);

	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/*
 * tp_unix_listen() - create a unix stream socket bound to @path and listening.
 * @path:        socket file path; must not exist yet (the caller removes stale files)
 * @backlog:     listen() backlog
 * @nonblocking: non-zero to make the listening socket O_NONBLOCK
 *
 * The socket is bound to a temporary name in the same directory, made listening, and
 * only then renamed to @path (RENAME_NOREPLACE), so that whoever sees @path appear can
 * connect at once: between a bind() and a listen() on @path itself a connect() would
 * get ECONNREFUSED. When the temporary name would not fit sun_path, @path is bound
 * directly.
 *
 * Return: the listening fd (CLOEXEC), or -errno (-EADDRINUSE if @path exists).
 */
int32_t tp_unix_listen(const char *path, int32_t backlog, int32_t nonblocking)
{
	struct sockaddr_un addr, temporary;
	socklen_t len, temporary_len;
	int fd, rc;

	rc = fill_unix_address(path, &addr, &len);
	if (rc < 0)
		return rc;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0);
	if (fd < 0)
		return -errno;
	memset(&temporary, 0, sizeof(temporary));
	temporary.sun_family = AF_UNIX;
	if (temporary_name_beside(path, fd, temporary.sun_path, sizeof(temporary.sun_path)) < 0) {
		if (bind(fd, (struct sockaddr *)&addr, len) < 0 || listen(fd, backlog) < 0) {
			rc = -errno;
			close(fd);
			return rc;
		}
		return fd;
	}
	temporary_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
				    strlen(temporary.sun_path) + 1);
	unlink(temporary.sun_path); /* left by a process that died between bind and rename */
	if (bind(fd, (struct sockaddr *)&temporary, temporary_len) < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	if (listen(fd, backlog) < 0 ||
	    renameat2(AT_FDCWD, temporary.sun_path, AT_FDCWD, path, RENAME_NOREPLACE) < 0) {
		rc = errno == EEXIST ? -EADDRINUSE : -errno;
		unlink(temporary.sun_path);
		close(fd);
		return rc;
	}
	return fd;
}

/*
 * tp_unix_accept() - accept one pending connection.
 * @listen_fd:   listening socket
 * @nonblocking: non-zero to make the accepted socket O_NONBLOCK
 *
 * Return: the connected fd (CLOEXEC), -EAGAIN if none is pending on a nonblocking
 * listener, or another -errno.
 */
int32_t tp_unix_accept(int32_t listen_fd, int32_t nonblocking)
{
	int fd;

	do {
		fd = accept4(listen_fd, NULL, NULL,
			     SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0));
	} while (fd < 0 && errno == EINTR);
	return fd < 0 ? -errno : fd;
}

/*
 * tp_unix_connect() - connect a blocking unix stream socket to @path.
 * @path: socket file path
 *
 * Return: the connected fd (CLOEXEC, blocking), or -errno (-ENOENT, -ECONNREFUSED...).
 */
int32_t tp_unix_connect(const char *path)
{
	struct sockaddr_un addr;
	socklen_t len;
	int fd, rc;

	rc = fill_unix_address(path, &addr, &len);
	if (rc < 0)
		return rc;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	do {
		rc = connect(fd, (struct sockaddr *)&addr, len);
	} while (rc < 0 && errno == EINTR);
	if (rc < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	return fd;
}

/*
 * tp_unix_probe() - tell whether a live listener owns the socket path @path.
 * @path: socket file path
 *
 * A nonblocking connect is tried and the socket closed again at once.
 *
 * Return: 1 if something accepts connections there (a full backlog, -EAGAIN, also
 * counts as in use), 0 if the path is free or a stale socket file (-ENOENT,
 * -ECONNREFUSED), or -errno for anything else (e.g. -EACCES).
 *
 * Note: connecting to a path that exists but is not a socket fails with
 * -ECONNREFUSED on Linux, so a plain file is reported as free (0); a later bind()
 * on it then fails with -EADDRINUSE.
 */
int32_t tp_unix_probe(const char *path)
{
	struct sockaddr_un addr;
	socklen_t len;
	int fd, rc;

	rc = fill_unix_address(path, &addr, &len);
	if (rc < 0)
		return rc;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	do {
		rc = connect(fd, (struct sockaddr *)&addr, len);
	} while (rc < 0 && errno == EINTR);
	if (rc == 0)
		rc = 1;
	else if (errno == EAGAIN || errno == EINPROGRESS)
		rc = 1;
	else if (errno == ENOENT || errno == ECONNREFUSED)
		rc = 0;
	else
		rc = -errno;
	close(fd);
	return rc;
}

/*
 * tp_unix_socketpair() - create a connected pair of unix stream sockets.
 * @fds_out:     receives the two fds (int32_t[2])
 * @nonblocking: non-zero to make both ends O_NONBLOCK
 *
 * Return: 0, or -errno.
 */
int32_t tp_unix_socketpair(int32_t *fds_out, int32_t nonblocking)
{
	int fds[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0,
		       fds) < 0)
		return -errno;
	fds_out[0] = fds[0];
	fds_out[1] = fds[1];
	return 0;
}

/*
 * tp_set_nonblocking() - set or clear O_NONBLOCK on @fd.
 * @fd: any file descriptor
 * @on: non-zero to set, zero to clear
 *
 * Return: 0, or -errno.
 */
int32_t tp_set_nonblocking(int32_t fd, int32_t on)
{
	int flags = fcntl(fd, F_GETFL);

	if (flags < 0)
		return -errno;
	flags = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
	if (fcntl(fd, F_SETFL, flags) < 0)
		return -errno;
	return 0;
}

/*
 * tp_shutdown() - shut down one or both directions of a socket.
 * @fd:  socket
 * @how: SHUT_RD (0), SHUT_WR (1) or SHUT_RDWR (2)
 *
 * Return: 0, or -errno.
 */
int32_t tp_shutdown(int32_t fd, int32_t how)
{
	return shutdown(fd, how) < 0 ? -errno : 0;
}

/*
 * tp_set_passcred() - enable or disable SO_PASSCRED (credentials as ancillary data).
 * @fd: unix socket
 * @on: non-zero to enable
 *
 * Used by tests to make the kernel add an SCM_CREDENTIALS message in front of the
 * SCM_RIGHTS one, which is how a full control buffer (MSG_CTRUNC) is provoked.
 *
 * Return: 0, or -errno.
 */
int32_t tp_set_passcred(int32_t fd, int32_t on)
{
	int value = on ? 1 : 0;

	return setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &value, sizeof(value)) < 0 ? -errno : 0;
}

/*
 * open_unix_dgram() - a nonblocking unix datagram socket, connected or bound to @path.
 * @path: socket file path
 * @bind_it: non-zero to bind() to @path (a receiver), zero to connect() to it (a sender)
 *
 * Return: the fd (NONBLOCK, CLOEXEC), or -errno.
 */
static int32_t open_unix_dgram(const char *path, int bind_it)
{
	struct sockaddr_un addr;
	socklen_t len;
	int fd, rc;

	rc = fill_unix_address(path, &addr, &len);
	if (rc < 0)
		return rc;
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	rc = bind_it ? bind(fd, (struct sockaddr *)&addr, len)
		     : connect(fd, (struct sockaddr *)&addr, len);
	if (rc < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	return fd;
}

/*
 * tp_unix_dgram_connect() - a unix datagram socket connected to @path, e.g. the
 * system logger's /dev/log; send with tp_send(), which never blocks.
 * @path: socket file path
 *
 * Return: the fd (NONBLOCK, CLOEXEC), or -errno (-ENOENT, -ECONNREFUSED...).
 */
int32_t tp_unix_dgram_connect(const char *path)
{
	return open_unix_dgram(path, 0);
}

/*
 * tp_unix_dgram_bind() - a unix datagram socket bound to @path, receiving with
 * tp_recv() (tests stand in for the system logger with it).
 * @path: socket file path; must not exist yet
 *
 * Return: the fd (NONBLOCK, CLOEXEC), or -errno (-EADDRINUSE...).
 */
int32_t tp_unix_dgram_bind(const char *path)
{
	return open_unix_dgram(path, 1);
}
