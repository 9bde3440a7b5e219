// A frontend that has only its kernel connection and a widget manager, as VS Code runs a
// local kernel: no Jupyter Server, no page config, no second websocket. It runs the ES
// modules of anywidget models exactly as the kernel sent them (their `_esm` state) with
// a model object that has anywidget's interface (get, set, on, off, send), and talks to
// tests/widget_frontend.py over stdin/stdout, one JSON object per line:
//   in:  {op: "model", id, state} | {op: "custom", id, content} | {op: "eval", id, code}
//   out: {op: "send", id, content} | {op: "result", id, value | error} | {op: "report", value}
//        | {op: "console", level, text}
// `eval` runs `code` as the body of an async function with `report(value)` in scope,
// in this page's global scope (globalThis.wrapperkernel_comm is the page API).
import { createInterface } from "node:readline";

const write = (message) => process.stdout.write(JSON.stringify(message) + "\n");

// The page client logs through console; stdout is this protocol's, so console goes here.
for (const level of ["log", "debug", "info", "warn", "error"]) {
  console[level] = (...args) => {
    const text = args.map((arg) => (arg instanceof Error ? arg.stack : typeof arg === "string" ? arg : JSON.stringify(arg))).join(" ");
    write({ op: "console", level: level, text: text });
  };
}

const models = new Map(); // id -> {model, listeners}

function makeModel(id, state) {
  const listeners = new Map(); // event name -> Set of callbacks
  const model = {
    get: (key) => state[key],
    set: (key, value) => {
      state[key] = value;
    },
    save_changes: () => {},
    on(name, callback) {
      if (!listeners.has(name)) listeners.set(name, new Set());
      listeners.get(name).add(callback);
    },
    off(name, callback) {
      if (name === undefined) listeners.clear();
      else if (callback === undefined) listeners.delete(name);
      else if (listeners.has(name)) listeners.get(name).delete(callback);
    },
    send(content) {
      write({ op: "send", id: id, content: content });
    },
  };
  return { model, listeners };
}

async function addModel(id, state) {
  const entry = makeModel(id, state);
  models.set(id, entry);
  const url = "data:text/javascript;base64," + Buffer.from(state._esm, "utf8").toString("base64");
  const module = await import(url);
  const definition = typeof module.default === "function" ? await module.default() : module.default;
  if (definition && typeof definition.initialize === "function") {
    await definition.initialize({ model: entry.model });
  }
}

function custom(id, content) {
  const entry = models.get(id);
  if (entry === undefined || !entry.listeners.has("msg:custom")) return;
  for (const callback of Array.from(entry.listeners.get("msg:custom"))) {
    try {
      callback(content, []);
    } catch (err) {
      console.error("a msg:custom listener threw", err);
    }
  }
}

async function evaluate(id, code) {
  try {
    const body = new Function("report", `return (async () => {\n${code}\n})();`);
    const value = await body((value) => write({ op: "report", value: value }));
    write({ op: "result", id: id, value: value === undefined ? null : value });
  } catch (err) {
    write({ op: "result", id: id, error: String(err && err.stack ? err.stack : err) });
  }
}

const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
  const message = JSON.parse(line);
  if (message.op === "model") {
    addModel(message.id, message.state).catch((err) => console.error("creating the model failed", err));
  } else if (message.op === "custom") {
    custom(message.id, message.content);
  } else if (message.op === "eval") {
    evaluate(message.id, message.code);
  }
});
lines.on("close", () => process.exit(0));
