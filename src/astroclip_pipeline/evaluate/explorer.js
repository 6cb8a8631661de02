// The explorer's galaxy panel and gallery (explorer.py writes this file into the page).
// The map, its widgets and the per-galaxy columns are Bokeh's (the "galaxies" data source); the
// embeddings and spectra come from the JSON block #explorer-data. Neighbours are exact: every
// cosine similarity on the page, summed in double precision, ties ordered by row.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("explorer-data").textContent);
  const n = data.n, dim = data.dim, k = data.top_k;

  function bytes(b64) {
    const raw = atob(b64), out = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out.buffer;
  }
  const embedding = {
    image: new Float32Array(bytes(data.image_embedding)),
    spectrum: new Float32Array(bytes(data.spectrum_embedding)),
  };
  const codes = new Int16Array(bytes(data.spectra.codes));
  const wave = data.wavelength, L = wave.length;

  let source = null;
  function galaxies() {
    if (source === null) source = Bokeh.documents[0].get_model_by_name("galaxies");
    return source.data;
  }

  function flux(i) {
    const out = new Array(L), offset = data.spectra.offset[i], scale = data.spectra.scale[i];
    for (let j = 0; j < L; j++) {
      const c = codes[i * L + j];
      out[j] = c === -32768 ? NaN : offset + (c + 32500) * scale;
    }
    return out;
  }

  // Top-k of galaxy i's `query` embedding among every galaxy's `answer` embedding; in a
  // same-modality search the galaxy itself is left out (as astroclip-search does).
  function neighbours(i, query, answer) {
    const q = embedding[query], a = embedding[answer], sims = new Float64Array(n);
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let d = 0; d < dim; d++) s += q[i * dim + d] * a[j * dim + d];
      sims[j] = s;
    }
    const order = [];
    for (let j = 0; j < n; j++) if (!(query === answer && j === i)) order.push(j);
    order.sort((x, y) => sims[y] - sims[x] || x - y);
    return order.slice(0, k).map((j) => ({ index: j, similarity: sims[j] }));
  }

  function fmt(value, digits) {
    return Number.isFinite(value) ? value.toFixed(digits) : "–";
  }

  // A spectrum as an SVG path (gaps where there is no data), with the strong lines at redshift z.
  function spectrumSvg(i, width, height, z, labelled) {
    const f = flux(i), finite = f.filter(Number.isFinite);
    if (finite.length === 0) return '<svg width="' + width + '" height="' + height + '"></svg>';
    const sorted = finite.slice().sort((x, y) => x - y);
    const lo = sorted[Math.floor(0.005 * (sorted.length - 1))], hi = sorted[Math.ceil(0.995 * (sorted.length - 1))];
    const x = (w) => ((w - wave[0]) / (wave[L - 1] - wave[0])) * (width - 4) + 2;
    const y = (v) => height - 2 - ((Math.min(Math.max(v, lo), hi) - lo) / (hi - lo || 1)) * (height - 4);
    let path = "", pen = false;
    for (let j = 0; j < L; j++) {
      if (!Number.isFinite(f[j])) { pen = false; continue; }
      path += (pen ? "L" : "M") + x(wave[j]).toFixed(1) + "," + y(f[j]).toFixed(1);
      pen = true;
    }
    let marks = "";
    if (z !== null && Number.isFinite(z)) {
      for (const [kind, colour] of [["emission", "#1f77b4"], ["absorption", "#d62728"]]) {
        for (const [name, rest] of Object.entries(data.lines[kind])) {
          const observed = rest * (1 + z);
          if (observed < wave[0] || observed > wave[L - 1]) continue;
          const px = x(observed).toFixed(1);
          marks += '<line x1="' + px + '" x2="' + px + '" y1="0" y2="' + height + '" stroke="' + colour +
            '" stroke-dasharray="3,3" stroke-width="0.8" opacity="' + (labelled ? 1 : 0.5) + '"><title>' + name +
            "</title></line>" + (labelled ? '<text x="' + px + '" y="' + (kind === "emission" ? 10 : height - 3) +
            '" fill="' + colour + '" font-size="9">' + name + "</text>" : "");
        }
      }
    }
    return '<svg class="spectrum" width="' + width + '" height="' + height + '">' + marks +
      '<path d="' + path + '" fill="none" stroke="#222" stroke-width="0.8"/></svg>';
  }

  function thumb(i, size) {
    return '<img class="cutout" src="' + galaxies().thumb[i] + '" width="' + size + '" height="' + size + '">';
  }

  function open(i) {
    const g = galaxies(), z = "Z_HP" in g ? g.Z_HP[i] : null;
    let html = '<div class="galaxy" data-index="' + i + '" data-targetid="' + g.TARGETID[i] + '">' +
      "<h2>TARGETID " + g.TARGETID[i] + "</h2><div class=\"head\">" + thumb(i, 160) + "<table class=\"catalogue\">";
    for (const column of data.columns) html += "<tr><th>" + column + "</th><td>" + fmt(g[column][i], 4) + "</td></tr>";
    html += "</table></div>" + spectrumSvg(i, 620, 170, z, true) +
      '<p class="hint">Flux in 1e-17 erg/s/cm²/Å against observed wavelength; dashed: emission (blue) and ' +
      "absorption (red) lines at the catalogue redshift.</p>";
    for (const [pair, [query, answer]] of Object.entries(data.pairs)) {
      html += '<section class="pair" data-pair="' + pair + '"><h3>' + query + " → " + answer + "</h3><ol>";
      for (const { index, similarity } of neighbours(i, query, answer)) {
        html += '<li class="neighbour" data-index="' + index + '" data-targetid="' + g.TARGETID[index] +
          '" data-similarity="' + similarity + '">' + thumb(index, 56) +
          spectrumSvg(index, 170, 56, "Z_HP" in g ? g.Z_HP[index] : null, false) + "<span>" + g.TARGETID[index] +
          "<br>cos " + similarity.toFixed(4) + ("Z_HP" in g ? "<br>z " + fmt(g.Z_HP[index], 3) : "") +
          ("LOGMSTAR" in g ? "<br>log M* " + fmt(g.LOGMSTAR[index], 2) : "") + "</span></li>";
      }
      html += "</ol></section>";
    }
    document.getElementById("galaxy").innerHTML = html + "</div>";
  }

  function openTarget(value) {
    const wanted = String(value).trim();
    if (wanted === "") return;
    const index = galaxies().TARGETID.indexOf(wanted);
    if (index < 0) {
      document.getElementById("galaxy").innerHTML = '<p class="error">TARGETID ' + wanted.replace(/[<>&"]/g, "") +
        " is not among the " + n + " galaxies on this page.</p>";
      return;
    }
    open(index);
  }

  // The galaxy nearest a click on the map (in data units of the map shown).
  function openNearest(geometry) {
    const g = galaxies();
    let best = -1, bestDistance = Infinity;
    for (let j = 0; j < n; j++) {
      const d = (g.x[j] - geometry.x) ** 2 + (g.y[j] - geometry.y) ** 2;
      if (d < bestDistance) { best = j; bestDistance = d; }
    }
    if (best >= 0) open(best);
  }

  function gallery(indices) {
    const box = document.getElementById("gallery");
    if (indices.length === 0) { box.innerHTML = ""; return; }
    const g = galaxies(), shown = indices.slice(0, 300);
    const median = (column) => {
      const v = indices.map((j) => g[column][j]).filter(Number.isFinite).sort((a, b) => a - b);
      return v.length ? v[Math.floor(v.length / 2)] : NaN;
    };
    let html = "<h2>Selection: " + indices.length + " galaxies</h2><p>" +
      ("Z_HP" in g ? "median z " + fmt(median("Z_HP"), 3) : "") +
      ("LOGMSTAR" in g ? ", median log M* " + fmt(median("LOGMSTAR"), 2) : "") +
      (indices.length > shown.length ? "; the first " + shown.length + " shown" : "") + '</p><div class="grid">';
    for (const j of shown) {
      html += '<a href="#" class="member" data-index="' + j + '" title="TARGETID ' + g.TARGETID[j] + '">' +
        thumb(j, 64) + "</a>";
    }
    box.innerHTML = html + "</div>";
  }

  // Clicking a neighbour or a gallery member opens it.
  document.getElementById("explorer-panel").addEventListener("click", (event) => {
    const item = event.target.closest("[data-index]");
    if (item && !item.classList.contains("galaxy")) {
      event.preventDefault();
      open(Number(item.dataset.index));
      window.scrollTo(0, 0);
    }
  });

  window.AstroExplorer = { open, openTarget, openNearest, gallery, neighbours };
})();
