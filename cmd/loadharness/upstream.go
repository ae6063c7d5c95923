package main

import (
	"time"

	"github.com/agentapi/agentapi/internal/testkit/fakeopenai"
)

// fakeContent is about the size of a short real answer (roughly 600 bytes).
const fakeContent = "This is the fake upstream's answer. It is long enough to look like a short model reply: " +
	"a couple of sentences of ordinary text, so that the gateway copies, parses and caches a realistic amount of bytes " +
	"on each request without the figures being dominated by payload size."

// numFaults bounds the upstream faults the soak injects: fakeopenai.None
// to fakeopenai.Cut, asked for by a marker in the request body.
const numFaults = fakeopenai.Cut + 1

// newUpstream starts the fake OpenAI-compatible provider on loopback, as
// the harness uses it: every chat completion gets the same answer, with
// a fixed model name, so the fake renders it once; a streamed answer has
// chunks chunks of one word, interval apart. Latency, chunks and interval
// are changed between phases, never during one. A request whose body
// carries a fault marker gets that failure instead, on every attempt.
// Its connections' goroutines carry the pprof label server=upstream.
func newUpstream(latency time.Duration, chunks int, interval time.Duration) (*fakeopenai.Server, error) {
	var (
		up  *fakeopenai.Server
		err error
	)
	labelled("server", "upstream", func() {
		up, err = fakeopenai.Start(fakeopenai.Options{
			Model:     "gpt-4o-mini-2024-07-18",
			UsageNull: true,
			Answer: fakeopenai.Answer{Text: fakeContent, Words: []string{"token "},
				Usage: fakeopenai.Usage{Prompt: 42, Completion: 58}, StreamUsage: fakeopenai.Usage{Prompt: 42, Completion: 20}},
			Latency: latency, Chunks: chunks, Interval: interval,
		})
	})
	return up, err
}
