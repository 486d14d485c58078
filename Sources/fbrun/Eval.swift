import CommandLineKit
import Foundation
import Runtime

let evalSpec = CommandSpec(
    name: "fbrun eval",
    usage: "fbrun eval --model M.fbm --data questions.jsonl [--compare M2.fbm] [--answers OUT.jsonl] [--limit N] [--threads N] [--json]",
    summary: "Answers every question of a question file greedily and prints exact-match accuracy overall and per family;\n" +
        "with --compare, also the second model's accuracy and how often its answers equal the first's.\n" +
        "The file holds one JSON object per line: {\"image\": path relative to the file, \"question\", \"answer\", \"family\"}.",
    options: [
        .value("model", short: "m", "M.fbm", "the model file"),
        .value("data", "FILE", "the question file (JSON Lines)"),
        .value("compare", "M2.fbm", "a second model to answer the same questions"),
        .value("answers", "OUT.jsonl", "also write each question with the model's answer (\"predicted\")"),
        .value("limit", "N", "only the first N questions"),
        .value("threads", short: "t", "N", "threads (default: all cores)"),
        .flag("json", "print one JSON object instead of the table"),
    ])

func runEval(_ args: [String]) throws {
    let a = try ArgumentParser.parse(args, spec: evalSpec)
    let path = try requiredModel(a)
    guard let data = a.string("data") else { throw UsageError("--data is required", command: a.command) }
    let limit = try a.int("limit", default: Int.max, range: 1...Int.max)!
    let threadCount = try threads(a)
    let questions = Array(try EvalSet.load(path: data).prefix(limit))

    let first = Evaluator(model: try LoadedModel(path: path, threads: threadCount), threads: threadCount)
    let second = try a.string("compare").map { Evaluator(model: try LoadedModel(path: $0, threads: threadCount), threads: threadCount) }
    var score = EvalScore(), secondScore = EvalScore()
    let progress = ProgressBar(linesWhenPiped: true)
    let clock = Date()
    var lines = ""
    for q in questions {
        let answer = try first.answer(q)
        let other = try second?.answer(q)
        score.add(q, answer: answer, other: other)
        if let other { secondScore.add(q, answer: other) }
        let done = score.overall.questions
        progress.update(fraction: Double(done) / Double(questions.count),
                        text: String(format: "%d/%d questions  accuracy %.3f", done, questions.count, score.overall.accuracy))
        var line = ["image": q.image, "question": q.question, "answer": q.answer, "family": q.family, "predicted": answer]
        if let other { line["compare_predicted"] = other }
        lines += String(decoding: try JSONSerialization.data(withJSONObject: line, options: [.sortedKeys]), as: UTF8.self) + "\n"
    }
    progress.finish()
    if let file = a.string("answers") { try AtomicFile.write(Data(lines.utf8), to: file) }
    let seconds = Date().timeIntervalSince(clock)

    if a.flag("json") {
        var object: [String: Any] = [
            "model": path, "data": data, "questions": questions.count, "seconds": seconds,
            "score": try JSONSerialization.jsonObject(with: JSONEncoder().encode(score)),
        ]
        if second != nil {
            object["compare"] = a.string("compare")!
            object["compare_score"] = try JSONSerialization.jsonObject(with: JSONEncoder().encode(secondScore))
        }
        try Output.line(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
        return
    }
    try Output.line(EvalReport.table(score, second: second == nil ? nil : secondScore))
    printError(String(format: "%d questions in %.1f s (%.0f ms each%@)", questions.count, seconds,
                      seconds * 1000 / Double(questions.count), second == nil ? "" : ", both models"))
}

enum EvalReport {
    static func table(_ score: EvalScore, second: EvalScore?) -> String {
        var header = ["family", "questions", "accuracy"]
        if second != nil { header += ["compared model", "agreement"] }
        var rows = [header]
        func row(_ name: String, _ f: EvalScore.Family, _ g: EvalScore.Family?) -> [String] {
            var r = [name, "\(f.questions)", String(format: "%.1f%%", f.accuracy * 100)]
            if let g { r += [String(format: "%.1f%%", g.accuracy * 100), String(format: "%.1f%%", f.agreement * 100)] }
            return r
        }
        for name in score.families.keys.sorted() {
            rows.append(row(name, score.families[name]!, second?.families[name]))
        }
        rows.append(row("overall", score.overall, second?.overall))
        let widths = header.indices.map { c in rows.map { $0[c].count }.max()! }
        return rows.map { r in
            r.indices.map { c in c == 0 ? r[c].padding(toLength: widths[c], withPad: " ", startingAt: 0)
                                        : String(repeating: " ", count: widths[c] - r[c].count) + r[c] }
                .joined(separator: "  ")
        }.joined(separator: "\n")
    }
}
