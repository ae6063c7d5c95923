// Package builtin is agentapi's own MCP server, named "agentapi": two
// harmless tools (the current time, and arithmetic on numbers) so that the
// server-side tool loop can be tried with nothing configured and the
// offline mock model. It is built with the official MCP Go SDK and served
// over Streamable HTTP by an http.Handler that the MCP registry reaches
// in-process, without a network.
package builtin

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Label is the built-in server's server_label.
const Label = "agentapi"

// Description is the built-in server's server_description.
const Description = "agentapi's built-in tools: the current time and arithmetic."

// Tool names.
const (
	ToolTime      = "current_time"
	ToolCalculate = "calculate"
)

// maxTimezone bounds a timezone name (the longest IANA name is 32 bytes).
const maxTimezone = 64

// Options configure the built-in server.
type Options struct {
	// Version is reported to clients (default "dev").
	Version string
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// TimeInput is current_time's input.
type TimeInput struct {
	Timezone string `json:"timezone,omitempty" jsonschema:"an IANA time zone such as Europe/Paris; UTC when empty"`
}

// TimeOutput is current_time's result.
type TimeOutput struct {
	Time     string `json:"time" jsonschema:"the time in RFC 3339 form"`
	Timezone string `json:"timezone"`
	Unix     int64  `json:"unix" jsonschema:"seconds since 1970-01-01T00:00:00Z"`
}

// CalculateInput is calculate's input.
type CalculateInput struct {
	Expression string `json:"expression" jsonschema:"an arithmetic expression over numbers: + - * / % ^ and parentheses, e.g. (2+3)*4.5"`
}

// CalculateOutput is calculate's result.
type CalculateOutput struct {
	Result float64 `json:"result"`
	Text   string  `json:"text" jsonschema:"the result as written"`
}

// NewServer builds the built-in MCP server.
func NewServer(o Options) *mcp.Server {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	s := mcp.NewServer(&mcp.Implementation{Name: Label, Title: "agentapi built-in tools", Version: o.Version}, nil)
	readOnly := &mcp.ToolAnnotations{ReadOnlyHint: true, OpenWorldHint: new(bool)}
	mcp.AddTool(s, &mcp.Tool{Name: ToolTime, Description: "Returns the current date and time, in UTC or a given IANA time zone.", Annotations: readOnly},
		func(_ context.Context, _ *mcp.CallToolRequest, in TimeInput) (*mcp.CallToolResult, TimeOutput, error) {
			loc := time.UTC
			if in.Timezone != "" {
				if len(in.Timezone) > maxTimezone {
					return nil, TimeOutput{}, fmt.Errorf("timezone is longer than %d bytes", maxTimezone)
				}
				l, err := time.LoadLocation(in.Timezone)
				if err != nil {
					return nil, TimeOutput{}, fmt.Errorf("unknown time zone %q", in.Timezone)
				}
				loc = l
			}
			now := o.Now().In(loc)
			return nil, TimeOutput{Time: now.Format(time.RFC3339), Timezone: loc.String(), Unix: now.Unix()}, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: ToolCalculate, Description: "Evaluates an arithmetic expression over numbers (+ - * / % ^, parentheses).", Annotations: readOnly},
		func(_ context.Context, _ *mcp.CallToolRequest, in CalculateInput) (*mcp.CallToolResult, CalculateOutput, error) {
			v, err := Evaluate(in.Expression)
			if err != nil {
				return nil, CalculateOutput{}, err
			}
			return nil, CalculateOutput{Result: v, Text: strconv.FormatFloat(v, 'g', -1, 64)}, nil
		})
	return s
}

// Handler serves the built-in server over Streamable HTTP. It keeps no
// sessions (each request stands alone), so any replica, or the same
// process, can answer any request. It is meant to be reached in-process
// only (never mounted on a listener): the SDK's DNS-rebinding check is
// off because an in-process request carries the context of the API
// request that caused it, whose local address is the API's (often
// loopback) while its Host names the in-process server.
func Handler(o Options) http.Handler {
	s := NewServer(o)
	return mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s },
		&mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true, MaxRequestBodyBytes: 64 << 10, DisableLocalhostProtection: true})
}
