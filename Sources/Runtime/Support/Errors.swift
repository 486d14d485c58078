import Foundation

/// The one error type the project reports to users: what went wrong, and with which file.
/// Every message is meant to be printed as is, on one line.
public struct FireboltError: Error, CustomStringConvertible, Equatable {
    public let file: String?
    public let message: String

    public init(_ message: String, file: String? = nil) {
        self.file = file
        self.message = message
    }

    public var description: String {
        if let file { return "\(file): \(message)" }
        return message
    }

    /// The same error, attributed to `file` unless it already names one.
    public func inFile(_ file: String) -> FireboltError {
        self.file == nil ? FireboltError(message, file: file) : self
    }
}
