// The agent's status page, live: /events sends the sections that changed (HTML rendered by
// the agent, swapped in here) and the chart samples that are new; uPlot (vendored) draws
// them. Nothing is fetched from anywhere but the agent: the VPS may be offline.
(function () {
  "use strict";
  var COLOURS = {
    balance: "#37474f", equity: "#1565c0", bid: "#1565c0", ask: "#6a1b9a", reference: "#212121",
    sma_20: "#2e7d32", sma_50: "#827717", ema_12: "#e65100", ema_26: "#ad1457", bb: "#546e7a",
    rsi: "#4527a0", macd_line: "#00695c", macd_signal: "#bf360c"
  };
  var PRICE = [["bid", "bid (your broker)"], ["ask", "ask (your broker)"], ["reference", "reference price"],
               ["sma_20", "SMA 20"], ["sma_50", "SMA 50"], ["ema_12", "EMA 12"], ["ema_26", "EMA 26"],
               ["bb_upper", "Bollinger upper"], ["bb_middle", "Bollinger middle"], ["bb_lower", "Bollinger lower"]];
  var OSC = [["rsi", "RSI 14", "rsi"], ["macd_line", "MACD", "macd"], ["macd_signal", "MACD signal", "macd"]];
  var live = document.getElementById("live");
  var equity = null;           // {plot, data}
  var symbols = {};            // symbol -> {price, osc, data, caption}
  var fills = [];

  function utc(ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); }
  function width(el) { return Math.max(320, (el.clientWidth || 600) - 8); }
  function columns(names) { var d = [[]]; names.forEach(function () { d.push([]); }); return d; }

  function append(data, names, sample, full) {
    if (full) { data.forEach(function (col) { col.length = 0; }); }
    if (!sample || !sample.t) { return; }
    Array.prototype.push.apply(data[0], sample.t);
    names.forEach(function (name, i) { Array.prototype.push.apply(data[i + 1], sample[name] || []); });
  }

  function line(name, label, scale) {
    var colour = COLOURS[name] || COLOURS.bb;
    var dashed = name === "reference" || name.indexOf("bb_") === 0;
    return {label: label, stroke: colour, width: name === "bid" || name === "equity" ? 2 : 1.5,
            dash: dashed ? [6, 4] : undefined, scale: scale || "y", spanGaps: false,
            value: function (u, v) { return v == null ? "–" : v.toPrecision(6); }};
  }

  // A single sample (or a fill after the last one) must not stretch the time axis over years.
  function timeRange(symbol) {
    return function (u, min, max) {
      fills.forEach(function (f) { if (f.symbol === symbol) { min = Math.min(min, f.t); max = Math.max(max, f.t); } });
      return max - min < 60 ? [max - 60, max + 1] : [min, max + 1];
    };
  }

  function priceRange(symbol) {
    return function (u, min, max) {
      fills.forEach(function (f) {
        if (f.symbol === symbol) { min = Math.min(min, f.price); max = Math.max(max, f.price); }
      });
      var pad = Math.max((max - min) * 0.08, Math.abs(max) * 2e-5);
      return [min - pad, max + pad];
    };
  }

  function figures(u, splits) { return splits.map(function (v) { return v == null ? "" : +v.toPrecision(6); }); }

  function plot(el, series, axes, height, hooks, scales) {
    return new uPlot({width: width(el), height: height, tzDate: utc, series: [{}].concat(series),
                      axes: axes, hooks: hooks || {},
                      scales: Object.assign({x: {time: true, range: timeRange(el.dataset.symbol)}}, scales || {})},
                     [[]].concat(series.map(function () { return []; })), el);
  }

  function ensureEquity() {
    if (equity || typeof uPlot === "undefined") { return equity; }
    var el = document.getElementById("equity-chart");
    equity = {data: columns(["balance", "equity"]),
              plot: plot(el, [line("balance", "balance"), line("equity", "equity")],
                        [{}, {size: 80, values: figures}], 220)};
    return equity;
  }

  function drawFills(symbol) {
    return function (u) {
      var ctx = u.ctx, box = u.bbox;
      fills.forEach(function (f) {
        if (f.symbol !== symbol) { return; }
        var x = u.valToPos(f.t, "x", true), y = u.valToPos(f.price, "y", true);
        if (x < box.left || x > box.left + box.width || y < box.top || y > box.top + box.height) { return; }
        var s = 7 * devicePixelRatio, up = f.side === "buy";
        ctx.save();
        ctx.beginPath();
        ctx.moveTo(x, up ? y - s : y + s);
        ctx.lineTo(x - s, up ? y + s : y - s);
        ctx.lineTo(x + s, up ? y + s : y - s);
        ctx.closePath();
        ctx.fillStyle = up ? "#1b5e20" : "#b71c1c";
        ctx.strokeStyle = "#ffffff";
        ctx.lineWidth = devicePixelRatio;
        ctx.fill(); ctx.stroke();
        ctx.restore();
      });
    };
  }

  function ensureSymbol(symbol) {
    if (symbols[symbol] || typeof uPlot === "undefined") { return symbols[symbol]; }
    var box = document.createElement("figure");
    box.className = "chart";
    box.id = "chart-" + symbol;
    var caption = document.createElement("figcaption");
    caption.textContent = symbol;
    var priceEl = document.createElement("div"), oscEl = document.createElement("div");
    priceEl.dataset.symbol = oscEl.dataset.symbol = symbol;
    priceEl.setAttribute("role", "img");
    priceEl.setAttribute("aria-label", symbol + ": your broker's bid and ask, the server's reference price and " +
                         "indicators, and your fills; the figures are in the tables below");
    oscEl.setAttribute("role", "img");
    oscEl.setAttribute("aria-label", symbol + ": RSI and MACD from the server");
    box.appendChild(caption); box.appendChild(priceEl); box.appendChild(oscEl);
    document.getElementById("symbol-charts").appendChild(box);
    var priceSeries = PRICE.map(function (p) { return line(p[0], p[1]); });
    var oscSeries = OSC.map(function (p) { return line(p[0], p[1], p[2]); });
    symbols[symbol] = {
      caption: caption,
      data: columns(PRICE.map(function (p) { return p[0]; }).concat(OSC.map(function (p) { return p[0]; }))),
      price: plot(priceEl, priceSeries, [{}, {size: 80, values: figures}], 260, {draw: [drawFills(symbol)]},
                  {y: {range: priceRange(symbol)}}),
      osc: plot(oscEl, oscSeries, [{}, {scale: "rsi", size: 70, label: "RSI"},
                                   {scale: "macd", side: 1, size: 80, label: "MACD", grid: {show: false}}], 140)
    };
    return symbols[symbol];
  }

  function last(col) { for (var i = col.length - 1; i >= 0; i--) { if (col[i] != null) { return col[i]; } } return null; }

  function updateSymbol(symbol, sample, full) {
    var chart = ensureSymbol(symbol);
    if (!chart) { return; }
    var names = PRICE.map(function (p) { return p[0]; }).concat(OSC.map(function (p) { return p[0]; }));
    append(chart.data, names, sample, full);
    var d = chart.data, n = PRICE.length;
    chart.price.setData(d.slice(0, n + 1));
    chart.osc.setData([d[0]].concat(d.slice(n + 1)));
    var mine = fills.filter(function (f) { return f.symbol === symbol; }).length;
    var bid = last(d[1]), rsi = last(d[n + 1]);
    chart.caption.textContent = symbol + (bid != null ? " · bid " + bid.toPrecision(6) : "") +
      (rsi != null ? " · RSI " + rsi.toFixed(1) : " · waiting for the server's indicators") +
      " · " + mine + " fill" + (mine === 1 ? "" : "s") + " shown";
  }

  function onUpdate(event) {
    var u = JSON.parse(event.data);
    Object.keys(u.sections).forEach(function (name) {
      var el = document.getElementById(name);
      if (el) { el.innerHTML = u.sections[name]; }
    });
    fills = u.fills;
    var series = u.series || {};
    var eq = ensureEquity();
    if (eq) {
      append(eq.data, ["balance", "equity"], series.account, u.full);
      eq.plot.setData(eq.data);
    }
    u.traded.forEach(function (symbol) { updateSymbol(symbol, series[symbol], u.full); });
    document.body.setAttribute("data-updates", String(Number(document.body.getAttribute("data-updates") || 0) + 1));
    live.textContent = "live: updated " + new Date(u.at * 1000).toISOString().substring(11, 19) + " UTC";
    live.className = "ok";
  }

  function resize() {
    if (equity) { equity.plot.setSize({width: width(document.getElementById("equity-chart")), height: 220}); }
    Object.keys(symbols).forEach(function (s) {
      var el = document.getElementById("chart-" + s);
      symbols[s].price.setSize({width: width(el), height: 260});
      symbols[s].osc.setSize({width: width(el), height: 140});
    });
  }

  if (!window.EventSource) { return; }
  var source = new EventSource("/events");
  source.addEventListener("update", onUpdate);
  source.onerror = function () {
    live.textContent = "connection to the agent lost: retrying (the figures below may be old)";
    live.className = "bad";
  };
  window.addEventListener("resize", resize);
})();
