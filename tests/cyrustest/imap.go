package cyrustest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// DefaultCommandTimeout bounds each IMAP command of a Client.
const DefaultCommandTimeout = 60 * time.Second

// appendBatch is how many messages one MULTIAPPEND carries.
const appendBatch = 500

// Message is one message's state as IMAP reports it.
type Message struct {
	UID    uint32   `json:"uid"`
	Flags  []string `json:"flags"`
	ModSeq uint64   `json:"modseq"`
}

// MailboxStatus is what SELECT or EXAMINE reported.
type MailboxStatus struct {
	Exists        uint32
	UIDValidity   uint32
	UIDNext       uint32
	HighestModSeq uint64
	ReadOnly      bool
}

// Client is a minimal IMAP4rev1 client for tests against Cyrus on
// 127.0.0.1: plaintext LOGIN, CONDSTORE, MULTIAPPEND with LITERAL+.
// It is not safe for concurrent use.
type Client struct {
	// Timeout bounds each command; DefaultCommandTimeout if zero.
	Timeout time.Duration

	conn net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
	tag  int
	caps map[string]bool
}

// Dial connects to an IMAP server and reads its greeting.
func Dial(addr string) (*Client, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("imap dial %s: %w", addr, err)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	c := &Client{conn: conn, r: bufio.NewReaderSize(conn, 64<<10), w: bufio.NewWriterSize(conn, 64<<10)}
	c.conn.SetDeadline(time.Now().Add(10 * time.Second))
	g, err := c.readResponse()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("imap greeting from %s: %w", addr, err)
	}
	if !bytes.HasPrefix(g, []byte("* OK")) {
		conn.Close()
		return nil, fmt.Errorf("imap greeting from %s: %q", addr, g)
	}
	return c, nil
}

// Close closes the connection without LOGOUT.
func (c *Client) Close() error { return c.conn.Close() }

// Login authenticates with LOGIN, reads the capabilities and enables
// CONDSTORE so FETCH responses carry MODSEQ.
func (c *Client) Login(user, pass string) error {
	if _, _, err := c.do("LOGIN " + quote(user) + " " + quote(pass)); err != nil {
		return fmt.Errorf("login %s: %w", user, err)
	}
	untagged, _, err := c.do("CAPABILITY")
	if err != nil {
		return fmt.Errorf("capability: %w", err)
	}
	c.caps = map[string]bool{}
	for _, u := range untagged {
		if f := strings.Fields(string(u)); len(f) > 0 && f[0] == "CAPABILITY" {
			for _, cp := range f[1:] {
				c.caps[strings.ToUpper(cp)] = true
			}
		}
	}
	if !c.caps["CONDSTORE"] {
		return errors.New("login: server lacks CONDSTORE")
	}
	if _, _, err := c.do("ENABLE CONDSTORE"); err != nil {
		return fmt.Errorf("enable condstore: %w", err)
	}
	return nil
}

// Has reports whether the server announced capability name.
func (c *Client) Has(name string) bool { return c.caps[strings.ToUpper(name)] }

// Create creates mailbox.
func (c *Client) Create(mailbox string) error {
	if _, _, err := c.do("CREATE " + quote(mailbox)); err != nil {
		return fmt.Errorf("create %s: %w", mailbox, err)
	}
	return nil
}

// Select opens mailbox read-write.
func (c *Client) Select(mailbox string) (MailboxStatus, error) {
	return c.open("SELECT", mailbox)
}

// Examine opens mailbox read-only (no \Recent or \Seen side effects).
func (c *Client) Examine(mailbox string) (MailboxStatus, error) {
	return c.open("EXAMINE", mailbox)
}

func (c *Client) open(verb, mailbox string) (MailboxStatus, error) {
	var st MailboxStatus
	untagged, text, err := c.do(verb + " " + quote(mailbox))
	if err != nil {
		return st, fmt.Errorf("%s %s: %w", strings.ToLower(verb), mailbox, err)
	}
	for _, u := range untagged {
		f := strings.Fields(string(u))
		switch {
		case len(f) >= 2 && f[1] == "EXISTS":
			n, err := strconv.ParseUint(f[0], 10, 32)
			if err != nil {
				return st, fmt.Errorf("%s %s: bad EXISTS %q", verb, mailbox, u)
			}
			st.Exists = uint32(n)
		case len(f) >= 1 && f[0] == "OK":
			name, arg := respCode(u)
			if err := st.setCode(name, arg); err != nil {
				return st, fmt.Errorf("%s %s: %w", verb, mailbox, err)
			}
		}
	}
	name, _ := respCode([]byte(text))
	st.ReadOnly = name == "READ-ONLY"
	return st, nil
}

func (st *MailboxStatus) setCode(name, arg string) error {
	var err error
	var n uint64
	switch name {
	case "UIDVALIDITY":
		n, err = strconv.ParseUint(arg, 10, 32)
		st.UIDValidity = uint32(n)
	case "UIDNEXT":
		n, err = strconv.ParseUint(arg, 10, 32)
		st.UIDNext = uint32(n)
	case "HIGHESTMODSEQ":
		st.HighestModSeq, err = strconv.ParseUint(arg, 10, 64)
	}
	if err != nil {
		return fmt.Errorf("bad %s %q", name, arg)
	}
	return nil
}

// Status returns STATUS (MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ UNSEEN)
// keyed by item name.
func (c *Client) Status(mailbox string) (map[string]uint64, error) {
	untagged, _, err := c.do("STATUS " + quote(mailbox) + " (MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ UNSEEN)")
	if err != nil {
		return nil, fmt.Errorf("status %s: %w", mailbox, err)
	}
	for _, u := range untagged {
		toks, err := parseTokens(u)
		if err != nil {
			return nil, fmt.Errorf("status %s: %w", mailbox, err)
		}
		if len(toks) != 3 || toks[0] != Atom("STATUS") {
			continue
		}
		list, ok := toks[2].([]any)
		if !ok || len(list)%2 != 0 {
			return nil, fmt.Errorf("status %s: bad response %q", mailbox, u)
		}
		out := map[string]uint64{}
		for i := 0; i < len(list); i += 2 {
			k, _ := list[i].(Atom)
			v, _ := list[i+1].(Atom)
			n, err := strconv.ParseUint(string(v), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("status %s: bad %s %q", mailbox, k, v)
			}
			out[string(k)] = n
		}
		return out, nil
	}
	return nil, fmt.Errorf("status %s: no STATUS response", mailbox)
}

// Append appends n synthetic messages (SynthMessage numbered from the
// mailbox's UIDNEXT) with flags, in MULTIAPPEND batches, and returns
// the UIDs Cyrus assigned (APPENDUID).
func (c *Client) Append(mailbox string, n int, flags ...string) ([]uint32, error) {
	st, err := c.Status(mailbox)
	if err != nil {
		return nil, fmt.Errorf("append: %w", err)
	}
	first := int(st["UIDNEXT"])
	var uids []uint32
	for done := 0; done < n; {
		k := min(appendBatch, n-done)
		msgs := make([][]byte, k)
		dates := make([]time.Time, k)
		for i := range msgs {
			msgs[i], dates[i] = SynthMessage(first + done + i)
		}
		got, err := c.appendRaw(mailbox, flags, msgs, dates)
		if err != nil {
			return uids, fmt.Errorf("append to %s after %d messages: %w", mailbox, done, err)
		}
		uids = append(uids, got...)
		done += k
	}
	return uids, nil
}

// appendRaw sends one (MULTI)APPEND; literals are non-synchronizing when
// the server has LITERAL+, else each waits for the continuation.
func (c *Client) appendRaw(mailbox string, flags []string, msgs [][]byte, dates []time.Time) ([]uint32, error) {
	if len(msgs) > 1 && !c.Has("MULTIAPPEND") {
		var all []uint32
		for i := range msgs {
			u, err := c.appendRaw(mailbox, flags, msgs[i:i+1], dates[i:i+1])
			if err != nil {
				return all, err
			}
			all = append(all, u...)
		}
		return all, nil
	}
	c.deadline()
	tag := c.nextTag()
	plus := c.Has("LITERAL+")
	fmt.Fprintf(c.w, "%s APPEND %s", tag, quote(mailbox))
	for i, m := range msgs {
		c.w.WriteByte(' ')
		if len(flags) > 0 {
			fmt.Fprintf(c.w, "(%s) ", strings.Join(flags, " "))
		}
		fmt.Fprintf(c.w, "%s ", quote(dates[i].UTC().Format("02-Jan-2006 15:04:05 -0700")))
		if plus {
			fmt.Fprintf(c.w, "{%d+}\r\n", len(m))
		} else {
			fmt.Fprintf(c.w, "{%d}\r\n", len(m))
			if err := c.waitContinuation(); err != nil {
				return nil, err
			}
		}
		c.w.Write(m)
	}
	c.w.WriteString("\r\n")
	if err := c.w.Flush(); err != nil {
		return nil, err
	}
	_, text, err := c.complete(tag)
	if err != nil {
		return nil, err
	}
	name, arg := respCode([]byte(text))
	if name != "APPENDUID" {
		return nil, fmt.Errorf("no APPENDUID in %q", text)
	}
	_, set, ok := strings.Cut(arg, " ")
	if !ok {
		return nil, fmt.Errorf("bad APPENDUID %q", arg)
	}
	uids, err := ParseUIDSet(set)
	if err != nil {
		return nil, err
	}
	if len(uids) != len(msgs) {
		return nil, fmt.Errorf("APPENDUID %q names %d uids for %d messages", arg, len(uids), len(msgs))
	}
	return uids, nil
}

func (c *Client) waitContinuation() error {
	if err := c.w.Flush(); err != nil {
		return err
	}
	for {
		line, err := c.readResponse()
		if err != nil {
			return err
		}
		if bytes.HasPrefix(line, []byte("+")) {
			return nil
		}
		if !bytes.HasPrefix(line, []byte("* ")) {
			return fmt.Errorf("literal refused: %q", line)
		}
	}
}

// Store runs UID STORE uidset op (flags...), op being +FLAGS, -FLAGS or
// FLAGS (optionally .SILENT), and returns the untagged FETCH responses.
func (c *Client) Store(uidset, op string, flags ...string) ([]Message, error) {
	untagged, _, err := c.do(fmt.Sprintf("UID STORE %s %s (%s)", uidset, op, strings.Join(flags, " ")))
	if err != nil {
		return nil, fmt.Errorf("uid store %s %s: %w", uidset, op, err)
	}
	return fetchResponses(untagged)
}

// Fetch runs UID FETCH uidset (UID FLAGS MODSEQ).
func (c *Client) Fetch(uidset string) ([]Message, error) {
	untagged, _, err := c.do("UID FETCH " + uidset + " (UID FLAGS MODSEQ)")
	if err != nil {
		return nil, fmt.Errorf("uid fetch %s: %w", uidset, err)
	}
	return fetchResponses(untagged)
}

// Expunge runs EXPUNGE and returns the expunged sequence numbers.
func (c *Client) Expunge() ([]uint32, error) {
	untagged, _, err := c.do("EXPUNGE")
	if err != nil {
		return nil, fmt.Errorf("expunge: %w", err)
	}
	return expunged(untagged)
}

// UIDExpunge runs UID EXPUNGE uidset (UIDPLUS) and returns the expunged
// sequence numbers.
func (c *Client) UIDExpunge(uidset string) ([]uint32, error) {
	untagged, _, err := c.do("UID EXPUNGE " + uidset)
	if err != nil {
		return nil, fmt.Errorf("uid expunge %s: %w", uidset, err)
	}
	return expunged(untagged)
}

// Noop runs NOOP and returns the FETCH responses it carried (changes made
// by other sessions).
func (c *Client) Noop() ([]Message, error) {
	untagged, _, err := c.do("NOOP")
	if err != nil {
		return nil, fmt.Errorf("noop: %w", err)
	}
	return fetchResponses(untagged)
}

// Logout runs LOGOUT and closes the connection.
func (c *Client) Logout() error {
	_, _, err := c.do("LOGOUT")
	c.conn.Close()
	if err != nil {
		return fmt.Errorf("logout: %w", err)
	}
	return nil
}

func expunged(untagged [][]byte) ([]uint32, error) {
	var out []uint32
	for _, u := range untagged {
		f := strings.Fields(string(u))
		if len(f) == 2 && f[1] == "EXPUNGE" {
			n, err := strconv.ParseUint(f[0], 10, 32)
			if err != nil {
				return nil, fmt.Errorf("bad EXPUNGE response %q", u)
			}
			out = append(out, uint32(n))
		}
	}
	return out, nil
}

func (c *Client) nextTag() string {
	c.tag++
	return "a" + strconv.Itoa(c.tag)
}

func (c *Client) deadline() {
	d := c.Timeout
	if d == 0 {
		d = DefaultCommandTimeout
	}
	c.conn.SetDeadline(time.Now().Add(d))
}

// do sends one command line and waits for its tagged completion. It
// returns the untagged responses (without "* ") and the tagged text after
// OK; NO and BAD become errors.
func (c *Client) do(command string) ([][]byte, string, error) {
	c.deadline()
	tag := c.nextTag()
	c.w.WriteString(tag + " " + command + "\r\n")
	if err := c.w.Flush(); err != nil {
		return nil, "", err
	}
	return c.complete(tag)
}

func (c *Client) complete(tag string) ([][]byte, string, error) {
	var untagged [][]byte
	for {
		line, err := c.readResponse()
		if err != nil {
			return untagged, "", err
		}
		if rest, ok := bytes.CutPrefix(line, []byte("* ")); ok {
			untagged = append(untagged, rest)
			continue
		}
		rest, ok := bytes.CutPrefix(line, []byte(tag+" "))
		if !ok {
			continue // continuation request we did not ask for
		}
		status, text, _ := strings.Cut(string(rest), " ")
		switch strings.ToUpper(status) {
		case "OK":
			return untagged, text, nil
		case "NO", "BAD":
			return untagged, text, fmt.Errorf("server said %s %s", status, text)
		default:
			return untagged, text, fmt.Errorf("bad tagged response %q", line)
		}
	}
}

// maxLiteral bounds a literal the client accepts from the server.
const maxLiteral = 64 << 20

// readResponse reads one response, including any literals, exactly as sent
// ("{N}\r\n" markers and literal bytes kept), without the final CRLF.
func (c *Client) readResponse() ([]byte, error) {
	var buf []byte
	for {
		line, err := c.r.ReadBytes('\n')
		if err != nil {
			return nil, fmt.Errorf("read response: %w", err)
		}
		buf = append(buf, line...)
		n, ok := literalAtEnd(line)
		if !ok {
			return bytes.TrimRight(buf, "\r\n"), nil
		}
		if n > maxLiteral {
			return nil, fmt.Errorf("read response: literal of %d bytes", n)
		}
		start := len(buf)
		buf = append(buf, make([]byte, n)...)
		if _, err := io.ReadFull(c.r, buf[start:]); err != nil {
			return nil, fmt.Errorf("read literal: %w", err)
		}
	}
}

// literalAtEnd reports N if line ends with "{N}\r\n" (or "{N+}").
func literalAtEnd(line []byte) (int, bool) {
	l := bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
	if len(l) < 3 || l[len(l)-1] != '}' {
		return 0, false
	}
	i := bytes.LastIndexByte(l, '{')
	if i < 0 {
		return 0, false
	}
	num := bytes.TrimSuffix(l[i+1:len(l)-1], []byte("+"))
	n, err := strconv.Atoi(string(num))
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// respCode extracts "[NAME args]" from a status response text.
func respCode(text []byte) (name, arg string) {
	s := string(text)
	if f, rest, ok := strings.Cut(s, " "); ok && (f == "OK" || f == "NO" || f == "BAD" || f == "BYE") {
		s = rest
	}
	if !strings.HasPrefix(s, "[") {
		return "", ""
	}
	end := strings.IndexByte(s, ']')
	if end < 0 {
		return "", ""
	}
	name, arg, _ = strings.Cut(s[1:end], " ")
	return strings.ToUpper(name), arg
}

func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}
