package tests

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/indexwire/indexwire/diff"
	"github.com/indexwire/indexwire/tests/cyrustest"
	"github.com/indexwire/indexwire/tests/pair"
)

// convergeTimeout bounds every wait for the replica to catch up.
const convergeTimeout = 20 * time.Second

// story is one scenario: a running pair and an IMAP session on the
// primary with the user's INBOX selected. Its methods fail the test on
// any error so a scenario reads as the list of its steps.
type story struct {
	t    *testing.T
	p    *pair.Pair
	logs *lockedBuffer
	c    *cyrustest.Client
}

func newStory(t *testing.T, opts pair.Options) *story {
	t.Helper()
	logs := &lockedBuffer{}
	s := &story{t: t, p: startPairLogs(t, opts, logs), logs: logs}
	s.connect()
	t.Cleanup(func() {
		if s.c != nil {
			s.c.Close()
		}
	})
	return s
}

// connect (re)opens the primary session and selects INBOX.
func (s *story) connect() {
	s.t.Helper()
	if s.c != nil {
		s.c.Close()
	}
	c, err := s.p.Primary.Login(s.p.User())
	if err != nil {
		s.t.Fatalf("login to the primary: %v", err)
	}
	if _, err := c.Select("INBOX"); err != nil {
		s.t.Fatalf("select INBOX on the primary: %v", err)
	}
	s.c = c
}

// store runs UID STORE on the primary and returns the FETCH responses.
func (s *story) store(uids, op string, flags ...string) []cyrustest.Message {
	s.t.Helper()
	res, err := s.c.Store(uids, op, flags...)
	if err != nil {
		s.t.Fatalf("primary: %v", err)
	}
	return res
}

// expunge runs EXPUNGE on the primary and returns the expunged sequence numbers.
func (s *story) expunge() []uint32 {
	s.t.Helper()
	seqs, err := s.c.Expunge()
	if err != nil {
		s.t.Fatalf("primary: expunge: %v", err)
	}
	return seqs
}

// replica returns the replica's messages by UID, read over IMAP.
func (s *story) replica() map[uint32]cyrustest.Message {
	s.t.Helper()
	return s.side(s.p.Replica)
}

func (s *story) side(in *cyrustest.Instance) map[uint32]cyrustest.Message {
	s.t.Helper()
	msgs, err := pair.Fetch(in, s.p.User())
	if err != nil {
		s.t.Fatalf("fetch from %s: %v", in.Name, err)
	}
	out := make(map[uint32]cyrustest.Message, len(msgs))
	for _, m := range msgs {
		out[m.UID] = m
	}
	return out
}

// expectReplica fails unless the replica shows exactly flags on uid
// (\Recent ignored, order and case free).
func (s *story) expectReplica(uid uint32, flags ...string) {
	s.t.Helper()
	m, ok := s.replica()[uid]
	if !ok {
		s.t.Fatalf("replica: uid %d not visible", uid)
	}
	if got, want := normFlags(m.Flags), normFlags(flags); !slices.Equal(got, want) {
		s.t.Fatalf("replica uid %d flags %v, want %v", uid, got, want)
	}
}

func normFlags(fl []string) []string {
	out := []string{}
	for _, f := range fl {
		if !strings.EqualFold(f, `\Recent`) {
			out = append(out, strings.ToLower(f))
		}
	}
	slices.Sort(out)
	return out
}

// converge waits until both sides agree message by message over IMAP
// (UID, FLAGS, MODSEQ), then checks that synccrcs.basic in both
// cyrus.index files is equal. It returns how long the wait took.
func (s *story) converge() time.Duration {
	s.t.Helper()
	start := time.Now()
	if err := s.p.WaitConverged(convergeTimeout); err != nil {
		s.t.Fatalf("not converged after %v: %v", convergeTimeout, err)
	}
	took := time.Since(start)
	// The header may still be one commit behind when IMAP already agrees
	// (Cyrus writes the records, then the header); give it a moment.
	deadline := time.Now().Add(5 * time.Second)
	for {
		pi, ri := s.indexes()
		if pi.Header.SyncCRCBasic == ri.Header.SyncCRCBasic {
			if pi.Header.HighestModSeq != ri.Header.HighestModSeq {
				s.t.Fatalf("synccrcs.basic equal (%08x) but highestmodseq primary %d, replica %d",
					pi.Header.SyncCRCBasic, pi.Header.HighestModSeq, ri.Header.HighestModSeq)
			}
			return took
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("synccrcs.basic differs: primary %08x (highestmodseq %d), replica %08x (highestmodseq %d)",
				pi.Header.SyncCRCBasic, pi.Header.HighestModSeq, ri.Header.SyncCRCBasic, ri.Header.HighestModSeq)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// indexes decodes the INBOX cyrus.index of both sides; the primary's is
// read through the mount (the primary's spool is the mountpoint).
func (s *story) indexes() (primary, replica *diff.Index) {
	s.t.Helper()
	return s.index(s.p.Primary), s.index(s.p.Replica)
}

func (s *story) index(in *cyrustest.Instance) *diff.Index {
	s.t.Helper()
	p := filepath.Join(s.mailboxDir(in), "cyrus.index")
	b, err := os.ReadFile(p)
	if err != nil {
		s.t.Fatal(err)
	}
	ix, err := diff.DecodeIndex(p, b)
	if err != nil {
		s.t.Fatalf("%s: %v", in.Name, err)
	}
	return ix
}

// mailboxHeader decodes the INBOX cyrus.header of one side.
func (s *story) mailboxHeader(in *cyrustest.Instance) *diff.MailboxHeader {
	s.t.Helper()
	p := filepath.Join(s.mailboxDir(in), "cyrus.header")
	b, err := os.ReadFile(p)
	if err != nil {
		s.t.Fatal(err)
	}
	mh, err := diff.ParseMailboxHeader(p, b)
	if err != nil {
		s.t.Fatalf("%s: %v", in.Name, err)
	}
	return mh
}

func (s *story) mailboxDir(in *cyrustest.Instance) string {
	s.t.Helper()
	dir, err := pair.MailboxDir(in, s.p.User())
	if err != nil {
		s.t.Fatalf("mailbox dir on %s: %v", in.Name, err)
	}
	return dir
}

// record returns the index record of uid on one side.
func (s *story) record(in *cyrustest.Instance, uid uint32) *diff.Record {
	s.t.Helper()
	ix := s.index(in)
	i := ix.FindUID(uid)
	if i < 0 {
		s.t.Fatalf("%s: uid %d not in cyrus.index", in.Name, uid)
	}
	return ix.Records[i]
}

// daemonErrors returns the daemons' log lines at level error or above.
func (s *story) daemonErrors() []string {
	var out []string
	for _, l := range strings.Split(s.logs.String(), "\n") {
		if strings.Contains(l, `"level":"error"`) || strings.Contains(l, `"level":"fatal"`) ||
			strings.Contains(l, `"level":"panic"`) || strings.HasPrefix(l, "panic:") {
			out = append(out, l)
		}
	}
	return out
}

// syslogMark is how many syslog lines of in were captured so far, or -1
// when syslog is not captured here.
func syslogMark(in *cyrustest.Instance) int {
	lines, ok := in.Syslog()
	if !ok {
		return -1
	}
	return len(lines)
}

// noIOErrorsSince fails t if in logged an IOERROR or DBERROR to syslog
// after mark (instances of earlier scenarios share the name, so the
// captured log holds their lines too).
func noIOErrorsSince(t *testing.T, in *cyrustest.Instance, mark int) {
	t.Helper()
	lines, ok := in.Syslog()
	if !ok || mark < 0 {
		t.Logf("syslog of %s not captured (/dev/log served elsewhere): IOERROR check skipped", in.Name)
		return
	}
	for _, l := range lines[mark:] {
		if strings.Contains(l, "IOERROR") || strings.Contains(l, "DBERROR") {
			t.Errorf("%s logged: %s", in.Name, l)
		}
	}
}

// freeTCP returns a free TCP address on 127.0.0.1.
func freeTCP(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// uidRange formats lo:hi.
func uidRange(lo, hi uint32) string { return fmt.Sprintf("%d:%d", lo, hi) }
