import Foundation
import Kernels
import Runtime

// The engine: one thread owns the model and `parallel` sequence slots, each with its own caches. Requests wait in a
// bounded queue for a free slot; every step decodes one token for every running request in one pass through the
// decoder (`SequenceSession.decodeTogether`), so the weights — what decode spends its time reading — are read once
// for all of them. A request whose prompt continues what a slot already holds (the previous turn of a conversation,
// with the same image) only prefills the new tokens.

/// What a request asks for, already tokenized and checked.
struct GenerationSpec {
    var promptIds: [Int32]
    /// The decoded image and a hash of its bytes (the vision result is cached by it).
    var image: (key: UInt64, pixels: RGBImage)?
    var sampling: SamplingOptions
    var maxTokens: Int
    var stop: [String]
}

/// How a generation ended, with the counts `usage` reports.
struct GenerationSummary {
    var finishReason: String      // "stop" (end of sequence or a stop string) or "length"
    var promptTokens: Int
    var completionTokens: Int
    /// Prompt tokens whose caches were reused from the slot's previous request.
    var reusedPromptTokens: Int
    var timeToFirstTokenMs: Double
}

enum GenerationEvent {
    case text(String)
    case finished(GenerationSummary)
    case failed(APIError)
}

/// One request's place in the engine: the engine posts events, the connection's thread waits for them.
final class GenerationJob {
    let spec: GenerationSpec
    let submitted = Date()
    private let condition = NSCondition()
    private var events: [GenerationEvent] = []
    private var cancelledFlag = false

    init(spec: GenerationSpec) { self.spec = spec }

    func post(_ event: GenerationEvent) {
        condition.lock()
        events.append(event)
        condition.signal()
        condition.unlock()
    }

    /// The next event, waiting up to `timeout` seconds; nil if none came.
    func nextEvent(timeout: TimeInterval) -> GenerationEvent? {
        condition.lock()
        defer { condition.unlock() }
        let deadline = Date(timeIntervalSinceNow: timeout)
        while events.isEmpty {
            if !condition.wait(until: deadline) { return nil }
        }
        return events.removeFirst()
    }

    /// The client went away: the engine drops the request at its next step.
    func cancel() {
        condition.lock()
        cancelledFlag = true
        condition.unlock()
    }

    var isCancelled: Bool {
        condition.lock()
        defer { condition.unlock() }
        return cancelledFlag
    }
}

/// Counters for /metrics, updated by the engine (under its lock).
struct EngineCounters {
    var promptTokens = 0
    var reusedPromptTokens = 0
    var completionTokens = 0
    /// Time in decode steps, and the rows (one token of one sequence each) they ran.
    var decodeSeconds = 0.0
    var decodeSteps = 0
    var decodedTokens = 0
    var prefillSeconds = 0.0
    var cancelled = 0
    var finished = 0
}

final class Engine {
    let model: LoadedModel
    let parallel: Int
    let contextLength: Int
    let maxQueue: Int

    private let lock = NSCondition()
    private var waiting: [GenerationJob] = []
    private var running = 0
    private var stopping = false
    private var stopped = false
    private(set) var counters = EngineCounters()

    private let slots: [Slot]
    /// Each slot's logits (slot i at i × vocab), and one step's, in step order.
    private let logits: UnsafeMutablePointer<Float>
    private let stepLogits: UnsafeMutablePointer<Float>
    private var images: [(key: UInt64, encoded: EncodedImage)] = []  // most recent last
    private var clock = 0
    private var thread: Thread?

    init(model: LoadedModel, parallel: Int, contextLength: Int, threads: Int, maxQueue: Int) {
        self.model = model
        self.parallel = parallel
        self.contextLength = contextLength
        self.maxQueue = maxQueue
        let vocab = model.config.text.vocabSize
        logits = .allocate(capacity: parallel * vocab)
        stepLogits = .allocate(capacity: parallel * vocab)
        slots = (0..<parallel).map { i in
            Slot(session: model.makeSession(contextLength: contextLength, threads: threads), index: i)
        }
        // The thread holds the engine until `shutdown` ends it.
        let thread = Thread { [self] in self.run() }
        thread.name = "fbserve-engine"
        thread.stackSize = 8 << 20
        self.thread = thread
        thread.start()
    }

    deinit {
        logits.deallocate()
        stepLogits.deallocate()
    }

    /// Queues a request; 429 when `maxQueue` requests already wait, 503 once shutting down.
    func submit(_ spec: GenerationSpec) throws -> GenerationJob {
        let job = GenerationJob(spec: spec)
        lock.lock()
        defer { lock.unlock() }
        if stopping { throw APIError(503, "the server is shutting down") }
        let free = parallel - running
        if waiting.count >= free + maxQueue {
            throw APIError(429, "too many requests: \(parallel) running and \(maxQueue) waiting (--parallel, --max-queue)")
        }
        waiting.append(job)
        lock.signal()
        return job
    }

    /// Requests running and waiting (for /metrics).
    var load: (running: Int, waiting: Int) {
        lock.lock()
        defer { lock.unlock() }
        return (running, waiting.count)
    }

    var snapshot: EngineCounters {
        lock.lock()
        defer { lock.unlock() }
        return counters
    }

    /// Stops taking requests; lets the running and waiting ones finish for up to `grace` seconds, then cancels what is
    /// left and stops the engine thread.
    func shutdown(grace: TimeInterval) {
        lock.lock()
        stopping = true
        let deadline = Date(timeIntervalSinceNow: grace)
        while running + waiting.count > 0 && Date() < deadline { _ = lock.wait(until: min(deadline, Date(timeIntervalSinceNow: 0.05))) }
        stopped = true
        lock.signal()
        lock.unlock()
        while thread?.isFinished == false { usleep(10_000) }
    }

    // MARK: The engine thread

    private final class Slot {
        let session: SequenceSession
        let index: Int
        /// The inputs the caches hold (session.position of them), and the image they are about.
        var cachedTokens: [Int32] = []
        var imageKey: UInt64?
        var lastUsed = 0

        // The request running here.
        var job: GenerationJob?
        var sampler: Sampler?
        var textDecoder: StreamingDecoder?
        var unsent = ""
        var generated = 0
        var maxTokens = 0
        var reused = 0
        var started = Date()
        var firstTokenMs = 0.0
        /// Sampled and sent, still to go through the model.
        var pending: Int32?
        /// This slot's logits are ready to sample from.
        var ready = false

        init(session: SequenceSession, index: Int) {
            self.session = session
            self.index = index
        }
    }

    private func run() {
        let vocab = model.config.text.vocabSize
        while true {
            // Admit waiting requests into free slots, or sleep until there is work.
            lock.lock()
            while !stopped && waiting.isEmpty && !slots.contains(where: { $0.job != nil }) { lock.wait() }
            if stopped {
                let left = waiting + slots.compactMap(\.job)
                waiting.removeAll()
                lock.unlock()
                for job in left { job.post(.failed(APIError(503, "the server shut down before the answer was complete"))) }
                for slot in slots { slot.job = nil }
                lock.lock(); running = 0; lock.broadcast(); lock.unlock()
                return
            }
            var admitted: [(GenerationJob, Slot)] = []
            while !waiting.isEmpty, let slot = chooseSlot(for: waiting[0].spec) {
                let job = waiting.removeFirst()
                slot.job = job
                running += 1
                admitted.append((job, slot))
            }
            lock.unlock()

            for (job, slot) in admitted { start(job, in: slot, logits: logits + slot.index * vocab) }

            // Sample every slot whose logits are ready; the tokens that continue go through the model together.
            var stepping: [Slot] = []
            for slot in slots where slot.job != nil && slot.ready {
                if advance(slot, logits: logits + slot.index * vocab) { stepping.append(slot) }
            }
            guard !stepping.isEmpty else { continue }
            let clock = Date()
            // The step writes its logits in step order into scratch; each slot's row is copied to its own place.
            do {
                let sessions = stepping.map(\.session)
                let tokens = stepping.map { $0.pending! }
                try sessions[0].decodeTogether(sessions, tokens: tokens, logits: stepLogits)
                for (r, slot) in stepping.enumerated() {
                    memcpy(logits + slot.index * vocab, stepLogits + r * vocab, vocab * 4)
                    slot.cachedTokens.append(slot.pending!)
                    slot.pending = nil
                    slot.ready = true
                }
            } catch {
                for slot in stepping { fail(slot, APIError(500, "generation failed: \(error)")) }
            }
            lock.lock()
            counters.decodeSeconds += Date().timeIntervalSince(clock)
            counters.decodeSteps += 1
            counters.decodedTokens += stepping.count
            lock.unlock()
        }
    }


    /// A free slot for `spec`: the one whose caches hold the longest prefix of its prompt (same image), else the one
    /// used least recently. Called under the lock.
    private func chooseSlot(for spec: GenerationSpec) -> Slot? {
        let free = slots.filter { $0.job == nil }
        guard !free.isEmpty else { return nil }
        if let best = free.map({ ($0, reusableLength($0, spec)) }).max(by: { $0.1 < $1.1 }), best.1 > 0 { return best.0 }
        return free.min { $0.lastUsed < $1.lastUsed }
    }

    /// How many prompt tokens `slot`'s caches already hold: all it has, if that is a proper prefix of the prompt about
    /// the same image (the recurrent states cannot step back, so a partial match reuses nothing).
    private func reusableLength(_ slot: Slot, _ spec: GenerationSpec) -> Int {
        let held = slot.cachedTokens
        guard !held.isEmpty, held.count < spec.promptIds.count, slot.imageKey == spec.image?.key,
              slot.session.position == held.count,
              spec.promptIds[..<held.count].elementsEqual(held) else { return 0 }
        return held.count
    }

    /// Prefills `job`'s prompt in `slot` (only the part its caches lack) and leaves the logits ready to sample.
    private func start(_ job: GenerationJob, in slot: Slot, logits: UnsafeMutablePointer<Float>) {
        let spec = job.spec
        clock += 1
        slot.lastUsed = clock
        slot.started = job.submitted
        slot.sampler = Sampler(options: spec.sampling, vocabularySize: model.config.text.vocabSize)
        slot.sampler!.observe(spec.promptIds)
        slot.textDecoder = model.tokenizer.makeStreamingDecoder(skipSpecialTokens: true)
        slot.unsent = ""
        slot.generated = 0
        slot.maxTokens = spec.maxTokens
        slot.pending = nil
        slot.ready = false
        do {
            let reuse = reusableLength(slot, spec)
            if reuse == 0 {
                if let vl = slot.session as? FireboltVLSession {
                    if slot.imageKey != spec.image?.key || spec.image == nil {
                        try vl.setImage(grid: try spec.image.map { try encodedImage($0.key, $0.pixels).grid })
                    }
                    vl.reset()
                } else if let vl = slot.session as? LFM2VLSession {
                    if slot.imageKey != spec.image?.key || spec.image == nil {
                        try vl.setImage(features: try spec.image.map { try encodedImage($0.key, $0.pixels).features })
                    }
                    vl.reset()
                } else {
                    slot.session.reset()
                }
                slot.imageKey = spec.image?.key
                slot.cachedTokens = []
            }
            let clock = Date()
            let rest = Array(spec.promptIds[reuse...])
            try slot.session.forward(tokens: rest, lastLogits: logits, allLogits: nil)
            slot.cachedTokens += rest
            slot.reused = reuse
            slot.ready = true
            lock.lock()
            counters.prefillSeconds += Date().timeIntervalSince(clock)
            counters.promptTokens += spec.promptIds.count
            counters.reusedPromptTokens += reuse
            lock.unlock()
        } catch {
            slot.cachedTokens = []
            fail(slot, APIError(500, "prefill failed: \(error)"))
        }
    }

    /// The image through the model's image path (Firebolt-VL's grid, LFM2-VL's features), from the cache of recent
    /// images or computed.
    private func encodedImage(_ key: UInt64, _ pixels: RGBImage) throws -> EncodedImage {
        if let i = images.firstIndex(where: { $0.key == key }) {
            let hit = images.remove(at: i)
            images.append(hit)
            return hit.encoded
        }
        let encoded: EncodedImage
        if let vision = model.vision {
            encoded = vision.encode(image: pixels)
        } else if let vl = model.lfm2vl {
            encoded = try vl.encode(image: pixels)
        } else {
            throw FireboltError("this model is text-only: it cannot take an image")
        }
        images.append((key, encoded))
        if images.count > 8 { images.removeFirst() }
        return encoded
    }

    /// Samples the next token of `slot`'s request and sends its text. Returns true when the token goes on through
    /// the model (the request continues); false when the request ended here.
    private func advance(_ slot: Slot, logits: UnsafeMutablePointer<Float>) -> Bool {
        guard let job = slot.job else { return false }
        slot.ready = false
        if job.isCancelled {
            // Whoever still waits on the job (a connection thread) must wake and end.
            job.post(.failed(APIError(499, "the client closed the connection", type: "cancelled")))
            release(slot, cancelled: true)
            return false
        }
        let next = slot.sampler!.sample(logits)
        if slot.generated == 0 { slot.firstTokenMs = Date().timeIntervalSince(slot.started) * 1000 }
        if model.config.specialTokens.eos.contains(next) {
            finish(slot, reason: "stop")
            return false
        }
        slot.generated += 1
        slot.sampler!.observe(next)
        let piece = (try? slot.textDecoder!.append(next)) ?? ""
        if emit(slot, piece) { finish(slot, reason: "stop", flush: false); return false }
        if slot.generated >= slot.maxTokens || slot.cachedTokens.count >= contextLength {
            finish(slot, reason: "length")
            return false
        }
        slot.pending = next
        return true
    }

    /// Sends text, holding back what might be the start of a stop string. Returns true when a stop string was hit (the
    /// text before it is sent, the rest dropped).
    private func emit(_ slot: Slot, _ piece: String) -> Bool {
        guard let job = slot.job else { return false }
        slot.unsent += piece
        let stops = job.spec.stop
        for stop in stops {
            if let range = slot.unsent.range(of: stop) {
                let before = String(slot.unsent[..<range.lowerBound])
                if !before.isEmpty { job.post(.text(before)) }
                slot.unsent = ""
                return true
            }
        }
        var keep = 0
        for stop in stops {
            for length in stride(from: min(stop.count - 1, slot.unsent.count), to: 0, by: -1)
            where slot.unsent.hasSuffix(stop.prefix(length)) {
                keep = max(keep, length)
                break
            }
        }
        let sendable = String(slot.unsent.dropLast(keep))
        if !sendable.isEmpty { job.post(.text(sendable)) }
        slot.unsent = String(slot.unsent.suffix(keep))
        return false
    }

    private func finish(_ slot: Slot, reason: String, flush: Bool = true) {
        guard let job = slot.job else { return }
        if flush {
            let tail = slot.textDecoder?.finish() ?? ""
            if !emit(slot, tail), !slot.unsent.isEmpty { job.post(.text(slot.unsent)) }
        }
        job.post(.finished(GenerationSummary(finishReason: reason, promptTokens: job.spec.promptIds.count,
                                             completionTokens: slot.generated, reusedPromptTokens: slot.reused,
                                             timeToFirstTokenMs: slot.firstTokenMs)))
        release(slot, cancelled: false)
    }

    private func fail(_ slot: Slot, _ error: APIError) {
        slot.job?.post(.failed(error))
        slot.cachedTokens = []
        release(slot, cancelled: false)
    }

    private func release(_ slot: Slot, cancelled: Bool) {
        lock.lock()
        if slot.job != nil { running -= 1 }
        counters.completionTokens += slot.generated
        if cancelled { counters.cancelled += 1 } else { counters.finished += 1 }
        lock.broadcast()
        lock.unlock()
        slot.job = nil
        slot.sampler = nil
        slot.pending = nil
        slot.ready = false
    }
}
