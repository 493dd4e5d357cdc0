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

	"github.com/indexwire/indexwire/tests/cyrustest"
)

// The three deployments of issue 3 compared in one run.
const (
	depPlain      = iota // partition on a plain directory
	depWhole             // partition is the overlay (whole spool through FUSE)
	depMeta              // data partition plain, metapartition (index, header) is the overlay
	depMetaNoOpen        // depMeta on `indexwire mount --no-open` (only with -overlay-no-open)
)

var depNames = []string{"plain dir", "whole spool on overlay", "metapartition on overlay", "metapartition on overlay --no-open"}

// depCols are the column names of each deployment: latency and ratio.
var depCols = [][2]string{{"plain p50 / p99 ms", ""}, {"whole spool p50 / p99 ms", "**whole / plain**"},
	{"metapartition p50 / p99 ms", "**meta / plain**"}, {"meta --no-open p50 / p99 ms", "**meta no-open / plain**"}}

// The command kinds of the workload.
const (
	opStore = iota
	opFetch
	opAppend
	opSelect
	numOps
)

var opNames = []string{"UID STORE ±\\Seen (one UID)", "UID FETCH 1:* (UID FLAGS MODSEQ)", "APPEND one message (STATUS + APPEND)",
	"SELECT / EXAMINE"}

// overlayShape is the per-round command count of each kind.
type overlayShape struct {
	rounds, stores, fetches, appends, selects int
}

// ovInst is one Cyrus instance of the overlay benchmark and its session.
type ovInst struct {
	dep    int
	in     *cyrustest.Instance
	mount  *mountProc
	c      *cyrustest.Client
	seen   map[uint32]bool
	exists uint32
	lat    [numOps][]time.Duration // every command's latency
	round  [numOps][]time.Duration // per-round total per kind
}

// overlaySection runs the IMAP workload of issue 3 against the three
// deployments (four with noOpen), interleaved command kind by command kind,
// with the order of instances rotating every round.
func overlaySection(ctx context.Context, bin, base string, msgs int, sh overlayShape, noOpen bool, log io.Writer) (string, error) {
	dir, err := os.MkdirTemp(base, "overlay-")
	if err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	ndep := 3
	if noOpen {
		ndep = 4
	}
	insts := make([]*ovInst, ndep)
	defer func() {
		for _, x := range insts {
			if x == nil {
				continue
			}
			if x.c != nil {
				x.c.Close()
			}
			if x.in != nil {
				x.in.Close()
			}
			if x.mount != nil {
				x.mount.stop()
			}
		}
	}()
	for dep := range insts {
		x := &ovInst{dep: dep, seen: map[uint32]bool{}}
		insts[dep] = x
		opts := cyrustest.Options{Name: fmt.Sprintf("ov%d", dep), BaseDir: dir}
		if dep != depPlain {
			backing, mnt := filepath.Join(dir, fmt.Sprintf("backing%d", dep)), filepath.Join(dir, fmt.Sprintf("mnt%d", dep))
			for _, d := range []string{backing, mnt} {
				if err := os.MkdirAll(d, 0o750); err != nil {
					return "", err
				}
				if err := chownCyrus(d); err != nil {
					return "", err
				}
			}
			var extra []string
			if dep == depMetaNoOpen {
				extra = []string{"--no-open"}
			}
			if x.mount, err = startMount(bin, backing, mnt, log, extra...); err != nil {
				return "", err
			}
			if dep == depWhole {
				opts.Partition = mnt
			} else {
				opts.Conf = []string{"metapartition-default: " + mnt, "metapartition_files: index header"}
			}
		}
		if x.in, err = cyrustest.Launch(ctx, opts); err != nil {
			return "", err
		}
		if err := x.in.MkUser("alice"); err != nil {
			return "", err
		}
	}
	// Fill the mailboxes at once (the machine has 2 cores; this is setup).
	fill := make([]time.Duration, ndep)
	var wg sync.WaitGroup
	errs := make([]error, ndep)
	for i, x := range insts {
		wg.Go(func() {
			t0 := time.Now()
			c, err := x.in.Login("alice")
			if err == nil {
				_, err = c.Append("INBOX", msgs)
				c.Logout()
			}
			fill[i], errs[i] = time.Since(t0), err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return "", fmt.Errorf("fill mailboxes: %w", err)
	}
	fmt.Fprintf(log, "overlay: appended %d messages in %v (plain), %v (whole), %v (meta), concurrently\n",
		msgs, fill[0].Round(time.Second), fill[1].Round(time.Second), fill[2].Round(time.Second))
	for _, x := range insts {
		if x.c, err = x.in.Login("alice"); err != nil {
			return "", err
		}
		st, err := x.c.Select("INBOX")
		if err != nil {
			return "", err
		}
		if int(st.Exists) != msgs {
			return "", fmt.Errorf("%s: SELECT shows %d messages, want %d", depNames[x.dep], st.Exists, msgs)
		}
		x.exists = st.Exists
	}
	commits0 := make([]float64, ndep)
	for _, x := range insts {
		if x.mount != nil {
			commits0[x.dep], _ = x.mount.counter(ctx, "commits_total")
		}
	}
	start := time.Now()
	for r := 0; r < sh.rounds; r++ {
		order := make([]int, ndep)
		for i := range order {
			order[i] = i
		}
		for k := 0; k < r%ndep; k++ {
			order = append(order[1:], order[0])
		}
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for op := 0; op < numOps; op++ {
			for _, i := range order {
				if err := insts[i].phase(op, r, sh); err != nil {
					return "", fmt.Errorf("%s round %d: %w", depNames[i], r, err)
				}
			}
		}
		if err := ctx.Err(); err != nil {
			return "", err
		}
	}
	elapsed := time.Since(start)
	var b strings.Builder
	fmt.Fprintf(&b, "## Overlay (issue 3)\n\n")
	fmt.Fprintf(&b, "%s Cyrus 3.6 instances in one run, each with user alice's INBOX filled with %d messages: "+
		"partition on a plain directory; whole partition on `indexwire mount --backing` (passthrough for non-index files); "+
		"data partition plain with `metapartition-default` on `indexwire mount` (`metapartition_files: index header`). "+
		"One persistent IMAP session each (TCP_NODELAY). %d rounds; per round and instance: %d single-UID STOREs "+
		"toggling \\Seen on random UIDs (same seed for all), %d FETCH 1:*, %d APPENDs, %d SELECT/EXAMINE; "+
		"each command kind runs on the instances in turn, their order rotating every round. "+
		"Throughput ratio = time on plain / time on overlay for the same commands (>1 would be faster): "+
		"median of the per-round ratios [min-max]. Every reply is checked (tagged OK, STORE echo, FETCH count, EXISTS). "+
		"Workload time %v.\n\n",
		[]string{3: "Three", 4: "Four"}[ndep], msgs, sh.rounds, sh.stores, sh.fetches, sh.appends, sh.selects, elapsed.Round(time.Second))
	if noOpen {
		fmt.Fprintf(&b, "A fourth instance, interleaved the same way, is the metapartition deployment on "+
			"`indexwire mount --no-open` (the kernel sends no OPEN, RELEASE or FLUSH).\n\n")
	}
	head := []string{"command"}
	for dep := range ndep {
		head = append(head, depCols[dep][0])
		if dep != depPlain {
			head = append(head, depCols[dep][1])
		}
	}
	t := table{head: append(head, "stock loopback (cyrus-on-fuse.md)")}
	stock := []string{"0.34", "1.0", "0.56", "0.59"}
	for op := 0; op < numOps; op++ {
		row := []string{opNames[op]}
		for _, x := range insts {
			row = append(row, ms(quantile(x.lat[op], .5))+" / "+ms(quantile(x.lat[op], .99)))
			if x.dep != depPlain {
				row = append(row, "**"+ratioCell(insts[depPlain].round[op], x.round[op])+"**")
			}
		}
		t.add(append(row, stock[op]+"x")...)
	}
	b.WriteString(t.String())
	p := insts[depPlain].lat[opStore]
	fmt.Fprintf(&b, "\nAdded latency per STORE (overlay percentile minus plain percentile, %d STOREs each):\n\n", len(p))
	t2 := table{head: []string{"deployment", "p50 added ms", "p99 added ms", "mean added ms"}}
	for _, x := range insts[1:] {
		s := x.lat[opStore]
		t2.add(depNames[x.dep], ms(quantile(s, .5)-quantile(p, .5)), ms(quantile(s, .99)-quantile(p, .99)),
			ms(sum(s)/time.Duration(len(s))-sum(p)/time.Duration(len(p))))
	}
	b.WriteString(t2.String())
	var notes []string
	for _, x := range insts {
		if x.mount != nil {
			n, err := x.mount.counter(ctx, "commits_total")
			if err != nil {
				notes = append(notes, fmt.Sprintf("%s: commits counter unreadable: %v", depNames[x.dep], err))
				continue
			}
			fails, _ := x.mount.counter(ctx, "commit_failures_total")
			notes = append(notes, fmt.Sprintf("%s: the overlay captured %.0f index commits during the workload (%.0f failures)",
				depNames[x.dep], n-commits0[x.dep], fails))
		}
		if lines, ok := x.in.Syslog(); ok {
			bad := 0
			for _, l := range lines {
				if strings.Contains(l, "IOERROR") || strings.Contains(l, "DBERROR") {
					bad++
				}
			}
			notes = append(notes, fmt.Sprintf("%s: %d IOERROR/DBERROR syslog lines", depNames[x.dep], bad))
		} else {
			notes = append(notes, fmt.Sprintf("%s: syslog not checked (another process serves /dev/log)", depNames[x.dep]))
		}
	}
	fmt.Fprintf(&b, "\nChecks: %s.\n", strings.Join(notes, "; "))
	return b.String(), nil
}

func ratioCell(plain, other []time.Duration) string {
	var r []float64
	for i := range plain {
		if i < len(other) && other[i] > 0 {
			r = append(r, float64(plain[i])/float64(other[i]))
		}
	}
	if len(r) == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f [%.2f-%.2f]", medianFloat(r), slices.Min(r), slices.Max(r))
}

// phase runs one round's commands of kind op and records their latencies.
func (x *ovInst) phase(op, round int, sh overlayShape) error {
	var total time.Duration
	timed := func(f func() error) error {
		t0 := time.Now()
		err := f()
		d := time.Since(t0)
		x.lat[op] = append(x.lat[op], d)
		total += d
		return err
	}
	switch op {
	case opStore:
		rng := rand.New(rand.NewPCG(uint64(round), 7))
		for k := 0; k < sh.stores; k++ {
			uid := uint32(1 + rng.IntN(int(x.exists)))
			on := !x.seen[uid]
			verb := "+FLAGS"
			if !on {
				verb = "-FLAGS"
			}
			var res []cyrustest.Message
			if err := timed(func() (err error) { res, err = x.c.Store(fmt.Sprint(uid), verb, `\Seen`); return }); err != nil {
				return err
			}
			if len(res) != 1 || res[0].UID != uid || slices.Contains(res[0].Flags, `\Seen`) != on {
				return fmt.Errorf("store %d %s: echo %+v", uid, verb, res)
			}
			x.seen[uid] = on
		}
	case opFetch:
		for k := 0; k < sh.fetches; k++ {
			var res []cyrustest.Message
			if err := timed(func() (err error) { res, err = x.c.Fetch("1:*"); return }); err != nil {
				return err
			}
			if len(res) != int(x.exists) {
				return fmt.Errorf("fetch 1:* returned %d messages, want %d", len(res), x.exists)
			}
		}
	case opAppend:
		for k := 0; k < sh.appends; k++ {
			var uids []uint32
			if err := timed(func() (err error) { uids, err = x.c.Append("INBOX", 1); return }); err != nil {
				return err
			}
			if len(uids) != 1 {
				return fmt.Errorf("append gave uids %v", uids)
			}
			x.exists++
		}
	case opSelect:
		for k := 0; k < sh.selects; k++ {
			var st cyrustest.MailboxStatus
			examine := k%2 == 0 && k != sh.selects-1 // end selected, for the next round's STOREs
			if err := timed(func() (err error) {
				if examine {
					st, err = x.c.Examine("INBOX")
				} else {
					st, err = x.c.Select("INBOX")
				}
				return
			}); err != nil {
				return err
			}
			if st.Exists != x.exists {
				return fmt.Errorf("select shows %d messages, want %d", st.Exists, x.exists)
			}
		}
	}
	x.round[op] = append(x.round[op], total)
	return nil
}
