"""The browser benchmark's in-page code: each measurement is one async function run in the
page with ``page.evaluate``, so no Playwright round trip falls inside a timed interval.

Every clock here is the page's ``performance.now()`` (milliseconds). Every wait has a
timeout and comes back as data (a sample, or why there is none); nothing throws for a
kernel that does not deliver.

- ``LATENCY``: move the slider (an ``input`` event on wrapperkernel's ``<input
  type=range>``, an ArrowRight ``keydown`` on ipywidgets' noUiSlider handle, which is how
  its keyboard support moves it one step), then wait for the ack text ``ack <value>`` to
  appear in the DOM (a MutationObserver on the notebook), and for the next animation
  frame after it.
- ``KERNEL_INFO``: the floor, ``kernel_info`` over the notebook's own kernel connection
  (``jupyterapp`` is exposed by ``--LabApp.expose_app_in_browser``).
- ``INSTALL_RECEIVERS`` / ``THROUGHPUT_RESULT`` / ``ANIMATION_*``: subscribers of the
  address channel (``wrapperkernel_comm.subscribe``) that count values and draw frames.
"""

from __future__ import annotations

LATENCY = """
async ({panelSelector, kind, count, firstTimeoutMs, timeoutMs, readyTimeoutMs, gapMs}) => {
  const panel = document.querySelector(panelSelector);
  if (panel === null) return {error: "no notebook panel"};
  const ackText = () => {
    const nodes = panel.querySelectorAll(".wk-bench-ack");
    return nodes.length === 0 ? null : nodes[nodes.length - 1].textContent.trim();
  };
  // Resolves with performance.now() when the ack shows `want`, or null after timeoutMs.
  const waitAck = (want, ms) => new Promise((resolve) => {
    let timer = null;
    const observer = new MutationObserver(() => {
      if (ackText() === want) done(performance.now());
    });
    const done = (t) => {
      observer.disconnect();
      clearTimeout(timer);
      resolve(t);
    };
    observer.observe(panel, {subtree: true, childList: true, characterData: true});
    timer = setTimeout(() => done(ackText() === want ? performance.now() : null), ms);
  });
  const nextFrame = () => new Promise((resolve) => requestAnimationFrame(() => resolve(performance.now())));
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // The control is looked up at every event: a widget's re-render replaces its DOM.
  const moves = {
    range(i) {
      const input = panel.querySelector(".wk-slider input[type=range]");
      if (input === null) return null;
      input.value = String(i);
      input.dispatchEvent(new Event("input", {bubbles: true}));
      return Number(input.value);
    },
    nouislider() {
      const handle = panel.querySelector(".widget-slider .noUi-handle");
      if (handle === null) return null;
      handle.dispatchEvent(new KeyboardEvent("keydown", {key: "ArrowRight", bubbles: true, cancelable: true}));
      return Number(handle.getAttribute("aria-valuenow"));
    },
  };
  const move = moves[kind];
  const readyStart = performance.now();
  if (ackText() !== "ack ready" && await waitAck("ack ready", readyTimeoutMs) === null) {
    return {error: `the loop did not start within ${readyTimeoutMs} ms (ack shows ${JSON.stringify(ackText())})`};
  }
  const result = {readyMs: performance.now() - readyStart, samples: [], missed: [], sent: 0,
                  stopped: null};
  let consecutiveMisses = 0;
  for (let i = 1; i <= count; i++) {
    const t0 = performance.now();
    const value = move(i);
    if (value === null || !Number.isFinite(value)) {
      result.stopped = `event ${i}: the slider is not in the page`;
      break;
    }
    result.sent += 1;
    // The observer is attached right after the dispatch, in the same task: no DOM
    // mutation caused by the kernel can come in between.
    const t1 = await waitAck(`ack ${value}`, i === 1 ? firstTimeoutMs : timeoutMs);
    if (t1 === null) {
      result.missed.push(value);
      consecutiveMisses += 1;
      if (i === 1) {
        result.stopped = `not seen while the cell ran: no ack for the first event within ${firstTimeoutMs} ms`;
        break;
      }
      if (consecutiveMisses >= 3) {
        result.stopped = `3 events in a row without an ack within ${timeoutMs} ms`;
        break;
      }
      continue;
    }
    consecutiveMisses = 0;
    const t2 = await nextFrame();
    result.samples.push({value, ackMs: t1 - t0, frameMs: t2 - t0,
                         epochMs: performance.timeOrigin + t0});
    await sleep(gapMs[0] + Math.random() * (gapMs[1] - gapMs[0]));
  }
  result.ackAtEnd = ackText();
  return result;
}
"""

KERNEL_INFO = """
async ({count, timeoutMs}) => {
  const app = globalThis.jupyterapp;
  if (app === undefined) return {error: "window.jupyterapp is not exposed"};
  const kernel = app.shell.currentWidget?.sessionContext?.session?.kernel;
  if (!kernel) return {error: "the current widget has no kernel"};
  // requestKernelInfo() resolves when the reply AND the idle status parented to it have
  // arrived (the future is done); the reply's own arrival is taken from anyMessage.
  let replyAt = null;
  const onMessage = (sender, {msg, direction}) => {
    if (direction === "recv" && msg.header.msg_type === "kernel_info_reply") replyAt = performance.now();
  };
  kernel.anyMessage.connect(onMessage);
  const samples = [];
  try {
    for (let i = 0; i < count; i++) {
      replyAt = null;
      const t0 = performance.now();
      const reply = await Promise.race([
        kernel.requestKernelInfo(),
        new Promise((resolve) => setTimeout(() => resolve(null), timeoutMs)),
      ]);
      if (reply === null) return {samples, error: `kernel_info ${i} not answered in ${timeoutMs} ms`};
      const done = performance.now();
      samples.push({doneMs: done - t0, replyMs: replyAt === null ? null : replyAt - t0});
      await new Promise((resolve) => setTimeout(resolve, 5 + Math.random() * 20));
    }
  } finally {
    kernel.anyMessage.disconnect(onMessage);
  }
  return {samples};
}
"""

# Subscribers for the program -> page runs, installed once the page client is open; they
# announce themselves on /bench/page-ready, which the setup cell waits for.
INSTALL_RECEIVERS = """
async ({timeoutMs, side}) => {
  const deadline = performance.now() + timeoutMs;
  while (globalThis.wrapperkernel_comm === undefined) {
    if (performance.now() > deadline) return {error: "no wrapperkernel_comm in the page"};
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const comm = globalThis.wrapperkernel_comm;
  await comm.ready;
  const bench = {
    tp: {count: 0, outOfOrder: 0, next: 0, first: null, last: null},
    frames: null,
  };
  globalThis.wkBench = bench;
  comm.subscribe("/bench/tp", (address, value) => {
    const t = performance.now();
    const tp = bench.tp;
    if (tp.first === null) tp.first = t;
    tp.last = t;
    if (value !== tp.next) tp.outOfOrder += 1;
    tp.next = value + 1;
    tp.count += 1;
  });
  // The canvas the animations draw on, fixed over the page so that it is really shown.
  const canvas = document.createElement("canvas");
  canvas.width = side;
  canvas.height = side;
  canvas.style = "position: fixed; right: 0; bottom: 0; z-index: 10000; width: 256px; height: 256px";
  document.body.appendChild(canvas);
  bench.canvas = canvas;
  comm.subscribe("/bench/frame", (address, value) => {
    const frames = bench.frames;
    if (frames === null) return;
    const t = performance.now();
    frames.arrivals.push([value.seq, t]);
    if (value.pixels !== undefined) frames.bytes += value.pixels.byteLength;
    frames.latest = value;
  });
  comm.send("/bench/page-ready", true);
  return {ok: true};
}
"""

THROUGHPUT_RESULT = """
async ({count, timeoutMs}) => {
  const tp = globalThis.wkBench.tp;
  const deadline = performance.now() + timeoutMs;
  while (tp.count < count && performance.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return {count: tp.count, outOfOrder: tp.outOfOrder, first: tp.first, last: tp.last,
          lastValue: tp.next - 1};
}
"""

# Each animation frame draws the newest value, if one arrived since the last frame.
ANIMATION_START = """
({binary}) => {
  const bench = globalThis.wkBench;
  const frames = {arrivals: [], drawn: [], bytes: 0, latest: null, running: true};
  bench.frames = frames;
  const ctx = bench.canvas.getContext("2d");
  let drawnSeq = null;
  const draw = (now) => {
    if (!frames.running) return;
    const value = frames.latest;
    if (value !== null && value.seq !== drawnSeq) {
      if (binary) {
        const view = value.pixels;
        const pixels = new Uint8ClampedArray(view.buffer, view.byteOffset, view.byteLength);
        ctx.putImageData(new ImageData(pixels, bench.canvas.width, bench.canvas.height), 0, 0);
      } else {
        ctx.fillStyle = "#fff";
        ctx.fillRect(0, 0, bench.canvas.width, bench.canvas.height);
        ctx.fillStyle = "#1565c0";
        ctx.fillRect(value.x * bench.canvas.width, 0, 8, bench.canvas.height);
      }
      drawnSeq = value.seq;
      frames.drawn.push([now, value.seq, performance.now()]);
    } else {
      frames.drawn.push([now, null, performance.now()]);
    }
    requestAnimationFrame(draw);
  };
  requestAnimationFrame(draw);
  return true;
}
"""

ANIMATION_STOP = """
async ({frames, timeoutMs}) => {
  const state = globalThis.wkBench.frames;
  const deadline = performance.now() + timeoutMs;
  const last = frames - 1;
  while (!state.arrivals.some(([seq]) => seq === last) && performance.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  // Two more frames, so the last value gets its chance to be drawn.
  for (let i = 0; i < 2; i++) await new Promise((resolve) => requestAnimationFrame(resolve));
  state.running = false;
  globalThis.wkBench.frames = null;
  return {arrivals: state.arrivals, drawn: state.drawn, bytes: state.bytes};
}
"""

# --- running cells from the page (the browser without Playwright) ---------------------------
# JupyterLab's own commands on the current notebook: the code goes into the active cell,
# which runs (``notebook:run-cell-and-insert-below`` resolves once it has finished) and
# leaves a fresh cell active for the next one.

NOTEBOOK_READY = """() => {
  const panel = globalThis.jupyterapp?.shell.currentWidget;
  const kernel = panel?.sessionContext?.session?.kernel;
  return kernel?.connectionStatus === "connected" && kernel?.status === "idle"
    && panel.content?.activeCell !== null && panel.content?.activeCell !== undefined;
}"""

START_CELL = """
({code}) => {
  const panel = globalThis.jupyterapp.shell.currentWidget;
  const cell = panel.content.activeCell;
  cell.model.sharedModel.setSource(code);
  const run = globalThis.jupyterapp.commands.execute("notebook:run-cell-and-insert-below");
  const id = (globalThis.wkRuns ??= []).push({cell, run}) - 1;
  return id;
}
"""

WAIT_CELL = """
async ({id, timeoutMs}) => {
  const {cell, run} = globalThis.wkRuns[id];
  const finished = await Promise.race([
    run.then(() => true),
    new Promise((resolve) => setTimeout(() => resolve(false), timeoutMs)),
  ]);
  const text = cell.model.outputs.toJSON().map((output) => {
    if (output.output_type === "stream") return [].concat(output.text).join("");
    if (output.output_type === "error") return `${output.ename}: ${output.evalue}\\n`;
    return "";
  }).join("");
  return {finished, text};
}
"""
