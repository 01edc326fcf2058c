// Client-side validation of a job's arguments against its JSON schema (src/jobs.ts's
// ARGUMENT_SCHEMAS), as strict as the worker, which reads the queue's JSON strictly and converts
// nothing: a JSON integer for an integer (not "7", 7.5 or true), true/false for a boolean,
// ISO-8601 text with a zone (or a Date) for a timestamp, no unknown fields, the bounds and lengths
// of the schema, no NUL character in text. Rules across fields (list_users' created_from before
// created_to) are the worker's: such a job fails with an InvalidJobArguments result.
// Messages name the field, never the value.

/** A JSON schema, as pydantic writes it. */
export type JsonSchema = { [keyword: string]: unknown };

// A timestamp with its zone: 2025-01-31T12:00:00Z, 2025-01-31 12:00:00.5+01:00.
const TIMESTAMP =
  /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}(:?\d{2})?)$/;
const NO_ZONE = /^\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?$/;

type Problems = string[];

/** The arguments as they go on the wire (Dates as ISO-8601 text, undefined fields left out), or
 * the list of problems ("field: message"). */
export function checkArguments(
  schema: JsonSchema,
  args: unknown,
): { value: unknown; problems: Problems } {
  const problems: Problems = [];
  const value = check(schema, args, "", problems, schema);
  return { value, problems };
}

/** The arguments as they go on the wire, unchecked (Dates as ISO-8601 text). */
export function toWire(args: unknown): unknown {
  return JSON.parse(JSON.stringify(args ?? {}));
}

function fail(problems: Problems, path: string, message: string): undefined {
  problems.push(`${path || "arguments"}: ${message}`);
  return undefined;
}

function check(
  schema: JsonSchema,
  value: unknown,
  path: string,
  problems: Problems,
  root: JsonSchema,
): unknown {
  if (typeof schema.$ref === "string") {
    const name = schema.$ref.split("/").pop() ?? "";
    const defs = (root.$defs ?? {}) as Record<string, JsonSchema>;
    const target = defs[name];
    return target ? check(target, value, path, problems, root) : value;
  }
  if (Array.isArray(schema.anyOf)) {
    return checkAnyOf(schema.anyOf as JsonSchema[], value, path, problems, root);
  }
  if ("const" in schema && value !== schema.const) {
    return fail(problems, path, `Input should be ${JSON.stringify(schema.const)}`);
  }
  if (Array.isArray(schema.enum) && !schema.enum.includes(value)) {
    const options = schema.enum.map((v) => JSON.stringify(v).replace(/"/g, "'"));
    return fail(problems, path, `Input should be ${options.join(" or ")}`);
  }
  switch (schema.type) {
    case "object":
      return checkObject(schema, value, path, problems, root);
    case "array":
      return checkArray(schema, value, path, problems, root);
    case "string":
      return checkString(schema, value, path, problems);
    case "integer":
    case "number":
      return checkNumber(schema, value, path, problems);
    case "boolean":
      return typeof value === "boolean"
        ? value
        : fail(problems, path, "Input should be a valid boolean");
    case "null":
      return value === null ? null : fail(problems, path, "Input should be null");
    default:
      return value;
  }
}

function checkAnyOf(
  branches: JsonSchema[],
  value: unknown,
  path: string,
  problems: Problems,
  root: JsonSchema,
): unknown {
  let first: Problems | undefined;
  for (const branch of branches) {
    const mine: Problems = [];
    const result = check(branch, value, path, mine, root);
    if (mine.length === 0) {
      return result;
    }
    // Report the first non-null branch's problems: "Input should be a valid integer", not null's.
    if (first === undefined && branch.type !== "null") {
      first = mine;
    }
  }
  problems.push(...(first ?? [`${path || "arguments"}: Input matches none of its types`]));
  return undefined;
}

function checkObject(
  schema: JsonSchema,
  value: unknown,
  path: string,
  problems: Problems,
  root: JsonSchema,
): unknown {
  if (typeof value !== "object" || value === null || Array.isArray(value) || value instanceof Date) {
    return fail(problems, path, "Input should be an object");
  }
  const properties = (schema.properties ?? {}) as Record<string, JsonSchema>;
  const required = (schema.required ?? []) as string[];
  const out: Record<string, unknown> = {};
  for (const key in value) {
    if (!Object.hasOwn(value, key)) {
      continue;
    }
    const item = (value as Record<string, unknown>)[key];
    if (item === undefined) {
      continue; // left out, as JSON.stringify would
    }
    const where = path ? `${path}.${key}` : key;
    const property = properties[key];
    if (property === undefined) {
      if (schema.additionalProperties === false) {
        fail(problems, where, "Extra inputs are not permitted");
      } else {
        out[key] = item;
      }
      continue;
    }
    out[key] = check(property, item, where, problems, root);
  }
  for (const key of required) {
    if (!Object.hasOwn(out, key)) {
      fail(problems, path ? `${path}.${key}` : key, "Field required");
    }
  }
  return out;
}

function checkArray(
  schema: JsonSchema,
  value: unknown,
  path: string,
  problems: Problems,
  root: JsonSchema,
): unknown {
  if (!Array.isArray(value)) {
    return fail(problems, path, "Input should be a valid list");
  }
  const items = (schema.items ?? {}) as JsonSchema;
  return value.map((item, i) => check(items, item, `${path}.${i}`, problems, root));
}

function checkString(
  schema: JsonSchema,
  value: unknown,
  path: string,
  problems: Problems,
): unknown {
  if (schema.format === "date-time") {
    return checkTimestamp(value, path, problems);
  }
  if (typeof value !== "string") {
    return fail(problems, path, "Input should be a valid string");
  }
  const length = [...value].length; // characters (code points), as Python counts them
  if (typeof schema.minLength === "number" && length < schema.minLength) {
    const s = schema.minLength === 1 ? "" : "s";
    return fail(problems, path, `String should have at least ${schema.minLength} character${s}`);
  }
  if (typeof schema.maxLength === "number" && length > schema.maxLength) {
    const s = schema.maxLength === 1 ? "" : "s";
    return fail(problems, path, `String should have at most ${schema.maxLength} character${s}`);
  }
  if (typeof schema.pattern === "string" && !new RegExp(schema.pattern, "u").test(value)) {
    return fail(problems, path, `String should match pattern '${schema.pattern}'`);
  }
  if (value.includes("\u0000")) {
    return fail(problems, path, "text must not contain the NUL character (\\u0000)");
  }
  return value;
}

function checkTimestamp(value: unknown, path: string, problems: Problems): unknown {
  if (value instanceof Date) {
    return Number.isNaN(value.getTime())
      ? fail(problems, path, "Input should be a valid datetime (an Invalid Date)")
      : value.toISOString();
  }
  if (typeof value !== "string") {
    return fail(problems, path, "Input should be a valid datetime (ISO-8601 text or a Date)");
  }
  if (NO_ZONE.test(value)) {
    return fail(problems, path, "Input should have timezone info");
  }
  if (!TIMESTAMP.test(value) || Number.isNaN(Date.parse(value.replace(" ", "T")))) {
    return fail(problems, path, "Input should be a valid datetime (ISO-8601 with a timezone)");
  }
  return value;
}

function checkNumber(
  schema: JsonSchema,
  value: unknown,
  path: string,
  problems: Problems,
): unknown {
  if (typeof value !== "number" || !Number.isFinite(value)) {
    const kind = schema.type === "integer" ? "integer" : "number";
    return fail(problems, path, `Input should be a valid ${kind}`);
  }
  if (schema.type === "integer") {
    if (!Number.isInteger(value)) {
      return fail(problems, path, "Input should be a valid integer");
    }
    if (!Number.isSafeInteger(value)) {
      // JSON.stringify would write a rounded number: refuse rather than send another id.
      return fail(problems, path, "Input should be a safe integer (at most 2**53 - 1 in JavaScript)");
    }
  }
  for (const [keyword, words] of BOUNDS) {
    const limit = schema[keyword];
    if (typeof limit === "number" && !within(keyword, value, limit)) {
      return fail(problems, path, `Input should be ${words} ${limit}`);
    }
  }
  return value;
}

const BOUNDS: readonly (readonly [string, string])[] = [
  ["exclusiveMinimum", "greater than"],
  ["minimum", "greater than or equal to"],
  ["exclusiveMaximum", "less than"],
  ["maximum", "less than or equal to"],
];

function within(keyword: string, value: number, limit: number): boolean {
  switch (keyword) {
    case "exclusiveMinimum":
      return value > limit;
    case "minimum":
      return value >= limit;
    case "exclusiveMaximum":
      return value < limit;
    default:
      return value <= limit;
  }
}
