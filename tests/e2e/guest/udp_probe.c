/*
 * udp_probe: the guest's UDP tool for the end-to-end tests (busybox nc has no -u).
 *
 *   udp_probe send ADDR PORT MESSAGE TIMEOUT_S  send one datagram, print the reply
 *   udp_probe echo PORT COUNT TIMEOUT_S         answer COUNT datagrams with "echo:" + data
 *
 * ADDR is an IPv4 or IPv6 literal (never a name: the guest does no DNS lookups).
 * Exit status 0 on success, 1 on timeout or error (with a message on stderr).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_DATAGRAM 2048

static int wait_readable(int fd, int timeout_s) {
  struct pollfd pfd = {.fd = fd, .events = POLLIN, .revents = 0};
  int rc = poll(&pfd, 1, timeout_s * 1000);
  if (rc < 0) {
    perror("udp_probe: poll");
    return -1;
  }
  if (rc == 0) {
    fprintf(stderr, "udp_probe: no datagram within %d s\n", timeout_s);
    return -1;
  }
  return 0;
}

static int send_and_wait(const char *addr, const char *port, const char *message, int timeout_s) {
  struct sockaddr_storage dst;
  socklen_t dst_len;
  memset(&dst, 0, sizeof(dst));
  struct sockaddr_in *v4 = (struct sockaddr_in *)&dst;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&dst;
  if (inet_pton(AF_INET, addr, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons((unsigned short)atoi(port));
    dst_len = sizeof(*v4);
  } else if (inet_pton(AF_INET6, addr, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons((unsigned short)atoi(port));
    dst_len = sizeof(*v6);
  } else {
    fprintf(stderr, "udp_probe: '%s' is not an IPv4 or IPv6 literal\n", addr);
    return 1;
  }
  int fd = socket(dst.ss_family, SOCK_DGRAM, 0);
  if (fd < 0) {
    perror("udp_probe: socket");
    return 1;
  }
  if (sendto(fd, message, strlen(message), 0, (struct sockaddr *)&dst, dst_len) < 0) {
    perror("udp_probe: sendto");
    return 1;
  }
  if (wait_readable(fd, timeout_s) < 0) return 1;
  char buf[MAX_DATAGRAM + 1];
  ssize_t n = recv(fd, buf, MAX_DATAGRAM, 0);
  if (n < 0) {
    perror("udp_probe: recv");
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
    perror("udp_probe: socket");
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
    perror("udp_probe: bind");
    return 1;
  }
  for (int i = 0; i < count; i++) {
    if (wait_readable(fd, timeout_s) < 0) return 1;
    char buf[MAX_DATAGRAM + 5] = "echo:";
    struct sockaddr_storage peer;
    socklen_t peer_len = sizeof(peer);
    ssize_t n = recvfrom(fd, buf + 5, MAX_DATAGRAM, 0, (struct sockaddr *)&peer, &peer_len);
    if (n < 0) {
      perror("udp_probe: recvfrom");
      return 1;
    }
    if (sendto(fd, buf, (size_t)n + 5, 0, (struct sockaddr *)&peer, peer_len) < 0) {
      perror("udp_probe: sendto");
      return 1;
    }
    buf[n + 5] = '\0';
    printf("%s\n", buf + 5);
    fflush(stdout);
  }
  close(fd);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 6 && strcmp(argv[1], "send") == 0) {
    return send_and_wait(argv[2], argv[3], argv[4], atoi(argv[5]));
  }
  if (argc == 5 && strcmp(argv[1], "echo") == 0) {
    return echo_server(argv[2], atoi(argv[3]), atoi(argv[4]));
  }
  fprintf(stderr,
          "usage: udp_probe send ADDR PORT MESSAGE TIMEOUT_S\n"
          "       udp_probe echo PORT COUNT TIMEOUT_S\n");
  return 2;
}
