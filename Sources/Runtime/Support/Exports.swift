// The tokenizer is its own module (it needs only Foundation); whoever uses the runtime gets it too.
@_exported import Tokenization
