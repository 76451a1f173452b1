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
