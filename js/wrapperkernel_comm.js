/*
 * wrapperkernel_comm: the page side of wrapperkernel's address channel.
 *
 * The kernel publishes this file inside a script element (transient display_data),
 * followed by a call to globalThis.wrapperkernel_comm_install(config). The installer opens a SECOND
 * websocket to Jupyter Server, with a fresh session_id so the page's own kernel
 * connection is left alone, opens the "wrapperkernel_comm" comm and carries
 * {address, value} payloads both ways (DESIGN.md, "The address channel").
 *
 * Layout: pure builders first (uuid, headers, messages, websocket URL, batching, parsing
 * of incoming payloads); they touch no socket and no global. Then the registry of
 * subscriptions and synced variables, then the channel that owns the socket.
 *
 * Acknowledgements (flow control): a comm_msg from the kernel may carry an integer
 * `seq` in its Jupyter `metadata` (1, 2, 3, ... per comm). Once its items are delivered,
 * the page acknowledges the highest seq handled with {"address": "#ack", "value": seq},
 * through the same outbox as page values: at once after config.ack_every_msgs
 * unacknowledged messages, else config.ack_delay_ms after the first of them.
 *
 * Must never: build the URL from ws:// + host (https and JupyterHub base URLs must
 * work); treat 0, false, "" or null as "no value" (only undefined is); send anything
 * on a socket after close() (a channel replaced for the same kernel passes later sends
 * to its successor); let one subscriber's exception stop delivery to the others; lose a
 * queued value silently (a failed send keeps it queued for a successor, and values that
 * die with a closed channel are counted in a console warning).
 */
(function () {
  "use strict";

  const TARGET_NAME = "wrapperkernel_comm";
  const PROTOCOL_VERSION = "5.4";
  const USERNAME = "wrapperkernel_comm";
  const OPEN_ACK_ADDRESS = "#comm_open_ack";
  const ACK_ADDRESS = "#ack";
  const PING_ADDRESS = "#heartbeat/ping";
  const PONG_ADDRESS = "#heartbeat/pong";
  const PRIVATE_PREFIX = "#";
  const WS_OPEN = 1; // WebSocket.OPEN; a literal so injected fakes need not define it

  // Jupyter Server drops IOPub/shell traffic above ~1000 msg/s and 1 MB/s per
  // connection, so a burst is cut into comm_msgs of bounded size.
  const DEFAULT_CONFIG = Object.freeze({
    debug: false,
    heartbeat_timeout_ms: 500,
    max_batch_items: 1000,
    max_batch_bytes: 512 * 1024,
    // Acknowledge the kernel's messages after this many, or this long after the first
    // unacknowledged one, whichever comes first (the kernel's flow-control window).
    ack_every_msgs: 16,
    ack_delay_ms: 20,
  });

  // ------------------------------------------------------------------ pure builders

  function isObject(x) {
    return typeof x === "object" && x !== null && !Array.isArray(x);
  }

  function hasOwn(obj, key) {
    return Object.prototype.hasOwnProperty.call(obj, key);
  }

  // crypto.randomUUID exists only in secure contexts; a notebook served over plain
  // http on a LAN address is not one, so fall back to getRandomValues (always there).
  function newUuid(crypto) {
    if (crypto && typeof crypto.randomUUID === "function") {
      return crypto.randomUUID();
    }
    const bytes = new Uint8Array(16);
    if (crypto && typeof crypto.getRandomValues === "function") {
      crypto.getRandomValues(bytes);
    } else {
      for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
    const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    return [hex.slice(0, 8), hex.slice(8, 12), hex.slice(12, 16), hex.slice(16, 20), hex.slice(20)].join("-");
  }

  // A complete header: JupyterLab and the kernel validate what the page sends.
  function makeHeader(msgType, session, msgId, date) {
    return {
      msg_id: msgId,
      msg_type: msgType,
      username: USERNAME,
      session: session,
      date: date.toISOString(),
      version: PROTOCOL_VERSION,
    };
  }

  // One frame of Jupyter Server's legacy JSON websocket protocol (no subprotocol).
  function makeMessage(header, content, channel) {
    return {
      header: header,
      parent_header: {},
      metadata: {},
      content: content,
      buffers: [],
      channel: channel === undefined ? "shell" : channel,
    };
  }

  function makeCommOpen(header, commId, kernelId) {
    return makeMessage(header, {
      comm_id: commId,
      target_name: TARGET_NAME,
      data: { kernel_id: kernelId },
    });
  }

  function makeCommMsg(header, commId, data) {
    return makeMessage(header, { comm_id: commId, data: data });
  }

  function makeCommClose(header, commId) {
    return makeMessage(header, { comm_id: commId, data: {} });
  }

  // The JSON text of makeCommMsg(header, commId, data) where `data` is given already
  // serialized: each value is serialized once, when send() is called, so a caller may
  // mutate its object afterwards without changing what was sent.
  function encodeCommMsgFrame(header, commId, dataJson) {
    return (
      '{"header":' + JSON.stringify(header) +
      ',"parent_header":{},"metadata":{},"content":{"comm_id":' + JSON.stringify(commId) +
      ',"data":' + dataJson + '},"buffers":[],"channel":"shell"}'
    );
  }

  // One item goes as itself, several as {"batch": [...]} in order.
  function dataJsonFor(itemJsons) {
    if (itemJsons.length === 1) return itemJsons[0];
    return '{"batch":[' + itemJsons.join(",") + "]}";
  }

  function ackItemJson(seq) {
    return '{"address":' + JSON.stringify(ACK_ADDRESS) + ',"value":' + JSON.stringify(seq) + "}";
  }

  function utf8ByteLength(text) {
    let bytes = 0;
    for (let i = 0; i < text.length; i++) {
      const code = text.charCodeAt(i);
      if (code < 0x80) bytes += 1;
      else if (code < 0x800) bytes += 2;
      else if (code >= 0xd800 && code <= 0xdbff && i + 1 < text.length) {
        bytes += 4; // a surrogate pair is one 4-byte code point
        i++;
      } else bytes += 3;
    }
    return bytes;
  }

  // Cuts [{json, bytes}, ...] into chunks of at most maxItems items and about maxBytes
  // bytes, keeping the order. An item larger than maxBytes travels alone.
  function splitIntoChunks(entries, maxItems, maxBytes) {
    const chunks = [];
    let current = [];
    let size = 0;
    for (const entry of entries) {
      if (current.length > 0 && (current.length >= maxItems || size + entry.bytes > maxBytes)) {
        chunks.push(current);
        current = [];
        size = 0;
      }
      current.push(entry);
      size += entry.bytes + 1; // + the comma between batch items
    }
    if (current.length > 0) chunks.push(current);
    return chunks;
  }

  // The page config JupyterLab and Notebook 7 embed as JSON in the script element
  // with id "jupyter-config-data".
  function readPageConfig(document) {
    if (!document || typeof document.getElementById !== "function") return {};
    const element = document.getElementById("jupyter-config-data");
    if (!element) return {};
    try {
      const parsed = JSON.parse(element.textContent);
      return isObject(parsed) ? parsed : {};
    } catch (err) {
      return {};
    }
  }

  function nonEmptyString(x) {
    return typeof x === "string" && x !== "";
  }

  // wsUrl when the server gives one, else baseUrl resolved against the page location
  // with http(s) turned into ws(s); always ends with "/".
  function websocketBase(pageConfig, location) {
    const raw = nonEmptyString(pageConfig.wsUrl)
      ? pageConfig.wsUrl
      : nonEmptyString(pageConfig.baseUrl)
        ? pageConfig.baseUrl
        : "/";
    const pageHref = location && nonEmptyString(location.href) ? location.href : undefined;
    let url;
    try {
      url = pageHref === undefined ? new URL(raw) : new URL(raw, pageHref);
    } catch (err) {
      throw new Error(
        `wrapperkernel_comm: cannot build the websocket URL from ${JSON.stringify(raw)} ` +
          `and page location ${JSON.stringify(pageHref)}`,
      );
    }
    if (url.protocol === "https:") url.protocol = "wss:";
    else if (url.protocol === "http:") url.protocol = "ws:";
    if (!url.pathname.endsWith("/")) url.pathname += "/";
    url.search = "";
    url.hash = "";
    return url.href;
  }

  function channelsUrl(pageConfig, location, kernelId, sessionId) {
    let url =
      websocketBase(pageConfig, location) +
      "api/kernels/" + encodeURIComponent(kernelId) +
      "/channels?session_id=" + encodeURIComponent(sessionId);
    if (nonEmptyString(pageConfig.token)) url += "&token=" + encodeURIComponent(pageConfig.token);
    return url;
  }

  // The acknowledgement number a message carries in its metadata, or undefined.
  function seqOf(msg) {
    if (!isObject(msg.metadata) || !hasOwn(msg.metadata, "seq")) return undefined;
    const seq = msg.metadata.seq;
    return Number.isSafeInteger(seq) && seq >= 1 ? seq : undefined;
  }

  // What an incoming websocket message means for the comm `commId`:
  // {kind: "data", data, seq?} | {kind: "close"} | {kind: "ignore", problem?}.
  // `problem` is set only for messages addressed to our comm that make no sense; `seq`
  // only for a message that carries an acknowledgement number.
  function classifyMessage(msg, commId) {
    if (!isObject(msg) || !isObject(msg.header) || !isObject(msg.content)) {
      return { kind: "ignore", problem: "a message without header or content" };
    }
    if (msg.content.comm_id !== commId) return { kind: "ignore" };
    if (msg.channel !== undefined && msg.channel !== "iopub") return { kind: "ignore" };
    const type = msg.header.msg_type;
    if (type === "comm_close") return { kind: "close" };
    if (type === "comm_msg") {
      const meaning = { kind: "data", data: msg.content.data };
      const seq = seqOf(msg);
      if (seq !== undefined) meaning.seq = seq;
      return meaning;
    }
    return { kind: "ignore", problem: `unexpected ${JSON.stringify(type)} for our comm` };
  }

  // What is wrong with one incoming item, or null. Exactly one of value, read_request,
  // read_error; a present `value` of null is a real value.
  function itemProblem(item) {
    if (!isObject(item)) return "an item that is not an object";
    if (!nonEmptyString(item.address)) return "an item without a string address";
    const kinds = ["value", "read_request", "read_error"].filter((key) => hasOwn(item, key));
    if (kinds.length !== 1) {
      return `an item for ${JSON.stringify(item.address)} with ${kinds.length} of value/read_request/read_error`;
    }
    if (kinds[0] === "read_request" && item.read_request !== true) return "read_request that is not true";
    if (kinds[0] === "read_error" && typeof item.read_error !== "string") return "read_error that is not a string";
    return null;
  }

  // The valid items of a comm_msg's data (a single item or a batch) and the problems.
  function itemsOf(data) {
    let entries;
    if (isObject(data) && hasOwn(data, "batch")) {
      if (!Array.isArray(data.batch)) return { items: [], problems: ["'batch' that is not a list"] };
      entries = data.batch;
    } else {
      entries = [data];
    }
    const items = [];
    const problems = [];
    for (const entry of entries) {
      const problem = itemProblem(entry);
      if (problem === null) items.push(entry);
      else problems.push(problem);
    }
    return { items: items, problems: problems };
  }

  // JSON text of a value, or a TypeError naming the address: undefined, functions and
  // symbols have no JSON form and would otherwise vanish from the payload.
  function valueJson(address, value) {
    const text = JSON.stringify(value);
    if (text === undefined) {
      throw new TypeError(
        `wrapperkernel_comm: the value for ${JSON.stringify(address)} is not JSON (got ${typeof value})`,
      );
    }
    return text;
  }

  function checkAddress(address) {
    if (!nonEmptyString(address)) {
      throw new TypeError(`wrapperkernel_comm: an address must be a non-empty string, got ${JSON.stringify(address)}`);
    }
  }

  function checkCallback(callback) {
    if (typeof callback !== "function") {
      throw new TypeError("wrapperkernel_comm: a subscriber must be a function");
    }
  }

  // ------------------------------------------------------------------ registry

  // Subscriptions and synced variables. It outlives one connection: when the kernel
  // reinstalls the script (stale connection, server restart) for the same kernel, the
  // new channel adopts the registry, so widgets already on the page keep working.
  function createRegistry() {
    return {
      nextId: 1,
      byAddress: new Map(), // address -> Map(id -> callback)
      addressOfId: new Map(), // id -> address
      variables: new Map(), // address -> {api, receive}
      channel: null, // the channel synced variables send through
    };
  }

  // Calls every callback with (address, value); one that throws is logged and the
  // others still run. Iterates over a copy so a callback may (un)subscribe.
  function callEach(callbacks, address, value, console) {
    for (const callback of Array.from(callbacks)) {
      try {
        callback(address, value);
      } catch (err) {
        console.error(`wrapperkernel_comm: a subscriber of ${JSON.stringify(address)} threw`, err);
      }
    }
  }

  function createSyncedVariable(registry, address, initial, console) {
    let value = initial;
    let nextId = 1;
    const subscribers = new Map();
    const notify = () => callEach(subscribers.values(), address, value, console);
    const api = Object.freeze({
      address: address,
      get() {
        return value;
      },
      // Updates the local value, notifies this variable's subscribers, sends to the
      // kernel. Returns what the channel's send returned (false once closed).
      set(newValue) {
        valueJson(address, newValue);
        value = newValue;
        notify();
        return registry.channel.send(address, newValue);
      },
      subscribe(callback) {
        checkCallback(callback);
        const id = nextId++;
        subscribers.set(id, callback);
        return id;
      },
      unsubscribe(id) {
        return subscribers.delete(id);
      },
    });
    const receive = (newValue) => {
      value = newValue;
      notify();
    };
    return { api: api, receive: receive };
  }

  // ------------------------------------------------------------------ the channel

  function resolveDeps(deps) {
    const given = deps || {};
    const g = globalThis;
    return {
      global: given.global !== undefined ? given.global : g,
      WebSocket: given.WebSocket !== undefined ? given.WebSocket : g.WebSocket,
      document: given.document !== undefined ? given.document : g.document,
      location: given.location !== undefined ? given.location : g.location,
      crypto: given.crypto !== undefined ? given.crypto : g.crypto,
      console: given.console !== undefined ? given.console : g.console,
      queueMicrotask: given.queueMicrotask !== undefined
        ? given.queueMicrotask
        : (callback) => Promise.resolve().then(callback),
      setTimeout: given.setTimeout !== undefined ? given.setTimeout : (f, ms) => g.setTimeout(f, ms),
      clearTimeout: given.clearTimeout !== undefined ? given.clearTimeout : (t) => g.clearTimeout(t),
      now: given.now !== undefined ? given.now : () => new Date(),
    };
  }

  function createChannel(rawConfig, d, registry) {
    const config = Object.freeze(Object.assign({}, DEFAULT_CONFIG, rawConfig));
    if (!nonEmptyString(config.kernel_id)) {
      throw new TypeError("wrapperkernel_comm: config.kernel_id must be a non-empty string");
    }
    const debug = (...args) => {
      if (config.debug === true) d.console.debug("wrapperkernel_comm:", ...args);
    };
    const sessionId = newUuid(d.crypto);
    const commId = newUuid(d.crypto);

    let state = "connecting"; // -> "open" on #comm_open_ack -> "closed"; never back
    let commOpenSent = false;
    let outbox = []; // [{json, bytes, isAck}] waiting for the open ack, the next microtask or a socket
    let flushScheduled = false;
    // Acknowledgements of the kernel's numbered messages (see the top comment).
    let lastSeq = 0; // the highest seq handled
    let lastAckedSeq = 0; // the highest seq put in the outbox as an #ack
    let ackTimer = null;
    const pendingPings = new Map(); // ping value -> {resolve, timer}
    // The channel that replaced this one for the same kernel. Page code that kept this
    // channel (a script that awaited its `ready`) goes on working through it.
    let successor = null;
    let resolveReady;
    let rejectReady;
    const ready = new Promise((resolve, reject) => {
      resolveReady = resolve;
      rejectReady = reject;
    });
    // A page that never awaits `ready` must not get an "unhandled rejection" on close.
    ready.catch(() => {});

    const header = (msgType) => makeHeader(msgType, sessionId, newUuid(d.crypto), d.now());

    let socket = null;

    function sendFrame(text) {
      if (socket === null || socket.readyState !== WS_OPEN) return false;
      try {
        socket.send(text);
        return true;
      } catch (err) {
        d.console.error("wrapperkernel_comm: websocket send failed", err);
        return false;
      }
    }

    function enqueueJson(address, json) {
      if (state === "closed") {
        d.console.warn(`wrapperkernel_comm: closed; dropped a value for ${JSON.stringify(address)}`);
        return false;
      }
      outbox.push({ json: json, bytes: utf8ByteLength(json), isAck: address === ACK_ADDRESS });
      scheduleFlush();
      return true;
    }

    // Takes the queued entries of the channel this one replaced, after what is queued
    // here (nothing, normally: a successor is handed over to as soon as it exists).
    function adopt(entries, reason) {
      if (entries.length === 0) return;
      if (state === "closed" && successor !== null) {
        successor._adopt(entries, reason);
      } else if (state === "closed") {
        warnLost(entries.length, `${reason}, then this channel closed too`);
      } else {
        for (const entry of entries) outbox.push(entry);
        scheduleFlush();
      }
    }

    function warnLost(count, reason) {
      d.console.warn(`wrapperkernel_comm: ${reason}; dropped ${count} queued value(s) that were never sent`);
    }

    function enqueueValue(address, value) {
      const json = '{"address":' + JSON.stringify(address) + ',"value":' + valueJson(address, value) + "}";
      return enqueueJson(address, json);
    }

    function scheduleFlush() {
      if (state !== "open" || flushScheduled || outbox.length === 0) return;
      flushScheduled = true;
      d.queueMicrotask(flush);
    }

    // Everything queued in one tick leaves together: fewer messages under the server's
    // rate limit, and order kept. A chunk the socket refuses (closing, not open, send
    // threw) stays queued with every chunk after it, in order, for a later flush, the
    // successor, or the count in markClosed's warning.
    function flush() {
      flushScheduled = false;
      if (state !== "open" || outbox.length === 0) return;
      const chunks = splitIntoChunks(outbox, config.max_batch_items, config.max_batch_bytes);
      outbox = [];
      for (let i = 0; i < chunks.length; i++) {
        const dataJson = dataJsonFor(chunks[i].map((entry) => entry.json));
        if (!sendFrame(encodeCommMsgFrame(header("comm_msg"), commId, dataJson))) {
          const unsent = chunks.slice(i).flat();
          outbox = unsent.concat(outbox);
          debug(`sent ${i} comm_msg(s); the websocket refused the rest, ${unsent.length} value(s) stay queued`);
          return;
        }
      }
      debug(`sent ${chunks.length} comm_msg(s)`);
    }

    // An #ack for the highest seq handled, unless it was acknowledged already.
    function queueAck() {
      if (ackTimer !== null) {
        d.clearTimeout(ackTimer);
        ackTimer = null;
      }
      if (state === "closed" || lastSeq <= lastAckedSeq) return;
      lastAckedSeq = lastSeq;
      enqueueJson(ACK_ADDRESS, ackItemJson(lastSeq));
    }

    // Called once a numbered message's items were handled.
    function noteSeq(seq) {
      if (seq === undefined || state === "closed") return;
      if (seq > lastSeq) lastSeq = seq;
      if (lastSeq - lastAckedSeq >= config.ack_every_msgs) {
        queueAck();
      } else if (lastSeq > lastAckedSeq && ackTimer === null) {
        ackTimer = d.setTimeout(() => {
          ackTimer = null;
          queueAck();
        }, config.ack_delay_ms);
      }
    }

    function markClosed(reason) {
      if (state === "closed") return;
      const acked = state === "open";
      state = "closed";
      if (ackTimer !== null) {
        d.clearTimeout(ackTimer);
        ackTimer = null;
      }
      // An #ack counts this comm's messages: it means nothing on the successor's comm.
      const queued = outbox.filter((entry) => !entry.isAck);
      outbox = [];
      if (queued.length > 0 && successor !== null) {
        debug(`${reason}; handing ${queued.length} queued value(s) to the new channel`);
        successor._adopt(queued, reason);
      } else if (queued.length > 0) {
        warnLost(queued.length, reason);
      }
      for (const [, pending] of pendingPings) {
        d.clearTimeout(pending.timer);
        pending.resolve(false);
      }
      pendingPings.clear();
      if (!acked && successor !== null) {
        successor.ready.then(resolveReady, rejectReady);
      } else if (!acked) {
        rejectReady(new Error(`wrapperkernel_comm: ${reason} before the kernel acknowledged`));
      }
      if (socket !== null && socket.readyState <= WS_OPEN) {
        try {
          socket.close();
        } catch (err) {
          debug("websocket close failed", err);
        }
      }
      debug(`closed: ${reason}`);
    }

    function onOpenAck() {
      if (state !== "connecting") {
        debug("ignored a repeated #comm_open_ack");
        return;
      }
      state = "open";
      debug("acknowledged by the kernel");
      resolveReady(channel);
      scheduleFlush();
    }

    function onPong(value) {
      const pending = pendingPings.get(value);
      if (pending === undefined) return; // a pong for the kernel's own bookkeeping, or late
      pendingPings.delete(value);
      d.clearTimeout(pending.timer);
      pending.resolve(true);
    }

    function answerReadRequest(address) {
      const variable = registry.variables.get(address);
      let problem = null;
      if (variable === undefined) {
        problem =
          `the page has no synced variable for ${JSON.stringify(address)}: create one with ` +
          "wrapperkernel_comm.newSyncedVariable(address, initial)";
      } else if (variable.api.get() === undefined) {
        problem = `the synced variable for ${JSON.stringify(address)} has no value yet`;
      }
      if (problem === null) {
        enqueueValue(address, variable.api.get());
      } else {
        enqueueJson(address, JSON.stringify({ address: address, read_error: problem }));
      }
    }

    function deliver(address, value) {
      const variable = registry.variables.get(address);
      if (variable !== undefined) variable.receive(value);
      const callbacks = registry.byAddress.get(address);
      if (callbacks !== undefined) callEach(callbacks.values(), address, value, d.console);
    }

    function onItem(item) {
      if (item.read_request === true) {
        answerReadRequest(item.address);
        return;
      }
      if (hasOwn(item, "read_error")) {
        debug(`read_error for ${JSON.stringify(item.address)}: ${item.read_error}`);
        return;
      }
      switch (item.address) {
        case OPEN_ACK_ADDRESS:
          onOpenAck();
          return;
        case PING_ADDRESS:
          // Answer at once with the same value, so the kernel knows this page is alive.
          enqueueValue(PONG_ADDRESS, item.value === undefined ? null : item.value);
          return;
        case PONG_ADDRESS:
          onPong(item.value);
          return;
        default:
          if (item.address.startsWith(PRIVATE_PREFIX)) {
            debug(`ignored unknown private address ${JSON.stringify(item.address)}`);
            return;
          }
          deliver(item.address, item.value);
      }
    }

    function onFrame(event) {
      if (state === "closed") return;
      const text = event === null || event === undefined ? undefined : event.data;
      if (typeof text !== "string") {
        debug("ignored a non-text websocket frame");
        return;
      }
      let msg;
      try {
        msg = JSON.parse(text);
      } catch (err) {
        debug("ignored a websocket frame that is not JSON", err);
        return;
      }
      const meaning = classifyMessage(msg, commId);
      if (meaning.kind === "close") {
        markClosed("the kernel closed the comm");
        return;
      }
      if (meaning.kind === "ignore") {
        if (meaning.problem !== undefined) debug(`ignored ${meaning.problem}`);
        return;
      }
      const { items, problems } = itemsOf(meaning.data);
      for (const problem of problems) debug(`ignored ${problem}`);
      for (const item of items) {
        if (state === "closed") return; // a subscriber may have closed the channel
        onItem(item);
      }
      noteSeq(meaning.seq); // handled, even when some of its items made no sense
    }

    // ---- public API

    function send(address, value) {
      checkAddress(address);
      if (state === "closed" && successor !== null) return successor.send(address, value);
      return enqueueValue(address, value);
    }

    // Called by install() before it closes this channel in favour of `next`.
    function handOver(next) {
      if (successor === null && next !== channel) successor = next;
    }

    function subscribe(address, callback) {
      checkAddress(address);
      checkCallback(callback);
      const id = registry.nextId++;
      if (!registry.byAddress.has(address)) registry.byAddress.set(address, new Map());
      registry.byAddress.get(address).set(id, callback);
      registry.addressOfId.set(id, address);
      return id;
    }

    function unsubscribe(id) {
      const address = registry.addressOfId.get(id);
      if (address === undefined) return false;
      registry.addressOfId.delete(id);
      const callbacks = registry.byAddress.get(address);
      callbacks.delete(id);
      if (callbacks.size === 0) registry.byAddress.delete(address);
      return true;
    }

    // One synced variable per address: asking again returns the same object and keeps
    // its current value (`initial` is used only on creation). `initial` may be any JSON
    // value; undefined means "no value yet" (a kernel read then gets a read_error).
    function newSyncedVariable(address, initial) {
      checkAddress(address);
      const existing = registry.variables.get(address);
      if (existing !== undefined) return existing.api;
      if (initial !== undefined) valueJson(address, initial);
      const variable = createSyncedVariable(registry, address, initial, d.console);
      registry.variables.set(address, variable);
      return variable.api;
    }

    // Resolves true when the kernel answers within heartbeat_timeout_ms, else false.
    function ping() {
      if (state !== "open") return Promise.resolve(false);
      const token = newUuid(d.crypto);
      return new Promise((resolve) => {
        const timer = d.setTimeout(() => {
          pendingPings.delete(token);
          resolve(false);
        }, config.heartbeat_timeout_ms);
        pendingPings.set(token, { resolve: resolve, timer: timer });
        enqueueValue(PING_ADDRESS, token);
      });
    }

    function close() {
      if (state === "closed") return;
      if (state === "open") flush(); // what was sent before close() still leaves
      if (commOpenSent) sendFrame(JSON.stringify(makeCommClose(header("comm_close"), commId)));
      markClosed("close() was called");
    }

    const channel = {
      get state() {
        return state;
      },
      ready: ready,
      config: config,
      kernelId: config.kernel_id,
      commId: commId,
      sessionId: sessionId,
      url: undefined,
      send: send,
      subscribe: subscribe,
      unsubscribe: unsubscribe,
      newSyncedVariable: newSyncedVariable,
      ping: ping,
      close: close,
    };
    Object.defineProperty(channel, "_registry", { value: registry, enumerable: false });
    Object.defineProperty(channel, "_handOver", { value: handOver, enumerable: false });
    Object.defineProperty(channel, "_adopt", { value: adopt, enumerable: false });
    registry.channel = channel;

    try {
      channel.url = channelsUrl(readPageConfig(d.document), d.location, config.kernel_id, sessionId);
      socket = new d.WebSocket(channel.url);
    } catch (err) {
      d.console.error("wrapperkernel_comm: cannot open the websocket", err);
      markClosed("the websocket could not be opened");
      return Object.freeze(channel);
    }
    socket.onopen = () => {
      if (state === "closed") return;
      commOpenSent = sendFrame(JSON.stringify(makeCommOpen(header("comm_open"), commId, config.kernel_id)));
      debug(`websocket open, comm_open sent for comm ${commId}`);
    };
    socket.onmessage = onFrame;
    socket.onerror = (event) => debug("websocket error", event);
    socket.onclose = (event) => {
      const code = event && event.code !== undefined ? ` (code ${event.code})` : "";
      markClosed(`the websocket closed${code}`);
    };
    debug(`connecting to ${channel.url}`);
    return Object.freeze(channel);
  }

  // Creates globalThis.wrapperkernel_comm, closing the previous one first. `deps`
  // replaces globals for tests: {global, WebSocket, document, location, crypto, console,
  // queueMicrotask, setTimeout, clearTimeout, now}.
  // For the same kernel, the new channel adopts the previous one's registry, and the
  // previous one hands over to it: its queued values, its `ready`, and later `send`s.
  function install(config, deps) {
    const d = resolveDeps(deps);
    const previous = d.global.wrapperkernel_comm;
    const replaceable =
      previous !== undefined && previous !== null && typeof previous.close === "function";
    const sameKernel =
      replaceable && previous._registry !== undefined && config && previous.kernelId === config.kernel_id;
    const channel = createChannel(config, d, sameKernel ? previous._registry : createRegistry());
    if (replaceable) {
      try {
        if (sameKernel && typeof previous._handOver === "function") previous._handOver(channel);
        previous.close();
      } catch (err) {
        d.console.error("wrapperkernel_comm: closing the previous instance failed", err);
      }
    }
    d.global.wrapperkernel_comm = channel;
    return channel;
  }

  globalThis.wrapperkernel_comm_install = install;

  if (typeof module !== "undefined" && module !== null && module.exports) {
    module.exports = {
      install: install,
      newUuid: newUuid,
      makeHeader: makeHeader,
      makeMessage: makeMessage,
      makeCommOpen: makeCommOpen,
      makeCommMsg: makeCommMsg,
      makeCommClose: makeCommClose,
      encodeCommMsgFrame: encodeCommMsgFrame,
      dataJsonFor: dataJsonFor,
      utf8ByteLength: utf8ByteLength,
      splitIntoChunks: splitIntoChunks,
      readPageConfig: readPageConfig,
      websocketBase: websocketBase,
      channelsUrl: channelsUrl,
      classifyMessage: classifyMessage,
      itemsOf: itemsOf,
      DEFAULT_CONFIG: DEFAULT_CONFIG,
    };
  }
})();
