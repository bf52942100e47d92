@testable import AlgoGate
import AlgoTestSupport
import Foundation
import Testing

@Suite struct DataPrefixTests {
    static let textWithURIs = "it holds a '//' after a space or line break: a text input that names a data location is checked as one path, where another URI reads as an empty segment; send one location alone, or each as a JSON string of its own"
    /// Sets up data://.my/team-a and data://.my/team-b with a file each, straight at the simulator.
    static func seed(_ h: GatewayHarness) async throws {
        let upstream = simple(Keys.upstream)
        for team in ["team-a", "team-b"] {
            _ = try await h.sim.send(.POST, "/v1/data/.my", headers: upstream, json: ["name": team])
            _ = try await h.sim.send(.PUT, "/v1/data/.my/\(team)/x.txt", headers: upstream, text: "\(team) secret")
        }
    }

    @Test func traversalAndEncodingTricksAreDenied() async throws {
        try await GatewayHarness.run { h in
            try await Self.seed(h)
            let forbidden = [
                "/v1/data/.my/team-b/x.txt",
                "/v1/data/.my/team-a/%2e%2e/team-b/x.txt",
                "/v1/data/.my/team-a/%2E%2E%2Fteam-b%2Fx.txt",
                "/v1/data/.my/team-a/..%2fteam-b/x.txt",
                "/v1/data/.my/team-a/..%5cteam-b%5cx.txt",
                "/v1/data/.my/team-a%2f..%2f..%2f.my%2fteam-b/x.txt",
                "/v1/data/.my//team-b/x.txt",
                "/v1/data/.my/./team-b/x.txt",
                "/v1/data/data://.my/team-b/x.txt",
                "/v1/data/DATA://.my/team-b/x.txt",
                "/v1/data/data:///.my/team-b/x.txt",
                "/v1/connector/data/.my/team-b/x.txt",
                "/v1/data/.my/team-a-evil/x.txt",
                "/v1/data/.my",
                "/v1/data/s3://bucket/team-b/k",
                "/v1/connector/s3/bucket/team-a/../team-b/k",
                "/v1/connector/S3/bucket//team-b/k",
            ]
            for path in forbidden {
                let reply = try await h.gateway.send(.GET, path, headers: simple(Keys.teamA))
                #expect(reply.status == 403, "\(path) -> \(reply.status) \(reply.text)")
                #expect(envelope(reply).type == "PermissionDenied", "\(path)")
            }
            let refused = [
                "/v1/data/.my/team-a/%252e%252e/team-b/x.txt",   // double encoding
                "/v1/data/.my/team-a/%00/x.txt",                  // NUL
                "/v1/data/.my/team-a/%7F/x.txt",                  // DEL, a control character too
                "/v1/data/.my/../../etc/passwd",                  // above the root
                "/v1/connector/ftp/host/x",                       // unknown connector
            ]
            for path in refused {
                let reply = try await h.gateway.send(.GET, path, headers: simple(Keys.teamA))
                #expect(reply.status == 400, "\(path) -> \(reply.status) \(reply.text)")
            }
            #expect(h.simulator.stats.snapshot.requestsByClass["data"] == 4)  // only the seeding calls
        }
    }

    @Test func pathsAreForwardedNormalised() async throws {
        try await GatewayHarness.run { h in
            try await Self.seed(h)
            for path in ["/v1/data/.my/team-a/x.txt", "/v1/data/.my/team-a/./sub/../x.txt", "/v1/data/.my//team-a///x.txt",
                         "/v1/data/data://.my/team-a/x.txt", "/v1/data/%2emy/team-a/x%2etxt", "/v1/data/.my/team-a/sub%2f..%2fx.txt"] {
                let reply = try await h.gateway.send(.GET, path, headers: simple(Keys.teamA))
                #expect(reply.status == 200, "\(path) -> \(reply.status) \(reply.text)")
                #expect(reply.text == "team-a secret", "\(path)")
            }
            let put = try await h.gateway.send(.PUT, "/v1/data/s3://bucket/team-a/k.bin", headers: simple(Keys.teamA), body: [1, 2, 3])
            #expect(put.text == #"{"result":"s3://bucket/team-a/k.bin"}"#)
            let viaConnector = try await h.gateway.send(.GET, "/v1/connector/s3/bucket/team-a/k.bin", headers: simple(Keys.teamA))
            #expect(viaConnector.bytes == [1, 2, 3])
        }
    }

    /// The Java client encodes a data path whole (`URLEncoder.encode`, since 2015): its paths are
    /// read, checked and forwarded as the locations they name, and refused outside the prefixes.
    /// `URLEncoder` writes a space as `+` and a `+` as `%2B`, so in such a path `+` is a space.
    @Test func pathsEncodedWholeAsTheJavaClientSendsThemAreCheckedAsTheirLocations() async throws {
        try await GatewayHarness.run { h in
            try await Self.seed(h)
            let read = try await h.gateway.send(.GET, "/v1/data/.my%2Fteam-a%2Fx.txt", headers: simple(Keys.teamA))
            #expect(read.status == 200)
            #expect(read.text == "team-a secret")
            let put = try await h.gateway.send(.PUT, "/v1/data/s3%3A%2F%2Fbucket%2Fteam-a%2Fjava+k%2B1.bin", headers: simple(Keys.teamA), body: [4, 5])
            #expect(put.text == #"{"result":"s3://bucket/team-a/java k+1.bin"}"#)
            #expect(try await h.sim.send(.GET, "/v1/connector/s3/bucket/team-a/java%20k+1.bin", headers: simple(Keys.upstream)).bytes == [4, 5])
            // Read back as the Java client names it, and as the Python client does (`+` is itself there).
            #expect(try await h.gateway.send(.GET, "/v1/data/s3%3A%2F%2Fbucket%2Fteam-a%2Fjava+k%2B1.bin", headers: simple(Keys.teamA)).bytes == [4, 5])
            #expect(try await h.gateway.send(.GET, "/v1/data/s3://bucket/team-a/java%20k+1.bin", headers: simple(Keys.teamA)).bytes == [4, 5])
            #expect(try await h.gateway.send(.GET, "/v1/data/s3://bucket/team-a/java+k+1.bin", headers: simple(Keys.teamA)).status == 404)
            // A space read from `+` is checked as any other: `..` and a space is refused.
            let dots = try await h.gateway.send(.GET, "/v1/data/.my%2Fteam-a%2F..+%2Fteam-b%2Fy.txt", headers: simple(Keys.teamA))
            #expect(dots.status == 400)
            #expect(envelope(dots).message == "data path segment '.. ' is refused: a name made only of dots and spaces")
            for (path, location) in [("/v1/data/.my%2Fteam-b%2Fy.txt", "data://.my/team-b/y.txt"),
                                     ("/v1/data/s3%3A%2F%2Fbucket%2Fteam-b%2Fk.bin", "s3://bucket/team-b/k.bin"),
                                     ("/v1/data/.my%2Fteam-a%2F..%2Fteam-b%2Fy.txt", "data://.my/team-b/y.txt")] {
                let refused = try await h.gateway.send(.GET, path, headers: simple(Keys.teamA))
                #expect(refused.status == 403, "\(path)")
                #expect(envelope(refused).message == "client 'team-a' may not access \(location): outside its data prefixes (data://.my/team-a/, s3://bucket/team-a/)", "\(path)")
            }
        }
    }

    @Test func directoryCreationIsCheckedForTheNewDirectory() async throws {
        try await GatewayHarness.run { h in
            let own = try await h.gateway.send(.POST, "/v1/data/.my", headers: simple(Keys.teamA), json: ["name": "team-a"])
            #expect(own.status == 200)
            #expect(own.text == #"{"result":"data://.my/team-a"}"#)
            let nested = try await h.gateway.send(.POST, "/v1/data/.my/team-a", headers: simple(Keys.teamA), json: ["name": "reports"])
            #expect(nested.text == #"{"result":"data://.my/team-a/reports"}"#)
            let other = try await h.gateway.send(.POST, "/v1/data/.my", headers: simple(Keys.teamA), json: ["name": "team-b"])
            #expect(other.status == 403)
            #expect(envelope(other).message == "client 'team-a' may not access data://.my/team-b: outside its data prefixes (data://.my/team-a/, s3://bucket/team-a/)")
            let sneaky = try await h.gateway.send(.POST, "/v1/data/.my/team-a", headers: simple(Keys.teamA), json: ["name": "../team-b"])
            #expect(sneaky.status == 400)
            let encoded = try await h.gateway.send(.POST, "/v1/data/.my/team-a", headers: simple(Keys.teamA), json: ["name": "%2e%2e"])
            #expect(encoded.status == 400)
            // A name is one segment, even where the path it spells stays one level down (found by
            // DataPathPropertyTests): a server may read such a name as a path of its own, and one
            // that starts with a separator as an absolute path (os.path.join(parent, "/team-b") is
            // "/team-b").
            let upstreamBefore = h.simulator.stats.snapshot.totalRequests
            for name in ["/team-b", "%2fteam-b", "team-b/", "x/../team-b", "x\\..\\y", "a%5cb", "", ".", "．．", "..;"] {
                let refused = try await h.gateway.send(.POST, "/v1/data/.my/team-a", headers: simple(Keys.teamA), json: ["name": name])
                #expect(refused.status == 400, "\(name)")
                #expect(envelope(refused).type == "InputError", "\(name)")
            }
            #expect(try await h.gateway.send(.POST, "/v1/data/.my/team-a", headers: simple(Keys.teamA), json: ["name": "x/../team-b"]).text
                    == #"{"error":{"error_type":"InputError","message":"invalid directory name: it must be a single path segment"}}"#)
            #expect(try await h.gateway.send(.POST, "/v1/data/.my/team-a", headers: simple(Keys.teamA), json: ["name": "..;"]).text
                    == #"{"error":{"error_type":"InputError","message":"directory name '..;' is refused: before its ';' it is only dots and spaces"}}"#)
            // A second key some server could read as the name (Jackson matching keys in any case,
            // one reading the first of two): the name is given once, as "name".
            for (other, name) in [("Name", "../team-b"), ("NAME", "x"), ("%6Eame", "x")] {
                let refused = try await h.gateway.send(.POST, "/v1/data/.my/team-a", headers: simple(Keys.teamA), json: [other: name, "name": "reports2"])
                #expect(refused.status == 400, "\(other)")
                #expect(refused.text == #"{"error":{"error_type":"InputError","message":"the body has a \"\#(other)\" key beside \"name\", which some servers read as the name: give the name once, as \"name\""}}"#)
            }
            #expect(h.simulator.stats.snapshot.totalRequests == upstreamBefore, "no refused name reached the upstream")
            let acl = try await h.gateway.send(.POST, "/v1/data/.my/team-a", headers: simple(Keys.teamA), json: ["name": "shared", "acl": ["read": ["algo://.my/*"]]])
            #expect(acl.text == #"{"result":"data://.my/team-a/shared"}"#)
            let spaced = try await h.gateway.send(.POST, "/v1/data/.my/team-a", headers: simple(Keys.teamA), json: ["name": "Q3 reports"])
            #expect(spaced.text == #"{"result":"data://.my/team-a/Q3 reports"}"#)
            let notJSON = try await h.gateway.send(.POST, "/v1/data/.my/team-a", headers: simple(Keys.teamA) + textType, text: "hello")
            #expect(notJSON.status == 400)
            // A create body is a small JSON object: one over 64 KiB is too large to be one.
            let beforeOversized = h.simulator.stats.snapshot.totalRequests
            let oversized = try await h.gateway.send(.POST, "/v1/data/.my/team-a", headers: simple(Keys.teamA),
                                                     json: ["name": "big", "padding": String(repeating: "x", count: 70_000)])
            #expect(oversized.status == 413)
            #expect(oversized.text == #"{"error":{"error_type":"RequestTooLarge","message":"request body is too large"}}"#)
            #expect(h.simulator.stats.snapshot.totalRequests == beforeOversized, "the oversized body never reached the upstream")
        }
    }

    /// A connector's label is compared as written: whether the upstream holds `dropbox+Work` and
    /// `dropbox+work` to be one account is not known, so a prefix with one covers only that one,
    /// on routes and in algorithm inputs alike; the type is read in any case.
    @Test func aConnectorLabelIsComparedAsWritten() async throws {
        let clients = """
            clients:
              - name: labelled
                key_sha256: "\(ClientRegistry.hash(of: Keys.teamA))"
                scopes: [algo, data:read, data:write]
                data_prefixes: ["dropbox+work://team-a/"]
            """
        try await GatewayHarness.run(clientsYAML: clients) { h in
            let put = try await h.gateway.send(.PUT, "/v1/connector/dropbox+work/team-a/x.txt", headers: simple(Keys.teamA) + textType, text: "hi")
            #expect(put.status == 200)
            let read = try await h.gateway.send(.GET, "/v1/connector/DROPBOX+work/team-a/x.txt", headers: simple(Keys.teamA))
            #expect(read.status == 200)
            #expect(read.text == "hi")
            let before = h.simulator.stats.snapshot.totalRequests
            let other = try await h.gateway.send(.GET, "/v1/connector/dropbox+Work/team-a/x.txt", headers: simple(Keys.teamA))
            #expect(other.status == 403)
            #expect(envelope(other).message == "client 'labelled' may not access dropbox+Work://team-a/x.txt: outside its data prefixes (dropbox+work://team-a/)")
            let input = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamA), json: ["f": "dropbox+Work://team-a/x.txt"])
            #expect(input.status == 403)
            #expect(envelope(input).message == "algorithm input references dropbox+Work://team-a/x.txt, outside client 'labelled' data prefixes (dropbox+work://team-a/)")
            #expect(h.simulator.stats.snapshot.totalRequests == before, "no refusal reached the upstream")
            let own = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamA), json: ["f": "Dropbox+work://team-a/x.txt"])
            #expect(own.status == 200)
            #expect(canonicalJSON(own.object["result"]) == #"{"f":"Dropbox+work://team-a/x.txt"}"#)
        }
    }

    @Test func dataURIsInsideAlgorithmInputsAreChecked() async throws {
        try await GatewayHarness.run { h in
            let nested = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamA),
                                                  json: ["files": ["data://.my/team-a/ok.csv", ["deep": "data://.my/team-b/secret.csv"]]])
            #expect(nested.status == 403)
            #expect(envelope(nested).message == "algorithm input references data://.my/team-b/secret.csv, outside client 'team-a' data prefixes (data://.my/team-a/, s3://bucket/team-a/)")
            let text = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamA) + textType, text: "dropbox://elsewhere/x")
            #expect(text.status == 403)
            let traversal = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamA), json: ["f": "data://.my/team-a/../team-b/x"])
            #expect(traversal.status == 403)
            let ambiguous = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamA), json: ["f": "data://.my/team-a/..;/team-b/x"])
            #expect(ambiguous.status == 403)
            #expect(envelope(ambiguous).message == "algorithm input holds a data URI that cannot be checked safely: data path segment '..;' is refused: before its ';' it is only dots and spaces")
            let allowed = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamA), json: ["f": "data://.my/team-a/ok.csv", "n": 1])
            #expect(allowed.status == 200)
            #expect(canonicalJSON(allowed.object["result"]) == #"{"f":"data://.my/team-a/ok.csv","n":1}"#)
            // A path in the .my pseudonym without its scheme is one too: the official clients read
            // `.my/team-b/x` and `/.my/team-b/x` as data://.my/team-b/x, so an algorithm handed one reads it.
            for (input, named) in [(".my/team-b/secret.csv", "data://.my/team-b/secret.csv"), ("/.my/team-b/secret.csv", "data://.my/team-b/secret.csv"),
                                   ("./.my/team-b/x", "data://.my/team-b/x"), ("%2emy/team-b/x", "data://.my/team-b/x"),
                                   (" .my/team-a/../team-b/x", "data://.my/team-b/x"), (".my", "data://.my"), (".MY/team-a/x", "data://.MY/team-a/x"),
                                   // read as the data API reads `/v1/data/{text}`: dot segments resolved, decoded once, a scheme found then
                                   ("x/../.my/team-b/x", "data://.my/team-b/x"), ("\u{FF0E}my/team-b/x", "data://\u{FF0E}my/team-b/x"),
                                   (".my;v=1/team-b/x", "data://.my;v=1/team-b/x")] {
                let json = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamA), json: ["f": ["g": input]])
                #expect(json.status == 403, "\(input)")
                #expect(envelope(json).message == "algorithm input references \(named), outside client 'team-a' data prefixes (data://.my/team-a/, s3://bucket/team-a/)", "\(input)")
                let text = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamA) + textType, text: input)
                #expect(text.status == 403, "\(input)")
            }
            // A text the gateway cannot read one way only, that a laxer reader lands in .my, is refused.
            for (input, reason) in [("..;/.my/team-b/x", "data path segment '..;' is refused: before its ';' it is only dots and spaces"),
                                    (".my/%2574eam-b/x", "data path is percent-encoded twice"),
                                    ("a/../../.my/team-b/x", "data path climbs above its root with '..'"),
                                    ("s3:%2f%2fbucket/team-b/k", "it holds an encoded separator (%2F or %5C), which some servers decode before splitting the path and others after"),
                                    ("data://.my/team-b\\..\\team-a/x", "it holds a '\\', which some servers read as a separator and others as a character"),
                                    ("s3://bucket//team-a/x", "it holds an empty segment ('//'), which some stores keep (s3://bucket//team-a/x is the key /team-a/x) and others fold"),
                                    ("//.my/team-a/x", "it holds an empty segment ('//'), which some stores keep (s3://bucket//team-a/x is the key /team-a/x) and others fold"),
                                    // a sentence or a list naming URIs, even team-a's own: checked as one path
                                    ("see data://.my/team-a/x", Self.textWithURIs), ("data://.my/team-a/x\ndata://.my/team-a/y", Self.textWithURIs),
                                    ("s3://bucket/team-a/x and s3://bucket/team-b/y", Self.textWithURIs)] {
                let json = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamA), json: ["f": input])
                #expect(json.status == 403, "\(input)")
                #expect(envelope(json).message == "algorithm input holds a data URI that cannot be checked safely: \(reason)", "\(input)")
            }
            // Inside the prefixes, or text that only looks a little like a path, goes on.
            for input in [".my/team-a/ok.csv", "/.my/team-a/ok.csv", "... and so on", ". my/team-b", ".myfile", "%20", "/etc/passwd",
                          "100% sure. Yes.", "ratio 3:2.", "see https://example.com/a.b/../c", "x/../.my/team-a/ok.csv", "a/../../b.txt"] {
                let reply = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamA) + textType, text: input)
                #expect(reply.status == 200, "\(input)")
                #expect(reply.object["result"] as? String == input)
            }
            // team-b has no data prefixes: its inputs are not restricted
            let unrestricted = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamB) + textType, text: "data://.my/team-a/x")
            #expect(unrestricted.status == 200)
            #expect(h.simulator.stats.snapshot.algoCalls == ["util/Echo/1.0.0": 14])
        }
    }

    /// Characters that Swift's `Character` joins to a neighbouring `/` (a combining mark after
    /// it, a prepended concatenation mark such as U+0600 before it) hide that slash from any
    /// check made on characters, where every other reader (the Python client, urllib3 resolving
    /// dot segments, the data API) sees a separator. Each input and path here reads as
    /// `.my/team-b/f` to them, so each is refused; none reaches the upstream.
    @Test func charactersJoinedToASlashHideNoSeparator() async throws {
        try await GatewayHarness.run { h in
            for input in ["data://.my/team-a/x\u{600}/../../team-b/f",      // before the slash: read as one segment `x؀/..`
                          "data://\u{301}/../.my/team-b/f",                // after the `://`: read as no URI at all
                          "DATA://.my/team-a/\u{301}/../../team-b/f",
                          "/\u{301}/../.my/team-b/f",                      // a bare path whose leading slash is hidden
                          "\u{600}/../.my/team-b/f",
                          "x/../.my/team-b/f"] {                           // a bare path that climbs into .my
                let json = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamA), json: ["f": input])
                #expect(json.status == 403, "\(input.unicodeScalars.map(\.value))")
                #expect(envelope(json).message == "algorithm input references data://.my/team-b/f, outside client 'team-a' data prefixes (data://.my/team-a/, s3://bucket/team-a/)",
                        "\(input.unicodeScalars.map(\.value))")
                let text = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamA) + textType, text: input)
                #expect(text.status == 403, "\(input.unicodeScalars.map(\.value))")
            }
            for (path, status, message) in [
                ("/v1/data/.my/team-a/x%D8%80/../../team-b/f", 403, "client 'team-a' may not access data://.my/team-b/f: outside its data prefixes (data://.my/team-a/, s3://bucket/team-a/)"),
                ("/v1/connector/s3/bucket/team-a/x%D8%80/../../team-b/f", 403, "client 'team-a' may not access s3://bucket/team-b/f: outside its data prefixes (data://.my/team-a/, s3://bucket/team-a/)"),
                // A backslash joined to a combining mark after it is still a separator.
                ("/v1/data/.my/team-a/..%5C%CC%81x", 403, "client 'team-a' may not access data://.my/\u{301}x: outside its data prefixes (data://.my/team-a/, s3://bucket/team-a/)"),
                // A fullwidth slash joined to its neighbour still folds to a separator (NFKC).
                ("/v1/data/.my/team-a/x%D8%80%EF%BC%8F..", 400, "data path segment 'x\u{600}\u{FF0F}..' is refused: it holds a character that some servers read as '/'"),
            ] {
                let reply = try await h.gateway.send(.GET, path, headers: simple(Keys.teamA))
                #expect(reply.status == status, "\(path)")
                #expect(envelope(reply).message == message, "\(path)")
            }
            let name = try await h.gateway.send(.POST, "/v1/data/.my/team-a", headers: simple(Keys.teamA), json: ["name": "x\u{600}/.."])
            #expect(name.status == 400)
            // Raw in the request target, such bytes do not get that far.
            var raw = KeepAliveClient(port: h.gatewayPort)
            let joined = try await raw.exchange("GET /v1/data/.my/team-a/x\u{600}/../../team-b/f HTTP/1.1\r\nHost: gateway\r\nAuthorization: Simple \(Keys.teamA)\r\n\r\n")
            #expect(joined?.statusLine == "HTTP/1.1 400 Bad Request", "\(joined?.statusLine ?? "no answer")")
            #expect(joined?.body.contains("the request line is not valid HTTP/1.1") == true, "\(joined?.body ?? "")")
            await raw.close()
            #expect(h.simulator.stats.snapshot.totalRequests == 0, "nothing reached the upstream")
            // Such characters inside a name are only characters: forwarded as the bytes they are.
            let plain = try await h.gateway.send(.POST, "/v1/algo/util/Echo", headers: simple(Keys.teamA), json: ["f": "data://.my/team-a/e\u{301}/x\u{600}"])
            #expect(plain.status == 200)
            #expect((plain.object["result"] as? [String: String])?["f"] == "data://.my/team-a/e\u{301}/x\u{600}")
        }
    }

    /// A prefix written precomposed (`café`) holds only paths spelt with the same bytes: the
    /// upstream stores names as bytes, so the decomposed spelling (`cafe` and U+0301), equal as
    /// Swift strings, names another directory.
    @Test func prefixesCompareBytesNotCanonicalEquivalence() throws {
        let prefix = try DataURI.parse(uri: "data://.my/caf\u{E9}/")
        #expect(try DataURI.parse(uri: "data://.my/caf\u{E9}/x").isWithin(prefix))
        #expect(try !DataURI.parse(uri: "data://.my/cafe\u{301}/x").isWithin(prefix))
        #expect(try DataURI.parse(uri: "data://.my/cafe\u{301}/x") != DataURI.parse(uri: "data://.my/caf\u{E9}/x"))
    }

    /// What the gateway's JSON parser refuses, the upstream's may read: Python's reads `NaN`, and
    /// nesting deeper than Foundation's limit. For a client with data prefixes such an input would
    /// carry its data URIs past the check, so it is refused; other clients' inputs go on as before.
    @Test func inputsTheGatewayCannotParseAreRefusedForClientsWithDataPrefixes() async throws {
        try await GatewayHarness.run { h in
            let expected = "algorithm input is not JSON the gateway can read (invalid, or nested too deeply), so its data URIs cannot be checked against client 'team-a' data prefixes"
            let nan = #"{"threshold": NaN, "file": "data://.my/team-b/secret.csv"}"#
            let deep = String(repeating: "[", count: 100_000) + #""data://.my/team-b/secret.csv""# + String(repeating: "]", count: 100_000)
            for input in [nan, deep] {
                let refused = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamA) + jsonType, text: input)
                #expect(refused.status == 400)
                #expect(envelope(refused).message == expected)
                #expect(envelope(refused).type == "InputError")
            }
            #expect(h.simulator.stats.snapshot.algoCalls.isEmpty)
            // team-b has no data prefixes: the upstream judges its input (the simulator's parser refuses it too).
            let unchecked = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamB) + jsonType, text: nan)
            #expect(unchecked.status == 400)
            #expect(envelope(unchecked).message == "input is not valid JSON")
        }
    }

    /// Every string written in the input is checked, not only those a parser keeps: a duplicated
    /// key's first value is what some parsers upstream would read.
    /// Algorithmia documents three input types. An input of another type (or none) could be read
    /// as text or JSON by the upstream or the algorithm, so for a client with data prefixes it is
    /// refused; other clients' inputs go on for the upstream to judge.
    @Test func inputsOfOtherMediaTypesAreRefusedForClientsWithDataPrefixes() async throws {
        try await GatewayHarness.run { h in
            let input = "data://.my/team-b/secret.csv"
            for (type, named) in [("text/csv", "of type text/csv"), ("application/x-www-form-urlencoded", "of type application/x-www-form-urlencoded"),
                                  ("Application/XML; charset=utf-8", "of type application/xml")] {
                let refused = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamA) + [("Content-Type", type)], text: input)
                #expect(refused.status == 415)
                #expect(envelope(refused).message == "algorithm input \(named) cannot be checked against client 'team-a' data prefixes: send application/json, text/plain or application/octet-stream")
                #expect(envelope(refused).type == "InputError")
            }
            let untyped = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamA), body: Array(input.utf8))
            #expect(untyped.status == 415)
            #expect(envelope(untyped).message == "algorithm input without a Content-Type cannot be checked against client 'team-a' data prefixes: send application/json, text/plain or application/octet-stream")
            #expect(h.simulator.stats.snapshot.algoCalls.isEmpty)
            // An empty input names no file, whatever its type: it goes on for the upstream to judge.
            let empty = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamA), body: [])
            #expect(empty.status == 200)
            #expect(h.simulator.stats.snapshot.algoCalls == ["util/Echo/1.0.0": 1])
            // Bytes go on as bytes.
            let binary = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamA) + [("Content-Type", "application/octet-stream")], body: [0, 1, 2])
            #expect(binary.status == 200)
            // Text and JSON in another charset than UTF-8: read that way upstream, bytes this scan
            // reads as UTF-8 could name a file.
            let utf16 = Array("data://.my/team-b/secret.csv".utf16).flatMap { [UInt8($0 >> 8), UInt8($0 & 0xff)] }
            for type in ["text/plain; charset=utf-16be", "application/json;charset=\"UTF-16BE\"", "text/plain; format=flowed; Charset=latin1",
                         "text/plain; charset=utf-8; charset=utf-16be"] {
                let refused = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamA) + [("Content-Type", type)], body: utf16)
                #expect(refused.status == 415, "\(type)")
                #expect(envelope(refused).type == "InputError")
                let charset = type.hasSuffix("charset=utf-8; charset=utf-16be") ? "utf-8, utf-16be"
                    : type.split(separator: "=").last!.replacingOccurrences(of: "\"", with: "").lowercased()
                #expect(envelope(refused).message == "algorithm input in charset \(charset) cannot be checked against client 'team-a' data prefixes: send it in UTF-8")
            }
            for type in ["text/plain; charset=UTF-8", "text/plain; charset=\"utf-8\"", "application/json; charset=us-ascii"] {
                let accepted = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamA) + [("Content-Type", type)], text: #""x""#)
                #expect(accepted.status == 200, "\(type)")
            }
            // `application/text`, the text type Algorithmia's API reference names, is text: checked
            // as such, and answered as text.
            let documented = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamA) + [("Content-Type", "application/text")],
                                                      text: "data://.my/team-b/secret.csv")
            #expect(documented.status == 403)
            #expect(envelope(documented).type == "PermissionDenied")
            let own = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamA) + [("Content-Type", "Application/Text; charset=utf-8")],
                                               text: "data://.my/team-a/ok.csv")
            #expect(own.status == 200)
            #expect(own.object["result"] as? String == "data://.my/team-a/ok.csv")
            #expect((own.object["metadata"] as? [String: Any])?["content_type"] as? String == "text")
            // ... but bytes that are UTF-8 text naming a file are checked as a text input: an
            // algorithm that decodes its bytes reads the path in them.
            for text in ["data://.my/team-b/secret.csv", " s3://other-bucket/k\n", ".my/team-b/x", "/.my/team-b/x"] {
                let named = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamA) + [("Content-Type", "application/octet-stream")],
                                                     body: Array(text.utf8))
                #expect(named.status == 403, "\(text)")
                #expect(envelope(named).type == "PermissionDenied", "\(text)")
            }
            let inside = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamA) + [("Content-Type", "application/octet-stream")],
                                                  body: Array("data://.my/team-a/ok.csv".utf8) )
            #expect(inside.status == 200)
            let invalidUTF8 = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamA) + [("Content-Type", "application/octet-stream")],
                                                       body: Array("data://.my/team-b/x".utf8) + [0xff])
            #expect(invalidUTF8.status == 200, "not text: bytes")
            // team-b has no data prefixes: the upstream judges its input.
            let unchecked = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamB) + [("Content-Type", "text/csv")], text: input)
            #expect(unchecked.status == 415)
            #expect(envelope(unchecked).message == "unsupported Content-Type text/csv: use application/json, text/plain or application/octet-stream")
            // (The simulator counts the eight calls that reached it: the empty one, two in UTF-8 (the
            // two text/plain ones are one cache entry), the application/text one, the three binary
            // ones and team-b's.)
            #expect(h.simulator.stats.snapshot.algoCalls == ["util/Echo/1.0.0": 8])
        }
    }

    @Test func everyStringOfAJSONInputIsCheckedDuplicatedKeysAndEscapesIncluded() async throws {
        try await GatewayHarness.run { h in
            let inputs = [
                #"{"file": "data://.my/team-b/secret.csv", "file": "data://.my/team-a/ok.csv"}"#,
                #"{"file": "data\u003a//.my/team-b/secret.csv"}"#,
                #"{"data:\/\/.my\/team-b\/secret.csv": 1}"#,
            ]
            for input in inputs {
                let refused = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamA) + jsonType, text: input)
                #expect(refused.status == 403, "\(input)")
                #expect(envelope(refused).message == "algorithm input references data://.my/team-b/secret.csv, outside client 'team-a' data prefixes (data://.my/team-a/, s3://bucket/team-a/)")
            }
            let utf16 = Array(#"{"file": "data://.my/team-b/secret.csv"}"#.utf16).flatMap { [UInt8($0 & 0xff), UInt8($0 >> 8)] }
            let refused = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamA) + jsonType, body: utf16)
            #expect(refused.status == 400, "UTF-16 JSON, which this scan cannot read, is refused")
            #expect(h.simulator.stats.snapshot.algoCalls.isEmpty)
        }
    }

    @Test func theStringScanReadsEveryTokenInOrderWithEscapesDecoded() {
        let document = #"{"a\"b": ["x\\y", "\u00e9\ud83d\ude00", "tab\there"], "n": 1.5e3, "t": true}"#
        #expect(DataReferences.strings(inJSON: Array(document.utf8)) == ["a\"b", "x\\y", "é😀", "tab\there", "n", "t"])
        #expect(DataReferences.strings(inJSON: Array(#"["unterminated"#.utf8)) == nil)
        #expect(DataReferences.strings(inJSON: [0x22, 0x00, 0x22]) == nil)
    }

    /// 5,000 generated JSON documents (nested arrays and objects, duplicated keys, every escape
    /// JSON has, surrogate pairs written as `\u` escapes, whitespace anywhere it may go): the
    /// scan finds every string each one holds, keys included, as Foundation's parser reads it.
    @Test func theStringScanFindsEveryStringOfGeneratedDocuments() throws {
        var random = SplitMix64(seed: 2026_12_04)
        let pieces = ["data://.my/team-b/x", "s3://bucket/k", "a", "é", "😀", "\"", "\\", "/", "\n", "\t", "\u{01}", "\u{7f}", " ", "{", "[", ":", ","]
        func space() -> String { ["", " ", "\n", "\t", "\r\n  "].randomElement(using: &random)! }
        func encode(_ text: String) -> String {
            var out = "\""
            for scalar in text.unicodeScalars {
                let escapes: [String]
                switch scalar {
                case "\"": escapes = [#"\""#, #"\u0022"#]
                case "\\": escapes = [#"\\"#, #"\u005c"#, #"\u005C"#]
                case "/": escapes = ["/", #"\/"#, #"\u002f"#]
                case "\n": escapes = [#"\n"#, #"\u000a"#]
                case "\t": escapes = [#"\t"#, #"\u0009"#]
                case _ where scalar.value < 0x20: escapes = [String(format: #"\u%04x"#, scalar.value)]
                default:
                    let units = Array(String(scalar).utf16).map { String(format: #"\u%04X"#, $0) }.joined()
                    escapes = [String(scalar), String(scalar), units]
                }
                out += escapes.randomElement(using: &random)!
            }
            return out + "\""
        }
        var strings: [String] = []
        func value(depth: Int) -> String {
            switch Int.random(in: 0..<(depth > 3 ? 3 : 6), using: &random) {
            case 0: return ["1", "-0.5e3", "true", "false", "null"].randomElement(using: &random)!
            case 1, 2:
                let text = (0..<Int.random(in: 0...4, using: &random)).map { _ in pieces.randomElement(using: &random)! }.joined()
                strings.append(text)
                return encode(text)
            case 3:
                return "[" + space() + (0..<Int.random(in: 0...3, using: &random)).map { _ in value(depth: depth + 1) }.joined(separator: space() + "," + space()) + space() + "]"
            default:
                let key = Bool.random(using: &random) ? "k" : pieces.randomElement(using: &random)!  // "k" repeats: duplicated keys
                let members = (0..<Int.random(in: 0...3, using: &random)).map { _ -> String in
                    strings.append(key)
                    return encode(key) + space() + ":" + space() + value(depth: depth + 1)
                }
                return "{" + space() + members.joined(separator: "," + space()) + space() + "}"
            }
        }
        for _ in 0..<5_000 {
            strings.removeAll()
            let document = space() + value(depth: 0) + space()
            #expect((try? JSONSerialization.jsonObject(with: Data(document.utf8), options: [.fragmentsAllowed])) != nil, "\(document)")
            let found = DataReferences.strings(inJSON: Array(document.utf8))
            #expect(found == strings, "\(document)")
        }
    }

    /// With two Content-Type fields, the gateway and the upstream could read an input as two different things.
    @Test func anAlgorithmInputWithTwoContentTypesIsRefused() async throws {
        try await GatewayHarness.run { h in
            let refused = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamA) + textType + jsonType,
                                                   text: #"{"file": "data://.my/team-b/secret.csv"}"#)
            #expect(refused.status == 400)
            #expect(envelope(refused).message == "send one Content-Type: an algorithm input is application/json, text/plain or application/octet-stream")
            #expect(h.simulator.stats.snapshot.algoCalls.isEmpty)
        }
    }

    @Test func normalisationFoldsEveryEquivalentSpelling() throws {
        let base = try DataURI.parse(uri: "data://.my/team-a/")
        #expect(base.description == "data://.my/team-a")
        #expect(try DataURI.parse(dataPath: "./.my/team-a/b/../c").description == "data://.my/team-a/c")
        #expect(try DataURI.parse(dataPath: ".my\\team-a\\c").isWithin(base))
        #expect(try !DataURI.parse(dataPath: ".my/team-ab").isWithin(base))
        #expect(try DataURI.parse(connectorPath: "Dropbox+Work/a b/c").upstreamPath(connectorForm: true) == "/v1/connector/dropbox+Work/a%20b/c")
        // A label is compared as written: `dropbox+Work` and `dropbox+work` may be two accounts.
        let labelled = try DataURI.parse(uri: "dropbox+work://team-a/")
        #expect(try DataURI.parse(uri: "DROPBOX+work://team-a/x").isWithin(labelled))
        #expect(try !DataURI.parse(uri: "dropbox+Work://team-a/x").isWithin(labelled))
        #expect(try !DataURI.parse(uri: "dropbox://team-a/x").isWithin(labelled))
        #expect(try DataURI.parse(dataPath: "s3://b/k").upstreamPath(connectorForm: false) == "/v1/data/s3://b/k")
        #expect(throws: GatewayError.self) { try DataURI.parse(dataPath: "a/%252e") }
        #expect(throws: GatewayError.self) { try DataURI.parse(dataPath: "../x") }
    }

    /// A refusal names the client's prefixes as directories, the first four and how many more.
    @Test func aRefusalNamesTheClientsPrefixes() throws {
        let prefixes = try ["data://.my/a/", "s3://b/c", "data://", "gs://g/h/", "dropbox://d/", "azureblob://e/"].map(DataURI.parse(uri:))
        #expect(DataURI.naming(Array(prefixes.prefix(1))) == "(data://.my/a/)")
        #expect(DataURI.naming(Array(prefixes.prefix(4))) == "(data://.my/a/, s3://b/c/, data://, gs://g/h/)")
        #expect(DataURI.naming(prefixes) == "(data://.my/a/, s3://b/c/, data://, gs://g/h/, and 2 more)")
    }

    /// 20,000 generated paths built from names and every trick the normalisation knows of. For each one it
    /// accepts inside the prefix, the forwarded path parses back to the same location, and no
    /// laxer reading of it (path parameters, decoding first or twice, Windows trimming, Unicode
    /// compatibility folding) lands outside the prefix.
    @Test func noReadingOfAForwardedPathLeavesTheCheckedPrefix() throws {
        let prefix = try DataURI.parse(uri: "data://.my/team-a/")
        let tokens = ["team-a", "team-b", ".my", "x", "b", "report.csv", "a b", "data", ".", "..", "...", ".. ", ". .", "%2e", "%2E%2e", "%2e.", "%2f", "%2F",
                      "%5c", "\\", "/", "//", ";", "..;", ";x", "a;b=c", "%3b", "%3B", "%25", "%252e", "%20", " ", "é",
                      "%C3%A9", "+", "a+b", "%2B", "\u{FF0E}", "\u{FF0E}\u{FF0E}", "\u{FF0F}", "\u{FF3C}", "\u{FF05}2e", "\u{FF05}2f", "%EF%BC%8F",
                      "%EF%BC%8E%EF%BC%8E", "\u{2024}\u{2024}", "~", "%00", "%",
                      // joined to a neighbouring `/` as one `Character`: a combining mark after it, a prepended mark before it, a joiner
                      "\u{301}", "x\u{600}", "\u{600}", "%CC%81", "x%D8%80", "\u{200D}", "..\u{600}", "..\\\u{301}x", "%5C%CC%81"]
        var random = SplitMix64(seed: 2026_11_24)
        var refused = 0, inside = 0
        for _ in 0..<20_000 {
            var path = Int.random(in: 0..<5, using: &random) == 0 ? "" : ".my/team-a/"
            for _ in 0..<Int.random(in: 1...6, using: &random) {
                path += tokens.randomElement(using: &random)!
                if Int.random(in: 0..<10, using: &random) < 7 { path += "/" }
            }
            guard let location = try? DataURI.parse(dataPath: Substring(path)) else { refused += 1; continue }
            guard location.isWithin(prefix) else { continue }
            inside += 1
            let forwarded = String(location.upstreamPath(connectorForm: false).dropFirst("/v1/data/".count))
            #expect(try DataURI.parse(dataPath: Substring(forwarded)) == location, "\(path) forwarded as \(forwarded)")
            for reading in LaxReading.allCases {
                guard let segments = reading.resolve(forwarded) else { continue }  // climbs above the root: an error there
                #expect(segments.starts(with: prefix.segments), "\(reading) reads \(path), forwarded as \(forwarded), as \(segments)")
            }
        }
        #expect(inside > 2_000 && refused > 2_000, "the generator reaches both sides: \(inside) inside, \(refused) refused")
    }

    @Test func ambiguousSegmentsAreRefusedWithTheirReason() async throws {
        try await GatewayHarness.run { h in
            let cases = [
                ("/v1/data/.my/team-a/..%20/team-b/x.txt", "data path segment '.. ' is refused: a name made only of dots and spaces"),
                ("/v1/data/.my/team-a/..;/team-b/x.txt", "data path segment '..;' is refused: before its ';' it is only dots and spaces"),
                ("/v1/data/.my/team-a/%EF%BC%8E%EF%BC%8E/team-b/x.txt", "data path segment '\u{FF0E}\u{FF0E}' is refused: a name made only of dots and spaces"),
                ("/v1/data/.my/team-a/..%EF%BC%8F..%EF%BC%8Fteam-b", "data path segment '..\u{FF0F}..\u{FF0F}team-b' is refused: it holds a character that some servers read as '/'"),
                // A fullwidth semicolon folds to the one that starts a path parameter (Tomcat's `..;`).
                ("/v1/data/.my/team-a/..%EF%BC%9Bx/team-b", "data path segment '..\u{FF1B}x' is refused: it holds a character that some servers read as ';'"),
            ]
            for (path, message) in cases {
                let reply = try await h.gateway.send(.GET, path, headers: simple(Keys.teamA))
                #expect(reply.status == 400, "\(path) -> \(reply.status) \(reply.text)")
                #expect(envelope(reply).message == message)
            }
            #expect(h.simulator.stats.snapshot.requestsByClass["data"] == nil, "nothing reached the upstream")
            #expect(try DataURI.parse(dataPath: ".my/team-a/a;b").upstreamPath(connectorForm: false) == "/v1/data/.my/team-a/a%3Bb")
        }
    }
}

/// Ways a server might read a path less strictly than algogate does.
enum LaxReading: CaseIterable {
    case pathParameters      // RFC 3986 §3.3: `;params` cut from each raw segment, then decoded (Tomcat's `..;`)
    case decodeFirst         // the whole path decoded, then split, backslash as slash
    case decodeTwice         // decoded twice
    case windowsTrimming     // trailing dots and spaces trimmed from each segment
    case unicodeFolding      // NFKC after decoding (fullwidth dots and slashes)
    case unicodeFoldingFirst // NFKC before decoding (fullwidth percent signs)

    /// Read as every server reads a path: in Unicode scalars (or bytes), never in Swift's
    /// `Character`s, which join a `/` to a combining mark after it or a prepended mark before it.
    func resolve(_ raw: String) -> [String]? {
        let decode = { (text: String) in text.removingPercentEncoding ?? text }
        let split = { (text: String) in text.unicodeScalars.split(whereSeparator: { $0 == "/" || $0 == "\\" }).map { String(String.UnicodeScalarView($0)) } }
        let parts: [String]
        switch self {
        case .pathParameters: parts = raw.scalarSplit("/").map { decode($0.scalarPrefix { $0 != ";" }) }
        case .decodeFirst: parts = split(decode(raw))
        case .decodeTwice: parts = split(decode(decode(raw)))
        case .windowsTrimming:
            parts = split(decode(raw)).map { part in
                let trimmed = String(part.reversed().drop { $0 == "." || $0 == " " }.reversed())
                // A name of dots and spaces with two dots or more is read as `..` (`.. `, `. .`).
                return trimmed.isEmpty && part.count(where: { $0 == "." }) >= 2 ? ".." : trimmed
            }
        case .unicodeFolding: parts = split(decode(raw).precomposedStringWithCompatibilityMapping).map { $0.scalarPrefix { $0 != ";" } }
        case .unicodeFoldingFirst: parts = split(decode(raw.precomposedStringWithCompatibilityMapping))
        }
        var resolved: [String] = []
        for part in parts {
            switch Array(part.utf8) {
            case [], Array(".".utf8): continue
            case Array("..".utf8): if resolved.popLast() == nil { return nil }
            default: resolved.append(part)
            }
        }
        return resolved
    }
}

extension String {
    /// Split at every `separator` scalar, empty pieces left out: how servers split paths.
    func scalarSplit(_ separator: Unicode.Scalar) -> [String] {
        unicodeScalars.split(separator: separator).map { String(String.UnicodeScalarView($0)) }
    }

    /// The scalars before the first that fails `keep`.
    func scalarPrefix(while keep: (Unicode.Scalar) -> Bool) -> String {
        String(String.UnicodeScalarView(unicodeScalars.prefix(while: keep)))
    }

}

/// A small seeded generator (SplitMix64), so the generated paths are the same on every run.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }

    /// A property test's seed and number of cases: `ALGOGATE_<NAME>_SEED` and
    /// `ALGOGATE_<NAME>_CASES` from the environment (another seed, or more cases, locally), or
    /// the defaults CI runs.
    static func run(_ name: String, seed: UInt64 = 2026_12_04, cases: Int = 1_000) -> (seed: UInt64, cases: Int) {
        let environment = ProcessInfo.processInfo.environment
        return (environment["ALGOGATE_\(name)_SEED"].flatMap(UInt64.init) ?? seed,
                environment["ALGOGATE_\(name)_CASES"].flatMap(Int.init) ?? cases)
    }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
