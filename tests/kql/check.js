#!/usr/bin/env node
// Offline KQL checker for the tests: parses and binds queries against given table schemas with
// Microsoft's Kusto language service (@kusto/language-service-next, installed into ./node_modules by
// scripts/_node_tools.sh). No network is used.
//
// stdin:  {"tables": {"AppMetrics": "(TimeGenerated:datetime, Name:string, ...)", ...},
//          "queries": [{"name": "...", "text": "..."}, ...]}
// stdout: [{"name": "...", "diagnostics": [{"severity": "Error", "code": "KS142", "message": "...",
//           "start": 19, "length": 3, "excerpt": "..."}, ...]}, ...]
// Only Error-severity diagnostics are reported (an empty list means the query parses and binds).
// Bad input or a failure inside the language service exits non-zero with the reason on stderr.
'use strict';

const fs = require('fs');
const path = require('path');

const PKG_DIR = path.join(__dirname, 'node_modules', '@kusto', 'language-service-next');
const EXCERPT_CONTEXT = 40; // characters of query text either side of a diagnostic

function fail(message) {
  process.stderr.write(`check.js: ${message}\n`);
  process.exit(2);
}

function loadKusto() {
  if (!fs.existsSync(path.join(PKG_DIR, 'Kusto.Language.Bridge.min.js'))) {
    fail(`${PKG_DIR} is not installed (scripts/_node_tools.sh installs it)`);
  }
  require(path.join(PKG_DIR, 'bridge.min.js')); // defines the globals Bridge and System
  require(path.join(PKG_DIR, 'Kusto.Language.Bridge.min.js')); // defines the global Kusto
  return globalThis.Kusto.Language;
}

function readInput() {
  let input;
  try {
    input = JSON.parse(fs.readFileSync(0, 'utf8'));
  } catch (err) {
    fail(`stdin is not JSON: ${err.message}`);
  }
  const tables = input && input.tables;
  const queries = input && input.queries;
  if (typeof tables !== 'object' || tables === null || Array.isArray(tables)) {
    fail('"tables" must be an object of table name -> schema string');
  }
  if (!Array.isArray(queries)) fail('"queries" must be a list of {"name", "text"}');
  for (const [name, schema] of Object.entries(tables)) {
    if (typeof schema !== 'string') fail(`schema of table ${name} is not a string`);
  }
  for (const q of queries) {
    if (!q || typeof q.name !== 'string' || typeof q.text !== 'string') {
      fail(`each query needs a string "name" and "text": ${JSON.stringify(q)}`);
    }
  }
  return {tables, queries};
}

function excerpt(text, start, length) {
  const from = Math.max(0, start - EXCERPT_CONTEXT);
  const to = Math.min(text.length, start + length + EXCERPT_CONTEXT);
  return text.slice(from, to).replace(/\s+/g, ' ');
}

function main() {
  const {tables, queries} = readInput();
  const K = loadKusto();
  const S = K.Symbols;
  const ERROR = K.DiagnosticSeverity.Error; // severities are strings: Error, Warning, Suggestion, ...

  // The language service reads a malformed schema leniently (unknown types, dropped columns), which
  // would hide mistakes in the schemas themselves: insist on one known-typed column per "name:type".
  const symbols = Object.entries(tables).map(([name, schema]) => {
    const table = new S.TableSymbol.$ctor7(name, schema, null);
    const columns = Bridge.toArray(table.Columns);
    const declared = schema.replace(/^\s*\(|\)\s*$/g, '').split(',');
    const unknown = columns.filter((c) => c.Type === S.ScalarTypes.Unknown).map((c) => c.Name);
    if (columns.length === 0 || columns.length !== declared.length || unknown.length > 0) {
      fail(`schema of table ${name} is not "(Column:type, ...)" with known types` +
           (unknown.length ? ` (unknown type for ${unknown.join(', ')})` : '') + `: ${schema}`);
    }
    return table;
  });
  const globals = K.GlobalState.Default.WithDatabase(new S.DatabaseSymbol.ctor('workspace', symbols));

  const results = queries.map(({name, text}) => {
    const code = K.KustoCode.ParseAndAnalyze(text, globals);
    const diagnostics = Bridge.toArray(code.GetDiagnostics())
      .filter((d) => d.Severity === ERROR)
      .map((d) => ({
        severity: d.Severity,
        code: d.Code,
        message: d.Message,
        start: d.Start,
        length: d.Length,
        excerpt: excerpt(text, d.Start, d.Length),
      }));
    return {name, diagnostics};
  });
  process.stdout.write(JSON.stringify(results) + '\n');
}

main();
