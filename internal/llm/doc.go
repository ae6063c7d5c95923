// Package llm talks to OpenAI-compatible chat, embeddings and model-list
// endpoints on behalf of the gateway.
//
// The gateway forwards request and response bodies it does not need to
// understand, so this package deals in raw JSON bytes and reads only the
// fields the gateway acts on: the model and the token usage. Two providers are
// offered with the same method set:
//
//   - [Client] calls a real upstream over HTTP (plain and streamed).
//   - [Mock] answers offline and deterministically, for laptops without an
//     upstream key and for tests.
//
// Both have Complete, Stream, Embeddings and Models methods, and both return a
// *[Stream] for streamed chats, so a handler declares the small interface it
// needs (the "Provider" of the design notes) and does not care which one it
// got.
//
// Failures of the upstream are reported as *[UpstreamError] values whose Kind
// is one of the exported sentinels ([ErrUpstreamUnavailable],
// [ErrUpstreamRateLimited], [ErrUpstreamTimeout], [ErrUpstreamRejected]), so
// the HTTP layer can map them to statuses in one place with errors.Is. A
// caller that goes away (its context is cancelled) gets an error wrapping
// context.Canceled instead, which is not the upstream's fault.
package llm
