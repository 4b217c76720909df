// The application shell: log in and out, the hash router, and the navigation.

import { call, session } from "./api.js";
import { clearStale, errorText, field, fill, h, notify } from "./dom.js";
import { cameras } from "./views/cameras.js";
import { faceView, gallery, upload } from "./views/faces.js";
import { galleries } from "./views/galleries.js";
import { person, persons } from "./views/persons.js";
import { detect, identify, verify } from "./views/photos.js";

// "#/gallery/name?max_id=1" -> view(main, {params: ["name"], query, signal})
const ROUTES = [
  [/^\/galleries$/, galleries],
  [/^\/gallery\/([^/]+)$/, gallery],
  [/^\/face\/(\d+)$/, faceView],
  [/^\/upload$/, upload],
  [/^\/identify$/, identify],
  [/^\/detect$/, detect],
  [/^\/verify$/, verify],
  [/^\/persons$/, persons],
  [/^\/person\/(\d+)$/, person],
  [/^\/cameras$/, cameras],
];

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const logoutButton = document.getElementById("logout");
let current = null; // the AbortController of the shown view (stops its requests and streams)

function loginView() {
  const input = h("input", {
    name: "token",
    type: "password",
    autocomplete: "current-password",
    required: true,
    spellcheck: "false",
  });
  const button = h("button", { type: "submit" }, "Log in");
  const form = h(
    "form",
    {
      class: "card narrow stack",
      "aria-labelledby": "login-title",
      onsubmit: async (event) => {
        event.preventDefault();
        const token = input.value.trim().replace(/^Token\s+/i, "");
        button.disabled = true;
        try {
          await call("GET", "/galleries", { token });
          session.save(token);
          notify("Logged in.");
          route(location.hash && location.hash !== "#/login" ? location.hash : "#/galleries");
        } catch (error) {
          notify(error.status === 401 ? "That token is not valid." : errorText(error), "error");
          input.focus();
        } finally {
          button.disabled = false;
        }
      },
    },
    h("h1", { id: "login-title" }, "Log in"),
    h("p", {}, "Use an API token: ", h("code", {}, "facegrid up"), " prints one, ", h("code", {}, "facegrid token"), " makes another."),
    field("API token", input),
    h("div", { class: "actions" }, button),
  );
  fill(main, form);
  input.focus();
}

function route(hash) {
  if (hash !== undefined && hash !== location.hash) {
    location.hash = hash; // hashchange renders
    return;
  }
  render();
}

async function render(event) {
  const navigated = event?.type === "hashchange";
  current?.abort();
  current = new AbortController();
  clearStale();
  const loggedIn = Boolean(session.token());
  nav.hidden = !loggedIn;
  logoutButton.hidden = !loggedIn;
  if (!loggedIn) {
    loginView();
    return;
  }
  const [path, queryText = ""] = location.hash.replace(/^#/, "").split("?");
  const query = new URLSearchParams(queryText);
  for (const link of nav.querySelectorAll("a")) {
    const here = path === link.hash.slice(1) || (link.hash === "#/galleries" && /^\/(gallery|face)\//.test(path));
    if (here) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const found = ROUTES.find(([pattern]) => pattern.test(path));
  if (!found) {
    location.replace("#/galleries");
    return;
  }
  const [pattern, view] = found;
  const params = pattern.exec(path).slice(1).map(decodeURIComponent);
  const signal = current.signal;
  fill(main, h("p", { class: "muted" }, "Loading…"));
  try {
    await view(main, { params, query, signal });
  } catch (error) {
    if (error.name === "AbortError") return;
    fill(main, h("div", { class: "card" }, h("h1", {}, "Something went wrong"), h("p", { class: "error" }, errorText(error))));
  }
  if (!signal.aborted) {
    const heading = main.querySelector("h1");
    document.title = heading ? `${heading.textContent} · FaceGrid` : "FaceGrid";
    // After a link or Back, keyboard and screen-reader users start at the new page's content.
    if (navigated) main.focus({ preventScroll: true });
  }
}

function logout() {
  session.clear();
  current?.abort();
  notify("Logged out.");
  route("#/login");
}

logoutButton.addEventListener("click", logout);
window.addEventListener("hashchange", render);
window.addEventListener("facegrid:unauthorized", () => {
  session.clear();
  notify("The token is no longer valid: log in again.", "error");
  render();
});
render();
