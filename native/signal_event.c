/*
 * signal_event.c - a signal that only counts on an eventfd.
 *
 * tp_signal_event_install() gives one signal a handler of its own that adds 1 to an
 * eventfd and does nothing else; the event loop watches the eventfd. Nothing else
 * in the process sees that signal any more: the disposition is replaced, not
 * chained. The daemon takes SIGUSR1 (its statistics dump) this way because the
 * Deno runtime answers SIGUSR1 itself by starting a V8 inspector server on
 * 127.0.0.1:9229, which would let any local user run code in the daemon.
 *
 * Like memory_guard.c this keeps process-wide state, a table of one eventfd per
 * signal number: a signal disposition is process-wide. The handler reads the table
 * with an atomic load and calls only write().
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "tpasst_helper.h"

/* The eventfd of each signal number taken (valid where signal_event_taken is 1). */
static _Atomic int32_t signal_event_fds[TP_SIGNAL_EVENT_LIMIT];

/* Which entries of signal_event_fds hold an eventfd (0 is a valid fd number). */
static _Atomic uint32_t signal_event_taken[TP_SIGNAL_EVENT_LIMIT];

/* Serialises installs (never taken by the handler). */
static pthread_mutex_t signal_event_lock = PTHREAD_MUTEX_INITIALIZER;

/*
 * signal_event_handler() - the handler: count the signal on its eventfd.
 * @sig: the signal number
 */
static void signal_event_handler(int sig)
{
	int saved_errno = errno;
	uint64_t one = 1;

	if (sig > 0 && sig < TP_SIGNAL_EVENT_LIMIT &&
	    atomic_load_explicit(&signal_event_taken[sig], memory_order_acquire))
		(void)!write(atomic_load_explicit(&signal_event_fds[sig], memory_order_relaxed),
			     &one, sizeof(one));
	errno = saved_errno;
}

/*
 * signal_event_allowed() - whether @signo may be taken: only the two user-defined
 * signals. Any other would take a signal from the runtime's own handling (SIGINT,
 * SIGTERM), or from memory_guard.c (SIGBUS), or turn a fault into an endless re-fault.
 * @signo: a signal number
 */
static int signal_event_allowed(int32_t signo)
{
	return signo == SIGUSR1 || signo == SIGUSR2;
}

/*
 * tp_signal_event_install() - take @signo for an eventfd, once per signal.
 * @signo: SIGUSR1 or SIGUSR2 (signal_event_allowed())
 *
 * The first call for a signal pins this library and creates the eventfd
 * (handler_eventfd.c), and installs the handler (SA_RESTART: an interrupted
 * system call elsewhere is restarted); later calls return the same eventfd. Each
 * signal adds 1 to the eventfd's counter. The eventfd lives as long as the process
 * and must not be closed.
 *
 * Return: the eventfd, or -errno (-EINVAL for any other signal, -ELIBACC when the
 * library cannot be pinned).
 */
int32_t tp_signal_event_install(int32_t signo)
{
	struct sigaction action;
	int32_t fd, rc;

	if (!signal_event_allowed(signo))
		return -EINVAL;
	pthread_mutex_lock(&signal_event_lock);
	if (atomic_load_explicit(&signal_event_taken[signo], memory_order_acquire)) {
		fd = atomic_load_explicit(&signal_event_fds[signo], memory_order_relaxed);
		goto out;
	}
	fd = tp_internal_handler_eventfd();
	if (fd < 0)
		goto out;
	/* published before the handler exists: it reads the table without a lock */
	atomic_store_explicit(&signal_event_fds[signo], fd, memory_order_relaxed);
	atomic_store_explicit(&signal_event_taken[signo], 1, memory_order_release);
	memset(&action, 0, sizeof(action));
	action.sa_handler = signal_event_handler;
	action.sa_flags = SA_RESTART;
	sigemptyset(&action.sa_mask);
	if (sigaction(signo, &action, NULL) < 0) {
		rc = -errno;
		atomic_store_explicit(&signal_event_taken[signo], 0, memory_order_release);
		close(fd);
		fd = rc;
	}
out:
	pthread_mutex_unlock(&signal_event_lock);
	return fd;
}
