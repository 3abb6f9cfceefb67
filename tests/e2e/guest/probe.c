/*
 * probe: the guest's helper for the end-to-end tests, for what busybox lacks (its nc
 * has no -u; /dev/urandom is slow under TCG).
 *
 *   probe udp-send ADDR PORT MESSAGE TIMEOUT_S  send one datagram, print the reply
 *   probe udp-echo PORT COUNT TIMEOUT_S         answer COUNT datagrams with "echo:" + data
 *   probe random BYTES [COPY]                   write BYTES pseudo-random bytes to stdout
 *                                               (and the same bytes to file/fifo COPY)
 *   probe tcp-send ADDR PORT BYTES [COPY]       send them over TCP instead of stdout
 *                                               (busybox nc moves 1 KiB per write: 30x
 *                                               slower under TCG), then wait for EOF
 *   probe dhcpv6 IFNAME TIMEOUT_S               DHCPv6 client (busybox-static has no
 *                                               udhcpc6): SOLICIT, ADVERTISE, REQUEST,
 *                                               REPLY on IFNAME; prints "addr ADDR" (the
 *                                               IA_NA address) and "dns ADDR..." ("dns"
 *                                               alone when the server sent none)
 *   probe tcp-reset ADDR PORT                   connect, send a line, read the server's
 *                                               line, then close with a RST (SO_LINGER
 *                                               0); prints "sent-rst"
 *   probe tcp-wait-end ADDR PORT                connect, send a line, read until the
 *                                               connection ends; prints "eof", "reset"
 *                                               (ECONNRESET) or the errno name
 *   probe tcp-connect ADDR PORT                 prints "connected", "refused"
 *                                               (ECONNREFUSED) or the errno name
 *   probe tcp-half-close ADDR PORT MESSAGE      send MESSAGE, shutdown(SHUT_WR), read the
 *                                               reply to EOF and print it
 *   probe tcp-reply-after-eof ADDR PORT         read to EOF (the server half-closed),
 *                                               then send "reply:" + what arrived, close;
 *                                               prints what arrived
 *   probe channels IFNAME COUNT                 set the combined queue pairs of IFNAME
 *                                               (ethtool -L IFNAME combined COUNT; busybox
 *                                               has no ethtool), at most its maximum;
 *                                               prints "channels N of MAX"
 * The tcp-* subcommands give up after TCP_WAIT_S seconds per step ("timeout").
 *
 * ADDR is an IPv4 or IPv6 literal (never a name: the guest does no DNS lookups).
 * Exit status 0 on success, 1 on timeout or error (with a message on stderr).
 */
#include <arpa/inet.h>
#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <time.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_DATAGRAM 2048
#define RANDOM_BLOCK 65536

static int wait_readable(int fd, int timeout_s) {
  struct pollfd pfd = {.fd = fd, .events = POLLIN, .revents = 0};
  int rc = poll(&pfd, 1, timeout_s * 1000);
  if (rc < 0) {
    perror("probe: poll");
    return -1;
  }
  if (rc == 0) {
    fprintf(stderr, "probe: no datagram within %d s\n", timeout_s);
    return -1;
  }
  return 0;
}

/* Fills dst from an address literal and port; returns its length or 0 if not a literal. */
static socklen_t parse_address(const char *addr, const char *port, struct sockaddr_storage *dst) {
  memset(dst, 0, sizeof(*dst));
  struct sockaddr_in *v4 = (struct sockaddr_in *)dst;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)dst;
  if (inet_pton(AF_INET, addr, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons((unsigned short)atoi(port));
    return sizeof(*v4);
  }
  if (inet_pton(AF_INET6, addr, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons((unsigned short)atoi(port));
    return sizeof(*v6);
  }
  fprintf(stderr, "probe: '%s' is not an IPv4 or IPv6 literal\n", addr);
  return 0;
}

static int send_and_wait(const char *addr, const char *port, const char *message, int timeout_s) {
  struct sockaddr_storage dst;
  socklen_t dst_len = parse_address(addr, port, &dst);
  if (dst_len == 0) return 1;
  int fd = socket(dst.ss_family, SOCK_DGRAM, 0);
  if (fd < 0) {
    perror("probe: socket");
    return 1;
  }
  if (sendto(fd, message, strlen(message), 0, (struct sockaddr *)&dst, dst_len) < 0) {
    perror("probe: sendto");
    return 1;
  }
  if (wait_readable(fd, timeout_s) < 0) return 1;
  char buf[MAX_DATAGRAM + 1];
  ssize_t n = recv(fd, buf, MAX_DATAGRAM, 0);
  if (n < 0) {
    perror("probe: recv");
    return 1;
  }
  buf[n] = '\0';
  printf("%s\n", buf);
  close(fd);
  return 0;
}

static int echo_server(const char *port, int count, int timeout_s) {
  int fd = socket(AF_INET6, SOCK_DGRAM, 0);
  if (fd < 0) {
    perror("probe: socket");
    return 1;
  }
  int off = 0;
  setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
  struct sockaddr_in6 local;
  memset(&local, 0, sizeof(local));
  local.sin6_family = AF_INET6;
  local.sin6_addr = in6addr_any;
  local.sin6_port = htons((unsigned short)atoi(port));
  if (bind(fd, (struct sockaddr *)&local, sizeof(local)) < 0) {
    perror("probe: bind");
    return 1;
  }
  for (int i = 0; i < count; i++) {
    if (wait_readable(fd, timeout_s) < 0) return 1;
    char buf[MAX_DATAGRAM + 5] = "echo:";
    struct sockaddr_storage peer;
    socklen_t peer_len = sizeof(peer);
    ssize_t n = recvfrom(fd, buf + 5, MAX_DATAGRAM, 0, (struct sockaddr *)&peer, &peer_len);
    if (n < 0) {
      perror("probe: recvfrom");
      return 1;
    }
    if (sendto(fd, buf, (size_t)n + 5, 0, (struct sockaddr *)&peer, peer_len) < 0) {
      perror("probe: sendto");
      return 1;
    }
    buf[n + 5] = '\0';
    printf("%s\n", buf + 5);
    fflush(stdout);
  }
  close(fd);
  return 0;
}

static int write_all(int fd, const char *at, size_t size) {
  while (size > 0) {
    ssize_t n = write(fd, at, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      perror("probe: write");
      return -1;
    }
    at += n;
    size -= (size_t)n;
  }
  return 0;
}

/* xorshift64 output, 64 KiB per write (busybox tee and nc move 1-4 KiB per system call,
 * which dominates under TCG). */
static int random_bytes(int out_fd, const char *count_text, const char *copy_path) {
  unsigned long long remaining = strtoull(count_text, NULL, 10);
  int copy_fd = -1;
  if (copy_path != NULL) {
    copy_fd = open(copy_path, O_WRONLY);
    if (copy_fd < 0) {
      perror("probe: open copy");
      return 1;
    }
  }
  static unsigned long long block[RANDOM_BLOCK / 8];
  unsigned long long x = 0x9e3779b97f4a7c15ULL;
  while (remaining > 0) {
    for (size_t i = 0; i < RANDOM_BLOCK / 8; i++) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      block[i] = x;
    }
    size_t size = remaining < RANDOM_BLOCK ? (size_t)remaining : RANDOM_BLOCK;
    if (write_all(out_fd, (const char *)block, size) < 0) return 1;
    if (copy_fd >= 0 && write_all(copy_fd, (const char *)block, size) < 0) return 1;
    remaining -= size;
  }
  if (copy_fd >= 0) close(copy_fd);
  return 0;
}

static int tcp_send_random(const char *addr, const char *port, const char *count_text,
                           const char *copy_path) {
  struct sockaddr_storage dst;
  socklen_t dst_len = parse_address(addr, port, &dst);
  if (dst_len == 0) return 1;
  int fd = socket(dst.ss_family, SOCK_STREAM, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&dst, dst_len) < 0) {
    perror("probe: connect");
    return 1;
  }
  if (random_bytes(fd, count_text, copy_path) != 0) return 1;
  shutdown(fd, SHUT_WR);
  char drain[4096];
  while (read(fd, drain, sizeof(drain)) > 0) {
  }
  close(fd);
  return 0;
}

/* Longest wait of the tcp-* subcommands for one step (connect, one read). */
#define TCP_WAIT_S 20
#define TCP_MESSAGE_MAX 512

/* errno as text: "reset", "refused" for the two the scenarios expect, else its name. */
static const char *errno_text(int error) {
  switch (error) {
  case ECONNRESET: return "reset";
  case ECONNREFUSED: return "refused";
  case ETIMEDOUT: return "ETIMEDOUT";
  case EPIPE: return "EPIPE";
  case EHOSTUNREACH: return "EHOSTUNREACH";
  case ENETUNREACH: return "ENETUNREACH";
  case ECONNABORTED: return "ECONNABORTED";
  default: return strerror(error);
  }
}

/* Connects within TCP_WAIT_S; returns the socket or -1 after printing why not. */
static int tcp_connect(const char *addr, const char *port) {
  signal(SIGPIPE, SIG_IGN); /* a write to a reset connection fails with EPIPE instead */
  struct sockaddr_storage dst;
  socklen_t dst_len = parse_address(addr, port, &dst);
  if (dst_len == 0) return -1;
  int fd = socket(dst.ss_family, SOCK_STREAM, 0);
  if (fd < 0) {
    perror("probe: socket");
    return -1;
  }
  int flags = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  int error = 0;
  if (connect(fd, (struct sockaddr *)&dst, dst_len) < 0) {
    error = errno;
    if (error == EINPROGRESS) {
      struct pollfd pfd = {.fd = fd, .events = POLLOUT, .revents = 0};
      int rc = poll(&pfd, 1, TCP_WAIT_S * 1000);
      if (rc == 0) {
        printf("timeout\n");
        close(fd);
        return -1;
      }
      socklen_t len = sizeof(error);
      if (rc < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) < 0) error = errno;
    }
  }
  if (error != 0) {
    printf("%s\n", errno_text(error));
    close(fd);
    return -1;
  }
  fcntl(fd, F_SETFL, flags);
  return fd;
}

/* Reads what arrives within TCP_WAIT_S: byte count, 0 at EOF, -1 with errno (ETIMEDOUT
 * when nothing came). */
static ssize_t read_within(int fd, char *buf, size_t size) {
  struct pollfd pfd = {.fd = fd, .events = POLLIN, .revents = 0};
  int rc = poll(&pfd, 1, TCP_WAIT_S * 1000);
  if (rc == 0) errno = ETIMEDOUT;
  if (rc <= 0) return -1;
  ssize_t n;
  do n = read(fd, buf, size);
  while (n < 0 && errno == EINTR);
  return n;
}

/* Reads to EOF into buf (NUL-terminated, at most size - 1 bytes kept); returns 0 or the
 * errno that ended it. */
static int read_to_end(int fd, char *buf, size_t size, size_t *length) {
  *length = 0;
  char scratch[TCP_MESSAGE_MAX];
  for (;;) {
    ssize_t n = read_within(fd, scratch, sizeof(scratch));
    if (n < 0) {
      buf[*length] = '\0';
      return errno;
    }
    if (n == 0) break;
    size_t keep = (size_t)n < size - 1 - *length ? (size_t)n : size - 1 - *length;
    memcpy(buf + *length, scratch, keep);
    *length += keep;
  }
  buf[*length] = '\0';
  return 0;
}

static int tcp_reset(const char *addr, const char *port) {
  int fd = tcp_connect(addr, port);
  if (fd < 0) return 1;
  if (write_all(fd, "reset-me\n", 9) < 0) return 1;
  char reply[TCP_MESSAGE_MAX];
  ssize_t n = read_within(fd, reply, sizeof(reply));
  if (n <= 0) {
    printf("no-reply %s\n", n == 0 ? "eof" : errno_text(errno));
    return 1;
  }
  struct linger abort_on_close = {.l_onoff = 1, .l_linger = 0};
  if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort_on_close, sizeof(abort_on_close)) < 0) {
    perror("probe: SO_LINGER");
    return 1;
  }
  close(fd);
  printf("sent-rst\n");
  return 0;
}

static int tcp_wait_end(const char *addr, const char *port) {
  int fd = tcp_connect(addr, port);
  if (fd < 0) return 1;
  if (write_all(fd, "end-me\n", 7) < 0) return 1;
  char data[TCP_MESSAGE_MAX];
  size_t length;
  int error = read_to_end(fd, data, sizeof(data), &length);
  printf("%s\n", error == 0 ? "eof" : errno_text(error));
  close(fd);
  return 0;
}

static int tcp_connect_only(const char *addr, const char *port) {
  int fd = tcp_connect(addr, port);
  if (fd < 0) return 0; /* the outcome is printed */
  printf("connected\n");
  close(fd);
  return 0;
}

static int tcp_half_close(const char *addr, const char *port, const char *message) {
  int fd = tcp_connect(addr, port);
  if (fd < 0) return 1;
  if (write_all(fd, message, strlen(message)) < 0) return 1;
  if (shutdown(fd, SHUT_WR) < 0) {
    perror("probe: shutdown");
    return 1;
  }
  char reply[TCP_MESSAGE_MAX];
  size_t length;
  int error = read_to_end(fd, reply, sizeof(reply), &length);
  close(fd);
  if (error != 0) {
    printf("%s after '%s'\n", errno_text(error), reply);
    return 1;
  }
  printf("%s\n", reply);
  return 0;
}

/* ethtool's channel request (SIOCETHTOOL, ETHTOOL_GCHANNELS / ETHTOOL_SCHANNELS). */
static int channels_request(int fd, const char *ifname, struct ethtool_channels *channels) {
  struct ifreq ifr;
  memset(&ifr, 0, sizeof(ifr));
  strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
  ifr.ifr_data = (char *)channels;
  return ioctl(fd, SIOCETHTOOL, &ifr);
}

static int set_channels(const char *ifname, int count) {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) {
    perror("probe: socket");
    return 1;
  }
  struct ethtool_channels channels;
  memset(&channels, 0, sizeof(channels));
  channels.cmd = ETHTOOL_GCHANNELS;
  if (channels_request(fd, ifname, &channels) < 0) {
    perror("probe: ETHTOOL_GCHANNELS");
    close(fd);
    return 1;
  }
  unsigned max = channels.max_combined;
  unsigned want = count < 1 ? 1 : (unsigned)count;
  if (want > max) want = max;
  channels.cmd = ETHTOOL_SCHANNELS;
  channels.combined_count = want;
  if (want != 0 && channels_request(fd, ifname, &channels) < 0) {
    perror("probe: ETHTOOL_SCHANNELS");
    close(fd);
    return 1;
  }
  memset(&channels, 0, sizeof(channels));
  channels.cmd = ETHTOOL_GCHANNELS;
  int rc = channels_request(fd, ifname, &channels);
  close(fd);
  if (rc < 0) {
    perror("probe: ETHTOOL_GCHANNELS");
    return 1;
  }
  printf("channels %u of %u\n", channels.combined_count, channels.max_combined);
  return 0;
}

static int tcp_reply_after_eof(const char *addr, const char *port) {
  int fd = tcp_connect(addr, port);
  if (fd < 0) return 1;
  char data[TCP_MESSAGE_MAX];
  size_t length;
  int error = read_to_end(fd, data, sizeof(data), &length);
  if (error != 0) {
    printf("%s after '%s'\n", errno_text(error), data);
    close(fd);
    return 1;
  }
  if (write_all(fd, "reply:", 6) < 0 || write_all(fd, data, length) < 0) return 1;
  close(fd);
  printf("%s\n", data);
  return 0;
}

/* DHCPv6 (RFC 8415): ports (section 7.2), message types (section 7.3), option codes
 * (section 21) and the DNS servers option (RFC 3646 section 3). */
#define DHCPV6_CLIENT_PORT 546
#define DHCPV6_SERVER_PORT 547
#define DHCPV6_SOLICIT 1
#define DHCPV6_ADVERTISE 2
#define DHCPV6_REQUEST 3
#define DHCPV6_REPLY 7
#define DHCPV6_OPTION_CLIENTID 1
#define DHCPV6_OPTION_SERVERID 2
#define DHCPV6_OPTION_IA_NA 3
#define DHCPV6_OPTION_IAADDR 5
#define DHCPV6_OPTION_ORO 6
#define DHCPV6_OPTION_ELAPSED_TIME 8
#define DHCPV6_OPTION_STATUS_CODE 13
#define DHCPV6_OPTION_DNS_SERVERS 23
/* Header: msg-type (1) + transaction-id (3); option: code (2) + length (2). */
#define DHCPV6_HEADER_LENGTH 4
#define DHCPV6_OPTION_HEADER_LENGTH 4
/* IA_NA: IAID, T1, T2 (section 21.4); IAADDR: address, preferred, valid (section 21.6). */
#define DHCPV6_IA_NA_FIXED_LENGTH 12
#define DHCPV6_IAADDR_FIXED_LENGTH 24
/* DUID-LL (section 11.4): type 3, hardware type 1 (Ethernet), then the MAC. */
#define DUID_TYPE_LL 3
#define HARDWARE_TYPE_ETHERNET 1
#define DHCPV6_MAX_MESSAGE 1500

struct dhcpv6_message {
  uint8_t data[DHCPV6_MAX_MESSAGE];
  size_t length;
};

static void put16(uint8_t *at, unsigned value) {
  at[0] = (uint8_t)(value >> 8);
  at[1] = (uint8_t)value;
}

static unsigned get16(const uint8_t *at) { return (unsigned)at[0] << 8 | at[1]; }

static int add_option(struct dhcpv6_message *m, unsigned code, const void *data, size_t length) {
  if (m->length + DHCPV6_OPTION_HEADER_LENGTH + length > sizeof(m->data)) return -1;
  put16(m->data + m->length, code);
  put16(m->data + m->length + 2, (unsigned)length);
  if (length > 0) memcpy(m->data + m->length + DHCPV6_OPTION_HEADER_LENGTH, data, length);
  m->length += DHCPV6_OPTION_HEADER_LENGTH + length;
  return 0;
}

/* Finds option `code` in [at, at+length); returns its data and sets *found_length. */
static const uint8_t *find_option(const uint8_t *at, size_t length, unsigned code,
                                  size_t *found_length) {
  size_t offset = 0;
  while (offset + DHCPV6_OPTION_HEADER_LENGTH <= length) {
    unsigned option = get16(at + offset);
    size_t size = get16(at + offset + 2);
    if (offset + DHCPV6_OPTION_HEADER_LENGTH + size > length) return NULL;
    if (option == code) {
      *found_length = size;
      return at + offset + DHCPV6_OPTION_HEADER_LENGTH;
    }
    offset += DHCPV6_OPTION_HEADER_LENGTH + size;
  }
  return NULL;
}

static void start_message(struct dhcpv6_message *m, unsigned type, uint32_t xid,
                          const uint8_t *duid, size_t duid_length) {
  static const uint8_t requested[2] = {0, DHCPV6_OPTION_DNS_SERVERS};
  static const uint8_t elapsed[2] = {0, 0};
  m->data[0] = (uint8_t)type;
  m->data[1] = (uint8_t)(xid >> 16);
  m->data[2] = (uint8_t)(xid >> 8);
  m->data[3] = (uint8_t)xid;
  m->length = DHCPV6_HEADER_LENGTH;
  add_option(m, DHCPV6_OPTION_CLIENTID, duid, duid_length);
  add_option(m, DHCPV6_OPTION_ELAPSED_TIME, elapsed, sizeof(elapsed));
  add_option(m, DHCPV6_OPTION_ORO, requested, sizeof(requested));
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Sends `request` once a second until a message of `want` type with its transaction id
 * arrives (stored in `answer`) or the deadline passes. */
static int exchange(int fd, const struct sockaddr_in6 *server, const struct dhcpv6_message *request,
                    unsigned want, double deadline, struct dhcpv6_message *answer) {
  while (now_s() < deadline) {
    if (sendto(fd, request->data, request->length, 0, (const struct sockaddr *)server,
               sizeof(*server)) < 0) {
      perror("probe: dhcpv6 sendto"); /* e.g. link-local address still tentative: retry */
    }
    double resend = now_s() + 1.0;
    while (now_s() < resend) {
      struct pollfd pfd = {.fd = fd, .events = POLLIN, .revents = 0};
      if (poll(&pfd, 1, 200) <= 0) continue;
      ssize_t n = recv(fd, answer->data, sizeof(answer->data), 0);
      if (n < DHCPV6_HEADER_LENGTH) continue;
      answer->length = (size_t)n;
      if (answer->data[0] == want && memcmp(answer->data + 1, request->data + 1, 3) == 0) {
        return 0;
      }
    }
  }
  fprintf(stderr, "probe: no DHCPv6 message of type %u before the deadline\n", want);
  return -1;
}

static int dhcpv6_client(const char *ifname, int timeout_s) {
  double deadline = now_s() + timeout_s;
  unsigned ifindex = if_nametoindex(ifname);
  if (ifindex == 0) {
    perror("probe: if_nametoindex");
    return 1;
  }
  int fd = socket(AF_INET6, SOCK_DGRAM, 0);
  if (fd < 0) {
    perror("probe: socket");
    return 1;
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof(ifr));
  snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
  if (ioctl(fd, SIOCGIFHWADDR, &ifr) < 0) {
    perror("probe: SIOCGIFHWADDR");
    return 1;
  }
  uint8_t duid[10];
  put16(duid, DUID_TYPE_LL);
  put16(duid + 2, HARDWARE_TYPE_ETHERNET);
  memcpy(duid + 4, ifr.ifr_hwaddr.sa_data, 6);
  struct sockaddr_in6 local;
  memset(&local, 0, sizeof(local));
  local.sin6_family = AF_INET6;
  local.sin6_addr = in6addr_any;
  local.sin6_port = htons(DHCPV6_CLIENT_PORT);
  if (bind(fd, (struct sockaddr *)&local, sizeof(local)) < 0) {
    perror("probe: bind [::]:546");
    return 1;
  }
  struct sockaddr_in6 server;
  memset(&server, 0, sizeof(server));
  server.sin6_family = AF_INET6;
  server.sin6_port = htons(DHCPV6_SERVER_PORT);
  server.sin6_scope_id = ifindex;
  inet_pton(AF_INET6, "ff02::1:2", &server.sin6_addr); /* All_DHCP_Relay_Agents_and_Servers */

  uint8_t ia_na[DHCPV6_IA_NA_FIXED_LENGTH] = {0, 0, 0, 1}; /* IAID 1, T1 = T2 = 0 */
  uint32_t xid = (uint32_t)getpid() & 0xffffff;
  struct dhcpv6_message request, answer;
  start_message(&request, DHCPV6_SOLICIT, xid, duid, sizeof(duid));
  add_option(&request, DHCPV6_OPTION_IA_NA, ia_na, sizeof(ia_na));
  if (exchange(fd, &server, &request, DHCPV6_ADVERTISE, deadline, &answer) < 0) return 1;

  const uint8_t *options = answer.data + DHCPV6_HEADER_LENGTH;
  size_t options_length = answer.length - DHCPV6_HEADER_LENGTH;
  size_t server_id_length = 0, offered_length = 0;
  const uint8_t *server_id =
      find_option(options, options_length, DHCPV6_OPTION_SERVERID, &server_id_length);
  const uint8_t *offered = find_option(options, options_length, DHCPV6_OPTION_IA_NA, &offered_length);
  if (server_id == NULL || offered == NULL) {
    fprintf(stderr, "probe: ADVERTISE lacks %s\n", server_id == NULL ? "SERVERID" : "IA_NA");
    return 1;
  }
  start_message(&request, DHCPV6_REQUEST, (xid + 1) & 0xffffff, duid, sizeof(duid));
  if (add_option(&request, DHCPV6_OPTION_SERVERID, server_id, server_id_length) < 0 ||
      add_option(&request, DHCPV6_OPTION_IA_NA, offered, offered_length) < 0) {
    fprintf(stderr, "probe: ADVERTISE options too long to echo\n");
    return 1;
  }
  if (exchange(fd, &server, &request, DHCPV6_REPLY, deadline, &answer) < 0) return 1;
  close(fd);

  options = answer.data + DHCPV6_HEADER_LENGTH;
  options_length = answer.length - DHCPV6_HEADER_LENGTH;
  size_t ia_length = 0, address_length = 0, status_length = 0, dns_length = 0;
  const uint8_t *ia = find_option(options, options_length, DHCPV6_OPTION_IA_NA, &ia_length);
  if (ia == NULL || ia_length < DHCPV6_IA_NA_FIXED_LENGTH) {
    fprintf(stderr, "probe: REPLY has no IA_NA\n");
    return 1;
  }
  const uint8_t *status = find_option(ia + DHCPV6_IA_NA_FIXED_LENGTH,
                                      ia_length - DHCPV6_IA_NA_FIXED_LENGTH,
                                      DHCPV6_OPTION_STATUS_CODE, &status_length);
  if (status != NULL && status_length >= 2 && get16(status) != 0) {
    fprintf(stderr, "probe: IA_NA status %u\n", get16(status));
    return 1;
  }
  const uint8_t *address = find_option(ia + DHCPV6_IA_NA_FIXED_LENGTH,
                                       ia_length - DHCPV6_IA_NA_FIXED_LENGTH,
                                       DHCPV6_OPTION_IAADDR, &address_length);
  if (address == NULL || address_length < DHCPV6_IAADDR_FIXED_LENGTH) {
    fprintf(stderr, "probe: IA_NA in REPLY has no IAADDR\n");
    return 1;
  }
  char text[INET6_ADDRSTRLEN];
  inet_ntop(AF_INET6, address, text, sizeof(text));
  printf("addr %s\n", text);
  printf("dns");
  const uint8_t *dns = find_option(options, options_length, DHCPV6_OPTION_DNS_SERVERS, &dns_length);
  for (size_t i = 0; dns != NULL && i + 16 <= dns_length; i += 16) {
    inet_ntop(AF_INET6, dns + i, text, sizeof(text));
    printf(" %s", text);
  }
  printf("\n");
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 6 && strcmp(argv[1], "udp-send") == 0) {
    return send_and_wait(argv[2], argv[3], argv[4], atoi(argv[5]));
  }
  if (argc == 5 && strcmp(argv[1], "udp-echo") == 0) {
    return echo_server(argv[2], atoi(argv[3]), atoi(argv[4]));
  }
  if ((argc == 3 || argc == 4) && strcmp(argv[1], "random") == 0) {
    return random_bytes(STDOUT_FILENO, argv[2], argc == 4 ? argv[3] : NULL);
  }
  if ((argc == 5 || argc == 6) && strcmp(argv[1], "tcp-send") == 0) {
    return tcp_send_random(argv[2], argv[3], argv[4], argc == 6 ? argv[5] : NULL);
  }
  if (argc == 4 && strcmp(argv[1], "dhcpv6") == 0) {
    return dhcpv6_client(argv[2], atoi(argv[3]));
  }
  if (argc == 4 && strcmp(argv[1], "tcp-reset") == 0) return tcp_reset(argv[2], argv[3]);
  if (argc == 4 && strcmp(argv[1], "tcp-wait-end") == 0) return tcp_wait_end(argv[2], argv[3]);
  if (argc == 4 && strcmp(argv[1], "tcp-connect") == 0) {
    return tcp_connect_only(argv[2], argv[3]);
  }
  if (argc == 5 && strcmp(argv[1], "tcp-half-close") == 0) {
    return tcp_half_close(argv[2], argv[3], argv[4]);
  }
  if (argc == 4 && strcmp(argv[1], "tcp-reply-after-eof") == 0) {
    return tcp_reply_after_eof(argv[2], argv[3]);
  }
  if (argc == 4 && strcmp(argv[1], "channels") == 0) return set_channels(argv[2], atoi(argv[3]));
  fprintf(stderr,
          "usage: probe udp-send ADDR PORT MESSAGE TIMEOUT_S\n"
          "       probe udp-echo PORT COUNT TIMEOUT_S\n"
          "       probe random BYTES [COPY]\n"
          "       probe tcp-send ADDR PORT BYTES [COPY]\n"
          "       probe dhcpv6 IFNAME TIMEOUT_S\n"
          "       probe tcp-reset ADDR PORT\n"
          "       probe tcp-wait-end ADDR PORT\n"
          "       probe tcp-connect ADDR PORT\n"
          "       probe tcp-half-close ADDR PORT MESSAGE\n"
          "       probe tcp-reply-after-eof ADDR PORT\n"
          "       probe channels IFNAME COUNT\n");
  return 2;
}
