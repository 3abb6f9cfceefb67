/*
 * sockaddr.c - socket addresses from the raw address bytes the TypeScript side passes
 * (4 bytes for IPv4, 16 for IPv6, network order); shared by tcp_socket.c and
 * udp_socket.c, not bound in ffi/.
 */
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "tpasst_helper.h"

/*
 * tp_fill_sockaddr() - fill an IPv4 or IPv6 socket address from raw address bytes.
 * @ss:       address to fill
 * @addr:     4 (IPv4) or 16 (IPv6) bytes in network order
 * @addr_len: 4 or 16
 * @port:     port in host order
 * @scope_id: IPv6 scope (interface index), ignored for IPv4
 *
 * Return: the sockaddr length, or 0 for an address length other than 4 or 16.
 */
socklen_t tp_fill_sockaddr(struct sockaddr_storage *ss, const uint8_t *addr, uint32_t addr_len,
			   uint32_t port, uint32_t scope_id)
{
	memset(ss, 0, sizeof(*ss));
	if (addr_len == 4) {
		struct sockaddr_in *v4 = (struct sockaddr_in *)ss;

		v4->sin_family = AF_INET;
		v4->sin_port = htons((uint16_t)port);
		memcpy(&v4->sin_addr, addr, 4);
		return sizeof(*v4);
	}
	if (addr_len == 16) {
		struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;

		v6->sin6_family = AF_INET6;
		v6->sin6_port = htons((uint16_t)port);
		memcpy(&v6->sin6_addr, addr, 16);
		v6->sin6_scope_id = scope_id;
		return sizeof(*v6);
	}
	return 0;
}
