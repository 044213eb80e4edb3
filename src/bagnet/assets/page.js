/* Helpers shared by bagnet's interactive pages (explain.js, audit.js), inlined before the page's own script. */
function bagnetElement(tag, attrs, text) {
  "use strict";
  var e = document.createElement(tag);
  for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}
