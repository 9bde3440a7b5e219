// The widget transport of the page client: choosing a transport, attach() from the
// kernel's widget model, one installation kept once, and the websocket giving way to the
// widget model when it fails before the kernel acknowledged it.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const wk = require("../wrapperkernel_comm.js");

const KERNEL = "0f1e2d3c-aaaa-bbbb-cccc-000000000002";
const tick = () => new Promise((resolve) => setImmediate(resolve));

// An anywidget model as the page client sees it: on/off of "msg:custom", send.
function makeModel() {
  const listeners = new Set();
  return {
    sent: [],
    on(name, callback) {
      assert.equal(name, "msg:custom");
      listeners.add(callback);
    },
    off(name, callback) {
      listeners.delete(callback);
    },
    send(content) {
      this.sent.push(content);
    },
    fromKernel(content) {
      for (const callback of Array.from(listeners)) callback(content, []);
    },
    listenerCount: () => listeners.size,
  };
}

// deps for a page: `server` true gives it a Jupyter Server page config and a WebSocket.
function makeDeps(server) {
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
    send(text) {
      this.sent.push(text);
    }
    close() {
      this.readyState = 3;
    }
  }
  const logs = [];
  const log = (...args) => logs.push(args);
  const text = JSON.stringify({ baseUrl: "/", token: "" });
  return {
    sockets,
    logs,
    deps: {
      global: {},
      WebSocket: server ? FakeWebSocket : undefined,
      document: server ? { getElementById: (id) => (id === "jupyter-config-data" ? { textContent: text } : null) } : undefined,
      location: { href: "http://127.0.0.1:8888/lab" },
      console: { debug: log, info: log, warn: log, error: log, log: log },
      setTimeout: () => 0,
      clearTimeout: () => {},
    },
  };
}

async function ackOverWidget(model, channel) {
  await tick();
  const open = model.sent.find((c) => c.open !== undefined && c.page === channel.commId);
  assert.ok(open, "the page opened its connection on the model");
  model.fromKernel({ page: channel.commId, data: { address: "#comm_open_ack", value: true }, seq: 1 });
  await channel.ready;
}

test("chooseTransport: the websocket where the page has a server, else the widget model", () => {
  const withServer = makeDeps(true).deps;
  const withoutServer = makeDeps(false).deps;
  const config = (transport) => ({ kernel_id: KERNEL, transport: transport });
  assert.equal(wk.chooseTransport(withServer, config("auto")), "websocket");
  assert.equal(wk.chooseTransport(withoutServer, config("auto")), "websocket"); // no model either
  withoutServer.global.wrapperkernel_comm_models = { [KERNEL]: makeModel() };
  withServer.global.wrapperkernel_comm_models = { [KERNEL]: makeModel() };
  assert.equal(wk.chooseTransport(withoutServer, config("auto")), "widget");
  assert.equal(wk.chooseTransport(withServer, config("auto")), "websocket");
  assert.equal(wk.chooseTransport(withServer, config("widget")), "widget");
  assert.equal(wk.chooseTransport(withoutServer, config("websocket")), "websocket");
});

test("attach without a server installs a client on the widget model, and values flow both ways", async () => {
  const { deps } = makeDeps(false);
  const model = makeModel();
  const channel = wk.attach(model, { kernel_id: KERNEL, transport: "auto" }, deps);
  assert.equal(channel.transport, "widget");
  assert.equal(channel.url, undefined);
  await ackOverWidget(model, channel);
  assert.equal(channel.state, "open");
  const seen = [];
  channel.subscribe("/x", (address, value) => seen.push(value));
  // Messages for another page on the same model are not this page's.
  model.fromKernel({ page: "someone-else", data: { address: "/x", value: "theirs" }, seq: 1 });
  model.fromKernel({ page: channel.commId, data: { batch: [{ address: "/x", value: 0 }, { address: "/x", value: null }] }, seq: 2 });
  assert.deepEqual(seen, [0, null]);
  channel.send("/y", false);
  await tick();
  const data = model.sent.filter((c) => c.json !== undefined).map((c) => JSON.parse(c.json));
  assert.ok(data.some((d) => d.address === "/y" && d.value === false), JSON.stringify(data));
  assert.ok(model.sent.every((c) => c.page === channel.commId));
});

test("the kernel closing the page's connection closes the channel and stops listening", async () => {
  const { deps } = makeDeps(false);
  const model = makeModel();
  const channel = wk.attach(model, { kernel_id: KERNEL }, deps);
  await ackOverWidget(model, channel);
  model.fromKernel({ page: channel.commId, close: true });
  await tick();
  assert.equal(channel.state, "closed");
  assert.equal(model.listenerCount(), 1); // attach's own listener (install requests) stays
});

test("attach with a live client for the kernel keeps it; an install request after it closed installs again", async () => {
  const { deps } = makeDeps(false);
  const model = makeModel();
  const first = wk.attach(model, { kernel_id: KERNEL }, deps);
  const again = wk.attach(model, { kernel_id: KERNEL }, deps);
  assert.equal(again, first);
  await ackOverWidget(model, first);
  model.fromKernel({ install: { kernel_id: KERNEL, install_id: "i-2" } }); // a live client: ignored
  assert.equal(deps.global.wrapperkernel_comm, first);
  first.close();
  model.fromKernel({ install: { kernel_id: KERNEL, install_id: "i-3" } });
  const second = deps.global.wrapperkernel_comm;
  assert.notEqual(second, first);
  assert.equal(second.transport, "widget");
  assert.equal(second.config.install_id, "i-3");
});

test("one installation from both the model and the script is kept once", () => {
  const { deps, sockets } = makeDeps(true);
  const model = makeModel();
  const config = { kernel_id: KERNEL, install_id: "display-1" };
  const fromModel = wk.attach(model, config, deps);
  const fromScript = wk.install(config, deps);
  assert.equal(fromScript, fromModel);
  assert.equal(sockets.length, 1);
  // A new installation (the kernel reinstalls after the page went stale) replaces it.
  const reinstalled = wk.install({ kernel_id: KERNEL, install_id: "display-2" }, deps);
  assert.notEqual(reinstalled, fromModel);
  assert.equal(sockets.length, 2);
});

test("a websocket that closes before the ack gives way to the widget model, keeping the queue", async () => {
  const { deps, sockets } = makeDeps(true);
  const model = makeModel();
  deps.global.wrapperkernel_comm_models = { [KERNEL]: model };
  const channel = wk.install({ kernel_id: KERNEL }, deps);
  assert.equal(channel.transport, "websocket");
  channel.send("/queued", 1);
  // Refused at the handshake with v1 offered: one more try without a subprotocol...
  sockets[0].readyState = 3;
  sockets[0].onclose({ code: 1006 });
  assert.equal(sockets.length, 2);
  assert.equal(sockets[1].protocols, undefined);
  // ...which opens, and closes before the kernel's ack: the widget model takes over.
  sockets[1].readyState = 1;
  sockets[1].onopen({});
  sockets[1].readyState = 3;
  sockets[1].onclose({ code: 1006 });
  assert.equal(channel.transport, "widget");
  assert.equal(channel.state, "connecting");
  await ackOverWidget(model, channel);
  await tick();
  const values = model.sent.filter((c) => c.json !== undefined).map((c) => JSON.parse(c.json));
  assert.ok(values.some((d) => d.address === "/queued" && d.value === 1), JSON.stringify(values));
});

test("a websocket forced by config does not fall back", () => {
  const { deps, sockets } = makeDeps(true);
  deps.global.wrapperkernel_comm_models = { [KERNEL]: makeModel() };
  const channel = wk.install({ kernel_id: KERNEL, transport: "websocket" }, deps);
  sockets[0].readyState = 3;
  sockets[0].onclose({ code: 1006 });
  // The retry without a subprotocol is still the websocket; when it fails too, the
  // channel closes instead of using the widget model.
  assert.equal(sockets.length, 2);
  sockets[1].readyState = 3;
  sockets[1].onclose({ code: 1006 });
  assert.equal(channel.transport, "websocket");
  assert.equal(channel.state, "closed");
});

test("an empty kernel id works on the widget transport and is refused for the websocket", () => {
  const { deps } = makeDeps(false);
  const channel = wk.attach(makeModel(), { kernel_id: "" }, deps);
  assert.equal(channel.transport, "widget");
  assert.throws(() => wk.install({ kernel_id: "" }, makeDeps(true).deps), TypeError);
});

test("eventsOfWidgetMessage: only this page's messages, seq only when valid", () => {
  assert.deepEqual(wk.eventsOfWidgetMessage({ page: "b", data: { address: "/a", value: 1 } }, "a"), []);
  assert.deepEqual(wk.eventsOfWidgetMessage({ page: "a", close: true }, "a"), [{ type: "kernelClosedComm" }]);
  assert.deepEqual(wk.eventsOfWidgetMessage({ page: "a", data: { address: "/a", value: 1 }, seq: 0 }, "a"),
    [{ type: "itemReceived", item: { address: "/a", value: 1 } }]);
  assert.deepEqual(wk.eventsOfWidgetMessage({ page: "a", data: { address: "/a", value: 1 }, seq: 3 }, "a"),
    [{ type: "itemReceived", item: { address: "/a", value: 1 } }, { type: "messageHandled", seq: 3 }]);
  assert.equal(wk.eventsOfWidgetMessage({ page: "a" }, "a")[0].type, "inputIgnored");
});

test("a websocket refused for offering v1 (Jupyter Server in gateway mode) tries again without it", () => {
  const { deps, sockets } = makeDeps(true);
  const channel = wk.install({ kernel_id: KERNEL }, deps);
  assert.deepEqual(sockets[0].protocols, ["v1.kernel.websocket.jupyter.org"]);
  sockets[0].readyState = 3;
  sockets[0].onclose({ code: 1006 });
  assert.equal(sockets.length, 2);
  assert.equal(sockets[1].protocols, undefined);
  assert.notEqual(new URL(sockets[1].url).searchParams.get("session_id"),
    new URL(sockets[0].url).searchParams.get("session_id"));
  sockets[1].readyState = 1;
  sockets[1].onopen({});
  const open = JSON.parse(sockets[1].sent[0]);
  assert.equal(open.header.msg_type, "comm_open");
  assert.equal(open.content.comm_id, channel.commId);
  assert.equal(channel.state, "connecting");
  assert.equal(channel.transport, "websocket");
  // A socket that opened and then closed is not tried again.
  sockets[1].readyState = 3;
  sockets[1].onclose({ code: 1006 });
  assert.equal(sockets.length, 2);
  assert.equal(channel.state, "closed");
});
