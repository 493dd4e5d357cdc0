package diff

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// mailboxHeaderMagic opens every cyrus.header file (MAILBOX_HEADER_MAGIC).
const mailboxHeaderMagic = "\xa1\x02\x8b\x0dCyrus mailbox header\n" +
	"\"The best thing about this system was that it had lots of goals.\"\n" +
	"\t--Jim Morris on Andrew\n"

// ACLEntry is one identifier and its rights from a mailbox ACL.
type ACLEntry struct {
	ID     string
	Rights string
}

// MailboxHeader is a decoded cyrus.header: the mailbox name, unique id, ACL
// and the names of the user flags (keyword n is UserFlags[n]; "" is a hole).
type MailboxHeader struct {
	Name      string
	UniqueID  string
	ACL       []ACLEntry
	UserFlags []string
	// Legacy is true for the tab-separated pre-3.0 form; false for the dlist line.
	Legacy bool
	// Fields holds the dlist keys other than N, I, A and U in file order
	// (e.g. T for the mailbox type), so Encode writes them back unchanged.
	Fields []DlistField
}

// DlistField is one key and its raw value text from a dlist line.
type DlistField struct {
	Key   string
	Value string
}

// FlagIndex returns the bit number of keyword name (case-insensitive, as
// Cyrus compares keywords), or -1.
func (h *MailboxHeader) FlagIndex(name string) int {
	for i, n := range h.UserFlags {
		if n != "" && strings.EqualFold(n, name) {
			return i
		}
	}
	return -1
}

// AddFlag returns the bit for keyword name, adding it in the first free slot
// the way Cyrus does. It fails when all 128 slots are taken.
func (h *MailboxHeader) AddFlag(name string) (int, error) {
	if i := h.FlagIndex(name); i >= 0 {
		return i, nil
	}
	if err := validFlagName(name); err != nil {
		return -1, err
	}
	for i, n := range h.UserFlags {
		if n == "" {
			h.UserFlags[i] = name
			return i, nil
		}
	}
	if len(h.UserFlags) >= MaxUserFlags {
		return -1, fmt.Errorf("add keyword %q to %s: all %d user flags in use", name, h.UniqueID, MaxUserFlags)
	}
	h.UserFlags = append(h.UserFlags, name)
	return len(h.UserFlags) - 1, nil
}

func validFlagName(name string) error {
	if name == "" || len(name) > maxNameLen || strings.HasPrefix(name, `\`) {
		return fmt.Errorf("keyword %q: %w", name, ErrMalformed)
	}
	for _, c := range []byte(name) {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`(){%*"\]`, c) >= 0 {
			return fmt.Errorf("keyword %q: byte %q not allowed: %w", name, c, ErrMalformed)
		}
	}
	return nil
}

// ParseMailboxHeader decodes a cyrus.header file (either the 3.x dlist form
// or the legacy tab-separated form). path only names the source in errors.
func ParseMailboxHeader(path string, b []byte) (*MailboxHeader, error) {
	if !bytes.HasPrefix(b, []byte(mailboxHeaderMagic)) {
		n := min(len(b), len(mailboxHeaderMagic))
		at := 0
		for at < n && b[at] == mailboxHeaderMagic[at] {
			at++
		}
		return nil, corrupt(path, int64(at), "cyrus.header magic", ErrMalformed, "Cyrus mailbox header magic", fmt.Sprintf("%q", b[at:min(len(b), at+8)]))
	}
	rest := b[len(mailboxHeaderMagic):]
	if len(rest) > 0 && rest[0] == '%' {
		return parseDlistHeader(path, rest, int64(len(mailboxHeaderMagic)))
	}
	return parseLegacyHeader(path, rest, int64(len(mailboxHeaderMagic)))
}

func parseLegacyHeader(path string, b []byte, base int64) (*MailboxHeader, error) {
	lines := strings.SplitN(string(b), "\n", 4)
	if len(lines) < 3 {
		return nil, corrupt(path, base, "legacy cyrus.header", ErrTruncated, "3 lines after the magic", fmt.Sprintf("%d", len(lines)))
	}
	h := &MailboxHeader{Legacy: true}
	first := strings.Split(lines[0], "\t")
	h.Name = first[0]
	if len(first) > 1 {
		h.UniqueID = first[1]
	}
	if lines[1] != "" {
		h.UserFlags = strings.Split(strings.TrimRight(lines[1], " "), " ")
	}
	acl := strings.Split(lines[2], "\t")
	for i := 0; i+1 < len(acl); i += 2 {
		h.ACL = append(h.ACL, ACLEntry{ID: acl[i], Rights: acl[i+1]})
	}
	return h, nil
}

// dlist tokenizer: atoms, "quoted" strings, NIL, ( lists ) and %( kv lists ).
type dlistParser struct {
	path  string
	base  int64
	b     []byte
	off   int
	depth int
}

// maxDlistDepth bounds list nesting; Cyrus's header line nests two deep.
const maxDlistDepth = 8

func (p *dlistParser) err(what, want string) error {
	got := "end of input"
	if p.off < len(p.b) {
		got = fmt.Sprintf("%q", p.b[p.off:min(len(p.b), p.off+12)])
	}
	return corrupt(p.path, p.base+int64(p.off), what, ErrMalformed, want, got)
}

func (p *dlistParser) skipSpace() {
	for p.off < len(p.b) && p.b[p.off] == ' ' {
		p.off++
	}
}

// value returns the raw text of one value (atom, string, list or kvlist).
func (p *dlistParser) value() (string, error) {
	p.skipSpace()
	start := p.off
	if p.off >= len(p.b) {
		return "", p.err("dlist value", "a value")
	}
	switch c := p.b[p.off]; {
	case c == '"':
		p.off++
		for p.off < len(p.b) && p.b[p.off] != '"' {
			if p.b[p.off] == '\\' {
				p.off++
			}
			p.off++
		}
		if p.off >= len(p.b) {
			return "", p.err("dlist string", "closing quote")
		}
		p.off++
	case c == '(' || c == '%':
		if p.depth >= maxDlistDepth {
			return "", p.err("dlist list", fmt.Sprintf("nesting of at most %d", maxDlistDepth))
		}
		p.depth++
		defer func() { p.depth-- }()
		if c == '%' {
			p.off++
			if p.off >= len(p.b) || p.b[p.off] != '(' {
				return "", p.err("dlist kvlist", "'%('")
			}
		}
		p.off++
		for {
			p.skipSpace()
			if p.off >= len(p.b) {
				return "", p.err("dlist list", "')'")
			}
			if p.b[p.off] == ')' {
				p.off++
				break
			}
			if _, err := p.value(); err != nil {
				return "", err
			}
		}
	default:
		for p.off < len(p.b) && !strings.ContainsRune(" ()\n\r", rune(p.b[p.off])) {
			p.off++
		}
		if p.off == start {
			return "", p.err("dlist atom", "an atom")
		}
	}
	return string(p.b[start:p.off]), nil
}

// items splits the inside of a list's raw text into its values.
func (p *dlistParser) items(raw string, kv bool) ([]string, error) {
	inner := strings.TrimPrefix(raw, "%")
	if len(inner) < 2 || inner[0] != '(' || inner[len(inner)-1] != ')' {
		return nil, p.err("dlist list", "a parenthesised list")
	}
	q := &dlistParser{path: p.path, base: p.base, b: []byte(inner[1 : len(inner)-1])}
	var out []string
	for {
		q.skipSpace()
		if q.off >= len(q.b) {
			break
		}
		v, err := q.value()
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	if kv && len(out)%2 != 0 {
		return nil, p.err("dlist kvlist", "key/value pairs")
	}
	return out, nil
}

func unquote(v string) string {
	if v == "NIL" {
		return ""
	}
	if len(v) >= 2 && v[0] == '"' {
		if s, err := strconv.Unquote(v); err == nil {
			return s
		}
		return v[1 : len(v)-1]
	}
	return v
}

func parseDlistHeader(path string, b []byte, base int64) (*MailboxHeader, error) {
	line := b
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		line = b[:i]
	}
	p := &dlistParser{path: path, base: base, b: line}
	raw, err := p.value()
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(raw, "%(") {
		return nil, p.err("cyrus.header dlist", "'%('")
	}
	kv, err := p.items(raw, true)
	if err != nil {
		return nil, err
	}
	h := &MailboxHeader{}
	for i := 0; i < len(kv); i += 2 {
		k, v := kv[i], kv[i+1]
		switch k {
		case "N":
			h.Name = unquote(v)
		case "I":
			h.UniqueID = unquote(v)
		case "A":
			acl, err := p.items(v, true)
			if err != nil {
				return nil, err
			}
			for j := 0; j < len(acl); j += 2 {
				h.ACL = append(h.ACL, ACLEntry{ID: unquote(acl[j]), Rights: unquote(acl[j+1])})
			}
		case "U":
			fl, err := p.items(v, false)
			if err != nil {
				return nil, err
			}
			for _, f := range fl {
				h.UserFlags = append(h.UserFlags, unquote(f))
			}
		default:
			h.Fields = append(h.Fields, DlistField{Key: k, Value: v})
		}
	}
	return h, nil
}

// quoteAtom writes s as a dlist atom when it can be one, else quoted.
func quoteAtom(s string) string {
	if s == "" {
		return "NIL"
	}
	for _, c := range []byte(s) {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`()"%\{`, c) >= 0 {
			return strconv.Quote(s)
		}
	}
	return s
}

// Encode returns the file bytes for h in the form it was read in. For a
// header Cyrus wrote, Encode(Parse(b)) == b.
func (h *MailboxHeader) Encode() []byte {
	var w strings.Builder
	w.WriteString(mailboxHeaderMagic)
	if h.Legacy {
		w.WriteString(h.Name + "\t" + h.UniqueID + "\n")
		for _, f := range h.UserFlags {
			w.WriteString(f + " ")
		}
		w.WriteString("\n")
		for _, a := range h.ACL {
			w.WriteString(a.ID + "\t" + a.Rights + "\t")
		}
		w.WriteString("\n")
		return []byte(w.String())
	}
	// Cyrus writes T first, then N, I, (P...), A, U; keep unknown keys in place after T.
	w.WriteString("%(")
	var parts []string
	wrote := false
	emitKnown := func() {
		if wrote {
			return
		}
		wrote = true
		parts = append(parts, "N "+quoteAtom(h.Name), "I "+quoteAtom(h.UniqueID))
	}
	for _, f := range h.Fields {
		if f.Key != "T" {
			emitKnown()
		}
		parts = append(parts, f.Key+" "+f.Value)
	}
	emitKnown()
	var acl []string
	for _, a := range h.ACL {
		acl = append(acl, quoteAtom(a.ID)+" "+quoteAtom(a.Rights))
	}
	parts = append(parts, "A %("+strings.Join(acl, " ")+")")
	if len(h.UserFlags) > 0 {
		var fl []string
		for _, f := range h.UserFlags {
			fl = append(fl, quoteAtom(f))
		}
		parts = append(parts, "U ("+strings.Join(fl, " ")+")")
	}
	w.WriteString(strings.Join(parts, " "))
	w.WriteString(")\n")
	return []byte(w.String())
}
