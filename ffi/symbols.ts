/**
 * The symbol table of native/libtpasst_helper.so (see native/tpasst_helper.h).
 *
 * Every function returns an i32 that is >= 0 on success or -errno on failure;
 * 64-bit results come back through out-parameter buffers. `buffer` parameters take a
 * Uint8Array (NUL-terminated for C strings) or null.
 *
 * @module
 */

/** The helper's symbols, for `Deno.dlopen`. */
export const symbols = {
  // ---- unix_socket.c ----
  tp_unix_listen: {
    parameters: [
      "buffer", // const char *path (NUL-terminated)
      "i32", // int32_t backlog
      "i32", // int32_t nonblocking
    ],
    result: "i32",
  },
  tp_unix_accept: {
    parameters: [
      "i32", // int32_t listen_fd
      "i32", // int32_t nonblocking
    ],
    result: "i32",
  },
  tp_unix_connect: {
    parameters: [
      "buffer", // const char *path (NUL-terminated)
    ],
    result: "i32",
  },
  tp_unix_dgram_connect: {
    parameters: [
      "buffer", // const char *path (NUL-terminated)
    ],
    result: "i32",
  },
  tp_unix_dgram_bind: {
    parameters: [
      "buffer", // const char *path (NUL-terminated)
    ],
    result: "i32",
  },
  tp_unix_probe: {
    parameters: [
      "buffer", // const char *path (NUL-terminated)
    ],
    result: "i32",
  },
  tp_unix_socketpair: {
    parameters: [
      "buffer", // int32_t *fds_out (int32_t[2])
      "i32", // int32_t nonblocking
    ],
    result: "i32",
  },
  tp_set_nonblocking: {
    parameters: [
      "i32", // int32_t fd
      "i32", // int32_t on
    ],
    result: "i32",
  },
  tp_shutdown: {
    parameters: [
      "i32", // int32_t fd
      "i32", // int32_t how (0 SHUT_RD, 1 SHUT_WR, 2 SHUT_RDWR)
    ],
    result: "i32",
  },
  tp_set_passcred: {
    parameters: [
      "i32", // int32_t fd
      "i32", // int32_t on
    ],
    result: "i32",
  },

  // ---- fd_io.c ----
  tp_close: {
    parameters: [
      "i32", // int32_t fd
    ],
    result: "i32",
  },
  tp_read: {
    parameters: [
      "i32", // int32_t fd
      "buffer", // uint8_t *buf
      "u32", // uint32_t len
    ],
    result: "i32",
  },
  tp_write: {
    parameters: [
      "i32", // int32_t fd
      "buffer", // const uint8_t *buf
      "u32", // uint32_t len
    ],
    result: "i32",
  },
  tp_recv_fds: {
    parameters: [
      "i32", // int32_t fd
      "buffer", // uint8_t *buf
      "u32", // uint32_t len
      "buffer", // int32_t *fds_out (int32_t[max_fds])
      "u32", // uint32_t max_fds
      "buffer", // uint32_t *info_out (uint32_t[2]: fd count, flags)
    ],
    result: "i32",
  },
  tp_send_fds: {
    parameters: [
      "i32", // int32_t fd
      "buffer", // const uint8_t *buf
      "u32", // uint32_t len
      "buffer", // const int32_t *fds
      "u32", // uint32_t nfds
    ],
    result: "i32",
  },

  // ---- memory.c ----
  tp_mmap_shared: {
    parameters: [
      "i32", // int32_t fd
      "u64", // uint64_t size
      "u64", // uint64_t offset
      "buffer", // uint64_t *addr_out
    ],
    result: "i32",
  },
  tp_munmap: {
    parameters: [
      "pointer", // void *addr
      "u64", // uint64_t size
    ],
    result: "i32",
  },
  tp_memfd_create: {
    parameters: [
      "buffer", // const char *name (NUL-terminated)
      "u64", // uint64_t size
      "i32", // int32_t allow_sealing
    ],
    result: "i32",
  },
  tp_ftruncate: {
    parameters: [
      "i32", // int32_t fd
      "u64", // uint64_t size
    ],
    result: "i32",
  },
  tp_fd_size: {
    parameters: [
      "i32", // int32_t fd
      "buffer", // uint64_t *size_out
    ],
    result: "i32",
  },
  tp_atomic_or_u8: {
    parameters: [
      "pointer", // void *addr
      "u32", // uint32_t offset
      "u32", // uint32_t mask
    ],
    result: "i32",
  },

  // ---- memory_guard.c ----
  tp_memory_guard_install: {
    parameters: [],
    result: "i32",
  },
  tp_memory_guard_register: {
    parameters: [
      "pointer", // void *addr
      "u64", // uint64_t length
    ],
    result: "i32",
  },
  tp_memory_guard_unregister: {
    parameters: [
      "i32", // int32_t slot
    ],
    result: "i32",
  },
  tp_memory_guard_faulted: {
    parameters: [
      "i32", // int32_t slot
    ],
    result: "i32",
  },

  // ---- signal_event.c ----
  tp_signal_event_install: {
    parameters: [
      "i32", // int32_t signo
    ],
    result: "i32",
  },

  // ---- event_fd.c ----
  tp_eventfd_create: {
    parameters: [
      "u32", // uint32_t initval
      "i32", // int32_t semaphore
    ],
    result: "i32",
  },
  tp_eventfd_read: {
    parameters: [
      "i32", // int32_t fd
      "buffer", // uint64_t *value_out
    ],
    result: "i32",
  },
  tp_eventfd_write: {
    parameters: [
      "i32", // int32_t fd
      "u32", // uint32_t increment
    ],
    result: "i32",
  },

  // ---- epoll.c ----
  tp_epoll_create: {
    parameters: [],
    result: "i32",
  },
  tp_epoll_ctl: {
    parameters: [
      "i32", // int32_t epfd
      "i32", // int32_t op (1 ADD, 2 DEL, 3 MOD)
      "i32", // int32_t fd
      "u32", // uint32_t events
      "u32", // uint32_t data_lo
      "u32", // uint32_t data_hi
    ],
    result: "i32",
  },
  tp_epoll_wait: {
    parameters: [
      "i32", // int32_t epfd
      "buffer", // uint8_t *events_out (packed struct epoll_event[max_events])
      "i32", // int32_t max_events
      "i32", // int32_t timeout_ms
    ],
    result: "i32",
  },
  /** The same C function, run on a Deno worker thread; returns a Promise. */
  tp_epoll_wait_nonblocking: {
    name: "tp_epoll_wait",
    parameters: [
      "i32", // int32_t epfd
      "buffer", // uint8_t *events_out (packed struct epoll_event[max_events])
      "i32", // int32_t max_events
      "i32", // int32_t timeout_ms
    ],
    result: "i32",
    nonblocking: true,
  },
  tp_epoll_wait_us: {
    parameters: [
      "i32", // int32_t epfd
      "buffer", // uint8_t *events_out (packed struct epoll_event[max_events])
      "i32", // int32_t max_events
      "i32", // int32_t timeout_us
    ],
    result: "i32",
  },
  tp_epoll_event_size: {
    parameters: [],
    result: "i32",
  },

  // ---- ping.c ----
  tp_ping_open: {
    parameters: [
      "i32", // int32_t family (4 or 6)
    ],
    result: "i32",
  },
  tp_ping_sendto: {
    parameters: [
      "i32", // int32_t fd
      "buffer", // const uint8_t *buf
      "u32", // uint32_t len
      "buffer", // const uint8_t *addr (4 or 16 bytes)
      "u32", // uint32_t addr_len
      "u32", // uint32_t scope_id
    ],
    result: "i32",
  },
  tp_ping_recvfrom: {
    parameters: [
      "i32", // int32_t fd
      "buffer", // uint8_t *buf
      "u32", // uint32_t len
      "buffer", // uint8_t *addr_out (16 bytes)
      "buffer", // uint32_t *meta_out (uint32_t[2]: address length, scope id)
    ],
    result: "i32",
  },

  // ---- tcp_socket.c ----
  tp_tcp_connect: {
    parameters: [
      "buffer", // const uint8_t *addr (4 or 16 bytes)
      "u32", // uint32_t addr_len
      "u32", // uint32_t port
      "u32", // uint32_t scope_id
      "buffer", // const uint8_t *source (ignored when source_len is 0)
      "u32", // uint32_t source_len (0, or addr_len)
      "buffer", // const char *ifname (NUL-terminated, "" for none)
    ],
    result: "i32",
  },
  tp_socket_error: {
    parameters: [
      "i32", // int32_t fd
    ],
    result: "i32",
  },
  tp_send: {
    parameters: [
      "i32", // int32_t fd
      "buffer", // const uint8_t *buf
      "u32", // uint32_t len
    ],
    result: "i32",
  },
  tp_recv: {
    parameters: [
      "i32", // int32_t fd
      "buffer", // uint8_t *buf
      "u32", // uint32_t len
    ],
    result: "i32",
  },
  tp_tcp_close_reset: {
    parameters: [
      "i32", // int32_t fd
    ],
    result: "i32",
  },
  tp_tcp_listen: {
    parameters: [
      "buffer", // const uint8_t *addr (4 or 16 bytes)
      "u32", // uint32_t addr_len
      "u32", // uint32_t port
      "u32", // uint32_t scope_id
      "buffer", // const char *ifname (NUL-terminated, "" for none)
      "i32", // int32_t backlog
      "u32", // uint32_t flags (TP_LISTEN_FREEBIND)
    ],
    result: "i32",
  },
  tp_tcp_accept: {
    parameters: [
      "i32", // int32_t listen_fd
      "buffer", // uint8_t *addr_out (16 bytes)
      "buffer", // uint32_t *meta_out (uint32_t[2]: address length, port)
    ],
    result: "i32",
  },
  tp_socket_local_address: {
    parameters: [
      "i32", // int32_t fd
      "buffer", // uint8_t *addr_out (16 bytes)
      "buffer", // uint32_t *meta_out (uint32_t[2]: address length, port)
    ],
    result: "i32",
  },
  tp_tcp_recvmsg: {
    parameters: [
      "i32", // int32_t fd
      "buffer", // const struct iovec *iov (16 bytes each: base, len)
      "u32", // uint32_t iovcnt
      "i32", // int32_t flags (MSG_PEEK...)
    ],
    result: "i32",
  },
  tp_tcp_sendmsg: {
    parameters: [
      "i32", // int32_t fd
      "buffer", // const struct iovec *iov (16 bytes each: base, len)
      "u32", // uint32_t iovcnt
      "i32", // int32_t flags
    ],
    result: "i32",
  },
  tp_tcp_discard: {
    parameters: [
      "i32", // int32_t fd
      "u32", // uint32_t len
    ],
    result: "i32",
  },
  tp_tcp_set_peek_offset: {
    parameters: [
      "i32", // int32_t fd
      "i32", // int32_t offset (-1: off)
    ],
    result: "i32",
  },
  // ---- socket_options.c
  tp_setsockopt_int: {
    parameters: [
      "i32", // int32_t fd
      "i32", // int32_t level
      "i32", // int32_t name
      "i32", // int32_t value
    ],
    result: "i32",
  },
  tp_getsockopt_int: {
    parameters: [
      "i32", // int32_t fd
      "i32", // int32_t level
      "i32", // int32_t name
      "buffer", // int32_t *value_out (int32_t[1])
    ],
    result: "i32",
  },
  tp_setsockopt_bytes: {
    parameters: [
      "i32", // int32_t fd
      "i32", // int32_t level
      "i32", // int32_t name
      "buffer", // const uint8_t *buf
      "u32", // uint32_t len
    ],
    result: "i32",
  },
  tp_getsockopt_bytes: {
    parameters: [
      "i32", // int32_t fd
      "i32", // int32_t level
      "i32", // int32_t name
      "buffer", // uint8_t *buf
      "u32", // uint32_t len
    ],
    result: "i32",
  },
  tp_tcp_socket: {
    parameters: [
      "i32", // int32_t family (4 or 6)
    ],
    result: "i32",
  },
  tp_socket_bind: {
    parameters: [
      "i32", // int32_t fd
      "buffer", // const uint8_t *addr
      "u32", // uint32_t addr_len
      "u32", // uint32_t port
      "u32", // uint32_t scope_id
    ],
    result: "i32",
  },
  tp_socket_connect: {
    parameters: [
      "i32", // int32_t fd
      "buffer", // const uint8_t *addr
      "u32", // uint32_t addr_len
      "u32", // uint32_t port
      "u32", // uint32_t scope_id
    ],
    result: "i32",
  },
  tp_socket_peer_address: {
    parameters: [
      "i32", // int32_t fd
      "buffer", // uint8_t *addr_out (16 bytes)
      "buffer", // uint32_t *meta_out (uint32_t[2]: address length, port)
    ],
    result: "i32",
  },
  tp_recv_flags: {
    parameters: [
      "i32", // int32_t fd
      "buffer", // uint8_t *buf
      "u32", // uint32_t len
      "i32", // int32_t flags
    ],
    result: "i32",
  },
  tp_wait_readable: {
    parameters: [
      "i32", // int32_t fd
      "i32", // int32_t timeout_ms
    ],
    result: "i32",
  },
  tp_socket_set_buffers: {
    parameters: [
      "i32", // int32_t fd
      "u32", // uint32_t rcvbuf (0: leave)
      "u32", // uint32_t sndbuf (0: leave)
    ],
    result: "i32",
  },
  tp_buffer_address: {
    parameters: [
      "buffer", // const uint8_t *buf
      "buffer", // uint32_t *out (uint32_t[2]: address low, high)
    ],
    result: "i32",
  },
  tp_tcp_queues: {
    parameters: [
      "i32", // int32_t fd
      "buffer", // uint32_t *out (uint32_t[3]: SIOCOUTQ, SIOCINQ, SO_SNDBUF)
    ],
    result: "i32",
  },
  tp_tcp_send_queued: {
    parameters: [
      "i32", // int32_t fd
    ],
    result: "i32", // SIOCOUTQ bytes or -errno
  },

  // ---- udp_socket.c ----
  tp_udp_open: {
    parameters: [
      "i32", // int32_t family (4 or 6)
      "buffer", // const uint8_t *addr (ignored when addr_len is 0)
      "u32", // uint32_t addr_len (0: not bound; 4 or 16 matching family)
      "u32", // uint32_t port
      "u32", // uint32_t scope_id
      "buffer", // const char *ifname (NUL-terminated, "" for none)
      "u32", // uint32_t flags (TP_UDP_V6ONLY 1, TP_UDP_REUSEADDR 2)
    ],
    result: "i32",
  },
  tp_udp_recv_batch: {
    parameters: [
      "i32", // int32_t fd
      "buffer", // uint8_t *buf (slots * slot_size bytes)
      "u32", // uint32_t slot_size
      "u32", // uint32_t slots (1..TP_UDP_MAX_BATCH)
      "buffer", // uint8_t *records (slots * TP_UDP_RECORD_SIZE bytes)
    ],
    result: "i32",
  },
  tp_udp_send_batch: {
    parameters: [
      "i32", // int32_t fd
      "buffer", // const uint8_t *buf
      "u32", // uint32_t buf_len
      "buffer", // const uint8_t *records (count * TP_UDP_RECORD_SIZE bytes; SEGMENT: UDP GSO)
      "u32", // uint32_t count (1..TP_UDP_MAX_BATCH)
    ],
    result: "i32", // records sent or -errno
  },

  // ---- file.c ----
  tp_file_open: {
    parameters: [
      "buffer", // const char *path (NUL-terminated)
      "i32", // int32_t append
    ],
    result: "i32",
  },
  tp_unlink: {
    parameters: [
      "buffer", // const char *path (NUL-terminated)
    ],
    result: "i32",
  },
  tp_read_small_file: {
    parameters: [
      "buffer", // const char *path (NUL-terminated)
      "buffer", // uint8_t *buf
      "u32", // uint32_t len
    ],
    result: "i32",
  },
  tp_open_fd_count: {
    parameters: [],
    result: "i32",
  },
  tp_malloc_trim: {
    parameters: [],
    result: "i32", // 1: memory released, 0: none
  },
  tp_madvise_dontneed: {
    parameters: [
      "u64", // uint64_t addr
      "u64", // uint64_t length
    ],
    result: "i32",
  },
  tp_readlink: {
    parameters: [
      "buffer", // const char *path (NUL-terminated)
      "buffer", // uint8_t *buf
      "u32", // uint32_t len
    ],
    result: "i32",
  },
  tp_fd_mode: {
    parameters: [
      "i32", // int32_t fd
    ],
    result: "i32",
  },
  tp_pipe: {
    parameters: [
      "buffer", // int32_t *fds_out (2 entries)
    ],
    result: "i32",
  },

  // ---- daemon.c ----
  tp_daemon_spawn: {
    parameters: [
      "buffer", // const char *extra_args (NUL-terminated strings, packed)
      "u32", // uint32_t extra_args_len
      "buffer", // const int32_t *keep_fds
      "u32", // uint32_t nkeep
      "buffer", // const char *ready_option (NUL-terminated)
      "buffer", // int32_t *out (int32_t[2]: pid, ready read fd)
    ],
    result: "i32",
  },
  tp_daemon_wait_ready: {
    parameters: [
      "i32", // int32_t ready_fd
      "i32", // int32_t pid
      "i32", // int32_t timeout_ms
      "buffer", // int32_t *status_out
    ],
    result: "i32",
  },
  tp_daemon_signal_ready: {
    parameters: [
      "i32", // int32_t ready_fd
    ],
    result: "i32",
  },
  tp_waitpid: {
    parameters: [
      "i32", // int32_t pid
      "i32", // int32_t nohang
      "buffer", // int32_t *status_out
    ],
    result: "i32",
  },
} as const satisfies Deno.ForeignLibraryInterface;
