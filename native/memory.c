/*
 * memory.c - shared mappings of guest memory and memfd creation (the test
 * harnesses use a memfd as guest memory, as QEMU does with memory-backend-memfd),
 * and giving memory back to the kernel (the C heap's free pages, clean file pages).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tpasst_helper.h"

/*
 * tp_mmap_shared() - map @size bytes of @fd at file offset @offset, shared, read/write.
 * @fd:       file to map (a memfd or any file backing guest memory)
 * @size:     length of the mapping in bytes, may exceed 4 GiB; must be non-zero
 * @offset:   file offset, a multiple of the page size, may exceed 4 GiB
 * @addr_out: receives the mapping's address
 *
 * The fd can be closed afterwards; the mapping stays until tp_munmap().
 *
 * Return: 0, or -errno (-EINVAL for a zero size or unaligned offset, -ENOMEM...).
 */
int32_t tp_mmap_shared(int32_t fd, uint64_t size, uint64_t offset, uint64_t *addr_out)
{
	void *addr;

	*addr_out = 0;
	if (size == 0)
		return -EINVAL;
	addr = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)offset);
	if (addr == MAP_FAILED)
		return -errno;
	*addr_out = (uint64_t)(uintptr_t)addr;
	return 0;
}

/*
 * tp_munmap() - remove a mapping made by tp_mmap_shared().
 * @addr: address returned through addr_out
 * @size: the size given to tp_mmap_shared()
 *
 * Return: 0, or -errno.
 */
int32_t tp_munmap(void *addr, uint64_t size)
{
	return munmap(addr, (size_t)size) < 0 ? -errno : 0;
}

/*
 * tp_memfd_create() - create an anonymous memory file of @size bytes.
 * @name:          NUL-terminated name shown in /proc/self/fd (debugging only)
 * @size:          length; the file is sparse, pages are allocated when touched
 * @allow_sealing: non-zero to create it with MFD_ALLOW_SEALING (seals such as
 *                 F_SEAL_SHRINK can then be added to it), zero for a file that
 *                 cannot be sealed
 *
 * Return: the memfd (CLOEXEC), or -errno.
 */
int32_t tp_memfd_create(const char *name, uint64_t size, int32_t allow_sealing)
{
	unsigned int flags = MFD_CLOEXEC | (allow_sealing ? MFD_ALLOW_SEALING : 0);
	int fd, rc;

	fd = memfd_create(name, flags);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)size) < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	return fd;
}

/*
 * tp_ftruncate() - set the size of the file behind @fd (ftruncate).
 * @fd:   a writable file, e.g. a memfd
 * @size: new length in bytes
 *
 * Return: 0, or -errno (-EPERM when a seal forbids the change, e.g. F_SEAL_SHRINK).
 */
int32_t tp_ftruncate(int32_t fd, uint64_t size)
{
	int rc;

	do {
		rc = ftruncate(fd, (off_t)size);
	} while (rc < 0 && errno == EINTR);
	return rc < 0 ? -errno : 0;
}

/*
 * tp_fd_size() - size of the file behind @fd, and a best-effort shrink seal.
 * @fd:       a file received from the frontend (memfd, hugetlbfs or plain file)
 * @size_out: receives st_size
 *
 * Mapping a range past the end of a file and touching it raises SIGBUS, which would
 * kill the daemon; callers compare region sizes with this before mapping. For a
 * memfd created with sealing allowed, F_SEAL_SHRINK is also added so the frontend
 * cannot shrink the file later (QEMU's memfd backend seals its files itself; a
 * failure to add the seal is not an error).
 *
 * Return: 0, or -errno from fstat().
 */
int32_t tp_fd_size(int32_t fd, uint64_t *size_out)
{
	struct stat st;

	*size_out = 0;
	if (fstat(fd, &st) < 0)
		return -errno;
	(void)fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK);
	*size_out = (uint64_t)st.st_size;
	return 0;
}

/*
 * tp_atomic_or_u8() - atomically OR @mask into the byte at @addr + @offset.
 * @addr:   start of a mapping made by tp_mmap_shared()
 * @offset: byte offset into it (below 4 GiB); the caller checks it against the
 *          mapping's size
 * @mask:   bits to set (only the low 8 bits are used)
 *
 * For memory another process updates concurrently (the vhost-user dirty log, which
 * the front-end reads and clears while the back-end sets bits): a lock-prefixed
 * read-modify-write, so that no bit either side sets is lost. No system call.
 *
 * Return: 0.
 */
int32_t tp_atomic_or_u8(void *addr, uint32_t offset, uint32_t mask)
{
	__atomic_fetch_or((uint8_t *)addr + offset, (uint8_t)mask, __ATOMIC_SEQ_CST);
	return 0;
}

/*
 * tp_malloc_trim() - give the free memory of every malloc arena back to the kernel.
 *
 * glibc keeps what the runtime's native side freed (after a burst of connections)
 * in its arenas; malloc_trim(0) releases the whole free pages of each one.
 *
 * Return: 1 when memory was released, 0 when there was none to release.
 */
int32_t tp_malloc_trim(void)
{
	return malloc_trim(0) ? 1 : 0;
}

/*
 * tp_madvise_dontneed() - drop this process's page-table entries of a range.
 * @addr:   start of the range, page-aligned
 * @length: bytes
 *
 * madvise(MADV_DONTNEED). For a private file mapping that was never written (no
 * copied-on-write page in it) the pages stay in the page cache and come back on the
 * next access as minor faults: only the resident set shrinks. The caller makes sure
 * the range is such a mapping; on anything else the contents are lost.
 *
 * Return: 0, or -errno (-EINVAL for an unaligned or locked range...).
 */
int32_t tp_madvise_dontneed(uint64_t addr, uint64_t length)
{
	return madvise((void *)(uintptr_t)addr, (size_t)length, MADV_DONTNEED) < 0 ? -errno : 0;
}
