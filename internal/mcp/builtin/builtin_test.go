package builtin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func TestEvaluate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want float64
	}{
		{"1+2", 3},
		{"2+3*4", 14},
		{"(2+3)*4", 20},
		{"2^3^2", 512},
		{"-2^2", -4},
		{"--3", 3},
		{"10/4", 2.5},
		{"10 % 3", 1},
		{" 1.5e2 + .5 ", 150.5},
		{"((((1))))", 1},
		{"2*-3", -6},
	}
	for _, tt := range tests {
		got, err := Evaluate(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("Evaluate(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestEvaluateRefuses(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		"", "1+", "(1", "1)", "1/0", "5%0", "os.Exit(1)", "2**3", "1e999*1e999", "abc",
		strings.Repeat("(", 100) + "1" + strings.Repeat(")", 100),
		strings.Repeat("-", 100) + "1",
		strings.Repeat("1+", 300) + "1",
		"9^9^9",
	} {
		if v, err := Evaluate(in); !errors.Is(err, ErrExpression) {
			t.Errorf("Evaluate(%.40q) = %v, %v; want ErrExpression", in, v, err)
		}
	}
}

func FuzzEvaluate(f *testing.F) {
	for _, s := range []string{"1+2*3", "(1)", "-2^-2", "1e3%7"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := Evaluate(s)
		if err == nil && (v != v) {
			t.Fatalf("NaN from %q", s)
		}
	})
}

// connect runs the built-in server behind httptest and connects the SDK's
// own Streamable HTTP client to it.
func connect(t *testing.T, o Options) *mcp.ClientSession {
	t.Helper()
	srv := httptest.NewServer(Handler(o))
	t.Cleanup(srv.Close)
	c := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "1"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: srv.URL, HTTPClient: srv.Client()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

func TestServerOverStreamableHTTP(t *testing.T) {
	t.Parallel()
	fixed := time.Date(2026, 12, 6, 17, 0, 0, 0, time.UTC)
	cs := connect(t, Options{Now: func() time.Time { return fixed }})
	ctx := context.Background()
	list, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range list.Tools {
		names = append(names, tl.Name)
		if tl.InputSchema == nil || tl.Description == "" {
			t.Errorf("tool %s has no schema or description", tl.Name)
		}
	}
	if strings.Join(names, ",") != ToolCalculate+","+ToolTime {
		t.Errorf("tools %v", names)
	}

	tests := []struct {
		tool    string
		args    map[string]any
		want    string
		isError bool
	}{
		{ToolTime, map[string]any{}, `"time":"2026-12-06T17:00:00Z"`, false},
		{ToolTime, map[string]any{"timezone": "Asia/Tokyo"}, `"time":"2026-12-07T02:00:00+09:00"`, false},
		{ToolTime, map[string]any{"timezone": "Mars/Olympus"}, "unknown time zone", true},
		{ToolCalculate, map[string]any{"expression": "(2+3)*4.5"}, `"result":22.5`, false},
		{ToolCalculate, map[string]any{"expression": "1/0"}, "division by zero", true},
		{ToolCalculate, map[string]any{}, "", true},
	}
	for _, tt := range tests {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tt.tool, Arguments: tt.args})
		if err != nil {
			t.Errorf("%s %v: %v", tt.tool, tt.args, err)
			continue
		}
		text := ""
		for _, c := range res.Content {
			if tc, ok := c.(*mcp.TextContent); ok {
				text += tc.Text
			}
		}
		if res.IsError != tt.isError || !strings.Contains(text, tt.want) {
			raw, _ := json.Marshal(res)
			t.Errorf("%s %v: %s; want isError=%v and %q", tt.tool, tt.args, raw, tt.isError, tt.want)
		}
	}
}
