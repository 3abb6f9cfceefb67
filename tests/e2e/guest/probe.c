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
 *
 * ADDR is an IPv4 or IPv6 literal (never a name: the guest does no DNS lookups).
 * Exit status 0 on success, 1 on timeout or error (with a message on stderr).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
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
  fprintf(stderr,
          "usage: probe udp-send ADDR PORT MESSAGE TIMEOUT_S\n"
          "       probe udp-echo PORT COUNT TIMEOUT_S\n"
          "       probe random BYTES [COPY]\n"
          "       probe tcp-send ADDR PORT BYTES [COPY]\n");
  return 2;
}
