package llm

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"
)

// readAll drains s and returns copies of the payloads and the final error.
func readAll(s *Stream) ([]string, error) {
	var out []string
	for {
		p, err := s.Next()
		if err != nil {
			return out, err
		}
		out = append(out, string(p))
	}
}

func streamOf(r io.Reader) *Stream {
	return newStream(context.Background(), io.NopCloser(r), nil, "test")
}

func TestStreamParsing(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		input   string
		want    []string
		wantErr error // io.EOF for a clean end
	}{
		{
			name:    "simple events and done",
			input:   "data: {\"a\":1}\n\ndata: {\"a\":2}\n\ndata: [DONE]\n\n",
			want:    []string{`{"a":1}`, `{"a":2}`},
			wantErr: io.EOF,
		},
		{
			name:    "multi-line data joined with newline",
			input:   "data: {\"a\":\ndata: 1}\n\ndata: [DONE]\n\n",
			want:    []string{"{\"a\":\n1}"},
			wantErr: io.EOF,
		},
		{
			name:    "comments and keep-alives skipped",
			input:   ": OPENROUTER PROCESSING\n\n:ping\ndata: x\n: mid-event comment\n\ndata: [DONE]\n\n",
			want:    []string{"x"},
			wantErr: io.EOF,
		},
		{
			name:    "CRLF line endings",
			input:   "data: one\r\n\r\ndata: two\r\ndata: lines\r\n\r\ndata: [DONE]\r\n\r\n",
			want:    []string{"one", "two\nlines"},
			wantErr: io.EOF,
		},
		{
			name:    "no space after colon, only one space removed",
			input:   "data:tight\n\ndata:  two spaces\n\n",
			want:    []string{"tight", " two spaces"},
			wantErr: io.EOF,
		},
		{
			name:    "other fields ignored",
			input:   "event: message\nid: 7\nretry: 1000\ndata: payload\n\nevent: ping\n\n",
			want:    []string{"payload"},
			wantErr: io.EOF,
		},
		{
			name:    "empty payloads skipped",
			input:   "data:\n\ndata: \n\ndata: real\n\n",
			want:    []string{"real"},
			wantErr: io.EOF,
		},
		{
			name:    "nothing read after done",
			input:   "data: a\n\ndata: [DONE]\n\ndata: after\n\n",
			want:    []string{"a"},
			wantErr: io.EOF,
		},
		{
			name:    "clean end between events without done",
			input:   "data: a\n\n",
			want:    []string{"a"},
			wantErr: io.EOF,
		},
		{
			name:    "empty body",
			input:   "",
			wantErr: io.EOF,
		},
		{
			name:    "done lacking its blank line",
			input:   "data: a\n\ndata: [DONE]",
			want:    []string{"a"},
			wantErr: io.EOF,
		},
		{
			name:    "ends inside an event",
			input:   "data: a\n\ndata: {\"choices\":[{\"del",
			want:    []string{"a"},
			wantErr: io.ErrUnexpectedEOF,
		},
		{
			name:    "ends after a data line but before its blank line",
			input:   "data: a\n\ndata: {\"b\":1}\n",
			want:    []string{"a"},
			wantErr: io.ErrUnexpectedEOF,
		},
		{
			name:    "line without colon is a field with empty value",
			input:   "data\ndata: x\n\n",
			want:    []string{"\nx"},
			wantErr: io.EOF,
		},
	}
	readers := map[string]func(io.Reader) io.Reader{
		"whole":    func(r io.Reader) io.Reader { return r },
		"one byte": iotest.OneByteReader,
		"half":     iotest.HalfReader,
	}
	for _, tt := range tests {
		for rname, wrap := range readers {
			t.Run(tt.name+"/"+rname, func(t *testing.T) {
				t.Parallel()
				got, err := readAll(streamOf(wrap(strings.NewReader(tt.input))))
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("payloads (-want +got):\n%s", diff)
				}
				if tt.wantErr == io.EOF {
					if err != io.EOF {
						t.Errorf("err = %v, want io.EOF", err)
					}
					return
				}
				if !errors.Is(err, tt.wantErr) || !errors.Is(err, ErrUpstreamUnavailable) {
					t.Errorf("err = %v, want it to wrap %v and ErrUpstreamUnavailable", err, tt.wantErr)
				}
			})
		}
	}
}

func TestStreamLongLines(t *testing.T) {
	t.Parallel()
	// Longer than the read buffer, so the spill path is used.
	big := strings.Repeat("x", 3*streamBufferSize+17)
	input := "data: " + big + "\r\ndata: tail\r\n\r\ndata: small\n\n"
	got, err := readAll(streamOf(strings.NewReader(input)))
	if err != io.EOF {
		t.Fatalf("err = %v", err)
	}
	want := []string{big + "\ntail", "small"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("payloads differ (-want +got):\n%s", diff)
	}
}

func TestStreamEventTooLarge(t *testing.T) {
	t.Parallel()
	const limit = 3 * streamBufferSize
	// One line beyond the limit, and several lines that only add up to
	// more than it: both must be refused, and an event just under the
	// limit must pass.
	tests := map[string]struct {
		input string
		ok    bool
	}{
		"one long line":   {"data: " + strings.Repeat("x", limit+1) + "\n\n", false},
		"many lines":      {strings.Repeat("data: "+strings.Repeat("y", streamBufferSize)+"\n", 4) + "\n", false},
		"under the limit": {"data: " + strings.Repeat("z", limit-10) + "\n\n", true},
	}
	for name, tt := range tests {
		s := streamOf(strings.NewReader(tt.input))
		s.maxEvent = limit
		_, err := readAll(s)
		if tt.ok {
			if err != io.EOF {
				t.Errorf("%s: err = %v, want io.EOF", name, err)
			}
			continue
		}
		if !errors.Is(err, ErrUpstreamUnavailable) || !errors.Is(err, errEventTooLarge) {
			t.Errorf("%s: err = %v, want ErrUpstreamUnavailable for an oversized event", name, err)
		}
	}
}

func TestStreamUsage(t *testing.T) {
	t.Parallel()
	input := strings.Join([]string{
		`data: {"choices":[{"delta":{"content":"the word \"usage\": {} appears"}}],"usage":null}`,
		`data: {"choices":[{"delta":{"content":"x"}}], "usage" : null}`,
		`data: {"choices":[],"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}}`,
		`data: [DONE]`,
	}, "\n\n") + "\n\n"
	s := streamOf(strings.NewReader(input))
	if _, ok := s.Usage(); ok {
		t.Fatal("usage reported before any chunk")
	}
	for range 2 {
		if _, err := s.Next(); err != nil {
			t.Fatal(err)
		}
		if u, ok := s.Usage(); ok {
			t.Fatalf("usage %+v taken from a chunk without one", u)
		}
	}
	if _, err := s.Next(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Next(); err != io.EOF {
		t.Fatalf("err = %v, want io.EOF", err)
	}
	u, ok := s.Usage()
	if want := (Usage{PromptTokens: 11, CompletionTokens: 7, TotalTokens: 18}); !ok || u != want {
		t.Errorf("Usage() = %+v, %v; want %+v, true", u, ok, want)
	}
}

func TestMayHaveUsage(t *testing.T) {
	t.Parallel()
	tests := map[string]bool{
		`{"choices":[]}`:                                     false,
		`{"usage":null}`:                                     false,
		`{"usage" :  null ,"x":1}`:                           false,
		`{"usage":{"prompt_tokens":1}}`:                      true,
		`{"a":"\"usage\": null","usage":{"total_tokens":1}}`: true,
		`{"content":"usage"}`:                                false,
	}
	for in, want := range tests {
		if got := mayHaveUsage([]byte(in)); got != want {
			t.Errorf("mayHaveUsage(%s) = %v, want %v", in, got, want)
		}
	}
}

func TestStreamNextAfterCancelledContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	s := newStream(ctx, io.NopCloser(strings.NewReader("data: a\n\ndata: b\n\n")), nil, "test")
	if _, err := s.Next(); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := s.Next(); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}
