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
 * of incoming payloads); they touch no socket and no global. Then the channel's life as a
 * pure reducer, channelStep(state, event) -> {state, effects, result}: connecting ->
 * open -> closed, the outbox, acknowledgements, pings and the hand-over to a successor;
 * no I/O, no timer, no clock inside. Then the registry of subscriptions and synced
 * variables, then the shell of a channel (createChannel), which owns the socket and the
 * timers, feeds what happens to them to the reducer as events and performs its effects.
 *
 * Acknowledgements (flow control): a comm_msg from the kernel may carry an integer
 * `seq` in its Jupyter `metadata` (1, 2, 3, ... per comm). Once its items are delivered,
 * the page acknowledges the highest seq handled with {"address": "#ack", "value": seq},
 * through the same outbox as page values: at once after config.ack_every_msgs
 * unacknowledged messages, else config.ack_delay_ms after the first of them.
 *
 * Binary values: a value may hold ArrayBuffers, typed arrays and DataViews, at any depth of
 * lists and plain objects. send() copies their bytes (exactly those a view shows) and puts
 * null in their slots; they leave as the comm message's buffers, and the payload (one item
 * or {"batch": [...]}) lists where they belong in "buffer_paths": one path of keys and list
 * indices from the payload per buffer, in order, e.g. ["batch", 3, "value", "pixels"]. The
 * kernel's payloads carry buffer_paths the same way; the page puts each buffer at its
 * path as a DataView over the bytes that arrived, removes buffer_paths, then reads the
 * items. On the widget transport the buffers are the custom message's own. On the
 * websocket the page offers the v1.kernel.websocket.jupyter.org subprotocol: where the
 * server picks it, every message both ways is one v1 binary frame (encodeV1Frame); else
 * the legacy protocol, where a message with buffers is a binary frame
 * (encodeLegacyBinaryFrame) and the others JSON text. A Jupyter Server in gateway mode
 * reads binary frames as text, so no bytes cross it: a message that arrives so is dropped
 * with a console error naming the cause.
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
  const PROTOCOL_VERSION = "5.5"; // the kernel's too (kernel/info.py; tests/test_js_constants.py)
  const USERNAME = "wrapperkernel_comm";
  const OPEN_ACK_ADDRESS = "#comm_open_ack";
  const ACK_ADDRESS = "#ack";
  const PING_ADDRESS = "#heartbeat/ping";
  const PONG_ADDRESS = "#heartbeat/pong";
  const PRIVATE_PREFIX = "#";
  const WS_OPEN = 1; // WebSocket.OPEN; a literal so injected fakes need not define it
  // The websocket subprotocol of Jupyter Server 2 (services/kernels/websocket.py): every
  // message both ways is one binary frame (encodeV1Frame). Without it, the legacy protocol.
  const V1_PROTOCOL = "v1.kernel.websocket.jupyter.org";

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
    ack_delay_ms: 8,
    // "auto" | "websocket" | "widget" (chooseTransport); install_id names an installation.
    transport: "auto",
    install_id: null,
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
      ',"parent_header":{},"metadata":{},"content":' + commContentJson(commId, dataJson) +
      ',"buffers":[],"channel":"shell"}'
    );
  }

  function commContentJson(commId, dataJson) {
    return '{"comm_id":' + JSON.stringify(commId) + ',"data":' + dataJson + "}";
  }

  // The JSON parts of a message from the page: [header, parent_header, metadata, content].
  function messagePartsJson(msg) {
    return [JSON.stringify(msg.header), JSON.stringify(msg.parent_header), JSON.stringify(msg.metadata),
      JSON.stringify(msg.content)];
  }

  function commMsgPartsJson(header, commId, dataJson) {
    return [JSON.stringify(header), "{}", "{}", commContentJson(commId, dataJson)];
  }

  // The JSON part of a legacy binary frame (encodeLegacyBinaryFrame): the message without
  // "buffers", which travel after it.
  function legacyJsonOfParts(parts, channel) {
    return '{"header":' + parts[0] + ',"parent_header":' + parts[1] + ',"metadata":' + parts[2] +
      ',"content":' + parts[3] + ',"channel":' + JSON.stringify(channel) + "}";
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

  // ---- binary values (see the top comment)

  function isArrayBuffer(x) {
    // Not instanceof: a buffer from another realm (an iframe) has another ArrayBuffer.
    return Object.prototype.toString.call(x) === "[object ArrayBuffer]";
  }

  function isBinary(x) {
    return isArrayBuffer(x) || ArrayBuffer.isView(x);
  }

  // A copy of exactly the bytes `x` shows (a view may start inside a larger buffer): what
  // is sent is what `x` held when send() was called, as for JSON values.
  function bytesOf(x) {
    const view = ArrayBuffer.isView(x) ? new Uint8Array(x.buffer, x.byteOffset, x.byteLength) : new Uint8Array(x);
    return view.slice();
  }

  // Objects JSON.stringify writes key by key; others (Date, class instances, objects with
  // toJSON) are left to it.
  function isPlainObject(x) {
    if (!isObject(x) || typeof x.toJSON === "function") return false;
    const proto = Object.getPrototypeOf(x);
    return proto === Object.prototype || proto === null;
  }

  // The binary values inside `value` (ArrayBuffer, typed arrays, DataView, at any depth of
  // lists and plain objects): {value, paths, buffers}, where `value` is a copy with null in
  // each binary slot (the given value itself when it holds none), `paths` the slots' paths
  // under `prefix`, and `buffers` their bytes (bytesOf), in the same order.
  function extractBuffers(address, value, prefix) {
    const paths = [];
    const buffers = [];
    const ancestors = [];
    function walk(x, path) {
      if (isBinary(x)) {
        paths.push(path.slice());
        buffers.push(bytesOf(x));
        return null;
      }
      const array = Array.isArray(x);
      if (!array && !isPlainObject(x)) return x;
      if (ancestors.includes(x)) {
        throw new TypeError(`wrapperkernel_comm: the value for ${JSON.stringify(address)} is not JSON (it contains itself)`);
      }
      ancestors.push(x);
      let copy = null; // made at the first slot that changes
      const keys = array ? null : Object.keys(x);
      const count = array ? x.length : keys.length;
      for (let i = 0; i < count; i++) {
        const key = array ? i : keys[i];
        const child = x[key];
        path.push(key);
        const got = walk(child, path);
        path.pop();
        if (got !== child && copy === null) {
          // A null prototype: an own "__proto__" key stays a key.
          copy = array ? x.slice() : Object.assign(Object.create(null), x);
        }
        if (copy !== null) copy[key] = got;
      }
      ancestors.pop();
      return copy === null ? x : copy;
    }
    const stripped = walk(value, prefix.slice());
    return { value: stripped, paths: paths, buffers: buffers };
  }

  // One outbox entry: an item's JSON text, its size in bytes (buffers included), whether it
  // is an #ack, and its binary values with their paths in the item, if it has any.
  function outboxEntry(address, json, paths, buffers) {
    const entry = { json: json, bytes: utf8ByteLength(json), isAck: address === ACK_ADDRESS };
    if (buffers !== undefined && buffers.length > 0) {
      entry.paths = paths;
      entry.buffers = buffers;
      entry.bytes += utf8ByteLength(JSON.stringify(paths)) + buffers.reduce((sum, b) => sum + b.byteLength, 0);
    }
    return entry;
  }

  // The comm data of one chunk of entries: {dataJson, buffers}. The buffers of a batch's
  // items get paths from the payload (["batch", i, ...]), listed in "buffer_paths".
  function payloadOf(entries) {
    const dataJson = dataJsonFor(entries.map((entry) => entry.json));
    const paths = [];
    const buffers = [];
    const batched = entries.length !== 1;
    entries.forEach((entry, i) => {
      if (entry.buffers === undefined) return;
      entry.buffers.forEach((buffer, k) => {
        paths.push(batched ? ["batch", i].concat(entry.paths[k]) : entry.paths[k]);
        buffers.push(buffer);
      });
    });
    if (buffers.length === 0) return { dataJson: dataJson, buffers: buffers };
    // Every payload is a JSON object: its closing brace gets the paths before it.
    return { dataJson: dataJson.slice(0, -1) + ',"buffer_paths":' + JSON.stringify(paths) + "}", buffers: buffers };
  }

  // A buffer from the widget manager or a decoder as a DataView over the same bytes.
  function asDataView(buffer) {
    if (buffer instanceof DataView) return buffer;
    if (ArrayBuffer.isView(buffer)) return new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
    if (isArrayBuffer(buffer)) return new DataView(buffer);
    return undefined;
  }

  // What is wrong with one buffer path in `data`, or null.
  function bufferPathProblem(data, path) {
    if (!Array.isArray(path) || path.length === 0) return "a buffer path that is not a non-empty list";
    let container = data;
    for (let i = 0; i < path.length; i++) {
      const step = path[i];
      const fits = Array.isArray(container)
        ? Number.isSafeInteger(step) && step >= 0 && step < container.length
        : isObject(container) && typeof step === "string" && step !== "__proto__" && hasOwn(container, step);
      if (!fits) return `a buffer path ${JSON.stringify(path)} that leads nowhere in the payload`;
      if (i < path.length - 1) container = container[step];
    }
    return null;
  }

  // Puts the message's buffers into the payload at its "buffer_paths" (as DataViews) and
  // removes them: {data, problem?, dropped?}. A payload whose paths do not fit its buffers
  // is dropped whole: its items would carry null where the bytes belong.
  function placeBuffers(data, buffers) {
    const list = buffers === undefined || buffers === null ? [] : Array.from(buffers);
    if (!isObject(data) || !hasOwn(data, "buffer_paths")) {
      return list.length === 0 ? { data: data } : { data: data, problem: `${list.length} buffer(s) without buffer_paths` };
    }
    const paths = data.buffer_paths;
    delete data.buffer_paths;
    if (!Array.isArray(paths) || paths.length !== list.length) {
      return { data: data, dropped: true, problem: `'buffer_paths' that does not list the message's ${list.length} buffer(s)` };
    }
    const views = list.map(asDataView);
    if (views.includes(undefined)) return { data: data, dropped: true, problem: "a buffer that is not binary" };
    for (const path of paths) {
      const problem = bufferPathProblem(data, path);
      if (problem !== null) return { data: data, dropped: true, problem: problem };
    }
    paths.forEach((path, i) => {
      let container = data;
      for (let k = 0; k < path.length - 1; k++) container = container[path[k]];
      container[path[path.length - 1]] = views[i];
    });
    return { data: data };
  }

  // ---- binary websocket frames (Jupyter Server, services/kernels/connection/base.py)

  class FrameError extends Error {}

  function utf8Encoded(text) {
    return new TextEncoder().encode(text);
  }

  function utf8Decoded(bytes) {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  }

  // Legacy protocol, a message with buffers (serialize_binary_message): a big-endian uint32
  // n (the number of parts), n big-endian uint32 offsets of the parts from the frame's
  // start, then the parts: the message's JSON (UTF-8, with "channel", without "buffers"),
  // then each buffer. A part ends where the next begins, the last at the frame's end.
  function encodeLegacyBinaryFrame(msgJson, buffers) {
    const parts = [utf8Encoded(msgJson)].concat(buffers.map(bytesOf));
    const headerBytes = 4 * (parts.length + 1);
    const frame = new ArrayBuffer(parts.reduce((sum, part) => sum + part.byteLength, headerBytes));
    const view = new DataView(frame);
    const bytes = new Uint8Array(frame);
    view.setUint32(0, parts.length);
    let offset = headerBytes;
    parts.forEach((part, i) => {
      view.setUint32(4 * (i + 1), offset);
      bytes.set(part, offset);
      offset += part.byteLength;
    });
    return frame;
  }

  // {msg, buffers}: the message (its "buffers" are the DataViews over the frame's buffer
  // parts, not copies). Throws FrameError for a frame that is not one.
  function decodeLegacyBinaryFrame(frame) {
    if (!isArrayBuffer(frame) || frame.byteLength < 8) throw new FrameError("a binary frame shorter than its header");
    const view = new DataView(frame);
    const count = view.getUint32(0);
    if (count < 1 || 4 * (count + 1) > frame.byteLength) {
      throw new FrameError(`a binary frame whose header counts ${count} parts`);
    }
    const offsets = [];
    for (let i = 1; i <= count; i++) offsets.push(view.getUint32(4 * i));
    offsets.push(frame.byteLength);
    checkOffsets(offsets, 4 * (count + 1), frame.byteLength);
    const msg = JSON.parse(utf8Decoded(new Uint8Array(frame, offsets[0], offsets[1] - offsets[0])));
    if (!isObject(msg)) throw new FrameError("a binary frame whose JSON part is not an object");
    const buffers = [];
    for (let i = 1; i < count; i++) buffers.push(new DataView(frame, offsets[i], offsets[i + 1] - offsets[i]));
    msg.buffers = buffers;
    return { msg: msg, buffers: buffers };
  }

  function checkOffsets(offsets, start, end) {
    let previous = start;
    for (const offset of offsets) {
      if (offset < previous || offset > end) throw new FrameError(`a binary frame with offsets ${offsets.join(",")}`);
      previous = offset;
    }
  }

  // A little-endian uint64 below 2 ** 53, which DataView has no getter for in old browsers.
  function setUint64(view, at, value) {
    view.setUint32(at, value % 0x100000000, true);
    view.setUint32(at + 4, Math.floor(value / 0x100000000), true);
  }

  function getUint64(view, at) {
    const high = view.getUint32(at + 4, true);
    if (high >= 0x200000) throw new FrameError("a binary frame with an offset beyond 2 ** 53");
    return high * 0x100000000 + view.getUint32(at, true);
  }

  // v1.kernel.websocket.jupyter.org (serialize_msg_to_ws_v1): a little-endian uint64 k,
  // then k little-endian uint64 offsets from the frame's start, then the parts: the
  // channel name (UTF-8), the header, parent_header, metadata and content (JSON, UTF-8),
  // then each buffer. offsets[i] is where part i starts (offsets[0] = 8 * (k + 1)), and the
  // last offset is the frame's length, so k = 6 + the number of buffers.
  // `partsJson` is [header, parent_header, metadata, content] as JSON text.
  function encodeV1Frame(channel, partsJson, buffers) {
    const parts = [utf8Encoded(channel)].concat(partsJson.map(utf8Encoded), buffers.map(bytesOf));
    const count = parts.length + 1;
    const headerBytes = 8 * (count + 1);
    const frame = new ArrayBuffer(parts.reduce((sum, part) => sum + part.byteLength, headerBytes));
    const view = new DataView(frame);
    const bytes = new Uint8Array(frame);
    setUint64(view, 0, count);
    let offset = headerBytes;
    parts.forEach((part, i) => {
      setUint64(view, 8 * (i + 1), offset);
      bytes.set(part, offset);
      offset += part.byteLength;
    });
    setUint64(view, 8 * count, offset);
    return frame;
  }

  // {channel, msg, buffers}: msg has header, parent_header, metadata, content and buffers
  // (DataViews over the frame). Throws FrameError for a frame that is not one.
  function decodeV1Frame(frame) {
    if (!isArrayBuffer(frame) || frame.byteLength < 8) throw new FrameError("a binary frame shorter than its header");
    const view = new DataView(frame);
    const count = getUint64(view, 0);
    if (count < 6 || 8 * (count + 1) > frame.byteLength) {
      throw new FrameError(`a v1 frame whose header counts ${count} offsets`);
    }
    const offsets = [];
    for (let i = 1; i <= count; i++) offsets.push(getUint64(view, 8 * i));
    checkOffsets(offsets, 8 * (count + 1), frame.byteLength);
    const part = (i) => new Uint8Array(frame, offsets[i], offsets[i + 1] - offsets[i]);
    const json = (i) => JSON.parse(utf8Decoded(part(i)));
    const buffers = [];
    for (let i = 5; i < count - 1; i++) buffers.push(new DataView(frame, offsets[i], offsets[i + 1] - offsets[i]));
    const msg = {
      header: json(1),
      parent_header: json(2),
      metadata: json(3),
      content: json(4),
      buffers: buffers,
      channel: utf8Decoded(part(0)),
    };
    return { channel: msg.channel, msg: msg, buffers: buffers };
  }

  // Whether a text frame is a legacy binary message that was decoded as UTF-8 on the way:
  // Jupyter Server in gateway mode reads the gateway's binary frames as text.
  function looksLikeBinaryAsText(text) {
    if (typeof text !== "string" || text.length < 8) return false;
    const word = (at) => {
      let value = 0;
      for (let i = at; i < at + 4; i++) {
        const code = text.charCodeAt(i);
        if (code > 0xff) return -1;
        value = value * 256 + code;
      }
      return value;
    };
    const count = word(0);
    return count >= 2 && count < 0x10000 && word(4) === 4 * (count + 1);
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

  // The outbox entry of {address, value}: its binary values travel as buffers.
  function valueEntry(address, value) {
    const extracted = extractBuffers(address, value, ["value"]);
    const json = '{"address":' + JSON.stringify(address) + ',"value":' + valueJson(address, extracted.value) + "}";
    return outboxEntry(address, json, extracted.paths, extracted.buffers);
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

  // ------------------------------------------------------------------ the channel's life, pure

  // Everything that decides what a channel does lives in channelStep(state, event), which
  // returns {state, effects, result}: the next state, what to do (in order), and what a
  // public call returns. It does no I/O, starts no timer and reads no clock: the socket,
  // the timers and the page's API calls arrive as events, and what they should do leaves
  // as effects, which the shell below (createChannel) performs without deciding anything.
  // It never changes the state it is given; a state is a plain object, safe to keep.
  //
  // Phases: "connecting" --#comm_open_ack--> "open"; either --socket closed, comm_close
  // from the kernel, close(), no socket--> "closed", never back. close() with values still
  // queued passes through "closing": they leave first, in one synchronous send, and the
  // comm_close follows; nothing else can happen meanwhile, so every other event is
  // rejected there.
  //
  // Events (past tense):
  //   page API:   sendCalled {address, value}, pingCalled {token}, closeCalled,
  //               replaced {successor, isSelf}, queueHandedOver {entries, reason}
  //   socket:     socketCreated {url}, socketFailed {error}, socketOpened,
  //               socketErrored {detail}, socketClosed {code}
  //   frames:     inputIgnored {problem, error}, kernelClosedComm, itemReceived {item},
  //               messageHandled {seq} (see eventsOfFrame)
  //   outcomes:   commOpenSent {ok}, commMsgsSent {chunks, sent}, readAnswered {address, json}
  //   time:       flushCameDue (the microtask of scheduleFlush), timerFired {timer, token}
  // Effects (imperative):
  //   sendCommOpen -> commOpenSent; sendCommMsgs {chunks} (in order, stopping at the first
  //   the socket refuses) -> commMsgsSent; sendCommClose; closeSocket; scheduleFlush ->
  //   flushCameDue; startTimer {timer, token, ms} -> timerFired; cancelTimer {timer, token};
  //   resolveReady; rejectReady {message}; followReady {successor}; settlePing {token,
  //   answered}; handOver {successor, entries, reason}; forwardSend {successor, address,
  //   value}; deliver {address, value}; answerReadRequest {address} -> readAnswered;
  //   log {level, args}.
  // Timers: "ack" (the acknowledgement delay) and "ping" (one per page ping, by token).

  const CHANNEL_PHASES = Object.freeze(["connecting", "open", "closing", "closed"]);
  const CHANNEL_EVENTS = Object.freeze([
    "sendCalled", "pingCalled", "closeCalled", "replaced", "queueHandedOver",
    "socketCreated", "socketFailed", "socketOpened", "socketErrored", "socketClosed",
    "inputIgnored", "kernelClosedComm", "itemReceived", "messageHandled",
    "commOpenSent", "commMsgsSent", "readAnswered",
    "flushCameDue", "timerFired",
  ]);
  // A cell of the table that leaves the state as it is, with no effect: the event means
  // nothing in that phase (a frame for a closed channel, a second close()).
  const IGNORED = "ignored";
  // A cell for an event that cannot happen in that phase unless this file has a bug
  // (the outcome of an effect the phase never asks for): channelStep throws.
  const REJECTED = "rejected";

  class ChannelEventError extends Error {}

  // The channel's config: DEFAULT_CONFIG with the kernel's values over it.
  function channelConfig(rawConfig) {
    const config = Object.freeze(Object.assign({}, DEFAULT_CONFIG, rawConfig));
    // Empty only where the kernel could not learn its id (a connection file not named
    // kernel-<id>.json); the widget transport works then, the websocket needs the id.
    if (typeof config.kernel_id !== "string") {
      throw new TypeError("wrapperkernel_comm: config.kernel_id must be a string");
    }
    return config;
  }

  // The outbox is a queue that never changes once made: a push returns a new queue that
  // shares the old one, so a send costs the same however much is queued.
  const EMPTY_QUEUE = Object.freeze({ front: Object.freeze([]), back: null, size: 0 });

  function queuePush(queue, item) {
    return { front: queue.front, back: { item: item, rest: queue.back }, size: queue.size + 1 };
  }

  function queueFrom(items) {
    return items.length === 0 ? EMPTY_QUEUE : { front: items, back: null, size: items.length };
  }

  function queueItems(queue) {
    const tail = [];
    for (let node = queue.back; node !== null; node = node.rest) tail.push(node.item);
    tail.reverse();
    return queue.front.concat(tail);
  }

  function initialChannelState(config, commId) {
    return {
      phase: "connecting",
      config: config,
      commId: commId,
      commOpenSent: false, // the socket took our comm_open, so close() owes a comm_close
      outbox: EMPTY_QUEUE, // of {json, bytes, isAck}: waiting for the ack, a flush or a socket
      flushScheduled: false,
      // Acknowledgements of the kernel's numbered messages (see the top comment).
      lastSeq: 0, // the highest seq handled
      lastAckedSeq: 0, // the highest seq put in the outbox as an #ack
      ackTimerRunning: false,
      pings: [], // tokens of the page's pings that wait for their pong
      // The channel that replaced this one for the same kernel. Page code that kept this
      // channel (a script that awaited its `ready`) goes on working through it.
      successor: undefined,
    };
  }

  // The entries waiting in a state's outbox, oldest first.
  function channelOutbox(state) {
    return queueItems(state.outbox);
  }

  // ---- helpers of the transitions: `t` is the step being built, {given, state, effects,
  // result}; `given` is the state channelStep was called with, which nothing writes.

  function copyState(s) {
    return {
      phase: s.phase,
      config: s.config,
      commId: s.commId,
      commOpenSent: s.commOpenSent,
      outbox: s.outbox,
      flushScheduled: s.flushScheduled,
      lastSeq: s.lastSeq,
      lastAckedSeq: s.lastAckedSeq,
      ackTimerRunning: s.ackTimerRunning,
      pings: s.pings,
      successor: s.successor,
    };
  }

  // Sets fields of the step's next state: a copy of the given one, made on the first write
  // (one copy per step, however many fields it changes), then written in place. So a
  // transition reads what it needs into locals before it changes it.
  function change(t, fields) {
    if (t.state === t.given) t.state = copyState(t.given);
    Object.assign(t.state, fields);
  }

  function emit(t, effect) {
    t.effects.push(effect);
  }

  function debug(t, ...args) {
    if (t.state.config.debug === true) emit(t, { type: "log", level: "debug", args: ["wrapperkernel_comm:", ...args] });
  }

  function warn(t, message) {
    emit(t, { type: "log", level: "warn", args: ["wrapperkernel_comm: " + message] });
  }

  function warnLost(t, count, reason) {
    warn(t, `${reason}; dropped ${count} queued value(s) that were never sent`);
  }

  function scheduleFlush(t) {
    const { phase, flushScheduled, outbox } = t.state;
    if (phase !== "open" || flushScheduled || outbox.size === 0) return;
    change(t, { flushScheduled: true });
    emit(t, { type: "scheduleFlush" });
  }

  // Queues one outbox entry; false (and a warning) once closed.
  function queueEntry(t, address, entry) {
    if (t.state.phase === "closed") {
      warn(t, `closed; dropped a value for ${JSON.stringify(address)}`);
      return false;
    }
    change(t, { outbox: queuePush(t.state.outbox, entry) });
    scheduleFlush(t);
    return true;
  }

  function queueValue(t, address, value) {
    return queueEntry(t, address, valueEntry(address, value));
  }

  // Everything queued leaves together, cut into chunks under the server's limits; the
  // outcome (commMsgsSent) puts back what the socket refused.
  function sendOutbox(t) {
    const config = t.state.config;
    const chunks = splitIntoChunks(queueItems(t.state.outbox), config.max_batch_items, config.max_batch_bytes);
    change(t, { outbox: EMPTY_QUEUE });
    emit(t, {
      type: "sendCommMsgs",
      chunks: chunks.map((entries) => {
        const payload = payloadOf(entries);
        return { dataJson: payload.dataJson, buffers: payload.buffers, entries: entries };
      }),
    });
  }

  // An #ack for the highest seq handled, unless it was acknowledged already.
  function queueAck(t) {
    if (t.state.ackTimerRunning) {
      change(t, { ackTimerRunning: false });
      emit(t, { type: "cancelTimer", timer: "ack" });
    }
    const { phase, lastSeq, lastAckedSeq } = t.state;
    if (phase === "closed" || lastSeq <= lastAckedSeq) return;
    change(t, { lastAckedSeq: lastSeq });
    const json = ackItemJson(lastSeq);
    queueEntry(t, ACK_ADDRESS, outboxEntry(ACK_ADDRESS, json));
  }

  function markClosed(t, reason) {
    const { phase, ackTimerRunning, outbox, pings, successor } = t.state; // before they change
    const acked = phase === "open" || phase === "closing";
    change(t, { phase: "closed", outbox: EMPTY_QUEUE, pings: [], ackTimerRunning: false });
    if (ackTimerRunning) emit(t, { type: "cancelTimer", timer: "ack" });
    // An #ack counts this comm's messages: it means nothing on the successor's comm.
    const queued = queueItems(outbox).filter((entry) => !entry.isAck);
    if (queued.length > 0 && successor !== undefined) {
      debug(t, `${reason}; handing ${queued.length} queued value(s) to the new channel`);
      emit(t, { type: "handOver", successor: successor, entries: queued, reason: reason });
    } else if (queued.length > 0) {
      warnLost(t, queued.length, reason);
    }
    for (const token of pings) {
      emit(t, { type: "cancelTimer", timer: "ping", token: token });
      emit(t, { type: "settlePing", token: token, answered: false });
    }
    if (!acked && successor !== undefined) {
      emit(t, { type: "followReady", successor: successor });
    } else if (!acked) {
      emit(t, { type: "rejectReady", message: `wrapperkernel_comm: ${reason} before the kernel acknowledged` });
    }
    emit(t, { type: "closeSocket" });
    debug(t, `closed: ${reason}`);
  }

  function finishClose(t) {
    if (t.state.commOpenSent) emit(t, { type: "sendCommClose" });
    markClosed(t, "close() was called");
  }

  // ---- the transitions, one per cell of the table below

  function sendQueued(t, event) {
    t.result = queueValue(t, event.address, event.value);
  }

  function sendAfterClose(t, event) {
    if (t.state.successor !== undefined) {
      emit(t, { type: "forwardSend", successor: t.state.successor, address: event.address, value: event.value });
    } else {
      t.result = queueValue(t, event.address, event.value); // a bad value still throws; then dropped
    }
  }

  function pingUnanswerable(t, event) {
    emit(t, { type: "settlePing", token: event.token, answered: false });
  }

  function pingStarted(t, event) {
    emit(t, { type: "startTimer", timer: "ping", token: event.token, ms: t.state.config.heartbeat_timeout_ms });
    change(t, { pings: t.state.pings.concat([event.token]) });
    queueValue(t, PING_ADDRESS, event.token);
  }

  function closeNow(t) {
    change(t, { flushScheduled: false });
    finishClose(t);
  }

  // What was sent before close() still leaves, before the comm_close.
  function closeAfterSending(t) {
    change(t, { flushScheduled: false });
    if (t.state.outbox.size === 0) {
      finishClose(t);
      return;
    }
    change(t, { phase: "closing" });
    sendOutbox(t);
  }

  function successorNamed(t, event) {
    if (event.isSelf || t.state.successor !== undefined) return;
    change(t, { successor: event.successor });
  }

  // Takes the queued entries of the channel this one replaced, after what is queued here
  // (nothing, normally: a successor is handed over to as soon as it exists).
  function queueAdopted(t, event) {
    if (event.entries.length === 0) return;
    let outbox = t.state.outbox;
    for (const entry of event.entries) outbox = queuePush(outbox, entry);
    change(t, { outbox: outbox });
    scheduleFlush(t);
  }

  function queuePassedOn(t, event) {
    if (event.entries.length === 0) return;
    if (t.state.successor !== undefined) {
      emit(t, { type: "handOver", successor: t.state.successor, entries: event.entries, reason: event.reason });
    } else {
      warnLost(t, event.entries.length, `${event.reason}, then this channel closed too`);
    }
  }

  function socketCreated(t, event) {
    debug(t, `connecting to ${event.url}`);
  }

  function socketFailed(t, event) {
    emit(t, { type: "log", level: "error", args: ["wrapperkernel_comm: cannot open the websocket", event.error] });
    markClosed(t, "the websocket could not be opened");
  }

  function socketOpened(t) {
    emit(t, { type: "sendCommOpen" });
  }

  function commOpenSent(t, event) {
    change(t, { commOpenSent: event.ok });
    debug(t, `websocket open, comm_open sent for comm ${t.state.commId}`);
  }

  function socketErrored(t, event) {
    debug(t, "websocket error", event.detail);
  }

  function socketClosed(t, event) {
    markClosed(t, `the websocket closed${event.code === undefined ? "" : ` (code ${event.code})`}`);
  }

  function kernelClosedComm(t) {
    markClosed(t, "the kernel closed the comm");
  }

  // Debug logging, except for a problem the page's user must hear of (event.level "error").
  function inputIgnored(t, event) {
    if (event.level === "error") {
      emit(t, { type: "log", level: "error", args: ["wrapperkernel_comm: " + event.problem] });
    } else if (event.error === undefined) debug(t, `ignored ${event.problem}`);
    else debug(t, `ignored ${event.problem}`, event.error);
  }

  function openAcked(t) {
    if (t.state.phase !== "connecting") {
      debug(t, "ignored a repeated #comm_open_ack");
      return;
    }
    change(t, { phase: "open" });
    debug(t, "acknowledged by the kernel");
    emit(t, { type: "resolveReady" });
    scheduleFlush(t);
  }

  function pongReceived(t, value) {
    const index = t.state.pings.indexOf(value);
    if (index < 0) return; // a pong for the kernel's own bookkeeping, or late
    change(t, { pings: t.state.pings.filter((_, i) => i !== index) });
    emit(t, { type: "cancelTimer", timer: "ping", token: value });
    emit(t, { type: "settlePing", token: value, answered: true });
  }

  function itemReceived(t, event) {
    const item = event.item;
    if (item.read_request === true) {
      emit(t, { type: "answerReadRequest", address: item.address });
      return;
    }
    if (hasOwn(item, "read_error")) {
      debug(t, `read_error for ${JSON.stringify(item.address)}: ${item.read_error}`);
      return;
    }
    switch (item.address) {
      case OPEN_ACK_ADDRESS:
        openAcked(t);
        return;
      case PING_ADDRESS:
        // Answer at once with the same value, so the kernel knows this page is alive.
        queueValue(t, PONG_ADDRESS, item.value === undefined ? null : item.value);
        return;
      case PONG_ADDRESS:
        pongReceived(t, item.value);
        return;
      default:
        if (item.address.startsWith(PRIVATE_PREFIX)) {
          debug(t, `ignored unknown private address ${JSON.stringify(item.address)}`);
          return;
        }
        emit(t, { type: "deliver", address: item.address, value: item.value });
    }
  }

  // A numbered message's items were handled: acknowledge at once after ack_every_msgs
  // of them, else ack_delay_ms after the first unacknowledged one.
  function messageHandled(t, event) {
    const lastSeq = Math.max(t.state.lastSeq, event.seq);
    const { lastAckedSeq, ackTimerRunning, config } = t.state;
    change(t, { lastSeq: lastSeq });
    if (lastSeq - lastAckedSeq >= config.ack_every_msgs) {
      queueAck(t);
    } else if (lastSeq > lastAckedSeq && !ackTimerRunning) {
      change(t, { ackTimerRunning: true });
      emit(t, { type: "startTimer", timer: "ack", ms: config.ack_delay_ms });
    }
  }

  // A chunk the socket refused (closing, not open, send threw) stays queued with every
  // chunk after it, in order, for a later flush, the successor, or the count in the
  // warning of markClosed.
  function commMsgsSent(t, event) {
    if (event.sent < event.chunks.length) {
      const unsent = event.chunks.slice(event.sent).flatMap((chunk) => chunk.entries);
      change(t, { outbox: queueFrom(unsent.concat(queueItems(t.state.outbox))) });
      debug(t, `sent ${event.sent} comm_msg(s); the websocket refused the rest, ${unsent.length} value(s) stay queued`);
    } else {
      debug(t, `sent ${event.chunks.length} comm_msg(s)`);
    }
    if (t.state.phase === "closing") finishClose(t);
  }

  // event.json is the answer's item; event.paths and event.buffers its binary values.
  function readAnswered(t, event) {
    queueEntry(t, event.address, outboxEntry(event.address, event.json, event.paths, event.buffers));
  }

  // Everything queued in one tick leaves together: fewer messages under the server's
  // rate limit, and order kept.
  function flushCameDue(t) {
    change(t, { flushScheduled: false });
    if (t.state.outbox.size > 0) sendOutbox(t);
  }

  function timerFired(t, event) {
    if (event.timer === "ack") {
      change(t, { ackTimerRunning: false });
      queueAck(t);
    } else if (event.timer === "ping") {
      const index = t.state.pings.indexOf(event.token);
      if (index < 0) return; // answered already
      change(t, { pings: t.state.pings.filter((_, i) => i !== index) });
      emit(t, { type: "settlePing", token: event.token, answered: false });
    } else {
      throw new ChannelEventError(`wrapperkernel_comm: no timer is called ${JSON.stringify(event.timer)}`);
    }
  }

  // What every event does in every phase: a transition, IGNORED or REJECTED.
  const CHANNEL_TABLE = Object.freeze({
    connecting: Object.freeze({
      sendCalled: sendQueued,
      pingCalled: pingUnanswerable,
      closeCalled: closeNow,
      replaced: successorNamed,
      queueHandedOver: queueAdopted,
      socketCreated: socketCreated,
      socketFailed: socketFailed,
      socketOpened: socketOpened,
      socketErrored: socketErrored,
      socketClosed: socketClosed,
      inputIgnored: inputIgnored,
      kernelClosedComm: kernelClosedComm,
      itemReceived: itemReceived,
      messageHandled: messageHandled,
      commOpenSent: commOpenSent,
      commMsgsSent: REJECTED, // nothing is sent before the ack
      readAnswered: readAnswered,
      flushCameDue: IGNORED, // never scheduled before the ack
      timerFired: timerFired,
    }),
    open: Object.freeze({
      sendCalled: sendQueued,
      pingCalled: pingStarted,
      closeCalled: closeAfterSending,
      replaced: successorNamed,
      queueHandedOver: queueAdopted,
      socketCreated: REJECTED, // the socket is created before anything else happens
      socketFailed: REJECTED,
      socketOpened: IGNORED, // a websocket opens once, and before the ack
      socketErrored: socketErrored,
      socketClosed: socketClosed,
      inputIgnored: inputIgnored,
      kernelClosedComm: kernelClosedComm,
      itemReceived: itemReceived,
      messageHandled: messageHandled,
      commOpenSent: REJECTED, // the outcome of sendCommOpen, which only connecting asks for
      commMsgsSent: commMsgsSent,
      readAnswered: readAnswered,
      flushCameDue: flushCameDue,
      timerFired: timerFired,
    }),
    // close() is sending the last values: the socket send is synchronous and runs no page
    // code, so only its outcome can arrive.
    closing: Object.freeze(
      Object.fromEntries(CHANNEL_EVENTS.map((type) => [type, type === "commMsgsSent" ? commMsgsSent : REJECTED])),
    ),
    closed: Object.freeze({
      sendCalled: sendAfterClose,
      pingCalled: pingUnanswerable,
      closeCalled: IGNORED, // closing twice is harmless
      replaced: successorNamed,
      queueHandedOver: queuePassedOn,
      socketCreated: REJECTED,
      socketFailed: REJECTED,
      socketOpened: IGNORED, // closed before its socket opened
      socketErrored: socketErrored,
      socketClosed: IGNORED,
      inputIgnored: IGNORED, // nothing is read after close
      kernelClosedComm: IGNORED,
      itemReceived: IGNORED,
      messageHandled: IGNORED, // no #ack after close
      commOpenSent: REJECTED,
      commMsgsSent: REJECTED,
      readAnswered: REJECTED, // asked for by itemReceived, which a closed channel ignores
      flushCameDue: IGNORED, // scheduled before the close
      timerFired: IGNORED, // every timer was cancelled at the close
    }),
  });

  function channelStep(state, event) {
    const row = hasOwn(CHANNEL_TABLE, state.phase) ? CHANNEL_TABLE[state.phase] : undefined;
    const type = isObject(event) ? event.type : undefined;
    const cell = row !== undefined && typeof type === "string" && hasOwn(row, type) ? row[type] : undefined;
    if (cell === undefined || cell === REJECTED) {
      throw new ChannelEventError(
        `wrapperkernel_comm: the event ${JSON.stringify(type)} cannot happen while ${JSON.stringify(state.phase)}`,
      );
    }
    const t = { given: state, state: state, effects: [], result: undefined };
    if (cell !== IGNORED) cell(t, event);
    return { state: t.state, effects: t.effects, result: t.result };
  }

  // The events one websocket frame means for the comm `commId`, in the order channelStep
  // takes them: the problems of a malformed message, its items, then (for a numbered
  // message) that it was handled, even when some of its items made no sense. `protocol`
  // is the websocket's subprotocol: V1_PROTOCOL, or "" / undefined for the legacy one,
  // whose frames are JSON text, or binary (decodeLegacyBinaryFrame) for a message with
  // buffers.
  function eventsOfFrame(data, commId, protocol) {
    let msg;
    if (protocol === V1_PROTOCOL) {
      if (!isArrayBuffer(data)) return [{ type: "inputIgnored", problem: "a websocket frame of the v1 protocol that is not binary" }];
      try {
        msg = decodeV1Frame(data).msg;
      } catch (err) {
        return [{ type: "inputIgnored", problem: "a v1 websocket frame that cannot be decoded", error: err }];
      }
    } else if (isArrayBuffer(data)) {
      try {
        msg = decodeLegacyBinaryFrame(data).msg;
      } catch (err) {
        return [{ type: "inputIgnored", problem: "a binary websocket frame that cannot be decoded", error: err }];
      }
    } else if (typeof data !== "string") {
      return [{ type: "inputIgnored", problem: "a non-text websocket frame" }];
    } else {
      try {
        msg = JSON.parse(data);
      } catch (err) {
        if (looksLikeBinaryAsText(data)) return [GATEWAY_TEXT_FRAME];
        return [{ type: "inputIgnored", problem: "a websocket frame that is not JSON", error: err }];
      }
    }
    const meaning = classifyMessage(msg, commId);
    if (meaning.kind === "close") return [{ type: "kernelClosedComm" }];
    if (meaning.kind === "ignore") {
      return meaning.problem === undefined ? [] : [{ type: "inputIgnored", problem: meaning.problem }];
    }
    // A text frame's "buffers" is [] by the protocol: its own buffers arrive binary.
    return eventsOfData(meaning.data, meaning.seq, Array.isArray(msg.buffers) ? msg.buffers : []);
  }

  // A kernel message with buffers that a Jupyter Server in gateway mode passed on as text:
  // it decodes the gateway's binary frames as UTF-8, and its client frames too, so binary
  // values cannot cross this websocket in either direction. Logged as an error, not debug.
  const GATEWAY_TEXT_FRAME = Object.freeze({
    type: "inputIgnored",
    level: "error",
    problem: "a binary message from the kernel that arrived as text. Jupyter Server decodes binary " +
      "websocket frames as text when it runs in gateway mode (a kernel gateway), so values with bytes " +
      "(ArrayBuffer, typed arrays, DataView; bytes in Python) cannot cross this websocket in either " +
      "direction; the message was dropped",
  });

  // The events of a custom message on the kernel's widget model (the widget transport):
  // {page, data, seq} or {page, close: true} for the page `commId`; the others' are not ours.
  // `buffers` are the message's (DataViews from the widget manager), for data.buffer_paths.
  function eventsOfWidgetMessage(content, commId, buffers) {
    if (!isObject(content) || content.page !== commId) return [];
    if (content.close === true) return [{ type: "kernelClosedComm" }];
    if (!hasOwn(content, "data")) return [{ type: "inputIgnored", problem: "a widget message without data" }];
    const seq = Number.isSafeInteger(content.seq) && content.seq >= 1 ? content.seq : undefined;
    return eventsOfData(content.data, seq, buffers);
  }

  function eventsOfData(data, seq, buffers) {
    const placed = placeBuffers(data, buffers);
    const events = placed.problem === undefined ? [] : [{ type: "inputIgnored", problem: placed.problem }];
    if (placed.dropped !== true) {
      const { items, problems } = itemsOf(placed.data);
      for (const problem of problems) events.push({ type: "inputIgnored", problem: problem });
      for (const item of items) events.push({ type: "itemReceived", item: item });
    }
    if (seq !== undefined) events.push({ type: "messageHandled", seq: seq });
    return events;
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
        valueEntry(address, newValue); // throws for a value with no JSON form, before any change
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

  function subscribe(registry, address, callback) {
    checkAddress(address);
    checkCallback(callback);
    const id = registry.nextId++;
    if (!registry.byAddress.has(address)) registry.byAddress.set(address, new Map());
    registry.byAddress.get(address).set(id, callback);
    registry.addressOfId.set(id, address);
    return id;
  }

  function unsubscribe(registry, id) {
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
  function newSyncedVariable(registry, address, initial, console) {
    checkAddress(address);
    const existing = registry.variables.get(address);
    if (existing !== undefined) return existing.api;
    if (initial !== undefined) valueEntry(address, initial);
    const variable = createSyncedVariable(registry, address, initial, console);
    registry.variables.set(address, variable);
    return variable.api;
  }

  // Hands a value from the kernel to the synced variable of its address, then to its
  // subscribers.
  function deliver(registry, address, value, console) {
    const variable = registry.variables.get(address);
    if (variable !== undefined) variable.receive(value);
    const callbacks = registry.byAddress.get(address);
    if (callbacks !== undefined) callEach(callbacks.values(), address, value, console);
  }

  // The item that answers the kernel's read_request for `address`, {json, paths?,
  // buffers?}: the synced variable's value, or a read_error saying why there is none.
  function readAnswer(registry, address) {
    const variable = registry.variables.get(address);
    let problem = null;
    if (variable === undefined) {
      problem =
        `the page has no synced variable for ${JSON.stringify(address)}: create one with ` +
        "wrapperkernel_comm.newSyncedVariable(address, initial)";
    } else if (variable.api.get() === undefined) {
      problem = `the synced variable for ${JSON.stringify(address)} has no value yet`;
    }
    if (problem === null) return valueEntry(address, variable.api.get());
    return { json: JSON.stringify({ address: address, read_error: problem }) };
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

  function timerKey(timer, token) {
    return timer === "ping" ? "ping " + token : timer;
  }

  // ------------------------------------------------------------------ connections

  // A connection carries one channel's comm, on its own websocket to Jupyter Server
  // ("websocket"), or as custom messages of the kernel's widget model on the page's own
  // kernel connection ("widget"; kernel/widget_transport.py). Both have one shape:
  //   {transport, url, protocol, isOpen(), sendOpen(), sendData(dataJson, buffers), sendClose(),
  //    close()}
  // and report to `on`: opened(), events(list of channel events), errored(detail),
  // closed(code). The send functions return false when nothing could be sent.

  // `offerV1` false: a second try without a subprotocol. Jupyter Server in gateway mode
  // selects none, and Chromium then refuses the handshake of a socket that offered one.
  function websocketConnection(d, config, ids, on, offerV1) {
    const header = (msgType) => makeHeader(msgType, ids.sessionId, newUuid(d.crypto), d.now());
    const url = channelsUrl(readPageConfig(d.document), d.location, config.kernel_id, ids.sessionId);
    // Offered, not required: a server without it (or configured against it) picks none.
    const socket = offerV1 === false ? new d.WebSocket(url) : new d.WebSocket(url, [V1_PROTOCOL]);
    let opened = false;
    socket.binaryType = "arraybuffer";
    // Known once the socket is open; frames arrive only after that.
    const protocol = () => (socket.protocol === V1_PROTOCOL ? V1_PROTOCOL : "");
    function sendFrame(frame) {
      if (socket.readyState !== WS_OPEN) return false;
      try {
        socket.send(frame);
        return true;
      } catch (err) {
        d.console.error("wrapperkernel_comm: websocket send failed", err);
        return false;
      }
    }
    // A message built by makeMessage: JSON text on the legacy protocol, else a v1 frame.
    function sendMessage(msg) {
      if (protocol() === V1_PROTOCOL) return sendFrame(encodeV1Frame(msg.channel, messagePartsJson(msg), []));
      return sendFrame(JSON.stringify(msg));
    }
    function sendData(dataJson, buffers) {
      const list = buffers === undefined ? [] : buffers;
      const h = header("comm_msg");
      if (protocol() === V1_PROTOCOL) return sendFrame(encodeV1Frame("shell", commMsgPartsJson(h, ids.commId, dataJson), list));
      if (list.length === 0) return sendFrame(encodeCommMsgFrame(h, ids.commId, dataJson));
      return sendFrame(encodeLegacyBinaryFrame(legacyJsonOfParts(commMsgPartsJson(h, ids.commId, dataJson), "shell"), list));
    }
    socket.onopen = () => {
      opened = true;
      on.opened();
    };
    socket.onmessage = (event) =>
      on.events(eventsOfFrame(event === null || event === undefined ? undefined : event.data, ids.commId, protocol()));
    socket.onerror = (event) => on.errored(event);
    socket.onclose = (event) => on.closed(event === null || event === undefined ? undefined : event.code);
    return {
      transport: "websocket",
      url: url,
      // Refused at the handshake after offering v1: worth one try without it.
      refusedOffer: () => offerV1 !== false && !opened,
      get protocol() {
        return protocol();
      },
      isOpen: () => socket.readyState === WS_OPEN,
      sendOpen: () => sendMessage(makeCommOpen(header("comm_open"), ids.commId, config.kernel_id)),
      sendData: sendData,
      sendClose: () => sendMessage(makeCommClose(header("comm_close"), ids.commId)),
      close() {
        if (socket.readyState > WS_OPEN) return;
        try {
          socket.close();
        } catch (err) {
          if (config.debug === true) d.console.debug("wrapperkernel_comm: websocket close failed", err);
        }
      },
    };
  }

  // The payload JSON goes as a string ("json"): the kernel parses it once, and the page
  // does not parse what it has just serialized. Its buffers go as the custom message's
  // buffers (exact-size ArrayBuffers: bytesOf made them).
  function widgetConnection(d, config, ids, on, model) {
    let open = true;
    const listener = (content, buffers) => {
      if (open) on.events(eventsOfWidgetMessage(content, ids.commId, buffers));
    };
    model.on("msg:custom", listener);
    function post(content, buffers) {
      if (!open) return false;
      try {
        if (buffers === undefined || buffers.length === 0) model.send(content);
        else model.send(content, undefined, buffers.map((bytes) => bytes.buffer));
        return true;
      } catch (err) {
        d.console.error("wrapperkernel_comm: sending on the widget model failed", err);
        return false;
      }
    }
    d.queueMicrotask(() => {
      if (open) on.opened();
    });
    return {
      transport: "widget",
      url: undefined,
      protocol: undefined,
      isOpen: () => open,
      sendOpen: () => post({ page: ids.commId, open: { kernel_id: config.kernel_id } }),
      sendData: (dataJson, buffers) => post({ page: ids.commId, json: dataJson }, buffers),
      sendClose: () => post({ page: ids.commId, close: true }),
      close() {
        if (!open) return;
        open = false;
        model.off("msg:custom", listener);
        d.queueMicrotask(() => on.closed(undefined));
      },
    };
  }

  // The widget models this page has, by kernel id (set by attach()).
  function widgetModelOf(d, kernelId) {
    const models = d.global.wrapperkernel_comm_models;
    return isObject(models) && hasOwn(models, kernelId) ? models[kernelId] : undefined;
  }

  // Whether this page can open a websocket to a Jupyter Server: JupyterLab, Notebook 7 and
  // Voila embed their config (baseUrl, wsUrl); VS Code and other frontends do not.
  function pageHasServer(d) {
    const pageConfig = readPageConfig(d.document);
    return typeof d.WebSocket === "function" &&
      (nonEmptyString(pageConfig.baseUrl) || nonEmptyString(pageConfig.wsUrl));
  }

  // "websocket" or "widget": what config.transport asks for, and for "auto" the
  // websocket where the page has a server, else the widget model when there is one.
  function chooseTransport(d, config) {
    const model = widgetModelOf(d, config.kernel_id);
    if (config.transport === "widget") return model !== undefined ? "widget" : "websocket";
    if (config.transport === "websocket") return "websocket";
    return pageHasServer(d) || model === undefined ? "websocket" : "widget";
  }

  // The shell of one channel: it owns the socket, the timers, the `ready` promise and the
  // page's API, turns what happens to them into events for channelStep, and performs the
  // effects it returns. It decides nothing: every "if" about the channel's life is in
  // channelStep. Effects are performed in order, right after the state they belong to is
  // kept, so a subscriber that calls send() or close() from a delivery sees that state.
  function createChannel(rawConfig, d, registry) {
    const config = channelConfig(rawConfig);
    const sessionId = newUuid(d.crypto);
    const commId = newUuid(d.crypto);
    let state = initialChannelState(config, commId);
    let connection = null;
    let closing = false; // the channel closed its connection itself
    const timers = new Map(); // timerKey -> handle of d.setTimeout
    const pingAnswers = new Map(); // ping token -> resolve of the promise ping() returned
    let resolveReady;
    let rejectReady;
    const ready = new Promise((resolve, reject) => {
      resolveReady = resolve;
      rejectReady = reject;
    });
    // A page that never awaits `ready` must not get an "unhandled rejection" on close.
    ready.catch(() => {});

    // Only for failures of the socket itself; what the channel logs comes as log effects.
    const debugIo = (...args) => {
      if (config.debug === true) d.console.debug("wrapperkernel_comm:", ...args);
    };
    const sendData = (chunk) => connection !== null && connection.sendData(chunk.dataJson, chunk.buffers);

    function dispatch(event) {
      const step = channelStep(state, event);
      state = step.state;
      let result = step.result;
      for (const effect of step.effects) {
        const returned = perform(effect);
        if (effect.type === "forwardSend") result = returned; // the successor's answer is the caller's
      }
      return result;
    }

    function perform(effect) {
      switch (effect.type) {
        case "sendCommOpen":
          dispatch({ type: "commOpenSent", ok: connection !== null && connection.sendOpen() });
          return undefined;
        case "sendCommMsgs": {
          // In order; a frame after a refused one would overtake it, so the rest wait.
          let sent = 0;
          while (sent < effect.chunks.length && sendData(effect.chunks[sent])) {
            sent++;
          }
          dispatch({ type: "commMsgsSent", chunks: effect.chunks, sent: sent });
          return undefined;
        }
        case "sendCommClose":
          if (connection !== null) connection.sendClose();
          return undefined;
        case "closeSocket":
          closing = true;
          if (connection !== null) connection.close();
          return undefined;
        case "scheduleFlush":
          d.queueMicrotask(() => dispatch({ type: "flushCameDue" }));
          return undefined;
        case "startTimer": {
          const key = timerKey(effect.timer, effect.token);
          const handle = d.setTimeout(() => {
            if (timers.get(key) === handle) timers.delete(key);
            dispatch({ type: "timerFired", timer: effect.timer, token: effect.token });
          }, effect.ms);
          timers.set(key, handle);
          return undefined;
        }
        case "cancelTimer": {
          const key = timerKey(effect.timer, effect.token);
          const handle = timers.get(key);
          if (handle !== undefined) {
            timers.delete(key);
            d.clearTimeout(handle);
          }
          return undefined;
        }
        case "resolveReady":
          resolveReady(channel);
          return undefined;
        case "rejectReady":
          rejectReady(new Error(effect.message));
          return undefined;
        case "followReady":
          effect.successor.ready.then(resolveReady, rejectReady);
          return undefined;
        case "settlePing": {
          const resolve = pingAnswers.get(effect.token);
          if (resolve !== undefined) {
            pingAnswers.delete(effect.token);
            resolve(effect.answered);
          }
          return undefined;
        }
        case "handOver":
          effect.successor._adopt(effect.entries, effect.reason);
          return undefined;
        case "forwardSend":
          return effect.successor.send(effect.address, effect.value);
        case "deliver":
          deliver(registry, effect.address, effect.value, d.console);
          return undefined;
        case "answerReadRequest": {
          const answer = readAnswer(registry, effect.address);
          dispatch({ type: "readAnswered", address: effect.address, json: answer.json, paths: answer.paths, buffers: answer.buffers });
          return undefined;
        }
        case "log":
          d.console[effect.level](...effect.args);
          return undefined;
        default:
          throw new ChannelEventError(`wrapperkernel_comm: no effect is called ${JSON.stringify(effect.type)}`);
      }
    }

    // ---- public API

    function send(address, value) {
      checkAddress(address);
      return dispatch({ type: "sendCalled", address: address, value: value });
    }

    // Called by install() before it closes this channel in favour of `next`.
    function handOver(next) {
      dispatch({ type: "replaced", successor: next, isSelf: next === channel });
    }

    function adopt(entries, reason) {
      dispatch({ type: "queueHandedOver", entries: entries, reason: reason });
    }

    // Resolves true when the kernel answers within heartbeat_timeout_ms, else false.
    function ping() {
      const token = newUuid(d.crypto);
      return new Promise((resolve) => {
        pingAnswers.set(token, resolve);
        dispatch({ type: "pingCalled", token: token });
      });
    }

    function close() {
      dispatch({ type: "closeCalled" });
    }

    // What the connection reports, as channel events. A websocket that fails before the
    // kernel acknowledged it, in a page that has the kernel's widget model, gives way to
    // the widget transport (config.transport "auto"): same comm id, same queue.
    const fallbackPossible = () => config.transport !== "websocket" &&
      widgetModelOf(d, config.kernel_id) !== undefined;
    const fallback = () => !closing && state.phase === "connecting" && config.transport !== "websocket" &&
      connection !== null && connection.transport === "websocket" && widgetModelOf(d, config.kernel_id) !== undefined;
    const on = {
      opened: () => dispatch({ type: "socketOpened" }),
      events: (events) => {
        for (const event of events) dispatch(event);
      },
      errored: (detail) => dispatch({ type: "socketErrored", detail: detail }),
      closed: (code) => {
        if (!closing && state.phase === "connecting" && connection !== null &&
            connection.transport === "websocket" && connection.refusedOffer()) {
          connect("websocket-legacy", `the websocket offering ${V1_PROTOCOL} closed (code ${code}) before it opened`);
        } else if (fallback()) {
          connect("widget", `the websocket closed (code ${code}) before the kernel acknowledged`);
        } else {
          dispatch({ type: "socketClosed", code: code });
        }
      },
    };

    // "websocket-legacy" tries again without a subprotocol, with a session id of its own
    // (the server may still hold one for the refused handshake).
    function connect(transport, why) {
      const legacy = transport === "websocket-legacy";
      const ids = { sessionId: legacy ? newUuid(d.crypto) : sessionId, commId: commId };
      if (why !== undefined) debugIo(`${why}; ${legacy ? "trying without a subprotocol" : "using the widget transport"}`);
      connection = null;
      connection = transport === "widget"
        ? widgetConnection(d, config, ids, on, widgetModelOf(d, config.kernel_id))
        : websocketConnection(d, config, ids, on, !legacy);
    }

    const channel = {
      get state() {
        return state.phase;
      },
      ready: ready,
      config: config,
      kernelId: config.kernel_id,
      commId: commId,
      sessionId: sessionId,
      // The websocket's URL (undefined on the widget transport), and the transport.
      get url() {
        return connection === null ? undefined : connection.url;
      },
      get transport() {
        return connection === null ? undefined : connection.transport;
      },
      // The websocket's subprotocol once open (V1_PROTOCOL or ""); undefined on the widget.
      get protocol() {
        return connection === null ? undefined : connection.protocol;
      },
      send: send,
      subscribe: (address, callback) => subscribe(registry, address, callback),
      unsubscribe: (id) => unsubscribe(registry, id),
      newSyncedVariable: (address, initial) => newSyncedVariable(registry, address, initial, d.console),
      ping: ping,
      close: close,
    };
    Object.defineProperty(channel, "_registry", { value: registry, enumerable: false });
    Object.defineProperty(channel, "_handOver", { value: handOver, enumerable: false });
    Object.defineProperty(channel, "_adopt", { value: adopt, enumerable: false });
    registry.channel = channel;

    const transport = chooseTransport(d, config);
    if (transport === "websocket" && !nonEmptyString(config.kernel_id)) {
      throw new TypeError("wrapperkernel_comm: config.kernel_id is empty, and the websocket URL needs it");
    }
    try {
      connect(transport);
    } catch (err) {
      if (!fallbackPossible()) {
        dispatch({ type: "socketFailed", error: err });
        return Object.freeze(channel);
      }
      connect("widget", "the websocket could not be opened");
    }
    dispatch({ type: "socketCreated", url: channel.url === undefined ? "the widget model" : channel.url });
    return Object.freeze(channel);
  }

  // Whether `channel` is this page's live client for `kernelId` (connecting or open).
  function isLive(channel, kernelId) {
    return channel !== undefined && channel !== null && channel.kernelId === kernelId &&
      (channel.state === "connecting" || channel.state === "open");
  }

  // Creates globalThis.wrapperkernel_comm, closing the previous one first. `deps`
  // replaces globals for tests: {global, WebSocket, document, location, crypto, console,
  // queueMicrotask, setTimeout, clearTimeout, now}.
  // For the same kernel, the new channel adopts the previous one's registry, and the
  // previous one hands over to it: its queued values, its `ready`, and later `send`s.
  // The same installation twice (config.install_id, from the install script and from the
  // widget model) keeps the live channel it made first.
  function install(config, deps) {
    const d = resolveDeps(deps);
    const previous = d.global.wrapperkernel_comm;
    if (isObject(config) && config.install_id !== null && config.install_id !== undefined &&
        isLive(previous, config.kernel_id) && previous.config.install_id === config.install_id) {
      return previous;
    }
    const replaceable =
      previous !== undefined && previous !== null && typeof previous.close === "function";
    const sameKernel =
      replaceable && previous._registry !== undefined && config !== undefined && config !== null &&
      previous.kernelId === config.kernel_id;
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

  // The widget transport's entry point: anywidget's initialize hook of the kernel's model
  // (address/page_script.py, render_widget_module) calls it in every page that creates the
  // model. The model is kept for the kernel's channels; without a live client for this
  // kernel, the page installs one now (a reloaded page, Voila, VS Code), and again when
  // the kernel asks its pages to ({install: config}, after the last page went stale).
  function attach(model, config, deps) {
    const d = resolveDeps(deps);
    if (!isObject(config) || typeof config.kernel_id !== "string") {
      d.console.error("wrapperkernel_comm: the widget model carries no install config", config);
      return undefined;
    }
    if (!isObject(d.global.wrapperkernel_comm_models)) d.global.wrapperkernel_comm_models = {};
    d.global.wrapperkernel_comm_models[config.kernel_id] = model;
    const installIfNeeded = (wanted) => {
      if (!isLive(d.global.wrapperkernel_comm, wanted.kernel_id)) install(wanted, deps);
    };
    model.on("msg:custom", (content) => {
      if (isObject(content) && isObject(content.install) && content.install.kernel_id === config.kernel_id) {
        installIfNeeded(content.install);
      }
    });
    installIfNeeded(config);
    return d.global.wrapperkernel_comm;
  }

  globalThis.wrapperkernel_comm_install = install;
  globalThis.wrapperkernel_comm_attach = attach;

  if (typeof module !== "undefined" && module !== null && module.exports) {
    module.exports = {
      install: install,
      attach: attach,
      chooseTransport: chooseTransport,
      eventsOfWidgetMessage: eventsOfWidgetMessage,
      newUuid: newUuid,
      makeHeader: makeHeader,
      makeMessage: makeMessage,
      makeCommOpen: makeCommOpen,
      makeCommMsg: makeCommMsg,
      makeCommClose: makeCommClose,
      encodeCommMsgFrame: encodeCommMsgFrame,
      // binary values and frames (tested in js/test/binary.test.js)
      V1_PROTOCOL: V1_PROTOCOL,
      extractBuffers: extractBuffers,
      payloadOf: payloadOf,
      placeBuffers: placeBuffers,
      encodeLegacyBinaryFrame: encodeLegacyBinaryFrame,
      decodeLegacyBinaryFrame: decodeLegacyBinaryFrame,
      encodeV1Frame: encodeV1Frame,
      decodeV1Frame: decodeV1Frame,
      looksLikeBinaryAsText: looksLikeBinaryAsText,
      FrameError: FrameError,
      dataJsonFor: dataJsonFor,
      utf8ByteLength: utf8ByteLength,
      splitIntoChunks: splitIntoChunks,
      readPageConfig: readPageConfig,
      websocketBase: websocketBase,
      channelsUrl: channelsUrl,
      classifyMessage: classifyMessage,
      itemsOf: itemsOf,
      DEFAULT_CONFIG: DEFAULT_CONFIG,
      // the channel's life (tested in js/test/reducer.test.js)
      channelConfig: channelConfig,
      initialChannelState: initialChannelState,
      channelStep: channelStep,
      channelOutbox: channelOutbox,
      eventsOfFrame: eventsOfFrame,
      CHANNEL_PHASES: CHANNEL_PHASES,
      CHANNEL_EVENTS: CHANNEL_EVENTS,
      CHANNEL_TABLE: CHANNEL_TABLE,
      IGNORED: IGNORED,
      REJECTED: REJECTED,
      ChannelEventError: ChannelEventError,
    };
  }
})();
