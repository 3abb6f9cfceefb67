/**
 * Network plans built the daemon's way (buildNetworkPlan) from options alone, with a
 * host that shows nothing (no routes, resolvers or interfaces), for the tests of the
 * stack and its services.
 *
 * @module
 */

import {
  buildNetworkPlan,
  type HostSources,
  type NetworkPlan,
} from "../../../src/net/plan/network_plan.ts";

/** Host sources that find nothing: the plan comes from the overrides alone. */
export const NO_HOST: HostSources = { readFile: () => null, networkInterfaces: () => [] };

/** A dual-stack plan: guest 10.0.2.21/24 via 10.0.2.2, and 2001:db8::15 via fe80::1. */
export function dualStackPlan(): NetworkPlan {
  return buildNetworkPlan({
    address4: "10.0.2.21/24",
    gateway4: "10.0.2.2",
    address6: "2001:db8::15",
    gateway6: "fe80::1",
  }, NO_HOST);
}
