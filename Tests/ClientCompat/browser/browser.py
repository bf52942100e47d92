"""A web page in headless Chromium calls the gateway as Algorithmia's browser client does, and
the browser, not a test of ours, decides what CORS lets through: its preflight, the fields the page
may read, a refusal's status and message. Serves page.html from two origins, the one a client's
cors_origins lists and one nobody lists, loads each in Chromium, and checks what the page saw.

Usage: browser.py CHROMIUM GATEWAY LISTED_PORT PAGE_KEY SERVER_KEY SERVER_CLIENT WORK [ALGORITHMIA_JS]
where PAGE_KEY is the key of client 'web' (scopes algo and data:read, a requests_per_minute
quota, cors_origins listing http://127.0.0.1:LISTED_PORT) and SERVER_KEY that of SERVER_CLIENT,
which lists no page; data://.my/web/greeting.txt holds "hello from the data API". Given
ALGORITHMIA_JS, a copy of Algorithmia's browser client (algorithmia.js), the page calls through it
too.
"""
import http.server
import json
import os
import queue
import subprocess
import sys
import threading
import urllib.parse

chromium, gateway, listed_port, page_key, server_key, server_client, work = sys.argv[1:8]
algorithmia_js = open(sys.argv[8], "rb").read() if len(sys.argv) > 8 and sys.argv[8] else None
page = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "page.html"), "rb").read()
results = queue.Queue()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body, kind = (algorithmia_js, "text/javascript") if self.path == "/algorithmia.js" and algorithmia_js else (page, "text/html; charset=utf-8")
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        results.put(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def serve(port):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def visit(port, case):
    """Loads the page from http://127.0.0.1:PORT and returns what it posted back."""
    query = urllib.parse.urlencode({"gateway": gateway, "case": case, "client": "yes" if algorithmia_js else "no",
                                    "keys": json.dumps({"page": page_key, "server": server_key})})
    browser = subprocess.Popen(
        [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--no-default-browser-check", "--user-data-dir=" + os.path.join(work, "chromium-" + case),
         "http://127.0.0.1:%d/page.html?%s" % (port, query)],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "chromium.log"), "ab"))
    try:
        return results.get(timeout=60)
    except queue.Empty:
        log = open(os.path.join(work, "chromium.log"), errors="replace").read().splitlines()
        sys.exit("FAIL: the page in Chromium posted nothing back within 60 s; Chromium's log ends:\n" + "\n".join(log[-30:]))
    finally:
        browser.terminate()
        try:
            browser.wait(10)
        except subprocess.TimeoutExpired:
            browser.kill()


def expect(label, actual, expected):
    if actual != expected:
        sys.exit("FAIL: %s: got %r, expected %r" % (label, actual, expected))


def envelope(reply):
    return json.loads(reply["body"])["error"]


serve(int(listed_port))
listed = visit(int(listed_port), "listed")
first, repeat = listed["first"], listed["repeat"]
expect("first call", (first["status"], json.loads(first["body"])["result"]), (200, "Hello browser"))
expect("first call's Content-Type", first["fields"]["Content-Type"], "application/json")
expect("first call's X-Cache", first["fields"]["X-Cache"], "MISS")
expect("first call's Cache-Status", first["fields"]["Cache-Status"], "algogate; fwd=miss; stored")
expect("first call's X-Request-ID readable", len(first["fields"]["X-Request-ID"] or ""), 36)
expect("first call's RateLimit readable", (first["fields"]["RateLimit"] or "").startswith('"minute";r='), True)
expect("repeat", (repeat["status"], json.loads(repeat["body"])["result"]), (200, "Hello browser"))
expect("repeat's X-Cache", repeat["fields"]["X-Cache"], "HIT")
expect("repeat's Cache-Status", (repeat["fields"]["Cache-Status"] or "").startswith("algogate; hit; ttl="), True)
expect("a 20 kB answer (gzip, which the browser asks for)", (listed["large"]["status"], listed["largeMatches"]), (200, True))
expect("a data file", (listed["data"]["status"], listed["data"]["body"]), (200, "hello from the data API"))
expect("a data file's type", listed["data"]["fields"]["Content-Type"], "application/octet-stream")
print("ok   a listed page: algorithm calls (a miss, then a hit), a gzip answer, a data file; the gateway's fields readable")
origin = "http://127.0.0.1:%s" % listed_port
expect("a key whose client lists no page", (listed["unlistedKey"]["status"], envelope(listed["unlistedKey"])),
       (403, {"error_type": "PermissionDenied",
              "message": "client '%s' may not be used from the web page at %s: its cors_origins do not list it" % (server_client, origin)}))
expect("an unknown key", (listed["unknownKey"]["status"], envelope(listed["unknownKey"])),
       (401, {"error_type": "AuthorizationError", "message": "authorization failed: unknown algogate key"}))
expect("a write without data:write", (listed["noScope"]["status"], envelope(listed["noScope"])),
       (403, {"error_type": "PermissionDenied", "message": "client 'web' lacks the 'data:write' scope for PUT data requests"}))
print("ok   a listed page: refusals (a key for no page, an unknown key, a missing scope) readable, status and message")

if algorithmia_js:
    expect("algorithmia.js, text", listed["client"]["result"], "Hello algorithmia.js")
    expect("algorithmia.js, JSON", listed["clientJSON"]["result"], {"a": [1, 2]})
    expect("algorithmia.js, a key for no page", listed["clientRefused"]["error"],
           {"error_type": "PermissionDenied",
            "message": "client '%s' may not be used from the web page at %s: its cors_origins do not list it" % (server_client, origin)})
    print("ok   Algorithmia's browser client (algorithmia.js) on the listed page: text, JSON, a refusal")
else:
    print("skip algorithmia.js: set ALGORITHMIA_JS to a copy of Algorithmia's browser client")

unlisted_server = serve(0)
unlisted = visit(unlisted_server.server_address[1], "unlisted")
# The preflight is refused, so the browser sends no call and shows the page no answer.
expect("a page nobody lists", (unlisted["unlistedOrigin"]["status"], unlisted["unlistedOrigin"]["body"]), (0, ""))
print("ok   a page no client lists: its preflight refused, the browser sends no call")
