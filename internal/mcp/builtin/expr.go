package builtin

import (
	"errors"
	"fmt"
	"math"
	"strconv"
)

// Bounds on an expression, so that a model (or a user steering it) cannot
// make the server work hard.
const (
	maxExpression = 512
	maxDepth      = 64
)

// ErrExpression is wrapped by every refusal to evaluate an expression.
var ErrExpression = errors.New("builtin: bad expression")

// Evaluate computes an arithmetic expression: decimal numbers (with an
// optional exponent), + - * / % (remainder), ^ (power, right-associative),
// unary minus and plus, and parentheses. It is a small recursive-descent
// parser over the text, never an evaluation of code; the result must be
// a finite number.
func Evaluate(s string) (float64, error) {
	if len(s) > maxExpression {
		return 0, fmt.Errorf("%w: longer than %d bytes", ErrExpression, maxExpression)
	}
	p := &parser{s: s}
	v, err := p.expr(0)
	if err != nil {
		return 0, err
	}
	p.space()
	if p.i < len(p.s) {
		return 0, p.errorf("unexpected %q", p.s[p.i])
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("%w: the result is not a finite number", ErrExpression)
	}
	return v, nil
}

type parser struct {
	s string
	i int
}

func (p *parser) errorf(format string, args ...any) error {
	return fmt.Errorf("%w at offset %d: %s", ErrExpression, p.i, fmt.Sprintf(format, args...))
}

func (p *parser) space() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t' || p.s[p.i] == '\n' || p.s[p.i] == '\r') {
		p.i++
	}
}

// peek is the next non-space byte (0 at the end).
func (p *parser) peek() byte {
	p.space()
	if p.i >= len(p.s) {
		return 0
	}
	return p.s[p.i]
}

// expr := term (('+' | '-') term)*
func (p *parser) expr(depth int) (float64, error) {
	if depth > maxDepth {
		return 0, p.errorf("nested more than %d deep", maxDepth)
	}
	v, err := p.term(depth)
	if err != nil {
		return 0, err
	}
	for {
		switch p.peek() {
		case '+':
			p.i++
			w, err := p.term(depth)
			if err != nil {
				return 0, err
			}
			v += w
		case '-':
			p.i++
			w, err := p.term(depth)
			if err != nil {
				return 0, err
			}
			v -= w
		default:
			return v, nil
		}
	}
}

// term := unary (('*' | '/' | '%') unary)*
func (p *parser) term(depth int) (float64, error) {
	v, err := p.unary(depth)
	if err != nil {
		return 0, err
	}
	for {
		op := p.peek()
		if op != '*' && op != '/' && op != '%' {
			return v, nil
		}
		p.i++
		w, err := p.unary(depth)
		if err != nil {
			return 0, err
		}
		switch op {
		case '*':
			v *= w
		case '/':
			if w == 0 {
				return 0, p.errorf("division by zero")
			}
			v /= w
		default:
			if w == 0 {
				return 0, p.errorf("remainder by zero")
			}
			v = math.Mod(v, w)
		}
	}
}

// unary := ('-' | '+') unary | power
func (p *parser) unary(depth int) (float64, error) {
	if depth > maxDepth {
		return 0, p.errorf("nested more than %d deep", maxDepth)
	}
	switch p.peek() {
	case '-':
		p.i++
		v, err := p.unary(depth + 1)
		return -v, err
	case '+':
		p.i++
		return p.unary(depth + 1)
	}
	return p.power(depth)
}

// power := primary ('^' unary)?
func (p *parser) power(depth int) (float64, error) {
	v, err := p.primary(depth)
	if err != nil {
		return 0, err
	}
	if p.peek() != '^' {
		return v, nil
	}
	p.i++
	w, err := p.unary(depth + 1)
	if err != nil {
		return 0, err
	}
	return math.Pow(v, w), nil
}

// primary := number | '(' expr ')'
func (p *parser) primary(depth int) (float64, error) {
	switch c := p.peek(); {
	case c == '(':
		p.i++
		v, err := p.expr(depth + 1)
		if err != nil {
			return 0, err
		}
		if p.peek() != ')' {
			return 0, p.errorf("missing )")
		}
		p.i++
		return v, nil
	case c >= '0' && c <= '9' || c == '.':
		return p.number()
	case c == 0:
		return 0, p.errorf("unexpected end")
	default:
		return 0, p.errorf("unexpected %q", c)
	}
}

func (p *parser) number() (float64, error) {
	start := p.i
	digits := func() {
		for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
			p.i++
		}
	}
	digits()
	if p.i < len(p.s) && p.s[p.i] == '.' {
		p.i++
		digits()
	}
	if p.i < len(p.s) && (p.s[p.i] == 'e' || p.s[p.i] == 'E') {
		j := p.i + 1
		if j < len(p.s) && (p.s[j] == '+' || p.s[j] == '-') {
			j++
		}
		if j < len(p.s) && p.s[j] >= '0' && p.s[j] <= '9' {
			p.i = j
			digits()
		}
	}
	v, err := strconv.ParseFloat(p.s[start:p.i], 64)
	if err != nil {
		p.i = start
		return 0, p.errorf("bad number %q", p.s[start:min(len(p.s), start+32)])
	}
	return v, nil
}
