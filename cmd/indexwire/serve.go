package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/indexwire/indexwire/diff"
	"github.com/indexwire/indexwire/diff/replica"
	"github.com/indexwire/indexwire/net/link"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

func init() {
	register(command{"serve", "run the replica side: receive batches and apply them to a Cyrus spool", runServe})
}

// linkApplier adapts the replica's Applier to the link's interface.
type linkApplier struct{ a *replica.Applier }

func (l linkApplier) Apply(ctx context.Context, b *diff.Batch) (link.Ack, error) {
	r, err := l.a.Apply(ctx, b)
	if err != nil {
		return link.Ack{}, err
	}
	return link.Ack{Applied: uint64(r.Applied), Stale: uint64(r.Stale), Missing: uint64(r.Missing),
		GUIDMismatch: uint64(r.GUIDMismatch), HighestModSeq: r.Position, Diverged: r.Diverged}, nil
}

func (l linkApplier) States(ctx context.Context) ([]diff.MailboxState, error) { return l.a.States(ctx) }

// serveConfig is the replica daemon's configuration: every flag, also
// settable from the --config YAML file by flag name.
type serveConfig struct {
	daemonFlags
	listen, spool, cyrusConf, stateDir, keyDir string
	pins                                       multiFlag
}

// serveFlags defines serve's flags, with their defaults, on a new FlagSet.
func serveFlags(stderr io.Writer) (*flag.FlagSet, *serveConfig) {
	fs := newFlags("serve", stderr)
	c := &serveConfig{}
	c.register(fs)
	fs.StringVar(&c.listen, "listen", "127.0.0.1:7443", "UDP address to accept the primary's QUIC link on")
	fs.StringVar(&c.spool, "spool", "", "the replica Cyrus partition (partition-default)")
	fs.StringVar(&c.cyrusConf, "cyrus-conf", "/etc/imapd.conf", "the replica's imapd.conf (for configdirectory and the lock files)")
	fs.StringVar(&c.stateDir, "state-dir", "/var/lib/indexwire", "directory for redo files and replication positions")
	fs.StringVar(&c.keyDir, "key", "", "directory with this side's key.pem and cert.pem (indexwire keygen)")
	fs.Var(&c.pins, "peer-cert-sha256", "SHA-256 fingerprint of a primary's certificate to accept (repeatable)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: indexwire serve --spool DIR --key DIR --peer-cert-sha256 FP [flags]")
		fs.PrintDefaults()
	}
	return fs, c
}

func runServe(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs, c := serveFlags(stderr)
	pos, err := parseDaemonFlags(fs, &c.daemonFlags, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) != 0:
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, pos)
	case c.spool == "":
		return fmt.Errorf("%w: --spool is required", errUsage)
	case c.keyDir == "":
		return fmt.Errorf("%w: --key is required (make one with indexwire keygen)", errUsage)
	case len(c.pins) == 0:
		return fmt.Errorf("%w: at least one --peer-cert-sha256 is required", errUsage)
	}
	if err := checkAddr("listen", c.listen); err != nil {
		return err
	}
	if c.metricsAddr != "" {
		if err := checkAddr("metrics-addr", c.metricsAddr); err != nil {
			return err
		}
	}
	d := c.daemonFlags
	log, err := newLogger(d.logLevel)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	abs := func(p string) string {
		if p == "" {
			return p
		}
		a, _ := filepath.Abs(p)
		return a
	}
	if err := os.MkdirAll(abs(c.stateDir), 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	app, err := replica.New(replica.Config{Spool: abs(c.spool), CyrusConf: abs(c.cyrusConf), StateDir: abs(c.stateDir), Logger: log})
	if err != nil {
		return err
	}
	if err := app.Recover(ctx); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	srv, err := link.Listen(link.ServerConfig{Listen: c.listen, KeyDir: c.keyDir, PeerFingerprints: c.pins, Logger: log, Applier: linkApplier{app}})
	if err != nil {
		return err
	}
	defer srv.Close()

	started := time.Now()
	reg := prometheus.NewRegistry()
	as := func() replica.Stats { return app.Stats() }
	ss := func() link.ServerStats { return srv.Stats() }
	counterFunc(reg, "batches_received_total", "Batch frames read from primaries.", func() uint64 { return ss().BatchesReceived })
	counterFunc(reg, "batches_applied_total", "Batches applied.", func() uint64 { return as().Batches })
	counterFunc(reg, "records_applied_total", "Records written to the replica index.", func() uint64 { return as().Applied })
	counterFunc(reg, "records_stale_total", "Records skipped: replica already had that modseq.", func() uint64 { return as().Stale })
	counterFunc(reg, "records_missing_total", "Records whose UID the replica lacks.", func() uint64 { return as().Missing })
	counterFunc(reg, "records_guid_mismatch_total", "Records not written: GUID differs (never overwritten).", func() uint64 { return as().GUIDMismatch })
	counterFunc(reg, "diverged_total", "Batches after which synccrcs.basic differed from the primary's.", func() uint64 { return as().Diverged })
	counterFunc(reg, "bytes_received_total", "Batch frame bytes read.", func() uint64 { return ss().FrameBytes })
	counterFunc(reg, "refused_peers_total", "Handshakes refused for an unpinned certificate.", func() uint64 { return ss().RefusedPeers })
	status := func() statusReport {
		a, s := as(), ss()
		return statusReport{Role: "replica", Started: started, Peers: []peerStatus{{
			Peer: srv.Addr().String(), State: fmt.Sprintf("listening, %d connection(s) so far", s.Connections),
			Batches: a.Batches, Applied: a.Applied, Stale: a.Stale, Missing: a.Missing, GUIDMismatch: a.GUIDMismatch,
			Diverged: a.Diverged, Bytes: s.FrameBytes,
		}}}
	}
	if err := serveMetrics(ctx, d.metricsAddr, reg, status, log); err != nil {
		return err
	}
	log.Info("replica serving", zap.String("listen", srv.Addr().String()), zap.String("spool", c.spool))
	if err := sdNotify("READY=1"); err != nil {
		log.Warn("sd_notify", zap.Error(err))
	}
	if err := srv.Serve(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
