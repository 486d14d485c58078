// An app's use of the runtime library (the FireboltRuntime product), nothing more:
//
//   swift run -c release ask MODEL.fbm "What is in the picture?" [IMAGE]
import Foundation
import Runtime

let arguments = CommandLine.arguments
guard arguments.count == 3 || arguments.count == 4 else {
    FileHandle.standardError.write(Data("usage: ask MODEL.fbm QUESTION [IMAGE]\n".utf8))
    exit(64)
}
do {
    let model = try ChatModel(path: arguments[1])
    let stats = try model.ask(arguments[2], image: arguments.count == 4 ? arguments[3] : nil) { text in
        print(text, terminator: "")
        return true
    }
    print()
    FileHandle.standardError.write(Data(String(format: "%d tokens, %.1f tokens/s\n", stats.generatedTokens,
                                                    stats.decodeTokensPerSecond).utf8))
} catch {
    FileHandle.standardError.write(Data("ask: error: \(error)\n".utf8))
    exit(1)
}
