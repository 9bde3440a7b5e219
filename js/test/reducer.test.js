// The channel's life in wrapperkernel_comm.js, as a pure reducer: channelStep(state, event)
// -> {state, effects, result}. Tested like the Python core: the table of every phase x
// every event, the transitions one by one, and random event sequences checked against
// invariants (nothing sent after close, no queued value dropped silently, every ping and
// the `ready` promise settled exactly once, no timer left running).
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const wk = require("../wrapperkernel_comm.js");

const { channelStep, CHANNEL_PHASES, CHANNEL_EVENTS, CHANNEL_TABLE, IGNORED, REJECTED, ChannelEventError } = wk;

// ---------------------------------------------------------------- helpers

// Freezes a state and everything in it, so a reducer that wrote to its input would throw
// (this file is strict mode).
function deepFreeze(value) {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const key of Object.keys(value)) deepFreeze(value[key]);
  }
  return value;
}

function step(state, event) {
  return channelStep(deepFreeze(state), event);
}

function initial(config) {
  return wk.initialChannelState(wk.channelConfig(Object.assign({ kernel_id: "k" }, config)), "comm-1");
}

// Feeds `events` in order and returns the last state (effects are not performed).
function run(state, ...events) {
  for (const event of events) state = step(state, event).state;
  return state;
}

const types = (effects) => effects.map((effect) => effect.type);
const openAck = { type: "itemReceived", item: { address: "#comm_open_ack", value: true } };
const connected = [{ type: "socketOpened" }, { type: "commOpenSent", ok: true }];

function openState(config) {
  return run(initial(config), ...connected, openAck);
}

function outboxJson(state) {
  return wk.channelOutbox(state).map((entry) => entry.json);
}

// The one sendCommMsgs effect of a step, as the JSON values of its chunks.
function sentChunks(effects) {
  const sends = effects.filter((effect) => effect.type === "sendCommMsgs");
  assert.equal(sends.length, 1, `expected one sendCommMsgs in ${types(effects)}`);
  return sends[0];
}

const successor = deepFreeze({ name: "the next channel" });

// ---------------------------------------------------------------- the table

// One state in each phase: "open" has a value queued (and its flush scheduled), so that
// close() goes through "closing".
function stateIn(phase) {
  switch (phase) {
    case "connecting":
      return initial();
    case "open":
      return run(openState(), { type: "sendCalled", address: "/q", value: 1 });
    case "closing":
      return run(stateIn("open"), { type: "closeCalled" });
    case "closed":
      return run(initial(), { type: "closeCalled" });
  }
  throw new Error(phase);
}

// One event of each type, harmless where it is allowed.
const SAMPLE_EVENTS = {
  sendCalled: { type: "sendCalled", address: "/a", value: 1 },
  pingCalled: { type: "pingCalled", token: "t-1" },
  closeCalled: { type: "closeCalled" },
  replaced: { type: "replaced", successor: successor, isSelf: false },
  queueHandedOver: { type: "queueHandedOver", entries: [{ json: '{"address":"/h","value":1}', bytes: 26, isAck: false }], reason: "r" },
  socketCreated: { type: "socketCreated", url: "ws://x/" },
  socketFailed: { type: "socketFailed", error: new Error("blocked") },
  socketOpened: { type: "socketOpened" },
  socketErrored: { type: "socketErrored", detail: {} },
  socketClosed: { type: "socketClosed", code: 1006 },
  inputIgnored: { type: "inputIgnored", problem: "a frame that is not JSON" },
  kernelClosedComm: { type: "kernelClosedComm" },
  itemReceived: { type: "itemReceived", item: { address: "/a", value: 1 } },
  messageHandled: { type: "messageHandled", seq: 1 },
  commOpenSent: { type: "commOpenSent", ok: true },
  commMsgsSent: { type: "commMsgsSent", chunks: [], sent: 0 },
  readAnswered: { type: "readAnswered", address: "/r", json: '{"address":"/r","value":0}' },
  flushCameDue: { type: "flushCameDue" },
  timerFired: { type: "timerFired", timer: "ack" },
};

// What each sample event does in each phase: the phase after it, "ignored" (same state,
// no effect) or "rejected" (ChannelEventError: it cannot happen there).
const EXPECTED = {
  connecting: {
    sendCalled: "connecting", pingCalled: "connecting", closeCalled: "closed", replaced: "connecting",
    queueHandedOver: "connecting", socketCreated: "connecting", socketFailed: "closed",
    socketOpened: "connecting", socketErrored: "connecting", socketClosed: "closed",
    inputIgnored: "connecting", kernelClosedComm: "closed", itemReceived: "connecting",
    messageHandled: "connecting", commOpenSent: "connecting", commMsgsSent: "rejected",
    readAnswered: "connecting", flushCameDue: "ignored", timerFired: "connecting",
  },
  open: {
    sendCalled: "open", pingCalled: "open", closeCalled: "closing", replaced: "open",
    queueHandedOver: "open", socketCreated: "rejected", socketFailed: "rejected",
    socketOpened: "ignored", socketErrored: "open", socketClosed: "closed",
    inputIgnored: "open", kernelClosedComm: "closed", itemReceived: "open",
    messageHandled: "open", commOpenSent: "rejected", commMsgsSent: "open",
    readAnswered: "open", flushCameDue: "open", timerFired: "open",
  },
  closing: Object.fromEntries(
    CHANNEL_EVENTS.map((type) => [type, type === "commMsgsSent" ? "closed" : "rejected"]),
  ),
  closed: {
    sendCalled: "closed", pingCalled: "closed", closeCalled: "ignored", replaced: "closed",
    queueHandedOver: "closed", socketCreated: "rejected", socketFailed: "rejected",
    socketOpened: "ignored", socketErrored: "closed", socketClosed: "ignored",
    inputIgnored: "ignored", kernelClosedComm: "ignored", itemReceived: "ignored",
    messageHandled: "ignored", commOpenSent: "rejected", commMsgsSent: "rejected",
    readAnswered: "rejected", flushCameDue: "ignored", timerFired: "ignored",
  },
};

test("the table has a cell for every event in every phase, and nothing else", () => {
  assert.deepEqual(Object.keys(CHANNEL_TABLE).sort(), [...CHANNEL_PHASES].sort());
  assert.deepEqual(Object.keys(SAMPLE_EVENTS).sort(), [...CHANNEL_EVENTS].sort());
  for (const phase of CHANNEL_PHASES) {
    assert.deepEqual(Object.keys(CHANNEL_TABLE[phase]).sort(), [...CHANNEL_EVENTS].sort(), phase);
    assert.deepEqual(Object.keys(EXPECTED[phase]).sort(), [...CHANNEL_EVENTS].sort(), phase);
    for (const type of CHANNEL_EVENTS) {
      const cell = CHANNEL_TABLE[phase][type];
      assert.ok(typeof cell === "function" || cell === IGNORED || cell === REJECTED, `${phase} x ${type}`);
    }
  }
});

for (const phase of CHANNEL_PHASES) {
  test(`every event while ${phase}: transitions, or is ignored or rejected on purpose`, () => {
    for (const type of CHANNEL_EVENTS) {
      const state = deepFreeze(stateIn(phase));
      assert.equal(state.phase, phase);
      const expected = EXPECTED[phase][type];
      const where = `${phase} x ${type}`;
      if (expected === "rejected") {
        assert.equal(CHANNEL_TABLE[phase][type], REJECTED, where);
        assert.throws(() => step(state, SAMPLE_EVENTS[type]), ChannelEventError, where);
        continue;
      }
      const out = step(state, SAMPLE_EVENTS[type]);
      if (expected === "ignored") {
        assert.equal(CHANNEL_TABLE[phase][type], IGNORED, where);
        assert.equal(out.state, state, where);
        assert.deepEqual(out.effects, [], where);
        assert.equal(out.result, undefined, where);
      } else {
        assert.equal(typeof CHANNEL_TABLE[phase][type], "function", where);
        assert.equal(out.state.phase, expected, where);
      }
    }
  });
}

test("an unknown event, a malformed one and an unknown timer are rejected", () => {
  const state = deepFreeze(openState());
  assert.throws(() => step(state, { type: "teleported" }), ChannelEventError);
  assert.throws(() => step(state, { type: "toString" }), ChannelEventError);
  assert.throws(() => step(state, null), ChannelEventError);
  assert.throws(() => step(state, "sendCalled"), ChannelEventError);
  assert.throws(() => step(state, { type: "timerFired", timer: "alarm" }), ChannelEventError);
  assert.throws(() => step({ phase: "dreaming" }, { type: "closeCalled" }), ChannelEventError);
});

// ---------------------------------------------------------------- connecting -> open

test("connecting: comm_open on socket open; the ack opens, resolves ready and flushes", () => {
  let out = step(initial(), { type: "socketCreated", url: "ws://h/" });
  assert.deepEqual(out.effects, []); // debug is off: no log effects
  out = step(out.state, { type: "socketOpened" });
  assert.deepEqual(out.effects, [{ type: "sendCommOpen" }]);
  assert.equal(out.state.commOpenSent, false); // not before the socket took it
  out = step(out.state, { type: "commOpenSent", ok: true });
  assert.equal(out.state.commOpenSent, true);

  out = step(out.state, { type: "sendCalled", address: "/early", value: 0 });
  assert.equal(out.result, true);
  assert.deepEqual(out.effects, []); // nothing is flushed before the ack
  assert.deepEqual(outboxJson(out.state), ['{"address":"/early","value":0}']);

  out = step(out.state, openAck);
  assert.equal(out.state.phase, "open");
  assert.deepEqual(out.effects, [{ type: "resolveReady" }, { type: "scheduleFlush" }]);
  assert.equal(out.state.flushScheduled, true);
  out = step(out.state, openAck); // a repeated ack changes nothing
  assert.equal(out.state.phase, "open");
  assert.deepEqual(out.effects, []);
});

test("open: one flush per tick, chunked by the config, the rest queued after a refusal", () => {
  let state = openState({ max_batch_items: 2 });
  let out = step(state, { type: "sendCalled", address: "/n", value: 0 });
  assert.deepEqual(out.effects, [{ type: "scheduleFlush" }]);
  state = out.state;
  for (let i = 1; i < 5; i++) {
    out = step(state, { type: "sendCalled", address: "/n", value: i });
    assert.deepEqual(out.effects, []); // the flush is scheduled once
    state = out.state;
  }
  out = step(state, { type: "flushCameDue" });
  const send = sentChunks(out.effects);
  assert.deepEqual(send.chunks.map((chunk) => JSON.parse(chunk.dataJson)), [
    { batch: [{ address: "/n", value: 0 }, { address: "/n", value: 1 }] },
    { batch: [{ address: "/n", value: 2 }, { address: "/n", value: 3 }] },
    { address: "/n", value: 4 },
  ]);
  assert.deepEqual(outboxJson(out.state), []);
  assert.equal(out.state.flushScheduled, false);

  // The socket took the first chunk only: the others go back, in order, before later sends.
  state = run(out.state, { type: "sendCalled", address: "/late", value: 5 });
  out = step(state, { type: "commMsgsSent", chunks: send.chunks, sent: 1 });
  assert.deepEqual(outboxJson(out.state).map((json) => JSON.parse(json).value), [2, 3, 4, 5]);
  assert.equal(out.state.phase, "open");
});

// ---------------------------------------------------------------- -> closed

test("close() while open with values queued: they leave first (closing), then comm_close", () => {
  const state = run(openState(), { type: "sendCalled", address: "/last", value: 1 });
  let out = step(state, { type: "closeCalled" });
  assert.equal(out.state.phase, "closing");
  const send = sentChunks(out.effects);
  out = step(out.state, { type: "commMsgsSent", chunks: send.chunks, sent: 1 });
  assert.equal(out.state.phase, "closed");
  assert.deepEqual(types(out.effects), ["sendCommClose", "closeSocket"]);
});

test("close() after the socket refused: the refused values are counted in one warning", () => {
  const state = run(openState(), { type: "sendCalled", address: "/a", value: 1 }, { type: "sendCalled", address: "/b", value: 2 });
  let out = step(state, { type: "closeCalled" });
  out = step(out.state, { type: "commMsgsSent", chunks: sentChunks(out.effects).chunks, sent: 0 });
  assert.deepEqual(out.effects, [
    { type: "sendCommClose" },
    { type: "log", level: "warn", args: ["wrapperkernel_comm: close() was called; dropped 2 queued value(s) that were never sent"] },
    { type: "closeSocket" },
  ]);
});

test("close() before the socket took comm_open sends no comm_close; ready is rejected", () => {
  const out = step(initial(), { type: "closeCalled" });
  assert.equal(out.state.phase, "closed");
  assert.deepEqual(out.effects, [
    { type: "rejectReady", message: "wrapperkernel_comm: close() was called before the kernel acknowledged" },
    { type: "closeSocket" },
  ]);
});

test("a channel replaced before its ack hands its values and its ready to the successor", () => {
  let state = run(initial(), ...connected, { type: "sendCalled", address: "/q", value: 1 });
  state = run(state, { type: "replaced", successor: successor, isSelf: false });
  state = run(state, { type: "replaced", successor: { other: true }, isSelf: false }); // the first one stays
  assert.equal(state.successor, successor);
  const out = step(state, { type: "closeCalled" });
  assert.deepEqual(types(out.effects), ["sendCommClose", "handOver", "followReady", "closeSocket"]);
  const handOver = out.effects[1];
  assert.equal(handOver.successor, successor);
  assert.deepEqual(handOver.entries.map((entry) => entry.json), ['{"address":"/q","value":1}']);
  assert.equal(out.effects[2].successor, successor);

  // After the close, sends go to the successor, and so do values handed over late.
  let after = step(out.state, { type: "sendCalled", address: "/later", value: 2 });
  assert.deepEqual(after.effects, [{ type: "forwardSend", successor: successor, address: "/later", value: 2 }]);
  after = step(out.state, SAMPLE_EVENTS.queueHandedOver);
  assert.deepEqual(types(after.effects), ["handOver"]);
  assert.equal(after.effects[0].reason, "r");
});

test("replaced by itself: ignored", () => {
  const out = step(initial(), { type: "replaced", successor: successor, isSelf: true });
  assert.equal(out.state.successor, undefined);
});

test("closed without a successor: sends are refused with a warning; non-JSON values still throw", () => {
  const closed = stateIn("closed");
  const out = step(closed, { type: "sendCalled", address: "/x", value: 1 });
  assert.equal(out.result, false);
  assert.deepEqual(out.effects, [{ type: "log", level: "warn", args: ['wrapperkernel_comm: closed; dropped a value for "/x"'] }]);
  assert.throws(() => step(closed, { type: "sendCalled", address: "/x", value: () => 1 }), TypeError);
  const late = step(closed, SAMPLE_EVENTS.queueHandedOver);
  assert.deepEqual(late.effects, [{
    type: "log", level: "warn", args: ["wrapperkernel_comm: r, then this channel closed too; dropped 1 queued value(s) that were never sent"],
  }]);
});

test("the socket closing or the kernel's comm_close: closed, with the reason in the warning", () => {
  const state = run(openState(), { type: "sendCalled", address: "/a", value: 1 });
  let out = step(state, { type: "socketClosed", code: 1006 });
  assert.equal(out.state.phase, "closed");
  assert.match(out.effects.find((e) => e.type === "log").args[0], /the websocket closed \(code 1006\); dropped 1 queued/);
  assert.deepEqual(types(out.effects), ["log", "closeSocket"]); // acked: ready stays resolved
  out = step(state, { type: "socketClosed", code: undefined });
  assert.match(out.effects[0].args[0], /: the websocket closed; dropped/);
  out = step(state, { type: "kernelClosedComm" });
  assert.match(out.effects[0].args[0], /the kernel closed the comm; dropped/);
});

test("no socket: an error, then closed with ready rejected", () => {
  const error = new Error("blocked");
  const out = step(initial(), { type: "socketFailed", error: error });
  assert.equal(out.state.phase, "closed");
  assert.deepEqual(out.effects, [
    { type: "log", level: "error", args: ["wrapperkernel_comm: cannot open the websocket", error] },
    { type: "rejectReady", message: "wrapperkernel_comm: the websocket could not be opened before the kernel acknowledged" },
    { type: "closeSocket" },
  ]);
});

// ---------------------------------------------------------------- items, acks, pings

test("items: page values delivered, pings answered, reads asked of the registry, private ones dropped", () => {
  const state = openState();
  const got = (item) => step(state, { type: "itemReceived", item: item });
  assert.deepEqual(got({ address: "/v", value: 0 }).effects, [{ type: "deliver", address: "/v", value: 0 }]);
  assert.deepEqual(got({ address: "/v", read_request: true }).effects, [{ type: "answerReadRequest", address: "/v" }]);
  assert.deepEqual(got({ address: "/v", read_error: "no" }).effects, []);
  assert.deepEqual(got({ address: "#unknown", value: 1 }).effects, []);
  const pinged = got({ address: "#heartbeat/ping", value: { n: 7 } });
  assert.deepEqual(outboxJson(pinged.state), ['{"address":"#heartbeat/pong","value":{"n":7}}']);
  assert.deepEqual(pinged.effects, [{ type: "scheduleFlush" }]);
});

test("acks: at once after ack_every_msgs, else one timer; none for an old seq; none after close", () => {
  let state = openState({ ack_every_msgs: 3, ack_delay_ms: 40 });
  let out = step(state, { type: "messageHandled", seq: 1 });
  assert.deepEqual(out.effects, [{ type: "startTimer", timer: "ack", ms: 40 }]);
  out = step(out.state, { type: "messageHandled", seq: 2 });
  assert.deepEqual(out.effects, []); // the timer runs already
  out = step(out.state, { type: "messageHandled", seq: 3 });
  assert.deepEqual(out.effects, [{ type: "cancelTimer", timer: "ack" }, { type: "scheduleFlush" }]);
  assert.deepEqual(outboxJson(out.state), ['{"address":"#ack","value":3}']);
  state = run(out.state, { type: "flushCameDue" });
  out = step(state, { type: "messageHandled", seq: 2 }); // late and old
  assert.deepEqual(out.effects, []);

  out = step(state, { type: "messageHandled", seq: 4 });
  out = step(out.state, { type: "timerFired", timer: "ack" });
  assert.deepEqual(outboxJson(out.state), ['{"address":"#ack","value":4}']);

  // An #ack left in the outbox at close is no value of the page: not counted, not handed over.
  out = step(out.state, { type: "closeCalled" });
  out = step(out.state, { type: "commMsgsSent", chunks: sentChunks(out.effects).chunks, sent: 0 });
  assert.deepEqual(types(out.effects), ["sendCommClose", "closeSocket"]);
});

test("pings: a timer and a queued ping; the pong settles true, the timer false, the close false", () => {
  let out = step(openState({ heartbeat_timeout_ms: 250 }), { type: "pingCalled", token: "a" });
  assert.deepEqual(out.effects, [{ type: "startTimer", timer: "ping", token: "a", ms: 250 }, { type: "scheduleFlush" }]);
  const pinging = out.state;
  out = step(pinging, { type: "itemReceived", item: { address: "#heartbeat/pong", value: "a" } });
  assert.deepEqual(out.effects, [{ type: "cancelTimer", timer: "ping", token: "a" }, { type: "settlePing", token: "a", answered: true }]);
  out = step(out.state, { type: "itemReceived", item: { address: "#heartbeat/pong", value: "a" } });
  assert.deepEqual(out.effects, []); // late: settled already
  out = step(pinging, { type: "timerFired", timer: "ping", token: "a" });
  assert.deepEqual(out.effects, [{ type: "settlePing", token: "a", answered: false }]);
  out = step(pinging, { type: "socketClosed", code: 1000 });
  // (the log counts the ping that never left as a lost value)
  assert.deepEqual(types(out.effects), ["log", "cancelTimer", "settlePing", "closeSocket"]);
  assert.deepEqual(out.effects[2], { type: "settlePing", token: "a", answered: false });
  assert.deepEqual(step(initial(), { type: "pingCalled", token: "b" }).effects, [{ type: "settlePing", token: "b", answered: false }]);
});

test("debug: log effects only when config.debug is true", () => {
  const quiet = step(initial(), { type: "inputIgnored", problem: "x" });
  assert.deepEqual(quiet.effects, []);
  const error = new SyntaxError("bad");
  const loud = step(initial({ debug: true }), { type: "inputIgnored", problem: "a frame", error: error });
  assert.deepEqual(loud.effects, [{ type: "log", level: "debug", args: ["wrapperkernel_comm:", "ignored a frame", error] }]);
});

// ---------------------------------------------------------------- eventsOfFrame

test("eventsOfFrame: problems, then items, then the seq; nothing for another comm", () => {
  const frame = (data, extra) => JSON.stringify(Object.assign({
    header: { msg_type: "comm_msg" }, content: { comm_id: "c", data: data }, channel: "iopub",
  }, extra));
  assert.deepEqual(wk.eventsOfFrame(new Uint8Array(1), "c"), [{ type: "inputIgnored", problem: "a non-text websocket frame" }]);
  const [bad] = wk.eventsOfFrame("{no", "c");
  assert.equal(bad.problem, "a websocket frame that is not JSON");
  assert.ok(bad.error instanceof SyntaxError);
  assert.deepEqual(wk.eventsOfFrame(frame({ address: "/a", value: 1 }).replace('"c"', '"other"'), "c"), []);
  assert.deepEqual(wk.eventsOfFrame(frame({}, { header: { msg_type: "comm_close" } }), "c"), [{ type: "kernelClosedComm" }]);
  const events = wk.eventsOfFrame(frame({ batch: [{ address: "/a", value: 0 }, { nope: 1 }, { address: "/b", value: null }] }, { metadata: { seq: 4 } }), "c");
  assert.deepEqual(events.map((e) => e.type), ["inputIgnored", "itemReceived", "itemReceived", "messageHandled"]);
  assert.deepEqual(events[1].item, { address: "/a", value: 0 });
  assert.deepEqual(events[2].item, { address: "/b", value: null });
  assert.equal(events[3].seq, 4);
});

// ---------------------------------------------------------------- random sequences

// A seeded generator, so a failure names a run that can be replayed.
function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const SEND_EFFECTS = new Set(["sendCommOpen", "sendCommMsgs", "sendCommClose", "scheduleFlush", "startTimer"]);
const PHASE_ORDER = ["connecting", "open", "closing", "closed"];

// Plays the shell: performs the effects the way createChannel does (outcomes fed back at
// once), with a socket that takes or refuses frames at random, and keeps the books that
// the invariants are checked against.
function simulate(seed) {
  const random = mulberry32(seed);
  const pick = (list) => list[Math.floor(random() * list.length)];
  const config = { max_batch_items: 1 + Math.floor(random() * 3), ack_every_msgs: 1 + Math.floor(random() * 4) };
  let state = initial(config);
  let counter = 0;
  const unique = () => ++counter;
  const books = {
    accepted: new Set(), // JSON of every value entry the channel took
    sent: [], handedOver: [], warnedCount: 0,
    readySettled: 0, pings: new Map(), // token -> times settled
    liveTimers: new Set(), startedTimers: [], microtasks: 0,
  };
  const timerKey = (effect) => `${effect.timer} ${effect.token}`;
  const where = () => `seed ${seed}, phase ${state.phase}`;

  function dispatch(event) {
    const before = state;
    const out = step(before, event);
    state = out.state;
    assert.ok(PHASE_ORDER.indexOf(state.phase) >= PHASE_ORDER.indexOf(before.phase), `${where()}: went back`);
    if (before.phase === "closed") {
      for (const effect of out.effects) assert.ok(!SEND_EFFECTS.has(effect.type), `${where()}: ${effect.type} after close`);
    }
    for (const effect of out.effects) perform(effect);
    if (state.phase === "closed" && before.phase !== "closed") {
      assert.deepEqual([...books.liveTimers], [], `${where()}: timers left running by the close`);
    }
    return out;
  }

  function perform(effect) {
    switch (effect.type) {
      case "sendCommOpen":
        dispatch({ type: "commOpenSent", ok: random() < 0.9 });
        break;
      case "sendCommMsgs": {
        const sent = random() < 0.7 ? effect.chunks.length : Math.floor(random() * (effect.chunks.length + 1));
        for (const chunk of effect.chunks.slice(0, sent)) {
          for (const entry of chunk.entries) if (!entry.isAck) books.sent.push(entry.json);
        }
        dispatch({ type: "commMsgsSent", chunks: effect.chunks, sent: sent });
        break;
      }
      case "answerReadRequest": {
        const json = JSON.stringify({ address: effect.address, value: unique() });
        const phase = state.phase;
        dispatch({ type: "readAnswered", address: effect.address, json: json });
        if (phase !== "closed") books.accepted.add(json);
        break;
      }
      case "scheduleFlush":
        books.microtasks += 1;
        break;
      case "startTimer":
        books.liveTimers.add(timerKey(effect));
        books.startedTimers.push(effect);
        break;
      case "cancelTimer":
        books.liveTimers.delete(timerKey(effect));
        break;
      case "resolveReady": case "rejectReady": case "followReady":
        books.readySettled += 1;
        break;
      case "settlePing":
        books.pings.set(effect.token, books.pings.get(effect.token) + 1);
        break;
      case "handOver":
        for (const entry of effect.entries) books.handedOver.push(entry.json);
        break;
      case "log": {
        const lost = /dropped (\d+) queued value/.exec(effect.args[0]);
        if (effect.level === "warn" && lost !== null) books.warnedCount += Number(lost[1]);
        break;
      }
      case "forwardSend": case "deliver": case "sendCommClose": case "closeSocket":
        break;
      default:
        assert.fail(`unknown effect ${effect.type}`);
    }
  }

  // The outside world: the page's calls, the socket, the kernel's items, time.
  function nextEvent() {
    const roll = random();
    if (roll < 0.2) return { type: "sendCalled", address: "/v", value: unique() };
    if (roll < 0.25) return { type: "pingCalled", token: "t" + unique() };
    if (roll < 0.28) return { type: "closeCalled" };
    if (roll < 0.31) return { type: "replaced", successor: successor, isSelf: random() < 0.2 };
    if (roll < 0.35) {
      const entries = [1, 2].map(() => {
        const json = JSON.stringify({ address: "/h", value: unique() });
        return { json: json, bytes: json.length, isAck: false };
      });
      return { type: "queueHandedOver", entries: entries, reason: "the previous channel closed" };
    }
    if (roll < 0.37) return { type: "socketClosed", code: 1006 };
    if (roll < 0.39) return { type: "kernelClosedComm" };
    if (roll < 0.41) return { type: "socketErrored", detail: {} };
    if (roll < 0.43) return { type: "inputIgnored", problem: "noise" };
    if (roll < 0.5) return { type: "messageHandled", seq: 1 + Math.floor(random() * 30) };
    if (roll < 0.6 && books.microtasks > 0) {
      books.microtasks -= 1;
      return { type: "flushCameDue" };
    }
    if (roll < 0.7 && books.startedTimers.length > 0) {
      const timer = pick(books.startedTimers); // live, or (rarely, as fakes do) fired already
      books.liveTimers.delete(timerKey(timer));
      return { type: "timerFired", timer: timer.timer, token: timer.token };
    }
    const tokens = [...books.pings.keys()];
    const item = pick([
      { address: "#comm_open_ack", value: true },
      { address: "/v", value: unique() },
      { address: "#heartbeat/ping", value: "p" + unique() },
      { address: "#heartbeat/pong", value: tokens.length > 0 ? pick(tokens) : "stray" },
      { address: "/r", read_request: true },
      { address: "/r", read_error: "none" },
      { address: "#unknown", value: 1 },
    ]);
    return { type: "itemReceived", item: item };
  }

  function checkBooks() {
    const inOutbox = wk.channelOutbox(state).filter((entry) => !entry.isAck).map((entry) => entry.json);
    const accounted = books.sent.concat(books.handedOver, inOutbox);
    assert.equal(new Set(accounted).size, accounted.length, `${where()}: a value sent or kept twice`);
    for (const json of accounted) assert.ok(books.accepted.has(json), `${where()}: ${json} came from nowhere`);
    assert.equal(accounted.length + books.warnedCount, books.accepted.size, `${where()}: a value vanished`);
    assert.ok(books.readySettled <= 1, `${where()}: ready settled twice`);
    for (const [token, times] of books.pings) assert.ok(times <= 1, `${where()}: ping ${token} settled ${times} times`);
  }

  dispatch(random() < 0.05 ? { type: "socketFailed", error: new Error("x") } : { type: "socketCreated", url: "ws://x/" });
  if (state.phase !== "closed") dispatch({ type: "socketOpened" });
  for (let i = 0; i < 80; i++) {
    const event = nextEvent();
    const phase = state.phase;
    if (event.type === "pingCalled") books.pings.set(event.token, 0);
    const out = dispatch(event);
    if (event.type === "pingCalled" && phase === "open") {
      books.accepted.add(JSON.stringify({ address: "#heartbeat/ping", value: event.token }));
    }
    if (event.type === "sendCalled" && out.result === true) {
      books.accepted.add(JSON.stringify({ address: event.address, value: event.value }));
    }
    if (event.type === "queueHandedOver") for (const entry of event.entries) books.accepted.add(entry.json);
    if (event.type === "itemReceived" && event.item.address === "#heartbeat/ping" && phase !== "closed") {
      books.accepted.add(JSON.stringify({ address: "#heartbeat/pong", value: event.item.value }));
    }
    assert.notEqual(state.phase, "closing", `${where()}: still closing after the event`);
    checkBooks();
  }
  dispatch({ type: "closeCalled" });
  checkBooks();
  assert.equal(state.phase, "closed");
  assert.equal(books.readySettled, 1, `seed ${seed}: ready never settled`);
  for (const [token, times] of books.pings) assert.equal(times, 1, `seed ${seed}: ping ${token} never settled`);
  assert.deepEqual([...books.liveTimers], [], `seed ${seed}: timers left running`);
  return books;
}

test("random event sequences: nothing sent after close, no value lost silently, all settled", () => {
  let sent = 0;
  let warned = 0;
  for (let seed = 1; seed <= 400; seed++) {
    const books = simulate(seed);
    sent += books.sent.length;
    warned += books.warnedCount;
  }
  // The runs reach the interesting places: values sent, and values counted as lost.
  assert.ok(sent > 1000, `only ${sent} values sent`);
  assert.ok(warned > 10, `only ${warned} values counted as lost`);
});
