// The words the page's scripts show, in the page's language. The server puts them in
// <script type="application/json" id="page-words"> (webapp/page_words.py: data, never run, so the CSP allows it);
// a text missing from it is shown as written (English). Placeholders are %(name)s, as in the templates.
(function () {
  "use strict";
  let words = null;
  window.privascanWords = function (text, values) {
    if (words === null) {
      const node = document.getElementById("page-words");
      try { words = node ? JSON.parse(node.textContent) : {}; } catch (error) { words = {}; }
    }
    const shown = words[text] || text;
    return shown.replace(/%\((\w+)\)s/g, function (match, name) {
      return values && Object.prototype.hasOwnProperty.call(values, name) ? String(values[name]) : match;
    });
  };
})();
