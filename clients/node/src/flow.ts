// Flow control as a job declares it (src/jobs.ts's FLOWS, generated from the registry) and as its
// payload carries it: the "flow" object of docs/wire-format.md (Flow control), rendered exactly as
// the Python client's pgpool_client.flow.render does, keys from the validated arguments.

import { WorkerError } from "./errors.js";
import type { JsonSchema } from "./validate.js";

/** At most `max` jobs holding this limit run at once in the whole fleet, per value of the argument
 * `key` (null: one limit for every job that declares it, across job names). */
export interface ConcurrencyDeclaration {
  name: string;
  max: number;
  key: string | null;
}

/** At most `limit` starts per `per` seconds, fleet-wide, per value of the argument `key`; `burst`
 * starts may go at once after a quiet spell (GCRA). */
export interface RateDeclaration {
  name: string;
  limit: number;
  per: number;
  burst: number;
  key: string | null;
}

/** A job's flow-control declaration, as `python -m worker jobs` prints it. */
export interface FlowDeclaration {
  concurrency: readonly ConcurrencyDeclaration[];
  rates: readonly RateDeclaration[];
  /** The argument whose value is the fairness key (a tenant), or null. */
  fair: string | null;
  /** The default priority, 0-9 (higher first). */
  priority: number;
}

/** The payload's "flow" object: every member optional, left out when empty. */
export interface PayloadFlow {
  concurrency?: { name: string; key: string; max: number }[];
  rate?: { name: string; key: string; limit: number; per_ms: number; burst: number }[];
  fair?: string;
  priority?: number;
}

/** Characters (code points) of a rendered key. */
export const MAX_KEY = 200;
export const MAX_PRIORITY = 9;

/** `priority` if it is an integer 0..9, else WorkerError (nothing is sent). */
export function checkPriority(priority: unknown): number {
  if (typeof priority !== "number" || !Number.isInteger(priority) || priority < 0 || priority > 9) {
    throw new WorkerError(`priority must be an integer from 0 to ${MAX_PRIORITY} (higher first)`);
  }
  return priority;
}

/** The payload's "flow" object for one job ({} for none): the declaration's keys rendered from the
 * validated arguments `args` (a field left out takes its default from `schema`), `priority`
 * (0-9) overriding the declared one. */
export function renderFlow(
  declaration: FlowDeclaration | null,
  args: Record<string, unknown>,
  priority?: number | null,
  schema: JsonSchema = {},
): PayloadFlow {
  if (declaration === null && !priority) {
    return {};
  }
  const out: PayloadFlow = {};
  const key = (field: string | null): string => renderKey(field, args, schema);
  if (declaration !== null) {
    if (declaration.concurrency.length > 0) {
      out.concurrency = declaration.concurrency.map((c) => ({
        name: c.name,
        key: key(c.key),
        max: c.max,
      }));
    }
    if (declaration.rates.length > 0) {
      out.rate = declaration.rates.map((r) => ({
        name: r.name,
        key: key(r.key),
        limit: r.limit,
        per_ms: roundHalfEven(r.per * 1000),
        burst: r.burst,
      }));
    }
    if (declaration.fair !== null) {
      const fair = key(declaration.fair);
      if (fair) {
        out.fair = fair;
      }
    }
  }
  const chosen = checkPriority(priority ?? declaration?.priority ?? 0);
  if (chosen) {
    out.priority = chosen;
  }
  return out;
}

/** The text of one argument as Python's str() writes its validated value (the worker's rule):
 * text as is, null "", true "True", a timestamp "2025-01-31 12:00:00+00:00", cut to MAX_KEY. */
function renderKey(
  field: string | null,
  args: Record<string, unknown>,
  schema: JsonSchema,
): string {
  if (field === null) {
    return "";
  }
  const property = ((schema.properties ?? {}) as Record<string, JsonSchema>)[field] ?? {};
  const given = Object.hasOwn(args, field) && args[field] !== undefined;
  const value = given ? args[field] : property.default;
  // The one rule of every producer (pgpool_client/flow.py): text as is, an integer in decimal, a
  // boolean as "true"/"false", null as "" (keys may only be such arguments).
  let text: string;
  if (value === null || value === undefined) {
    text = "";
  } else if (typeof value === "string") {
    text = value;
  } else if (typeof value === "boolean" || typeof value === "number") {
    text = String(value);
  } else {
    throw new WorkerError(`flow key ${field}: a key must be text, an integer or a boolean`);
  }
  return [...text].slice(0, MAX_KEY).join("");
}

/** Python's round(): halves to the even neighbour. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}
