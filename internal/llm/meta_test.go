package llm

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestReadMeta(t *testing.T) {
	t.Parallel()
	tests := []struct {
		body    string
		want    meta
		wantErr bool
	}{
		{body: `{"model":"m1","usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}`, want: meta{"m1", Usage{3, 4, 7}}},
		{body: ` {"usage":{"prompt_tokens":3,"completion_tokens":4}} `, want: meta{"", Usage{3, 4, 7}}},
		{body: `{"model":null,"usage":null}`, want: meta{}},
		{body: `{}`, want: meta{}},
		{body: `{"model":"m\u00e9","choices":[{"message":{"content":"{\"model\":\"inner\"}"}}]}`, want: meta{"mé", Usage{}}},
		{body: `{"usage":{"prompt_tokens":null,"total_tokens":9}}`, want: meta{"", Usage{0, 0, 9}}},
		{body: `{"usage":{"prompt_tokens":-2,"completion_tokens":9223372036854775807}}`, want: meta{"", Usage{-2, 9223372036854775807, 9223372036854775805}}},
		{body: `{"model":"m1","model":"m2"}`, want: meta{"m1", Usage{}}}, // the first of a repeated key
		{body: `{"model":42}`, wantErr: true},
		{body: `{"usage":[1,2]}`, wantErr: true},
		{body: `{"usage":"lots"}`, wantErr: true},
		{body: `{"usage":{"prompt_tokens":1.5}}`, wantErr: true},
		{body: `{"usage":{"prompt_tokens":1e3}}`, wantErr: true},
		{body: `{"usage":{"prompt_tokens":"3"}}`, wantErr: true},
		{body: `{"usage":{"prompt_tokens":9223372036854775808}}`, wantErr: true},
		{body: `{"model":"m1"} trailing`, wantErr: true},
		{body: `{"model":"m1"`, wantErr: true},
		{body: `null`, wantErr: true},
		{body: `[{"model":"m1"}]`, wantErr: true},
		{body: ``, wantErr: true},
	}
	for _, tt := range tests {
		got, err := readMeta([]byte(tt.body))
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("readMeta(%s) = %+v, %v; want %+v, error %v", tt.body, got, err, tt.want, tt.wantErr)
		}
	}
}

// readMetaDecoded is readMeta by encoding/json, the reference FuzzReadMeta
// holds it to.
func readMetaDecoded(body []byte) (meta, error) {
	var m struct {
		Model string `json:"model"`
		Usage *Usage `json:"usage"`
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil || top == nil {
		return meta{}, errors.New("not a JSON object")
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return meta{}, err
	}
	out := meta{Model: m.Model}
	if m.Usage != nil {
		out.Usage = m.Usage.withTotal()
	}
	return out, nil
}

// FuzzReadMeta holds readMeta to encoding/json: on any body they succeed or
// fail together and agree on the result. encoding/json matches keys without
// regard to case and keeps the last of a repeated key, where readMeta keeps
// the first key spelled exactly; bodies where that differs are compared in
// their decoded and re-encoded form, which has neither.
func FuzzReadMeta(f *testing.F) {
	f.Add([]byte(`{"model":"m1","usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}`))
	f.Add([]byte(`{"usage":{"prompt_tokens":1.5}}`))
	f.Add([]byte(`{"model":null,"usage":{"total_tokens":null}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		got, gotErr := readMeta(body)
		if gotErr == nil && !json.Valid(body) {
			t.Fatalf("readMeta accepted invalid JSON %q", body)
		}
		var v any
		if json.Unmarshal(body, &v) != nil {
			if gotErr == nil {
				t.Fatalf("readMeta(%q) = %+v, but encoding/json refuses it", body, got)
			}
			return
		}
		canon, err := json.Marshal(v)
		if err != nil || hasCaseVariant(v) {
			return
		}
		got, gotErr = readMeta(canon)
		want, wantErr := readMetaDecoded(canon)
		if (gotErr == nil) != (wantErr == nil) || got != want {
			t.Fatalf("body %s: readMeta %+v, %v; encoding/json %+v, %v", canon, got, gotErr, want, wantErr)
		}
	})
}

// hasCaseVariant reports whether a decoded JSON value has an object key that
// is one of readMeta's names spelled with other cases.
func hasCaseVariant(v any) bool {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			for _, name := range []string{"model", "usage", "prompt_tokens", "completion_tokens", "total_tokens"} {
				if k != name && strings.EqualFold(k, name) {
					return true
				}
			}
			if hasCaseVariant(e) {
				return true
			}
		}
	case []any:
		for _, e := range v {
			if hasCaseVariant(e) {
				return true
			}
		}
	}
	return false
}
