import AlgoSim
import AlgoTestSupport
import AsyncHTTPClient
import Foundation
import NIOCore
import Testing

@Suite struct DataAPITests {
    @Test func directoriesFilesAndPermissionsFollowTheClientFlow() async throws {
        try await withSimulator { http, _ in
            let created = try await http.send(.POST, "/v1/data/.my", headers: auth, json: ["name": "reports", "acl": ["read": ["user://*"]]])
            #expect(created.status == 200)
            #expect(canonicalJSON(created.json) == #"{"result":"data://.my/reports"}"#)
            // The simulator's own files beside a directory's (its permissions) are out of reach.
            let sidecar = try await http.send(.GET, "/v1/data/.my/reports/.__acl.json", headers: auth)
            #expect(sidecar.status == 400)
            #expect((sidecar.object["error"] as? [String: Any])?["message"] as? String == "invalid path segment '.__acl.json'")
            // A file is not written over a directory, nor a directory named with a `/`.
            let overDirectory = try await http.send(.PUT, "/v1/data/.my/reports", headers: auth, text: "x")
            #expect(overDirectory.status == 409)
            #expect((overDirectory.object["error"] as? [String: Any])?["message"] as? String == "data://.my/reports is a directory")
            let nested = try await http.send(.POST, "/v1/data/.my", headers: auth, json: ["name": "a/b"])
            #expect(nested.status == 400)
            #expect((nested.object["error"] as? [String: Any])?["message"] as? String == "invalid directory name 'a/b'")
            let again = try await http.send(.POST, "/v1/data/.my", headers: auth, json: ["name": "reports"])
            #expect(again.status == 409)
            // A null ACL, as the C# client sends when given none, is no ACL: the default.
            let nullACL = try await http.send(.POST, "/v1/data/.my", headers: auth, json: ["name": "plain", "acl": NSNull()])
            #expect(nullACL.status == 200)
            #expect(canonicalJSON(try await http.send(.GET, "/v1/data/.my/plain?acl=true", headers: auth).object["acl"]) == #"{"read":["algo://.my/*"]}"#)

            let put = try await http.send(.PUT, "/v1/data/.my/reports/a.txt", headers: auth, text: "alpha")
            #expect(put.status == 200)
            #expect(canonicalJSON(put.json) == #"{"result":"data://.my/reports/a.txt"}"#)
            let get = try await http.send(.GET, "/v1/data/.my/reports/a.txt", headers: auth)
            #expect(get.text == "alpha")
            #expect(get.header("Content-Type") == "application/octet-stream")
            #expect(get.header("X-Data-Type") == "file")

            let head = try await http.send(.HEAD, "/v1/data/.my/reports/a.txt", headers: auth)
            #expect(head.status == 200)
            #expect(head.header("Content-Length") == "5")
            // An HTTP date (RFC 9110 §5.6.7), as Last-Modified is written.
            #expect(head.header("Last-Modified")?.wholeMatch(of: /(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT/) != nil)
            #expect(head.header("X-Data-Type") == "file")
            let directory = try await http.send(.GET, "/v1/data/.my/reports", headers: auth)
            #expect(directory.header("X-Data-Type") == "directory")
            #expect(directory.header("Content-Type") == "application/json")
            let directoryHead = try await http.send(.HEAD, "/v1/data/.my/reports", headers: auth)
            #expect(directoryHead.header("X-Data-Type") == "directory")
            let missingHead = try await http.send(.HEAD, "/v1/data/.my/reports/none.txt", headers: auth)
            #expect(missingHead.status == 404)
            #expect(missingHead.header("X-Error-Message") == "data://.my/reports/none.txt does not exist")
            let missingGet = try await http.send(.GET, "/v1/data/.my/reports/none.txt", headers: auth)
            #expect(canonicalJSON(missingGet.json) == canonicalJSON(literal: #"{"error":{"message":"data://.my/reports/none.txt does not exist","error_type":"EntityNotFoundError"}}"#))

            let acl = try await http.send(.GET, "/v1/data/.my/reports?acl=true", headers: auth)
            #expect(canonicalJSON(acl.object["acl"]) == #"{"read":["user://*"]}"#)
            let patched = try await http.send(.PATCH, "/v1/data/.my/reports", headers: auth, json: ["acl": ["read": []]])
            #expect(patched.status == 200)
            // Permissions are the API's three: no one else's, everyone's, the account's algorithms'.
            let someone = try await http.send(.PATCH, "/v1/data/.my/reports", headers: auth, json: ["acl": ["read": ["user://bob"]]])
            #expect(someone.status == 400)
            #expect((someone.object["error"] as? [String: Any])?["message"] as? String == #"acl must be {"read": []}, {"read": ["user://*"]} or {"read": ["algo://.my/*"]}"#)
            let after = try await http.send(.GET, "/v1/data/.my/reports?acl=true", headers: auth)
            #expect(canonicalJSON(after.object["acl"]) == #"{"read":[]}"#)

            let refused = try await http.send(.DELETE, "/v1/data/.my/reports", headers: auth)
            #expect(refused.status == 400)
            #expect((refused.object["error"] as? [String: Any])?["message"] as? String == "directory data://.my/reports is not empty; delete with force=true")
            let deleted = try await http.send(.DELETE, "/v1/data/.my/reports?force=true", headers: auth)
            #expect(canonicalJSON(deleted.json) == #"{"result":{"deleted":1}}"#)
            let gone = try await http.send(.GET, "/v1/data/.my/reports", headers: auth)
            #expect(gone.status == 404)
        }
    }

    /// A file's download is typed `text/plain` or `application/json` when the request accepts
    /// that type alone, as the Node.js 0.3 client's `getString` and `getJson` ask (and then read
    /// the answer by its type: any other makes them throw), and `application/octet-stream`
    /// otherwise, whatever the upload said: the R client labels every upload `application/json`,
    /// and parses a download typed so as JSON, which a text file is not.
    @Test func aDownloadIsTypedAsItsAcceptAsksWhenThatIsTextOrJSONAlone() async throws {
        try await withSimulator { http, _ in
            #expect(try await http.send(.POST, "/v1/data/.my", headers: auth, json: ["name": "typed"]).status == 200)
            #expect(try await http.send(.PUT, "/v1/data/.my/typed/note", headers: auth + [("Content-Type", "application/json")], text: "héllo").status == 200)
            for (accept, type) in [("text/plain", "text/plain"), ("application/json", "application/json"), ("Text/Plain; charset=utf-8", "text/plain"),
                                   ("application/octet-stream", "application/octet-stream"), ("*/*", "application/octet-stream"),
                                   ("application/json, text/xml, application/xml, */*", "application/octet-stream")] {
                let get = try await http.send(.GET, "/v1/data/.my/typed/note", headers: auth + [("Accept", accept)])
                #expect(get.header("Content-Type") == type, "\(accept)")
                #expect(get.text == "héllo")
                let head = try await http.send(.HEAD, "/v1/data/.my/typed/note", headers: auth + [("Accept", accept)])
                #expect(head.header("Content-Type") == type, "\(accept)")
            }
            let plain = try await http.send(.GET, "/v1/data/.my/typed/note", headers: auth)
            #expect(plain.header("Content-Type") == "application/octet-stream")
            #expect(plain.header("Content-Length") == "6")
            // A directory's listing is JSON whatever the request accepts.
            #expect(try await http.send(.GET, "/v1/data/.my/typed", headers: auth + [("Accept", "text/plain")]).header("Content-Type") == "application/json")
        }
    }

    /// A method neither API takes is a 405 in the usual envelope, naming the methods that are
    /// taken (RFC 9110 §15.5.6).
    @Test func anUnsupportedMethodIs405NamingTheMethodsTaken() async throws {
        try await withSimulator { http, _ in
            let data = try await http.send(.OPTIONS, "/v1/data/.my/reports", headers: auth)
            #expect(data.status == 405)
            #expect(data.header("Allow") == "GET, HEAD, PUT, POST, PATCH, DELETE")
            #expect(canonicalJSON(data.json) == canonicalJSON(literal:
                #"{"error":{"message":"method OPTIONS is not supported on data paths","error_type":"InputError"}}"#))
            let connector = try await http.send(.TRACE, "/v1/connector/s3/bucket/key", headers: auth)
            #expect(connector.status == 405 && connector.header("Allow") == "GET, HEAD, PUT, POST, PATCH, DELETE")
            let algo = try await http.send(.GET, "/v1/algo/demo/Hello/0.1.0", headers: auth)
            #expect(algo.status == 405)
            #expect(algo.header("Allow") == "POST")
            #expect(canonicalJSON(algo.json) == canonicalJSON(literal: #"{"error":{"message":"algorithms are called with POST","error_type":"InputError"}}"#))
        }
    }

    @Test func listingsPaginateWithAMarker() async throws {
        try await withSimulator(pageSize: 2) { http, _ in
            _ = try await http.send(.POST, "/v1/data/.my", headers: auth, json: ["name": "many"])
            _ = try await http.send(.POST, "/v1/data/.my/many", headers: auth, json: ["name": "sub"])
            for index in 0..<4 {
                _ = try await http.send(.PUT, "/v1/data/.my/many/f\(index)", headers: auth, text: String(repeating: "x", count: index))
            }
            var marker: String?
            var folders: [String] = []
            var files: [String] = []
            var pages = 0
            repeat {
                let page = try await http.send(.GET, "/v1/data/.my/many" + (marker.map { "?marker=\($0)" } ?? ""), headers: auth)
                #expect(page.status == 200)
                folders += (page.object["folders"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
                for file in page.object["files"] as? [[String: Any]] ?? [] {
                    files.append(file["filename"] as? String ?? "")
                    // Whole seconds, `.000Z`: the C# and R clients parse the `.000` literally.
                    #expect((file["last_modified"] as? String)?.wholeMatch(of: /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z/) != nil)
                }
                marker = page.object["marker"] as? String
                pages += 1
                // A page with more after it has a marker; the last has none at all, not a null.
                #expect((page.object["marker"] != nil) == (pages < 3))
            } while marker != nil
            #expect(pages == 3)
            #expect(folders == ["sub"])
            #expect(files == ["f0", "f1", "f2", "f3"])
        }
    }

    @Test func connectorPathsAndURIStylePathsNameTheSameFile() async throws {
        try await withSimulator { http, sim in
            // A connector's root is there before anything is put in it, as a bucket is.
            let empty = try await http.send(.GET, "/v1/connector/gs", headers: auth)
            #expect(empty.status == 200)
            #expect(empty.header("X-Data-Type") == "directory")
            #expect(canonicalJSON(empty.json) == #"{"files":[],"folders":[]}"#)
            #expect(sim.stats.snapshot.requestsByClass == ["data": 1])
            let put = try await http.send(.PUT, "/v1/connector/s3/bucket/team/k.bin", headers: auth, body: [0, 1, 2, 255])
            #expect(canonicalJSON(put.json) == #"{"result":"s3://bucket/team/k.bin"}"#)
            let viaData = try await http.send(.GET, "/v1/data/s3://bucket/team/k.bin", headers: auth)
            #expect(viaData.bytes == [0, 1, 2, 255])
            let labelled = try await http.send(.PUT, "/v1/connector/dropbox+work/notes.txt", headers: auth, text: "n")
            #expect(canonicalJSON(labelled.json) == #"{"result":"dropbox+work://notes.txt"}"#)
            // A connector's type is read in any case; its label as written, so labels that differ
            // in case are two connectors (as the gateway holds them).
            let capitals = try await http.send(.GET, "/v1/connector/S3/bucket/team/k.bin", headers: auth)
            #expect(capitals.bytes == [0, 1, 2, 255])
            #expect(try await http.send(.GET, "/v1/connector/dropbox+Work/notes.txt", headers: auth).status == 404)
            #expect(try await http.send(.GET, "/v1/data/Dropbox+work://notes.txt", headers: auth).text == "n")
            // A connector's root is not deleted, not even with force: its files stay.
            for root in ["/v1/connector/s3?force=true", "/v1/data/s3://?force=true"] {
                let refused = try await http.send(.DELETE, root, headers: auth)
                #expect(refused.status == 400, "\(root)")
                #expect((refused.object["error"] as? [String: Any])?["message"] as? String == "cannot delete a connector root")
            }
            #expect(try await http.send(.GET, "/v1/connector/s3/bucket/team/k.bin", headers: auth).bytes == [0, 1, 2, 255])
            let unknown = try await http.send(.GET, "/v1/connector/ftp/x", headers: auth)
            #expect(unknown.status == 400)
            let traversal = try await http.send(.GET, "/v1/data/.my/%2e%2e/secret", headers: auth)
            #expect(traversal.status == 400)
            let encodedTraversal = try await http.send(.GET, "/v1/data/.my%2F..%2Fsecret", headers: auth)
            #expect(encodedTraversal.status == 400)
        }
    }

    /// The Java client encodes a data path whole, separators and all (`URLEncoder.encode`, since
    /// 2015): `data://.my/d/f` is `/v1/data/.my%2Fd%2Ff`, `s3://b/k` is `/v1/data/s3%3A%2F%2Fb%2Fk`.
    /// Its encoder writes a space as `+` and a `+` as `%2B`, so there `+` is a space.
    @Test func pathsEncodedWholeAsTheJavaClientSendsThemNameTheirFiles() async throws {
        try await withSimulator { http, _ in
            #expect(try await http.send(.POST, "/v1/data/.my", headers: auth, json: ["name": "java"]).status == 200)
            let put = try await http.send(.PUT, "/v1/data/.my%2Fjava%2Fnotes+one%2B1.txt", headers: auth, text: "from java")
            #expect(canonicalJSON(put.json) == #"{"result":"data://.my/java/notes one+1.txt"}"#)
            let plain = try await http.send(.GET, "/v1/data/.my/java/notes%20one+1.txt", headers: auth)
            #expect(plain.text == "from java")
            // With a plain `/`, a `+` is itself.
            #expect(try await http.send(.GET, "/v1/data/.my/java/notes+one+1.txt", headers: auth).status == 404)
            // ... and so it is beside a plain `/`, even where a `/` is encoded too.
            let mixed = try await http.send(.PUT, "/v1/data/.my/java%2Fa+b.txt", headers: auth, text: "mixed")
            #expect(canonicalJSON(mixed.json) == #"{"result":"data://.my/java/a+b.txt"}"#)
            let head = try await http.send(.HEAD, "/v1/data/.my%2Fjava%2Fnotes+one%2B1.txt", headers: auth)
            #expect(head.status == 200 && head.header("X-Data-Type") == "file")
            let listing = try await http.send(.GET, "/v1/data/.my%2Fjava", headers: auth)
            #expect((listing.object["files"] as? [[String: Any]])?.map { $0["filename"] as? String } == ["a+b.txt", "notes one+1.txt"])
            let s3 = try await http.send(.PUT, "/v1/data/s3%3A%2F%2Fbucket%2Fjava%2Fk.txt", headers: auth, text: "k")
            #expect(canonicalJSON(s3.json) == #"{"result":"s3://bucket/java/k.txt"}"#)
            #expect(try await http.send(.GET, "/v1/connector/s3/bucket/java/k.txt", headers: auth).text == "k")
            let deleted = try await http.send(.DELETE, "/v1/data/.my%2Fjava?force=true", headers: auth)
            #expect(canonicalJSON(deleted.json) == #"{"result":{"deleted":2}}"#)
        }
    }

    @Test func putIntoAMissingDirectoryIs404() async throws {
        try await withSimulator { http, _ in
            let put = try await http.send(.PUT, "/v1/data/.my/nowhere/a.txt", headers: auth, text: "a")
            #expect(put.status == 404)
            #expect((put.object["error"] as? [String: Any])?["message"] as? String == "directory data://.my/nowhere does not exist")
            let mkdir = try await http.send(.POST, "/v1/data/.my/nowhere", headers: auth, json: ["name": "inner"])
            #expect(mkdir.status == 404)
            #expect((mkdir.object["error"] as? [String: Any])?["message"] as? String == "directory data://.my/nowhere does not exist")
        }
    }

    @Test func aFileCanBeOverwrittenAgainAndAgain() async throws {
        try await withSimulator { http, _ in
            #expect(try await http.send(.POST, "/v1/data/.my", headers: auth, json: ["name": "docs"]).status == 200)
            for version in 1...4 {
                let put = try await http.send(.PUT, "/v1/data/.my/docs/a.txt", headers: auth, text: "version \(version)")
                #expect(put.status == 200, "write \(version)")
                #expect(canonicalJSON(put.json) == #"{"result":"data://.my/docs/a.txt"}"#)
                let get = try await http.send(.GET, "/v1/data/.my/docs/a.txt", headers: auth)
                #expect(get.text == "version \(version)")
            }
            let listing = try await http.send(.GET, "/v1/data/.my/docs", headers: auth)
            #expect((listing.object["files"] as? [[String: Any]])?.compactMap { $0["filename"] as? String } == ["a.txt"], "no upload or backup file left beside it")
        }
    }

    @Test func theDataRootListsTheAccountUser() async throws {
        try await withSimulator { http, _ in
            for path in ["/v1/data/", "/v1/data"] {
                let root = try await http.send(.GET, path, headers: auth)
                #expect(root.status == 200, "\(path)")
                #expect(canonicalJSON(root.object["folders"]) == #"[{"name":"sim"}]"#, "\(path)")
            }
        }
    }
}
