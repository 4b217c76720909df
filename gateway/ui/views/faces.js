// Faces: a gallery's faces (paged thumbnails), one face (view, edit, delete), batch upload.

import { call, get, seg } from "../api.js";
import { attributesText, boxedPhoto, errorText, field, fill, h, notify } from "../dom.js";
import { galleryNames } from "./galleries.js";

const PAGE = 24;

function faceCard(face) {
  return h(
    "li",
    {},
    h(
      "a",
      { class: "tile", href: `#/face/${face.id}`, "aria-label": `Face ${face.id}${face.meta ? `, ${face.meta}` : ""}` },
      h("img", { src: face.thumbnail || face.photo, alt: "", loading: "lazy", width: 112, height: 112 }),
      h("span", { class: "caption" }, face.meta || h("em", {}, "no meta")),
    ),
  );
}

export async function gallery(main, { params: [name], query, signal }) {
  const maxId = query.get("max_id");
  const page = await get(
    `/faces/gallery/${seg(name)}?limit=${PAGE}${maxId ? `&max_id=${seg(maxId)}` : ""}`,
    { signal },
  );
  const pageLink = (apiPath, label, rel) => {
    if (!apiPath) return h("span", { class: "button quiet disabled", "aria-disabled": "true" }, label);
    const next = new URLSearchParams(apiPath.split("?")[1]).get("max_id");
    return h("a", { class: "button quiet", rel, href: `#/gallery/${seg(name)}?max_id=${next}` }, label);
  };
  const pager = () =>
    (maxId || page.prev_page || page.next_page) &&
    h(
      "nav",
      { class: "pager", "aria-label": "Pages" },
      maxId ? h("a", { class: "button quiet", href: `#/gallery/${seg(name)}` }, "Newest") : null,
      pageLink(page.prev_page, "← Newer", "prev"),
      pageLink(page.next_page, "Older →", "next"),
    );
  fill(
    main,
    h(
      "div",
      { class: "head" },
      h("h1", {}, `Gallery ${name}`),
      h("a", { class: "button", href: `#/upload?gallery=${seg(name)}` }, "Upload photos"),
    ),
    page.results.length
      ? [h("ul", { class: "tiles", "aria-label": "Faces" }, page.results.map(faceCard)), pager()]
      : h("p", { class: "card muted" }, "No faces here yet."),
  );
}

export async function faceView(main, { params: [id], signal }) {
  const [face, allGalleries] = await Promise.all([get(`/face/id/${id}`, { signal }), galleryNames(signal)]);
  const meta = h("input", { name: "meta", value: face.meta, autocomplete: "off" });
  const boxes = allGalleries.map((name) =>
    h(
      "label",
      { class: "check" },
      h("input", {
        type: "checkbox",
        name: "galleries",
        value: name,
        checked: face.galleries.includes(name),
        // Every face stays in `default`; the API refuses to take it out.
        disabled: name === "default",
      }),
      name,
    ),
  );
  const edit = h(
    "form",
    {
      class: "stack",
      onsubmit: async (event) => {
        event.preventDefault();
        const chosen = boxes.map((label) => label.firstChild).filter((box) => box.checked).map((box) => box.value);
        try {
          await call("PUT", `/face/id/${id}`, { json: { meta: meta.value } });
          const before = [...face.galleries].sort().join();
          if ([...chosen].sort().join() !== before) {
            await call("PUT", `/face/id/${id}`, { json: { galleries: { set: chosen } } });
          }
          notify("Face saved.");
          await faceView(main, { params: [id], signal });
        } catch (error) {
          notify(errorText(error), "error");
        }
      },
    },
    field("Meta", meta),
    h("fieldset", {}, h("legend", {}, "Galleries"), h("div", { class: "checks" }, boxes)),
    h(
      "div",
      { class: "actions" },
      h("button", { type: "submit" }, "Save"),
      h(
        "button",
        {
          type: "button",
          class: "danger",
          onclick: async () => {
            if (!confirm(`Delete face ${id}?`)) return;
            try {
              await call("DELETE", `/face/id/${id}`);
              notify(`Face ${id} deleted.`);
              history.back();
            } catch (error) {
              notify(errorText(error), "error");
            }
          },
        },
        "Delete face",
      ),
    ),
  );
  const facts = [
    ["Id", face.id],
    ["Added", new Date(face.timestamp).toLocaleString()],
    ["Attributes", attributesText(face) || "—"],
    ["Person", face.person_id ? h("a", { href: `#/person/${face.person_id}` }, face.person_id) : "—"],
    ["Camera", face.cam_id ?? "—"],
    ["Box", `${face.x1}, ${face.y1} – ${face.x2}, ${face.y2}`],
    ["Photo hash", h("code", {}, face.photo_hash)],
  ];
  fill(
    main,
    h("div", { class: "head" }, h("h1", {}, face.meta || `Face ${face.id}`)),
    h(
      "div",
      { class: "split" },
      h("section", { class: "card" }, boxedPhoto(face.photo, [{ ...face, label: face.meta || "face" }], `Photo of face ${face.id}`)),
      h(
        "section",
        { class: "card" },
        h("div", { class: "chips" }, face.thumbnail && h("img", { src: face.thumbnail, alt: "Face thumbnail", width: 96, height: 96 }), face.normalized && h("img", { src: face.normalized, alt: "Aligned face", width: 96, height: 96 })),
        h("dl", { class: "facts" }, facts.map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)])),
        edit,
      ),
    ),
  );
}

/** "photos/Sam_Berry.jpg" -> "Sam_Berry" */
const baseName = (file) => (file.webkitRelativePath || file.name).split("/").pop().replace(/\.[^.]+$/, "");

export async function upload(main, { query, signal }) {
  const names = await galleryNames(signal);
  const target = h(
    "select",
    { name: "gallery" },
    names.map((name) => h("option", { value: name, selected: name === (query.get("gallery") ?? "default") }, name)),
  );
  const files = h("input", { type: "file", name: "photos", multiple: true, accept: "image/jpeg,image/png,image/webp" });
  const folder = h("input", { type: "file", name: "folder", webkitdirectory: true });
  const prefix = h("input", { name: "prefix", autocomplete: "off" });
  const postfix = h("input", { name: "postfix", autocomplete: "off" });
  const selector = h(
    "select",
    { name: "mf_selector" },
    h("option", { value: "biggest" }, "the biggest face"),
    h("option", { value: "all" }, "all faces"),
    h("option", { value: "reject" }, "reject the photo"),
  );
  const attributes = h("input", { type: "checkbox", name: "attributes", checked: true });
  const parallel = 4;
  const bar = h("progress", { max: 1, value: 0, "aria-label": "Upload progress" });
  const summary = h("p", { class: "muted", "aria-live": "polite" });
  const results = h("ol", { class: "results", "aria-label": "Results per file" });
  const button = h("button", { type: "submit" }, "Upload");
  const progress = h("section", { class: "card stack", "aria-label": "Upload results", hidden: true }, bar, summary, results);

  const form = h(
    "form",
    {
      class: "card stack",
      onsubmit: async (event) => {
        event.preventDefault();
        const chosen = [...files.files, ...folder.files].filter((file) => /^image\/(jpeg|png|webp)$/.test(file.type));
        if (!chosen.length) {
          notify("Choose photos (JPEG, PNG or WebP) or a folder first.", "error");
          return;
        }
        button.disabled = true;
        progress.hidden = false;
        fill(results);
        bar.max = chosen.length;
        bar.value = 0;
        let done = 0;
        let failed = 0;
        let facesAdded = 0;
        const rows = chosen.map((file) => {
          const row = h("li", { class: "pending" }, h("span", { class: "file" }, file.webkitRelativePath || file.name), h("span", { class: "outcome" }, "waiting"));
          results.append(row);
          return row;
        });
        const report = () => fill(summary, `${done} of ${chosen.length} files done, ${facesAdded} faces added, ${failed} failed.`);
        report();
        let next = 0;
        const worker = async () => {
          while (next < chosen.length) {
            const index = next++;
            const file = chosen[index];
            const row = rows[index];
            const meta = `${prefix.value}${baseName(file)}${postfix.value}`;
            fill(row.lastChild, "uploading…");
            try {
              const answer = await call("POST", "/face", {
                form: {
                  photo: file,
                  meta,
                  galleries: target.value,
                  mf_selector: selector.value,
                  ...(attributes.checked ? { gender: "true", age: "true", emotions: "true" } : {}),
                },
              });
              facesAdded += answer.results.length;
              row.className = "ok";
              fill(
                row.lastChild,
                `${answer.results.length} face${answer.results.length === 1 ? "" : "s"} as “${meta}” `,
                answer.results.map((face) => h("a", { href: `#/face/${face.id}` }, `#${face.id}`)),
              );
            } catch (error) {
              failed += 1;
              row.className = "failed";
              fill(row.lastChild, errorText(error));
            }
            done += 1;
            bar.value = done;
            report();
          }
        };
        await Promise.all(Array.from({ length: parallel }, worker));
        button.disabled = false;
        notify(`Upload finished: ${facesAdded} faces added, ${failed} of ${chosen.length} files failed.`, failed ? "error" : "info");
      },
    },
    field("Gallery", target),
    h("div", { class: "two" }, field("Photos", files), field("Or a folder", folder)),
    h("div", { class: "two" }, field("Meta prefix", prefix), field("Meta postfix", postfix)),
    h("p", { class: "muted small" }, "Each face's meta is prefix + the file name without its extension + postfix."),
    field("With several faces on a photo, enrol", selector),
    h("label", { class: "check" }, attributes, "Estimate gender, age and emotions"),
    h("div", { class: "actions" }, button),
  );
  fill(
    main,
    h("div", { class: "head" }, h("h1", {}, "Upload photos")),
    form,
    progress,
  );
}
