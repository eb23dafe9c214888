// The report page: lays out the JSON data that Python wrote into the page
// (#report-data). Figures are never computed here; review.js keeps the reviewer's
// decisions in S and calls refresh() after each one.
"use strict";

const D = JSON.parse(document.getElementById("report-data").textContent);
const IM = D.images;
const N = IM.path.length;
const NO_DEFECT = "no_defect";
const PAGE = 120; // cards drawn per cluster before "Show more": keeps huge runs quick
const $ = (id) => document.getElementById(id);
const MAX_ID = Math.max(-1, ...D.clusters.map((c) => c.id));

function esc(text) {
  const table = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  return String(text).replace(/[&<>"']/g, (c) => table[c]);
}
function plural(count, word, many) {
  return `${count} ${count === 1 ? word : many || word + "s"}`;
}
function fmt(value, digits = 3) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}
function thumbUrl(i) {
  return D.pictures.folder ? `${D.pictures.folder}/${i}t.jpg` : IM.thumb[i];
}
function heatUrl(i) {
  return D.pictures.folder ? `${D.pictures.folder}/${i}m.jpg` : IM.heat[i];
}
// Cluster c always gets palette colour c; groups the reviewer creates continue the palette.
function colourOf(gid) {
  if (gid === NO_DEFECT) return "#8a96a3";
  const p = D.palette;
  if (/^\d+$/.test(gid)) return p[Number(gid) % p.length];
  return p[(MAX_ID + Number(gid.slice(3))) % p.length];
}
function swatch(colour) {
  return `<span class="swatch" style="background:${colour}" aria-hidden="true"></span>`;
}
function figure(value, label) {
  return `<div class="figure"><div class="value">${value}</div><div class="label">${label}</div></div>`;
}
function classTag(i) {
  if (!IM.class) return "";
  const k = IM.class[i];
  return `<span class="tag" style="background:${D.classes.colours[k]}" title="class folder">${esc(D.classes.names[k])}</span>`;
}

function renderSummary() {
  const s = D.summary;
  const m = D.metrics || {};
  const loc = D.localization || {};
  const figures = [
    figure(N, N === 1 ? "image" : "images"),
    figure(s.n_clusters, s.n_clusters === 1 ? "cluster" : "clusters"),
    figure(`${Math.round(100 * s.share_outlined)}%`, "with an outlined region"),
  ];
  if (m.nmi !== undefined) {
    figures.push(figure(fmt(m.nmi), "NMI"), figure(fmt(m.ari), "ARI"), figure(fmt(m.f1), "F1 (matched)"));
  }
  if (loc.pixel_auroc !== undefined) figures.push(figure(fmt(loc.pixel_auroc), "pixel AUROC"));
  if (loc.au_pro !== undefined) figures.push(figure(fmt(loc.au_pro), "AU-PRO"));
  const normal = D.clusters.find((c) => c.normal);
  const normalText = normal
    ? `${swatch(normal.colour)} <b>${esc(normal.name)}</b> is marked <span class="badge">likely normal</span>: the gate found a group of normal-looking images, and this cluster has the lowest anomaly scores.`
    : "No cluster is marked as normal: the normality gate found no separate group of normal-looking images.";
  const rows = D.clusters.map((c) => {
    const share = N ? (100 * c.size) / N : 0;
    let composition = "";
    if (D.classes) {
      const counts = D.classes.names.map(() => 0);
      IM.cluster.forEach((g, i) => { if (g === c.id) counts[IM.class[i]] += 1; });
      composition = `<td><div class="bar">${counts.map((k, j) => k ? `<span style="width:${(100 * k) / Math.max(c.size, 1)}%;background:${D.classes.colours[j]}" title="${esc(D.classes.names[j])}: ${k}"></span>` : "").join("")}</div></td>`;
    }
    return `<tr><td>${swatch(c.colour)} <a href="#group-${c.id}">${esc(c.name)}</a> ${c.normal ? '<span class="badge">likely normal</span>' : ""}</td><td class="num">${c.size}</td><td class="num">${share.toFixed(1)}%</td><td class="num">${fmt(c.median_score)}</td><td class="num">${fmt(c.max_score)}</td>${composition}</tr>`;
  });
  $("summary").innerHTML = `<h2 id="summary-title">Summary</h2><div class="cards">${figures.join("")}</div>
    <p class="gate"><b>Normality gate:</b> ${esc(s.gate || "no decision recorded")}<br>${normalText}</p>
    <h3>Clusters found by the method</h3>
    <table><thead><tr><th>cluster</th><th class="num">images</th><th class="num">share</th><th class="num">median score</th><th class="num">max score</th>${D.classes ? "<th>class folders</th>" : ""}</tr></thead><tbody>${rows.join("")}</tbody></table>
    <p class="caption">Each image got an anomaly map (where it looks unlike the rest of the set) and a descriptor of its most anomalous region; images with similar descriptors form a cluster. An image's score is the maximum of its map; pixels above ${fmt(s.region_threshold)} are outlined.</p>`;
  $("subtitle").textContent = `${plural(N, "image")}${D.run.input ? " from " + D.run.input : ""} in ${plural(s.n_clusters, "cluster")} · generated ${D.generated} by skanomclust`;
}

function renderChoiceOfK() {
  const auto = D.auto_k;
  if (!auto) return;
  // Scores may be negative (the L-method's is minus a fit error): bars span min..max.
  const values = auto.scores.map(([, v]) => v).filter((v) => v !== null);
  const low = Math.min(...values), span = Math.max(...values) - low || 1;
  const width = (v) => (v === null ? 0 : 8 + (152 * (v - low)) / span);
  const rows = auto.scores.map(([k, v]) => `<tr class="${k === auto.chosen ? "chosen" : ""}"><td class="num">${k}</td><td class="num">${fmt(v)}</td><td><div class="kbar" style="width:${width(v)}px"></div></td><td>${k === auto.chosen ? "chosen" : ""}</td></tr>`);
  const section = $("choice-of-k");
  section.hidden = false;
  section.innerHTML = `<h2 id="choice-of-k-title">How the number of clusters was chosen</h2>
    <p class="caption">The number of clusters was chosen automatically: each candidate k is scored by how clearly the spread of the images within their clusters stops falling beyond k clusters (the knee of the curve); higher is better, and k = ${auto.chosen} scored highest.</p>
    <table><thead><tr><th class="num">k</th><th class="num">score</th><th></th><th></th></tr></thead><tbody>${rows.join("")}</tbody></table>`;
}

function renderAgreement() {
  const m = D.metrics;
  if (!m || !m.contingency) return;
  const t = m.contingency;
  const matching = m.matching || {};
  const top = Math.max(1, ...t.counts.flat());
  const head = t.clusters.map((c) => `<th class="num">${swatch(colourOf(String(c)))} ${esc(c)}</th>`).join("");
  const rows = t.classes.map((cls, i) => {
    const cells = t.counts[i].map((k, j) => {
      const shade = k ? (0.08 + (0.6 * k) / top).toFixed(2) : 0;
      const matched = String(matching[cls]) === String(t.clusters[j]) ? " matched" : "";
      return `<td class="num${matched}" style="${k ? `background:rgba(31,95,191,${shade})` : ""}">${k}</td>`;
    });
    return `<tr><td>${esc(cls)}</td>${cells.join("")}<td class="num">${t.counts[i].reduce((a, b) => a + b, 0)}</td></tr>`;
  });
  const section = $("agreement");
  section.hidden = false;
  section.innerHTML = `<h2 id="agreement-title">Agreement with the class folders</h2>
    <table><thead><tr><th>class \\ cluster</th>${head}<th class="num">total</th></tr></thead><tbody>${rows.join("")}</tbody></table>
    <p class="caption">Rows: class folders (used only for scoring, never for fitting); columns: clusters. Outlined cells: the one-to-one matching of classes to clusters behind F1, the share of images in matched cells. NMI and ARI are 1 for a perfect clustering and about 0 for a random one.</p>`;
}

function mapSvg(colour, label, title) {
  const W = 520, H = 400, P = 14;
  const r = N > 600 ? 2.6 : 4.2;
  const dots = [];
  for (let i = 0; i < N; i++) {
    if (IM.x === null || IM.x[i] === null) continue;
    const cx = (P + IM.x[i] * (W - 2 * P)).toFixed(1);
    const cy = (H - P - IM.y[i] * (H - 2 * P)).toFixed(1);
    dots.push(`<circle cx="${cx}" cy="${cy}" r="${r}" fill="${colour(i)}" data-i="${i}"><title>${esc(title(i))}</title></circle>`);
  }
  return `<svg viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${esc(label)}">${dots.join("")}</svg>`;
}
function legend(entries) {
  return `<div class="legend">${entries.map(([text, colour]) => `<span>${swatch(colour)}${esc(text)}</span>`).join("")}</div>`;
}

function renderMap() {
  const section = $("map");
  if (IM.x === null) {
    section.innerHTML = '<h2 id="map-title">Map of the images</h2><p class="caption">No 2-D map was computed for this run.</p>';
    return;
  }
  const shown = IM.x.filter((v) => v !== null).length;
  const title = (i) => `${IM.path[i]}\n${S.names[S.of[i]]}, score ${fmt(IM.score[i])}${IM.class ? ", class " + D.classes.names[IM.class[i]] : ""}`;
  const groups = groupOrder();
  let html = `<figure>${mapSvg((i) => colourOf(S.of[i]), "Map of the image descriptors coloured by cluster", title)}<figcaption>Coloured by cluster (as reviewed)</figcaption>${legend(groups.map((g) => [S.names[g], colourOf(g)]))}</figure>`;
  if (D.classes) {
    html += `<figure>${mapSvg((i) => D.classes.colours[IM.class[i]], "Map of the image descriptors coloured by class folder", title)}<figcaption>Coloured by class folder (not used for clustering)</figcaption>${legend(D.classes.names.map((n, j) => [n, D.classes.colours[j]]))}</figure>`;
  }
  const left = N - shown;
  section.innerHTML = `<h2 id="map-title">Map of the images</h2><div class="maps">${html}</div>
    <p class="caption">Each dot is an image, placed so that images with similar descriptors lie close together (t-SNE, or PCA for a few images). Click a dot to enlarge its image.${left ? ` ${plural(left, "image")} of this large run ${left === 1 ? "is" : "are"} left off the map.` : ""}</p>`;
}

function confTitle(i) {
  const near = IM.nearest[i];
  if (near < 0) return "Only one cluster: no other centre to compare with.";
  const other = S.names[String(near)] || `cluster ${near}`;
  return `Confidence ${Math.round(100 * IM.confidence[i])}%: 1 − (distance of its descriptor to the centre of its cluster) / (distance to the nearest other centre, ${other}). 100% = at the centre of its cluster; 0% = half-way to ${other}, or nearer to it.`;
}

function cardHtml(i) {
  const selected = S.selected.has(i);
  const path = esc(IM.path[i]);
  const w = IM.width[i], h = IM.height[i];
  const origin = String(IM.cluster[i]);
  const sure = S.of[i] !== origin
    ? `<span class="badge moved" title="Moved by you from ${esc(S.names[origin])}">moved</span>`
    : `<span class="conf" title="${esc(confTitle(i))}">${Math.round(100 * IM.confidence[i])}% sure</span>`;
  return `<figure class="card" role="option" id="img-${i}" data-i="${i}" style="--w:${w}px" tabindex="${S.focus === i ? 0 : -1}" aria-selected="${selected}" aria-label="${path}, score ${fmt(IM.score[i])}">
<input type="checkbox" class="select" tabindex="-1" aria-hidden="true" ${selected ? "checked" : ""}>
<div class="pic" data-open="${i}"><img class="thumb" loading="lazy" decoding="async" src="${thumbUrl(i)}" width="${w}" height="${h}" alt="${path}, anomalous region outlined"><img class="heat" loading="lazy" decoding="async" src="${heatUrl(i)}" width="${w}" height="${h}" alt="anomaly map of ${path}"></div>
<figcaption><b title="anomaly score">${fmt(IM.score[i])}</b>${sure}${classTag(i)}<span class="path" title="${path}">${path}</span></figcaption></figure>`;
}

function sortedMembers(members) {
  const key = {
    score: (i) => -IM.score[i],
    typical: (i) => IM.distance[i],
    confidence: (i) => IM.confidence[i],
  }[S.sort];
  return members.slice().sort((a, b) => key(a) - key(b) || a - b);
}

function stripHtml(indices, label) {
  if (!indices.length) return "";
  const items = indices.map((i) => `<button type="button" data-open="${i}" title="${esc(IM.path[i])} (distance to the centre ${fmt(IM.distance[i])})"><img loading="lazy" src="${thumbUrl(i)}" width="${Math.round((72 * IM.width[i]) / IM.height[i])}" height="72" alt="${esc(IM.path[i])}"></button>`);
  return `<div><h3>${label}</h3><div class="strip">${items.join("")}</div></div>`;
}

function clusterHtml(gid, members) {
  const name = S.names[gid];
  const ordered = sortedMembers(members);
  const shown = Math.min(ordered.length, S.shown[gid] || PAGE);
  const byDistance = members.slice().sort((a, b) => IM.distance[a] - IM.distance[b]);
  const k = Math.min(5, Math.floor(members.length / 2));
  const normal = D.summary.normal_cluster !== null && gid === String(D.summary.normal_cluster);
  const others = groupOrder().filter((g) => g !== gid);
  const mergeOptions = others.map((g) => `<option value="${esc(g)}">${esc(S.names[g])}</option>`).join("");
  const median = ordered.map((i) => IM.score[i]).sort((a, b) => a - b)[Math.floor(ordered.length / 2)];
  const rest = ordered.length - shown;
  return `<section class="cluster" id="group-${esc(gid)}" data-group="${esc(gid)}" aria-label="${esc(name)}">
<div class="cluster-head"><h2>${swatch(colourOf(gid))}<input type="text" class="cluster-name" value="${esc(name)}" aria-label="Name of ${esc(name)} (press Enter to rename)"></h2>
<span class="count">${plural(members.length, "image")} (${((100 * members.length) / N).toFixed(1)}%)</span>
${normal ? '<span class="badge" title="the gate found normal-looking images, and this cluster has the lowest scores">likely normal</span>' : ""}
<span class="spacer"></span>
${others.length ? `<label class="inline">Merge into <select class="merge-into" aria-label="Merge ${esc(name)} into another cluster"><option value="">choose…</option>${mergeOptions}</select></label>` : ""}
<button type="button" class="select-all">Select all ${members.length}</button></div>
<p class="caption">Median anomaly score ${fmt(median)}. Sorted ${{ score: "by anomaly score, highest first", typical: "most typical first", confidence: "least confident first" }[S.sort]}.</p>
<div class="strips">${stripHtml(byDistance.slice(0, k), "Most typical")}${stripHtml(byDistance.slice(members.length - k).reverse(), "Least typical")}</div>
<div class="gallery" role="listbox" aria-multiselectable="true" aria-label="Images of ${esc(name)}">${ordered.slice(0, shown).map(cardHtml).join("")}</div>
${rest > 0 ? `<button type="button" class="more" data-group="${esc(gid)}">Show ${Math.min(rest, PAGE)} more of ${rest}</button>` : ""}
</section>`;
}

function renderClusters() {
  const members = membersByGroup();
  $("clusters").innerHTML = groupOrder(members).map((g) => clusterHtml(g, members.get(g))).join("");
  const chips = groupOrder(members).map((g) => `<a href="#group-${esc(g)}">${swatch(colourOf(g))} ${esc(S.names[g])} (${members.get(g).length})</a>`);
  $("nav").innerHTML = `<a href="#summary">Summary</a>${D.auto_k ? '<a href="#choice-of-k">Choice of k</a>' : ""}${D.metrics && D.metrics.contingency ? '<a href="#agreement">Classes</a>' : ""}<a href="#map">Map</a><a href="#review">Review</a><a href="#settings">Settings</a><span class="count">Clusters:</span>${chips.join("")}`;
}

function renderSettings() {
  const row = (k, v) => `<tr><td>${esc(k)}</td><td>${esc(typeof v === "object" && v !== null ? JSON.stringify(v) : v)}</td></tr>`;
  const settings = Object.entries(D.settings || {}).map(([k, v]) => row(k, v));
  const timings = Object.entries(D.timings || {}).map(([k, v]) => row(k, `${v.toFixed(1)} s`));
  $("settings").innerHTML = `<h2 id="settings-title">Settings and timings</h2>
    ${settings.length ? `<table class="settings"><tbody>${settings.join("")}</tbody></table>` : '<p class="caption">No settings were recorded.</p>'}
    ${timings.length ? `<h3>Seconds per step</h3><table class="settings"><tbody>${timings.join("")}</tbody></table>` : ""}`;
  $("footer").textContent = `skanomclust report, format version ${D.version}. Pictures ${D.pictures.folder ? "in the folder " + D.pictures.folder + " beside this file" : "embedded in this file"}.`;
}

// The enlarged view: the image at full size, its outline and map; arrows step through
// the images of its cluster in the gallery's order.
const LB = { list: [], at: 0 };
function openLightbox(i) {
  LB.list = sortedMembers(membersByGroup().get(S.of[i]) || [i]);
  LB.at = Math.max(0, LB.list.indexOf(i));
  showLightbox();
  if (!$("lightbox").open) $("lightbox").showModal();
}
function showLightbox() {
  const i = LB.list[LB.at];
  const original = $("lightbox-original");
  original.onerror = () => { original.onerror = null; original.src = thumbUrl(i); };
  original.onload = () => {
    $("lightbox-size").textContent = `The image, ${original.naturalWidth} × ${original.naturalHeight} pixels`;
  };
  original.src = IM.original[i] || thumbUrl(i);
  original.alt = IM.path[i];
  $("lightbox-overlay-map").src = heatUrl(i);
  $("lightbox-outlined").src = thumbUrl(i);
  $("lightbox-outlined").alt = `${IM.path[i]}, anomalous region outlined`;
  $("lightbox-heat").src = heatUrl(i);
  $("lightbox-heat").alt = `anomaly map of ${IM.path[i]}`;
  $("lightbox-title").textContent = IM.path[i];
  const cls = IM.class ? ` · class ${D.classes.names[IM.class[i]]}` : "";
  const origin = String(IM.cluster[i]);
  // The confidence is about the fitted cluster: a moved image says where it came from instead.
  const sure = S.of[i] !== origin ? `moved by you from ${S.names[origin]}` : `${Math.round(100 * IM.confidence[i])}% sure`;
  $("lightbox-meta").textContent = `${S.names[S.of[i]]} · anomaly score ${fmt(IM.score[i])} · ${sure}${cls} · image ${LB.at + 1} of ${LB.list.length}`;
}
function stepLightbox(delta) {
  LB.at = (LB.at + delta + LB.list.length) % LB.list.length;
  showLightbox();
}
