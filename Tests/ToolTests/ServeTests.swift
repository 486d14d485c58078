import Converter
import Foundation
import Runtime
import TestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// fbserve as a client meets it: started on a free port, spoken to over HTTP, stopped with SIGTERM. Answers are
/// checked against fbrun's own generation of the same prompt (greedy), on the trained shapes model at 4 bits; the
/// random-weight tiny model stands in where a long answer is needed (it rarely ends on its own).
final class ServeTests: XCTestCase {
    static let folder = TemporaryFolder("serve")

    override class func tearDown() {
        folder.cleanup()
        super.tearDown()
    }

    static var converted: [String: String] = [:]

    func model(_ name: String, input: String, bits: Int) throws -> String {
        if let path = Self.converted[name] { return path }
        var options = ConversionOptions()
        options.bits = bits
        let path = Self.folder.file("\(name).fbm")
        _ = try FBMConverter.convert(input: try Fixtures.require(input), output: path, options: options)
        Self.converted[name] = path
        return path
    }

    var shapes: String { get throws { try model("shapes-q4", input: Fixtures.shapesModel + "/model.safetensors", bits: 4) } }
    var tinyRandom: String { get throws { try model("tiny-q8", input: Fixtures.tiny, bits: 8) } }

    static let exampleImage = Fixtures.repositoryRoot.appendingPathComponent("assets/example.png").path

    static func dataURL(_ path: String) throws -> String {
        let kind = path.hasSuffix(".png") ? "png" : "jpeg"
        return "data:image/\(kind);base64," + (try Data(contentsOf: URL(fileURLWithPath: path))).base64EncodedString()
    }

    static func userMessage(_ question: String, image: String?) throws -> [String: Any] {
        guard let image else { return ["role": "user", "content": question] }
        return ["role": "user", "content": [["type": "image_url", "image_url": ["url": try dataURL(image)]],
                                            ["type": "text", "text": question]]]
    }

    /// fbrun's greedy answer (what the server must say).
    func fbrunAnswer(_ model: String, _ prompt: String, image: String?, raw: Bool = false, maxTokens: Int = 256) throws -> String {
        var args = ["--model", model, "--prompt", prompt, "--temperature", "0", "--max-tokens", String(maxTokens)]
        if let image { args += ["--image", image] }
        if raw { args.append("--raw") }
        let r = try Tools.run("fbrun", args)
        XCTAssertEqual(r.status, 0, r.stderr)
        return String(r.stdout.dropLast())  // fbrun ends the answer with a newline
    }

    func testChatAnswersEqualFbrunsWholeAndStreamed() throws {
        let model = try shapes
        let server = try ServerProcess(model: model, ["--parallel", "2"])
        defer { XCTAssertEqual(server.stop().status, 0) }
        for question in ["How many shapes are there?", "Where is the red triangle?", "What is in the picture?"] {
            let expected = try fbrunAnswer(model, question, image: Self.exampleImage)
            let body: [String: Any] = ["model": "shapes", "temperature": 0, "messages": [try Self.userMessage(question, image: Self.exampleImage)]]
            let whole = try server.post("/v1/chat/completions", body)
            XCTAssertEqual(whole.status, 200, whole.text)
            XCTAssertEqual(whole.json["object"] as? String, "chat.completion")
            XCTAssertEqual(whole.json.answerText, expected, question)
            XCTAssertEqual(whole.json.finishReason, "stop")
            let usage = whole.json.usage
            let promptTokens = try LoadedModel(path: model, threads: 1).chatPromptIds(question: question, withImage: true).count
            XCTAssertEqual(usage["prompt_tokens"] as? Int, promptTokens)
            XCTAssertEqual(usage["total_tokens"] as? Int, promptTokens + (usage["completion_tokens"] as? Int ?? -1))

            var streamed = body
            streamed["stream"] = true
            streamed["stream_options"] = ["include_usage": true]
            let reply = try server.post("/v1/chat/completions", streamed)
            XCTAssertEqual(reply.status, 200)
            XCTAssertEqual(reply.headers["content-type"], "text/event-stream")
            let events = reply.events
            XCTAssertEqual(events.last, "[DONE]")
            let chunks = events.dropLast().compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
            XCTAssertEqual(chunks.count, events.count - 1, "every event but the last is a JSON chunk")
            XCTAssertTrue(chunks.allSatisfy { $0["object"] as? String == "chat.completion.chunk" })
            let deltas = chunks.compactMap { (($0["choices"] as? [[String: Any]])?.first?["delta"] as? [String: Any]) }
            XCTAssertEqual(deltas.first?["role"] as? String, "assistant")
            XCTAssertEqual(deltas.compactMap { $0["content"] as? String }.joined(), expected, question)
            let reasons = chunks.compactMap { (($0["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String) }
            XCTAssertEqual(reasons, ["stop"])
            XCTAssertEqual((chunks.last?["usage"] as? [String: Any])?["completion_tokens"] as? Int, usage["completion_tokens"] as? Int)
        }
    }

    func testCompletionsModelsHealthAndCurl() throws {
        let model = try shapes
        let server = try ServerProcess(model: model)
        defer { server.stop() }
        let prompt = "<|im_start|>user\nHow many shapes are there?<|im_end|>\n<|im_start|>assistant\n"
        let reply = try server.post("/v1/completions", ["prompt": prompt, "temperature": 0, "max_tokens": 20])
        XCTAssertEqual(reply.status, 200, reply.text)
        XCTAssertEqual(reply.json["object"] as? String, "text_completion")
        // /v1/completions encodes with the BOS token, as fbrun --raw does with the template's BOS text.
        XCTAssertEqual(reply.json.answerText, try fbrunAnswer(model, "<|startoftext|>" + prompt, image: nil, raw: true, maxTokens: 20))
        let models = try server.request("GET", "/v1/models").json
        XCTAssertEqual(((models["data"] as? [[String: Any]])?.first)?["id"] as? String, "shapes-q4")
        XCTAssertEqual(try server.request("GET", "/health").json["status"] as? String, "ok")

        // curl, as a shell user would call it.
        let body = try JSONSerialization.data(withJSONObject: ["messages": [try Self.userMessage("What color is the circle?", image: Self.exampleImage)],
                                                               "temperature": 0])
        let file = Self.folder.file("curl-body.json")
        try body.write(to: URL(fileURLWithPath: file))
        let curl = Process()
        curl.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        curl.arguments = ["-sS", "http://127.0.0.1:\(server.port)/v1/chat/completions", "-H", "Content-Type: application/json",
                          "--data-binary", "@" + file]
        let out = Pipe()
        curl.standardOutput = out
        try curl.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        curl.waitUntilExit()
        XCTAssertEqual(curl.terminationStatus, 0)
        let json = (try JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
        XCTAssertEqual(json.answerText, try fbrunAnswer(model, "What color is the circle?", image: Self.exampleImage))
    }

    /// 200 questions about 25 held-out images from 8 clients at once, 4 sequences decoded together: every answer equals
    /// the one generated alone, and none is lost.
    func testTwoHundredRequestsFromEightConcurrentClients() throws {
        let model = try shapes
        let all = try EvalSet.load(path: try Fixtures.require(Fixtures.shapesModel + "/eval/questions.jsonl"))
        let questions = Array(all.prefix(50))
        let evaluator = Evaluator(model: try LoadedModel(path: model, threads: 2), threads: 2)
        let expected = try questions.map { try evaluator.answer($0) }
        let bodies = try questions.map { q -> Data in
            try JSONSerialization.data(withJSONObject: ["temperature": 0, "max_tokens": 48,
                                                        "messages": [try Self.userMessage(q.question, image: q.image)]])
        }
        let server = try ServerProcess(model: model, ["--parallel", "4", "--max-queue", "8"])
        defer { server.stop() }
        final class Results: @unchecked Sendable {
            let lock = NSLock()
            var answers: [Int: String] = [:]
            var failures: [String] = []
        }
        let results = Results()
        // Eight threads of their own (concurrentPerform would run only as many as there are cores).
        let group = DispatchGroup()
        for client in 0..<8 {
            group.enter()
            Thread {
            defer { group.leave() }
            for k in 0..<25 {
                let index = client * 25 + k, q = index % questions.count
                do {
                    let reply = try server.request("POST", "/v1/chat/completions", body: bodies[q])
                    results.lock.lock()
                    if reply.status == 200, let text = reply.json.answerText {
                        results.answers[index] = text.trimmingCharacters(in: .whitespacesAndNewlines)
                    } else {
                        results.failures.append("request \(index): \(reply.status) \(reply.text)")
                    }
                    results.lock.unlock()
                } catch {
                    results.lock.lock(); results.failures.append("request \(index): \(error)"); results.lock.unlock()
                }
            }
            }.start()
        }
        group.wait()
        XCTAssertEqual(results.failures, [])
        XCTAssertEqual(results.answers.count, 200)
        for (index, answer) in results.answers where answer != expected[index % questions.count] {
            XCTFail("request \(index) (\(questions[index % questions.count].question)): \(answer) != \(expected[index % questions.count])")
        }
        XCTAssertEqual(try server.metric("fbserve_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"}"), 200)
    }

    /// A follow-up turn reuses the caches of the conversation so far (and the image's vision result), and answers
    /// exactly as a fresh run of the whole conversation does.
    func testFollowUpReusesThePrefixAndAnswersAsAFreshRun() throws {
        let model = try shapes
        let server = try ServerProcess(model: model)
        defer { server.stop() }
        let first = try Self.userMessage("What is in the picture?", image: Self.exampleImage)
        let r1 = try server.post("/v1/chat/completions", ["temperature": 0, "messages": [first]])
        let answer = try XCTUnwrap(r1.json.answerText)
        let r2 = try server.post("/v1/chat/completions", ["temperature": 0, "messages": [
            first, ["role": "assistant", "content": answer], ["role": "user", "content": "Is there a blue triangle?"]]])
        XCTAssertEqual(r2.status, 200, r2.text)
        let cached = (r2.json.usage["prompt_tokens_details"] as? [String: Any])?["cached_tokens"] as? Int ?? 0
        XCTAssertGreaterThan(cached, 15, "the first turn's prompt and answer come from the caches")
        let conversation = "<|startoftext|><|im_start|>user\n<image>\nWhat is in the picture?<|im_end|>\n<|im_start|>assistant\n" +
            answer + "<|im_end|>\n<|im_start|>user\nIs there a blue triangle?<|im_end|>\n<|im_start|>assistant\n"
        XCTAssertEqual(r2.json.answerText, try fbrunAnswer(model, conversation, image: Self.exampleImage, raw: true))
        XCTAssertEqual(try server.metric("fbserve_prompt_tokens_reused_total"), Double(cached))
    }

    func testBadRequestsGetOpenAIErrorsAndTheServerKeepsServing() throws {
        let model = try shapes
        let server = try ServerProcess(model: model, ["--ctx", "64", "--max-body-mb", "1"])
        defer { XCTAssertEqual(server.stop().status, 0) }
        let image = try Self.dataURL(Self.exampleImage)
        func part(_ url: String) -> [String: Any] { ["role": "user", "content": [["type": "image_url", "image_url": ["url": url]]]] }
        let cases: [(String, Data, Int, String?)] = [
            ("malformed JSON", Data("{\"messages\": [".utf8), 400, nil),
            ("messages not an array", try json(["messages": "hi"]), 400, "messages"),
            ("empty messages", try json(["messages": []]), 400, "messages"),
            ("unknown role", try json(["messages": [["role": "robot", "content": "hi"]]]), 400, "messages[0].role"),
            ("no content", try json(["messages": [["role": "user"]]]), 400, "messages[0].content"),
            ("empty content", try json(["messages": [["role": "user", "content": ""]]]), 400, "messages[0].content"),
            ("content a number", try json(["messages": [["role": "user", "content": 5]]]), 400, "messages[0].content"),
            ("temperature a string", try json(["messages": [["role": "user", "content": "hi"]], "temperature": "hot"]), 400, "temperature"),
            ("temperature out of range", try json(["messages": [["role": "user", "content": "hi"]], "temperature": 7]), 400, "temperature"),
            ("max_tokens zero", try json(["messages": [["role": "user", "content": "hi"]], "max_tokens": 0]), 400, "max_tokens"),
            ("stream not a boolean", try json(["messages": [["role": "user", "content": "hi"]], "stream": "yes"]), 400, "stream"),
            ("n of 2", try json(["messages": [["role": "user", "content": "hi"]], "n": 2]), 400, "n"),
            ("unknown part type", try json(["messages": [["role": "user", "content": [["type": "audio"]]]]]), 400, "messages[0].content[0].type"),
            ("http image", try json(["messages": [part("https://example.com/cat.png")]]), 400, "messages[0].content[0].image_url"),
            ("bad base64", try json(["messages": [part("data:image/png;base64,@@@@")]]), 400, "messages[0].content[0].image_url"),
            ("not an image", try json(["messages": [part("data:image/png;base64," + Data("hello".utf8).base64EncodedString())]]), 400,
             "messages[0].content[0].image_url"),
            ("truncated PNG", try json(["messages": [part(String(image.prefix(300)))]]), 400, "messages[0].content[0].image_url"),
            ("two images", try json(["messages": [["role": "user", "content": [["type": "image_url", "image_url": ["url": image]],
                                                                                 ["type": "image_url", "image_url": ["url": image]]]]]]),
             400, "messages[0].content[1]"),
            ("prompt over --ctx", try json(["messages": [["role": "user", "content": String(repeating: "How many shapes are there? ", count: 20)]]]),
             400, "messages"),
            ("body over the limit", Data(repeating: UInt8(ascii: " "), count: 2 << 20), 413, nil),
        ]
        for (label, body, status, param) in cases {
            let reply = try server.request("POST", "/v1/chat/completions", body: body)
            XCTAssertEqual(reply.status, status, "\(label): \(reply.text)")
            XCTAssertNotNil(reply.errorMessage, "\(label): \(reply.text)")
            if let param { XCTAssertEqual(reply.errorParam, param, "\(label): \(reply.text)") }
        }
        XCTAssertEqual(try server.request("GET", "/nowhere").status, 404)
        XCTAssertEqual(try server.request("DELETE", "/v1/models").status, 405)
        XCTAssertEqual(try server.post("/v1/completions", ["prompt": 3]).errorParam, "prompt")
        let text = try server.post("/v1/chat/completions", ["temperature": 0, "messages": [try Self.userMessage("How many shapes are there?", image: Self.exampleImage)]])
        XCTAssertEqual(text.json.answerText, try fbrunAnswer(model, "How many shapes are there?", image: Self.exampleImage))
    }

    func testAPIKeyIsRequiredWhenSet() throws {
        let server = try ServerProcess(model: try shapes, ["--api-key", "sesame"])
        defer { server.stop() }
        let body: [String: Any] = ["messages": [["role": "user", "content": "How many shapes are there?"]], "max_tokens": 4]
        let none = try server.post("/v1/chat/completions", body)
        XCTAssertEqual(none.status, 401)
        XCTAssertEqual((none.json["error"] as? [String: Any])?["type"] as? String, "authentication_error")
        XCTAssertEqual(try server.post("/v1/chat/completions", body, headers: ["Authorization": "Bearer wrong"]).status, 401)
        XCTAssertEqual(try server.request("GET", "/v1/models").status, 401)
        XCTAssertEqual(try server.post("/v1/chat/completions", body, headers: ["Authorization": "Bearer sesame"]).status, 200)
        XCTAssertEqual(try server.request("GET", "/health").status, 200, "health checks need no key")
    }

    /// Past --parallel and --max-queue a request gets 429; a client that hangs up stops its generation.
    func testFullQueueGets429AndADisconnectStopsGeneration() throws {
        let server = try ServerProcess(model: try tinyRandom, ["--parallel", "1", "--max-queue", "0", "--ctx", "8192"])
        defer { server.stop() }
        let long: [String: Any] = ["messages": [["role": "user", "content": "Tell me everything."]], "temperature": 0,
                                   "max_tokens": 8000, "stream": true]
        let fd = try HTTPClient.connect(port: server.port)
        try HTTPClient.send(fd, method: "POST", path: "/v1/chat/completions", body: try json(long), headers: [:])
        var buffer = [UInt8](repeating: 0, count: 4096)
        XCTAssertGreaterThan(recv(fd, &buffer, buffer.count, 0), 0, "the stream started")
        XCTAssertEqual(try server.metric("fbserve_requests_running"), 1)
        let refused = try server.post("/v1/chat/completions", ["messages": [["role": "user", "content": "hi"]]])
        XCTAssertEqual(refused.status, 429, refused.text)
        XCTAssertEqual((refused.json["error"] as? [String: Any])?["type"] as? String, "rate_limit_error")
        close(fd)
        var waited = 0.0
        while try server.metric("fbserve_requests_running") > 0 && waited < 10 { usleep(50_000); waited += 0.05 }
        XCTAssertEqual(try server.metric("fbserve_requests_running"), 0, "the generation stopped after the client left")
        XCTAssertEqual(try server.metric("fbserve_requests_cancelled_total"), 1)
        XCTAssertLessThan(try server.metric("fbserve_completion_tokens_total"), 8000)
        XCTAssertEqual(try server.post("/v1/chat/completions", ["messages": [["role": "user", "content": "hi"]], "max_tokens": 2]).status, 200)
    }

    /// A client waiting for a whole (not streamed) answer that hangs up stops its generation too.
    func testDisconnectDuringAWholeAnswerStopsGeneration() throws {
        let server = try ServerProcess(model: try tinyRandom, ["--ctx", "8192"])
        defer { server.stop() }
        let long: [String: Any] = ["messages": [["role": "user", "content": "Tell me everything."]], "temperature": 0, "max_tokens": 8000]
        let fd = try HTTPClient.connect(port: server.port)
        try HTTPClient.send(fd, method: "POST", path: "/v1/chat/completions", body: try json(long), headers: [:])
        var waited = 0.0
        while try server.metric("fbserve_requests_running") < 1 && waited < 10 { usleep(20_000); waited += 0.02 }
        XCTAssertEqual(try server.metric("fbserve_requests_running"), 1, "the answer is being generated")
        close(fd)
        waited = 0
        while try server.metric("fbserve_requests_running") > 0 && waited < 10 { usleep(50_000); waited += 0.05 }
        XCTAssertEqual(try server.metric("fbserve_requests_running"), 0, "the generation stopped after the client left")
        XCTAssertEqual(try server.metric("fbserve_requests_cancelled_total"), 1)
        XCTAssertLessThan(try server.metric("fbserve_completion_tokens_total"), 8000)
    }

    /// SIGTERM lets a running answer finish, refuses nothing half-way, and exits 0.
    func testSIGTERMFinishesTheRunningAnswerAndExitsCleanly() throws {
        let server = try ServerProcess(model: try tinyRandom, ["--ctx", "1024"])
        let body: [String: Any] = ["messages": [["role": "user", "content": "Tell me everything."]], "temperature": 0,
                                   "max_tokens": 300, "stream": true]
        let fd = try HTTPClient.connect(port: server.port)
        defer { close(fd) }
        try HTTPClient.send(fd, method: "POST", path: "/v1/chat/completions", body: try json(body), headers: [:])
        var raw = Data(), buffer = [UInt8](repeating: 0, count: 65536)
        let n = recv(fd, &buffer, buffer.count, 0)
        XCTAssertGreaterThan(n, 0)
        raw.append(contentsOf: buffer[0..<max(0, n)])
        kill(server.process.processIdentifier, SIGTERM)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { break }
            raw.append(contentsOf: buffer[0..<n])
        }
        let reply = try HTTPClient.parse(raw)
        XCTAssertEqual(reply.events.last, "[DONE]")
        XCTAssertTrue(reply.text.contains("\"finish_reason\":\"length\""), "the answer ran to max_tokens")
        let stopped = server.stop()
        XCTAssertEqual(stopped.status, 0, stopped.stderr)
        XCTAssertTrue(stopped.stderr.contains("shutting down"))
    }

    /// Stop strings end the answer before them, whole or streamed; a seed makes sampling repeatable.
    func testStopStringsAndSeededSampling() throws {
        let model = try shapes
        let server = try ServerProcess(model: model)
        defer { server.stop() }
        let full = try fbrunAnswer(model, "What is in the picture?", image: Self.exampleImage)
        let cut = String(full[..<full.range(of: ",")!.lowerBound])
        XCTAssertFalse(cut.isEmpty)
        let body: [String: Any] = ["temperature": 0, "stop": [",", "zzz"],
                                   "messages": [try Self.userMessage("What is in the picture?", image: Self.exampleImage)]]
        let whole = try server.post("/v1/chat/completions", body)
        XCTAssertEqual(whole.json.answerText, cut)
        XCTAssertEqual(whole.json.finishReason, "stop")
        var streamed = body
        streamed["stream"] = true
        let chunks = try server.post("/v1/chat/completions", streamed).events.dropLast()
            .compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        let text = chunks.compactMap { (($0["choices"] as? [[String: Any]])?.first?["delta"] as? [String: Any])?["content"] as? String }
        XCTAssertEqual(text.joined(), cut, "no piece of the stop string is sent")

        let random = try ServerProcess(model: try tinyRandom)
        defer { random.stop() }
        let sampled: [String: Any] = ["messages": [["role": "user", "content": "Say something."]], "temperature": 1,
                                      "top_p": 0.9, "seed": 7, "max_tokens": 24]
        let first = try random.post("/v1/chat/completions", sampled).json.answerText
        XCTAssertNotNil(first)
        XCTAssertEqual(try random.post("/v1/chat/completions", sampled).json.answerText, first)
    }

    /// A text-only LFM2 model: chat works (fbrun's greedy answer), an image is refused naming the part.
    func testTextOnlyModelAnswersAndRefusesImages() throws {
        let dir = Self.folder.file("plain-lfm2")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let source = try SafetensorsFile(path: Fixtures.tiny + "/model.safetensors")
        let tensors = try source.tensorNames().filter { $0.hasPrefix("base_lm.") }.map { name -> (String, [Int], [Float]) in
            (String(name.dropFirst("base_lm.".count)), try source.shape(name), try source.floatArray(name))
        }
        try SafetensorsBuilder.f32(tensors).write(to: URL(fileURLWithPath: dir + "/model.safetensors"))
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Fixtures.tiny + "/config.json"))) as! [String: Any]
        try JSONSerialization.data(withJSONObject: config["text_config"]!).write(to: URL(fileURLWithPath: dir + "/config.json"))
        for f in ["tokenizer.json", "tokenizer_config.json"] {
            try? FileManager.default.copyItem(atPath: Fixtures.tiny + "/" + f, toPath: dir + "/" + f)
        }
        let model = try self.model("plain-lfm2-q8", input: dir, bits: 8)
        let server = try ServerProcess(model: model, ["--parallel", "2"])
        defer { XCTAssertEqual(server.stop().status, 0) }
        let reply = try server.post("/v1/chat/completions", ["temperature": 0, "max_tokens": 12,
                                                            "messages": [["role": "user", "content": "How many shapes are there?"]]])
        XCTAssertEqual(reply.status, 200, reply.text)
        XCTAssertEqual(reply.json.answerText, try fbrunAnswer(model, "How many shapes are there?", image: nil, maxTokens: 12))
        let image = try server.post("/v1/chat/completions", ["messages": [try Self.userMessage("What is it?", image: Self.exampleImage)]])
        XCTAssertEqual(image.status, 400)
        XCTAssertEqual(image.errorParam, "messages[0].content[0]")
        XCTAssertTrue(image.errorMessage?.contains("text-only") == true, image.text)
    }

    /// LFM2-VL through the server: the image (split into tiles) and the question give fbrun's greedy answer, whole
    /// and as the usage's prompt count says (placeholders expanded), twice (the second from the image cache).
    func testLFM2VLImageAnswersAsFbrun() throws {
        let fixture = Fixtures.root + "/lfm2-vl-tiny"
        let model = try self.model("lfm2-vl-q8", input: fixture + "/model", bits: 8)
        let image = fixture + "/image-2.png"
        let server = try ServerProcess(model: model, ["--parallel", "2"])
        defer { XCTAssertEqual(server.stop().status, 0) }
        let question = "What is in the picture?"
        let expected = try fbrunAnswer(model, question, image: image, maxTokens: 8)
        XCTAssertFalse(expected.isEmpty, "fbrun gave no answer to compare with")
        let loaded = try LoadedModel(path: model, threads: 1)
        let promptTokens = try loaded.promptIds(question: question, image: try loaded.encodeImage(path: image)).count
        for _ in 0..<2 {
            let reply = try server.post("/v1/chat/completions", ["temperature": 0, "max_tokens": 8,
                                                                "messages": [try Self.userMessage(question, image: image)]])
            XCTAssertEqual(reply.status, 200, reply.text)
            XCTAssertEqual(reply.json.answerText, expected)
            XCTAssertEqual(reply.json.usage["prompt_tokens"] as? Int, promptTokens)
        }
    }

    func testBadCommandLinesAreRefusedWithAMessage() throws {
        let model = try shapes
        for (args, message) in [(["--host", "localhost"], "not an IPv4 address"), (["--parallel", "0"], "--parallel"),
                                (["--api-key", ""], "--api-key")] {
            let r = try Tools.run("fbserve", ["--model", model, "--port", "0"] + args)
            XCTAssertNotEqual(r.status, 0)
            XCTAssertTrue(r.stderr.contains(message), "\(args): \(r.stderr)")
        }
        let r = try Tools.run("fbserve", ["--model", Self.folder.file("missing.fbm")])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("missing.fbm"), r.stderr)
        let busy = try ServerProcess(model: model)
        defer { busy.stop() }
        let again = try Tools.run("fbserve", ["--model", model, "--port", String(busy.port)])
        XCTAssertNotEqual(again.status, 0)
        XCTAssertTrue(again.stderr.contains("cannot listen"), again.stderr)
    }

    private func json(_ object: Any) throws -> Data { try JSONSerialization.data(withJSONObject: object) }
}
