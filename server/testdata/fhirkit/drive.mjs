// Drives a fhirbucket server with the unmodified fhir-kit-client library.
// Usage: node drive.mjs <path to fhir-kit-client/dist/index.js> <FHIR base URL>
// Prints "ok" and exits 0 when every step behaves as FHIR R4 says.
import { pathToFileURL } from 'node:url';
import assert from 'node:assert/strict';

const [modulePath, baseUrl] = process.argv.slice(2);
const mod = await import(pathToFileURL(modulePath).href);
const Client = mod.default ?? mod.Client;
const client = new Client({ baseUrl });

const status = async (p) => {
  try { await p; return 200; } catch (e) { return e.response?.status ?? String(e); }
};

// capabilities
const cs = await client.capabilityStatement();
assert.equal(cs.resourceType, 'CapabilityStatement');
assert.equal(cs.fhirVersion, '4.0.1');

// create, read, vread
const created = await client.create({ resourceType: 'Patient', body: { resourceType: 'Patient', name: [{ family: 'Kit' }] } });
assert.equal(created.meta.versionId, '1');
const id = created.id;
const read = await client.read({ resourceType: 'Patient', id });
assert.equal(read.name[0].family, 'Kit');
const v1 = await client.vread({ resourceType: 'Patient', id, version: '1' });
assert.equal(v1.meta.versionId, '1');

// update (twice), delete, read deleted (410), restore
for (const family of ['Kit2', 'Kit3']) {
  const updated = await client.update({ resourceType: 'Patient', id, body: { resourceType: 'Patient', id, name: [{ family }] } });
  assert.equal(updated.name[0].family, family);
}
await client.delete({ resourceType: 'Patient', id });
assert.equal(await status(client.read({ resourceType: 'Patient', id })), 410);
const restored = await client.update({ resourceType: 'Patient', id, body: { resourceType: 'Patient', id, name: [{ family: 'Back' }] } });
assert.equal(restored.meta.versionId, '5');
assert.equal(await status(client.read({ resourceType: 'Patient', id: 'does-not-exist' })), 404);

// history of the instance, paged two at a time with nextPage
// (resourceHistory takes no parameters; the first page is asked for with
// request, the following ones with nextPage.)
let page = await client.request(`Patient/${id}/_history?_count=2`);
const methods = [];
let pages = 0;
while (page) {
  pages++;
  assert.equal(page.type, 'history');
  for (const e of page.entry ?? []) methods.push(`${e.request.method} ${e.response.etag}`);
  page = await client.nextPage({ bundle: page });
}
assert.deepEqual(methods, ['PUT W/"5"', 'DELETE W/"4"', 'PUT W/"3"', 'PUT W/"2"', 'POST W/"1"']);
assert.equal(pages, 3);
const full = await client.resourceHistory({ resourceType: 'Patient', id });
assert.equal(full.entry.length, 5);

// type and system history, search with paging
for (let i = 0; i < 5; i++) {
  await client.create({ resourceType: 'Patient', body: { resourceType: 'Patient', name: [{ family: `P${i}` }] } });
}
const th = await client.typeHistory({ resourceType: 'Patient' });
assert.ok(th.entry.length >= 10);
const sh = await client.systemHistory();
assert.equal(sh.type, 'history');
let s = await client.search({ resourceType: 'Patient', searchParams: { _count: 4 } });
let found = 0;
while (s) {
  found += (s.entry ?? []).length;
  s = await client.nextPage({ bundle: s });
}
assert.equal(found, 6);
const byId = await client.search({ resourceType: 'Patient', searchParams: { _id: id } });
assert.equal(byId.entry.length, 1);
console.log('ok');
