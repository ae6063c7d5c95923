package mcp

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/agentapi/agentapi/internal/store"
)

// DefaultRegistryTTL is how long a replica reuses its read of the registry:
// a server an admin changes on one replica is seen by every other within it.
const DefaultRegistryTTL = 2 * time.Second

// registryStore is the database side of the registry.
type registryStore interface {
	CreateMCPServer(ctx context.Context, s store.MCPServer) (store.MCPServer, error)
	UpdateMCPServer(ctx context.Context, s store.MCPServer) (store.MCPServer, error)
	MCPServer(ctx context.Context, label string) (store.MCPServer, error)
	ListMCPServers(ctx context.Context) ([]store.MCPServer, error)
	DeleteMCPServer(ctx context.Context, label string) error
}

// RegistryOptions configures NewRegistry.
type RegistryOptions struct {
	// Store keeps the admin-registered servers; nil means built-in ones
	// only (and Create answers ErrInvalidServer).
	Store registryStore
	// Builtin servers are listed first, reached through their Handler and
	// cannot be changed through the registry.
	Builtin []Server
	// SecretKey seals the servers' headers at rest (SECRET_KEY);
	// PreviousSecretKey still opens what it sealed (SECRET_KEY_PREVIOUS).
	SecretKey         string
	PreviousSecretKey string
	// TTL is how long a read of the store is reused; 0 means
	// DefaultRegistryTTL, negative reads the store every time.
	TTL time.Duration
}

// Registry is the set of MCP servers agentapi may call: built-in ones and
// those an admin registered (kept in the store, headers sealed). It is safe
// for concurrent use; every replica reads the same store.
type Registry struct {
	store   registryStore
	builtin []Server
	sealer  *sealer
	ttl     time.Duration
	now     func() time.Time

	mu      sync.Mutex
	cached  []storedServer
	fetched time.Time
}

// NewRegistry builds the registry.
func NewRegistry(o RegistryOptions) (*Registry, error) {
	r := &Registry{store: o.Store, ttl: o.TTL, now: time.Now}
	if r.ttl == 0 {
		r.ttl = DefaultRegistryTTL
	}
	seen := map[string]bool{}
	for _, b := range o.Builtin {
		if b.RequireApproval == "" {
			b.RequireApproval = ApprovalNever
		}
		if err := b.validate(); err != nil {
			return nil, err
		}
		if seen[b.Label] {
			return nil, fmt.Errorf("%w: built-in label %q given twice", ErrInvalidServer, b.Label)
		}
		seen[b.Label] = true
		b.Builtin = true
		r.builtin = append(r.builtin, b)
	}
	if o.Store != nil {
		s, err := newSealer(o.SecretKey, o.PreviousSecretKey)
		if err != nil {
			return nil, err
		}
		r.sealer = s
	}
	return r, nil
}

// List returns every server: built-in ones first, then the registered ones
// by label. A registered server whose headers cannot be opened (SECRET_KEY
// changed) is listed without them, so the registry stays manageable; Get
// refuses it.
func (r *Registry) List(ctx context.Context) ([]Server, error) {
	stored, err := r.stored(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Server, 0, len(r.builtin)+len(stored))
	for _, b := range r.builtin {
		out = append(out, cloneServer(b))
	}
	for _, s := range stored {
		out = append(out, cloneServer(s.server))
	}
	return out, nil
}

// Get returns the server labelled label; ErrServerNotFound when there is
// none, ErrHeadersUnreadable when its stored headers cannot be opened.
func (r *Registry) Get(ctx context.Context, label string) (Server, error) {
	for _, b := range r.builtin {
		if b.Label == label {
			return cloneServer(b), nil
		}
	}
	stored, err := r.stored(ctx)
	if err != nil {
		return Server{}, err
	}
	for _, s := range stored {
		if s.server.Label == label {
			if s.headersErr != nil {
				return Server{}, s.headersErr
			}
			return cloneServer(s.server), nil
		}
	}
	return Server{}, fmt.Errorf("%w: %q", ErrServerNotFound, label)
}

// Create registers s. RequireApproval defaults to ApprovalAlways.
func (r *Registry) Create(ctx context.Context, s Server) (Server, error) {
	if r.store == nil {
		return Server{}, fmt.Errorf("%w: this registry has no store", ErrInvalidServer)
	}
	if r.isBuiltin(s.Label) {
		return Server{}, fmt.Errorf("%w: %q", ErrBuiltin, s.Label)
	}
	s.Handler, s.UserSupplied, s.Builtin = nil, false, false
	if s.RequireApproval == "" {
		s.RequireApproval = ApprovalAlways
	}
	if err := s.validate(); err != nil {
		return Server{}, err
	}
	row, err := r.toRow(s)
	if err != nil {
		return Server{}, err
	}
	if _, err := r.store.CreateMCPServer(ctx, row); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return Server{}, fmt.Errorf("%w: %q", ErrServerExists, s.Label)
		}
		return Server{}, fmt.Errorf("mcp: register %q: %w", s.Label, err)
	}
	r.invalidate()
	return cloneServer(s), nil
}

// ServerChange is a partial update: nil fields stay as they are. A non-nil
// pointer to a nil slice resets AllowedTools or Tiers to "every".
type ServerChange struct {
	URL             *string
	Description     *string
	Headers         *map[string]string
	AllowedTools    *[]string
	RequireApproval *string
	Tiers           *[]string
}

// Update applies change to the registered server labelled label.
func (r *Registry) Update(ctx context.Context, label string, change ServerChange) (Server, error) {
	if r.isBuiltin(label) {
		return Server{}, fmt.Errorf("%w: %q", ErrBuiltin, label)
	}
	if r.store == nil {
		return Server{}, fmt.Errorf("%w: %q", ErrServerNotFound, label)
	}
	row, err := r.store.MCPServer(ctx, label)
	if err != nil {
		return Server{}, r.storeErr(label, err)
	}
	s, herr := r.fromRow(row)
	if herr != nil && change.Headers == nil {
		// Writing the row back would keep headers nobody can read; make
		// the admin set them again instead.
		return Server{}, herr
	}
	if change.URL != nil {
		s.URL = *change.URL
	}
	if change.Description != nil {
		s.Description = *change.Description
	}
	if change.Headers != nil {
		s.Headers = maps.Clone(*change.Headers)
	}
	if change.AllowedTools != nil {
		s.AllowedTools = slices.Clone(*change.AllowedTools)
	}
	if change.RequireApproval != nil {
		s.RequireApproval = *change.RequireApproval
	}
	if change.Tiers != nil {
		s.Tiers = slices.Clone(*change.Tiers)
	}
	if err := s.validate(); err != nil {
		return Server{}, err
	}
	if row, err = r.toRow(s); err != nil {
		return Server{}, err
	}
	if _, err := r.store.UpdateMCPServer(ctx, row); err != nil {
		return Server{}, r.storeErr(label, err)
	}
	r.invalidate()
	return cloneServer(s), nil
}

// Delete removes the registered server labelled label.
func (r *Registry) Delete(ctx context.Context, label string) error {
	if r.isBuiltin(label) {
		return fmt.Errorf("%w: %q", ErrBuiltin, label)
	}
	if r.store == nil {
		return fmt.Errorf("%w: %q", ErrServerNotFound, label)
	}
	if err := r.store.DeleteMCPServer(ctx, label); err != nil {
		return r.storeErr(label, err)
	}
	r.invalidate()
	return nil
}

func (r *Registry) storeErr(label string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: %q", ErrServerNotFound, label)
	}
	return fmt.Errorf("mcp: registry %q: %w", label, err)
}

func (r *Registry) isBuiltin(label string) bool {
	return slices.ContainsFunc(r.builtin, func(b Server) bool { return b.Label == label })
}

// storedServer is a registered server as read, with the reason its
// headers could not be opened, if any.
type storedServer struct {
	server     Server
	headersErr error
}

// stored returns the registered servers, from the cache while it is fresh.
// Callers must not modify what it returns.
func (r *Registry) stored(ctx context.Context) ([]storedServer, error) {
	if r.store == nil {
		return nil, nil
	}
	r.mu.Lock()
	if r.cached != nil && r.ttl > 0 && r.now().Sub(r.fetched) < r.ttl {
		c := r.cached
		r.mu.Unlock()
		return c, nil
	}
	r.mu.Unlock()
	rows, err := r.store.ListMCPServers(ctx)
	if err != nil {
		return nil, fmt.Errorf("mcp: read registry: %w", err)
	}
	out := make([]storedServer, 0, len(rows))
	for _, row := range rows {
		s, herr := r.fromRow(row)
		out = append(out, storedServer{server: s, headersErr: herr})
	}
	r.mu.Lock()
	r.cached, r.fetched = out, r.now()
	r.mu.Unlock()
	return out, nil
}

// invalidate makes the next read go to the store, so a change made on this
// replica applies here at once.
func (r *Registry) invalidate() {
	r.mu.Lock()
	r.cached = nil
	r.mu.Unlock()
}

func (r *Registry) toRow(s Server) (store.MCPServer, error) {
	sealed, err := r.sealer.seal(s.Label, s.Headers)
	if err != nil {
		return store.MCPServer{}, err
	}
	return store.MCPServer{Label: s.Label, URL: s.URL, Description: s.Description, Headers: sealed,
		AllowedTools: s.AllowedTools, RequireApproval: s.RequireApproval, Tiers: s.Tiers}, nil
}

// fromRow turns a stored row into a Server; when its headers cannot be
// opened the server comes back without them, with the reason.
func (r *Registry) fromRow(row store.MCPServer) (Server, error) {
	s := Server{Label: row.Label, URL: row.URL, Description: row.Description, AllowedTools: row.AllowedTools,
		RequireApproval: row.RequireApproval, Tiers: row.Tiers}
	h, err := r.sealer.open(row.Label, row.Headers)
	if err != nil {
		return s, err
	}
	s.Headers = h
	return s, nil
}

// cloneServer copies the maps and slices, so no caller can change the
// registry's cached servers.
func cloneServer(s Server) Server {
	s.Headers = maps.Clone(s.Headers)
	s.AllowedTools = slices.Clone(s.AllowedTools)
	s.Tiers = slices.Clone(s.Tiers)
	return s
}
