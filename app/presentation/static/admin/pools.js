// The CDN pools a configuration routes to (global, each region's, each server rule's own)
// and how healthy they are, from GET /config and GET /cdn/health. Computed here from the
// existing API, so the console keeps working against any server that has both.

// `cdn.example.com` and `http://cdn.example.com/` are one host: /cdn/health names hosts by
// the base URL redirects use, the configuration as they were typed (the server's
// cdn_base_url rule).
export function baseUrl(host) {
  const [scheme, authority] = host.includes("://") ? host.split("://", 2) : ["http", host];
  const [name, port] = authority.replace(/\/$/, "").toLowerCase().split(":", 2);
  return `${scheme.toLowerCase()}://${name}${port === undefined ? "" : `:${Number(port)}`}`;
}

function split(rule) {
  return typeof rule?.cdn_weight === "number" ? `${rule.cdn_weight} : ${rule.origin_weight}` : null;
}

export function poolsOf(config) {
  const hosts = Array.isArray(config.cdn_hosts) && config.cdn_hosts.length
    ? config.cdn_hosts
    : [{ host: config.cdn_host, weight: 1 }];
  const regions = Array.isArray(config.regions) ? config.regions : [];
  const rules = Object.entries(config.server_rules || {}).filter(([, rule]) => Array.isArray(rule.cdn_hosts) && rule.cdn_hosts.length);
  const pools = [{
    id: "global",
    title: "Global pool",
    scope: regions.length || rules.length
      ? "Viewers outside every region, and servers without a pool of their own."
      : "Every viewer.",
    fallback: "default",
    hosts,
  }];
  for (const region of regions) {
    const where = [
      region.countries?.length ? `countries ${region.countries.join(", ")}` : null,
      region.networks?.length ? `networks ${region.networks.join(", ")}` : null,
    ].filter(Boolean).join("; ");
    const own = split(region);
    pools.push({
      id: `region-${region.name}`,
      title: `Region ${region.name}`,
      scope: `Viewers in ${where || "no country or network yet"}${own ? `; split ${own} (CDN : origin)` : ""}.`,
      fallback: "region",
      hosts: region.cdn_hosts || [],
    });
  }
  for (const [server, rule] of rules) {
    pools.push({
      id: `server-${server}`,
      title: `Server ${server}`,
      scope: `Requests for ${server} outside the regions; split ${split(rule)} (CDN : origin).`,
      fallback: "default",
      hosts: rule.cdn_hosts,
    });
  }
  return pools;
}

// Each pool's hosts with their state and share of the pool's CDN redirects now (0 when down,
// else the effective weight over the healthy hosts' effective weights), and the summary
// across distinct hosts.
export function assess(config, entries) {
  const enabled = config.cdn_health?.enabled !== false;
  const byHost = new Map((entries || []).map((entry) => [baseUrl(entry.host), entry]));
  const pools = poolsOf(config).map((pool) => {
    const hosts = pool.hosts.map((entry) => {
      const state = byHost.get(baseUrl(entry.host)) || null;
      // As the server routes: checks off, or a host not probed yet, counts as up.
      const up = !enabled || !state || state.healthy !== false;
      const weight = entry.weight ?? 1;
      // The share of its configured weight load reports and slow start leave it (GET
      // /cdn/health gives both weights as of the first pool listing the host).
      const scale = enabled && state && state.configured_weight > 0 && typeof state.effective_weight === "number"
        ? state.effective_weight / state.configured_weight : 1;
      return { host: entry.host, pathway: entry.pathway ?? null, weight, effective: weight * scale, state, up };
    });
    // As the server routes: drained hosts (effective 0) take viewers only when no other does.
    const upHosts = hosts.filter((host) => host.up);
    const drainedOnly = upHosts.every((host) => host.effective === 0);
    const routed = (host) => (drainedOnly ? host.weight : host.effective);
    const healthyWeight = upHosts.reduce((sum, host) => sum + routed(host), 0);
    for (const host of hosts) host.share = host.up && healthyWeight ? routed(host) / healthyWeight : 0;
    const up = hosts.filter((host) => host.up).length;
    return { ...pool, hosts, up, down: hosts.length - up };
  });
  const seen = new Map();
  for (const pool of pools) for (const host of pool.hosts) seen.set(baseUrl(host.host), host.up);
  const total = seen.size;
  const down = [...seen.values()].filter((up) => !up).length;
  const empty = pools.filter((pool) => pool.hosts.length && pool.up === 0);
  let level = "good";
  if (!enabled) level = "off";
  else if (empty.length) level = "bad";
  else if (down) level = "warn";
  return { enabled, pools, total, down, empty, level };
}

export function summaryWords(assessment, config) {
  const { enabled, total, down, empty } = assessment;
  const hosts = total === 1 ? "CDN host" : "CDN hosts";
  if (!enabled) return `Health checks are off: the ${total} ${hosts} are not probed and all count as up.`;
  if (!down) return total === 1 ? "The CDN host is up." : `All ${total} ${hosts} up.`;
  const words = [`${down} of ${total} ${hosts} down`];
  for (const pool of empty) words.push(`${pool.title} has no healthy host: ${fallbackWords(pool, config)}`);
  return `${words.join("; ")}.`;
}

// Where a pool's CDN-bound requests go when none of its hosts is healthy (the server's rule).
export function fallbackWords(pool, config) {
  const refused = config.origin_fallback === false;
  if (pool.fallback === "region") {
    return `its viewers get the pool they would have without regions (${refused ? "503" : "the origin"} if that one is down too)`;
  }
  return refused ? "its CDN-bound requests are answered 503" : "its CDN-bound requests go to the origin";
}

// A host's last load report in words: `drain`, `up 80%`, `utilization 0.72`; and why the
// last one was ignored, if it was.
export function reportedWords(state) {
  const reported = state?.reported;
  const words = [];
  if (reported?.state) words.push(reported.state);
  if (typeof reported?.weight_percent === "number") words.push(`${reported.weight_percent}%`);
  if (typeof reported?.utilization === "number") words.push(`utilization ${reported.utilization}`);
  return { words: words.join(" "), error: state?.load_error || "" };
}
