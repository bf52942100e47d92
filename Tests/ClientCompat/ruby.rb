# The official Ruby client (algorithmia gem, on Debian's ruby-httparty) through the gateway as the
# confined team: algorithm calls with options, data files and directories, refusals.
# Tests/ClientCompat/run.sh runs it when RUBY_CLIENT_DIR names an unpacked copy of the gem's
# source (its lib/algorithmia.rb): RubyGems is out of CI's reach.
# Usage: ALGORITHMIA_API=... ALGORITHMIA_API_KEY=<a key confined to ROOT> [ALGORITHMIA_MANAGE_KEY=<a key
# with the manage scope>] ruby ruby.rb CLIENT_DIR ROOT OUTSIDE [OWNER]
# With a manage key, it also reads an algorithm it makes under OWNER through the client's
# management methods (get, versions, builds, build logs, SCM status) and deletes it.
require File.join(ARGV[0], 'lib', 'algorithmia')
root, outside = ARGV[1], ARGV[2]

def expect(label, actual, expected)
  return if actual == expected
  warn "FAIL: ruby #{label}: got #{actual.inspect}, expected #{expected.inspect}"
  exit 1
end

def refusal(label)
  yield
  warn "FAIL: ruby #{label}: not refused"
  exit 1
rescue Algorithmia::Errors::ApiError, Algorithmia::Errors::UnauthorizedError, Algorithmia::Errors::NotFoundError => e
  # This client shows its own message for every refusal (it looks for the envelope in a Hash,
  # and its answer is not one), so the gateway's is read from the answer it keeps.
  [e.class.name.split('::').last, e.response.code, JSON.parse(e.response.body).dig('error', 'message')]
end

client = Algorithmia.client(ENV.fetch('ALGORITHMIA_API_KEY'))   # the bare key, as this client sends it
expect('text', client.algo('demo/Hello/0.1.1').pipe('Ruby').result, 'Hello Ruby')
expect('JSON', client.algo('util/Echo/1.0.0').pipe({ 'a' => [1, 2] }).result, { 'a' => [1, 2] })
binary = "\x00\x01\xff".b
expect('binary', client.algo('util/Echo/1.0.0').pipe(binary).result, binary)
expect('pipe_json', client.algo('util/Echo/1.0.0').pipe_json('"x"').result, 'x')
with_options = client.algo('demo/Hello/0.1.1').set(timeout: 20, stdout: false).pipe('options')
expect('options', with_options.result, 'Hello options')
expect('raw output', client.algo('util/Echo/1.0.0').set(output: 'raw').pipe('raw text').result, 'raw text')
expect('input outside the prefix', refusal('input outside') { client.algo('util/Echo/1.0.0').pipe("#{outside}/secret") },
       ['ApiError', 403, "algorithm input references #{outside}/secret, outside client 'limited' data prefixes (data://.my/limited/)"])
expect('unknown algorithm', refusal('unknown algorithm') { client.algo('demo/Nope/1.0.0').pipe('x') },
       ['NotFoundError', 404, 'algorithm algo://demo/Nope/1.0.0 not found'])
puts 'ok   ruby: algorithm calls (text, JSON, binary, pipe_json, timeout and stdout, raw output), refusals'

# DataDirectory#create passes its body as keywords, which Ruby 3 refuses (ArgumentError), so its
# request is made as the client means it: the new directory's name posted to its parent as JSON.
def create(client, parent, name)
  Algorithmia::Requester.new(client).post("/v1/data/#{parent.sub('data://', '')}", { 'name' => name })
  true
end
dir = client.dir("#{root}/ruby")
begin
  create(client, File.dirname(root), File.basename(root))
rescue Algorithmia::Errors::ApiError => e
  raise unless e.response.code == 409
end
expect('dir exists before', dir.exists?, false)
expect('dir create', create(client, root, 'ruby'), true)
expect('dir exists', dir.exists?, true)
text = client.file("#{root}/ruby/note.txt")
text.put('héllo')
expect('file get', text.get.force_encoding('UTF-8'), 'héllo')
expect('file exists', text.exists?, true)
blob = client.file("#{root}/ruby/blob.bin")
blob.put("\x09\x00\xff".b)
expect('binary file', blob.get.b, "\x09\x00\xff".b)
json = client.file("#{root}/ruby/doc.json")
json.put_json({ 'k' => 1 })
expect('JSON file', JSON.parse(json.get), { 'k' => 1 })
expect('missing file', client.file("#{root}/ruby/missing").exists?, false)
# (DataDirectory#each builds its entries with URI.encode, which Ruby 3 removed: not usable here.)
listing = Algorithmia::Requester.new(client).get("/v1/data/#{root.sub('data://', '')}/ruby").parsed_response
expect('listing', listing['files'].map { |f| f['filename'] }, %w[blob.bin doc.json note.txt])
expect('write outside the prefix', refusal('write outside') { client.file("#{outside}/x").put('no') },
       ['ApiError', 403, "client 'limited' may not access #{outside}/x: outside its data prefixes (data://.my/limited/)"])
expect('read outside the prefix', refusal('read outside') { client.file("#{root}/../#{outside.split('/').last}/x").get },
       ['ApiError', 403, "client 'limited' may not access #{outside}/x: outside its data prefixes (data://.my/limited/)"])
expect('file delete', blob.delete, true)
expect('dir delete, not empty', refusal('delete not forced') { dir.delete },
       ['ApiError', 400, "directory #{root}/ruby is not empty; delete with force=true"])
expect('dir delete, forced', dir.delete(true), true)
expect('dir gone', dir.exists?, false)
stranger = Algorithmia.client('not-a-key')
expect('unknown key', refusal('unknown key') { stranger.algo('demo/Hello/0.1.1').pipe('x') },
       ['UnauthorizedError', 401, 'authorization failed: unknown algogate key'])
puts 'ok   ruby: directories (create, exists, delete forced and not), files (text, binary, JSON, exists, delete), refusals'

if (manage_key = ENV['ALGORITHMIA_MANAGE_KEY'])
  owner = ARGV[3]
  manager = Algorithmia.client(manage_key)
  name = "RubyFlow#{Time.now.to_i}"
  # This client cannot create, compile or publish; those requests are made with its requester.
  requester = Algorithmia::Requester.new(manager)
  requester.post("/v1/algorithms/#{owner}", { 'name' => name, 'details' => { 'label' => 'Ruby' }, 'settings' => { 'language' => 'ruby' } })
  requester.post("/v1/algorithms/#{owner}/#{name}/compile", {})
  requester.post("/v1/algorithms/#{owner}/#{name}/versions", { 'version_info' => { 'version_type' => 'minor' } })
  # Its methods append to the strings they are given, so each gets a copy.
  expect('get_algo', manager.get_algo(owner.dup, name.dup).response['name'], name)
  versions = manager.get_algo_versions(owner.dup, name.dup, nil, nil, nil, nil).response['results']
  expect('get_algo_versions', versions.map { |v| v['version_info']['semantic_version'] }, ['0.1.0'])
  builds = manager.get_algo_builds(owner.dup, name.dup, nil, nil).response['results']
  expect('get_algo_builds', builds.size, 2)
  expect('get_algo_build_logs', manager.get_algo_build_logs(owner.dup, name.dup, builds[0]['build_id']).response['logs'].include?('Build succeeded'), true)
  expect('get_scm_status', manager.get_scm_status(owner.dup, name.dup).response, { 'scm_connection_status' => 'active' })
  manager.delete_algo(owner.dup, name.dup)
  expect('get_algo after delete_algo', refusal('get after delete') { manager.get_algo(owner.dup, name.dup) }[0..1], ['NotFoundError', 404])
  puts 'ok   ruby: get_algo, get_algo_versions, get_algo_builds, get_algo_build_logs, get_scm_status, delete_algo'
end
