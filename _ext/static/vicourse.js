// Before printing (a reader's Ctrl+P, or tools/book_pdf.py), unfold what a
// screen reader of the page unfolds by clicking: solutions and other dropdown
// boxes (sphinx-togglebutton) and folded cells (<details>), so that paper and
// the PDF show them instead of "Click to show".
window.vicourseUnfoldForPrint = function () {
  document.querySelectorAll("details").forEach((details) => { details.open = true; });
  document.querySelectorAll(".toggle-hidden").forEach((box) => {
    box.classList.remove("toggle-hidden");
  });
};
window.addEventListener("beforeprint", window.vicourseUnfoldForPrint);

// Some controls name themselves differently from what they show (WCAG 2.5.3,
// "label in name"; axe-core's label-content-name-mismatch): the search field
// shows "Search Ctrl+K" but is labelled "Search"; a folded cell's toggle shows
// "Show code cell source" but is labelled "Toggle hidden content"; and the
// icons of the colour-mode button carry titles ("Light", "Dark", "System
// Settings") that Font Awesome turns into text inside the button labelled
// "Color mode".  Let the first two be named by what they show, and make the
// icons decoration.
function vicourseLabelInName() {
  document.querySelectorAll(".search-button-field[aria-label], details.hide > summary[aria-label]")
    .forEach((control) => control.removeAttribute("aria-label"));
  document.querySelectorAll(".theme-switch-button .theme-switch").forEach((icon) => {
    icon.removeAttribute("title");
    icon.removeAttribute("aria-labelledby");
    icon.setAttribute("aria-hidden", "true");
    icon.querySelectorAll("title").forEach((title) => title.remove());
  });
}
document.addEventListener("DOMContentLoaded", vicourseLabelInName);
window.addEventListener("load", vicourseLabelInName);
