// The client scenario through Node.js memcached clients: `memcached` (text
// protocol, every command) and `memjs` (binary protocol; it has no gets,
// cas or multi-get, and its prepend sends append's opcode, so those steps
// are left to the other binary clients).
//
//     node clients.js memcached|memjs WRITER READER PREFIX
//
// Writes go through WRITER, reads through READER (HOST:PORT each). Exits
// non-zero at the first check that fails, naming it.
'use strict';

const { promisify } = require('util');
const assert = require('assert');

const TOKEN_LIMIT = 2 ** 32;

function check(what, got, want) {
  assert.deepStrictEqual(got, want, what);
}

// A refused write comes back as an error ("Item is not stored") or false.
const stored = (p) => p.then((r) => r === true, (e) => (/not stored|not found|exists/i.test(e.message) ? false : Promise.reject(e)));

// Each client's calls, as promises with one shape: strings in and out,
// booleans for stored/not, numbers or null for counters.
function textClient(addr) {
  const Memcached = require('memcached');
  const c = new Memcached(addr, { retries: 0, timeout: 5000, reconnect: 1000, failures: 0, idle: 1000 });
  const call = (name, ...args) => promisify(c[name]).call(c, ...args);
  const counter = (p) => p.then((r) => (r === false ? null : r));
  return {
    set: (k, v) => stored(call('set', k, v, 0)),
    get: (k) => call('get', k).then((v) => (v === undefined ? null : String(v))),
    getMulti: (ks) => call('getMulti', ks).then((o) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, String(v)]))),
    add: (k, v) => stored(call('add', k, v, 0)),
    replace: (k, v) => stored(call('replace', k, v, 0)),
    append: (k, v) => stored(call('append', k, v)),
    prepend: (k, v) => stored(call('prepend', k, v)),
    incr: (k, d) => counter(call('incr', k, d)),
    decr: (k, d) => counter(call('decr', k, d)),
    touch: (k, t) => stored(call('touch', k, t)),
    delete: (k) => stored(call('del', k)),
    gets: (k) => call('gets', k).then((r) => (r ? [String(r[k]), r.cas] : [null, null])),
    cas: (k, v, token) => stored(call('cas', k, v, token, 0)),
    end: () => c.end(),
  };
}

function binaryClient(addr) {
  const memjs = require('memjs');
  const counter = (p) => p.then((r) => (r.success ? Number(r.value) : null), (e) => (/not found/i.test(e.message) ? null : Promise.reject(e)));
  const c = memjs.Client.create(addr, { retries: 0, timeout: 5, conntimeout: 5, logger: { log() {} } });
  return {
    set: (k, v) => stored(c.set(k, v, {})),
    get: (k) => c.get(k).then((r) => (r.value === null ? null : r.value.toString())),
    add: (k, v) => stored(c.add(k, v, {})),
    replace: (k, v) => stored(c.replace(k, v, {})),
    append: (k, v) => stored(c.append(k, v)),
    // No prepend: memjs 1.3.2 sends it with append's opcode (0x0E).
    // Binary incr creates a missing key unless its expiry is 0xffffffff.
    incr: (k, d) => counter(c.increment(k, d, { expires: 0xffffffff })),
    decr: (k, d) => counter(c.decrement(k, d, { expires: 0xffffffff })),
    touch: (k, t) => stored(c.touch(k, t)),
    delete: (k) => stored(c.delete(k)),
    end: () => c.close(),
  };
}

async function scenario(a, b, p) {
  const k = p + 'k';
  const missing = p + 'missing';
  check('set', await a.set(k, 'v1'), true);
  check('get', await b.get(k), 'v1');
  check('get missing', await b.get(missing), null);

  if (b.getMulti) {
    await a.set(p + 'm1', 'one');
    await a.set(p + 'm2', 'two');
    check('multi-get', await b.getMulti([p + 'm1', p + 'm2', missing]), { [p + 'm1']: 'one', [p + 'm2']: 'two' });
  }

  check('add present', await a.add(k, 'x'), false);
  check('add absent', await a.add(p + 'new', 'n'), true);
  check('get added', await b.get(p + 'new'), 'n');
  check('replace absent', await a.replace(missing, 'x'), false);
  check('replace present', await a.replace(k, 'v2'), true);
  check('append', await a.append(k, '-tail'), true);
  let whole = 'v2-tail';
  if (a.prepend) {
    check('prepend', await a.prepend(k, 'head-'), true);
    whole = 'head-v2-tail';
  }
  check('append absent', await a.append(missing, 'x'), false);
  check('get after append and prepend', await b.get(k), whole);

  await a.set(p + 'n', '10');
  check('incr', await a.incr(p + 'n', 5), 15);
  check('decr below zero', await b.decr(p + 'n', 20), 0);
  // memcached pads a shrunk counter with spaces; both are fine.
  check('get counter', (await b.get(p + 'n')).trimEnd(), '0');
  check('incr absent', await a.incr(missing, 1), null);

  check('touch present', await a.touch(k, 100), true);
  check('touch absent', await a.touch(missing, 100), false);

  check('delete present', await a.delete(p + 'new'), true);
  check('get deleted', await b.get(p + 'new'), null);
  check('delete absent', await a.delete(p + 'new'), false);

  if (a.gets) {
    const [value, token] = await a.gets(k);
    check('gets value', value, whole);
    const n = Number(token);
    assert(/^\d+$/.test(String(token)) && Number.isSafeInteger(n) && n > 0 && n < TOKEN_LIMIT, `gets token ${token} is not in (0, 2^32)`);
    check('cas with the fresh token', await b.cas(k, 'swapped', token), true);
    check('cas with the stale token', await a.cas(k, 'again', token), false);
    check('get after cas', await b.get(k), 'swapped');
    const [after, fresh] = await b.gets(k);
    check('gets after cas', after, 'swapped');
    assert.notStrictEqual(String(fresh), String(token), 'the token did not change with the value');
    check('cas with the new token', await a.cas(k, 'again', fresh), true);

    await a.set(p + 'alike1', 'same');
    await a.set(p + 'alike2', 'same');
    assert.notStrictEqual((await a.gets(p + 'alike1'))[1], (await a.gets(p + 'alike2'))[1], 'two keys written alike share a token');
  }
}

async function main() {
  const [client, writer, reader, prefix] = process.argv.slice(2);
  const make = { memcached: textClient, memjs: binaryClient }[client];
  if (!make) throw new Error(`no client ${client}`);
  const a = make(writer);
  const b = make(reader);
  try {
    await scenario(a, b, prefix);
  } finally {
    a.end();
    b.end();
  }
  console.log(`ok ${client}`);
}

main().catch((e) => {
  console.log(`FAIL ${e.message}`);
  process.exit(1);
});
