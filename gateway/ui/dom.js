// Small DOM helpers: elements from data (never from HTML strings), messages, photos with boxes.

/** h("a", {href: "#/x", class: "link"}, "text", child) */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(element.dataset, value);
    // Through CSSOM: the Content-Security-Policy forbids inline style attributes.
    else if (name === "style") Object.assign(element.style, value);
    else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, String(value));
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces an element's content. */
export function fill(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

let announcer;
let shownAt = 0;

/** Shows a message in the page's status bar (read out by screen readers). */
export function notify(text, kind = "info") {
  announcer ??= document.getElementById("status");
  fill(announcer, h("p", { class: `message ${kind}` }, text));
  shownAt = Date.now();
  if (kind !== "error") {
    const shown = announcer.firstChild;
    setTimeout(() => shown.isConnected && shown.remove(), 6000);
  }
}

/** On a new page: clears messages, except one that was just shown (what led here). */
export function clearStale() {
  announcer ??= document.getElementById("status");
  if (Date.now() - shownAt > 1500) announcer.replaceChildren();
}

export const errorText = (error) =>
  error?.code ? `${error.code}: ${error.message}` : String(error?.message ?? error);

/** A labelled form field: label wraps its text and the control. */
export function field(label, control, hint) {
  return h("label", { class: "field" }, h("span", { class: "label" }, label), control, hint && h("small", {}, hint));
}

export const percent = (value) => `${(value * 100).toFixed(1)}%`;

/** What the API says of a face's attributes, as words: "female, 34, happy". */
export function attributesText(face) {
  const parts = [];
  if (face.gender) parts.push(face.gender);
  if (face.age !== undefined) parts.push(`age ${face.age}`);
  if (face.emotions?.length) parts.push(face.emotions.join(" / "));
  return parts.join(", ");
}

/**
 * A photo with numbered face boxes drawn over it. boxes: [{x1, y1, x2, y2, label, tone}];
 * boxes are placed in percent of the photo's natural size, so they follow any width.
 */
export function boxedPhoto(src, boxes, alt) {
  const frame = h("div", { class: "frame" });
  const img = h("img", { src, alt, decoding: "async" });
  frame.append(img);
  const place = () => {
    const width = img.naturalWidth;
    const height = img.naturalHeight;
    if (!width || !height) return;
    for (const [index, box] of boxes.entries()) {
      const mark = h(
        "div",
        {
          class: `box ${box.tone ?? ""}`,
          style: {
            left: `${(box.x1 / width) * 100}%`,
            top: `${(box.y1 / height) * 100}%`,
            width: `${((box.x2 - box.x1) / width) * 100}%`,
            height: `${((box.y2 - box.y1) / height) * 100}%`,
          },
        },
        h("span", { class: "tag" }, box.label ?? String(index + 1)),
      );
      frame.append(mark);
    }
  };
  if (img.complete) place();
  else img.addEventListener("load", place, { once: true });
  return h("figure", { class: "photo" }, frame);
}

/** A thumbnail cut from a local file around a box, as a data URL. */
export async function crop(file, box, size = 96) {
  const bitmap = await createImageBitmap(file);
  const canvas = document.createElement("canvas");
  canvas.width = size;
  canvas.height = size;
  const side = Math.max(box.x2 - box.x1, box.y2 - box.y1);
  const cx = (box.x1 + box.x2) / 2;
  const cy = (box.y1 + box.y2) / 2;
  canvas.getContext("2d").drawImage(bitmap, cx - side / 2, cy - side / 2, side, side, 0, 0, size, size);
  bitmap.close();
  return canvas.toDataURL("image/jpeg", 0.85);
}
