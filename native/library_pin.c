/*
 * library_pin.c - keep this library mapped for the rest of the process.
 *
 * A signal handler installed from this library is process-wide, and its code lives
 * here: a dlclose() by the library's last user would leave the handler pointing at
 * unmapped memory. Installers pin the library first.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stddef.h>

#include "tpasst_helper.h"

/*
 * tp_internal_pin_library() - pin this library in memory (RTLD_NODELETE).
 *
 * The handle dlopen() returns is never closed; pinning again is harmless.
 *
 * Return: 0, or -ELIBACC when the library cannot be found or pinned.
 */
int32_t tp_internal_pin_library(void)
{
	Dl_info self;

	if (dladdr((void *)tp_internal_pin_library, &self) == 0 || self.dli_fname == NULL ||
	    dlopen(self.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE) == NULL)
		return -ELIBACC;
	return 0;
}
