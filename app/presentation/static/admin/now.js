// "Now": the active version, the CDN pool and its health, the split, the live rate.
// Endpoints that a server does not have yet (404 from the router) show a plain note and are
// asked again every 30 s, so a rolling upgrade lights the panel up without a reload.

import { ApiError, call } from "./api.js";
import { LiveChart } from "./chart.js";
import { $, ago, h, percent, replace, text, when } from "./dom.js";
import { store } from "./store.js";

const POLL_MS = 2000;
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

// `cdn.example.com` and `http://cdn.example.com/` are one host: /cdn/health names hosts by
// the base URL redirects use, the configuration as they were typed (the server's
// cdn_base_url rule).
function baseUrl(host) {
  const [scheme, authority] = host.includes("://") ? host.split("://", 2) : ["http", host];
  const [name, port] = authority.replace(/\/$/, "").toLowerCase().split(":", 2);
  return `${scheme.toLowerCase()}://${name}${port === undefined ? "" : `:${Number(port)}`}`;
}

export class NowPanel {
  constructor({ onUnauthorized }) {
    this.onUnauthorized = onUnauthorized;
    this.timer = null;
    this.missingUntil = {};
    this.previousStats = null;
    this.latest = { ready: null, stats: null, health: null };
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
    const [config, ready, stats, health] = await Promise.all([
      call("/config").catch((error) => ({ error })),
      call("/ready").then(({ data }) => ({ data })).catch((error) => ({ data: error.problem, error })),
      this.optional("stats", "/stats"),
      this.optional("health", "/cdn/health"),
    ]);
    if (config.data) store.setConfig(config.data);
    this.latest = { ready, stats, health, configError: config.error };
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
    const { ready, stats, health } = this.latest;
    this.renderSummary(config, stats);
    this.renderState(ready, health);
    this.renderPool(config, health);
    this.renderStats(stats);
  }

  renderSummary(config, stats) {
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
    );
  }

  renderState(ready, health) {
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
        if (value === "ok") items.push(stateItem(true, words.name, "ok"));
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

  renderPool(config, health) {
    const pool = Array.isArray(config.cdn_hosts) && config.cdn_hosts.length
      ? config.cdn_hosts
      : [{ host: config.cdn_host, weight: null }];
    const byHost = new Map((health?.data || []).map((entry) => [baseUrl(entry.host), entry]));
    const rows = pool.map((entry) => {
      const state = byHost.get(baseUrl(entry.host));
      let status;
      if (state) status = badge(state.healthy, state.healthy ? "up" : "down");
      else status = h("span", { class: "muted" }, health?.missing ? "not monitored" : "—");
      // data-label: on a phone each host is a block of labelled lines (style.css).
      const cell = (label, ...content) => h("td", { "data-label": label }, h("span", {}, content));
      return h("tr", {},
        h("th", { scope: "row" }, entry.host),
        cell("Weight", entry.weight === null || entry.weight === undefined ? "—" : String(entry.weight)),
        cell("State", status),
        cell("Since", state?.since ? [when(state.since), h("br"), h("span", { class: "muted" }, ago(state.since))] : "—"),
        cell("Last check", state?.last_check ? ago(state.last_check) : "—"),
        cell("Last error", state?.last_error || "—"),
        cell("Failures in a row", state ? text(state.consecutive_failures) : "—"),
      );
    });
    const notes = [];
    if (health?.missing) notes.push(h("p", { class: "note" }, `CDN health is ${NOT_AVAILABLE}.`));
    else if (health?.error) notes.push(h("p", { class: "alert" }, `CDN health: ${health.error.message}`));
    if ("origin_fallback" in config) {
      notes.push(h("p", {}, "Origin fallback when every CDN host is down: ", h("strong", {}, config.origin_fallback ? "on" : "off")));
    }
    if (Array.isArray(config.down_servers)) {
      notes.push(h("p", {}, "Origin servers marked down: ", h("strong", {}, config.down_servers.length ? config.down_servers.join(", ") : "none")));
    }
    replace($("#now-pool"),
      h("div", { class: "table-wrap" }, h("table", { id: "pool-table" },
        h("caption", { class: "visually-hidden" }, "CDN hosts and their health"),
        h("thead", {}, h("tr", {}, ["Host", "Weight", "State", "Since", "Last check", "Last error", "Failures in a row"].map((name) => h("th", { scope: "col" }, name)))),
        h("tbody", {}, rows))),
      notes);
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

function card(title, ...body) {
  return h("div", { class: "card" }, h("h3", {}, title), h("div", {}, body));
}

function badge(good, label) {
  return h("span", { class: `badge ${good ? "good" : "bad"}` }, h("span", { "aria-hidden": "true" }, good ? "✔ " : "✖ "), label);
}

function stateItem(good, name, detail) {
  const label = good === null ? "info" : good ? "OK" : "Problem";
  const mark = good === null ? "ℹ" : good ? "✔" : "⚠";
  return h("li", { class: good === null ? "info" : good ? "good" : "bad" },
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
