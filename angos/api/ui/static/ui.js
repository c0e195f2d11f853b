// Progressive enhancement only: every page works without this file.
// - Theme links switch the theme in place (the same cookie the /_ui/theme link sets).
// - [data-copy] buttons copy their text (pull commands, digests).
// - Forms with data-confirm ask before they submit (the server asks again on its own page).
"use strict";
document.addEventListener("click", function (event) {
  var link = event.target.closest("[data-theme-choice]");
  if (link) {
    event.preventDefault();
    var choice = link.getAttribute("data-theme-choice");
    if (choice === "system") {
      document.documentElement.removeAttribute("data-theme");
      document.cookie = "angos-theme=; path=/_ui; max-age=0; samesite=lax";
    } else {
      document.documentElement.setAttribute("data-theme", choice);
      document.cookie = "angos-theme=" + choice + "; path=/_ui; max-age=31536000; samesite=lax";
    }
    document.querySelectorAll("[data-theme-choice]").forEach(function (a) {
      if (a === link) { a.setAttribute("aria-current", "true"); } else { a.removeAttribute("aria-current"); }
    });
    return;
  }
  var copy = event.target.closest("[data-copy]");
  if (copy && navigator.clipboard) {
    navigator.clipboard.writeText(copy.getAttribute("data-copy")).then(function () {
      copy.classList.add("copied");
      setTimeout(function () { copy.classList.remove("copied"); }, 1200);
    }, function () {});
  }
});
document.addEventListener("submit", function (event) {
  var form = event.target;
  var question = form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
