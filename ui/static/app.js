// cluster-backup web view: the copy buttons. Everything else is plain
// links and forms, so the view works with scripts off.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var status = document.createElement("p");
  status.className = "status";
  status.setAttribute("role", "status");
  status.setAttribute("aria-live", "polite");
  document.body.appendChild(status);
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var input = document.getElementById(button.getAttribute("data-copy"));
      input.select();
      var done = function () { status.textContent = "Copied: " + input.value; };
      if (navigator.clipboard && navigator.clipboard.writeText) {
        navigator.clipboard.writeText(input.value).then(done, function () {
          status.textContent = "Select the command and copy it.";
        });
      } else {
        status.textContent = "Select the command and copy it.";
      }
    });
  });
});
