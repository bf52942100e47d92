// The classic Node.js client (npm `algorithmia` 0.3.x, which needs no other package) through the
// gateway: its algorithm calls and every File and Dir method. npm is out of CI's reach, so
// Tests/ClientCompat/run.sh runs this only when NODE_CLIENT_DIR names an unpacked copy of the
// package (its `lib/algorithmia.js`).
// Usage: ALGORITHMIA_API=... ALGORITHMIA_API_KEY=<a key confined to ROOT> node node03.js CLIENT_DIR ROOT OUTSIDE
// where ROOT (data://.my/limited) is the team's data prefix and OUTSIDE a directory beyond it.
'use strict';
const assert = require('assert');
const Algorithmia = require(process.argv[2]);
const [root, outside] = [process.argv[3], process.argv[4]];
const client = Algorithmia.client(process.env.ALGORITHMIA_API_KEY, process.env.ALGORITHMIA_API);
// The client's calls take callbacks; each is awaited here with the arguments it was given.
const call = (start) => new Promise((resolve) => start((...args) => resolve(args)));
const pipe = (algo, input, json) =>
  new Promise((resolve) => (json ? client.algo(algo).pipeJson(input) : client.algo(algo).pipe(input)).then(resolve));

(async () => {
  // The reference as its README writes it, `algo://` and all, and without.
  let r = await pipe('algo://demo/Hello/0.1.1', 'HAL');
  assert.strictEqual(r.status, 200); assert.strictEqual(r.get(), 'Hello HAL');
  r = await pipe('demo/Hello/0.1.1', 'HAL');
  assert.strictEqual(r.get(), 'Hello HAL');
  r = await pipe('util/Echo/1.0.0', {a: [1, 2]});
  assert.strictEqual(r.metadata.content_type, 'json'); assert.deepStrictEqual(r.get(), {a: [1, 2]});
  r = await pipe('util/Echo/1.0.0', Buffer.from([0, 1, 2, 255]));
  assert.strictEqual(r.metadata.content_type, 'binary'); assert.deepStrictEqual([...r.get()], [0, 1, 2, 255]);
  r = await pipe('util/Echo/1.0.0', JSON.stringify(root + '/x'), true);
  assert.strictEqual(r.status, 200); assert.strictEqual(r.get(), root + '/x');
  r = await pipe('util/Echo/1.0.0', outside + '/secret');
  assert.strictEqual(r.status, 403);
  assert.strictEqual(r.error.message, `algorithm input references ${outside}/secret, outside client 'limited' data prefixes (data://.my/limited/)`);
  r = await pipe('demo/Nope/1.0.0', 'x');
  assert.strictEqual(r.status, 404);
  console.log('ok   node 0.3: algorithm calls (algo://, text, JSON, binary, pipeJson), refusals');

  let [body, status] = await call((cb) => client.dir(root).create(cb));
  assert.ok(status === 200 || status === 409, `create ${root}: ${status}`);
  const dir = client.dir(root + '/node03');
  [body, status] = await call((cb) => dir.create(cb));
  assert.strictEqual(status, 200); assert.deepStrictEqual(body, {result: root + '/node03'});
  // put(Buffer) sends no Content-Type, chunked.
  const blob = dir.file('blob.bin');
  [body, status] = await call((cb) => blob.put(Buffer.from([9, 8, 7, 0, 255]), cb));
  assert.strictEqual(status, 200);
  let [error, data] = await call((cb) => blob.get(cb));
  assert.strictEqual(error, null); assert.deepStrictEqual([...data], [9, 8, 7, 0, 255]);
  // getString and getJson read the answer by its Content-Type, which the upload gave.
  const note = dir.file('note.txt');
  [body, status] = await call((cb) => note.putString('héllo', cb));
  assert.strictEqual(status, 200);
  [body, status] = await call((cb) => note.getString(cb));
  assert.strictEqual(status, 200); assert.strictEqual(body, 'héllo');
  const doc = dir.file('doc.json');
  [body, status] = await call((cb) => doc.putJson(JSON.stringify({k: 1}), cb));
  assert.strictEqual(status, 200);
  [body, status] = await call((cb) => doc.getJson(cb));
  assert.deepStrictEqual(body, {k: 1});
  assert.deepStrictEqual(await call((cb) => blob.exists(cb)), [true]);
  assert.strictEqual((await call((cb) => dir.file('missing').exists(cb)))[0], false);
  assert.deepStrictEqual(await call((cb) => dir.exists(cb)), [true]);
  const names = [];
  await new Promise((resolve) => dir.forEach((err, item) => { assert.ifError(err); names.push(item.data_path); }).then(resolve));
  const base = root.replace('data://', '') + '/node03/';
  assert.deepStrictEqual(names.sort(), ['blob.bin', 'doc.json', 'note.txt'].map((n) => base + n));
  console.log('ok   node 0.3: Dir create, exists, forEach; File put, get, putString, getString, putJson, getJson, exists');

  [body, status] = await call((cb) => client.file(outside + '/x').put('no', cb));
  assert.strictEqual(status, 403);
  assert.strictEqual(body.error.message, `client 'limited' may not access ${outside}/x: outside its data prefixes (data://.my/limited/)`);
  // The client sends `..` as it is; the gateway checks the path it names.
  const escape = root + '/../' + outside.split('/').pop() + '/x';
  [body, status] = await call((cb) => client.file(escape).getString(cb));
  assert.strictEqual(status, 403);
  assert.strictEqual(body.error.message, `client 'limited' may not access ${outside}/x: outside its data prefixes (data://.my/limited/)`);
  [body, status] = await call((cb) => blob.delete(cb));
  assert.strictEqual(status, 200); assert.deepStrictEqual(body, {result: {deleted: 1}});
  [body, status] = await call((cb) => dir.delete(false, cb));
  assert.strictEqual(status, 400);
  [body, status] = await call((cb) => dir.delete(true, cb));
  assert.strictEqual(status, 200); assert.deepStrictEqual(body, {result: {deleted: 2}});
  const stranger = Algorithmia.client('not-a-key', process.env.ALGORITHMIA_API);
  r = await new Promise((resolve) => stranger.algo('demo/Hello/0.1.1').pipe('x').then(resolve));
  assert.strictEqual(r.status, 401);
  console.log('ok   node 0.3: File and Dir delete (forced and not), refusals outside the prefix, an unknown key');
})().catch((e) => { console.error('FAIL:', e); process.exit(1); });
