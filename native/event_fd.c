/*
 * event_fd.c - eventfd counters: the vhost-user kick and call notifiers, and the
 * event loop's stop signal.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "tpasst_helper.h"

/*
 * tp_eventfd_create() - create a nonblocking eventfd counter.
 * @initval:   initial counter value
 * @semaphore: non-zero for EFD_SEMAPHORE (each read takes 1 off the counter; only
 *             tests make these, to check that such fds are refused)
 *
 * Return: the eventfd (NONBLOCK, CLOEXEC), or -errno.
 */
int32_t tp_eventfd_create(uint32_t initval, int32_t semaphore)
{
	int fd = eventfd(initval, EFD_NONBLOCK | EFD_CLOEXEC | (semaphore ? EFD_SEMAPHORE : 0));

	return fd < 0 ? -errno : fd;
}

/*
 * tp_eventfd_read() - read and reset the counter of an eventfd.
 * @fd:        eventfd (not in semaphore mode)
 * @value_out: receives the counter value read (0 if nothing was pending)
 *
 * Return: 1 if a value was read, 0 if the counter was zero (-EAGAIN on a
 * nonblocking eventfd, reported as 0), or -errno.
 */
int32_t tp_eventfd_read(int32_t fd, uint64_t *value_out)
{
	uint64_t value;
	ssize_t n;

	*value_out = 0;
	do {
		n = read(fd, &value, sizeof(value));
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EAGAIN ? 0 : -errno;
	if (n != sizeof(value))
		return -EIO;
	*value_out = value;
	return 1;
}

/*
 * tp_eventfd_write() - add @increment to the counter of an eventfd, waking its readers.
 * @fd:    eventfd (any fd that accepts 8-byte counter writes)
 * @increment: amount to add (a u32: larger increments are never needed)
 *
 * Return: 0, -EAGAIN if the counter would overflow on a nonblocking eventfd, or -errno.
 */
int32_t tp_eventfd_write(int32_t fd, uint32_t increment)
{
	uint64_t value = increment;
	ssize_t n;

	do {
		n = write(fd, &value, sizeof(value));
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return n == sizeof(value) ? 0 : -EIO;
}
