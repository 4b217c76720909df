// Cameras (list, add, turn on and off, delete) and the live feed of recognized faces.

import { call, follow, get } from "../api.js";
import { errorText, field, fill, h, notify } from "../dom.js";

const FEED_LIMIT = 200;

export async function cameras(main, { signal }) {
  const table = h("section", { class: "card flush", "aria-label": "Camera list" });
  const count = h("span", { class: "muted" });

  // Changes redraw the list alone: the live feed below keeps its stream and its events.
  async function change(work, message) {
    try {
      await work();
      notify(message);
      await refresh();
    } catch (error) {
      notify(errorText(error), "error");
    }
  }

  async function refresh() {
    const list = await get("/camera", { signal });
    fill(count, `${list.length} in all`);
    const rows = list.map((camera) =>
      h(
        "tr",
        {},
        h("td", {}, h("strong", {}, camera.meta || "—"), h("div", { class: "muted small" }, h("code", {}, camera.id))),
        h("td", { class: "wrap" }, camera.url),
        h("td", {}, camera.detector || "—"),
        h("td", {}, h("span", { class: `badge ${camera.active ? "on" : "off"}` }, camera.active ? "active" : "off")),
        h("td", {}, statusText(camera.status)),
        h(
          "td",
          { class: "actions" },
          h(
            "button",
            {
              type: "button",
              class: "quiet",
              "aria-label": `Edit camera ${camera.meta || camera.id}`,
              onclick: () => edit(camera),
            },
            "Edit",
          ),
          h(
            "button",
            {
              type: "button",
              class: "quiet",
              "aria-label": `${camera.active ? "Turn off" : "Turn on"} camera ${camera.meta || camera.id}`,
              onclick: () => change(() => call("PUT", `/camera/${camera.id}`, { json: { active: !camera.active } }), camera.active ? "Camera turned off." : "Camera turned on."),
            },
            camera.active ? "Turn off" : "Turn on",
          ),
          h(
            "button",
            {
              type: "button",
              class: "danger quiet",
              "aria-label": `Delete camera ${camera.meta || camera.id}`,
              onclick: () => confirm(`Delete camera ${camera.meta || camera.id}?`) && change(() => call("DELETE", `/camera/${camera.id}`), "Camera deleted."),
            },
            "Delete",
          ),
        ),
      ),
    );
    fill(
      table,
      list.length
        ? h("div", { class: "scroll" }, h("table", {}, h("thead", {}, h("tr", {}, ["Camera", "URL", "Detector", "State", "Stream", h("span", { class: "sr-only" }, "Actions")].map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, rows)))
        : h("p", { class: "pad muted" }, "No cameras yet."),
    );
  }

  const url = h("input", { name: "url", required: true, placeholder: "rtsp://… or a file path", autocomplete: "off" });
  const meta = h("input", { name: "meta", autocomplete: "off" });
  const detector = h("input", { name: "detector", autocomplete: "off" });
  const active = h("input", { type: "checkbox", name: "active", checked: true });
  // Editing: the camera being changed (its regions are sent back, as a PUT without them
  // removes them); null while the form adds a new one.
  let editing = null;
  const title = h("h2", {}, "Add a camera");
  const submit = h("button", { type: "submit" }, "Add camera");
  const cancel = h("button", { type: "button", class: "quiet", hidden: true, onclick: () => stopEditing() }, "Cancel");
  function stopEditing() {
    editing = null;
    add.reset();
    fill(title, "Add a camera");
    fill(submit, "Add camera");
    cancel.hidden = true;
  }
  function edit(camera) {
    editing = camera;
    url.value = camera.url;
    meta.value = camera.meta;
    detector.value = camera.detector;
    active.checked = camera.active;
    fill(title, `Edit camera ${camera.meta || camera.id}`);
    fill(submit, "Save changes");
    cancel.hidden = false;
    url.focus();
  }
  const add = h(
    "form",
    {
      class: "stack",
      onsubmit: (event) => {
        event.preventDefault();
        const fields = { url: url.value, meta: meta.value, detector: detector.value || undefined, active: active.checked };
        if (editing) {
          const camera = editing;
          change(async () => {
            await call("PUT", `/camera/${camera.id}`, { json: { ...fields, rot: camera.rot, roi: camera.roi } });
            stopEditing();
          }, "Camera changed.");
        } else {
          change(async () => {
            await call("POST", "/camera", { json: fields });
            add.reset();
          }, "Camera added.");
        }
      },
    },
    title,
    h("div", { class: "two" }, field("Stream URL", url), field("Name (meta)", meta)),
    h("div", { class: "two" }, field("Detector", detector, "the video worker's detector-name"), h("label", { class: "check" }, active, "Active")),
    h("div", { class: "actions" }, submit, cancel),
  );
  await refresh();
  fill(
    main,
    h("div", { class: "head" }, h("h1", {}, "Cameras"), count),
    table,
    h("section", { class: "card" }, add),
    liveFeed(signal),
  );
}

/** What the camera's video worker last reported: phase and frames/s (FaceGrid's `status`). */
function statusText(status) {
  if (!status) return h("span", { class: "muted" }, "no report yet");
  const streaming = status.phase === "Streaming";
  return h(
    "span",
    { title: status.reason || (status.worker ? `worker ${status.worker}` : "") },
    h("span", { class: `badge ${streaming ? "on" : "off"}` }, status.phase),
    streaming ? ` ${status.frames_per_second} fps` : "",
    status.posts ? h("span", { class: "muted small" }, ` · ${status.posts} posts`) : "",
  );
}

/** Faces as cameras post them, from /v1/events; the received events export as CSV. */
function liveFeed(signal) {
  const events = [];
  const state = h("span", { class: "badge off" }, "connecting");
  const feed = h("ol", { class: "feed", "aria-label": "Live faces", "aria-live": "polite" });
  const exportButton = h(
    "button",
    {
      type: "button",
      class: "quiet",
      onclick: () => {
        const columns = ["timestamp", "cam_id", "person_id", "face_id", "meta", "friend", "photo"];
        const quote = (value) => `"${String(value ?? "").replaceAll('"', '""')}"`;
        const csv = [columns.join(","), ...events.map((e) => columns.map((c) => quote(e[c])).join(","))].join("\n");
        const link = h("a", { href: URL.createObjectURL(new Blob([csv], { type: "text/csv" })), download: "facegrid-events.csv" });
        link.click();
        setTimeout(() => URL.revokeObjectURL(link.href), 1000);
      },
    },
    "Export report (CSV)",
  );
  const connect = async () => {
    for (let delay = 1000; !signal.aborted; delay = Math.min(delay * 2, 30000)) {
      try {
        await follow("/events", (event) => {
          events.unshift(event);
          events.length = Math.min(events.length, FEED_LIMIT);
          feed.prepend(
            h(
              "li",
              {},
              h("img", { src: event.screenshot || event.photo, alt: "", width: 56, height: 56 }),
              h(
                "span",
                { class: "grow" },
                h("strong", {}, event.meta || (event.person_id ? `person ${event.person_id}` : "unknown")),
                h("span", { class: "muted small" }, ` ${new Date(event.timestamp).toLocaleTimeString()} · camera ${event.cam_id ?? "?"}`),
              ),
              event.friend === true && h("span", { class: "badge on" }, "friend"),
              event.person_id && h("a", { href: `#/person/${event.person_id}` }, "history"),
            ),
          );
          while (feed.children.length > FEED_LIMIT) feed.lastChild.remove();
        }, signal, () => {
          fill(state, "live");
          state.className = "badge on";
          delay = 1000;
        });
      } catch {
        if (signal.aborted) return;
        fill(state, "reconnecting");
        state.className = "badge off";
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  };
  connect();
  return h(
    "section",
    { class: "card" },
    h("div", { class: "head" }, h("h2", {}, "Live faces ", state), exportButton),
    feed,
    h("p", { class: "muted small" }, "Faces appear here as video workers post them (newest first); the report holds the ones received since this page opened."),
  );
}
