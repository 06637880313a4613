// Progressive enhancement only: every page works without this file.
// "Select all" on the alert inbox ticks every open alert on the page.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("input.select-all").forEach(function (all) {
    all.addEventListener("change", function () {
      var form = all.closest("form");
      form.querySelectorAll("input[type=checkbox][name=id]").forEach(function (box) { box.checked = all.checked; });
    });
  });
});
