/*
 * memory_guard.c - survive guest memory whose file shrinks under its mapping.
 *
 * A vhost-user front-end can ftruncate() the file behind a region it shared; the
 * next touch of a page beyond the new end raises SIGBUS, which would kill the
 * daemon. F_SEAL_SHRINK prevents that only for files that allow sealing (not for
 * memfds made without MFD_ALLOW_SEALING, nor for tmpfs or hugetlbfs files).
 *
 * So mappings of guest memory are registered here, and a SIGBUS handler catches
 * faults inside them: it maps anonymous zero pages over the whole registered
 * mapping (MAP_FIXED, same address and length: every view of it stays valid, the
 * faulting instruction runs again and reads zeros, no further fault comes), marks
 * the mapping faulted and signals an eventfd, so that the event loop can drop the
 * front-end. A SIGBUS anywhere else goes to the disposition that was in place
 * before (Deno's Rust runtime installs one: it puts back SIG_DFL and returns, and
 * the fault, raised again, ends the process).
 *
 * This file is the one exception to the helper's "no global state": a signal
 * handler is process-wide, and so is the registry it reads. The registry is a
 * fixed table of slots whose fields are C11 atomics; the handler only reads it
 * (plus the faulted flag), takes no lock and calls only mmap() and write(), which
 * are plain system calls. Slots are claimed with compare-and-swap, so a
 * registration never blocks the handler nor the other way round.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "tpasst_helper.h"

/* Slot states: free, being filled in by a registration, watched by the handler. */
enum { SLOT_FREE = 0, SLOT_CLAIMED = 1, SLOT_ACTIVE = 2 };

struct guard_slot {
	_Atomic uint32_t state;
	_Atomic uint32_t faulted;  /* 1 once the handler replaced the mapping */
	_Atomic uintptr_t start;
	_Atomic uintptr_t length;
};

static struct guard_slot guard_slots[TP_MEMORY_GUARD_SLOTS];

/* The eventfd the handler writes to, -1 until tp_memory_guard_install(). */
static _Atomic int32_t guard_event_fd = -1;

/* SIGBUS disposition found at install time: where foreign faults go. */
static struct sigaction guard_previous;

/* Serialises the one-time install (never taken by the handler). */
static pthread_mutex_t guard_install_lock = PTHREAD_MUTEX_INITIALIZER;

/*
 * guard_chain() - hand a SIGBUS the guard does not own to the previous disposition.
 * @sig, @info, @context: as received by the handler
 *
 * A previous handler is called as it would have been. Without one (SIG_DFL, or
 * SIG_IGN, which the kernel overrides for faults), the previous disposition is put
 * back: a fault is then raised again when the handler returns and ends the process
 * with SIGBUS; a signal sent with kill() is raised again for the same result.
 */
static void guard_chain(int sig, siginfo_t *info, void *context)
{
	if (guard_previous.sa_flags & SA_SIGINFO) {
		if (guard_previous.sa_sigaction != NULL) {
			guard_previous.sa_sigaction(sig, info, context);
			return;
		}
	} else if (guard_previous.sa_handler != SIG_DFL && guard_previous.sa_handler != SIG_IGN) {
		guard_previous.sa_handler(sig);
		return;
	}
	(void)sigaction(SIGBUS, &guard_previous, NULL);
	if (info->si_code <= 0)
		(void)raise(sig);
}

/*
 * guard_on_sigbus() - the SIGBUS handler.
 * @sig:     SIGBUS
 * @info:    si_addr is the faulting address for faults (si_code > 0)
 * @context: passed on to a chained handler
 *
 * A fault inside a registered mapping: anonymous memory replaces the mapping, the
 * slot is marked faulted and the eventfd signalled; returning re-runs the faulting
 * access, which now sees zeros. Anything else is chained (guard_chain()).
 */
static void guard_on_sigbus(int sig, siginfo_t *info, void *context)
{
	int saved_errno = errno;
	uintptr_t address = (uintptr_t)info->si_addr;
	unsigned int i;

	if (info->si_code > 0) {
		for (i = 0; i < TP_MEMORY_GUARD_SLOTS; i++) {
			struct guard_slot *slot = &guard_slots[i];
			uintptr_t start, length;
			uint64_t one = 1;
			int32_t fd;

			if (atomic_load_explicit(&slot->state, memory_order_acquire) != SLOT_ACTIVE)
				continue;
			start = atomic_load_explicit(&slot->start, memory_order_relaxed);
			length = atomic_load_explicit(&slot->length, memory_order_relaxed);
			/* unsigned: an address below start wraps to a huge offset */
			if (address - start >= length)
				continue;
			if (mmap((void *)start, length, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED)
				break; /* cannot repair it: fail as if unguarded */
			atomic_store_explicit(&slot->faulted, 1, memory_order_release);
			fd = atomic_load_explicit(&guard_event_fd, memory_order_acquire);
			if (fd >= 0)
				(void)!write(fd, &one, sizeof(one));
			errno = saved_errno;
			return;
		}
	}
	errno = saved_errno;
	guard_chain(sig, info, context);
}

/*
 * tp_memory_guard_install() - install the SIGBUS handler once, return its eventfd.
 *
 * The first call pins this library in memory and creates the eventfd
 * (handler_eventfd.c) and installs the handler (SA_SIGINFO | SA_ONSTACK),
 * remembering the previous disposition for chaining; later calls return the same
 * eventfd. The eventfd counts guarded faults; it lives as long as the process and
 * must not be closed.
 *
 * Return: the eventfd, or -errno (-ELIBACC when the library cannot be pinned).
 */
int32_t tp_memory_guard_install(void)
{
	struct sigaction action;
	int32_t fd, rc;

	fd = atomic_load_explicit(&guard_event_fd, memory_order_acquire);
	if (fd >= 0)
		return fd;
	pthread_mutex_lock(&guard_install_lock);
	fd = atomic_load_explicit(&guard_event_fd, memory_order_acquire);
	if (fd >= 0)
		goto out;
	fd = tp_internal_handler_eventfd();
	if (fd < 0)
		goto out;
	/* published before the handler exists: it reads the fd without a lock */
	atomic_store_explicit(&guard_event_fd, fd, memory_order_release);
	memset(&action, 0, sizeof(action));
	action.sa_sigaction = guard_on_sigbus;
	action.sa_flags = SA_SIGINFO | SA_ONSTACK;
	sigemptyset(&action.sa_mask);
	/* the previous disposition is complete before the handler can read it */
	if (sigaction(SIGBUS, NULL, &guard_previous) < 0 ||
	    sigaction(SIGBUS, &action, NULL) < 0) {
		rc = -errno;
		atomic_store_explicit(&guard_event_fd, -1, memory_order_release);
		close(fd);
		fd = rc;
	}
out:
	pthread_mutex_unlock(&guard_install_lock);
	return fd;
}

/*
 * tp_memory_guard_register() - guard a mapping against SIGBUS.
 * @addr:   start of a mapping made by tp_mmap_shared()
 * @length: its length in bytes, > 0
 *
 * Installs the handler first if needed. The registry does not check @addr: only
 * register a mapping this process made, and unregister it before unmapping it.
 *
 * Return: the slot (0..TP_MEMORY_GUARD_SLOTS-1), -ENOSPC when every slot is taken,
 * -EINVAL for a null address or zero length, or -errno from the install.
 */
int32_t tp_memory_guard_register(void *addr, uint64_t length)
{
	uint32_t expected;
	int32_t rc;
	int i;

	if (addr == NULL || length == 0 || length > UINTPTR_MAX - (uintptr_t)addr)
		return -EINVAL;
	rc = tp_memory_guard_install();
	if (rc < 0)
		return rc;
	for (i = 0; i < TP_MEMORY_GUARD_SLOTS; i++) {
		struct guard_slot *slot = &guard_slots[i];

		expected = SLOT_FREE;
		if (!atomic_compare_exchange_strong_explicit(&slot->state, &expected, SLOT_CLAIMED,
							     memory_order_acquire,
							     memory_order_relaxed))
			continue;
		atomic_store_explicit(&slot->start, (uintptr_t)addr, memory_order_relaxed);
		atomic_store_explicit(&slot->length, (uintptr_t)length, memory_order_relaxed);
		atomic_store_explicit(&slot->faulted, 0, memory_order_relaxed);
		atomic_store_explicit(&slot->state, SLOT_ACTIVE, memory_order_release);
		return i;
	}
	return -ENOSPC;
}

/*
 * tp_memory_guard_unregister() - stop guarding the mapping in @slot.
 * @slot: a slot returned by tp_memory_guard_register()
 *
 * Call it before unmapping: afterwards a SIGBUS there is no longer caught.
 *
 * Return: 0, or -EINVAL for a slot that is not registered.
 */
int32_t tp_memory_guard_unregister(int32_t slot)
{
	uint32_t expected = SLOT_ACTIVE;

	if (slot < 0 || slot >= TP_MEMORY_GUARD_SLOTS)
		return -EINVAL;
	if (!atomic_compare_exchange_strong_explicit(&guard_slots[slot].state, &expected,
						     SLOT_FREE, memory_order_acq_rel,
						     memory_order_relaxed))
		return -EINVAL;
	return 0;
}

/*
 * tp_memory_guard_faulted() - whether the mapping in @slot has faulted.
 * @slot: a slot returned by tp_memory_guard_register()
 *
 * Return: 1 once a SIGBUS inside the mapping replaced it with zero pages, else 0;
 * -EINVAL for a slot that is not registered.
 */
int32_t tp_memory_guard_faulted(int32_t slot)
{
	if (slot < 0 || slot >= TP_MEMORY_GUARD_SLOTS)
		return -EINVAL;
	if (atomic_load_explicit(&guard_slots[slot].state, memory_order_acquire) != SLOT_ACTIVE)
		return -EINVAL;
	return (int32_t)atomic_load_explicit(&guard_slots[slot].faulted, memory_order_acquire);
}
