/*
 * tpasst_helper.h - the C helper's whole interface, loaded by Deno through ffi/.
 *
 * The helper does only what Deno cannot: SCM_RIGHTS, raw unix socket fds, mmap,
 * surviving SIGBUS in guest memory, a signal kept from Deno's own listeners,
 * eventfd, epoll, memfd, ping sockets, nonblocking TCP and UDP sockets, fd
 * counting, output files without Deno write permission, and daemonizing
 * (fork/exec).
 *
 * Conventions, for every function below:
 *  - the return value is an int32_t that is >= 0 on success and -errno on failure;
 *  - 64-bit results go through out-parameters (64-bit returns are slow in Deno FFI);
 *  - every file descriptor created here has FD_CLOEXEC set;
 *  - no global state, except memory_guard.c's registry of guarded mappings and
 *    signal_event.c's eventfd per signal (a signal handler is process-wide, so is
 *    what it consults);
 *  - EINTR is retried internally where a call may block.
 */
#ifndef TPASST_HELPER_H
#define TPASST_HELPER_H

#include <stdint.h>
#include <sys/socket.h>

/* ---- unix_socket.c: AF_UNIX SOCK_STREAM and SOCK_DGRAM sockets ------------- */

int32_t tp_unix_listen(const char *path, int32_t backlog, int32_t nonblocking);
int32_t tp_unix_accept(int32_t listen_fd, int32_t nonblocking);
int32_t tp_unix_connect(const char *path);
int32_t tp_unix_probe(const char *path);
int32_t tp_unix_socketpair(int32_t *fds_out, int32_t nonblocking);
int32_t tp_set_nonblocking(int32_t fd, int32_t on);
int32_t tp_shutdown(int32_t fd, int32_t how);
int32_t tp_set_passcred(int32_t fd, int32_t on);
int32_t tp_unix_dgram_connect(const char *path);
int32_t tp_unix_dgram_bind(const char *path);

/* ---- fd_io.c: plain I/O and SCM_RIGHTS ------------------------------------- */

/* Bits of info_out[1] written by tp_recv_fds. */
#define TP_RECV_FDS_DROPPED 1u   /* fds were received beyond max_fds and closed */
#define TP_RECV_CTRUNC 2u        /* the kernel set MSG_CTRUNC (fds were lost) */

/* Upper bound on fds one message can carry (the kernel's SCM_MAX_FD). */
#define TP_SCM_MAX_FD 253

int32_t tp_close(int32_t fd);
int32_t tp_read(int32_t fd, uint8_t *buf, uint32_t len);
int32_t tp_write(int32_t fd, const uint8_t *buf, uint32_t len);
int32_t tp_recv_fds(int32_t fd, uint8_t *buf, uint32_t len, int32_t *fds_out,
                    uint32_t max_fds, uint32_t *info_out);
int32_t tp_send_fds(int32_t fd, const uint8_t *buf, uint32_t len, const int32_t *fds,
                    uint32_t nfds);

/* ---- memory.c: guest memory mappings, memfd, malloc_trim, madvise ---------- */

int32_t tp_mmap_shared(int32_t fd, uint64_t size, uint64_t offset, uint64_t *addr_out);
int32_t tp_munmap(void *addr, uint64_t size);
int32_t tp_memfd_create(const char *name, uint64_t size, int32_t allow_sealing);
int32_t tp_ftruncate(int32_t fd, uint64_t size);
int32_t tp_fd_size(int32_t fd, uint64_t *size_out);
int32_t tp_atomic_or_u8(void *addr, uint32_t offset, uint32_t mask);
int32_t tp_malloc_trim(void);
int32_t tp_madvise_dontneed(uint64_t addr, uint64_t length);

/* ---- memory_guard.c: SIGBUS from guest memory whose file shrank ------------- */

/* Mappings that can be guarded at once (all sessions of the process together). */
#define TP_MEMORY_GUARD_SLOTS 1024

int32_t tp_memory_guard_install(void);
int32_t tp_memory_guard_register(void *addr, uint64_t length);
int32_t tp_memory_guard_unregister(int32_t slot);
int32_t tp_memory_guard_faulted(int32_t slot);

/* ---- signal_event.c: a signal that only counts on an eventfd --------------- */

/* signal_event.c's table size, by signal number (Linux's: 1..64); only USR1/USR2 are taken. */
#define TP_SIGNAL_EVENT_LIMIT 65

int32_t tp_signal_event_install(int32_t signo);

/* ---- handler_eventfd.c: this library pinned, an eventfd for a handler ------ */

int32_t tp_internal_handler_eventfd(void);

/* ---- event_fd.c ------------------------------------------------------------ */

int32_t tp_eventfd_create(uint32_t initval, int32_t semaphore);
int32_t tp_eventfd_read(int32_t fd, uint64_t *value_out);
int32_t tp_eventfd_write(int32_t fd, uint32_t value);

/* ---- epoll.c --------------------------------------------------------------- */

int32_t tp_epoll_create(void);
int32_t tp_epoll_ctl(int32_t epfd, int32_t op, int32_t fd, uint32_t events, uint32_t data_lo,
                     uint32_t data_hi);
int32_t tp_epoll_wait(int32_t epfd, uint8_t *events_out, int32_t max_events,
                      int32_t timeout_ms);
int32_t tp_epoll_wait_us(int32_t epfd, uint8_t *events_out, int32_t max_events,
                         int32_t timeout_us);
int32_t tp_epoll_event_size(void);

/* ---- ping.c: unprivileged ICMP echo sockets -------------------------------- */

int32_t tp_ping_open(int32_t family);
int32_t tp_ping_sendto(int32_t fd, const uint8_t *buf, uint32_t len, const uint8_t *addr,
                       uint32_t addr_len, uint32_t scope_id);
int32_t tp_ping_recvfrom(int32_t fd, uint8_t *buf, uint32_t len, uint8_t *addr_out,
                         uint32_t *meta_out);

/* ---- tcp_socket.c: nonblocking TCP sockets toward the host ----------------- */

int32_t tp_tcp_connect(const uint8_t *addr, uint32_t addr_len, uint32_t port,
                       uint32_t scope_id, const uint8_t *source, uint32_t source_len,
                       const char *ifname);
int32_t tp_socket_error(int32_t fd);
int32_t tp_send(int32_t fd, const uint8_t *buf, uint32_t len);
int32_t tp_recv(int32_t fd, uint8_t *buf, uint32_t len);
int32_t tp_tcp_close_reset(int32_t fd);
/* Flags of tp_tcp_listen. */
#define TP_LISTEN_FREEBIND 1u    /* IP_FREEBIND / IPV6_FREEBIND: bind a non-local address */

int32_t tp_tcp_listen(const uint8_t *addr, uint32_t addr_len, uint32_t port, uint32_t scope_id,
                      const char *ifname, int32_t backlog, uint32_t flags);
int32_t tp_tcp_accept(int32_t listen_fd, uint8_t *addr_out, uint32_t *meta_out);
int32_t tp_socket_local_address(int32_t fd, uint8_t *addr_out, uint32_t *meta_out);
struct iovec;
int32_t tp_tcp_recvmsg(int32_t fd, const struct iovec *iov, uint32_t iovcnt, int32_t flags);
int32_t tp_tcp_sendmsg(int32_t fd, const struct iovec *iov, uint32_t iovcnt, int32_t flags);
int32_t tp_tcp_discard(int32_t fd, uint32_t len);
int32_t tp_tcp_set_peek_offset(int32_t fd, int32_t offset);
int32_t tp_tcp_queues(int32_t fd, uint32_t *out);
int32_t tp_tcp_send_queued(int32_t fd);
int32_t tp_buffer_address(const uint8_t *buf, uint32_t *out);
int32_t tp_socket_set_buffers(int32_t fd, uint32_t rcvbuf, uint32_t sndbuf);

/* ---- socket_options.c: TCP repair steps and other thin socket calls --------- */

int32_t tp_setsockopt_int(int32_t fd, int32_t level, int32_t name, int32_t value);
int32_t tp_getsockopt_int(int32_t fd, int32_t level, int32_t name, int32_t *value_out);
int32_t tp_setsockopt_bytes(int32_t fd, int32_t level, int32_t name, const uint8_t *buf,
			    uint32_t len);
int32_t tp_getsockopt_bytes(int32_t fd, int32_t level, int32_t name, uint8_t *buf,
			    uint32_t len);
int32_t tp_tcp_socket(int32_t family);
int32_t tp_socket_bind(int32_t fd, const uint8_t *addr, uint32_t addr_len, uint32_t port,
		       uint32_t scope_id);
int32_t tp_socket_connect(int32_t fd, const uint8_t *addr, uint32_t addr_len, uint32_t port,
			  uint32_t scope_id);
int32_t tp_socket_peer_address(int32_t fd, uint8_t *addr_out, uint32_t *meta_out);
int32_t tp_recv_flags(int32_t fd, uint8_t *buf, uint32_t len, int32_t flags);
int32_t tp_wait_readable(int32_t fd, int32_t timeout_ms);

/* ---- udp_socket.c: nonblocking UDP sockets toward the host, batched I/O -------- */

/* Flags of tp_udp_open. */
#define TP_UDP_V6ONLY 1u     /* family 6: IPV6_V6ONLY on (no IPv4 on this socket) */
#define TP_UDP_REUSEADDR 2u  /* SO_REUSEADDR before binding */

/* Most datagrams one tp_udp_recv_batch / tp_udp_send_batch call moves. */
#define TP_UDP_MAX_BATCH 64

/*
 * One message record of a batch: byte offsets of 32-bit words (host byte order) and
 * of the address bytes, TP_UDP_RECORD_SIZE bytes per record.
 */
#define TP_UDP_RECORD_OFFSET 0     /* payload offset in the batch's buffer */
#define TP_UDP_RECORD_LENGTH 4     /* payload length */
#define TP_UDP_RECORD_FLAGS 8      /* received: TP_UDP_TRUNCATED */
#define TP_UDP_RECORD_ADDR_LEN 12  /* 4 (IPv4) or 16 (IPv6); sent: 0 for the connected peer */
#define TP_UDP_RECORD_PORT 16      /* source (received) or destination (sent) port */
#define TP_UDP_RECORD_SCOPE 20     /* IPv6 scope id */
#define TP_UDP_RECORD_ADDR 24      /* 16 bytes, network order; IPv4 in the first 4 */
#define TP_UDP_RECORD_SEGMENT 40   /* sent: UDP_SEGMENT size (0: one datagram), see below */
#define TP_UDP_RECORD_SIZE 44

/*
 * A sent record with a SEGMENT size > 0 is one message that the kernel cuts into
 * datagrams of SEGMENT bytes each, the last possibly shorter (UDP GSO, the
 * UDP_SEGMENT control message, Linux >= 4.18, man 7 udp): at most
 * TP_UDP_MAX_SEGMENTS of them, and no more payload than one UDP datagram can carry.
 */
#define TP_UDP_MAX_SEGMENTS 64     /* UDP_MAX_SEGMENTS, include/linux/udp.h */

/* Bit of TP_UDP_RECORD_FLAGS: the datagram was longer than its slot and was cut. */
#define TP_UDP_TRUNCATED 1u

int32_t tp_udp_open(int32_t family, const uint8_t *addr, uint32_t addr_len, uint32_t port,
                    uint32_t scope_id, const char *ifname, uint32_t flags);
int32_t tp_udp_recv_batch(int32_t fd, uint8_t *buf, uint32_t slot_size, uint32_t slots,
                          uint8_t *records);
int32_t tp_udp_send_batch(int32_t fd, const uint8_t *buf, uint32_t buf_len,
                          const uint8_t *records, uint32_t count);
/* A UDP socket's local address and pending error: tp_socket_local_address and
 * tp_socket_error (tcp_socket.c) work on any socket. */

/* ---- file.c: output files, unlink, fd count -------------------------------- */

int32_t tp_file_open(const char *path, int32_t append);
int32_t tp_unlink(const char *path);
int32_t tp_read_small_file(const char *path, uint8_t *buf, uint32_t len);
int32_t tp_open_fd_count(void);
int32_t tp_readlink(const char *path, uint8_t *buf, uint32_t len);
int32_t tp_fd_mode(int32_t fd);
int32_t tp_pipe(int32_t *fds_out);

/* ---- daemon.c: detaching a copy of the running program --------------------- */

/* Results of tp_daemon_wait_ready. */
#define TP_DAEMON_TIMEOUT 0
#define TP_DAEMON_READY 1
#define TP_DAEMON_EXITED 2

int32_t tp_daemon_spawn(const char *extra_args, uint32_t extra_args_len, const int32_t *keep_fds,
                        uint32_t nkeep, const char *ready_option, int32_t *out);
int32_t tp_daemon_wait_ready(int32_t ready_fd, int32_t pid, int32_t timeout_ms,
                             int32_t *status_out);
int32_t tp_daemon_signal_ready(int32_t ready_fd);
int32_t tp_waitpid(int32_t pid, int32_t nohang, int32_t *status_out);

/* ---- sockaddr.c: shared by the socket files, not bound in ffi/ ------------- */

socklen_t tp_fill_sockaddr(struct sockaddr_storage *ss, const uint8_t *addr, uint32_t addr_len,
			   uint32_t port, uint32_t scope_id);

#endif /* TPASST_HELPER_H */
