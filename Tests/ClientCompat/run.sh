#!/usr/bin/env bash
# Runs the official Algorithmia Python client (algorithmia==2.0.5) through its seed flows:
# straight at the simulator, then through the gateway when the gateway's `serve` command exists,
# and the last 1.x release (1.17.0) and the package's `algo` CLI through the gateway; the classic
# Node.js client (0.3.x), the current one (2.x) and the Ruby, R, C#, Swift and Java clients too
# when NODE_CLIENT_DIR, NODE2_CLIENT_DIR (with TYPED_REST_CLIENT_DIR), RUBY_CLIENT_DIR,
# R_CLIENT_DIR, CSHARP_CLIENT_DIR, SWIFT_CLIENT_DIR and JAVA_CLIENT_DIR name copies of them; and
# a web page in headless Chromium through the gateway, as Algorithmia's browser client calls it.
# Needs the debug build of `algogate` (swift build) and python3 with venv; installs the client
# into .build/clientcompat-venv (and 1.17.0 into .build/clientcompat-venv-1), and Debian's
# chromium when it is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN="$ROOT/.build/debug/algogate"
[ -x "$BIN" ] || swift build --product algogate
# client_venv DIR VERSION: a virtual environment with that client release, made once.
client_venv() {
  if [ ! -x "$1/bin/python" ] || [ "$("$1/bin/python" -c 'import importlib.metadata as m; print(m.version("algorithmia"))' 2>/dev/null)" != "$2" ]; then
    rm -rf "$1"
    python3 -m venv "$1"
    "$1/bin/pip" install --quiet --disable-pip-version-check "algorithmia==$2"
  fi
}
VENV="$ROOT/.build/clientcompat-venv"
client_venv "$VENV" 2.0.5

WORK=$(mktemp -d /tmp/clientcompat.XXXXXX)
PIDS=()
cleanup() { for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
# Each try has 2 s: a connection accepted and never answered must not stall the run.
wait_http() { for _ in $(seq 100); do curl -s -m 2 -o /dev/null "$@" && return 0; sleep 0.1; done; echo "not listening: $1" >&2; return 1; }

SIM_KEY="sim-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
SIM_PORT=$(free_port)
# Listings of 3 entries a page: the client follows `marker` from page to page (both ways).
"$BIN" sim --port "$SIM_PORT" --key "$SIM_KEY" --data-dir "$WORK/data" --page-size 3 >"$WORK/sim.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$SIM_PORT/__sim/health"

echo "== official Python client 2.0.5 -> simulator"
ALGORITHMIA_API="http://127.0.0.1:$SIM_PORT" ALGORITHMIA_API_KEY="$SIM_KEY" "$VENV/bin/python" Tests/ClientCompat/flows.py

if "$BIN" --help 2>/dev/null | grep -E "^ +serve " >/dev/null; then
  echo "== official Python client 2.0.5 -> gateway -> simulator"
  GW_PORT=$(free_port)
  CLIENT_KEY="team-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  HASH=$(printf '%s' "$CLIENT_KEY" | sha256sum | cut -d' ' -f1)
  LIMITED_KEY="limited-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  LIMITED_HASH=$(printf '%s' "$LIMITED_KEY" | sha256sum | cut -d' ' -f1)
  PAGE_KEY="page-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  PAGE_HASH=$(printf '%s' "$PAGE_KEY" | sha256sum | cut -d' ' -f1)
  PAGE_PORT=$(free_port)
  cat >"$WORK/gateway.yaml" <<YAML
server: {host: 127.0.0.1, port: $GW_PORT}
upstream:
  url: http://127.0.0.1:$SIM_PORT
  key_env: CLIENTCOMPAT_UPSTREAM_KEY
cache: {path: $WORK/cache.sqlite}
clients:
  - name: compat
    key_sha256: "$HASH"
    scopes: [algo, data:read, data:write, manage]
  - name: limited
    key_sha256: "$LIMITED_HASH"
    scopes: [algo, data:read, data:write]
    data_prefixes: ["data://.my/limited/"]
  - name: web
    key_sha256: "$PAGE_HASH"
    scopes: [algo, data:read]
    cors_origins: ["http://127.0.0.1:$PAGE_PORT"]
    quota: {requests_per_minute: 1000}
YAML
  CLIENTCOMPAT_UPSTREAM_KEY="$SIM_KEY" "$BIN" serve --config "$WORK/gateway.yaml" >"$WORK/gateway.log" 2>&1 &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$GW_PORT/healthz"
  curl -s -X POST "http://127.0.0.1:$SIM_PORT/__sim/reset" >/dev/null   # forget the direct run's bare key
  ALGORITHMIA_API="http://127.0.0.1:$GW_PORT" ALGORITHMIA_API_KEY="$CLIENT_KEY" "$VENV/bin/python" Tests/ClientCompat/flows.py
  echo "== official Python client 1.17.0 -> gateway -> simulator"
  VENV1="$ROOT/.build/clientcompat-venv-1"
  client_venv "$VENV1" 1.17.0
  ALGORITHMIA_API="http://127.0.0.1:$GW_PORT" ALGORITHMIA_API_KEY="$CLIENT_KEY" "$VENV1/bin/python" Tests/ClientCompat/flows.py
  # The `algo` CLI of the same package reads its address and key from a profile file; `algo auth`
  # takes only https://api.* addresses and Algorithmia-shaped keys, so the file is written as a
  # team would write it. It sends the bare key for `run -t`.
  echo "== the algo CLI (client 2.0.5) -> gateway -> simulator"
  CLI_HOME="$WORK/cli-home"
  mkdir -p "$CLI_HOME/.algorithmia"
  printf "[profiles]\n[profiles.default]\napi_key = '%s'\napi_server = '%s'\nca_cert = ''\nbearer_token = ''\n" \
    "$CLIENT_KEY" "http://127.0.0.1:$GW_PORT" >"$CLI_HOME/.algorithmia/config"
  cli() { HOME="$CLI_HOME" "$VENV/bin/algo" "$@"; }
  # same LABEL ACTUAL EXPECTED: fails the run, saying what differed.
  same() { [ "$2" = "$3" ] || { echo "FAIL: algo $1: got '$2', expected '$3'" >&2; exit 1; }; }
  same "run -d" "$(cli run demo/Hello/0.1.0 -d HAL)" "Hello HAL"
  same "run -t" "$(cli run algo://demo/Hello/0.1.1 -t text)" "Hello text"
  same "run -j" "$(cli run demo/Hello -j '"json"')" "Hello json"
  cli mkdir data://.my/cli
  printf 'written by the CLI' >"$WORK/cli-upload.txt"
  cli cp "$WORK/cli-upload.txt" data://.my/cli/f.txt
  same "ls" "$(cli ls data://.my/cli/)" ".my/cli/f.txt"
  # Read whole before matching: `grep -q` stops reading at its match, and a CLI still printing
  # then fails with a broken pipe.
  long=$(cli ls -l data://.my/cli/)
  printf '%s\n' "$long" | grep -E '^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9:]{8}   18   \.my/cli/f\.txt$' >/dev/null || { echo "FAIL: algo ls -l: got '$long'" >&2; exit 1; }
  same "cat" "$(cli cat data://.my/cli/f.txt)" "written by the CLI"
  cli cp data://.my/cli/f.txt "$WORK/cli-download.txt"
  cmp -s "$WORK/cli-upload.txt" "$WORK/cli-download.txt" || { echo "FAIL: algo cp down" >&2; exit 1; }
  same "rmdir (not empty)" "$(cli rmdir data://.my/cli 2>&1 | tail -1)" "directory data://.my/cli is not empty; delete with force=true"
  cli rm data://.my/cli/f.txt
  cli rmdir data://.my/cli
  listing=$(cli ls data://.my/)
  same "ls after rmdir" "$(printf '%s\n' "$listing" | grep -cx '\.my/cli/' || true)" "0"
  echo "ok   algo run (-d, -t, -j), mkdir, cp both ways, ls, ls -l, cat, rm, rmdir"
  # An address with a trailing slash: the client appends "/v1/..." to it as it is, so "//v1/...".
  ALGORITHMIA_API="http://127.0.0.1:$GW_PORT/" ALGORITHMIA_API_KEY="$CLIENT_KEY" "$VENV/bin/python" -c '
import Algorithmia
client = Algorithmia.client()
assert client.algo("demo/Hello/0.1.0").pipe("slash").result == "Hello slash"
assert client.dir("data://.my").exists()
print("ok   an ALGORITHMIA_API ending with a slash")'
  # A team confined to its data prefix: what it may do works, and what it may not is refused with
  # the gateway's message where this client shows one (a HEAD's X-Error-Message; it shows only the
  # status of a refused PUT or algorithm call).
  ALGORITHMIA_API="http://127.0.0.1:$GW_PORT" ALGORITHMIA_API_KEY="$LIMITED_KEY" "$VENV/bin/python" -c '
import Algorithmia
from Algorithmia.errors import DataApiError
client = Algorithmia.client()
client.dir("data://.my/limited").create()
client.file("data://.my/limited/mine.txt").put("mine")
assert client.file("data://.my/limited/mine.txt").getString() == "mine"
outside = client.file("data://.my/other/theirs.txt")
assert not outside.exists()
try:
    outside.getString()
    raise SystemExit("FAIL: a file outside the prefix was read")
except DataApiError as error:
    expected = "client %s may not access data://.my/other/theirs.txt: outside its data prefixes (data://.my/limited/)" % repr("limited")
    assert str(error).endswith(expected), error
for attempt in (lambda: outside.put("x"), lambda: client.algo("util/Echo/1.0.0").pipe("data://.my/other/theirs.txt")):
    try:
        attempt()
        raise SystemExit("FAIL: a refused call went through")
    except Exception as error:
        assert "403" in str(error), error
try:
    client.username()  # lists the root of the data API
    raise SystemExit("FAIL: the root was listed")
except DataApiError as error:
    assert "outside its data prefixes (data://.my/limited/)" in str(error), error
print("ok   a team confined to data://.my/limited/")'
  # The classic Node.js client, when a copy is given (npm is out of CI's reach; the package
  # needs nothing else): its algorithm calls and every File and Dir method, as the confined team.
  if [ -n "${NODE_CLIENT_DIR:-}" ]; then
    echo "== Node.js client $(node -p "require('$NODE_CLIENT_DIR/package.json').version") -> gateway -> simulator"
    ALGORITHMIA_API="http://127.0.0.1:$GW_PORT" ALGORITHMIA_API_KEY="$LIMITED_KEY" \
      node --no-deprecation Tests/ClientCompat/node03.js "$NODE_CLIENT_DIR" data://.my/limited data://.my/other
  else
    echo "skip the Node.js 0.3 client: set NODE_CLIENT_DIR to an unpacked copy of npm's algorithmia 0.3.x, or a checkout of algorithmiaio/algorithmia-nodejs at v0.3.8"
  fi
  # Debian packages that only the optional clients below need, installed when missing.
  apt_install() {
    local missing=() package
    for package in "$@"; do dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "installing: ${missing[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  }
  # The current Node.js client (2.x, TypeScript), when its source and that of typed-rest-client
  # 1.8 (its one dependency besides dotenv) are given: both compiled with Debian's tsc (type
  # errors for want of Node's type declarations are only reported: the JavaScript is emitted as
  # it is), on Debian's qs and underscore; npm's tunnel (proxies only) and dotenv (a .env file)
  # are stand-ins that do nothing, as nothing here uses them.
  if [ -n "${NODE2_CLIENT_DIR:-}" ] && [ -n "${TYPED_REST_CLIENT_DIR:-}" ]; then
    apt_install node-typescript node-qs node-underscore
    N2="$WORK/node2/node_modules"
    mkdir -p "$N2/typed-rest-client/opensource" "$N2/algorithmia" "$N2/tunnel" "$N2/dotenv"
    tsc -p "$TYPED_REST_CLIENT_DIR" --outDir "$N2/typed-rest-client" >/dev/null || true
    cp -r "$TYPED_REST_CLIENT_DIR/lib/opensource/Node-SMB" "$N2/typed-rest-client/opensource/"
    tsc --target es2018 --module commonjs --esModuleInterop --outDir "$N2/algorithmia/lib" "$NODE2_CLIENT_DIR"/src/*.ts >/dev/null || true
    cp "$NODE2_CLIENT_DIR/package.json" "$N2/algorithmia/"
    echo 'const no = () => { throw new Error("proxies are not used here"); }; module.exports = { httpOverHttp: no, httpsOverHttp: no, httpOverHttps: no, httpsOverHttps: no };' >"$N2/tunnel/index.js"
    echo 'module.exports = { config() { return { parsed: {} }; } }; module.exports.default = module.exports;' >"$N2/dotenv/index.js"
    echo "== Node.js client 2.x (TypeScript) -> gateway -> simulator"
    NODE_PATH="$N2:/usr/share/nodejs" ALGORITHMIA_API="http://127.0.0.1:$GW_PORT" ALGORITHMIA_API_KEY="$LIMITED_KEY" ALGORITHMIA_MANAGE_KEY="$CLIENT_KEY" \
      node Tests/ClientCompat/node2.js data://.my/limited data://.my/other sim
  else
    echo "skip the Node.js 2.x client: set NODE2_CLIENT_DIR and TYPED_REST_CLIENT_DIR to checkouts of algorithmiaio/algorithmia-nodejs and microsoft/typed-rest-client (v1.8)"
  fi
  # The Ruby, R, C# and Java clients, when their source is given (RubyGems, CRAN, NuGet and Maven
  # Central are out of CI's reach), on the libraries Debian packages: httparty; httr, rjson;
  # Newtonsoft.Json (mono); gson, httpasyncclient, commons-io.
  if [ -n "${RUBY_CLIENT_DIR:-}" ]; then
    apt_install ruby ruby-httparty ruby-json
    echo "== Ruby client $(sed -n 's/.*VERSION *= *"\(.*\)".*/\1/p' "$RUBY_CLIENT_DIR/lib/algorithmia/version.rb") -> gateway -> simulator"
    ALGORITHMIA_API="http://127.0.0.1:$GW_PORT" ALGORITHMIA_API_KEY="$LIMITED_KEY" ALGORITHMIA_MANAGE_KEY="$CLIENT_KEY" \
      ruby Tests/ClientCompat/ruby.rb "$RUBY_CLIENT_DIR" data://.my/limited data://.my/other sim
  else
    echo "skip the Ruby client: set RUBY_CLIENT_DIR to a checkout of algorithmiaio/algorithmia-ruby"
  fi
  if [ -n "${R_CLIENT_DIR:-}" ]; then
    apt_install r-base-core r-cran-httr r-cran-rjson r-cran-readr r-cran-here r-cran-base64enc
    # A copy: the client finds its bundled certificates relative to its own folder, and fetches
    # new ones from GitHub when they are more than 24 weeks old, so the copy's are made new.
    cp -r "$R_CLIENT_DIR" "$WORK/r-client"
    touch "$WORK/r-client/R/crt/cacert.pem"
    echo "== R client $(sed -n 's/^Version: *//p' "$R_CLIENT_DIR/DESCRIPTION") -> gateway -> simulator"
    ALGORITHMIA_API="http://127.0.0.1:$GW_PORT" ALGORITHMIA_API_KEY="$LIMITED_KEY" ALGORITHMIA_MANAGE_KEY="$CLIENT_KEY" \
      Rscript Tests/ClientCompat/r.R "$WORK/r-client" data://.my/limited data://.my/other sim 2> >(grep -v -e 'No encoding supplied' -e 'is.null(input) || is.na(input)' -e "length(x) = 3 > 1" -e '^Warning message:$' >&2)
  else
    echo "skip the R client: set R_CLIENT_DIR to a checkout of algorithmiaio/algorithmia-r"
  fi
  if [ -n "${CSHARP_CLIENT_DIR:-}" ]; then
    apt_install mono-mcs mono-devel libnewtonsoft-json-cil-dev
    NEWTONSOFT=$(ls /usr/lib/mono/gac/Newtonsoft.Json/*/Newtonsoft.Json.dll | tail -1)
    mkdir -p "$WORK/csharp"
    cp "$NEWTONSOFT" "$WORK/csharp/"
    mcs -nowarn:1591,0618 -target:library -out:"$WORK/csharp/Algorithmia.dll" -r:"$NEWTONSOFT" -r:System.Net.Http.dll -r:System.Web.dll \
      "$CSHARP_CLIENT_DIR"/AlgorithmiaLibrary/Algorithmia/*.cs >/dev/null
    mcs -out:"$WORK/csharp/CSharpFlow.exe" -r:"$WORK/csharp/Algorithmia.dll" -r:"$NEWTONSOFT" Tests/ClientCompat/CSharpFlow.cs >/dev/null
    echo "== C# client -> gateway -> simulator"
    ALGORITHMIA_API="http://127.0.0.1:$GW_PORT" ALGORITHMIA_API_KEY="$LIMITED_KEY" \
      mono "$WORK/csharp/CSharpFlow.exe" data://.my/limited data://.my/other
  else
    echo "skip the C# client: set CSHARP_CLIENT_DIR to a checkout of algorithmiaio/algorithmia-c-sharp"
  fi
  if [ -n "${SWIFT_CLIENT_DIR:-}" ]; then
    # Written for iOS in Swift 3: on Linux it needs FoundationNetworking imported and Swift 4's
    # rules, under which its one `open let` must be `public let`; nothing else of it changes.
    mkdir -p "$WORK/swift"
    cp -r "$SWIFT_CLIENT_DIR/Algorithmia" "$WORK/swift/src"
    sed -i 's/open let path/public let path/' "$WORK/swift/src/Data/AlgoDataObject.swift"
    swiftc -swift-version 4 -parse-as-library -emit-library -module-name Algorithmia \
      -Xfrontend -import-module -Xfrontend FoundationNetworking -emit-module -emit-module-path "$WORK/swift/Algorithmia.swiftmodule" \
      $(find "$WORK/swift/src" -name '*.swift') -o "$WORK/swift/libAlgorithmia.so" 2>&1 | grep -E 'error' || true
    swiftc -swift-version 5 -I "$WORK/swift" -L "$WORK/swift" -lAlgorithmia -Xlinker -rpath -Xlinker "$WORK/swift" \
      Tests/ClientCompat/SwiftFlow.swift -o "$WORK/swift/SwiftFlow"
    echo "== Swift client -> gateway -> simulator"
    ALGORITHMIA_API="http://127.0.0.1:$GW_PORT" ALGORITHMIA_API_KEY="$LIMITED_KEY" \
      "$WORK/swift/SwiftFlow" data://.my/limited data://.my/other
  else
    echo "skip the Swift client: set SWIFT_CLIENT_DIR to a checkout of algorithmiaio/algorithmia-swift"
  fi
  if [ -n "${JAVA_CLIENT_DIR:-}" ]; then
    apt_install default-jdk-headless libgoogle-gson-java libhttpasyncclient-java libcommons-io-java libandroid-json-java liblombok-java
    JARS=$(printf '/usr/share/java/%s.jar:' gson httpasyncclient httpclient httpcore httpcore-nio commons-io commons-logging commons-codec com.android.json)
    # Debian's gson (2.10) refuses a TypeToken subclassed twice, as the client's is (built for
    # 2.8); its TypeToken is given the same type another way, the rest of its source as it is.
    cp -r "$JAVA_CLIENT_DIR/src/main/java" "$WORK/java-src"
    cat >"$WORK/java-src/com/algorithmia/algo/TypeToken.java" <<'JAVA'
package com.algorithmia.algo;
public class TypeToken<T> {
    private final java.lang.reflect.Type type;
    protected TypeToken() { type = ((java.lang.reflect.ParameterizedType) getClass().getGenericSuperclass()).getActualTypeArguments()[0]; }
    public java.lang.reflect.Type getType() { return type; }
}
JAVA
    sed -i 's/new TypeToken<Algorithm\(VersionsList\|BuildsList\)>() {/new com.google.gson.reflect.TypeToken<Algorithm\1>() {/' \
      "$WORK/java-src/com/algorithmia/algo/AlgorithmiaClient.java"
    mkdir -p "$WORK/java-classes"
    javac -nowarn -d "$WORK/java-classes" -cp "$JARS/usr/share/java/lombok.jar" -processorpath /usr/share/java/lombok.jar \
      $(find "$WORK/java-src" -name '*.java') 2>&1 | grep -v '^Note:' || true
    echo "== Java client $(sed -n 's/^version := "\(.*\)"/\1/p' "$JAVA_CLIENT_DIR/build.sbt") -> gateway -> simulator"
    ALGORITHMIA_API="http://127.0.0.1:$GW_PORT" ALGORITHMIA_API_KEY="$LIMITED_KEY" ALGORITHMIA_MANAGE_KEY="$CLIENT_KEY" \
      java -cp "$WORK/java-classes:$JARS" Tests/ClientCompat/JavaFlow.java data://.my/limited data://.my/other sim
  else
    echo "skip the Java client: set JAVA_CLIENT_DIR to a checkout of algorithmiaio/algorithmia-java"
  fi
  # A web page in headless Chromium, calling as Algorithmia's browser client does: the browser
  # enforces CORS (preflight, readable fields, refusals) as it would for a team's dashboard.
  echo "== a web page in headless Chromium -> gateway -> simulator"
  command -v chromium >/dev/null || {
    echo "installing: chromium"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  }
  curl -sf -H "Authorization: Simple $CLIENT_KEY" -H 'Content-Type: application/json' -d '{"name":"web"}' "http://127.0.0.1:$GW_PORT/v1/data/.my" >/dev/null
  curl -sf -X PUT -H "Authorization: Simple $CLIENT_KEY" -H 'Content-Type: text/plain' --data-binary 'hello from the data API' \
    "http://127.0.0.1:$GW_PORT/v1/data/.my/web/greeting.txt" >/dev/null
  python3 Tests/ClientCompat/browser/browser.py "$(command -v chromium)" "http://127.0.0.1:$GW_PORT" "$PAGE_PORT" "$PAGE_KEY" "$CLIENT_KEY" compat "$WORK" "${ALGORITHMIA_JS:-}"
  # The 20 kB answer went to the browser gzip-compressed (it asks for gzip), and the page read it whole.
  python3 - "$WORK/gateway.log" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if '"path":"/v1/web/algo/util/Echo/1.0.0"' in l and '"client":"web"' in l]
lines = [l for l in lines if l["bytes_in"] > 20000]
sent = [l["bytes_out"] for l in lines]
if len(sent) != 1 or not 0 < sent[0] < 1000:
    sys.exit("FAIL: the page's 20 kB answer should have been sent gzip-compressed; bytes sent: %r" % sent)
print("ok   the page's 20 kB answer crossed as %d bytes of gzip" % sent[0])
PY
  # The same gateway over HTTPS (server.tls), the client trusting its certificate through
  # REQUESTS_CA_BUNDLE as a team with an internal CA would.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=localhost \
    -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" -keyout "$WORK/tls.key" -out "$WORK/tls.crt" 2>/dev/null
  TLS_PORT=$(free_port)
  { echo "server: {host: 127.0.0.1, port: $TLS_PORT, tls: {cert_file: \"$WORK/tls.crt\", key_file: \"$WORK/tls.key\"}}"
    sed -e 1d -e "s#^cache: .*#cache: {path: \"$WORK/cache-tls.sqlite\"}#" "$WORK/gateway.yaml"; } >"$WORK/gateway-tls.yaml"
  CLIENTCOMPAT_UPSTREAM_KEY="$SIM_KEY" "$BIN" serve --config "$WORK/gateway-tls.yaml" >>"$WORK/gateway.log" 2>&1 &
  PIDS+=($!)
  wait_http "https://127.0.0.1:$TLS_PORT/healthz" --cacert "$WORK/tls.crt"
  REQUESTS_CA_BUNDLE="$WORK/tls.crt" ALGORITHMIA_API="https://127.0.0.1:$TLS_PORT" ALGORITHMIA_API_KEY="$CLIENT_KEY" "$VENV/bin/python" -c '
import Algorithmia
client = Algorithmia.client()
assert client.algo("demo/Hello/0.1.0").pipe("TLS").result == "Hello TLS"
client.file("data://.my/tls-check.txt").put("over https")
assert client.file("data://.my/tls-check.txt").getString() == "over https"
print("ok   over HTTPS, the certificate trusted through REQUESTS_CA_BUNDLE")'
  if grep -q -e "$SIM_KEY" -e "$CLIENT_KEY" -e "$LIMITED_KEY" -e "$PAGE_KEY" "$WORK/gateway.log"; then
    echo "FAIL: a key appears in the gateway's log" >&2; exit 1
  fi
  # the simulator must have seen only its own key, never the client's
  curl -s "http://127.0.0.1:$SIM_PORT/__sim/stats" | python3 -c '
import json, sys
stats = json.load(sys.stdin)
bad = [a for a in stats["authorizations"] if a != "Simple " + sys.argv[1]]
sys.exit("FAIL: upstream saw other Authorization values: %d" % len(bad) if bad else 0)' "$SIM_KEY"
  echo "gateway: upstream saw only the server key; no key in the gateway log"
fi

if "$BIN" --help 2>/dev/null | grep -E "^ +demo " >/dev/null; then
  # The README's first command ends in `algogate demo`, whose banner prints two lines for the
  # Python client: they are run here as printed (DemoTests runs its curl lines). The demo runs on
  # free ports, with its temporary directory, where the printed virtual environment goes, in $WORK.
  echo "== the demo's printed Python lines, run as printed"
  DEMO_PORT=$(free_port); DEMO_SIM_PORT=$(free_port)
  mkdir "$WORK/demo tmp"   # a space, as a TMPDIR may have: the printed lines must quote it
  sed -e "s#port: 8080#port: $DEMO_PORT#" -e "s#url: http://127.0.0.1:9000#url: http://127.0.0.1:$DEMO_SIM_PORT#" \
    -e "s#path: var/demo-cache.sqlite#path: $WORK/demo-cache.sqlite#" config/demo.yaml >"$WORK/demo.yaml"
  TMPDIR="$WORK/demo tmp" "$BIN" demo --config "$WORK/demo.yaml" --sim-port "$DEMO_SIM_PORT" >"$WORK/demo.log" 2>&1 &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$DEMO_PORT/healthz"
  grep -E '^  (python3 -m venv|ALGORITHMIA_API=)' "$WORK/demo.log" >"$WORK/demo-python.sh"
  [ "$(wc -l <"$WORK/demo-python.sh")" -eq 2 ] || { echo "FAIL: the demo's banner should print two Python lines:" >&2; cat "$WORK/demo.log" >&2; exit 1; }
  # Without this run's environment: as a user would paste them, in a new shell.
  answer=$(env -u VIRTUAL_ENV -u PYTHONPATH bash -e "$WORK/demo-python.sh" 2>&1 | tail -1)
  [ "$answer" = "Hello HAL" ] || { echo "FAIL: the demo's Python lines printed: $answer" >&2; cat "$WORK/demo-python.sh" >&2; exit 1; }
  echo "ok   the demo's Python lines: a virtual environment, the client installed, and its call answered: $answer"
fi
