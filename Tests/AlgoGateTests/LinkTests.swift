@testable import AlgoGate
import AlgoTestSupport
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import Testing

/// Links in answers that name the upstream name the gateway instead, so a client that follows one
/// stays behind the gateway (and never sends its algogate key to the upstream).
@Suite struct LinkTests {
    /// An answer rewritten as it streams is the answer rewritten whole, wherever its parts are
    /// cut: inside either form of a link, at its edges, or in three parts around one.
    @Test func aStreamedAnswerIsRewrittenAsTheWholeIsWhereverItIsCut() throws {
        let rewriter = try #require(LinkRewriter(upstreamOrigin: "https://api.example.com", gatewayOrigin: "http://gw:8080"))
        let text = #"{"a":"https://api.example.com/v1/algorithms/x","b":"https:\/\/api.example.com\/v1\/y","c":"https://api.example.com/v2/z https://api.example.com/v1/"}"#
        let expected = #"{"a":"http://gw:8080/v1/algorithms/x","b":"http:\/\/gw:8080\/v1\/y","c":"https://api.example.com/v2/z http://gw:8080/v1/"}"#
        let bytes = Array(text.utf8)
        #expect(String(buffer: rewriter.rewrite(ByteBuffer(bytes: bytes))) == expected)
        func streamed(_ cuts: [Int]) -> String {
            var stream = LinkRewriter.Stream(rewriter)
            var output = ""
            for (start, end) in zip([0] + cuts, cuts + [bytes.count]) {
                if let part = stream.pass(ByteBuffer(bytes: bytes[start..<end])) { output += String(buffer: part) }
            }
            if let held = stream.finish() { output += String(buffer: held) }
            return output
        }
        for cut in 0...bytes.count {
            #expect(streamed([cut]) == expected, "cut at \(cut)")
        }
        for first in stride(from: 0, through: bytes.count, by: 3) {
            for second in first...min(bytes.count, first + 40) {
                #expect(streamed([first, second]) == expected, "cuts at \(first) and \(second)")
            }
        }
    }

    static let create = #"{"name": "Linked", "details": {"label": "Linked"}, "settings": {"language": "python3"}}"#

    @Test func managementAnswersLinkToTheGateway() async throws {
        try await GatewayHarness.run { h in
            let made = try await h.gateway.send(.POST, "/v1/algorithms/team-a", headers: simple(Keys.teamA) + jsonType, text: Self.create)
            #expect(made.status == 200)
            // The simulator names the address it was reached at, as Algorithmia names its own.
            #expect(made.object["self_link"] as? String == "\(h.gateway.base)/v1/algorithms/team-a/Linked")
            #expect(made.header("Content-Length") == String(made.bytes.count))
            #expect(!made.text.contains(h.sim.base))

            // Behind a proxy that terminates TLS and says so.
            let proxied = try await h.gateway.send(.GET, "/v1/algorithms/team-a/Linked", headers: simple(Keys.teamA) + [("X-Forwarded-Proto", "https")])
            #expect(proxied.status == 200)
            #expect(proxied.object["self_link"] as? String == "\(h.gateway.base.replacingOccurrences(of: "http://", with: "https://"))/v1/algorithms/team-a/Linked")

            // A Host that could break out of a JSON string is refused (`HostField`); one that is
            // a valid host but more than a name and port is not written into a link.
            let refused = try await h.gateway.send(.GET, "/v1/algorithms/team-a/Linked", headers: simple(Keys.teamA) + [("Host", #"evil"x"#)])
            #expect(refused.status == 400)
            let odd = try await h.gateway.send(.GET, "/v1/algorithms/team-a/Linked", headers: simple(Keys.teamA) + [("Host", "evil('x')")])
            #expect(odd.status == 200)
            #expect(odd.object["self_link"] as? String == "\(h.sim.base)/v1/algorithms/team-a/Linked")
        }
    }

    @Test func aPublicURLIsWhatLinksName() async throws {
        try await GatewayHarness.run(serverYAML: #"public_url: "https://algogate.example.com/""#) { h in
            let made = try await h.gateway.send(.POST, "/v1/algorithms/team-a", headers: simple(Keys.teamA) + jsonType, text: Self.create)
            #expect(made.status == 200)
            #expect(made.object["self_link"] as? String == "https://algogate.example.com/v1/algorithms/team-a/Linked")
            // A reload applies to the next request.
            for (publicURL, expected) in [("https://other.example.com:8443", "https://other.example.com:8443"), (nil, h.gateway.base)] {
                var config = h.app.state.snapshot.config
                config.server.publicURL = publicURL
                try h.app.state.replace(with: ConfigLoader.Loaded(config: config, upstreamKey: h.app.state.snapshot.upstreamKey))
                let got = try await h.gateway.send(.GET, "/v1/algorithms/team-a/Linked", headers: simple(Keys.teamA))
                #expect(got.object["self_link"] as? String == "\(expected)/v1/algorithms/team-a/Linked")
            }
        }
    }

    /// `Location` naming the upstream's API is pointed at the gateway; any other is left alone.
    @Test func redirectsToTheUpstreamPointAtTheGateway() async throws {
        let router = Router()
        router.get("/v1/data/.my/team-a/moved") { request, _ -> Response in
            Response(status: .movedPermanently, headers: [.location: "http://\(request.head.authority ?? "")/v1/data/.my/team-a/new",
                                                          .contentLocation: "http://\(request.head.authority ?? "")/v1/data/.my/team-a/moved"])
        }
        // A name that begins with a combining mark, which joins the prefix's last `/` into one
        // `Character` with it: matched in bytes, the link is found all the same.
        router.get("/v1/data/.my/team-a/marked") { request, _ -> Response in
            Response(status: .movedPermanently, headers: [.location: "http://\(request.head.authority ?? "")/v1/\u{301}x",
                                                          LinkRewriter.link: "<http://\(request.head.authority ?? "")/v1/\u{301}x>; rel=\"next\""])
        }
        router.get("/v1/data/.my/team-a/elsewhere") { _, _ -> Response in
            Response(status: .found, headers: [.location: "https://storage.example.com/bucket/file?signature=abc"])
        }
        try await LiveServer.run({ onRunning in
            Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)), onServerRunning: onRunning,
                        logger: { var logger = Logger(label: "redirecting-upstream"); logger.logLevel = .warning; return logger }())
        }) { port in
            try await GatewayHarness.run(upstreamURL: { _ in "http://127.0.0.1:\(port)" }) { h in
                let moved = try await h.gateway.send(.GET, "/v1/data/.my/team-a/moved", headers: simple(Keys.teamA))
                #expect(moved.status == 301)
                #expect(moved.header("Location") == "\(h.gateway.base)/v1/data/.my/team-a/new")
                #expect(moved.header("Content-Location") == "\(h.gateway.base)/v1/data/.my/team-a/moved")
                let marked = try await h.gateway.send(.GET, "/v1/data/.my/team-a/marked", headers: simple(Keys.teamA))
                #expect(marked.status == 301)
                #expect(marked.header("Location") == "\(h.gateway.base)/v1/\u{301}x")
                #expect(marked.header("Link") == "<\(h.gateway.base)/v1/\u{301}x>; rel=\"next\"")
                let elsewhere = try await h.gateway.send(.GET, "/v1/data/.my/team-a/elsewhere", headers: simple(Keys.teamA))
                #expect(elsewhere.status == 302)
                #expect(elsewhere.header("Location") == "https://storage.example.com/bucket/file?signature=abc")
            }
        }
    }

    /// The upstream may gzip a management answer (the gateway asks it to) or send it chunked: its
    /// size is then unknown until it has all arrived, and its links are rewritten all the same. One
    /// larger than the rewriter reads whole is rewritten as it streams (its first link in what was
    /// read ahead, its last in the stream), whether its length was declared or not; links cut
    /// between two parts are `aStreamedAnswerIsRewrittenAsTheWholeIsWhereverItIsCut`'s. `Link`
    /// targets are rewritten, every one in a field. An answer in a coding the gateway does not
    /// undo is passed as it came.
    @Test func compressedAndChunkedManagementAnswersAreRewritten() async throws {
        @Sendable func link(_ request: Request) -> String { "http://\(request.head.authority ?? "")/v1/algorithms/team-a/Linked" }
        @Sendable func chunks(_ text: String, at cut: Int) -> ResponseBody {
            let bytes = Array(text.utf8)
            return ResponseBody { writer in
                try await writer.write(ByteBuffer(bytes: bytes[..<cut]))
                try await writer.write(ByteBuffer(bytes: bytes[cut...]))
                try await writer.finish(nil)
            }
        }
        let big = String(repeating: "x", count: LinkRewriter.maxBodyBytes)
        let router = Router()
        router.get("/v1/algorithms/team-a/gzip") { request, _ -> Response in
            let escaped = link(request).replacingOccurrences(of: "/", with: #"\/"#)
            let json = #"{"self_link":"\#(link(request))","next_link":"\#(escaped)?page=2"}"#
            return Response(status: .ok, headers: [.contentType: "application/json", .contentEncoding: "gzip"],
                            body: ResponseBody { writer in
                                try await writer.write(ByteBuffer(bytes: try CompressionTests.gzip(Array(json.utf8))))
                                try await writer.finish(nil)
                            })
        }
        router.get("/v1/algorithms/team-a/chunked") { request, _ -> Response in
            let json = #"{"self_link":"\#(link(request))"}"#
            // Cut inside the link: it is whole once the answer is.
            var headers: HTTPFields = [.contentType: "application/json; charset=utf-8"]
            headers.append(HTTPField(name: LinkRewriter.link, value: "<\(link(request))?page=2>; rel=\"next\", <https://docs.example.com/api>; rel=\"help\", <\(link(request))?page=0>; rel=\"prev\""))
            headers.append(HTTPField(name: LinkRewriter.link, value: "<\(link(request))>; rel=\"self\""))
            return Response(status: .ok, headers: headers, body: chunks(json, at: 25))
        }
        router.get("/v1/algorithms/team-a/brotli") { request, _ -> Response in
            // A coding the gateway does not undo: its bytes are not text to rewrite, and pass as they came.
            Response(status: .ok, headers: [.contentType: "application/json", .contentEncoding: "br"],
                     body: .init(byteBuffer: ByteBuffer(string: #"{"self_link":"\#(link(request))"}"#)))
        }
        @Sendable func large(_ request: Request) -> String {
            let escaped = link(request).replacingOccurrences(of: "/", with: #"\/"#)
            return #"{"self_link":"\#(link(request))","padding":"\#(big)","next_link":"\#(escaped)?page=2"}"#
        }
        router.get("/v1/algorithms/team-a/big") { request, _ -> Response in
            // Chunked: its size unknown, it is read ahead first.
            Response(status: .ok, headers: [.contentType: "application/json"], body: chunks(large(request), at: 20))
        }
        router.get("/v1/algorithms/team-a/declared") { request, _ -> Response in
            // Its length declared, over what is read whole: it streams from the start.
            let text = large(request)
            let cut = text.utf8.distance(from: text.startIndex, to: text.range(of: #""next_link":"http:\/"#)!.upperBound)
            return Response(status: .ok, headers: [.contentType: "application/json", .contentLength: String(text.utf8.count)],
                            body: chunks(text, at: cut))
        }
        try await LiveServer.run({ onRunning in
            Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)), onServerRunning: onRunning,
                        logger: { var logger = Logger(label: "management-upstream"); logger.logLevel = .warning; return logger }())
        }) { port in
            try await GatewayHarness.run(upstreamURL: { _ in "http://127.0.0.1:\(port)" }) { h in
                let upstream = "http://127.0.0.1:\(port)/v1/algorithms/team-a/Linked"
                let gateway = "\(h.gateway.base)/v1/algorithms/team-a/Linked"
                let escapedGateway = gateway.replacingOccurrences(of: "/", with: #"\/"#)

                let gzipped = try await h.gateway.send(.GET, "/v1/algorithms/team-a/gzip", headers: simple(Keys.teamA))
                #expect(gzipped.status == 200)
                #expect(gzipped.header("Content-Encoding") == nil)
                #expect(gzipped.header("Content-Length") == String(gzipped.bytes.count))
                #expect(gzipped.text == #"{"self_link":"\#(gateway)","next_link":"\#(escapedGateway)?page=2"}"#)

                let chunked = try await h.gateway.send(.GET, "/v1/algorithms/team-a/chunked", headers: simple(Keys.teamA))
                #expect(chunked.status == 200)
                #expect(chunked.header("Content-Length") == String(chunked.bytes.count))
                #expect(chunked.text == #"{"self_link":"\#(gateway)"}"#)
                #expect(chunked.headers["Link"] == ["<\(gateway)?page=2>; rel=\"next\", <https://docs.example.com/api>; rel=\"help\", <\(gateway)?page=0>; rel=\"prev\"",
                                                    "<\(gateway)>; rel=\"self\""])

                let opaque = try await h.gateway.send(.GET, "/v1/algorithms/team-a/brotli", headers: simple(Keys.teamA) + [("Accept-Encoding", "br")])
                #expect(opaque.status == 200)
                #expect(opaque.header("Content-Encoding") == "br")
                #expect(opaque.text == #"{"self_link":"\#(upstream)"}"#)

                let rewritten = #"{"self_link":"\#(gateway)","padding":"\#(big)","next_link":"\#(escapedGateway)?page=2"}"#
                for path in ["/v1/algorithms/team-a/big", "/v1/algorithms/team-a/declared"] {
                    let large = try await h.gateway.send(.GET, path, headers: simple(Keys.teamA))
                    #expect(large.status == 200)
                    #expect(large.header("Content-Length") == nil)
                    #expect(large.text == rewritten)
                    #expect(!large.text.contains(upstream))
                }
            }
        }
    }
}
