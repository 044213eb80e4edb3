/* bagnet's audit page: a click on a strategy shows its example patches outlined on their images.
   Reads the JSON in #bagnet-data (written by bagnet/audit/report.py); no network, no libraries. */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("bagnet-data").textContent);
  var el = bagnetElement;  // assets/page.js
  function show(row) {
    var id = row.getAttribute("data-strategy");
    var slot = document.getElementById("examples-c" + row.getAttribute("data-class"));
    var open = slot.getAttribute("data-strategy") === id;
    row.parentNode.querySelectorAll("tr.strategy").forEach(function (r) { r.classList.remove("sel"); });
    slot.replaceChildren();
    slot.removeAttribute("data-strategy");
    if (open) return;  // a second click closes it
    row.classList.add("sel");
    slot.setAttribute("data-strategy", id);
    slot.appendChild(el("p", {"class": "hint"}, "Strategy #" + id + ": its strongest patches, outlined on their " +
                        "images"));
    var list = el("div", {"class": "neighbours"});
    (data.strategies[id] || []).forEach(function (e) {
      var fig = el("figure", {"class": "example", "data-image": e.image}), wrap = el("div", {"class": "frame"});
      var img = el("img", {src: data.images[e.image], alt: e.source});
      wrap.appendChild(img);
      img.addEventListener("load", function () {
        var w = img.naturalWidth, h = img.naturalHeight, b = e.box, o = el("div", {"class": "outline"});
        o.style.top = 100 * b[0] / h + "%"; o.style.left = 100 * b[1] / w + "%";
        o.style.height = 100 * (b[2] - b[0]) / h + "%"; o.style.width = 100 * (b[3] - b[1]) / w + "%";
        wrap.appendChild(o);
      });
      fig.appendChild(wrap);
      fig.appendChild(el("figcaption", {}, e["class"] + " · " + (e.evidence >= 0 ? "+" : "") + e.evidence.toFixed(2) +
                         " · " + e.source));
      list.appendChild(fig);
    });
    slot.appendChild(list);
  }
  document.querySelectorAll("tr.strategy").forEach(function (row) {
    row.querySelector("button").addEventListener("click", function () { show(row); });
  });
})();
