/*
 * wrapperkernel.widgets, page side: binds rendered widgets to wrapperkernel_comm.
 *
 * Every widget output carries this file in its script element, followed by
 * globalThis.wrapperkernel_widgets.bind(document.currentScript, config). The first copy
 * to run installs globalThis.wrapperkernel_widgets; later copies of the same or an
 * older version leave it alone.
 *   config: {id, address, events_address, current_address, kind, value, ...kind options}
 *
 * One entry per widget address holds the page's value and the widget's renderings on
 * this page (a widget displayed twice, or re-rendered by the program for persistence).
 *   page -> program: an input event sets the entry and sends the value to `address`.
 *   program -> page: values on `address` set the entry.
 *   catching up: a rendering that binds sends "bound" to `events_address`; the program
 *     answers with its current value on `current_address`. The answer is applied only if
 *     the user changed nothing in between, so a keystroke is never undone. This covers
 *     values that raced the output (they travel on another websocket than the output) and
 *     a reloaded page, whose outputs show the state saved with the notebook.
 *   holding: "hold" / "release" on `events_address` while the pointer holds the control or
 *     an input method composes; the program then postpones re-rendering (which replaces
 *     the DOM and would end the drag).
 * A re-rendering replaces the DOM; when the old control had the keyboard focus, the new
 * one takes over the focus and the text selection.
 *
 * Views: VIEWS below holds the controls' views; registerView(kind, view) adds one from
 * another packaged script (chart.js, carried only by chart outputs). A view whose
 * values are not states but changes (a chart's new points) has merge(current, incoming,
 * config), which folds a value from the program into the entry's value; setup(parts,
 * config) runs once per rendering.
 *
 * Must never: throw when the page client is missing (a reopened notebook without a
 * kernel shows the saved state, and binds once a client appears); treat 0, false or ""
 * as "no value" (only undefined is); contain the closing tag of a script element.
 */
(function () {
  "use strict";

  const VERSION = 4;
  const POLL_MS = 500; // how often unbound renderings look for the page client
  // After this many polls without a client (a reloaded page: the kernel installs one
  // only through a cell's output), the widgets install it themselves.
  const BOOTSTRAP_AFTER_POLLS = 3;

  const g = globalThis;
  if (g.wrapperkernel_widgets !== undefined && g.wrapperkernel_widgets.version >= VERSION) {
    return;
  }

  function isNumber(x) {
    return typeof x === "number" && Number.isFinite(x);
  }

  function sameJson(a, b) {
    return JSON.stringify(a) === JSON.stringify(b);
  }

  function formatNumber(value, decimals) {
    return isNumber(decimals) ? value.toFixed(decimals) : String(value);
  }

  // ------------------------------------------------------------------ views

  // One view per widget kind: the DOM events that carry page input, how to read the
  // value from the control (undefined: nothing to send), how to show a value.
  const VIEWS = {
    slider: {
      events: ["input"],
      read(parts, config) {
        const value = config.integer ? parseInt(parts.control.value, 10) : parseFloat(parts.control.value);
        return isNumber(value) ? value : undefined;
      },
      show(parts, value, config) {
        if (!isNumber(value)) return;
        if (Number(parts.control.value) !== value) parts.control.value = String(value);
        if (parts.readout !== null) parts.readout.textContent = formatNumber(value, config.decimals);
      },
    },
    checkbox: {
      events: ["change"],
      read(parts) {
        return parts.control.checked;
      },
      show(parts, value) {
        if (typeof value === "boolean") parts.control.checked = value;
      },
    },
    text: {
      events: ["input"],
      read(parts) {
        return parts.control.value;
      },
      show(parts, value) {
        // Leave an equal value alone: assigning would move the caret to the end.
        if (typeof value === "string" && parts.control.value !== value) parts.control.value = value;
      },
    },
    select: {
      events: ["change"],
      read(parts, config) {
        const index = parts.control.selectedIndex;
        return index >= 0 && index < config.options.length ? config.options[index] : undefined;
      },
      show(parts, value, config) {
        const index = config.options.findIndex((option) => sameJson(option, value));
        if (index >= 0 && parts.control.selectedIndex !== index) parts.control.selectedIndex = index;
      },
    },
    button: {
      events: ["click"],
      read(parts, config, current) {
        return (isNumber(current) ? current : 0) + 1;
      },
      show(parts, value) {
        if (!isNumber(value)) return;
        parts.control.dataset.wkClicks = String(value);
        parts.control.title = value === 1 ? "clicked once" : `clicked ${value} times`;
      },
    },
    progress: {
      events: [],
      read() {
        return undefined;
      },
      show(parts, value, config) {
        if (!isNumber(value)) return;
        parts.control.value = value;
        if (parts.readout !== null) {
          const percent = config.max > 0 ? Math.round((100 * value) / config.max) : 0;
          parts.readout.textContent = `${percent} %`;
        }
      },
    },
  };

  // ------------------------------------------------------------------ entries

  const entries = new Map(); // address -> entry
  const unbound = new Set(); // renderings waiting for the page client
  let pollTimer = null;
  let polls = 0;
  let bootstrap = "none"; // -> "loading" -> "done" | "failed"

  // A value from the program, folded into the entry's current one (replaces it, unless
  // the view merges: a chart appends points).
  function merged(config, current, incoming) {
    const view = VIEWS[config.kind];
    return view !== undefined && typeof view.merge === "function"
      ? view.merge(current, incoming, config)
      : incoming;
  }

  function entryFor(config) {
    let entry = entries.get(config.address);
    if (entry !== undefined && VIEWS[config.kind] !== undefined && VIEWS[config.kind].merge !== undefined) {
      // A re-rendering's config carries the program's state at render time: merging it
      // keeps whatever newer the page already has.
      entry.value = merged(config, entry.value, config.value);
    }
    if (entry === undefined) {
      entry = {
        address: config.address,
        value: merged(config, undefined, config.value),
        renderings: new Set(),
        inputs: 0, // how many times the user changed the value on this page
        askedAt: -1, // `inputs` when "bound" was last sent; -1: no answer expected
        unsent: false, // the user changed the value before a page client was there
        kernelId: null, // the kernel whose page client holds this entry's subscriptions
      };
      entries.set(config.address, entry);
    }
    return entry;
  }

  // The entry's value changed: show it in every rendering still on the page. A
  // rendering that was removed while a newer one of the same widget is on the page is
  // dropped; one detached by the notebook's windowing (no newer one) stays: it returns.
  function showAll(entry) {
    for (const rendering of Array.from(entry.renderings)) {
      if (rendering.replaced()) {
        entry.renderings.delete(rendering);
        continue;
      }
      rendering.show(entry.value);
    }
  }

  // The page client, unless there is none or it is closed (the kernel installs a new
  // one when the program next uses the channel; until then, values would be dropped).
  function currentComm() {
    const comm = g.wrapperkernel_comm;
    if (comm === undefined || comm === null || typeof comm.subscribe !== "function") return null;
    return comm.state === "closed" ? null : comm;
  }

  // Subscribes the entry's addresses once per page client registry. The client keeps its
  // subscriptions when the kernel reinstalls it for the same kernel id.
  function connectEntry(entry, comm, config) {
    if (entry.kernelId === comm.kernelId) return;
    entry.kernelId = comm.kernelId;
    comm.subscribe(config.address, (address, value) => {
      entry.value = merged(config, entry.value, value);
      showAll(entry);
    });
    comm.subscribe(config.current_address, (address, value) => {
      if (entry.askedAt !== entry.inputs) return; // the user changed it since: keep theirs
      entry.askedAt = -1;
      entry.value = merged(config, entry.value, value);
      showAll(entry);
    });
  }

  // A value the user set before the client was there goes first: the program's answer to
  // "bound" is then its value after it, not the one the user moved away from.
  function bindToComm(rendering, comm) {
    rendering.bound = true;
    const entry = rendering.entry;
    if (entry.unsent) {
      entry.unsent = false;
      send(rendering, comm, rendering.config.address, entry.value);
    }
    entry.askedAt = entry.inputs;
    send(rendering, comm, rendering.config.events_address, "bound");
  }

  // Sends through the current page client: the kernel may have replaced the one this
  // rendering bound to (stale connection, server restart).
  function send(rendering, comm, address, value) {
    if (!rendering.bound && comm !== null && address === rendering.config.address && unbound.has(rendering)) {
      // The client is there and this rendering has not looked for it yet (it does every
      // POLL_MS): bind now, which sends this value first.
      rendering.entry.unsent = true;
      unbound.delete(rendering);
      bindToComm(rendering, comm);
      return;
    }
    if (!rendering.bound || comm === null) {
      if (address === rendering.config.address) rendering.entry.unsent = true;
      return;
    }
    connectEntry(rendering.entry, comm, rendering.config);
    comm.send(address, value);
  }

  // A reloaded page shows the saved widgets, but has no page client until a cell uses
  // the channel. The widgets' config carries the client's install config (kernel id,
  // timeouts); the kernelspec folder holds the client's file, which Jupyter Server
  // serves. If that kernel still runs, install the client from there, so the widgets
  // follow the program between cells too.
  function bootstrapClient() {
    if (bootstrap !== "none") return;
    let client = null;
    for (const rendering of unbound) {
      const candidate = rendering.config.client;
      if (candidate && typeof candidate.kernel_id === "string") client = candidate;
    }
    if (client === null) return;
    bootstrap = "loading";
    let base = "/";
    let token = "";
    try {
      const page = JSON.parse(document.getElementById("jupyter-config-data").textContent);
      base = page.baseUrl || "/";
      token = page.token || "";
    } catch (err) {
      // no page config (not JupyterLab or Notebook 7): try the server root
    }
    if (!base.endsWith("/")) base += "/";
    const headers = token ? { Authorization: "token " + token } : {};
    fetch(base + "api/kernels/" + encodeURIComponent(client.kernel_id), {
      headers: headers,
      credentials: "same-origin",
    })
      .then((response) => (response.ok ? response.json() : Promise.reject(`the kernel is gone (${response.status})`)))
      .then((kernel) => loadInstaller(base + "kernelspecs/" + encodeURIComponent(kernel.name) + "/wrapperkernel_comm.js"))
      .then(() => {
        if (currentComm() === null) g.wrapperkernel_comm_install(client);
        bootstrap = "done";
        pollForComm();
      })
      .catch((reason) => {
        bootstrap = "failed";
        console.debug("wrapperkernel_widgets: no page client for the saved widgets:", String(reason));
      });
  }

  function loadInstaller(url) {
    if (typeof g.wrapperkernel_comm_install === "function") return Promise.resolve();
    return new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = url;
      script.onload = () =>
        typeof g.wrapperkernel_comm_install === "function" ? resolve() : reject(`${url} installed nothing`);
      script.onerror = () => reject(`cannot load ${url}`);
      document.head.appendChild(script);
    });
  }

  function pollForComm() {
    const comm = currentComm();
    if (comm === null) {
      polls += 1;
      if (polls >= BOOTSTRAP_AFTER_POLLS) bootstrapClient();
    } else {
      for (const rendering of Array.from(unbound)) {
        unbound.delete(rendering);
        if (!rendering.replaced()) bindToComm(rendering, comm);
      }
    }
    if (unbound.size === 0 && pollTimer !== null) {
      clearInterval(pollTimer);
      pollTimer = null;
    }
  }

  // ------------------------------------------------------------------ focus

  // The control that last had the keyboard focus, kept while a re-render replaces it.
  const focus = { widget: null, control: null, start: null, end: null };

  function rememberFocus(widgetId, control) {
    focus.widget = widgetId;
    focus.control = control;
    focus.start = null;
    focus.end = null;
    try {
      if (typeof control.selectionStart === "number") {
        focus.start = control.selectionStart;
        focus.end = control.selectionEnd;
      }
    } catch (err) {
      // inputs without a text selection (range, checkbox) may throw: nothing to keep
    }
  }

  // If the previous control of this widget had the focus and the re-render removed it,
  // the new control takes the focus over, unless the user has moved on.
  function restoreFocus(widgetId, root, control) {
    if (focus.widget !== widgetId || focus.control === null || focus.control.isConnected) return;
    const active = document.activeElement;
    const lost = active === null || active === document.body || !active.isConnected || active.contains(root);
    if (!lost) return;
    const start = focus.start; // focus() below fires "focus", which records anew
    const end = focus.end;
    control.focus({ preventScroll: true });
    if (start !== null) {
      try {
        control.setSelectionRange(start, end);
      } catch (err) {
        // the control has no text selection
      }
    }
    rememberFocus(widgetId, control);
  }

  // ------------------------------------------------------------------ binding

  // Displaying a widget twice, or re-rendering it, may put the same ids on the page
  // twice; <label for> must still name this rendering's control.
  function makeIdUnique(root, control) {
    if (!control.id) return;
    const original = control.id;
    if (document.querySelectorAll(`[id="${original}"]`).length <= 1) return;
    let n = 2;
    while (document.getElementById(`${original}-${n}`) !== null) n++;
    control.id = `${original}-${n}`;
    for (const element of root.querySelectorAll(`[for="${original}"]`)) element.htmlFor = control.id;
  }

  function bind(script, config) {
    const root = script && script.closest ? script.closest("[data-wk-widget]") : null;
    const view = VIEWS[config.kind];
    if (root === null || view === undefined) return;
    const parts = {
      root: root,
      control: root.querySelector("[data-wk-control]"),
      readout: root.querySelector("[data-wk-readout]"),
    };
    if (parts.control === null) return;
    makeIdUnique(root, parts.control);
    if (typeof view.setup === "function") view.setup(parts, config);

    const entry = entryFor(config);
    const rendering = {
      entry: entry,
      config: config,
      bound: false,
      show(value) {
        if (value !== undefined) view.show(parts, value, config);
      },
      replaced() {
        return !root.isConnected && document.querySelector(`[data-wk-widget="${config.id}"]`) !== null;
      },
    };
    entry.renderings.add(rendering);
    // A widget already on this page keeps the page's value: it may hold input the
    // program has not seen yet. The program's answer to "bound" settles the rest.
    rendering.show(entry.value);

    const event = (name) => send(rendering, currentComm(), config.events_address, name);
    for (const type of view.events) {
      parts.control.addEventListener(type, () => {
        const value = view.read(parts, config, entry.value);
        if (value === undefined) return;
        rememberFocus(config.id, parts.control);
        entry.value = value;
        entry.inputs += 1;
        showAll(entry);
        send(rendering, currentComm(), config.address, value);
      });
    }
    parts.control.addEventListener("pointerdown", () => {
      event("hold");
      const release = () => {
        g.removeEventListener("pointerup", release, true);
        g.removeEventListener("pointercancel", release, true);
        event("release");
      };
      g.addEventListener("pointerup", release, true);
      g.addEventListener("pointercancel", release, true);
    });
    parts.control.addEventListener("compositionstart", () => event("hold"));
    parts.control.addEventListener("compositionend", () => event("release"));
    for (const type of ["focus", "keyup", "pointerup", "select"]) {
      parts.control.addEventListener(type, () => rememberFocus(config.id, parts.control));
    }
    parts.control.addEventListener("blur", () => {
      // A blur caused by the re-render removing the control keeps the record.
      setTimeout(() => {
        if (focus.control === parts.control && parts.control.isConnected) focus.widget = null;
      }, 0);
    });

    const comm = currentComm();
    if (comm !== null) {
      bindToComm(rendering, comm);
    } else {
      unbound.add(rendering);
      if (pollTimer === null) pollTimer = setInterval(pollForComm, POLL_MS);
    }
    restoreFocus(config.id, root, parts.control);
  }

  // Adds the view of a widget kind (a newer version of it replaces an older one).
  function registerView(kind, view) {
    const known = VIEWS[kind];
    if (known === undefined || (view.version || 0) > (known.version || 0)) VIEWS[kind] = view;
  }

  g.wrapperkernel_widgets = Object.freeze({ version: VERSION, bind: bind, registerView: registerView });
})();
