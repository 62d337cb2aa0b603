// The PACS worklist pane (cxrlm serve --pacs URL): recent chest radiograph studies; "Read" reads one with its prior
// and streams the report into the viewer. The pane stays hidden when the server has no PACS (the route is a 404).
// Uses viewer.js's helpers ($, headers, post, apiError, analyse, openStudy); studies are named by handle, never UID.
"use strict";

async function loadWorklist() {
  const days = encodeURIComponent($("worklist-days").value || "7");
  const response = await fetch("/v1/pacs/worklist?days=" + days, { headers: headers(false) });
  if (response.status === 404) return;
  $("worklist").hidden = false;
  const rows = $("worklist-rows");
  rows.innerHTML = "";
  if (!response.ok) { $("worklist-status").textContent = await apiError(response); return; }
  const list = await response.json();
  $("worklist-pacs").textContent = list.pacs;
  list.studies.forEach((study) => {
    const row = document.createElement("tr");
    [study.handle, study.date, study.modalities.join("/"), study.images ?? "", study.has_sr ? "SR filed" : ""].forEach((text) => {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.append(cell);
    });
    const button = document.createElement("button");
    button.type = "button"; button.textContent = "Read"; button.dataset.handle = study.handle;
    button.onclick = () => readFromPacs(study.handle);
    const cell = document.createElement("td");
    cell.append(button);
    row.append(cell);
    rows.append(row);
  });
  $("worklist-status").textContent = `${list.studies.length} chest radiograph studies of the last ${list.days} days`;
}

async function readFromPacs(handle) {
  $("worklist-prior").textContent = "";
  status("reading the study and its prior from the PACS ...");
  await analyse(() => post(`/v1/pacs/studies/${handle}/report`, { stream: true, prior: true }), async (event) => {
    await openStudy(event.study);
    const prior = event.prior;
    $("worklist-prior").textContent = prior
      ? `Compared with the prior study of ${prior.date}` + (prior.report ? " and its report." : " (no report found).")
      : "No prior study found.";
    status("reasoning ...");
  });
}

$("worklist-refresh").addEventListener("click", loadWorklist);
$("api-key").addEventListener("change", loadWorklist);
loadWorklist();
