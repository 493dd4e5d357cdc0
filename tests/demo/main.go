// Command demo runs indexwire's main job on one machine (make demo): two
// isolated Cyrus 3.6 instances on 127.0.0.1, a user with a few hundred
// messages seeded to the replica by Cyrus's own sync_client, indexwire
// mounted in place under the primary and serving the replica, then flag
// changes over IMAP on the primary, each timed until the replica's Cyrus
// shows it over IMAP. Everything is removed at the end, also on Ctrl-C.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"syscall"
	"time"

	"github.com/indexwire/indexwire/tests/cyrustest"
	"github.com/indexwire/indexwire/tests/pair"
)

func main() {
	msgs := flag.Int("messages", 300, "messages in the demo mailbox")
	changes := flag.Int("changes", 20, "flag changes to make on the primary")
	bin := flag.String("binary", "bin/indexwire", "indexwire binary")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *bin, *msgs, *changes); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) { fmt.Printf("==> "+format+"\n", args...) }

func run(ctx context.Context, bin string, msgs, changes int) (err error) {
	if why := cyrustest.Available(); why != "" {
		return fmt.Errorf("cannot run Cyrus here: %s (run as root after `make deps`)", why)
	}
	abs, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	step("starting replica and primary Cyrus on 127.0.0.1, %d messages for alice, seeding the replica with sync_client -u alice", msgs)
	logf, err := os.CreateTemp("", "indexwire-demo-*.log")
	if err != nil {
		return err
	}
	defer func() {
		logf.Close()
		if err == nil {
			os.Remove(logf.Name()) // kept when the demo fails: the error points at it
		}
	}()
	p, err := pair.Start(ctx, pair.Options{Binary: abs, Messages: msgs, Log: logf, LogLevel: "info"})
	if err != nil {
		return err
	}
	defer func() {
		step("cleaning up: stopping Cyrus, unmounting, removing %s", p.Dir)
		if err := p.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "cleanup:", err)
		}
	}()
	fmt.Printf("    primary IMAP %s (partition %s is the indexwire overlay)\n", p.Primary.Addr(), p.Primary.Spool)
	fmt.Printf("    replica IMAP %s, indexwire serve on %s (QUIC, pinned mutual TLS)\n", p.Replica.Addr(), p.LinkAddr)
	fmt.Printf("    daemon logs: %s\n", logf.Name())
	if err := p.WaitConverged(10 * time.Second); err != nil {
		return fmt.Errorf("replica not seeded: %w", err)
	}
	step("both sides agree on all %d messages; making %d flag changes on the primary", msgs, changes)

	pc, err := p.Primary.Login(p.User())
	if err != nil {
		return err
	}
	defer pc.Logout()
	if _, err := pc.Select("INBOX"); err != nil {
		return err
	}
	rc, err := p.Replica.Login(p.User())
	if err != nil {
		return err
	}
	defer rc.Logout()

	flags := []string{`\Seen`, `\Flagged`, `\Answered`, `$Label1`}
	var lat []time.Duration
	for i := 0; i < changes; i++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		uid := uint32(1 + (i*37)%msgs)
		flag := flags[i%len(flags)]
		start := time.Now()
		res, err := pc.Store(fmt.Sprint(uid), "+FLAGS", flag)
		if err != nil || len(res) != 1 {
			return fmt.Errorf("store: %v %+v", err, res)
		}
		for {
			// A fresh EXAMINE makes the replica's Cyrus re-read its index.
			if _, err := rc.Examine("INBOX"); err != nil {
				return err
			}
			got, err := rc.Fetch(fmt.Sprint(uid))
			if err != nil {
				return err
			}
			if len(got) == 1 && slices.Contains(got[0].Flags, flag) && got[0].ModSeq == res[0].ModSeq {
				break
			}
			if time.Since(start) > 10*time.Second {
				return fmt.Errorf("uid %d %s not on the replica after 10s (daemon logs: %s)", uid, flag, logf.Name())
			}
		}
		d := time.Since(start)
		lat = append(lat, d)
		fmt.Printf("    STORE uid %-4d +FLAGS %-10s modseq %-5d  visible on the replica over IMAP after %6.2f ms\n",
			uid, flag, res[0].ModSeq, float64(d.Microseconds())/1000)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(f float64) float64 { return float64(lat[int(f*float64(len(lat)-1))].Microseconds()) / 1000 }
	step("STORE -> visible on the replica (IMAP round trips included): p50 %.2f ms, p90 %.2f ms, max %.2f ms", q(0.5), q(0.9), q(1))
	if err := p.Converged(); err != nil {
		return fmt.Errorf("sides differ: %w", err)
	}
	step("primary and replica agree message by message (UID, FLAGS, MODSEQ)")
	return nil
}
