// The page: streams samples into the text box, lists the likeliest next tokens, and draws
// the surprisal of the text's tokens. Plain JavaScript against the server's own API.
"use strict";

const $ = (id) => document.getElementById(id);
const text = $("text");
let running = null;  // the AbortController of the sample being streamed
let refreshTimer = null;

async function post(path, body, signal) {
  const res = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
    signal,
  });
  if (!res.ok) {
    const answer = await res.json().catch(() => ({}));
    throw new Error(answer.error ? answer.error.message : `HTTP ${res.status}`);
  }
  return res;
}

function say(message) { $("status").textContent = message || ""; }

// A rule that cannot end a text (none) scores nothing: scores and next tokens use eos then.
function scoringRule() {
  const rule = $("stop-rule").value;
  return rule === "none" ? "eos" : rule;
}

async function describeModel() {
  const res = await fetch("/v1/models");
  const model = (await res.json()).data[0];
  const loss = model.val_loss == null ? "" : `, validation loss ${model.val_loss.toFixed(3)}`;
  $("model").textContent =
    `${model.id}: ${model.level} level, ${model.cell} ${model.layers}x${model.hidden}, ` +
    `${model.parameters.toLocaleString()} parameters${loss}`;
  const select = $("stop-rule");
  select.innerHTML = "";
  for (const rule of model.stop_rules) select.add(new Option(rule, rule));
}

// -- Generate: one event per token, appended as it comes ------------------------------------

async function generate() {
  if (running) { running.abort(); return; }
  running = new AbortController();
  $("generate").textContent = "Stop";
  say("");
  const body = {
    prompt: text.value,
    temperature: Number($("temperature").value),
    max_tokens: Number($("max-tokens").value),
    stop_rule: $("stop-rule").value,
    stream: true,
  };
  try {
    const res = await post("/v1/completions", body, running.signal);
    await readEvents(res, (event) => {
      if (event.error) throw new Error(event.error.message);
      for (const choice of event.choices) text.value += choice.text;
      text.scrollTop = text.scrollHeight;
    });
  } catch (e) {
    if (e.name !== "AbortError") say(e.message);
  } finally {
    running = null;
    $("generate").textContent = "Generate";
    refresh();
  }
}

async function readEvents(res, onEvent) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const data = buffer.slice(0, cut).replace(/^data: /, "");
      buffer = buffer.slice(cut + 2);
      if (data === "[DONE]") return;
      onEvent(JSON.parse(data));
    }
  }
}

// -- the likeliest next tokens --------------------------------------------------------------

function shown(token) {
  if (token.token === "<eos>") return "⏎ end";
  return token.text.replace(/ /g, "␣").replace(/\n/g, "⏎") || token.token;
}

async function nextTokens() {
  const res = await post("/v1/next", { prompt: text.value, k: 8, stop_rule: scoringRule() });
  const box = $("next");
  box.innerHTML = "";
  for (const token of (await res.json()).data) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "next-token";
    button.textContent = shown(token);
    const p = document.createElement("small");
    p.textContent = `${(100 * token.prob).toFixed(1)}%`;
    button.append(p);
    button.addEventListener("click", () => {
      text.value += token.text || (token.token === "<eos>" ? "\n" : "");
      refresh();
    });
    box.append(button);
  }
}

// -- the surprisal heatmap ------------------------------------------------------------------

function colour(bits) {
  const a = Math.min(bits / 10, 1);  // 10 bits and more: the strongest red
  return `rgba(211, 47, 47, ${a.toFixed(2)})`;
}

async function heatmap() {
  const lines = text.value.split("\n").filter((line) => line.trim());
  const box = $("heatmap");
  if (!lines.length) { box.innerHTML = ""; return; }
  const body = { input: lines, stop_rule: scoringRule(), per_token: true };
  const scores = (await (await post("/v1/score", body)).json()).data;
  box.innerHTML = "";
  for (const s of scores) {
    const line = document.createElement("div");
    line.className = "line";
    for (const cell of s.heatmap) {
      const span = document.createElement("span");
      span.className = cell.kind === "eos" ? "cell eos" : "cell";
      span.textContent = cell.kind === "eos" ? "⏎" : cell.text;
      span.style.background = colour(cell.bits);
      span.title = `${cell.bits.toFixed(2)} bits`;
      line.append(span);
    }
    const figure = document.createElement("span");
    figure.className = "figure";
    figure.textContent = `${s.bits_per_char.toFixed(2)} bits/char`;
    line.append(figure);
    box.append(line);
  }
}

// -- wiring ---------------------------------------------------------------------------------

// body[data-settled] says whether the lists show the text as it is (the browser test waits on it)
function refresh() {
  clearTimeout(refreshTimer);
  document.body.dataset.settled = "no";
  refreshTimer = setTimeout(async () => {
    const timer = refreshTimer;
    try {
      await Promise.all([nextTokens(), heatmap()]);
    } catch (e) {
      say(e.message);
    }
    if (timer === refreshTimer) document.body.dataset.settled = "yes";
  }, 250);
}

$("generate").addEventListener("click", generate);
text.addEventListener("input", refresh);
$("stop-rule").addEventListener("change", refresh);
describeModel().then(refresh).catch((e) => say(e.message));
