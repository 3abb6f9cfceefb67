/*
 * epoll.c - epoll instances for the event loop.
 *
 * On x86_64, struct epoll_event is packed: 12 bytes, u32 events at offset 0 and the
 * u64 data at offset 4 (low half at 4, high half at 8, little-endian). Callers
 * decode the wait buffer with that layout; tp_epoll_event_size() confirms it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sys/epoll.h>
#include <time.h>

#include "tpasst_helper.h"

/*
 * tp_epoll_create() - create an epoll instance.
 *
 * Return: the epoll fd (CLOEXEC), or -errno.
 */
int32_t tp_epoll_create(void)
{
	int fd = epoll_create1(EPOLL_CLOEXEC);

	return fd < 0 ? -errno : fd;
}

/*
 * tp_epoll_ctl() - add, modify or remove a watched descriptor.
 * @epfd:    epoll instance
 * @op:      EPOLL_CTL_ADD (1), EPOLL_CTL_DEL (2) or EPOLL_CTL_MOD (3)
 * @fd:      descriptor to watch
 * @events:  EPOLLIN | EPOLLOUT | EPOLLET ... (ignored for EPOLL_CTL_DEL)
 * @data_lo: low 32 bits of the u64 returned with each event for @fd
 * @data_hi: high 32 bits of that u64
 *
 * Return: 0, or -errno (-EEXIST, -ENOENT, -EPERM for regular files...).
 */
int32_t tp_epoll_ctl(int32_t epfd, int32_t op, int32_t fd, uint32_t events, uint32_t data_lo,
		     uint32_t data_hi)
{
	struct epoll_event event = {
		.events = events,
		.data.u64 = ((uint64_t)data_hi << 32) | data_lo,
	};

	return epoll_ctl(epfd, op, fd, &event) < 0 ? -errno : 0;
}

/*
 * tp_epoll_wait() - wait for events.
 * @epfd:       epoll instance
 * @events_out: buffer of at least @max_events * tp_epoll_event_size() bytes
 * @max_events: capacity of @events_out in events, > 0
 * @timeout_ms: -1 to wait forever, 0 to poll, or a timeout in milliseconds
 *
 * EINTR is reported as 0 events rather than retried, so a timeout is never extended.
 *
 * Return: number of events stored, or -errno.
 */
int32_t tp_epoll_wait(int32_t epfd, uint8_t *events_out, int32_t max_events,
		      int32_t timeout_ms)
{
	int n = epoll_wait(epfd, (struct epoll_event *)(void *)events_out, max_events,
			   timeout_ms);

	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	return n;
}

/*
 * tp_epoll_wait_us() - wait for events, with a timeout in microseconds.
 * @epfd:       epoll instance
 * @events_out: buffer of at least @max_events * tp_epoll_event_size() bytes
 * @max_events: capacity of @events_out in events, > 0
 * @timeout_us: -1 to wait forever, 0 to poll, or a timeout in microseconds
 *
 * epoll_pwait2() (Linux 5.11), which takes a struct timespec: tp_epoll_wait() cannot
 * wait less than a millisecond. EINTR is reported as 0 events, as there.
 *
 * Return: number of events stored, or -errno (-ENOSYS before Linux 5.11).
 */
int32_t tp_epoll_wait_us(int32_t epfd, uint8_t *events_out, int32_t max_events,
			 int32_t timeout_us)
{
	struct timespec timeout = {
		.tv_sec = timeout_us / 1000000,
		.tv_nsec = (long)(timeout_us % 1000000) * 1000,
	};
	int n = epoll_pwait2(epfd, (struct epoll_event *)(void *)events_out, max_events,
			     timeout_us < 0 ? NULL : &timeout, NULL);

	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	return n;
}

/*
 * tp_epoll_event_size() - size of struct epoll_event in this build (12 on x86_64).
 *
 * Return: sizeof(struct epoll_event).
 */
int32_t tp_epoll_event_size(void)
{
	return (int32_t)sizeof(struct epoll_event);
}
