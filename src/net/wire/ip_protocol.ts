/**
 * IP protocol numbers (the IPv4 "Protocol" and IPv6 "Next Header" field values, IANA
 * "Assigned Internet Protocol Numbers") of the protocols the stack handles.
 *
 * @module
 */

/** IP protocol number of ICMP (RFC 790, IANA "Protocol Numbers"). */
export const IPPROTO_ICMP = 1;
/** IP protocol number of TCP (RFC 9293). */
export const IPPROTO_TCP = 6;
/** IP protocol number of UDP (RFC 768). */
export const IPPROTO_UDP = 17;
/** IP protocol number of ICMPv6 (RFC 4443). */
export const IPPROTO_ICMPV6 = 58;
