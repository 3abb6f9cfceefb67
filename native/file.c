/*
 * file.c - output files (pid, log, pcap), file removal, the open-fd count used by
 * leak tests, and what kind of file a received descriptor is (fstat, the links of
 * /proc/self/fd). The daemon has no Deno write permission: these go through here.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tpasst_helper.h"

/*
 * tp_file_open() - open @path for writing, creating it with mode 0644.
 * @path:   NUL-terminated path
 * @append: non-zero for O_APPEND (keep content), zero for O_TRUNC (start empty)
 *
 * Return: the fd (CLOEXEC), or -errno.
 */
int32_t tp_file_open(const char *path, int32_t append)
{
	int fd;

	do {
		fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC),
			  0644);
	} while (fd < 0 && errno == EINTR);
	return fd < 0 ? -errno : fd;
}

/*
 * tp_unlink() - remove the file (or socket file) at @path.
 * @path: NUL-terminated path
 *
 * Return: 0, or -errno (-ENOENT if it did not exist).
 */
int32_t tp_unlink(const char *path)
{
	return unlink(path) < 0 ? -errno : 0;
}

/*
 * tp_open_fd_count() - count this process's open file descriptors.
 *
 * Counts the entries of /proc/self/fd, not counting the descriptor used to read it.
 *
 * Return: the count, or -errno.
 */
int32_t tp_open_fd_count(void)
{
	struct dirent *entry;
	int32_t count = 0;
	DIR *dir;
	int dir_fd;

	dir = opendir("/proc/self/fd");
	if (!dir)
		return -errno;
	dir_fd = dirfd(dir);
	while ((entry = readdir(dir)) != NULL) {
		const char *name = entry->d_name;
		int value = 0;

		if (name[0] < '0' || name[0] > '9')
			continue;
		for (; *name >= '0' && *name <= '9'; name++)
			value = value * 10 + (*name - '0');
		if (value != dir_fd)
			count++;
	}
	closedir(dir);
	return count;
}

/*
 * tp_read_small_file() - read the start of a (kernel) file such as /proc/net/route.
 * @path: NUL-terminated path
 * @buf:  where the bytes go
 * @len:  capacity of @buf; at most this many bytes are read
 *
 * Deno refuses /proc/net and /sys/class/net (links into /proc/self and /sys/devices)
 * unless it runs with --allow-all; host configuration discovery reads them here.
 *
 * Return: the number of bytes read (a file longer than @len is cut), or -errno.
 */
int32_t tp_read_small_file(const char *path, uint8_t *buf, uint32_t len)
{
	uint32_t done = 0;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	while (done < len) {
		ssize_t n = read(fd, buf + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int err = errno;

			close(fd);
			return -err;
		}
		if (n == 0)
			break;
		done += (uint32_t)n;
	}
	close(fd);
	return (int32_t)done;
}

/*
 * tp_readlink() - read the target of a symbolic link, such as /proc/self/fd/N.
 * @path: NUL-terminated path of the link
 * @buf:  where the target goes (not NUL-terminated)
 * @len:  capacity of @buf; a longer target is cut
 *
 * Return: the number of bytes stored, or -errno.
 */
int32_t tp_readlink(const char *path, uint8_t *buf, uint32_t len)
{
	ssize_t n = readlink(path, (char *)buf, len);

	return n < 0 ? -errno : (int32_t)n;
}

/*
 * tp_fd_mode() - the st_mode of an open descriptor (fstat): file type and permissions.
 * @fd: descriptor to examine
 *
 * Return: st_mode (the S_IFMT bits are 0 for anonymous inodes such as eventfds), or
 * -errno.
 */
int32_t tp_fd_mode(int32_t fd)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	return (int32_t)st.st_mode;
}

/*
 * tp_pipe() - create a pipe (tests hand its ends over where eventfds belong).
 * @fds_out: receives the read end, then the write end (both CLOEXEC)
 *
 * Return: 0, or -errno.
 */
int32_t tp_pipe(int32_t *fds_out)
{
	int fds[2];

	if (pipe2(fds, O_CLOEXEC) < 0)
		return -errno;
	fds_out[0] = fds[0];
	fds_out[1] = fds[1];
	return 0;
}
