/*
 * wrapperkernel.widgets.Chart, page side: the "chart" view of the widget binder.
 *
 * Chart outputs carry this file after page.js; it registers the view with
 * globalThis.wrapperkernel_widgets.registerView, and the binder does the rest (the
 * page client, "bound", the entry shared by the renderings of one chart).
 *
 * The entry's value is the page's window of points:
 *   {epoch, series: [{name, index, count, x: [...], y: [...]}]}
 * merge() folds each message of the program into it (the wire format is described in
 * _chart.py): a reset message (the rendering's config, the answer to "bound", a clear)
 * replaces a series when it is at least as new as the page's (count), a delta appends
 * the points the page does not have yet; both keep the last config.window points.
 *
 * Drawing: a value only marks the rendering dirty; one requestAnimationFrame per
 * rendering draws the newest state, so the canvas is drawn at most at the display's
 * frame rate whatever the send rate, and not at all while nothing is new. The colours
 * are JupyterLab's CSS variables, read at every draw, and every chart is drawn again
 * when the theme changes or the canvas is resized. y null is a gap in the line.
 *
 * For tests and tools, the canvas carries data-wk-frames (frames drawn of this chart on
 * this page, over all its renderings) and data-wk-last (the last y drawn of each series,
 * JSON).
 *
 * Must never: throw on a value it does not understand (it is ignored), keep more than
 * config.window points of a series, draw more often than the display refreshes, or loop
 * without a bound on numbers it did not choose (ticks of extreme or tiny ranges).
 */
(function () {
  "use strict";

  const VERSION = 1;
  const g = globalThis;
  const widgets = g.wrapperkernel_widgets;
  if (widgets === undefined || typeof widgets.registerView !== "function") return;

  const SERIES_SLOTS = 16; // as MAX_SERIES in _chart.py: --wk-chart-series-<n> in widgets.css
  const MAX_TICKS = 12;
  const LINE_WIDTH = 1.75;
  const PAD = { top: 10, right: 14, bottom: 22, left: 8 };

  function isNumber(x) {
    return typeof x === "number" && Number.isFinite(x);
  }

  // One message column as a plain array: a JSON list (a snapshot: the saved output, the
  // answer when a rendering binds), or packed little-endian float64 in a DataView (the
  // running loop's messages, binary values of the channel), where NaN is a gap (null).
  function column(values) {
    if (Array.isArray(values)) return values;
    if (typeof DataView !== "undefined" && values instanceof DataView && values.byteLength % 8 === 0) {
      const out = new Array(values.byteLength / 8);
      for (let i = 0; i < out.length; i++) {
        const v = values.getFloat64(i * 8, true);
        out[i] = Number.isNaN(v) ? null : v;
      }
      return out;
    }
    return null;
  }

  function emptyState() {
    return { epoch: -1, series: [] };
  }

  function trim(series, window) {
    const extra = series.x.length - window;
    if (extra > 0) {
      series.x.splice(0, extra);
      series.y.splice(0, extra);
    }
  }

  function merge(current, message, config) {
    const state = current === undefined ? emptyState() : current;
    if (message === null || typeof message !== "object" || !Array.isArray(message.series)) return state;
    const epoch = isNumber(message.epoch) ? message.epoch : 0;
    if (epoch < state.epoch) return state; // from before a clear this page has already seen
    if (epoch > state.epoch) {
      state.epoch = epoch;
      for (const series of state.series) {
        series.x = [];
        series.y = [];
        series.count = 0;
      }
    }
    const window = isNumber(config.window) && config.window > 0 ? config.window : 500;
    for (const item of message.series) {
      if (item === null || typeof item !== "object" || typeof item.name !== "string") continue;
      const xs = column(item.x);
      const ys = column(item.y);
      if (xs === null || ys === null || xs.length !== ys.length || !isNumber(item.count)) continue;
      let series = state.series.find((s) => s.name === item.name);
      if (series === undefined) {
        series = { name: item.name, index: isNumber(item.index) ? item.index : state.series.length, count: 0, x: [], y: [] };
        state.series.push(series);
        state.series.sort((a, b) => a.index - b.index);
      }
      if (message.reset === true) {
        if (item.count < series.count) continue; // the page already has newer points
        series.x = xs.slice();
        series.y = ys.slice();
      } else {
        const start = item.count - xs.length; // this series' count before the message
        const skip = Math.max(0, series.count - start);
        if (skip >= xs.length) continue; // nothing the page does not have
        for (let i = skip; i < xs.length; i++) {
          series.x.push(xs[i]);
          series.y.push(ys[i]);
        }
      }
      series.count = item.count;
      trim(series, window);
    }
    return state;
  }

  // ------------------------------------------------------------------ theme

  function themeOf(root) {
    const style = getComputedStyle(root);
    const get = (name, fallback) => style.getPropertyValue(name).trim() || fallback;
    const colours = [];
    for (let i = 0; i < SERIES_SLOTS; i++) colours.push(get(`--wk-chart-series-${i}`, "#1976d2"));
    return {
      background: get("--jp-layout-color0", "#ffffff"),
      text: get("--jp-ui-font-color1", "rgba(0, 0, 0, 0.87)"),
      muted: get("--jp-ui-font-color2", "rgba(0, 0, 0, 0.54)"),
      grid: get("--jp-border-color2", "#e0e0e0"),
      axis: get("--jp-border-color1", "#bdbdbd"),
      font: `${get("--jp-ui-font-size0", "11px")} ${get("--jp-ui-font-family", "system-ui, sans-serif")}`,
      series: colours,
    };
  }

  // ------------------------------------------------------------------ scales

  // Where v sits between low and high, as a fraction. Halves first: the span of two
  // finite doubles can overflow (1e308 - -1e308), their halves' cannot.
  function fraction(v, low, high) {
    return (v / 2 - low / 2) / (high / 2 - low / 2);
  }

  function extent(values, fixed) {
    if (fixed !== null) return fixed;
    let low = Infinity;
    let high = -Infinity;
    for (const v of values) {
      if (!isNumber(v)) continue;
      if (v < low) low = v;
      if (v > high) high = v;
    }
    if (low === Infinity) return null;
    if (low === high) {
      const pad = Math.abs(low) * 0.1 || 1;
      return [Math.max(-Number.MAX_VALUE, low - pad), Math.min(Number.MAX_VALUE, high + pad)];
    }
    return [low, high];
  }

  function padded(range, share) {
    const pad = (range[1] / 2 - range[0] / 2) * 2 * share;
    if (!isNumber(pad)) return range;
    return [Math.max(-Number.MAX_VALUE, range[0] - pad), Math.min(Number.MAX_VALUE, range[1] + pad)];
  }

  // About `count` round tick values (1, 2, 5 x 10^k) inside [low, high]; at most MAX_TICKS.
  function ticks(low, high, count) {
    const raw = (high / 2 - low / 2) * 2 / count;
    if (!isNumber(raw) || raw <= 0) return { step: NaN, values: [low, high] };
    const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
    const ratio = raw / magnitude;
    const step = (ratio < 1.5 ? 1 : ratio < 3 ? 2 : ratio < 7 ? 5 : 10) * magnitude;
    if (!isNumber(step) || step <= 0) return { step: NaN, values: [low, high] };
    const first = Math.ceil(low / step) * step;
    const values = [];
    for (let k = 0; k < MAX_TICKS; k++) {
      const value = first + k * step;
      if (!isNumber(value) || value > high) break;
      if (values.length > 0 && value === values[values.length - 1]) break; // step below precision
      values.push(value);
    }
    return { step: step, values: values.length > 0 ? values : [low, high] };
  }

  function formatTick(value, step) {
    const size = Math.abs(value);
    if (value === 0) return "0";
    if (size >= 1e6 || size < 1e-3 || !isNumber(step)) return value.toExponential(2);
    const decimals = Math.min(10, Math.max(0, -Math.floor(Math.log10(step))));
    return value.toFixed(decimals);
  }

  function formatLast(value) {
    return isNumber(value) ? String(Number(value.toPrecision(4))) : "–";
  }

  // ------------------------------------------------------------------ drawing

  const live = new Set(); // the parts of every chart rendering drawn on this page
  const framesDrawn = new Map(); // chart id -> frames drawn, over its renderings

  function schedule(parts) {
    if (parts.frame !== null) return;
    parts.frame = requestAnimationFrame(() => {
      parts.frame = null;
      draw(parts);
    });
  }

  function legendKey(parts, series) {
    let key = parts.keys.get(series.name);
    if (key === undefined || !key.isConnected) {
      key = null;
      for (const element of parts.root.querySelectorAll(".wk-chart-key")) {
        if (element.dataset.wkSeries === series.name) key = element;
      }
      if (key === null) {
        const legend = parts.root.querySelector(".wk-chart-legend");
        if (legend === null) return null;
        key = document.createElement("span");
        key.className = `wk-chart-key wk-chart-series-${series.index % SERIES_SLOTS}`;
        key.dataset.wkSeries = series.name;
        const swatch = document.createElement("span");
        swatch.className = "wk-chart-swatch";
        const last = document.createElement("span");
        last.className = "wk-chart-last";
        key.append(swatch, document.createTextNode(series.name + " "), last);
        legend.appendChild(key);
      }
      parts.keys.set(series.name, key);
    }
    return key;
  }

  function draw(parts) {
    const canvas = parts.control;
    const state = parts.state;
    const config = parts.config;
    if (!canvas.isConnected) {
      if (replaced(parts)) forget(parts);
      return; // detached by the notebook's windowing: drawn again when it returns
    }
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (width === 0 || height === 0 || state === undefined) return; // hidden: the resize draws
    const ratio = g.devicePixelRatio || 1;
    const pixelWidth = Math.round(width * ratio);
    const pixelHeight = Math.round(height * ratio);
    if (canvas.width !== pixelWidth) canvas.width = pixelWidth;
    if (canvas.height !== pixelHeight) canvas.height = pixelHeight;
    const ctx = canvas.getContext("2d");
    if (ctx === null) return;
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    const theme = themeOf(parts.root);
    ctx.fillStyle = theme.background;
    ctx.fillRect(0, 0, width, height);
    ctx.font = theme.font;
    ctx.textBaseline = "middle";

    const xs = [];
    const ys = [];
    for (const series of state.series) {
      for (let i = 0; i < series.x.length; i++) {
        if (isNumber(series.x[i]) && isNumber(series.y[i])) {
          xs.push(series.x[i]);
          ys.push(series.y[i]);
        }
      }
    }
    const fixedY = Array.isArray(config.y_range) && config.y_range.length === 2 ? config.y_range : null;
    const xRange = extent(xs, null);
    let yRange = extent(ys, fixedY);
    if (yRange !== null && fixedY === null) yRange = padded(yRange, 0.05);

    const yTicks = yRange === null ? { step: NaN, values: [] } : ticks(yRange[0], yRange[1], 5);
    const yLabels = yTicks.values.map((v) => formatTick(v, yTicks.step));
    let left = PAD.left + (config.y_label ? 16 : 0);
    for (const label of yLabels) left = Math.max(left, PAD.left + (config.y_label ? 16 : 0) + ctx.measureText(label).width + 6);
    const top = PAD.top;
    const bottom = height - PAD.bottom - (config.x_label ? 14 : 0);
    const right = width - PAD.right;
    const plotWidth = Math.max(1, right - left);
    const plotHeight = Math.max(1, bottom - top);

    // Frame, grid and tick labels.
    ctx.strokeStyle = theme.grid;
    ctx.lineWidth = 1;
    ctx.fillStyle = theme.muted;
    ctx.textAlign = "right";
    if (yRange !== null) {
      yTicks.values.forEach((value, i) => {
        const py = Math.round(bottom - fraction(value, yRange[0], yRange[1]) * plotHeight) + 0.5;
        if (py < top - 1 || py > bottom + 1) return;
        ctx.beginPath();
        ctx.moveTo(left, py);
        ctx.lineTo(right, py);
        ctx.stroke();
        ctx.fillText(yLabels[i], left - 6, py);
      });
    }
    if (xRange !== null) {
      const xTicks = ticks(xRange[0], xRange[1], Math.max(2, Math.floor(plotWidth / 90)));
      ctx.textAlign = "center";
      ctx.textBaseline = "top";
      for (const value of xTicks.values) {
        const px = Math.round(left + fraction(value, xRange[0], xRange[1]) * plotWidth) + 0.5;
        ctx.beginPath();
        ctx.moveTo(px, bottom);
        ctx.lineTo(px, bottom + 4);
        ctx.stroke();
        ctx.fillText(formatTick(value, xTicks.step), px, bottom + 6);
      }
    }
    ctx.strokeStyle = theme.axis;
    ctx.strokeRect(left + 0.5, top + 0.5, plotWidth - 1, plotHeight);
    ctx.fillStyle = theme.muted;
    if (config.x_label) {
      ctx.textAlign = "center";
      ctx.textBaseline = "bottom";
      ctx.fillText(config.x_label, left + plotWidth / 2, height - 2);
    }
    if (config.y_label) {
      ctx.save();
      ctx.translate(PAD.left + 6, top + plotHeight / 2);
      ctx.rotate(-Math.PI / 2);
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.fillText(config.y_label, 0, 0);
      ctx.restore();
    }
    if (xRange === null || yRange === null) {
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.fillText("no points yet", left + plotWidth / 2, top + plotHeight / 2);
    }

    // The lines, clipped to the plot (a fixed y_range may cut them).
    const last = {};
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top, plotWidth, plotHeight);
    ctx.clip();
    ctx.lineWidth = LINE_WIDTH;
    ctx.lineJoin = "round";
    ctx.lineCap = "round";
    for (const series of state.series) {
      const colour = theme.series[series.index % SERIES_SLOTS];
      last[series.name] = series.y.length > 0 && isNumber(series.y[series.y.length - 1]) ? series.y[series.y.length - 1] : null;
      const key = legendKey(parts, series);
      if (key !== null) {
        const text = key.querySelector(".wk-chart-last");
        if (text !== null) text.textContent = formatLast(last[series.name]);
      }
      if (xRange === null || yRange === null) continue;
      ctx.strokeStyle = colour;
      ctx.fillStyle = colour;
      ctx.beginPath();
      let run = 0; // points in the current stretch without a gap
      let lonely = null; // a stretch of one point is drawn as a dot
      for (let i = 0; i < series.x.length; i++) {
        const x = series.x[i];
        const y = series.y[i];
        if (!isNumber(x) || !isNumber(y)) {
          if (run === 1 && lonely !== null) ctx.fillRect(lonely[0] - 1.5, lonely[1] - 1.5, 3, 3);
          run = 0;
          continue;
        }
        const px = left + fraction(x, xRange[0], xRange[1]) * plotWidth;
        const py = bottom - fraction(y, yRange[0], yRange[1]) * plotHeight;
        if (run === 0) ctx.moveTo(px, py);
        else ctx.lineTo(px, py);
        lonely = run === 0 ? [px, py] : null;
        run += 1;
      }
      if (run === 1 && lonely !== null) ctx.fillRect(lonely[0] - 1.5, lonely[1] - 1.5, 3, 3);
      ctx.stroke();
    }
    ctx.restore();
    const drawn = (framesDrawn.get(config.id) || 0) + 1;
    framesDrawn.set(config.id, drawn);
    canvas.dataset.wkFrames = String(drawn);
    canvas.dataset.wkLast = JSON.stringify(last);
  }

  // A rendering off the page while a newer one of the same chart is on it (a re-render
  // for persistence replaced it) is done for good.
  function replaced(parts) {
    return !parts.root.isConnected && document.querySelector(`[data-wk-widget="${parts.config.id}"]`) !== null;
  }

  function forget(parts) {
    live.delete(parts);
    if (parts.resize !== null) parts.resize.disconnect();
  }

  function drawAllSoon() {
    for (const parts of Array.from(live)) {
      if (parts.control.isConnected) schedule(parts);
      else if (replaced(parts)) forget(parts);
    }
  }

  // JupyterLab switches theme by swapping its stylesheet and the body's data-jp-theme-*
  // attributes; draw again then, and once more when the new sheet has surely applied.
  let themeWatch = null;
  function watchTheme() {
    if (themeWatch !== null || typeof MutationObserver !== "function" || document.body === null) return;
    themeWatch = new MutationObserver(() => {
      drawAllSoon();
      setTimeout(drawAllSoon, 300);
    });
    themeWatch.observe(document.body, { attributes: true, attributeFilter: ["data-jp-theme-name", "data-jp-theme-light"] });
  }

  const VIEW = {
    version: VERSION,
    events: [],
    merge: merge,
    setup(parts, config) {
      parts.config = config;
      parts.frame = null;
      parts.keys = new Map();
      parts.state = undefined;
      live.add(parts);
      watchTheme();
      parts.resize = null;
      if (typeof ResizeObserver === "function") {
        parts.resize = new ResizeObserver(() => schedule(parts));
        parts.resize.observe(parts.control);
      }
    },
    read() {
      return undefined;
    },
    show(parts, value) {
      parts.state = value;
      schedule(parts);
    },
  };

  widgets.registerView("chart", VIEW);
})();
