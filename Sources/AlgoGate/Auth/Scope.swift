/// What a client key may do; each route class needs one scope (see `RouteClass.requiredScope`).
public enum Scope: String, Sendable, Codable, CaseIterable {
    case algo
    case dataRead = "data:read"
    case dataWrite = "data:write"
    case manage
    case admin

    /// Decoded for `ConfigLoader`, an unknown scope is written down as the configuration's problem
    /// and `algo` stands in, so that decoding goes on; the configuration is refused all the same.
    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let scope = Scope(rawValue: text) else {
            let message = "unknown scope '\(text)'; use \(Scope.allCases.map(\.rawValue).joined(separator: ", "))"
            guard let problems = decoder.userInfo[ConfigProblems.key] as? ConfigProblems else {
                throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: message))
            }
            problems.add(ConfigError(field: ConfigError.describe(decoder.codingPath), message: message))
            self = .algo
            return
        }
        self = scope
    }
}
