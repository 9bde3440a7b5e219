// Binary values in the page client: the buffer extraction and placement, the two binary
// websocket framings of Jupyter Server (legacy binary and v1.kernel.websocket.jupyter.org)
// byte for byte against jupyter_server's own functions, and values with bytes crossing
// both transports in both directions.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const childProcess = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");
const wk = require("../wrapperkernel_comm.js");

const KERNEL = "0f1e2d3c-aaaa-bbbb-cccc-000000000003";
const V1 = "v1.kernel.websocket.jupyter.org";
const PYTHON = path.join(__dirname, "..", "..", ".venv", "bin", "python");
const tick = () => new Promise((resolve) => setImmediate(resolve));

const hex = (bytes) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");
const bytesOfHex = (text) => {
  const b = Buffer.from(text, "hex");
  return new Uint8Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
};
const arrayBufferOfHex = (text) => bytesOfHex(text).buffer;
const viewHex = (view) => hex(new Uint8Array(view.buffer, view.byteOffset, view.byteLength));

// ---------------------------------------------------------------- fixtures from jupyter_server

// Both made by jupyter_server 2 (services/kernels/connection/base.py) in .venv:
//   from jupyter_server.services.kernels.connection.base import serialize_binary_message, serialize_msg_to_ws_v1
//   LEGACY_MSG["buffers"] = [b"\x00\x01\x02", b"", b"xyz"]; serialize_binary_message(LEGACY_MSG).hex()
//   serialize_msg_to_ws_v1([b'{"msg_type":"comm_msg"}', b'{}', b'{}', b'{"comm_id":"c","data":{}}',
//                           b"\x00\x01\x02", b""], "iopub").hex()
const LEGACY_MSG = {
  header: { msg_type: "comm_msg" }, parent_header: {}, metadata: {},
  content: { comm_id: "c", data: { address: "/a", value: null, buffer_paths: [["value"]] } }, channel: "iopub",
};
// json.dumps(LEGACY_MSG): Python's separators, which the JSON part keeps as it is.
const LEGACY_JSON = '{"header": {"msg_type": "comm_msg"}, "parent_header": {}, "metadata": {}, "content": ' +
  '{"comm_id": "c", "data": {"address": "/a", "value": null, "buffer_paths": [["value"]]}}, "channel": "iopub"}';
const LEGACY_FRAME_HEX =
  "00000004" + "00000014" + "000000d5" + "000000d8" + "000000d8" + Buffer.from(LEGACY_JSON).toString("hex") +
  "000102" + "" + "78797a";
const V1_FRAME_HEX =
  "0800000000000000" + "4800000000000000" + "4d00000000000000" + "6400000000000000" + "6600000000000000" +
  "6800000000000000" + "8100000000000000" + "8400000000000000" + "8400000000000000" +
  "696f707562" + "7b226d73675f74797065223a22636f6d6d5f6d7367227d" + "7b7d" + "7b7d" +
  "7b22636f6d6d5f6964223a2263222c2264617461223a7b7d7d" + "000102";

test("legacy binary frame: the bytes jupyter_server's serialize_binary_message makes", () => {
  const frame = wk.encodeLegacyBinaryFrame(LEGACY_JSON, [new Uint8Array([0, 1, 2]), new ArrayBuffer(0), new TextEncoder().encode("xyz")]);
  assert.ok(frame instanceof ArrayBuffer);
  assert.equal(hex(new Uint8Array(frame)), LEGACY_FRAME_HEX);
});

test("legacy binary frame: decoding what jupyter_server makes; buffers are views into the frame", () => {
  const frame = arrayBufferOfHex(LEGACY_FRAME_HEX);
  const { msg, buffers } = wk.decodeLegacyBinaryFrame(frame);
  assert.deepEqual(Object.assign({}, msg, { buffers: undefined }), Object.assign({}, LEGACY_MSG, { buffers: undefined }));
  assert.equal(msg.buffers, buffers);
  assert.deepEqual(buffers.map((b) => b instanceof DataView), [true, true, true]);
  assert.deepEqual(buffers.map(viewHex), ["000102", "", "78797a"]);
  assert.deepEqual(buffers.map((b) => [b.buffer === frame, b.byteOffset]), [[true, 0xd5], [true, 0xd8], [true, 0xd8]]);
});

test("v1 frame: the bytes jupyter_server's serialize_msg_to_ws_v1 makes, and back", () => {
  const parts = ['{"msg_type":"comm_msg"}', "{}", "{}", '{"comm_id":"c","data":{}}'];
  // The first buffer is a view into a larger buffer: only its own bytes travel.
  const big = new Uint8Array([9, 9, 0, 1, 2, 9]);
  const frame = wk.encodeV1Frame("iopub", parts, [big.subarray(2, 5), new ArrayBuffer(0)]);
  assert.equal(hex(new Uint8Array(frame)), V1_FRAME_HEX);
  const decoded = wk.decodeV1Frame(arrayBufferOfHex(V1_FRAME_HEX));
  assert.equal(decoded.channel, "iopub");
  assert.deepEqual(decoded.msg.header, { msg_type: "comm_msg" });
  assert.deepEqual(decoded.msg.parent_header, {});
  assert.deepEqual(decoded.msg.metadata, {});
  assert.deepEqual(decoded.msg.content, { comm_id: "c", data: {} });
  assert.deepEqual(decoded.buffers.map(viewHex), ["000102", ""]);
  assert.deepEqual(decoded.buffers.map((b) => b.byteOffset), [0x81, 0x84]);
});

test("frames: round trips with many buffers and UTF-8 text", () => {
  const buffers = [new Uint8Array([255]), new ArrayBuffer(0), new Float64Array([1.5, -0]), new Uint8Array(70000).fill(7)];
  const json = JSON.stringify({ header: { msg_type: "comm_msg", note: "é ☃ 𝄞" }, channel: "shell" });
  const legacy = wk.decodeLegacyBinaryFrame(wk.encodeLegacyBinaryFrame(json, buffers));
  assert.deepEqual(legacy.msg.header, { msg_type: "comm_msg", note: "é ☃ 𝄞" });
  const expected = buffers.map((b) => hex(ArrayBuffer.isView(b) ? new Uint8Array(b.buffer, b.byteOffset, b.byteLength) : new Uint8Array(b)));
  assert.deepEqual(legacy.buffers.map(viewHex), expected);
  const v1 = wk.decodeV1Frame(wk.encodeV1Frame("shell", [json, "{}", '{"a":0}', '{"b":false}'], buffers));
  assert.deepEqual([v1.channel, v1.msg.metadata, v1.msg.content], ["shell", { a: 0 }, { b: false }]);
  assert.deepEqual(v1.buffers.map(viewHex), expected);
  assert.deepEqual(wk.decodeV1Frame(wk.encodeV1Frame("iopub", ["{}", "{}", "{}", "{}"], [])).buffers, []);
});

test("frames: a frame that is not one throws FrameError or SyntaxError, never anything else", () => {
  const good = new Uint8Array(wk.encodeLegacyBinaryFrame('{"a":1}', [new Uint8Array([1, 2])]));
  const bad = [
    new ArrayBuffer(0),
    new ArrayBuffer(7),
    new Uint8Array([0, 0, 0, 0, 0, 0, 0, 8]).buffer, // no parts
    new Uint8Array([0, 0, 0, 9, 0, 0, 0, 8]).buffer, // more offsets than bytes
    good.slice(0, 15).buffer, // cut inside the JSON
    (() => { const f = good.slice(); f[7] = 200; return f.buffer; })(), // JSON offset past the end
    (() => { const f = good.slice(); f[12] = 0x22; return f.buffer; })(), // not JSON
    new Uint8Array([0, 0, 0, 1, 0, 0, 0, 8, 0xff, 0xfe]).buffer, // not UTF-8
  ];
  for (const frame of bad) {
    assert.throws(() => wk.decodeLegacyBinaryFrame(frame), (err) => err instanceof wk.FrameError || err instanceof SyntaxError || err instanceof TypeError);
  }
  const v1 = new Uint8Array(wk.encodeV1Frame("shell", ["{}", "{}", "{}", "{}"], []));
  const badV1 = [
    new ArrayBuffer(4),
    v1.slice(0, 30).buffer,
    (() => { const f = v1.slice(); f[0] = 3; return f.buffer; })(), // too few offsets
    (() => { const f = v1.slice(); f[15] = 1; return f.buffer; })(), // an offset beyond 2 ** 53
    (() => { const f = v1.slice(); f[16] = 0xff; return f.buffer; })(), // offsets going back
  ];
  for (const frame of badV1) {
    assert.throws(() => wk.decodeV1Frame(frame), (err) => err instanceof wk.FrameError || err instanceof SyntaxError || err instanceof TypeError);
  }
});

// What jupyter_server's own decoders make of frames this file encodes, run in .venv's Python.
test("frames: jupyter_server's deserialize_binary_message and deserialize_msg_from_ws_v1 read ours", (t) => {
  if (!fs.existsSync(PYTHON)) {
    t.skip(`no ${PYTHON}`);
    return;
  }
  const header = wk.makeHeader("comm_msg", "s", "m", new Date(0));
  const payload = wk.payloadOf([entryOf("/a", { img: [new Uint8Array([1, 2, 3]), 0] }), entryOf("/b", new ArrayBuffer(0))]);
  const content = '{"comm_id":"c","data":' + payload.dataJson + "}";
  const parts = [JSON.stringify(header), "{}", "{}", content];
  const legacyJson = '{"header":' + parts[0] + ',"parent_header":{},"metadata":{},"content":' + content + ',"channel":"shell"}';
  const frames = {
    legacy: hex(new Uint8Array(wk.encodeLegacyBinaryFrame(legacyJson, payload.buffers))),
    v1: hex(new Uint8Array(wk.encodeV1Frame("shell", parts, payload.buffers))),
  };
  const script = [
    "import json, sys",
    "from jupyter_server.services.kernels.connection.base import deserialize_binary_message, deserialize_msg_from_ws_v1",
    "frames = json.load(sys.stdin)",
    "msg = deserialize_binary_message(bytes.fromhex(frames['legacy']))",
    "channel, parts = deserialize_msg_from_ws_v1(bytes.fromhex(frames['v1']))",
    "print(json.dumps({'legacy': {'msg_type': msg['header']['msg_type'], 'channel': msg['channel'],",
    "  'content': msg['content'], 'buffers': [bytes(b).hex() for b in msg['buffers']]},",
    "  'v1': {'channel': channel, 'json': [json.loads(p) for p in parts[:4]], 'buffers': [bytes(p).hex() for p in parts[4:]]}}))",
  ].join("\n");
  const run = childProcess.spawnSync(PYTHON, ["-c", script], { input: JSON.stringify(frames), encoding: "utf8" });
  assert.equal(run.status, 0, run.stderr);
  const got = JSON.parse(run.stdout);
  const data = {
    batch: [{ address: "/a", value: { img: [null, 0] } }, { address: "/b", value: null }],
    buffer_paths: [["batch", 0, "value", "img", 0], ["batch", 1, "value"]],
  };
  assert.deepEqual(got.legacy, { msg_type: "comm_msg", channel: "shell", content: { comm_id: "c", data }, buffers: ["010203", ""] });
  assert.deepEqual(got.v1, { channel: "shell", json: [header, {}, {}, { comm_id: "c", data }], buffers: ["010203", ""] });
});

// ---------------------------------------------------------------- extraction and placement

function entryOf(address, value) {
  const { json, paths, buffers } = (() => {
    const out = wk.extractBuffers(address, value, ["value"]);
    return { json: JSON.stringify({ address, value: out.value }), paths: out.paths, buffers: out.buffers };
  })();
  return { json, bytes: json.length, paths, buffers };
}

test("extractBuffers: nulls in the slots, paths in order, the exact bytes copied, the value untouched", () => {
  const backing = new Uint8Array([10, 11, 12, 13, 14, 15, 16, 17]);
  const offsetView = new Uint16Array(backing.buffer, 2, 2); // bytes 12..15
  const value = {
    zero: 0, no: false, empty: "", nothing: null,
    deep: { list: [1, { pixels: offsetView }, new ArrayBuffer(0)] },
    dv: new DataView(backing.buffer, 6, 1),
    date: new Date(0),
  };
  const out = wk.extractBuffers("/x", value, ["value"]);
  assert.deepEqual(out.paths, [["value", "deep", "list", 1, "pixels"], ["value", "deep", "list", 2], ["value", "dv"]]);
  assert.deepEqual(out.buffers.map(hex), ["0c0d0e0f", "", "10"]);
  assert.deepEqual(out.buffers.map((b) => [b.byteOffset, b.buffer.byteLength]), [[0, 4], [0, 0], [0, 1]]);
  assert.equal(
    JSON.stringify(out.value),
    '{"zero":0,"no":false,"empty":"","nothing":null,"deep":{"list":[1,{"pixels":null},null]},"dv":null,"date":"1970-01-01T00:00:00.000Z"}',
  );
  assert.equal(value.deep.list[1].pixels, offsetView, "the caller's value is not changed");
  backing[2] = 99;
  assert.equal(hex(out.buffers[0]), "0c0d0e0f", "bytes are copied at send time");
  // Nothing binary: the same value, nothing extracted.
  const plain = { a: [1, 2, { b: "c" }] };
  assert.equal(wk.extractBuffers("/x", plain, ["value"]).value, plain);
  assert.deepEqual(wk.extractBuffers("/x", new Uint8Array([5]), ["value"]).paths, [["value"]]);
  const cyclic = { buf: new Uint8Array(1) };
  cyclic.self = cyclic;
  assert.throws(() => wk.extractBuffers("/x", cyclic, ["value"]), /"\/x" is not JSON/);
});

test("payloadOf: one item alone or a batch, buffer_paths from the payload, max_batch_bytes counts the bytes", () => {
  const one = wk.payloadOf([entryOf("/a", new Uint8Array([1]))]);
  assert.deepEqual(JSON.parse(one.dataJson), { address: "/a", value: null, buffer_paths: [["value"]] });
  const plain = wk.payloadOf([entryOf("/a", 1), entryOf("/b", 2)]);
  assert.equal(plain.dataJson, '{"batch":[{"address":"/a","value":1},{"address":"/b","value":2}]}');
  assert.deepEqual(plain.buffers, []);
  const batch = wk.payloadOf([entryOf("/a", 0), entryOf("/b", [new Uint8Array([2]), new Uint8Array([3])]), entryOf("/c", { d: new Uint8Array([4]) })]);
  assert.deepEqual(JSON.parse(batch.dataJson).buffer_paths, [["batch", 1, "value", 0], ["batch", 1, "value", 1], ["batch", 2, "value", "d"]]);
  assert.deepEqual(batch.buffers.map(hex), ["02", "03", "04"]);
  // Three sends of 300 kB each, in one tick: max_batch_bytes (512 kB) makes them 3 messages.
  const state0 = wk.initialChannelState(wk.channelConfig({ kernel_id: "k" }), "comm-1");
  let state = [
    { type: "socketOpened" }, { type: "commOpenSent", ok: true },
    { type: "itemReceived", item: { address: "#comm_open_ack", value: true } },
  ].reduce((s, e) => wk.channelStep(s, e).state, state0);
  for (const address of ["/1", "/2", "/3"]) {
    state = wk.channelStep(state, { type: "sendCalled", address, value: new Uint8Array(300 * 1024) }).state;
  }
  const { effects } = wk.channelStep(state, { type: "flushCameDue" });
  const send = effects.find((e) => e.type === "sendCommMsgs");
  assert.deepEqual(send.chunks.map((c) => [JSON.parse(c.dataJson).address, c.buffers.length, c.buffers[0].byteLength]), [
    ["/1", 1, 300 * 1024], ["/2", 1, 300 * 1024], ["/3", 1, 300 * 1024],
  ]);
});

test("placeBuffers: DataViews at their paths, buffer_paths removed; bad paths drop the payload", () => {
  const backing = new ArrayBuffer(8);
  new Uint8Array(backing).set([1, 2, 3, 4, 5, 6, 7, 8]);
  const data = { batch: [{ address: "/a", value: { img: [null] } }, { address: "/b", value: null }], buffer_paths: [["batch", 0, "value", "img", 0], ["batch", 1, "value"]] };
  const placed = wk.placeBuffers(data, [new Uint8Array(backing, 2, 3), backing]);
  assert.equal(placed.problem, undefined);
  assert.equal(hasOwnKey(placed.data, "buffer_paths"), false);
  const img = placed.data.batch[0].value.img[0];
  assert.ok(img instanceof DataView);
  assert.deepEqual([img.buffer === backing, img.byteOffset, img.byteLength, img.getUint8(0)], [true, 2, 3, 3]);
  assert.equal(placed.data.batch[1].value.byteLength, 8);
  const bad = (paths, buffers) => wk.placeBuffers({ address: "/a", value: null, buffer_paths: paths }, buffers);
  assert.equal(bad([["value"]], []).dropped, true); // fewer buffers than paths
  assert.equal(bad("value", [backing]).dropped, true);
  assert.equal(bad([["nope"]], [backing]).dropped, true);
  assert.equal(bad([["value", 0]], [backing]).dropped, true);
  assert.equal(bad([[]], [backing]).dropped, true);
  assert.equal(bad([["__proto__"]], [backing]).dropped, true);
  assert.equal(bad([["value"]], ["text"]).dropped, true);
  assert.match(wk.placeBuffers({ address: "/a", value: 1 }, [backing]).problem, /without buffer_paths/);
});

function hasOwnKey(obj, key) {
  return Object.prototype.hasOwnProperty.call(obj, key);
}

// ---------------------------------------------------------------- the websocket transport

// A WebSocket as Jupyter Server's: `protocol` is what it picks from the offered ones when
// it opens ("" for the legacy protocol).
function makePage() {
  const sockets = [];
  class FakeWebSocket {
    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.protocol = "";
      this.readyState = 0;
      this.sent = [];
      sockets.push(this);
    }
    send(frame) {
      if (this.readyState !== 1) throw new Error("send on a socket that is not open");
      if (typeof frame !== "string" && !(frame instanceof ArrayBuffer)) throw new Error("frames are text or ArrayBuffer");
      this.sent.push(frame);
    }
    close() {
      this.readyState = 3;
    }
    serverOpens(protocol) {
      this.protocol = protocol;
      this.readyState = 1;
      this.onopen({});
    }
    serverSends(data) {
      this.onmessage({ data });
    }
    // Each frame the page sent, as {msg, buffers} (hex), decoded by the protocol in use.
    decoded() {
      return this.sent.map((frame) => {
        if (typeof frame === "string") return { text: true, msg: JSON.parse(frame), buffers: [] };
        const out = this.protocol === V1 ? wk.decodeV1Frame(frame) : wk.decodeLegacyBinaryFrame(frame);
        return { text: false, msg: out.msg, buffers: out.buffers.map(viewHex) };
      });
    }
  }
  const logs = { debug: [], warn: [], error: [] };
  const text = JSON.stringify({ baseUrl: "/", wsUrl: "", token: "" });
  const deps = {
    global: {},
    WebSocket: FakeWebSocket,
    document: { getElementById: (id) => (id === "jupyter-config-data" ? { textContent: text } : null) },
    location: { href: "http://localhost:8888/lab" },
    console: {
      debug: (...args) => logs.debug.push(args),
      warn: (...args) => logs.warn.push(args),
      error: (...args) => logs.error.push(args),
    },
    setTimeout: () => 0,
    clearTimeout: () => {},
  };
  return { sockets, logs, deps };
}

function kernelMsg(commId, data, seq) {
  return {
    header: { msg_id: "k" + Math.random(), msg_type: "comm_msg", session: "kernel", username: "k", date: "", version: "5.3" },
    parent_header: {},
    metadata: seq === undefined ? {} : { seq },
    content: { comm_id: commId, data },
    channel: "iopub",
  };
}

// The frame the server sends for a kernel message, in the protocol `protocol`.
function serverFrame(protocol, msg, buffers) {
  if (protocol === V1) {
    const parts = [msg.header, msg.parent_header, msg.metadata, msg.content].map((x) => JSON.stringify(x));
    return wk.encodeV1Frame(msg.channel, parts, buffers);
  }
  if (buffers.length === 0) return JSON.stringify(Object.assign({ buffers: [] }, msg));
  return wk.encodeLegacyBinaryFrame(JSON.stringify(msg), buffers);
}

async function openChannel(protocol) {
  const page = makePage();
  const channel = wk.install({ kernel_id: KERNEL, debug: true }, page.deps);
  const socket = page.sockets[0];
  socket.serverOpens(protocol);
  socket.serverSends(serverFrame(protocol, kernelMsg(channel.commId, { address: "#comm_open_ack", value: true }), []));
  await channel.ready;
  return Object.assign(page, { channel, socket });
}

function record(channel, address) {
  const got = [];
  channel.subscribe(address, (a, v) => got.push(v));
  return got;
}

test("websocket: offers the v1 subprotocol and takes binary frames as ArrayBuffers", () => {
  const page = makePage();
  const channel = wk.install({ kernel_id: KERNEL }, page.deps);
  assert.deepEqual(page.sockets[0].protocols, [V1]);
  assert.equal(page.sockets[0].binaryType, "arraybuffer");
  page.sockets[0].serverOpens(V1);
  assert.equal(channel.protocol, V1);
});

for (const protocol of ["", V1]) {
  const name = protocol === "" ? "legacy protocol" : "v1 protocol";

  test(`websocket (${name}): comm_open and a value without bytes`, async () => {
    const h = await openChannel(protocol);
    h.channel.send("/plain", 0);
    await tick();
    const frames = h.socket.decoded();
    assert.deepEqual(frames.map((f) => [f.text, f.msg.header.msg_type, f.msg.channel]), [
      [protocol === "", "comm_open", "shell"], [protocol === "", "comm_msg", "shell"],
    ]);
    assert.deepEqual(frames[0].msg.content, { comm_id: h.channel.commId, target_name: "wrapperkernel_comm", data: { kernel_id: KERNEL } });
    assert.deepEqual(frames[1].msg.content.data, { address: "/plain", value: 0 });
    assert.equal(frames[1].msg.header.session, h.channel.sessionId);
  });

  test(`websocket (${name}): values with bytes leave as buffers, in one batch, in order`, async () => {
    const h = await openChannel(protocol);
    const backing = new Uint8Array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    h.channel.send("/zero", 0);
    h.channel.send("/img", { w: 2, rows: [[new Uint8Array(backing.buffer, 3, 4)], false, ""], meta: null });
    h.channel.send("/empty", new ArrayBuffer(0));
    h.channel.send("/f32", new Float32Array([1.5]));
    await tick();
    const frames = h.socket.decoded();
    assert.equal(frames.length, 2);
    const msg = frames[1];
    assert.equal(msg.text, false);
    assert.equal(msg.msg.header.msg_type, "comm_msg");
    assert.deepEqual(msg.msg.content, {
      comm_id: h.channel.commId,
      data: {
        batch: [
          { address: "/zero", value: 0 },
          { address: "/img", value: { w: 2, rows: [[null], false, ""], meta: null } },
          { address: "/empty", value: null },
          { address: "/f32", value: null },
        ],
        buffer_paths: [["batch", 1, "value", "rows", 0, 0], ["batch", 2, "value"], ["batch", 3, "value"]],
      },
    });
    assert.deepEqual(msg.buffers, ["03040506", "", hex(new Uint8Array(new Float32Array([1.5]).buffer))]);
  });

  test(`websocket (${name}): values with bytes arrive as DataViews at their paths`, async () => {
    const h = await openChannel(protocol);
    const img = record(h.channel, "/img");
    const raw = record(h.channel, "/raw");
    const falsy = record(h.channel, "/falsy");
    const data = {
      batch: [
        { address: "/falsy", value: [0, false, "", null] },
        { address: "/img", value: { pixels: null, size: [2, 1] } },
        { address: "/raw", value: null },
      ],
      buffer_paths: [["batch", 1, "value", "pixels"], ["batch", 2, "value"]],
    };
    h.socket.serverSends(serverFrame(protocol, kernelMsg(h.channel.commId, data, 2), [new Uint8Array([200, 201]), new ArrayBuffer(0)]));
    await tick();
    assert.deepEqual(falsy, [[0, false, "", null]]);
    assert.equal(img.length, 1);
    assert.deepEqual(img[0].size, [2, 1]);
    assert.ok(img[0].pixels instanceof DataView);
    assert.deepEqual([img[0].pixels.byteLength, img[0].pixels.getUint8(0), img[0].pixels.getUint8(1)], [2, 200, 201]);
    assert.ok(raw[0] instanceof DataView);
    assert.equal(raw[0].byteLength, 0);
    assert.equal(img[0].pixels.buffer, raw[0].buffer, "views over the frame, not copies");
    // The message was handled: its seq is acknowledged later, as for a text message.
    assert.ok(!hasOwnKey(img[0], "buffer_paths"));
  });

  test(`websocket (${name}): bad frames are ignored with a debug log, and the channel goes on`, async () => {
    const h = await openChannel(protocol);
    const got = record(h.channel, "/a");
    const junk = [
      new ArrayBuffer(3),
      new Uint8Array([0, 0, 0, 5, 0, 0, 0, 0]).buffer,
      new Uint8Array(64).fill(255).buffer,
      "{not json",
      new Uint8Array([1, 2]),
      serverFrame(protocol, kernelMsg(h.channel.commId, { address: "/a", value: null, buffer_paths: [["value"], ["value"]] }), [new Uint8Array(1)]),
    ];
    for (const frame of junk) h.socket.serverSends(frame);
    h.socket.serverSends(serverFrame(protocol, kernelMsg(h.channel.commId, { address: "/a", value: null, buffer_paths: [["value"]] }), [new Uint8Array([42])]));
    await tick();
    assert.equal(got.length, 1);
    assert.equal(got[0].getUint8(0), 42);
    assert.equal(h.channel.state, "open");
    const ignored = h.logs.debug.filter((args) => String(args[1]).startsWith("ignored"));
    assert.equal(ignored.length, junk.length, JSON.stringify(h.logs.debug.map((a) => a[1])));
    assert.deepEqual(h.logs.error, []);
  });

  test(`websocket (${name}): a synced variable set with bytes, and a read of it`, async () => {
    const h = await openChannel(protocol);
    const variable = h.channel.newSyncedVariable("/v", new Uint8Array([1]));
    variable.set({ b: new Uint8Array([7, 8]) });
    assert.throws(() => variable.set(() => 1), TypeError, "still JSON-checked");
    assert.deepEqual(Array.from(new Uint8Array(variable.get().b.buffer)), [7, 8]);
    h.socket.serverSends(serverFrame(protocol, kernelMsg(h.channel.commId, { address: "/v", read_request: true }), []));
    await tick();
    const sent = h.socket.decoded().slice(1).filter((f) => f.msg.header.msg_type === "comm_msg");
    const payloads = sent.map((f) => [f.msg.content.data, f.buffers]);
    assert.deepEqual(payloads, [
      [{ batch: [{ address: "/v", value: { b: null } }, { address: "/v", value: { b: null } }], buffer_paths: [["batch", 0, "value", "b"], ["batch", 1, "value", "b"]] }, ["0708", "0708"]],
    ]);
  });
}

test("websocket (v1 protocol): a text frame is ignored; the legacy one takes text and binary alike", async () => {
  const h = await openChannel(V1);
  const got = record(h.channel, "/a");
  h.socket.serverSends(JSON.stringify(Object.assign({ buffers: [] }, kernelMsg(h.channel.commId, { address: "/a", value: 1 }))));
  await tick();
  assert.deepEqual(got, []);
  assert.ok(h.logs.debug.some((args) => /v1 protocol that is not binary/.test(args[1])));
  // In the legacy protocol the server sends a message with no buffers as text, one with buffers binary.
  const legacy = await openChannel("");
  const both = record(legacy.channel, "/a");
  legacy.socket.serverSends(serverFrame("", kernelMsg(legacy.channel.commId, { address: "/a", value: "" }), []));
  legacy.socket.serverSends(wk.encodeLegacyBinaryFrame(JSON.stringify(kernelMsg(legacy.channel.commId, { address: "/a", value: false })), []));
  await tick();
  assert.deepEqual(both, ["", false]);
});

test("websocket (legacy protocol): a binary message garbled into text by a gateway is a console error naming the cause", async () => {
  const h = await openChannel("");
  const got = record(h.channel, "/a");
  const frame = new Uint8Array(wk.encodeLegacyBinaryFrame(JSON.stringify(kernelMsg(h.channel.commId, { address: "/a", value: null, buffer_paths: [["value"]] })), [new Uint8Array([1, 2])]));
  // What Jupyter Server in gateway mode forwards: the frame's bytes decoded as UTF-8 text.
  h.socket.serverSends(new TextDecoder().decode(frame));
  await tick();
  assert.deepEqual(got, []);
  assert.equal(h.logs.error.length, 1);
  assert.match(h.logs.error[0][0], /gateway mode/);
  assert.match(h.logs.error[0][0], /arrived as text/);
  assert.equal(wk.looksLikeBinaryAsText("{\"header\": 1}"), false);
  h.socket.serverSends("{broken");
  await tick();
  assert.equal(h.logs.error.length, 1, "an ordinary bad text frame is not said to be the gateway's");
});

// ---------------------------------------------------------------- the widget transport

function makeModel() {
  const listeners = new Set();
  return {
    sent: [],
    on(name, callback) {
      listeners.add(callback);
    },
    off(name, callback) {
      listeners.delete(callback);
    },
    send(content, callbacks, buffers) {
      this.sent.push({ content, callbacks, buffers });
    },
    fromKernel(content, buffers) {
      for (const callback of Array.from(listeners)) callback(content, buffers);
    },
  };
}

async function widgetChannel() {
  const model = makeModel();
  const logs = [];
  const log = (...args) => logs.push(args);
  const deps = {
    global: {}, WebSocket: undefined, document: undefined, location: { href: "http://x/" },
    console: { debug: log, info: log, warn: log, error: log, log },
    setTimeout: () => 0, clearTimeout: () => {},
  };
  const channel = wk.attach(model, { kernel_id: KERNEL, debug: true }, deps);
  await tick();
  model.fromKernel({ page: channel.commId, data: { address: "#comm_open_ack", value: true }, seq: 1 }, []);
  await channel.ready;
  assert.equal(channel.transport, "widget");
  return { model, channel, logs };
}

test("widget: values with bytes go as the custom message's buffers, the payload JSON lists their paths", async () => {
  const { model, channel } = await widgetChannel();
  const backing = new Uint8Array([5, 6, 7, 8, 9]);
  channel.send("/a", null);
  channel.send("/b", { parts: [new Uint8Array(backing.buffer, 1, 2), new DataView(backing.buffer, 4, 1)] });
  await tick();
  const sent = model.sent.filter((m) => m.content.json !== undefined);
  assert.equal(sent.length, 1);
  assert.deepEqual(Object.keys(sent[0].content).sort(), ["json", "page"]);
  assert.deepEqual(JSON.parse(sent[0].content.json), {
    batch: [{ address: "/a", value: null }, { address: "/b", value: { parts: [null, null] } }],
    buffer_paths: [["batch", 1, "value", "parts", 0], ["batch", 1, "value", "parts", 1]],
  });
  assert.equal(sent[0].callbacks, undefined);
  assert.deepEqual(sent[0].buffers.map((b) => [b instanceof ArrayBuffer, hex(new Uint8Array(b))]), [[true, "0607"], [true, "09"]]);
  // Without bytes, the message is as before: no buffers argument.
  channel.send("/c", "");
  await tick();
  const last = model.sent[model.sent.length - 1];
  assert.deepEqual([JSON.parse(last.content.json), last.buffers], [{ address: "/c", value: "" }, undefined]);
});

test("widget: the kernel's buffers become DataViews at their paths", async () => {
  const { model, channel, logs } = await widgetChannel();
  const got = record(channel, "/img");
  const backing = new ArrayBuffer(6);
  new Uint8Array(backing).set([1, 2, 3, 4, 5, 6]);
  model.fromKernel({
    page: channel.commId, seq: 2,
    data: { address: "/img", value: { a: null, b: [null, 0] }, buffer_paths: [["value", "a"], ["value", "b", 0]] },
  }, [new DataView(backing, 1, 2), new Uint8Array(backing, 5, 1)]);
  // A message whose buffers do not match its paths is dropped, with a debug log.
  model.fromKernel({ page: channel.commId, data: { address: "/img", value: null, buffer_paths: [["value"]] } }, []);
  await tick();
  assert.equal(got.length, 1);
  const { a, b } = got[0];
  assert.deepEqual([a instanceof DataView, a.byteOffset, a.byteLength, a.getUint8(0)], [true, 1, 2, 2]);
  assert.deepEqual([b[0] instanceof DataView, b[0].byteOffset, b[0].getUint8(0), b[1]], [true, 5, 6, 0]);
  assert.ok(logs.some((args) => /buffer_paths/.test(String(args[1]))));
});
