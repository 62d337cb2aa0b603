// The radiograph on a canvas, its boxes, and a show/hide toggle per finding: shared by the viewer and /study.
"use strict";

// Draw an image (a PNG blob) at its own size; returns its pixels, from which the page redraws.
async function paintImage(canvas, blob) {
  const bitmap = await createImageBitmap(blob);
  canvas.width = bitmap.width; canvas.height = bitmap.height;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  return ctx.getImageData(0, 0, bitmap.width, bitmap.height);
}

// Each box in its own colour, labelled, in image pixels; findings in `hidden` are left out.
function drawBoxes(ctx, boxes, hidden, width) {
  ctx.lineWidth = Math.max(2, width / 300);
  ctx.font = Math.max(12, width / 40) + "px sans-serif";
  boxes.forEach((box, i) => {
    if (hidden.has(box.label)) return;
    const [x1, y1, x2, y2] = box.xyxy;
    ctx.strokeStyle = ctx.fillStyle = `hsl(${(i * 67) % 360} 90% 60%)`;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    ctx.fillText(box.label || "region", x1 + 3, Math.max(y1 - 4, 12));
  });
}

// One checkbox per finding in `container`; a change updates `hidden` and calls `redraw`.
function boxToggles(container, boxes, hidden, redraw) {
  container.innerHTML = "";
  [...new Set(boxes.map((b) => b.label))].forEach((label) => {
    const item = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox"; box.checked = !hidden.has(label);
    box.onchange = () => { box.checked ? hidden.delete(label) : hidden.add(label); redraw(); };
    item.append(box, " " + (label || "region"));
    container.append(item);
  });
}
