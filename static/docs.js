// Renders /api/v1/openapi.json: operations grouped by tag, their parameters, bodies and responses.
// Plain DOM and textContent only (no innerHTML): the page lives under the server's CSP, with no build step.
"use strict";

const METHOD_ORDER = ["get", "post", "put", "patch", "delete"];

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function resolve(spec, schema) {
  // Follows local $refs (#/components/...); returns [schema, name of the last ref or null].
  let name = null;
  let seen = 0;
  while (schema && typeof schema.$ref === "string" && seen < 20) {
    name = schema.$ref.split("/").pop();
    schema = schema.$ref.slice(2).split("/").reduce((node, key) => (node ? node[key] : undefined), spec);
    seen += 1;
  }
  return [schema || {}, name];
}

function typeLabel(schema) {
  if (schema.const !== undefined) return JSON.stringify(schema.const);
  if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
  const kind = Array.isArray(schema.type) ? schema.type.join(" | ") : schema.type;
  const format = schema.format ? ` (${schema.format})` : "";
  if (kind === "array" || (Array.isArray(schema.type) && schema.type.includes("array"))) return `${kind}${format}`;
  return kind ? `${kind}${format}` : "";
}

function limits(schema) {
  const parts = [];
  for (const key of ["minimum", "maximum", "minLength", "maxLength", "minProperties"]) {
    if (schema[key] !== undefined) parts.push(`${key} ${schema[key]}`);
  }
  return parts.join(", ");
}

function renderSchema(spec, schema, depth = 0) {
  // A nested list: each property with its type, required mark and its own schema below it.
  // A named component below the top (and the shared Error everywhere) starts folded: click its name to open it.
  const [resolved, name] = resolve(spec, schema);
  const folded = Boolean(name) && (depth > 0 || name === "Error");
  const box = el(folded ? "details" : "div", "schema");
  const head = el(folded ? "summary" : "div", "schema-head");
  if (name) head.append(el("span", "ref", name));
  const label = typeLabel(resolved);
  if (label) head.append(el("span", "type", label));
  const limit = limits(resolved);
  if (limit) head.append(el("span", "muted", limit));
  if (resolved.description) head.append(el("span", "muted", resolved.description));
  box.append(head);
  if (depth > 8) return box;
  for (const combinator of ["allOf", "anyOf", "oneOf"]) {
    if (!Array.isArray(resolved[combinator])) continue;
    const list = el("div", "combinator");
    list.append(el("div", "muted", combinator === "allOf" ? "all of:" : "one of:"));
    for (const part of resolved[combinator]) list.append(renderSchema(spec, part, depth + 1));
    box.append(list);
  }
  if (resolved.properties) {
    const required = new Set(resolved.required || []);
    const list = el("ul", "props");
    for (const [prop, sub] of Object.entries(resolved.properties)) {
      const item = el("li");
      item.append(el("code", "prop", prop));
      if (required.has(prop)) item.append(el("span", "required", "required"));
      item.append(renderSchema(spec, sub, depth + 1));
      list.append(item);
    }
    box.append(list);
  }
  if (resolved.items) {
    const items = el("div", "combinator");
    items.append(el("div", "muted", "items:"));
    items.append(renderSchema(spec, resolved.items, depth + 1));
    box.append(items);
  }
  if (resolved.additionalProperties && typeof resolved.additionalProperties === "object" && !resolved.properties) {
    const more = el("div", "combinator");
    more.append(el("div", "muted", "any key ->"));
    more.append(renderSchema(spec, resolved.additionalProperties, depth + 1));
    box.append(more);
  }
  return box;
}

function renderContent(spec, content) {
  const box = el("div");
  for (const [media, entry] of Object.entries(content || {})) {
    box.append(el("div", "media", media));
    if (entry.schema) box.append(renderSchema(spec, entry.schema));
  }
  return box;
}

function renderParameters(params) {
  const table = el("table", "params");
  const head = el("tr");
  for (const title of ["name", "in", "type", "description"]) head.append(el("th", null, title));
  table.append(head);
  for (const param of params) {
    const row = el("tr");
    const nameCell = el("td");
    nameCell.append(el("code", null, param.name));
    if (param.required) nameCell.append(el("span", "required", "required"));
    row.append(nameCell, el("td", null, param.in), el("td", null, typeLabel(param.schema || {})), el("td", null, param.description || ""));
    table.append(row);
  }
  return table;
}

function authLabel(spec, op) {
  const security = op.security !== undefined ? op.security : spec.security || [];
  if (security.length === 0) return "no auth";
  const names = security.map((req) => Object.keys(req)[0] || "none").join(" or ");
  return `auth: ${names}`;
}

function renderOperation(spec, path, method, op) {
  const card = el("details", "operation");
  card.id = `${method}-${path}`.replace(/[^A-Za-z0-9-]/g, "_");
  const summary = el("summary");
  summary.append(el("span", `method method-${method}`, method.toUpperCase()), el("code", "path", path));
  summary.append(el("span", "op-summary", op.summary || ""), el("span", "auth", authLabel(spec, op)));
  card.append(summary);
  if (op.description) card.append(el("p", null, op.description));
  if (op.parameters && op.parameters.length) {
    card.append(el("h4", null, "Parameters"), renderParameters(op.parameters));
  }
  if (op.requestBody) {
    card.append(el("h4", null, op.requestBody.required ? "Request body (required)" : "Request body (optional)"));
    card.append(renderContent(spec, op.requestBody.content));
  }
  card.append(el("h4", null, "Responses"));
  for (const [status, response] of Object.entries(op.responses || {})) {
    const block = el("div", "response");
    const line = el("div", "status-line");
    line.append(el("span", `status status-${status[0]}`, status), el("span", null, response.description || ""));
    block.append(line);
    if (response.content) block.append(renderContent(spec, response.content));
    card.append(block);
  }
  return card;
}

function render(spec) {
  document.getElementById("title").textContent = `${spec.info.title} (v${spec.info.version})`;
  document.getElementById("summary").textContent = spec.info.description || "";
  const groups = new Map((spec.tags || []).map((tag) => [tag.name, { tag, operations: [] }]));
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const method of Object.keys(methods).sort((a, b) => METHOD_ORDER.indexOf(a) - METHOD_ORDER.indexOf(b))) {
      const op = methods[method];
      const name = (op.tags && op.tags[0]) || "other";
      if (!groups.has(name)) groups.set(name, { tag: { name }, operations: [] });
      groups.get(name).operations.push([path, method, op]);
    }
  }
  const nav = document.getElementById("tags");
  const main = document.getElementById("operations");
  main.replaceChildren();
  for (const { tag, operations } of groups.values()) {
    if (!operations.length) continue;
    const link = el("a", null, `${tag.name} (${operations.length})`);
    link.href = `#tag-${tag.name}`;
    nav.append(link);
    const section = el("section", "tag");
    section.id = `tag-${tag.name}`;
    section.append(el("h2", null, tag.name));
    if (tag.description) section.append(el("p", "muted", tag.description));
    for (const [path, method, op] of operations) section.append(renderOperation(spec, path, method, op));
    main.append(section);
  }
}

async function main() {
  const main = document.getElementById("operations");
  try {
    const response = await fetch("/api/v1/openapi.json", { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(await response.json());
    document.body.dataset.ready = "true";
  } catch (error) {
    main.replaceChildren(el("p", "error", `Could not load the description: ${error.message}`));
  }
}

main();
