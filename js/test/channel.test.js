// The channel of wrapperkernel_comm.js against a fake WebSocket and a fake page.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const wk = require("../wrapperkernel_comm.js");

const KERNEL = "0f1e2d3c-aaaa-bbbb-cccc-000000000001";

// ---------------------------------------------------------------- fakes and helpers

function makePage(pageConfig, href) {
  const sockets = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closeCalls = 0;
      sockets.push(this);
    }
    send(text) {
      if (this.readyState !== 1) throw new Error("send on a socket that is not open");
      if (typeof text !== "string") throw new Error("legacy protocol frames are text");
      this.sent.push(text);
    }
    close() {
      this.closeCalls += 1;
      this.readyState = 3;
    }
    // test side
    serverOpens() {
      this.readyState = 1;
      this.onopen({});
    }
    serverSends(msg) {
      this.onmessage({ data: typeof msg === "string" ? msg : JSON.stringify(msg) });
    }
    serverCloses(code) {
      this.readyState = 3;
      this.onclose({ code });
    }
    frames() {
      return this.sent.map((text) => JSON.parse(text));
    }
    commMsgData() {
      return this.frames()
        .filter((f) => f.header.msg_type === "comm_msg")
        .map((f) => f.content.data);
    }
  }
  const logs = { debug: [], warn: [], error: [] };
  const console = {
    debug: (...args) => logs.debug.push(args),
    warn: (...args) => logs.warn.push(args),
    error: (...args) => logs.error.push(args),
  };
  const text = JSON.stringify(pageConfig === undefined ? { baseUrl: "/", wsUrl: "", token: "" } : pageConfig);
  const document = {
    getElementById: (id) => (id === "jupyter-config-data" ? { textContent: text } : null),
  };
  const timers = [];
  const deps = {
    global: {},
    WebSocket: FakeWebSocket,
    document,
    location: { href: href === undefined ? "http://localhost:8888/lab/tree/a.ipynb" : href },
    console,
    setTimeout: (fn, ms) => {
      timers.push({ fn, ms, cleared: false });
      return timers.length - 1;
    },
    clearTimeout: (id) => {
      timers[id].cleared = true;
    },
  };
  return { sockets, logs, deps, timers };
}

function start(config, pageConfig, href) {
  const page = makePage(pageConfig, href);
  const channel = wk.install(Object.assign({ kernel_id: KERNEL }, config), page.deps);
  return Object.assign(page, { channel, socket: page.sockets[0] });
}

function fromKernel(commId, data, msgType) {
  return {
    header: { msg_id: "k-" + Math.random(), msg_type: msgType || "comm_msg", session: "kernel", username: "k", date: "", version: "5.3" },
    parent_header: {},
    metadata: {},
    content: { comm_id: commId, data },
    buffers: [],
    channel: "iopub",
  };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

async function openAndAck(h) {
  h.socket.serverOpens();
  h.socket.serverSends(fromKernel(h.channel.commId, { address: "#comm_open_ack", value: true }));
  await tick();
}

// Records every delivery to `address` as [address, value].
function record(channel, address) {
  const got = [];
  channel.subscribe(address, (a, v) => got.push([a, v]));
  return got;
}

// ---------------------------------------------------------------- tests

test("install: global object, URL from page config, connecting until ack", async () => {
  const h = start({}, { baseUrl: "/user/x/", wsUrl: "", token: "tok" }, "https://hub.example.org/user/x/lab");
  assert.equal(h.deps.global.wrapperkernel_comm, h.channel);
  assert.equal(
    h.socket.url,
    `wss://hub.example.org/user/x/api/kernels/${KERNEL}/channels?session_id=${h.channel.sessionId}&token=tok`,
  );
  assert.equal(h.channel.state, "connecting");
  await openAndAck(h);
  assert.equal(h.channel.state, "open");
  assert.equal(await h.channel.ready, h.channel);
});

test("install: config is validated", () => {
  const page = makePage();
  assert.throws(() => wk.install({}, page.deps), TypeError);
  assert.throws(() => wk.install({ kernel_id: "" }, page.deps), TypeError);
});

test("comm_open is sent on websocket open, with a complete header", () => {
  const h = start();
  assert.equal(h.socket.sent.length, 0);
  h.socket.serverOpens();
  const frames = h.socket.frames();
  assert.equal(frames.length, 1);
  const [open] = frames;
  assert.deepEqual(Object.keys(open.header).sort(), ["date", "msg_id", "msg_type", "session", "username", "version"]);
  assert.equal(open.header.msg_type, "comm_open");
  assert.equal(open.header.version, "5.5");
  assert.equal(open.header.session, h.channel.sessionId);
  assert.equal(new Date(open.header.date).toISOString(), open.header.date);
  assert.ok(open.header.msg_id.length > 0 && open.header.username.length > 0);
  assert.equal(open.channel, "shell");
  assert.deepEqual(open.parent_header, {});
  assert.deepEqual(open.buffers, []);
  assert.deepEqual(open.content, {
    comm_id: h.channel.commId,
    target_name: "wrapperkernel_comm",
    data: { kernel_id: KERNEL },
  });
  // Session ids are fresh per instance and distinct from the comm id.
  assert.notEqual(h.channel.sessionId, h.channel.commId);
  assert.notEqual(start().channel.sessionId, h.channel.sessionId);
});

test("sends before the ack are queued, then flushed in order as one batch", async () => {
  const h = start();
  h.socket.serverOpens();
  assert.equal(h.channel.send("/a", 1), true);
  h.channel.send("/b", 2);
  await tick();
  assert.deepEqual(h.socket.commMsgData(), []);
  h.socket.serverSends(fromKernel(h.channel.commId, { address: "#comm_open_ack", value: true }));
  await tick();
  assert.deepEqual(h.socket.commMsgData(), [{ batch: [{ address: "/a", value: 1 }, { address: "/b", value: 2 }] }]);
  const msg = h.socket.frames()[1];
  assert.equal(msg.header.msg_type, "comm_msg");
  assert.equal(msg.header.session, h.channel.sessionId);
  assert.equal(msg.content.comm_id, h.channel.commId);
  assert.notEqual(msg.header.msg_id, h.socket.frames()[0].header.msg_id);
});

test("coalescing: one tick -> one comm_msg; a single item is not wrapped; ticks stay separate", async () => {
  const h = start();
  await openAndAck(h);
  h.channel.send("/x", "first");
  await tick();
  for (let i = 0; i < 5; i++) h.channel.send("/n", i);
  await tick();
  assert.deepEqual(h.socket.commMsgData(), [
    { address: "/x", value: "first" },
    { batch: [0, 1, 2, 3, 4].map((i) => ({ address: "/n", value: i })) },
  ]);
});

test("bursts over the cap are split, order kept", async () => {
  const h = start({ max_batch_items: 2 });
  await openAndAck(h);
  for (let i = 0; i < 5; i++) h.channel.send("/n", i);
  await tick();
  const data = h.socket.commMsgData();
  assert.equal(data.length, 3);
  const values = data.flatMap((d) => (d.batch === undefined ? [d] : d.batch)).map((item) => item.value);
  assert.deepEqual(values, [0, 1, 2, 3, 4]);
  assert.deepEqual(data[2], { address: "/n", value: 4 });
});

test("default caps: 2500 small sends -> 1000 + 1000 + 500; big values split by bytes", async () => {
  const h = start();
  await openAndAck(h);
  for (let i = 0; i < 2500; i++) h.channel.send("/n", i);
  await tick();
  assert.deepEqual(h.socket.commMsgData().map((d) => d.batch.length), [1000, 1000, 500]);

  const big = "x".repeat(200 * 1024);
  const h2 = start();
  await openAndAck(h2);
  for (let i = 0; i < 5; i++) h2.channel.send("/big", big);
  await tick();
  const sizes = h2.socket.commMsgData().map((d) => (d.batch === undefined ? 1 : d.batch.length));
  assert.deepEqual(sizes, [2, 2, 1]);
  for (const text of h2.socket.sent) assert.ok(Buffer.byteLength(text) < 600 * 1024);
});

const TRICKY_VALUES = [0, false, "", null, [], {}, { a: { b: [0, null, false, ""] } }, "héllo ✓ 日本 😀", -1.5, true];

test("falsy, nested and unicode values from the kernel reach subscribers unchanged", async () => {
  const h = start();
  await openAndAck(h);
  const got = record(h.channel, "/v");
  for (const value of TRICKY_VALUES) {
    h.socket.serverSends(fromKernel(h.channel.commId, { address: "/v", value }));
  }
  assert.deepEqual(got, TRICKY_VALUES.map((v) => ["/v", v]));
});

test("falsy, nested and unicode values sent by the page reach the wire unchanged", async () => {
  const h = start();
  await openAndAck(h);
  for (const value of TRICKY_VALUES) h.channel.send("/v", value);
  await tick();
  const [data] = h.socket.commMsgData();
  assert.deepEqual(data.batch.map((item) => item.value), TRICKY_VALUES);
  assert.ok(data.batch.every((item) => item.address === "/v"));
});

test("a value is captured when sent; undefined and functions are refused", async () => {
  const h = start();
  await openAndAck(h);
  const obj = { n: 1 };
  h.channel.send("/o", obj);
  obj.n = 2;
  assert.throws(() => h.channel.send("/u", undefined), TypeError);
  assert.throws(() => h.channel.send("/f", () => 1), TypeError);
  assert.throws(() => h.channel.send("", 1), TypeError);
  assert.throws(() => h.channel.send(42, 1), TypeError);
  await tick();
  assert.deepEqual(h.socket.commMsgData(), [{ address: "/o", value: { n: 1 } }]);
});

test("a batch from the kernel is delivered item by item, in order", async () => {
  const h = start();
  await openAndAck(h);
  const got = [];
  h.channel.subscribe("/a", (a, v) => got.push([a, v]));
  h.channel.subscribe("/b", (a, v) => got.push([a, v]));
  h.socket.serverSends(
    fromKernel(h.channel.commId, {
      batch: [
        { address: "/a", value: 1 },
        { address: "/b", value: null },
        { address: "/zzz", value: "nobody listens" },
        { address: "/a", value: 0 },
      ],
    }),
  );
  assert.deepEqual(got, [["/a", 1], ["/b", null], ["/a", 0]]);
});

test("#heartbeat/ping is answered with a pong carrying the same value", async () => {
  const h = start();
  await openAndAck(h);
  h.socket.serverSends(fromKernel(h.channel.commId, { address: "#heartbeat/ping", value: 0 }));
  h.socket.serverSends(fromKernel(h.channel.commId, { address: "#heartbeat/ping", value: { n: 7 } }));
  await tick();
  assert.deepEqual(h.socket.commMsgData(), [
    { batch: [{ address: "#heartbeat/pong", value: 0 }, { address: "#heartbeat/pong", value: { n: 7 } }] },
  ]);
});

test("private addresses are never delivered to subscribers", async () => {
  const h = start();
  await openAndAck(h);
  const got = record(h.channel, "#heartbeat/ping");
  const other = record(h.channel, "#something");
  h.socket.serverSends(fromKernel(h.channel.commId, { address: "#heartbeat/ping", value: 1 }));
  h.socket.serverSends(fromKernel(h.channel.commId, { address: "#something", value: 1 }));
  assert.deepEqual(got, []);
  assert.deepEqual(other, []);
});

test("page ping(): true on the matching pong, false after heartbeat_timeout_ms", async () => {
  const h = start({ heartbeat_timeout_ms: 250 });
  await openAndAck(h);
  const answered = h.channel.ping();
  await tick();
  const [ping] = h.socket.commMsgData();
  assert.equal(ping.address, "#heartbeat/ping");
  assert.equal(h.timers[0].ms, 250);
  h.socket.serverSends(fromKernel(h.channel.commId, { address: "#heartbeat/pong", value: ping.value }));
  assert.equal(await answered, true);
  assert.equal(h.timers[0].cleared, true);

  const unanswered = h.channel.ping();
  h.timers[1].fn();
  assert.equal(await unanswered, false);
});

test("read_request is answered from the synced variable, read_error otherwise", async () => {
  const h = start();
  await openAndAck(h);
  h.channel.newSyncedVariable("/slider", false);
  h.channel.newSyncedVariable("/empty");
  h.socket.serverSends(
    fromKernel(h.channel.commId, {
      batch: [
        { address: "/slider", read_request: true },
        { address: "/missing", read_request: true },
      ],
    }),
  );
  h.socket.serverSends(fromKernel(h.channel.commId, { address: "/empty", read_request: true }));
  await tick();
  const [data] = h.socket.commMsgData();
  assert.deepEqual(data.batch[0], { address: "/slider", value: false });
  assert.deepEqual(Object.keys(data.batch[1]).sort(), ["address", "read_error"]);
  assert.equal(data.batch[1].address, "/missing");
  assert.match(data.batch[1].read_error, /no synced variable for "\/missing"/);
  assert.equal(data.batch[2].address, "/empty");
  assert.match(data.batch[2].read_error, /no value yet/);
});

test("synced variable: kernel values update it; set() notifies and sends", async () => {
  const h = start();
  await openAndAck(h);
  const v = h.channel.newSyncedVariable("/count", 5);
  assert.equal(h.channel.newSyncedVariable("/count", 99), v);
  assert.equal(v.get(), 5);
  const seen = [];
  const id = v.subscribe((a, value) => seen.push([a, value]));
  const channelSeen = record(h.channel, "/count");

  h.socket.serverSends(fromKernel(h.channel.commId, { address: "/count", value: 0 }));
  assert.equal(v.get(), 0);
  assert.deepEqual(seen, [["/count", 0]]);
  assert.deepEqual(channelSeen, [["/count", 0]]);

  assert.equal(v.set(""), true);
  assert.equal(v.get(), "");
  assert.deepEqual(seen, [["/count", 0], ["/count", ""]]);
  await tick();
  assert.deepEqual(h.socket.commMsgData(), [{ address: "/count", value: "" }]);

  assert.equal(v.unsubscribe(id), true);
  v.set(null);
  assert.equal(v.get(), null);
  assert.equal(seen.length, 2);
  assert.throws(() => v.set(undefined), TypeError);
  assert.equal(v.get(), null);
});

test("unsubscribe stops one callback only", async () => {
  const h = start();
  await openAndAck(h);
  const a = [];
  const b = [];
  const idA = h.channel.subscribe("/s", (_, v) => a.push(v));
  h.channel.subscribe("/s", (_, v) => b.push(v));
  h.socket.serverSends(fromKernel(h.channel.commId, { address: "/s", value: 1 }));
  assert.equal(h.channel.unsubscribe(idA), true);
  assert.equal(h.channel.unsubscribe(idA), false);
  assert.equal(h.channel.unsubscribe(12345), false);
  h.socket.serverSends(fromKernel(h.channel.commId, { address: "/s", value: 2 }));
  assert.deepEqual(a, [1]);
  assert.deepEqual(b, [1, 2]);
});

test("a throwing subscriber is logged and does not stop the others", async () => {
  const h = start();
  await openAndAck(h);
  const got = [];
  h.channel.subscribe("/t", () => {
    throw new Error("boom");
  });
  h.channel.subscribe("/t", (_, v) => got.push(v));
  h.socket.serverSends(fromKernel(h.channel.commId, { address: "/t", value: "ok" }));
  h.socket.serverSends(fromKernel(h.channel.commId, { address: "/t", value: "again" }));
  assert.deepEqual(got, ["ok", "again"]);
  assert.equal(h.logs.error.length, 2);
  assert.match(h.logs.error[0][0], /\/t/);
  assert.equal(h.logs.error[0][1].message, "boom");
});

test("close(): pending values leave, then comm_close; nothing after", async () => {
  const h = start();
  await openAndAck(h);
  const got = record(h.channel, "/late");
  h.channel.send("/last", 1);
  h.channel.close();
  assert.equal(h.channel.state, "closed");
  assert.equal(h.socket.closeCalls, 1);
  const frames = h.socket.frames();
  assert.deepEqual(frames.map((f) => f.header.msg_type), ["comm_open", "comm_msg", "comm_close"]);
  assert.deepEqual(frames[1].content.data, { address: "/last", value: 1 });
  const close = frames[2];
  assert.deepEqual(close.content, { comm_id: h.channel.commId, data: {} });
  assert.equal(close.channel, "shell");
  assert.equal(close.header.version, "5.5");
  assert.equal(close.header.session, h.channel.sessionId);

  h.socket.readyState = 1; // even if the socket still accepted frames
  assert.equal(h.channel.send("/after", 1), false);
  h.channel.close();
  h.socket.serverSends(fromKernel(h.channel.commId, { address: "#heartbeat/ping", value: 1 }));
  h.socket.serverSends(fromKernel(h.channel.commId, { address: "/late", value: 1 }));
  await tick();
  assert.equal(h.socket.sent.length, 3);
  assert.deepEqual(got, []);
  assert.equal(h.logs.warn.length, 1);
});

test("comm_close from the kernel closes the channel", async () => {
  const h = start();
  await openAndAck(h);
  h.socket.serverSends(fromKernel("someone-else", {}, "comm_close"));
  assert.equal(h.channel.state, "open");
  h.socket.serverSends(fromKernel(h.channel.commId, {}, "comm_close"));
  assert.equal(h.channel.state, "closed");
  assert.equal(h.socket.closeCalls, 1);
  assert.equal(h.channel.send("/x", 1), false);
});

test("the websocket closing before the ack rejects ready and reports dropped sends", async () => {
  const h = start();
  h.socket.serverOpens();
  h.channel.send("/queued", 1);
  h.socket.serverCloses(1006);
  assert.equal(h.channel.state, "closed");
  await assert.rejects(h.channel.ready, /before the kernel acknowledged/);
  assert.equal(h.logs.warn.length, 1);
  assert.match(h.logs.warn[0][0], /dropped 1 queued/);
});

test("messages for other comms, other types and malformed frames are ignored", async () => {
  const h = start();
  await openAndAck(h);
  const got = record(h.channel, "/a");
  h.socket.serverSends(fromKernel("another-comm", { address: "/a", value: "not mine" }));
  h.socket.serverSends(fromKernel(h.channel.commId, { address: "/a", value: "wrong type" }, "comm_open"));
  h.socket.serverSends({ header: { msg_type: "status" }, content: { execution_state: "idle" }, channel: "iopub" });
  h.socket.serverSends("{definitely not json");
  h.socket.onmessage({ data: new Uint8Array([1, 2, 3]) });
  h.socket.serverSends(fromKernel(h.channel.commId, { batch: "not a list" }));
  h.socket.serverSends(fromKernel(h.channel.commId, { address: "/a" }));
  h.socket.serverSends(fromKernel(h.channel.commId, 17));
  h.socket.serverSends(fromKernel(h.channel.commId, { address: "/a", value: "mine" }));
  await tick();
  assert.deepEqual(got, [["/a", "mine"]]);
  assert.equal(h.channel.state, "open");
  assert.deepEqual(h.socket.commMsgData(), []);
});

test("debug logging only when config.debug is true", async () => {
  const quiet = start();
  await openAndAck(quiet);
  quiet.socket.serverSends("{bad");
  assert.equal(quiet.logs.debug.length, 0);

  const loud = start({ debug: true });
  await openAndAck(loud);
  loud.socket.serverSends("{bad");
  assert.ok(loud.logs.debug.length > 0);
  assert.ok(loud.logs.debug.some((args) => /not JSON/.test(args[1])));
});

test("reinstall closes the previous instance and keeps subscriptions for the same kernel", async () => {
  const h = start();
  await openAndAck(h);
  const first = h.channel;
  const got = record(first, "/keep");
  const v = first.newSyncedVariable("/var", 1);

  const second = wk.install({ kernel_id: KERNEL }, h.deps);
  assert.notEqual(second, first);
  assert.equal(h.deps.global.wrapperkernel_comm, second);
  assert.equal(first.state, "closed");
  assert.equal(h.socket.frames().at(-1).header.msg_type, "comm_close");
  const socket2 = h.sockets[1];
  assert.notEqual(second.commId, first.commId);
  socket2.serverOpens();
  socket2.serverSends(fromKernel(second.commId, { address: "#comm_open_ack", value: true }));
  socket2.serverSends(fromKernel(second.commId, { address: "/keep", value: "still here" }));
  assert.deepEqual(got, [["/keep", "still here"]]);
  assert.equal(second.newSyncedVariable("/var", 2), v);
  v.set(3);
  await tick();
  assert.deepEqual(socket2.commMsgData(), [{ address: "/var", value: 3 }]);

  const third = wk.install({ kernel_id: "another-kernel" }, h.deps);
  const socket3 = h.sockets[2];
  socket3.serverOpens();
  socket3.serverSends(fromKernel(third.commId, { address: "/keep", value: "other kernel" }));
  assert.deepEqual(got, [["/keep", "still here"]]);
});

test("a channel replaced before its ack hands over its queued values, its ready and later sends", async () => {
  const h = start();
  const kept = h.channel; // what a page script captured: `const comm = globalThis.wrapperkernel_comm`
  h.socket.serverOpens();
  assert.equal(kept.send("/queued", 1), true); // waits for the ack that never comes
  let readyValue = "pending";
  kept.ready.then((v) => (readyValue = v), (e) => (readyValue = e));

  const next = wk.install({ kernel_id: KERNEL }, h.deps);
  assert.equal(kept.state, "closed");
  await tick();
  assert.equal(readyValue, "pending"); // follows the new channel, not rejected
  assert.equal(kept.send("/later", 2), true);
  assert.equal(h.logs.warn.length, 0); // nothing dropped

  const socket2 = h.sockets[1];
  socket2.serverOpens();
  socket2.serverSends(fromKernel(next.commId, { address: "#comm_open_ack", value: true }));
  await tick();
  assert.notEqual(readyValue, "pending");
  assert.ok(!(readyValue instanceof Error), String(readyValue));
  const values = socket2.commMsgData().flatMap((data) => data.batch || [data]);
  assert.deepEqual(values, [
    { address: "/queued", value: 1 },
    { address: "/later", value: 2 },
  ]);
  assert.deepEqual(h.socket.commMsgData(), []); // the old socket never carried them
});

test("a channel replaced for another kernel hands over nothing", async () => {
  const h = start();
  const kept = h.channel;
  h.socket.serverOpens();
  let rejected = null;
  kept.ready.catch((e) => (rejected = e));
  wk.install({ kernel_id: "another-kernel" }, h.deps);
  await tick();
  assert.match(String(rejected), /before the kernel acknowledged/);
  assert.equal(kept.send("/x", 1), false);
  assert.equal(h.logs.warn.length, 1);
});

test("a websocket that cannot be created leaves a closed channel and a logged error", () => {
  const page = makePage();
  page.deps.WebSocket = class {
    constructor() {
      throw new Error("blocked");
    }
  };
  const channel = wk.install({ kernel_id: KERNEL }, page.deps);
  assert.equal(channel.state, "closed");
  assert.equal(page.logs.error.length, 1);
  assert.equal(channel.send("/x", 1), false);
});

// ---------------------------------------------------------------- failed sends are never silent

// Every item the page put on the wire of `socket`, in order.
function itemsSent(socket) {
  return socket.commMsgData().flatMap((data) => (data.batch === undefined ? [data] : data.batch));
}

// Makes `socket.send` throw after `okSends` successful calls, as a dying connection does.
function failSendsAfter(socket, okSends) {
  const realSend = socket.send.bind(socket);
  let calls = 0;
  socket.send = (text) => {
    calls += 1;
    if (calls > okSends) throw new Error("network down");
    realSend(text);
  };
}

async function ackSocket(socket, channel) {
  socket.serverOpens();
  socket.serverSends(fromKernel(channel.commId, { address: "#comm_open_ack", value: true }));
  await tick();
}

test("a send that throws keeps its values queued; the successor sends them, in order, once", async () => {
  const h = start({ max_batch_items: 2 });
  await openAndAck(h);
  const kept = h.channel;
  failSendsAfter(h.socket, 1); // the first comm_msg leaves, the second throws
  for (let i = 0; i < 5; i++) kept.send("/n", i);
  await tick();
  assert.deepEqual(itemsSent(h.socket).map((item) => item.value), [0, 1]);
  assert.equal(kept.state, "open");
  assert.equal(h.logs.error.length, 1); // the throw is logged
  kept.send("/n", 5); // queued behind the unsent ones
  await tick();
  assert.deepEqual(itemsSent(h.socket).map((item) => item.value), [0, 1]);

  const next = wk.install({ kernel_id: KERNEL }, h.deps);
  assert.equal(kept.state, "closed");
  await ackSocket(h.sockets[1], next);
  assert.deepEqual(itemsSent(h.sockets[1]).map((item) => item.value), [2, 3, 4, 5]);
  assert.ok(itemsSent(h.sockets[1]).every((item) => item.address === "/n"));
  assert.deepEqual(itemsSent(h.socket).map((item) => item.value), [0, 1]); // nothing sent twice
  assert.equal(h.logs.warn.length, 0);
});

test("a socket no longer open at flush keeps the values; the successor sends them in order", async () => {
  const h = start();
  await openAndAck(h);
  h.socket.readyState = 2; // CLOSING: the server went away, onclose has not fired yet
  h.channel.send("/a", 0);
  h.channel.send("/b", false);
  await tick();
  assert.deepEqual(h.socket.commMsgData(), []);
  assert.equal(h.channel.state, "open");

  const next = wk.install({ kernel_id: KERNEL }, h.deps);
  await ackSocket(h.sockets[1], next);
  assert.deepEqual(itemsSent(h.sockets[1]), [
    { address: "/a", value: 0 },
    { address: "/b", value: false },
  ]);
  assert.deepEqual(h.socket.commMsgData(), []);
  assert.equal(h.logs.warn.length, 0);
});

test("values unsent when the channel closes with no successor: one warning with their count and why", async () => {
  const h = start({ max_batch_items: 2, ack_every_msgs: 1 });
  await openAndAck(h);
  h.socket.readyState = 2;
  for (let i = 0; i < 5; i++) h.channel.send("/n", i);
  // An #ack also waits in the outbox; it is not a value of the page and is not counted.
  h.socket.serverSends(fromKernelNumbered(h.channel.commId, { address: "/x", value: 1 }, 1));
  await tick();
  assert.deepEqual(h.logs.warn, []);
  h.socket.serverCloses(1006);
  assert.equal(h.channel.state, "closed");
  assert.equal(h.logs.warn.length, 1);
  assert.equal(
    h.logs.warn[0][0],
    "wrapperkernel_comm: the websocket closed (code 1006); dropped 5 queued value(s) that were never sent",
  );
  assert.deepEqual(h.socket.commMsgData(), []);
});

test("close() after a send that threw: the unsent values are counted in the warning", async () => {
  const h = start();
  await openAndAck(h);
  failSendsAfter(h.socket, 0);
  h.channel.send("/a", 1);
  h.channel.send("/b", 2);
  h.channel.send("/c", 3);
  await tick();
  h.channel.close();
  assert.equal(h.logs.warn.length, 1);
  assert.match(h.logs.warn[0][0], /close\(\) was called; dropped 3 queued value\(s\)/);
});

// ---------------------------------------------------------------- acknowledgements

function fromKernelNumbered(commId, data, seq) {
  return Object.assign(fromKernel(commId, data), { metadata: { seq } });
}

function acksSent(socket) {
  return itemsSent(socket).filter((item) => item.address === "#ack").map((item) => item.value);
}

function liveTimers(h, ms) {
  return h.timers.filter((timer) => !timer.cleared && !timer.fired && timer.ms === ms);
}

function fire(timer) {
  timer.fired = true;
  timer.fn();
}

test("DEFAULT_CONFIG acknowledges every 16 messages or after 8 ms", () => {
  assert.equal(wk.DEFAULT_CONFIG.ack_every_msgs, 16);
  assert.equal(wk.DEFAULT_CONFIG.ack_delay_ms, 8);
});

test("acks: at once after ack_every_msgs numbered messages, once their items are delivered", async () => {
  const h = start({ ack_every_msgs: 3, ack_delay_ms: 40 });
  await openAndAck(h);
  const got = record(h.channel, "/v");
  h.socket.serverSends(fromKernelNumbered(h.channel.commId, { address: "/v", value: 1 }, 1));
  h.socket.serverSends(fromKernelNumbered(h.channel.commId, { address: "/v", value: 2 }, 2));
  await tick();
  assert.deepEqual(acksSent(h.socket), []);
  assert.equal(liveTimers(h, 40).length, 1);
  h.socket.serverSends(
    fromKernelNumbered(h.channel.commId, { batch: [{ address: "/v", value: 3 }, { address: "/v", value: 4 }] }, 3),
  );
  assert.deepEqual(got.map(([, v]) => v), [1, 2, 3, 4]);
  await tick();
  assert.deepEqual(h.socket.commMsgData().at(-1), { address: "#ack", value: 3 });
  assert.equal(liveTimers(h, 40).length, 0); // the delay timer is cancelled
  for (let seq = 4; seq <= 6; seq++) {
    h.socket.serverSends(fromKernelNumbered(h.channel.commId, { address: "/v", value: seq }, seq));
  }
  await tick();
  assert.deepEqual(acksSent(h.socket), [3, 6]);
});

test("acks: ack_delay_ms after the first unacknowledged message, one timer, the highest seq", async () => {
  const h = start({ ack_delay_ms: 25 });
  await openAndAck(h);
  h.socket.serverSends(fromKernelNumbered(h.channel.commId, { address: "/v", value: "a" }, 1));
  h.socket.serverSends(fromKernelNumbered(h.channel.commId, { address: "/v", value: "b" }, 3));
  h.socket.serverSends(fromKernelNumbered(h.channel.commId, { address: "/v", value: "c" }, 2)); // late
  assert.equal(liveTimers(h, 25).length, 1);
  await tick();
  assert.deepEqual(acksSent(h.socket), []);
  const [timer] = liveTimers(h, 25);
  fire(timer);
  await tick();
  assert.deepEqual(acksSent(h.socket), [3]);

  // Nothing new: no timer, no ack; an old seq again is nothing new either.
  timer.fn();
  h.socket.serverSends(fromKernelNumbered(h.channel.commId, { address: "/v", value: "d" }, 3));
  h.socket.serverSends(fromKernelNumbered(h.channel.commId, { address: "/v", value: "e" }, 1));
  await tick();
  assert.equal(liveTimers(h, 25).length, 0);
  assert.deepEqual(acksSent(h.socket), [3]);

  h.socket.serverSends(fromKernelNumbered(h.channel.commId, { address: "/v", value: "f" }, 4));
  fire(liveTimers(h, 25)[0]);
  await tick();
  assert.deepEqual(acksSent(h.socket), [3, 4]);
});

test("acks: none for messages without a seq or with one that is not a positive integer", async () => {
  const h = start({ ack_every_msgs: 1 });
  await openAndAck(h);
  const got = record(h.channel, "/v");
  h.socket.serverSends(fromKernel(h.channel.commId, { address: "/v", value: 1 }));
  for (const seq of [0, -1, 1.5, "2", null, true, [3]]) {
    h.socket.serverSends(fromKernelNumbered(h.channel.commId, { address: "/v", value: 1 }, seq));
  }
  h.socket.serverSends(Object.assign(fromKernel(h.channel.commId, { address: "/v", value: 1 }), { metadata: null }));
  h.socket.serverSends(fromKernelNumbered(h.channel.commId, { address: "/v", value: 1 }, 5)); // the seq stays on metadata
  await tick();
  assert.equal(got.length, 10);
  assert.deepEqual(h.timers, []);
  assert.deepEqual(acksSent(h.socket), [5]);
  // A seq in content.data is not an acknowledgement number.
  h.socket.serverSends(fromKernel(h.channel.commId, { address: "/v", value: 1, seq: 9 }));
  await tick();
  assert.deepEqual(acksSent(h.socket), [5]);
});

test("#comm_open_ack with a seq is acknowledged like any message, after the values queued before it", async () => {
  const h = start({ ack_every_msgs: 1 });
  h.socket.serverOpens();
  h.channel.send("/early", 1);
  h.socket.serverSends(fromKernelNumbered(h.channel.commId, { address: "#comm_open_ack", value: true }, 1));
  await tick();
  assert.deepEqual(h.socket.commMsgData(), [
    { batch: [{ address: "/early", value: 1 }, { address: "#ack", value: 1 }] },
  ]);

  const d = start(); // with the default config, the delay timer sends it
  d.socket.serverOpens();
  d.socket.serverSends(fromKernelNumbered(d.channel.commId, { address: "#comm_open_ack", value: true }, 1));
  fire(liveTimers(d, wk.DEFAULT_CONFIG.ack_delay_ms)[0]);
  await tick();
  assert.deepEqual(acksSent(d.socket), [1]);
});

test("acks: none after close, and none handed to a successor (its comm counts anew)", async () => {
  const h = start({ ack_delay_ms: 30 });
  await openAndAck(h);
  h.socket.serverSends(fromKernelNumbered(h.channel.commId, { address: "/v", value: 1 }, 1));
  const [timer] = liveTimers(h, 30);
  h.channel.close();
  assert.equal(timer.cleared, true);
  timer.fn(); // even a timer that fires anyway
  h.socket.readyState = 1;
  h.socket.serverSends(fromKernelNumbered(h.channel.commId, { address: "/v", value: 2 }, 2));
  await tick();
  assert.deepEqual(h.socket.frames().at(-1).header.msg_type, "comm_close");
  assert.deepEqual(acksSent(h.socket), []);

  const r = start({ ack_every_msgs: 1 });
  await openAndAck(r);
  r.socket.readyState = 2; // the ack and the value cannot leave
  r.socket.serverSends(fromKernelNumbered(r.channel.commId, { address: "/v", value: 1 }, 1));
  r.channel.send("/page", "mine");
  await tick();
  const next = wk.install({ kernel_id: KERNEL }, r.deps);
  await ackSocket(r.sockets[1], next);
  assert.deepEqual(itemsSent(r.sockets[1]), [{ address: "/page", value: "mine" }]);
  assert.deepEqual(r.logs.warn, []);
});
