// Package catalog is the model catalogue: the public model names callers
// may ask for, and for each its deployments (an OpenAI-compatible base URL,
// a reference to its key, the upstream's own model name, a weight and
// optional per-minute capacity), the tiers allowed to use it, its price
// per million input and output tokens, and its fallbacks.
//
// A catalogue is read from a YAML file (MODELS_FILE) and may be changed
// through the admin API; [Live] holds the current one, reloads it when the
// file changes and hands every reader a consistent, immutable snapshot.
// Keys are referenced (an environment variable or a secret file), resolved
// when the catalogue is loaded, and never written back, returned or logged.
//
// Prices are exact decimals ([USD]); a call's cost is tokens × price with
// no floating point anywhere.
package catalog

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/shopspring/decimal"
)

// ErrUnknownModel reports a model name the catalogue does not list.
var ErrUnknownModel = errors.New("catalog: unknown model")

// ErrInvalid reports a catalogue (or one model) that cannot be used; the
// message names what is wrong.
var ErrInvalid = errors.New("catalog: invalid")

// Bounds on what a catalogue may hold: enough for any real deployment, and
// small enough that a mistaken file cannot exhaust memory.
const (
	MaxModels      = 1000
	MaxDeployments = 64
	maxNameBytes   = 200
	// PriceDecimals is the most decimal places a price per million tokens
	// may have: a token's cost is then a whole number of picodollars
	// (1e-12 USD), which is how costs are stored and summed.
	PriceDecimals = 6
)

// Catalog is one immutable version of the catalogue. Build it with Parse
// or New; its methods are safe for concurrent use.
type Catalog struct {
	// DefaultModel is the model of a request that names none; empty
	// leaves the choice to the configuration (LLM_MODEL).
	DefaultModel string  `yaml:"default_model,omitempty" json:"default_model,omitempty"`
	Models       []Model `yaml:"models" json:"models"`

	byName map[string]int
}

// Model is one public model name.
type Model struct {
	// Name is what requests put in "model".
	Name string `yaml:"name" json:"name"`
	// Tiers may use the model; empty means every tier.
	Tiers []string `yaml:"tiers,omitempty" json:"tiers,omitempty"`
	// Price is per million tokens, in USD.
	Price Price `yaml:"price" json:"price"`
	// Fallbacks are other public names tried, in order, when every
	// deployment of this one failed before answering.
	Fallbacks []string `yaml:"fallbacks,omitempty" json:"fallbacks,omitempty"`
	// Deployments answer the model; a call picks one by weight.
	Deployments []Deployment `yaml:"deployments" json:"deployments"`
}

// Price is what a model costs per million tokens.
type Price struct {
	InputPerMillion  USD `yaml:"input_per_million" json:"input_per_million"`
	OutputPerMillion USD `yaml:"output_per_million" json:"output_per_million"`
}

// Deployment is one OpenAI-compatible endpoint serving a model.
type Deployment struct {
	// Name identifies the deployment in logs, metrics, its circuit breaker
	// and its capacity counters; unique in the catalogue. Default:
	// "<model>#<n>" (n from 1).
	Name string `yaml:"name,omitempty" json:"name,omitempty"`
	// BaseURL is the API root with its version path, e.g.
	// https://api.groq.com/openai/v1.
	BaseURL string `yaml:"base_url" json:"base_url"`
	// APIKeyEnv names the environment variable holding the key (it must
	// end in _API_KEY); APIKeyFile names a file holding it (the file
	// catalogue only). Neither means no key (a local upstream).
	APIKeyEnv  string `yaml:"api_key_env,omitempty" json:"api_key_env,omitempty"`
	APIKeyFile string `yaml:"api_key_file,omitempty" json:"api_key_file,omitempty"`
	// Model is the upstream's name for the model (default: the public
	// name).
	Model string `yaml:"model,omitempty" json:"model,omitempty"`
	// Weight is the deployment's share of calls relative to its
	// siblings' (default 1). 0 makes it a standby: tried only after
	// every weighted sibling failed.
	Weight *int `yaml:"weight,omitempty" json:"weight,omitempty"`
	// RPM and TPM cap the requests and tokens the deployment is sent per
	// minute, counted across replicas when Redis is configured; 0 means
	// no cap.
	RPM int64 `yaml:"rpm,omitempty" json:"rpm,omitempty"`
	TPM int64 `yaml:"tpm,omitempty" json:"tpm,omitempty"`

	key string // resolved from APIKeyEnv or APIKeyFile; never serialised
}

// Key is the deployment's resolved API key ("" for none).
func (d Deployment) Key() string { return d.key }

// Share is the deployment's weight (1 when unset).
func (d Deployment) Share() int {
	if d.Weight == nil {
		return 1
	}
	return *d.Weight
}

// UpstreamModel is the name sent upstream.
func (d Deployment) UpstreamModel(public string) string {
	if d.Model != "" {
		return d.Model
	}
	return public
}

// Model returns the named model.
func (c *Catalog) Model(name string) (Model, bool) {
	if c == nil {
		return Model{}, false
	}
	i, ok := c.byName[name]
	if !ok {
		return Model{}, false
	}
	return c.Models[i], true
}

// Names lists the public model names in catalogue order.
func (c *Catalog) Names() []string {
	if c == nil {
		return nil
	}
	out := make([]string, len(c.Models))
	for i, m := range c.Models {
		out[i] = m.Name
	}
	return out
}

// AllowsTier reports whether a caller of tier may use m.
func (m Model) AllowsTier(tier string) bool {
	return len(m.Tiers) == 0 || slices.Contains(m.Tiers, tier)
}

// Cost is what prompt and completion tokens of m cost, exactly.
func (m Model) Cost(prompt, completion int64) decimal.Decimal {
	return m.Price.Cost(prompt, completion)
}

var million = decimal.NewFromInt(1_000_000)

// Cost is what prompt and completion tokens cost at p, exactly.
func (p Price) Cost(prompt, completion int64) decimal.Decimal {
	in := p.InputPerMillion.Decimal.Mul(decimal.NewFromInt(prompt))
	out := p.OutputPerMillion.Decimal.Mul(decimal.NewFromInt(completion))
	return in.Add(out).Div(million)
}

// Validation is what New checks a catalogue against.
type Validation struct {
	// Tiers are the tier names a model may list.
	Tiers []string
	// Getenv resolves APIKeyEnv references; nil resolves none (every
	// such key is then empty).
	Getenv func(string) string
	// ReadFile resolves APIKeyFile references; nil refuses them.
	ReadFile func(path string) ([]byte, error)
}

var (
	modelNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$`)
	keyEnvPattern    = regexp.MustCompile(`^[A-Z][A-Z0-9_]*_API_KEY$`)
)

// New checks models and builds a Catalog from them, resolving each
// deployment's key. Every problem is reported at once.
func New(defaultModel string, models []Model, v Validation) (*Catalog, error) {
	var problems []string
	fail := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if len(models) == 0 || len(models) > MaxModels {
		// An empty catalogue would refuse every call; it is far more
		// likely a file read while an editor was writing it.
		return nil, fmt.Errorf("%w: %d models, need 1 to %d", ErrInvalid, len(models), MaxModels)
	}
	c := &Catalog{DefaultModel: defaultModel, Models: make([]Model, len(models)), byName: make(map[string]int, len(models))}
	deployments := map[string]bool{}
	for i, m := range models {
		m = m.clone()
		switch {
		case m.Name == "":
			fail("model %d has no name", i+1)
		case len(m.Name) > maxNameBytes || !modelNamePattern.MatchString(m.Name):
			fail("model %q: name must be at most %d bytes of letters, digits and ._:/@+-", m.Name, maxNameBytes)
		}
		if _, dup := c.byName[m.Name]; dup {
			fail("model %q is listed twice", m.Name)
		}
		c.byName[m.Name] = i
		for _, t := range m.Tiers {
			if !slices.Contains(v.Tiers, t) {
				fail("model %q: unknown tier %q (known: %s)", m.Name, t, strings.Join(v.Tiers, ", "))
			}
		}
		for _, p := range []struct {
			field string
			usd   USD
		}{{"input_per_million", m.Price.InputPerMillion}, {"output_per_million", m.Price.OutputPerMillion}} {
			if p.usd.IsNegative() {
				fail("model %q: price.%s must not be negative", m.Name, p.field)
			}
			if -p.usd.Exponent() > PriceDecimals {
				fail("model %q: price.%s has more than %d decimal places", m.Name, p.field, PriceDecimals)
			}
			if p.usd.GreaterThan(decimal.NewFromInt(1_000_000)) {
				fail("model %q: price.%s is above 1000000 USD per million tokens", m.Name, p.field)
			}
		}
		if len(m.Deployments) == 0 || len(m.Deployments) > MaxDeployments {
			fail("model %q: needs 1 to %d deployments", m.Name, MaxDeployments)
		}
		weighted := false
		for j := range m.Deployments {
			d := &m.Deployments[j]
			if d.Name == "" {
				d.Name = fmt.Sprintf("%s#%d", m.Name, j+1)
			}
			if deployments[d.Name] {
				fail("deployment %q is listed twice", d.Name)
			}
			deployments[d.Name] = true
			if len(d.Name) > maxNameBytes || strings.ContainsAny(d.Name, " \t\r\n{}") {
				fail("deployment %q: name must be at most %d bytes without spaces or braces", d.Name, maxNameBytes)
			}
			if u, err := url.Parse(d.BaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				fail("deployment %q: base_url must be an absolute http or https URL", d.Name)
			}
			if d.Model != "" && (len(d.Model) > maxNameBytes || strings.ContainsAny(d.Model, " \t\r\n")) {
				fail("deployment %q: model must be at most %d bytes without spaces", d.Name, maxNameBytes)
			}
			if w := d.Share(); w < 0 || w > 1_000_000 {
				fail("deployment %q: weight must be 0 to 1000000", d.Name)
			} else if w > 0 {
				weighted = true
			}
			if d.RPM < 0 || d.TPM < 0 {
				fail("deployment %q: rpm and tpm must not be negative", d.Name)
			}
			switch {
			case d.APIKeyEnv != "" && d.APIKeyFile != "":
				fail("deployment %q: set api_key_env or api_key_file, not both", d.Name)
			case d.APIKeyEnv != "":
				if !keyEnvPattern.MatchString(d.APIKeyEnv) {
					fail("deployment %q: api_key_env must name a variable ending in _API_KEY", d.Name)
				} else if v.Getenv != nil {
					d.key = strings.TrimSpace(v.Getenv(d.APIKeyEnv))
					if d.key == "" {
						fail("deployment %q: %s is not set", d.Name, d.APIKeyEnv)
					}
				}
			case d.APIKeyFile != "":
				if v.ReadFile == nil {
					fail("deployment %q: api_key_file is only allowed in MODELS_FILE", d.Name)
					break
				}
				b, err := v.ReadFile(d.APIKeyFile)
				if err != nil {
					// The error names the path only, never its content.
					fail("deployment %q: api_key_file %q cannot be read", d.Name, d.APIKeyFile)
				}
				d.key = strings.TrimSpace(string(b))
			}
		}
		if len(m.Deployments) > 0 && !weighted {
			fail("model %q: at least one deployment needs a weight above 0", m.Name)
		}
		c.Models[i] = m
	}
	for _, m := range c.Models {
		for _, f := range m.Fallbacks {
			if f == m.Name {
				fail("model %q: falls back on itself", m.Name)
			} else if _, ok := c.byName[f]; !ok {
				fail("model %q: fallback %q is not in the catalogue", m.Name, f)
			}
		}
	}
	if defaultModel != "" {
		if _, ok := c.byName[defaultModel]; !ok {
			fail("default_model %q is not in the catalogue", defaultModel)
		}
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrInvalid, strings.Join(problems, "; "))
	}
	return c, nil
}

// clone copies m's slices, so a catalogue never shares them with its
// caller (or with the previous version).
func (m Model) clone() Model {
	m.Tiers = slices.Clone(m.Tiers)
	m.Fallbacks = slices.Clone(m.Fallbacks)
	m.Deployments = slices.Clone(m.Deployments)
	for i := range m.Deployments {
		if w := m.Deployments[i].Weight; w != nil {
			v := *w
			m.Deployments[i].Weight = &v
		}
	}
	return m
}

// with returns the models of c with m put in (replacing a model of the
// same name, else appended) or, when remove, the model named name taken
// out.
func (c *Catalog) with(name string, m *Model) ([]Model, bool) {
	var out []Model
	found := false
	if c != nil {
		for _, x := range c.Models {
			if x.Name == name {
				found = true
				if m != nil {
					out = append(out, *m)
				}
				continue
			}
			out = append(out, x)
		}
	}
	if !found && m != nil {
		out = append(out, *m)
	}
	return out, found
}

// UnknownModelError names the model the catalogue does not list; it is
// ErrUnknownModel for errors.Is.
type UnknownModelError struct {
	Model string
}

func (e *UnknownModelError) Error() string {
	return fmt.Sprintf("catalog: unknown model %q", e.Model)
}

// Is makes errors.Is(err, ErrUnknownModel) true.
func (e *UnknownModelError) Is(target error) bool { return target == ErrUnknownModel }
