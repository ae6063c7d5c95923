package llm

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// FuzzStream feeds arbitrary bytes to the SSE reader. It must not panic or
// loop, must end with io.EOF or an ErrUpstreamUnavailable, must give the
// same events however the bytes are split into reads, and must agree with a
// plain reading of the event-stream rules written out below.
func FuzzStream(f *testing.F) {
	for _, seed := range []string{
		"data: {\"a\":1}\n\ndata: [DONE]\n\n",
		"data: a\r\n\r\ndata: b\n\n",
		": keep-alive\n\nevent: x\nid: 1\ndata: one\ndata: two\n\n",
		"data:no-space\n\ndata: [DONE]",
		"data: cut off",
		"data\n\ndata:\n\n\n\n",
		"data: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n",
		"\r\n\r\n:\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		whole, wholeErr := collect(newStream(context.Background(), io.NopCloser(bytes.NewReader(in)), nil, "fuzz"))
		bytewise, byteErr := collect(newStream(context.Background(), io.NopCloser(iotest.OneByteReader(bytes.NewReader(in))), nil, "fuzz"))
		for _, err := range []error{wholeErr, byteErr} {
			if err != io.EOF && !errors.Is(err, ErrUpstreamUnavailable) {
				t.Fatalf("stream of %q ended with %v, want io.EOF or ErrUpstreamUnavailable", in, err)
			}
		}
		if !equalEvents(whole, bytewise) || (wholeErr == io.EOF) != (byteErr == io.EOF) {
			t.Fatalf("split reads change the result for %q:\nwhole %q, %v\nbytes %q, %v", in, whole, wholeErr, bytewise, byteErr)
		}
		want, clean := referenceEvents(in)
		if !equalEvents(whole, want) || (wholeErr == io.EOF) != clean {
			t.Fatalf("stream of %q:\ngot  %q, %v\nwant %q, clean end %v", in, whole, wholeErr, want, clean)
		}
	})
}

func collect(s *Stream) ([]string, error) {
	var out []string
	for range 1 << 16 {
		p, err := s.Next()
		if err != nil {
			return out, err
		}
		if len(p) == 0 {
			return out, errors.New("empty event returned")
		}
		out = append(out, string(p))
	}
	return out, errors.New("stream does not end")
}

func equalEvents(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// referenceEvents reads an event stream by the rules Next documents, in the
// most direct way: whole lines, no buffers. clean is false when the body
// ends inside an event that is not [DONE].
func referenceEvents(in []byte) (events []string, clean bool) {
	lines := bytes.Split(in, []byte("\n"))
	var event []byte
	pending := false
	for i, line := range lines {
		last := i == len(lines)-1 // the bytes after the final "\n"
		line = bytes.TrimSuffix(line, []byte("\r"))
		if !last && len(line) == 0 {
			switch {
			case !pending:
			case isDone(event):
				return events, true
			case len(event) > 0:
				events = append(events, string(event))
			}
			event, pending = nil, false
			continue
		}
		if len(line) > 0 && line[0] != ':' {
			name, value, found := bytes.Cut(line, []byte(":"))
			if found && len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
			if string(name) == "data" {
				if pending {
					event = append(event, '\n')
				}
				event = append(event, value...)
				pending = true
			}
		}
		if last {
			return events, !pending || isDone(event)
		}
	}
	return events, true
}
