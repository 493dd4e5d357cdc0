package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/indexwire/indexwire/diff"
	"github.com/indexwire/indexwire/tests/cyrustest"
	"github.com/indexwire/indexwire/tests/pair"
)

const benchUser = "alice"

// visibleTimeout bounds how long one change may take to show on the replica.
const visibleTimeout = 15 * time.Second

// noopAfter is how long the persistent replica session polls with UID FETCH
// alone, after the change is in the replica's file, before it adds a NOOP.
const noopAfter = 3 * time.Second

// replSys is one replicating system (Cyrus rolling sync or indexwire) under
// measurement: a primary, a replica and the sessions that drive and watch them.
type replSys struct {
	name             string
	primary, replica *cyrustest.Instance
	filter           string // tcpdump filter of its replication traffic
	port             uint16
	pc, rc           *cyrustest.Client // primary (SELECTed), replica (EXAMINEd)
	index            string            // replica's cyrus.index
	layout           diff.Layout
	offs             map[uint32]int64
	close            func()

	fileLat, imapLat []time.Duration
	storeLat         []time.Duration // the STORE command's own round trip on the primary
	afterOK          []time.Duration // file-visible minus the STORE's round trip (< 0: before the tagged OK)
	noops, timeouts  int
}

// replResult is one system at one mailbox size.
type replResult struct {
	sys      *replSys
	n        int
	changes  int
	payload  flowBytes
	converge error
}

// setupCyrus starts Cyrus's own replication: a replica, a primary with a
// rolling sync_client under master, N messages seeded with sync_client -u.
func setupCyrus(ctx context.Context, base string, n int) (*replSys, error) {
	dir, err := os.MkdirTemp(base, "cyrusrepl-")
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		return nil, err
	}
	s := &replSys{name: "Cyrus rolling sync"}
	s.close = func() {
		if s.primary != nil {
			s.primary.Close()
		}
		if s.replica != nil {
			s.replica.Close()
		}
		os.RemoveAll(dir)
	}
	fail := func(err error) (*replSys, error) { s.close(); return nil, err }
	if s.replica, err = cyrustest.Launch(ctx, cyrustest.Options{Name: "creplica", BaseDir: dir}); err != nil {
		return fail(err)
	}
	if s.primary, err = cyrustest.Launch(ctx, cyrustest.Options{Name: "cprimary", BaseDir: dir, SyncTo: s.replica, Rolling: true}); err != nil {
		return fail(err)
	}
	if err := s.primary.MkUser(benchUser); err != nil {
		return fail(err)
	}
	if err := s.replica.SetPassword(benchUser); err != nil {
		return fail(err)
	}
	c, err := s.primary.Login(benchUser)
	if err != nil {
		return fail(err)
	}
	_, err = c.Append("INBOX", n)
	c.Logout()
	if err != nil {
		return fail(fmt.Errorf("append: %w", err))
	}
	if _, err := s.primary.SyncUser(benchUser); err != nil {
		return fail(fmt.Errorf("seed replica: %w", err))
	}
	if err := waitConverged(ctx, s.primary, s.replica, 2*time.Minute); err != nil {
		return fail(fmt.Errorf("cyrus replica after seeding: %w", err))
	}
	s.filter, s.port = fmt.Sprintf("tcp port %d", s.replica.SyncPort), uint16(s.replica.SyncPort)
	return s, nil
}

// setupIndexwire starts the indexwire pair (tests/pair) with N messages.
func setupIndexwire(ctx context.Context, bin string, n int, log io.Writer) (*replSys, error) {
	p, err := pair.Start(ctx, pair.Options{Binary: bin, Messages: n, Log: log, LogLevel: "info"})
	if err != nil {
		return nil, err
	}
	s := &replSys{name: "indexwire", primary: p.Primary, replica: p.Replica, close: func() { p.Close() }}
	var port int
	if _, err := fmt.Sscanf(p.LinkAddr[strings.LastIndexByte(p.LinkAddr, ':')+1:], "%d", &port); err != nil {
		p.Close()
		return nil, fmt.Errorf("link address %q: %w", p.LinkAddr, err)
	}
	s.filter, s.port = fmt.Sprintf("udp port %d", port), uint16(port)
	return s, nil
}

// open logs in on both sides and maps the replica's index positions.
func (s *replSys) open() error {
	var err error
	if s.pc, err = s.primary.Login(benchUser); err != nil {
		return err
	}
	if _, err := s.pc.Select("INBOX"); err != nil {
		return err
	}
	if s.rc, err = s.replica.Login(benchUser); err != nil {
		return err
	}
	if _, err := s.rc.Examine("INBOX"); err != nil {
		return err
	}
	dir, err := pair.MailboxDir(s.replica, benchUser)
	if err != nil {
		return err
	}
	s.index = filepath.Join(dir, "cyrus.index")
	return s.mapIndex()
}

func (s *replSys) mapIndex() error {
	b, err := os.ReadFile(s.index)
	if err != nil {
		return err
	}
	ix, err := diff.DecodeIndex(s.index, b)
	if err != nil {
		return err
	}
	s.layout = ix.Layout
	s.offs = make(map[uint32]int64, len(ix.Records))
	for i, r := range ix.Records {
		s.offs[r.UID] = ix.Layout.RecordOffset(i + 1)
	}
	return nil
}

// fileState reads one record of the replica's cyrus.index straight from
// the file. A torn read (bad CRC) reports ok=false.
func (s *replSys) fileState(uid uint32, buf []byte) (seen bool, modseq uint64, ok bool, err error) {
	off, found := s.offs[uid]
	if !found {
		return false, 0, false, fmt.Errorf("uid %d not in %s", uid, s.index)
	}
	f, err := os.Open(s.index)
	if err != nil {
		return false, 0, false, err
	}
	_, err = f.ReadAt(buf, off)
	f.Close()
	if err != nil {
		return false, 0, false, nil // file being replaced or shorter: try again
	}
	r, err := diff.DecodeRecord(s.index, off, s.layout, buf)
	if err != nil {
		return false, 0, false, nil
	}
	if r.UID != uid {
		return false, 0, false, s.mapIndex() // the index was rewritten
	}
	return r.SystemFlags&diff.FlagSeen != 0, r.ModSeq, true, nil
}

// change makes one STORE on the primary and times when the replica shows
// it: (a) in its cyrus.index file, polled every 100 µs, then (b) over the
// persistent EXAMINE session with UID FETCH. Times count from the moment
// the STORE is sent.
func (s *replSys) change(uid uint32, on bool) (file, imap time.Duration, err error) {
	verb := "+FLAGS"
	if !on {
		verb = "-FLAGS"
	}
	t0 := time.Now()
	res, err := s.pc.Store(fmt.Sprint(uid), verb, `\Seen`)
	if err != nil {
		return 0, 0, err
	}
	if len(res) != 1 || slices.Contains(res[0].Flags, `\Seen`) != on {
		return 0, 0, fmt.Errorf("store %d %s: echo %+v", uid, verb, res)
	}
	want := res[0].ModSeq
	s.storeLat = append(s.storeLat, time.Since(t0))
	buf := make([]byte, s.layout.RecordSize)
	for {
		seen, ms, ok, err := s.fileState(uid, buf)
		if err != nil {
			return 0, 0, err
		}
		if ok && seen == on && ms >= want {
			file = time.Since(t0)
			s.afterOK = append(s.afterOK, file-s.storeLat[len(s.storeLat)-1])
			break
		}
		if time.Since(t0) > visibleTimeout {
			s.timeouts++
			return 0, 0, fmt.Errorf("%s: uid %d %s not in the replica's index after %v", s.name, uid, verb, visibleTimeout)
		}
		time.Sleep(100 * time.Microsecond)
	}
	usedNoop := false
	for {
		msgs, err := s.rc.Fetch(fmt.Sprint(uid))
		if err != nil {
			return 0, 0, err
		}
		for _, m := range slices.Backward(msgs) {
			if m.UID == uid {
				if slices.Contains(m.Flags, `\Seen`) == on && m.ModSeq >= want {
					return file, time.Since(t0), nil
				}
				break
			}
		}
		if time.Since(t0) > visibleTimeout {
			s.timeouts++
			return 0, 0, fmt.Errorf("%s: uid %d %s in the replica's index but not over IMAP after %v", s.name, uid, verb, visibleTimeout)
		}
		if !usedNoop && time.Since(t0)-file > noopAfter {
			usedNoop = true
			s.noops++
			if _, err := s.rc.Noop(); err != nil {
				return 0, 0, err
			}
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// replRound measures both systems at mailbox size n: changes STOREs each,
// interleaved one by one, with tcpdump on lo counting their replication
// payload.
func replRound(ctx context.Context, bin, base, outDir string, n, changes int, log io.Writer) ([]*replResult, error) {
	var cy, iw *replSys
	var errCy, errIw error
	var wg sync.WaitGroup
	wg.Go(func() { cy, errCy = setupCyrus(ctx, base, n) })
	wg.Go(func() { iw, errIw = setupIndexwire(ctx, bin, n, log) })
	wg.Wait()
	defer func() {
		for _, s := range []*replSys{cy, iw} {
			if s != nil {
				if s.pc != nil {
					s.pc.Close()
				}
				if s.rc != nil {
					s.rc.Close()
				}
				s.close()
			}
		}
	}()
	if err := errors.Join(errCy, errIw); err != nil {
		return nil, err
	}
	systems := []*replSys{cy, iw}
	for _, s := range systems {
		if err := s.open(); err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
		// warm-up: a first change after connecting costs more (cold deflate
		// dictionary, first QUIC stream); not counted
		for _, on := range []bool{true, false} {
			if _, _, err := s.change(uint32(n), on); err != nil {
				return nil, fmt.Errorf("warm-up: %w", err)
			}
		}
		s.fileLat, s.imapLat, s.storeLat, s.afterOK, s.noops = nil, nil, nil, nil, 0
	}
	pcapFile := filepath.Join(outDir, fmt.Sprintf("repl-%d.pcap", n))
	capt, err := startCapture(ctx, pcapFile, "("+cy.filter+") or ("+iw.filter+")")
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(uint64(n), 5))
	for i := 0; i < changes; i++ {
		// Land each change at a random point of Cyrus's 1 s sync cycle, as
		// real changes do; without this the loop phase-locks to the cycle.
		select {
		case <-ctx.Done():
			capt.stop()
			return nil, ctx.Err()
		case <-time.After(time.Duration(rng.Int64N(int64(time.Second)))):
		}
		k := i / 2
		uid := uint32(1 + (k*7919+3)%(n-1)) // uid n is the warm-up's
		on := i%2 == 0
		for _, s := range systems {
			f, m, err := s.change(uid, on)
			if err != nil {
				capt.stop()
				return nil, err
			}
			s.fileLat = append(s.fileLat, f)
			s.imapLat = append(s.imapLat, m)
		}
		if err := ctx.Err(); err != nil {
			capt.stop()
			return nil, err
		}
	}
	time.Sleep(300 * time.Millisecond) // acks and replies of the last change
	capt.stop()
	flows, err := pcapPayload(pcapFile)
	if err != nil {
		return nil, err
	}
	var out []*replResult
	for _, s := range systems {
		r := &replResult{sys: s, n: n, changes: changes}
		if f := flows[s.port]; f != nil {
			r.payload = *f
		}
		r.converge = waitConverged(ctx, s.primary, s.replica, 30*time.Second)
		out = append(out, r)
	}
	return out, nil
}

// waitConverged polls until both instances show the same UID, FLAGS and
// MODSEQ for every message of the user's INBOX.
func waitConverged(ctx context.Context, a, b *cyrustest.Instance, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		err := compareIMAP(a, b)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func compareIMAP(a, b *cyrustest.Instance) error {
	ma, err := pair.Fetch(a, benchUser)
	if err != nil {
		return err
	}
	mb, err := pair.Fetch(b, benchUser)
	if err != nil {
		return err
	}
	if len(ma) != len(mb) {
		return fmt.Errorf("primary has %d messages, replica %d", len(ma), len(mb))
	}
	norm := func(f []string) string {
		var o []string
		for _, x := range f {
			if !strings.EqualFold(x, `\Recent`) {
				o = append(o, strings.ToLower(x))
			}
		}
		slices.Sort(o)
		return strings.Join(o, " ")
	}
	for i := range ma {
		if ma[i].UID != mb[i].UID || ma[i].ModSeq != mb[i].ModSeq || norm(ma[i].Flags) != norm(mb[i].Flags) {
			return fmt.Errorf("uid %d: primary %v modseq %d, replica uid %d %v modseq %d",
				ma[i].UID, ma[i].Flags, ma[i].ModSeq, mb[i].UID, mb[i].Flags, mb[i].ModSeq)
		}
	}
	return nil
}
