// Cairn dashboard behaviour. Loaded as a file (the CSP forbids inline script); no framework, no
// build step. Every change goes through the JSON API with the page's CSRF token.
"use strict";
(function () {
  const meta = (name) => (document.querySelector(`meta[name="${name}"]`) || {}).content || "";
  const base = meta("cairn-base");
  let csrf = meta("csrf-token");
  const enc = encodeURIComponent;

  function flash(text, isError) {
    const box = document.getElementById("flash");
    if (!box) return;
    box.textContent = text;
    box.className = isError ? "error" : "";
  }

  // A note for the next page of this tab (a start that found its id taken, then went to that run).
  const NOTE = "cairn-note";
  const note = sessionStorage.getItem(NOTE);
  if (note) {
    sessionStorage.removeItem(NOTE);
    flash(note);
  }

  // The CSRF token of the page as the server serves it now. A server restarted since this page was
  // served (`cairn dev` restarts on every code change) signs with a new key: every button failed.
  async function freshCsrf() {
    const response = await fetch(window.location.href, { credentials: "same-origin" });
    if (!response.ok) return false;
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    const fresh = (page.querySelector('meta[name="csrf-token"]') || {}).content || "";
    if (!fresh || fresh === csrf) return false;
    csrf = fresh;
    return true;
  }

  class SessionEnded extends Error {
    constructor() { super(`your session has ended: log in again at ${window.location.origin}${base}/login`); }
  }

  async function api(method, path, body, retried) {
    const init = { method, credentials: "same-origin", headers: { "X-CSRF-Token": csrf, Accept: "application/json" } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = body instanceof RawJson ? body.text : JSON.stringify(body);
    }
    const response = await fetch(base + path, init);
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (response.status === 403 && !retried && data && /CSRF/.test(data.message || "") && (await freshCsrf())) {
      return api(method, path, body, true);
    }
    if (response.status === 401) {  // the session ended (logged out elsewhere, a new token): not a header to send
      throw new SessionEnded();
    }
    if (!response.ok) {
      const message = data && data.message ? data.message : `HTTP ${response.status}`;
      throw new Error(message);
    }
    return data;
  }

  // --- run controls (run page) ---------------------------------------------------------------
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (button) {
      const op = button.dataset.action;
      button.disabled = true;
      try {
        const out = await api("POST", `/api/runs/${enc(button.dataset.run)}/${op}`);
        flash(`Run ${out.id}: ${op} done, now ${out.status}.`);
        await refreshRun(true);
      } catch (e) {
        flash(`Could not ${op}: ${e.message}`, true);
        button.disabled = false;
      }
      return;
    }
    if (event.target.closest("button[data-logout]")) {
      try { await api("POST", "/logout"); } catch (e) { /* the cookie is cleared either way */ }
      window.location.assign(base + "/login");
      return;
    }
    const bulk = event.target.closest("button[data-bulk]");
    if (bulk) await bulkAction(bulk.dataset.bulk);
  });

  function parseJson(text, what) {
    try { return JSON.parse(text); } catch (e) { throw new Error(`${what} is not valid JSON: ${e.message}`); }
  }

  // A request body sent as the JSON text it is. Numbers typed into the start form go as written:
  // through JavaScript's numbers, 9007199254740993 was started as 9007199254740992.
  function RawJson(text) { this.text = text; }

  const INTEGER = /^[+-]?\d+$/;
  const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;
  const PARTS = /^([+-]?)(\d*)(?:\.(\d*))?([eE][+-]?\d+)?$/;

  // A number as typed, written as JSON writes it, still as text. `007`, `.5` and `1.` are numbers
  // to the form but not JSON: pasted into the body as typed, the start failed ("not valid JSON").
  function numberText(text, kind, name) {
    const trimmed = text.trim();
    if (!(kind === "integer" ? INTEGER : NUMBER).test(trimmed)) {
      throw new Error(`${name} must be ${kind === "integer" ? "a whole number" : "a number"}, got ${JSON.stringify(text)}`);
    }
    const [, sign, whole, fraction, exponent] = PARTS.exec(trimmed);
    const digits = whole.replace(/^0+(?=\d)/, "") || "0";  // JSON allows no leading zero, and no bare `.`
    return `${sign === "-" ? "-" : ""}${digits}${fraction ? `.${fraction}` : ""}${exponent || ""}`;
  }

  document.addEventListener("submit", async (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.matches("#signal-form, #fork-form, form.start")) return;
    event.preventDefault();
    // One request at a time per form: a double click started two runs, made two forks, sent two signals.
    if (form.dataset.busy) return;
    form.dataset.busy = "1";
    const buttons = Array.from(form.querySelectorAll('button[type="submit"], button:not([type])'));
    for (const b of buttons) b.disabled = true;
    // Not `form.id`: a control named "id" (the fork form's new-id input) shadows that property.
    const which = form.getAttribute("id");
    let leaving = false;
    try {
      if (which === "signal-form") {
        const name = form.elements.name.value.trim();
        const payload = parseJson(form.elements.payload.value || "null", "The payload");
        await api("POST", `/api/runs/${enc(form.dataset.run)}/signals/${enc(name)}`, payload);
        flash(`Signal ${name} sent.`);
        await refreshRun(true);
      } else if (which === "fork-form") {
        const body = { from_step: Number(form.elements.from_step.value) };
        if (form.elements.id.value.trim()) body.id = form.elements.id.value.trim();
        const out = await api("POST", `/api/runs/${enc(form.dataset.run)}/fork`, body);
        leaving = true;
        window.location.assign(`${base}/runs/${enc(out.id)}`);
      } else {
        await startRun(form);
        leaving = true;
      }
    } catch (e) {
      if (form.matches("form.start")) showStartError(form, e);
      else flash(e.message, true);
    } finally {
      if (!leaving) {  // the page it goes to next is a new one: this form stays spent till then
        delete form.dataset.busy;
        for (const b of buttons) b.disabled = false;
      }
    }
  });

  // A field's error, which names it: the start form puts it beside that field.
  function fieldError(message, name) {
    const error = new Error(message);
    error.field = name;
    return error;
  }

  // The parameter a server's refusal names: `argument 'times' of ...`, `missing required arguments: a, b`.
  function namedField(message) {
    const quoted = /argument (['"])(.*?)\1/.exec(message);
    if (quoted) return quoted[2];
    const missing = /missing required arguments: ([^,;\s]+)/.exec(message);
    return missing ? missing[1] : null;
  }

  // A start's error beside its form, the field it names marked and focused. It went to the flash at
  // the top of the page, out of sight of a form further down, and named no field.
  function showStartError(form, e) {
    const box = form.querySelector("[data-form-error]");
    if (!box) { flash(e.message, true); return; }
    const name = e.field || namedField(e.message);
    const field = name ? Array.from(form.querySelectorAll("[data-param]")).find((f) => f.dataset.param === name) : null;
    const label = field && field.closest("label");
    const title = label ? label.querySelector("span").firstChild.textContent.trim() : name;
    box.textContent = field ? `${title}: ${e.message}` : e.message;
    box.hidden = false;
    if (field) {
      field.setAttribute("aria-invalid", "true");
      field.setAttribute("aria-describedby", box.id);
      field.focus();
    } else {
      box.focus();
    }
    box.scrollIntoView({ block: "nearest" });
  }

  function clearStartError(form) {
    const box = form.querySelector("[data-form-error]");
    if (box) { box.hidden = true; box.textContent = ""; }
    for (const field of form.querySelectorAll("[aria-invalid]")) {
      field.removeAttribute("aria-invalid");
      field.removeAttribute("aria-describedby");
    }
  }

  // A JSON list or object as typed, less its brackets, to splice into the body (numbers as written).
  function inner(text, name, wanted) {
    const parsed = parseJson(text, name);
    const isList = Array.isArray(parsed);
    if (wanted === "list" ? !isList : (isList || parsed === null || typeof parsed !== "object")) {
      throw fieldError(`${name} must be a JSON ${wanted}, got ${text.trim().slice(0, 40)}`, name);
    }
    return { text: text.trim().slice(1, -1).trim(), keys: isList ? [] : Object.keys(parsed) };
  }

  async function startRun(form) {
    clearStartError(form);
    const args = [];  // each as JSON text, or null for a positional left empty
    const kwargs = [];  // "name": value, each as JSON text
    const spread = [];  // the text of a **kwargs object, less its braces
    const named = new Set();
    let varArgs = "";
    for (const input of form.querySelectorAll("[data-param]")) {
      const kind = input.dataset.kind;
      const name = input.dataset.param;
      const passed = input.dataset.pass || "keyword";
      let value = null;
      if (kind === "boolean") {
        value = input.checked ? "true" : "false";
      } else {
        const text = input.value;
        if (text === "" && !input.required) {
          if (passed === "positional") args.push({ name, value: null });
          continue;
        }
        if (passed === "var_positional") { varArgs = inner(text, name, "list").text; continue; }
        if (passed === "var_keyword") {
          const got = inner(text, name, "object");
          if (got.text) spread.push(got);
          continue;
        }
        try {
          if (kind === "integer" || kind === "number") value = numberText(text, kind, name);
          else if (kind === "json") { parseJson(text, name); value = text.trim(); }  // checked, sent as written
          else value = JSON.stringify(text);
        } catch (e) {
          throw fieldError(e.message, name);
        }
      }
      if (passed === "positional") args.push({ name, value });
      else { kwargs.push(`${JSON.stringify(name)}:${value}`); named.add(name); }
    }
    // A positional left empty can only be left out at the end: those after it would shift into its place.
    const given = varArgs ? args.length : args.map((a) => a.value !== null).lastIndexOf(true) + 1;
    const gap = args.slice(0, given).find((a) => a.value === null);
    if (gap) throw fieldError(`${gap.name} is needed: the arguments after it are given by position`, gap.name);
    const positional = args.slice(0, given).map((a) => a.value);
    if (varArgs) positional.push(varArgs);
    for (const got of spread) {
      const twice = got.keys.find((key) => named.has(key));
      if (twice) throw fieldError(`${twice} is given twice: in its own field and in the object of more arguments`, twice);
      kwargs.push(got.text);
    }
    let body = `{"args":[${positional.join(",")}],"kwargs":{${kwargs.join(",")}}`;
    const id = form.querySelector("[data-run-id]").value.trim();
    if (id) body += `,"id":${JSON.stringify(id)}`;
    const out = await api("POST", `/api/workflows/${enc(form.dataset.workflow)}/runs`, new RawJson(`${body}}`));
    if (!out.created) {  // said on the run's page, where the browser goes next
      sessionStorage.setItem(NOTE, `Run ${out.id} existed already: nothing was started; this is that run.`);
    }
    window.location.assign(`${base}/runs/${enc(out.id)}`);
  }

  // --- live updates: replace a part of the page, keeping the reader's place in it ------------------
  // A live update replaced the part holding the keyboard focus (a run's link or checkbox, a run
  // control, a step's summary): focus fell back to the page's start every few seconds, and what was
  // typed into a field of the part, unsent, was lost. Each control is found again in the new part
  // by what names it (its id or attributes, else its place under the nearest named element).
  const NAMING = ["id", "name", "value", "href", "data-action", "data-run", "data-param", "data-step", "data-count", "data-live"];

  function naming(el) {
    const attrs = NAMING.filter((a) => el.hasAttribute(a) && !(a === "value" && !(el instanceof HTMLInputElement)));
    if (attrs.length === 0) return null;
    return el.tagName.toLowerCase() + attrs.map((a) => `[${a}="${CSS.escape(el.getAttribute(a))}"]`).join("");
  }

  function placeOf(el, part) {  // {anchor selector or null (the part), child index path from it}
    const path = [];
    let at = el;
    while (at !== part) {
      const selector = naming(at);
      if (selector) return { selector, path };
      path.unshift(Array.prototype.indexOf.call(at.parentElement.children, at));
      at = at.parentElement;
    }
    return { selector: null, path };
  }

  function find(part, place) {
    let at = place.selector ? (part.matches(place.selector) ? part : part.querySelector(place.selector)) : part;
    for (const i of place.path) at = at && at.children[i];
    return at || null;
  }

  function edited(field) {
    if (field instanceof HTMLInputElement && (field.type === "checkbox" || field.type === "radio")) {
      return field.checked !== field.defaultChecked;
    }
    if (field instanceof HTMLSelectElement) return Array.from(field.options).some((o) => o.selected !== o.defaultSelected);
    return field.value !== field.defaultValue;
  }

  function replaceKeepingPlace(part, next) {
    const focused = part.contains(document.activeElement) && document.activeElement !== part ? document.activeElement : null;
    const focusPlace = focused && placeOf(focused, part);
    const typed = Array.from(part.querySelectorAll("input, textarea, select")).filter(edited)
      .map((field) => ({ place: placeOf(field, part), field }));
    part.replaceWith(next);
    for (const { place, field } of typed) {
      const twin = find(next, place);
      if (!twin || twin.tagName !== field.tagName) continue;
      if ("checked" in field && (field.type === "checkbox" || field.type === "radio")) twin.checked = field.checked;
      else twin.value = field.value;
    }
    const again = focusPlace && find(next, focusPlace);
    if (again && again.tagName === focused.tagName) {
      again.focus({ preventScroll: true });
      if (typeof focused.selectionStart === "number" && typeof again.setSelectionRange === "function") {
        try { again.setSelectionRange(focused.selectionStart, focused.selectionEnd, focused.selectionDirection); } catch (e) { /* not a text field */ }
      }
    }
    return next;
  }

  // --- runs page: selection, bulk actions, live updates -----------------------------------------
  let live = document.getElementById("runs-live");

  function picked() {
    return Array.from(document.querySelectorAll("input.pick:checked")).map((box) => box.value);
  }

  function showBulk() {
    const bar = document.getElementById("bulk");
    if (!bar) return;
    const ids = picked();
    bar.hidden = ids.length === 0;
    document.getElementById("bulk-count").textContent = String(ids.length);
  }

  document.addEventListener("change", (event) => {
    if (event.target.id === "select-all") {
      for (const box of document.querySelectorAll("input.pick")) box.checked = event.target.checked;
    }
    if (event.target.matches("input.pick, #select-all")) showBulk();
  });

  let bulkBusy = false;  // a double click retried a failed run twice

  async function bulkAction(op) {
    if (bulkBusy) return;
    bulkBusy = true;
    try { await bulkActionOnce(op); } finally { bulkBusy = false; }
  }

  async function bulkActionOnce(op) {
    const ids = picked();
    const failed = [];
    for (const id of ids) {
      try { await api("POST", `/api/runs/${enc(id)}/${op}`); } catch (e) { failed.push(`${id}: ${e.message}`); }
    }
    const done = ids.length - failed.length;
    flash(`${op}: ${done} of ${ids.length} runs done.` + (failed.length ? ` Refused: ${failed.join("; ")}` : ""), failed.length > 0);
    for (const box of document.querySelectorAll("input.pick, #select-all")) box.checked = false;
    showBulk();
    await refreshRuns();
  }

  async function refreshRuns() {
    if (!live) return;
    const response = await fetch(live.dataset.src, { credentials: "same-origin" });
    if (response.status === 401) sessionEnded();
    if (!response.ok) return;
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    const next = live.cloneNode(false);
    next.append(...Array.from(fresh.body.childNodes));
    live = replaceKeepingPlace(live, next);
  }

  let toldEnded = false;

  function sessionEnded() {  // said once (the live updates used to stop without a word)
    if (toldEnded) return;
    toldEnded = true;
    flash(`Live updates stopped: your session has ended. Log in again at ${window.location.origin}${base}/login`, true);
  }

  if (live) {
    setInterval(() => {
      const toggle = document.getElementById("live");
      if (document.hidden || (toggle && !toggle.checked) || picked().length > 0) return;
      refreshRuns().catch(() => {});
    }, 3000);
  }

  // --- run page: follow the run while it moves ------------------------------------------------------
  const runBox = document.getElementById("run");

  async function refreshRun(force) {
    if (!runBox) return;
    const id = runBox.dataset.run;
    if (!force) {
      const now = await api("GET", `/api/runs/${enc(id)}`);
      if (String(now.updated_at) === runBox.dataset.updated && now.status === runBox.dataset.status) return;
    }
    const response = await fetch(window.location.href, { credentials: "same-origin" });
    if (!response.ok) return;
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    const fresh = page.getElementById("run");
    if (!fresh) return;
    const open = new Set(Array.from(runBox.querySelectorAll("details[open]")).map((d) => d.id).filter(Boolean));
    for (const part of runBox.querySelectorAll("[data-live]")) {
      const next = fresh.querySelector(`[data-live="${part.dataset.live}"]`);
      if (next) replaceKeepingPlace(part, document.importNode(next, true));
    }
    for (const id of open) {
      const details = document.getElementById(id);
      if (details) details.open = true;
    }
    // Forms outside the live parts (what is typed in them stays) follow the run's state.
    for (const el of runBox.querySelectorAll("[data-live-disabled]")) {
      const twin = fresh.querySelector(`[data-live-disabled="${el.dataset.liveDisabled}"]`);
      if (twin) el.disabled = twin.disabled;
    }
    for (const el of runBox.querySelectorAll("[data-live-max]")) {  // the fork's last step grows with the run
      const twin = fresh.querySelector(`[data-live-max="${el.dataset.liveMax}"]`);
      if (twin) el.max = twin.max;
    }
    const token = (page.querySelector('meta[name="csrf-token"]') || {}).content;
    if (token) csrf = token;
    runBox.dataset.updated = fresh.dataset.updated;
    runBox.dataset.status = fresh.dataset.status;
  }

  if (runBox) {
    setInterval(() => {
      if (document.hidden) return;
      refreshRun(false).catch((e) => { if (e instanceof SessionEnded) sessionEnded(); });
    }, 2000);
  }
})();
