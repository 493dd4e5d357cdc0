package relay_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/indexwire/indexwire/diff"
	"github.com/indexwire/indexwire/net/link"
	"github.com/indexwire/indexwire/net/relay"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// recKey names one record on the replica.
type recKey struct {
	mailbox string
	uid     uint32
}

// applyKey names one version of one record.
type applyKey struct {
	recKey
	modseq uint64
}

// memApplier is a replica in memory that keeps the apply rule of the real
// one: a delta is written only if its modseq is above the record's.
type memApplier struct {
	mu      sync.Mutex
	recs    map[recKey]diff.Delta
	applies map[applyKey]int
	highest map[string]uint64
	batches int
}

func newMemApplier() *memApplier {
	return &memApplier{recs: map[recKey]diff.Delta{}, applies: map[applyKey]int{}, highest: map[string]uint64{}}
}

func (m *memApplier) Apply(_ context.Context, b *diff.Batch) (link.Ack, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.batches++
	var ack link.Ack
	for _, d := range b.Records {
		k := recKey{b.Mailbox, d.UID}
		if cur, ok := m.recs[k]; ok && cur.ModSeq >= d.ModSeq {
			ack.Stale++
			continue
		}
		m.recs[k] = d
		m.applies[applyKey{k, d.ModSeq}]++
		ack.Applied++
	}
	m.highest[b.Mailbox] = max(m.highest[b.Mailbox], b.HighestModSeq)
	ack.HighestModSeq = m.highest[b.Mailbox]
	return ack, nil
}

func (m *memApplier) States(context.Context) ([]diff.MailboxState, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []diff.MailboxState
	for mb, h := range m.highest {
		out = append(out, diff.MailboxState{Mailbox: mb, UIDValidity: 1, HighestModSeq: h})
	}
	return out, nil
}

// primary generates batches of flag changes over a few mailboxes and keeps
// the last state it sent per record.
type primary struct {
	rng    *rand.Rand
	modseq map[string]uint64
	last   map[recKey]diff.Delta
}

var flagChoices = []uint32{0, diff.FlagSeen, diff.FlagSeen | diff.FlagFlagged, diff.FlagAnswered | diff.FlagSeen, diff.FlagDeleted}
var keywordChoices = [][]string{nil, {"$Label1"}, {"$Label1", "work"}, {"$Junk"}}

func (p *primary) batch(mailbox string) *diff.Batch {
	old := p.modseq[mailbox]
	b := &diff.Batch{Mailbox: mailbox, UIDValidity: 1, OldHighestModSeq: old}
	uids := p.rng.Perm(20)[:1+p.rng.IntN(3)]
	for _, u := range uids {
		p.modseq[mailbox]++
		k := recKey{mailbox, uint32(u + 1)}
		var g diff.GUID
		copy(g[:], fmt.Sprintf("guid-%s-%d", mailbox, k.uid))
		d := diff.Delta{UID: k.uid, GUID: g, OldModSeq: p.last[k].ModSeq, ModSeq: p.modseq[mailbox],
			LastUpdated: uint32(1796312000 + p.modseq[mailbox]),
			SystemFlags: flagChoices[p.rng.IntN(len(flagChoices))], UserFlags: keywordChoices[p.rng.IntN(len(keywordChoices))],
			Changed: diff.FieldSystemFlags | diff.FieldUserFlags | diff.FieldModSeq | diff.FieldLastUpdated}
		b.Records = append(b.Records, d)
		p.last[k] = d
	}
	b.HighestModSeq = p.modseq[mailbox]
	return b
}

// rigHeartbeat is short so that a 3 s outage is noticed and survived.
const rigHeartbeat = 500 * time.Millisecond

// rig is a link.Sender -> relay -> link.Server path with an in-memory
// replica, every log line observed. Everything stops at the test's end.
type rig struct {
	t          *testing.T
	ctx        context.Context
	serverDir  string
	senderFP   string
	log        *zap.Logger
	logs       *observer.ObservedLogs
	replica    *memApplier
	relay      *relay.Relay
	sender     *link.Sender
	bg         sync.WaitGroup
	stopServer func()
}

func newRig(t *testing.T, rc relay.Config) *rig {
	t.Helper()
	r := &rig{t: t, serverDir: t.TempDir(), replica: newMemApplier()}
	senderDir := t.TempDir()
	serverFP, err := link.GenerateKey(r.serverDir)
	if err != nil {
		t.Fatal(err)
	}
	if r.senderFP, err = link.GenerateKey(senderDir); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.InfoLevel)
	r.log, r.logs = zap.New(core), logs
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	r.ctx = ctx
	t.Cleanup(func() { cancel(); r.bg.Wait() })
	addr := r.startServer()
	rc.Listen, rc.To, rc.Logger = "127.0.0.1:0", addr, r.log
	if r.relay, err = relay.New(rc); err != nil {
		t.Fatal(err)
	}
	r.sender, err = link.NewSender(link.SenderConfig{Peer: r.relay.Addr().String(), KeyDir: senderDir, PeerFingerprints: []string{serverFP},
		HeartbeatInterval: rigHeartbeat, DialTimeout: 2 * time.Second, MinBackoff: 100 * time.Millisecond, MaxBackoff: 500 * time.Millisecond,
		Logger: r.log.Named("primary")})
	if err != nil {
		t.Fatal(err)
	}
	r.bg.Go(func() { r.relay.Run(ctx) })
	r.bg.Go(func() { r.sender.Run(ctx) })
	return r
}

// startServer starts a replica server on a new port and returns its address.
func (r *rig) startServer() string {
	srv, err := link.Listen(link.ServerConfig{Listen: "127.0.0.1:0", KeyDir: r.serverDir, PeerFingerprints: []string{r.senderFP},
		HeartbeatInterval: rigHeartbeat, Applier: r.replica, Logger: r.log.Named("replica")})
	if err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(r.ctx)
	done := make(chan struct{})
	r.bg.Go(func() {
		defer close(done)
		if err := srv.Serve(ctx); err != nil {
			r.t.Errorf("serve: %v", err)
		}
	})
	r.stopServer = func() { cancel(); <-done }
	return srv.Addr().String()
}

// makeBatches generates n batches round-robin over four mailboxes.
func makeBatches(n int) (*primary, chan *diff.Batch) {
	p := &primary{rng: rand.New(rand.NewPCG(1, 2)), modseq: map[string]uint64{}, last: map[recKey]diff.Delta{}}
	batches := make(chan *diff.Batch, n)
	for i := range n {
		batches <- p.batch(fmt.Sprintf("mbox%d", i%4))
	}
	close(batches)
	return p, batches
}

// TestReplicationThroughImpairedLink sends 2000 batches from a link.Sender
// to a link.Server through a relay with 5 % loss, 2 % reorder, 1 %
// duplication and 20 ms delay each way, with a 3 s blackout half way. The
// replica must end equal to the primary, with every record version applied
// at most once, and the logs must show the disconnect and the reconnect.
func TestReplicationThroughImpairedLink(t *testing.T) {
	if testing.Short() {
		t.Skip("takes about 10 s")
	}
	r := newRig(t, relay.Config{Loss: 0.05, Reorder: 0.02, Duplicate: 0.01, Delay: 20 * time.Millisecond, Seed: 20260601})
	rl, snd, logs := r.relay, r.sender, r.logs
	ctx := r.ctx
	const n = 2000
	p, batches := makeBatches(n)

	start := time.Now()
	var blackoutAt time.Duration
	retries := sendAll(t, ctx, snd, batches, func() {
		blackoutAt = time.Since(start)
		rl.BlackoutFor(3 * time.Second)
	})
	elapsed := time.Since(start)
	if t.Failed() {
		return
	}
	st, rs := snd.Stats(), rl.Stats()
	t.Logf("%d batches in %v (blackout at %v), %d retried; sender %+v", n, elapsed, blackoutAt, retries, st)
	t.Logf("relay up %+v", rs.Up)
	t.Logf("relay down %+v", rs.Down)

	checkReplica(t, r.replica, p, n)

	// The path was really impaired, and the link really went down and up.
	if rs.Up.Dropped == 0 || rs.Up.Reordered == 0 || rs.Up.Duplicated == 0 || rs.Up.BlackedOut == 0 || rs.Down.BlackedOut == 0 {
		t.Errorf("relay did not impair both ways: %+v", rs)
	}
	if st.Reconnects < 1 {
		t.Errorf("sender reconnected %d times across a 3 s blackout with a %v heartbeat", st.Reconnects, rigHeartbeat)
	}
	disc := logs.FilterLoggerName("primary.link").FilterMessage("disconnected").Len()
	conn := logs.FilterLoggerName("primary.link").FilterMessage("connected").Len()
	if disc < 1 || conn < 2 {
		t.Errorf("logs show %d disconnects and %d connects, want at least 1 and 2", disc, conn)
	}
	for _, e := range logs.FilterLoggerName("primary.link").All() {
		if e.Message == "connected" || e.Message == "disconnected" || e.Message == "heartbeat timeout" {
			t.Logf("log: %s %v", e.Message, e.ContextMap())
		}
	}
}

// sendAll sends every batch with 32 senders, sending a batch again until it
// is acknowledged, as catch-up would re-derive it (nothing is queued on the
// primary). half runs once when half the batches are acknowledged. It
// returns how many sends were repeated.
func sendAll(t *testing.T, ctx context.Context, snd *link.Sender, batches <-chan *diff.Batch, half func()) int64 {
	t.Helper()
	n := int64(len(batches))
	var acked, retries atomic.Int64
	var once sync.Once
	var workers sync.WaitGroup
	for range 32 {
		workers.Go(func() {
			for b := range batches {
				for {
					actx, acancel := context.WithTimeout(ctx, 10*time.Second)
					_, err := snd.Send(actx, b)
					acancel()
					if err == nil {
						break
					}
					if errors.Is(err, link.ErrBatchRefused) || ctx.Err() != nil {
						t.Errorf("send: %v", err)
						return
					}
					retries.Add(1)
				}
				if acked.Add(1) == n/2 {
					once.Do(half)
				}
			}
		})
	}
	workers.Wait()
	return retries.Load()
}

// checkReplica asserts the replica holds the last state the primary sent
// for every record and applied no record version twice.
func checkReplica(t *testing.T, replica *memApplier, p *primary, n int) {
	t.Helper()
	replica.mu.Lock()
	defer replica.mu.Unlock()
	if len(replica.recs) != len(p.last) {
		t.Errorf("replica has %d records, primary changed %d", len(replica.recs), len(p.last))
	}
	for k, want := range p.last {
		got := replica.recs[k]
		if got.ModSeq != want.ModSeq || got.SystemFlags != want.SystemFlags || !slices.Equal(got.UserFlags, want.UserFlags) ||
			got.GUID != want.GUID || got.LastUpdated != want.LastUpdated {
			t.Errorf("%s uid %d: replica modseq %d flags %#x %v, primary modseq %d flags %#x %v",
				k.mailbox, k.uid, got.ModSeq, got.SystemFlags, got.UserFlags, want.ModSeq, want.SystemFlags, want.UserFlags)
		}
		if c := replica.applies[applyKey{k, want.ModSeq}]; c != 1 {
			t.Errorf("%s uid %d modseq %d: final version applied %d times", k.mailbox, k.uid, want.ModSeq, c)
		}
	}
	for k, c := range replica.applies {
		if c > 1 {
			t.Errorf("%s uid %d modseq %d applied %d times", k.mailbox, k.uid, k.modseq, c)
		}
	}
	if replica.batches < n {
		t.Errorf("replica saw %d batches, primary sent %d", replica.batches, n)
	}

}

// TestReplicaPortChange restarts the replica on another port half way
// through 1000 batches over an impaired path; the primary, still pointed at
// the relay, reconnects and the replica ends equal.
func TestReplicaPortChange(t *testing.T) {
	if testing.Short() {
		t.Skip("takes about 5 s")
	}
	r := newRig(t, relay.Config{Loss: 0.02, Reorder: 0.01, Duplicate: 0.01, Delay: 10 * time.Millisecond, Seed: 20260602})
	const n = 1000
	p, batches := makeBatches(n)
	var newAddr string
	retries := sendAll(t, r.ctx, r.sender, batches, func() {
		r.stopServer()
		newAddr = r.startServer()
		if err := r.relay.SetTo(newAddr); err != nil {
			t.Error(err)
		}
	})
	if t.Failed() {
		return
	}
	st := r.sender.Stats()
	t.Logf("replica moved to %s; %d sends repeated; sender %+v", newAddr, retries, st)
	checkReplica(t, r.replica, p, n)
	if st.Reconnects < 1 {
		t.Errorf("sender reconnected %d times after the replica moved", st.Reconnects)
	}
	if c := r.logs.FilterLoggerName("replica.link").FilterMessage("listening").Len(); c != 2 {
		t.Errorf("replica logged listening %d times, want 2", c)
	}
	for _, e := range r.logs.FilterLoggerName("primary.link").All() {
		if e.Message == "connected" || e.Message == "disconnected" {
			t.Logf("log: %s %v", e.Message, e.ContextMap())
		}
	}
}
