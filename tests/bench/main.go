// Command bench is `make bench`: one run that measures indexwire against
// its baselines and prints markdown tables (also written to out/bench.md).
//
//   - codec (issue 2): index scan speed as a ratio to a plain copy, and the
//     encoded size of a single \Seen change (Go benchmarks in ./diff/);
//   - overlay (issue 3): an IMAP workload on a 10k-message mailbox through
//     the overlay (whole spool and metapartition) against a plain directory,
//     interleaved in one run, as throughput ratios per command;
//   - replication (issue 5): Cyrus 3.6 rolling sync_client -> sync_server
//     versus indexwire, single \Seen STOREs: STORE->visible latency read from
//     the replica's cyrus.index and over IMAP, payload bytes per change
//     counted by tcpdump on lo; a latency plot in out/latency.png.
//
// It needs root, FUSE, tcpdump and Debian's cyrus-imapd; it builds nothing
// itself except through `go test` (make bench builds bin/indexwire first).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/indexwire/indexwire/tests/cyrustest"

	"github.com/indexwire/indexwire/tests/pair"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	quick := flag.Bool("quick", false, "fewer changes and rounds (about half the run time)")
	big := flag.Bool("big", false, "also measure replication at N = 100 000 messages")
	only := flag.String("only", "codec,components,overlay,repl", "comma-separated sections to run")
	outDir := flag.String("out", "out", "directory for bench.md, latency.png, pcaps and logs")
	bin := flag.String("bin", "bin/indexwire", "indexwire binary (make build)")
	changes := flag.Int("changes", 0, "STOREs per system and mailbox size (default 200, -quick 60)")
	overlayMsgs := flag.Int("overlay-messages", 10000, "messages in the overlay benchmark's mailbox")
	overlayNoOpen := flag.Bool("overlay-no-open", false, "overlay: a fourth instance, metapartition on `indexwire mount --no-open`")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root, err := pair.ModuleRoot()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*outDir, 0o755); err != nil {
		return err
	}
	sections := map[string]bool{}
	for _, s := range strings.Split(*only, ",") {
		sections[strings.TrimSpace(s)] = true
	}
	if (sections["overlay"] || sections["repl"]) && cyrustest.Available() != "" {
		return errors.New("overlay and replication sections: " + cyrustest.Available())
	}
	binary, err := filepath.Abs(*bin)
	if err != nil {
		return err
	}
	if sections["overlay"] || sections["repl"] {
		if _, err := os.Stat(binary); err != nil {
			return fmt.Errorf("indexwire binary: %w (run make build)", err)
		}
	}
	logf, err := os.Create(filepath.Join(*outDir, "bench-daemons.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	base, err := os.MkdirTemp("/tmp", "indexwire-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(base)
	if err := os.Chmod(base, 0o711); err != nil {
		return err
	}
	n := *changes
	if n == 0 {
		n = 200
		if *quick {
			n = 60
		}
	}
	shape := overlayShape{rounds: 6, stores: 100, fetches: 10, appends: 30, selects: 20}
	if *quick {
		shape.rounds = 3
	}
	mode := "full"
	if *quick {
		mode = "quick (-quick)"
	}

	started := time.Now()
	var md strings.Builder
	fmt.Fprintf(&md, "# indexwire benchmarks\n\n%s, mode %s; %s.\n\n", started.UTC().Format("2006-01-02 15:04 UTC"), mode, machine())
	emit := func(s string) {
		fmt.Print(s + "\n")
		md.WriteString(s + "\n")
	}
	progress := func(f string, a ...any) {
		fmt.Fprintf(os.Stderr, "[%5.0fs] %s\n", time.Since(started).Seconds(), fmt.Sprintf(f, a...))
	}
	var failed []string
	if sections["codec"] {
		progress("codec benchmarks (go test -bench ./diff/)")
		s, err := codecSection(ctx, root, *quick)
		if err != nil {
			failed = append(failed, "codec: "+err.Error())
		} else {
			emit(s)
		}
	}
	if sections["components"] && ctx.Err() == nil {
		progress("component benchmarks (go test -bench ./diff/replica/ ./net/...)")
		s, err := componentSection(ctx, root)
		if err != nil {
			failed = append(failed, "components: "+err.Error())
		} else {
			emit(s)
		}
	}
	if sections["overlay"] && ctx.Err() == nil {
		progress("overlay: three Cyrus instances, %d messages each", *overlayMsgs)
		s, err := overlaySection(ctx, binary, base, *overlayMsgs, shape, *overlayNoOpen, io.MultiWriter(logf, progressWriter{progress}))
		if err != nil {
			failed = append(failed, "overlay: "+err.Error())
		} else {
			emit(s)
		}
	}
	if sections["repl"] && ctx.Err() == nil {
		sizes := []int{100, 10000}
		if *big {
			sizes = append(sizes, 100000)
		}
		var all []*replResult
		for _, size := range sizes {
			progress("replication: N=%d, %d changes per system", size, n)
			res, err := replRound(ctx, binary, base, *outDir, size, n, logf)
			if err != nil {
				failed = append(failed, fmt.Sprintf("replication N=%d: %v", size, err))
				break
			}
			all = append(all, res...)
		}
		if len(all) > 0 {
			emit(replSection(all, n, mode))
			png := filepath.Join(*outDir, "latency.png")
			if err := plotLatency(png, all); err != nil {
				failed = append(failed, "plot: "+err.Error())
			} else {
				emit(fmt.Sprintf("Latency plot: `%s`.\n", png))
			}
		}
	}
	emit(fmt.Sprintf("Total bench time %v.\n", time.Since(started).Round(time.Second)))
	if err := os.WriteFile(filepath.Join(*outDir, "bench.md"), []byte(md.String()), 0o644); err != nil {
		return err
	}
	progress("wrote %s", filepath.Join(*outDir, "bench.md"))
	if len(failed) > 0 {
		return errors.New(strings.Join(failed, "\n"))
	}
	return ctx.Err()
}

// progressWriter turns the overlay's one-line notes into progress lines.
type progressWriter struct{ f func(string, ...any) }

func (p progressWriter) Write(b []byte) (int, error) {
	if s := strings.TrimSpace(string(b)); strings.HasPrefix(s, "overlay:") {
		p.f("%s", s)
	}
	return len(b), nil
}

func machine() string {
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	cyr := "cyrus-imapd ?"
	if out, err := exec.Command("dpkg-query", "-W", "-f", "${Version}", "cyrus-imapd").Output(); err == nil {
		cyr = "cyrus-imapd " + string(out)
	}
	return fmt.Sprintf("%d CPUs, kernel %s, %s, %s", runtime.NumCPU(), strings.TrimSpace(string(kernel)), cyr, runtime.Version())
}

// chownCyrus hands dir to cyrus:mail, as Cyrus's partitions must be.
func chownCyrus(dir string) error {
	u, err := user.Lookup("cyrus")
	if err != nil {
		return err
	}
	g, err := user.LookupGroup("mail")
	if err != nil {
		return err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(g.Gid)
	return os.Chown(dir, uid, gid)
}
