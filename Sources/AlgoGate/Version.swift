public enum AlgoGateVersion { public static let string = "0.1.0" }
