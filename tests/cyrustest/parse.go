package cyrustest

import (
	"fmt"
	"strconv"
	"strings"
)

// Atom is an IMAP atom (also NIL and numbers); quoted strings and literals
// are plain strings, parenthesized lists are []any.
type Atom string

// parseTokens splits one response (without tag) into atoms, strings and
// lists. Literals must be inline as "{N}\r\n" + N bytes (as readResponse
// keeps them).
func parseTokens(b []byte) ([]any, error) {
	p := &tokenizer{b: b}
	var out []any
	for {
		p.skipSpace()
		if p.i >= len(p.b) {
			return out, nil
		}
		t, err := p.token()
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
}

type tokenizer struct {
	b []byte
	i int
}

func (p *tokenizer) skipSpace() {
	for p.i < len(p.b) && p.b[p.i] == ' ' {
		p.i++
	}
}

func (p *tokenizer) errorf(format string, a ...any) error {
	return fmt.Errorf("imap response at byte %d: %s", p.i, fmt.Sprintf(format, a...))
}

func (p *tokenizer) token() (any, error) {
	switch p.b[p.i] {
	case '(':
		p.i++
		list := []any{}
		for {
			p.skipSpace()
			if p.i >= len(p.b) {
				return nil, p.errorf("unterminated list")
			}
			if p.b[p.i] == ')' {
				p.i++
				return list, nil
			}
			t, err := p.token()
			if err != nil {
				return nil, err
			}
			list = append(list, t)
		}
	case ')':
		return nil, p.errorf("unexpected )")
	case '"':
		var sb strings.Builder
		for p.i++; p.i < len(p.b); p.i++ {
			switch c := p.b[p.i]; c {
			case '\\':
				p.i++
				if p.i >= len(p.b) {
					return nil, p.errorf("unterminated quoted string")
				}
				sb.WriteByte(p.b[p.i])
			case '"':
				p.i++
				return sb.String(), nil
			default:
				sb.WriteByte(c)
			}
		}
		return nil, p.errorf("unterminated quoted string")
	case '{':
		end := strings.Index(string(p.b[p.i:]), "}\r\n")
		if end < 0 {
			return nil, p.errorf("bad literal")
		}
		n, err := strconv.Atoi(strings.TrimSuffix(string(p.b[p.i+1:p.i+end]), "+"))
		if err != nil || n < 0 {
			return nil, p.errorf("bad literal length")
		}
		start := p.i + end + 3
		if start+n > len(p.b) {
			return nil, p.errorf("literal of %d bytes overruns response", n)
		}
		p.i = start + n
		return string(p.b[start : start+n]), nil
	}
	// atom; brackets nest so BODY[HEADER.FIELDS (A B)] stays one atom
	start, depth := p.i, 0
	for ; p.i < len(p.b); p.i++ {
		c := p.b[p.i]
		if depth == 0 && (c == ' ' || c == '(' || c == ')') {
			break
		}
		if c == '[' {
			depth++
		} else if c == ']' && depth > 0 {
			depth--
		}
	}
	return Atom(p.b[start:p.i]), nil
}

// fetchResponses decodes the "N FETCH (...)" responses among untagged and
// ignores the others.
func fetchResponses(untagged [][]byte) ([]Message, error) {
	var out []Message
	for _, u := range untagged {
		f := strings.SplitN(string(u), " ", 3)
		if len(f) < 3 || strings.ToUpper(f[1]) != "FETCH" {
			continue
		}
		m, err := parseFetch(u)
		if err != nil {
			return out, err
		}
		out = append(out, m)
	}
	return out, nil
}

func parseFetch(u []byte) (Message, error) {
	var m Message
	toks, err := parseTokens(u)
	if err != nil {
		return m, err
	}
	if len(toks) != 3 {
		return m, fmt.Errorf("bad FETCH response %q", u)
	}
	items, ok := toks[2].([]any)
	if !ok || len(items)%2 != 0 {
		return m, fmt.Errorf("bad FETCH item list %q", u)
	}
	for i := 0; i < len(items); i += 2 {
		name, _ := items[i].(Atom)
		switch strings.ToUpper(string(name)) {
		case "UID":
			a, _ := items[i+1].(Atom)
			n, err := strconv.ParseUint(string(a), 10, 32)
			if err != nil {
				return m, fmt.Errorf("bad UID in %q", u)
			}
			m.UID = uint32(n)
		case "FLAGS":
			l, ok := items[i+1].([]any)
			if !ok {
				return m, fmt.Errorf("bad FLAGS in %q", u)
			}
			m.Flags = []string{}
			for _, f := range l {
				a, ok := f.(Atom)
				if !ok {
					return m, fmt.Errorf("bad flag in %q", u)
				}
				m.Flags = append(m.Flags, string(a))
			}
		case "MODSEQ":
			l, ok := items[i+1].([]any)
			if !ok || len(l) != 1 {
				return m, fmt.Errorf("bad MODSEQ in %q", u)
			}
			a, _ := l[0].(Atom)
			n, err := strconv.ParseUint(string(a), 10, 64)
			if err != nil {
				return m, fmt.Errorf("bad MODSEQ in %q", u)
			}
			m.ModSeq = n
		}
	}
	return m, nil
}

// ParseUIDSet expands an IMAP uid set such as "1:3,7" (no "*").
func ParseUIDSet(s string) ([]uint32, error) {
	var out []uint32
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, ":")
		a, err := strconv.ParseUint(lo, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("bad uid set %q", s)
		}
		b := a
		if isRange {
			if b, err = strconv.ParseUint(hi, 10, 32); err != nil {
				return nil, fmt.Errorf("bad uid set %q", s)
			}
		}
		if b < a {
			a, b = b, a
		}
		if b-a > 10_000_000 {
			return nil, fmt.Errorf("uid set %q too large", s)
		}
		for u := a; u <= b; u++ {
			out = append(out, uint32(u))
		}
	}
	return out, nil
}
