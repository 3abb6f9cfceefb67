/*
 * handler_eventfd.c - what an installer of a process-wide signal handler needs.
 *
 * A signal handler installed from this library is process-wide, and its code lives
 * here: a dlclose() by the library's last user would leave the handler pointing at
 * unmapped memory, so the library is pinned first. The handler then reports to the
 * event loop through an eventfd (memory_guard.c, signal_event.c).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stddef.h>
#include <sys/eventfd.h>

#include "tpasst_helper.h"

/*
 * tp_internal_handler_eventfd() - pin this library in memory (RTLD_NODELETE) and
 * create the eventfd a handler writes to.
 *
 * The handle dlopen() returns is never closed; pinning again is harmless.
 *
 * Return: a new eventfd (NONBLOCK, CLOEXEC), or -errno (-ELIBACC when the library
 * cannot be found or pinned).
 */
int32_t tp_internal_handler_eventfd(void)
{
	Dl_info self;
	int fd;

	if (dladdr((void *)tp_internal_handler_eventfd, &self) == 0 || self.dli_fname == NULL ||
	    dlopen(self.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE) == NULL)
		return -ELIBACC;
	fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	return fd < 0 ? -errno : fd;
}
