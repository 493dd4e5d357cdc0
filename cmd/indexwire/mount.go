package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"

	"github.com/indexwire/indexwire/diff"
	"github.com/indexwire/indexwire/fs"
	"github.com/indexwire/indexwire/net/link"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

func init() {
	register(command{"mount", "mount the overlay over a Cyrus spool and ship its index changes (primary)", runMount})
}

// sinks fans one batch out to several sinks.
type sinks []fs.Sink

func (s sinks) Commit(ctx context.Context, b *diff.Batch) {
	for _, k := range s {
		k.Commit(ctx, b)
	}
}

// Resync passes a failed commit on to the sinks that can re-derive it.
func (s sinks) Resync(ctx context.Context, dir string) {
	for _, k := range s {
		if r, ok := k.(fs.Resyncer); ok {
			r.Resync(ctx, dir)
		}
	}
}

// mountConfig is the primary daemon's configuration: every flag, also
// settable from the --config YAML file by flag name.
type mountConfig struct {
	daemonFlags
	backing, logDeltas, peer, keyDir string
	pins                             multiFlag
	noPassthrough, noOpen, debug     bool
}

// mountFlags defines mount's flags, with their defaults, on a new FlagSet.
func mountFlags(stderr io.Writer) (*flag.FlagSet, *mountConfig) {
	fl := newFlags("mount", stderr)
	c := &mountConfig{}
	c.register(fl)
	fl.StringVar(&c.backing, "backing", "", "directory to serve through the mount (default: mount in place over MOUNTPOINT)")
	fl.StringVar(&c.logDeltas, "log-deltas", "", "write every committed batch as a JSON line to FILE, or - for stdout")
	fl.StringVar(&c.peer, "peer", "", "replica address HOST:PORT (UDP, QUIC) to stream batches to")
	fl.StringVar(&c.keyDir, "key", "", "directory with this side's key.pem and cert.pem (indexwire keygen)")
	fl.Var(&c.pins, "peer-cert-sha256", "SHA-256 fingerprint of the replica's certificate (repeatable)")
	fl.BoolVar(&c.noPassthrough, "no-passthrough", false, "serve every file through the daemon (slower; for comparison)")
	fl.BoolVar(&c.noOpen, "no-open", false, "for a metapartition mount: no kernel passthrough, OPEN/RELEASE skipped")
	fl.BoolVar(&c.debug, "debug-fuse", false, "log every FUSE request (very verbose)")
	fl.Usage = func() {
		fmt.Fprintln(stderr, "usage: indexwire mount [--backing DIR] [--log-deltas FILE|-] [--peer ADDR --key DIR --peer-cert-sha256 FP] MOUNTPOINT")
		fl.PrintDefaults()
	}
	return fl, c
}

func runMount(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl, c := mountFlags(stderr)
	pos, err := parseDaemonFlags(fl, &c.daemonFlags, args)
	if err != nil {
		return err
	}
	d := c.daemonFlags
	if len(pos) != 1 {
		return fmt.Errorf("%w: want exactly one MOUNTPOINT", errUsage)
	}
	if c.peer != "" && (c.keyDir == "" || len(c.pins) == 0) {
		return fmt.Errorf("%w: --peer needs --key and at least one --peer-cert-sha256", errUsage)
	}
	if c.peer != "" {
		if err := checkAddr("peer", c.peer); err != nil {
			return err
		}
	}
	if c.metricsAddr != "" {
		if err := checkAddr("metrics-addr", c.metricsAddr); err != nil {
			return err
		}
	}
	// One P: each FUSE request otherwise makes the Go runtime wake a second
	// thread on another CPU (go-fuse spawns the next reader before serving
	// the request inline), and cross-CPU wake-ups dominate a round trip.
	// Measured with Cyrus on a 2-vCPU VM, p50 per command as a ratio to a
	// plain directory, two interleaved runs, GOMAXPROCS 2 -> 1: whole spool
	// STORE 0.34-0.37 -> 0.46-0.48x, APPEND 0.36-0.40 -> 0.40-0.51x, SELECT
	// 0.42-0.54 -> 0.52-0.66x; metapartition STORE 0.52-0.56 -> 0.62-0.70x,
	// APPEND 0.49-0.59 -> 0.65-0.66x, SELECT 0.53-0.74 -> 0.72-0.78x.
	// An explicit GOMAXPROCS in the environment wins.
	if os.Getenv("GOMAXPROCS") == "" {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	}
	log, err := newLogger(d.logLevel)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	mountpoint := pos[0]

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var out sinks
	if c.logDeltas != "" {
		w := stdout
		if c.logDeltas != "-" {
			f, err := os.OpenFile(c.logDeltas, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
			if err != nil {
				return err
			}
			defer f.Close()
			w = f
		}
		out = append(out, fs.NewJSONSink(w))
	}

	reg := prometheus.NewRegistry()
	started := time.Now()
	var sender *link.Sender
	var ship *shipper
	if c.peer != "" {
		// The shipper reads indexes through the mount, under Cyrus's locks.
		ship = newShipper(ctx, nil, mountpoint, log)
		sender, err = link.NewSender(link.SenderConfig{Peer: c.peer, KeyDir: c.keyDir, PeerFingerprints: c.pins,
			Logger: log, CatchUp: ship.CatchUp})
		if err != nil {
			return err
		}
		ship.send = sender
		out = append(out, ship)
	}

	m, err := fs.Mount(ctx, fs.Config{Backing: c.backing, Mountpoint: mountpoint, Sink: out, Logger: log,
		Debug: c.debug, NoPassthrough: c.noPassthrough, NoOpen: c.noOpen})
	if err != nil {
		return err
	}

	fsStats := func() fs.Stats { return m.Stats() }
	counterFunc(reg, "index_writes_total", "Writes captured on cyrus.index files.", func() uint64 { return uint64(fsStats().Writes) })
	counterFunc(reg, "commits_total", "Cyrus commits turned into batches.", func() uint64 { return uint64(fsStats().Batches) })
	counterFunc(reg, "commit_failures_total", "Commits that could not be turned into a batch.", func() uint64 { return uint64(fsStats().Failures) })
	counterFunc(reg, "commit_microseconds_total", "Time spent turning commits into batches (Cyrus waits in fsync or close).",
		func() uint64 { return uint64(fsStats().CommitTime.Microseconds()) })
	counterFunc(reg, "index_fsync_microseconds_total", "Time spent in fsync of backing files served through the daemon.",
		func() uint64 { return uint64(fsStats().FsyncTime.Microseconds()) })
	status := func() statusReport { return statusReport{Role: "primary", Started: started} }
	if sender != nil {
		st := func() link.SenderStats { return sender.Stats() }
		counterFunc(reg, "batches_sent_total", "Batch frames sent to the replica.", func() uint64 { return st().BatchesSent })
		counterFunc(reg, "batches_acked_total", "Batches the replica acknowledged.", func() uint64 { return st().BatchesAcked })
		counterFunc(reg, "records_sent_total", "Record deltas sent.", func() uint64 { return st().RecordsSent })
		counterFunc(reg, "records_applied_total", "Records the replica wrote.", func() uint64 { return st().RecordsApplied })
		counterFunc(reg, "records_stale_total", "Records the replica already had.", func() uint64 { return st().RecordsStale })
		counterFunc(reg, "records_missing_total", "Records whose UID the replica lacks.", func() uint64 { return st().RecordsMissing })
		counterFunc(reg, "records_guid_mismatch_total", "Records refused for a GUID mismatch.", func() uint64 { return st().RecordsGUIDMismatch })
		counterFunc(reg, "bytes_sent_total", "Batch frame bytes sent.", func() uint64 { return st().FrameBytes })
		counterFunc(reg, "reconnects_total", "Link reconnects.", func() uint64 { return st().Reconnects })
		counterFunc(reg, "batches_dropped_total", "Queued batches dropped for catch-up from the index instead.", ship.dropped.Load)
		gaugeFunc(reg, "replication_lag_seconds", "Age of the oldest batch not yet acknowledged.", func() float64 { return ship.lag().Seconds() })
		gaugeFunc(reg, "batches_pending", "Batches queued for the replica.", func() float64 { return float64(ship.pending.Load()) })
		gaugeFunc(reg, "catchups_total", "Catch-up scans finished.", func() float64 { return float64(ship.catchUps.Load()) })
		status = func() statusReport {
			s := st()
			state := "disconnected"
			if sender.Connected() {
				state = "connected"
			}
			return statusReport{Role: "primary", Started: started, Peers: []peerStatus{{
				Peer: c.peer, State: state, LagSeconds: ship.lag().Seconds(), Batches: s.BatchesAcked, Records: s.RecordsSent,
				Applied: s.RecordsApplied, Stale: s.RecordsStale, Missing: s.RecordsMissing, GUIDMismatch: s.RecordsGUIDMismatch,
				Diverged: s.Diverged, Pending: int(ship.pending.Load()), Bytes: s.FrameBytes,
			}}}
		}
		go func() {
			if err := sender.Run(ctx); err != nil && ctx.Err() == nil {
				log.Error("link stopped", zap.Error(err))
			}
		}()
	}
	if err := serveMetrics(ctx, d.metricsAddr, reg, status, log); err != nil {
		return err
	}

	if err := sdNotify("READY=1"); err != nil {
		log.Warn("sd_notify", zap.Error(err))
	}
	select {
	case <-ctx.Done():
		_ = sdNotify("STOPPING=1")
		log.Info("signal: unmounting", zap.String("mountpoint", m.Mountpoint()))
		if err := m.Unmount(); err != nil {
			return err
		}
		m.Wait()
	case <-m.Done():
		log.Info("unmounted from outside", zap.String("mountpoint", m.Mountpoint()))
	}
	cancel()
	if ship != nil {
		ship.wait()
	}
	return nil
}
