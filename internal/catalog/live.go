package catalog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/goccy/go-yaml"
)

// maxFileBytes bounds the catalogue file.
const maxFileBytes = 4 << 20

// file is the catalogue file's shape.
type file struct {
	DefaultModel string  `yaml:"default_model,omitempty"`
	Models       []Model `yaml:"models"`
}

// Parse reads a catalogue from YAML (JSON is YAML too). Unknown fields are
// refused, so a misspelt one is not silently ignored.
func Parse(data []byte, v Validation) (*Catalog, error) {
	if len(data) > maxFileBytes {
		return nil, fmt.Errorf("%w: file larger than %d bytes", ErrInvalid, maxFileBytes)
	}
	var f file
	if err := yaml.UnmarshalWithOptions(data, &f, yaml.DisallowUnknownField()); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return New(f.DefaultModel, f.Models, v)
}

// Marshal writes c as the YAML of a catalogue file. Keys are not part of
// it; their references are.
func Marshal(c *Catalog) ([]byte, error) {
	return yaml.Marshal(file{DefaultModel: c.DefaultModel, Models: c.Models})
}

// MarshalJSON writes c for the admin API: the references to keys, never
// the keys.
func (c *Catalog) MarshalJSON() ([]byte, error) {
	type plain Catalog
	if c == nil {
		return []byte("null"), nil
	}
	p := plain(*c)
	if p.Models == nil {
		p.Models = []Model{}
	}
	return json.Marshal(p)
}

// Options configure a Live catalogue.
type Options struct {
	// Path is the YAML file (MODELS_FILE).
	Path string
	// Tiers are the known tier names.
	Tiers []string
	// Getenv resolves api_key_env references: the process environment the
	// program was started with.
	Getenv func(string) string
	// Logger reports reloads and refused files.
	Logger *slog.Logger
}

// Live is the catalogue in use: the file's, reloaded when the file
// changes, and changed by the admin API, which writes the file back so
// that the change survives a restart and reaches every replica reading
// the same file. It is safe for concurrent use.
type Live struct {
	opts   Options
	logger *slog.Logger
	cur    atomic.Pointer[Catalog]

	mu      sync.Mutex // serialises reloads and changes
	modTime time.Time
	size    int64
}

// Open loads the catalogue file; it fails when the file cannot be read or
// is invalid, naming every problem.
func Open(o Options) (*Live, error) {
	l := &Live{opts: o, logger: o.Logger}
	if l.logger == nil {
		l.logger = slog.New(slog.DiscardHandler)
	}
	if _, err := l.Reload(); err != nil {
		return nil, err
	}
	return l, nil
}

// Current is the catalogue in use; the returned value never changes.
func (l *Live) Current() *Catalog { return l.cur.Load() }

func (l *Live) validation(allowedFiles []string) Validation {
	return Validation{Tiers: l.opts.Tiers, Getenv: l.opts.Getenv, ReadFile: func(path string) ([]byte, error) {
		if allowedFiles != nil && !slices.Contains(allowedFiles, path) {
			return nil, errors.New("not a key file of the catalogue file")
		}
		return readBounded(path)
	}}
}

// Reload reads the file again when it changed since the last read (by
// modification time or size) and reports whether a new catalogue is in
// use. A file that became invalid is refused and the catalogue in use
// stays.
func (l *Live) Reload() (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st, err := os.Stat(l.opts.Path)
	if err != nil {
		return false, fmt.Errorf("catalog: MODELS_FILE: %w", err)
	}
	if l.cur.Load() != nil && st.ModTime().Equal(l.modTime) && st.Size() == l.size {
		return false, nil
	}
	data, err := readBounded(l.opts.Path)
	if err != nil {
		return false, fmt.Errorf("catalog: MODELS_FILE: %w", err)
	}
	c, err := Parse(data, l.validation(nil))
	if err != nil {
		// Remember the version so a broken file is reported once, not at
		// every poll.
		l.modTime, l.size = st.ModTime(), st.Size()
		return false, fmt.Errorf("MODELS_FILE %s: %w", l.opts.Path, err)
	}
	l.modTime, l.size = st.ModTime(), st.Size()
	l.cur.Store(c)
	return true, nil
}

// Watch reloads the file every interval until ctx ends, logging each new
// catalogue and each refused file.
func (l *Live) Watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changed, err := l.Reload()
		switch {
		case err != nil:
			l.logger.LogAttrs(ctx, slog.LevelError, "model catalogue not reloaded; keeping the one in use", slog.String("error", err.Error()))
		case changed:
			l.logger.LogAttrs(ctx, slog.LevelInfo, "model catalogue reloaded", slog.Int("models", len(l.Current().Models)))
		}
	}
}

// Put adds or replaces the model named m.Name and writes the catalogue
// file. An invalid result changes nothing and wraps ErrInvalid.
func (l *Live) Put(m Model) (*Catalog, error) {
	return l.change(m.Name, &m)
}

// Delete removes the named model; ErrUnknownModel when there is none, and
// ErrInvalid when another model falls back on it or it is the default.
func (l *Live) Delete(name string) error {
	_, err := l.change(name, nil)
	return err
}

func (l *Live) change(name string, m *Model) (*Catalog, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	cur := l.cur.Load()
	models, found := cur.with(name, m)
	if m == nil && !found {
		return nil, fmt.Errorf("%w: %q", ErrUnknownModel, name)
	}
	// A key file may be named only by the file itself: the admin API
	// could otherwise send any file on the host upstream as a key.
	var files []string
	for _, x := range cur.Models {
		for _, d := range x.Deployments {
			if d.APIKeyFile != "" {
				files = append(files, d.APIKeyFile)
			}
		}
	}
	if files == nil {
		files = []string{}
	}
	next, err := New(cur.DefaultModel, models, l.validation(files))
	if err != nil {
		return nil, err
	}
	data, err := Marshal(next)
	if err != nil {
		return nil, fmt.Errorf("catalog: write MODELS_FILE: %w", err)
	}
	if err := writeAtomic(l.opts.Path, data); err != nil {
		return nil, fmt.Errorf("catalog: write MODELS_FILE: %w", err)
	}
	if st, err := os.Stat(l.opts.Path); err == nil {
		l.modTime, l.size = st.ModTime(), st.Size()
	}
	l.cur.Store(next)
	return next, nil
}

// writeAtomic replaces path by data through a temporary file and a
// rename, so a reader (another replica's poll) sees the old file or the
// new one, never half of it.
func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".models-*.yaml")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if st, err := os.Stat(path); err == nil {
		_ = os.Chmod(tmp.Name(), st.Mode().Perm())
	}
	return os.Rename(tmp.Name(), path)
}

// readBounded reads a file of at most maxFileBytes.
func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var b bytes.Buffer
	n, err := b.ReadFrom(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if n > maxFileBytes {
		return nil, fmt.Errorf("larger than %d bytes", maxFileBytes)
	}
	return b.Bytes(), nil
}
