// Command genfixtures writes diff/testdata: cyrus.index and cyrus.header
// files of one small mailbox as real Cyrus 3.6 writes them at every index
// minor version 12-17 (converted with `reconstruct -V N`), with mbexamine
// output and IMAP FETCH state beside each, plus before/after pairs of a
// single flag STORE and of a cyr_expire repack. Run it as root through
// diff/testdata/gen.sh; see diff/testdata/README.md for the layout.
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/indexwire/indexwire/tests/cyrustest"
)

const mailbox = "user/alice"

func main() {
	out := flag.String("out", "diff/testdata", "output directory")
	flag.Parse()
	if why := cyrustest.Available(); why != "" {
		fmt.Fprintln(os.Stderr, "genfixtures:", why)
		os.Exit(2)
	}
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "genfixtures:", err)
		os.Exit(1)
	}
}

type gen struct {
	in  *cyrustest.Instance
	out string
	mb  string // data directory of user/alice
}

func run(out string) error {
	in, err := cyrustest.Launch(context.Background(), cyrustest.Options{Name: "fixture"})
	if err != nil {
		return err
	}
	defer in.Close()
	g := &gen{in: in, out: out}
	if err := g.populate(); err != nil {
		return err
	}
	if g.mb, err = in.MBPath(mailbox); err != nil {
		return err
	}
	for v := 12; v <= 17; v++ {
		if err := g.version(v); err != nil {
			return fmt.Errorf("v%d: %w", v, err)
		}
	}
	if err := g.store(); err != nil {
		return fmt.Errorf("v17-store: %w", err)
	}
	if err := g.repack(); err != nil {
		return fmt.Errorf("v17-repack: %w", err)
	}
	if lines, ok := in.Syslog(); ok {
		for _, l := range lines {
			if strings.Contains(l, "IOERROR") || strings.Contains(l, "DBERROR") {
				return fmt.Errorf("cyrus logged: %s", l)
			}
		}
	}
	return nil
}

// populate builds the mailbox state described in diff/testdata/README.md.
func (g *gen) populate() error {
	if err := g.in.MkUser("alice"); err != nil {
		return err
	}
	c, err := g.in.Login("alice")
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Select("INBOX"); err != nil {
		return err
	}
	if _, err := c.Append("INBOX", 12); err != nil {
		return err
	}
	steps := []struct {
		uids, op string
		flags    []string
	}{
		{"1,2,4,5,7,9", "+FLAGS", []string{`\Seen`}},
		{"2,5", "+FLAGS", []string{`\Flagged`}},
		{"3", "+FLAGS", []string{`\Answered`}},
		{"4", "+FLAGS", []string{`\Draft`}},
		{"6,8", "+FLAGS", []string{"$Label1"}},
		{"8,9", "+FLAGS", []string{"work"}},
		{"10", "+FLAGS", []string{`\Deleted`}},
	}
	for _, s := range steps {
		if _, err := c.Store(s.uids, s.op, s.flags...); err != nil {
			return err
		}
	}
	if _, err := c.Expunge(); err != nil {
		return err
	}
	return c.Logout()
}

// version converts the mailbox to minor version v and writes v<v>/.
func (g *gen) version(v int) error {
	said, err := g.in.ToolCombined("reconstruct", "-V", fmt.Sprint(v), mailbox)
	if err != nil {
		return err
	}
	dir := filepath.Join(g.out, fmt.Sprintf("v%d", v))
	if err := fresh(dir); err != nil {
		return err
	}
	if err := writeFile(dir, "reconstruct.txt", []byte(said)); err != nil {
		return err
	}
	if err := g.copy(dir, "cyrus.index", "cyrus.index"); err != nil {
		return err
	}
	if err := g.copy(dir, "cyrus.header", "cyrus.header"); err != nil {
		return err
	}
	if got, err := minorVersion(filepath.Join(dir, "cyrus.index")); err != nil || got != uint32(v) {
		return fmt.Errorf("cyrus.index minor version %d (%v) after reconstruct -V %d: Cyrus said %q", got, err, v, said)
	}
	ex, err := g.mbexamine(dir, "mbexamine.txt")
	if err != nil {
		return err
	}
	if ex.MinorVersion != uint32(v) {
		return fmt.Errorf("mbexamine says minor version %d", ex.MinorVersion)
	}
	ms, err := g.fetch()
	if err != nil {
		return err
	}
	if err := agree(ex, ms); err != nil {
		return err
	}
	return writeJSON(dir, "fetch.json", ms)
}

// store captures the v17 index around one UID STORE 3 +FLAGS (\Seen).
func (g *gen) store() error {
	dir := filepath.Join(g.out, "v17-store")
	if err := fresh(dir); err != nil {
		return err
	}
	if err := g.copy(dir, "cyrus.index", "before.index"); err != nil {
		return err
	}
	if err := g.copy(dir, "cyrus.header", "before.header"); err != nil {
		return err
	}
	c, err := g.in.Login("alice")
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Select("INBOX"); err != nil {
		return err
	}
	resp, err := c.Store("3", "+FLAGS", `\Seen`)
	if err != nil {
		return err
	}
	if err := c.Logout(); err != nil {
		return err
	}
	if len(resp) != 1 || resp[0].UID != 3 || !slices.Contains(resp[0].Flags, `\Seen`) {
		return fmt.Errorf("unexpected STORE response %+v", resp)
	}
	if err := writeJSON(dir, "store.json", resp); err != nil {
		return err
	}
	if err := g.copy(dir, "cyrus.index", "after.index"); err != nil {
		return err
	}
	return g.copy(dir, "cyrus.header", "after.header")
}

// repack expunges UID 11 and captures the index around `cyr_expire -X 0`,
// which removes the expunged records and rewrites cyrus.index.
func (g *gen) repack() error {
	dir := filepath.Join(g.out, "v17-repack")
	if err := fresh(dir); err != nil {
		return err
	}
	c, err := g.in.Login("alice")
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Select("INBOX"); err != nil {
		return err
	}
	if _, err := c.Store("11", "+FLAGS", `\Deleted`); err != nil {
		return err
	}
	if _, err := c.Expunge(); err != nil {
		return err
	}
	if err := c.Logout(); err != nil {
		return err
	}
	if err := g.copy(dir, "cyrus.index", "before.index"); err != nil {
		return err
	}
	if err := g.copy(dir, "cyrus.header", "before.header"); err != nil {
		return err
	}
	said, err := g.in.ToolCombined("cyr_expire", "-v", "-X", "0")
	if err != nil {
		return err
	}
	if err := writeFile(dir, "cyr_expire.txt", []byte(said)); err != nil {
		return err
	}
	if err := g.copy(dir, "cyrus.index", "after.index"); err != nil {
		return err
	}
	if err := g.copy(dir, "cyrus.header", "after.header"); err != nil {
		return err
	}
	ex, err := g.mbexamine(dir, "mbexamine.txt")
	if err != nil {
		return err
	}
	ms, err := g.fetch()
	if err != nil {
		return err
	}
	if err := agree(ex, ms); err != nil {
		return err
	}
	return writeJSON(dir, "fetch.json", ms)
}

// mbexamine runs mbexamine, stores its output with the instance directory
// replaced by "<instance>" and returns it parsed.
func (g *gen) mbexamine(dir, name string) (*cyrustest.Examine, error) {
	out, err := g.in.Tool("mbexamine", mailbox)
	if err != nil {
		return nil, err
	}
	ex, err := cyrustest.ParseMbexamine(out)
	if err != nil {
		return nil, err
	}
	return ex, writeFile(dir, name, []byte(strings.ReplaceAll(out, g.in.Dir, "<instance>")))
}

// fetch returns UID FETCH 1:* (UID FLAGS MODSEQ) from a read-only session.
func (g *gen) fetch() ([]cyrustest.Message, error) {
	c, err := g.in.Login("alice")
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if _, err := c.Examine("INBOX"); err != nil {
		return nil, err
	}
	ms, err := c.Fetch("1:*")
	if err != nil {
		return nil, err
	}
	return ms, c.Logout()
}

// agree checks that mbexamine and FETCH report the same messages, flags
// and modseqs, so a fixture never records an inconsistent state.
func agree(ex *cyrustest.Examine, ms []cyrustest.Message) error {
	if len(ex.Records) != len(ms) {
		return fmt.Errorf("mbexamine has %d records, FETCH %d messages", len(ex.Records), len(ms))
	}
	for _, m := range ms {
		r := ex.Record(m.UID)
		if r == nil {
			return fmt.Errorf("uid %d missing from mbexamine", m.UID)
		}
		fl, err := ex.Flags(r)
		if err != nil {
			return err
		}
		want := slices.DeleteFunc(slices.Clone(m.Flags), func(f string) bool { return f == `\Recent` })
		sort.Strings(want)
		if !slices.Equal(fl, want) || r.ModSeq != m.ModSeq {
			return fmt.Errorf("uid %d: mbexamine %v modseq %d, FETCH %v modseq %d", m.UID, fl, r.ModSeq, want, m.ModSeq)
		}
	}
	return nil
}

func (g *gen) copy(dir, from, to string) error {
	b, err := os.ReadFile(filepath.Join(g.mb, from))
	if err != nil {
		return err
	}
	return writeFile(dir, to, b)
}

func fresh(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return os.MkdirAll(dir, 0o755)
}

func writeFile(dir, name string, b []byte) error {
	return os.WriteFile(filepath.Join(dir, name), b, 0o644)
}

// writeJSON writes ms as a JSON array, one message per line.
func writeJSON(dir, name string, ms []cyrustest.Message) error {
	var b bytes.Buffer
	b.WriteString("[\n")
	for i, m := range ms {
		j, err := json.Marshal(m)
		if err != nil {
			return err
		}
		b.WriteString("  ")
		b.Write(j)
		if i < len(ms)-1 {
			b.WriteByte(',')
		}
		b.WriteByte('\n')
	}
	b.WriteString("]\n")
	return writeFile(dir, name, b.Bytes())
}

func minorVersion(path string) (uint32, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	if len(b) < 12 {
		return 0, fmt.Errorf("%s: %d bytes, too short for an index header", path, len(b))
	}
	return binary.BigEndian.Uint32(b[8:12]), nil
}
