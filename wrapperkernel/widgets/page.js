/*
 * wrapperkernel.widgets, page side: binds one rendered widget to wrapperkernel_comm.
 *
 * Every widget output carries this file in its <script>, followed by
 * globalThis.wrapperkernel_widgets.bind(document.currentScript, config). The first copy
 * to run installs globalThis.wrapperkernel_widgets; later copies of the same or an
 * older version leave it alone. config: {id, address, kind, value, ...kind options}.
 *
 * A widget's value lives in the page client's synced variable for its address
 * (wrapperkernel_comm.newSyncedVariable): the control sets it on input (page -> program),
 * the program's values update it (program -> page), and every rendering of the widget
 * on the page subscribes to it. The program re-renders the output now and then, so the
 * saved notebook holds the current value (docs/widgets.md, "Persistence"); the new
 * rendering takes over the synced variable and, when the old control had the keyboard
 * focus, the focus and the text selection.
 *
 * Must never: throw when the page client is missing (a reopened notebook without a
 * kernel shows the saved state, and binds once a client appears); treat 0, false or ""
 * as "no value" (only undefined is); contain the closing tag of a script element.
 */
(function () {
  "use strict";

  const VERSION = 1;
  const POLL_MS = 500; // how often an unbound widget looks for the page client

  const g = globalThis;
  if (g.wrapperkernel_widgets !== undefined && g.wrapperkernel_widgets.version >= VERSION) {
    return;
  }

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

  // Called when a new rendering of `widgetId` binds: if the previous control of this
  // widget had the focus and was removed by the re-render, the new one takes it over.
  function restoreFocus(widgetId, root, control) {
    if (focus.widget !== widgetId || focus.control === null || focus.control.isConnected) return;
    const active = document.activeElement;
    const lost = active === null || active === document.body || !active.isConnected || active.contains(root);
    if (!lost) return;
    control.focus({ preventScroll: true });
    if (focus.start !== null) {
      try {
        control.setSelectionRange(focus.start, focus.end);
      } catch (err) {
        // the control has no text selection
      }
    }
    focus.control = control;
  }

  function sameJson(a, b) {
    return JSON.stringify(a) === JSON.stringify(b);
  }

  function isNumber(x) {
    return typeof x === "number" && Number.isFinite(x);
  }

  function formatNumber(value, decimals) {
    return isNumber(decimals) ? value.toFixed(decimals) : String(value);
  }

  // One view per widget kind: which DOM events carry page input, how to read the value
  // from the control (undefined: nothing to send), how to show a value.
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
        parts.control.checked = value === true;
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
      control: root.querySelector("[data-wk-control]"),
      readout: root.querySelector("[data-wk-readout]"),
    };
    if (parts.control === null) return;
    makeIdUnique(root, parts.control);

    let variable = null; // the synced variable, once the page client is there
    let local = config.value; // the value while no page client is there

    const current = () => (variable !== null ? variable.get() : local);
    const show = (value) => {
      if (value !== undefined) view.show(parts, value, config);
    };
    // True once a newer rendering of this widget is on the page and this one is not:
    // then this rendering stops listening. (A rendering detached by the notebook's
    // windowing, with no newer one, keeps listening: it comes back.)
    const replaced = () =>
      !root.isConnected && document.querySelector(`[data-wk-widget="${config.id}"]`) !== null;

    for (const type of view.events) {
      parts.control.addEventListener(type, () => {
        const value = view.read(parts, config, current());
        if (value === undefined) return;
        rememberFocus(config.id, parts.control);
        if (variable !== null) {
          variable.set(value); // notifies the subscription below, sends to the program
        } else {
          local = value;
          show(value);
        }
      });
    }
    for (const type of ["focus", "keyup", "pointerup", "select"]) {
      parts.control.addEventListener(type, () => rememberFocus(config.id, parts.control));
    }
    parts.control.addEventListener("blur", () => {
      // A blur caused by the re-render removing the control keeps the record.
      setTimeout(() => {
        if (focus.control === parts.control && parts.control.isConnected) focus.widget = null;
      }, 0);
    });

    function connect() {
      const comm = g.wrapperkernel_comm;
      if (comm === undefined || comm === null || typeof comm.newSyncedVariable !== "function") {
        return false;
      }
      // One variable per address: a re-rendering gets the existing one, whose value is
      // at least as new as the value this HTML was rendered with.
      variable = comm.newSyncedVariable(config.address, local);
      const id = variable.subscribe((address, value) => {
        if (replaced()) {
          variable.unsubscribe(id);
          return;
        }
        show(value);
      });
      show(variable.get());
      return true;
    }

    if (!connect()) {
      const timer = setInterval(() => {
        if (replaced() || connect()) clearInterval(timer);
      }, POLL_MS);
    }
    restoreFocus(config.id, root, parts.control);
  }

  g.wrapperkernel_widgets = Object.freeze({ version: VERSION, bind: bind });
})();
