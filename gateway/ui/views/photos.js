// Photo processing: detect faces (with gender, age, emotions), identify them, verify two photos.

import { call, seg } from "../api.js";
import { attributesText, boxedPhoto, crop, errorText, field, fill, h, notify, percent } from "../dom.js";
import { galleryNames } from "./galleries.js";

const IMAGE_TYPES = "image/jpeg,image/png,image/webp";

/** A file input whose chosen photo is previewed in `preview`; `file()` returns it. */
function photoInput(label, name) {
  const input = h("input", { type: "file", name, accept: IMAGE_TYPES, required: true });
  const preview = h("div", { class: "preview" });
  let url = null;
  input.addEventListener("change", () => {
    if (url) URL.revokeObjectURL(url);
    const file = input.files[0];
    url = file ? URL.createObjectURL(file) : null;
    fill(preview, url && h("img", { src: url, alt: `Chosen photo: ${file.name}` }));
  });
  return { control: field(label, input), preview, file: () => input.files[0], url: () => url };
}

/** Runs `work` with the form's submit button disabled, reporting API errors. */
async function busy(form, work) {
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    await work();
  } catch (error) {
    notify(errorText(error), "error");
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

export async function detect(main) {
  const photo = photoInput("Photo", "photo");
  const output = h("section", { class: "card", "aria-label": "Detected faces", hidden: true });
  const form = h(
    "form",
    {
      class: "card stack",
      onsubmit: (event) => {
        event.preventDefault();
        busy(form, async () => {
          const answer = await call("POST", "/detect", {
            form: { photo: photo.file(), gender: "true", age: "true", emotions: "true" },
          });
          const faces = answer.faces;
          output.hidden = false;
          fill(
            output,
            h("h2", {}, `${faces.length} face${faces.length === 1 ? "" : "s"} found`),
            boxedPhoto(photo.url(), faces.map((face, i) => ({ ...face, label: `${i + 1}` })), "The photo with its faces boxed"),
            h(
              "ol",
              { class: "results" },
              faces.map((face) => h("li", { class: "ok" }, attributesText(face) || "a face", h("span", { class: "muted small" }, ` at ${face.x1}, ${face.y1}`))),
            ),
          );
        });
      },
    },
    photo.control,
    photo.preview,
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Detect faces")),
  );
  fill(main, h("div", { class: "head" }, h("h1", {}, "Detect faces")), h("div", { class: "split" }, form, output));
}

const THRESHOLDS = [
  ["", "default (0.75)"],
  ["strict", "strict"],
  ["medium", "medium"],
  ["low", "low"],
  ["0", "show every match"],
];

export async function identify(main, { signal }) {
  const names = await galleryNames(signal);
  const photo = photoInput("Photo", "photo");
  const target = h("select", { name: "gallery" }, names.map((name) => h("option", { value: name }, name)));
  const threshold = h("select", { name: "threshold" }, THRESHOLDS.map(([value, label]) => h("option", { value }, label)));
  const count = h("input", { type: "number", name: "n", min: 1, max: 50, value: 3 });
  const output = h("section", { class: "card", "aria-label": "Matches", hidden: true });
  const form = h(
    "form",
    {
      class: "card stack",
      onsubmit: (event) => {
        event.preventDefault();
        busy(form, async () => {
          const answer = await call("POST", `/faces/gallery/${seg(target.value)}/identify`, {
            form: { photo: photo.file(), n: count.value || "1", threshold: threshold.value || undefined },
          });
          const found = Object.entries(answer.results).map(([key, matches]) => {
            const [x1, y1, x2, y2] = JSON.parse(key);
            return { box: { x1, y1, x2, y2 }, matches };
          });
          output.hidden = false;
          const sections = [];
          for (const [index, { box, matches }] of found.entries()) {
            const chip = h("img", { class: "chip", alt: `Face ${index + 1} on the photo`, width: 72, height: 72 });
            crop(photo.file(), box).then((src) => chip.setAttribute("src", src), () => chip.remove());
            sections.push(
              h(
                "section",
                { class: "match-group" },
                h("h3", {}, chip, `Face ${index + 1}`),
                matches.length
                  ? h(
                      "ol",
                      { class: "matches" },
                      matches.map((match) =>
                        h(
                          "li",
                          {},
                          h(
                            "a",
                            { href: `#/face/${match.face.id}`, class: "match" },
                            h("img", { src: match.face.thumbnail || match.face.photo, alt: "", width: 64, height: 64 }),
                            h("span", { class: "grow" }, h("strong", { class: "meta" }, match.face.meta || `face ${match.face.id}`), h("span", { class: "muted small" }, ` #${match.face.id}`)),
                            h("span", { class: "confidence" }, h("meter", { min: 0, max: 1, value: match.confidence, "aria-label": "Confidence" }), h("span", {}, percent(match.confidence))),
                          ),
                        ),
                      ),
                    )
                  : h("p", { class: "muted" }, "No match above the threshold."),
              ),
            );
          }
          fill(
            output,
            h("h2", {}, found.length ? `Best matches in ${target.value}` : "No face found on the photo"),
            boxedPhoto(photo.url(), found.map(({ box }, i) => ({ ...box, label: `${i + 1}` })), "The photo with its faces boxed"),
            sections,
          );
        });
      },
    },
    photo.control,
    photo.preview,
    h("div", { class: "two" }, field("Gallery", target), field("Threshold", threshold)),
    field("Matches per face", count),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Identify")),
  );
  fill(main, h("div", { class: "head" }, h("h1", {}, "Identify")), h("div", { class: "split" }, form, output));
}

export async function verify(main) {
  const first = photoInput("First photo", "photo1");
  const second = photoInput("Second photo", "photo2");
  const output = h("section", { class: "card", "aria-label": "Verdict", hidden: true });
  const form = h(
    "form",
    {
      class: "card stack",
      onsubmit: (event) => {
        event.preventDefault();
        busy(form, async () => {
          const answer = await call("POST", "/verify", { form: { photo1: first.file(), photo2: second.file() } });
          const best = answer.results.reduce((a, b) => (b.confidence > (a?.confidence ?? -1) ? b : a), null);
          output.hidden = false;
          fill(
            output,
            h(
              "p",
              { class: `verdict ${answer.verified ? "same" : "different"}`, "data-verified": String(answer.verified) },
              answer.verified ? "Same person" : "Not the same person",
              best && h("span", {}, ` — confidence ${percent(best.confidence)}`),
            ),
            h(
              "div",
              { class: "two" },
              boxedPhoto(first.url(), answer.results.map((pair, i) => ({ ...pair.bbox1, label: `${i + 1}` })), "First photo"),
              boxedPhoto(second.url(), answer.results.map((pair, i) => ({ ...pair.bbox2, label: `${i + 1}` })), "Second photo"),
            ),
            h(
              "ol",
              { class: "results" },
              answer.results.map((pair) => h("li", { class: pair.verified ? "ok" : "failed" }, `${percent(pair.confidence)} — ${pair.verified ? "same" : "different"}`)),
            ),
          );
        });
      },
    },
    h("div", { class: "two" }, h("div", {}, first.control, first.preview), h("div", {}, second.control, second.preview)),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Verify")),
  );
  fill(main, h("div", { class: "head" }, h("h1", {}, "Verify two photos")), form, output);
}
