// Submits a form when one of its controls marked data-autosubmit changes (a script file,
// never an inline onchange: the Content-Security-Policy allows no inline handler).
document.addEventListener("change", function (event) {
  var control = event.target.closest && event.target.closest("[data-autosubmit]");
  if (control && control.form) {
    control.form.requestSubmit();
  }
});
