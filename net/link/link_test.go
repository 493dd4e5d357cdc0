package link

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/indexwire/indexwire/diff"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// identity is a generated key directory and its fingerprint.
type identity struct{ dir, fp string }

func newIdentity(t testing.TB) identity {
	t.Helper()
	dir := t.TempDir()
	fp, err := GenerateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	return identity{dir, fp}
}

// fakeApplier records batches and answers with counts derived from them.
type fakeApplier struct {
	mu      sync.Mutex
	states  []diff.MailboxState
	got     []*diff.Batch
	calls   atomic.Int64
	block   map[string]chan struct{} // Apply for these mailboxes waits for the channel
	failFor string                   // Apply for this mailbox returns an error
}

func (a *fakeApplier) Apply(ctx context.Context, b *diff.Batch) (Ack, error) {
	a.calls.Add(1)
	if ch := a.block[b.Mailbox]; ch != nil {
		select {
		case <-ch:
		case <-ctx.Done():
			return Ack{}, ctx.Err()
		}
	}
	a.mu.Lock()
	fail := b.Mailbox == a.failFor
	a.mu.Unlock()
	if fail {
		return Ack{}, fmt.Errorf("mailbox %s is locked", b.Mailbox)
	}
	a.mu.Lock()
	a.got = append(a.got, b)
	a.mu.Unlock()
	// Records with an odd UID count as applied, even as stale; UID 2 as missing.
	var ack Ack
	for _, d := range b.Records {
		switch {
		case d.UID == 2:
			ack.Missing++
		case d.UID%2 == 1:
			ack.Applied++
		default:
			ack.Stale++
		}
	}
	ack.HighestModSeq = b.HighestModSeq
	return ack, nil
}

func (a *fakeApplier) batches() []*diff.Batch {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*diff.Batch(nil), a.got...)
}

func (a *fakeApplier) setFailFor(mailbox string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.failFor = mailbox
}

func (a *fakeApplier) States(context.Context) ([]diff.MailboxState, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.states, nil
}

type testServer struct {
	*Server
	logs *observer.ObservedLogs
	stop func() // stops Serve and waits for it
}

func startServer(t testing.TB, cfg ServerConfig) *testServer {
	t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	cfg.Logger = zap.New(core)
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	s, err := Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return &testServer{Server: s, logs: logs, stop: stop}
}

type testSender struct {
	*Sender
	logs *observer.ObservedLogs
}

func startSender(t testing.TB, cfg SenderConfig) *testSender {
	t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	cfg.Logger = zap.New(core)
	orDefault(&cfg.HeartbeatInterval, 200*time.Millisecond)
	s, err := NewSender(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	return &testSender{Sender: s, logs: logs}
}

// pair starts a server with applier a and a sender pinned to each other.
func pair(t testing.TB, a Applier, scfg ServerConfig, ccfg SenderConfig) (*testServer, *testSender) {
	t.Helper()
	sid, cid := newIdentity(t), newIdentity(t)
	scfg.KeyDir, scfg.PeerFingerprints, scfg.Applier = sid.dir, []string{cid.fp}, a
	srv := startServer(t, scfg)
	ccfg.Peer, ccfg.KeyDir, ccfg.PeerFingerprints = srv.Addr().String(), cid.dir, []string{sid.fp}
	return srv, startSender(t, ccfg)
}

func testBatch(mailbox string, uids ...uint32) *diff.Batch {
	b := &diff.Batch{Mailbox: mailbox, UIDValidity: 1700000000, OldHighestModSeq: 100, HighestModSeq: 100 + uint64(len(uids)), SyncCRC: 0x1234}
	for i, u := range uids {
		b.Records = append(b.Records, diff.Delta{UID: u, GUID: diff.GUID{byte(u), 1, 2}, OldModSeq: 90, ModSeq: 101 + uint64(i),
			LastUpdated: 1700000000 + uint32(i), SystemFlags: diff.FlagSeen, UserFlags: []string{"$Label1"}, Changed: diff.FieldSystemFlags | diff.FieldModSeq})
	}
	return b
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestBatchRoundTrip(t *testing.T) {
	a := &fakeApplier{}
	srv, snd := pair(t, a, ServerConfig{}, SenderConfig{})
	b := testBatch("mbox-1", 1, 2, 3, 4, 5)
	ack, err := snd.Send(ctxT(t, 10*time.Second), b)
	if err != nil {
		t.Fatal(err)
	}
	want := Ack{Applied: 3, Stale: 1, Missing: 1, HighestModSeq: 105}
	if ack != want {
		t.Fatalf("ack %+v, want %+v", ack, want)
	}
	if got := a.batches(); len(got) != 1 || !got[0].Equal(b) {
		t.Fatalf("applier got %d batches; first equal: %v", len(got), len(got) == 1 && got[0].Equal(b))
	}
	st := snd.Stats()
	payload, _ := diff.EncodeBatch(b)
	if st.BatchesSent != 1 || st.BatchesAcked != 1 || st.RecordsSent != 5 || st.RecordsApplied != 3 || st.RecordsStale != 1 ||
		st.RecordsMissing != 1 || st.PayloadBytes != uint64(len(payload)) || st.FrameBytes != uint64(FrameSize(len(payload))) || st.Connects != 1 {
		t.Fatalf("sender stats %+v", st)
	}
	if ss := srv.Stats(); ss.BatchesReceived != 1 || ss.BatchesApplied != 1 || ss.PayloadBytes != uint64(len(payload)) || ss.Connections != 1 {
		t.Fatalf("server stats %+v", ss)
	}
	// An Apply error comes back as the Ack's error text.
	a.setFailFor("mbox-2")
	_, err = snd.Send(ctxT(t, 10*time.Second), testBatch("mbox-2", 1))
	if !errors.Is(err, ErrBatchRefused) || !strings.Contains(err.Error(), "mbox-2 is locked") {
		t.Fatalf("failing apply: %v", err)
	}
	if st := snd.Stats(); st.BatchesRefused != 1 {
		t.Fatalf("refused count %d", st.BatchesRefused)
	}
}

// Rule 9: one slow mailbox never blocks another.
func TestSlowMailboxDoesNotBlockOthers(t *testing.T) {
	release := make(chan struct{})
	a := &fakeApplier{block: map[string]chan struct{}{"slow": release}}
	_, snd := pair(t, a, ServerConfig{}, SenderConfig{})
	ctx := ctxT(t, 20*time.Second)
	slowDone := make(chan error, 1)
	go func() {
		_, err := snd.Send(ctx, testBatch("slow", 1))
		slowDone <- err
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 99)
	for i := range 99 {
		wg.Go(func() {
			ack, err := snd.Send(ctx, testBatch(fmt.Sprintf("mb%d", i), 1, 3))
			if err == nil && ack.Applied != 2 {
				err = fmt.Errorf("mb%d: applied %d, want 2", i, ack.Applied)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-slowDone:
		t.Fatalf("blocked mailbox finished early: %v", err)
	default:
	}
	close(release)
	if err := <-slowDone; err != nil {
		t.Fatalf("slow mailbox: %v", err)
	}
	if n := a.calls.Load(); n != 100 {
		t.Fatalf("%d Apply calls, want 100", n)
	}
}

func TestUnpinnedClientRefused(t *testing.T) {
	sid, cid, stranger := newIdentity(t), newIdentity(t), newIdentity(t)
	srv := startServer(t, ServerConfig{KeyDir: sid.dir, PeerFingerprints: []string{stranger.fp}, Applier: &fakeApplier{}})
	snd := startSender(t, SenderConfig{Peer: srv.Addr().String(), KeyDir: cid.dir, PeerFingerprints: []string{sid.fp}})
	_, err := snd.Send(ctxT(t, time.Second), testBatch("mb", 1))
	if !errors.Is(err, ErrRefusedByPeer) || !strings.Contains(err.Error(), cid.fp) {
		t.Logf("refused: %v", err)
		t.Fatalf("send with unpinned client cert: %v, want ErrRefusedByPeer naming %s", err, cid.fp)
	}
	t.Logf("dialer sees: %v", err)
	entries := srv.logs.FilterMessage("refused peer certificate").All()
	if len(entries) == 0 {
		t.Fatal("server logged no refusal")
	}
	f := entries[0].ContextMap()
	if f["fingerprint"] != cid.fp || !strings.HasPrefix(fmt.Sprint(f["remote"]), "127.0.0.1:") {
		t.Fatalf("refusal log fields %v, want fingerprint %s and remote 127.0.0.1:*", f, cid.fp)
	}
	if srv.Stats().RefusedPeers == 0 || srv.Stats().Connections != 0 {
		t.Fatalf("server stats %+v", srv.Stats())
	}
	if snd.Stats().DialErrors == 0 || snd.Connected() {
		t.Fatalf("sender stats %+v connected %v", snd.Stats(), snd.Connected())
	}
}

func TestUnpinnedServerRefused(t *testing.T) {
	sid, cid, stranger := newIdentity(t), newIdentity(t), newIdentity(t)
	srv := startServer(t, ServerConfig{KeyDir: sid.dir, PeerFingerprints: []string{cid.fp}, Applier: &fakeApplier{}})
	snd := startSender(t, SenderConfig{Peer: srv.Addr().String(), KeyDir: cid.dir, PeerFingerprints: []string{stranger.fp}})
	_, err := snd.Send(ctxT(t, time.Second), testBatch("mb", 1))
	if !errors.Is(err, ErrNotPinned) || !strings.Contains(err.Error(), sid.fp) {
		t.Fatalf("send to unpinned server: %v, want an error naming %s as not pinned", err, sid.fp)
	}
	t.Logf("dialer sees: %v", err)
	entries := snd.logs.FilterMessage("refused server certificate").All()
	if len(entries) == 0 {
		t.Fatal("sender logged no refusal")
	}
	if f := entries[0].ContextMap(); f["fingerprint"] != sid.fp || f["remote"] != srv.Addr().String() {
		t.Fatalf("refusal log fields %v", f)
	}
	if srv.Stats().Connections != 0 || srv.Stats().BatchesReceived != 0 {
		t.Fatalf("server stats %+v", srv.Stats())
	}
}

func TestSenderRefusesOversizeBatchLocally(t *testing.T) {
	a := &fakeApplier{}
	_, snd := pair(t, a, ServerConfig{MaxFrame: MinMaxFrame}, SenderConfig{})
	uids := make([]uint32, 100)
	for i := range uids {
		uids[i] = uint32(2*i + 1)
	}
	_, err := snd.Send(ctxT(t, 10*time.Second), testBatch("big", uids...))
	if !errors.Is(err, ErrFrameTooLarge) || !strings.Contains(err.Error(), "max 1024") {
		t.Fatalf("oversize batch: %v", err)
	}
	if st := snd.Stats(); st.BatchesSent != 0 {
		t.Fatalf("oversize batch was sent: %+v", st)
	}
	if _, err := snd.Send(ctxT(t, 10*time.Second), testBatch("small", 1)); err != nil {
		t.Fatalf("small batch after oversize: %v", err)
	}
}

func TestServerRestartCatchUp(t *testing.T) {
	sid, cid := newIdentity(t), newIdentity(t)
	statesA := []diff.MailboxState{{Mailbox: "mbA", UIDValidity: 1, HighestModSeq: 10, SyncCRC: 1}}
	statesB := []diff.MailboxState{{Mailbox: "mbA", UIDValidity: 1, HighestModSeq: 7, SyncCRC: 2}, {Mailbox: "mbB", UIDValidity: 2, HighestModSeq: 3}}
	srv := startServer(t, ServerConfig{KeyDir: sid.dir, PeerFingerprints: []string{cid.fp}, Applier: &fakeApplier{states: statesA}})
	addr := srv.Addr().String()
	catchUps := make(chan []diff.MailboxState, 10)
	snd := startSender(t, SenderConfig{Peer: addr, KeyDir: cid.dir, PeerFingerprints: []string{sid.fp},
		CatchUp: func(ctx context.Context, s []diff.MailboxState) { catchUps <- s }})
	expect := func(want []diff.MailboxState) {
		t.Helper()
		select {
		case got := <-catchUps:
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("catch-up states %v, want %v", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no catch-up call")
		}
	}
	expect(statesA)
	srv.stop()
	waitFor(t, func() bool { return !snd.Connected() }, "sender to notice the replica is gone")
	// While the replica is down, sends wait and then fail with the cause.
	_, err := snd.Send(ctxT(t, 300*time.Millisecond), testBatch("mbA", 1))
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "not connected") {
		t.Fatalf("send while down: %v", err)
	}
	a2 := &fakeApplier{states: statesB}
	srv2 := startServer(t, ServerConfig{Listen: addr, KeyDir: sid.dir, PeerFingerprints: []string{cid.fp}, Applier: a2})
	expect(statesB)
	if _, err := snd.Send(ctxT(t, 10*time.Second), testBatch("mbB", 1)); err != nil {
		t.Fatalf("send after restart: %v", err)
	}
	if st := snd.Stats(); st.Reconnects != 1 || st.Connects != 2 {
		t.Fatalf("sender stats %+v", st)
	}
	if got := a2.batches(); len(got) != 1 || srv2.Stats().BatchesApplied != 1 {
		t.Fatalf("restarted replica got %d batches", len(got))
	}
}

func TestHelloSplitAcrossFrames(t *testing.T) {
	var states []diff.MailboxState
	for i := range 100 {
		states = append(states, diff.MailboxState{Mailbox: fmt.Sprintf("mailbox-%03d-%s", i, strings.Repeat("x", 20)), UIDValidity: uint32(i + 1), HighestModSeq: uint64(i)})
	}
	got := make(chan []diff.MailboxState, 1)
	_, snd := pair(t, &fakeApplier{states: states}, ServerConfig{}, SenderConfig{MaxFrame: MinMaxFrame,
		CatchUp: func(ctx context.Context, s []diff.MailboxState) { got <- s }})
	select {
	case s := <-got:
		if fmt.Sprint(s) != fmt.Sprint(states) {
			t.Fatalf("got %d states, want %d identical", len(s), len(states))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no catch-up call")
	}
	_ = snd
}

func TestHeartbeatMeasuresRTT(t *testing.T) {
	_, snd := pair(t, &fakeApplier{}, ServerConfig{}, SenderConfig{HeartbeatInterval: 20 * time.Millisecond})
	deadline := time.Now().Add(5 * time.Second)
	for snd.Stats().Pongs < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v: fewer than 3 pongs in 5s", snd.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if rtt := snd.Stats().RTT; rtt <= 0 || rtt > time.Second {
		t.Fatalf("heartbeat rtt %v", rtt)
	}
	if st := snd.Stats(); st.Connects != 1 || st.Reconnects != 0 {
		t.Fatalf("heartbeats caused reconnects: %+v", st)
	}
}

func TestConfigValidation(t *testing.T) {
	id := newIdentity(t)
	pin := []string{id.fp}
	servers := map[string]ServerConfig{
		"hostname":      {Listen: "localhost:0"},
		"no host":       {Listen: ":0"},
		"no port":       {Listen: "127.0.0.1"},
		"bad port":      {Listen: "127.0.0.1:99999"},
		"no pins":       {Listen: "127.0.0.1:0", PeerFingerprints: []string{}},
		"bad pin":       {Listen: "127.0.0.1:0", PeerFingerprints: []string{"abc"}},
		"small frame":   {Listen: "127.0.0.1:0", MaxFrame: 100},
		"neg heartbeat": {Listen: "127.0.0.1:0", HeartbeatInterval: -time.Second},
		"no applier":    {Listen: "127.0.0.1:0"},
		"no key":        {Listen: "127.0.0.1:0", KeyDir: ""},
	}
	for name, c := range servers {
		if c.PeerFingerprints == nil {
			c.PeerFingerprints = pin
		}
		if name != "no key" {
			c.KeyDir = id.dir
		}
		if name != "no applier" {
			c.Applier = &fakeApplier{}
		}
		if s, err := Listen(c); err == nil {
			s.Close()
			t.Errorf("server %s: accepted", name)
		} else if name != "no applier" && name != "no key" && !errors.Is(err, ErrConfig) {
			t.Errorf("server %s: %v does not wrap ErrConfig", name, err)
		}
	}
	senders := map[string]SenderConfig{
		"hostname":    {Peer: "example.com:443"},
		"port 0":      {Peer: "127.0.0.1:0"},
		"unspecified": {Peer: "0.0.0.0:4433"},
		"backoff":     {Peer: "127.0.0.1:4433", MinBackoff: time.Second, MaxBackoff: time.Millisecond},
		"big frame":   {Peer: "127.0.0.1:4433", MaxFrame: MaxMaxFrame + 1},
	}
	for name, c := range senders {
		c.KeyDir, c.PeerFingerprints = id.dir, pin
		if _, err := NewSender(c); !errors.Is(err, ErrConfig) {
			t.Errorf("sender %s: %v, want ErrConfig", name, err)
		}
	}
}

func waitFor(t testing.TB, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
