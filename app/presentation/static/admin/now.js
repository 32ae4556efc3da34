// "Now": the active version, every CDN pool and its hosts' health, the split, the rate
// limits, the live rate.
// Endpoints that a server does not have yet (404 from the router) show a plain note and are
// asked again every 30 s, so a rolling upgrade lights the panel up without a reload.

import { ApiError, call } from "./api.js";
import { LiveChart } from "./chart.js";
import { $, ago, h, percent, replace, text, when } from "./dom.js";
import { assess, fallbackWords, poolsOf, reportedWords, summaryWords } from "./pools.js";
import { store } from "./store.js";

const POLL_MS = 2000;
const LIMITS_EVERY = 5; // polls: the override count is a COUNT(*) on the server
const RETRY_MISSING_MS = 30000;
const NOT_AVAILABLE = "not available on this server";

const CHECK_WORDS = {
  postgres: {
    name: "PostgreSQL",
    bad: "unreachable: redirects go on with the configuration in memory; changes cannot be saved until it is back.",
  },
  redis: {
    name: "Redis",
    bad: "unreachable: each worker counts the split on its own, so it is exact per worker only; rate limits and statistics are local.",
  },
  config: { name: "Configuration", bad: "not loaded: this instance cannot redirect." },
  cdn_health: { name: "CDN health checks", bad: "stale or failing: host states may be out of date." },
  rate_limits: {
    name: "Rate limits",
    bad: "a client spread over several workers can get up to its limit from each one until Redis is back.",
  },
};

// A check this console does not know yet (a newer server's) still reads as words.
function checkWords(name) {
  return CHECK_WORDS[name] || { name: (name.charAt(0).toUpperCase() + name.slice(1)).replaceAll("_", " "), bad: "" };
}

export class NowPanel {
  constructor({ onUnauthorized }) {
    this.onUnauthorized = onUnauthorized;
    this.timer = null;
    this.missingUntil = {};
    this.previousStats = null;
    this.latest = { ready: null, stats: null, health: null, limits: null };
    this.polls = 0;
    this.chart = null;
    store.onConfig(() => this.render());
  }

  start() {
    this.stop();
    this.chart?.destroy();
    this.chart = new LiveChart($("#now-chart"), {
      label: "Requests per second by target",
      series: [
        { key: "cdn", label: "CDN", className: "series-cdn" },
        { key: "origin", label: "Origin", className: "series-origin" },
      ],
    });
    this.previousStats = null;
    const tick = async () => {
      await this.poll();
      this.timer = setTimeout(tick, POLL_MS);
    };
    tick();
  }

  stop() {
    clearTimeout(this.timer);
    this.timer = null;
  }

  async optional(name, path) {
    if ((this.missingUntil[name] || 0) > Date.now()) return { missing: true };
    try {
      const { data } = await call(path);
      delete this.missingUntil[name];
      return { data };
    } catch (error) {
      if (error instanceof ApiError && error.missing) {
        this.missingUntil[name] = Date.now() + RETRY_MISSING_MS;
        return { missing: true };
      }
      if (error instanceof ApiError && error.unauthorized) this.onUnauthorized(error);
      return { error };
    }
  }

  async poll() {
    const countLimits = this.polls % LIMITS_EVERY === 0;
    this.polls += 1;
    const [config, ready, stats, health, limits] = await Promise.all([
      call("/config").catch((error) => ({ error })),
      call("/ready").then(({ data }) => ({ data })).catch((error) => ({ data: error.problem, error })),
      this.optional("stats", "/stats"),
      this.optional("health", "/cdn/health"),
      countLimits ? this.optional("limits", "/limits?limit=1") : this.latest.limits,
    ]);
    if (config.data) store.setConfig(config.data);
    this.latest = { ready, stats, health, limits, configError: config.error };
    this.recordRate(stats.data);
    this.render();
  }

  recordRate(stats) {
    if (!stats || !stats.by_target) return;
    const now = Date.now();
    const previous = this.previousStats;
    this.previousStats = { time: now, by_target: stats.by_target, since: stats.since };
    if (!previous || previous.since !== stats.since) return;
    const seconds = (now - previous.time) / 1000;
    if (seconds <= 0) return;
    const rate = (key) => Math.max(0, ((stats.by_target[key] || 0) - (previous.by_target[key] || 0)) / seconds);
    this.chart.push(now, { cdn: rate("cdn"), origin: rate("origin") });
  }

  render() {
    const config = store.config;
    if (!config) return;
    const { ready, stats, health, limits } = this.latest;
    const pools = health?.data ? assess(config, health.data) : null;
    this.renderSummary(config, stats, health, pools, limits);
    this.renderState(ready, health, pools);
    this.renderPools(config, health, pools || assess(config, []));
    this.renderSteering(config, stats);
    this.renderStats(stats);
  }

  // Per pathway: the steering manifests players on it reloaded and the throughput they
  // reported (GET /stats `steering`, cluster wide since the last reset).
  renderSteering(config, stats) {
    const target = $("#now-steering");
    if (!("content_steering" in config)) {
      replace(target, h("p", { class: "muted" }, `Content steering is ${NOT_AVAILABLE}.`));
      return;
    }
    const on = steeringPools(config);
    const configured = configuredPathways(config);
    const words = [];
    if (!on.length) {
      words.push(h("p", { id: "steering-state" }, h("strong", {}, "Off"),
        ": players are not steered; the redirect alone picks their CDN host."));
    } else {
      words.push(h("p", { id: "steering-state" }, h("strong", {}, "On"), ` for ${on.join(", ")}.`));
      if (!configured.size) {
        words.push(h("p", { class: "note" }, "No CDN host has a pathway: steering manifests list no pathway."));
      }
    }
    const reported = stats?.data?.steering;
    if (stats?.missing) words.push(h("p", { class: "muted" }, `Steering figures: statistics are ${NOT_AVAILABLE}.`));
    else if (stats?.error) words.push(h("p", { class: "muted" }, stats.error.message));
    else if (stats?.data && reported === undefined) words.push(h("p", { class: "muted" }, `Steering figures are ${NOT_AVAILABLE}.`));
    const entries = reported && typeof reported === "object" ? Object.entries(reported) : [];
    if (stats?.data && reported && !entries.length && on.length) {
      words.push(h("p", { class: "muted", id: "steering-none" }, "No steering manifest answered since ", when(stats.data.since), "."));
    }
    // Configured pathways not reported yet show as 0, after the reported ones.
    const rows = [...entries];
    for (const pathway of configured.keys()) if (!(pathway in (reported || {}))) rows.push([pathway, null]);
    const table = rows.length && (entries.length || on.length)
      ? h("div", { class: "table-wrap" }, h("table", { id: "steering-table" },
        h("caption", { class: "visually-hidden" }, "Content steering by pathway"),
        h("thead", {}, h("tr", {}, ["Pathway", "CDN hosts", "Manifests", "Throughput reports", "Mean reported throughput"].map((name) => h("th", { scope: "col" }, name)))),
        h("tbody", {}, rows.map(([pathway, figures]) => h("tr", { "data-pathway": pathway },
          h("th", { scope: "row" }, pathway === "" ? h("span", { class: "muted" }, "not said or unknown") : pathway),
          h("td", { "data-label": "CDN hosts" }, configured.has(pathway) ? [...configured.get(pathway)].join(", ") : "—"),
          h("td", { "data-label": "Manifests" }, text(figures?.requests ?? 0)),
          h("td", { "data-label": "Throughput reports" }, text(figures?.throughput_reports ?? 0)),
          h("td", { "data-label": "Mean reported throughput" }, bitRate(figures?.throughput_bps_mean)))))))
      : null;
    replace(target, words, table);
  }

  renderSummary(config, stats, health, pools, limits) {
    const total = config.cdn_weight + config.origin_weight;
    const configured = total ? config.origin_weight / total : 0;
    let achieved;
    if (stats?.missing) achieved = h("span", { class: "muted" }, `Statistics ${NOT_AVAILABLE}.`);
    else if (stats?.error) achieved = h("span", { class: "muted" }, stats.error.message);
    else if (stats?.data && !stats.data.total) {
      achieved = h("span", { class: "muted" }, "no redirects counted since ", when(stats.data.since));
    } else if (stats?.data) {
      achieved = [
        h("strong", {}, `${percent(stats.data.achieved_origin_share)} to the origin`),
        h("span", { class: "muted" }, ` of ${text(stats.data.total)} requests since `, when(stats.data.since)),
      ];
    } else achieved = h("span", { class: "muted" }, "loading…");
    replace(
      $("#now-summary"),
      card("Active version", h("strong", { id: "active-version" }, `v${config.version}`),
        h("span", { class: "muted" }, " saved ", when(config.created_at)),
        config.comment ? h("p", { class: "comment" }, config.comment) : null),
      card("Configured split",
        h("strong", { id: "configured-split" }, `${config.cdn_weight} : ${config.origin_weight}`),
        h("span", { class: "muted" }, ` (CDN : origin), ${percent(configured)} to the origin`)),
      card("Achieved split", achieved),
      card("Redirect status", h("strong", {}, String(config.redirect_status)),
        h("span", { class: "muted" }, " · origin domains: "), (config.origin_domains || []).join(", ")),
      healthCard(config, health, pools),
      limitsCard(config, limits),
    );
  }

  renderState(ready, health, pools) {
    const items = [];
    if (ready?.error && !ready.data) {
      items.push(stateItem(false, "This instance", ready.error.message));
    } else if (ready?.data) {
      const body = ready.data;
      const overall = body.status === "ok";
      items.push(stateItem(overall, "This instance",
        overall ? `ready, serving version ${body.config_version} (worker ${body.worker})` : `${body.status}`));
      for (const [name, value] of Object.entries(body.checks || {})) {
        const words = checkWords(name);
        if (name === "cdn_health" && value === "ok") items.push(probeState(store.config, pools));
        else if (value === "ok") items.push(stateItem(true, words.name, "ok"));
        else if (typeof value === "string") items.push(stateItem(false, words.name, words.bad ? `${value}: ${words.bad}` : value));
        else items.push(stateItem(null, words.name, text(value)));
      }
    }
    if (health?.data) {
      const stale = staleHosts(health.data, store.config);
      if (stale.length) {
        items.push(stateItem(false, "CDN health", `stale: no check for ${stale.join(", ")} in the last ${staleSeconds(store.config)} s; host states may be out of date.`));
      }
    }
    replace($("#now-state"), items.length ? h("ul", { class: "states" }, items) : h("p", { class: "muted" }, "loading…"));
  }

  renderPools(config, health, assessment) {
    const notes = [];
    if (health?.missing) notes.push(h("p", { class: "note" }, `CDN health is ${NOT_AVAILABLE}.`));
    else if (health?.error) notes.push(h("p", { class: "alert" }, `CDN health: ${health.error.message}`));
    if ("origin_fallback" in config) {
      notes.push(h("p", {}, "Origin fallback when every CDN host of a pool is down: ", h("strong", {}, config.origin_fallback ? "on" : "off")));
    }
    if (Array.isArray(config.down_servers)) {
      notes.push(h("p", {}, "Origin servers marked down: ", h("strong", {}, config.down_servers.length ? config.down_servers.join(", ") : "none")));
    }
    const known = Boolean(health?.data);
    replace($("#now-pools"), assessment.pools.map((pool) => poolSection(pool, config, known, health)), notes);
  }

  renderStats(stats) {
    const target = $("#now-stats");
    if (stats?.missing) {
      replace(target, h("p", { class: "note" }, `Live statistics (/stats) are ${NOT_AVAILABLE}; the chart stays empty.`));
      return;
    }
    if (!stats?.data) {
      replace(target, stats?.error ? h("p", { class: "alert" }, stats.error.message) : null);
      return;
    }
    const data = stats.data;
    const instanceOnly = data.scope === "instance";
    const counters = [
      ["Requests", data.total], ["Rejected", total(data.rejected)], ["Rate limited", data.rate_limited],
      [instanceOnly ? "Requests/s (this instance)" : "Requests/s (cluster)", typeof data.requests_per_second === "number" ? data.requests_per_second.toFixed(1) : data.requests_per_second],
      ["Configured origin share", percent(data.configured_origin_share)],
      ["Achieved origin share", percent(data.achieved_origin_share)],
    ];
    replace(target,
      instanceOnly ? h("p", { class: "alert" }, `Redis is unreachable: these figures are ${data.note || "this instance's only"}.`) : null,
      h("dl", { class: "counters" }, counters.filter(([, value]) => value !== undefined).map(([name, value]) => h("div", {}, h("dt", {}, name), h("dd", {}, text(value))))),
      breakdown("By origin server", data.by_server),
      breakdown("By CDN host", data.by_cdn_host),
      breakdown("By region", data.by_region),
      typeof data.rejected === "object" ? breakdown("Rejected by code", data.rejected) : null);
  }
}

// The pools whose steering is on: a region or server rule without settings of its own
// takes the global ones.
function steeringPools(config) {
  const global = config.content_steering?.enabled === true;
  const on = (own) => (own && typeof own.enabled === "boolean" ? own.enabled : global);
  return poolsOf(config)
    .filter((pool) => {
      if (pool.id === "global") return global;
      if (pool.id.startsWith("region-")) {
        return on((config.regions || []).find((region) => `region-${region.name}` === pool.id)?.content_steering);
      }
      return on(config.server_rules?.[pool.id.slice("server-".length)]?.content_steering);
    })
    .map((pool) => pool.title);
}

// pathway -> the hosts that carry it, over every pool.
function configuredPathways(config) {
  const pathways = new Map();
  for (const pool of poolsOf(config)) {
    for (const host of pool.hosts) {
      if (typeof host.pathway !== "string" || !host.pathway) continue;
      if (!pathways.has(host.pathway)) pathways.set(host.pathway, new Set());
      pathways.get(host.pathway).add(host.host);
    }
  }
  return pathways;
}

function bitRate(bps) {
  if (typeof bps !== "number" || !Number.isFinite(bps)) return "—";
  if (bps >= 1e9) return `${(bps / 1e9).toFixed(2)} Gbit/s`;
  if (bps >= 1e6) return `${(bps / 1e6).toFixed(1)} Mbit/s`;
  return `${Math.round(bps / 1e3)} kbit/s`;
}

function card(title, ...body) {
  return h("div", { class: "card" }, h("h3", {}, title), h("div", {}, body));
}

const LEVEL_MARKS = { good: "✔", warn: "⚠", bad: "✖", off: "ℹ" };

function healthCard(config, health, pools) {
  let body;
  let level = "off";
  if (health?.missing) body = h("span", { class: "muted" }, `CDN health ${NOT_AVAILABLE}.`);
  else if (health?.error) body = h("span", { class: "muted" }, health.error.message);
  else if (!pools) body = h("span", { class: "muted" }, "loading…");
  else {
    level = pools.level;
    body = [h("span", { "aria-hidden": "true" }, `${LEVEL_MARKS[level]} `), h("strong", {}, summaryWords(pools, config))];
  }
  return h("div", { class: `card level-${level}`, id: "cdn-summary", "data-level": level },
    h("h3", {}, "CDN hosts"), h("div", { role: "status" }, body));
}

function limitsCard(config, limits) {
  const limit = config.rate_limit;
  const main = limit === undefined
    ? h("span", { class: "muted" }, `Rate limits ${NOT_AVAILABLE}.`)
    : limit === null
      ? [h("strong", {}, "off"), h("span", { class: "muted" }, ": no default limit")]
      : [h("strong", {}, `${limit.capacity} at once, ${limit.refill_per_second}/s`), h("span", { class: "muted" }, " per client by default")];
  let overrides = null;
  if (limits?.data && typeof limits.data.total === "number") {
    const count = limits.data.total;
    overrides = h("p", { id: "limit-overrides" }, count === 1 ? "1 per-client override" : `${count} per-client overrides`);
  } else if (limits?.missing) overrides = h("p", { class: "muted" }, `Per-client overrides ${NOT_AVAILABLE}.`);
  return h("div", { class: "card", id: "rate-limit-summary" }, h("h3", {}, "Rate limit"), h("div", {}, main, overrides));
}

function probeState(config, pools) {
  const words = CHECK_WORDS.cdn_health.name;
  const settings = config?.cdn_health || {};
  if (settings.enabled === false) return stateItem(null, words, "off: hosts are not probed and all count as up.");
  const every = typeof settings.interval_seconds === "number" ? ` every ${settings.interval_seconds} s` : "";
  if (pools && pools.down) {
    return stateItem("warn", words, `probing${every}; ${summaryWords(pools, config)}`);
  }
  return stateItem(true, words, `probing${every}, states current`);
}

function poolSection(pool, config, known, health) {
  const label = `${pool.up} of ${pool.hosts.length} up`;
  const level = pool.up === 0 && pool.hosts.length ? "bad" : pool.down ? "warn" : "good";
  // data-label: on a phone each CDN host is a block of labelled lines (style.css).
  const cell = (name, ...content) => h("td", { "data-label": name }, h("span", {}, content));
  const rows = pool.hosts.map((host) => {
    const state = host.state;
    let status;
    if (!known) status = h("span", { class: "muted" }, health?.missing ? "not monitored" : "—");
    else if (config.cdn_health?.enabled === false) status = h("span", { class: "muted" }, "not probed");
    else if (!state?.last_check) status = h("span", { class: "muted" }, "not probed yet");
    else status = badge(host.up, host.up ? "up" : "down");
    return h("tr", {},
      h("th", { scope: "row" }, host.host, host.pathway ? h("span", { class: "muted pathway" }, ` · pathway ${host.pathway}`) : null),
      cell("Weight", weightWords(host, known)),
      cell("Share now", known ? percent(host.share) : "—"),
      cell("State", status),
      cell("Since", state?.since ? [when(state.since), h("br"), h("span", { class: "muted" }, ago(state.since))] : "—"),
      cell("Last check", state?.last_check ? ago(state.last_check) : "—"),
      cell("Last error", state?.last_error || "—"),
      cell("Failures in a row", state ? text(state.consecutive_failures) : "—"),
      cell("Reported", reportedCell(state)),
    );
  });
  const title = `pool-title-${pool.id}`;
  return h("section", { class: `pool level-${level}`, id: `pool-${pool.id}`, "data-pool": pool.id, "aria-labelledby": title },
    h("h4", { id: title }, pool.title, " ", known ? h("span", { class: `badge ${level}` }, label) : null),
    h("p", { class: "hint" }, pool.scope),
    level === "bad" && known ? h("p", { class: "alert" }, `No healthy host: ${fallbackWords(pool, config)}.`) : null,
    h("div", { class: "table-wrap" }, h("table", { class: "pool-table", id: pool.id === "global" ? "pool-table" : null },
      h("caption", { class: "visually-hidden" }, `${pool.title}: CDN hosts and their health`),
      h("thead", {}, h("tr", {}, ["Host", "Weight", "Share now", "State", "Since", "Last check", "Last error", "Failures in a row", "Reported"].map((name) => h("th", { scope: "col" }, name)))),
      h("tbody", {}, rows))));
}

// The configured weight, and what load reports and slow start leave of it when that differs.
function weightWords(host, known) {
  const effective = Math.round(host.effective * 1000) / 1000;
  if (!known || effective === host.weight) return String(host.weight);
  return [String(effective), h("span", { class: "muted" }, ` of ${host.weight}`)];
}

function reportedCell(state) {
  const { words, error } = reportedWords(state);
  if (!words && !error) return "—";
  return [words || "—", error ? [h("br"), h("span", { class: "muted" }, `ignored: ${error}`)] : null];
}

function badge(good, label) {
  return h("span", { class: `badge ${good ? "good" : "bad"}` }, h("span", { "aria-hidden": "true" }, good ? "✔ " : "✖ "), label);
}

// good: true (OK), false (a problem), "warn" (degraded), null (for information).
function stateItem(good, name, detail) {
  const kind = good === null ? "info" : good === "warn" ? "warn" : good ? "good" : "bad";
  const label = { info: "info", warn: "Warning", good: "OK", bad: "Problem" }[kind];
  const mark = { info: "ℹ", warn: "⚠", good: "✔", bad: "⚠" }[kind];
  return h("li", { class: kind },
    h("span", { class: "mark", "aria-hidden": "true" }, mark),
    h("span", { class: "visually-hidden" }, `${label}: `),
    h("strong", {}, name), `: ${detail}`);
}

function staleSeconds(config) {
  const settings = config?.cdn_health || {};
  const interval = Object.entries(settings).find(([name, value]) => name.includes("interval") && typeof value === "number");
  return interval ? Math.max(3 * interval[1], 10) : 30;
}

function staleHosts(entries, config) {
  const limit = staleSeconds(config) * 1000;
  return entries.filter((entry) => entry.last_check && Date.now() - new Date(entry.last_check).getTime() > limit).map((entry) => entry.host);
}

function breakdown(title, values) {
  if (!values || typeof values !== "object") return null;
  const entries = Object.entries(values).sort((a, b) => total(b[1]) - total(a[1])).slice(0, 20);
  if (!entries.length) return null;
  return h("div", { class: "table-wrap" }, h("table", {},
    h("caption", {}, title),
    h("tbody", {}, entries.map(([name, value]) => h("tr", {}, h("th", { scope: "row" }, name), h("td", {}, text(value)))))));
}

function total(value) {
  if (typeof value === "number") return value;
  if (value && typeof value === "object") return Object.values(value).reduce((sum, item) => sum + (typeof item === "number" ? item : 0), 0);
  return 0;
}
