// Package pair runs the whole indexwire deployment on one machine for tests,
// the demo and the benchmark: a primary Cyrus whose partition is an
// indexwire overlay mounted in place, a replica Cyrus, and the two indexwire
// daemons as real processes talking QUIC on 127.0.0.1.
package pair

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/indexwire/indexwire/net/relay"
	"github.com/indexwire/indexwire/tests/cyrustest"
)

// Options configures a Pair.
type Options struct {
	Binary   string    // indexwire binary (see Build)
	User     string    // mailbox owner; default "alice"
	Messages int       // messages appended to the user's INBOX before seeding; default 20
	Conf     []string  // extra imapd.conf lines for both instances
	Log      io.Writer // daemon logs (stderr of both daemons); default discarded
	// Rolling runs Cyrus's own rolling replication beside indexwire.
	Rolling bool
	// MountArgs and ServeArgs are extra flags for the two daemons
	// (e.g. --metrics-addr).
	MountArgs, ServeArgs []string
	// LogLevel is both daemons' --log-level; default "debug" (tests show
	// the logs when they fail). Benchmarks use "info".
	LogLevel string
	// Relay, when set, puts an impairment relay between the daemons
	// (Listen and To are filled in); Pair.Relay() returns it.
	Relay *relay.Config
}

// Pair is a primary and a replica Cyrus with indexwire between them.
type Pair struct {
	opts      Options
	Dir       string // holds keys, state and logs
	Primary   *cyrustest.Instance
	Replica   *cyrustest.Instance
	LinkAddr  string // replica's QUIC address
	PrimaryFP string
	ReplicaFP string
	Deltas    string // the mount's --log-deltas file
	relay     *relay.Relay
	stopRelay context.CancelFunc

	mu    sync.Mutex
	mount *proc
	serve *proc
}

// proc is a running daemon; done closes when it has exited.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startProc(cmd *exec.Cmd) (*proc, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	pr := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(pr.done)
	}()
	return pr, nil
}

func (pr *proc) exited() bool {
	select {
	case <-pr.done:
		return true
	default:
		return false
	}
}

// Build compiles the indexwire binary into dir and returns its path.
func Build(ctx context.Context, dir string) (string, error) {
	out := filepath.Join(dir, "indexwire")
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/indexwire")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build indexwire: %w\n%s", err, b)
	}
	return out, nil
}

// ModuleRoot returns the directory of go.mod above the working directory.
func ModuleRoot() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		p := filepath.Dir(d)
		if p == d {
			return "", errors.New("go.mod not found above the working directory")
		}
		d = p
	}
}

// freeUDP returns a free UDP port on 127.0.0.1.
func freeUDP() (string, error) {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.LocalAddr().String(), nil
}

// Start builds the whole deployment: replica, primary with the user's
// messages, a one-shot Cyrus sync to seed the replica (same mailboxes,
// unique ids, UIDs and GUIDs), keys, the replica daemon, and the overlay
// mounted in place over the primary's partition with Cyrus restarted on it.
func Start(ctx context.Context, opts Options) (_ *Pair, err error) {
	if opts.User == "" {
		opts.User = "alice"
	}
	if opts.Messages == 0 {
		opts.Messages = 20
	}
	if opts.LogLevel == "" {
		opts.LogLevel = "debug"
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	dir, err := os.MkdirTemp("/tmp", "indexwire-pair-")
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		return nil, err
	}
	p := &Pair{opts: opts, Dir: dir, Deltas: filepath.Join(dir, "deltas.jsonl")}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	if p.Replica, err = cyrustest.Launch(ctx, cyrustest.Options{Name: "replica", BaseDir: dir, Conf: opts.Conf}); err != nil {
		return nil, err
	}
	if p.Primary, err = cyrustest.Launch(ctx, cyrustest.Options{Name: "primary", BaseDir: dir, Conf: opts.Conf,
		SyncTo: p.Replica, Rolling: opts.Rolling}); err != nil {
		return nil, err
	}
	if err := p.Primary.MkUser(opts.User); err != nil {
		return nil, err
	}
	if err := p.Replica.SetPassword(opts.User); err != nil {
		return nil, err
	}
	c, err := p.Primary.Login(opts.User)
	if err != nil {
		return nil, err
	}
	_, err = c.Append("INBOX", opts.Messages)
	c.Logout()
	if err != nil {
		return nil, fmt.Errorf("append: %w", err)
	}
	if _, err := p.Primary.SyncUser(opts.User); err != nil {
		return nil, fmt.Errorf("seed replica: %w", err)
	}
	for _, side := range []string{"primary", "replica"} {
		out, err := exec.CommandContext(ctx, opts.Binary, "keygen", "--dir", filepath.Join(dir, "keys-"+side)).Output()
		if err != nil {
			return nil, fmt.Errorf("keygen %s: %w", side, err)
		}
		fp := strings.TrimSpace(string(out))
		if side == "primary" {
			p.PrimaryFP = fp
		} else {
			p.ReplicaFP = fp
		}
	}
	// The free port may be taken by another process before the daemon
	// binds it; then try another one.
	for try := 0; ; try++ {
		if p.LinkAddr, err = freeUDP(); err != nil {
			return nil, err
		}
		if err = p.StartServe(); err == nil {
			break
		}
		_ = p.StopServe(true)
		if try == 2 {
			return nil, err
		}
	}
	if opts.Relay != nil {
		rctx, cancel := context.WithCancel(context.Background())
		p.stopRelay = cancel
		if _, err := p.Impair(rctx, *opts.Relay); err != nil {
			return nil, err
		}
	}
	// Cyrus must open the spool through the overlay: stop, mount, start.
	if err := p.Primary.Stop(); err != nil {
		return nil, err
	}
	if err := p.StartMount(); err != nil {
		return nil, err
	}
	if err := p.Primary.Restart(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Pair) daemon(args ...string) *exec.Cmd {
	cmd := exec.Command(p.opts.Binary, args...)
	cmd.Stdout = p.opts.Log
	cmd.Stderr = p.opts.Log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// StartServe starts the replica daemon (again).
func (p *Pair) StartServe(extra ...string) error {
	state := filepath.Join(p.Dir, "replica-state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		return err
	}
	args := append([]string{"serve", "--listen", p.LinkAddr, "--spool", p.Replica.Spool, "--cyrus-conf", p.Replica.Conf,
		"--state-dir", state, "--key", filepath.Join(p.Dir, "keys-replica"), "--peer-cert-sha256", p.PrimaryFP,
		"--log-level", p.opts.LogLevel}, append(p.opts.ServeArgs, extra...)...)
	pr, err := startProc(p.daemon(args...))
	if err != nil {
		return fmt.Errorf("start serve: %w", err)
	}
	p.mu.Lock()
	p.serve = pr
	p.mu.Unlock()
	return waitUDP(p.LinkAddr, pr, 10*time.Second)
}

// waitUDP waits until the daemon pr has bound the UDP address: something
// listens there and pr is still running a moment later (a daemon that
// lost the port to another process exits).
func waitUDP(addr string, pr *proc, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if pr.exited() {
			return fmt.Errorf("%s exited before listening on %s", pr.cmd.Path, addr)
		}
		c, err := net.ListenPacket("udp", addr)
		if err != nil {
			select {
			case <-pr.done:
				return fmt.Errorf("%s exited before listening on %s", pr.cmd.Path, addr)
			case <-time.After(50 * time.Millisecond):
				return nil // bound by the daemon
			}
		}
		c.Close()
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("nothing listens on %s after %v", addr, d)
}

// StartMount mounts the overlay in place over the primary's partition,
// streaming to the replica daemon, and waits until the mount is live.
func (p *Pair) StartMount(extra ...string) error {
	args := append([]string{"mount", "--peer", p.peerAddr(), "--key", filepath.Join(p.Dir, "keys-primary"),
		"--peer-cert-sha256", p.ReplicaFP, "--log-deltas", p.Deltas, "--log-level", p.opts.LogLevel}, append(p.opts.MountArgs, extra...)...)
	args = append(args, p.Primary.Spool)
	pr, err := startProc(p.daemon(args...))
	if err != nil {
		return fmt.Errorf("start mount: %w", err)
	}
	p.mu.Lock()
	p.mount = pr
	p.mu.Unlock()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if pr.exited() {
			return fmt.Errorf("mount daemon exited before mounting %s", p.Primary.Spool)
		}
		if IsMounted(p.Primary.Spool) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("overlay not mounted on %s after 15s", p.Primary.Spool)
}

// IsMounted reports whether dir is an indexwire FUSE mount point.
func IsMounted(dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == dir && strings.Contains(line, "fuse.indexwire") {
			return true
		}
	}
	return false
}

// StopServe stops the replica daemon: SIGTERM, or SIGKILL when kill is set.
func (p *Pair) StopServe(kill bool) error { return p.stop(&p.serve, kill) }

// StopMount stops the mount daemon: SIGTERM (it unmounts), or SIGKILL
// (the mount is left dead until the next StartMount clears it).
func (p *Pair) StopMount(kill bool) error { return p.stop(&p.mount, kill) }

func (p *Pair) stop(which **proc, kill bool) error {
	p.mu.Lock()
	pr := *which
	*which = nil
	p.mu.Unlock()
	if pr == nil {
		return nil
	}
	sig := syscall.SIGTERM
	if kill {
		sig = syscall.SIGKILL
	}
	_ = pr.cmd.Process.Signal(sig)
	select {
	case <-pr.done:
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(-pr.cmd.Process.Pid, syscall.SIGKILL)
		<-pr.done
		return fmt.Errorf("%s did not stop in 15s", pr.cmd.Path)
	}
	return nil
}

// Close stops everything and removes the directories: Cyrus instances,
// daemons, the mount (lazily detached if still there).
func (p *Pair) Close() error {
	var errs []error
	if p.stopRelay != nil {
		defer p.stopRelay()
	}
	if p.Primary != nil {
		errs = append(errs, p.Primary.Stop())
	}
	errs = append(errs, p.StopMount(false))
	if p.Primary != nil && IsMounted(p.Primary.Spool) {
		_ = exec.Command("fusermount3", "-u", "-z", p.Primary.Spool).Run()
	}
	errs = append(errs, p.StopServe(false))
	for _, in := range []*cyrustest.Instance{p.Primary, p.Replica} {
		if in != nil {
			errs = append(errs, in.Close())
		}
	}
	if p.Dir != "" {
		errs = append(errs, os.RemoveAll(p.Dir))
	}
	return errors.Join(errs...)
}

// Message is a message as IMAP shows it.
type Message = cyrustest.Message

// Fetch returns UID, FLAGS and MODSEQ of every message in the user's INBOX
// on one side, read through that side's Cyrus.
func Fetch(in *cyrustest.Instance, user string) ([]Message, error) {
	c, err := in.Login(user)
	if err != nil {
		return nil, err
	}
	defer c.Logout()
	if _, err := c.Examine("INBOX"); err != nil {
		return nil, err
	}
	return c.Fetch("1:*")
}

// Converged compares both sides over IMAP message by message and reports
// the first difference, or nil.
func (p *Pair) Converged() error {
	a, err := Fetch(p.Primary, p.opts.User)
	if err != nil {
		return fmt.Errorf("primary: %w", err)
	}
	b, err := Fetch(p.Replica, p.opts.User)
	if err != nil {
		return fmt.Errorf("replica: %w", err)
	}
	if len(a) != len(b) {
		return fmt.Errorf("primary has %d messages, replica %d", len(a), len(b))
	}
	for i := range a {
		if a[i].UID != b[i].UID || a[i].ModSeq != b[i].ModSeq || !sameFlags(a[i].Flags, b[i].Flags) {
			return fmt.Errorf("uid %d: primary %v modseq %d, replica uid %d %v modseq %d",
				a[i].UID, a[i].Flags, a[i].ModSeq, b[i].UID, b[i].Flags, b[i].ModSeq)
		}
	}
	return nil
}

// Differences returns the UIDs on which the two sides disagree over IMAP
// (FLAGS or MODSEQ differ, or the UID is on one side only), in UID order.
func (p *Pair) Differences() ([]uint32, error) {
	a, err := Fetch(p.Primary, p.opts.User)
	if err != nil {
		return nil, fmt.Errorf("primary: %w", err)
	}
	b, err := Fetch(p.Replica, p.opts.User)
	if err != nil {
		return nil, fmt.Errorf("replica: %w", err)
	}
	return Differences(a, b), nil
}

// Differences compares two message lists (as Fetch returns them) by UID.
func Differences(a, b []Message) []uint32 {
	byUID := make(map[uint32]Message, len(b))
	for _, m := range b {
		byUID[m.UID] = m
	}
	var out []uint32
	for _, m := range a {
		o, ok := byUID[m.UID]
		delete(byUID, m.UID)
		if !ok || o.ModSeq != m.ModSeq || !sameFlags(o.Flags, m.Flags) {
			out = append(out, m.UID)
		}
	}
	for uid := range byUID {
		out = append(out, uid)
	}
	slices.Sort(out)
	return out
}

func sameFlags(a, b []string) bool {
	strip := func(s []string) string {
		var out []string
		for _, f := range s {
			if !strings.EqualFold(f, `\Recent`) {
				out = append(out, strings.ToLower(f))
			}
		}
		return fmt.Sprint(sortStrings(out))
	}
	return strip(a) == strip(b)
}

func sortStrings(s []string) []string {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s
}

// WaitConverged polls until both sides agree over IMAP or d passes.
func (p *Pair) WaitConverged(d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		err := p.Converged()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// User is the mailbox owner.
func (p *Pair) User() string { return p.opts.User }

// MailboxDir returns the directory of the user's INBOX on in's partition.
func MailboxDir(in *cyrustest.Instance, user string) (string, error) {
	out, err := in.Tool("mbpath", "user/"+user)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(bytes.TrimSpace([]byte(out)))), nil
}
