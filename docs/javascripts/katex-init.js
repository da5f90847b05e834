// Renders pymdownx.arithmatex's generic output (\( \) inline, \[ \] display) with the vendored KaTeX,
// on every page load, including Material's instant navigation (document$).
document$.subscribe(() => {
  renderMathInElement(document.body, {
    delimiters: [
      { left: "\\[", right: "\\]", display: true },
      { left: "\\(", right: "\\)", display: false },
    ],
  });
});
