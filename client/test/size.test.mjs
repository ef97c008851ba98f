// secureFetch stays small (issue 12: under 2 KB minified + gzip), measured the way
// `npm run size` does: esbuild --minify, then gzip -9.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { gzipSync } from 'node:zlib';
import { transform } from 'esbuild';

const LIMIT = 2048;

test(`latchkey.js is under ${LIMIT} bytes minified + gzip`, async (t) => {
  const source = await readFile(new URL('../latchkey.js', import.meta.url), 'utf8');
  const { code } = await transform(source, { minify: true, format: 'esm' });
  const bytes = gzipSync(code, { level: 9 }).length;
  t.diagnostic(`latchkey.js: ${source.length} bytes, ${code.length} minified, ${bytes} minified + gzip`);
  assert.ok(bytes > 500, `a real measurement (${bytes} bytes)`);
  assert.ok(bytes < LIMIT, `${bytes} bytes minified + gzip`);
});
