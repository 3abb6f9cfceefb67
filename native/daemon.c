/*
 * daemon.c - start a detached copy of the running program (Deno cannot fork).
 *
 * The copy runs /proc/self/exe with the arguments of /proc/self/cmdline, so it
 * works for `deno run ... main.ts args` as for a `deno compile`d binary, followed by
 * the caller's extra arguments and "<ready_option>=<fd>", where <fd> is the write
 * end of a readiness pipe. The child writes one byte there once it serves
 * (tp_daemon_signal_ready); the parent waits for it (tp_daemon_wait_ready).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tpasst_helper.h"

/* The most kept descriptors accepted (plus the readiness pipe). */
#define MAX_KEEP_FDS 64

/* Byte the child writes to report readiness. */
#define READY_BYTE 'R'

/*
 * read_cmdline() - read /proc/self/cmdline into a malloc'ed buffer.
 * @len_out: receives the number of bytes (each argument ends with a NUL)
 *
 * Return: the buffer (caller frees), or NULL with errno set.
 */
static char *read_cmdline(size_t *len_out)
{
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);
	int fd;

	if (!buf)
		return NULL;
	fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		free(buf);
		return NULL;
	}
	for (;;) {
		ssize_t n;

		if (len == cap) {
			char *bigger = realloc(buf, cap * 2);

			if (!bigger) {
				close(fd);
				free(buf);
				errno = ENOMEM;
				return NULL;
			}
			buf = bigger;
			cap *= 2;
		}
		n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int saved = errno;

			close(fd);
			free(buf);
			errno = saved;
			return NULL;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	if (len == 0 || buf[len - 1] != '\0') {
		free(buf);
		errno = EINVAL;
		return NULL;
	}
	*len_out = len;
	return buf;
}

/*
 * count_strings() - count NUL-terminated strings packed in @buf.
 * @buf: strings, each followed by a NUL
 * @len: total bytes; must end with a NUL unless 0
 *
 * Return: the count, or -1 if the last string is not terminated.
 */
static long count_strings(const char *buf, size_t len)
{
	long count = 0;
	size_t i;

	if (len == 0)
		return 0;
	if (buf[len - 1] != '\0')
		return -1;
	for (i = 0; i < len; i++)
		if (buf[i] == '\0')
			count++;
	return count;
}

/*
 * add_strings() - append pointers to the packed strings of @buf to @argv.
 * @argv: array with room for all strings
 * @argc: index of the next free slot
 * @buf:  packed NUL-terminated strings
 * @len:  their total length
 *
 * Return: the next free index.
 */
static long add_strings(char **argv, long argc, char *buf, size_t len)
{
	size_t start = 0, i;

	for (i = 0; i < len; i++) {
		if (buf[i] == '\0') {
			argv[argc++] = buf + start;
			start = i + 1;
		}
	}
	return argc;
}

/*
 * compare_ints() - qsort comparator for ints, ascending.
 */
static int compare_ints(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;

	return (x > y) - (x < y);
}

/*
 * close_other_fds() - in the child: close every fd >= 3 not in @keep.
 * @keep:   sorted descriptors to keep, all >= 3
 * @nkeep:  their number
 * @max_fd: fallback upper bound if close_range() is unavailable
 *
 * Only async-signal-safe calls: this runs between fork() and execv() of a
 * multi-threaded process.
 */
static void close_other_fds(const int *keep, int nkeep, int max_fd)
{
	unsigned int low = 3;
	int i, fd;

	for (i = 0; i <= nkeep; i++) {
		unsigned int high = i < nkeep ? (unsigned int)keep[i] : ~0U;

		if (high > low) {
			if (close_range(low, high - 1, 0) < 0) {
				for (fd = (int)low; fd < max_fd && (unsigned int)fd < high; fd++)
					close(fd);
			}
		}
		if (i < nkeep)
			low = (unsigned int)keep[i] + 1;
	}
}

/*
 * tp_daemon_spawn() - start a detached copy of this program.
 * @extra_args:     extra arguments, each NUL-terminated, packed back to back
 * @extra_args_len: total bytes of @extra_args (0 for none)
 * @keep_fds:       descriptors the child keeps under the same numbers (each >= 3),
 *                  e.g. the socket of `--fd 3`; may be NULL if @nkeep is 0
 * @nkeep:          their number, at most 64
 * @ready_option:   option name for the readiness fd, e.g. "--daemon-ready-fd"; the
 *                  child gets "<ready_option>=<fd>" as its last argument
 * @out:            int32_t[2]: [0] child pid, [1] read end of the readiness pipe
 *                  (CLOEXEC; pass it to tp_daemon_wait_ready, then close it)
 *
 * The child calls setsid(), points stdin/stdout/stderr at /dev/null, unblocks all
 * signals, closes every other descriptor and execs /proc/self/exe with
 * /proc/self/cmdline + @extra_args + the readiness option. The working directory is
 * kept so relative paths in the command line stay valid.
 *
 * Return: 0, or -errno (-EBADF if a kept fd is not open, -EINVAL for a kept fd < 3
 * or unterminated @extra_args). If exec fails the child exits with status 127.
 */
int32_t tp_daemon_spawn(const char *extra_args, uint32_t extra_args_len, const int32_t *keep_fds,
			uint32_t nkeep, const char *ready_option, int32_t *out)
{
	int keep[MAX_KEEP_FDS + 1];
	char ready_arg[128];
	char *cmdline, *extra = NULL;
	char **argv = NULL;
	size_t cmdline_len;
	long nextra, ncmd, argc;
	struct rlimit limit;
	int pipe_fds[2], devnull, max_fd, rc;
	uint32_t i;
	pid_t pid;

	out[0] = -1;
	out[1] = -1;
	if (nkeep > MAX_KEEP_FDS)
		return -E2BIG;
	for (i = 0; i < nkeep; i++) {
		if (keep_fds[i] < 3)
			return -EINVAL;
		if (fcntl(keep_fds[i], F_GETFD) < 0)
			return -errno;
		keep[i] = keep_fds[i];
	}
	nextra = count_strings(extra_args, extra_args_len);
	if (nextra < 0)
		return -EINVAL;
	max_fd = getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < 1048576 ?
			 (int)limit.rlim_cur : 1048576;

	cmdline = read_cmdline(&cmdline_len);
	if (!cmdline)
		return -errno;
	ncmd = count_strings(cmdline, cmdline_len);
	extra = malloc(extra_args_len + 1);
	argv = calloc((size_t)(ncmd + nextra + 2), sizeof(char *));
	if (!extra || !argv) {
		rc = -ENOMEM;
		goto out_free;
	}
	if (extra_args_len > 0)
		memcpy(extra, extra_args, extra_args_len);

	if (pipe2(pipe_fds, O_CLOEXEC) < 0) {
		rc = -errno;
		goto out_free;
	}
	devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (devnull < 0) {
		rc = -errno;
		goto out_close_pipe;
	}
	if (snprintf(ready_arg, sizeof(ready_arg), "%s=%d", ready_option, pipe_fds[1]) >=
	    (int)sizeof(ready_arg)) {
		rc = -ENAMETOOLONG;
		goto out_close_all;
	}
	argc = add_strings(argv, 0, cmdline, cmdline_len);
	argc = add_strings(argv, argc, extra, extra_args_len);
	argv[argc++] = ready_arg;
	argv[argc] = NULL;

	keep[nkeep] = pipe_fds[1];
	qsort(keep, nkeep + 1, sizeof(int), compare_ints);

	pid = fork();
	if (pid < 0) {
		rc = -errno;
		goto out_close_all;
	}
	if (pid == 0) {
		sigset_t none;

		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		setsid();
		if (dup2(devnull, 0) < 0 || dup2(devnull, 1) < 0 || dup2(devnull, 2) < 0)
			_exit(127);
		for (i = 0; i <= nkeep; i++)
			if (fcntl(keep[i], F_SETFD, 0) < 0)
				_exit(127);
		close_other_fds(keep, (int)nkeep + 1, max_fd);
		execv("/proc/self/exe", argv);
		_exit(127);
	}

	out[0] = pid;
	out[1] = pipe_fds[0];
	close(pipe_fds[1]);
	close(devnull);
	free(argv);
	free(extra);
	free(cmdline);
	return 0;

out_close_all:
	close(devnull);
out_close_pipe:
	close(pipe_fds[0]);
	close(pipe_fds[1]);
out_free:
	free(argv);
	free(extra);
	free(cmdline);
	return rc;
}

/*
 * decode_status() - turn a waitpid() status into one number.
 * @status: raw status
 *
 * Return: the exit code, or 128 + signal number if the child was killed.
 */
static int32_t decode_status(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return -1;
}

/*
 * monotonic_ms() - CLOCK_MONOTONIC in milliseconds.
 */
static int64_t monotonic_ms(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/*
 * tp_daemon_wait_ready() - wait for a spawned child's readiness byte.
 * @ready_fd:   read end of the readiness pipe (from tp_daemon_spawn); not closed here
 * @pid:        the child's pid
 * @timeout_ms: how long to wait at most, >= 0
 * @status_out: receives the child's exit code (128 + signal if killed) when it exited
 *
 * If the pipe reports end of file without the byte, the child closed it or exited;
 * it is then reaped with waitpid(WNOHANG), retried every millisecond until the
 * timeout.
 *
 * Return: TP_DAEMON_READY (1), TP_DAEMON_EXITED (2, status in @status_out),
 * TP_DAEMON_TIMEOUT (0), or -errno.
 */
int32_t tp_daemon_wait_ready(int32_t ready_fd, int32_t pid, int32_t timeout_ms,
			     int32_t *status_out)
{
	int64_t deadline = monotonic_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
	struct pollfd pfd = { .fd = ready_fd, .events = POLLIN };
	int status, rc;
	char byte;
	ssize_t n;

	*status_out = 0;
	for (;;) {
		int64_t left = deadline - monotonic_ms();

		rc = poll(&pfd, 1, left > 0 ? (int)left : 0);
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc < 0)
			return -errno;
		if (rc == 0)
			return TP_DAEMON_TIMEOUT;
		n = read(ready_fd, &byte, 1);
		if (n == 1)
			return TP_DAEMON_READY;
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0)
			return -errno;
		break; /* end of file: the child is gone or closed the pipe */
	}
	for (;;) {
		struct timespec pause = { .tv_sec = 0, .tv_nsec = 1000000 };
		pid_t reaped = waitpid(pid, &status, WNOHANG);

		if (reaped == pid) {
			*status_out = decode_status(status);
			return TP_DAEMON_EXITED;
		}
		if (reaped < 0 && errno != EINTR)
			return -errno;
		if (monotonic_ms() >= deadline)
			return TP_DAEMON_TIMEOUT;
		nanosleep(&pause, NULL);
	}
}

/*
 * tp_daemon_signal_ready() - child side: report readiness and close the pipe.
 * @ready_fd: the fd named by the readiness option
 *
 * The fd is closed in every case.
 *
 * Return: 0, or -errno if the byte could not be written (e.g. -EPIPE when the
 * parent is gone already).
 */
int32_t tp_daemon_signal_ready(int32_t ready_fd)
{
	const char byte = READY_BYTE;
	ssize_t n;
	int rc = 0;

	do {
		n = write(ready_fd, &byte, 1);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		rc = -errno;
	close(ready_fd);
	return rc;
}

/*
 * tp_waitpid() - reap a child process.
 * @pid:        the child's pid
 * @nohang:     non-zero to return at once if it is still running
 * @status_out: receives the exit code (128 + signal if killed)
 *
 * Return: @pid when reaped, 0 if still running (with @nohang), or -errno (-ECHILD).
 */
int32_t tp_waitpid(int32_t pid, int32_t nohang, int32_t *status_out)
{
	int status;
	pid_t reaped;

	*status_out = 0;
	do {
		reaped = waitpid(pid, &status, nohang ? WNOHANG : 0);
	} while (reaped < 0 && errno == EINTR);
	if (reaped < 0)
		return -errno;
	if (reaped > 0)
		*status_out = decode_status(status);
	return reaped;
}
