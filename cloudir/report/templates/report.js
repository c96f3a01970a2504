document.querySelectorAll('input[data-filter]').forEach(function (box) {
  var table = document.getElementById(box.getAttribute('data-filter'));
  if (!table) { return; }
  box.addEventListener('input', function () {
    var needle = box.value.toLowerCase();
    table.querySelectorAll('tbody tr').forEach(function (row) {
      row.style.display = row.textContent.toLowerCase().indexOf(needle) === -1 ? 'none' : '';
    });
  });
});
window.addEventListener('beforeprint', function () {
  document.querySelectorAll('details').forEach(function (d) { d.open = true; });
});
document.body.setAttribute('data-ready', 'true');
