// x1 view: draws the reasoning graphs embedded in this page as plain SVG. No libraries, no network.
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("x1-data").textContent);
  // pixels per horizontal slot and per layer: a wide tree gets narrower slots and taller layers, so
  // that fitting it to the window does not shrink it into a thin strip
  let SX = 34, SY = 84;
  const NS = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  const svg = $("svg"), viewport = $("viewport"), detail = $("detail"), tip = $("tip");
  const state = {
    problem: null, // entry of DATA.problems
    stack: [], // [{graph, label}] : the outer graph first, nested graphs drilled into after it
    byId: new Map(),
    colour: "q",
    selected: null,
    view: { x: 20, y: 20, k: 1 },
    drag: null,
    moved: false,
  };

  function esc(value) {
    return String(value).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  }
  function fmt(v) {
    if (v === null || v === undefined) return "—";
    if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(3);
    return esc(v);
  }
  function graph() {
    return state.stack[state.stack.length - 1].graph;
  }

  // -- colour and size ------------------------------------------------------------------
  function hue(u) {
    if (u === null || u === undefined || Number.isNaN(u)) return "#e5e7eb";
    const c = Math.max(0, Math.min(1, u));
    return "hsl(" + Math.round(120 * c) + ",70%," + Math.round(52 - 12 * c) + "%)";
  }
  function scaler(g) {
    // q and reward live in [-1, 1]; evaluator scores usually in [0, 1], else min-max over the graph
    if (state.colour === "q") return (n) => (n.q === null ? null : (n.q + 1) / 2);
    if (state.colour === "reward") return (n) => (n.reward === null ? null : (n.reward + 1) / 2);
    if (state.colour.startsWith("signal:")) {
      // token uncertainty: the most certain thought of the graph green, the least certain red
      const key = state.colour.slice(7);
      const values = g.nodes.map((n) => n.signals[key]).filter((v) => v !== undefined);
      const lo = Math.min(...values), hi = Math.max(...values);
      return (n) => (n.signals[key] === undefined ? null : 1 - (n.signals[key] - lo) / (hi - lo || 1));
    }
    const name = state.colour;
    const values = g.nodes.map((n) => n.scores[name]).filter((v) => v !== undefined);
    const lo = Math.min(0, ...values), hi = Math.max(1, ...values);
    return (n) => (n.scores[name] === undefined ? null : (n.scores[name] - lo) / (hi - lo || 1));
  }
  function scaleLabel(g) {
    if (state.colour === "q") return "q: −1 … +1";
    if (state.colour === "reward") return "reward: −1 … +1";
    if (state.colour.startsWith("signal:")) return state.colour.slice(7) + ": high … low";
    const values = g.nodes.map((n) => n.scores[state.colour]).filter((v) => v !== undefined);
    return state.colour + ": " + fmt(Math.min(0, ...values)) + " … " + fmt(Math.max(1, ...values));
  }

  // -- drawing --------------------------------------------------------------------------
  function px(n) {
    return n.x * SX;
  }
  function py(n) {
    return n.y * SY;
  }
  function spacing(g) {
    const w = svg.clientWidth || 800, h = svg.clientHeight || 600;
    const slots = Math.max(1, g.width - 1), layers = Math.max(1, g.depth - 1);
    SX = Math.max(6, Math.min(34, (w - 60) / slots));
    SY = Math.max(84, Math.min(480, (slots * SX * (h - 150)) / (w - 60) / layers));
  }
  function draw() {
    const g = graph();
    state.byId = new Map(g.nodes.map((n) => [n.id, n]));
    const maxN = Math.max(1, ...g.nodes.map((n) => n.n || 0));
    const colourOf = scaler(g);
    const edges = { e: [], merge: [], pruned: [], path: [] };
    const nodes = [], marks = [];
    for (const n of g.nodes) {
      const x = px(n), y = py(n);
      n.parents.forEach((pid, i) => {
        const p = state.byId.get(pid);
        const mx = px(p), my = py(p), ym = (my + y) / 2;
        const d = "M" + mx + " " + my + "C" + mx + " " + ym + " " + x + " " + ym + " " + x + " " + y;
        const kind = n.path && p.path ? "path" : n.pruned ? "pruned" : i > 0 || n.parents.length > 1 ? "merge" : "e";
        edges[kind].push(d);
      });
      // sized by visits where search counted them (MCTS); a fixed size where it did not
      const r = n.id === 0 ? 9 : maxN > 1 ? 4 + 10 * Math.sqrt((n.n || 0) / maxN) : 7;
      let cls = "n";
      if (n.id === 0) cls += " root";
      if (n.pruned) cls += " pruned";
      if (n.parents.length > 1) cls += " merge";
      if (n.path) cls += " path";
      const fill = n.id === 0 ? "#24292f" : n.pruned ? "#c9ced4" : hue(colourOf(n));
      if (n.terminal) {
        nodes.push('<rect class="' + cls + '" data-id="' + n.id + '" x="' + (x - r) + '" y="' + (y - r) + '" width="' + 2 * r +
          '" height="' + 2 * r + '" rx="2" fill="' + fill + '"/>');
      } else {
        nodes.push('<circle class="' + cls + '" data-id="' + n.id + '" cx="' + x + '" cy="' + y + '" r="' + r + '" fill="' + fill + '"/>');
      }
      if (n.status) {
        marks.push('<text class="mark ' + (n.status === "right" ? "ok" : "bad") + '" x="' + (x + r + 3) + '" y="' + (y + 5) + '">' +
          (n.status === "right" ? "✓" : "✗") + "</text>");
      }
      if (n.nested) marks.push('<circle class="ring" cx="' + x + '" cy="' + y + '" r="' + (r + 5) + '"/>');
    }
    $("edges").innerHTML = ["e", "merge", "pruned", "path"]
      .map((k) => (edges[k].length ? '<path class="e ' + k + '" d="' + edges[k].join("") + '"/>' : ""))
      .join("");
    $("nodes").innerHTML = nodes.join("");
    $("marks").innerHTML = marks.join("");
    $("scale-label").textContent = scaleLabel(g);
    state.selected = null;
  }

  function applyView() {
    const v = state.view;
    viewport.setAttribute("transform", "translate(" + v.x + "," + v.y + ") scale(" + v.k + ")");
  }
  function fit() {
    const g = graph();
    const w = svg.clientWidth || 800, h = svg.clientHeight || 600;
    const gw = Math.max(1, (g.width - 1) * SX), gh = Math.max(1, (g.depth - 1) * SY);
    const k = Math.max(0.02, Math.min(1.5, (w - 60) / gw, (h - 150) / gh));
    state.view = { k: k, x: (w - gw * k) / 2, y: 30 };
    applyView();
  }
  function centre(n) {
    const w = svg.clientWidth || 800, h = svg.clientHeight || 600;
    state.view.k = Math.max(state.view.k, 0.6);
    state.view.x = w / 2 - px(n) * state.view.k;
    state.view.y = h / 2 - py(n) * state.view.k;
    applyView();
  }
  function zoomAt(cx, cy, factor) {
    const v = state.view;
    const k = Math.max(0.01, Math.min(8, v.k * factor));
    v.x = cx - ((cx - v.x) * k) / v.k;
    v.y = cy - ((cy - v.y) * k) / v.k;
    v.k = k;
    applyView();
  }

  // -- the detail panel -------------------------------------------------------------------
  function row(label, value) {
    return "<tr><td>" + esc(label) + "</td><td>" + value + "</td></tr>";
  }
  function strip(values, label) {
    const max = Math.max(1e-9, ...values);
    const cells = values.map((v, i) => '<i style="background:' + hue(1 - v / max) + '" title="token ' + i + ": " + v.toFixed(3) + '"></i>');
    return '<div class="strip" data-strip="' + esc(label) + '">' + cells.join("") + "</div>" +
      '<div class="strip-scale"><span>' + esc(label) + " per token (" + values.length + ")</span><span>0 … " + max.toFixed(2) + "</span></div>";
  }
  function heat(n) {
    const kinds = Object.keys(n.tokens || {}).filter((k) => n.tokens[k].length);
    const parts = kinds.map((k) => strip(n.tokens[k], k + " (nats)"));
    if (!kinds.length && n.surprisal.length) parts.push(strip(n.surprisal, "surprisal −log p (nats)"));
    return parts.length ? '<div class="heat">' + parts.join("") + "</div>" : "";
  }
  function badges(n) {
    const b = [];
    if (n.id === 0) b.push('<span class="badge">root: the problem</span>');
    if (n.terminal) b.push('<span class="badge">terminal</span>');
    if (n.status === "right") b.push('<span class="badge ok">✓ right</span>');
    if (n.status === "wrong") b.push('<span class="badge bad">✗ wrong</span>');
    if (n.path) b.push('<span class="badge path">answer path</span>');
    if (n.parents.length > 1) b.push('<span class="badge merge">aggregate of ' + n.parents.length + "</span>");
    if (n.nested) b.push('<span class="badge nested">nested graph</span>');
    if (n.pruned) b.push('<span class="badge pruned">pruned</span>');
    if (n.tag) b.push('<span class="badge">' + esc(n.tag) + "</span>");
    return b.join("");
  }
  function links(label, ids) {
    if (!ids.length) return "";
    return row(label, '<span class="links">' + ids.map((id) => '<button type="button" data-go="' + id + '">#' + id + "</button>").join("") + "</span>");
  }
  function showNode(n) {
    const g = graph();
    let h = '<h2 data-node="' + n.id + '">thought #' + n.id + "</h2><div>" + badges(n) + "</div>";
    const text = n.id === 0 ? g.problem || state.problem.question : n.text;
    h += "<pre>" + esc(text) + (n.cut ? "\n… (" + n.cut + " more characters in the trace)" : "") + "</pre>";
    if (n.nested) h += '<button type="button" class="drill" data-drill="' + n.id + '">open inner graph (' + (n.nested.nodes.length - 1) + " thoughts)</button>";
    h += heat(n); // right under the text it belongs to
    h += "<table>";
    if (n.answer !== null) h += row("answer", "<b>" + esc(n.answer) + "</b>");
    h += row("q (value)", fmt(n.q)) + row("N (visits)", fmt(n.n));
    if (n.reward !== null) h += row("reward", fmt(n.reward));
    for (const [k, v] of Object.entries(n.scores)) h += row("score: " + k, fmt(v));
    const bases = [...new Set(Object.keys(n.signals).map((k) => k.replace(/_(mean|max|min)$/, "")))];
    for (const base of bases) {
      const parts = ["mean", "max", "min"].filter((s) => (base + "_" + s) in n.signals);
      if (!parts.length) h += row(base, fmt(n.signals[base]));
      else h += row(base + " (" + parts.join(" / ") + ")", parts.map((s) => fmt(n.signals[base + "_" + s])).join(" / "));
    }
    const c = n.compute;
    h += row("compute", fmt(c.generated_tokens) + " generated + " + fmt(c.prompt_tokens) + " prefilled tokens, " + fmt(c.policy_calls) +
      " policy / " + fmt(c.evaluator_calls) + " evaluator calls" +
      (c.evaluator_tokens ? " (" + fmt(c.evaluator_tokens) + " evaluator tokens)" : ""));
    h += links("parents", n.parents) + links("children", n.children) + "</table>";
    if (Object.keys(n.meta).length) h += "<details><summary>meta</summary><pre>" + esc(JSON.stringify(n.meta, null, 1)) + "</pre></details>";
    detail.innerHTML = h;
  }
  function showProblem() {
    const p = state.problem, g = graph();
    const verdict = p.correct === true ? '<span class="badge ok">✓ right</span>' : p.correct === false ? '<span class="badge bad">✗ wrong</span>' : "";
    let h = '<h2 data-problem="' + esc(p.task_id) + '">' + esc(p.task_id) + "</h2><div>" + verdict + "</div><pre>" + esc(p.question || g.problem) + "</pre><table>";
    h += row("answer", "<b>" + fmt(p.answer) + "</b>") + row("gold", fmt(p.gold));
    if (p.strategy) h += row("strategy", esc(p.strategy));
    if (p.model) h += row("model", esc(p.model));
    if (p.stop_reason) h += row("stopped by", esc(p.stop_reason));
    h += row("thoughts", String(g.nodes.length - 1));
    const c = p.compute || {};
    h += row("compute", fmt(c.generated_tokens) + " generated + " + fmt(c.prompt_tokens) + " prefilled tokens, " + fmt(c.policy_calls) + " policy calls");
    if (p.wall_s !== null && p.wall_s !== undefined) h += row("wall", fmt(p.wall_s) + " s");
    h += "</table>";
    if (g.answer_thought !== null && g.answer_thought !== undefined) h += '<p><button type="button" data-go="' + g.answer_thought + '">show the answer thought</button></p>';
    h += '<p class="hint">Click a thought to see its text, q, N, scores, compute and token uncertainty.</p>';
    detail.innerHTML = h;
  }
  function select(id, andCentre) {
    const n = state.byId.get(id);
    if (!n) return;
    const old = state.selected !== null && $("nodes").querySelector('[data-id="' + state.selected + '"]');
    if (old) old.classList.remove("sel");
    const el = $("nodes").querySelector('[data-id="' + id + '"]');
    if (el) el.classList.add("sel");
    state.selected = id;
    showNode(n);
    if (andCentre) centre(n);
  }

  // -- levels and problems ----------------------------------------------------------------
  function crumbs() {
    $("crumbs").innerHTML = state.stack
      .map((level, i) => '<button type="button" data-level="' + i + '"' + (i === state.stack.length - 1 ? " disabled" : "") + ">" + esc(level.label) + "</button>")
      .join(" › ");
  }
  function showLevel() {
    spacing(graph());
    draw();
    fit();
    crumbs();
    const g = graph();
    const terminals = g.nodes.filter((n) => n.terminal);
    const right = terminals.filter((n) => n.status === "right").length;
    $("summary").textContent = g.nodes.length - 1 + " thoughts · " + terminals.length + " terminal (" + right + " right)";
    if (state.stack.length === 1) showProblem();
    else detail.innerHTML = '<h2>inner graph</h2><pre>' + esc(g.problem) + '</pre><p class="hint">Click a thought; the bar above leads back out.</p>';
  }
  function drill(id) {
    const n = state.byId.get(id);
    if (!n || !n.nested) return;
    state.stack.push({ graph: n.nested, label: "step #" + id });
    showLevel();
  }
  function signalOptions(g) {
    const present = new Set(g.nodes.flatMap((n) => Object.keys(n.signals)));
    return ["entropy_mean", "varentropy_mean"].filter((k) => present.has(k)).map((k) => "signal:" + k);
  }
  function colourOptions() {
    const names = ["q", "reward"].concat(graph().score_names.map(String), signalOptions(graph()));
    $("colour").innerHTML = names.map((k) => '<option value="' + esc(k) + '"' + (k === state.colour ? " selected" : "") + ">" + esc(k) + "</option>").join("");
  }
  function openProblem(index) {
    state.problem = DATA.problems[index];
    state.stack = [{ graph: state.problem.graph, label: state.problem.task_id }];
    const g = graph();
    const hasQ = g.nodes.some((n) => n.q !== null && n.id !== 0);
    const signals = signalOptions(g);
    if (!hasQ && g.score_names.length) state.colour = g.score_names[0];
    else if (!hasQ && signals.length) state.colour = signals[0];
    else state.colour = "q";
    colourOptions();
    showLevel();
  }

  // -- events -----------------------------------------------------------------------------
  svg.addEventListener("wheel", (e) => {
    e.preventDefault();
    const box = svg.getBoundingClientRect();
    zoomAt(e.clientX - box.left, e.clientY - box.top, Math.exp(-e.deltaY * 0.0015));
  }, { passive: false });
  svg.addEventListener("pointerdown", (e) => {
    state.drag = { x: e.clientX, y: e.clientY, vx: state.view.x, vy: state.view.y };
    state.moved = false;
  });
  window.addEventListener("pointermove", (e) => {
    const d = state.drag;
    if (d) {
      const dx = e.clientX - d.x, dy = e.clientY - d.y;
      if (!state.moved && Math.abs(dx) + Math.abs(dy) < 4) return;
      state.moved = true;
      svg.classList.add("dragging");
      state.view.x = d.vx + dx;
      state.view.y = d.vy + dy;
      applyView();
      return;
    }
    const target = e.target.closest && e.target.closest("[data-id]");
    if (target && svg.contains(target)) {
      const n = state.byId.get(Number(target.dataset.id));
      const box = $("stage").getBoundingClientRect();
      tip.textContent = "#" + n.id + (n.q !== null ? "  q=" + n.q.toFixed(2) : "") + "  N=" + n.n + "\n" + (n.id === 0 ? "the problem" : n.text.slice(0, 140));
      tip.style.left = e.clientX - box.left + 14 + "px";
      tip.style.top = e.clientY - box.top + 14 + "px";
      tip.hidden = false;
    } else {
      tip.hidden = true;
    }
  });
  window.addEventListener("pointerup", () => {
    state.drag = null;
    svg.classList.remove("dragging");
  });
  svg.addEventListener("click", (e) => {
    if (state.moved) return;
    const target = e.target.closest("[data-id]");
    if (target) select(Number(target.dataset.id), false);
  });
  svg.addEventListener("dblclick", (e) => {
    const target = e.target.closest("[data-id]");
    if (target) drill(Number(target.dataset.id));
  });
  detail.addEventListener("click", (e) => {
    const go = e.target.closest("[data-go]");
    if (go) select(Number(go.dataset.go), true);
    const inner = e.target.closest("[data-drill]");
    if (inner) drill(Number(inner.dataset.drill));
  });
  $("crumbs").addEventListener("click", (e) => {
    const b = e.target.closest("[data-level]");
    if (!b) return;
    state.stack = state.stack.slice(0, Number(b.dataset.level) + 1);
    showLevel();
  });
  $("colour").addEventListener("change", (e) => {
    state.colour = e.target.value;
    const sel = state.selected;
    draw();
    if (sel !== null) select(sel, false);
  });
  $("fit").addEventListener("click", fit);
  $("problem").addEventListener("change", (e) => openProblem(Number(e.target.value)));
  window.addEventListener("resize", fit);

  // -- start ------------------------------------------------------------------------------
  const t0 = performance.now();
  const problems = DATA.problems;
  $("problem").innerHTML = problems
    .map((p, i) => '<option value="' + i + '">' + esc(p.task_id) + (p.correct === true ? " ✓" : p.correct === false ? " ✗" : "") + "</option>")
    .join("");
  $("problem").hidden = problems.length < 2;
  const wanted = decodeURIComponent((location.hash.match(/problem=([^&]+)/) || [])[1] || "");
  const start = Math.max(0, problems.findIndex((p) => String(p.task_id) === wanted));
  $("problem").value = String(start);
  openProblem(start);
  window.x1view = { renderMs: performance.now() - t0, select: select, drill: drill };
  document.body.dataset.ready = "1";
})();
