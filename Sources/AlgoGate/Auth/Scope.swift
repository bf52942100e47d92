/// What a client key may do; each route class needs one scope (see `RouteClass.requiredScope`).
public enum Scope: String, Sendable, Codable, CaseIterable {
    case algo
    case dataRead = "data:read"
    case dataWrite = "data:write"
    case manage
    case admin

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let scope = Scope(rawValue: text) else {
            throw DecodingError.dataCorrupted(.init(
                codingPath: decoder.codingPath,
                debugDescription: "unknown scope '\(text)'; use \(Scope.allCases.map(\.rawValue).joined(separator: ", "))"))
        }
        self = scope
    }
}
