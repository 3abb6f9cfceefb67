import fc from "fast-check";
import { assertEquals, assertThrows, assertTrue } from "../../tests/support/assert.ts";
import { parsePortForwardTable, parsePortSpec, PortSpecError } from "./port_spec.ts";
import { type PortForwardSpec, targetPort } from "../net/plan/port_forward.ts";

const NO_EPHEMERAL = { first: 0, last: 0 };

function mapping(spec: PortForwardSpec | null, ports: number[]): (number | null)[] {
  return ports.map((p) => (spec === null ? null : targetPort(spec, p, NO_EPHEMERAL)));
}

Deno.test("parsePortSpec() parses every example of passt(1)", () => {
  assertEquals(parsePortSpec("none"), null);
  assertEquals(parsePortSpec("22"), {
    text: "22",
    bindAddress: null,
    bindInterface: null,
    allNonEphemeral: false,
    allTargetAddress: null,
    forwards: [{ first: 22, last: 22, targetFirst: 22, targetAddress: null }],
    excluded: [],
  });
  assertEquals(parsePortSpec("22:23")?.forwards, [{
    first: 22,
    last: 22,
    targetFirst: 23,
    targetAddress: null,
  }]);
  assertEquals(parsePortSpec("22,25")?.forwards, [
    { first: 22, last: 22, targetFirst: 22, targetAddress: null },
    { first: 25, last: 25, targetFirst: 25, targetAddress: null },
  ]);
  assertEquals(parsePortSpec("22-80")?.forwards, [{
    first: 22,
    last: 80,
    targetFirst: 22,
    targetAddress: null,
  }]);
  assertEquals(parsePortSpec("22-80:32-90")?.forwards, [{
    first: 22,
    last: 80,
    targetFirst: 32,
    targetAddress: null,
  }]);
  const bound = parsePortSpec("192.0.2.1/22");
  assertEquals([bound?.bindAddress, bound?.bindInterface], ["192.0.2.1", null]);
  const boundIf = parsePortSpec("192.0.2.1%eth0/22");
  assertEquals([boundIf?.bindAddress, boundIf?.bindInterface], ["192.0.2.1", "eth0"]);
  assertEquals(parsePortSpec("%lo/22")?.bindInterface, "lo");
  assertEquals(parsePortSpec("2001:DB8::1/22")?.bindAddress, "2001:db8::1");
  assertEquals(parsePortSpec("2000-5000,~3000-3010")?.forwards, [
    { first: 2000, last: 2999, targetFirst: 2000, targetAddress: null },
    { first: 3011, last: 5000, targetFirst: 3011, targetAddress: null },
  ]);
  assertEquals(parsePortSpec("192.0.2.1/20-30,~25")?.forwards, [
    { first: 20, last: 24, targetFirst: 20, targetAddress: null },
    { first: 26, last: 30, targetFirst: 26, targetAddress: null },
  ]);
  const exclOnly = parsePortSpec("~20000-20010");
  assertEquals([exclOnly?.allNonEphemeral, exclOnly?.forwards, exclOnly?.excluded], [
    true,
    [],
    [{ first: 20000, last: 20010 }],
  ]);
  assertEquals(parsePortSpec("all")?.allNonEphemeral, true);
  // passt 2026's target addresses and bind forms.
  const toAddress = parsePortSpec("0.0.0.0/5000:192.0.2.5/6000");
  assertEquals([toAddress?.bindAddress, toAddress?.forwards], ["0.0.0.0", [
    { first: 5000, last: 5000, targetFirst: 6000, targetAddress: "192.0.2.5" },
  ]]);
  const allTo = parsePortSpec("127.0.0.6/all:192.0.2.6");
  assertEquals([allTo?.bindAddress, allTo?.allNonEphemeral, allTo?.allTargetAddress], [
    "127.0.0.6",
    true,
    "192.0.2.6",
  ]);
  assertEquals(parsePortSpec("::1/all")?.bindAddress, "::1");
});

Deno.test("parsePortSpec() reads passt's target and bind forms", () => {
  const forwards = (spec: string) => parsePortSpec(spec)?.forwards;
  assertEquals(forwards("22:10.0.0.5"), [
    { first: 22, last: 22, targetFirst: 22, targetAddress: "10.0.0.5" },
  ]);
  assertEquals(forwards("80-81:[fd00::5]/8080-8081"), [
    { first: 80, last: 81, targetFirst: 8080, targetAddress: "fd00::5" },
  ]);
  assertEquals(forwards("53:fd00::53"), [
    { first: 53, last: 53, targetFirst: 53, targetAddress: "fd00::53" },
  ]);
  assertEquals(forwards("22:10.0.0.5,80:10.0.0.6/8080"), [
    { first: 22, last: 22, targetFirst: 22, targetAddress: "10.0.0.5" },
    { first: 80, last: 80, targetFirst: 8080, targetAddress: "10.0.0.6" },
  ]);
  // "*", an empty address and brackets select the bind address as in passt.
  for (const spec of ["*/22", "/22", "*%eth0/22", "[::1]/22", "[127.0.0.1]%lo/22"]) {
    assertTrue(parsePortSpec(spec) !== null, spec);
  }
  assertEquals(parsePortSpec("*%eth0/22")?.bindInterface, "eth0");
  assertEquals(parsePortSpec("[::1]/22")?.bindAddress, "::1");
  assertEquals(parsePortSpec("/22")?.bindAddress, null);
  // Exclusions next to "all" narrow it.
  assertEquals(parsePortSpec("all,~25")?.excluded, [{ first: 25, last: 25 }]);
});

Deno.test("parsePortSpec() keeps the target offset when exclusions split a mapped range", () => {
  const spec = parsePortSpec("100-110:200-210,~105");
  assertEquals(mapping(spec, [99, 100, 104, 105, 106, 110, 111]), [
    null,
    200,
    204,
    null,
    206,
    210,
    null,
  ]);
});

Deno.test("targetPort() skips ephemeral and excluded ports for 'all'", () => {
  const spec = parsePortSpec("~80")!;
  const ephemeral = { first: 32768, last: 60999 };
  assertEquals(
    [1, 79, 80, 81, 32767, 32768, 60999, 61000, 65535].map((p) => targetPort(spec, p, ephemeral)),
    [1, 79, null, 81, 32767, null, null, 61000, 65535],
  );
});

Deno.test("parsePortSpec() rejects malformed specs naming the bad part", () => {
  const cases: [string, RegExp][] = [
    ["", /empty port spec/],
    ["auto", /only in pasta/],
    ["0", /port 0 .* out of range/],
    ["65536", /port 65536 .* out of range/],
    ["22x", /unexpected "x" after "22"/],
    ["-5", /empty port number/],
    ["5-", /empty port number/],
    ["30-20", /range "30-20" .* ends before it starts/],
    ["22,,23", /empty item/],
    ["22,", /empty item/],
    ["22-80:32", /target range .* 1 ports, source has 59/],
    ["22:224.0.0.1", /target address 224.0.0.1 in "22:224.0.0.1" is a multicast address/],
    ["22:0.0.0.0", /is the unspecified address/],
    ["all:ff02::1", /multicast/],
    ["22:10.0.0.1/", /unexpected "\/" after "22:10.0.0.1"/],
    ["22:", /empty port number/],
    ["~22:23", /exclusion "~22:23" cannot map/],
    ["22,22", /"22" overlaps ports 22-22/],
    ["20-30,25", /"25" overlaps/],
    ["22,all", /"all" cannot be combined with port ranges/],
    ["22,~22", /every port in "22,~22" is excluded/],
    ["300.1.1.1/22", /unexpected/],
    ["1.2.3.4%/22", /"" in "1.2.3.4%\/22" is not a valid interface name/],
    ["1.2.3.4%averyveryverylongname/22", /not a valid interface name/],
    ["224.0.0.1/22", /multicast/],
    ["1.2.3.4/", /no ports after/],
    ["1:2:3", /unexpected ":3" after "1:2"/],
    [" 22", /not a port number/],
    ["+22", /not a port number/],
    ["022", /not a port number/],
  ];
  for (const [spec, pattern] of cases) {
    const error = assertThrows(() => parsePortSpec(spec), pattern);
    assertTrue(error instanceof PortSpecError, `${spec}: wrong error type`);
  }
});

Deno.test("parsePortForwardTable() combines specs and rejects conflicts", () => {
  assertEquals(parsePortForwardTable([]).specs, []);
  assertEquals(parsePortForwardTable(["none"]).specs, []);
  assertEquals(parsePortForwardTable(["22", "80"]).specs.length, 2);
  assertEquals(parsePortForwardTable(["127.0.0.1/22", "::1/22"]).specs.length, 2);
  // "none" first is harmless; after a spec it conflicts (passt: "-t none conflicts").
  assertEquals(parsePortForwardTable(["none", "22"]).specs.length, 1);
  assertThrows(() => parsePortForwardTable(["22", "none"]), /"none" conflicts with "22"/);
  assertThrows(() => parsePortForwardTable(["20-30", "25"]), /forwards port 25 again/);
  assertThrows(() => parsePortForwardTable(["all", "25"]), /conflicts with "all"/);
  assertThrows(() => parsePortForwardTable(["~1", "25"]), /conflicts with "~1"/);
  assertEquals(parsePortForwardTable(["~25", "25"]).specs.length, 2);
  // Addresses match as in passt: any address of a version covers that version.
  assertThrows(() => parsePortForwardTable(["0.0.0.0/22", "127.0.0.1/22"]), /port 22 again/);
  assertEquals(parsePortForwardTable(["0.0.0.0/22", "::1/22"]).specs.length, 2);
  assertThrows(() => parsePortForwardTable(["22", "::1/22"]), /port 22 again/);
  // Target addresses must fit the listening side's IP version.
  assertThrows(() => parsePortForwardTable(["22:10.0.0.1"]), /forwards both IP versions/);
  assertThrows(
    () => parsePortForwardTable(["::/22:10.0.0.1"]),
    /forwards from IPv6 to IPv4 \(10.0.0.1\)/,
  );
  assertEquals(parsePortForwardTable(["0.0.0.0/22:10.0.0.1"]).specs.length, 1);
  assertEquals(
    parsePortForwardTable(["22:fd00::1"], { ipv4: false, ipv6: true }).specs.length,
    1,
  );
});

/** A model item: an included range with an optional shift, or an exclusion. */
interface ModelItem {
  exclude: boolean;
  first: number;
  length: number;
  shift: number | null;
}

const itemArbitrary: fc.Arbitrary<ModelItem> = fc.record({
  exclude: fc.boolean(),
  first: fc.integer({ min: 1, max: 65535 }),
  length: fc.integer({ min: 0, max: 300 }),
  shift: fc.option(fc.integer({ min: -1000, max: 1000 })),
}).map((item) => {
  const length = Math.min(item.length, 65535 - item.first);
  return { ...item, length };
});

function itemText(item: ModelItem): string {
  const range = (a: number, n: number) => (n === 0 ? `${a}` : `${a}-${a + n}`);
  if (item.exclude) return `~${range(item.first, item.length)}`;
  if (item.shift === null) return range(item.first, item.length);
  return `${range(item.first, item.length)}:${range(item.first + item.shift, item.length)}`;
}

/** Independent reference: the target of `port` by brute force, or "invalid" for a bad spec. */
function model(items: ModelItem[], port: number): number | null | "invalid" {
  const included = items.filter((i) => !i.exclude);
  for (const i of included) {
    const t = i.first + (i.shift ?? 0);
    if (t < 1 || t + i.length > 65535) return "invalid";
  }
  for (let a = 0; a < included.length; a++) {
    for (let b = 0; b < a; b++) {
      const x = included[a], y = included[b];
      if (x.first <= y.first + y.length && y.first <= x.first + x.length) return "invalid";
    }
  }
  const excluded = items.some((i) => i.exclude && port >= i.first && port <= i.first + i.length);
  if (included.length === 0) return excluded ? null : port;
  if (excluded) return null;
  for (const i of included) {
    if (port >= i.first && port <= i.first + i.length) {
      return port - i.first + i.first + (i.shift ?? 0);
    }
  }
  return null;
}

Deno.test("parsePortSpec() agrees with a brute-force model on generated specs", () => {
  fc.assert(
    fc.property(
      fc.array(itemArbitrary, { minLength: 1, maxLength: 6 }),
      fc.array(fc.integer({ min: 1, max: 65535 }), { minLength: 1, maxLength: 20 }),
      (items, probes) => {
        const text = items.map(itemText).join(",");
        let spec: PortForwardSpec | null;
        try {
          spec = parsePortSpec(text);
        } catch (error) {
          if (!(error instanceof PortSpecError)) throw error;
          // Invalid per the model, or everything included is excluded.
          const allGone = items.some((i) => !i.exclude) &&
            items.filter((i) => !i.exclude).every((i) => {
              for (let p = i.first; p <= i.first + i.length; p++) {
                if (model(items, p) !== null) return false;
              }
              return true;
            });
          assertTrue(model(items, 1) === "invalid" || allGone, `rejected valid "${text}"`);
          return;
        }
        assertTrue(model(items, 1) !== "invalid", `accepted invalid "${text}"`);
        const probePorts = [...probes, ...items.flatMap((i) => [i.first, i.first + i.length])];
        for (const p of probePorts) {
          assertEquals(targetPort(spec!, p, NO_EPHEMERAL), model(items, p), `"${text}" port ${p}`);
        }
        // Forwards are sorted and disjoint.
        const f = spec!.forwards;
        for (let i = 1; i < f.length; i++) assertTrue(f[i - 1].last < f[i].first);
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("parsePortSpec() throws only PortSpecError for arbitrary text", () => {
  const alphabet = fc.constantFrom(..."0123456789,-:~/%.abcdef []*l");
  fc.assert(
    fc.property(fc.string({ unit: alphabet, maxLength: 24 }), (text) => {
      try {
        parsePortSpec(text);
      } catch (error) {
        assertTrue(error instanceof PortSpecError, `${text}: ${error}`);
        assertTrue((error as Error).message.length > 0);
      }
    }),
    { numRuns: 500 },
  );
});
