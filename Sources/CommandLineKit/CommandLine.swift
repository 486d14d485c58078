import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The small argument parser both tools share ("packages: none" means we keep our own).
/// Grammar: `--name value`, `--name=value`, `-x value` for declared short names, boolean `--flag`, `--` ends
/// options. Every command gets `--help`. Usage mistakes are `UsageError` (exit 64, like sysexits' EX_USAGE).

public struct OptionSpec {
    public let name: String
    public let short: Character?
    public let valueName: String?
    public let help: String
    public let repeatable: Bool

    /// An option that takes a value (`valueName` shown in help).
    public static func value(_ name: String, short: Character? = nil, _ valueName: String, _ help: String,
                             repeatable: Bool = false) -> OptionSpec {
        OptionSpec(name: name, short: short, valueName: valueName, help: help, repeatable: repeatable)
    }

    /// A boolean flag.
    public static func flag(_ name: String, short: Character? = nil, _ help: String) -> OptionSpec {
        OptionSpec(name: name, short: short, valueName: nil, help: help, repeatable: false)
    }

    var takesValue: Bool { valueName != nil }
}

public struct CommandSpec {
    public let name: String
    public let usage: String
    public let summary: String
    public let options: [OptionSpec]
    public let positionals: ClosedRange<Int>
    public let notes: String

    public init(name: String, usage: String, summary: String, options: [OptionSpec], positionals: ClosedRange<Int> = 0...0,
                notes: String = "") {
        self.name = name; self.usage = usage; self.summary = summary; self.options = options
        self.positionals = positionals; self.notes = notes
    }

    public var helpText: String {
        var lines = ["usage: \(usage)", "", summary, ""]
        if !options.isEmpty { lines.append("options:") }
        let labels = options.map { o -> String in
            var s = o.short.map { "-\($0), " } ?? "    "
            s += "--\(o.name)"
            if let v = o.valueName { s += " \(v)" }
            return s
        } + ["    --help"]
        let width = (labels.map(\.count).max() ?? 0) + 2
        for (label, help) in zip(labels, options.map(\.help) + ["show this help"]) {
            lines.append("  " + label.padding(toLength: width, withPad: " ", startingAt: 0) + help)
        }
        if !notes.isEmpty { lines += ["", notes] }
        return lines.joined(separator: "\n")
    }
}

public struct UsageError: Error, CustomStringConvertible {
    public let message: String
    public let command: String
    public init(_ message: String, command: String) { self.message = message; self.command = command }
    public var description: String { message }
}

/// `--help` was given: print `text` to stdout and exit 0.
public struct HelpRequested: Error {
    public let text: String
}

public struct ParsedArguments {
    public let command: String
    public private(set) var positionals: [String] = []
    private var values: [String: [String]] = [:]
    private var flags: Set<String> = []

    init(command: String) { self.command = command }

    public func flag(_ name: String) -> Bool { flags.contains(name) }
    public func string(_ name: String) -> String? { values[name]?.last }
    public func strings(_ name: String) -> [String] { values[name] ?? [] }
    public func has(_ name: String) -> Bool { values[name] != nil || flags.contains(name) }

    public func int(_ name: String, default fallback: Int? = nil, range: ClosedRange<Int>? = nil) throws -> Int? {
        guard let text = string(name) else { return fallback }
        guard let v = Int(text) else { throw UsageError("--\(name) expects a whole number, got '\(text)'", command: command) }
        if let range, !range.contains(v) {
            throw UsageError("--\(name) must be between \(range.lowerBound) and \(range.upperBound), got \(v)", command: command)
        }
        return v
    }

    public func double(_ name: String, default fallback: Double? = nil, range: ClosedRange<Double>? = nil) throws -> Double? {
        guard let text = string(name) else { return fallback }
        guard let v = Double(text), v.isFinite else { throw UsageError("--\(name) expects a number, got '\(text)'", command: command) }
        if let range, !range.contains(v) {
            throw UsageError("--\(name) must be between \(range.lowerBound) and \(range.upperBound), got \(v)", command: command)
        }
        return v
    }

    /// The value of `name`, which must be one of `choices`.
    public func choice(_ name: String, _ choices: [String], default fallback: String) throws -> String {
        guard let v = string(name) else { return fallback }
        guard choices.contains(v) else {
            throw UsageError("--\(name) must be one of \(choices.joined(separator: ", ")), got '\(v)'", command: command)
        }
        return v
    }

    fileprivate mutating func add(_ option: OptionSpec, _ value: String?) throws {
        if let value {
            if values[option.name] != nil && !option.repeatable {
                throw UsageError("--\(option.name) was given more than once", command: command)
            }
            values[option.name, default: []].append(value)
        } else {
            flags.insert(option.name)
        }
    }

    fileprivate mutating func addPositional(_ value: String) { positionals.append(value) }
}

public enum ArgumentParser {
    public static func parse(_ arguments: [String], spec: CommandSpec) throws -> ParsedArguments {
        var result = ParsedArguments(command: spec.name)
        var i = 0
        var optionsEnded = false
        func option(named name: String) throws -> OptionSpec {
            guard let o = spec.options.first(where: { $0.name == name }) else {
                throw UsageError("unknown option --\(name)", command: spec.name)
            }
            return o
        }
        while i < arguments.count {
            let arg = arguments[i]
            i += 1
            if optionsEnded || arg == "-" || !arg.hasPrefix("-") {
                result.addPositional(arg)
                continue
            }
            if arg == "--" { optionsEnded = true; continue }
            if arg == "--help" || arg == "-h" { throw HelpRequested(text: spec.helpText) }
            let o: OptionSpec
            var inlineValue: String? = nil
            if arg.hasPrefix("--") {
                let body = arg.dropFirst(2)
                if let eq = body.firstIndex(of: "=") {
                    o = try option(named: String(body[..<eq]))
                    inlineValue = String(body[body.index(after: eq)...])
                } else {
                    o = try option(named: String(body))
                }
            } else {
                guard arg.count == 2, let found = spec.options.first(where: { $0.short == arg.last }) else {
                    throw UsageError("unknown option \(arg)", command: spec.name)
                }
                o = found
            }
            if o.takesValue {
                if inlineValue == nil {
                    guard i < arguments.count else { throw UsageError("--\(o.name) needs a value (\(o.valueName!))", command: spec.name) }
                    inlineValue = arguments[i]
                    i += 1
                }
                try result.add(o, inlineValue)
            } else {
                if inlineValue != nil { throw UsageError("--\(o.name) takes no value", command: spec.name) }
                try result.add(o, nil)
            }
        }
        let n = result.positionals.count
        if !spec.positionals.contains(n) {
            if n < spec.positionals.lowerBound {
                throw UsageError("missing argument (usage: \(spec.usage))", command: spec.name)
            }
            throw UsageError("unexpected argument '\(result.positionals[spec.positionals.upperBound])'", command: spec.name)
        }
        return result
    }
}

/// Runs a tool's main function with the project's conventions for errors and exit codes:
/// usage errors → message + hint on stderr, exit 64; other errors → one line on stderr, exit 1.
public enum ToolMain {
    public static func run(tool: String, _ body: () throws -> Void) -> Never {
        // A reader that goes away (`| head -c1`) is a write error to report, not a signal that kills the tool.
        signal(SIGPIPE, SIG_IGN)
        do {
            try body()
            exit(0)
        } catch let help as HelpRequested {
            do { try Output.line(help.text) } catch { printError("\(tool): error: \(error)"); exit(1) }
            exit(0)
        } catch let usage as UsageError {
            printError("\(usage.command): \(usage.message)\nTry '\(usage.command) --help'.")
            exit(64)
        } catch {
            printError("\(tool): error: \(error)")
            exit(1)
        }
    }
}

/// A failed write to standard output (closed, full disk, broken pipe).
public struct OutputError: Error, CustomStringConvertible {
    public let reason: String
    public var description: String { "cannot write to standard output: \(reason)" }
}

/// Standard output through write(2), unbuffered: every failure is thrown as an `OutputError` (Foundation's
/// FileHandle traps on them, and print() loses them in stdio's buffer).
public enum Output {
    public static func write(_ text: String) throws {
        if let error = writeAll(STDOUT_FILENO, text) { throw OutputError(reason: String(cString: strerror(error))) }
    }

    public static func line(_ text: String) throws { try write(text + "\n") }
}

/// Writes a line to stderr; a closed or failing stderr is ignored (there is nowhere left to report it).
public func printError(_ text: String) {
    StandardError.write(text + "\n")
}

enum StandardError {
    static func write(_ text: String) { _ = writeAll(STDERR_FILENO, text) }
}

/// All of `text` to `fd` through write(2), retrying short and interrupted writes: nil, or the errno that stopped it.
private func writeAll(_ fd: Int32, _ text: String) -> Int32? {
    var bytes = Array(text.utf8)[...]
    while !bytes.isEmpty {
        let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n < 0 { return errno }
        if n == 0 { return EIO }
        bytes = bytes.dropFirst(n)
    }
    return nil
}
