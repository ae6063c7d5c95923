package mcp

import (
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentapi/agentapi/internal/store"
)

func openStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(t.Context(), filepath.Join(t.TempDir(), "reg.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestRegistry(t *testing.T) {
	t.Parallel()
	st := openStore(t)
	builtin := Server{Label: "agentapi", Description: "Built in", Handler: nopHandler{}}
	r, err := NewRegistry(RegistryOptions{Store: st, Builtin: []Server{builtin}, SecretKey: "k1-0123456789abcdef0123456789abcdef", TTL: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	docs := Server{Label: "docs", URL: "http://10.0.0.5:9000/mcp", Headers: map[string]string{"Authorization": "Bearer s3cret"}, Tiers: []string{"pro"}}
	created, err := r.Create(ctx, docs)
	if err != nil {
		t.Fatal(err)
	}
	if created.RequireApproval != ApprovalAlways {
		t.Errorf("default approval = %q, want always", created.RequireApproval)
	}
	tests := []struct {
		name string
		err  error
		op   func() error
	}{
		{"duplicate", ErrServerExists, func() error { _, err := r.Create(ctx, docs); return err }},
		{"builtin create", ErrBuiltin, func() error { _, err := r.Create(ctx, Server{Label: "agentapi", URL: "http://x"}); return err }},
		{"builtin update", ErrBuiltin, func() error { _, err := r.Update(ctx, "agentapi", ServerChange{}); return err }},
		{"builtin delete", ErrBuiltin, func() error { return r.Delete(ctx, "agentapi") }},
		{"bad label", ErrInvalidServer, func() error { _, err := r.Create(ctx, Server{Label: "a b", URL: "http://x"}); return err }},
		{"bad url", ErrInvalidServer, func() error { _, err := r.Create(ctx, Server{Label: "x", URL: "ftp://x"}); return err }},
		{"unknown get", ErrServerNotFound, func() error { _, err := r.Get(ctx, "nope"); return err }},
		{"unknown delete", ErrServerNotFound, func() error { return r.Delete(ctx, "nope") }},
	}
	for _, tc := range tests {
		if err := tc.op(); !errors.Is(err, tc.err) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.err)
		}
	}

	// Headers are sealed at rest: the row holds no trace of the secret.
	row, err := st.MCPServer(ctx, "docs")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(row.Headers, "s3cret") || !strings.HasPrefix(row.Headers, sealPrefix) {
		t.Errorf("stored headers = %q, want sealed", row.Headers)
	}
	got, err := r.Get(ctx, "docs")
	if err != nil || got.Headers["Authorization"] != "Bearer s3cret" {
		t.Fatalf("Get(docs) = %v headers %d, %v", got, len(got.Headers), err)
	}
	list, err := r.List(ctx)
	if err != nil || len(list) != 2 || list[0].Label != "agentapi" || !list[0].Builtin || list[1].Label != "docs" {
		t.Fatalf("List = %v, %v; want agentapi first", list, err)
	}

	every := []string(nil)
	never := ApprovalNever
	up, err := r.Update(ctx, "docs", ServerChange{Tiers: &every, RequireApproval: &never})
	if err != nil || up.Tiers != nil || up.RequireApproval != ApprovalNever || up.Headers["Authorization"] != "Bearer s3cret" {
		t.Fatalf("Update = %+v, %v", up, err)
	}

	// Rotation: a registry on the next key still opens them with the
	// previous one; one on an unrelated key refuses them, clearly.
	rotated, _ := NewRegistry(RegistryOptions{Store: st, SecretKey: "k2-0123456789abcdef0123456789abcdef", PreviousSecretKey: "k1-0123456789abcdef0123456789abcdef", TTL: -1})
	if got, err := rotated.Get(ctx, "docs"); err != nil || got.Headers["Authorization"] != "Bearer s3cret" {
		t.Errorf("after rotation: %v, %v", got, err)
	}
	other, _ := NewRegistry(RegistryOptions{Store: st, SecretKey: "k3-0123456789abcdef0123456789abcdef", TTL: -1})
	if _, err := other.Get(ctx, "docs"); !errors.Is(err, ErrHeadersUnreadable) {
		t.Errorf("foreign key: err = %v, want ErrHeadersUnreadable", err)
	}
	if list, err := other.List(ctx); err != nil || len(list) != 1 || list[0].Headers != nil {
		t.Errorf("foreign key List = %v, %v; want the server without headers", list, err)
	}

	if err := r.Delete(ctx, "docs"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get(ctx, "docs"); !errors.Is(err, ErrServerNotFound) {
		t.Errorf("after delete: %v", err)
	}
}

func TestServerRules(t *testing.T) {
	t.Parallel()
	s := Server{AllowedTools: []string{"a"}, Tiers: []string{"pro"}}
	if s.AllowsTool("b") || !s.AllowsTool("a") || s.AllowsTier("free") || !s.AllowsTier("pro") {
		t.Errorf("restricted server rules wrong")
	}
	all := Server{}
	if !all.AllowsTool("x") || !all.AllowsTier("free") {
		t.Errorf("unrestricted server refuses")
	}
	none := Server{AllowedTools: []string{}, Tiers: []string{}}
	if none.AllowsTool("x") || none.AllowsTier("free") {
		t.Errorf("empty lists admit")
	}
	leaky := Server{Label: "x", URL: "https://user:pw@h/mcp?token=t", Headers: map[string]string{"A": "secret"}}
	if s := leaky.String(); strings.Contains(s, "pw") || strings.Contains(s, "secret") || strings.Contains(s, "token=t") {
		t.Errorf("String leaks: %s", s)
	}
}

type nopHandler struct{}

func (nopHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {}
