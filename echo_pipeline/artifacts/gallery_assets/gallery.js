// echo_pipeline gallery app: draws the grid, filters and detail view from window.ECHO_GALLERY (data.js).
// No dependencies and no network requests, so it works from file:// as well as behind a web server. Store text is
// only ever set with textContent, never parsed as HTML. The preset rules mirror
// echo_pipeline/artifacts/gallery.py:select_entries.
(function () {
  "use strict";
  const DATA = window.ECHO_GALLERY;
  const CHUNK = 120; // tiles added per scroll step: 10,000 entries never become 10,000 nodes at once
  const COMPONENTS = [["technical", "technical"], ["style_consistency", "style"], ["uniqueness", "unique"],
    ["alignment", "alignment"], ["aesthetic", "aesthetic"]];
  const TECH = ["sharpness", "contrast", "colourfulness", "entropy", "exposure", "noise"];
  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = String(value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  if (!DATA || !Array.isArray(DATA.entries)) {
    $("grid").replaceChildren(el("div", { class: "empty", text: "The gallery data (data.js) did not load." }));
    return;
  }
  const entries = DATA.entries;
  const byId = new Map();
  entries.forEach((e, i) => {
    e._i = i;
    e._text = [e.prompt, e.negative, e.style, e.seed, e.id, e.backend, e.model, e.project]
      .filter((x) => x !== null && x !== undefined && x !== "").join(" ").toLowerCase();
    e._day = e.created ? e.created.slice(0, 10) : "";
    byId.set(e.id, e);
  });
  const total = (e) => (e.scores && typeof e.scores.total === "number" ? e.scores.total : null);
  const scoreClass = (t) => (t >= 70 ? "s-good" : t >= 50 ? "s-mid" : "s-bad");
  const short = (id) => String(id).slice(0, 10);

  // ---- state (mirrored in the URL hash, so a view can be linked and reloaded) ----
  const FIELDS = ["q", "project", "style", "backend", "min", "max", "from", "to", "sort"];
  const state = { preset: document.body.dataset.filter || "all", id: "" };
  FIELDS.forEach((f) => (state[f] = ""));
  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    for (const f of FIELDS) state[f] = params.get(f) || "";
    if (params.get("f")) state.preset = params.get("f");
    state.id = params.get("id") || "";
  }
  function writeHash() {
    const params = new URLSearchParams();
    if (state.preset !== (document.body.dataset.filter || "all")) params.set("f", state.preset);
    for (const f of FIELDS) if (state[f]) params.set(f, state[f]);
    if (state.id) params.set("id", state.id);
    const text = params.toString();
    history.replaceState(null, "", text ? "#" + text : location.pathname + location.search);
  }

  // ---- selection ----
  function byScore(list) {
    return list.filter((e) => total(e) !== null).sort((a, b) => total(b) - total(a) || a._i - b._i);
  }
  function presetSelect(preset) {
    const [kind, ...rest] = preset.split(":");
    const arg = rest.join(":");
    if (kind === "recent") return entries.slice(0, DATA.recent_count);
    if (kind === "accepted") return entries.filter((e) => e.accepted === true);
    if (kind === "style") return entries.filter((e) => (e.style || "").toLowerCase() === arg.toLowerCase());
    if (kind === "top") return byScore(entries).slice(0, parseInt(arg, 10) || 0);
    if (kind === "best") {
      const ranked = byScore(entries);
      return ranked.length ? ranked.slice(0, Math.max(1, Math.ceil(ranked.length * DATA.best_fraction))) : [];
    }
    return entries.slice();
  }
  function current() {
    let list = presetSelect(state.preset);
    const terms = state.q.toLowerCase().split(/\s+/).filter(Boolean);
    const min = state.min === "" ? null : Number(state.min);
    const max = state.max === "" ? null : Number(state.max);
    list = list.filter((e) => {
      if (state.project && e.project !== state.project) return false;
      if (state.style && (e.style || "") !== state.style) return false;
      if (state.backend && (e.backend || "") !== state.backend) return false;
      if (min !== null || max !== null) {
        const t = total(e);
        if (t === null || (min !== null && t < min) || (max !== null && t > max)) return false;
      }
      if (state.from && (!e._day || e._day < state.from)) return false;
      if (state.to && (!e._day || e._day > state.to)) return false;
      return terms.every((t) => e._text.includes(t));
    });
    const sorts = {
      "score-desc": (a, b) => (total(b) ?? -1) - (total(a) ?? -1) || a._i - b._i,
      "score-asc": (a, b) => (total(a) ?? 101) - (total(b) ?? 101) || a._i - b._i,
      new: (a, b) => a._i - b._i,
      old: (a, b) => b._i - a._i,
    };
    if (sorts[state.sort]) list.sort(sorts[state.sort]);
    return list;
  }

  const MEDIA_BADGES = { texture: "texture", video: "▶ video", "3d_model": "3D", interactive: "live" };

  // ---- grid ----
  const grid = $("grid");
  let shown = [];
  let drawn = 0;
  function tile(e) {
    const t = total(e);
    const img = el("img", { src: e.thumb, loading: "lazy", decoding: "async", alt: e.prompt });
    img.addEventListener("error", () => {
      if (!img.dataset.full && e.image) { img.dataset.full = "1"; img.src = e.image; } // no thumbnail: the PNG
      else img.parentNode.classList.add("noimg");
    });
    const files = e.files || {};
    if (files["video.gif"]) { // a video's tile plays its GIF while the pointer is on it
      img.addEventListener("mouseenter", () => { img.src = files["video.gif"]; });
      img.addEventListener("mouseleave", () => { img.src = e.thumb; });
    }
    const badge = MEDIA_BADGES[e.media];
    const thumb = el("a", { class: "thumb", href: e.image, title: "details" }, img,
      badge ? el("span", { class: "badge", title: e.media, text: badge }) : null,
      t !== null ? el("span", { class: "score " + scoreClass(t), title: "total score", text: t.toFixed(0) }) : null,
      e.accepted ? el("span", { class: "ok", title: "accepted by the style memory", text: "accepted" }) : null);
    const meta = el("div", { class: "meta" });
    const bits = [];
    if (e.seed !== null) bits.push("seed " + e.seed);
    if (e.style) bits.push("style " + e.style);
    if (e.width && e.height) bits.push(e.width + "×" + e.height);
    if (e.created) bits.push(e.created.slice(0, 16).replace("T", " "));
    if (e.model || e.backend) bits.push(e.model || e.backend);
    if (!DATA.per_project) bits.push(e.project);
    bits.forEach((b) => meta.append(el("span", { text: b })));
    const caption = el("figcaption", {}, el("p", { class: "prompt", title: e.prompt, text: e.prompt }), meta);
    if (e.scores) {
      const comps = el("div", { class: "comps", title: TECH.filter((k) => k in e.scores)
        .map((k) => k + " " + e.scores[k].toFixed(0)).join(", ") });
      for (const [key, label] of COMPONENTS) {
        if (!(key in e.scores)) continue;
        const v = e.scores[key];
        comps.append(el("span", { text: label }),
          el("span", { class: "meter" }, el("i", { style: "width:" + Math.max(0, Math.min(100, v)).toFixed(0) + "%" })),
          el("span", { text: v.toFixed(0) }));
      }
      if (comps.childElementCount) caption.append(comps);
    }
    if (e.parent) {
      caption.append(el("div", { class: "lineage" }, "↳ refined from ",
        el("a", { href: "#id=" + encodeURIComponent(e.parent), "data-open": e.parent, title: e.parent, text: short(e.parent) }),
        e.strength !== null ? " (strength " + e.strength.toFixed(2) + ")" : ""));
    }
    if (e.children.length) caption.append(el("div", { class: "lineage", text: "↳ " + e.children.length + " refined child" + (e.children.length > 1 ? "ren" : "") }));
    if (e.problem) caption.append(el("div", { class: "damaged", title: e.problem, text: "⚠ " + e.problem }));
    caption.append(el("div", { class: "id", title: "artifact id", text: e.id }));
    return el("figure", { class: "tile", id: "a-" + e.id, "data-id": e.id }, thumb, caption);
  }
  function drawMore() {
    const next = shown.slice(drawn, drawn + CHUNK);
    if (!next.length) return;
    const chunk = el("div", { class: "chunk" });
    next.forEach((e) => chunk.append(tile(e)));
    grid.append(chunk);
    drawn += next.length;
  }
  function stats(list) {
    const scored = list.map(total).filter((t) => t !== null);
    const count = DATA.projects.length;
    const where = DATA.per_project ? " in project" : " in " + count + " project" + (count === 1 ? "" : "s");
    const ul = $("stats");
    ul.replaceChildren(el("li", {}, el("b", { text: String(entries.length) }),
      " image" + (entries.length === 1 ? "" : "s") + where));
    const preset = DATA.presets[state.preset];
    ul.append(el("li", {}, "showing ", el("b", { id: "shown", text: String(list.length) }),
      " · " + (preset ? preset.description : state.preset)));
    if (scored.length) ul.append(el("li", {}, "mean score ", el("b", { id: "mean", text: (scored.reduce((a, b) => a + b, 0) / scored.length).toFixed(1) })));
    const sheet = preset ? preset.sheet : "contact_sheet.png";
    if (entries.length) ul.append(el("li", {}, el("a", { href: sheet, text: "contact sheet" })));
  }
  function refresh() {
    shown = current();
    drawn = 0;
    grid.replaceChildren();
    drawMore();
    stats(shown);
    const empty = $("empty");
    empty.hidden = shown.length > 0;
    empty.textContent = entries.length ? "No images match these filters." : "No images yet — render some and rebuild the gallery.";
    document.querySelectorAll("#presets a").forEach((a) => a.classList.toggle("on", a.dataset.preset === state.preset));
    writeHash();
  }
  new IntersectionObserver((seen) => { if (seen.some((s) => s.isIntersecting)) drawMore(); }, { rootMargin: "1200px" })
    .observe($("more"));

  // ---- detail view ----
  const dialog = $("detail");
  function paramRows(e) {
    const rows = [["prompt", e.prompt], ["negative", e.negative], ["seed", e.seed], ["size", e.width && e.height ? e.width + "×" + e.height : null],
      ["steps", e.steps], ["cfg scale", e.cfg], ["sampler", e.sampler], ["style", e.style], ["backend", e.backend],
      ["model", e.model], ["model hash", e.model_hash], ["media", e.media], ["tiling", e.tiling === null ? null : String(e.tiling)],
      ["strength", e.strength], ["project", e.project], ["created", e.created], ["run", e.run_id], ["sha256", e.sha256], ["id", e.id],
      ...Object.entries(e.facts || {}).map(([k, v]) => [k, String(v)])];
    const table = el("table", { class: "params" });
    for (const [k, v] of rows) if (v !== null && v !== undefined && v !== "") table.append(el("tr", {}, el("th", { text: k }), el("td", { text: v })));
    return table;
  }
  function node(id, here) {
    const e = byId.get(id);
    if (!e) return el("span", { class: "node gone", title: id, text: short(id) + " (not in this gallery)" });
    const t = total(e);
    return el("button", { type: "button", class: "node" + (here ? " here" : ""), "data-open": here ? null : id, title: e.prompt },
      el("img", { src: e.thumb, alt: "", loading: "lazy" }), short(id) + (t !== null ? " · " + t.toFixed(0) : ""));
  }
  function subtree(id, depth, seen) {
    const li = el("li", {}, node(id, id === state.id));
    const e = byId.get(id);
    if (e && e.children.length && depth < 12) {
      const ul = el("ul", {});
      for (const child of e.children) if (!seen.has(child)) { seen.add(child); ul.append(subtree(child, depth + 1, seen)); }
      li.append(ul);
    }
    return li;
  }
  function lineage(e) {
    const chain = [e.id];
    let cursor = e;
    while (cursor && cursor.parent && chain.length < 64 && !chain.includes(cursor.parent)) {
      chain.unshift(cursor.parent);
      cursor = byId.get(cursor.parent);
    }
    if (chain.length === 1 && !e.children.length) return el("p", { class: "neg", text: "An original: no parent, no refined children yet." });
    // The ancestors as a path down to this image, then its refined descendants as a tree.
    const root = el("ul", { class: "tree", id: "lineage" });
    let parentList = root;
    chain.slice(0, -1).forEach((id) => { const li = el("li", {}, node(id, false)); const ul = el("ul", {}); li.append(ul); parentList.append(li); parentList = ul; });
    parentList.append(subtree(e.id, 0, new Set(chain)));
    return root;
  }
  async function copy(text, button) {
    let ok = false;
    try { await navigator.clipboard.writeText(text); ok = true; } catch (err) {
      const area = el("textarea", { style: "position:fixed;opacity:0" });
      area.value = text;
      document.body.append(area);
      area.select();
      try { ok = document.execCommand("copy"); } catch (e2) { ok = false; }
      area.remove();
    }
    button.textContent = ok ? "Copied" : "Copy failed: select the text below";
    button.dataset.copied = ok ? "1" : "0";
  }
  function open(id) {
    const e = byId.get(id);
    if (!e) return;
    state.id = id;
    writeHash();
    const i = shown.indexOf(e);
    const nav = (step) => { const n = shown[i + step]; if (n) open(n.id); };
    const head = el("div", { class: "dhead" },
      el("button", { type: "button", id: "prev", disabled: i <= 0, onclick: () => nav(-1), title: "previous (←)", text: "←" }),
      el("button", { type: "button", id: "next", disabled: i < 0 || i >= shown.length - 1, onclick: () => nav(1), title: "next (→)", text: "→" }),
      el("span", { class: "id", text: e.id }),
      el("a", { href: e.image, target: "_blank", rel: "noopener", text: "open PNG" }),
      el("button", { type: "button", id: "close", onclick: close, title: "close (Esc)", text: "✕" }));
    const side = el("div", { class: "side" }, el("h2", { id: "d-prompt", text: e.prompt }));
    if (e.negative) side.append(el("p", { class: "neg", text: "negative: " + e.negative }));
    if (e.problem) side.append(el("p", { class: "damaged", text: "⚠ " + e.problem }));
    if (e.scores) {
      side.append(el("h3", { text: "scores" }));
      const comps = el("div", { class: "comps", id: "d-scores" });
      for (const [key, label] of [["total", "total"], ...COMPONENTS, ...TECH.map((k) => [k, k])]) {
        if (!(key in e.scores)) continue;
        comps.append(el("span", { text: label }),
          el("span", { class: "meter" }, el("i", { style: "width:" + Math.max(0, Math.min(100, e.scores[key])).toFixed(0) + "%" })),
          el("span", { text: e.scores[key].toFixed(1) }));
      }
      side.append(comps);
    }
    side.append(el("h3", { text: "lineage" }), lineage(e));
    const inputs = Object.entries(e.inputs || {});
    if (inputs.length) {
      const made = el("ul", { class: "tree", id: "made-from" });
      for (const [role, ids] of inputs) for (const id of ids) made.append(el("li", {}, role + ": ", node(id, false)));
      side.append(el("h3", { text: "made from" }), made);
    }
    const fileNames = Object.keys(e.files || {});
    if (fileNames.length) {
      const list = el("p", { class: "files", id: "d-files" });
      fileNames.forEach((name) => list.append(el("a", { href: e.files[name], target: "_blank", rel: "noopener", download: name.endsWith(".html") ? null : name, text: name }), " "));
      side.append(el("h3", { text: "files" }), list);
    }
    side.append(el("h3", { text: "parameters" }), paramRows(e));
    if (e.parameters) {
      const button = el("button", { type: "button", class: "copy", id: "copy", text: "Copy A1111 parameters" });
      button.addEventListener("click", () => copy(e.parameters, button));
      side.append(el("h3", { text: "A1111 parameters" }), button, el("pre", { class: "infotext", id: "infotext", text: e.parameters }));
    }
    // Small renders (64 px test sets) are scaled up without blurring.
    const small = e.width && e.width < 256 ? "small" : null;
    const full = el("div", { class: "full" }, mediaView(e, small));
    dialog.replaceChildren(head, el("div", { class: "dbody" }, full, side));
    if (!dialog.open) dialog.showModal();
  }
  // What the detail view shows: the video playing, the 3D preview, the texture tiled 2×2 with its
  // maps, the live piece in a frame; the PNG for everything else.
  function mediaView(e, small) {
    const files = e.files || {};
    const png = el("img", { id: "d-image", class: small, src: e.image, alt: e.prompt });
    if (e.media === "video" && files["video.mp4"]) {
      const video = el("video", { id: "d-video", src: files["video.mp4"], poster: e.image, controls: "", loop: "",
        playsinline: "", class: small });
      video.muted = true; // muted autoplay is what browsers allow; the controls unmute
      video.autoplay = true;
      return video;
    }
    if (e.media === "texture") {
      const tiled = el("div", { class: "tiled", id: "d-tiled", title: "tiled 2×2: no seams", style: "background-image:url(\"" + e.image + "\")" });
      const maps = el("div", { class: "maps" });
      for (const name of ["height.png", "normal.png", "roughness.png"]) {
        if (files[name]) maps.append(el("figure", {}, el("img", { src: files[name], alt: name }), el("figcaption", { text: name.replace(".png", "") })));
      }
      return el("div", { class: "texture" }, tiled, maps);
    }
    if (e.media === "interactive" && files["index.html"]) {
      return el("iframe", { id: "d-live", src: files["index.html"], title: "live piece", loading: "lazy" });
    }
    return png;
  }
  function close() {
    if (dialog.open) dialog.close();
  }
  dialog.addEventListener("close", () => { state.id = ""; writeHash(); });
  dialog.addEventListener("click", (ev) => { if (ev.target === dialog) close(); }); // a click on the backdrop
  document.addEventListener("keydown", (ev) => {
    if (!dialog.open) return;
    if (ev.key === "ArrowLeft") document.getElementById("prev")?.click();
    if (ev.key === "ArrowRight") document.getElementById("next")?.click();
  });
  document.addEventListener("click", (ev) => {
    const target = ev.target.closest("[data-open]");
    if (target) { ev.preventDefault(); open(target.dataset.open); return; }
    const figure = ev.target.closest(".tile");
    if (figure) { ev.preventDefault(); open(figure.dataset.id); }
  });

  // ---- controls ----
  function options(select, values) {
    for (const v of values) select.append(el("option", { value: v, text: v }));
    select.hidden = values.length < 2 && !state[select.id];
  }
  const uniq = (key) => [...new Set(entries.map((e) => e[key]).filter(Boolean))].sort();
  options($("project"), uniq("project"));
  options($("style"), uniq("style"));
  options($("backend"), uniq("backend"));
  document.querySelectorAll("#presets a").forEach((a) => a.addEventListener("click", (ev) => {
    ev.preventDefault(); state.preset = a.dataset.preset; refresh();
  }));
  let timer = 0;
  for (const f of FIELDS) {
    $(f).addEventListener("input", () => {
      state[f] = $(f).value.trim();
      clearTimeout(timer);
      timer = setTimeout(refresh, f === "q" ? 120 : 0); // typing in the search box redraws once it pauses
    });
  }
  $("reset").addEventListener("click", () => { FIELDS.forEach((f) => { state[f] = ""; $(f).value = ""; }); refresh(); });
  window.addEventListener("hashchange", () => { readHash(); syncControls(); refresh(); if (state.id) open(state.id); });
  function syncControls() { for (const f of FIELDS) $(f).value = state[f]; }

  $("generated").textContent = DATA.generated;
  const notes = $("notes");
  for (const text of DATA.notes) notes.append(el("p", { class: "note", text: text }));
  readHash();
  syncControls();
  refresh();
  if (state.id) open(state.id);
  window.echoGallery = { shown: () => shown.map((e) => e.id), drawn: () => drawn, open: open, state: state };
})();
