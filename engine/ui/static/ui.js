// The web UI's live updates: each page polls a small feed and patches its own elements.
// Data is only ever set as text (textContent, attributes): never parsed as HTML.
"use strict";

(() => {
  const POLL_MS = 1500;
  const GRAPH_MS = 4000;
  const TIMELINE_MS = 3000;
  const body = document.body;
  const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

  async function get(url, text) {
    const response = await fetch(url, { credentials: "same-origin" });
    if (response.status === 401) {
      const here = location.pathname + location.search;
      location.assign("/login?next=" + encodeURIComponent(here));
      throw new Error("session ended");
    }
    if (!response.ok) throw new Error(url + ": " + response.status);
    return text ? response.text() : response.json();
  }

  // Calls `step` every POLL_MS until it returns false; a failed call is tried again.
  async function every(step) {
    for (;;) {
      await sleep(POLL_MS);
      try {
        if ((await step()) === false) return;
      } catch (error) {
        console.warn(error);
      }
    }
  }

  function setBadge(container, status, abandoned) {
    const badge = container && container.querySelector(".badge");
    if (!badge) return;
    badge.className = "badge s-" + status;
    badge.textContent = status + (abandoned ? " (abandoned)" : "");
    badge.dataset.shown = status + (abandoned ? "!" : "");
  }

  function setText(container, selector, text) {
    const found = container && container.querySelector(selector);
    if (found) found.textContent = text;
  }

  function setStatusClass(element, status) {
    for (const name of Array.from(element.classList)) {
      if (name.startsWith("s-")) element.classList.remove(name);
    }
    element.classList.add("s-" + status);
  }

  function swapSvg(box, text) {
    const parsed = new DOMParser().parseFromString(text, "image/svg+xml").documentElement;
    if (box && parsed.nodeName === "svg") box.replaceChildren(document.importNode(parsed, true));
  }

  function cell(className, text) {
    const td = document.createElement("td");
    td.className = className;
    td.textContent = text;
    return td;
  }

  function newRunRow(run) {
    const row = document.createElement("tr");
    row.dataset.id = String(run.id);
    const id = document.createElement("td");
    const link = document.createElement("a");
    link.href = "/ui/runs/" + encodeURIComponent(run.id);
    link.textContent = String(run.id);
    id.append(link);
    const definition = document.createElement("td");
    definition.className = "c-definition";
    const defLink = document.createElement("a");
    defLink.href = "/ui/definitions/" + encodeURIComponent(run.definition);
    defLink.textContent = run.definition;
    definition.append(defLink);
    const status = cell("c-status", "");
    const badge = document.createElement("span");
    status.append(badge);
    badge.className = "badge";
    row.append(id, definition, status, cell("c-trigger", ""), cell("c-started", ""),
      cell("c-duration", ""));
    return row;
  }

  function runsPage() {
    const tbody = document.querySelector("#runs tbody");
    const firstPage = body.dataset.firstPage === "true";
    const size = Number(body.dataset.pageSize);
    let cursor = body.dataset.cursor;
    let settled = false;
    every(async () => {
      const shown = Array.from(tbody.querySelectorAll("tr[data-id]"), (row) => {
        const badge = row.querySelector(".c-status .badge");
        return row.dataset.id + ":" + (badge ? badge.dataset.shown : "");
      });
      const query = new URLSearchParams({
        since: cursor, settled: String(settled), shown: shown.join(","),
        definition: body.dataset.definition, status: body.dataset.status,
      });
      const data = await get("/ui/feed/runs?" + query);
      cursor = data.cursor;
      settled = data.settled;
      for (const run of data.runs.slice().reverse()) {
        let row = tbody.querySelector('tr[data-id="' + run.id + '"]');
        if (!row) {
          const top = tbody.querySelector("tr[data-id]");
          if (!firstPage || (top && Number(top.dataset.id) > run.id)) continue;
          row = newRunRow(run);
          tbody.prepend(row);
        }
        setBadge(row, run.status, run.abandoned);
        setText(row, ".c-trigger", run.trigger);
        setText(row, ".c-started", run.started);
        setText(row, ".c-duration", run.duration);
      }
      for (const empty of tbody.querySelectorAll("tr.empty")) {
        if (tbody.querySelector("tr[data-id]")) empty.remove();
      }
      const rows = tbody.querySelectorAll("tr[data-id]");
      for (let i = size; i < rows.length; i++) rows[i].remove();
    });
  }

  function runPage() {
    const id = body.dataset.run;
    const graphBox = document.getElementById("graph-box");
    const timelineBox = document.getElementById("timeline-box");
    const table = document.getElementById("step-table");
    let cursor = body.dataset.cursor;
    let settled = false;
    let graphDue = false;
    let timelineDue = false;
    let graphAt = Date.now();
    let timelineAt = Date.now();
    if (body.dataset.ended === "true") return;

    const refreshGraph = async () => {
      graphDue = false;
      graphAt = Date.now();
      if (graphBox) swapSvg(graphBox, await get("/ui/runs/" + id + "/graph.svg", true));
    };
    // More steps changed than a feed answer holds: the rows it left out are read again with
    // the page itself (its step table, on the page of it shown).
    let tableDue = false;
    const refreshTable = async () => {
      tableDue = false;
      const page = new DOMParser().parseFromString(await get(location.href, true), "text/html");
      const fresh = page.querySelector("#step-table tbody");
      const shown = table && table.querySelector("tbody");
      if (!fresh || !shown) return;
      shown.replaceChildren(...Array.from(fresh.childNodes, (n) => document.importNode(n, true)));
    };
    const refreshTimeline = async () => {
      timelineDue = false;
      timelineAt = Date.now();
      const url = "/ui/runs/" + id + "/timeline.svg?tpage=" + body.dataset.tpage;
      swapSvg(timelineBox, await get(url, true));
    };

    every(async () => {
      const query = new URLSearchParams({ since: cursor, settled: String(settled) });
      const data = await get("/ui/feed/runs/" + id + "?" + query);
      cursor = data.cursor;
      settled = data.settled;
      setBadge(document.getElementById("run-status"), data.status, data.abandoned);
      setText(document, "#run-finished", data.finished);
      setText(document, "#run-duration", data.duration);
      for (const step of data.steps) {
        const key = CSS.escape(step.step);
        const node = graphBox && graphBox.querySelector('g.node[data-step="' + key + '"]');
        if (node) setStatusClass(node, step.status);
        else graphDue = true;
        const row = table && table.querySelector('tr[data-step="' + key + '"]');
        if (row) {
          setBadge(row, step.status, false);
          setText(row, ".c-attempt", String(step.attempt));
          setText(row, ".c-started", step.started);
          setText(row, ".c-finished", step.finished);
          setText(row, ".c-duration", step.duration);
        }
      }
      if (data.steps.length) timelineDue = true;
      if (data.more) graphDue = tableDue = true;
      for (const [step, summary] of Object.entries(data.items)) {
        const key = CSS.escape(step);
        const node = graphBox && graphBox.querySelector('g.node[data-step="' + key + '"]');
        const short = summary.length > 34 ? summary.slice(0, 33) + "…" : summary;
        setText(node, "text.sub", short);
        setText(table && table.querySelector('tr[data-step="' + key + '"]'), ".c-items", summary);
      }
      const resumable = ["failed", "cancelled"].includes(data.status) || data.abandoned;
      document.getElementById("cancel-form").hidden = data.ended;
      document.getElementById("resume-form").hidden = !resumable;
      const now = Date.now();
      if (data.ended || (graphDue && now - graphAt > GRAPH_MS)) {
        await refreshGraph();
        if (tableDue) await refreshTable();
      }
      if (data.ended || (timelineDue && now - timelineAt > TIMELINE_MS)) await refreshTimeline();
      if (data.ended) body.dataset.ended = "true";
      return !data.ended;
    });
  }

  function logsPage() {
    const id = body.dataset.run;
    const lines = document.getElementById("log-lines");
    const more = document.getElementById("log-more");
    const state = document.getElementById("log-state");
    let after = null;

    const load = async () => {
      const query = new URLSearchParams({ step: body.dataset.step });
      if (body.dataset.item) query.set("item", body.dataset.item);
      if (after !== null) query.set("after", String(after));
      const data = await get("/ui/feed/runs/" + id + "/logs?" + query);
      for (const line of data.lines) {
        const span = document.createElement("span");
        span.className = "line l-" + line.level;
        const where = line.item === null ? "" : "[" + line.item + "] ";
        const at = line.at.slice(11, 23);
        span.textContent = at + " " + line.level.padEnd(8) + where + line.message + "\n";
        lines.append(span);
      }
      if (data.next === null) {
        state.textContent = lines.childElementCount ? "complete" : "no lines";
        more.hidden = true;
        return "done";
      }
      after = data.next;
      if (data.lines.length >= 500) {
        state.textContent = "more lines to load";
        more.hidden = false;
        return "paused";
      }
      state.textContent = "following";
      more.hidden = true;
      return "follow";
    };

    const follow = async () => {
      let outcome = await load();
      while (outcome === "follow") {
        await sleep(POLL_MS);
        try {
          outcome = await load();
        } catch (error) {
          console.warn(error);
        }
      }
    };
    more.addEventListener("click", () => follow());
    follow();
  }

  const pages = { runs: runsPage, run: runPage, logs: logsPage };
  const start = pages[body.dataset.feed];
  if (start) start();
})();
