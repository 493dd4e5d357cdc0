package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/indexwire/indexwire/net/link"
	"github.com/indexwire/indexwire/net/linktest"
	"github.com/indexwire/indexwire/net/relay"
)

func init() {
	register(command{"linktest", "measure the QUIC link to a peer, or relay with impairments", runLinktest})
}

const linktestUsage = `usage:
  indexwire linktest serve --listen ADDR --key DIR --peer-cert-sha256 FP
  indexwire linktest run --peer ADDR --key DIR --peer-cert-sha256 FP [--duration 10s] [--streams N] [--size BYTES] [--json]
  indexwire linktest relay --listen ADDR --to ADDR [--loss 5%] [--delay 20ms] [--jitter 5ms]
                           [--reorder 2%] [--duplicate 1%] [--blackout 10s@30s] [--seed N]

serve answers runs from pinned peers; run measures handshake, round trip,
goodput and QUIC loss towards a server, with the replication link's keys and
pinning. Run it on the primary against a server on the standby: data flows
the way batches do. relay forwards UDP between two loopback addresses and
impairs it, for tests.`

func runLinktest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, linktestUsage)
		return fmt.Errorf("%w: want serve, run or relay", errUsage)
	}
	switch args[0] {
	case "serve":
		return linktestServe(ctx, args[1:], stdout, stderr)
	case "run":
		return linktestRun(ctx, args[1:], stdout, stderr)
	case "relay":
		return linktestRelay(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprintln(stderr, linktestUsage)
		return nil
	}
	fmt.Fprintln(stderr, linktestUsage)
	return fmt.Errorf("%w: unknown linktest command %q", errUsage, args[0])
}

// noArgs refuses positional arguments.
func noArgs(pos []string) error {
	if len(pos) != 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, pos)
	}
	return nil
}

func linktestServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("linktest serve", stderr)
	listen := fs.String("listen", "", "UDP address to listen on, IP and port, e.g. 0.0.0.0:7444")
	key := fs.String("key", "", "key directory (see indexwire keygen)")
	var pins multiFlag
	fs.Var(&pins, "peer-cert-sha256", "pinned fingerprint of a peer allowed to run tests (repeatable)")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(pos); err != nil {
		return err
	}
	if *listen == "" || *key == "" || len(pins) == 0 {
		return fmt.Errorf("%w: want --listen, --key and --peer-cert-sha256", errUsage)
	}
	log, err := newLogger(*logLevel)
	if err != nil {
		return err
	}
	defer log.Sync()
	s, err := linktest.Listen(linktest.ServerConfig{Listen: *listen, KeyDir: *key, PeerFingerprints: pins, Logger: log})
	if err != nil {
		return err
	}
	cert, err := link.LoadKey(*key)
	if err != nil {
		s.Close()
		return err
	}
	fmt.Fprintf(stdout, "linktest server on %s, fingerprint %s\n", s.Addr(), link.CertFingerprint(&cert))
	return s.Serve(ctx)
}

func linktestRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("linktest run", stderr)
	cfg := linktest.Config{}
	fs.StringVar(&cfg.Peer, "peer", "", "address of a linktest server, IP and port")
	fs.StringVar(&cfg.KeyDir, "key", "", "key directory (see indexwire keygen)")
	var pins multiFlag
	fs.Var(&pins, "peer-cert-sha256", "pinned fingerprint of the server's certificate (repeatable)")
	fs.DurationVar(&cfg.Duration, "duration", linktest.DefaultDuration, "length of the load phase")
	fs.IntVar(&cfg.Streams, "streams", linktest.DefaultStreams, "parallel data streams")
	size := fs.String("size", "0", "bytes per stream (suffix K, M, G for KiB, MiB, GiB); 0: send for the whole duration")
	fs.DurationVar(&cfg.PingInterval, "ping-interval", linktest.DefaultPingInterval, "time between pings during the load")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	quiet := fs.Bool("quiet", false, "no progress lines on stderr")
	logLevel := fs.String("log-level", "warn", "log level: debug, info, warn, error")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(pos); err != nil {
		return err
	}
	if cfg.Peer == "" || cfg.KeyDir == "" || len(pins) == 0 {
		return fmt.Errorf("%w: want --peer, --key and --peer-cert-sha256", errUsage)
	}
	if cfg.Duration <= 0 || cfg.Streams <= 0 || cfg.PingInterval <= 0 {
		return fmt.Errorf("%w: --duration, --streams and --ping-interval must be positive", errUsage)
	}
	if cfg.Size, err = parseSize(*size); err != nil {
		return fmt.Errorf("%w: --size: %v", errUsage, err)
	}
	cfg.PeerFingerprints = pins
	if cfg.Logger, err = newLogger(*logLevel); err != nil {
		return err
	}
	defer cfg.Logger.Sync()
	if !*quiet {
		cfg.Progress = func(p linktest.Progress) {
			fmt.Fprintf(stderr, "%5.0fs  %10.1f MiB sent  rtt %6.1f ms  lost %d packets\n",
				p.Elapsed.Seconds(), float64(p.Bytes)/(1<<20), float64(p.RTT)/float64(time.Millisecond), p.Lost)
		}
	}
	rep, err := linktest.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return rep.WriteTable(stdout)
}

func linktestRelay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("linktest relay", stderr)
	var cfg relay.Config
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:0", "loopback UDP address clients send to")
	fs.StringVar(&cfg.To, "to", "", "loopback UDP address to forward to")
	loss := fs.String("loss", "0", "packets dropped, each direction: a percentage (5%) or a fraction (0.05)")
	reorder := fs.String("reorder", "0", "packets held back behind later ones, each direction")
	dup := fs.String("duplicate", "0", "packets sent twice, each direction")
	fs.DurationVar(&cfg.Delay, "delay", 0, "delay added each direction (a round trip gains twice this)")
	fs.DurationVar(&cfg.Jitter, "jitter", 0, "delay varies uniformly by up to this much")
	var blackouts multiFlag
	fs.Var(&blackouts, "blackout", "drop everything for LENGTH starting OFFSET after start, as LENGTH@OFFSET (repeatable), e.g. 10s@30s")
	seed := fs.Int64("seed", 0, "random seed; 0 picks one and prints it, so a run can be replayed")
	every := fs.Duration("stats-every", 10*time.Second, "print counters this often (0: only at exit)")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(pos); err != nil {
		return err
	}
	if cfg.To == "" {
		return fmt.Errorf("%w: want --to", errUsage)
	}
	for name, p := range map[string]struct {
		s string
		v *float64
	}{"loss": {*loss, &cfg.Loss}, "reorder": {*reorder, &cfg.Reorder}, "duplicate": {*dup, &cfg.Duplicate}} {
		if *p.v, err = parseRate(p.s); err != nil {
			return fmt.Errorf("%w: --%s: %v", errUsage, name, err)
		}
	}
	for _, b := range blackouts {
		bo, err := parseBlackout(b)
		if err != nil {
			return fmt.Errorf("%w: --blackout: %v", errUsage, err)
		}
		cfg.Blackouts = append(cfg.Blackouts, bo)
	}
	cfg.Seed = *seed
	if cfg.Seed == 0 {
		cfg.Seed = rand.Int64N(1<<31) + 1
	}
	if cfg.Logger, err = newLogger(*logLevel); err != nil {
		return err
	}
	defer cfg.Logger.Sync()
	r, err := relay.New(cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "relay %s -> %s seed %d\n", r.Addr(), cfg.To, cfg.Seed)
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var tick <-chan time.Time
	if *every > 0 {
		t := time.NewTicker(*every)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case err := <-done:
			printRelayStats(stdout, r.Stats())
			return err
		case <-tick:
			printRelayStats(stdout, r.Stats())
		}
	}
}

func printRelayStats(w io.Writer, s relay.Stats) {
	for _, d := range []struct {
		name string
		s    relay.DirStats
	}{{"up", s.Up}, {"down", s.Down}} {
		fmt.Fprintf(w, "%-4s received %d forwarded %d dropped %d blacked-out %d duplicated %d reordered %d overflow %d failed %d\n",
			d.name, d.s.Received, d.s.Forwarded, d.s.Dropped, d.s.BlackedOut, d.s.Duplicated, d.s.Reordered, d.s.Overflow, d.s.Failed)
	}
}

// parseRate reads "5%" as 0.05 and "0.05" as 0.05; a bare number above 1
// is refused rather than guessed at.
func parseRate(s string) (float64, error) {
	t := strings.TrimSpace(s)
	pct := strings.HasSuffix(t, "%")
	v, err := strconv.ParseFloat(strings.TrimSuffix(t, "%"), 64)
	if err != nil {
		return 0, fmt.Errorf("%q: want a percentage such as 5%% or a fraction such as 0.05", s)
	}
	if pct {
		v /= 100
	}
	if !(v >= 0 && v <= 1) {
		return 0, fmt.Errorf("%q: outside 0..100%% (write 5%% or 0.05)", s)
	}
	return v, nil
}

// parseBlackout reads LENGTH@OFFSET.
func parseBlackout(s string) (relay.Blackout, error) {
	length, at, ok := strings.Cut(s, "@")
	if !ok {
		return relay.Blackout{}, fmt.Errorf("%q: want LENGTH@OFFSET such as 10s@30s", s)
	}
	f, err1 := time.ParseDuration(length)
	a, err2 := time.ParseDuration(at)
	if err := errors.Join(err1, err2); err != nil {
		return relay.Blackout{}, fmt.Errorf("%q: %v", s, err)
	}
	if f <= 0 || a < 0 {
		return relay.Blackout{}, fmt.Errorf("%q: want a positive length at a non-negative offset", s)
	}
	return relay.Blackout{At: a, For: f}, nil
}

// parseSize reads a byte count with an optional K, M or G (binary) suffix.
func parseSize(s string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSpace(s), "iB"), "B")
	mult := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'k', 'K':
			mult, t = 1<<10, t[:n-1]
		case 'm', 'M':
			mult, t = 1<<20, t[:n-1]
		case 'g', 'G':
			mult, t = 1<<30, t[:n-1]
		}
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil || v < 0 || v > (1<<62)/mult {
		return 0, fmt.Errorf("%q: want a byte count such as 1048576 or 64M", s)
	}
	return v * mult, nil
}
