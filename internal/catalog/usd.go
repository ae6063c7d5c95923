package catalog

import (
	"fmt"
	"strings"

	"github.com/shopspring/decimal"
)

// USD is an exact amount of US dollars. In YAML and JSON it is written as
// a number or a string (0.15 or "0.15"); either way its digits are read as
// written, never through a float. It is written back as a string.
type USD struct {
	decimal.Decimal
}

// ParseUSD reads an amount such as "2.50".
func ParseUSD(s string) (USD, error) {
	d, err := decimal.NewFromString(strings.TrimSpace(s))
	if err != nil {
		return USD{}, fmt.Errorf("catalog: %q is not a decimal amount", s)
	}
	return USD{d}, nil
}

// UnmarshalYAML reads the node's literal text (go-yaml's BytesUnmarshaler).
func (u *USD) UnmarshalYAML(b []byte) error { return u.UnmarshalText(b) }

// UnmarshalJSON reads a JSON number or string.
func (u *USD) UnmarshalJSON(b []byte) error { return u.UnmarshalText(b) }

// UnmarshalText reads an amount, quoted or not.
func (u *USD) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	s = strings.Trim(s, `"'`)
	if s == "" || s == "null" || s == "~" {
		*u = USD{}
		return nil
	}
	v, err := ParseUSD(s)
	if err != nil {
		return err
	}
	*u = v
	return nil
}

// MarshalJSON writes the amount as a JSON string, exactly.
func (u USD) MarshalJSON() ([]byte, error) { return []byte(`"` + u.String() + `"`), nil }

// MarshalYAML writes the amount as a quoted string.
func (u USD) MarshalYAML() ([]byte, error) { return []byte(`"` + u.String() + `"`), nil }
