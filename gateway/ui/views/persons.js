// Persons: the list (filtered by meta), one person's faces and camera history.

import { call, get } from "../api.js";
import { field, fill, h } from "../dom.js";

const PAGE = 100;

export async function persons(main, { query, signal }) {
  const maxId = query.get("max_id");
  const page = await get(`/persons?limit=${PAGE}${maxId ? `&max_id=${maxId}` : ""}`, { signal });
  const filter = h("input", { type: "search", name: "filter", autocomplete: "off", value: query.get("q") ?? "" });
  const list = h("ul", { class: "rows", "aria-label": "Persons" });
  const show = () => {
    const words = filter.value.trim().toLowerCase();
    fill(
      list,
      page.results
        .filter((p) => !words || `${p.id} ${p.meta ?? ""}`.toLowerCase().includes(words))
        .map((p) =>
          h("li", { class: "row" }, h("a", { class: "grow", href: `#/person/${p.id}` }, h("strong", {}, p.meta || "unnamed"), h("span", { class: "muted small" }, ` #${p.id}`))),
        ),
    );
    if (!list.children.length) list.append(h("li", { class: "row muted" }, page.results.length ? "No person matches." : "No persons yet: they appear when cameras post faces with person identification on."));
  };
  filter.addEventListener("input", show);
  show();
  const next = page.next_page && new URLSearchParams(page.next_page.split("?")[1]).get("max_id");
  fill(
    main,
    h("div", { class: "head" }, h("h1", {}, "Persons")),
    h("section", { class: "card" }, field("Filter by name or id", filter)),
    h("section", { class: "card flush" }, list),
    h("nav", { class: "pager", "aria-label": "Pages" }, maxId && h("a", { class: "button quiet", href: "#/persons" }, "Newest"), next && h("a", { class: "button quiet", href: `#/persons?max_id=${next}` }, "Older →")),
  );
}

export async function person(main, { params: [id], signal }) {
  const [found, history] = await Promise.all([
    get(`/person/id/${id}`, { signal }),
    call("POST", "/history/search", { json: { person_id: Number(id), limit: 200 }, signal }),
  ]);
  const events = history.results;
  fill(
    main,
    h("div", { class: "head" }, h("h1", {}, found.meta || `Person ${found.id}`), h("span", { class: "muted" }, `#${found.id}`)),
    h(
      "section",
      { class: "card" },
      h("h2", {}, "Faces"),
      h(
        "ul",
        { class: "tiles" },
        found.faces.map((face) => h("li", {}, h("a", { class: "tile", href: `#/face/${face.id}` }, h("img", { src: face.thumbnail || face.photo, alt: `Face ${face.id}`, width: 112, height: 112 })))),
      ),
    ),
    h(
      "section",
      { class: "card" },
      h("h2", {}, `History (${events.length})`),
      events.length
        ? h(
            "div",
            { class: "scroll" },
            h(
              "table",
              {},
              h("thead", {}, h("tr", {}, ["Snapshot", "When", "Camera", "Friend"].map((t) => h("th", { scope: "col" }, t)))),
              h(
                "tbody",
                {},
                events.map((e) =>
                  h(
                    "tr",
                    {},
                    h("td", {}, h("img", { src: e.screenshot || e.photo, alt: "Snapshot", width: 64, height: 64, loading: "lazy" })),
                    h("td", {}, new Date(e.timestamp).toLocaleString()),
                    h("td", {}, h("code", {}, e.cam_id ?? "—")),
                    h("td", {}, e.friend === true ? "friend" : e.friend === false ? "not a friend" : "—"),
                  ),
                ),
              ),
            ),
          )
        : h("p", { class: "muted" }, "No camera events for this person."),
    ),
  );
}
