// The current Node.js client (npm `algorithmia` 2.x, TypeScript) through the gateway as the
// confined team: algorithm calls, data files and directories, refusals. It needs
// typed-rest-client and dotenv from npm, out of CI's reach: Tests/ClientCompat/run.sh builds it,
// and typed-rest-client 1.8, with Debian's tsc when NODE2_CLIENT_DIR and TYPED_REST_CLIENT_DIR
// name their sources (see there).
// Usage: NODE_PATH=<its node_modules>:/usr/share/nodejs ALGORITHMIA_API=... ALGORITHMIA_API_KEY=<a key
// confined to ROOT> [ALGORITHMIA_MANAGE_KEY=<a key with the manage scope>] node node2.js ROOT OUTSIDE [OWNER]
// With a manage key, it also drives the management API through the client's methods under OWNER.
'use strict';
const assert = require('assert');
const { AlgorithmiaClient } = require('algorithmia/lib/index.js');
const [root, outside] = [process.argv[2], process.argv[3]];
// This client reads its address from ALGORITHMIA_API_ADDRESS and its key from
// ALGORITHMIA_DEFAULT_API_KEY (sent bare), or takes both here.
const client = new AlgorithmiaClient(process.env.ALGORITHMIA_API_KEY, process.env.ALGORITHMIA_API);
const envClient = (() => {
  process.env.ALGORITHMIA_API_ADDRESS = process.env.ALGORITHMIA_API;
  process.env.ALGORITHMIA_DEFAULT_API_KEY = process.env.ALGORITHMIA_API_KEY;
  return new AlgorithmiaClient();
})();
const envelope = (text) => JSON.parse(text).error;

(async () => {
  // pipe(input, version, output = 'raw', stdout, timeout): every call goes to `{algo}/[version/]`
  // with output=raw unless told otherwise.
  assert.strictEqual(await client.algo('algo://demo/Hello').pipe('Node', '0.1.1'), 'Hello Node');
  assert.strictEqual(await envClient.algo('demo/Hello').pipe('env', '0.1.1'), 'Hello env');
  assert.deepStrictEqual(JSON.parse(await client.algo('util/Echo').pipe({ a: [1, 2] }, '1.0.0')), { a: [1, 2] });
  const wrapped = JSON.parse(await client.algo('demo/Hello').pipe('default', '0.1.1', 'default', true, 20));
  assert.strictEqual(wrapped.result, 'Hello default'); assert.strictEqual(wrapped.metadata.content_type, 'text');
  assert.deepStrictEqual(envelope(await client.algo('util/Echo').pipe(outside + '/secret', '1.0.0')),
    { error_type: 'PermissionDenied', message: `algorithm input references ${outside}/secret, outside client 'limited' data prefixes (data://.my/limited/)` });
  assert.strictEqual(envelope(await client.algo('demo/Nope').pipe('x', '1.0.0')).message, 'algorithm algo://demo/Nope/1.0.0 not found');
  console.log('ok   node 2.x: algorithm calls (algo://, text, JSON, the default output, options, the key and address from the environment), refusals');

  const top = client.dir(root);
  if (!(await top.exists())) {
    const parent = client.dir(root.slice(0, root.lastIndexOf('/')));
    await parent.create({ name: root.slice(root.lastIndexOf('/') + 1) });
  }
  // Its create() posts what it is given to the directory's own path, so a directory is made by
  // giving its parent the {"name"} object the API takes.
  assert.deepStrictEqual(JSON.parse(await top.create({ name: 'node2' })), { result: root + '/node2' });
  const dir = client.dir(root + '/node2');
  assert.strictEqual(await dir.exists(), true);
  const text = dir.file('note.txt');
  assert.deepStrictEqual(JSON.parse(await text.put('héllo')), { result: root + '/node2/note.txt' });
  assert.strictEqual(await text.getString(), 'héllo');
  assert.strictEqual(await text.exists(), true);
  const doc = dir.file('doc.json');
  await doc.putJson({ k: 1 });
  assert.deepStrictEqual(JSON.parse(await doc.getJson()), { k: 1 });
  assert.strictEqual(await dir.file('missing').exists(), false);
  const listing = JSON.parse(await dir.get());
  assert.deepStrictEqual(listing.files.map((f) => f.filename), ['doc.json', 'note.txt']);
  assert.deepStrictEqual(envelope(await client.file(outside + '/x').put('no')),
    { error_type: 'PermissionDenied', message: `client 'limited' may not access ${outside}/x: outside its data prefixes (data://.my/limited/)` });
  assert.deepStrictEqual(JSON.parse(await doc.delete()), { result: { deleted: 1 } });
  assert.strictEqual(envelope(await dir.delete(false)).message, `directory ${root}/node2 is not empty; delete with force=true`);
  assert.deepStrictEqual(JSON.parse(await dir.delete(true)), { result: { deleted: 1 } });
  assert.strictEqual(await dir.exists(), false);
  const stranger = new AlgorithmiaClient('not-a-key', process.env.ALGORITHMIA_API);
  assert.strictEqual(envelope(await stranger.algo('demo/Hello').pipe('x', '0.1.1')).message, 'authorization failed: unknown algogate key');
  console.log('ok   node 2.x: directories (create, exists, list, delete forced and not), files (text, JSON, exists, delete), refusals');
  if (process.env.ALGORITHMIA_MANAGE_KEY) {
    const owner = process.argv[4];
    const manager = new AlgorithmiaClient(process.env.ALGORITHMIA_MANAGE_KEY, process.env.ALGORITHMIA_API);
    const name = 'NodeFlow' + Date.now();
    const created = JSON.parse(await manager.createAlgo(owner, { name, details: { label: 'Node' }, settings: { language: 'javascript' } }));
    assert.strictEqual(created.name, name);
    assert.strictEqual(JSON.parse(await manager.getAlgo(owner, name)).details.label, 'Node');
    assert.strictEqual(JSON.parse(await manager.buildAlgo(owner, name)).version_info.git_hash.length, 40);
    // publishAlgo posts to `.../version`, with version_type "revision".
    assert.strictEqual(JSON.parse(await manager.publishAlgo(owner, name)).version_info.semantic_version, '0.0.1');
    assert.deepStrictEqual(JSON.parse(await manager.listAlgoVersions(owner, name)).results.map((v) => v.version_info.semantic_version), ['0.0.1']);
    const builds = JSON.parse(await manager.listAlgoBuilds(owner, name)).results;
    assert.ok(JSON.parse(await manager.getAlgoBuildLogs(owner, name, builds[0].build_id)).logs.includes('Build succeeded'));
    assert.strictEqual(await manager.algo(`${owner}/${name}`).pipe('hi', '0.0.1'), 'hi');
    assert.strictEqual(await manager.deleteAlgo(owner, name), '');
    assert.strictEqual(envelope(await manager.getAlgo(owner, name)).message, `No such algorithm: ${owner}/${name}`);
    console.log('ok   node 2.x: createAlgo, getAlgo, buildAlgo, publishAlgo, listAlgoVersions, listAlgoBuilds, getAlgoBuildLogs, the new version called, deleteAlgo');
  }
  process.exit(0);  // its HTTP agent keeps idle connections, which would hold the process until the gateway closes them
})().catch((e) => { console.error('FAIL:', e); process.exit(1); });
