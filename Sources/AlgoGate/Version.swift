/// algogate's version, shown by `algogate --version` and in the `Server` header.
public enum AlgoGateVersion {
    public static let string = "0.1.0"
}
