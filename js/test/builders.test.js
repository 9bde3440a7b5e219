// Pure builders of wrapperkernel_comm.js: URL, headers, messages, batching, parsing.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const wk = require("../wrapperkernel_comm.js");

const KERNEL = "0f1e2d3c-aaaa-bbbb-cccc-000000000001";
const SESSION = "5e551011-0000-4000-8000-000000000002";

function fakeDocument(text) {
  return {
    getElementById(id) {
      return id === "jupyter-config-data" && text !== undefined ? { textContent: text } : null;
    },
  };
}

test("url: plain http page, baseUrl /", () => {
  const url = wk.channelsUrl({ baseUrl: "/", wsUrl: "" }, { href: "http://localhost:8888/lab/tree/a.ipynb" }, KERNEL, SESSION);
  assert.equal(url, `ws://localhost:8888/api/kernels/${KERNEL}/channels?session_id=${SESSION}`);
});

test("url: https page becomes wss and keeps a JupyterHub base url", () => {
  const url = wk.channelsUrl({ baseUrl: "/user/x/" }, { href: "https://hub.example.org/user/x/lab" }, KERNEL, SESSION);
  assert.equal(url, `wss://hub.example.org/user/x/api/kernels/${KERNEL}/channels?session_id=${SESSION}`);
});

test("url: a base url without trailing slash gets one", () => {
  const url = wk.channelsUrl({ baseUrl: "/user/name" }, { href: "https://h.org:8443/user/name/tree" }, "k", "s");
  assert.equal(url, "wss://h.org:8443/user/name/api/kernels/k/channels?session_id=s");
});

test("url: wsUrl from the page config wins over baseUrl and location", () => {
  const url = wk.channelsUrl(
    { baseUrl: "/ignored/", wsUrl: "wss://other.example.org/prefix/" },
    { href: "http://localhost:8888/lab" },
    "k",
    "s",
  );
  assert.equal(url, "wss://other.example.org/prefix/api/kernels/k/channels?session_id=s");
});

test("url: token is appended and encoded; missing config falls back to /", () => {
  const url = wk.channelsUrl({ token: "a b&c" }, { href: "http://127.0.0.1:9999/notebooks/x.ipynb" }, "k", "s");
  assert.equal(url, "ws://127.0.0.1:9999/api/kernels/k/channels?session_id=s&token=a%20b%26c");
});

test("readPageConfig: parses the element, tolerates absence and bad JSON", () => {
  assert.deepEqual(wk.readPageConfig(fakeDocument('{"baseUrl": "/b/", "token": "t"}')), { baseUrl: "/b/", token: "t" });
  assert.deepEqual(wk.readPageConfig(fakeDocument(undefined)), {});
  assert.deepEqual(wk.readPageConfig(fakeDocument("{not json")), {});
  assert.deepEqual(wk.readPageConfig(undefined), {});
});

test("makeHeader: every field JupyterLab validates, version 5.5 (the kernel's), ISO date", () => {
  const date = new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 6));
  const header = wk.makeHeader("comm_msg", SESSION, "m-1", date);
  assert.deepEqual(header, {
    msg_id: "m-1",
    msg_type: "comm_msg",
    username: "wrapperkernel_comm",
    session: SESSION,
    date: "2024-01-02T03:04:05.006Z",
    version: "5.5",
  });
});

test("comm_open / comm_close shapes", () => {
  const h = wk.makeHeader("comm_open", "s", "m", new Date(0));
  assert.deepEqual(wk.makeCommOpen(h, "c1", KERNEL), {
    header: h,
    parent_header: {},
    metadata: {},
    content: { comm_id: "c1", target_name: "wrapperkernel_comm", data: { kernel_id: KERNEL } },
    buffers: [],
    channel: "shell",
  });
  assert.deepEqual(wk.makeCommClose(h, "c1").content, { comm_id: "c1", data: {} });
});

test("encodeCommMsgFrame is the JSON of makeCommMsg", () => {
  const h = wk.makeHeader("comm_msg", "s", "m", new Date(0));
  const data = { batch: [{ address: "/a", value: 0 }, { address: "/b", value: null }] };
  const frame = wk.encodeCommMsgFrame(h, "c1", JSON.stringify(data));
  assert.deepEqual(JSON.parse(frame), wk.makeCommMsg(h, "c1", data));
});

test("dataJsonFor: one item alone, several as a batch in order", () => {
  assert.equal(wk.dataJsonFor(['{"address":"/a","value":1}']), '{"address":"/a","value":1}');
  assert.deepEqual(JSON.parse(wk.dataJsonFor(['{"address":"/a","value":1}', '{"address":"/b","value":2}'])), {
    batch: [{ address: "/a", value: 1 }, { address: "/b", value: 2 }],
  });
});

test("utf8ByteLength matches Buffer.byteLength, including astral characters", () => {
  for (const text of ["", "abc", "héllo", "✓ done", "😀 x 😀", '{"v":"日本語"}']) {
    assert.equal(wk.utf8ByteLength(text), Buffer.byteLength(text, "utf8"), text);
  }
});

test("splitIntoChunks: caps items and bytes, keeps order, oversize item alone", () => {
  const entries = (sizes) => sizes.map((bytes, i) => ({ json: String(i), bytes }));
  const ids = (chunks) => chunks.map((chunk) => chunk.map((e) => e.json));
  assert.deepEqual(ids(wk.splitIntoChunks(entries([1, 1, 1, 1, 1]), 2, 1000)), [["0", "1"], ["2", "3"], ["4"]]);
  assert.deepEqual(ids(wk.splitIntoChunks(entries([40, 40, 40]), 100, 90)), [["0", "1"], ["2"]]);
  assert.deepEqual(ids(wk.splitIntoChunks(entries([10, 500, 10]), 100, 100)), [["0"], ["1"], ["2"]]);
  assert.deepEqual(wk.splitIntoChunks([], 10, 10), []);
});

test("itemsOf: single, batch, null value kept, malformed items reported not thrown", () => {
  assert.deepEqual(wk.itemsOf({ address: "/a", value: null }), { items: [{ address: "/a", value: null }], problems: [] });
  const { items, problems } = wk.itemsOf({
    batch: [
      { address: "/a", value: 0 },
      { address: "/a" },
      "nope",
      { value: 1 },
      { address: "/b", read_request: true },
      { address: "/c", read_request: "yes" },
      { address: "/d", value: 1, read_request: true },
      { address: "/e", read_error: "why" },
    ],
  });
  assert.deepEqual(items, [
    { address: "/a", value: 0 },
    { address: "/b", read_request: true },
    { address: "/e", read_error: "why" },
  ]);
  assert.equal(problems.length, 5);
  assert.deepEqual(wk.itemsOf({ batch: "x" }).items, []);
  assert.deepEqual(wk.itemsOf(null).items, []);
});

test("classifyMessage: our comm_msg on iopub, comm_close, everything else ignored", () => {
  const msg = (type, commId, channel, data) => ({
    header: { msg_type: type },
    content: { comm_id: commId, data },
    channel,
  });
  assert.deepEqual(wk.classifyMessage(msg("comm_msg", "c1", "iopub", { x: 1 }), "c1"), { kind: "data", data: { x: 1 } });
  assert.deepEqual(wk.classifyMessage(msg("comm_close", "c1", "iopub", {}), "c1"), { kind: "close" });
  assert.deepEqual(wk.classifyMessage(msg("comm_msg", "other", "iopub", {}), "c1"), { kind: "ignore" });
  assert.deepEqual(wk.classifyMessage(msg("comm_msg", "c1", "shell", {}), "c1"), { kind: "ignore" });
  assert.equal(wk.classifyMessage(msg("stream", "c1", "iopub", {}), "c1").kind, "ignore");
  assert.equal(wk.classifyMessage([1, 2], "c1").kind, "ignore");
  assert.equal(wk.classifyMessage({ header: {} }, "c1").kind, "ignore");
});

test("newUuid: v4 format, also without randomUUID (insecure context)", () => {
  const pattern = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
  const webcrypto = require("node:crypto").webcrypto;
  const insecure = { getRandomValues: (a) => webcrypto.getRandomValues(a) };
  const a = wk.newUuid(insecure);
  const b = wk.newUuid(insecure);
  assert.match(a, pattern);
  assert.match(b, pattern);
  assert.notEqual(a, b);
  assert.match(wk.newUuid(undefined), pattern);
  assert.match(wk.newUuid(webcrypto), pattern);
});
