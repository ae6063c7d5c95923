package catalog

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shopspring/decimal"
)

func TestParseAndCost(t *testing.T) {
	t.Parallel()
	c, err := Parse([]byte(`
default_model: m
models:
  - name: m
    price: {input_per_million: 0.15, output_per_million: "0.600001"}
    deployments:
      - base_url: http://a/v1
        api_key_env: A_API_KEY
        weight: 0
      - base_url: http://b/v1
        rpm: 5
`), Validation{Getenv: func(k string) string { return map[string]string{"A_API_KEY": " sk-a "}[k] }})
	if err != nil {
		t.Fatal(err)
	}
	m, _ := c.Model("m")
	if m.Deployments[0].Key() != "sk-a" || m.Deployments[0].Name != "m#1" || m.Deployments[0].Share() != 0 || m.Deployments[1].Share() != 1 {
		t.Fatalf("deployments: %+v", m.Deployments)
	}
	for _, tc := range []struct {
		prompt, completion int64
		want               string
	}{
		{1_000_000, 0, "0.15"},
		{1, 1, "0.00000075"}, // 0.15e-6 + 0.600001e-6 = 0.000000750001
		{3, 7, "0.000004650007"},
	} {
		got := m.Cost(tc.prompt, tc.completion)
		want, _ := decimal.NewFromString(tc.want)
		if tc.prompt == 1 {
			want, _ = decimal.NewFromString("0.000000750001")
		}
		if !got.Equal(want) {
			t.Errorf("cost(%d, %d) = %s, want %s", tc.prompt, tc.completion, got, want)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown field", "models: [{name: m, colour: red, deployments: [{base_url: 'http://a'}]}]", "colour"},
		{"too precise price", "models: [{name: m, price: {input_per_million: 0.0000001}, deployments: [{base_url: 'http://a'}]}]", "decimal places"},
		{"negative price", "models: [{name: m, price: {output_per_million: -1}, deployments: [{base_url: 'http://a'}]}]", "negative"},
		{"bad url", "models: [{name: m, deployments: [{base_url: 'ftp://a'}]}]", "base_url"},
		{"all standby", "models: [{name: m, deployments: [{base_url: 'http://a', weight: 0}]}]", "weight above 0"},
		{"duplicate", "models: [{name: m, deployments: [{base_url: 'http://a'}]}, {name: m, deployments: [{base_url: 'http://a'}]}]", "twice"},
		{"unset key", "models: [{name: m, deployments: [{base_url: 'http://a', api_key_env: NOPE_API_KEY}]}]", "NOPE_API_KEY is not set"},
		{"default missing", "default_model: x\nmodels: [{name: m, deployments: [{base_url: 'http://a'}]}]", "default_model"},
	} {
		_, err := Parse([]byte(tc.yaml), Validation{Getenv: func(string) string { return "" }})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one naming %q", tc.name, err, tc.want)
		}
	}
}

func TestLiveKeyFileStaysSecret(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	os.WriteFile(key, []byte("sk-from-file\n"), 0o600)
	path := filepath.Join(dir, "models.yaml")
	os.WriteFile(path, []byte("models: [{name: m, deployments: [{base_url: 'http://a', api_key_file: '"+key+"'}]}]"), 0o600)
	l, err := Open(Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	m, _ := l.Current().Model("m")
	if m.Deployments[0].Key() != "sk-from-file" {
		t.Fatalf("key = %q", m.Deployments[0].Key())
	}
	// A change through the admin side keeps the file's key file, and
	// writes no key to the catalogue file.
	if _, err := l.Put(Model{Name: "n", Deployments: []Deployment{{BaseURL: "http://b"}}}); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if strings.Contains(string(data), "sk-from-file") || !strings.Contains(string(data), key) {
		t.Fatalf("file after Put:\n%s", data)
	}
	if m, _ := l.Current().Model("m"); m.Deployments[0].Key() != "sk-from-file" {
		t.Fatal("key lost by Put")
	}
}
