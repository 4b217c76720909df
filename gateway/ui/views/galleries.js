// Galleries: the list with face counts, create, delete.

import { call, get, seg } from "../api.js";
import { errorText, field, fill, h, notify } from "../dom.js";

// Counting pages through a gallery's faces; past this the count reads "1000+".
const COUNT_LIMIT = 1000;

export async function galleryNames(signal) {
  return (await get("/galleries", { signal })).results;
}

async function faceCount(name, signal) {
  const page = await get(`/faces/gallery/${seg(name)}?limit=${COUNT_LIMIT}`, { signal });
  return page.next_page ? `${COUNT_LIMIT}+` : String(page.results.length);
}

export async function galleries(main, { signal }) {
  const names = await galleryNames(signal);
  const list = h("ul", { class: "rows", "aria-label": "Galleries" });
  for (const name of names) {
    const count = h("span", { class: "count" }, "…");
    const remove =
      name === "default"
        ? h("span", { class: "muted small" }, "always there")
        : h(
            "button",
            {
              type: "button",
              class: "danger quiet",
              "aria-label": `Delete gallery ${name}`,
              onclick: async () => {
                if (!confirm(`Delete the gallery "${name}" and all its faces?`)) return;
                try {
                  await call("DELETE", `/galleries/${seg(name)}`);
                  notify(`Gallery "${name}" deleted.`);
                  await galleries(main, { signal });
                } catch (error) {
                  notify(errorText(error), "error");
                }
              },
            },
            "Delete",
          );
    list.append(
      h(
        "li",
        { class: "row" },
        h("a", { href: `#/gallery/${seg(name)}`, class: "grow" }, h("strong", {}, name)),
        h("span", { class: "muted" }, count, " faces"),
        h("a", { class: "button quiet", href: `#/upload?gallery=${seg(name)}` }, "Upload"),
        remove,
      ),
    );
    faceCount(name, signal).then(
      (text) => fill(count, text),
      () => fill(count, "?"),
    );
  }
  const input = h("input", {
    name: "gallery",
    required: true,
    pattern: "[A-Za-z0-9_\\-]+",
    maxlength: 48,
    title: "Letters, digits, - and _",
    autocomplete: "off",
  });
  const create = h(
    "form",
    {
      class: "inline",
      onsubmit: async (event) => {
        event.preventDefault();
        const name = input.value.trim();
        try {
          await call("POST", `/galleries/${seg(name)}`);
          notify(`Gallery "${name}" created.`);
          await galleries(main, { signal });
        } catch (error) {
          notify(errorText(error), "error");
        }
      },
    },
    field("New gallery", input),
    h("button", { type: "submit" }, "Create"),
  );
  fill(
    main,
    h("div", { class: "head" }, h("h1", {}, "Galleries"), h("span", { class: "muted" }, `${names.length} in all`)),
    h("section", { class: "card" }, create),
    h("section", { class: "card flush" }, list),
  );
}
