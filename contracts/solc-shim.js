#!/usr/bin/env node
// solc-compatible shim over the pinned npm `solc` (wasm), standard-JSON mode only.
//
//   solc-shim.js --version
//   solc-shim.js --standard-json [--base-path DIR] [--include-path DIR]... < input.json
//
// Used by scripts/build_contracts.py and named as `solc` in foundry.toml so forge and
// slither work offline. Unlike the `solcjs` CLI it prints nothing but the output JSON
// and lets Node flush stdout before exiting (solcjs truncates output over 64 KiB).
// Imports resolve against --base-path, then each --include-path, never outside them.
'use strict';
const fs = require('fs');
const path = require('path');
const solc = require(path.join(__dirname, '..', 'node_modules', 'solc'));

const args = process.argv.slice(2);
if (args.includes('--version')) {
  process.stdout.write(
    'solc, the solidity compiler commandline interface\nVersion: ' + solc.version() + '\n',
  );
  process.exit(0);
}
if (!args.includes('--standard-json')) {
  process.stderr.write('solc-shim: only --standard-json and --version are supported\n');
  process.exit(2);
}
const roots = [];
for (let i = 0; i < args.length; i++) {
  if ((args[i] === '--base-path' || args[i] === '--include-path') && i + 1 < args.length) {
    roots.push(path.resolve(args[++i]));
  }
}
if (roots.length === 0) roots.push(process.cwd());

function findImport(name) {
  for (const root of roots) {
    const full = path.resolve(root, name);
    if (full !== root && !full.startsWith(root + path.sep)) continue;
    if (fs.existsSync(full)) return { contents: fs.readFileSync(full, 'utf8') };
  }
  return { error: 'File not found: ' + name };
}

const input = fs.readFileSync(0, 'utf8');
const output = solc.compile(input, { import: findImport });
process.stdout.write(output, () => {
  process.exitCode = 0;
});
