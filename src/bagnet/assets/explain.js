/* bagnet's interactive explanation page: point at a pixel to see its patch and that patch's evidence.
   Reads the JSON in #bagnet-data (written by bagnet/report.py); no network, no libraries. */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("bagnet-data").textContent);
  var q = data.patch_size, s = data.stride, o = data.origin;

  function bytes(b64) {
    var bin = atob(b64), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }
  function fmt(v, d) { return (v >= 0 ? "+" : "") + v.toFixed(d); }
  var el = bagnetElement;  // assets/page.js
  function loadImage(uri) {
    return new Promise(function (resolve, reject) {
      var im = new Image();
      im.onload = function () { resolve(im); };
      im.onerror = reject;
      im.src = uri;
    });
  }
  function pixels(im) {
    var c = document.createElement("canvas");
    c.width = im.naturalWidth; c.height = im.naturalHeight;
    var g = c.getContext("2d");
    g.drawImage(im, 0, 0);
    return g.getImageData(0, 0, c.width, c.height).data;
  }
  // matplotlib's "bwr": blue (0, 0, 1) -> white -> red (1, 0, 0), linear in each half
  var LUT = new Float32Array(256 * 3);
  for (var t = 0; t < 256; t++) {
    var x = t / 255;
    LUT[3 * t] = x < 0.5 ? 2 * x : 1;
    LUT[3 * t + 1] = x < 0.5 ? 2 * x : 2 * (1 - x);
    LUT[3 * t + 2] = x < 0.5 ? 1 : 2 * (1 - x);
  }

  function Viewer(section, info) {
    this.section = section; this.info = info;
    this.gh = info.grid[0]; this.gw = info.grid[1];
    this.cells = new Float32Array(bytes(info.cells));
    this.k = 0; this.cell = null; this.pinned = false; this.ready = null;
    this.zoom = Math.min(3, 460 / Math.max(info.w, info.h));
    if (info.neighbours) {
      this.nIds = new Int32Array(bytes(info.neighbours.ids));
      this.nScores = new Float32Array(bytes(info.neighbours.scores));
    }
    this.build();
  }
  Viewer.prototype.value = function (k, i, j) { return this.cells[(k * this.gh + i) * this.gw + j]; };
  Viewer.prototype.build = function () {
    var self = this, info = this.info, root = el("div", {"class": "explorer"});
    var stage = el("div", {"class": "stage", tabindex: "0", "data-pinned": "0",
                           "aria-label": "image: point at a pixel to see its patch; click to pin; arrow keys move"});
    stage.style.width = info.w * this.zoom + "px"; stage.style.aspectRatio = info.w + " / " + info.h;
    this.canvas = el("canvas", {width: info.w, height: info.h});
    this.canvas.style.width = "100%"; this.canvas.style.height = "100%";
    this.outline = el("div", {"class": "outline"});
    stage.appendChild(this.canvas); stage.appendChild(this.outline);
    this.stage = stage;
    var panel = el("div", {"class": "panel"});
    var classes = el("div", {"class": "classes", role: "radiogroup", "aria-label": "class whose map is shown"});
    info.classes.forEach(function (c, k) {
      var label = el("label"), radio = el("input", {type: "radio", name: "cls" + info.n, value: String(k)});
      if (k === 0) radio.checked = true;
      radio.addEventListener("change", function () { self.select(k); });
      label.appendChild(radio);
      label.appendChild(document.createTextNode(" " + c.name + " (" + (100 * c.probability).toFixed(1) + " %)"));
      classes.appendChild(label);
    });
    panel.appendChild(classes);
    var legend = el("p", {"class": "hint"});
    legend.appendChild(document.createTextNode("against"));
    legend.appendChild(el("span", {"class": "legend"}));
    legend.appendChild(document.createTextNode("for the class, clipped at ±"));
    this.scaleText = el("span", {"class": "scale"});
    legend.appendChild(this.scaleText);
    panel.appendChild(legend);
    this.where = el("p", {"class": "where"}, "Point at the image: the patch under the pointer is outlined and its " +
                    "evidence shown here; click to pin it.");
    panel.appendChild(this.where);
    this.bars = el("table", {"class": "bars"});
    panel.appendChild(this.bars);
    this.chips = el("div");
    panel.appendChild(this.chips);
    if (info.neighbours) {
      panel.appendChild(el("p", {"class": "hint"}, "Nearest patches in the index (cosine similarity of the " +
                           "patch features; dataset label):"));
      this.near = el("div", {"class": "neighbours"});
      panel.appendChild(this.near);
    }
    root.appendChild(stage); root.appendChild(panel);
    this.section.querySelector(".explorer-slot").appendChild(root);
    stage.addEventListener("mousemove", function (ev) { if (!self.pinned) self.point(ev); });
    stage.addEventListener("click", function (ev) {
      var c = self.at(ev);
      if (self.pinned && self.cell && c[0] === self.cell[0] && c[1] === self.cell[1]) { self.pin(false); return; }
      self.show(c[0], c[1]); self.pin(true);
    });
    stage.addEventListener("keydown", function (ev) {
      var d = {ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1]}[ev.key];
      if (!d) return;
      ev.preventDefault();
      var c = self.cell || [0, 0];
      self.show(Math.min(Math.max(c[0] + d[0], 0), self.gh - 1), Math.min(Math.max(c[1] + d[1], 0), self.gw - 1));
      self.pin(true);
    });
    this.renderChips();
  };
  Viewer.prototype.at = function (ev) {
    var r = this.stage.getBoundingClientRect();
    var x = (ev.clientX - r.left) / r.width * this.info.w, y = (ev.clientY - r.top) / r.height * this.info.h;
    var c = (q - 1) / 2;  // the patch of cell (i, j) spans rows o + s*i ... o + s*i + q - 1; nearest centre wins
    var i = Math.round((y - o - c) / s), j = Math.round((x - o - c) / s);
    return [Math.min(Math.max(i, 0), this.gh - 1), Math.min(Math.max(j, 0), this.gw - 1)];
  };
  Viewer.prototype.point = function (ev) { var c = this.at(ev); this.show(c[0], c[1]); };
  Viewer.prototype.pin = function (on) {
    this.pinned = on; this.stage.setAttribute("data-pinned", on ? "1" : "0");
  };
  Viewer.prototype.show = function (i, j) {
    var info = this.info, self = this;
    this.cell = [i, j];
    this.section.setAttribute("data-cell", i + "," + j);
    var top = o + s * i, left = o + s * j;
    var box = this.outline.style;
    // in percent of the image: the stage may be shown smaller than its natural zoom (a narrow window)
    box.display = "block"; box.top = 100 * top / info.h + "%"; box.left = 100 * left / info.w + "%";
    box.width = 100 * q / info.w + "%"; box.height = 100 * q / info.h + "%";
    this.where.textContent = "Cell (" + i + ", " + j + "): the " + q + "×" + q + " px patch at rows " + top + "–" +
      (top + q - 1) + ", columns " + left + "–" + (left + q - 1) + (this.pinned ? " (pinned)" : "") + ".";
    var cells = this.gh * this.gw, max = 0;
    info.classes.forEach(function (c, k) { max = Math.max(max, Math.abs(self.value(k, i, j))); });
    var head = el("tr");
    head.appendChild(el("th", {}, "class"));
    head.appendChild(el("th", {colspan: "2"}, "evidence of this patch"));
    head.appendChild(el("th", {}, "share of its logit"));
    var rows = [head];
    info.classes.forEach(function (c, k) {
      var v = self.value(k, i, j), share = v / cells / c.logit;
      var tr = el("tr", {"class": "ev" + (k === self.k ? " sel" : ""), "data-class": String(k),
                         "data-evidence": String(v), "data-share": String(share)});
      tr.appendChild(el("td", {}, c.name));
      var track = el("div", {"class": "track"}), fill = el("div", {"class": "fill " + (v >= 0 ? "pos" : "neg")});
      var width = max > 0 ? 50 * Math.abs(v) / max : 0;
      fill.style.width = width + "%"; fill.style.left = (v >= 0 ? 50 : 50 - width) + "%";
      track.appendChild(el("div", {"class": "zero"})); track.appendChild(fill);
      var td = el("td", {"class": "bar-cell"}); td.appendChild(track); tr.appendChild(td);
      tr.appendChild(el("td", {"class": "num value"}, fmt(v, 3)));
      var shown = isFinite(share) ? (100 * share).toFixed(2) + " % of " + c.logit.toFixed(3) : "— (logit 0)";
      tr.appendChild(el("td", {"class": "num share", title: "evidence / " + cells + " cells / logit " +
                               c.logit.toFixed(3)}, shown));
      rows.push(tr);
    });
    this.bars.replaceChildren.apply(this.bars, rows);
    if (this.near) this.renderNeighbours(i, j);
  };
  Viewer.prototype.select = function (k) {
    this.k = k;
    this.section.setAttribute("data-class", String(k));
    this.draw();
    this.renderChips();
    if (this.cell) this.show(this.cell[0], this.cell[1]);
  };
  Viewer.prototype.load = function () {
    var self = this, info = this.info;
    if (!this.ready) {
      this.ready = Promise.all([loadImage(info.image)].concat(info.classes.map(function (c) {
        return loadImage(c.map);
      }))).then(function (images) {
        self.image = images[0];
        var rgb = pixels(images[0]);
        self.base = new Float32Array(info.w * info.h);
        for (var p = 0; p < self.base.length; p++) {
          var grey = (0.299 * rgb[4 * p] + 0.587 * rgb[4 * p + 1] + 0.114 * rgb[4 * p + 2]) / 255;
          self.base[p] = 0.55 + 0.4 * grey;  // the image faded, as in the PNG overlays
        }
        self.maps = images.slice(1).map(pixels);
        self.renderChips();
      });
    }
    return this.ready.then(function () { self.draw(); });
  };
  Viewer.prototype.draw = function () {
    if (!this.maps) { this.load(); return; }
    var g = this.canvas.getContext("2d"), out = g.createImageData(this.info.w, this.info.h), map = this.maps[this.k];
    for (var p = 0; p < this.base.length; p++) {
      var idx = map[4 * p], a = Math.abs(idx / 255 * 2 - 1), b = (1 - a) * this.base[p];
      out.data[4 * p] = 255 * (b + a * LUT[3 * idx]);
      out.data[4 * p + 1] = 255 * (b + a * LUT[3 * idx + 1]);
      out.data[4 * p + 2] = 255 * (b + a * LUT[3 * idx + 2]);
      out.data[4 * p + 3] = 255;
    }
    g.putImageData(out, 0, 0);
    this.scaleText.textContent = this.info.classes[this.k].scale.toPrecision(3) + " (" + data.percentile +
      "th percentile of |evidence|)";
    this.section.setAttribute("data-drawn", String(this.k));
  };
  Viewer.prototype.renderChips = function () {
    var self = this, info = this.info, k = this.k;
    this.chips.replaceChildren();
    [["for", info.support[k]], ["against", info.oppose[k]]].forEach(function (pair) {
      if (!pair[1].length) return;
      var row = el("div", {"class": "chips"});
      row.appendChild(el("span", {"class": "label"}, pair[0] + " " + info.classes[k].name + ":"));
      pair[1].forEach(function (cell) {
        var c = el("canvas", {width: 2 * q, height: 2 * q, title: "cell (" + cell[0] + ", " + cell[1] + ")",
                              "data-cell": cell[0] + "," + cell[1]});
        if (self.image) {
          c.getContext("2d").imageSmoothingEnabled = false;
          c.getContext("2d").drawImage(self.image, o + s * cell[1], o + s * cell[0], q, q, 0, 0, 2 * q, 2 * q);
        }
        c.addEventListener("click", function () {
          self.show(cell[0], cell[1]); self.pin(true); self.stage.focus({preventScroll: true});
        });
        row.appendChild(c);
      });
      self.chips.appendChild(row);
    });
  };
  Viewer.prototype.renderNeighbours = function (i, j) {
    var n = this.info.neighbours, kk = n.k, base = (i * this.gw + j) * kk, tiles = [];
    for (var r = 0; r < kk; r++) {
      var id = this.nIds[base + r];
      if (id < 0) continue;
      var p = n.patches[id], fig = el("figure", {"class": "neighbour", "data-patch": String(id)});
      var tile = el("div", {"class": "tile", title: p.source});
      var col = id % n.columns, row = Math.floor(id / n.columns), z = 72 / n.tile;
      tile.style.backgroundImage = "url(" + n.sprite + ")";
      tile.style.backgroundSize = n.columns * n.tile * z + "px auto";
      tile.style.backgroundPosition = -col * n.tile * z + "px " + -row * n.tile * z + "px";
      fig.appendChild(tile);
      fig.appendChild(el("figcaption", {}, p.label + " · " + this.nScores[base + r].toFixed(2)));
      tiles.push(fig);
    }
    this.near.replaceChildren.apply(this.near, tiles);
  };

  var viewers = [];
  data.images.forEach(function (info, n) {
    var section = document.getElementById("img" + n);
    if (!section) return;
    info.n = n;
    viewers.push(new Viewer(section, info));
  });
  // draw each image when it first comes into view: a report of hundreds of images opens at once
  if ("IntersectionObserver" in window) {
    var seen = new IntersectionObserver(function (entries) {
      entries.forEach(function (e) {
        if (e.isIntersecting) { seen.unobserve(e.target); viewers[+e.target.getAttribute("data-v")].load(); }
      });
    }, {rootMargin: "400px"});
    viewers.forEach(function (v, n) { v.stage.setAttribute("data-v", String(n)); seen.observe(v.stage); });
  } else {
    viewers.forEach(function (v) { v.load(); });
  }
  document.querySelectorAll("img[data-thumb]").forEach(function (im) {
    var info = data.images[+im.getAttribute("data-thumb")];
    if (info) im.src = info.image;
  });
  window.bagnetViewers = viewers;
})();
