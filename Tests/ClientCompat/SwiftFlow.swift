// The official Swift client (algorithmiaio/algorithmia-swift, written for iOS in Swift 3) through
// the gateway as the confined team: algorithm calls with options, data files and directories,
// refusals. Tests/ClientCompat/run.sh builds the client on Linux when SWIFT_CLIENT_DIR names a
// checkout of it (with FoundationNetworking imported, `-swift-version 4`, and one `open let`,
// which Swift 4 refuses, made `public let`) and runs this against it.
// Usage: ALGORITHMIA_API=... ALGORITHMIA_API_KEY=<a key confined to ROOT> SwiftFlow ROOT OUTSIDE
import Algorithmia
import Dispatch
import Foundation

let arguments = CommandLine.arguments
let root = arguments[1], outside = arguments[2]
let environment = ProcessInfo.processInfo.environment
let client = Algorithmia.client(simpleKey: environment["ALGORITHMIA_API_KEY"]!, baseUrl: environment["ALGORITHMIA_API"]!)

func expect<T: Equatable>(_ label: String, _ actual: T, _ expected: T) {
    if actual != expected {
        FileHandle.standardError.write("FAIL: swift \(label): got \(actual), expected \(expected)\n".data(using: .utf8)!)
        exit(1)
    }
}

/// Waits for a call that reports through a completion handler (the client's only way).
func wait<T>(_ start: (@escaping (T) -> Void) -> Void) -> T {
    let done = DispatchSemaphore(value: 0)
    var result: T?
    start { value in result = value; done.signal() }
    guard done.wait(timeout: .now() + 60) == .success else {
        FileHandle.standardError.write("FAIL: swift: no answer within 60 s\n".data(using: .utf8)!)
        exit(1)
    }
    return result!
}

/// What a refusal reports: this client gives the status and the gateway's message.
func refusal(_ error: Error?) -> String {
    guard let error = error as? AlgoError else { return "not refused: \(String(describing: error))" }
    return error.localizedDescription
}

var (response, error) = wait { done in client.algo(algoUri: "algo://demo/Hello/0.1.1").pipe(text: "Swift") { done(($0, $1)) } }
expect("text", response.getText(), "Hello Swift")
(response, error) = wait { done in client.algo(algoUri: "util/Echo/1.0.0").pipe(json: ["a": [1, 2]]) { done(($0, $1)) } }
expect("JSON", (response.getJson() as? [String: [Int]]) ?? [:], ["a": [1, 2]])
(response, error) = wait { done in client.algo(algoUri: "util/Echo/1.0.0").pipe(data: Data([0, 1, 255])) { done(($0, $1)) } }
expect("binary", response.getData(), Data([0, 1, 255]))
(response, error) = wait { done in client.algo(algoUri: "util/Echo/1.0.0").pipe(rawJson: "\"x\"") { done(($0, $1)) } }
expect("raw JSON", response.getText(), "x")
(response, error) = wait { done in client.algo(algoUri: "demo/Hello/0.1.1").set(timeout: 20).set(stdout: true).pipe(text: "options") { done(($0, $1)) } }
expect("options", response.getText(), "Hello options")
(response, error) = wait { done in client.algo(algoUri: "util/Echo/1.0.0").pipe(text: outside + "/secret") { done(($0, $1)) } }
expect("input outside the prefix", refusal(error), "403 algorithm input references \(outside)/secret, outside client 'limited' data prefixes (data://.my/limited/)")
(response, error) = wait { done in client.algo(algoUri: "demo/Nope/1.0.0").pipe(text: "x") { done(($0, $1)) } }
expect("unknown algorithm", refusal(error), "404 algorithm algo://demo/Nope/1.0.0 not found")
print("ok   swift: algorithm calls (algo://, text, JSON, binary, raw JSON, timeout and stdout), refusals")

let top = client.dir(root)
if !wait({ done in top.exists { exists, _ in done(exists) } }) {
    expect("top create", refusal(wait { done in top.create { done($0) } }), "not refused: nil")
}
let dir = client.dir(root + "/swift dir")   // a space, which this client sends as %20
if wait({ done in dir.exists { exists, _ in done(exists) } }) {
    _ = wait { done in dir.delete(force: true) { done(($0, $1)) } }
}
expect("dir create", refusal(wait { done in dir.create { done($0) } }), "not refused: nil")
expect("dir exists", wait { done in dir.exists { exists, _ in done(exists) } }, true)
let text = dir.file(name: "note.txt")
expect("file put", refusal(wait { done in text.put(string: "h\u{e9}llo") { done($0) } }), "not refused: nil")
expect("file getString", wait { done in text.getString { string, _ in done(string) } }, "h\u{e9}llo")
expect("file exists", wait { done in text.exists { exists, _ in done(exists) } }, true)
let blob = dir.file(name: "blob.bin")
expect("binary put", refusal(wait { done in blob.put(data: Data([9, 0, 255])) { done($0) } }), "not refused: nil")
expect("binary file", wait { done in blob.getData { data, _ in done(data) } }, Data([9, 0, 255]))
expect("missing file", wait { done in dir.file(name: "missing").exists { exists, _ in done(exists) } }, false)
var names: [String] = []
let listed: Error? = wait { done in _ = dir.forEach(file: { file in if let file { names.append(file.basename()) } }, completion: { done($0) }) }
expect("listing", "\(names) \(String(describing: listed))", "[\"blob.bin\", \"note.txt\"] nil")
expect("write outside the prefix", refusal(wait { done in client.file(outside + "/x").put(string: "no") { done($0) } }),
       "403 client 'limited' may not access \(outside)/x: outside its data prefixes (data://.my/limited/)")
expect("file delete", refusal(wait { done in blob.delete { done($0) } }), "not refused: nil")
expect("file deleted", wait { done in blob.exists { exists, _ in done(exists) } }, false)
let (_, notForced): (AlgoDataObject.DeletedResult?, Error?) = wait { done in dir.delete(force: false) { done(($0, $1)) } }
expect("dir delete, not empty", refusal(notForced), "400 directory \(root)/swift dir is not empty; delete with force=true")
let (_, forced): (AlgoDataObject.DeletedResult?, Error?) = wait { done in dir.delete(force: true) { done(($0, $1)) } }
expect("dir delete, forced", refusal(forced), "not refused: nil")
expect("dir gone", wait { done in dir.exists { exists, _ in done(exists) } }, false)
let stranger = Algorithmia.client(simpleKey: "not-a-key", baseUrl: environment["ALGORITHMIA_API"]!)
(response, error) = wait { done in stranger.algo(algoUri: "demo/Hello/0.1.1").pipe(text: "x") { done(($0, $1)) } }
expect("unknown key", refusal(error), "401 authorization failed: unknown algogate key")
print("ok   swift: directories (a name with a space; create, exists, list, delete forced and not), files (text, binary, exists, delete), refusals")
