// The labelling page: shows the queue's next pair, sends one answer per pair, shows progress.
// A label is on disk when /api/label answers; only then does the next pair appear.
"use strict";
const KEYMAP = { ArrowLeft: "left", ArrowRight: "right", ArrowDown: "equal", " ": "skip",
                 "1": "left", "2": "right", "e": "equal", "s": "skip" };
let current = null;   // the pair on screen
let busy = false;     // an answer is being saved: further keys wait
let shownAt = 0;
let pollTimer = null;

const $ = (id) => document.getElementById(id);

function render(state) {
  $("progress-text").textContent = `${state.labelled} / ${state.pairs} labelled` +
    ` (left ${state.left}, right ${state.right}, equal ${state.equal}, skipped ${state.skip})`;
  $("progress-bar").max = Math.max(state.pairs, 1);
  $("progress-bar").value = state.labelled;
  if (state.goal) { $("goal").textContent = `Goal: ${state.goal}`; $("goal").hidden = false; }
  const next = state.next;
  const waiting = next === null;
  $("pair").hidden = waiting;
  $("buttons").hidden = waiting;
  $("done").hidden = !waiting;
  if (waiting) {
    current = null;
    document.body.dataset.pair = "";
    if (!pollTimer) pollTimer = setInterval(refresh, 2000);
    return;
  }
  if (pollTimer) { clearInterval(pollTimer); pollTimer = null; }
  if (!current || current.pair !== next.pair) {
    current = next;
    $("left").src = next.left;
    $("right").src = next.right;
    $("left").classList.remove("chosen");
    $("right").classList.remove("chosen");
    shownAt = performance.now();
  }
  document.body.dataset.pair = String(next.pair);
}

async function refresh() {
  try {
    const r = await fetch("/api/state", { cache: "no-store" });
    render(await r.json());
    $("status").textContent = "";
  } catch (e) {
    $("status").textContent = "cannot reach the label server: is `pixelrl label` still running?";
  }
}

async function answer(key) {
  if (busy || !current) return;
  busy = true;
  document.body.dataset.busy = "1";
  if (key === "left" || key === "right") $(key).classList.add("chosen");
  try {
    const r = await fetch("/api/label", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ pair: current.pair, key: key, ms: Math.round(performance.now() - shownAt) }),
    });
    const body = await r.json();
    if (!r.ok) { $("status").textContent = body.error || `error ${r.status}`; return; }
    $("status").textContent = "";
    render(body.state);
  } catch (e) {
    $("status").textContent = "the label was not saved (server unreachable); press the key again";
  } finally {
    busy = false;
    document.body.dataset.busy = "";
  }
}

document.addEventListener("keydown", (ev) => {
  const key = KEYMAP[ev.key];
  if (key) { ev.preventDefault(); answer(key); }
});
for (const b of document.querySelectorAll("nav button")) b.addEventListener("click", () => answer(b.dataset.key));
refresh();
