import AlgoSim
import AlgoTestSupport
import Foundation
import Testing

@Suite struct ManagementAPITests {
    @Test func createCompilePublishAndCallAnAlgorithm() async throws {
        try await withSimulator { http, _ in
            let create = try await http.send(.POST, "/v1/algorithms/sim", headers: auth, json: [
                "name": "Greeter",
                "details": ["label": "Greeter"],
                "settings": ["language": "python3", "source_visibility": "closed"],
                "version_info": ["sample_input": "hi"],
            ])
            #expect(create.status == 200)
            #expect(create.object["name"] as? String == "Greeter")
            #expect(create.object["resource_type"] as? String == "algorithm")
            #expect((create.object["id"] as? String)?.count == 36)

            let duplicate = try await http.send(.POST, "/v1/algorithms/sim", headers: auth, json: ["name": "Greeter", "details": [:], "settings": [:]])
            #expect(duplicate.status == 409)
            let conflict = duplicate.object["error"] as? [String: Any]
            #expect(conflict?["code"] as? String == "409")
            #expect(conflict?["message"] as? String == "Algorithm sim/Greeter already exists")

            let update = try await http.send(.PUT, "/v1/algorithms/sim/Greeter", headers: auth, json: ["details": ["label": "Greeter 2"], "settings": [:]])
            #expect((update.object["details"] as? [String: Any])?["label"] as? String == "Greeter 2")

            let compile = try await http.send(.POST, "/v1/algorithms/sim/Greeter/compile", headers: auth, json: [:])
            let hash = (compile.object["version_info"] as? [String: Any])?["git_hash"] as? String
            #expect(hash?.count == 40)

            let first = try await http.send(.POST, "/v1/algorithms/sim/Greeter/versions", headers: auth, json: ["version_info": ["type": "minor", "release_notes": "first"]])
            #expect(first.status == 200)
            #expect((first.object["version_info"] as? [String: Any])?["semantic_version"] as? String == "0.1.0")
            #expect((first.object["version_info"] as? [String: Any])?["git_hash"] as? String == hash)
            let second = try await http.send(.POST, "/v1/algorithms/sim/Greeter/versions", headers: auth, json: ["version_info": ["type": "revision"]])
            #expect((second.object["version_info"] as? [String: Any])?["semantic_version"] as? String == "0.1.1")

            // `version_type`, as the API reference and the Java client name it; `/version`, where the
            // Java client posts; and by the algorithm's id, as the API reference also offers.
            #expect(try await http.send(.POST, "/v1/algorithms/sim/Greeter/compile", headers: auth).status == 200)
            let third = try await http.send(.POST, "/v1/algorithms/sim/Greeter/version", headers: auth, json: ["version_info": ["version_type": "patch"]])
            #expect((third.object["version_info"] as? [String: Any])?["semantic_version"] as? String == "0.1.2")
            let id = try #require(create.object["id"] as? String)
            #expect(try await http.send(.POST, "/v1/algorithms/sim/Greeter/compile", headers: auth).status == 200)
            let fourth = try await http.send(.POST, "/v1/algorithms/\(id)/version", headers: auth, json: ["version_info": ["version_type": "major"]])
            #expect((fourth.object["version_info"] as? [String: Any])?["semantic_version"] as? String == "1.0.0")
            // A minor version after patches starts its patches again, and versions are ordered by
            // their numbers (1.1.0 after 1.0.1), so the next patch is 1.1.1.
            // Each without a compile before it: each is a build of its own, with its own hash.
            var published: [String] = []
            var hashes: Set<String> = [(fourth.object["version_info"] as? [String: Any])?["git_hash"] as? String ?? ""]
            for kind in ["patch", "minor", "patch"] {
                let reply = try await http.send(.POST, "/v1/algorithms/sim/Greeter/versions", headers: auth, json: ["version_info": ["version_type": kind]])
                let info = reply.object["version_info"] as? [String: Any]
                published.append(info?["semantic_version"] as? String ?? "")
                hashes.insert(info?["git_hash"] as? String ?? "")
            }
            #expect(published == ["1.0.1", "1.1.0", "1.1.1"])
            #expect(hashes.count == 4 && hashes.allSatisfy { $0.count == 40 })
            let unknown = try await http.send(.POST, "/v1/algorithms/sim/Greeter/version", headers: auth, json: ["version_info": ["version_type": "huge"]])
            #expect(unknown.status == 400)
            #expect(((unknown.object["error"] as? [String: Any])?["message"] as? String) == "version_info.version_type must be major, minor or patch")

            let versions = try await http.send(.GET, "/v1/algorithms/sim/Greeter/versions", headers: auth)
            let semvers = (versions.object["results"] as? [[String: Any]] ?? []).compactMap { ($0["version_info"] as? [String: Any])?["semantic_version"] as? String }
            #expect(semvers == ["1.1.1", "1.1.0", "1.0.1", "1.0.0", "0.1.2", "0.1.1", "0.1.0"])

            let builds = try await http.send(.GET, "/v1/algorithms/sim/Greeter/builds", headers: auth)
            let results = builds.object["results"] as? [[String: Any]] ?? []
            #expect(results.count == 10)
            #expect(results.allSatisfy { $0["status"] as? String == "succeeded" })
            let buildID = results.first?["build_id"] as? String ?? ""
            let logs = try await http.send(.GET, "/v1/algorithms/sim/Greeter/builds/\(buildID)/logs", headers: auth)
            #expect((logs.object["logs"] as? String)?.contains("Build succeeded") == true)

            let call = try await http.send(.POST, "/v1/algo/sim/Greeter/0.1.1", headers: auth + textType, text: "hi")
            #expect(call.object["result"] as? String == "hi")
            let latest = try await http.send(.POST, "/v1/algo/sim/Greeter", headers: auth + textType, text: "hey")
            #expect(latest.object["result"] as? String == "hey")

            let scm = try await http.send(.GET, "/v1/algorithms/sim/Greeter/scm/status", headers: auth)
            #expect(canonicalJSON(scm.json) == #"{"scm_connection_status":"active"}"#)
            let deleted = try await http.send(.DELETE, "/v1/algorithms/sim/Greeter", headers: auth)
            #expect(deleted.status == 204)
            #expect(deleted.body.readableBytes == 0)
            #expect(try await http.send(.GET, "/v1/algorithms/sim/Greeter", headers: auth).status == 404)
            #expect(try await http.send(.POST, "/v1/algo/sim/Greeter/0.1.1", headers: auth + textType, text: "hi").status == 404)
            #expect(try await http.send(.DELETE, "/v1/algorithms/sim/Greeter", headers: auth).status == 404)
        }
    }

    @Test func unknownAlgorithmsUseTheManagementEnvelope() async throws {
        try await withSimulator { http, _ in
            let missing = try await http.send(.GET, "/v1/algorithms/sim/Nope", headers: auth)
            #expect(missing.status == 404)
            let error = missing.object["error"] as? [String: Any] ?? [:]
            #expect(Set(missing.object.keys) == ["error"])
            #expect(Set(error.keys) == ["id", "code", "message"])
            #expect(error["code"] as? String == "404")
            #expect(error["message"] as? String == "No such algorithm: sim/Nope")
        }
    }
}
