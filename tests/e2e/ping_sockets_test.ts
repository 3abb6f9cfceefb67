import assert from "node:assert/strict";
import {
  ALL_GROUPS_RANGE,
  allowPingSockets,
  PING_GROUP_RANGE_PATH,
  pingSocketsAllowed,
  pingUnavailableReason,
  restorePingGroupRange,
} from "./ping_sockets.ts";

const root = Deno.uid() === 0;

Deno.test({
  name: "`allowPingSockets()` opens ping_group_range to every group and the restore puts it back",
  ignore: !root,
  fn() {
    const before = Deno.readTextFileSync(PING_GROUP_RANGE_PATH).trim().split(/\s+/).join(" ");
    const changed = allowPingSockets();
    assert.equal(changed, before !== ALL_GROUPS_RANGE);
    assert.ok(pingSocketsAllowed(0) && pingSocketsAllowed(65534));
    assert.equal(pingUnavailableReason(65534, "passt"), null);
    restorePingGroupRange();
    const after = Deno.readTextFileSync(PING_GROUP_RANGE_PATH).trim().split(/\s+/).join(" ");
    assert.equal(after, before);
  },
});

Deno.test("`pingUnavailableReason()` names the sysctl and the group when ping sockets are out", () => {
  const reason = pingUnavailableReason(2147483647 + 1, "tpasst-vhost");
  assert.match(reason ?? "", /ping_group_range excludes gid 2147483648: tpasst-vhost/);
});
