// The review: the reviewer's decisions as a list of actions (undo pops one, redo
// pushes it back), replayed over the method's clusters. Kept in localStorage under
// the run's key, exported as review.json (see skanomclust/review.py) and labels.csv.

const STORE_KEY = "skanomclust-review:" + D.run.key;
const S = {
  of: IM.cluster.map(String), // current group of each image
  names: {}, // group id -> name
  actions: [],
  redo: [],
  selected: new Set(),
  anchor: null, // last image clicked, for shift-click ranges
  focus: null,
  shown: {},
  sort: "score",
};
D.clusters.forEach((c) => { S.names[String(c.id)] = c.name; });
S.names[NO_DEFECT] = "no defect";

function membersByGroup() {
  const members = new Map();
  S.of.forEach((g, i) => {
    if (!members.has(g)) members.set(g, []);
    members.get(g).push(i);
  });
  return members;
}
// Method's clusters by id, then the reviewer's new ones, then "no defect".
function groupOrder(members = membersByGroup()) {
  const rank = (g) => (g === NO_DEFECT ? 3e9 : /^\d+$/.test(g) ? Number(g) : 1e9 + Number(g.slice(3)));
  return [...members.keys()].sort((a, b) => rank(a) - rank(b));
}
function newGroupId() {
  const used = Object.keys(S.names).filter((g) => g.startsWith("new")).map((g) => Number(g.slice(3)));
  return "new" + (Math.max(0, ...used) + 1);
}

function apply(action, forward) {
  if (action.type === "rename") {
    S.names[action.cluster] = forward ? action.to : action.from;
    return;
  }
  if (forward) {
    if (action.name && !(action.to in S.names)) S.names[action.to] = action.name;
    action.images.forEach((i) => { S.of[i] = action.to; });
  } else {
    action.images.forEach((i, j) => { S.of[i] = action.from[j]; });
  }
}
function describe(a) {
  const n = a.images ? plural(a.images.length, "image") : "";
  return {
    rename: () => `renamed “${a.from}” to “${a.to}”`,
    move: () => `moved ${n} to ${S.names[a.to]}`,
    no_defect: () => `marked ${n} as no defect`,
    merge: () => `merged ${S.names[a.source]} into ${S.names[a.to]}`,
    split: () => `split ${n} off ${S.names[a.source]} into ${S.names[a.to]}`,
  }[a.type]();
}
function perform(action) {
  apply(action, true);
  S.actions.push(action);
  S.redo = [];
  changed(`Done: ${describe(action)}. Undo with u.`);
}
function undo() {
  const action = S.actions.pop();
  if (!action) return;
  apply(action, false);
  S.redo.push(action);
  changed(`Undone: ${describe(action)}.`);
}
function redo() {
  const action = S.redo.pop();
  if (!action) return;
  apply(action, true);
  S.actions.push(action);
  changed(`Redone: ${describe(action)}.`);
}
function changed(message) {
  save();
  refresh();
  if (message) $("status").textContent = message[0].toUpperCase() + message.slice(1);
}

function moveImages(indices, to, type = "move", extra = {}) {
  const images = indices.filter((i) => S.of[i] !== to);
  if (!images.length) return;
  const from = images.map((i) => S.of[i]);
  S.selected.clear();
  perform({ type, images, from, to, ...extra });
}
function targets() {
  const sel = [...S.selected];
  return sel.length ? sel : S.focus !== null ? [S.focus] : [];
}
function moveTo(gid) {
  closeMoveMenu();
  if (gid === "new") {
    const id = newGroupId();
    moveImages(targets(), id, "move", { name: `new cluster ${id.slice(3)}` });
  } else if (gid === NO_DEFECT) {
    moveImages(targets(), NO_DEFECT, "no_defect");
  } else {
    moveImages(targets(), gid);
  }
}
function merge(source, to, suggestion) {
  const images = S.of.flatMap((g, i) => (g === source ? [i] : []));
  if (!images.length || source === to) return;
  perform({ type: "merge", source, images, from: images.map(() => source), to, suggestion });
}
function split(suggestion) {
  const s = D.suggestions[suggestion];
  const gid = String(s.cluster);
  const images = s.images.filter((i) => S.of[i] === gid);
  if (!images.length) return;
  const to = newGroupId();
  perform({ type: "split", source: gid, images, from: images.map(() => gid), to, name: `${S.names[gid]} (split)`, suggestion });
}
function rename(gid, name) {
  name = name.trim();
  if (!name) {
    $("status").textContent = "A cluster needs a name: the old one is kept.";
    refresh();
  } else if (name !== S.names[gid]) {
    perform({ type: "rename", cluster: gid, from: S.names[gid], to: name });
  }
}

// Suggestions come from Python (close centres, spread-out clusters); accepting one is
// an ordinary action, undone like any other.
function renderReview() {
  const members = membersByGroup();
  const accepted = new Set(S.actions.filter((a) => a.suggestion !== undefined).map((a) => a.suggestion));
  const items = D.suggestions.map((s, k) => {
    let text, button, valid;
    if (s.kind === "merge") {
      const [a, b] = s.clusters.map(String);
      valid = members.has(a) && members.has(b);
      text = `Merge <b>${esc(S.names[a])}</b> and <b>${esc(S.names[b])}</b>: their centres are ${fmt(s.ratio, 2)}× their spreads added up apart, so their images overlap.`;
      button = `<button type="button" data-merge="${k}">Merge</button>`;
    } else {
      const gid = String(s.cluster);
      valid = members.has(gid) && s.images.some((i) => S.of[i] === gid);
      text = `Split <b>${esc(S.names[gid])}</b>: it is ${fmt(s.spread_ratio, 1)}× as spread out as the typical cluster, and two-means cuts ${plural(s.images.length, "image")} off it cleanly (silhouette ${fmt(s.silhouette, 2)}).`;
      button = `<button type="button" data-split="${k}">Split</button>`;
    }
    const done = accepted.has(k);
    const state = done ? "<i>accepted</i>" : valid ? button : "<i>no longer applies</i>";
    return `<div class="suggestion${done || !valid ? " done" : ""}">${state}<span>${text}</span></div>`;
  });
  $("review").innerHTML = `<h2 id="review-title">Review</h2>
<p class="caption">Correct the clusters below: rename them (click a name), merge them, move images between them or mark images as showing no defect. Your work is kept in this browser; download <b>review.json</b> and run <code>skanomclust apply-review RUN review.json --output OUT</code> to get a folder per name and a model that predicts the names. Select images with their check box, a click beside the picture, shift-click (range) or ctrl-click; a click on a picture enlarges it.</p>
<details open><summary>Keys</summary><div class="keys">
<span><kbd>←</kbd> <kbd>→</kbd> <kbd>↑</kbd> <kbd>↓</kbd></span><span>move between images (with <kbd>shift</kbd>: select along)</span>
<span><kbd>space</kbd></span><span>select or unselect the image</span>
<span><kbd>enter</kbd></span><span>enlarge the image (<kbd>←</kbd> <kbd>→</kbd> step, <kbd>esc</kbd> closes)</span>
<span><kbd>m</kbd></span><span>move the selected images to… (then a digit, <kbd>0</kbd> for a new cluster, <kbd>n</kbd> for no defect)</span>
<span><kbd>n</kbd></span><span>mark the selected images as no defect</span>
<span><kbd>r</kbd></span><span>rename the image's cluster</span>
<span><kbd>a</kbd></span><span>select all images of the cluster</span>
<span><kbd>u</kbd> or <kbd>ctrl</kbd>+<kbd>z</kbd></span><span>undo; <kbd>shift</kbd>+<kbd>u</kbd> or <kbd>ctrl</kbd>+<kbd>y</kbd> redo</span>
<span><kbd>esc</kbd></span><span>unselect all</span></div></details>
<h3>Suggestions</h3>${items.length ? items.join("") : '<p class="caption">None: no two clusters overlap and none is much more spread out than the others.</p>'}
<p><button type="button" id="start-over">Start over</button> <span class="note">forgets every decision on this page</span></p>`;
}

function updateToolbar() {
  const n = S.selected.size;
  $("selection-count").textContent = n ? `${plural(n, "image")} selected` : "No image selected";
  $("move-button").disabled = !targets().length;
  $("no-defect-button").disabled = !targets().length;
  $("undo-button").disabled = !S.actions.length;
  $("redo-button").disabled = !S.redo.length;
}
function refresh() {
  const y = window.scrollY;
  renderClusters();
  renderMap();
  renderReview();
  updateToolbar();
  window.scrollTo(0, y);
  const card = S.focus !== null && $(`img-${S.focus}`);
  if (card && document.activeElement === document.body) card.focus({ preventScroll: true });
}

function openMoveMenu() {
  if (!targets().length) return;
  const groups = groupOrder().filter((g) => g !== NO_DEFECT);
  const item = (key, gid, label, colour = colourOf(gid)) => `<button type="button" role="menuitem" data-to="${esc(gid)}"><kbd>${key}</kbd>${swatch(colour)}${esc(label)}</button>`;
  const menu = $("move-menu");
  menu.innerHTML = groups.slice(0, 9).map((g, k) => item(k + 1, g, S.names[g])).join("")
    + groups.slice(9).map((g) => item("·", g, S.names[g])).join("")
    + item(0, "new", "a new cluster", colourOf(newGroupId())) + item("n", NO_DEFECT, "no defect");
  menu.hidden = false;
  $("move-button").setAttribute("aria-expanded", "true");
  menu.querySelector("button").focus();
}
function closeMoveMenu() {
  $("move-menu").hidden = true;
  $("move-button").setAttribute("aria-expanded", "false");
}
function menuKey(e) {
  const buttons = [...$("move-menu").querySelectorAll("button")];
  const k = buttons.indexOf(document.activeElement);
  if (e.key === "Escape") closeMoveMenu();
  else if (e.key === "ArrowDown" || e.key === "ArrowUp") buttons[(k + (e.key === "ArrowDown" ? 1 : -1) + buttons.length) % buttons.length].focus();
  else if (/^[0-9]$/.test(e.key)) { const b = buttons.find((x) => x.textContent.startsWith(e.key)); if (b) b.click(); }
  else if (e.key === "n") moveTo(NO_DEFECT);
  else return false;
  e.preventDefault();
  return true;
}

function setFocus(i) {
  const old = S.focus !== null && $(`img-${S.focus}`);
  if (old) old.tabIndex = -1;
  S.focus = i;
  const card = $(`img-${i}`);
  if (card) { card.tabIndex = 0; card.focus(); }
  updateToolbar();
}
function select(i, how) {
  const order = [...document.querySelectorAll("#clusters .card")].map((c) => Number(c.dataset.i));
  if (how === "range" && S.anchor !== null && order.includes(S.anchor)) {
    const [a, b] = [order.indexOf(S.anchor), order.indexOf(i)].sort((x, y) => x - y);
    order.slice(a, b + 1).forEach((j) => S.selected.add(j));
  } else if (how === "only") {
    S.selected = new Set([i]);
    S.anchor = i;
  } else {
    S.selected.has(i) ? S.selected.delete(i) : S.selected.add(i);
    S.anchor = i;
  }
  document.querySelectorAll("#clusters .card").forEach((c) => {
    const on = S.selected.has(Number(c.dataset.i));
    c.setAttribute("aria-selected", on);
    c.querySelector(".select").checked = on;
  });
  setFocus(i);
}
function moveFocus(key, extend) {
  const cards = [...document.querySelectorAll("#clusters .card")];
  if (!cards.length) return;
  let k = cards.findIndex((c) => Number(c.dataset.i) === S.focus);
  if (k < 0) k = 0;
  else if (key === "ArrowLeft") k = Math.max(0, k - 1);
  else if (key === "ArrowRight") k = Math.min(cards.length - 1, k + 1);
  else {
    // The nearest card in the row above or below, by position on the screen.
    const here = cards[k].getBoundingClientRect();
    const down = key === "ArrowDown";
    let best = k, bestScore = Infinity;
    cards.forEach((c, j) => {
      const r = c.getBoundingClientRect();
      const dy = down ? r.top - here.top : here.top - r.top;
      if (dy <= 4) return;
      const score = dy * 10 + Math.abs(r.left + r.width / 2 - here.left - here.width / 2);
      if (score < bestScore) { best = j; bestScore = score; }
    });
    k = best;
  }
  const i = Number(cards[k].dataset.i);
  if (extend) select(i, "range"); else setFocus(i);
  cards[k].scrollIntoView({ block: "nearest" });
}

function save() {
  try {
    localStorage.setItem(STORE_KEY, JSON.stringify({ version: 1, saved: new Date().toISOString(), actions: S.actions }));
  } catch (err) {
    $("status").textContent = "This browser does not keep the review (storage refused): download review.json before closing the page.";
  }
}
function restore() {
  let stored = null;
  try { stored = JSON.parse(localStorage.getItem(STORE_KEY) || "null"); } catch (err) { return; }
  if (!stored || !Array.isArray(stored.actions) || !stored.actions.length) return;
  const ok = (a) => a.type === "rename" || (Array.isArray(a.images) && a.images.every((i) => Number.isInteger(i) && i >= 0 && i < N));
  if (!stored.actions.every(ok)) return;
  stored.actions.forEach((a) => { apply(a, true); S.actions.push(a); });
  $("status").textContent = `Restored ${plural(S.actions.length, "review step")} kept in this browser (${stored.saved || "earlier"}).`;
}

function download(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
function reviewJson() {
  const members = membersByGroup();
  const images = {};
  IM.path.forEach((p, i) => { images[p] = S.names[S.of[i]]; });
  return JSON.stringify({
    format: "skanomclust-review",
    version: 1,
    run: { input: D.run.input, n_images: N, paths_sha1: D.run.paths_sha1, key: D.run.key, title: D.title },
    saved: new Date().toISOString(),
    clusters: groupOrder(members).map((g) => ({ id: g, name: S.names[g], size: members.get(g).length })),
    images,
    actions: S.actions,
  }, null, 1);
}
function labelsCsv() {
  const cell = (v) => (/[",\r\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v);
  return "path,name\r\n" + IM.path.map((p, i) => `${cell(p)},${cell(S.names[S.of[i]])}\r\n`).join("");
}

document.addEventListener("click", (e) => {
  const t = e.target;
  const open = t.closest("[data-open]");
  const card = t.closest("#clusters .card");
  if (card && (e.shiftKey || e.ctrlKey || e.metaKey || !open)) {
    select(Number(card.dataset.i), e.shiftKey ? "range" : "toggle");
  } else if (open) {
    openLightbox(Number(open.dataset.open));
  } else if (t.closest(".maps circle")) {
    openLightbox(Number(t.closest("circle").dataset.i));
  } else if (t.closest(".select-all")) {
    const gid = t.closest(".cluster").dataset.group;
    S.of.forEach((g, i) => { if (g === gid) S.selected.add(i); });
    refresh();
  } else if (t.closest(".more")) {
    const gid = t.closest(".more").dataset.group;
    S.shown[gid] = (S.shown[gid] || PAGE) + PAGE;
    refresh();
  } else if (t.closest("#move-menu button")) {
    moveTo(t.closest("button").dataset.to);
  } else if (t.closest("[data-merge]")) {
    const k = Number(t.closest("[data-merge]").dataset.merge);
    const [a, b] = D.suggestions[k].clusters.map(String);
    merge(b, a, k);
  } else if (t.closest("[data-split]")) {
    split(Number(t.closest("[data-split]").dataset.split));
  } else if (t.id === "start-over" && window.confirm("Forget every decision made on this page?")) {
    while (S.actions.length) apply(S.actions.pop(), false);
    changed("Started over: the clusters are the method's again.");
  }
  if (!t.closest(".menu-holder")) closeMoveMenu();
});
document.addEventListener("change", (e) => {
  const t = e.target;
  if (t.classList.contains("cluster-name")) rename(t.closest(".cluster").dataset.group, t.value);
  else if (t.classList.contains("merge-into") && t.value) merge(t.closest(".cluster").dataset.group, t.value);
});
document.addEventListener("keydown", (e) => {
  const t = e.target;
  if ($("lightbox").open) {
    if (e.key === "ArrowLeft" || e.key === "ArrowRight") stepLightbox(e.key === "ArrowLeft" ? -1 : 1);
    return;
  }
  if (!$("move-menu").hidden && menuKey(e)) return;
  if (t.matches("input[type=text], select, textarea")) {
    if (e.key === "Enter" && t.classList.contains("cluster-name")) t.blur();
    return;
  }
  const ctrl = e.ctrlKey || e.metaKey;
  const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
  if (ctrl && (key === "z" || key === "y")) {
    key === "y" || e.shiftKey ? redo() : undo();
    e.preventDefault();
    return;
  }
  if (ctrl || e.altKey) return;
  const onCard = t.classList.contains("card") || t === document.body;
  const card = S.focus !== null ? $(`img-${S.focus}`) : null;
  if (key.startsWith("Arrow") && onCard) moveFocus(key, e.shiftKey);
  else if (key === " " && onCard && S.focus !== null) select(S.focus, "toggle");
  else if (key === "Enter" && t.classList.contains("card")) openLightbox(S.focus);
  else if (key === "m") openMoveMenu();
  else if (key === "n") moveTo(NO_DEFECT);
  else if (key === "r" && card) card.closest(".cluster").querySelector(".cluster-name").select();
  else if (key === "a" && card) card.closest(".cluster").querySelector(".select-all").click();
  else if (key === "u") e.shiftKey ? redo() : undo();
  else if (key === "Escape") { S.selected.clear(); refresh(); }
  else return;
  e.preventDefault();
});

$("move-button").addEventListener("click", (e) => { e.stopPropagation(); $("move-menu").hidden ? openMoveMenu() : closeMoveMenu(); });
$("no-defect-button").addEventListener("click", () => moveTo(NO_DEFECT));
$("undo-button").addEventListener("click", undo);
$("redo-button").addEventListener("click", redo);
$("download-review").addEventListener("click", () => download("review.json", reviewJson(), "application/json"));
$("download-labels").addEventListener("click", () => download("labels.csv", labelsCsv(), "text/csv"));
$("maps-beside").addEventListener("change", (e) => document.body.classList.toggle("beside", e.target.checked));
$("sort-by").addEventListener("change", (e) => { S.sort = e.target.value; refresh(); });
$("lightbox-close").addEventListener("click", () => $("lightbox").close());
$("lightbox-previous").addEventListener("click", () => stepLightbox(-1));
$("lightbox-next").addEventListener("click", () => stepLightbox(1));
$("lightbox-overlay").addEventListener("change", (e) => { $("lightbox-overlay-map").hidden = !e.target.checked; });
$("lightbox").addEventListener("close", () => { if (S.focus !== null && $(`img-${S.focus}`)) $(`img-${S.focus}`).focus(); });

renderSummary();
renderChoiceOfK();
renderAgreement();
renderSettings();
restore();
refresh();
document.body.dataset.ready = "true"; // for tests and benchmarks: the first render is done
